//! The handler's stdout as JSON log lines: finding a field wherever tracing put it.

use serde_json::Value;

/// A field of a JSON log line: at the top level, or else in a nested object (tracing's
/// `fields`, `span`, `spans`), depth first.
pub(crate) fn log_field<'a>(line: &'a Value, name: &str) -> Option<&'a Value> {
    match line {
        Value::Object(map) => map
            .get(name)
            .or_else(|| map.values().find_map(|v| log_field(v, name))),
        Value::Array(items) => items.iter().find_map(|v| log_field(v, name)),
        _ => None,
    }
}

/// A log field as text, whether it was written as a JSON string or number.
pub(crate) fn log_text(line: &Value, name: &str) -> Option<String> {
    match log_field(line, name)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}
