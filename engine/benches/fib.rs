//! Longest-prefix match: lookups at 1k, 100k and 1M routes with random
//! destinations, 64 per iteration: the forward path's leaf one by one and
//! in a batch with prefetching, and the control plane's route lookup; a
//! full build of 1M routes; an update of 100 changes on 1M routes.
//!
//! Destinations come from a pool of 2^20 random addresses walked 64 at a
//! time, so a large table is read all over, as real traffic reads it,
//! rather than from a hot corner of the cache.

mod tables;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use std::hint::black_box;
use std::net::Ipv4Addr;
use std::time::Duration;
use tables::XorShift;
use xdpip::fib::{Fib, FibChange, Leaf, NextHop, Route};

const BATCH: usize = 64;
const POOL: usize = 1 << 20;

fn nexthop(i: usize) -> NextHop {
    NextHop {
        gateway: Some(Ipv4Addr::new(10, 2, 0, 1 + (i % 8) as u8)),
        ifindex: 11,
        weight: 1,
    }
}

fn table(n: usize) -> (Vec<Route>, Fib) {
    let routes = tables::internet_like(n, 0x5eed, nexthop);
    let mut b = Fib::builder();
    for r in &routes {
        b.add(r.clone()).expect("valid route");
    }
    (routes, b.build())
}

fn lookups(c: &mut Criterion) {
    let pool = tables::destinations(POOL, 0xd57);
    let mut g = c.benchmark_group("fib/lookup");
    g.throughput(Throughput::Elements(BATCH as u64));
    for n in [1_000, 100_000, 1_000_000] {
        let (_, fib) = table(n);
        eprintln!(
            "fib: {n} routes, {} distinct, {:.1} MiB",
            fib.len(),
            fib.heap_size() as f64 / (1 << 20) as f64
        );
        let mut at = 0;
        let mut next = || {
            let dsts = &pool[at..at + BATCH];
            at = (at + BATCH) % POOL;
            dsts
        };
        // The forward path's leaf, one address after the other.
        g.bench_function(format!("{n}/leaf_x64"), |b| {
            b.iter(|| {
                for &d in next() {
                    black_box(fib.leaf(black_box(d)));
                }
            })
        });
        // The same in stages over the batch, as the worker looks up.
        let mut out = [Leaf::NONE; BATCH];
        g.bench_function(format!("{n}/lookup_batch_x64"), |b| {
            b.iter(|| {
                fib.lookup_batch(black_box(next()), &mut out);
                black_box(&out);
            })
        });
        // The control plane's route lookup (`xdpip routes`, tests).
        g.bench_function(format!("{n}/route_x64"), |b| {
            b.iter(|| {
                for &d in next() {
                    black_box(fib.lookup(black_box(d)).map(|r| r.len));
                }
            })
        });
    }
    g.finish();
}

fn build(c: &mut Criterion) {
    let (routes, _) = table(1_000_000);
    let mut g = c.benchmark_group("fib/build");
    g.sample_size(10).measurement_time(Duration::from_secs(15));
    g.bench_function("1000000", |b| {
        b.iter_batched(
            || routes.clone(),
            |routes| {
                let mut b = Fib::builder();
                for r in routes {
                    b.add(r).expect("valid route");
                }
                b.build()
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

fn update(c: &mut Criterion) {
    let (routes, fib) = table(1_000_000);
    // Half withdrawals of present routes, half announcements of new /24s
    // (or replacements, where one is present).
    let mut rng = XorShift(0xc4a9);
    let changes: Vec<FibChange> = (0..100)
        .map(|i| {
            if i % 2 == 0 {
                let r = &routes[rng.next() as usize % routes.len()];
                FibChange::Remove {
                    prefix: r.prefix,
                    len: r.len,
                    metric: r.metric,
                }
            } else {
                let a = tables::unicast(&mut rng) & 0xffff_ff00;
                FibChange::Add(Route {
                    prefix: Ipv4Addr::from(a),
                    len: 24,
                    ..routes[i].clone()
                })
            }
        })
        .collect();
    let mut g = c.benchmark_group("fib/update");
    // Dropping the new table, as the old one is dropped in use, is timed.
    g.bench_function("1000000/100_changes", |b| {
        b.iter(|| fib.update(black_box(&changes)).expect("valid changes"))
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30)
}

criterion_group! {
    name = benches;
    config = config();
    targets = lookups, build, update
}
criterion_main!(benches);
