//! What a Key Vault secret's value may be, and the signer it becomes.
//!
//! **What it owns.** [`SecretUse`]: what the secret is for, and so which forms are accepted.
//! A hub policy key is a bare base64 key (the hub and policy names then come from settings) or an
//! IoT Hub connection string (`HostName=…;SharedAccessKeyName=…;SharedAccessKey=…`). For the one
//! secret of `IOTHUB_POLICY_KEY_SECRET`, the string's host and policy apply unless set explicitly
//! (a setting that overrides a different value is noted, for a warning); for a hub's secret in
//! `IOTHUB_POLICY_KEY_SECRETS` the string must name that hub (either host-name form) and, when
//! `IOTHUB_POLICY_NAME` is set, that policy — a secret filed under the wrong hub is a bad secret,
//! not a warning. An enrollment group key is a bare base64 key.
//!
//! **What it trusts.** Nothing in the value: it is parsed, and a malformed value is an error that
//! never contains the value.

use crate::hubs::HubHost;
use crate::sas::enrollment_group::GroupSigner;
use crate::sas::{IdScope, PolicyName, Signer, SigningKey, SigningMode, TokenSigner};

/// What the secret's value is for, with the settings that complete it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretUse {
    /// A hub policy key (or a connection string with one); either name may come from settings.
    HubPolicy {
        /// The hub the key is for, when the settings name it.
        hub: Option<HubHost>,
        /// `IOTHUB_POLICY_NAME`, when set.
        policy: Option<PolicyName>,
        /// A hub's secret in `IOTHUB_POLICY_KEY_SECRETS`: a connection string that names another
        /// hub or policy is refused rather than overridden.
        strict: bool,
    },
    /// A DPS enrollment group key.
    EnrollmentGroup {
        /// `DPS_ID_SCOPE`, when set.
        id_scope: Option<IdScope>,
    },
}

/// What a secret's value became.
#[derive(Debug)]
pub struct ParsedSecret {
    /// The prepared signer.
    pub signer: TokenSigner,
    /// The hub a connection string named, when no setting names the hub: the key's own hub.
    pub own_hub: Option<HubHost>,
    /// Settings that override a different value in the connection string (never in strict mode).
    pub overridden: Vec<Overridden>,
}

impl SecretUse {
    /// The signing mode a key for this use signs in.
    pub fn mode(&self) -> SigningMode {
        match self {
            Self::HubPolicy { .. } => SigningMode::HubPolicy,
            Self::EnrollmentGroup { .. } => SigningMode::EnrollmentGroup,
        }
    }

    /// Turn the secret's value into a signer.
    pub fn signer(&self, value: &str) -> Result<ParsedSecret, SecretFormatError> {
        match self {
            Self::HubPolicy {
                hub,
                policy,
                strict,
            } => {
                let parsed = parse_secret_noting(value, hub.as_ref(), policy.as_ref())?;
                if *strict && let Some(overridden) = parsed.overridden.first() {
                    return Err(SecretFormatError::Disagrees(overridden.part));
                }
                Ok(parsed)
            }
            Self::EnrollmentGroup { id_scope } => {
                let value = value.trim();
                if value.is_empty() {
                    return Err(SecretFormatError::Empty);
                }
                let key =
                    SigningKey::from_base64(value).map_err(|_| SecretFormatError::NotGroupKey)?;
                let signer = GroupSigner::new(id_scope.as_ref().map(IdScope::as_str), &key);
                Ok(ParsedSecret {
                    signer: TokenSigner::EnrollmentGroup(signer),
                    own_hub: None,
                    overridden: Vec::new(),
                })
            }
        }
    }
}

/// Why a secret's value is not a key. Never contains the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretFormatError {
    /// The secret has no value.
    #[error("the secret has no value")]
    Empty,
    /// A bare key that is not base64.
    #[error("it is neither base64 nor an IoT Hub connection string")]
    NotBase64,
    /// An enrollment group key that is not base64.
    #[error("an enrollment group key must be the group's base64 key")]
    NotGroupKey,
    /// A connection string without one of its parts.
    #[error("the connection string has no {0}")]
    MissingPart(&'static str),
    /// A connection-string part that is malformed.
    #[error("the connection string's {0} is malformed")]
    BadPart(&'static str),
    /// A device (or module) connection string: its key is a device key, not a policy key.
    #[error(
        "it is a device connection string (DeviceId=…), not a shared access policy's: a device key signs only for its own device"
    )]
    DeviceConnectionString,
    /// A bare key, but the host or policy name is configured nowhere.
    #[error("the secret holds a bare key, so {0} must be set")]
    NeedsSetting(&'static str),
    /// A hub's secret whose connection string names another hub or policy.
    #[error(
        "the connection string's {0} disagrees with the hub it is listed for in IOTHUB_POLICY_KEY_SECRETS or with IOTHUB_POLICY_NAME"
    )]
    Disagrees(&'static str),
}

/// A connection-string value that an explicit setting overrides: which setting, and which part of
/// the connection string it differs from. Worth a warning (the operator may have pointed the
/// service at another hub or policy by mistake); never carries the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overridden {
    /// `IOTHUB_HOSTNAME` or `IOTHUB_POLICY_NAME`.
    pub setting: &'static str,
    /// `HostName` or `SharedAccessKeyName`.
    pub part: &'static str,
}

/// Turn a hub policy secret's value into a signer: an IoT Hub connection string
/// (`HostName=…;SharedAccessKeyName=…;SharedAccessKey=…`), whose host and policy apply unless set
/// explicitly, or a bare base64 key, which needs both set. Notes the settings that override a
/// different value in a connection string.
pub fn parse_secret_noting(
    value: &str,
    hub: Option<&HubHost>,
    policy: Option<&PolicyName>,
) -> Result<ParsedSecret, SecretFormatError> {
    let value = value.trim();
    if value.is_empty() {
        return Err(SecretFormatError::Empty);
    }
    if !value.contains(';') && !value.contains("HostName=") {
        let key = SigningKey::from_base64(value).map_err(|_| SecretFormatError::NotBase64)?;
        hub.ok_or(SecretFormatError::NeedsSetting("IOTHUB_HOSTNAME"))?;
        let policy = policy.ok_or(SecretFormatError::NeedsSetting("IOTHUB_POLICY_NAME"))?;
        return Ok(ParsedSecret {
            signer: TokenSigner::HubPolicy(Signer::new(policy.as_str(), &key)),
            own_hub: None,
            overridden: Vec::new(),
        });
    }
    let mut host_name = None;
    let mut key_name = None;
    let mut key = None;
    for part in value.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, part_value) = part
            .split_once('=')
            .ok_or(SecretFormatError::BadPart("syntax"))?;
        match name.trim() {
            "HostName" => host_name = Some(part_value.trim()),
            "SharedAccessKeyName" => key_name = Some(part_value.trim()),
            "SharedAccessKey" => key = Some(part_value.trim()),
            // A device's key signs only for that device, and as a policy token it is refused.
            "DeviceId" | "ModuleId" => return Err(SecretFormatError::DeviceConnectionString),
            _ => {}
        }
    }
    let key = key.ok_or(SecretFormatError::MissingPart("SharedAccessKey"))?;
    let key =
        SigningKey::from_base64(key).map_err(|_| SecretFormatError::BadPart("SharedAccessKey"))?;
    let named_hub = host_name
        .map(|host| HubHost::parse(host).map_err(|_| SecretFormatError::BadPart("HostName")))
        .transpose();
    let mut overridden = Vec::new();
    if let Some(hub) = hub {
        // Only a hub that differs matters: the other host name of the same hub is the same hub.
        if host_name.is_some() && !matches!(&named_hub, Ok(Some(named)) if named.same_hub(hub)) {
            overridden.push(Overridden {
                setting: "IOTHUB_HOSTNAME",
                part: "HostName",
            });
        }
    }
    if policy.is_some_and(|policy| key_name.is_some_and(|name| name != policy.as_str())) {
        overridden.push(Overridden {
            setting: "IOTHUB_POLICY_NAME",
            part: "SharedAccessKeyName",
        });
    }
    let own_hub = match hub {
        Some(_) => None,
        None => Some(named_hub?.ok_or(SecretFormatError::MissingPart("HostName"))?),
    };
    let policy = match policy {
        Some(policy) => policy.clone(),
        None => {
            let name = key_name.ok_or(SecretFormatError::MissingPart("SharedAccessKeyName"))?;
            PolicyName::parse(name)
                .map_err(|_| SecretFormatError::BadPart("SharedAccessKeyName"))?
        }
    };
    Ok(ParsedSecret {
        signer: TokenSigner::HubPolicy(Signer::new(policy.as_str(), &key)),
        own_hub,
        overridden,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::DeviceId;

    const KEY: &str = "c2VjcmV0LWtleS1mb3ItdGVzdHMtb25seS0xMjM0NTY=";

    fn hub(name: &str) -> HubHost {
        HubHost::parse(name).expect("valid hub name")
    }

    fn policy(name: &str) -> PolicyName {
        PolicyName::parse(name).expect("valid policy name")
    }

    fn parse_secret(
        value: &str,
        hub: Option<&HubHost>,
        policy: Option<&PolicyName>,
    ) -> Result<ParsedSecret, SecretFormatError> {
        parse_secret_noting(value, hub, policy)
    }

    /// The token the parsed secret signs for device `d` on `host`.
    fn token(parsed: &ParsedSecret, host: &str) -> String {
        let TokenSigner::HubPolicy(signer) = &parsed.signer else {
            panic!("a hub policy signer");
        };
        signer
            .sign(host, &DeviceId::parse("d").expect("valid id"), 1)
            .token
    }

    #[test]
    fn a_connection_string_supplies_host_and_policy() {
        let value = format!(
            "HostName=cs-hub.azure-devices.net;SharedAccessKeyName=registryRead;SharedAccessKey={KEY}"
        );
        let parsed = parse_secret(&value, None, None).expect("valid connection string");
        assert_eq!(
            parsed.own_hub.as_ref().map(HubHost::as_str),
            Some("cs-hub.azure-devices.net"),
            "the key's own hub"
        );
        assert!(
            token(&parsed, "cs-hub.azure-devices.net").ends_with("&skn=registryRead"),
            "the policy from the connection string"
        );

        let explicit = parse_secret(
            &value,
            Some(&hub("mine.azure-devices.net")),
            Some(&policy("device")),
        )
        .expect("explicit settings win");
        assert_eq!(explicit.own_hub, None, "the settings name the hub");
        assert!(token(&explicit, "mine.azure-devices.net").ends_with("&skn=device"));
    }

    #[test]
    fn a_hubs_own_secret_must_name_that_hub_and_policy() {
        let value = |host: &str, policy: &str| {
            format!("HostName={host};SharedAccessKeyName={policy};SharedAccessKey={KEY}")
        };
        let strict = |hub_name: &str, policy_name: Option<&str>| SecretUse::HubPolicy {
            hub: Some(hub(hub_name)),
            policy: policy_name.map(policy),
            strict: true,
        };
        let eu = strict("eu.azure-devices.net", Some("device"));
        assert!(eu.signer(&value("eu.azure-devices.net", "device")).is_ok());
        assert!(
            eu.signer(&value("EU.device.azure-devices.net", "device"))
                .is_ok(),
            "the other host name of the same hub"
        );
        assert_eq!(
            eu.signer(&value("us.azure-devices.net", "device")).err(),
            Some(SecretFormatError::Disagrees("HostName"))
        );
        assert_eq!(
            eu.signer(&value("eu.azure-devices.net", "registryRead"))
                .err(),
            Some(SecretFormatError::Disagrees("SharedAccessKeyName"))
        );
        let any_policy = strict("eu.azure-devices.net", None);
        assert!(
            token(
                &any_policy
                    .signer(&value("eu.azure-devices.net", "registryRead"))
                    .expect("the string's policy, none set"),
                "eu.azure-devices.net"
            )
            .ends_with("&skn=registryRead")
        );
        assert_eq!(
            any_policy.signer(KEY).err(),
            Some(SecretFormatError::NeedsSetting("IOTHUB_POLICY_NAME")),
            "a bare key needs the policy name"
        );
    }

    #[test]
    fn an_enrollment_group_secret_is_a_bare_base64_key() {
        let group = SecretUse::EnrollmentGroup { id_scope: None };
        assert!(matches!(
            group.signer(KEY),
            Ok(ParsedSecret {
                signer: TokenSigner::EnrollmentGroup(_),
                ..
            })
        ));
        let connection_string =
            format!("HostName=h.azure-devices.net;SharedAccessKeyName=p;SharedAccessKey={KEY}");
        assert_eq!(
            group.signer(&connection_string).err(),
            Some(SecretFormatError::NotGroupKey)
        );
        assert_eq!(group.signer("  ").err(), Some(SecretFormatError::Empty));
    }

    #[test]
    fn settings_that_override_a_different_connection_string_part_are_noted() {
        let value = format!(
            "HostName=cs-hub.azure-devices.net;SharedAccessKeyName=registryRead;SharedAccessKey={KEY}"
        );
        let noted = |hub_name: Option<&str>, policy_name: Option<&str>| {
            let hub = hub_name.map(hub);
            let policy = policy_name.map(policy);
            parse_secret_noting(&value, hub.as_ref(), policy.as_ref())
                .expect("valid")
                .overridden
                .iter()
                .map(|o| (o.setting, o.part))
                .collect::<Vec<_>>()
        };
        assert_eq!(noted(None, None), []);
        assert_eq!(
            noted(Some("cs-hub.azure-devices.net"), Some("registryRead")),
            [],
            "the same values are not worth a warning"
        );
        assert_eq!(
            noted(
                Some("cs-hub.device.azure-devices.net"),
                Some("registryRead")
            ),
            [],
            "nor is the same hub's other host name"
        );
        assert_eq!(
            noted(Some("other.azure-devices.net"), Some("device")),
            [
                ("IOTHUB_HOSTNAME", "HostName"),
                ("IOTHUB_POLICY_NAME", "SharedAccessKeyName")
            ]
        );
    }

    #[test]
    fn a_bare_key_needs_host_and_policy_settings() {
        assert!(parse_secret(KEY, Some(&hub("h.example")), Some(&policy("p"))).is_ok());
        assert_eq!(
            parse_secret(KEY, None, Some(&policy("p"))).err(),
            Some(SecretFormatError::NeedsSetting("IOTHUB_HOSTNAME"))
        );
    }

    #[test]
    fn malformed_values_are_refused_without_echoing_them() {
        let cases = [
            ("", SecretFormatError::Empty),
            ("sup3r-s3cret!", SecretFormatError::NotBase64),
            (
                "HostName=h.example;SharedAccessKeyName=p",
                SecretFormatError::MissingPart("SharedAccessKey"),
            ),
            (
                "HostName=h.example;SharedAccessKeyName=p;SharedAccessKey=sup3r!",
                SecretFormatError::BadPart("SharedAccessKey"),
            ),
            (
                &*format!("SharedAccessKeyName=p;SharedAccessKey={KEY}"),
                SecretFormatError::MissingPart("HostName"),
            ),
            (
                &*format!("HostName=https://x;SharedAccessKeyName=p;SharedAccessKey={KEY}"),
                SecretFormatError::BadPart("HostName"),
            ),
            (
                &*format!("HostName=h.example;DeviceId=d;SharedAccessKey={KEY}"),
                SecretFormatError::DeviceConnectionString,
            ),
            (
                &*format!(
                    "HostName=h.example;DeviceId=d;SharedAccessKeyName=p;SharedAccessKey={KEY}"
                ),
                SecretFormatError::DeviceConnectionString,
            ),
            (
                "HostName=h.example;garbage",
                SecretFormatError::BadPart("syntax"),
            ),
        ];
        for (value, want) in cases {
            let got = parse_secret(value, None, None).err();
            assert_eq!(got.as_ref(), Some(&want), "value {value:?}");
            let text = want.to_string();
            assert!(!text.contains("sup3r") && !text.contains(KEY), "{text}");
        }
    }
}
