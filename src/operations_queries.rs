//! The queries operators run cannot drift from the log: every field of the handler's lines that
//! the KQL in `docs/operations.md` and the alert rules in `infra/modules/alerts.bicep` read — as
//! `line.<field>`, the parsed line — is a field the handler writes, and every key `event` they
//! name is one it has.
//!
//! What the handler writes is taken from the writers themselves: a request line with every field
//! set, formatted by [`request_log`](crate::request_log), and one line of each key event
//! ([`key_events`](crate::secrets::key_events)) through the JSON subscriber
//! [`telemetry`](crate::telemetry) installs.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::correlation::{Correlation, InvocationId, TraceId};
use crate::hubs::HostForm;
use crate::params::{DeviceId, ModuleId, RegistrationId};
use crate::request_record::{CallerFacts, IssuedFacts, RequestOutcome};
use crate::sas::{Signer, SigningKey, TokenSigner};
use crate::secrets::IssuingKey;
use crate::secrets::handle::Withdrawal;
use crate::secrets::key_events::{KeyEvent, KeyLog};
use crate::secrets::refresh::Event;

const OPERATIONS: &str = include_str!("../docs/operations.md");
const ALERTS: &str = include_str!("../infra/modules/alerts.bicep");

/// The ```kusto blocks of a Markdown text.
fn kusto_blocks(markdown: &str) -> Vec<&str> {
    markdown
        .split("```kusto\n")
        .skip(1)
        .filter_map(|rest| rest.split_once("\n```").map(|(block, _)| block))
        .collect()
}

/// The `'''` multi-line strings of a Bicep text that read the handler's lines.
fn bicep_queries(bicep: &str) -> Vec<&str> {
    bicep
        .split("'''")
        .skip(1)
        .step_by(2)
        .filter(|text| text.contains("parse_json(message)"))
        .collect()
}

/// The fields a query reads from the parsed line: `line.<name>` and `line["<name>"]`, where
/// `line` is a whole word.
fn fields_read(query: &str) -> BTreeSet<String> {
    let mut fields = BTreeSet::new();
    for (at, _) in query.match_indices("line") {
        let before = query[..at].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let rest = &query[at + "line".len()..];
        let name: String = if let Some(rest) = rest.strip_prefix('.') {
            rest.chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect()
        } else if let Some(rest) = rest.strip_prefix("[\"") {
            rest.chars().take_while(|c| *c != '"').collect()
        } else {
            continue;
        };
        if !name.is_empty() {
            fields.insert(name);
        }
    }
    fields
}

/// The `"key_…"` string literals of a query: the key events it names.
fn events_named(query: &str) -> BTreeSet<String> {
    query
        .split('"')
        .skip(1)
        .step_by(2)
        .filter(|literal| literal.starts_with("key_"))
        .map(str::to_owned)
        .collect()
}

/// Every query that reads the handler's lines, with where it is.
fn queries() -> Vec<(String, &'static str)> {
    let docs = kusto_blocks(OPERATIONS)
        .into_iter()
        .enumerate()
        .map(|(i, q)| (format!("docs/operations.md kusto block {}", i + 1), q));
    let alerts = bicep_queries(ALERTS)
        .into_iter()
        .enumerate()
        .map(|(i, q)| (format!("infra/modules/alerts.bicep query {}", i + 1), q));
    docs.chain(alerts)
        .filter(|(_, query)| query.contains("parse_json(message)"))
        .collect()
}

/// The keys of every JSON object among `lines`.
fn keys(lines: &[Value]) -> BTreeSet<String> {
    lines
        .iter()
        .filter_map(Value::as_object)
        .flat_map(|object| object.keys().cloned())
        .collect()
}

/// A request line with every field the record can hold.
fn full_request_line() -> Value {
    let outcome = RequestOutcome {
        correlation: Correlation {
            invocation_id: InvocationId::parse(b"0f8fad5b-d9cb-469f-a165-70867728950e"),
            trace_id: TraceId::from_traceparent(
                b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
        },
        caller: CallerFacts {
            ip: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            denied: Some("caller not in ALLOWED_IPS"),
            client_cert: Some("ok"),
            auth: Some("ok"),
            caller_oid: Some("11111111-2222-3333-4444-555555555555".to_owned()),
            forwarded: Some("ok"),
            forwarded_kind: Some("subscription"),
            forwarded_caller: Some("sub-1".to_owned()),
        },
        device_id: DeviceId::parse("dev-1").ok(),
        module_id: ModuleId::parse("edge").ok(),
        registration_id: RegistrationId::parse("reg-1").ok(),
        hub: Some(Arc::from("contoso.azure-devices.net")),
        hub_form: Some(HostForm::Classic),
        scope_denied: None,
        key_unavailable: Some("too_old"),
        issued: Some(IssuedFacts {
            expires_on: "2026-12-01T15:00:00Z".to_owned(),
            signing_mode: "hub-policy",
            scope: Some(Arc::from("subscription:sub-1")),
            key_version: Some(Arc::from("0123456789abcdef")),
        }),
    };
    let line = crate::request_log::line_at("r", 200, 1, &outcome, SystemTime::now());
    serde_json::from_str(&line).expect("the request line is JSON")
}

/// Where the captured lines go.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// One line of each key event, written as the refresh loop writes them, with a hub.
fn key_event_lines() -> Vec<Value> {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber =
        crate::telemetry::json_lines("debug", move || writer.clone()).expect("a valid filter");
    tracing::subscriber::with_default(subscriber, || {
        let signing = SigningKey::from_base64("c2VjcmV0").expect("valid base64");
        let key = IssuingKey {
            signer: TokenSigner::HubPolicy(Signer::new("p", &signing)),
            version: Some(Arc::from("v1")),
            own_hub: None,
        };
        let error = "Key Vault answered 503";
        let mut log = KeyLog::new(Some(Duration::from_secs(10)));
        let now = tokio::time::Instant::now();
        let wait = Duration::from_secs(1);
        let events: [Event<'_, &str>; 6] = [
            Event::Loaded {
                key: &key,
                resumed: None,
            },
            Event::Withdrawn {
                failures: 1,
                error: &error,
                withdrawal: Withdrawal::Forbidden,
                first: true,
            },
            Event::Loaded {
                key: &key,
                resumed: Some(Withdrawal::Forbidden),
            },
            Event::Failed {
                failures: 1,
                error: &error,
                key_age: Some(Duration::from_secs(5)),
            },
            Event::Failed {
                failures: 2,
                error: &error,
                key_age: Some(Duration::from_secs(11)),
            },
            Event::Failed {
                failures: 3,
                error: &error,
                key_age: None,
            },
        ];
        for event in &events {
            log.line(event, now, wait)
                .write("iothub-key", Some("contoso.azure-devices.net"));
        }
    });
    let bytes = captured
        .0
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone();
    String::from_utf8(bytes)
        .expect("UTF-8")
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect()
}

#[test]
fn every_field_the_queries_and_alerts_read_is_one_the_handler_writes() {
    let request = full_request_line();
    let key_events = key_event_lines();
    let events_written: BTreeSet<String> = key_events
        .iter()
        .filter_map(|line| line["event"].as_str().map(str::to_owned))
        .collect();
    let all_events: BTreeSet<String> = KeyEvent::ALL
        .iter()
        .map(|event| event.as_str().to_owned())
        .collect();
    assert_eq!(events_written, all_events, "one line of each key event");
    let mut written = keys(&key_events);
    written.extend(keys(std::slice::from_ref(&request)));

    let queries = queries();
    let reading = queries
        .iter()
        .filter(|(_, query)| !fields_read(query).is_empty())
        .count();
    assert!(
        reading >= 9,
        "docs/operations.md's five queries and the four log alerts read the line: {reading} do"
    );
    let mut read_anywhere = BTreeSet::new();
    for (where_, query) in &queries {
        let read = fields_read(query);
        let unknown: Vec<&String> = read.difference(&written).collect();
        assert!(
            unknown.is_empty(),
            "{where_} reads {unknown:?}, which the handler never writes (it writes {written:?})"
        );
        // A literal ending in `_` is a prefix (`startswith "key_"`): it must begin some event.
        let named = events_named(query);
        let unknown_events: Vec<&String> = named
            .iter()
            .filter(|name| {
                let prefix_of_one =
                    name.ends_with('_') && all_events.iter().any(|e| e.starts_with(*name));
                !(all_events.contains(*name) || prefix_of_one)
            })
            .collect();
        assert!(
            unknown_events.is_empty(),
            "{where_} names the key events {unknown_events:?}, which do not exist"
        );
        read_anywhere.extend(read);
    }
    // The join keys are what the queries are for.
    for join_key in ["invocation_id", "trace_id", "key_age_seconds", "event"] {
        assert!(
            read_anywhere.contains(join_key),
            "no query reads {join_key}"
        );
    }
}

#[test]
fn the_field_scanner_reads_what_a_query_reads() {
    let query = r#"extend line = parse_json(message) | where line.status == 200 and tostring(line["trace_id"]) != ""
        | extend x = handler_lines.nothing, deadline = 3 | project line.event"#;
    assert_eq!(
        fields_read(query),
        ["event", "status", "trace_id"]
            .map(str::to_owned)
            .into_iter()
            .collect()
    );
    assert_eq!(
        events_named(r#"where e in ("key_loaded", "key_nope") and x == "other""#),
        ["key_loaded", "key_nope"]
            .map(str::to_owned)
            .into_iter()
            .collect()
    );
    assert_eq!(
        kusto_blocks("a\n```kusto\nq1\n```\nb\n```kusto\nq2\n```\n"),
        ["q1", "q2"]
    );
}
