//! `local.settings.json`, the settings file of local runs (Core Tools reads it for `func start`),
//! read with a JSON parser into the environment variables its `Values` set. It refuses what a
//! process environment cannot carry, naming the key: a value that is not a string (the schema
//! allows only strings), a name that is empty or holds `=` or NUL, a value that holds NUL, and
//! encrypted values (`IsEncrypted: true`: only Core Tools can decrypt them). Values are taken
//! exactly as JSON decodes them, quotes, backslashes and `=` included. Never prints a value.

use std::path::Path;

use serde_json::Value;

use crate::{Error, Result};

/// The environment variables a `local.settings.json` sets, sorted by name.
#[derive(Clone, PartialEq, Eq)]
pub struct LocalSettings {
    values: Vec<(String, String)>,
}

impl LocalSettings {
    /// Reads the settings file at `path`.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(Error::io(path))?;
        Self::parse(&text).map_err(|problem| Error::Input {
            what: path.display().to_string(),
            problem,
        })
    }

    /// Parses the text of a settings file; the error says what is wrong, without any value.
    pub fn parse(text: &str) -> Result<Self, String> {
        let doc: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        let doc = doc.as_object().ok_or("must be a JSON object")?;
        if doc.get("IsEncrypted") == Some(&Value::Bool(true)) {
            return Err(
                "IsEncrypted is true: only Core Tools (`func start`) can decrypt the values"
                    .to_owned(),
            );
        }
        let Some(values) = doc.get("Values") else {
            return Ok(Self { values: Vec::new() });
        };
        let values = values.as_object().ok_or("Values must be an object")?;
        let mut settings = Vec::with_capacity(values.len());
        for (name, value) in values {
            let Value::String(value) = value else {
                return Err(format!(
                    "Values.{name} must be a string (app settings are strings)"
                ));
            };
            if name.is_empty() || name.contains(['=', '\0']) {
                return Err(format!(
                    "Values.{name:?}: not a usable environment variable name"
                ));
            }
            if value.contains('\0') {
                return Err(format!(
                    "Values.{name}: a value cannot hold a NUL character"
                ));
            }
            settings.push((name.clone(), value.clone()));
        }
        settings.sort();
        Ok(Self { values: settings })
    }

    /// The `(name, value)` pairs, sorted by name.
    pub fn values(&self) -> &[(String, String)] {
        &self.values
    }
}

/// Names only: the values may hold keys.
impl std::fmt::Debug for LocalSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.values.iter().map(|(name, _)| name))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value<'a>(settings: &'a LocalSettings, name: &str) -> Option<&'a str> {
        settings
            .values()
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn the_example_selects_the_custom_runtime_and_a_loopback_allow_list() {
        let example = crate::project_root().join("local.settings.json.example");
        let settings = LocalSettings::read(&example).expect("the example parses");
        assert_eq!(value(&settings, "FUNCTIONS_WORKER_RUNTIME"), Some("custom"));
        assert!(value(&settings, "ALLOWED_IPS").is_some(), "{settings:?}");
    }

    /// What the awk reader this replaces got wrong: escapes, `=`, braces, several pairs on a line,
    /// and keys outside `Values`.
    #[test]
    fn values_are_decoded_exactly_and_only_from_values() {
        let text = r#"{"IsEncrypted": false, "Host": {"LocalHttpPort": "1"},
            "Values": {"A": "x=\"y\"\\z", "B": "caf\u00e9 }", "C": "", "D": "1", "E": "{\"n\": 2}"},
            "ConnectionStrings": {"Z": "no"}}"#;
        let settings = LocalSettings::parse(text).expect("parses");
        let expected: Vec<(String, String)> = [
            ("A", r#"x="y"\z"#),
            ("B", "café }"),
            ("C", ""),
            ("D", "1"),
            ("E", r#"{"n": 2}"#),
        ]
        .iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect();
        assert_eq!(settings.values(), expected);
    }

    #[test]
    fn a_file_without_values_sets_nothing() {
        let settings = LocalSettings::parse(r#"{"IsEncrypted": false}"#).expect("parses");
        assert!(settings.values().is_empty());
    }

    #[test]
    fn what_an_environment_cannot_carry_is_refused_naming_the_key() {
        let cases = [
            (
                r#"{"Values": {"PORT": 7071}}"#,
                "Values.PORT must be a string",
            ),
            (r#"{"Values": {"ON": true}}"#, "Values.ON must be a string"),
            (r#"{"Values": {"A=B": "1"}}"#, "Values.\"A=B\""),
            (r#"{"Values": {"": "1"}}"#, "Values.\"\""),
            (
                r#"{"Values": {"K": "a\u0000b"}}"#,
                "Values.K: a value cannot hold a NUL",
            ),
            (r#"{"Values": ["A"]}"#, "Values must be an object"),
            (
                r#"{"IsEncrypted": true, "Values": {}}"#,
                "IsEncrypted is true",
            ),
            (r#"["Values"]"#, "must be a JSON object"),
            (r#"{"Values": {"A": "1",}}"#, "not JSON"),
        ];
        for (text, expected) in cases {
            let problem = LocalSettings::parse(text).expect_err(text);
            assert!(problem.starts_with(expected), "{text}: {problem}");
        }
    }

    #[test]
    fn debug_shows_names_never_values() {
        let settings =
            LocalSettings::parse(r#"{"Values": {"IOTHUB_POLICY_KEY": "c2VjcmV0"}}"#).expect("ok");
        let shown = format!("{settings:?}");
        assert!(shown.contains("IOTHUB_POLICY_KEY") && !shown.contains("c2VjcmV0"));
    }
}
