//! The handler's settings for one start, and the values of a valid configuration.

/// IoT Hub host name every `TestApp` is configured with unless a test overrides it.
pub(crate) const HOSTNAME: &str = "demo-hub.azure-devices.net";
/// Shared access policy name; ordinary, so every SDK writes it the same way.
pub(crate) const POLICY: &str = "device";
/// 32 random bytes in base64. The `+` and `/` make sure the key is decoded, not used as text.
pub(crate) const KEY: &str = "1CwqlolcDe+RIf3BLgbXJFiKOxGMxWbMGpbR598oqiw=";

/// A valid configuration whose allow list holds 127.0.0.1, the TCP peer of every test request.
pub(crate) fn base_settings() -> Vec<(&'static str, &'static str)> {
    vec![
        ("IOTHUB_HOSTNAME", HOSTNAME),
        ("IOTHUB_POLICY_NAME", POLICY),
        ("IOTHUB_POLICY_KEY", KEY),
        ("ALLOWED_IPS", "127.0.0.1"),
    ]
}

/// `base_settings()` with each of `overrides` replacing the setting of the same name, or added.
pub(crate) fn settings_with<'a>(overrides: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut settings: Vec<(&str, &str)> = base_settings()
        .into_iter()
        .filter(|(name, _)| !overrides.iter().any(|(o, _)| o == name))
        .collect();
    settings.extend_from_slice(overrides);
    settings
}

/// `settings_with(overrides)` without the settings named in `removed`.
pub(crate) fn settings_without<'a>(
    removed: &[&str],
    overrides: &[(&'a str, &'a str)],
) -> Vec<(&'a str, &'a str)> {
    settings_with(overrides)
        .into_iter()
        .filter(|(name, _)| !removed.contains(name))
        .collect()
}
