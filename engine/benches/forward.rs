//! The whole forward path, `xdpip::forward::forward`, over batches of 64
//! frames to random destinations, through tables of 1k and 1M routes, and
//! of the default route alone for the cost of the path around the lookup;
//! per batch, so per packet is a 64th.
//!
//! Frames are written outside the timed section (as a NIC would have
//! written them) from a pool of 2^20 random destinations; `timer` is the
//! cost of timing an empty batch, to subtract. The `prefetch` variant first
//! hints every frame's route lookup to the cache, and the `lookup_batch`
//! variant looks the whole batch up in stages first, as a worker could.

mod tables;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use xdpip::fib::{Fib, NextHop};
use xdpip::forward::{forward, Verdict};
use xdpip::neigh::{nud, NeighTable, Neighbour};
use xdpip::snapshot::{Port, Snapshot};
use xdpip::wire::{ipv4, MacAddr};

const BATCH: usize = 64;
/// Room for each frame in the batch buffer, as in UMEM.
const SLOT: usize = 64;
/// A frame: Ethernet, IPv4, 8 bytes of UDP.
const FRAME: usize = 14 + 28;
const POOL: usize = 1 << 20;
const GATEWAYS: u8 = 8;

fn snapshot(routes: usize) -> Snapshot {
    let mut snap = Snapshot::default();
    for (i, name) in ["eth0", "eth1"].iter().enumerate() {
        snap.ports.push(Port {
            name: name.to_string(),
            ifindex: 10 + i as u32,
            mac: MacAddr([2, 0, 0, 0, 0, i as u8]),
            ..Port::default()
        });
    }
    let table = tables::internet_like(routes, 0x5eed, |i| NextHop {
        gateway: Some(Ipv4Addr::new(10, 2, 0, 1 + (i % GATEWAYS as usize) as u8)),
        ifindex: 11,
        weight: 1,
    });
    let mut fib = Fib::builder();
    for r in table {
        fib.add(r).expect("valid route");
    }
    snap.fib = Arc::new(fib.build());
    let mut neigh = NeighTable::default();
    for g in 1..=GATEWAYS {
        let n = Neighbour {
            mac: MacAddr([2, 0, 0, 0, 9, g]),
            state: nud::REACHABLE,
        };
        neigh.insert(11, Ipv4Addr::new(10, 2, 0, g), n);
    }
    snap.neigh = Arc::new(neigh);
    snap
}

/// Writes a batch of frames to eth0's MAC, to `dsts`.
fn fill(buf: &mut [u8], mac: MacAddr, dsts: &[Ipv4Addr]) {
    for (frame, &dst) in buf.chunks_mut(SLOT).zip(dsts) {
        frame[..6].copy_from_slice(&mac.0);
        frame[6..12].copy_from_slice(&[2, 0, 0, 0, 8, 8]);
        frame[12..14].copy_from_slice(&[0x08, 0x00]);
        let repr = ipv4::Repr {
            src: Ipv4Addr::new(10, 1, 0, 1),
            dst,
            protocol: 17,
            ttl: 64,
            payload_len: 8,
            ..ipv4::Repr::default()
        };
        repr.emit(&mut ipv4::Packet::new_unchecked(&mut frame[14..FRAME]));
    }
}

/// What a worker does for a batch before forwarding it.
#[derive(Clone, Copy)]
enum Hint {
    /// Nothing.
    None,
    /// [`Fib::prefetch`] for every frame.
    Prefetch,
    /// [`Fib::lookup_batch`] over the batch, its results unused.
    LookupBatch,
}

impl Hint {
    fn suffix(self) -> &'static str {
        match self {
            Hint::None => "",
            Hint::Prefetch => "/prefetch",
            Hint::LookupBatch => "/lookup_batch",
        }
    }
}

/// The destination of a frame.
fn dst(frame: &[u8]) -> Ipv4Addr {
    ipv4::Packet::new_unchecked(&frame[14..FRAME]).dst()
}

fn forwarding(c: &mut Criterion) {
    let pool = tables::destinations(POOL, 0xd57);
    let mut g = c.benchmark_group("forward");
    g.throughput(Throughput::Elements(BATCH as u64));
    let mut buf = vec![0u8; BATCH * SLOT];

    g.bench_function("timer", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let t = Instant::now();
                black_box(&mut buf);
                total += t.elapsed();
            }
            total
        })
    });

    for n in [1, 1_000, 1_000_000] {
        let snap = snapshot(n);
        let mac = snap.ports[0].mac;
        // Every frame is to be transmitted, through the whole path.
        fill(&mut buf, mac, &pool[..BATCH]);
        for frame in buf.chunks_mut(SLOT) {
            let v = forward(&mut frame[..FRAME], 0, &snap, 0);
            assert_eq!(
                v,
                Verdict::Transmit {
                    port: 1,
                    len: FRAME
                }
            );
        }

        for hint in [Hint::None, Hint::Prefetch, Hint::LookupBatch] {
            let name = format!("{n}/x64{}", hint.suffix());
            let mut at = 0;
            let mut dsts = [Ipv4Addr::UNSPECIFIED; BATCH];
            let mut routes = [None; BATCH];
            g.bench_function(name, |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        fill(&mut buf, mac, &pool[at..at + BATCH]);
                        at = (at + BATCH) % POOL;
                        let t = Instant::now();
                        match hint {
                            Hint::None => {}
                            Hint::Prefetch => {
                                for frame in buf.chunks(SLOT) {
                                    snap.fib.prefetch(dst(frame));
                                }
                            }
                            Hint::LookupBatch => {
                                for (d, frame) in dsts.iter_mut().zip(buf.chunks(SLOT)) {
                                    *d = dst(frame);
                                }
                                snap.fib.lookup_batch(&dsts, &mut routes);
                            }
                        }
                        for frame in buf.chunks_mut(SLOT) {
                            black_box(forward(&mut frame[..FRAME], 0, &snap, 0));
                        }
                        total += t.elapsed();
                    }
                    total
                })
            });
        }
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30);
    targets = forwarding
}
criterion_main!(benches);
