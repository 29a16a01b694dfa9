//! The packet filter's cost per packet: a forward chain of 20 rules, one of
//! them a lookup in a set of 1,000 addresses, judged for batches of 64
//! packets; per batch, so per packet is a 64th. `empty` is a ruleset
//! without rules (what a hook without rules costs), `parse_judge` parses
//! each packet's [`Meta`] from its header first, as the slow path and the
//! vector path's stage 3 do. A hook of up to 63 rules is judged in its
//! one-pass form.
//!
//! The packets are UDP from random sources (not in the set) to random
//! destinations, port 9: the common case, accepted by the policy after
//! every rule failed. `matching` sends a quarter of them to rules that
//! match (a jump, a reject, a drop, an accept).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use std::time::{Duration, Instant};
use xdpip::control::filter::Shared;
use xdpip::filter::sample::{twenty_rules, Rng};
use xdpip::filter::{Hook, Meta, Ruleset};

const BATCH: usize = 64;

fn packets(rng: &mut Rng, matching: bool) -> Vec<Meta> {
    (0..BATCH)
        .map(|i| {
            let mut m = Meta {
                iif: 0,
                oif: 1,
                src: 0x0a01_0000 | (rng.next_u32() & 0xffff),
                dst: 0x0a02_0000 | (rng.next_u32() & 0xffff),
                proto: 17,
                tos: 0,
                ttl: 63,
                len: 28,
                l4: Some((1024 + (rng.next_u32() & 0x7fff)) << 16 | 9),
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
    // The ruleset: xdpip::filter::sample, shared with the forward bench.
    let rules = Shared::new(twenty_rules(0x5eed_f11e), 1).current();
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
