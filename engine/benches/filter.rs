//! The packet filter's cost per packet: a forward chain of 20 rules, one of
//! them a lookup in a set of 1,000 addresses, judged for batches of 64
//! packets; per batch, so per packet is a 64th. `empty` is a ruleset
//! without rules (what a hook without rules costs), `parse_judge` parses
//! each packet's [`Meta`] from its header first, as a worker does.
//!
//! The packets are UDP from random sources (not in the set) to random
//! destinations, port 9: the common case, accepted by the policy after
//! every rule failed. `matching` sends a quarter of them to rules that
//! match (a jump, a reject, a drop, an accept).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use std::time::{Duration, Instant};
use xdpip::control::filter::Shared;
use xdpip::filter::compile::{compile, Iface};
use xdpip::filter::nft::build::*;
use xdpip::filter::nft::{family::IPV4, Ruleset as Nft};
use xdpip::filter::{Hook, Meta, Ruleset};

const BATCH: usize = 64;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 as u32
    }
}

fn proto(p: u8) -> Vec<xdpip::filter::nft::Expr> {
    vec![meta(16), cmp(0, &[p])]
}

fn dport(p: u16) -> Vec<xdpip::filter::nft::Expr> {
    vec![payload(2, 2, 2), cmp(0, &p.to_be_bytes())]
}

fn prefix(offset: u32, addr: [u8; 4], len: u32) -> Vec<xdpip::filter::nft::Expr> {
    let mask = (u32::MAX << (32 - len)).to_be_bytes();
    vec![payload(1, offset, 4), bitwise(&mask), cmp(0, &addr)]
}

/// The 20 rules, and the 1,000 blocked sources.
fn ruleset(rng: &mut Rng) -> Ruleset {
    let mut rs = Nft::default();
    rs.chains
        .push(base_chain(IPV4, "filter", "forward", 2, 0, true));
    rs.chains.push(chain(IPV4, "filter", "mgmt"));
    let blocked: Vec<Vec<u8>> = (0..1000)
        .map(|_| (0xc000_0000 | rng.next() >> 2).to_be_bytes().to_vec())
        .collect();
    rs.sets.push(set(IPV4, "filter", "blocklist", blocked));
    let (drop, accept) = (|| verdict(0, None), || verdict(1, None));
    let r: Vec<Vec<xdpip::filter::nft::Expr>> = vec![
        vec![
            payload(1, 12, 4),
            lookup("blocklist", false),
            counter(),
            drop(),
        ],
        [proto(6), dport(22), vec![verdict(-3, Some("mgmt"))]].concat(),
        [proto(6), dport(80), vec![accept()]].concat(),
        [proto(6), dport(443), vec![accept()]].concat(),
        [proto(17), dport(53), vec![accept()]].concat(),
        [
            proto(17),
            dport(123),
            prefix(12, [10, 1, 0, 0], 16),
            vec![accept()],
        ]
        .concat(),
        [
            proto(17),
            vec![
                payload(2, 2, 2),
                range(0, &6000u16.to_be_bytes(), &6999u16.to_be_bytes()),
            ],
            vec![reject(0, 10)],
        ]
        .concat(),
        [proto(17), dport(5555), vec![reject(0, 13)]].concat(),
        [proto(6), dport(23), vec![reject(1, 0)]].concat(),
        [
            proto(1),
            vec![payload(2, 0, 1), cmp(0, &[8])],
            vec![accept()],
        ]
        .concat(),
        [
            proto(1),
            vec![payload(2, 0, 1), cmp(0, &[13])],
            vec![drop()],
        ]
        .concat(),
        vec![payload(1, 8, 1), cmp(2, &[2]), drop()],
        vec![payload(1, 1, 1), bitwise(&[0xfc]), cmp(0, &[0xb8]), drop()],
        vec![
            payload(1, 2, 2),
            cmp(4, &1400u16.to_be_bytes()),
            payload(1, 9, 1),
            cmp(0, &[17]),
            drop(),
        ],
        [
            vec![meta(6), cmp(0, b"eth1\0\0\0\0\0\0\0\0\0\0\0\0")],
            prefix(12, [10, 1, 0, 0], 16),
            vec![drop()],
        ]
        .concat(),
        [prefix(16, [192, 168, 0, 0], 16), vec![drop()]].concat(),
        [prefix(12, [172, 16, 0, 0], 12), vec![drop()]].concat(),
        [
            proto(6),
            dport(3306),
            vec![
                payload(1, 12, 4),
                bitwise(&[255, 0, 0, 0]),
                cmp(1, &[10, 0, 0, 0]),
            ],
            vec![drop()],
        ]
        .concat(),
        [
            proto(17),
            vec![payload(2, 0, 2), cmp(0, &19u16.to_be_bytes())],
            vec![drop()],
        ]
        .concat(),
        [proto(47), vec![drop()]].concat(),
    ];
    assert_eq!(r.len(), 20);
    for (i, e) in r.into_iter().enumerate() {
        rs.rules
            .push(rule(IPV4, "filter", "forward", i as u64 + 1, e));
    }
    rs.rules.push(rule(
        IPV4,
        "filter",
        "mgmt",
        30,
        [prefix(12, [10, 1, 0, 0], 16), vec![verdict(1, None)]].concat(),
    ));
    rs.rules
        .push(rule(IPV4, "filter", "mgmt", 31, vec![verdict(0, None)]));
    let ports = [
        Iface {
            name: "eth0".into(),
            ifindex: 10,
        },
        Iface {
            name: "eth1".into(),
            ifindex: 11,
        },
    ];
    let r = compile(&rs, &ports);
    assert!(
        r.active(Hook::Forward) && r.kernel_hooks == 0,
        "{:?}",
        r.kernel_reasons
    );
    r
}

fn packets(rng: &mut Rng, matching: bool) -> Vec<Meta> {
    (0..BATCH)
        .map(|i| {
            let mut m = Meta {
                iif: 0,
                oif: 1,
                src: 0x0a01_0000 | (rng.next() & 0xffff),
                dst: 0x0a02_0000 | (rng.next() & 0xffff),
                proto: 17,
                tos: 0,
                ttl: 63,
                len: 28,
                l4: Some((1024 + (rng.next() & 0x7fff)) << 16 | 9),
            };
            if matching && i % 4 == 0 {
                match (i / 4) % 4 {
                    0 => {
                        m.proto = 6;
                        m.l4 = Some(40000 << 16 | 22); // jump, accept
                    }
                    1 => m.l4 = Some(40000 << 16 | 6100), // reject
                    2 => m.ttl = 1,                       // drop
                    _ => {
                        m.proto = 6;
                        m.l4 = Some(40000 << 16 | 443); // accept
                    }
                }
            }
            m
        })
        .collect()
}

/// Frames of the batch, headers only, for the parse variant.
fn headers(metas: &[Meta]) -> Vec<[u8; 28]> {
    metas
        .iter()
        .map(|m| {
            let mut h = [0u8; 28];
            h[0] = 0x45;
            h[1] = m.tos;
            h[2..4].copy_from_slice(&m.len.max(28).to_be_bytes());
            h[8] = m.ttl;
            h[9] = m.proto;
            h[12..16].copy_from_slice(&m.src.to_be_bytes());
            h[16..20].copy_from_slice(&m.dst.to_be_bytes());
            h[20..24].copy_from_slice(&m.l4.unwrap_or(0).to_be_bytes());
            h
        })
        .collect()
}

fn time(iters: u64, mut f: impl FnMut()) -> Duration {
    let t = Instant::now();
    for _ in 0..iters {
        f();
    }
    t.elapsed()
}

fn bench(c: &mut Criterion) {
    let mut rng = Rng(0x5eed_f11e);
    let rules = Shared::new(ruleset(&mut rng), 1).current();
    let empty = Shared::new(Ruleset::default(), 1).current();
    let mut g = c.benchmark_group("filter");
    g.throughput(Throughput::Elements(BATCH as u64));
    for (name, r, matching) in [
        ("empty", &empty, false),
        ("20_rules_1000_set", &rules, false),
        ("20_rules_1000_set/matching", &rules, true),
    ] {
        let batch = packets(&mut rng, matching);
        g.bench_function(format!("judge/{name}/x{BATCH}"), |b| {
            b.iter_custom(|iters| {
                time(iters, || {
                    for m in black_box(&batch) {
                        black_box(r.judge(Hook::Forward, m, 0));
                    }
                })
            })
        });
        let frames = headers(&batch);
        g.bench_function(format!("parse_judge/{name}/x{BATCH}"), |b| {
            b.iter_custom(|iters| {
                time(iters, || {
                    for f in black_box(&frames) {
                        if r.active(Hook::Forward) {
                            if let Some(m) = Meta::parse(f, 0, 1) {
                                black_box(r.judge(Hook::Forward, &m, 0));
                            }
                        }
                    }
                })
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
