//! The signing keys: which hubs they sign for, where they come from, and the handles the request
//! path reads them through.
//!
//! **What it owns.** The key settings and their rules ([`KeySource::from_lookup`]):
//! - `SIGNING_MODE` — `hub-policy` (default) or `enrollment-group`;
//! - the hubs ([`HubList`]: `IOTHUB_HOSTNAMES` or `IOTHUB_HOSTNAME`), and
//!   which entries the mode allows: suffix entries (`*.azure-devices.net`) only in
//!   enrollment-group mode, where the hub is no security boundary (a derived key works only on the
//!   hubs where DPS registered that id);
//! - hub-policy: `IOTHUB_POLICY_NAME` and **one key per hub** — for one hub `IOTHUB_POLICY_KEY`
//!   (the seed function's `keyvalue`) or the Key Vault secret `IOTHUB_POLICY_KEY_SECRET`; for any
//!   number of hubs the JSON maps `IOTHUB_POLICY_KEYS` (hub → base64 key, for local runs) or
//!   `IOTHUB_POLICY_KEY_SECRETS` (hub → secret name), which must name exactly the listed hubs
//!   (either host-name form). With more than one hub the one-key settings are refused. Without a
//!   hub setting, a connection-string secret in `IOTHUB_POLICY_KEY_SECRET` names its one hub;
//! - enrollment-group: `ENROLLMENT_GROUP_KEY` or the key in Key Vault
//!   (`ENROLLMENT_GROUP_KEY_SECRET`) — one key for every hub — and optionally `DPS_ID_SCOPE`, with
//!   `DPS_GLOBAL_ENDPOINT` (by default derived from the hubs' cloud) for the registration answer.
//!   The hub policy settings must then be unset: in this mode the function holds no hub policy key.
//!
//! A setting that the chosen mode would ignore is a start-up error naming it, never silently
//! dropped (a Key Vault setting without `KEYVAULT_URI` too). The keys themselves are read through
//! [`Keys`] — one [`KeyHandle`] ([`handle`]) per key — kept fresh from Key Vault by [`refresh`] and
//! [`key_vault`], one refresh loop per secret, all through one Key Vault client, each read's outcome one
//! line of [`key_events`].

pub mod handle;
pub mod key_events;
pub mod key_vault;
pub mod refresh;
pub mod secret_value;

pub use handle::{FIRST_KEY_WAIT, IssuingKey, KeyHandle, KeyPublisher};

use std::sync::Arc;

use crate::hubs::{HubHost, HubList, IOTHUB_HOSTNAME};
use crate::sas::enrollment_group::GroupSigner;
use crate::sas::{IdScope, PolicyName, Signer, SigningKey, SigningMode, TokenSigner};
use crate::secrets::key_vault::{
    KEYVAULT_URI, KeyVaultSettings, SECRET_NAME_RULE, SecretSpec, is_secret_name,
};
use crate::secrets::secret_value::SecretUse;
use crate::settings::{Lookup, Name, SettingError, json_object};

/// `IOTHUB_POLICY_NAME`, the seed's `keyname`.
pub const IOTHUB_POLICY_NAME: Name = Name::with_seed("IOTHUB_POLICY_NAME", "keyname");
/// `IOTHUB_POLICY_KEY`, the seed's `keyvalue`.
pub const IOTHUB_POLICY_KEY: Name = Name::with_seed("IOTHUB_POLICY_KEY", "keyvalue");
/// Each hub's policy key, base64, as a JSON object hub → key (for local runs).
pub const IOTHUB_POLICY_KEYS: &str = "IOTHUB_POLICY_KEYS";
/// The Key Vault secret holding the (one) hub's policy key.
pub const IOTHUB_POLICY_KEY_SECRET: &str = "IOTHUB_POLICY_KEY_SECRET";
/// Each hub's Key Vault secret, as a JSON object hub → secret name.
pub const IOTHUB_POLICY_KEY_SECRETS: &str = "IOTHUB_POLICY_KEY_SECRETS";
/// `hub-policy` or `enrollment-group`.
pub const SIGNING_MODE: &str = "SIGNING_MODE";
/// The enrollment group key, base64, in app settings.
pub const ENROLLMENT_GROUP_KEY: &str = "ENROLLMENT_GROUP_KEY";
/// The Key Vault secret holding the enrollment group key.
pub const ENROLLMENT_GROUP_KEY_SECRET: &str = "ENROLLMENT_GROUP_KEY_SECRET";
/// The DPS ID scope registration tokens are for.
pub const DPS_ID_SCOPE: &str = "DPS_ID_SCOPE";
/// The DPS endpoint a registration answer names (`provisioningHost`).
pub const DPS_GLOBAL_ENDPOINT: &str = "DPS_GLOBAL_ENDPOINT";

/// Where the signing keys come from, and which hubs they sign for.
#[derive(Debug)]
pub struct KeySource {
    /// Which kind of key signs.
    pub mode: SigningMode,
    /// The hubs, as the settings list them; `None` when the one hub comes from a connection-string
    /// secret (hub-policy mode, `IOTHUB_POLICY_KEY_SECRET`, no hub setting).
    pub hubs: Option<HubList>,
    /// The keys: in hub-policy mode one per listed hub, in the list's order (or the one whose
    /// secret names its hub); in enrollment-group mode exactly one, for every hub.
    pub keys: Vec<KeySlot>,
    /// `KEYVAULT_URI` and its settings, when any key is a Key Vault secret.
    pub vault: Option<KeyVaultSettings>,
    /// What registration answers name, when DPS registration tokens are signed.
    pub registrations: Option<Registrations>,
}

/// One key: known at start, or read from Key Vault.
#[derive(Debug)]
pub enum KeySlot {
    /// A key in app settings: the signer is ready at start-up.
    Static(IssuingKey),
    /// A Key Vault secret, read with the app's managed identity.
    Secret(SecretSpec),
}

/// What a DPS registration answer names besides the token (enrollment-group mode with
/// `DPS_ID_SCOPE`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registrations {
    /// `DPS_ID_SCOPE`.
    pub id_scope: IdScope,
    /// `DPS_GLOBAL_ENDPOINT`, or the hubs' cloud's global endpoint.
    pub provisioning_host: Arc<str>,
}

/// The request path's keys: one handle per hub in hub-policy mode, one for every hub otherwise.
#[derive(Debug, Clone)]
pub struct Keys(Vec<KeyHandle>);

impl Keys {
    /// The handles, in the order of [`KeySource::keys`].
    pub fn new(handles: Vec<KeyHandle>) -> Self {
        Self(handles)
    }

    /// The handle of the key for the listed hub at `position` (hub-policy mode), or the one key.
    pub fn for_hub(&self, position: Option<usize>) -> Option<&KeyHandle> {
        match self.0.as_slice() {
            [only] => Some(only),
            many => many.get(position?),
        }
    }
}

impl KeySource {
    /// The mode, then that mode's key settings for `hubs` (the hub settings, parsed by
    /// [`HubList::from_lookup`]).
    pub fn from_lookup(settings: &Lookup<'_>, hubs: Option<HubList>) -> Result<Self, SettingError> {
        let mode = settings
            .get(SIGNING_MODE)
            .map(|text| {
                SigningMode::parse(&text)
                    .map_err(|e| SettingError::new(SIGNING_MODE, e.to_string()))
            })
            .transpose()?
            .unwrap_or_default();
        match mode {
            SigningMode::HubPolicy => hub_policy(settings, hubs),
            SigningMode::EnrollmentGroup => enrollment_group(settings, hubs),
        }
    }

    /// Whether DPS registration tokens can be signed (enrollment-group mode with `DPS_ID_SCOPE`).
    pub fn signs_registrations(&self) -> bool {
        self.registrations.is_some()
    }
}

/// `SIGNING_MODE=hub-policy`: one policy key per hub; the enrollment-group settings must be unset.
fn hub_policy(settings: &Lookup<'_>, hubs: Option<HubList>) -> Result<KeySource, SettingError> {
    for setting in [
        ENROLLMENT_GROUP_KEY,
        ENROLLMENT_GROUP_KEY_SECRET,
        DPS_ID_SCOPE,
        DPS_GLOBAL_ENDPOINT,
    ] {
        refuse_if_set(
            settings,
            setting,
            "is only used with SIGNING_MODE=enrollment-group",
        )?;
    }
    if let Some(list) = &hubs
        && let Some(suffix) = list.suffixes.first()
    {
        return Err(SettingError::new(
            list.setting,
            format!(
                "the suffix entry `*.{suffix}` needs SIGNING_MODE=enrollment-group: in hub-policy mode each hub has its own policy key, so every hub must be listed"
            ),
        ));
    }
    let policy = settings
        .optional(&IOTHUB_POLICY_NAME)
        .map(|(setting, name)| {
            PolicyName::parse(&name).map_err(|e| SettingError::new(setting, e.to_string()))
        })
        .transpose()?;
    let several = hubs.as_ref().is_some_and(|list| list.hubs.len() > 1);
    let one_key_with_several = |setting: &'static str, map: &str| {
        SettingError::new(
            setting,
            format!("must be unset with more than one hub: give each hub its key in {map}"),
        )
    };
    if !settings.is_set(KEYVAULT_URI) {
        refuse_key_vault_settings(
            settings,
            &[IOTHUB_POLICY_KEY_SECRET, IOTHUB_POLICY_KEY_SECRETS],
        )?;
        let list = hubs.ok_or_else(|| IOTHUB_HOSTNAME.missing())?;
        let policy = policy.ok_or_else(|| IOTHUB_POLICY_NAME.missing())?;
        let keys: Vec<SigningKey> = match (
            settings.optional(&IOTHUB_POLICY_KEY),
            settings.get(IOTHUB_POLICY_KEYS),
        ) {
            (Some((setting, _)), Some(_)) => {
                return Err(SettingError::new(
                    setting,
                    "must be unset when IOTHUB_POLICY_KEYS is set",
                ));
            }
            (Some((setting, _)), None) if several => {
                return Err(one_key_with_several(setting, IOTHUB_POLICY_KEYS));
            }
            (Some((setting, key)), None) => {
                // The text is as secret as the key: wipe it once decoded.
                let key = zeroize::Zeroizing::new(key);
                vec![
                    SigningKey::from_base64(&key)
                        .map_err(|e| SettingError::new(setting, e.to_string()))?,
                ]
            }
            (None, Some(text)) => {
                let text = zeroize::Zeroizing::new(text);
                let map = hub_map(&text, IOTHUB_POLICY_KEYS, &list, "base64 policy key")?;
                map.into_iter()
                    .map(|(hub, key)| {
                        let key = zeroize::Zeroizing::new(key);
                        SigningKey::from_base64(&key).map_err(|e| {
                            SettingError::new(
                                IOTHUB_POLICY_KEYS,
                                format!("the key of {}: {e}", hub.as_str()),
                            )
                        })
                    })
                    .collect::<Result<_, _>>()?
            }
            (None, None) if several => {
                return Err(SettingError::new(
                    IOTHUB_POLICY_KEYS,
                    "is required with more than one hub (a JSON object: hub → base64 policy key)",
                ));
            }
            (None, None) => return Err(IOTHUB_POLICY_KEY.missing()),
        };
        let keys = keys
            .iter()
            .map(|key| {
                KeySlot::Static(IssuingKey {
                    signer: TokenSigner::HubPolicy(Signer::new(policy.as_str(), key)),
                    version: None,
                    own_hub: None,
                })
            })
            .collect();
        return Ok(KeySource {
            mode: SigningMode::HubPolicy,
            hubs: Some(list),
            keys,
            vault: None,
            registrations: None,
        });
    }
    for name in [IOTHUB_POLICY_KEY, Name::new(IOTHUB_POLICY_KEYS)] {
        if let Some((setting, _)) = settings.optional(&name) {
            return Err(SettingError::new(
                setting,
                "must be unset when KEYVAULT_URI is set (the key comes from Key Vault)",
            ));
        }
    }
    let vault = KeyVaultSettings::from_lookup(settings)?;
    let keys = match (
        settings.get(IOTHUB_POLICY_KEY_SECRET),
        settings.get(IOTHUB_POLICY_KEY_SECRETS),
    ) {
        (Some(_), Some(_)) => {
            return Err(SettingError::new(
                IOTHUB_POLICY_KEY_SECRET,
                "must be unset when IOTHUB_POLICY_KEY_SECRETS is set",
            ));
        }
        (Some(_), None) if several => {
            return Err(one_key_with_several(
                IOTHUB_POLICY_KEY_SECRET,
                IOTHUB_POLICY_KEY_SECRETS,
            ));
        }
        (Some(name), None) => {
            let name = secret_name(IOTHUB_POLICY_KEY_SECRET, name)?;
            vec![KeySlot::Secret(SecretSpec {
                name,
                setting: IOTHUB_POLICY_KEY_SECRET,
                secret_use: SecretUse::HubPolicy {
                    hub: hubs.as_ref().and_then(|list| list.hubs.first().cloned()),
                    policy,
                    strict: false,
                },
                hub: None,
            })]
        }
        (None, Some(text)) => {
            let list = hubs.as_ref().ok_or_else(|| {
                SettingError::new(
                    IOTHUB_POLICY_KEY_SECRETS,
                    "needs the hubs it maps, in IOTHUB_HOSTNAMES",
                )
            })?;
            hub_map(
                &text,
                IOTHUB_POLICY_KEY_SECRETS,
                list,
                "Key Vault secret name",
            )?
            .into_iter()
            .map(|(hub, name)| {
                let name = secret_name(IOTHUB_POLICY_KEY_SECRETS, name)?;
                Ok(KeySlot::Secret(SecretSpec {
                    name,
                    setting: IOTHUB_POLICY_KEY_SECRETS,
                    hub: Some(hub.canonical().into_owned()),
                    secret_use: SecretUse::HubPolicy {
                        hub: Some(hub.clone()),
                        policy: policy.clone(),
                        strict: true,
                    },
                }))
            })
            .collect::<Result<_, SettingError>>()?
        }
        (None, None) if several => {
            return Err(SettingError::new(
                IOTHUB_POLICY_KEY_SECRETS,
                "is required with KEYVAULT_URI and more than one hub (a JSON object: hub → Key Vault secret name)",
            ));
        }
        (None, None) => {
            return Err(SettingError::new(
                IOTHUB_POLICY_KEY_SECRET,
                "is required when KEYVAULT_URI is set",
            ));
        }
    };
    Ok(KeySource {
        mode: SigningMode::HubPolicy,
        hubs,
        keys,
        vault: Some(vault),
        registrations: None,
    })
}

/// `SIGNING_MODE=enrollment-group`: the group key (one for every hub), the hubs, optionally the DPS
/// ID scope; no hub policy settings at all.
fn enrollment_group(
    settings: &Lookup<'_>,
    hubs: Option<HubList>,
) -> Result<KeySource, SettingError> {
    let no_policy_key = "must be unset when SIGNING_MODE=enrollment-group (the function then holds no hub policy key)";
    for name in [
        IOTHUB_POLICY_NAME,
        IOTHUB_POLICY_KEY,
        Name::new(IOTHUB_POLICY_KEYS),
        Name::new(IOTHUB_POLICY_KEY_SECRET),
        Name::new(IOTHUB_POLICY_KEY_SECRETS),
    ] {
        if let Some((setting, _)) = settings.optional(&name) {
            return Err(SettingError::new(setting, no_policy_key));
        }
    }
    let hubs = hubs.ok_or_else(|| IOTHUB_HOSTNAME.missing())?;
    let id_scope = settings
        .get(DPS_ID_SCOPE)
        .map(|text| {
            IdScope::parse(text.trim()).map_err(|e| SettingError::new(DPS_ID_SCOPE, e.to_string()))
        })
        .transpose()?;
    let registrations = match &id_scope {
        None => {
            refuse_if_set(
                settings,
                DPS_GLOBAL_ENDPOINT,
                "is only used with DPS_ID_SCOPE",
            )?;
            None
        }
        Some(id_scope) => Some(Registrations {
            id_scope: id_scope.clone(),
            provisioning_host: provisioning_host(settings, &hubs)?,
        }),
    };
    if !settings.is_set(KEYVAULT_URI) {
        refuse_key_vault_settings(settings, &[ENROLLMENT_GROUP_KEY_SECRET])?;
        let key = settings.get(ENROLLMENT_GROUP_KEY).ok_or_else(|| {
            SettingError::new(
                ENROLLMENT_GROUP_KEY,
                "is required with SIGNING_MODE=enrollment-group (or ENROLLMENT_GROUP_KEY_SECRET with KEYVAULT_URI)",
            )
        })?;
        let key = zeroize::Zeroizing::new(key);
        let key = SigningKey::from_base64(&key)
            .map_err(|e| SettingError::new(ENROLLMENT_GROUP_KEY, e.to_string()))?;
        let signer = GroupSigner::new(id_scope.as_ref().map(IdScope::as_str), &key);
        return Ok(KeySource {
            mode: SigningMode::EnrollmentGroup,
            hubs: Some(hubs),
            keys: vec![KeySlot::Static(IssuingKey {
                signer: TokenSigner::EnrollmentGroup(signer),
                version: None,
                own_hub: None,
            })],
            vault: None,
            registrations,
        });
    }
    refuse_if_set(
        settings,
        ENROLLMENT_GROUP_KEY,
        "must be unset when KEYVAULT_URI is set (the key comes from Key Vault)",
    )?;
    let vault = KeyVaultSettings::from_lookup(settings)?;
    let name = settings.get(ENROLLMENT_GROUP_KEY_SECRET).ok_or_else(|| {
        SettingError::new(
            ENROLLMENT_GROUP_KEY_SECRET,
            "is required when KEYVAULT_URI is set",
        )
    })?;
    let name = secret_name(ENROLLMENT_GROUP_KEY_SECRET, name)?;
    Ok(KeySource {
        mode: SigningMode::EnrollmentGroup,
        hubs: Some(hubs),
        keys: vec![KeySlot::Secret(SecretSpec {
            name,
            setting: ENROLLMENT_GROUP_KEY_SECRET,
            secret_use: SecretUse::EnrollmentGroup { id_scope },
            hub: None,
        })],
        vault: Some(vault),
        registrations,
    })
}

/// IoT Hub's DNS suffix in each cloud, and that cloud's DPS global endpoint
/// (docs/azure-behaviour.md §12).
const CLOUDS: [(&str, &str); 3] = [
    ("azure-devices.net", "global.azure-devices-provisioning.net"),
    ("azure-devices.cn", "global.azure-devices-provisioning.cn"),
    ("azure-devices.us", "global.azure-devices-provisioning.us"),
];

/// `DPS_GLOBAL_ENDPOINT`, or the global endpoint of the hubs' cloud. The hubs must all be in one
/// suffix (one DPS instance serves one cloud), and a given endpoint must be in that cloud.
fn provisioning_host(settings: &Lookup<'_>, hubs: &HubList) -> Result<Arc<str>, SettingError> {
    let mut suffixes: Vec<&str> = hubs
        .hubs
        .iter()
        .map(HubHost::suffix)
        .chain(hubs.suffixes.iter().map(String::as_str))
        .collect();
    suffixes.sort_unstable();
    suffixes.dedup();
    let [suffix] = suffixes.as_slice() else {
        return Err(SettingError::new(
            hubs.setting,
            format!(
                "names hubs in different DNS suffixes ({}), but with DPS_ID_SCOPE the hubs are one DPS instance's, in one cloud",
                suffixes.join(", ")
            ),
        ));
    };
    let cloud_endpoint = CLOUDS
        .iter()
        .find(|(hub_suffix, _)| hub_suffix == suffix)
        .map(|(_, endpoint)| *endpoint);
    match settings.get(DPS_GLOBAL_ENDPOINT) {
        Some(text) => {
            let endpoint = HubHost::parse(text.trim())
                .map(|host| host.as_str().to_owned())
                .map_err(|_| {
                    SettingError::new(
                        DPS_GLOBAL_ENDPOINT,
                        "must be a host name like global.azure-devices-provisioning.net (no scheme, port or path)",
                    )
                })?;
            if let Some(expected) = cloud_endpoint {
                let dps_suffix = expected.trim_start_matches("global.");
                if !endpoint.ends_with(&format!(".{dps_suffix}")) {
                    return Err(SettingError::new(
                        DPS_GLOBAL_ENDPOINT,
                        format!(
                            "is not in the hubs' cloud ({suffix}): DPS there is under {dps_suffix}, e.g. {expected}"
                        ),
                    ));
                }
            }
            Ok(Arc::from(endpoint))
        }
        None => cloud_endpoint.map(Arc::from).ok_or_else(|| {
            SettingError::new(
                DPS_GLOBAL_ENDPOINT,
                format!(
                    "is required: the hubs' suffix {suffix} is not one of Azure's clouds, so the DPS endpoint cannot be derived"
                ),
            )
        }),
    }
}

/// A JSON object `text` (setting `setting`) from hubs to `what`, with exactly one entry per listed
/// hub (either host-name form, any case), returned in the list's order. The values never appear
/// in an error: for `IOTHUB_POLICY_KEYS` they are keys.
fn hub_map<'l>(
    text: &str,
    setting: &'static str,
    list: &'l HubList,
    what: &str,
) -> Result<Vec<(&'l HubHost, String)>, SettingError> {
    let refuse = |problem: String| SettingError::new(setting, problem);
    let entries = json_object::<String>(text).map_err(|_| {
        refuse(format!(
            "must be a JSON object mapping each hub in {} to its {what}, with no key twice",
            list.setting
        ))
    })?;
    let mut by_position: Vec<Option<String>> = vec![None; list.hubs.len()];
    for (hub, value) in entries {
        let host = HubHost::parse(&hub).map_err(|e| refuse(format!("key `{hub}` {e}")))?;
        let position = list.position(&host).ok_or_else(|| {
            refuse(format!(
                "names `{hub}`, which is not a hub in {}",
                list.setting
            ))
        })?;
        if by_position[position].replace(value).is_some() {
            return Err(refuse(format!(
                "names the hub {} twice (its two host names are one hub)",
                host.canonical()
            )));
        }
    }
    list.hubs
        .iter()
        .zip(by_position)
        .map(|(hub, value)| match value {
            Some(value) if !value.trim().is_empty() => Ok((hub, value.trim().to_owned())),
            Some(_) => Err(refuse(format!("the {what} of {} is empty", hub.as_str()))),
            None => Err(refuse(format!(
                "has no entry for the hub {} (every hub in {} needs its {what})",
                hub.as_str(),
                list.setting
            ))),
        })
        .collect()
}

/// `name`, if it is a Key Vault secret name.
fn secret_name(setting: &'static str, name: String) -> Result<String, SettingError> {
    let name = name.trim().to_owned();
    if is_secret_name(&name) {
        Ok(name)
    } else {
        Err(SettingError::new(setting, SECRET_NAME_RULE))
    }
}

/// Without `KEYVAULT_URI`, the settings that only Key Vault mode reads must be unset.
fn refuse_key_vault_settings(
    settings: &Lookup<'_>,
    secret_settings: &[&'static str],
) -> Result<(), SettingError> {
    for &setting in secret_settings.iter().chain(&[
        "KEYVAULT_REFRESH_SECONDS",
        key_vault::KEYVAULT_MAX_KEY_AGE_SECONDS,
    ]) {
        refuse_if_set(settings, setting, "is only used with KEYVAULT_URI")?;
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const KEY: &str = "c2VjcmV0LWtleS1mb3ItdGVzdHMtb25seS0xMjM0NTY=";
    const OTHER_KEY: &str = "b3RoZXIta2V5LWZvci10ZXN0cy1vbmx5LTEyMzQ1Ng==";

    fn source(pairs: &[(&str, &str)]) -> Result<KeySource, SettingError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let read = |name: &str| map.get(name).cloned();
        let settings = Lookup::new(&read);
        KeySource::from_lookup(&settings, HubList::from_lookup(&settings)?)
    }

    use crate::hubs::IOTHUB_HOSTNAMES;

    const TWO_HUBS: (&str, &str) = (
        IOTHUB_HOSTNAMES,
        "eu.azure-devices.net,us.device.azure-devices.net",
    );

    #[test]
    fn each_hub_has_its_own_key_in_list_order() {
        let keys = format!(
            r#"{{"US.azure-devices.net": "{OTHER_KEY}", "eu.azure-devices.net": "{KEY}"}}"#
        );
        let source = source(&[
            TWO_HUBS,
            ("IOTHUB_POLICY_NAME", "device"),
            (IOTHUB_POLICY_KEYS, &keys),
        ])
        .expect("valid");
        assert_eq!(source.keys.len(), 2);
        let tokens: Vec<String> = source
            .keys
            .iter()
            .map(|slot| match slot {
                KeySlot::Static(IssuingKey {
                    signer: TokenSigner::HubPolicy(signer),
                    ..
                }) => {
                    signer
                        .sign(
                            "h.example",
                            &crate::params::DeviceId::parse("d").expect("id"),
                            1,
                        )
                        .token
                }
                other => panic!("a static policy key: {other:?}"),
            })
            .collect();
        let expected = |key: &str| {
            Signer::new("device", &SigningKey::from_base64(key).expect("key"))
                .sign(
                    "h.example",
                    &crate::params::DeviceId::parse("d").expect("id"),
                    1,
                )
                .token
        };
        assert_eq!(tokens, [expected(KEY), expected(OTHER_KEY)]);
    }

    #[test]
    fn key_maps_must_name_exactly_the_listed_hubs_and_never_echo_a_key() {
        let base = [TWO_HUBS, ("IOTHUB_POLICY_NAME", "device")];
        for (keys, want) in [
            (
                format!(r#"{{"eu.azure-devices.net": "{KEY}"}}"#),
                "has no entry for the hub us.device.azure-devices.net",
            ),
            (
                format!(
                    r#"{{"eu.azure-devices.net": "{KEY}", "us.azure-devices.net": "{KEY}", "eu.device.azure-devices.net": "{KEY}"}}"#
                ),
                "names the hub eu.azure-devices.net twice",
            ),
            (
                format!(
                    r#"{{"eu.azure-devices.net": "{KEY}", "us.azure-devices.net": "{KEY}", "x.azure-devices.net": "{KEY}"}}"#
                ),
                "which is not a hub in IOTHUB_HOSTNAMES",
            ),
            (
                format!(
                    r#"{{"eu.azure-devices.net": "{KEY}", "us.azure-devices.net": "s3cr3t!"}}"#
                ),
                "the key of us.device.azure-devices.net: not valid base64",
            ),
            (
                format!(r#"{{"eu.azure-devices.net": "{KEY}", "eu.azure-devices.net": "{KEY}"}}"#),
                "must be a JSON object",
            ),
            ("[]".to_owned(), "must be a JSON object"),
        ] {
            let mut pairs = base.to_vec();
            pairs.push((IOTHUB_POLICY_KEYS, &keys));
            let error = source(&pairs).expect_err(&keys);
            assert_eq!(error.setting, IOTHUB_POLICY_KEYS, "{keys}");
            assert!(error.problem.contains(want), "{keys}: {}", error.problem);
            assert!(
                !error.problem.contains(KEY) && !error.problem.contains("s3cr3t"),
                "{}",
                error.problem
            );
        }
    }

    #[test]
    fn one_key_settings_are_refused_with_several_hubs() {
        let error = source(&[
            TWO_HUBS,
            ("IOTHUB_POLICY_NAME", "device"),
            ("IOTHUB_POLICY_KEY", KEY),
        ])
        .expect_err("one key, two hubs");
        assert_eq!(error.setting, "IOTHUB_POLICY_KEY");
        let error = source(&[
            TWO_HUBS,
            ("KEYVAULT_URI", "https://kv.vault.azure.net/"),
            (IOTHUB_POLICY_KEY_SECRET, "s"),
        ])
        .expect_err("one secret, two hubs");
        assert_eq!(error.setting, IOTHUB_POLICY_KEY_SECRET);
        let error = source(&[TWO_HUBS, ("KEYVAULT_URI", "https://kv.vault.azure.net/")])
            .expect_err("no secrets");
        assert_eq!(error.setting, IOTHUB_POLICY_KEY_SECRETS);
    }

    #[test]
    fn each_hubs_secret_is_read_strictly_and_named_by_its_hub() {
        let source = source(&[
            TWO_HUBS,
            ("KEYVAULT_URI", "https://kv.vault.azure.net/"),
            (
                IOTHUB_POLICY_KEY_SECRETS,
                r#"{"us.azure-devices.net": "us-key", "eu.azure-devices.net": "eu-key"}"#,
            ),
        ])
        .expect("valid");
        let specs: Vec<(&str, Option<&str>, bool)> = source
            .keys
            .iter()
            .map(|slot| match slot {
                KeySlot::Secret(SecretSpec {
                    name,
                    hub,
                    secret_use: SecretUse::HubPolicy { strict, .. },
                    ..
                }) => (name.as_str(), hub.as_deref(), *strict),
                other => panic!("a secret: {other:?}"),
            })
            .collect();
        assert_eq!(
            specs,
            [
                ("eu-key", Some("eu.azure-devices.net"), true),
                ("us-key", Some("us.azure-devices.net"), true)
            ]
        );
    }

    #[test]
    fn suffix_entries_are_for_enrollment_groups_only() {
        let error = source(&[
            (IOTHUB_HOSTNAMES, "a.azure-devices.net,*.azure-devices.net"),
            ("IOTHUB_POLICY_NAME", "device"),
            ("IOTHUB_POLICY_KEY", KEY),
        ])
        .expect_err("suffix in hub-policy mode");
        assert_eq!(error.setting, IOTHUB_HOSTNAMES);
        assert!(error.problem.contains("SIGNING_MODE=enrollment-group"));
        assert!(
            source(&[
                (IOTHUB_HOSTNAMES, "*.azure-devices.net"),
                (SIGNING_MODE, "enrollment-group"),
                (ENROLLMENT_GROUP_KEY, KEY),
            ])
            .is_ok()
        );
    }

    #[test]
    fn both_hub_settings_at_once_are_refused() {
        let error = source(&[
            TWO_HUBS,
            ("IOTHUB_HOSTNAME", "eu.azure-devices.net"),
            ("IOTHUB_POLICY_NAME", "device"),
            ("IOTHUB_POLICY_KEY", KEY),
        ])
        .expect_err("both");
        assert_eq!(error.setting, "IOTHUB_HOSTNAME");
    }

    #[test]
    fn the_provisioning_host_follows_the_hubs_cloud() {
        let group = |hubs: &'static str, endpoint: Option<&'static str>| {
            let mut pairs = vec![
                (IOTHUB_HOSTNAMES, hubs),
                (SIGNING_MODE, "enrollment-group"),
                (ENROLLMENT_GROUP_KEY, KEY),
                (DPS_ID_SCOPE, "0ne00000A0A"),
            ];
            pairs.extend(endpoint.map(|e| (DPS_GLOBAL_ENDPOINT, e)));
            source(&pairs)
        };
        let host = |result: Result<KeySource, SettingError>| {
            result
                .expect("valid")
                .registrations
                .expect("registrations")
                .provisioning_host
                .to_string()
        };
        assert_eq!(
            host(group(
                "a.azure-devices.net,b.device.azure-devices.net",
                None
            )),
            "global.azure-devices-provisioning.net"
        );
        assert_eq!(
            host(group("*.azure-devices.cn", None)),
            "global.azure-devices-provisioning.cn"
        );
        assert_eq!(
            host(group(
                "a.azure-devices.us",
                Some("Global.Azure-Devices-Provisioning.us")
            )),
            "global.azure-devices-provisioning.us"
        );
        assert_eq!(
            host(group("h.example", Some("dps.example"))),
            "dps.example",
            "an unknown suffix takes any endpoint"
        );
        for (hubs, endpoint, setting) in [
            (
                "a.azure-devices.net,b.azure-devices.cn",
                None,
                IOTHUB_HOSTNAMES,
            ),
            (
                "a.azure-devices.net",
                Some("global.azure-devices-provisioning.cn"),
                DPS_GLOBAL_ENDPOINT,
            ),
            (
                "a.azure-devices.net",
                Some("https://global.azure-devices-provisioning.net"),
                DPS_GLOBAL_ENDPOINT,
            ),
            ("h.example", None, DPS_GLOBAL_ENDPOINT),
        ] {
            let error = group(hubs, endpoint).expect_err(hubs);
            assert_eq!(error.setting, setting, "{hubs} {endpoint:?}: {error}");
        }
        let error = source(&[
            (IOTHUB_HOSTNAMES, "a.azure-devices.net"),
            (SIGNING_MODE, "enrollment-group"),
            (ENROLLMENT_GROUP_KEY, KEY),
            (DPS_GLOBAL_ENDPOINT, "global.azure-devices-provisioning.net"),
        ])
        .expect_err("no DPS_ID_SCOPE");
        assert_eq!(error.setting, DPS_GLOBAL_ENDPOINT);
    }
}
