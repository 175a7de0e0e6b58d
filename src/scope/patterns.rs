//! One rule's device id patterns, and whether an id matches them.
//!
//! **What it owns.** The pattern syntax — an exact id, a prefix followed by one trailing `*`, or
//! `*` alone — and matching. Exact ids sit in a hash set. Prefixes are sorted, with every prefix
//! that a shorter one covers removed: what is left is prefix-free, so the greatest prefix not above
//! an id is the only one that can be a prefix of it, and one binary search finds it.
//!
//! **What it trusts.** Nothing: a pattern that could not mean what it says is refused.

use std::collections::HashSet;

use crate::params::{DEVICE_ID_MAX_LEN, is_device_id_byte};

/// The patterns, prepared for matching.
#[derive(Debug, Default)]
pub struct Patterns {
    /// `*` was given.
    everything: bool,
    exact: HashSet<String>,
    /// Sorted, and no entry is a prefix of another.
    prefixes: Vec<String>,
}

/// One pattern, as matching sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pattern<'p> {
    /// `*`.
    Everything,
    /// An exact id.
    Exact(&'p str),
    /// A prefix (the pattern without its `*`).
    Prefix(&'p str),
}

/// Why a list of patterns was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PatternError {
    /// No patterns at all.
    NoPatterns,
    /// `""`.
    Empty,
    /// `a*b`, `**`, `*a`: a `*` anywhere but last.
    StarNotLast(String),
    /// Longer than a device id can be, or with a character no device id has.
    Impossible(String),
}

impl Patterns {
    /// Parse a rule's patterns.
    pub fn parse(patterns: &[String]) -> Result<Self, PatternError> {
        if patterns.is_empty() {
            return Err(PatternError::NoPatterns);
        }
        let mut parsed = Self::default();
        let mut prefixes = Vec::new();
        for pattern in patterns {
            let (body, is_prefix) = match pattern.strip_suffix('*') {
                Some(body) => (body, true),
                None => (pattern.as_str(), false),
            };
            if pattern.is_empty() {
                return Err(PatternError::Empty);
            }
            if body.contains('*') {
                return Err(PatternError::StarNotLast(pattern.clone()));
            }
            // `*` is a device id character too, but a pattern allows it only last (above).
            if body.len() > DEVICE_ID_MAX_LEN || !body.bytes().all(is_device_id_byte) {
                return Err(PatternError::Impossible(pattern.clone()));
            }
            match (is_prefix, body) {
                (true, "") => parsed.everything = true,
                (true, prefix) => prefixes.push(prefix.to_owned()),
                (false, id) => {
                    parsed.exact.insert(id.to_owned());
                }
            }
        }
        prefixes.sort_unstable();
        prefixes.dedup();
        for prefix in prefixes {
            // Sorted, so a prefix that covers this one is the last one kept, if any.
            if !parsed
                .prefixes
                .last()
                .is_some_and(|last| prefix.starts_with(last.as_str()))
            {
                parsed.prefixes.push(prefix);
            }
        }
        Ok(parsed)
    }

    /// The patterns (prefixes that a shorter one covers are left out).
    pub fn iter(&self) -> impl Iterator<Item = Pattern<'_>> {
        self.everything
            .then_some(Pattern::Everything)
            .into_iter()
            .chain(self.exact.iter().map(|id| Pattern::Exact(id)))
            .chain(self.prefixes.iter().map(|prefix| Pattern::Prefix(prefix)))
    }

    /// Whether `id` matches one of the patterns.
    pub fn matches(&self, id: &str) -> bool {
        if self.everything || self.exact.contains(id) {
            return true;
        }
        let below = self
            .prefixes
            .partition_point(|prefix| prefix.as_str() <= id);
        below > 0 && id.starts_with(self.prefixes[below - 1].as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patterns(list: &[&str]) -> Result<Patterns, PatternError> {
        Patterns::parse(&list.iter().map(|p| (*p).to_owned()).collect::<Vec<_>>())
    }

    #[test]
    fn overlapping_prefixes_never_hide_a_match() {
        let set = patterns(&["a*", "ab*", "b", "ac*", "abc*"]).expect("valid patterns");
        for (id, allowed) in [
            ("a", true),
            ("ab", true),
            ("abz", true),
            ("ac", true),
            ("b", true),
            ("ba", false),
            ("", false),
            ("A", false),
        ] {
            assert_eq!(set.matches(id), allowed, "{id:?}");
        }
    }

    /// Against a plain scan of every pattern, over ids sharing prefixes with the patterns.
    #[test]
    fn matching_agrees_with_a_scan_of_every_pattern() {
        let list = [
            "x*", "xa*", "xab", "y-1*", "y-10", "z", "za*", "zab*", "q.r*",
        ];
        let set = patterns(&list).expect("valid patterns");
        let scan = |id: &str| {
            list.iter().any(|p| match p.strip_suffix('*') {
                Some(prefix) => id.starts_with(prefix),
                None => id == *p,
            })
        };
        for id in [
            "x", "xa", "xab", "xb", "y-1", "y-10", "y-2", "y", "z", "za", "zab", "zb", "q.r", "q.",
            "q", "a", "y-100", "zaz",
        ] {
            assert_eq!(set.matches(id), scan(id), "{id:?}");
        }
    }

    #[test]
    fn patterns_that_cannot_mean_what_they_say_are_refused() {
        assert_eq!(patterns(&[]).err(), Some(PatternError::NoPatterns));
        assert_eq!(patterns(&["a", ""]).err(), Some(PatternError::Empty));
        for bad in ["a*b", "**", "*a"] {
            assert_eq!(
                patterns(&[bad]).err(),
                Some(PatternError::StarNotLast(bad.to_owned()))
            );
        }
        let long = "x".repeat(129);
        for bad in ["a b", "a/b", long.as_str()] {
            assert_eq!(
                patterns(&[bad]).err(),
                Some(PatternError::Impossible(bad.to_owned()))
            );
        }
        assert!(patterns(&[&"x".repeat(128), "*"]).is_ok());
    }
}
