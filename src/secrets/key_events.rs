//! The key event lines: what each read of a signing key from Key Vault came to, as one log line
//! an operator can query and alert on.
//!
//! **What it owns.** The one mapping from the refresh loop's outcomes ([`Event`]) to lines
//! ([`KeyLog::line`]) and writing them ([`KeyLine::write`]). Every line has a stable `event`:
//!
//! | `event` | when | level |
//! |---|---|---|
//! | `key_loaded` | a read succeeded: the routine refresh | info |
//! | `key_resumed` | a read succeeded after Key Vault had withdrawn the key | info |
//! | `key_withdrawn` | Key Vault's answer withdrew the key (404, 403) | error when it starts; debug while reads repeat it |
//! | `key_too_old` | a read failed and the last good key is older than `KEYVAULT_MAX_KEY_AGE_SECONDS` | error, once each time the key ages out |
//! | `key_read_failed` | any other failed read (an outage) | warn while a key is in use; error with no key |
//!
//! and the secret's name (`secret`), `hub` when each hub has its own secret, `key_version` (the
//! version just read, else that of the last good read), `key_age_seconds` (whole seconds since
//! the last good read, before the event's own read counts; absent before the first), and for
//! failures `failures` (reads failed in a row), `retry_in_ms` and the `error`. So "how old is the
//! key" and "since when is Key Vault failing" are each one query over these fields
//! (`docs/operations.md`). At the default `RUST_LOG` a withdrawal and an aging-out each write one
//! error line, which is what the alerts count.
//!
//! **What it trusts.** The error's `Display` to carry Key Vault's status and message, never the
//! secret's value (the value is only ever read out of a successful answer).

use std::borrow::Cow;
use std::fmt::Display;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tracing::Level;

use crate::secrets::refresh::Event;

/// The `event` field of a key event line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyEvent {
    /// A read succeeded.
    Loaded,
    /// A read succeeded after a withdrawal.
    Resumed,
    /// Key Vault withdrew the key.
    Withdrawn,
    /// A read failed with the last good key too old to use.
    TooOld,
    /// Any other failed read.
    ReadFailed,
}

impl KeyEvent {
    /// Every event, for the tests that check the queries against them.
    pub const ALL: [KeyEvent; 5] = [
        KeyEvent::Loaded,
        KeyEvent::Resumed,
        KeyEvent::Withdrawn,
        KeyEvent::TooOld,
        KeyEvent::ReadFailed,
    ];

    /// The name the line carries.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Loaded => "key_loaded",
            Self::Resumed => "key_resumed",
            Self::Withdrawn => "key_withdrawn",
            Self::TooOld => "key_too_old",
            Self::ReadFailed => "key_read_failed",
        }
    }
}

/// What one secret's lines need to remember between reads.
#[derive(Debug)]
pub struct KeyLog {
    /// When the last good read was, and the version it read.
    last_good: Option<(Instant, Option<Arc<str>>)>,
    /// Whether the key's aging out has been said since the last good read.
    too_old_said: bool,
    /// `KEYVAULT_MAX_KEY_AGE_SECONDS`, if any.
    max_age: Option<Duration>,
}

/// One key event line, ready to write.
#[derive(Debug)]
pub struct KeyLine<'e, E> {
    /// What happened.
    pub event: KeyEvent,
    /// The line's level.
    pub level: Level,
    /// The line's message.
    pub message: Cow<'static, str>,
    /// The version read, else that of the last good read.
    pub key_version: Option<Arc<str>>,
    /// Whole seconds since the last good read (before this one).
    pub key_age_seconds: Option<u64>,
    /// Reads failed in a row, for a failure.
    pub failures: Option<u32>,
    /// The signing mode of a key just read.
    pub signing_mode: Option<&'static str>,
    /// What the withdrawal that a good read ended was.
    pub was: Option<&'static str>,
    /// The wait before the next read, for a failure.
    pub retry_in: Option<Duration>,
    /// Why the read failed.
    pub error: Option<&'e E>,
}

impl KeyLog {
    /// Lines for a secret whose key is not used once older than `max_age`.
    pub fn new(max_age: Option<Duration>) -> Self {
        Self {
            last_good: None,
            too_old_said: false,
            max_age,
        }
    }

    /// The line for `event`, seen at `now`; `next_read_in` is the wait the loop chose after it.
    pub fn line<'e, E>(
        &mut self,
        event: &Event<'e, E>,
        now: Instant,
        next_read_in: Duration,
    ) -> KeyLine<'e, E> {
        let key_age_seconds = self
            .last_good
            .as_ref()
            .map(|(read_at, _)| now.saturating_duration_since(*read_at).as_secs());
        let last_version = self.last_good.as_ref().and_then(|(_, v)| v.clone());
        let mut line = KeyLine {
            event: KeyEvent::Loaded,
            level: Level::INFO,
            message: Cow::Borrowed(""),
            key_version: last_version,
            key_age_seconds,
            failures: None,
            signing_mode: None,
            was: None,
            retry_in: None,
            error: None,
        };
        match *event {
            Event::Loaded { key, resumed } => {
                self.last_good = Some((now, key.version.clone()));
                self.too_old_said = false;
                line.key_version = key.version.clone();
                match resumed {
                    Some(withdrawal) => {
                        line.event = KeyEvent::Resumed;
                        line.was = Some(withdrawal.describe());
                        line.message = "Key Vault read succeeded again; issuing tokens".into();
                    }
                    None => {
                        line.signing_mode = Some(key.signer.mode().as_str());
                        line.message = "signing key loaded from Key Vault".into();
                    }
                }
            }
            Event::Withdrawn {
                failures,
                error,
                withdrawal,
                first,
            } => {
                line.event = KeyEvent::Withdrawn;
                line.failures = Some(failures);
                line.error = Some(error);
                if first {
                    line.level = Level::ERROR;
                    line.retry_in = Some(next_read_in);
                    line.message = format!(
                        "{}; token requests get 503 until a read succeeds",
                        withdrawal.describe()
                    )
                    .into();
                } else {
                    line.level = Level::DEBUG;
                    line.message = "still withdrawn".into();
                }
            }
            Event::Failed {
                failures,
                error,
                key_age,
            } => {
                line.failures = Some(failures);
                line.error = Some(error);
                line.retry_in = Some(next_read_in);
                let too_old =
                    matches!((key_age, self.max_age), (Some(age), Some(max)) if age > max);
                (line.event, line.level, line.message) = match (too_old, key_age) {
                    (true, _) if !self.too_old_said => {
                        self.too_old_said = true;
                        line.retry_in = None;
                        (
                            KeyEvent::TooOld,
                            Level::ERROR,
                            "Key Vault read failed and the last good key is older than KEYVAULT_MAX_KEY_AGE_SECONDS; token requests get 503 until a read succeeds".into(),
                        )
                    }
                    (true, _) => (
                        KeyEvent::ReadFailed,
                        Level::WARN,
                        "Key Vault read failed; the last good key is too old to use, token requests get 503".into(),
                    ),
                    (false, Some(_)) => (
                        KeyEvent::ReadFailed,
                        Level::WARN,
                        "Key Vault read failed; still signing with the last good key".into(),
                    ),
                    (false, None) => (
                        KeyEvent::ReadFailed,
                        Level::ERROR,
                        "Key Vault read failed; no signing key, token requests get 503".into(),
                    ),
                };
            }
        }
        line
    }
}

/// One event's fields, at a level known where it is written (`tracing` fixes an event's level
/// where it is written).
macro_rules! key_event {
    ($level:expr, $line:expr, $secret:expr, $hub:expr) => {
        tracing::event!(
            $level,
            event = $line.event.as_str(),
            secret = $secret,
            hub = $hub,
            key_version = $line.key_version.as_deref(),
            key_age_seconds = $line.key_age_seconds,
            signing_mode = $line.signing_mode,
            was = $line.was,
            failures = $line.failures,
            retry_in_ms = $line
                .retry_in
                .map(|wait| u64::try_from(wait.as_millis()).unwrap_or(u64::MAX)),
            error = $line.error.map(tracing::field::display),
            "{}",
            $line.message
        )
    };
}

impl<E: Display> KeyLine<'_, E> {
    /// Write the line for the secret `secret` (of `hub`, when each hub has its own).
    pub fn write(&self, secret: &str, hub: Option<&str>) {
        match self.level {
            Level::ERROR => key_event!(Level::ERROR, self, secret, hub),
            Level::WARN => key_event!(Level::WARN, self, secret, hub),
            Level::INFO => key_event!(Level::INFO, self, secret, hub),
            _ => key_event!(Level::DEBUG, self, secret, hub),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sas::{Signer, SigningKey, TokenSigner};
    use crate::secrets::IssuingKey;
    use crate::secrets::handle::Withdrawal;

    fn key(version: &str) -> IssuingKey {
        let key = SigningKey::from_base64("c2VjcmV0").expect("valid base64");
        IssuingKey {
            signer: TokenSigner::HubPolicy(Signer::new("p", &key)),
            version: Some(Arc::from(version)),
            own_hub: None,
        }
    }

    /// The loop's events, with a text error.
    type Ev<'a> = Event<'a, &'static str>;

    /// (event, level, key_version, key_age_seconds) of a line.
    fn summary<E>(line: &KeyLine<'_, E>) -> (&'static str, Level, Option<String>, Option<u64>) {
        (
            line.event.as_str(),
            line.level,
            line.key_version.as_deref().map(str::to_owned),
            line.key_age_seconds,
        )
    }

    /// Paused time: the ages are read off Tokio's clock, exactly.
    #[tokio::test(start_paused = true)]
    async fn each_outcome_is_one_event_with_the_keys_version_and_age() {
        let max = Duration::from_secs(100);
        let mut log = KeyLog::new(Some(max));
        let retry = Duration::from_secs(2);
        let at = |secs| Instant::now() + Duration::from_secs(secs);
        let (v1, v2) = (key("v1"), key("v2"));
        let error = "Key Vault answered 503";
        let lines = [
            log.line(
                &Ev::Loaded {
                    key: &v1,
                    resumed: None,
                },
                at(0),
                retry,
            ),
            log.line(
                &Ev::Loaded {
                    key: &v1,
                    resumed: None,
                },
                at(30),
                retry,
            ),
            log.line(
                &Ev::Withdrawn {
                    failures: 1,
                    error: &error,
                    withdrawal: Withdrawal::Forbidden,
                    first: true,
                },
                at(40),
                retry,
            ),
            log.line(
                &Ev::Withdrawn {
                    failures: 2,
                    error: &error,
                    withdrawal: Withdrawal::Forbidden,
                    first: false,
                },
                at(41),
                retry,
            ),
            log.line(
                &Ev::Loaded {
                    key: &v2,
                    resumed: Some(Withdrawal::Forbidden),
                },
                at(50),
                retry,
            ),
            log.line(
                &Ev::Failed {
                    failures: 1,
                    error: &error,
                    key_age: Some(Duration::from_secs(60)),
                },
                at(110),
                retry,
            ),
            log.line(
                &Ev::Failed {
                    failures: 2,
                    error: &error,
                    key_age: Some(Duration::from_secs(101)),
                },
                at(151),
                retry,
            ),
            log.line(
                &Ev::Failed {
                    failures: 3,
                    error: &error,
                    key_age: Some(Duration::from_secs(120)),
                },
                at(170),
                retry,
            ),
            log.line(
                &Ev::Loaded {
                    key: &v2,
                    resumed: None,
                },
                at(180),
                retry,
            ),
            log.line(
                &Ev::Failed {
                    failures: 1,
                    error: &error,
                    key_age: None,
                },
                at(190),
                retry,
            ),
        ];
        let some = |v: &str| Some(v.to_owned());
        assert_eq!(
            lines.iter().map(summary).collect::<Vec<_>>(),
            [
                ("key_loaded", Level::INFO, some("v1"), None),
                ("key_loaded", Level::INFO, some("v1"), Some(30)),
                ("key_withdrawn", Level::ERROR, some("v1"), Some(10)),
                ("key_withdrawn", Level::DEBUG, some("v1"), Some(11)),
                ("key_resumed", Level::INFO, some("v2"), Some(20)),
                ("key_read_failed", Level::WARN, some("v2"), Some(60)),
                ("key_too_old", Level::ERROR, some("v2"), Some(101)),
                ("key_read_failed", Level::WARN, some("v2"), Some(120)),
                ("key_loaded", Level::INFO, some("v2"), Some(130)),
                ("key_read_failed", Level::ERROR, some("v2"), Some(10)),
            ]
        );
        assert_eq!(lines[0].signing_mode, Some("hub-policy"));
        assert_eq!(lines[4].was, Some(Withdrawal::Forbidden.describe()));
        assert_eq!(lines[6].failures, Some(2));
        assert_eq!(lines[5].retry_in, Some(retry));
        assert!(lines[2].message.contains("Key Vault answered 403"));
        assert!(
            lines[7].message.contains("too old"),
            "after aging out, a failed read does not claim the key still signs: {}",
            lines[7].message
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_key_ages_out_once_per_good_read() {
        let mut log = KeyLog::new(Some(Duration::from_secs(10)));
        let error = "down";
        let v1 = key("v1");
        let old = |failures| Ev::Failed {
            failures,
            error: &error,
            key_age: Some(Duration::from_secs(11)),
        };
        let now = Instant::now();
        let wait = Duration::ZERO;
        let events: Vec<&str> = [
            log.line(&old(1), now, wait).event,
            log.line(&old(2), now, wait).event,
            log.line(
                &Ev::Loaded {
                    key: &v1,
                    resumed: None,
                },
                now,
                wait,
            )
            .event,
            log.line(&old(1), now, wait).event,
        ]
        .map(KeyEvent::as_str)
        .to_vec();
        assert_eq!(
            events,
            [
                "key_too_old",
                "key_read_failed",
                "key_loaded",
                "key_too_old"
            ]
        );
        assert!(KeyEvent::ALL.iter().all(|e| e.as_str().starts_with("key_")));
    }
}
