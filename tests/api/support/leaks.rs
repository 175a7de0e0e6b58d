//! What the handler must never print, and the one scan for it. A secret counts as printed in
//! its own form and percent-encoded (as it would appear in a logged URL).

use super::sas::encode;

/// Values shorter than this are too likely to occur by chance in ordinary output to watch.
const SHORTEST_WATCHED: usize = 4;

/// Values that must never appear in anything the handler prints, each with what it is.
#[derive(Clone, Debug, Default)]
pub(crate) struct Secrets(Vec<(String, String)>);

impl Secrets {
    /// Watches `value`, described as `what` (the description, not the value, goes into failure
    /// messages). Values under four characters are not watched.
    pub(crate) fn add(&mut self, what: &str, value: &str) {
        if value.len() >= SHORTEST_WATCHED {
            self.0.push((what.to_owned(), value.to_owned()));
        }
    }

    /// [`Secrets::add`], by value.
    pub(crate) fn with(mut self, what: &str, value: &str) -> Secrets {
        self.add(what, value);
        self
    }

    /// What of this `output` holds, one line each ("the policy key (44 chars)", "… percent-encoded").
    pub(crate) fn found_in(&self, output: &str) -> Vec<String> {
        let mut found = Vec::new();
        for (what, value) in &self.0 {
            if output.contains(value.as_str()) {
                found.push(format!("the {what} ({} chars)", value.len()));
            } else if output.contains(&encode(value)) {
                found.push(format!(
                    "the {what} ({} chars), percent-encoded",
                    value.len()
                ));
            }
        }
        found
    }

    /// Asserts `output` holds none of the watched values.
    pub(crate) fn assert_absent_from(&self, output: &str, context: &str) {
        let found = self.found_in(output);
        assert!(
            found.is_empty(),
            "{context}: the handler printed {}\n{output}",
            found.join(", ")
        );
    }
}
