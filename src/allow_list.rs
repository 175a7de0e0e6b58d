//! Which callers may ask for tokens: the `ALLOWED_IPS` list of addresses and CIDR ranges.
//!
//! **What it owns.** Parsing `ALLOWED_IPS` strictly (a CIDR with host bits set is a typo we refuse
//! rather than guess at) and answering `contains(ip)` quickly whatever the list's size.
//!
//! **How.** Every entry becomes an inclusive range of integers; ranges are sorted and merged at
//! start-up into disjoint runs, one list per address family. A lookup is then one binary search:
//! O(log n), no allocation. IPv4-mapped IPv6 entries and addresses are treated as IPv4, so
//! `::ffff:10.0.0.1` and `10.0.0.1` are the same caller.
//!
//! `*` (alone) allows every caller. It exists for local experiments and for deployments whose only
//! network guard is elsewhere; start-up logs a warning when it is used — and the same warning when
//! the ranges amount to a whole address family (`0.0.0.0/0`, `::/0`, `::ffff:0.0.0.0/96`, or
//! ranges that merge into one of them: [`AllowList::covers_a_whole_family`]). The list also
//! remembers its loopback entries, which are a mistake anywhere but on a developer's machine.

use std::net::{IpAddr, Ipv6Addr};

/// The parsed allow list. Construct with [`AllowList::parse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowList {
    /// `ALLOWED_IPS=*`: everyone is allowed.
    everyone: bool,
    /// Disjoint, sorted, non-adjacent inclusive IPv4 ranges.
    v4: Vec<(u32, u32)>,
    /// Disjoint, sorted, non-adjacent inclusive IPv6 ranges (never IPv4-mapped).
    v6: Vec<(u128, u128)>,
    /// Entries, as written, that lie entirely in 127.0.0.0/8 or are `::1`.
    loopback: Vec<String>,
}

/// Why `ALLOWED_IPS` was refused. The message names the offending entry: entries are addresses,
/// not secrets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllowListError {
    /// No entries at all.
    #[error("no addresses given (use `*` to allow every caller)")]
    Empty,
    /// `*` mixed with other entries is almost certainly a mistake.
    #[error("`*` must be the only entry")]
    WildcardMixed,
    /// Not an address or `address/prefix`.
    #[error("`{0}` is not an IPv4/IPv6 address or CIDR range")]
    NotAnAddress(String),
    /// The prefix length is not a number within the family's bit width.
    #[error("`{0}` has an invalid prefix length")]
    BadPrefix(String),
    /// `10.0.0.1/8`: host bits set below the prefix.
    #[error("`{entry}` has host bits set{}", .network.as_ref().map(|n| format!("; did you mean `{n}`?")).unwrap_or_default())]
    HostBitsSet {
        /// The entry as written.
        entry: String,
        /// The network it most likely meant — never a whole address family, which no typo of an
        /// address should be turned into.
        network: Option<String>,
    },
}

impl AllowList {
    /// Parse a comma-separated list of addresses and CIDR ranges, or `*`.
    ///
    /// Surrounding whitespace and empty entries (a trailing comma) are ignored.
    pub fn parse(text: &str) -> Result<Self, AllowListError> {
        let entries: Vec<&str> = text
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .collect();
        if entries.is_empty() {
            return Err(AllowListError::Empty);
        }
        if entries.contains(&"*") {
            return if entries.len() == 1 {
                Ok(Self::everyone())
            } else {
                Err(AllowListError::WildcardMixed)
            };
        }
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        let mut loopback = Vec::new();
        for entry in entries {
            let range = parse_range(entry)?;
            if range.is_loopback() {
                loopback.push(entry.to_owned());
            }
            match range {
                Range::V4(start, end) => v4.push((start, end)),
                Range::V6(start, end) => v6.push((start, end)),
            }
        }
        Ok(Self {
            everyone: false,
            v4: merge(v4),
            v6: merge(v6),
            loopback,
        })
    }

    /// The list that allows every caller (`*`).
    pub fn everyone() -> Self {
        Self {
            everyone: true,
            v4: Vec::new(),
            v6: Vec::new(),
            loopback: Vec::new(),
        }
    }

    /// Whether `*` was given.
    pub fn allows_everyone(&self) -> bool {
        self.everyone
    }

    /// Which callers the list admits wholesale, if it amounts to `*` for an address family:
    /// `"every caller"`, `"every IPv4 caller"` or `"every IPv6 caller"`.
    pub fn covers_a_whole_family(&self) -> Option<&'static str> {
        let all_v4 = self.everyone || self.v4 == [(0, u32::MAX)];
        let all_v6 = self.everyone || self.v6 == [(0, u128::MAX)];
        match (all_v4, all_v6) {
            (true, true) => Some("every caller"),
            (true, false) => Some("every IPv4 caller"),
            (false, true) => Some("every IPv6 caller"),
            (false, false) => None,
        }
    }

    /// The entries, as written, that are loopback addresses or ranges within 127.0.0.0/8.
    pub fn loopback_entries(&self) -> &[String] {
        &self.loopback
    }

    /// Whether `ip` is allowed.
    pub fn contains(&self, ip: IpAddr) -> bool {
        if self.everyone {
            return true;
        }
        match ip.to_canonical() {
            IpAddr::V4(v4) => in_ranges(&self.v4, u32::from(v4)),
            IpAddr::V6(v6) => in_ranges(&self.v6, u128::from(v6)),
        }
    }

    /// Number of disjoint ranges after merging (for the start-up log line).
    pub fn range_count(&self) -> usize {
        self.v4.len() + self.v6.len()
    }
}

/// One entry as an inclusive integer range.
enum Range {
    V4(u32, u32),
    V6(u128, u128),
}

impl Range {
    /// Entirely within 127.0.0.0/8, or exactly `::1`.
    fn is_loopback(&self) -> bool {
        const LOOPBACK_V4: (u32, u32) = (0x7f00_0000, 0x7fff_ffff);
        match *self {
            Self::V4(start, end) => LOOPBACK_V4.0 <= start && end <= LOOPBACK_V4.1,
            Self::V6(start, end) => start == 1 && end == 1,
        }
    }
}

fn parse_range(entry: &str) -> Result<Range, AllowListError> {
    let (address, prefix) = match entry.split_once('/') {
        Some((address, prefix)) => (address, Some(prefix)),
        None => (entry, None),
    };
    let address: IpAddr = address
        .parse()
        .map_err(|_| AllowListError::NotAnAddress(entry.to_owned()))?;
    let bad_prefix = || AllowListError::BadPrefix(entry.to_owned());
    let prefix: Option<u8> = match prefix {
        None => None,
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
            Some(p.parse().map_err(|_| bad_prefix())?)
        }
        Some(_) => return Err(bad_prefix()),
    };
    match address {
        IpAddr::V4(v4) => v4_range(entry, u32::from(v4), prefix.unwrap_or(32)),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            // `::ffff:a.b.c.d/p` is the IPv4 network a.b.c.d/(p-96).
            Some(v4) => {
                let prefix = match prefix {
                    None => 32,
                    Some(p) if p >= 96 => p - 96,
                    Some(_) => return Err(bad_prefix()),
                };
                v4_range(entry, u32::from(v4), prefix)
            }
            None => v6_range(entry, u128::from(v6), prefix.unwrap_or(128)),
        },
    }
}

fn v4_range(entry: &str, address: u32, prefix: u8) -> Result<Range, AllowListError> {
    if prefix > 32 {
        return Err(AllowListError::BadPrefix(entry.to_owned()));
    }
    let host_mask = u32::MAX.checked_shr(u32::from(prefix)).unwrap_or(0);
    if address & host_mask != 0 {
        let network = std::net::Ipv4Addr::from(address & !host_mask);
        return Err(AllowListError::HostBitsSet {
            entry: entry.to_owned(),
            network: (prefix > 0).then(|| format!("{network}/{prefix}")),
        });
    }
    Ok(Range::V4(address, address | host_mask))
}

fn v6_range(entry: &str, address: u128, prefix: u8) -> Result<Range, AllowListError> {
    if prefix > 128 {
        return Err(AllowListError::BadPrefix(entry.to_owned()));
    }
    let host_mask = u128::MAX.checked_shr(u32::from(prefix)).unwrap_or(0);
    if address & host_mask != 0 {
        let network = Ipv6Addr::from(address & !host_mask);
        return Err(AllowListError::HostBitsSet {
            entry: entry.to_owned(),
            network: (prefix > 0).then(|| format!("{network}/{prefix}")),
        });
    }
    Ok(Range::V6(address, address | host_mask))
}

/// Sort ranges and merge overlapping or adjacent ones, so that the result is disjoint and a binary
/// search on the start finds the only candidate.
fn merge<T>(mut ranges: Vec<(T, T)>) -> Vec<(T, T)>
where
    T: Copy + Ord + num_like::Successor,
{
    ranges.sort_unstable();
    let mut merged: Vec<(T, T)> = Vec::with_capacity(ranges.len());
    for (start, end) in ranges {
        match merged.last_mut() {
            Some(last) if last.1.successor().is_none_or(|next| start <= next) => {
                last.1 = last.1.max(end);
            }
            _ => merged.push((start, end)),
        }
    }
    merged.shrink_to_fit();
    merged
}

/// Whether `value` lies in one of the disjoint sorted `ranges`.
fn in_ranges<T: Copy + Ord>(ranges: &[(T, T)], value: T) -> bool {
    // The first range starting after `value`; the only candidate is the one before it.
    let after = ranges.partition_point(|&(start, _)| start <= value);
    after > 0 && value <= ranges[after - 1].1
}

/// The one arithmetic fact `merge` needs from both integer widths.
mod num_like {
    /// `self + 1`, or `None` at the maximum.
    pub(super) trait Successor: Sized {
        fn successor(self) -> Option<Self>;
    }
    impl Successor for u32 {
        fn successor(self) -> Option<Self> {
            self.checked_add(1)
        }
    }
    impl Successor for u128 {
        fn successor(self) -> Option<Self> {
            self.checked_add(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(text: &str) -> AllowList {
        AllowList::parse(text).expect("test allow list parses")
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("test address parses")
    }

    #[test]
    fn single_addresses_match_exactly() {
        let allowed = list("10.0.0.1, 2001:db8::1");
        assert!(allowed.contains(ip("10.0.0.1")));
        assert!(!allowed.contains(ip("10.0.0.2")));
        assert!(!allowed.contains(ip("10.0.0.0")));
        assert!(allowed.contains(ip("2001:db8::1")));
        assert!(!allowed.contains(ip("2001:db8::2")));
    }

    #[test]
    fn cidr_ranges_cover_their_bounds_and_nothing_else() {
        let allowed = list("192.168.4.0/22,2001:db8:aa00::/40");
        assert!(allowed.contains(ip("192.168.4.0")));
        assert!(allowed.contains(ip("192.168.7.255")));
        assert!(!allowed.contains(ip("192.168.3.255")));
        assert!(!allowed.contains(ip("192.168.8.0")));
        assert!(allowed.contains(ip("2001:db8:aa00::")));
        assert!(allowed.contains(ip("2001:db8:aaff:ffff:ffff:ffff:ffff:ffff")));
        assert!(!allowed.contains(ip("2001:db8:ab00::")));
    }

    #[test]
    fn ipv4_mapped_ipv6_counts_as_ipv4_both_ways() {
        assert!(list("10.0.0.1").contains(ip("::ffff:10.0.0.1")));
        assert!(list("::ffff:10.0.0.0/120").contains(ip("10.0.0.77")));
        assert!(!list("::ffff:10.0.0.0/120").contains(ip("10.0.1.0")));
    }

    #[test]
    fn families_do_not_leak_into_each_other() {
        assert!(!list("0.0.0.0/0").contains(ip("::1")));
        assert!(!list("::/0").contains(ip("127.0.0.1")));
        assert!(list("0.0.0.0/0").contains(ip("255.255.255.255")));
        assert!(list("::/0").contains(ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")));
    }

    #[test]
    fn overlapping_and_adjacent_ranges_merge() {
        let allowed = list("10.0.0.0/24, 10.0.1.0/24, 10.0.0.128/25, 10.0.3.0/24");
        assert_eq!(allowed.range_count(), 2);
        assert!(allowed.contains(ip("10.0.1.255")));
        assert!(!allowed.contains(ip("10.0.2.0")));
        assert!(allowed.contains(ip("10.0.3.9")));
    }

    #[test]
    fn wildcard_allows_everyone_only_alone() {
        assert!(list(" * ").contains(ip("203.0.113.1")));
        assert!(list("*").allows_everyone());
        assert_eq!(
            AllowList::parse("*,10.0.0.1"),
            Err(AllowListError::WildcardMixed)
        );
    }

    #[test]
    fn bad_entries_are_refused_with_the_entry_named() {
        let cases = [
            ("", AllowListError::Empty),
            (" , ,", AllowListError::Empty),
            (
                "10.0.0.300",
                AllowListError::NotAnAddress("10.0.0.300".into()),
            ),
            (
                "example.com",
                AllowListError::NotAnAddress("example.com".into()),
            ),
            (
                "10.0.0.0/33",
                AllowListError::BadPrefix("10.0.0.0/33".into()),
            ),
            ("10.0.0.0/", AllowListError::BadPrefix("10.0.0.0/".into())),
            (
                "10.0.0.0/+8",
                AllowListError::BadPrefix("10.0.0.0/+8".into()),
            ),
            ("::/129", AllowListError::BadPrefix("::/129".into())),
            (
                "::ffff:10.0.0.0/64",
                AllowListError::BadPrefix("::ffff:10.0.0.0/64".into()),
            ),
            (
                "10.0.0.1/8",
                AllowListError::HostBitsSet {
                    entry: "10.0.0.1/8".into(),
                    network: Some("10.0.0.0/8".into()),
                },
            ),
            (
                "2001:db8::1/32",
                AllowListError::HostBitsSet {
                    entry: "2001:db8::1/32".into(),
                    network: Some("2001:db8::/32".into()),
                },
            ),
        ];
        for (text, want) in cases {
            assert_eq!(AllowList::parse(text), Err(want), "ALLOWED_IPS={text:?}");
        }
    }

    #[test]
    fn a_thousand_entries_still_answer_exactly() {
        let text: Vec<String> = (0..1000u32)
            .map(|i| format!("10.{}.{}.0/24", i / 256 * 2, i % 256))
            .collect();
        let allowed = list(&text.join(","));
        assert!(allowed.contains(ip("10.0.5.17")));
        assert!(allowed.contains(ip("10.6.231.255")));
        assert!(!allowed.contains(ip("10.1.0.0")));
        assert!(!allowed.contains(ip("10.7.0.0")));
    }

    #[test]
    fn ranges_that_amount_to_a_whole_family_are_named() {
        for (text, want) in [
            ("0.0.0.0/0", Some("every IPv4 caller")),
            ("::ffff:0.0.0.0/96", Some("every IPv4 caller")),
            ("0.0.0.0/1, 128.0.0.0/1", Some("every IPv4 caller")),
            ("::/0", Some("every IPv6 caller")),
            ("::/1, 8000::/1", Some("every IPv6 caller")),
            ("0.0.0.0/0, ::/0", Some("every caller")),
            ("*", Some("every caller")),
            ("0.0.0.0/1", None),
            ("10.0.0.0/8, ::/1", None),
        ] {
            let list = AllowList::parse(text).expect("valid list");
            assert_eq!(list.covers_a_whole_family(), want, "{text}");
        }
    }

    #[test]
    fn the_host_bits_hint_never_suggests_a_whole_family() {
        for text in ["10.0.0.1/0", "2001:db8::1/0", "::ffff:10.0.0.1/96"] {
            let error = AllowList::parse(text).expect_err(text);
            assert!(
                matches!(error, AllowListError::HostBitsSet { network: None, .. }),
                "{text}: {error:?}"
            );
            assert!(!error.to_string().contains("did you mean"), "{error}");
        }
        let error = AllowList::parse("10.0.0.1/1").expect_err("host bits");
        assert!(
            error.to_string().contains("did you mean `0.0.0.0/1`?"),
            "{error}"
        );
    }

    #[test]
    fn loopback_entries_are_remembered_as_written() {
        let list =
            AllowList::parse("127.0.0.1, 10.0.0.1, ::1, 127.0.0.0/8, ::ffff:127.0.0.2, 0.0.0.0/0")
                .expect("valid list");
        assert_eq!(
            list.loopback_entries(),
            ["127.0.0.1", "::1", "127.0.0.0/8", "::ffff:127.0.0.2"],
            "a range that merely contains loopback (0.0.0.0/0) is not a loopback entry"
        );
    }
}
