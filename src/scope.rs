//! Per-caller device scoping: `DEVICE_SCOPES`, which devices each caller may get tokens for.
//!
//! **What it owns.** Parsing the setting — a JSON object from caller keys to lists of device id
//! patterns — and the decision [`Scopes::allows`]. Keys:
//! - a GUID: the bearer token's `oid`, `appid` or `azp` (any letter case), as
//!   `AUTH_ALLOWED_CALLERS` matches them;
//! - `role:NAME`: the bearer token's `roles` contain `NAME` (exactly);
//! - `cert:THUMBPRINT`: the client certificate's SHA-1 or SHA-256 thumbprint (hex, any case).
//!
//! Patterns: an exact id, a prefix followed by one trailing `*`, or `*` alone — each, with several
//! hubs, qualified by the hub it applies to: `contoso-eu.azure-devices.net/line-2-*` (either
//! host-name form; the hub's canonical name is what is stored) or `*/line-2-*` for every hub.
//! With one hub an unqualified pattern means that hub; with several it is refused, so an operator
//! must choose — an unqualified pattern meaning "the default hub" would answer 403 as soon as DPS
//! allocated a device to another hub. A caller may use the union of every rule that matches it; a
//! caller no rule matches gets nothing. The id checked is the device id on the token's hub (for a
//! module token: its device's id; for a DPS registration token: the registration id, on any hub,
//! since DPS picks the hub later). Scoping only narrows: a caller must still pass every caller
//! layer first.
//!
//! **What it trusts.** The caller as the layers established it ([`Caller`]), and the hub as
//! [`hubs`](crate::hubs) chose it. The setting is the operator's, and a rule that could not mean
//! what it says — malformed JSON, a repeated key, an unknown key form, an empty list or pattern, a
//! `*` anywhere but last, a key for a layer that is off, a hub that is not served, an unqualified
//! pattern with several hubs — stops the start rather than being guessed at.
//!
//! **Letter case** ([`Scopes::case_overlaps`]). A hub-policy token is limited to one device only
//! by its `sr`, and whether IoT Hub compares `sr` with case is undocumented
//! (docs/azure-behaviour.md §12). Rules of different keys that name ids differing only in case on
//! one hub are reported at start, so the operator can rename devices or merge the rules.
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
use crate::hubs::{HubHost, HubList};
use crate::scope::patterns::{Pattern, PatternError, Patterns};
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
    /// Patterns for every hub: `*/…`, or unqualified with one hub.
    any_hub: Option<Patterns>,
    /// Patterns for one hub, by the hub's canonical name.
    by_hub: HashMap<Box<str>, Patterns>,
}

/// Two keys whose rules name device ids on one hub that differ only in letter case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseOverlap {
    /// The hub's canonical name (empty: the one hub a connection string names).
    pub hub: String,
    /// The two keys, in order.
    pub keys: [Arc<str>; 2],
    /// A pattern of each key, in the keys' order, as written (without its hub).
    pub patterns: [String; 2],
}

impl std::fmt::Display for CaseOverlap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let [a, b] = &self.keys;
        let [p, q] = &self.patterns;
        write!(
            f,
            "DEVICE_SCOPES: keys `{a}` and `{b}` name device ids that differ only in letter case (`{p}` and `{q}`)"
        )?;
        if !self.hub.is_empty() {
            write!(f, " on {}", self.hub)?;
        }
        f.write_str(
            ": a hub-policy token is limited to its device only by `sr`, so if IoT Hub compares `sr` without case a token for one may open the other (docs/security.md; `make verify` can settle it for your hub)",
        )
    }
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
    /// An unqualified pattern where tokens are for several hubs.
    #[error(
        "key `{key}`: pattern `{pattern}` names no hub, but tokens are for several hubs: write `*/{pattern}` for every hub or `HUB/{pattern}` for one"
    )]
    NoHub {
        /// The key.
        key: String,
        /// The pattern.
        pattern: String,
    },
    /// A qualified pattern whose hub is not served.
    #[error("key `{key}`: pattern `{pattern}` names a hub that is not in {hubs}")]
    UnknownHub {
        /// The key.
        key: String,
        /// The pattern.
        pattern: String,
        /// The hub setting (or why there is none).
        hubs: &'static str,
    },
}

impl Scopes {
    /// `DEVICE_SCOPES`, when set; it needs a layer that tells callers apart, and each key needs
    /// its own layer (`bearer`: GUID and `role:` keys; `client_cert`: `cert:` keys). `hubs`: the
    /// hubs tokens are for (`None`: one hub, named by the key's connection string).
    pub fn from_lookup(
        settings: &Lookup<'_>,
        bearer: bool,
        client_cert: bool,
        hubs: Option<&HubList>,
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
        let scopes = Self::parse(&text, hubs).map_err(|e| refuse(e.to_string()))?;
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

    /// Parse the JSON text, for tokens on `hubs` (`None`: one hub the settings do not name).
    pub fn parse(text: &str, hubs: Option<&HubList>) -> Result<Self, ScopeError> {
        let entries = serde_json::Deserializer::from_str(text)
            .deserialize_map(EntriesVisitor)
            .and_then(|entries| {
                // Nothing may follow the object.
                serde_json::from_str::<serde::de::IgnoredAny>(text).map(|_| entries)
            })
            .map_err(|e| ScopeError::NotJson(e.to_string()))?;
        let mut scopes = Self::default();
        for (key, patterns) in entries {
            let rule = Rule::new(&key, &patterns, hubs)?;
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

    /// Whether `caller` may get a token for `id` on the hub whose canonical name is `hub` (`None`:
    /// on any hub, for a registration): the key of the first matching rule that allows it (ids,
    /// then roles in the token's order, then certificate thumbprints), or `None`.
    pub fn allows(&self, caller: &Caller, hub: Option<&str>, id: &str) -> Option<&Arc<str>> {
        fn allowing<'s>(rule: Option<&'s Rule>, hub: Option<&str>, id: &str) -> Option<&'s Rule> {
            rule.filter(|rule| rule.matches(hub, id))
        }
        if let Some(principal) = &caller.principal {
            for principal_id in principal.ids() {
                if let Some(rule) = allowing(self.principal_rule(principal_id), hub, id) {
                    return Some(&rule.key);
                }
            }
            for role in &principal.roles {
                if let Some(rule) = allowing(self.by_role.get(role.as_str()), hub, id) {
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
                if let Some(rule) = allowing(rule, hub, id) {
                    return Some(&rule.key);
                }
            }
        }
        None
    }

    /// Every rule, in the order of their keys.
    fn rules(&self) -> Vec<&Rule> {
        let mut rules: Vec<&Rule> = self
            .by_principal
            .values()
            .chain(self.by_role.values())
            .chain(self.by_sha1.values())
            .chain(self.by_sha256.values())
            .collect();
        rules.sort_by(|a, b| a.key.cmp(&b.key));
        rules
    }

    /// Pairs of keys whose rules name, on one of `hubs` (canonical names), device ids that differ
    /// only in ASCII letter case — so a hub-policy token for one key's device might open the
    /// other's if IoT Hub compares `sr` without case. One entry per pair of keys. `*` rules are
    /// not compared: every id has case variants they cover, and their holders may have any device.
    pub fn case_overlaps(&self, hubs: &[&str]) -> Vec<CaseOverlap> {
        let rules = self.rules();
        let mut seen = HashSet::new();
        let mut found = Vec::new();
        for &hub in hubs {
            let mut exact: HashMap<String, Vec<(usize, &str)>> = HashMap::new();
            let mut prefixes: HashMap<String, Vec<(usize, &str)>> = HashMap::new();
            let mut entries = Vec::new();
            for (index, rule) in rules.iter().enumerate() {
                for pattern in rule.patterns_on(hub) {
                    let (map, text) = match pattern {
                        Pattern::Everything => continue,
                        Pattern::Exact(id) => (&mut exact, id),
                        Pattern::Prefix(prefix) => (&mut prefixes, prefix),
                    };
                    map.entry(text.to_ascii_lowercase())
                        .or_default()
                        .push((index, text));
                    entries.push((index, pattern, text));
                }
            }
            for (index, pattern, text) in entries {
                let lower = text.to_ascii_lowercase();
                let written = |pattern: Pattern<'_>| match pattern {
                    Pattern::Prefix(prefix) => format!("{prefix}*"),
                    Pattern::Exact(id) => id.to_owned(),
                    Pattern::Everything => "*".to_owned(),
                };
                let mut report = |other: usize, other_pattern: Pattern<'_>| {
                    let pair = (index.min(other), index.max(other));
                    if seen.insert(pair) {
                        let mut patterns = [written(pattern), written(other_pattern)];
                        if index > other {
                            patterns.swap(0, 1);
                        }
                        found.push(CaseOverlap {
                            hub: hub.to_owned(),
                            keys: [
                                Arc::clone(&rules[pair.0].key),
                                Arc::clone(&rules[pair.1].key),
                            ],
                            patterns,
                        });
                    }
                };
                if matches!(pattern, Pattern::Exact(_)) {
                    for &(other, other_id) in exact.get(&lower).into_iter().flatten() {
                        if other != index && other_id != text {
                            report(other, Pattern::Exact(other_id));
                        }
                    }
                }
                // Another key's prefix `r` that `text` extends once case is ignored: an id
                // of this pattern and an id of `r` can differ only in case unless `r` is this
                // pattern's own start, case and all, and what follows has no letter.
                for end in 0..=lower.len() {
                    for &(other, prefix) in prefixes.get(&lower[..end]).into_iter().flatten() {
                        let differs = prefix != &text[..end]
                            || text[end..].bytes().any(|b| b.is_ascii_alphabetic());
                        if other != index && differs {
                            report(other, Pattern::Prefix(prefix));
                        }
                    }
                }
            }
        }
        found
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
    /// A key's patterns, each for every hub or for one (`hubs`: as for [`Scopes::parse`]).
    fn new(key: &str, patterns: &[String], hubs: Option<&HubList>) -> Result<Self, ScopeError> {
        if patterns.is_empty() {
            return Err(ScopeError::EmptyList(key.to_owned()));
        }
        let several = hubs.is_some_and(HubList::is_several);
        let mut any_hub = Vec::new();
        let mut by_hub: HashMap<Box<str>, Vec<String>> = HashMap::new();
        for written in patterns {
            match written.split_once('/') {
                Some(("*", pattern)) => any_hub.push(pattern.to_owned()),
                Some((hub, pattern)) => {
                    let unknown = |hubs| ScopeError::UnknownHub {
                        key: key.to_owned(),
                        pattern: written.clone(),
                        hubs,
                    };
                    let list = hubs.ok_or(unknown(
                        "IOTHUB_HOSTNAMES (the hub comes from the key's connection string: qualify with `*/`)",
                    ))?;
                    let hub = HubHost::parse(hub)
                        .ok()
                        .filter(|hub| list.covers(hub))
                        .ok_or(unknown(list.setting))?;
                    by_hub
                        .entry(Box::from(&*hub.canonical()))
                        .or_default()
                        .push(pattern.to_owned());
                }
                None if several => {
                    return Err(ScopeError::NoHub {
                        key: key.to_owned(),
                        pattern: written.clone(),
                    });
                }
                None => any_hub.push(written.clone()),
            }
        }
        let prepare = |patterns: &[String]| {
            Patterns::parse(patterns).map_err(|error| match error {
                PatternError::NoPatterns | PatternError::Empty => {
                    ScopeError::EmptyPattern(key.to_owned())
                }
                PatternError::StarNotLast(pattern) => ScopeError::StarNotLast {
                    key: key.to_owned(),
                    pattern,
                },
                PatternError::Impossible(pattern) => ScopeError::ImpossiblePattern {
                    key: key.to_owned(),
                    pattern,
                },
            })
        };
        Ok(Self {
            key: Arc::from(key),
            any_hub: (!any_hub.is_empty())
                .then(|| prepare(&any_hub))
                .transpose()?,
            by_hub: by_hub
                .into_iter()
                .map(|(hub, patterns)| Ok((hub, prepare(&patterns)?)))
                .collect::<Result<_, ScopeError>>()?,
        })
    }

    /// Whether the rule covers `id` on `hub` (`None`: on any hub).
    fn matches(&self, hub: Option<&str>, id: &str) -> bool {
        if self.any_hub.as_ref().is_some_and(|p| p.matches(id)) {
            return true;
        }
        match hub {
            Some(hub) => self.by_hub.get(hub).is_some_and(|p| p.matches(id)),
            None => self.by_hub.values().any(|p| p.matches(id)),
        }
    }

    /// The rule's patterns that apply on `hub`.
    fn patterns_on<'r>(&'r self, hub: &str) -> impl Iterator<Item = Pattern<'r>> {
        self.any_hub
            .iter()
            .chain(self.by_hub.get(hub))
            .flat_map(Patterns::iter)
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
    const HUB: Option<&str> = Some("h.azure-devices.net");

    fn one_hub() -> HubList {
        HubList::parse("h.azure-devices.net", "IOTHUB_HOSTNAME").expect("a hub")
    }

    fn hubs(text: &str) -> HubList {
        HubList::parse(text, "IOTHUB_HOSTNAMES").expect("hubs")
    }

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
        Scopes::parse(
            &format!(
                r#"{{"role:Fleet.A": ["fleet-a-*"], "{}": ["sensor-17", "line-2-*"],
                 "cert:{}": ["gw-01"], "role:Ops": ["*"]}}"#,
                OID.to_ascii_uppercase(),
                SHA1.to_ascii_lowercase()
            ),
            Some(&one_hub()),
        )
        .expect("valid scopes")
    }

    #[test]
    fn guid_role_and_certificate_callers_get_their_own_devices_only() {
        let scopes = scopes();
        let by_oid = caller(Some(OID), &[], None);
        assert_eq!(
            scopes.allows(&by_oid, HUB, "sensor-17").map(|k| &**k),
            Some(&*OID.to_ascii_uppercase()),
            "GUID keys match any letter case and the log names the key as written"
        );
        assert!(scopes.allows(&by_oid, HUB, "line-2-x").is_some(), "prefix");
        assert!(
            scopes.allows(&by_oid, HUB, "sensor-170").is_none(),
            "exact is exact"
        );
        assert!(
            scopes.allows(&by_oid, HUB, "fleet-a-1").is_none(),
            "another caller's devices"
        );

        let by_role = caller(None, &["Fleet.A"], None);
        assert_eq!(
            scopes.allows(&by_role, HUB, "fleet-a-9").map(|k| &**k),
            Some("role:Fleet.A")
        );
        assert!(scopes.allows(&by_role, HUB, "fleet-b-9").is_none());

        let by_cert = Caller {
            principal: None,
            ..caller(None, &[], Some(sha1_bytes()))
        };
        assert!(scopes.allows(&by_cert, HUB, "gw-01").is_some());
        assert!(scopes.allows(&by_cert, HUB, "gw-02").is_none());

        let nobody = caller(
            Some("99999999-2222-3333-4444-555555555555"),
            &["Other"],
            None,
        );
        assert!(
            scopes.allows(&nobody, HUB, "sensor-17").is_none(),
            "matches no rule"
        );
    }

    #[test]
    fn a_caller_gets_the_union_of_every_rule_that_matches_it() {
        let scopes = scopes();
        let both = caller(Some(OID), &["Fleet.A"], Some(sha1_bytes()));
        for id in ["sensor-17", "line-2-a", "fleet-a-1", "gw-01"] {
            assert!(scopes.allows(&both, HUB, id).is_some(), "{id}");
        }
        assert!(scopes.allows(&both, HUB, "fleet-b-1").is_none());
        let ops = caller(None, &["Ops"], None);
        assert_eq!(
            scopes.allows(&ops, HUB, "anything").map(|k| &**k),
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
            let error = Scopes::parse(text, Some(&one_hub()))
                .expect_err(text)
                .to_string();
            assert!(error.contains(want), "{text}: {error}");
        }
    }

    #[test]
    fn the_setting_needs_the_layers_its_keys_use() {
        let check = |text: &str, bearer: bool, cert: bool| {
            let read = |name: &str| (name == DEVICE_SCOPES).then(|| text.to_owned());
            Scopes::from_lookup(&Lookup::new(&read), bearer, cert, Some(&one_hub()))
        };
        let unset = |_: &str| None;
        assert!(matches!(
            Scopes::from_lookup(&Lookup::new(&unset), false, false, None),
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

    #[test]
    fn qualified_patterns_apply_to_their_hub_in_either_form() {
        let hubs = hubs("eu.azure-devices.net,us.device.azure-devices.net");
        let scopes = Scopes::parse(
            r#"{"role:EU": ["eu.device.azure-devices.net/line-2-*"],
                "role:All": ["*/shared-*"],
                "role:US": ["US.azure-devices.net/x", "us.device.azure-devices.net/y"]}"#,
            Some(&hubs),
        )
        .expect("valid scopes");
        let eu = caller(None, &["EU"], None);
        assert!(
            scopes
                .allows(&eu, Some("eu.azure-devices.net"), "line-2-a")
                .is_some()
        );
        assert!(
            scopes
                .allows(&eu, Some("us.azure-devices.net"), "line-2-a")
                .is_none(),
            "another hub"
        );
        assert!(
            scopes.allows(&eu, None, "line-2-a").is_some(),
            "a registration: any hub"
        );
        let all = caller(None, &["All"], None);
        for hub in ["eu.azure-devices.net", "us.azure-devices.net"] {
            assert!(
                scopes.allows(&all, Some(hub), "shared-1").is_some(),
                "{hub}"
            );
        }
        let us = caller(None, &["US"], None);
        for id in ["x", "y"] {
            assert!(
                scopes
                    .allows(&us, Some("us.azure-devices.net"), id)
                    .is_some(),
                "{id}"
            );
            assert!(
                scopes
                    .allows(&us, Some("eu.azure-devices.net"), id)
                    .is_none(),
                "{id}"
            );
        }
    }

    #[test]
    fn unqualified_patterns_need_one_hub_and_named_hubs_must_be_served() {
        let two = hubs("eu.azure-devices.net,us.azure-devices.net");
        for (text, hubs, want) in [
            (r#"{"role:A": ["x"]}"#, Some(&two), "names no hub"),
            (
                r#"{"role:A": ["other.azure-devices.net/x"]}"#,
                Some(&two),
                "not in IOTHUB_HOSTNAMES",
            ),
            (
                r#"{"role:A": ["not a host/x"]}"#,
                Some(&two),
                "not in IOTHUB_HOSTNAMES",
            ),
            (
                r#"{"role:A": ["eu.azure-devices.net/"]}"#,
                Some(&two),
                "empty pattern",
            ),
            (
                r#"{"role:A": ["eu.azure-devices.net/x"]}"#,
                None,
                "the hub comes from the key's connection string",
            ),
        ] {
            let error = Scopes::parse(text, hubs).expect_err(text).to_string();
            assert!(error.contains(want), "{text}: {error}");
        }
        assert!(Scopes::parse(r#"{"role:A": ["x", "*/y"]}"#, None).is_ok());
        let central = hubs("*.azure-devices.net");
        assert!(
            Scopes::parse(r#"{"role:A": ["x"]}"#, Some(&central)).is_err(),
            "a suffix entry is many hubs"
        );
        assert!(
            Scopes::parse(
                r#"{"role:A": ["iotc-1.azure-devices.net/x"]}"#,
                Some(&central)
            )
            .is_ok(),
            "a hub in a listed suffix"
        );
    }

    #[test]
    fn ids_that_differ_only_in_case_across_keys_are_reported_once_per_pair() {
        let scopes = Scopes::parse(
            r#"{"role:A": ["gw-1", "fleet-a-*", "1234"],
                "role:B": ["GW-1"],
                "role:C": ["FLEET-*", "5678"],
                "role:D": ["gw-1", "other"],
                "role:E": ["1234*"],
                "role:Ops": ["*"]}"#,
            Some(&one_hub()),
        )
        .expect("valid scopes");
        let overlaps = scopes.case_overlaps(&["h.azure-devices.net"]);
        let pairs: Vec<(String, String)> = overlaps
            .iter()
            .map(|o| (o.keys[0].to_string(), o.keys[1].to_string()))
            .collect();
        for want in [
            ("role:A", "role:B"),
            ("role:A", "role:C"),
            ("role:B", "role:D"),
        ] {
            assert!(
                pairs.contains(&(want.0.to_owned(), want.1.to_owned())),
                "{want:?} in {pairs:?}"
            );
        }
        for quiet in [
            ("role:A", "role:D"),   // the same id, case and all
            ("role:A", "role:E"),   // digits have no case
            ("role:A", "role:Ops"), // `*` is not compared
        ] {
            assert!(
                !pairs.contains(&(quiet.0.to_owned(), quiet.1.to_owned())),
                "{quiet:?} in {pairs:?}"
            );
        }
        assert_eq!(pairs.len(), 3, "{overlaps:?}");
        let ab = &overlaps[pairs
            .iter()
            .position(|p| p.0 == "role:A" && p.1 == "role:B")
            .expect("A and B")];
        assert_eq!(ab.patterns, ["gw-1".to_owned(), "GW-1".to_owned()]);
        assert!(ab.to_string().contains("`role:A` and `role:B`"), "{ab}");
    }

    #[test]
    fn case_overlaps_are_per_hub() {
        let two = hubs("eu.azure-devices.net,us.azure-devices.net");
        let scopes = Scopes::parse(
            r#"{"role:A": ["eu.azure-devices.net/gw-1"], "role:B": ["us.azure-devices.net/GW-1"],
                "role:C": ["*/Gw-1"]}"#,
            Some(&two),
        )
        .expect("valid scopes");
        let pairs: Vec<(String, String, String)> = scopes
            .case_overlaps(&["eu.azure-devices.net", "us.azure-devices.net"])
            .iter()
            .map(|o| (o.keys[0].to_string(), o.keys[1].to_string(), o.hub.clone()))
            .collect();
        assert_eq!(
            pairs,
            [
                (
                    "role:A".to_owned(),
                    "role:C".to_owned(),
                    "eu.azure-devices.net".to_owned()
                ),
                (
                    "role:B".to_owned(),
                    "role:C".to_owned(),
                    "us.azure-devices.net".to_owned()
                ),
            ],
            "A and B are on different hubs"
        );
    }
}
