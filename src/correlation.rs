//! The join keys: what ties a request's log line to the Functions host's request item and to
//! API Management's.
//!
//! **What it owns.** Reading the two headers that carry them into [`Correlation`]:
//! - `X-Azure-Functions-InvocationId` → [`InvocationId`]: the host adds it to every request it
//!   forwards, after copying the client's headers, and its own request item carries the same id as
//!   `InvocationId` (docs/azure-behaviour.md §13). So the **last** value is the host's: the last
//!   header line, and in it the last comma-separated value (a header the client sent too reaches
//!   the handler as two values, joined or on two lines). Only a GUID in its usual form
//!   (`8-4-4-4-12` hex digits) counts; it is written in lower case, as .NET writes a GUID.
//! - `traceparent` → [`TraceId`]: W3C Trace Context, version `00` only — exactly one value of the
//!   form `00-<32 hex>-<16 hex>-<2 hex>`, lower-case hex, neither id all zeros. API Management
//!   sends it when its diagnostics correlate with W3C, and the trace id is then the gateway
//!   request's operation id (§13).
//!
//! Anything else leaves the key out. The values are fixed-size text, copied, never allocated.
//!
//! **What it trusts.** Nothing: both headers can come from the client. Neither key changes an
//! answer — they are only written into the log line — and a caller who sends its own can make
//! the line carry only its own trace id: the host's invocation id comes last whatever the client
//! sent, and a trace id is only ever a join key, never proof of who called.

use axum::http::HeaderMap;
use axum::http::header::{GetAll, HeaderName, HeaderValue};

/// `X-Azure-Functions-InvocationId`, as the host names it (header names are case-insensitive).
pub const INVOCATION_ID_HEADER: HeaderName =
    HeaderName::from_static("x-azure-functions-invocationid");

/// W3C Trace Context's `traceparent`.
pub const TRACEPARENT_HEADER: HeaderName = HeaderName::from_static("traceparent");

/// What joins one request's line to the host's and the gateway's records of it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Correlation {
    /// The host's invocation id: `InvocationId` on the host's request item.
    pub invocation_id: Option<InvocationId>,
    /// The W3C trace id: the operation id of the gateway's request item.
    pub trace_id: Option<TraceId>,
}

impl Correlation {
    /// The keys a request's headers carry.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        Self {
            invocation_id: InvocationId::from_values(headers.get_all(INVOCATION_ID_HEADER)),
            trace_id: TraceId::from_values(headers.get_all(TRACEPARENT_HEADER)),
        }
    }
}

/// A GUID as `8-4-4-4-12` lower-case hex digits.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct InvocationId([u8; 36]);

impl InvocationId {
    /// The last value of the header's lines, if it is a GUID.
    fn from_values(values: GetAll<'_, HeaderValue>) -> Option<Self> {
        let last_line = values.iter().next_back()?.as_bytes();
        let last_value = last_line.rsplit(|&b| b == b',').next()?;
        Self::parse(last_value.trim_ascii())
    }

    /// `text` if it is a GUID in its usual form, in any letter case.
    pub fn parse(text: &[u8]) -> Option<Self> {
        let mut id: [u8; 36] = text.try_into().ok()?;
        // Exactly the four hyphens, where they belong, and hex digits everywhere else: one table
        // look-up a byte, no branch (this runs on every request on Azure).
        let mut hyphens = 0;
        let mut all_hex = true;
        for b in &mut id {
            let digit = LOWER_HEX[usize::from(*b)];
            let hyphen = *b == b'-';
            hyphens += u8::from(hyphen);
            all_hex &= digit != 0 || hyphen;
            *b = if hyphen { b'-' } else { digit };
        }
        let placed = [id[8], id[13], id[18], id[23]] == [b'-'; 4];
        (all_hex && hyphens == 4 && placed).then_some(Self(id))
    }

    /// The id's text.
    pub fn as_str(&self) -> &str {
        // Only hex digits and `-` are ever stored.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The id's text as bytes: ASCII, nothing to escape in JSON.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// For each byte: its lower-case form if it is a hex digit (either case), else 0.
const LOWER_HEX: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = match b as u8 {
            digit @ (b'0'..=b'9' | b'a'..=b'f') => digit,
            upper @ b'A'..=b'F' => upper + (b'a' - b'A'),
            _ => 0,
        };
        b += 1;
    }
    table
};

impl std::fmt::Debug for InvocationId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("InvocationId").field(&self.as_str()).finish()
    }
}

/// A W3C trace id: 32 lower-case hex digits, not all zeros.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TraceId([u8; 32]);

impl TraceId {
    /// The trace id of the one `traceparent` value, if it is well formed.
    fn from_values(values: GetAll<'_, HeaderValue>) -> Option<Self> {
        let mut lines = values.iter();
        let only = lines.next()?;
        if lines.next().is_some() {
            return None;
        }
        Self::from_traceparent(only.as_bytes())
    }

    /// The trace id of a `traceparent` value, version `00`:
    /// `00-{trace id: 32 hex}-{parent id: 16 hex}-{flags: 2 hex}`, lower-case hex, neither id all
    /// zeros (W3C Trace Context Level 1, §3.2).
    pub fn from_traceparent(value: &[u8]) -> Option<Self> {
        let value: &[u8; 55] = value.try_into().ok()?;
        let trace_id: [u8; 32] = value[3..35].try_into().ok()?;
        let parent_id = &value[36..52];
        // Lower-case hex only: a byte is one when the table gives it back unchanged (0 is no
        // digit, and never in a header value).
        let lower_hex = |field: &[u8]| {
            field.iter().fold(true, |ok, &b| {
                ok & (LOWER_HEX[usize::from(b)] == b) & (b != 0)
            })
        };
        let well_formed = value[..3] == *b"00-"
            && value[35] == b'-'
            && value[52] == b'-'
            && lower_hex(&trace_id)
            && lower_hex(parent_id)
            && lower_hex(&value[53..])
            && trace_id != [b'0'; 32]
            && *parent_id != [b'0'; 16];
        well_formed.then_some(Self(trace_id))
    }

    /// The id's text.
    pub fn as_str(&self) -> &str {
        // Only lower-case hex digits are ever stored.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The id's text as bytes: ASCII, nothing to escape in JSON.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for TraceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("TraceId").field(&self.as_str()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GUID: &str = "0f8fad5b-d9cb-469f-a165-70867728950e";
    const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn headers(pairs: &[(&HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                (*name).clone(),
                HeaderValue::from_str(value).expect("a header value"),
            );
        }
        map
    }

    fn keys(pairs: &[(&HeaderName, &str)]) -> (Option<String>, Option<String>) {
        let found = Correlation::from_headers(&headers(pairs));
        (
            found.invocation_id.map(|id| id.as_str().to_owned()),
            found.trace_id.map(|id| id.as_str().to_owned()),
        )
    }

    #[test]
    fn both_keys_are_read_from_well_formed_headers() {
        assert_eq!(
            keys(&[
                (&INVOCATION_ID_HEADER, GUID),
                (&TRACEPARENT_HEADER, TRACEPARENT)
            ]),
            (
                Some(GUID.to_owned()),
                Some("4bf92f3577b34da6a3ce929d0e0e4736".to_owned())
            )
        );
        assert_eq!(keys(&[]), (None, None));
    }

    #[test]
    fn the_last_invocation_id_is_the_hosts_whether_joined_or_on_its_own_line() {
        let client = "11111111-2222-3333-4444-555555555555";
        for (description, pairs) in [
            (
                "two lines",
                vec![
                    (&INVOCATION_ID_HEADER, client),
                    (&INVOCATION_ID_HEADER, GUID),
                ],
            ),
            (
                "one line, joined",
                vec![(&INVOCATION_ID_HEADER, &*format!("{client}, {GUID}"))],
            ),
            (
                "the client's is not a GUID",
                vec![(&INVOCATION_ID_HEADER, &*format!("forged, {GUID}"))],
            ),
        ] {
            assert_eq!(keys(&pairs).0.as_deref(), Some(GUID), "{description}");
        }
        // The last value decides: a GUID before a malformed last value does not count.
        assert_eq!(
            keys(&[
                (&INVOCATION_ID_HEADER, GUID),
                (&INVOCATION_ID_HEADER, "not-a-guid")
            ])
            .0,
            None
        );
    }

    #[test]
    fn an_invocation_id_is_a_guid_in_its_usual_form_written_in_lower_case() {
        let upper = GUID.to_ascii_uppercase();
        assert_eq!(
            InvocationId::parse(upper.as_bytes()).map(|id| id.as_str().to_owned()),
            Some(GUID.to_owned())
        );
        for bad in [
            "",
            "0f8fad5bd9cb469fa16570867728950e",       // no hyphens
            "{0f8fad5b-d9cb-469f-a165-70867728950e}", // braces
            "0f8fad5b-d9cb-469f-a165-70867728950",    // one digit short
            "0f8fad5b-d9cb-469f-a165-70867728950e0",  // one digit long
            "0f8fad5b-d9cb-469f-a165-70867728950g",   // not hex
            "0f8fad5b-d9cb-469fa-165-70867728950e",   // hyphen misplaced
            "0f8fad5b-d9cb-469f-a165-7086772895\u{e9}", // not ASCII
        ] {
            assert!(InvocationId::parse(bad.as_bytes()).is_none(), "{bad:?}");
        }
    }

    /// The rules as plainly as they can be written, for the table-driven parsers to match.
    fn plain_guid(text: &[u8]) -> Option<String> {
        let ok = text.len() == 36
            && text.iter().enumerate().all(|(at, b)| {
                if matches!(at, 8 | 13 | 18 | 23) {
                    *b == b'-'
                } else {
                    b.is_ascii_hexdigit()
                }
            });
        ok.then(|| String::from_utf8_lossy(text).to_ascii_lowercase())
    }

    fn plain_trace_id(value: &[u8]) -> Option<String> {
        let text = std::str::from_utf8(value).ok()?;
        let parts: Vec<&str> = text.split('-').collect();
        let lower_hex = |p: &str, n: usize| {
            p.len() == n && p.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        };
        let ok = parts.len() == 4
            && parts[0] == "00"
            && lower_hex(parts[1], 32)
            && lower_hex(parts[2], 16)
            && lower_hex(parts[3], 2)
            && parts[1].bytes().any(|b| b != b'0')
            && parts[2].bytes().any(|b| b != b'0');
        ok.then(|| parts[1].to_owned())
    }

    type Parser = fn(&[u8]) -> Option<String>;

    #[test]
    fn the_parsers_agree_with_the_plain_rules_for_every_byte_at_every_position() {
        let guid: Parser = |t| InvocationId::parse(t).map(|i| i.as_str().to_owned());
        let trace: Parser = |t| TraceId::from_traceparent(t).map(|i| i.as_str().to_owned());
        let cases: [(&[u8], Parser, Parser); 2] = [
            (GUID.as_bytes(), guid, plain_guid),
            (TRACEPARENT.as_bytes(), trace, plain_trace_id),
        ];
        for (valid, parse, plain) in cases {
            let mut text = valid.to_vec();
            for at in 0..text.len() {
                let kept = text[at];
                for b in 0..=u8::MAX {
                    text[at] = b;
                    assert_eq!(
                        parse(&text),
                        plain(&text),
                        "{:?}",
                        String::from_utf8_lossy(&text)
                    );
                }
                text[at] = kept;
            }
        }
    }

    #[test]
    fn a_traceparent_counts_only_when_well_formed_and_alone() {
        let trace = |value: &str| {
            TraceId::from_traceparent(value.as_bytes()).map(|t| t.as_str().to_owned())
        };
        assert_eq!(
            trace(TRACEPARENT).as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert!(trace("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").is_some());
        for (description, bad) in [
            (
                "another version",
                "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            (
                "version ff",
                "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            (
                "upper-case hex",
                "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            ),
            (
                "all-zero trace id",
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            ),
            (
                "all-zero parent id",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            ),
            (
                "too short",
                "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            ),
            (
                "trailing data",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            ),
            (
                "wrong separator",
                "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            (
                "not hex",
                "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            ),
            (
                "flags not hex",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x",
            ),
            ("empty", ""),
        ] {
            assert_eq!(trace(bad), None, "{description}: {bad:?}");
        }
        // Two values are ambiguous, joined or on two lines.
        assert_eq!(
            keys(&[
                (&TRACEPARENT_HEADER, TRACEPARENT),
                (&TRACEPARENT_HEADER, TRACEPARENT)
            ])
            .1,
            None
        );
        assert_eq!(
            keys(&[(
                &TRACEPARENT_HEADER,
                &format!("{TRACEPARENT}, {TRACEPARENT}")
            )])
            .1,
            None
        );
    }
}
