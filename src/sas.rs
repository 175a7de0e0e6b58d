//! IoT Hub shared access signatures: the key, the signer prepared from it, and the token.
//!
//! **What it owns.** The token format, exactly:
//! `SharedAccessSignature sr={sr}&sig={sig}&se={se}[&skn={skn}]` where `sr` is the percent-encoding
//! of the resource (every byte outside `A–Z a–z 0–9 - . _ ~`, uppercase hex), `se` integer Unix
//! seconds, `sig` the percent-encoded base64 of HMAC-SHA256(key, `sr + "\n" + se`) and `skn` the
//! percent-encoded key name. Azure's Python device SDK produces the same bytes. The resources and
//! keys:
//! - a hub **policy** key ([`Signer`]): `{host}/devices/{deviceId}` or
//!   `{host}/devices/{deviceId}/modules/{moduleId}`, `skn` = the policy;
//! - a DPS **enrollment group** key ([`enrollment_group::GroupSigner`]): each device's key is
//!   derived from the group key and its registration id, and signs a device-key token
//!   (`{host}/devices/{deviceId}`, no `skn`) or a DPS registration token
//!   (`{idScope}/registrations/{registrationId}`, `skn=registration`).
//!
//! `{host}` is the hub host name the request chose ([`hubs`](crate::hubs)): a signer is a key, not
//! a hub, so one prepared signer signs for either host name of its hub — and an enrollment group's
//! for every hub — without a key schedule per request. It also owns the policy name a token
//! carries (`skn`, [`PolicyName`]), parsed once from settings or a connection string.
//!
//! **What it trusts.** Its inputs are already validated ([`DeviceId`], a host name from
//! [`HubHost`](crate::hubs::HubHost), [`PolicyName`], an expiry chosen by the caller of
//! [`Signer::sign`]); it touches no clock. The key is decoded and keyed into HMAC once, when the
//! [`Signer`] is built; signing a token clones the prepared HMAC state (no key schedule per
//! request). Neither [`SigningKey`] nor [`Signer`] can print the key, and both wipe their key
//! material (the decoded bytes, the prepared HMAC state) when dropped.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit, Mac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::params::{DeviceId, ModuleId};

pub mod enrollment_group;

/// RFC 3986 unreserved characters stay; everything else is `%XX`.
const ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A shared access policy name (`skn`): printable ASCII without spaces, as IoT Hub's own names
/// (`iothubowner`, `device`, …) are; it is percent-encoded into the token either way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyName(String);

/// Why a policy name was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("must be a shared access policy name (printable ASCII, no spaces)")]
pub struct PolicyNameError;

impl PolicyName {
    /// At most 256 printable ASCII characters, no spaces.
    pub fn parse(text: &str) -> Result<Self, PolicyNameError> {
        if text.len() <= 256 && text.bytes().all(|b| b.is_ascii_graphic()) {
            Ok(Self(text.to_owned()))
        } else {
            Err(PolicyNameError)
        }
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A DPS ID scope (`DPS_ID_SCOPE`, e.g. `0ne00000A0A`): the service assigns it; it is ASCII
/// letters and digits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdScope(String);

/// Why an ID scope was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("must be the DPS instance's ID scope, e.g. 0ne00000A0A (ASCII letters and digits)")]
pub struct IdScopeError;

impl IdScope {
    /// 1–64 ASCII letters and digits.
    pub fn parse(text: &str) -> Result<Self, IdScopeError> {
        if (1..=64).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_alphanumeric()) {
            Ok(Self(text.to_owned()))
        } else {
            Err(IdScopeError)
        }
    }

    /// The scope as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Which kind of key signs the tokens (`SIGNING_MODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SigningMode {
    /// `hub-policy`: an IoT Hub shared access policy key; tokens carry `skn` = the policy.
    #[default]
    HubPolicy,
    /// `enrollment-group`: a DPS enrollment group key; each device's key is derived from it and
    /// tokens are device-key tokens.
    EnrollmentGroup,
}

/// Why a signing mode was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("must be `hub-policy` or `enrollment-group`")]
pub struct SigningModeError;

impl SigningMode {
    /// `hub-policy` or `enrollment-group`.
    pub fn parse(text: &str) -> Result<Self, SigningModeError> {
        match text.trim() {
            "hub-policy" => Ok(Self::HubPolicy),
            "enrollment-group" => Ok(Self::EnrollmentGroup),
            _ => Err(SigningModeError),
        }
    }

    /// The setting's value, as the log line records it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HubPolicy => "hub-policy",
            Self::EnrollmentGroup => "enrollment-group",
        }
    }
}

/// The prepared signer of either mode.
#[derive(Debug, Clone)]
pub enum TokenSigner {
    /// Signs with a hub policy key.
    HubPolicy(Signer),
    /// Signs with keys derived from an enrollment group key.
    EnrollmentGroup(enrollment_group::GroupSigner),
}

impl TokenSigner {
    /// The mode this signer implements.
    pub fn mode(&self) -> SigningMode {
        match self {
            Self::HubPolicy(_) => SigningMode::HubPolicy,
            Self::EnrollmentGroup(_) => SigningMode::EnrollmentGroup,
        }
    }
}

/// A decoded IoT Hub shared access policy key. Zeroed on drop; `Debug` prints no bytes.
pub struct SigningKey(Zeroizing<Vec<u8>>);

/// Why a key was refused. Never carries the key's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Not standard base64 (with padding).
    #[error("not valid base64")]
    NotBase64,
    /// Decodes to nothing.
    #[error("decodes to an empty key")]
    Empty,
}

impl SigningKey {
    /// Decode a base64 policy key as shown in the Azure portal.
    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        let bytes = Zeroizing::new(
            BASE64
                .decode(text.trim())
                .map_err(|_| KeyError::NotBase64)?,
        );
        if bytes.is_empty() {
            return Err(KeyError::Empty);
        }
        Ok(Self(bytes))
    }
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(<redacted>)")
    }
}

// The prepared HMAC state is as good as the key: it must be wiped when dropped too. `Hmac` keeps
// two SHA-256 cores (inner and outer, keyed); with `sha2`'s `zeroize` feature each core wipes its
// state on drop. This fails to compile if that ever stops being true.
const _: fn() = || {
    fn wiped_on_drop<T: zeroize::ZeroizeOnDrop>() {}
    wiped_on_drop::<<Sha256 as hmac::EagerHash>::Core>();
};

/// Everything needed to sign device tokens with one hub policy key, prepared once.
#[derive(Clone)]
pub struct Signer {
    /// `percent-encode(policy name)`.
    policy: String,
    /// HMAC-SHA256 keyed with the policy key; cloned per token. Zeroed on drop, like each clone.
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// A signed token and its expiry.
#[derive(Clone, PartialEq, Eq)]
pub struct SasToken {
    /// The whole `SharedAccessSignature …` string.
    pub token: String,
    /// `se`: Unix seconds.
    pub expires_at: u64,
}

impl std::fmt::Debug for SasToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SasToken")
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// Prepare a signer for `policy`'s key. Any policy text is encoded correctly; the handler
    /// passes a validated [`PolicyName`].
    pub fn new(policy: &str, key: &SigningKey) -> Self {
        let mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&key.0)
            .expect("HMAC-SHA256 accepts keys of any length");
        Self {
            policy: encode(policy).to_string(),
            mac,
        }
    }

    /// Sign a token for `device` on the hub host name `host` that expires at `expires_at` (Unix
    /// seconds): `sr = {host}/devices/{device}`.
    pub fn sign(&self, host: &str, device: &DeviceId, expires_at: u64) -> SasToken {
        let mut resource = String::with_capacity(host.len() + DEVICES.len() + 3 * 128);
        push_device_resource(&mut resource, host, device.as_str());
        signed_token(&resource, &self.mac, expires_at, Some(&self.policy))
    }

    /// Sign a token for `module` of `device`: `sr = {host}/devices/{device}/modules/{module}`.
    pub fn sign_module(
        &self,
        host: &str,
        device: &DeviceId,
        module: &ModuleId,
        expires_at: u64,
    ) -> SasToken {
        let mut resource = String::with_capacity(host.len() + DEVICES.len() + 6 * 128 + 13);
        push_device_resource(&mut resource, host, device.as_str());
        resource.push_str("%2Fmodules%2F");
        resource.extend(encode(module.as_str()));
        signed_token(&resource, &self.mac, expires_at, Some(&self.policy))
    }
}

/// `/devices/`, percent-encoded.
const DEVICES: &str = "%2Fdevices%2F";

/// Append `percent-encode("{host}/devices/{device}")` to `resource`. Encoding is per byte, so the
/// parts are encoded one after the other.
pub(crate) fn push_device_resource(resource: &mut String, host: &str, device: &str) {
    resource.extend(encode(host));
    resource.push_str(DEVICES);
    resource.extend(encode(device));
}

/// The token for `resource` (already percent-encoded) expiring at `expires_at`, signed with a clone
/// of the prepared `mac`: `SharedAccessSignature sr={resource}&sig={sig}&se={se}[&skn={key_name}]`,
/// `sig` the percent-encoded base64 of HMAC-SHA256(`resource + "\n" + se`). `key_name` is already
/// percent-encoded; a device-key token has none.
pub(crate) fn signed_token(
    resource: &str,
    mac: &Hmac<Sha256>,
    expires_at: u64,
    key_name: Option<&str>,
) -> SasToken {
    let mut expiry_digits = itoa::Buffer::new();
    let expiry = expiry_digits.format(expires_at);

    let mut mac = mac.clone();
    mac.update(resource.as_bytes());
    mac.update(b"\n");
    mac.update(expiry.as_bytes());
    let mut signature = [0u8; 44];
    let len = BASE64
        .encode_slice(mac.finalize().into_bytes(), &mut signature)
        .expect("base64 of 32 bytes is 44 bytes");
    let signature = std::str::from_utf8(&signature[..len]).expect("base64 output is ASCII");

    let key_name_len = key_name.map_or(0, |name| name.len() + 5);
    let mut token =
        String::with_capacity(40 + resource.len() + 3 * len + expiry.len() + key_name_len);
    token.push_str("SharedAccessSignature sr=");
    token.push_str(resource);
    token.push_str("&sig=");
    token.extend(encode(signature));
    token.push_str("&se=");
    token.push_str(expiry);
    if let Some(key_name) = key_name {
        token.push_str("&skn=");
        token.push_str(key_name);
    }
    SasToken { token, expires_at }
}

/// Percent-encode every byte outside `A–Z a–z 0–9 - . _ ~`, upper-case hex.
pub(crate) fn encode(text: &str) -> percent_encoding::PercentEncode<'_> {
    utf8_percent_encode(text, ENCODE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(id: &str) -> DeviceId {
        DeviceId::parse(id).expect("test device id is valid")
    }

    /// Computed independently with Python:
    /// `quote("contoso.azure-devices.net/devices/dev-1", safe="")`, then
    /// `base64(hmac(b64decode(key), sr + "\n" + "1700000000", sha256))`, quoted.
    #[test]
    fn token_matches_an_independent_computation() {
        let key = SigningKey::from_base64("c2VjcmV0LWtleS1mb3ItdGVzdHMtb25seS0xMjM0NTY=")
            .expect("valid base64");
        let signer = Signer::new("device", &key);
        let token = signer.sign("contoso.azure-devices.net", &device("dev-1"), 1_700_000_000);
        assert_eq!(
            token.token,
            "SharedAccessSignature sr=contoso.azure-devices.net%2Fdevices%2Fdev-1\
             &sig=IBQ1zRysjtw%2Ft9Eog%2BrS%2FS0YtfL8VpaHg36fJKfKoXY%3D&se=1700000000&skn=device"
        );
        assert_eq!(token.expires_at, 1_700_000_000);
    }

    #[test]
    fn every_reserved_byte_is_encoded_with_uppercase_hex() {
        let key = SigningKey::from_base64("AAAA").expect("valid base64");
        let signer = Signer::new("my policy", &key);
        let token = signer.sign("h.example", &device("a*b(c)!'%:=@$,?"), 1);
        assert!(
            token.token.starts_with(
                "SharedAccessSignature sr=h.example%2Fdevices%2Fa%2Ab%28c%29%21%27%25%3A%3D%40%24%2C%3F"
            ),
            "{}",
            token.token
        );
        assert!(
            token.token.ends_with("&se=1&skn=my%20policy"),
            "{}",
            token.token
        );
    }

    #[test]
    fn bad_keys_are_refused_without_echoing_them() {
        assert_eq!(
            SigningKey::from_base64("not base64!").err(),
            Some(KeyError::NotBase64)
        );
        assert_eq!(SigningKey::from_base64("").err(), Some(KeyError::Empty));
        let key = SigningKey::from_base64("c2VjcmV0").expect("valid base64");
        assert_eq!(format!("{key:?}"), "SigningKey(<redacted>)");
        let signer = Signer::new("p", &key);
        assert!(!format!("{signer:?}").contains("c2VjcmV0"));
    }
}
