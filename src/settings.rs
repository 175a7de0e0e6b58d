//! Reading app settings: the one small type every layer parses its own settings through.
//!
//! **What it owns.** How a setting is looked up, not what it means: an empty or all-whitespace
//! value counts as unset; a setting may have an older name from the seed function that is read
//! when the current one is unset ([`Name`]); whole numbers are range-checked; and every problem is a
//! [`SettingError`] that names the setting. Each layer (`allow_list`, `auth`, `secrets`, `limits`,
//! …) defines its own settings type with a `from_lookup(&Lookup)` that uses this; `config` only
//! calls them in turn.
//!
//! **What it trusts.** Nothing it reads. It imports nothing from the crate, so every layer can
//! depend on it without a cycle, and it reads through a function so unit tests never touch the
//! process environment.

/// A setting that is missing or malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{setting}: {problem}")]
pub struct SettingError {
    /// The setting's name, as the operator would look for it.
    pub setting: &'static str,
    /// What is wrong with it. Never contains a secret's value.
    pub problem: String,
}

impl SettingError {
    /// `setting` is wrong because of `problem`.
    pub fn new(setting: &'static str, problem: impl Into<String>) -> Self {
        Self {
            setting,
            problem: problem.into(),
        }
    }
}

/// A setting and, when the seed function had one, its older name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Name {
    /// The name this project documents.
    pub current: &'static str,
    /// The seed function's name, read when `current` is unset.
    pub seed: Option<&'static str>,
}

impl Name {
    /// A setting without an older name.
    pub const fn new(current: &'static str) -> Self {
        Self {
            current,
            seed: None,
        }
    }

    /// A setting the seed function called `seed`.
    pub const fn with_seed(current: &'static str, seed: &'static str) -> Self {
        Self {
            current,
            seed: Some(seed),
        }
    }

    /// The error for this setting being absent.
    pub fn missing(&self) -> SettingError {
        let problem = match self.seed {
            Some(seed) => format!("is required (or the seed function's `{seed}`)"),
            None => "is required".to_owned(),
        };
        SettingError::new(self.current, problem)
    }
}

/// The settings as a lookup function (a name → its value, if set).
pub struct Lookup<'a>(&'a dyn Fn(&str) -> Option<String>);

impl<'a> Lookup<'a> {
    /// Look settings up through `lookup`.
    pub fn new(lookup: &'a dyn Fn(&str) -> Option<String>) -> Self {
        Self(lookup)
    }

    /// The value of `name`; empty and all-whitespace values count as unset.
    pub fn get(&self, name: &str) -> Option<String> {
        (self.0)(name).filter(|v| !v.trim().is_empty())
    }

    /// Whether `name` has a value.
    pub fn is_set(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// The value and the name it was found under: the current name first, then the seed's.
    pub fn optional(&self, name: &Name) -> Option<(&'static str, String)> {
        let current = self.get(name.current).map(|v| (name.current, v));
        current.or_else(|| name.seed.and_then(|seed| self.get(seed).map(|v| (seed, v))))
    }

    /// Like [`Lookup::optional`], but absence is an error.
    pub fn required(&self, name: &Name) -> Result<(&'static str, String), SettingError> {
        self.optional(name).ok_or_else(|| name.missing())
    }

    /// A whole number in `[min, max]`, or `default` when unset.
    pub fn number<T>(
        &self,
        setting: &'static str,
        default: T,
        min: T,
        max: T,
    ) -> Result<T, SettingError>
    where
        T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
    {
        let Some(text) = self.get(setting) else {
            return Ok(default);
        };
        text.trim()
            .parse::<T>()
            .ok()
            .filter(|n| (min..=max).contains(n))
            .ok_or_else(|| {
                SettingError::new(
                    setting,
                    format!("must be a whole number from {min} to {max}"),
                )
            })
    }

    /// A comma-separated list; empty items are dropped. `None` when unset.
    pub fn list(&self, setting: &str) -> Option<Vec<String>> {
        self.get(setting).map(|text| {
            text.split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(str::to_owned)
                .collect()
        })
    }
}

/// The entries of a JSON object whose values are `V`, in order. A key given twice (which
/// `serde_json` would resolve silently, keeping the last), anything but one object, or anything
/// after it is an error. The error text is `serde_json`'s, which may quote a value: callers whose
/// values are secret must not pass it on.
pub fn json_object<V: serde::de::DeserializeOwned>(text: &str) -> Result<Vec<(String, V)>, String> {
    use serde::de::{Deserializer as _, MapAccess, Visitor};
    use std::marker::PhantomData;

    struct Entries<V>(PhantomData<V>);

    impl<'de, V: serde::de::DeserializeOwned> Visitor<'de> for Entries<V> {
        type Value = Vec<(String, V)>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a JSON object")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut entries: Vec<(String, V)> = Vec::new();
            while let Some((key, value)) = map.next_entry::<String, V>()? {
                if entries.iter().any(|(seen, _)| *seen == key) {
                    return Err(serde::de::Error::custom(format!(
                        "key `{key}` appears twice"
                    )));
                }
                entries.push((key, value));
            }
            Ok(entries)
        }
    }

    let mut deserializer = serde_json::Deserializer::from_str(text);
    let entries = (&mut deserializer)
        .deserialize_map(Entries(PhantomData))
        .map_err(|e| e.to_string())?;
    deserializer.end().map_err(|e| e.to_string())?;
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup_of(
        pairs: &'static [(&'static str, &'static str)],
    ) -> impl Fn(&str) -> Option<String> {
        move |name| {
            pairs
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn empty_values_are_unset_and_seed_names_are_fallbacks() {
        let read = lookup_of(&[("A", "  "), ("old_b", "7"), ("B", "")]);
        let settings = Lookup::new(&read);
        assert_eq!(settings.get("A"), None);
        let b = Name::with_seed("B", "old_b");
        assert_eq!(settings.optional(&b), Some(("old_b", "7".to_owned())));
        assert_eq!(
            settings.required(&Name::with_seed("C", "old_c")),
            Err(SettingError::new(
                "C",
                "is required (or the seed function's `old_c`)"
            ))
        );
    }

    #[test]
    fn numbers_are_range_checked_and_name_the_setting() {
        let read = lookup_of(&[("N", " 42 "), ("BIG", "1000"), ("WORD", "many")]);
        let settings = Lookup::new(&read);
        assert_eq!(settings.number("N", 1u32, 1, 100), Ok(42));
        assert_eq!(settings.number("UNSET", 5u32, 1, 100), Ok(5));
        for name in ["BIG", "WORD"] {
            let error = settings
                .number(name, 1u32, 1, 100)
                .expect_err("out of range or not a number");
            assert_eq!(error.setting, name);
            assert_eq!(error.problem, "must be a whole number from 1 to 100");
        }
    }

    #[test]
    fn json_objects_keep_their_order_and_refuse_repeated_keys() {
        assert_eq!(
            json_object::<String>(r#" {"b": "1", "a": "2"} "#),
            Ok(vec![("b".into(), "1".into()), ("a".into(), "2".into())])
        );
        for bad in [r#"{"a": "1", "a": "2"}"#, "[]", r#"{"a": 1}"#, "{} {}", ""] {
            assert!(json_object::<String>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn lists_drop_empty_items() {
        let read = lookup_of(&[("L", " a, ,b ,")]);
        let settings = Lookup::new(&read);
        assert_eq!(
            settings.list("L"),
            Some(vec!["a".to_owned(), "b".to_owned()])
        );
        assert_eq!(settings.list("UNSET"), None);
    }
}
