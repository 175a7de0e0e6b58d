//! The handler's stdout as JSON log lines: which lines are request lines or problems, and
//! finding a field wherever tracing put it.

use serde_json::Value;

/// Every line of `stdout` that is JSON.
pub(crate) fn json_lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .collect()
}

/// The request log lines of `stdout`: JSON lines that carry `latency_us`.
pub(crate) fn request_lines(stdout: &str) -> Vec<Value> {
    json_lines(stdout)
        .into_iter()
        .filter(|line| log_field(line, "latency_us").is_some())
        .collect()
}

/// The lines of `stdout` logged at level WARN or ERROR.
pub(crate) fn problem_lines(stdout: &str) -> Vec<Value> {
    json_lines(stdout)
        .into_iter()
        .filter(|line| matches!(line["level"].as_str(), Some("WARN" | "ERROR")))
        .collect()
}

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
