//! Micro-benchmarks of the pure core, through the public API, as one token request uses it:
//! caller from `X-Forwarded-For` plus allow-list match, device-id validation, the
//! `DEVICE_SCOPES` decision with 10,000 rules, and token signing in both signing modes.
//!
//! `cargo bench --bench core` (or `make bench`, which also records the figures in
//! `docs/benchmarks.md`). Under `cargo test --all-targets` each benchmark runs once, as a smoke
//! test. The allow lists use entries that cannot be merged (distinct, non-adjacent `/32`s), so the
//! 1,000-entry case really holds 1,000 ranges and shows how a lookup grows with the list.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use iothub_sas_handler::allow_list::AllowList;
use iothub_sas_handler::auth::bearer::Principal;
use iothub_sas_handler::caller::Caller;
use iothub_sas_handler::client_ip::{XffDepth, caller_ip};
use iothub_sas_handler::params::{DeviceId, RegistrationId};
use iothub_sas_handler::sas::enrollment_group::GroupSigner;
use iothub_sas_handler::sas::{Signer, SigningKey};
use iothub_sas_handler::scope::Scopes;

/// A typical device id, as in the load benchmark.
const DEVICE: &str = "bench-device-01";
/// The caller as the App Service front end appends it: the last entry, with a port.
const XFF: &str = "198.51.100.23, 203.0.113.7:51234";

/// `n` distinct addresses 10.a.b.1 two apart in the third octet: never adjacent, never merged.
fn scattered_v4(n: usize) -> Vec<Ipv4Addr> {
    (0..n)
        .map(|i| {
            let i = u32::try_from(i).expect("a benchmark-sized list");
            Ipv4Addr::new(10, (i / 100) as u8, ((i % 100) * 2) as u8, 1)
        })
        .collect()
}

/// An allow list of `n` scattered `/32`s followed by the benchmark's caller, 203.0.113.7.
fn allow_list(n: usize) -> AllowList {
    let mut entries: Vec<String> = scattered_v4(n.saturating_sub(1))
        .iter()
        .map(|ip| format!("{ip}/32"))
        .collect();
    entries.push("203.0.113.7".to_owned());
    let list = AllowList::parse(&entries.join(",")).expect("the benchmark list parses");
    assert_eq!(list.range_count(), n, "entries must not merge");
    list
}

fn caller_and_allow_list(c: &mut Criterion) {
    let mut headers = HeaderMap::new();
    headers.insert("x-forwarded-for", HeaderValue::from_static(XFF));
    let peer = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let depth = XffDepth::default();
    let denied = IpAddr::V4(Ipv4Addr::new(10, 0, 1, 1));

    let mut group = c.benchmark_group("caller_ip+allow_list");
    for n in [1, 1_000] {
        let list = allow_list(n);
        group.bench_with_input(BenchmarkId::new("allowed", n), &list, |b, list| {
            b.iter(|| {
                let caller =
                    caller_ip(&black_box(&headers).get_all("x-forwarded-for"), depth, peer)
                        .expect("the benchmark XFF parses");
                list.contains(caller)
            });
        });
        group.bench_with_input(BenchmarkId::new("contains_miss", n), &list, |b, list| {
            b.iter(|| list.contains(black_box(denied)));
        });
    }
    group.finish();
}

fn device_id(c: &mut Criterion) {
    c.bench_function("DeviceId::parse", |b| {
        b.iter(|| DeviceId::parse(black_box(DEVICE)));
    });
}

fn sign(c: &mut Criterion) {
    let key = SigningKey::from_base64("c2VjcmV0LWtleS1mb3ItdGhlLWJlbmNobWFyaw==")
        .expect("a valid base64 key");
    let signer = Signer::new("bench-hub.azure-devices.net", "device", &key);
    let device = DeviceId::parse(DEVICE).expect("a valid device id");
    c.bench_function("Signer::sign", |b| {
        b.iter(|| signer.sign(black_box(&device), black_box(1_795_000_000)));
    });
    // Enrollment-group mode: derive the device's key from the prepared group key, then sign.
    let group = GroupSigner::new("bench-hub.azure-devices.net", None, &key);
    let registration = RegistrationId::parse(DEVICE).expect("a valid registration id");
    c.bench_function("GroupSigner::sign_device", |b| {
        b.iter(|| group.sign_device(black_box(&registration), black_box(1_795_000_000)));
    });
}

/// 10,000 rules: 9,999 callers with one prefix each, and one role holding 10,000 patterns (half
/// exact ids, half prefixes). The caller below holds one of the 9,999 ids and the role; the
/// device it asks for is covered by neither, so every rule it holds is searched — the most work
/// a decision can take.
fn scope_decision(c: &mut Criterion) {
    let mut rules: Vec<String> = (0..9_999)
        .map(|i| format!(r#""{:08x}-0000-4000-8000-000000000000": ["site-{i}-*"]"#, i))
        .collect();
    let patterns: Vec<String> = (0..10_000)
        .map(|i| {
            if i % 2 == 0 {
                format!(r#""fleet-{i}""#)
            } else {
                format!(r#""fleet-{i}-*""#)
            }
        })
        .collect();
    rules.push(format!(r#""role:Fleet": [{}]"#, patterns.join(",")));
    let scopes = Scopes::parse(&format!("{{{}}}", rules.join(","))).expect("the rules parse");
    let caller = Caller {
        ip: IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7)),
        certificate: None,
        principal: Some(Principal {
            app_only: true,
            object_id: Some(format!("{:08x}-0000-4000-8000-000000000000", 5_000)),
            app_id: Some("aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee".to_owned()),
            authorized_party: None,
            roles: vec!["Fleet".to_owned()],
        }),
        forwarded: None,
    };
    assert!(scopes.allows(&caller, "fleet-5001-x").is_ok());
    assert!(scopes.allows(&caller, "site-5000-a").is_ok());
    let mut group = c.benchmark_group("scope");
    group.bench_function("allows/10000_rules/miss", |b| {
        b.iter(|| scopes.allows(black_box(&caller), black_box("fleet-50000")));
    });
    group.bench_function("allows/10000_rules/prefix_hit", |b| {
        b.iter(|| scopes.allows(black_box(&caller), black_box("fleet-5001-x")));
    });
    group.finish();
}

criterion_group! {
    name = core;
    // Short runs: these are nanosecond-scale functions, and `make bench` has a time budget.
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = caller_and_allow_list, device_id, sign, scope_decision
}
criterion_main!(core);
