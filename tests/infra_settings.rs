//! `infra/handler-settings.json` classifies every setting the handler reads for the Bicep
//! templates: `set` (the template always sets it), `set_when` (the template sets it exactly when
//! a condition on its parameters holds, e.g. `signingMode` is `enrollment-group`), `default` (left
//! at the handler's default) or `never` (the template must not set it). This test holds that file
//! to the handler's own list, `config::SETTINGS`: the four groups are disjoint and together are
//! exactly `SETTINGS`, so a setting added to the handler fails here until someone decides what
//! the deployment does with it. It then gives the handler's own configuration parser what the
//! template sets for every combination of the deciding parameters, with the template's values,
//! and checks that it starts (or refuses exactly what it is documented to refuse).
//! `infra/check.sh` (make infra-check) holds the Bicep `handlerSettings` to `set` and `set_when`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use iothub_sas_handler::config::{Config, PLATFORM_SETTINGS, SEED_SETTINGS, SETTINGS};
use serde_json::Value;

/// API Management's managed identity in the examples below.
const APIM_PRINCIPAL: &str = "3f2504e0-4f89-41d3-9a0c-0305e82c3301";
/// The Function App's app registration.
const CLIENT_ID: &str = "11111111-2222-3333-4444-555555555555";
/// The hubs of `iotHubHostnames` in the examples below.
const HUBS: [&str; 2] = [
    "contoso-eu.azure-devices.net",
    "contoso-us.device.azure-devices.net",
];
/// A caller's client application, behind API Management (apimCallerKind entra).
const CALLER_APP: &str = "9a1b2c3d-0000-4000-8000-00000000000a";

fn classification() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("infra/handler-settings.json");
    let text = std::fs::read_to_string(&path).expect("infra/handler-settings.json is readable");
    serde_json::from_str(&text).expect("infra/handler-settings.json is JSON")
}

fn reason_of<'a>(group: &str, setting: &str, entry: &'a Value) -> &'a str {
    let reason = match group {
        "set_when" => &entry["reason"],
        _ => entry,
    };
    let reason = reason.as_str().unwrap_or_default();
    assert!(
        reason.trim().len() >= 10,
        "infra/handler-settings.json: `{group}.{setting}` needs a reason"
    );
    reason
}

fn group<'a>(doc: &'a Value, name: &str) -> BTreeSet<&'a str> {
    doc[name]
        .as_object()
        .unwrap_or_else(|| panic!("infra/handler-settings.json: `{name}` must be an object"))
        .iter()
        .map(|(setting, entry)| {
            reason_of(name, setting, entry);
            setting.as_str()
        })
        .collect()
}

/// A `set_when` condition: each parameter has the value, or (`{"not": value}`) any other.
fn holds(when: &Value, bindings: &BTreeMap<String, String>) -> bool {
    when.as_object()
        .expect("`when` is an object")
        .iter()
        .all(|(parameter, wanted)| {
            let value = &bindings[parameter];
            match wanted {
                Value::String(wanted) => value == wanted,
                Value::Object(not) => not["not"].as_str().is_some_and(|other| value != other),
                other => panic!("unknown condition {other}"),
            }
        })
}

#[test]
fn infra_classifies_exactly_the_settings_the_handler_reads() {
    let doc = classification();
    let groups = ["set", "set_when", "default", "never"].map(|name| (name, group(&doc, name)));

    for (i, (a, left)) in groups.iter().enumerate() {
        for (b, right) in &groups[i + 1..] {
            let both: Vec<_> = left.intersection(right).collect();
            assert!(both.is_empty(), "in both `{a}` and `{b}`: {both:?}");
        }
    }

    let classified: BTreeSet<&str> = groups.iter().flat_map(|(_, g)| g).copied().collect();
    let handler: BTreeSet<&str> = SETTINGS.iter().copied().collect();
    let unclassified: Vec<_> = handler.difference(&classified).collect();
    let unknown: Vec<_> = classified.difference(&handler).collect();
    assert!(
        unclassified.is_empty(),
        "settings the handler reads that infra/handler-settings.json does not classify: {unclassified:?}"
    );
    assert!(
        unknown.is_empty(),
        "infra/handler-settings.json names settings the handler does not read: {unknown:?}"
    );

    // Platform variables and the seed's old names are never the template's business.
    for name in PLATFORM_SETTINGS.iter().chain(SEED_SETTINGS) {
        assert!(
            !classified.contains(name),
            "{name} is not an operator setting"
        );
    }
    let [(_, set), _, _, (_, never)] = &groups;
    // Key Vault mode: the template can never put a key itself into app settings.
    assert!(never.contains("IOTHUB_POLICY_KEY") && never.contains("ENROLLMENT_GROUP_KEY"));
    assert!(set.contains("KEYVAULT_URI") && set.contains("AUTH_TENANT_ID"));
}

/// What the template writes into a setting, for `bindings` of the deciding parameters: its own
/// values and its parameters' defaults (infra/main.bicep, infra/modules/function-app.bicep).
fn template_value(setting: &str, bindings: &BTreeMap<String, String>) -> String {
    match setting {
        "ALLOWED_IPS" => "20.50.2.1".to_owned(),
        "XFF_DEPTH" => "1".to_owned(),
        "IOTHUB_HOSTNAME" => "contoso.azure-devices.net".to_owned(),
        // Two hubs, the second by its TLS 1.3 device host name.
        "IOTHUB_HOSTNAMES" => HUBS.join(","),
        // A secret per hub, naming the hubs the template lists (either host name).
        "IOTHUB_POLICY_KEY_SECRETS" => {
            let hubs: Vec<&str> = if bindings["iotHubHostnames"] == "given" {
                HUBS.to_vec()
            } else {
                vec!["contoso.azure-devices.net"]
            };
            serde_json::to_string(
                &hubs
                    .iter()
                    .map(|hub| {
                        (
                            *hub,
                            format!("iothub-{}-policy", &hub[..hub.find('.').unwrap_or(0)]),
                        )
                    })
                    .collect::<BTreeMap<_, _>>(),
            )
            .expect("a map of strings is JSON")
        }
        "SIGNING_MODE" => bindings["signingMode"].clone(),
        "KEYVAULT_URI" => "https://kv-iothubsas-abcd1234.vault.azure.net/".to_owned(),
        "KEYVAULT_REFRESH_SECONDS" => "300".to_owned(),
        "TOKEN_TTL_SECONDS" => "3600".to_owned(),
        "TOKEN_MAX_TTL_SECONDS" => "86400".to_owned(),
        "AUTH_TENANT_ID" => "72f988bf-86f1-41af-91ab-2d7cd011db47".to_owned(),
        "AUTH_AUDIENCE" => format!("api://{CLIENT_ID},{CLIENT_ID}"),
        "AUTH_ALLOWED_CALLERS" => APIM_PRINCIPAL.to_owned(),
        // The default: empty, which the handler reads as unset.
        "AUTH_REQUIRED_ROLE" => String::new(),
        "IOTHUB_POLICY_NAME" => "device".to_owned(),
        "IOTHUB_POLICY_KEY_SECRET" => "iothub-device-policy".to_owned(),
        "ENROLLMENT_GROUP_KEY_SECRET" => "dps-enrollment-group-key".to_owned(),
        "DPS_ID_SCOPE" => "0ne00000A0A".to_owned(),
        // Keys of the callers API Management forwards (apimCallerKind): on a gateway request
        // only the forwarded caller counts. Without a caller fact, API Management's own identity.
        "DEVICE_SCOPES" => qualified(
            bindings,
            match bindings["apimCallerKind"].as_str() {
                "subscription" => r#"{"subscription:device-backend": ["fleet-a-*"]}"#.to_owned(),
                "certificate" => format!(r#"{{"fwd-cert:{}": ["fleet-a-*"]}}"#, "ab".repeat(32)),
                "entra" => format!(
                    r#"{{"caller:{CALLER_APP}": ["fleet-a-*"], "caller-role:Fleet.B": ["fleet-b-*"]}}"#
                ),
                _ => format!(r#"{{"{APIM_PRINCIPAL}": ["fleet-a-*"]}}"#),
            },
        ),
        // function-app.bicep: '{"${apimPrincipalId}": "${apimCallerKind}"}'.
        "GATEWAY_CALLERS" => format!(
            r#"{{"{APIM_PRINCIPAL}": "{}"}}"#,
            bindings["apimCallerKind"]
        ),
        "AUTH_CALLER_AUDIENCE" => "api://iothub-sas-callers".to_owned(),
        other => panic!(
            "tests/infra_settings.rs: add the value the template gives {other} to template_value()"
        ),
    }
}

/// `scopes` as the template's operator would write them: with several hubs every pattern names its
/// hubs (here every hub, `*/`), since the handler refuses an unqualified one there.
fn qualified(bindings: &BTreeMap<String, String>, scopes: String) -> String {
    if bindings["iotHubHostnames"] == "given" {
        scopes
            .replace(r#"[""#, r#"["*/"#)
            .replace(r#"", ""#, r#"", "*/"#)
    } else {
        scopes
    }
}

/// Every combination of the parameters `set_when` names: a parameter's `@allowed` values as
/// `parameters` lists them (infra/tests/test_bicep.py holds that list to the template), else the
/// values the conditions name and, for a `{"not": …}` condition, a value it does not ("given").
fn combinations(doc: &Value) -> Vec<BTreeMap<String, String>> {
    let set_when = doc["set_when"]
        .as_object()
        .expect("`set_when` is an object");
    let listed = doc["parameters"].as_object();
    let mut domains: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for entry in set_when.values() {
        for (parameter, wanted) in entry["when"].as_object().expect("`when` is an object") {
            let values = domains.entry(parameter.clone()).or_default();
            if let Some(allowed) = listed.and_then(|listed| listed.get(parameter)) {
                values.extend(
                    allowed
                        .as_array()
                        .expect("`parameters` values are arrays")
                        .iter()
                        .map(|value| value.as_str().expect("a string").to_owned()),
                );
                continue;
            }
            match wanted {
                Value::String(value) => {
                    values.insert(value.clone());
                }
                Value::Object(not) => {
                    values.insert(not["not"].as_str().expect("a string").to_owned());
                    values.insert("given".to_owned());
                }
                other => panic!("unknown condition {other}"),
            }
        }
    }
    let mut all = vec![BTreeMap::new()];
    for (parameter, values) in &domains {
        let mut next = Vec::new();
        for bindings in &all {
            for value in values {
                let mut with = bindings.clone();
                with.insert(parameter.clone(), value.clone());
                next.push(with);
            }
        }
        all = next;
    }
    all
}

#[test]
fn the_handler_starts_with_what_the_template_sets_in_every_signing_mode() {
    let doc = classification();
    let set: Vec<&str> = doc["set"]
        .as_object()
        .expect("`set` is an object")
        .keys()
        .map(String::as_str)
        .collect();
    let set_when = doc["set_when"]
        .as_object()
        .expect("`set_when` is an object");
    let tried = combinations(&doc);
    assert!(
        tried.iter().any(|b| b["signingMode"] == "hub-policy")
            && tried.iter().any(|b| b["signingMode"] == "enrollment-group"),
        "both signing modes are tried: {tried:?}"
    );
    for kind in ["none", "subscription", "certificate", "entra"] {
        assert!(
            tried
                .iter()
                .any(|b| b["apimCallerKind"] == kind && b["deviceScopes"] == "given"),
            "every caller kind is tried with DEVICE_SCOPES: {kind}"
        );
    }

    let mut problems = Vec::new();
    for bindings in &tried {
        let names: Vec<&str> = set
            .iter()
            .copied()
            .chain(
                set_when
                    .iter()
                    .filter(|(_, entry)| holds(&entry["when"], bindings))
                    .map(|(name, _)| name.as_str()),
            )
            .collect();
        let settings: BTreeMap<&str, String> = names
            .iter()
            .map(|&name| (name, template_value(name, bindings)))
            .collect();
        let outcome = Config::from_lookup(|name| settings.get(name).cloned());
        // The refusals the classification documents: a DPS ID scope given in hub-policy mode is
        // passed on rather than dropped, and the handler refuses to start, naming it; and one
        // secret for several hubs (infra/deploy.sh refuses both before deploying).
        let refused =
            if bindings["signingMode"] == "hub-policy" && settings.contains_key("DPS_ID_SCOPE") {
                Some("DPS_ID_SCOPE")
            } else if settings.contains_key("IOTHUB_HOSTNAMES")
                && settings.contains_key("IOTHUB_POLICY_KEY_SECRET")
            {
                Some("IOTHUB_POLICY_KEY_SECRET")
            } else {
                None
            };
        match (outcome, refused) {
            (Ok(config), None) => {
                let mode = config.key_source.mode.as_str();
                if mode != bindings["signingMode"] {
                    problems.push(format!("{bindings:?}: the handler runs in {mode} mode"));
                }
                if config.scopes.is_some() != settings.contains_key("DEVICE_SCOPES") {
                    problems.push(format!("{bindings:?}: DEVICE_SCOPES not applied as set"));
                }
                // API Management is the gateway of the kind its policy forwards, or none.
                let gateways: Vec<(String, &str)> = config
                    .callers
                    .gateways
                    .iter()
                    .flat_map(|g| g.gateways.iter())
                    .map(|(oid, kind)| (oid.clone(), kind.as_str()))
                    .collect();
                let expected: Vec<(String, &str)> = settings
                    .contains_key("GATEWAY_CALLERS")
                    .then(|| (APIM_PRINCIPAL.to_owned(), bindings["apimCallerKind"].as_str()))
                    .into_iter()
                    .collect();
                if gateways != expected {
                    problems.push(format!(
                        "{bindings:?}: the handler's gateways are {gateways:?}, expected {expected:?}"
                    ));
                }
            }
            (Err(error), Some(setting)) if error.setting == setting => {}
            (Err(error), _) => problems.push(format!(
                "{bindings:?}: the handler refuses the template's settings: {}: {}",
                error.setting, error.problem
            )),
            (Ok(_), Some(setting)) => problems.push(format!(
                "{bindings:?}: the handler should refuse {setting} (infra/handler-settings.json says so)"
            )),
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
