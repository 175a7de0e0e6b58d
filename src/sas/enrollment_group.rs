//! Signing with a DPS symmetric-key enrollment group key: each device's own key, derived as DPS
//! derives it, signs tokens scoped to that one device.
//!
//! **What it owns.** The derivation — a device's key is
//! `HMAC-SHA256(key = base64decode(groupKey), message = UTF-8 registrationId)` (DPS symmetric key
//! attestation; in a group enrollment the device id is the registration id) — and the two tokens a
//! derived key signs:
//! - a **device-key token**: `sr = {hub}/devices/{registrationId}`, no `skn`. IoT Hub checks it
//!   against that device's own key, so it grants that one device and keeps working on hubs with
//!   `disableLocalAuth: true`, which refuse every token signed with a hub policy key;
//! - a **DPS registration token**: `sr = {idScope}/registrations/{registrationId}`,
//!   `skn=registration`, what a device sends to DPS's REST `register` operation.
//!
//! **What it trusts.** Validated inputs ([`RegistrationId`]). The group key is keyed into HMAC once
//! ([`GroupSigner::new`]); a request derives its device's key from that prepared state, from memory.
//! The derived key is wiped when dropped, like every prepared HMAC state here; neither the group
//! key nor a derived key can be printed.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::params::RegistrationId;
use crate::sas::{SasToken, SigningKey, encode, signed_token};

/// The key name DPS expects in a registration token.
const REGISTRATION_KEY_NAME: &str = "registration";

/// Everything needed to sign with an enrollment group's devices' keys, prepared once.
#[derive(Clone)]
pub struct GroupSigner {
    /// `percent-encode("{hub}/devices/")`.
    device_prefix: String,
    /// `percent-encode("{idScope}/registrations/")`, when `DPS_ID_SCOPE` is set.
    registration_prefix: Option<String>,
    /// HMAC-SHA256 keyed with the group key; cloned per derivation. Wiped on drop.
    group: Hmac<Sha256>,
}

impl std::fmt::Debug for GroupSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupSigner")
            .field("device_prefix", &self.device_prefix)
            .field("registration_prefix", &self.registration_prefix)
            .finish_non_exhaustive()
    }
}

impl GroupSigner {
    /// Prepare a signer for devices of `hub`, and — with `id_scope` — their DPS registrations.
    pub fn new(hub: &str, id_scope: Option<&str>, group_key: &SigningKey) -> Self {
        Self {
            device_prefix: encode(&format!("{hub}/devices/")).to_string(),
            registration_prefix: id_scope
                .map(|scope| encode(&format!("{scope}/registrations/")).to_string()),
            group: keyed(&group_key.0),
        }
    }

    /// Whether registration tokens can be signed (`DPS_ID_SCOPE` is set).
    pub fn signs_registrations(&self) -> bool {
        self.registration_prefix.is_some()
    }

    /// The device's own key, as DPS derives it.
    fn device_mac(&self, registration_id: &RegistrationId) -> Hmac<Sha256> {
        let mut derivation = self.group.clone();
        derivation.update(registration_id.as_str().as_bytes());
        let device_key = Zeroizing::new(<[u8; 32]>::from(derivation.finalize().into_bytes()));
        keyed(device_key.as_slice())
    }

    /// A device-key token for the device whose id is `device` (its registration id).
    pub fn sign_device(&self, device: &RegistrationId, expires_at: u64) -> SasToken {
        let mut resource = String::with_capacity(self.device_prefix.len() + 128);
        resource.push_str(&self.device_prefix);
        resource.extend(encode(device.as_str()));
        signed_token(&resource, &self.device_mac(device), expires_at, None)
    }

    /// A DPS registration token for `registration`; `None` without `DPS_ID_SCOPE`.
    pub fn sign_registration(
        &self,
        registration: &RegistrationId,
        expires_at: u64,
    ) -> Option<SasToken> {
        let prefix = self.registration_prefix.as_ref()?;
        let mut resource = String::with_capacity(prefix.len() + 3 * 128);
        resource.push_str(prefix);
        resource.extend(encode(registration.as_str()));
        Some(signed_token(
            &resource,
            &self.device_mac(registration),
            expires_at,
            Some(REGISTRATION_KEY_NAME),
        ))
    }
}

/// A device's key derived from the group key, base64 — what DPS's portal and `az iot dps
/// enrollment-group compute-device-key` show. For tests and tools; the request path uses
/// [`GroupSigner`], which derives from prepared state.
pub fn derive_device_key(group_key: &SigningKey, registration_id: &str) -> Zeroizing<String> {
    use base64::Engine as _;
    let mut derivation = keyed(&group_key.0);
    derivation.update(registration_id.as_bytes());
    Zeroizing::new(
        base64::engine::general_purpose::STANDARD.encode(derivation.finalize().into_bytes()),
    )
}

fn keyed(key: &[u8]) -> Hmac<Sha256> {
    <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC-SHA256 accepts keys of any length")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sas::Signer;

    /// The published example (DPS symmetric key attestation docs), as
    /// docs/azure-behaviour.md §8 records it.
    const GROUP_KEY: &str =
        "8isrFI1sGsIlvvFSSFRiMfCNzv21fjbE/+ah/lSh3lF8e2YG1Te7w1KpZhJFFXJrqYKi9yegxkqIChbqOS9Egw==";
    const REGISTRATION: &str = "sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6";
    const DERIVED: &str = "Jsm0lyGpjaVYVP2g3FnmnmG9dI/9qU24wNoykUmermc=";

    fn group_key() -> SigningKey {
        SigningKey::from_base64(GROUP_KEY).expect("valid base64")
    }

    fn id(text: &str) -> RegistrationId {
        RegistrationId::parse(text).expect("a valid registration id")
    }

    #[test]
    fn the_derived_key_matches_the_published_vector() {
        assert_eq!(
            derive_device_key(&group_key(), REGISTRATION).as_str(),
            DERIVED
        );
    }

    /// A device-key token is exactly the token a policy-free signer makes with the derived key:
    /// the same `sr` and signature as a hub-policy token signed with that key, without `skn`.
    #[test]
    fn a_device_token_is_signed_with_the_derived_key_and_has_no_key_name() {
        let signer = GroupSigner::new("contoso.azure-devices.net", None, &group_key());
        let token = signer.sign_device(&id(REGISTRATION), 1_700_000_000);
        let derived = SigningKey::from_base64(DERIVED).expect("valid base64");
        let with_policy = Signer::new("contoso.azure-devices.net", "x", &derived).sign(
            &crate::params::DeviceId::parse(REGISTRATION).expect("valid device id"),
            1_700_000_000,
        );
        assert_eq!(format!("{}&skn=x", token.token), with_policy.token);
        assert!(!signer.signs_registrations());
        assert!(signer.sign_registration(&id(REGISTRATION), 1).is_none());
    }

    #[test]
    fn a_registration_token_names_the_scope_and_the_registration_key() {
        let signer = GroupSigner::new("h.azure-devices.net", Some("0ne00000A0A"), &group_key());
        let token = signer
            .sign_registration(&id("dev:1"), 1_700_000_000)
            .expect("DPS_ID_SCOPE is set");
        assert!(
            token
                .token
                .starts_with("SharedAccessSignature sr=0ne00000A0A%2Fregistrations%2Fdev%3A1&sig="),
            "{}",
            token.token
        );
        assert!(
            token.token.ends_with("&se=1700000000&skn=registration"),
            "{}",
            token.token
        );
    }

    #[test]
    fn no_key_material_is_printed() {
        let signer = GroupSigner::new("h", Some("s"), &group_key());
        let debug = format!("{signer:?}");
        assert!(
            !debug.contains(GROUP_KEY) && !debug.contains(DERIVED),
            "{debug}"
        );
    }
}
