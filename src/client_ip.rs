//! Who is calling: the caller's IP address from `X-Forwarded-For`, or the TCP peer.
//!
//! **What it trusts.** Behind Azure App Service every request reaches the Functions host through
//! the App Service front end, which *appends* the address of the TCP peer it accepted (as `ip:port`)
//! to whatever `X-Forwarded-For` the client sent. Everything to the left of the entries our own
//! proxies appended was written by the caller and can say anything. So the caller is the entry
//! `XFF_DEPTH` positions from the right (1 = the one the front end appended), counted across all
//! header lines in order, and nothing left of it is ever looked at.
//!
//! **How it fails.** Closed. An entry that does not parse, or fewer entries than the depth, is an
//! error — never a fallback to another entry or to the TCP peer. Only when the request carries no
//! `X-Forwarded-For` header at all is the TCP peer the caller (a local `func start`, or a client
//! talking to the handler directly).
//!
//! This module is pure: header bytes and the peer in, an address or an error out. It has no
//! framework types beyond `http::HeaderValue`, touches no clock or network, and allocates nothing.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU8;

use axum::http::HeaderValue;

/// How many `X-Forwarded-For` entries, counted from the right, our own proxies appended.
///
/// 1 means "the entry the App Service front end appended is the caller", which is right when API
/// Management (or any client) calls the function app directly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XffDepth(NonZeroU8);

impl XffDepth {
    /// The largest depth accepted: no real proxy chain in front of a function is longer.
    pub const MAX: u8 = 16;

    /// A depth in `1..=MAX`, or `None`.
    pub fn new(depth: u8) -> Option<Self> {
        NonZeroU8::new(depth)
            .filter(|d| d.get() <= Self::MAX)
            .map(Self)
    }

    /// The depth as a count of entries.
    pub fn get(self) -> usize {
        usize::from(self.0.get())
    }
}

impl Default for XffDepth {
    fn default() -> Self {
        Self(NonZeroU8::MIN)
    }
}

/// Why no caller address could be established. Each variant denies the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallerIpError {
    /// `X-Forwarded-For` is present but holds fewer entries than `XFF_DEPTH`: the request did not
    /// come through the proxies we were told about.
    TooFewEntries {
        /// Entries found across all header lines.
        found: usize,
    },
    /// The entry at `XFF_DEPTH` is not one of the accepted address forms.
    Unparsable,
}

impl std::fmt::Display for CallerIpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TooFewEntries { found } => {
                write!(
                    f,
                    "X-Forwarded-For has {found} entries, fewer than XFF_DEPTH"
                )
            }
            Self::Unparsable => f.write_str("X-Forwarded-For entry at XFF_DEPTH is not an address"),
        }
    }
}

/// The caller's address: the `X-Forwarded-For` entry `depth` from the right across all
/// `xff_lines` (in the order they arrived), or `peer` when there are no such lines.
///
/// IPv4-mapped IPv6 addresses are returned as IPv4 so one allow-list entry covers both forms.
pub fn caller_ip<'a, I>(
    xff_lines: I,
    depth: XffDepth,
    peer: IpAddr,
) -> Result<IpAddr, CallerIpError>
where
    I: IntoIterator<Item = &'a HeaderValue>,
    I::IntoIter: DoubleEndedIterator,
{
    let mut lines = xff_lines.into_iter().peekable();
    if lines.peek().is_none() {
        return Ok(peer.to_canonical());
    }
    let wanted = depth.get();
    let mut found = 0;
    for line in lines.rev() {
        // Empty list elements (`a,,b`, a trailing comma, an empty line) are not entries: RFC 9110
        // §5.6.1 says to ignore them. They can only occur in the caller-written part anyway.
        for entry in line.as_bytes().rsplit(|&b| b == b',') {
            let entry = entry.trim_ascii();
            if entry.is_empty() {
                continue;
            }
            found += 1;
            if found == wanted {
                return parse_entry(entry)
                    .map(|ip| ip.to_canonical())
                    .ok_or(CallerIpError::Unparsable);
            }
        }
    }
    Err(CallerIpError::TooFewEntries { found })
}

/// One `X-Forwarded-For` entry: `1.2.3.4`, `1.2.3.4:5678`, `[2001:db8::1]`, `[2001:db8::1]:443`
/// or a bare `2001:db8::1`. Anything else (host names, zone ids, `unknown`, junk) is `None`.
///
/// **An unbracketed entry with two or more colons is an IPv6 address, never address:port.** The
/// App Service front end (IIS ARR lineage) brackets IPv6 when it adds a port (`[v6]:port`); the
/// proxies that write bare IPv6 (nginx's `$proxy_add_x_forwarded_for`, AWS load balancers) write no
/// port (docs/azure-behaviour.md §11). So `2001:db8::5:443` is the address `2001:db8::5:443` —
/// never `2001:db8::5` on port 443, which would let an entry that merely ends in a number pass for
/// a listed address. What does not parse as one address (`2001:db8::5::443`, `::ffff:1.2.3.4:80`,
/// `[2001:db8::5]443`) is refused, not guessed at.
fn parse_entry(entry: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(entry).ok()?;
    if let Some(rest) = text.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        if !(after.is_empty() || is_port(after.strip_prefix(':')?)) {
            return None;
        }
        return inside.parse::<Ipv6Addr>().ok().map(IpAddr::V6);
    }
    match text.bytes().filter(|&b| b == b':').count() {
        0 => text.parse::<Ipv4Addr>().ok().map(IpAddr::V4),
        // Exactly one colon can only be `ipv4:port`: an IPv6 address has at least two.
        1 => text
            .parse::<SocketAddr>()
            .ok()
            .filter(SocketAddr::is_ipv4)
            .map(|s| s.ip()),
        _ => text.parse::<Ipv6Addr>().ok().map(IpAddr::V6),
    }
}

/// A decimal TCP port, 0–65535, digits only.
fn is_port(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) && text.parse::<u16>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEER: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 200));

    fn caller(lines: &[&str], depth: u8) -> Result<IpAddr, CallerIpError> {
        let values: Vec<HeaderValue> = lines
            .iter()
            .map(|l| HeaderValue::from_str(l).expect("test header values are visible ASCII"))
            .collect();
        caller_ip(
            &values,
            XffDepth::new(depth).expect("test depth in range"),
            PEER,
        )
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("test address parses")
    }

    #[test]
    fn every_entry_form_is_understood() {
        let cases = [
            ("1.2.3.4", "1.2.3.4"),
            ("1.2.3.4:5678", "1.2.3.4"),
            ("[2001:db8::1]", "2001:db8::1"),
            ("[2001:db8::1]:443", "2001:db8::1"),
            ("2001:db8::1", "2001:db8::1"),
            ("::1", "::1"),
            ("  1.2.3.4  ", "1.2.3.4"),
            ("::ffff:1.2.3.4", "1.2.3.4"),
            ("[::ffff:1.2.3.4]:80", "1.2.3.4"),
        ];
        for (entry, want) in cases {
            assert_eq!(caller(&[entry], 1), Ok(ip(want)), "entry {entry:?}");
        }
    }

    #[test]
    fn malformed_entries_are_denied() {
        for entry in [
            "unknown",
            "1.2.3",
            "1.2.3.4.5",
            "01.2.3.4",
            "1.2.3.4:",
            "1.2.3.4:99999",
            "1.2.3.4:+80",
            "[1.2.3.4]:80",
            "[2001:db8::1",
            "[2001:db8::1]x",
            "[2001:db8::1]:",
            "2001:db8::1:443:xyz",
            "fe80::1%eth0",
            "host.example:80",
            "_hidden",
        ] {
            assert_eq!(
                caller(&[entry], 1),
                Err(CallerIpError::Unparsable),
                "entry {entry:?}"
            );
        }
    }

    #[test]
    fn the_caller_is_counted_from_the_right_across_lines() {
        let lines = ["10.0.0.1, 10.0.0.2", "10.0.0.3:1", "[2001:db8::4]:2"];
        assert_eq!(caller(&lines, 1), Ok(ip("2001:db8::4")));
        assert_eq!(caller(&lines, 2), Ok(ip("10.0.0.3")));
        assert_eq!(caller(&lines, 3), Ok(ip("10.0.0.2")));
        assert_eq!(caller(&lines, 4), Ok(ip("10.0.0.1")));
        assert_eq!(
            caller(&lines, 5),
            Err(CallerIpError::TooFewEntries { found: 4 })
        );
    }

    #[test]
    fn junk_left_of_the_depth_changes_nothing() {
        let lines = ["garbage, [[[, 1.2.3.4, 203.0.113.7:4242"];
        assert_eq!(caller(&lines, 1), Ok(ip("203.0.113.7")));
    }

    #[test]
    fn empty_list_elements_are_ignored() {
        assert_eq!(caller(&["1.2.3.4,, ,5.6.7.8,"], 2), Ok(ip("1.2.3.4")));
        assert_eq!(
            caller(&[""], 1),
            Err(CallerIpError::TooFewEntries { found: 0 })
        );
    }

    #[test]
    fn no_header_means_the_tcp_peer() {
        assert_eq!(caller(&[], 1), Ok(PEER));
        let mapped = IpAddr::V6(Ipv4Addr::new(127, 0, 0, 1).to_ipv6_mapped());
        assert_eq!(
            caller_ip(&[], XffDepth::default(), mapped),
            Ok(ip("127.0.0.1"))
        );
    }

    #[test]
    fn non_utf8_entries_are_denied() {
        let value = HeaderValue::from_bytes(b"1.2.3.4, \xff\xfe").expect("obs-text is allowed");
        assert_eq!(
            caller_ip([&value], XffDepth::default(), PEER),
            Err(CallerIpError::Unparsable)
        );
    }

    #[test]
    fn depth_is_bounded() {
        assert!(XffDepth::new(0).is_none());
        assert!(XffDepth::new(17).is_none());
        assert_eq!(XffDepth::new(16).map(XffDepth::get), Some(16));
    }

    #[test]
    fn an_unbracketed_ipv6_entry_is_an_address_never_address_and_port() {
        assert_eq!(caller(&["2001:db8::5:443"], 1), Ok(ip("2001:db8::5:443")));
        assert_ne!(caller(&["2001:db8::5:443"], 1), Ok(ip("2001:db8::5")));
        assert_eq!(caller(&["[2001:db8::5]:443"], 1), Ok(ip("2001:db8::5")));
        for ambiguous in ["2001:db8::5::443", "::ffff:1.2.3.4:80", "[2001:db8::5]443"] {
            assert_eq!(
                caller(&[ambiguous], 1),
                Err(CallerIpError::Unparsable),
                "{ambiguous}"
            );
        }
    }
}
