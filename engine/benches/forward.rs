//! The whole forward path as a worker runs it on a received batch —
//! `xdpip::forward::forward_batch`: validation, staged FIB lookup with
//! prefetches, adjacency, TTL and MTU, rewrite — over batches of 64 frames
//! to random destinations, through tables of 1, 1k and 1M routes. Per
//! batch, so per packet is a 64th.
//!
//! Beside it, with the same routes and destinations, two peers:
//! - `poptrie/1000/x64`: a bare lookup in the `poptrie` crate (Poptrie,
//!   SIGCOMM 2015) over the same 1,000 routes;
//! - `floor/1000000/x64`: a flat DIR-24 array (2^24 two-byte next-hop
//!   indexes) holding the same 1,000,000 routes expanded to /24: one memory
//!   access per lookup, the physical floor of any lookup.
//!
//! And `forward/1000/x64/filter20`: `forward/1000/x64` with the host's
//! filter judging the forward hook, 20 rules and a 1,000-address set
//! (`xdpip::filter::sample`, the filter bench's ruleset). Its frames are
//! one flow but for their destinations, so the filter judges them on the
//! memo of the frame before and their destination, the memo carried from
//! batch to batch as a worker carries it (`xdpip::worker::Carry`); the
//! paired rounds also time the same with a random source per frame, a new
//! flow every packet, where the memo never serves.
//!
//! Every run ends with the ratios of the targets: `forward/1000` against
//! Poptrie, `forward/1000000` against the floor, and the filter's cost.
//! Each is measured twice: as the ratio of criterion's medians, and paired:
//! rounds that time the two sides in turn over the same destinations, and
//! the median of the rounds' ratios. This host has slow and fast spells
//! (the same binary gives a path at 15 or at 28 ns); a spell slows both
//! sides of a round alike, so the paired ratio is the one the targets are
//! judged by.
//!
//! Frames are written outside the timed section (as a NIC would have
//! written them) from a pool of 2^20 random destinations; `timer` is the
//! cost of timing an empty batch.

mod tables;

use criterion::{Criterion, Throughput};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::hint::black_box;
use std::net::Ipv4Addr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use xdpip::fib::{Fib, NextHop, Route};
use xdpip::forward::{forward_batch, Frames, Step};
use xdpip::neigh::{nud, NeighTable, Neighbour};
use xdpip::snapshot::{Port, Snapshot, Sysctl};
use xdpip::wire::{ipv4, MacAddr};
use xdpip::worker::{Carry, Hooks};

const BATCH: usize = 64;
/// Room for each frame in the batch buffer, as in UMEM.
const SLOT: usize = 64;
/// A frame: Ethernet, IPv4, 8 bytes of UDP.
const FRAME: usize = 14 + 28;
const POOL: usize = 1 << 20;
const GATEWAYS: u8 = 8;

fn nexthop(i: usize) -> NextHop {
    NextHop {
        gateway: Some(Ipv4Addr::new(10, 2, 0, 1 + (i % GATEWAYS as usize) as u8)),
        ifindex: 11,
        weight: 1,
    }
}

fn snapshot(routes: &[Route]) -> Snapshot {
    let ports: Vec<Port> = ["eth0", "eth1"]
        .iter()
        .enumerate()
        .map(|(i, name)| Port {
            name: name.to_string(),
            ifindex: 10 + i as u32,
            mac: MacAddr([2, 0, 0, 0, 0, i as u8]),
            ..Port::default()
        })
        .collect();
    let mut fib = Fib::builder();
    for r in routes {
        fib.add(r.clone()).expect("valid route");
    }
    let mut neigh = NeighTable::default();
    for g in 1..=GATEWAYS {
        let n = Neighbour {
            mac: MacAddr([2, 0, 0, 0, 9, g]),
            state: nud::REACHABLE,
        };
        neigh.insert(11, Ipv4Addr::new(10, 2, 0, g), n);
    }
    let fib = Arc::new(fib.build());
    xdpip::fib::advise_huge_pages(&fib);
    Snapshot::new(fib, Arc::new(neigh), ports, Sysctl::default())
}

/// Where the frames of a batch come from.
#[derive(Clone, Copy)]
enum Sources {
    /// One host, 10.1.0.1.
    One,
    /// Each frame from another random unicast address: the destinations
    /// of the batch, in reverse.
    Random,
}

/// Writes a batch of frames to eth0's MAC, to `dsts`.
fn fill(buf: &mut [u8], mac: MacAddr, dsts: &[Ipv4Addr], sources: Sources) {
    for (j, (frame, &dst)) in buf.chunks_mut(SLOT).zip(dsts).enumerate() {
        frame[..6].copy_from_slice(&mac.0);
        frame[6..12].copy_from_slice(&[2, 0, 0, 0, 8, 8]);
        frame[12..14].copy_from_slice(&[0x08, 0x00]);
        let repr = ipv4::Repr {
            src: match sources {
                Sources::One => Ipv4Addr::new(10, 1, 0, 1),
                Sources::Random => dsts[dsts.len() - 1 - j],
            },
            dst,
            protocol: 17,
            ttl: 64,
            payload_len: 8,
            ..ipv4::Repr::default()
        };
        repr.emit(&mut ipv4::Packet::new_unchecked(&mut frame[14..FRAME]));
    }
}

/// The batch buffer as frames, the way UMEM holds them: one per slot.
struct Slots<'a>(&'a mut [u8]);

impl Frames for Slots<'_> {
    fn count(&self) -> usize {
        self.0.len() / SLOT
    }
    fn frame(&mut self, i: usize) -> &mut [u8] {
        &mut self.0[i * SLOT..i * SLOT + FRAME]
    }
}

/// A flat DIR-24 table: the next-hop index of every /24, 2 bytes each.
struct Dir24(Vec<u16>);

impl Dir24 {
    fn new(routes: &[Route]) -> Dir24 {
        let mut t = vec![0u16; 1 << 24];
        let mut sorted: Vec<&Route> = routes.iter().collect();
        sorted.sort_by_key(|r| r.len);
        for (i, r) in sorted.iter().enumerate() {
            let len = r.len.min(24);
            let first = (u32::from(r.prefix) >> 8) as usize & !((1usize << (24 - len)) - 1);
            let n = 1usize << (24 - len);
            t[first..first + n].fill(1 + (i % 0x7fff) as u16);
        }
        xdpip::fib::advise_huge_pages_of(&t);
        Dir24(t)
    }

    #[inline(always)]
    fn lookup(&self, a: Ipv4Addr) -> u16 {
        self.0[(u32::from(a) >> 8) as usize]
    }
}

/// The time per iteration of every sample of each benchmark, as measured:
/// for the ratios printed at the end.
type Means = Rc<RefCell<BTreeMap<String, Vec<f64>>>>;

/// Runs `batch` on `iters` consecutive batches of destinations of `pool`
/// from `*at` on, wrapping; `batch` times the part it measures. Their sum.
fn timed(
    pool: &[Ipv4Addr],
    iters: u64,
    at: &mut usize,
    mut batch: impl FnMut(&[Ipv4Addr]) -> Duration,
) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        total += batch(&pool[*at..*at + BATCH]);
        *at = (*at + BATCH) % POOL;
    }
    total
}

fn record(means: &Means, id: &str, d: Duration, iters: u64) {
    if iters > 0 {
        let mut m = means.borrow_mut();
        m.entry(id.to_string())
            .or_default()
            .push(d.as_secs_f64() / iters as f64);
    }
}

/// Paired rounds by name: each round's ns per packet of the two sides.
type Paired = Rc<RefCell<BTreeMap<&'static str, Vec<(f64, f64)>>>>;

/// Rounds of a paired measurement, and batches per side in a round (about
/// 2 ms at 30 ns a packet).
const ROUNDS: usize = 201;
const ROUND_BATCHES: u64 = 1024;

/// Times the two sides of `side` in turns (`side(true, ..)` is the
/// numerator), `ROUND_BATCHES` batches each per round over the same
/// destinations, the order alternating; each round's ns per packet of the
/// two. Each side runs with what the other left in the caches, as in a
/// worker.
fn paired(
    pool: &[Ipv4Addr],
    mut side: impl FnMut(bool, &[Ipv4Addr]) -> Duration,
) -> Vec<(f64, f64)> {
    let mut at = 0;
    (0..ROUNDS)
        .map(|r| {
            let from = at;
            let first = r % 2 == 0;
            let t1 = timed(pool, ROUND_BATCHES, &mut at, |d| side(first, d));
            at = from;
            let t2 = timed(pool, ROUND_BATCHES, &mut at, |d| side(!first, d));
            let (a, b) = if first { (t1, t2) } else { (t2, t1) };
            let ns = |t: Duration| t.as_secs_f64() * 1e9 / (ROUND_BATCHES as usize * BATCH) as f64;
            (ns(a), ns(b))
        })
        .collect()
}

/// What a batch goes through: no filter (`()`), or the host's filter's
/// hooks, as the worker runs them.
trait Through {
    fn forward(&mut self, frames: &mut Slots, snap: &Snapshot, steps: &mut [Step]) -> usize;
}

impl Through for () {
    fn forward(&mut self, frames: &mut Slots, snap: &Snapshot, steps: &mut [Step]) -> usize {
        forward_batch(frames, 0, snap, self, steps)
    }
}

impl Through for Hooks<'_> {
    fn forward(&mut self, frames: &mut Slots, snap: &Snapshot, steps: &mut [Step]) -> usize {
        Hooks::forward(self, frames, 0, snap, steps)
    }
}

/// One batch through `forward_batch`, timed; the frames written first.
fn forward_timed<T: Through>(
    buf: &mut [u8],
    snap: &Snapshot,
    through: &mut T,
    steps: &mut [Step],
    dsts: &[Ipv4Addr],
    sources: Sources,
) -> Duration {
    fill(buf, snap.ports[0].mac, dsts, sources);
    let t = Instant::now();
    black_box(through.forward(&mut Slots(buf), snap, steps));
    t.elapsed()
}

/// Paired rounds of the forward path (one source, no filter) against bare
/// lookups by `lookup` of the same destinations.
fn against_lookups<R>(
    pool: &[Ipv4Addr],
    buf: &mut [u8],
    snap: &Snapshot,
    steps: &mut [Step],
    lookup: impl Fn(Ipv4Addr) -> R,
) -> Vec<(f64, f64)> {
    paired(pool, |fwd, dsts| {
        if fwd {
            forward_timed(buf, snap, &mut (), steps, dsts, Sources::One)
        } else {
            lookups_timed(dsts, &lookup)
        }
    })
}

/// Bare lookups of a batch, timed.
fn lookups_timed<R>(dsts: &[Ipv4Addr], lookup: impl Fn(Ipv4Addr) -> R) -> Duration {
    let t = Instant::now();
    for &d in dsts {
        black_box(lookup(black_box(d)));
    }
    t.elapsed()
}

/// The paired measurements' names: what each ratio divides.
const POPTRIE: &str = "forward/1000/x64 / poptrie/1000/x64";
const FLOOR: &str = "forward/1000000/x64 / floor/1000000/x64";
const FILTER: &str = "forward/1000/x64/filter20 / forward/1000/x64";
const RP_LOOSE: &str = "forward/1000000/x64, random sources, rp_filter 2 / 0";
const FILTER_FLOWS: &str = "forward/1000/x64/filter20 / forward/1000/x64, random sources";

/// Paired rounds run unless criterion only lists, tests or profiles.
fn pairs_on() -> bool {
    !std::env::args().any(|a| matches!(a.as_str(), "--list" | "--test" | "--profile-time"))
}

fn forwarding(c: &mut Criterion, means: &Means, pairs: &Paired) {
    let pool = tables::destinations(POOL, 0xd57);
    let mut g = c.benchmark_group("forward");
    g.throughput(Throughput::Elements(BATCH as u64));
    let mut buf = vec![0u8; BATCH * SLOT];
    let mut steps = [Step::Slow; BATCH];

    for n in [1, 1_000, 1_000_000] {
        let routes = tables::internet_like(n, 0x5eed, nexthop);
        let snap = snapshot(&routes);
        let mac = snap.ports[0].mac;
        // Every frame is to be transmitted, through the whole path.
        fill(&mut buf, mac, &pool[..BATCH], Sources::One);
        let sent = forward_batch(&mut Slots(&mut buf), 0, &snap, &mut (), &mut steps);
        assert_eq!(sent, BATCH, "every frame forwarded by the vector path");
        assert!(steps.iter().all(|s| *s
            == Step::Tx {
                port: 1,
                len: FRAME as u16
            }));

        let id = format!("forward/{n}/x64");
        let mut at = 0;
        g.bench_function(format!("{n}/x64"), |b| {
            b.iter_custom(|iters| {
                let total = timed(&pool, iters, &mut at, |dsts| {
                    forward_timed(&mut buf, &snap, &mut (), &mut steps, dsts, Sources::One)
                });
                record(means, &id, total, iters);
                total
            })
        });

        if n == 1_000 {
            // The same batches, with the host's filter judging the forward
            // hook: 20 rules and a set of 1,000 addresses (the filter
            // bench's), which none of these packets matches but for the
            // few to 192.168.0.0/16. As the worker asks it.
            let rules = xdpip::filter::sample::twenty_rules(0x5eed_f11e);
            let mut refused = vec![None; BATCH];
            // The memo of the last flow, from batch to batch, as a worker
            // keeps it.
            let mut carry = Carry::default();
            fill(&mut buf, mac, &pool[..BATCH], Sources::One);
            let hooks = &mut Hooks::new(&rules, 0, &mut refused);
            let sent = hooks.forward(&mut Slots(&mut buf), 0, &snap, &mut steps);
            assert!(
                sent > BATCH / 2,
                "{sent} frames forwarded through the filter"
            );
            assert!(steps
                .iter()
                .all(|s| matches!(s, Step::Tx { port: 1, .. } | Step::Refused)));
            let id = "forward/1000/x64/filter20";
            let mut at = 0;
            g.bench_function("1000/x64/filter20", |b| {
                b.iter_custom(|iters| {
                    let total = timed(&pool, iters, &mut at, |dsts| {
                        let hooks = &mut Hooks::new(&rules, 0, &mut refused).carrying(&mut carry);
                        forward_timed(&mut buf, &snap, hooks, &mut steps, dsts, Sources::One)
                    });
                    record(means, id, total, iters);
                    total
                })
            });
            let trie: poptrie::Poptrie<(Ipv4Addr, u8), u16> = routes
                .iter()
                .enumerate()
                .map(|(i, r)| ((r.prefix, r.len), i as u16))
                .collect();
            let mut at = 0;
            let id = "poptrie/1000/x64";
            g.bench_function("poptrie/1000/x64", |b| {
                b.iter_custom(|iters| {
                    let total = timed(&pool, iters, &mut at, |dsts| {
                        lookups_timed(dsts, |d| trie.lookup(d))
                    });
                    record(means, id, total, iters);
                    total
                })
            });
            if pairs_on() {
                let v = against_lookups(&pool, &mut buf, &snap, &mut steps, |d| trie.lookup(d));
                pairs.borrow_mut().insert(POPTRIE, v);
                // And with a random source per frame: every frame a new
                // flow, so the filter's memo of the frame before (a burst
                // of one flow) never serves: its worst case.
                for (name, sources) in [(FILTER, Sources::One), (FILTER_FLOWS, Sources::Random)] {
                    let v = paired(&pool, |filtered, dsts| {
                        if filtered {
                            let hooks =
                                &mut Hooks::new(&rules, 0, &mut refused).carrying(&mut carry);
                            forward_timed(&mut buf, &snap, hooks, &mut steps, dsts, sources)
                        } else {
                            forward_timed(&mut buf, &snap, &mut (), &mut steps, dsts, sources)
                        }
                    });
                    pairs.borrow_mut().insert(name, v);
                }
            }
        }
        if n == 1_000_000 {
            let dir = Dir24::new(&routes);
            let mut at = 0;
            let id = "floor/1000000/x64";
            g.bench_function("floor/1000000/x64", |b| {
                b.iter_custom(|iters| {
                    let total = timed(&pool, iters, &mut at, |dsts| {
                        lookups_timed(dsts, |d| dir.lookup(d))
                    });
                    record(means, id, total, iters);
                    total
                })
            });
            if pairs_on() {
                let v = against_lookups(&pool, &mut buf, &snap, &mut steps, |d| dir.lookup(d));
                pairs.borrow_mut().insert(FLOOR, v);
                // rp_filter 2 (loose), the default of many distributions:
                // the route back to every source looked up too. Random
                // sources on both sides; each has the default route back.
                let mut loose = snap.clone();
                loose.ports[0].rp_filter = xdpip::iface::RpFilter::Loose;
                let v = paired(&pool, |rp, dsts| {
                    let s = if rp { &loose } else { &snap };
                    forward_timed(&mut buf, s, &mut (), &mut steps, dsts, Sources::Random)
                });
                pairs.borrow_mut().insert(RP_LOOSE, v);
            }
        }
    }
    g.finish();
}

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30)
        .configure_from_args();
    let means = Means::default();
    let pairs = Paired::default();
    forwarding(&mut c, &means, &pairs);
    c.final_summary();

    let m = means.borrow();
    // The median sample: robust to the odd preempted one.
    let per_packet = |id: &str| {
        m.get(id).filter(|v| !v.is_empty()).map(|v| {
            let mut v = v.clone();
            v.sort_by(f64::total_cmp);
            v[v.len() / 2] * 1e9 / BATCH as f64
        })
    };
    println!("\nns per packet (median sample):");
    for id in m.keys() {
        if let Some(ns) = per_packet(id) {
            println!("  {id:<26} {ns:8.2}");
        }
    }
    // Each target is an upper bound on its ratio.
    let targets = [(POPTRIE, 1.0), (FLOOR, 3.0), (FILTER, 1.2)];
    println!("ratios of those medians:");
    for (name, _) in &targets[..] {
        let (a, b) = name.split_once(" / ").expect("a ratio's name");
        if let (Some(a), Some(b)) = (per_packet(a), per_packet(b)) {
            println!("  {name:<46} {:.2}", a / b);
        }
    }
    let pairs = pairs.borrow();
    if !pairs.is_empty() {
        println!(
            "paired ({ROUNDS} rounds of {ROUND_BATCHES} batches a side), median [quartiles], \
             and the targets:"
        );
    }
    // The filter's worst case and the cost of loose reverse path
    // filtering have no target: they are shown.
    let shown = [(FILTER_FLOWS, f64::NAN), (RP_LOOSE, f64::NAN)];
    for (name, target) in targets.into_iter().chain(shown) {
        let Some(v) = pairs.get(name) else { continue };
        let quartiles = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            let q = |f: f64| v[((v.len() - 1) as f64 * f).round() as usize];
            [q(0.25), q(0.5), q(0.75)]
        };
        let [r1, r, r3] = quartiles(v.iter().map(|(a, b)| a / b).collect());
        let [_, a, _] = quartiles(v.iter().map(|p| p.0).collect());
        let [_, b, _] = quartiles(v.iter().map(|p| p.1).collect());
        let verdict = if target.is_nan() {
            String::new()
        } else {
            let met = if r <= target { "met" } else { "missed" };
            format!("; target <= {target}: {met}")
        };
        println!("  {name:<46} {r:.2} [{r1:.2}, {r3:.2}] ({a:.1} / {b:.1} ns{verdict})");
    }
}
