//! `infra/handler-settings.json` classifies every setting the handler reads for the Bicep
//! templates: `set` (the template sets it), `default` (left at the handler's default) or `never`
//! (the template must not set it). This test holds that file to the handler's own list,
//! `config::SETTINGS`: the three groups are disjoint and together are exactly `SETTINGS`, so a
//! setting added to the handler fails here until someone decides what the deployment does with
//! it. `infra/check.sh` (make infra-check) then holds the Bicep `handlerSettings` to `set`.

use std::collections::BTreeSet;
use std::path::Path;

use iothub_sas_handler::config::{PLATFORM_SETTINGS, SEED_SETTINGS, SETTINGS};
use serde_json::Value;

fn group<'a>(doc: &'a Value, name: &str) -> BTreeSet<&'a str> {
    doc[name]
        .as_object()
        .unwrap_or_else(|| panic!("infra/handler-settings.json: `{name}` must be an object"))
        .iter()
        .map(|(setting, reason)| {
            let reason = reason.as_str().unwrap_or_default();
            assert!(
                reason.trim().len() >= 10,
                "infra/handler-settings.json: `{name}.{setting}` needs a reason"
            );
            setting.as_str()
        })
        .collect()
}

#[test]
fn infra_classifies_exactly_the_settings_the_handler_reads() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("infra/handler-settings.json");
    let text = std::fs::read_to_string(&path).expect("infra/handler-settings.json is readable");
    let doc: Value = serde_json::from_str(&text).expect("infra/handler-settings.json is JSON");

    let set = group(&doc, "set");
    let default = group(&doc, "default");
    let never = group(&doc, "never");

    for (a, b, left, right) in [
        ("set", "default", &set, &default),
        ("set", "never", &set, &never),
        ("default", "never", &default, &never),
    ] {
        let both: Vec<_> = left.intersection(right).collect();
        assert!(both.is_empty(), "in both `{a}` and `{b}`: {both:?}");
    }

    let classified: BTreeSet<&str> = set.iter().chain(&default).chain(&never).copied().collect();
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
    // Key Vault mode: the template can never put the key itself into app settings.
    assert!(never.contains("IOTHUB_POLICY_KEY"));
    assert!(set.contains("KEYVAULT_URI") && set.contains("AUTH_TENANT_ID"));
}
