//! Per-caller device scoping: `DEVICE_SCOPES`, which devices each caller may get tokens for.
//!
//! **What it owns.** Parsing the setting — a JSON object from caller keys to lists of device id
//! patterns — and the decision [`Scopes::allows`]. Keys:
//! - a GUID: the bearer token's `oid`, `appid` or `azp` (any letter case), as
//!   `AUTH_ALLOWED_CALLERS` matches them;
//! - `role:NAME`: the bearer token's `roles` contain `NAME` (exactly);
//! - `cert:THUMBPRINT`: the client certificate's SHA-1 or SHA-256 thumbprint (hex, any case),
//!   as pinned in `CLIENT_CERT_THUMBPRINTS`;
//!
//! and, for the callers a gateway forwards (`GATEWAY_CALLERS`, [`gateway`](crate::auth::gateway)):
//! - `subscription:ID`: the API Management subscription id (any letter case). Ids are unique
//!   per API Management instance only, so with more than one gateway forwarding subscriptions
//!   every such key names its gateway, `subscription:<gateway oid>/ID`; with one, either form
//!   names it (a key whose text after `subscription:` starts with a GUID and `/` is always the
//!   gateway form);
//! - `fwd-cert:THUMBPRINT`: the SHA-256 thumbprint of the certificate the gateway validated
//!   (`cert:` keeps meaning the direct caller's own TLS certificate);
//! - `caller:GUID` and `caller-role:NAME`: the forwarded Entra ID token's `oid`/`appid`/`azp`,
//!   and its `roles` (another app registration's roles than the handler's, hence their own
//!   prefix).
//!
//! Patterns: an exact id, a prefix followed by one trailing `*`, or `*` alone. A caller may use the
//! union of every rule that matches it; a caller no rule matches gets nothing. On a gateway's
//! request the caller is the one it forwards, and only the forwarded-caller keys apply: rules
//! naming the gateway's own identity or certificate do not. The id checked is
//! the device id (for a module token: its device's id; for a DPS registration token: the
//! registration id). Scoping only narrows: a caller must still pass every caller layer first.
//!
//! **What it trusts.** The caller as the layers established it ([`Caller`]). The setting is the
//! operator's, and a rule that could not mean what it says — malformed JSON, a repeated key, an
//! unknown key form, an empty list or pattern, a `*` anywhere but last, a key for a layer that is
//! off (or a gateway kind nobody forwards), a `cert:` thumbprint that is not pinned — stops the
//! start rather than being guessed at.
//!
//! **How fast.** Everything is prepared at start: one hash map per key form, and per rule its
//! [`Patterns`] (exact ids in a hash set, prefixes searched in O(log n)). A decision is a handful of
//! hash lookups and one search per matching rule, whatever the number of rules.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde::de::{Deserializer, MapAccess, Visitor};

pub mod patterns;

use crate::auth::bearer::{Principal, is_guid};
use crate::auth::client_cert::{Thumbprint, Thumbprints};
use crate::auth::gateway::{
    ForwardedCaller, GatewayKind, GatewaySettings, SubscriptionId, parse_sha256,
};
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
    /// `subscription:ID` keys, the id folded to lower case: the one subscription gateway's.
    by_subscription: HashMap<String, Rule>,
    /// `subscription:<gateway>/ID` keys: gateway object id (lower case) → folded id → rule.
    by_gateway_subscription: HashMap<String, HashMap<String, Rule>>,
    by_forwarded_sha256: HashMap<[u8; 32], Rule>,
    /// `caller:GUID` keys, lower case.
    by_forwarded_principal: HashMap<String, Rule>,
    by_forwarded_role: HashMap<String, Rule>,
}

/// Which callers the layers that are on can tell apart: what each key form needs.
#[derive(Debug, Clone, Copy, Default)]
pub struct Layers<'a> {
    /// The bearer-token layer is on (GUID and `role:` keys).
    pub bearer: bool,
    /// The client-certificate layer's pins, when it is on (`cert:` keys).
    pub client_cert: Option<&'a Thumbprints>,
    /// The gateways, when any (`subscription:`, `fwd-cert:`, `caller:`, `caller-role:` keys).
    pub gateways: Option<&'a GatewaySettings>,
}

/// Why [`Scopes::allows`] refused; the log line says which.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// No rule names the caller at all (often a typo in a key).
    NoRule,
    /// Rules name the caller, but none covers the device.
    OutsideScope,
}

impl Denial {
    /// The log line's `denied` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoRule => "no rule names this caller",
            Self::OutsideScope => "device outside the caller's DEVICE_SCOPES",
        }
    }
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
    /// A key that is none of the forms.
    #[error(
        "key `{0}` is not a GUID (an object or application id), `role:NAME`, `cert:THUMBPRINT` (40 or 64 hex digits), `subscription:ID`, `subscription:<gateway GUID>/ID`, `fwd-cert:THUMBPRINT` (64 hex digits: SHA-256), `caller:GUID` or `caller-role:NAME`"
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
    /// A forwarded-caller key, and no gateway forwards that kind of caller.
    #[error(
        "key `{key}` needs a gateway forwarding {what} (GATEWAY_CALLERS: \"{kind}\"), and none does"
    )]
    NoGateway {
        /// The key.
        key: String,
        /// What the gateway would forward.
        what: &'static str,
        /// The kind, as `GATEWAY_CALLERS` writes it.
        kind: &'static str,
    },
    /// A `cert:` key for a certificate the certificate layer refuses: it could never match.
    #[error(
        "key `{0}`: the thumbprint is not in CLIENT_CERT_THUMBPRINTS, so no caller could present it (pin it there in the same SHA-1 or SHA-256 form)"
    )]
    UnpinnedCertificate(String),
    /// `subscription:ID` where several gateways forward subscriptions: whose?
    #[error(
        "key `{key}`: {count} gateways in GATEWAY_CALLERS forward subscriptions and subscription ids are unique per API Management instance only: name the gateway, `subscription:<gateway oid>/ID`"
    )]
    AmbiguousSubscription {
        /// The key.
        key: String,
        /// How many gateways forward subscriptions.
        count: usize,
    },
    /// `subscription:<GUID>/ID` where the GUID is no subscription gateway.
    #[error(
        "key `{0}` names a gateway that GATEWAY_CALLERS does not list as forwarding subscriptions (\"subscription\")"
    )]
    UnknownGateway(String),
}

impl Scopes {
    /// `DEVICE_SCOPES`, when set; it needs a layer that tells callers apart, and each key needs
    /// its own layer (`bearer`: GUID and `role:` keys; `client_cert`: `cert:` keys, each pinned;
    /// a gateway forwarding its kind: the forwarded-caller keys).
    pub fn from_lookup(
        settings: &Lookup<'_>,
        layers: Layers<'_>,
    ) -> Result<Option<Self>, SettingError> {
        let Some(text) = settings.get(DEVICE_SCOPES) else {
            return Ok(None);
        };
        let refuse = |problem: String| SettingError::new(DEVICE_SCOPES, problem);
        if !layers.bearer && layers.client_cert.is_none() {
            return Err(refuse(
                "needs a layer that tells callers apart: the bearer-token layer (AUTH_TENANT_ID) or the client-certificate layer (CLIENT_CERT_THUMBPRINTS)".to_owned(),
            ));
        }
        let mut scopes = Self::parse(&text).map_err(|e| refuse(e.to_string()))?;
        scopes
            .check_layers(layers)
            .map_err(|e| refuse(e.to_string()))?;
        Ok(Some(scopes))
    }

    /// Refuse keys no caller could match with these layers; give `subscription:ID` keys to the
    /// one gateway forwarding subscriptions.
    fn check_layers(&mut self, layers: Layers<'_>) -> Result<(), ScopeError> {
        fn needs<'r>(
            rules: impl Iterator<Item = &'r Rule>,
            on: bool,
            error: impl FnOnce(String) -> ScopeError,
        ) -> Result<(), ScopeError> {
            match rules.map(|rule| &rule.key).min() {
                Some(key) if !on => Err(error(key.to_string())),
                _ => Ok(()),
            }
        }
        let layer_off = |layer| move |key| ScopeError::LayerOff { key, layer };
        let no_gateway = |kind: GatewayKind, what| {
            move |key| ScopeError::NoGateway {
                key,
                what,
                kind: kind.as_str(),
            }
        };
        needs(
            self.by_principal.values().chain(self.by_role.values()),
            layers.bearer,
            layer_off("bearer-token layer (AUTH_TENANT_ID)"),
        )?;
        needs(
            self.by_sha1.values().chain(self.by_sha256.values()),
            layers.client_cert.is_some(),
            layer_off("client-certificate layer (CLIENT_CERT_THUMBPRINTS)"),
        )?;
        if let Some(pins) = layers.client_cert {
            let unpinned_sha1 = self
                .by_sha1
                .iter()
                .filter(|(sha1, _)| !pins.contains(Thumbprint::Sha1(**sha1)))
                .map(|(_, rule)| &rule.key);
            let unpinned_sha256 = self
                .by_sha256
                .iter()
                .filter(|(sha256, _)| !pins.contains(Thumbprint::Sha256(**sha256)))
                .map(|(_, rule)| &rule.key);
            let unpinned = unpinned_sha1.chain(unpinned_sha256).min();
            if let Some(key) = unpinned {
                return Err(ScopeError::UnpinnedCertificate(key.to_string()));
            }
        }
        let forwarding = |kind| -> Vec<&str> {
            layers
                .gateways
                .map(|gateways| gateways.forwarding(kind).collect())
                .unwrap_or_default()
        };
        let subscription_gateways = forwarding(GatewayKind::Subscription);
        needs(
            self.by_subscription.values().chain(
                self.by_gateway_subscription
                    .values()
                    .flat_map(HashMap::values),
            ),
            !subscription_gateways.is_empty(),
            no_gateway(GatewayKind::Subscription, "API Management subscriptions"),
        )?;
        needs(
            self.by_forwarded_sha256.values(),
            !forwarding(GatewayKind::Certificate).is_empty(),
            no_gateway(GatewayKind::Certificate, "client certificates"),
        )?;
        needs(
            self.by_forwarded_principal
                .values()
                .chain(self.by_forwarded_role.values()),
            !forwarding(GatewayKind::Entra).is_empty(),
            no_gateway(GatewayKind::Entra, "callers' Entra ID tokens"),
        )?;
        if let Some(key) = self
            .by_gateway_subscription
            .iter()
            .filter(|(gateway, _)| !subscription_gateways.contains(&gateway.as_str()))
            .flat_map(|(_, rules)| rules.values())
            .map(|rule| &rule.key)
            .min()
        {
            return Err(ScopeError::UnknownGateway(key.to_string()));
        }
        if let Some(key) = self.by_subscription.values().map(|rule| &rule.key).min()
            && subscription_gateways.len() > 1
        {
            return Err(ScopeError::AmbiguousSubscription {
                key: key.to_string(),
                count: subscription_gateways.len(),
            });
        }
        // One gateway: `subscription:ID` and `subscription:<it>/ID` are the same caller.
        if let [gateway] = subscription_gateways[..]
            && let Some(qualified) = self.by_gateway_subscription.get(gateway)
            && let Some(key) = qualified
                .iter()
                .filter(|(id, _)| self.by_subscription.contains_key(*id))
                .map(|(_, rule)| &rule.key)
                .min()
        {
            return Err(ScopeError::NotJson(format!(
                "key `{key}` names a caller that another key already names"
            )));
        }
        Ok(())
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
            let duplicate = if let Some(role) = key.strip_prefix("caller-role:") {
                if role.is_empty() {
                    return Err(ScopeError::BadKey(key));
                }
                scopes
                    .by_forwarded_role
                    .insert(role.to_owned(), rule)
                    .is_some()
            } else if let Some(guid) = key.strip_prefix("caller:") {
                let guid = guid.to_ascii_lowercase();
                if !is_guid(&guid) {
                    return Err(ScopeError::BadKey(key));
                }
                scopes.by_forwarded_principal.insert(guid, rule).is_some()
            } else if let Some(hex) = key.strip_prefix("fwd-cert:") {
                let Some(sha256) = parse_sha256(hex.as_bytes()) else {
                    return Err(ScopeError::BadKey(key));
                };
                scopes.by_forwarded_sha256.insert(sha256, rule).is_some()
            } else if let Some(subscription) = key.strip_prefix("subscription:") {
                // `<GUID>/ID` names the gateway; anything else is an id.
                let (gateway, id) = match subscription.split_once('/') {
                    Some((gateway, id)) if is_guid(&gateway.to_ascii_lowercase()) => {
                        (Some(gateway.to_ascii_lowercase()), id)
                    }
                    _ => (None, subscription),
                };
                let Some(id) = SubscriptionId::parse(id) else {
                    return Err(ScopeError::BadKey(key));
                };
                let rules = match gateway {
                    Some(gateway) => scopes.by_gateway_subscription.entry(gateway).or_default(),
                    None => &mut scopes.by_subscription,
                };
                rules.insert(id.folded().to_owned(), rule).is_some()
            } else if let Some(role) = key.strip_prefix("role:") {
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
    /// it, or why not. A gateway's request is decided for the caller it forwards alone (by
    /// subscription: the gateway's own keys, then the unqualified ones; by Entra ID token: ids,
    /// then roles in the token's order); any other caller by its ids, then roles in the token's
    /// order, then certificate thumbprints.
    pub fn allows(&self, caller: &Caller, id: &str) -> Result<&Arc<str>, Denial> {
        let mut lookup = Search { id, named: false };
        let found = match &caller.forwarded {
            Some(forwarded) => match &forwarded.caller {
                ForwardedCaller::Subscription(subscription) => lookup.first([
                    self.by_gateway_subscription
                        .get(&*forwarded.gateway)
                        .and_then(|rules| rules.get(subscription.folded())),
                    self.by_subscription.get(subscription.folded()),
                ]),
                ForwardedCaller::Certificate(sha256) => {
                    lookup.first([self.by_forwarded_sha256.get(sha256)])
                }
                ForwardedCaller::Entra(principal) => lookup.principal(
                    principal,
                    &self.by_forwarded_principal,
                    &self.by_forwarded_role,
                ),
            },
            None => {
                let by_token = caller.principal.as_ref().and_then(|principal| {
                    lookup.principal(principal, &self.by_principal, &self.by_role)
                });
                by_token.or_else(|| {
                    caller.certificate.as_ref().and_then(|certificate| {
                        lookup.first([
                            self.by_sha1.get(&certificate.sha1),
                            self.by_sha256.get(&certificate.sha256),
                        ])
                    })
                })
            }
        };
        match found {
            Some(rule) => Ok(&rule.key),
            None if lookup.named => Err(Denial::OutsideScope),
            None => Err(Denial::NoRule),
        }
    }
}

/// One decision's search: the device id, and whether any rule named the caller.
struct Search<'i> {
    id: &'i str,
    named: bool,
}

impl Search<'_> {
    /// The first of `rules` that covers the id.
    fn first<'s, const N: usize>(&mut self, rules: [Option<&'s Rule>; N]) -> Option<&'s Rule> {
        rules.into_iter().flatten().find(|rule| {
            self.named = true;
            rule.matches(self.id)
        })
    }

    /// The first rule for the token's ids (any letter case), then for its roles, that covers
    /// the id.
    fn principal<'s>(
        &mut self,
        principal: &Principal,
        by_id: &'s HashMap<String, Rule>,
        by_role: &'s HashMap<String, Rule>,
    ) -> Option<&'s Rule> {
        for principal_id in principal.ids() {
            if let Some(rule) = self.first([guid_rule(by_id, principal_id)]) {
                return Some(rule);
            }
        }
        principal
            .roles
            .iter()
            .find_map(|role| self.first([by_role.get(role.as_str())]))
    }
}

/// The rule for a GUID, in any letter case, without allocating.
fn guid_rule<'s>(rules: &'s HashMap<String, Rule>, guid: &str) -> Option<&'s Rule> {
    let mut lower = [0u8; 36];
    if guid.len() != lower.len() {
        return None;
    }
    lower.copy_from_slice(guid.as_bytes());
    lower.make_ascii_lowercase();
    std::str::from_utf8(&lower)
        .ok()
        .and_then(|key| rules.get(key))
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
    use crate::auth::client_cert::CertificateThumbprints;
    use crate::auth::gateway::Forwarded;

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
                app_only: true,
                object_id: object_id.map(str::to_owned),
                app_id: Some(APP.to_owned()),
                authorized_party: None,
                roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            }),
            forwarded: None,
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
            Ok(&*OID.to_ascii_uppercase()),
            "GUID keys match any letter case and the log names the key as written"
        );
        assert!(scopes.allows(&by_oid, "line-2-x").is_ok(), "prefix");
        assert!(
            scopes.allows(&by_oid, "sensor-170").is_err(),
            "exact is exact"
        );
        assert!(
            scopes.allows(&by_oid, "fleet-a-1").is_err(),
            "another caller's devices"
        );

        let by_role = caller(None, &["Fleet.A"], None);
        assert_eq!(
            scopes.allows(&by_role, "fleet-a-9").map(|k| &**k),
            Ok("role:Fleet.A")
        );
        assert!(scopes.allows(&by_role, "fleet-b-9").is_err());

        let by_cert = Caller {
            principal: None,
            ..caller(None, &[], Some(sha1_bytes()))
        };
        assert!(scopes.allows(&by_cert, "gw-01").is_ok());
        assert!(scopes.allows(&by_cert, "gw-02").is_err());

        let nobody = caller(
            Some("99999999-2222-3333-4444-555555555555"),
            &["Other"],
            None,
        );
        assert!(
            scopes.allows(&nobody, "sensor-17").is_err(),
            "matches no rule"
        );
    }

    #[test]
    fn a_caller_gets_the_union_of_every_rule_that_matches_it() {
        let scopes = scopes();
        let both = caller(Some(OID), &["Fleet.A"], Some(sha1_bytes()));
        for id in ["sensor-17", "line-2-a", "fleet-a-1", "gw-01"] {
            assert!(scopes.allows(&both, id).is_ok(), "{id}");
        }
        assert!(scopes.allows(&both, "fleet-b-1").is_err());
        let ops = caller(None, &["Ops"], None);
        assert_eq!(
            scopes.allows(&ops, "anything").map(|k| &**k),
            Ok("role:Ops")
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

    const GATEWAY: &str = "3f2504e0-4f89-41d3-9a0c-0305e82c3301";
    const GATEWAY_2: &str = "3f2504e0-4f89-41d3-9a0c-0305e82c3302";
    const BY_CERT: &str = "3f2504e0-4f89-41d3-9a0c-0305e82c3303";
    const BY_TOKEN: &str = "3f2504e0-4f89-41d3-9a0c-0305e82c3304";
    const SHA256: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    fn gateways(pairs: &[(&str, GatewayKind)]) -> GatewaySettings {
        GatewaySettings {
            gateways: pairs
                .iter()
                .map(|(oid, kind)| ((*oid).to_owned(), *kind))
                .collect(),
            caller_audiences: Vec::new(),
        }
    }

    fn from_lookup(text: &str, layers: Layers<'_>) -> Result<Option<Scopes>, SettingError> {
        let read = |name: &str| (name == DEVICE_SCOPES).then(|| text.to_owned());
        Scopes::from_lookup(&Lookup::new(&read), layers)
    }

    #[test]
    fn the_setting_needs_the_layers_its_keys_use() {
        let unset = |_: &str| None;
        assert!(matches!(
            Scopes::from_lookup(&Lookup::new(&unset), Layers::default()),
            Ok(None)
        ));
        let pins = Thumbprints::parse(SHA1).expect("a pin");
        let bearer = Layers {
            bearer: true,
            ..Layers::default()
        };
        let by_subscription = gateways(&[(GATEWAY, GatewayKind::Subscription)]);
        let two_by_subscription = gateways(&[
            (GATEWAY, GatewayKind::Subscription),
            (GATEWAY_2, GatewayKind::Subscription),
        ]);
        let by_entra = gateways(&[(GATEWAY, GatewayKind::Entra)]);
        let with = |gateways| Layers {
            gateways: Some(gateways),
            ..bearer
        };
        let cases = [
            (
                r#"{"role:A": ["x"]}"#.to_owned(),
                Layers::default(),
                "needs a layer",
            ),
            (
                r#"{"role:A": ["x"]}"#.to_owned(),
                Layers {
                    client_cert: Some(&pins),
                    ..Layers::default()
                },
                "bearer-token layer",
            ),
            (
                format!(r#"{{"cert:{SHA1}": ["x"]}}"#),
                bearer,
                "client-certificate layer",
            ),
            (
                format!(r#"{{"cert:{SHA256}": ["x"]}}"#),
                Layers {
                    client_cert: Some(&pins),
                    ..bearer
                },
                "not in CLIENT_CERT_THUMBPRINTS",
            ),
            (
                r#"{"subscription:a": ["x"]}"#.to_owned(),
                bearer,
                "forwarding API Management subscriptions",
            ),
            (
                r#"{"subscription:a": ["x"]}"#.to_owned(),
                with(&by_entra),
                "forwarding API Management subscriptions",
            ),
            (
                format!(r#"{{"fwd-cert:{SHA256}": ["x"]}}"#),
                with(&by_subscription),
                "forwarding client certificates",
            ),
            (
                format!(r#"{{"caller:{GATEWAY_2}": ["x"]}}"#),
                with(&by_subscription),
                "forwarding callers' Entra ID tokens",
            ),
            (
                r#"{"caller-role:A": ["x"]}"#.to_owned(),
                with(&by_subscription),
                "forwarding callers' Entra ID tokens",
            ),
            (
                r#"{"subscription:a": ["x"]}"#.to_owned(),
                with(&two_by_subscription),
                "name the gateway",
            ),
            (
                format!(r#"{{"subscription:{GATEWAY_2}/a": ["x"]}}"#),
                with(&by_subscription),
                "does not list as forwarding subscriptions",
            ),
            (
                format!(r#"{{"subscription:A": ["x"], "subscription:{GATEWAY}/a": ["y"]}}"#),
                with(&by_subscription),
                "another key already names",
            ),
        ];
        for (text, layers, want) in cases {
            let error = from_lookup(&text, layers).expect_err(&text);
            assert_eq!(error.setting, DEVICE_SCOPES);
            assert!(error.problem.contains(want), "{text}: {}", error.problem);
        }
        for (text, layers) in [
            (r#"{"role:A": ["x"]}"#.to_owned(), bearer),
            (
                format!(r#"{{"cert:{}": ["x"]}}"#, SHA1.to_ascii_lowercase()),
                Layers {
                    client_cert: Some(&pins),
                    ..Layers::default()
                },
            ),
            (
                r#"{"subscription:a": ["x"]}"#.to_owned(),
                with(&by_subscription),
            ),
            (
                format!(
                    r#"{{"subscription:{GATEWAY}/a": ["x"], "subscription:{GATEWAY_2}/a": ["y"]}}"#
                ),
                with(&two_by_subscription),
            ),
            (
                format!(r#"{{"caller:{GATEWAY_2}": ["x"], "caller-role:A": ["y"]}}"#),
                with(&by_entra),
            ),
        ] {
            assert!(matches!(from_lookup(&text, layers), Ok(Some(_))), "{text}");
        }
    }

    fn forwarded(gateway: &str, caller: ForwardedCaller) -> Caller {
        Caller {
            forwarded: Some(Forwarded {
                gateway: Arc::from(gateway),
                caller,
            }),
            ..caller_of(Some(GATEWAY), &["Ops"], Some(sha1_bytes()))
        }
    }

    fn caller_of(object_id: Option<&str>, roles: &[&str], sha1: Option<[u8; 20]>) -> Caller {
        caller(object_id, roles, sha1)
    }

    fn subscription(id: &str) -> ForwardedCaller {
        ForwardedCaller::Subscription(SubscriptionId::parse(id).expect("a valid id"))
    }

    #[test]
    fn a_gateway_is_decided_for_the_caller_it_forwards_alone() {
        let pins = Thumbprints::parse(SHA1).expect("a pin");
        let settings = gateways(&[
            (GATEWAY, GatewayKind::Subscription),
            (GATEWAY_2, GatewayKind::Subscription),
            (BY_CERT, GatewayKind::Certificate),
            (BY_TOKEN, GatewayKind::Entra),
        ]);
        let text = format!(
            r#"{{"{GATEWAY}": ["*"], "role:Ops": ["*"], "cert:{SHA1}": ["*"],
                "subscription:{GATEWAY}/Fleet-A": ["fleet-a-*"],
                "subscription:{}/Fleet-A": ["other-a-*"],
                "fwd-cert:{SHA256}": ["gw-*"],
                "caller:{OID}": ["sensor-*"], "caller-role:Fleet.B": ["fleet-b-*"]}}"#,
            GATEWAY_2.to_ascii_uppercase()
        );
        let scopes = from_lookup(
            &text,
            Layers {
                bearer: true,
                client_cert: Some(&pins),
                gateways: Some(&settings),
            },
        )
        .expect("valid")
        .expect("set");
        let gateway_a = forwarded(GATEWAY, subscription("FLEET-a"));
        assert_eq!(
            scopes.allows(&gateway_a, "fleet-a-1").map(|k| &**k),
            Ok(&*format!("subscription:{GATEWAY}/Fleet-A")),
            "ids match in any case"
        );
        assert_eq!(
            scopes.allows(&gateway_a, "other-a-1"),
            Err(Denial::OutsideScope),
            "the same id behind the other gateway is another caller; and the gateway's own rules (`*`) do not apply"
        );
        let gateway_2_a = forwarded(GATEWAY_2, subscription("Fleet-A"));
        assert!(scopes.allows(&gateway_2_a, "other-a-1").is_ok());
        assert_eq!(
            scopes.allows(&forwarded(GATEWAY, subscription("Fleet-B")), "fleet-a-1"),
            Err(Denial::NoRule)
        );

        let sha256 = parse_sha256(SHA256.as_bytes()).expect("hex");
        let by_cert = forwarded(BY_CERT, ForwardedCaller::Certificate(sha256));
        assert!(scopes.allows(&by_cert, "gw-1").is_ok());
        assert_eq!(
            scopes.allows(&by_cert, "fleet-a-1"),
            Err(Denial::OutsideScope)
        );

        let token = |oid: &str, roles: &[&str]| Principal {
            app_only: true,
            object_id: Some(oid.to_owned()),
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            ..Principal::default()
        };
        let by_oid = forwarded(
            BY_TOKEN,
            ForwardedCaller::Entra(token(&OID.to_ascii_uppercase(), &[])),
        );
        assert!(scopes.allows(&by_oid, "sensor-1").is_ok());
        let by_role = forwarded(
            BY_TOKEN,
            ForwardedCaller::Entra(token(APP, &["Fleet.B", "Ops"])),
        );
        assert_eq!(
            scopes.allows(&by_role, "fleet-b-1").map(|k| &**k),
            Ok("caller-role:Fleet.B")
        );
        assert_eq!(
            scopes.allows(&by_role, "anything"),
            Err(Denial::OutsideScope),
            "`role:Ops` is the handler's role, not the forwarded token's"
        );

        let direct = caller_of(Some(GATEWAY), &[], None);
        assert_eq!(
            scopes.allows(&direct, "anything").map(|k| &**k),
            Ok(GATEWAY),
            "without a forwarded caller the gateway is a caller like any other"
        );
        assert_eq!(
            scopes.allows(&caller_of(Some(APP), &[], None), "x"),
            Err(Denial::NoRule)
        );
    }
}
