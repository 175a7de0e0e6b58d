//! Per-caller device scoping: `DEVICE_SCOPES`, which devices each caller may get tokens for.
//!
//! **What it owns.** Parsing the setting — a JSON object from caller keys to lists of device id
//! patterns — and the decision [`Scopes::allows`]. Keys:
//! - a GUID: the bearer token's `oid`, `appid` or `azp` (any letter case), as
//!   `AUTH_ALLOWED_CALLERS` matches them;
//! - `role:NAME`: the bearer token's `roles` contain `NAME` (exactly);
//! - `cert:THUMBPRINT`: the client certificate's SHA-1 or SHA-256 thumbprint (hex, any case).
//!
//! Patterns: an exact id, a prefix followed by one trailing `*`, or `*` alone. A caller may use the
//! union of every rule that matches it; a caller no rule matches gets nothing. The id checked is
//! the device id (for a module token: its device's id; for a DPS registration token: the
//! registration id). Scoping only narrows: a caller must still pass every caller layer first.
//!
//! **What it trusts.** The caller as the layers established it ([`Caller`]). The setting is the
//! operator's, and a rule that could not mean what it says — malformed JSON, a repeated key, an
//! unknown key form, an empty list or pattern, a `*` anywhere but last, a key for a layer that is
//! off — stops the start rather than being guessed at.
//!
//! **How fast.** Everything is prepared at start: one hash map per key form, and per rule its
//! [`Patterns`] (exact ids in a hash set, prefixes searched in O(log n)). A decision is a handful of
//! hash lookups and one search per matching rule, whatever the number of rules.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde::de::{Deserializer, MapAccess, Visitor};

pub mod patterns;

use crate::auth::bearer::is_guid;
use crate::auth::client_cert::Thumbprint;
use crate::caller::Caller;
use crate::scope::patterns::{PatternError, Patterns};
use crate::settings::{Lookup, SettingError};

/// The setting.
pub const DEVICE_SCOPES: &str = "DEVICE_SCOPES";

/// The prepared rules.
#[derive(Debug, Default)]
pub struct Scopes {
    /// GUID keys, lower case.
    by_principal: HashMap<String, Rule>,
    by_role: HashMap<String, Rule>,
    by_sha1: HashMap<[u8; 20], Rule>,
    by_sha256: HashMap<[u8; 32], Rule>,
}

/// One key's patterns.
#[derive(Debug)]
struct Rule {
    /// The key as the operator wrote it: what the audit log records.
    key: Arc<str>,
    patterns: Patterns,
}

/// Why `DEVICE_SCOPES` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    /// Not a JSON object of string lists, or a key given twice.
    #[error("must be a JSON object mapping caller keys to lists of device id patterns: {0}")]
    NotJson(String),
    /// A key that is none of the three forms.
    #[error(
        "key `{0}` is not a GUID (an object or application id), `role:NAME` or `cert:THUMBPRINT` (40 or 64 hex digits)"
    )]
    BadKey(String),
    /// A key with no patterns: it would grant nothing, which is what omitting it does.
    #[error("key `{0}` has no patterns (remove the key to grant nothing)")]
    EmptyList(String),
    /// `""`.
    #[error("key `{0}` has an empty pattern")]
    EmptyPattern(String),
    /// `a*b`, `**`, `*a`.
    #[error(
        "key `{key}`: pattern `{pattern}` has a `*` that is not its last character (patterns are an exact id, a prefix ending in `*`, or `*`)"
    )]
    StarNotLast {
        /// The key.
        key: String,
        /// The pattern.
        pattern: String,
    },
    /// A pattern no device id can match.
    #[error(
        "key `{key}`: pattern `{pattern}` can match no device id (at most 128 ASCII letters, digits and - . % _ * ? ! ( ) , : = @ $ ')"
    )]
    ImpossiblePattern {
        /// The key.
        key: String,
        /// The pattern.
        pattern: String,
    },
    /// A key for a layer that is off: it could never match.
    #[error("key `{key}` needs the {layer}, which is off")]
    LayerOff {
        /// The key.
        key: String,
        /// Which layer, and its setting.
        layer: &'static str,
    },
}

impl Scopes {
    /// `DEVICE_SCOPES`, when set; it needs a layer that tells callers apart, and each key needs
    /// its own layer (`bearer`: GUID and `role:` keys; `client_cert`: `cert:` keys).
    pub fn from_lookup(
        settings: &Lookup<'_>,
        bearer: bool,
        client_cert: bool,
    ) -> Result<Option<Self>, SettingError> {
        let Some(text) = settings.get(DEVICE_SCOPES) else {
            return Ok(None);
        };
        let refuse = |problem: String| SettingError::new(DEVICE_SCOPES, problem);
        if !bearer && !client_cert {
            return Err(refuse(
                "needs a layer that tells callers apart: the bearer-token layer (AUTH_TENANT_ID) or the client-certificate layer (CLIENT_CERT_THUMBPRINTS)".to_owned(),
            ));
        }
        let scopes = Self::parse(&text).map_err(|e| refuse(e.to_string()))?;
        let needs =
            |keys: Vec<&Arc<str>>, on: bool, layer: &'static str| match keys.into_iter().min() {
                Some(key) if !on => Err(refuse(
                    ScopeError::LayerOff {
                        key: key.to_string(),
                        layer,
                    }
                    .to_string(),
                )),
                _ => Ok(()),
            };
        needs(
            scopes
                .by_principal
                .values()
                .chain(scopes.by_role.values())
                .map(|rule| &rule.key)
                .collect(),
            bearer,
            "bearer-token layer (AUTH_TENANT_ID)",
        )?;
        needs(
            scopes
                .by_sha1
                .values()
                .chain(scopes.by_sha256.values())
                .map(|rule| &rule.key)
                .collect(),
            client_cert,
            "client-certificate layer (CLIENT_CERT_THUMBPRINTS)",
        )?;
        Ok(Some(scopes))
    }

    /// Parse the JSON text.
    pub fn parse(text: &str) -> Result<Self, ScopeError> {
        let entries = serde_json::Deserializer::from_str(text)
            .deserialize_map(EntriesVisitor)
            .and_then(|entries| {
                // Nothing may follow the object.
                serde_json::from_str::<serde::de::IgnoredAny>(text).map(|_| entries)
            })
            .map_err(|e| ScopeError::NotJson(e.to_string()))?;
        let mut scopes = Self::default();
        for (key, patterns) in entries {
            let rule = Rule::new(&key, &patterns)?;
            let duplicate = if let Some(role) = key.strip_prefix("role:") {
                if role.is_empty() {
                    return Err(ScopeError::BadKey(key));
                }
                scopes.by_role.insert(role.to_owned(), rule).is_some()
            } else if let Some(thumbprint) = key.strip_prefix("cert:") {
                match Thumbprint::parse(thumbprint) {
                    Some(Thumbprint::Sha1(sha1)) => scopes.by_sha1.insert(sha1, rule).is_some(),
                    Some(Thumbprint::Sha256(sha256)) => {
                        scopes.by_sha256.insert(sha256, rule).is_some()
                    }
                    None => return Err(ScopeError::BadKey(key)),
                }
            } else if is_guid(&key.to_ascii_lowercase()) {
                scopes
                    .by_principal
                    .insert(key.to_ascii_lowercase(), rule)
                    .is_some()
            } else {
                return Err(ScopeError::BadKey(key));
            };
            // The same caller written twice (other letter case, other thumbprint case).
            if duplicate {
                return Err(ScopeError::NotJson(format!(
                    "key `{key}` names a caller that another key already names"
                )));
            }
        }
        Ok(scopes)
    }

    /// Whether `caller` may get a token for `id`: the key of the first matching rule that allows
    /// it (ids, then roles in the token's order, then certificate thumbprints), or `None`.
    pub fn allows(&self, caller: &Caller, id: &str) -> Option<&Arc<str>> {
        fn allowing<'s>(rule: Option<&'s Rule>, id: &str) -> Option<&'s Rule> {
            rule.filter(|rule| rule.matches(id))
        }
        if let Some(principal) = &caller.principal {
            for principal_id in principal.ids() {
                if let Some(rule) = allowing(self.principal_rule(principal_id), id) {
                    return Some(&rule.key);
                }
            }
            for role in &principal.roles {
                if let Some(rule) = allowing(self.by_role.get(role.as_str()), id) {
                    return Some(&rule.key);
                }
            }
        }
        if let Some(certificate) = &caller.certificate {
            let rules = [
                self.by_sha1.get(&certificate.sha1),
                self.by_sha256.get(&certificate.sha256),
            ];
            for rule in rules {
                if let Some(rule) = allowing(rule, id) {
                    return Some(&rule.key);
                }
            }
        }
        None
    }

    /// The rule for a GUID, in any letter case, without allocating.
    fn principal_rule(&self, principal_id: &str) -> Option<&Rule> {
        let mut lower = [0u8; 36];
        if principal_id.len() != lower.len() {
            return None;
        }
        lower.copy_from_slice(principal_id.as_bytes());
        lower.make_ascii_lowercase();
        std::str::from_utf8(&lower)
            .ok()
            .and_then(|key| self.by_principal.get(key))
    }
}

impl Rule {
    fn new(key: &str, patterns: &[String]) -> Result<Self, ScopeError> {
        let patterns = Patterns::parse(patterns).map_err(|error| match error {
            PatternError::NoPatterns => ScopeError::EmptyList(key.to_owned()),
            PatternError::Empty => ScopeError::EmptyPattern(key.to_owned()),
            PatternError::StarNotLast(pattern) => ScopeError::StarNotLast {
                key: key.to_owned(),
                pattern,
            },
            PatternError::Impossible(pattern) => ScopeError::ImpossiblePattern {
                key: key.to_owned(),
                pattern,
            },
        })?;
        Ok(Self {
            key: Arc::from(key),
            patterns,
        })
    }

    fn matches(&self, id: &str) -> bool {
        self.patterns.matches(id)
    }
}

/// The object's entries in order; a key given twice is an error (`serde_json` would keep the
/// last one silently).
struct EntriesVisitor;

impl<'de> Visitor<'de> for EntriesVisitor {
    type Value = Vec<(String, Vec<String>)>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an object whose values are lists of strings")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut entries: Vec<(String, Vec<String>)> = Vec::new();
        let mut seen = HashSet::new();
        while let Some((key, patterns)) = map.next_entry::<String, Vec<String>>()? {
            if !seen.insert(key.clone()) {
                return Err(serde::de::Error::custom(format!(
                    "key `{key}` appears twice"
                )));
            }
            entries.push((key, patterns));
        }
        Ok(entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::bearer::Principal;
    use crate::auth::client_cert::CertificateThumbprints;

    const OID: &str = "1a2b3c4d-2222-3333-4444-555555555555";
    const APP: &str = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";
    const SHA1: &str = "A1B2C3D4E5F60718293A4B5C6D7E8F9001122334";

    fn caller(object_id: Option<&str>, roles: &[&str], sha1: Option<[u8; 20]>) -> Caller {
        Caller {
            ip: "10.0.0.1".parse().expect("an address"),
            certificate: sha1.map(|sha1| CertificateThumbprints {
                sha1,
                sha256: [0; 32],
            }),
            principal: Some(Principal {
                object_id: object_id.map(str::to_owned),
                app_id: Some(APP.to_owned()),
                authorized_party: None,
                roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            }),
        }
    }

    fn sha1_bytes() -> [u8; 20] {
        match Thumbprint::parse(SHA1) {
            Some(Thumbprint::Sha1(sha1)) => sha1,
            other => panic!("a SHA-1 thumbprint: {other:?}"),
        }
    }

    fn scopes() -> Scopes {
        Scopes::parse(&format!(
            r#"{{"role:Fleet.A": ["fleet-a-*"], "{}": ["sensor-17", "line-2-*"],
                 "cert:{}": ["gw-01"], "role:Ops": ["*"]}}"#,
            OID.to_ascii_uppercase(),
            SHA1.to_ascii_lowercase()
        ))
        .expect("valid scopes")
    }

    #[test]
    fn guid_role_and_certificate_callers_get_their_own_devices_only() {
        let scopes = scopes();
        let by_oid = caller(Some(OID), &[], None);
        assert_eq!(
            scopes.allows(&by_oid, "sensor-17").map(|k| &**k),
            Some(&*OID.to_ascii_uppercase()),
            "GUID keys match any letter case and the log names the key as written"
        );
        assert!(scopes.allows(&by_oid, "line-2-x").is_some(), "prefix");
        assert!(
            scopes.allows(&by_oid, "sensor-170").is_none(),
            "exact is exact"
        );
        assert!(
            scopes.allows(&by_oid, "fleet-a-1").is_none(),
            "another caller's devices"
        );

        let by_role = caller(None, &["Fleet.A"], None);
        assert_eq!(
            scopes.allows(&by_role, "fleet-a-9").map(|k| &**k),
            Some("role:Fleet.A")
        );
        assert!(scopes.allows(&by_role, "fleet-b-9").is_none());

        let by_cert = Caller {
            principal: None,
            ..caller(None, &[], Some(sha1_bytes()))
        };
        assert!(scopes.allows(&by_cert, "gw-01").is_some());
        assert!(scopes.allows(&by_cert, "gw-02").is_none());

        let nobody = caller(
            Some("99999999-2222-3333-4444-555555555555"),
            &["Other"],
            None,
        );
        assert!(
            scopes.allows(&nobody, "sensor-17").is_none(),
            "matches no rule"
        );
    }

    #[test]
    fn a_caller_gets_the_union_of_every_rule_that_matches_it() {
        let scopes = scopes();
        let both = caller(Some(OID), &["Fleet.A"], Some(sha1_bytes()));
        for id in ["sensor-17", "line-2-a", "fleet-a-1", "gw-01"] {
            assert!(scopes.allows(&both, id).is_some(), "{id}");
        }
        assert!(scopes.allows(&both, "fleet-b-1").is_none());
        let ops = caller(None, &["Ops"], None);
        assert_eq!(
            scopes.allows(&ops, "anything").map(|k| &**k),
            Some("role:Ops")
        );
    }

    #[test]
    fn rules_that_cannot_mean_what_they_say_are_refused() {
        let cases = [
            ("not json", "must be a JSON object"),
            ("[]", "must be a JSON object"),
            (r#"{"role:A": "x"}"#, "must be a JSON object"),
            (r#"{"role:A": ["x"]} {}"#, "must be a JSON object"),
            (r#"{"role:A": ["x"], "role:A": ["y"]}"#, "appears twice"),
            (
                &format!(
                    r#"{{"{APP}": ["x"], "{}": ["y"]}}"#,
                    APP.to_ascii_uppercase()
                ),
                "another key already names",
            ),
            (r#"{"fleet": ["x"]}"#, "is not a GUID"),
            (r#"{"role:": ["x"]}"#, "is not a GUID"),
            (r#"{"cert:abcd": ["x"]}"#, "is not a GUID"),
            (r#"{"role:A": []}"#, "has no patterns"),
            (r#"{"role:A": [""]}"#, "empty pattern"),
            (r#"{"role:A": ["a*b"]}"#, "not its last character"),
            (r#"{"role:A": ["**"]}"#, "not its last character"),
            (r#"{"role:A": ["a b"]}"#, "can match no device id"),
        ];
        for (text, want) in cases {
            let error = Scopes::parse(text).expect_err(text).to_string();
            assert!(error.contains(want), "{text}: {error}");
        }
    }

    #[test]
    fn the_setting_needs_the_layers_its_keys_use() {
        let check = |text: &str, bearer: bool, cert: bool| {
            let read = |name: &str| (name == DEVICE_SCOPES).then(|| text.to_owned());
            Scopes::from_lookup(&Lookup::new(&read), bearer, cert)
        };
        let unset = |_: &str| None;
        assert!(matches!(
            Scopes::from_lookup(&Lookup::new(&unset), false, false),
            Ok(None)
        ));
        for (text, bearer, cert, want) in [
            (r#"{"role:A": ["x"]}"#, false, false, "needs a layer"),
            (r#"{"role:A": ["x"]}"#, false, true, "bearer-token layer"),
            (
                &*format!(r#"{{"cert:{SHA1}": ["x"]}}"#),
                true,
                false,
                "client-certificate layer",
            ),
        ] {
            let error = check(text, bearer, cert).expect_err(text);
            assert_eq!(error.setting, DEVICE_SCOPES);
            assert!(error.problem.contains(want), "{text}: {}", error.problem);
        }
        assert!(matches!(
            check(r#"{"role:A": ["x"]}"#, true, false),
            Ok(Some(_))
        ));
    }
}
