//! The invariants the fuzz targets check, one `check_*` function per target.
//!
//! This file is compiled three times: into each fuzz target (`fuzz/fuzz_targets/*.rs`, under
//! libFuzzer on nightly), into `tests/fuzz_corpus.rs` (which replays the committed corpus in
//! `fuzz/corpus/<target>/` on stable, in `cargo test`) and into `tests/properties.rs` (which uses
//! [`assert_token_valid`]). Every function takes arbitrary bytes and panics only when an invariant
//! of the code under test is violated; any other input is simply skipped.
//!
//! The expectations are written from the contract in README.md with the standard library's parsers
//! and an HMAC-SHA256 (`hmac-sha256`) independent of the RustCrypto one the handler signs with, so a
//! bug has to be made twice, differently, to go unnoticed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use axum::http::HeaderValue;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use iothub_sas_handler::allow_list::AllowList;
use iothub_sas_handler::client_ip::{CallerIpError, XffDepth, caller_ip};
use iothub_sas_handler::params::{
    DEVICE_ID_MAX_LEN, DeviceId, DeviceIdError, QueryError, RawQuery, Ttl, TtlError,
};
use iothub_sas_handler::sas::{Signer, SigningKey};
use percent_encoding::percent_decode_str;

/// The TCP peer used when the input has no `X-Forwarded-For` line; IPv4-mapped on purpose, so the
/// no-header path must canonicalise it too.
const PEER: IpAddr = IpAddr::V6(Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0xc000, 0x02c8));
/// [`PEER`] as the handler must report it.
const PEER_CANONICAL: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 200));

/// At most this many allow-list networks are probed per input, to keep each run fast.
const MAX_PROBED_NETWORKS: usize = 64;

/// Target `xff_allow_list`: `client_ip::caller_ip` and `AllowList::parse` / `contains`.
///
/// Input, split at `\n`: line 1 is `XFF_DEPTH` (decimal, 1–16; anything else means 1), line 2 is
/// `ALLOWED_IPS`, every further line is one `X-Forwarded-For` header line (lines that are not
/// valid header values are dropped; no further line means no header, so the peer is the caller).
///
/// Invariants: the caller is exactly the entry `XFF_DEPTH` from the right (that entry alone gives
/// the same answer, so nothing left of it matters), it is read in one of the README's forms, it is
/// never IPv4-mapped; the allow list accepts exactly the README's syntax and `contains` agrees with
/// a mask comparison at every network's bounds, just outside them, and in both IPv4 forms.
pub(crate) fn check_xff_allow_list(data: &[u8]) {
    let mut lines = data.split(|&b| b == b'\n');
    let depth = lines
        .next()
        .and_then(|line| std::str::from_utf8(line).ok())
        .and_then(|text| text.trim().parse::<u8>().ok())
        .and_then(XffDepth::new)
        .unwrap_or_default();
    let allowed = String::from_utf8_lossy(lines.next().unwrap_or_default()).into_owned();
    let xff: Vec<HeaderValue> = lines
        .filter_map(|line| HeaderValue::from_bytes(line).ok())
        .collect();

    let caller = caller_ip(&xff, depth, PEER);
    check_caller(&xff, depth, caller);

    let list = AllowList::parse(&allowed);
    let reference = reference_allow_list(&allowed);
    match (&list, &reference) {
        (Ok(list), Some(reference)) => {
            let mut probes: Vec<IpAddr> = caller.ok().into_iter().collect();
            probes.extend(xff_entries(&xff).filter_map(reference_entry));
            if let Reference::Networks(networks) = reference {
                for &(network, prefix) in networks.iter().take(MAX_PROBED_NETWORKS) {
                    probes.extend(bounds_and_neighbours(network, prefix));
                }
            }
            for ip in probes {
                check_contains(list, reference, ip);
            }
        }
        (Err(_), None) => {}
        (list, reference) => panic!(
            "ALLOWED_IPS={allowed:?}: AllowList::parse gave {list:?}, the README's syntax says {}",
            if reference.is_some() {
                "valid"
            } else {
                "invalid"
            }
        ),
    }
}

/// Target `device_id`: `params::DeviceId::parse` over arbitrary text.
///
/// Invariants: accepted exactly when 1–128 bytes from IoT Hub's character set, not dots only, with
/// the error naming the first rule broken (empty, too long, bad character, dots only); an accepted
/// id is the input unchanged and never contains `/`.
pub(crate) fn check_device_id(data: &[u8]) {
    check_device_id_text(&String::from_utf8_lossy(data));
}

/// Target `query`: `params::RawQuery::parse`, then `Ttl::parse` and `DeviceId::parse` on what it
/// found. The input is the raw query string (after `?`).
///
/// Invariants: a query is accepted exactly when `deviceid` and `ttl` (any case) each appear at
/// most once and decode (form encoding, `+` is a space) to UTF-8; the values are those decodings;
/// a refusal names a key that really is repeated or undecodable. `ttl` (or, when absent, the
/// whole input) is accepted by `Ttl::parse` exactly when it is all digits and its value lies in
/// `[60, max]`, for several `max`, and the error names the rule broken.
pub(crate) fn check_query(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let parsed = RawQuery::parse(&text);

    let mut device_ids = Vec::new();
    let mut ttls = Vec::new();
    for pair in text.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if key.eq_ignore_ascii_case("deviceid") {
            device_ids.push(reference_form_decode(value));
        } else if key.eq_ignore_ascii_case("ttl") {
            ttls.push(reference_form_decode(value));
        }
    }
    let values = |name: &str| match name {
        "deviceid" => &device_ids,
        "ttl" => &ttls,
        other => panic!("RawQuery::parse named an unknown key {other:?} for {text:?}"),
    };
    match &parsed {
        Ok(query) => {
            assert!(
                device_ids.len() <= 1 && ttls.len() <= 1,
                "query {text:?} has a repeated key but was accepted"
            );
            assert_eq!(
                query.device_id.as_deref(),
                device_ids
                    .first()
                    .map(|v| v.as_deref().expect("accepted, so UTF-8")),
                "deviceid of {text:?}"
            );
            assert_eq!(
                query.ttl.as_deref(),
                ttls.first()
                    .map(|v| v.as_deref().expect("accepted, so UTF-8")),
                "ttl of {text:?}"
            );
        }
        Err(QueryError::Repeated(name)) => assert!(
            values(name).len() >= 2,
            "query {text:?} refused as repeating {name}"
        ),
        Err(QueryError::NotUtf8(name)) => assert!(
            values(name).iter().any(Option::is_none),
            "query {text:?} refused as {name} not being UTF-8"
        ),
    }

    let ttl_text = match &parsed {
        Ok(RawQuery { ttl: Some(ttl), .. }) => ttl.as_ref(),
        _ => text.as_ref(),
    };
    // Config caps the bound at 31,536,000; the parser must hold at every bound, `u32::MAX` included
    // (an overflowing value is too long, never saturated into range).
    for max in [Ttl::MIN, 3_600, 86_400, 31_536_000, u32::MAX - 1, u32::MAX] {
        let bound = Ttl::bound(max).expect("every listed max is at least Ttl::MIN");
        assert_eq!(
            Ttl::parse(ttl_text, bound).map(Ttl::seconds),
            reference_ttl(ttl_text, max),
            "ttl {ttl_text:?} with max {max}"
        );
    }
    if let Ok(RawQuery {
        device_id: Some(id),
        ..
    }) = &parsed
    {
        check_device_id_text(id);
    }
}

/// Target `sas_token`: `sas::SigningKey::from_base64`, `Signer::new` and `Signer::sign`.
///
/// Input, five `\n`-separated fields: base64 key, hub host name, policy name, device id, expiry
/// (decimal Unix seconds). Inputs whose key, device id or expiry is refused are skipped.
///
/// Invariants: see [`assert_token_valid`]; also `SasToken::expires_at` is the expiry asked for.
pub(crate) fn check_sas_token(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let fields: Vec<&str> = text.splitn(5, '\n').collect();
    let &[key_text, hub, policy, device, expiry] = fields.as_slice() else {
        return;
    };
    let Ok(key) = SigningKey::from_base64(key_text) else {
        return;
    };
    let key_bytes = BASE64
        .decode(key_text.trim())
        .expect("SigningKey::from_base64 accepted it, so it is base64");
    let (Ok(device), Ok(expiry)) = (DeviceId::parse(device), expiry.parse::<u64>()) else {
        return;
    };
    let token = Signer::new(policy, &key).sign(hub, &device, expiry);
    assert_eq!(token.expires_at, expiry, "SasToken::expires_at");
    assert_token_valid(
        &token.token,
        hub,
        policy,
        device.as_str(),
        expiry,
        &key_bytes,
    );
}

/// Everything a device token must be, checked from its text alone:
/// `SharedAccessSignature sr=…&sig=…&se=…&skn=…`, in that order, where `sr`, `sig` and `skn` are
/// percent-encoded exactly (every byte outside `A–Z a–z 0–9 - . _ ~` as `%XX` with uppercase hex,
/// and nothing else), `sr` decodes to `{hub}/devices/{device}`, `se` is `expires_at` in decimal,
/// `skn` decodes to `policy`, and `sig` decodes to the base64 HMAC-SHA256 under `key` of
/// `sr + "\n" + se`, computed here by an implementation independent of the handler's.
pub(crate) fn assert_token_valid(
    token: &str,
    hub: &str,
    policy: &str,
    device: &str,
    expires_at: u64,
    key: &[u8],
) {
    let fields = token
        .strip_prefix("SharedAccessSignature ")
        .expect("the token starts with `SharedAccessSignature `");
    let fields: Vec<&str> = fields.split('&').collect();
    let [sr, sig, se, skn] = ["sr", "sig", "se", "skn"].map(|name| {
        fields
            .iter()
            .position(|field| field.split_once('=').is_some_and(|(n, _)| n == name))
            .map(|at| (at, &fields[at][name.len() + 1..]))
            .unwrap_or_else(|| panic!("the token has no `{name}` field: {fields:?}"))
    });
    assert_eq!(
        [sr.0, sig.0, se.0, skn.0, fields.len()],
        [0, 1, 2, 3, 4],
        "the token is exactly sr, sig, se, skn in that order"
    );
    let (sr, sig, se, skn) = (sr.1, sig.1, se.1, skn.1);
    for (name, value) in [("sr", sr), ("sig", sig), ("skn", skn)] {
        assert!(
            is_exactly_encoded(value),
            "`{name}` is not exactly percent-encoded: {value:?}"
        );
    }
    assert_eq!(
        percent_decode_str(sr).collect::<Vec<u8>>(),
        format!("{hub}/devices/{device}").into_bytes(),
        "`sr` decodes to the device's resource"
    );
    assert_eq!(
        percent_decode_str(skn).collect::<Vec<u8>>(),
        policy.as_bytes(),
        "`skn` decodes to the policy name"
    );
    assert_eq!(se, expires_at.to_string(), "`se` is the expiry");
    let sig = percent_decode_str(sig)
        .decode_utf8()
        .expect("`sig` decodes to base64 text");
    let sig = BASE64.decode(sig.as_bytes()).expect("`sig` is base64");
    let want = hmac_sha256::HMAC::mac(format!("{sr}\n{se}"), key);
    assert!(
        sig == want,
        "`sig` is not HMAC-SHA256(key, sr + \"\\n\" + se)"
    );
}

/// A byte IoT Hub allows in a device id (the README's list, written out again on purpose).
pub(crate) fn is_iot_hub_device_id_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.%_*?!(),:=@$'".contains(&b)
}

fn check_device_id_text(text: &str) {
    let want = if text.is_empty() {
        Err(DeviceIdError::Missing)
    } else if text.len() > DEVICE_ID_MAX_LEN {
        Err(DeviceIdError::TooLong)
    } else if !text.bytes().all(is_iot_hub_device_id_byte) {
        Err(DeviceIdError::BadCharacter)
    } else if text.chars().all(|c| c == '.') {
        Err(DeviceIdError::DotsOnly)
    } else {
        Ok(text)
    };
    let got = DeviceId::parse(text);
    assert_eq!(
        got.as_ref().map(DeviceId::as_str).map_err(|e| *e),
        want,
        "device id {text:?}"
    );
    assert!(
        got.is_err() || !text.contains('/'),
        "a device id with `/` would widen the token's resource: {text:?}"
    );
}

/// Checks `caller_ip`'s answer against the entries counted independently.
fn check_caller(xff: &[HeaderValue], depth: XffDepth, caller: Result<IpAddr, CallerIpError>) {
    if xff.is_empty() {
        assert_eq!(caller, Ok(PEER_CANONICAL), "no X-Forwarded-For: the peer");
        return;
    }
    let entries: Vec<&[u8]> = xff_entries(xff).collect();
    let Some(at) = entries.len().checked_sub(depth.get()) else {
        assert_eq!(
            caller,
            Err(CallerIpError::TooFewEntries {
                found: entries.len()
            }),
            "{} entries, depth {}",
            entries.len(),
            depth.get()
        );
        return;
    };
    let chosen = entries[at];
    let alone = HeaderValue::from_bytes(chosen).expect("part of a header value is a header value");
    assert_eq!(
        caller_ip([&alone], XffDepth::default(), PEER),
        caller,
        "entries left of the one at depth {} changed the answer ({:?})",
        depth.get(),
        String::from_utf8_lossy(chosen)
    );
    let want = reference_entry(chosen)
        .map(|ip| ip.to_canonical())
        .ok_or(CallerIpError::Unparsable);
    assert_eq!(caller, want, "entry {:?}", String::from_utf8_lossy(chosen));
}

/// Every non-empty, trimmed `X-Forwarded-For` entry across the lines, in order.
fn xff_entries(xff: &[HeaderValue]) -> impl Iterator<Item = &[u8]> {
    xff.iter()
        .flat_map(|line| line.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|entry| !entry.is_empty())
}

/// The README's entry forms, read with the standard library: `1.2.3.4`, `1.2.3.4:5678`,
/// `[2001:db8::1]`, `[2001:db8::1]:443`, `2001:db8::1` (no zone ids).
fn reference_entry(entry: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(entry).ok()?;
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Some(inside) = text.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
        return inside.parse::<Ipv6Addr>().ok().map(IpAddr::V6);
    }
    match text.parse::<SocketAddr>().ok()? {
        SocketAddr::V4(v4) => Some(IpAddr::V4(*v4.ip())),
        SocketAddr::V6(v6) if !text.contains('%') => Some(IpAddr::V6(*v6.ip())),
        SocketAddr::V6(_) => None,
    }
}

/// `ALLOWED_IPS` as the README describes it.
enum Reference {
    /// `*`.
    Everyone,
    /// Canonical network addresses (IPv4-mapped entries as IPv4) and prefix lengths.
    Networks(Vec<(IpAddr, u8)>),
}

/// The README's `ALLOWED_IPS` syntax, or `None` when the text breaks it.
fn reference_allow_list(text: &str) -> Option<Reference> {
    let entries: Vec<&str> = text
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .collect();
    if entries == ["*"] {
        return Some(Reference::Everyone);
    }
    if entries.is_empty() || entries.contains(&"*") {
        return None;
    }
    let mut networks = Vec::with_capacity(entries.len());
    for entry in entries {
        let (address, prefix) = match entry.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (entry, None),
        };
        let address: IpAddr = address.parse().ok()?;
        let prefix = match prefix {
            None => None,
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                Some(p.parse::<u8>().ok()?)
            }
            Some(_) => return None,
        };
        let (network, prefix) = match address {
            IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => (
                address.to_canonical(),
                prefix.map_or(Some(32), |p| p.checked_sub(96))?,
            ),
            IpAddr::V4(_) => (address, prefix.unwrap_or(32)),
            IpAddr::V6(_) => (address, prefix.unwrap_or(128)),
        };
        if prefix > width(network) || !host_bits_zero(network, prefix) {
            return None;
        }
        networks.push((network, prefix));
    }
    Some(Reference::Networks(networks))
}

fn check_contains(list: &AllowList, reference: &Reference, ip: IpAddr) {
    let want = match reference {
        Reference::Everyone => true,
        Reference::Networks(networks) => networks
            .iter()
            .any(|&(network, prefix)| in_network(ip.to_canonical(), network, prefix)),
    };
    assert_eq!(list.contains(ip), want, "contains({ip})");
    if let IpAddr::V4(v4) = ip {
        let mapped = IpAddr::V6(v4.to_ipv6_mapped());
        assert_eq!(list.contains(mapped), want, "contains({mapped})");
    }
}

fn width(ip: IpAddr) -> u8 {
    if ip.is_ipv4() { 32 } else { 128 }
}

/// The address as a 128-bit integer (IPv4 in the low 32 bits) and its family's width.
fn bits(ip: IpAddr) -> (u128, u8) {
    match ip {
        IpAddr::V4(v4) => (u128::from(u32::from(v4)), 32),
        IpAddr::V6(v6) => (u128::from(v6), 128),
    }
}

fn host_bits_zero(network: IpAddr, prefix: u8) -> bool {
    let (value, width) = bits(network);
    let host_bits = width - prefix;
    let host_mask = if host_bits == 128 {
        u128::MAX
    } else {
        (1u128 << host_bits) - 1
    };
    value & host_mask == 0
}

fn in_network(ip: IpAddr, network: IpAddr, prefix: u8) -> bool {
    if ip.is_ipv4() != network.is_ipv4() {
        return false;
    }
    let ((a, width), (n, _)) = (bits(ip), bits(network));
    let host_bits = u32::from(width - prefix);
    (a ^ n).checked_shr(host_bits).unwrap_or(0) == 0
}

/// The first and last address of the network and the ones just outside it (wrapping).
fn bounds_and_neighbours(network: IpAddr, prefix: u8) -> [IpAddr; 4] {
    let (start, width) = bits(network);
    let host_bits = u32::from(width - prefix);
    let host_mask = if host_bits == 128 {
        u128::MAX
    } else {
        (1u128 << host_bits) - 1
    };
    let end = start | host_mask;
    let make = |value: u128| match network {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(
            u32::try_from(value).expect("an IPv4 value stays within 32 bits"),
        )),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(value)),
    };
    let family_max = if width == 32 {
        u128::from(u32::MAX)
    } else {
        u128::MAX
    };
    [
        make(start),
        make(end),
        make(if start == 0 { family_max } else { start - 1 }),
        make(if end == family_max { 0 } else { end + 1 }),
    ]
}

/// Form decoding (`+` is a space, then percent-decoding); `None` when not UTF-8.
fn reference_form_decode(value: &str) -> Option<String> {
    let bytes: Vec<u8> = percent_decode_str(&value.replace('+', " ")).collect();
    String::from_utf8(bytes).ok()
}

/// `Ttl::parse` as the README states it, with the value read without any integer overflow.
fn reference_ttl(text: &str, max: u32) -> Result<u32, TtlError> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(TtlError::NotAnInteger);
    }
    let digits = text.trim_start_matches('0');
    // Eleven or more significant digits is more than any u32.
    let value = if digits.len() > 10 {
        u64::MAX
    } else {
        digits
            .bytes()
            .fold(0u64, |v, d| v * 10 + u64::from(d - b'0'))
    };
    if value < u64::from(Ttl::MIN) {
        Err(TtlError::TooShort)
    } else if value > u64::from(max) {
        Err(TtlError::TooLong { max })
    } else {
        Ok(u32::try_from(value).expect("at most max, so a u32"))
    }
}

/// Exactly the `sas` percent-encoding: only unreserved bytes and `%XX` with uppercase hex, and no
/// `%XX` that stands for an unreserved byte.
fn is_exactly_encoded(text: &str) -> bool {
    let unreserved = |b: u8| b.is_ascii_alphanumeric() || b"-._~".contains(&b);
    let hex = |b: u8| match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    };
    let bytes = text.as_bytes();
    let mut at = 0;
    while at < bytes.len() {
        match bytes[at] {
            b if unreserved(b) => at += 1,
            b'%' => {
                let escaped = bytes
                    .get(at + 1..at + 3)
                    .and_then(|pair| Some(hex(pair[0])? * 16 + hex(pair[1])?));
                match escaped {
                    Some(b) if !unreserved(b) => at += 3,
                    _ => return false,
                }
            }
            _ => return false,
        }
    }
    true
}

/// The hub host names the `device_scopes` target builds documents from: three hubs (listed in
/// one form, named in patterns in either form and any case), one hub never listed, and text that
/// is no host name at all.
const SCOPE_HUB_NAMES: [&str; 3] = ["h0", "h1", "h2"];
/// Pattern characters: letters in both cases (so case matters), a digit, two id punctuation
/// characters, `*` (anywhere, so misplaced ones must be refused) and a space (no id has one).
const SCOPE_PATTERN_BYTES: &[u8] = b"aAbB1-.* ";
/// The keys rules are written under: roles and object ids (GUIDs, in two letter cases).
const SCOPE_KEYS: [&str; 6] = [
    "role:R0",
    "role:R1",
    "role:r0",
    "0000000a-0000-4000-8000-000000000000",
    "0000000A-0000-4000-8000-000000000000",
    "0000000b-0000-4000-8000-000000000000",
];

/// Target `device_scopes`: `scope::Scopes::parse` of a `DEVICE_SCOPES` document with hubs, and
/// every decision `Scopes::allows` makes, against a plain scan of the same rules.
///
/// Input: byte 0 picks the hubs (1–3 listed hubs, with or without a `*.azure-devices.net` suffix
/// entry); the rest is read as rules, each a key byte, a pattern count and per pattern a
/// qualifier byte (none, `*/`, a listed hub in either form and case, an unlisted hub, garbage)
/// and a body of pattern bytes. The document is written as JSON from that.
///
/// Invariants: the document is accepted exactly when the README's rules say so (no repeated key
/// — GUIDs in any case are one key —, no empty list or pattern, `*` only last, only id
/// characters, a qualified pattern names a hub served, an unqualified one only with one hub); an
/// accepted one allows a caller an id on a hub (or, for a registration, on any hub) exactly when
/// one of the caller's rules has a pattern for that hub (or every hub) matching the id, and the
/// key it names is one of those rules' keys.
pub(crate) fn check_device_scopes(data: &[u8]) {
    use iothub_sas_handler::auth::bearer::Principal;
    use iothub_sas_handler::caller::Caller;
    use iothub_sas_handler::hubs::HubList;
    use iothub_sas_handler::scope::Scopes;

    let Some((&setup, mut rest)) = data.split_first() else {
        return;
    };
    let hub_count = usize::from(setup % 3) + 1;
    let with_suffix = setup & 0x80 != 0;
    let mut listed: Vec<String> = SCOPE_HUB_NAMES[..hub_count]
        .iter()
        .map(|name| format!("{name}.azure-devices.net"))
        .collect();
    if with_suffix {
        listed.push("*.azure-devices.net".to_owned());
    }
    let hubs = HubList::parse(&listed.join(","), "IOTHUB_HOSTNAMES").expect("a valid hub list");
    let several = hub_count > 1 || with_suffix;

    // Rules, as written and as the plain model reads them.
    struct PlainPattern {
        /// `None`: every hub; `Some(h)`: hub `h` (canonical).
        hub: Option<String>,
        body: String,
    }
    let mut rules: Vec<(String, Vec<String>)> = Vec::new();
    let mut next = || -> Option<u8> {
        let (&byte, tail) = rest.split_first()?;
        rest = tail;
        Some(byte)
    };
    while let (Some(key), Some(count)) = (next(), next()) {
        let key = SCOPE_KEYS[usize::from(key) % SCOPE_KEYS.len()].to_owned();
        let mut patterns = Vec::new();
        for _ in 0..count % 5 {
            let Some(qualifier) = next() else { break };
            let length = next().unwrap_or(0) % 6;
            let mut body = String::new();
            for _ in 0..length {
                let byte = next().unwrap_or(0);
                body.push(char::from(
                    SCOPE_PATTERN_BYTES[usize::from(byte) % SCOPE_PATTERN_BYTES.len()],
                ));
            }
            let hub = |index: u8, device_form: bool, upper: bool| {
                let name = SCOPE_HUB_NAMES[usize::from(index) % 3];
                let host = if device_form {
                    format!("{name}.device.azure-devices.net")
                } else {
                    format!("{name}.azure-devices.net")
                };
                if upper { host.to_uppercase() } else { host }
            };
            let written = match qualifier % 8 {
                0 | 1 => body,
                2 => format!("*/{body}"),
                3..=5 => format!(
                    "{}/{body}",
                    hub(qualifier / 8, qualifier & 0x40 != 0, qualifier & 0x80 != 0)
                ),
                6 => format!("zz.azure-devices.net/{body}"),
                _ => format!("not a host/{body}"),
            };
            patterns.push(written);
        }
        rules.push((key, patterns));
    }
    let text = format!(
        "{{{}}}",
        rules
            .iter()
            .map(|(key, patterns)| format!(
                "{}: [{}]",
                serde_json_string(key),
                patterns
                    .iter()
                    .map(|p| serde_json_string(p))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );

    // The plain model: validity, then the rules in a form a scan reads.
    let plain = || -> Option<Vec<(String, Vec<PlainPattern>)>> {
        let mut seen: Vec<String> = Vec::new();
        let mut model = Vec::new();
        for (key, patterns) in &rules {
            let identity = if key.starts_with("role:") {
                key.clone()
            } else {
                key.to_ascii_lowercase()
            };
            if seen.contains(&identity) || patterns.is_empty() {
                return None;
            }
            seen.push(identity);
            let mut read = Vec::new();
            for written in patterns {
                let (hub, body) = match written.split_once('/') {
                    None if several => return None,
                    None => (None, written.as_str()),
                    Some(("*", body)) => (None, body),
                    Some((host, body)) => {
                        let host = host.to_ascii_lowercase();
                        let name = host.split('.').next().unwrap_or_default();
                        let is_host = host == format!("{name}.azure-devices.net")
                            || host == format!("{name}.device.azure-devices.net");
                        let listed_hub = SCOPE_HUB_NAMES[..hub_count].contains(&name);
                        let in_suffix = with_suffix && !name.contains(' ');
                        if !is_host || !(listed_hub || in_suffix) {
                            return None;
                        }
                        (Some(format!("{name}.azure-devices.net")), body)
                    }
                };
                let stem = body.strip_suffix('*').unwrap_or(body);
                if body.is_empty() || stem.contains('*') || stem.contains(' ') {
                    return None;
                }
                read.push(PlainPattern {
                    hub,
                    body: body.to_owned(),
                });
            }
            model.push((key.clone(), read));
        }
        Some(model)
    };
    let parsed = Scopes::parse(&text, Some(&hubs));
    let model = match (parsed, plain()) {
        (Err(_), None) => return,
        (Ok(scopes), Some(model)) => (scopes, model),
        (parsed, model) => panic!(
            "DEVICE_SCOPES={text} with hubs {listed:?}: parse gave {}, the README's rules say {}",
            if parsed.is_ok() { "Ok" } else { "Err" },
            if model.is_some() { "valid" } else { "invalid" }
        ),
    };
    let (scopes, model) = model;

    // Probes: every pattern's body and near misses, on every hub and on none.
    let mut ids: Vec<String> = vec!["a".to_owned(), "A".to_owned(), "x".to_owned()];
    for (_, patterns) in &model {
        for pattern in patterns {
            let stem = pattern.body.trim_end_matches('*');
            if !stem.is_empty() {
                ids.push(stem.to_owned());
                ids.push(stem.to_ascii_uppercase());
                ids.push(format!("{stem}a"));
                ids.push(stem[..stem.len() - 1].to_owned());
            }
        }
    }
    ids.retain(|id| !id.is_empty());
    let mut probe_hubs: Vec<Option<String>> = vec![None, Some("zz.azure-devices.net".to_owned())];
    probe_hubs.extend(
        SCOPE_HUB_NAMES
            .iter()
            .map(|name| Some(format!("{name}.azure-devices.net"))),
    );
    let callers: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (vec!["0000000a-0000-4000-8000-000000000000"], vec![]),
        (vec!["0000000B-0000-4000-8000-000000000000"], vec!["R0"]),
        (vec![], vec!["R1", "r0"]),
        (vec![], vec!["R0", "R1"]),
    ];
    for (principal_ids, roles) in &callers {
        let caller = Caller {
            ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            certificate: None,
            principal: Some(Principal {
                app_only: true,
                object_id: principal_ids.first().map(|id| (*id).to_owned()),
                app_id: None,
                authorized_party: None,
                roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            }),
            forwarded: None,
        };
        let holds = |key: &str| match key.strip_prefix("role:") {
            Some(role) => roles.contains(&role),
            None => principal_ids.iter().any(|id| id.eq_ignore_ascii_case(key)),
        };
        for hub in &probe_hubs {
            for id in &ids {
                let allowing: Vec<&str> = model
                    .iter()
                    .filter(|(key, patterns)| {
                        holds(key)
                            && patterns.iter().any(|p| {
                                let on_hub = match (&p.hub, hub) {
                                    (None, _) | (Some(_), None) => true,
                                    (Some(wanted), Some(hub)) => wanted == hub,
                                };
                                let matches = match p.body.strip_suffix('*') {
                                    Some(prefix) => id.starts_with(prefix),
                                    None => *id == p.body,
                                };
                                on_hub && matches
                            })
                    })
                    .map(|(key, _)| key.as_str())
                    .collect();
                let decided = scopes.allows(&caller, hub.as_deref(), id);
                match decided {
                    Ok(key) => assert!(
                        allowing.contains(&&**key),
                        "{text}: {principal_ids:?} {roles:?} on {hub:?} for {id:?} was allowed by `{key}`, the scan finds {allowing:?}"
                    ),
                    Err(_) => assert!(
                        allowing.is_empty(),
                        "{text}: {principal_ids:?} {roles:?} on {hub:?} for {id:?} was refused, the scan allows it by {allowing:?}"
                    ),
                }
            }
        }
    }
}

/// `text` as a JSON string literal.
fn serde_json_string(text: &str) -> String {
    let mut out = String::from('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
