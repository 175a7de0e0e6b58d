//! The signing key: where it comes from, and the handle the request path reads it through.
//!
//! **What it owns.** The key settings and their rules ([`KeySource::from_lookup`]):
//! - `SIGNING_MODE` — `hub-policy` (default) or `enrollment-group`;
//! - hub-policy: `IOTHUB_HOSTNAME`, `IOTHUB_POLICY_NAME` and `IOTHUB_POLICY_KEY` (the seed
//!   function's `iothubhostname`, `keyname`, `keyvalue`), or the key in Key Vault
//!   (`IOTHUB_POLICY_KEY_SECRET`);
//! - enrollment-group: `IOTHUB_HOSTNAME`, `ENROLLMENT_GROUP_KEY` or the key in Key Vault
//!   (`ENROLLMENT_GROUP_KEY_SECRET`), and optionally `DPS_ID_SCOPE`. The hub policy settings must
//!   then be unset: in this mode the function holds no hub policy key.
//!
//! A setting that the chosen mode would ignore is a start-up error naming it, never silently
//! dropped (a Key Vault setting without `KEYVAULT_URI` too). The key itself is read through [`KeyHandle`] ([`handle`]), kept fresh from Key Vault by
//! [`refresh`] and [`key_vault`].

pub mod handle;
pub mod key_vault;
pub mod refresh;
pub mod secret_value;

pub use handle::{FIRST_KEY_WAIT, IssuingKey, KeyHandle, KeyPublisher};

use crate::sas::enrollment_group::GroupSigner;
use crate::sas::{HubName, IdScope, PolicyName, Signer, SigningKey, SigningMode, TokenSigner};
use crate::secrets::key_vault::{KEYVAULT_URI, KeyVaultSettings};
use crate::secrets::secret_value::SecretUse;
use crate::settings::{Lookup, Name, SettingError};

/// `IOTHUB_HOSTNAME`, the seed's `iothubhostname`.
pub const IOTHUB_HOSTNAME: Name = Name::with_seed("IOTHUB_HOSTNAME", "iothubhostname");
/// `IOTHUB_POLICY_NAME`, the seed's `keyname`.
pub const IOTHUB_POLICY_NAME: Name = Name::with_seed("IOTHUB_POLICY_NAME", "keyname");
/// `IOTHUB_POLICY_KEY`, the seed's `keyvalue`.
pub const IOTHUB_POLICY_KEY: Name = Name::with_seed("IOTHUB_POLICY_KEY", "keyvalue");
/// The Key Vault secret holding the hub policy key.
pub const IOTHUB_POLICY_KEY_SECRET: &str = "IOTHUB_POLICY_KEY_SECRET";
/// `hub-policy` or `enrollment-group`.
pub const SIGNING_MODE: &str = "SIGNING_MODE";
/// The enrollment group key, base64, in app settings.
pub const ENROLLMENT_GROUP_KEY: &str = "ENROLLMENT_GROUP_KEY";
/// The Key Vault secret holding the enrollment group key.
pub const ENROLLMENT_GROUP_KEY_SECRET: &str = "ENROLLMENT_GROUP_KEY_SECRET";
/// The DPS ID scope registration tokens are for.
pub const DPS_ID_SCOPE: &str = "DPS_ID_SCOPE";

/// Where the signing key comes from.
#[derive(Debug)]
pub enum KeySource {
    /// A key in app settings: the signer is ready at start-up.
    Static(IssuingKey),
    /// `KEYVAULT_URI`: the key is read from Key Vault with the app's managed identity.
    KeyVault(KeyVaultSettings),
}

impl KeySource {
    /// The mode, then that mode's key settings.
    pub fn from_lookup(settings: &Lookup<'_>) -> Result<Self, SettingError> {
        let mode = settings
            .get(SIGNING_MODE)
            .map(|text| {
                SigningMode::parse(&text)
                    .map_err(|e| SettingError::new(SIGNING_MODE, e.to_string()))
            })
            .transpose()?
            .unwrap_or_default();
        match mode {
            SigningMode::HubPolicy => hub_policy(settings),
            SigningMode::EnrollmentGroup => enrollment_group(settings),
        }
    }

    /// The signing mode.
    pub fn mode(&self) -> SigningMode {
        match self {
            Self::Static(key) => key.signer.mode(),
            Self::KeyVault(settings) => settings.secret_use.mode(),
        }
    }

    /// Whether DPS registration tokens can be signed (enrollment-group mode with `DPS_ID_SCOPE`).
    pub fn signs_registrations(&self) -> bool {
        match self {
            Self::Static(key) => {
                matches!(&key.signer, TokenSigner::EnrollmentGroup(group) if group.signs_registrations())
            }
            Self::KeyVault(settings) => matches!(
                &settings.secret_use,
                SecretUse::EnrollmentGroup {
                    id_scope: Some(_),
                    ..
                }
            ),
        }
    }
}

/// `SIGNING_MODE=hub-policy`: today's settings; the enrollment-group ones must be unset.
fn hub_policy(settings: &Lookup<'_>) -> Result<KeySource, SettingError> {
    for setting in [
        ENROLLMENT_GROUP_KEY,
        ENROLLMENT_GROUP_KEY_SECRET,
        DPS_ID_SCOPE,
    ] {
        refuse_if_set(
            settings,
            setting,
            "is only used with SIGNING_MODE=enrollment-group",
        )?;
    }
    let hub = hub_name(settings)?;
    let policy = settings
        .optional(&IOTHUB_POLICY_NAME)
        .map(|(setting, name)| {
            PolicyName::parse(&name).map_err(|e| SettingError::new(setting, e.to_string()))
        })
        .transpose()?;
    if !settings.is_set(KEYVAULT_URI) {
        refuse_key_vault_settings(settings, IOTHUB_POLICY_KEY_SECRET)?;
        let hub = hub.ok_or_else(|| IOTHUB_HOSTNAME.missing())?;
        let policy = policy.ok_or_else(|| IOTHUB_POLICY_NAME.missing())?;
        let (setting, key) = settings.required(&IOTHUB_POLICY_KEY)?;
        // The text is as secret as the key: wipe it once decoded.
        let key = zeroize::Zeroizing::new(key);
        let key =
            SigningKey::from_base64(&key).map_err(|e| SettingError::new(setting, e.to_string()))?;
        return Ok(KeySource::Static(IssuingKey {
            signer: TokenSigner::HubPolicy(Signer::new(hub.as_str(), policy.as_str(), &key)),
            version: None,
        }));
    }
    if let Some((setting, _)) = settings.optional(&IOTHUB_POLICY_KEY) {
        return Err(SettingError::new(
            setting,
            "must be unset when KEYVAULT_URI is set (the key comes from Key Vault)",
        ));
    }
    KeyVaultSettings::from_lookup(
        settings,
        IOTHUB_POLICY_KEY_SECRET,
        SecretUse::HubPolicy { hub, policy },
    )
    .map(KeySource::KeyVault)
}

/// `SIGNING_MODE=enrollment-group`: the group key, the hub, optionally the DPS ID scope; no hub
/// policy settings at all.
fn enrollment_group(settings: &Lookup<'_>) -> Result<KeySource, SettingError> {
    let no_policy_key = "must be unset when SIGNING_MODE=enrollment-group (the function then holds no hub policy key)";
    for name in [IOTHUB_POLICY_NAME, IOTHUB_POLICY_KEY] {
        if let Some((setting, _)) = settings.optional(&name) {
            return Err(SettingError::new(setting, no_policy_key));
        }
    }
    refuse_if_set(settings, IOTHUB_POLICY_KEY_SECRET, no_policy_key)?;
    let hub = hub_name(settings)?.ok_or_else(|| IOTHUB_HOSTNAME.missing())?;
    let id_scope = settings
        .get(DPS_ID_SCOPE)
        .map(|text| {
            IdScope::parse(text.trim()).map_err(|e| SettingError::new(DPS_ID_SCOPE, e.to_string()))
        })
        .transpose()?;
    if !settings.is_set(KEYVAULT_URI) {
        refuse_key_vault_settings(settings, ENROLLMENT_GROUP_KEY_SECRET)?;
        let key = settings.get(ENROLLMENT_GROUP_KEY).ok_or_else(|| {
            SettingError::new(
                ENROLLMENT_GROUP_KEY,
                "is required with SIGNING_MODE=enrollment-group (or ENROLLMENT_GROUP_KEY_SECRET with KEYVAULT_URI)",
            )
        })?;
        let key = zeroize::Zeroizing::new(key);
        let key = SigningKey::from_base64(&key)
            .map_err(|e| SettingError::new(ENROLLMENT_GROUP_KEY, e.to_string()))?;
        let signer = GroupSigner::new(hub.as_str(), id_scope.as_ref().map(IdScope::as_str), &key);
        return Ok(KeySource::Static(IssuingKey {
            signer: TokenSigner::EnrollmentGroup(signer),
            version: None,
        }));
    }
    refuse_if_set(
        settings,
        ENROLLMENT_GROUP_KEY,
        "must be unset when KEYVAULT_URI is set (the key comes from Key Vault)",
    )?;
    KeyVaultSettings::from_lookup(
        settings,
        ENROLLMENT_GROUP_KEY_SECRET,
        SecretUse::EnrollmentGroup { hub, id_scope },
    )
    .map(KeySource::KeyVault)
}

/// Without `KEYVAULT_URI`, the settings that only Key Vault mode reads must be unset.
fn refuse_key_vault_settings(
    settings: &Lookup<'_>,
    secret_setting: &'static str,
) -> Result<(), SettingError> {
    for setting in [
        secret_setting,
        "KEYVAULT_REFRESH_SECONDS",
        key_vault::KEYVAULT_MAX_KEY_AGE_SECONDS,
    ] {
        refuse_if_set(settings, setting, "is only used with KEYVAULT_URI")?;
    }
    Ok(())
}

fn hub_name(settings: &Lookup<'_>) -> Result<Option<HubName>, SettingError> {
    settings
        .optional(&IOTHUB_HOSTNAME)
        .map(|(setting, hub)| {
            HubName::parse(&hub).map_err(|e| SettingError::new(setting, e.to_string()))
        })
        .transpose()
}

fn refuse_if_set(
    settings: &Lookup<'_>,
    setting: &'static str,
    problem: &str,
) -> Result<(), SettingError> {
    if settings.is_set(setting) {
        Err(SettingError::new(setting, problem))
    } else {
        Ok(())
    }
}
