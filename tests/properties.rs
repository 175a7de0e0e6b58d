//! Properties of the allow list, the token and the caller's address, over random inputs.
//!
//! * Every address inside an allowed CIDR is allowed and none outside, for IPv4 and IPv6 prefixes
//!   of every length, whichever IPv4 form (plain or IPv4-mapped) the entry and the address use.
//! * A token signed for any valid device id under any key verifies with that key (an HMAC
//!   independent of the handler's) and its `sr` decodes to the requested resource.
//! * Nothing left of the entry `XFF_DEPTH` from the right changes which caller is found, nor
//!   whether it is allowed — not even addresses that are on the allow list.
//! * Every subscription id API Management accepts, escaped as its policy escapes it
//!   (`Uri.EscapeDataString`: RFC 3986's — or RFC 2396's — unreserved characters kept, `%XX` for
//!   every other byte), reads back as itself in any hex case, and two of them joined by the
//!   Functions host never read as one.
//!
//! proptest's default 256 cases per property; a failure is shrunk to a minimal input.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use axum::http::HeaderValue;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use iothub_sas_handler::allow_list::AllowList;
use iothub_sas_handler::auth::gateway::SubscriptionId;
use iothub_sas_handler::client_ip::{XffDepth, caller_ip};
use iothub_sas_handler::params::{DEVICE_ID_MAX_LEN, DeviceId};
use iothub_sas_handler::sas::{Signer, SigningKey};
use proptest::prelude::*;
use proptest::sample::{Index, select};

#[allow(dead_code)] // tests/fuzz_corpus.rs uses the per-target checks; this file the token check
#[path = "../fuzz/checks.rs"]
mod checks;

/// The network mask of an IPv4 prefix length.
fn v4_mask(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

/// The network mask of an IPv6 prefix length.
fn v6_mask(prefix: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
}

proptest! {
    #[test]
    fn every_ipv4_address_inside_an_allowed_cidr_is_allowed_and_none_outside(
        address in any::<u32>(),
        prefix in 0u8..=32,
        host in any::<u32>(),
        flip in any::<Index>(),
        random in any::<u32>(),
        mapped_entry in any::<bool>(),
    ) {
        let mask = v4_mask(prefix);
        let network = address & mask;
        let entry = if mapped_entry {
            format!("::ffff:{}/{}", Ipv4Addr::from(network), prefix + 96)
        } else {
            format!("{}/{prefix}", Ipv4Addr::from(network))
        };
        let list = AllowList::parse(&entry).expect("a CIDR without host bits parses");
        let allowed = |ip: u32| {
            let ip = Ipv4Addr::from(ip);
            let plain = list.contains(IpAddr::V4(ip));
            let mapped = list.contains(IpAddr::V6(ip.to_ipv6_mapped()));
            assert_eq!(plain, mapped, "{ip} and its IPv4-mapped form differ under {entry}");
            plain
        };

        let inside = network | (host & !mask);
        prop_assert!(allowed(inside), "{} inside {entry}", Ipv4Addr::from(inside));
        if prefix > 0 {
            // Flipping one network bit of an inside address lands just outside the network.
            let outside = inside ^ (1 << (31 - flip.index(usize::from(prefix))));
            prop_assert!(!allowed(outside), "{} outside {entry}", Ipv4Addr::from(outside));
        }
        prop_assert_eq!(allowed(random), random & mask == network, "{} under {}", Ipv4Addr::from(random), entry);
        let v6 = Ipv6Addr::from(u128::from(random) << 64 | 1);
        prop_assert!(!list.contains(IpAddr::V6(v6)), "IPv6 {v6} under IPv4 {entry}");
    }

    #[test]
    fn every_ipv6_address_inside_an_allowed_cidr_is_allowed_and_none_outside(
        address in any::<u128>(),
        prefix in 0u8..=128,
        host in any::<u128>(),
        flip in any::<Index>(),
        random in any::<u128>(),
    ) {
        let mask = v6_mask(prefix);
        let network = address & mask;
        // An IPv4-mapped network is an IPv4 entry (covered above).
        prop_assume!(Ipv6Addr::from(network).to_ipv4_mapped().is_none());
        let entry = format!("{}/{prefix}", Ipv6Addr::from(network));
        let list = AllowList::parse(&entry).expect("a CIDR without host bits parses");
        let allowed = |ip: u128| list.contains(IpAddr::V6(Ipv6Addr::from(ip)));
        let mapped = |ip: u128| Ipv6Addr::from(ip).to_ipv4_mapped().is_some();

        let inside = network | (host & !mask);
        // IPv4-mapped addresses count as IPv4 and never match an IPv6 entry, even `::/0`.
        prop_assert_eq!(allowed(inside), !mapped(inside), "{} inside {}", Ipv6Addr::from(inside), entry);
        if prefix > 0 {
            let outside = inside ^ (1 << (127 - flip.index(usize::from(prefix))));
            prop_assert!(!allowed(outside), "{} outside {entry}", Ipv6Addr::from(outside));
        }
        prop_assert_eq!(
            allowed(random),
            random & mask == network && !mapped(random),
            "{} under {}", Ipv6Addr::from(random), entry
        );
        let v4 = Ipv4Addr::from(u32::try_from(random >> 96).expect("the top 32 bits fit a u32"));
        prop_assert!(!list.contains(IpAddr::V4(v4)), "IPv4 {v4} under IPv6 {entry}");
    }

    #[test]
    fn a_list_of_cidrs_allows_exactly_the_union_of_its_networks(
        networks in prop::collection::vec((any::<bool>(), any::<u128>(), any::<u8>()), 1..8),
        picks in prop::collection::vec((any::<Index>(), 0u8..5, any::<u128>()), 1..16),
    ) {
        // (is IPv4, network, prefix), with host bits cleared and IPv6 kept out of the mapped range.
        let networks: Vec<(bool, u128, u8)> = networks
            .into_iter()
            .map(|(v4, address, prefix)| {
                if v4 {
                    let prefix = prefix % 33;
                    (true, u128::from(u32::try_from(address >> 96).expect("fits") & v4_mask(prefix)), prefix)
                } else {
                    let prefix = prefix % 129;
                    let network = (address | 1 << 127) & v6_mask(prefix);
                    (false, network, prefix)
                }
            })
            .collect();
        let text: Vec<String> = networks
            .iter()
            .map(|&(v4, network, prefix)| match v4 {
                true => format!("{}/{prefix}", Ipv4Addr::from(u32::try_from(network).expect("IPv4"))),
                false => format!("{}/{prefix}", Ipv6Addr::from(network)),
            })
            .collect();
        let text = text.join(", ");
        let list = AllowList::parse(&text).expect("CIDRs without host bits parse");

        for (which, edge, random) in picks {
            // Probe each network at its first and last address, just outside both, and anywhere.
            let (v4, network, prefix) = networks[which.index(networks.len())];
            let (width, max) = if v4 { (32, u128::from(u32::MAX)) } else { (128, u128::MAX) };
            let host_mask = if prefix == width { 0 } else { max >> prefix };
            let probe = match edge {
                0 => network,
                1 => network | host_mask,
                2 => network.wrapping_sub(1) & max,
                3 => (network | host_mask).wrapping_add(1) & max,
                _ => random & max,
            };
            let ip = if v4 {
                IpAddr::V4(Ipv4Addr::from(u32::try_from(probe).expect("masked to 32 bits")))
            } else {
                IpAddr::V6(Ipv6Addr::from(probe))
            };
            // An IPv4-mapped IPv6 probe is an IPv4 address, and no network here is IPv4-mapped.
            let v6_mapped = !v4 && Ipv6Addr::from(probe).to_ipv4_mapped().is_some();
            let want = !v6_mapped
                && networks.iter().any(|&(n_v4, n, p)| {
                    let n_width = if n_v4 { 32 } else { 128 };
                    n_v4 == v4 && (probe ^ n).checked_shr(u32::from(n_width - p)).unwrap_or(0) == 0
                });
            prop_assert_eq!(list.contains(ip), want, "{} under {}", ip, text);
        }
    }

    #[test]
    fn a_token_always_verifies_with_its_key_and_names_the_requested_device(
        id in device_id(),
        key in prop::collection::vec(any::<u8>(), 1..=100),
        hub in select(&["contoso.azure-devices.net", "h.example", "hüb.example", "a&b=c/d"][..]),
        policy in select(&["device", "iothubowner", "my policy", "p&q=r"][..]),
        expires_at in any::<u64>(),
    ) {
        let device = DeviceId::parse(&id).expect("ids from IoT Hub's charset, 1..=128, are valid");
        let signing_key = SigningKey::from_base64(&BASE64.encode(&key)).expect("base64 of a non-empty key");
        let token = Signer::new(hub, policy, &signing_key).sign(&device, expires_at);
        prop_assert_eq!(token.expires_at, expires_at);
        checks::assert_token_valid(&token.token, hub, policy, &id, expires_at, &key);
    }

    #[test]
    fn no_entry_left_of_xff_depth_changes_the_decision(
        depth in 1u8..=4,
        caller in any::<IpAddr>(),
        caller_form in 0u8..3,
        ours in prop::collection::vec((any::<IpAddr>(), 0u8..3, any::<u16>()), 3),
        theirs in prop::collection::vec(junk_entry(), 0..8),
        line_breaks in prop::collection::vec(any::<bool>(), 16),
        port in any::<u16>(),
    ) {
        // Right to left: our proxies' entries (depth - 1 of them), the caller, then whatever the
        // caller wrote (spoofed addresses and junk).
        let depth_n = usize::from(depth);
        let mut trusted = vec![entry(caller, caller_form, port).into_bytes()];
        trusted.extend(ours[..depth_n - 1].iter().map(|&(ip, form, port)| entry(ip, form, port).into_bytes()));
        let mut spoofed_and_junk: Vec<Vec<u8>> = theirs.iter().map(|(bytes, _)| bytes.clone()).collect();
        spoofed_and_junk.extend(trusted.iter().cloned());
        let depth = XffDepth::new(depth).expect("1..=4 is within XFF_DEPTH's range");
        let peer = IpAddr::V4(Ipv4Addr::LOCALHOST);

        let with_junk = caller_ip(&header_lines(&spoofed_and_junk, &line_breaks), depth, peer);
        let without = caller_ip(&header_lines(&trusted, &line_breaks), depth, peer);
        prop_assert_eq!(with_junk, Ok(caller.to_canonical()));
        prop_assert_eq!(without, Ok(caller.to_canonical()));

        // Spoofed addresses on the allow list grant nothing; the caller's own entry decides.
        let spoofed: Vec<String> = theirs
            .iter()
            .filter_map(|(_, ip)| *ip)
            .map(|ip| ip.to_canonical())
            .filter(|&ip| ip != caller.to_canonical())
            .map(|ip| ip.to_string())
            .collect();
        let found = with_junk.expect("checked above");
        if !spoofed.is_empty() {
            let list = AllowList::parse(&spoofed.join(",")).expect("single addresses parse");
            prop_assert!(!list.contains(found), "spoofed entries {spoofed:?} allowed {found}");
        }
        let list = AllowList::parse(&caller.to_string()).expect("an address parses");
        prop_assert!(list.contains(found), "{found} not allowed by its own address");
    }
}

proptest! {
    #[test]
    fn an_escaped_subscription_id_reads_back_as_itself_and_two_joined_never_do(
        id in "[^*#&+:<>?\\p{Cc}]{1,64}",
        other in "[^*#&+:<>?\\p{Cc}]{1,64}",
        lower_hex in any::<bool>(),
        rfc_2396 in any::<bool>(),
    ) {
        // What `Uri.EscapeDataString` keeps: RFC 3986's unreserved characters, or with older
        // runtimes RFC 2396's, which add the marks `! * ' ( )`.
        const RFC_3986: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
            .remove(b'-')
            .remove(b'.')
            .remove(b'_')
            .remove(b'~');
        const RFC_2396: &percent_encoding::AsciiSet =
            &RFC_3986.remove(b'!').remove(b'*').remove(b'\'').remove(b'(').remove(b')');
        let set = if rfc_2396 { RFC_2396 } else { RFC_3986 };
        let escape = |text: &str| {
            let escaped = percent_encoding::utf8_percent_encode(text, set).to_string();
            if !lower_hex {
                return escaped;
            }
            // The two hex digits after each `%` in lower case; the id's own letters as they are.
            let mut out = String::with_capacity(escaped.len());
            let mut hex_left = 0_u8;
            for c in escaped.chars() {
                out.push(if hex_left > 0 { c.to_ascii_lowercase() } else { c });
                hex_left = if c == '%' { 2 } else { hex_left.saturating_sub(1) };
            }
            out
        };
        let escaped = escape(&id);
        let parsed = SubscriptionId::from_escaped(escaped.as_bytes());
        prop_assert_eq!(parsed.as_ref().map(SubscriptionId::as_str), Some(id.as_str()), "{}", escaped);
        let upper = SubscriptionId::parse(&id.to_ascii_uppercase());
        prop_assert_eq!(
            parsed.as_ref().map(SubscriptionId::folded),
            upper.as_ref().map(SubscriptionId::folded),
            "folded alike in any ASCII letter case: {}", id
        );
        let joined = format!("{escaped}, {}", escape(&other));
        prop_assert_eq!(SubscriptionId::from_escaped(joined.as_bytes()), None, "{}", joined);
    }
}

/// A device id from IoT Hub's character set, 1–128 characters.
fn device_id() -> impl Strategy<Value = String> {
    let charset: Vec<u8> = (0..=127u8)
        .filter(|&b| checks::is_iot_hub_device_id_byte(b))
        .collect();
    prop::collection::vec(select(charset), 1..=DEVICE_ID_MAX_LEN)
        .prop_map(|bytes| String::from_utf8(bytes).expect("the charset is ASCII"))
}

/// One `X-Forwarded-For` entry for `ip` in one of the README's forms.
fn entry(ip: IpAddr, form: u8, port: u16) -> String {
    match (ip, form % 3) {
        (IpAddr::V4(v4), 0) => v4.to_string(),
        (IpAddr::V4(v4), 1) => format!("{v4}:{port}"),
        (IpAddr::V4(v4), _) => format!("[{}]:{port}", v4.to_ipv6_mapped()),
        (IpAddr::V6(v6), 0) => v6.to_string(),
        (IpAddr::V6(v6), 1) => format!("[{v6}]"),
        (IpAddr::V6(v6), _) => format!("[{v6}]:{port}"),
    }
}

/// What a caller may write left of the trusted entries: a spoofed address (returned too), or
/// bytes that may hold commas, brackets, colons, spaces or non-UTF-8 — anything a header allows.
fn junk_entry() -> impl Strategy<Value = (Vec<u8>, Option<IpAddr>)> {
    let junk_bytes: Vec<u8> = b"0123456789abcdefxyz.:[]%, \t"
        .iter()
        .copied()
        .chain([0x80, 0xc3, 0xff])
        .collect();
    prop_oneof![
        (any::<IpAddr>(), 0u8..3, any::<u16>())
            .prop_map(|(ip, form, port)| (entry(ip, form, port).into_bytes(), Some(ip))),
        prop::collection::vec(select(junk_bytes), 0..24).prop_map(|bytes| (bytes, None)),
    ]
}

/// The entries as header lines: joined with `", "`, a new line wherever `line_breaks` says.
fn header_lines(entries: &[Vec<u8>], line_breaks: &[bool]) -> Vec<HeaderValue> {
    let mut lines = vec![Vec::new()];
    for (i, entry) in entries.iter().enumerate() {
        let line = lines.last_mut().expect("starts with one line");
        if !line.is_empty() {
            line.extend_from_slice(b", ");
        }
        line.extend_from_slice(entry);
        if line_breaks.get(i).copied().unwrap_or(false) {
            lines.push(Vec::new());
        }
    }
    lines
        .into_iter()
        .map(|line| HeaderValue::from_bytes(&line).expect("entries use header-safe bytes only"))
        .collect()
}
