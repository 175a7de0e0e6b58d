//! The handler's environment for one start: [`Settings`], and the values of a valid one.
//!
//! One rule for changes: [`Settings::set`] gives a setting a value, replacing the one it had,
//! and [`Settings::unset`] leaves it out of the environment. An empty value is a value like any
//! other (the handler counts an empty setting as unset, and tests check that it does); nothing
//! but `unset` removes a setting.

/// IoT Hub host name every `TestApp` is configured with unless a test overrides it.
pub(crate) const HOSTNAME: &str = "demo-hub.azure-devices.net";
/// Shared access policy name; ordinary, so every SDK writes it the same way.
pub(crate) const POLICY: &str = "device";
/// 32 random bytes in base64. The `+` and `/` make sure the key is decoded, not used as text.
pub(crate) const KEY: &str = "1CwqlolcDe+RIf3BLgbXJFiKOxGMxWbMGpbR598oqiw=";

/// An address outside every test's `ALLOWED_IPS`.
pub(crate) const DENIED_IP: &str = "203.0.113.9";

/// Environment variables for one start of the handler (or of any child process), at most one
/// value a name. Built from a starting point ([`Settings::none`], [`Settings::base`],
/// [`Settings::key_vault`]) by [`set`](Settings::set) and [`unset`](Settings::unset).
#[derive(Clone, Debug, Default)]
pub(crate) struct Settings(Vec<(String, String)>);

impl Settings {
    /// Nothing set at all.
    pub(crate) fn none() -> Settings {
        Settings::default()
    }

    /// A valid configuration with a static key, whose allow list holds 127.0.0.1 (the TCP peer
    /// of every test request).
    pub(crate) fn base() -> Settings {
        Settings::none()
            .set("IOTHUB_HOSTNAME", HOSTNAME)
            .set("IOTHUB_POLICY_NAME", POLICY)
            .set("IOTHUB_POLICY_KEY", KEY)
            .set("ALLOWED_IPS", "127.0.0.1")
    }

    /// [`Settings::base`] in Key Vault mode: the key is the vault's secret `secret`, not a
    /// setting. Where the vault is, and the managed identity that reads it, come on top (from
    /// the stand-ins' `environment()`, or [`Settings::unreachable_vault`]).
    pub(crate) fn key_vault(secret: &str) -> Settings {
        Settings::base()
            .unset("IOTHUB_POLICY_KEY")
            .set("IOTHUB_POLICY_KEY_SECRET", secret)
    }

    /// Key Vault mode with a vault that refuses connections: no key ever arrives, so a token
    /// request stays in flight for the whole first-key wait (about 5 s) and then gets 503.
    pub(crate) fn unreachable_vault() -> Settings {
        Settings::key_vault("iothub-key").set("KEYVAULT_URI", "https://127.0.0.1:9/")
    }

    /// `name` set to `value` (empty included), replacing the value it had.
    pub(crate) fn set(mut self, name: &str, value: impl Into<String>) -> Settings {
        let value = value.into();
        match self.0.iter_mut().find(|(existing, _)| existing == name) {
            Some((_, old)) => *old = value,
            None => self.0.push((name.to_owned(), value)),
        }
        self
    }

    /// Each of `pairs` set, in order, as [`Settings::set`] does.
    pub(crate) fn set_all<N, V>(self, pairs: impl IntoIterator<Item = (N, V)>) -> Settings
    where
        N: AsRef<str>,
        V: Into<String>,
    {
        pairs.into_iter().fold(self, |settings, (name, value)| {
            settings.set(name.as_ref(), value)
        })
    }

    /// `name` left out of the environment.
    pub(crate) fn unset(mut self, name: &str) -> Settings {
        self.0.retain(|(existing, _)| existing != name);
        self
    }

    /// Every setting, as `(name, value)`.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
    }
}
