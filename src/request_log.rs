//! The request log line: one JSON object on stdout per request, written without `tracing`.
//!
//! **What it owns.** The line's format and writing it. The format is exactly that of the JSON
//! lines [`telemetry`](crate::telemetry) writes for every other event — `timestamp` (RFC 3339,
//! microseconds, UTC), `level`, `message`, the fields, `target` — so one query in Application
//! Insights reads them all:
//!
//! ```text
//! {"timestamp":"2026-11-23T08:37:55.486186Z","level":"INFO","message":"request","route":"/api/devices/{deviceId}/sas-token","status":200,"latency_us":34,"caller_ip":"127.0.0.1","device_id":"dev-1","target":"request"}
//! ```
//!
//! Fields without a value are left out, as `tracing` leaves out an empty `Option`. The join keys
//! come right after the latency when the request carried them: `invocation_id` (the Functions
//! host's `InvocationId`) and `trace_id` (the W3C trace id: API Management's operation id) — see
//! [`correlation`](crate::correlation). An issued token's line is its audit record: besides the ids it carries `hub` (the hub's canonical name —
//! its classic host name, whichever form was asked for) and `hub_form` (`classic` or `device`: the
//! host name in the token), `scope` (the `DEVICE_SCOPES` key that allowed it), `signing_mode`,
//! `key_version` (the Key Vault secret version) and `expires_on` — never the token or a key.
//! A gateway's line also names the caller behind it (`forwarded_kind`, `forwarded_caller`: a
//! subscription id, a certificate thumbprint or a token's object id — never the forwarded token)
//! besides the gateway's own `caller_oid`.
//!
//! **Why by hand.** The line is written for every request, and through `tracing`'s JSON formatter
//! it was the largest part of a request's user-space cost (about 17,000 instructions and a dozen
//! allocations of ~62,000 and 44; `bench/profile.sh`, docs/benchmarks.md). Here it is built in one
//! buffer reused by the thread, the date and time to the second are formatted once per second,
//! and it reaches stdout in one `write` — the same locked, line-buffered stdout the other events
//! use, so lines never interleave. `RUST_LOG` still decides: the line is written when the target
//! `request` is enabled at `info` (`RUST_LOG=warn` or `request=off` turns it off).
//!
//! **What it trusts.** Its caller to pass only fields that are safe to log: a route template, the
//! caller's address, validated ids, fixed verdict strings, an object id, a scope key, a secret
//! version — never a key, a token, the URI or a header. Strings are JSON-escaped here whatever they contain.

use std::cell::RefCell;
use std::io::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::hubs::HostForm;
use crate::params::{DeviceId, ModuleId, RegistrationId};
use crate::request_record::RequestOutcome;

/// Whether `RUST_LOG` lets request lines through (target `request`, level `info`). Cheap: after
/// the first call it is a cached answer of the installed filter.
pub fn enabled() -> bool {
    tracing::enabled!(target: "request", tracing::Level::INFO)
}

/// Write one request's line on stdout, if request lines are enabled: its route template (or
/// `unmatched`), status, latency from reaching the router to leaving it, and `outcome` (the
/// [request record](crate::request_record)). A failed
/// write (stdout closed) is ignored: a request is never failed for its log line. Not inlined, so
/// profiles (`bench/profile.sh`) can name its cost.
#[inline(never)]
pub fn write(route: &'static str, status: u16, latency_us: u64, outcome: &RequestOutcome) {
    if !enabled() {
        return;
    }
    LINE.with_borrow_mut(|line| {
        line.format(route, status, latency_us, outcome, SystemTime::now());
        let _ = std::io::stdout().lock().write_all(&line.bytes);
    });
}

thread_local! {
    static LINE: RefCell<LineBuffer> = RefCell::new(LineBuffer::default());
}

/// The thread's line buffer, overwritten by each line, and the `YYYY-MM-DDTHH:MM:SS` text of
/// the second the last line was written in.
#[derive(Debug, Default)]
struct LineBuffer {
    bytes: Vec<u8>,
    second: Option<u64>,
    second_text: [u8; 19],
}

/// 9999-12-31T23:59:59Z, the last second RFC 3339 can write (and `humantime` formats).
const LAST_RFC3339_SECOND: u64 = 253_402_300_799;

impl LineBuffer {
    /// Replace the buffer's contents with one request's line, stamped `now`, ending in `\n`.
    fn format(
        &mut self,
        route: &'static str,
        status: u16,
        latency_us: u64,
        outcome: &RequestOutcome,
        now: SystemTime,
    ) {
        let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
        let second = since_epoch.as_secs().min(LAST_RFC3339_SECOND);
        if self.second != Some(second) {
            let text = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(second))
                .to_string();
            // "YYYY-MM-DDTHH:MM:SSZ": keep all but the `Z`; the microseconds go before it.
            self.second_text.copy_from_slice(&text.as_bytes()[..19]);
            self.second = Some(second);
        }
        let out = &mut self.bytes;
        out.clear();
        out.extend_from_slice(b"{\"timestamp\":\"");
        out.extend_from_slice(&self.second_text);
        out.push(b'.');
        push_micros(out, since_epoch.subsec_micros());
        out.extend_from_slice(b"Z\",\"level\":\"INFO\",\"message\":\"request\",\"route\":");
        push_json_string(out, route);
        out.extend_from_slice(b",\"status\":");
        out.extend_from_slice(itoa::Buffer::new().format(status).as_bytes());
        out.extend_from_slice(b",\"latency_us\":");
        out.extend_from_slice(itoa::Buffer::new().format(latency_us).as_bytes());
        // Hex digits and `-` only: nothing to escape.
        let correlation = &outcome.correlation;
        if let Some(id) = &correlation.invocation_id {
            out.extend_from_slice(b",\"invocation_id\":\"");
            out.extend_from_slice(id.as_bytes());
            out.push(b'"');
        }
        if let Some(id) = &correlation.trace_id {
            out.extend_from_slice(b",\"trace_id\":\"");
            out.extend_from_slice(id.as_bytes());
            out.push(b'"');
        }
        if let Some(ip) = outcome.caller.ip {
            // An address's text is digits, hex, `.` and `:`: nothing to escape.
            out.extend_from_slice(b",\"caller_ip\":\"");
            let _ = write!(out, "{ip}");
            out.push(b'"');
        }
        let issued = outcome.issued.as_ref();
        let optional = [
            (
                "device_id",
                outcome.device_id.as_ref().map(DeviceId::as_str),
            ),
            (
                "module_id",
                outcome.module_id.as_ref().map(ModuleId::as_str),
            ),
            (
                "registration_id",
                outcome.registration_id.as_ref().map(RegistrationId::as_str),
            ),
            ("hub", outcome.hub.as_deref()),
            ("hub_form", outcome.hub_form.map(HostForm::as_str)),
            ("denied", outcome.caller.denied.or(outcome.scope_denied)),
            ("client_cert", outcome.caller.client_cert),
            ("auth", outcome.caller.auth),
            ("caller_oid", outcome.caller.caller_oid.as_deref()),
            ("forwarded", outcome.caller.forwarded),
            ("forwarded_kind", outcome.caller.forwarded_kind),
            (
                "forwarded_caller",
                outcome.caller.forwarded_caller.as_deref(),
            ),
            ("scope", issued.and_then(|i| i.scope.as_deref())),
            ("signing_mode", issued.map(|i| i.signing_mode)),
            ("key_version", issued.and_then(|i| i.key_version.as_deref())),
            ("expires_on", issued.map(|i| i.expires_on.as_str())),
            ("key", outcome.key_unavailable),
        ];
        for (name, value) in optional {
            if let Some(value) = value {
                out.extend_from_slice(b",\"");
                out.extend_from_slice(name.as_bytes());
                out.extend_from_slice(b"\":");
                push_json_string(out, value);
            }
        }
        out.extend_from_slice(b",\"target\":\"request\"}\n");
    }
}

/// The line [`write`] prints for these values at `now`, for the tests that read its format.
#[cfg(test)]
pub(crate) fn line_at(
    route: &'static str,
    status: u16,
    latency_us: u64,
    outcome: &RequestOutcome,
    now: SystemTime,
) -> String {
    let mut buffer = LineBuffer::default();
    buffer.format(route, status, latency_us, outcome, now);
    String::from_utf8(buffer.bytes).expect("the line is UTF-8")
}

/// `micros` (0–999,999) as exactly six digits.
fn push_micros(out: &mut Vec<u8>, micros: u32) {
    let mut digits = [b'0'; 6];
    let mut rest = micros.min(999_999);
    for digit in digits.iter_mut().rev() {
        *digit = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    out.extend_from_slice(&digits);
}

/// `value` as a JSON string, quotes included (serde_json's escaping).
fn push_json_string(out: &mut Vec<u8>, value: &str) {
    // Writing a `&str` into a `Vec` cannot fail.
    let _ = serde_json::to_writer(&mut *out, value);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::correlation::{Correlation, InvocationId, TraceId};
    use crate::request_record::{CallerFacts, IssuedFacts};
    use serde_json::{Value, json};
    use std::sync::Arc;

    fn parse(line: &str) -> Value {
        assert!(
            line.ends_with('\n'),
            "one line, newline-terminated: {line:?}"
        );
        assert_eq!(line.matches('\n').count(), 1, "exactly one line: {line:?}");
        serde_json::from_str(line).expect("the line is JSON")
    }

    #[test]
    fn a_full_line_is_one_json_object_with_the_telemetry_keys_in_order() {
        let now = UNIX_EPOCH + Duration::from_micros(1_795_000_000_123_456);
        let outcome = RequestOutcome {
            caller: CallerFacts {
                ip: Some("2001:db8::7".parse().expect("an address")),
                denied: Some("caller not in ALLOWED_IPS"),
                client_cert: Some("ok"),
                auth: Some("ok"),
                caller_oid: Some("11111111-2222-3333-4444-555555555555".to_owned()),
                forwarded: Some("ok"),
                forwarded_kind: Some("subscription"),
                forwarded_caller: Some("Fleet A".to_owned()),
            },
            device_id: Some(DeviceId::parse("dev-1").expect("a valid id")),
            correlation: Correlation {
                invocation_id: InvocationId::parse(b"0F8FAD5B-D9CB-469F-A165-70867728950E"),
                trace_id: TraceId::from_traceparent(
                    b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                ),
            },
            ..RequestOutcome::default()
        };
        let line = line_at("/api/devices/{deviceId}/sas-token", 200, 34, &outcome, now);
        let expected_timestamp = humantime::format_rfc3339_micros(now).to_string();
        assert_eq!(
            parse(&line),
            json!({
                "timestamp": expected_timestamp,
                "level": "INFO",
                "message": "request",
                "route": "/api/devices/{deviceId}/sas-token",
                "status": 200,
                "latency_us": 34,
                "invocation_id": "0f8fad5b-d9cb-469f-a165-70867728950e",
                "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
                "caller_ip": "2001:db8::7",
                "device_id": "dev-1",
                "denied": "caller not in ALLOWED_IPS",
                "client_cert": "ok",
                "auth": "ok",
                "caller_oid": "11111111-2222-3333-4444-555555555555",
                "forwarded": "ok",
                "forwarded_kind": "subscription",
                "forwarded_caller": "Fleet A",
                "target": "request",
            })
        );
        // The order `tracing`'s JSON lines use: timestamp, level, message, fields, target.
        let keys = [
            "timestamp",
            "level",
            "message",
            "route",
            "status",
            "latency_us",
            "invocation_id",
            "trace_id",
            "caller_ip",
            "device_id",
            "denied",
            "client_cert",
            "auth",
            "caller_oid",
            "forwarded",
            "forwarded_kind",
            "forwarded_caller",
            "target",
        ];
        let positions: Vec<usize> = keys
            .iter()
            .map(|key| line.find(&format!("\"{key}\":")).expect("key present"))
            .collect();
        assert!(positions.is_sorted(), "keys out of order: {line}");
    }

    #[test]
    fn an_issued_token_line_is_its_audit_record() {
        let outcome = RequestOutcome {
            device_id: Some(DeviceId::parse("dev-1").expect("a valid id")),
            module_id: Some(ModuleId::parse("edge").expect("a valid id")),
            registration_id: Some(RegistrationId::parse("reg-1").expect("a valid id")),
            hub: Some(Arc::from("contoso-eu.azure-devices.net")),
            hub_form: Some(HostForm::Device),
            issued: Some(IssuedFacts {
                expires_on: "2026-12-01T15:00:00Z".to_owned(),
                signing_mode: "hub-policy",
                scope: Some(Arc::from("role:Fleet.A")),
                key_version: Some(Arc::from("0123456789abcdef0123456789abcdef")),
            }),
            ..RequestOutcome::default()
        };
        let line = line_at("r", 200, 1, &outcome, SystemTime::now());
        let value = parse(&line);
        for (key, want) in [
            ("device_id", "dev-1"),
            ("module_id", "edge"),
            ("registration_id", "reg-1"),
            ("hub", "contoso-eu.azure-devices.net"),
            ("hub_form", "device"),
            ("scope", "role:Fleet.A"),
            ("signing_mode", "hub-policy"),
            ("key_version", "0123456789abcdef0123456789abcdef"),
            ("expires_on", "2026-12-01T15:00:00Z"),
        ] {
            assert_eq!(value[key], want, "{key} in {line}");
        }
        let positions: Vec<usize> = [
            "device_id",
            "module_id",
            "registration_id",
            "hub",
            "hub_form",
            "scope",
            "signing_mode",
            "key_version",
            "expires_on",
            "target",
        ]
        .iter()
        .map(|key| line.find(&format!("\"{key}\":")).expect("key present"))
        .collect();
        assert!(positions.is_sorted(), "keys out of order: {line}");

        let refused = RequestOutcome {
            scope_denied: Some("device outside the caller's DEVICE_SCOPES"),
            ..RequestOutcome::default()
        };
        let value = parse(&line_at("r", 403, 1, &refused, SystemTime::now()));
        assert_eq!(value["denied"], "device outside the caller's DEVICE_SCOPES");
    }

    #[test]
    fn empty_fields_are_left_out() {
        let line = line_at(
            "unmatched",
            404,
            8,
            &RequestOutcome::default(),
            SystemTime::now(),
        );
        let value = parse(&line);
        let keys: Vec<&String> = value.as_object().expect("an object").keys().collect();
        assert_eq!(
            keys.len(),
            7,
            "timestamp, level, message, route, status, latency_us, target: {line}"
        );
        assert_eq!(value["route"], "unmatched");
        assert_eq!(value["status"], 404);
    }

    #[test]
    fn strings_are_escaped_whatever_they_contain() {
        // The object id comes from a signed token, but is still the caller's text.
        let hostile = "a\"b\\c\nd\u{1}e</script>é";
        let outcome = RequestOutcome {
            caller: CallerFacts {
                caller_oid: Some(hostile.to_owned()),
                ..CallerFacts::default()
            },
            ..RequestOutcome::default()
        };
        let value = parse(&line_at("r", 200, 1, &outcome, SystemTime::now()));
        assert_eq!(value["caller_oid"], hostile);
    }

    #[test]
    fn the_timestamp_matches_humantime_to_the_microsecond_across_seconds_and_days() {
        // One buffer across instants, so the once-per-second cache must be refreshed correctly.
        let mut buffer = LineBuffer::default();
        let instants = [
            0,
            999_999,
            1_000_000,
            1_795_000_000_000_000,
            1_795_000_000_999_999,
            1_795_000_001_000_000,
            1_795_000_001_000_001,
            1_795_049_999_500_000, // next day
            951_782_400_000_000,   // 2000-02-29
            253_402_300_799_999_999,
        ];
        for micros in instants {
            let now = UNIX_EPOCH + Duration::from_micros(micros);
            buffer.format("r", 200, 1, &RequestOutcome::default(), now);
            let value: Value = serde_json::from_slice(&buffer.bytes).expect("JSON");
            assert_eq!(
                value["timestamp"],
                humantime::format_rfc3339_micros(now).to_string(),
                "at {micros} µs since the epoch"
            );
        }
    }

    #[test]
    fn instants_outside_rfc3339_do_not_panic() {
        for now in [
            UNIX_EPOCH - Duration::from_secs(1),
            UNIX_EPOCH + Duration::from_secs(LAST_RFC3339_SECOND + 10),
        ] {
            let value = parse(&line_at("r", 200, 1, &RequestOutcome::default(), now));
            assert!(value["timestamp"].as_str().is_some_and(|t| t.len() == 27));
        }
    }

    #[test]
    fn extreme_numbers_are_written_in_full() {
        let line = line_at(
            "r",
            u16::MAX,
            u64::MAX,
            &RequestOutcome::default(),
            SystemTime::now(),
        );
        let value = parse(&line);
        assert_eq!(value["status"], u16::MAX);
        assert_eq!(value["latency_us"], u64::MAX);
    }
}
