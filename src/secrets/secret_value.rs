//! What a Key Vault secret's value may be, and the signer it becomes.
//!
//! **What it owns.** The two accepted forms: a bare base64 policy key (the hub and policy names
//! then come from settings), or an IoT Hub connection string
//! (`HostName=…;SharedAccessKeyName=…;SharedAccessKey=…`), whose host and policy apply unless set
//! explicitly.
//!
//! **What it trusts.** Nothing in the value: it is parsed, and a malformed value is an error that
//! never contains the value.

use crate::sas::{HubName, PolicyName, Signer, SigningKey};

/// Why a secret's value is not a key. Never contains the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretFormatError {
    /// The secret has no value.
    #[error("the secret has no value")]
    Empty,
    /// A bare key that is not base64.
    #[error("it is neither base64 nor an IoT Hub connection string")]
    NotBase64,
    /// A connection string without one of its parts.
    #[error("the connection string has no {0}")]
    MissingPart(&'static str),
    /// A connection-string part that is malformed.
    #[error("the connection string's {0} is malformed")]
    BadPart(&'static str),
    /// A bare key, but the host or policy name is configured nowhere.
    #[error("the secret holds a bare key, so {0} must be set")]
    NeedsSetting(&'static str),
}

/// Turn a secret's value into a signer: an IoT Hub connection string
/// (`HostName=…;SharedAccessKeyName=…;SharedAccessKey=…`), whose host and policy apply unless set
/// explicitly, or a bare base64 key, which needs both set.
pub fn parse_secret(
    value: &str,
    hub: Option<&HubName>,
    policy: Option<&PolicyName>,
) -> Result<Signer, SecretFormatError> {
    let value = value.trim();
    if value.is_empty() {
        return Err(SecretFormatError::Empty);
    }
    if !value.contains(';') && !value.contains("HostName=") {
        let key = SigningKey::from_base64(value).map_err(|_| SecretFormatError::NotBase64)?;
        let hub = hub.ok_or(SecretFormatError::NeedsSetting("IOTHUB_HOSTNAME"))?;
        let policy = policy.ok_or(SecretFormatError::NeedsSetting("IOTHUB_POLICY_NAME"))?;
        return Ok(Signer::new(hub.as_str(), policy.as_str(), &key));
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
            _ => {}
        }
    }
    let key = key.ok_or(SecretFormatError::MissingPart("SharedAccessKey"))?;
    let key =
        SigningKey::from_base64(key).map_err(|_| SecretFormatError::BadPart("SharedAccessKey"))?;
    let hub = match hub {
        Some(hub) => hub.clone(),
        None => {
            let host = host_name.ok_or(SecretFormatError::MissingPart("HostName"))?;
            HubName::parse(host).map_err(|_| SecretFormatError::BadPart("HostName"))?
        }
    };
    let policy = match policy {
        Some(policy) => policy.clone(),
        None => {
            let name = key_name.ok_or(SecretFormatError::MissingPart("SharedAccessKeyName"))?;
            PolicyName::parse(name)
                .map_err(|_| SecretFormatError::BadPart("SharedAccessKeyName"))?
        }
    };
    Ok(Signer::new(hub.as_str(), policy.as_str(), &key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::DeviceId;

    const KEY: &str = "c2VjcmV0LWtleS1mb3ItdGVzdHMtb25seS0xMjM0NTY=";

    fn hub(name: &str) -> HubName {
        HubName::parse(name).expect("valid hub name")
    }

    fn policy(name: &str) -> PolicyName {
        PolicyName::parse(name).expect("valid policy name")
    }

    fn token(signer: &Signer) -> String {
        signer
            .sign(&DeviceId::parse("d").expect("valid id"), 1)
            .token
    }

    #[test]
    fn a_connection_string_supplies_host_and_policy() {
        let value = format!(
            "HostName=cs-hub.azure-devices.net;SharedAccessKeyName=registryRead;SharedAccessKey={KEY}"
        );
        let signer = parse_secret(&value, None, None).expect("valid connection string");
        let token = token(&signer);
        assert!(
            token.contains("sr=cs-hub.azure-devices.net%2Fdevices%2Fd"),
            "{token}"
        );
        assert!(token.ends_with("&skn=registryRead"), "{token}");

        let explicit = parse_secret(
            &value,
            Some(&hub("mine.azure-devices.net")),
            Some(&policy("device")),
        )
        .expect("explicit settings win");
        let token = super::tests::token(&explicit);
        assert!(token.contains("sr=mine.azure-devices.net"), "{token}");
        assert!(token.ends_with("&skn=device"), "{token}");
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
                SecretFormatError::MissingPart("SharedAccessKeyName"),
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
