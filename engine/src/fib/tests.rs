use super::*;
use crate::testutil::XorShift;
use std::cmp::Reverse;
use std::collections::BTreeMap;

fn r(p: [u8; 4], len: u8, ifindex: u32, metric: u32) -> Route {
    Route {
        prefix: Ipv4Addr::from(p),
        len,
        kind: RouteKind::Unicast,
        nexthops: vec![NextHop {
            gateway: None,
            ifindex,
            weight: 1,
        }]
        .into(),
        metric,
    }
}

fn covers(r: &Route, dst: Ipv4Addr) -> bool {
    u32::from(dst) & mask(r.len) == u32::from(r.prefix) & mask(r.len)
}

/// Linear scan as the reference for longest-prefix match: the longest
/// prefix, then the lowest metric, then the first in `routes`.
fn reference(routes: &[Route], dst: Ipv4Addr) -> Option<&Route> {
    routes
        .iter()
        .filter(|r| covers(r, dst))
        .min_by_key(|r| (Reverse(r.len), r.metric))
}

fn ifindex(r: Option<&Route>) -> Option<u32> {
    r.map(|r| r.nexthops[0].ifindex)
}

fn build(routes: impl IntoIterator<Item = Route>) -> Fib {
    let mut b = Fib::builder();
    for route in routes {
        b.add(route).unwrap();
    }
    b.build()
}

#[test]
fn longest_prefix_wins_and_host_bits_are_ignored() {
    let f = build([
        r([10, 0, 0, 0], 8, 1, 0),
        r([10, 1, 2, 3], 16, 2, 0), // host bits set
        r([10, 1, 2, 3], 32, 3, 0),
        r([10, 1, 2, 3], 20, 4, 0),
        r([10, 1, 2, 3], 28, 5, 0),
    ]);
    assert_eq!(f.lookup(Ipv4Addr::new(10, 1, 2, 3)).unwrap().len, 32);
    assert_eq!(f.lookup(Ipv4Addr::new(10, 1, 2, 4)).unwrap().len, 28);
    assert_eq!(f.lookup(Ipv4Addr::new(10, 1, 2, 99)).unwrap().len, 20);
    assert_eq!(f.lookup(Ipv4Addr::new(10, 1, 9, 9)).unwrap().len, 20);
    assert_eq!(f.lookup(Ipv4Addr::new(10, 1, 99, 9)).unwrap().len, 16);
    assert_eq!(f.lookup(Ipv4Addr::new(10, 9, 9, 9)).unwrap().len, 8);
    assert!(f.lookup(Ipv4Addr::new(11, 0, 0, 1)).is_none());
    assert_eq!(
        f.get(Ipv4Addr::new(10, 1, 0, 0), 16).unwrap().prefix,
        Ipv4Addr::new(10, 1, 0, 0)
    );
}

#[test]
fn lowest_metric_wins_for_equal_prefix() {
    for (p, len) in [([10, 0, 0, 0], 8), ([10, 1, 2, 0], 24), ([10, 1, 2, 3], 32)] {
        let f = build([r(p, len, 1, 100), r(p, len, 2, 10), r(p, len, 3, 50)]);
        assert_eq!(ifindex(f.lookup(Ipv4Addr::from(p))), Some(2), "/{len}");
        assert_eq!(f.len(), 3);
    }
}

#[test]
fn first_of_identical_routes_stays() {
    let f = build([r([10, 0, 0, 0], 8, 1, 5), r([10, 0, 0, 0], 8, 2, 5)]);
    assert_eq!(ifindex(f.lookup(Ipv4Addr::new(10, 0, 0, 1))), Some(1));
    assert_eq!(f.len(), 1);
}

#[test]
fn bad_routes_are_refused() {
    let mut b = Fib::builder();
    assert_eq!(b.add(r([0; 4], 33, 1, 0)), Err(FibError::PrefixLength(33)));
    let mut x = r([0; 4], 0, 1, 0);
    x.nexthops = Arc::from([]);
    assert_eq!(b.add(x.clone()), Err(FibError::NoNextHop));
    x.kind = RouteKind::Blackhole;
    assert!(b.add(x).is_ok());

    // An update with a bad change applies none of its changes.
    let f = build([r([10, 0, 0, 0], 8, 1, 0)]);
    let bad = f.update(&[
        FibChange::RemovePrefix {
            prefix: Ipv4Addr::new(10, 0, 0, 0),
            len: 8,
        },
        FibChange::Add(r([0; 4], 33, 1, 0)),
    ]);
    assert_eq!(bad.err(), Some(FibError::PrefixLength(33)));
    let bad = f.update(&[FibChange::Remove {
        prefix: Ipv4Addr::new(10, 0, 0, 0),
        len: 40,
        metric: 0,
    }]);
    assert_eq!(bad.err(), Some(FibError::PrefixLength(40)));
    assert_eq!(f.len(), 1);
}

#[test]
fn matches_linear_scan_on_random_tables() {
    let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
    let mut next = || rng.next();
    let mut routes = Vec::new();
    let mut b = Fib::builder();
    for i in 0..2000 {
        let len = (next() % 33) as u8;
        let mut route = r((next() as u32).to_be_bytes(), len, i, (next() % 4) as u32);
        route.prefix = Ipv4Addr::from(u32::from(route.prefix) & mask(len));
        b.add(route.clone()).unwrap();
        routes.push(route);
    }
    let f = b.build();
    for _ in 0..20_000 {
        let dst = Ipv4Addr::from(next() as u32);
        assert_eq!(f.lookup(dst), reference(&routes, dst), "{dst}");
    }
}

#[test]
fn ecmp_spreads_by_weight() {
    let mut route = r([0; 4], 0, 1, 0);
    let mut set = route.nexthops.to_vec();
    set.push(NextHop {
        gateway: None,
        ifindex: 2,
        weight: 3,
    });
    route.nexthops = set.into();
    let mut counts = [0u32; 3];
    for i in 0..40_000u32 {
        let h = i.wrapping_mul(0x9e37_79b9);
        counts[route.nexthop(h).unwrap().ifindex as usize] += 1;
    }
    // weights 1:3 → about 10000 and 30000
    assert!((9_000..11_000).contains(&counts[1]), "{counts:?}");
    assert!((29_000..31_000).contains(&counts[2]), "{counts:?}");
}

#[test]
fn removal_uncovers_next_metric_then_shorter_prefix() {
    let p = Ipv4Addr::new(10, 1, 2, 0);
    for (len, shorter) in [(24u8, 20u8), (8, 4), (32, 24), (17, 16), (16, 0)] {
        let dst = Ipv4Addr::from(u32::from(p) & mask(len));
        let f = build([
            r(dst.octets(), shorter, 1, 0),
            r(dst.octets(), len, 2, 10),
            r(dst.octets(), len, 3, 20),
        ]);
        assert_eq!(ifindex(f.lookup(dst)), Some(2), "/{len}");
        let remove = |metric| FibChange::Remove {
            prefix: dst,
            len,
            metric,
        };
        let f2 = f.update(&[remove(10)]).unwrap();
        assert_eq!(ifindex(f2.lookup(dst)), Some(3), "/{len}");
        let f3 = f2.update(&[remove(20)]).unwrap();
        assert_eq!(ifindex(f3.lookup(dst)), Some(1), "/{len}");
        assert_eq!((f.len(), f2.len(), f3.len()), (3, 2, 1));
        // Removing what is not there changes nothing.
        let f4 = f3.update(&[remove(20), remove(7)]).unwrap();
        assert_eq!(ifindex(f4.lookup(dst)), Some(1), "/{len}");
        assert_eq!(f4.len(), 1);
        // The old tables are untouched.
        assert_eq!(ifindex(f.lookup(dst)), Some(2), "/{len}");
        assert_eq!(ifindex(f2.lookup(dst)), Some(3), "/{len}");
    }
}

#[test]
fn remove_prefix_removes_every_metric_and_add_replaces_same_metric() {
    let dst = Ipv4Addr::new(192, 0, 2, 1);
    let f = build([
        r([0; 4], 0, 1, 0),
        r([192, 0, 2, 0], 24, 2, 1),
        r([192, 0, 2, 0], 24, 3, 2),
        r([192, 0, 0, 0], 16, 4, 1),
        r([192, 0, 0, 0], 16, 5, 2),
    ]);
    let f2 = f
        .update(&[
            FibChange::RemovePrefix {
                prefix: Ipv4Addr::new(192, 0, 2, 77), // host bits ignored
                len: 24,
            },
            FibChange::Add(r([192, 0, 0, 0], 16, 6, 1)),
        ])
        .unwrap();
    assert_eq!(ifindex(f2.lookup(dst)), Some(6));
    assert_eq!(f2.len(), 3);
    let f3 = f2
        .update(&[FibChange::RemovePrefix {
            prefix: Ipv4Addr::new(192, 0, 0, 0),
            len: 16,
        }])
        .unwrap();
    assert_eq!(ifindex(f3.lookup(dst)), Some(1));
    assert_eq!(f3.len(), 1);
    let empty = f3
        .update(&[FibChange::RemovePrefix {
            prefix: Ipv4Addr::UNSPECIFIED,
            len: 0,
        }])
        .unwrap();
    assert!(empty.is_empty());
    assert_eq!(empty.lookup(dst), None);
    assert_eq!(empty.routes().count(), 0);
}

#[test]
fn accessors_take_any_address() {
    let full = build([
        r([0; 4], 0, 1, 0),
        r([255, 255, 255, 255], 32, 2, 0),
        r([0, 0, 0, 0], 32, 3, 0),
        r([255, 255, 255, 0], 25, 4, 0),
    ]);
    for f in [Fib::default(), full] {
        for a in [0, 1, 255, 256, u32::MAX - 1, u32::MAX, 0x8000_0000] {
            let dst = Ipv4Addr::from(a);
            let mut out = [Leaf::NONE];
            f.lookup_batch(&[dst], &mut out);
            assert_eq!(out[0], f.leaf(dst));
            assert_eq!(out[0], f.lookup(dst).map_or(Leaf::NONE, |r| f.leaf_of(r)));
            f.prefetch(dst);
            for len in [0, 16, 17, 24, 25, 32, 33, 255] {
                let _ = f.get(dst, len);
            }
        }
    }
}

#[test]
fn large_blocks_take_wide_tables() {
    // 40 000 host routes in one /16, each through its own next hop: more
    // sets than 16-bit entries number; and prefixes of every length over
    // them.
    let mut routes: Vec<Route> = (0..40_000u32)
        .map(|i| {
            let a = 0x0a07_0000 | (i * 7919) & 0xffff;
            r(a.to_be_bytes(), 32, i, 0)
        })
        .collect();
    for (i, len) in (17..=31).enumerate() {
        let p = 0x0a07_5555 & mask(len);
        routes.push(r(p.to_be_bytes(), len, 100_000 + i as u32, 0));
    }
    routes.push(r([10, 0, 0, 0], 8, 7, 0));
    let mut f = build(routes.iter().cloned());
    let wide = |f: &Fib| f.block(0x0a07_0000).is_some_and(Block::is_wide);
    assert!(wide(&f));
    let mut rng = XorShift(5);
    let probe = |f: &Fib, routes: &[Route], rng: &mut XorShift| {
        for _ in 0..500 {
            let dst = Ipv4Addr::from(0x0a07_0000 | rng.next() as u32 & 0xffff);
            let want = reference(routes, dst);
            assert_eq!(f.lookup(dst), want, "{dst}");
            assert_eq!(
                f.leaf(dst),
                want.map_or(Leaf::NONE, |r| f.leaf_of(r)),
                "{dst}"
            );
        }
    };
    probe(&f, &routes, &mut rng);
    // Back to 16-bit entries when it shrinks and its routes share a few
    // next hops: freed set numbers are given again, lowest first.
    let changes: Vec<FibChange> = routes[..30_000]
        .iter()
        .map(|r| FibChange::RemovePrefix {
            prefix: r.prefix,
            len: r.len,
        })
        .collect();
    f = f.update(&changes).unwrap();
    routes.drain(..30_000);
    assert!(wide(&f), "the remaining routes still use high set numbers");
    for (i, route) in routes.iter_mut().enumerate() {
        *route = r(route.prefix.octets(), route.len, i as u32 % 7, 0);
    }
    let changes: Vec<FibChange> = routes.iter().cloned().map(FibChange::Add).collect();
    f = f.update(&changes).unwrap();
    assert!(!wide(&f));
    assert_eq!(f.len(), routes.len());
    assert_eq!(f.sets().count(), 7);
    probe(&f, &routes, &mut rng);
}

/// Random prefixes around a few addresses, so that they overlap, of all
/// lengths with /0, /16, /17, /24, /25 and /32 frequent.
fn random_route(rng: &mut XorShift, bases: &[u32], ifindex: u32) -> Route {
    const LENS: [u8; 6] = [0, 16, 17, 24, 25, 32];
    let x = rng.next();
    let len = if x.is_multiple_of(3) {
        LENS[(x >> 8) as usize % LENS.len()]
    } else {
        ((x >> 8) % 33) as u8
    };
    let base = bases[(x >> 16) as usize % bases.len()];
    // Flip a few bits here and there, past the prefix as often as not.
    let noise = (rng.next() as u32) & (rng.next() as u32) & (rng.next() as u32);
    let prefix = (base ^ noise) & mask(len);
    r(prefix.to_be_bytes(), len, ifindex, (x >> 32) as u32 % 3)
}

/// Addresses to check a table with: prefix edges and random ones.
fn probes(rng: &mut XorShift, routes: &[Route], bases: &[u32]) -> Vec<Ipv4Addr> {
    let mut v = Vec::new();
    for r in routes {
        let p = u32::from(r.prefix);
        let end = p | !mask(r.len);
        v.extend([p, end, p.wrapping_sub(1), end.wrapping_add(1)]);
    }
    for _ in 0..500 {
        let base = bases[rng.next() as usize % bases.len()];
        v.push(base ^ (rng.next() as u32 & rng.next() as u32));
        v.push(rng.next() as u32);
    }
    v.into_iter().map(Ipv4Addr::from).collect()
}

type Model = BTreeMap<(u8, u32, u32), Route>;

fn model_key(r: &Route) -> (u8, u32, u32) {
    (r.len, u32::from(r.prefix), r.metric)
}

fn check(fib: &Fib, model: &Model, probes: &[Ipv4Addr], what: &str) {
    let routes: Vec<Route> = model.values().cloned().collect();
    assert_eq!(fib.len(), routes.len(), "{what}");
    let mut listed: Vec<Route> = fib.routes().cloned().collect();
    assert_eq!(listed.len(), fib.routes().len(), "{what}");
    listed.sort_by_key(model_key);
    assert_eq!(listed, routes, "{what}");
    let mut batch = vec![Leaf::NONE; probes.len()];
    fib.lookup_batch(probes, &mut batch);
    for (dst, batched) in probes.iter().zip(batch) {
        let want = reference(&routes, *dst);
        assert_eq!(fib.lookup(*dst), want, "{what}: {dst}");
        // The forward path's tables agree with the routes.
        let leaf = want.map_or(Leaf::NONE, |r| fib.leaf_of(r));
        assert_eq!(fib.leaf(*dst), leaf, "{what}: leaf {dst}");
        assert_eq!(batched, leaf, "{what}: batch {dst}");
        if let Some(r) = want {
            assert_eq!(fib.nexthops(leaf), &r.nexthops[..], "{what}: set {dst}");
        }
    }
    for r in &routes {
        let same_len: Vec<Route> = routes.iter().filter(|x| x.len == r.len).cloned().collect();
        let want = reference(&same_len, r.prefix);
        assert_eq!(fib.get(r.prefix, r.len), want, "{what}: get {r:?}");
    }
}

#[test]
fn updates_match_linear_scan_and_a_fresh_build() {
    for seed in [1u64, 0x9e37_79b9_7f4a_7c15, 0xdead_beef_cafe_f00d, 42] {
        let mut rng = XorShift(seed);
        let bases: Vec<u32> = (0..6).map(|_| rng.next() as u32).collect();
        let mut ifindex = 0;
        let mut model = Model::new();
        for _ in 0..300 {
            ifindex += 1;
            let route = random_route(&mut rng, &bases, ifindex);
            model.entry(model_key(&route)).or_insert(route);
        }
        let mut fib = build(model.values().cloned());
        let routes: Vec<Route> = model.values().cloned().collect();
        check(&fib, &model, &probes(&mut rng, &routes, &bases), "build");

        for round in 0..25 {
            let mut changes = Vec::new();
            let mut next = model.clone();
            for _ in 0..1 + rng.next() % 20 {
                let existing: Vec<&Route> = next.values().collect();
                let pick = existing
                    .get(rng.next() as usize % existing.len().max(1))
                    .map(|r| (*r).clone());
                ifindex += 1;
                let change = match (rng.next() % 5, pick) {
                    (0, Some(old)) => {
                        // Replace a route: same key, new next hop.
                        FibChange::Add(r(old.prefix.octets(), old.len, ifindex, old.metric))
                    }
                    (1, Some(old)) => FibChange::Remove {
                        prefix: old.prefix,
                        len: old.len,
                        metric: old.metric,
                    },
                    (2, Some(old)) => FibChange::RemovePrefix {
                        prefix: old.prefix,
                        len: old.len,
                    },
                    (3, _) => {
                        // Possibly nothing to remove.
                        let x = random_route(&mut rng, &bases, 0);
                        FibChange::Remove {
                            prefix: x.prefix,
                            len: x.len,
                            metric: x.metric,
                        }
                    }
                    _ => FibChange::Add(random_route(&mut rng, &bases, ifindex)),
                };
                match &change {
                    FibChange::Add(route) => {
                        next.insert(model_key(route), route.clone());
                    }
                    FibChange::Remove {
                        prefix,
                        len,
                        metric,
                    } => {
                        next.remove(&(*len, u32::from(*prefix), *metric));
                    }
                    FibChange::RemovePrefix { prefix, len } => {
                        next.retain(|k, _| (k.0, k.1) != (*len, u32::from(*prefix)));
                    }
                    FibChange::RemoveLocal { .. } => unreachable!(),
                }
                changes.push(change);
            }
            let updated = fib.update(&changes).unwrap();
            let fresh = build(next.values().cloned());
            let all: Vec<Route> = model.values().chain(next.values()).cloned().collect();
            let probes = probes(&mut rng, &all, &bases);
            let what = format!("seed {seed:x} round {round}");
            check(&updated, &next, &probes, &format!("{what} updated"));
            check(&fresh, &next, &probes, &format!("{what} fresh"));
            // The table updated from is as it was.
            check(&fib, &model, &probes, &format!("{what} previous"));
            fib = updated;
            model = next;
        }
    }
}

/// An Internet-like table: mostly /24, many /16–/23, some /8–/15, a few
/// /25–/32, over the unicast space, with a default route.
fn internet_like(n: usize, seed: u64) -> Vec<Route> {
    // Per mille, roughly a full BGP table's length distribution.
    const LENS: [(u8, u32); 17] = [
        (8, 1),
        (10, 1),
        (12, 2),
        (13, 2),
        (14, 4),
        (15, 4),
        (16, 14),
        (17, 8),
        (18, 12),
        (19, 25),
        (20, 40),
        (21, 45),
        (22, 110),
        (23, 100),
        (24, 622),
        (28, 5),
        (32, 5),
    ];
    let mut rng = XorShift(seed);
    let mut v = vec![r([0; 4], 0, 1, 0)];
    while v.len() < n {
        let x = rng.next();
        let mut pick = (x % 1000) as u32;
        let len = LENS
            .iter()
            .find(|(_, w)| {
                let hit = pick < *w;
                pick = pick.saturating_sub(*w);
                hit
            })
            .map_or(24, |(l, _)| *l);
        let a = (1 + (x >> 32) as u32 % 223) << 24 | (rng.next() as u32 & 0x00ff_ffff);
        v.push(r(
            (a & mask(len)).to_be_bytes(),
            len,
            (x >> 16) as u32 % 8,
            0,
        ));
    }
    v
}

#[test]
fn updates_share_what_they_do_not_touch() {
    let f = build(internet_like(20_000, 7));
    let p = Ipv4Addr::new(100, 64, 3, 0);
    let g = f
        .update(&[FibChange::Add(r(p.octets(), 24, 99, 0))])
        .unwrap();
    let shared = |a: &Fib, b: &Fib| {
        (
            (0..256)
                .filter(|&i| Arc::ptr_eq(&a.root[i], &b.root[i]))
                .count(),
            (0..SHORT_CHUNKS)
                .filter(|&i| Arc::ptr_eq(&a.short[i], &b.short[i]))
                .count(),
        )
    };
    let (root, short) = shared(&f, &g);
    assert_eq!((root, short), (255, SHORT_CHUNKS));
    assert_eq!(ifindex(g.lookup(Ipv4Addr::new(100, 64, 3, 9))), Some(99));
    // Replacing the default route repaints every slot it wins; removing
    // it leaves them without a route.
    let h = f.update(&[FibChange::Add(r([0; 4], 0, 98, 0))]).unwrap();
    assert_eq!(h.len(), f.len());
    assert_eq!(ifindex(h.lookup(Ipv4Addr::new(0, 0, 0, 1))), Some(98));
    let remove = FibChange::Remove {
        prefix: Ipv4Addr::UNSPECIFIED,
        len: 0,
        metric: 0,
    };
    let i = h.update(&[remove]).unwrap();
    assert_eq!(i.len(), f.len() - 1);
    assert_eq!(i.lookup(Ipv4Addr::new(0, 0, 0, 1)), None);
    let mut rng = XorShift(11);
    for _ in 0..10_000 {
        let dst = Ipv4Addr::from(rng.next() as u32);
        let (before, after) = (f.lookup(dst).unwrap(), h.lookup(dst).unwrap());
        if before.len == 0 {
            assert_eq!((after.len, after.nexthops[0].ifindex), (0, 98));
            assert_eq!(i.lookup(dst), None);
        } else {
            assert_eq!(before, after);
            assert_eq!(i.lookup(dst), Some(before));
        }
    }
}

/// The scale of a full Internet table: run with
/// `cargo test --release -p xdpip --lib fib::tests::one_million -- --ignored --nocapture`.
#[test]
#[ignore = "a million routes: slow in debug builds"]
fn one_million_internet_like_routes() {
    // Resident memory in MiB, from /proc (Linux).
    let rss = || {
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
        let pages: f64 = statm
            .split(' ')
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or(0.0);
        pages * 4096.0 / (1 << 20) as f64
    };
    let before = rss();
    let input = internet_like(1_000_000, 0x5eed);
    let t = std::time::Instant::now();
    let fib = build(input);
    let built = t.elapsed();
    // Taken now: the table holds the routes (and their next hops) of the
    // input, which it consumed.
    let grown = rss() - before;
    let bytes = fib.heap_size();
    let mib = |b: usize| b as f64 / (1 << 20) as f64;
    let blocks: Vec<&Block> = fib
        .root
        .iter()
        .flat_map(|c| c.0.iter().filter_map(|e| e.block.as_deref()))
        .collect();
    let subs: usize = blocks.iter().map(|b| b.heap_size()).sum();
    println!(
        "1M routes ({} distinct): built in {built:?}, {:.1} MiB counted \
         ({} blocks: {:.1} MiB), resident memory grew by {:.1} MiB",
        fib.len(),
        mib(bytes),
        blocks.len(),
        mib(subs),
        grown,
    );
    let routes = internet_like(1_000_000, 0x5eed);
    assert!(bytes < 200 << 20, "{bytes} bytes");

    let mut rng = XorShift(3);
    let changes: Vec<FibChange> = (0..100)
        .map(|i| {
            let r = &routes[rng.next() as usize % routes.len()];
            if i % 2 == 0 {
                FibChange::RemovePrefix {
                    prefix: r.prefix,
                    len: r.len,
                }
            } else {
                let a = rng.next() as u32 & 0xdfff_ff00;
                FibChange::Add(self::r(a.to_be_bytes(), 24, 9, 1))
            }
        })
        .collect();
    let t = std::time::Instant::now();
    let updated = fib.update(&changes).unwrap();
    println!("100 changes applied in {:?}", t.elapsed());
    let mut after = routes;
    for c in &changes {
        match c {
            FibChange::RemovePrefix { prefix, len } => {
                after.retain(|r| (r.prefix, r.len) != (*prefix, *len));
            }
            FibChange::Add(r) => after.push(r.clone()),
            FibChange::Remove { .. } | FibChange::RemoveLocal { .. } => unreachable!(),
        }
    }
    let fresh = build(after);
    assert_eq!(fresh.len(), updated.len());
    for _ in 0..200_000 {
        let dst = Ipv4Addr::from(rng.next() as u32);
        assert_eq!(updated.lookup(dst), fresh.lookup(dst), "{dst}");
    }
}

fn local(p: [u8; 4], len: u8, kind: RouteKind) -> Route {
    Route {
        prefix: Ipv4Addr::from(p),
        len,
        kind,
        nexthops: Arc::from([]),
        metric: 0,
    }
}

#[test]
fn local_table_routes_win_at_equal_prefix_and_stay_apart() {
    let f = build([
        r([10, 0, 1, 0], 24, 1, 0),
        r([10, 0, 1, 1], 32, 2, 0),
        local([10, 0, 1, 1], 32, RouteKind::Local),
        local([10, 0, 1, 255], 32, RouteKind::Broadcast),
    ]);
    let kind = |f: &Fib, a: [u8; 4]| f.leaf(Ipv4Addr::from(a)).kind();
    assert_eq!(kind(&f, [10, 0, 1, 1]), Some(RouteKind::Local));
    assert_eq!(kind(&f, [10, 0, 1, 255]), Some(RouteKind::Broadcast));
    assert_eq!(kind(&f, [10, 0, 1, 7]), Some(RouteKind::Unicast));
    assert_eq!(
        f.lookup(Ipv4Addr::new(10, 0, 1, 1)).unwrap().kind,
        RouteKind::Local
    );
    // The main-table route of the same key is another route: removing
    // the local one uncovers it, removing it leaves the local one.
    let p = Ipv4Addr::new(10, 0, 1, 1);
    let main_gone = f
        .update(&[FibChange::Remove {
            prefix: p,
            len: 32,
            metric: 0,
        }])
        .unwrap();
    assert_eq!(kind(&main_gone, [10, 0, 1, 1]), Some(RouteKind::Local));
    let local_gone = f
        .update(&[FibChange::RemoveLocal {
            prefix: p,
            len: 32,
            metric: 0,
        }])
        .unwrap();
    assert_eq!(kind(&local_gone, [10, 0, 1, 1]), Some(RouteKind::Unicast));
    assert_eq!(
        local_gone.nexthops(local_gone.leaf(p))[0].ifindex,
        2,
        "the /32 of the main table"
    );
    assert_eq!((f.len(), main_gone.len(), local_gone.len()), (4, 3, 3));
}

#[test]
fn next_hop_sets_are_numbered_while_used() {
    let f = build([r([10, 0, 0, 0], 8, 1, 0), r([10, 1, 0, 0], 16, 1, 0)]);
    assert_eq!(f.sets().count(), 1, "one set shared by both routes");
    let g = f
        .update(&[FibChange::Add(r([10, 2, 0, 0], 24, 2, 0))])
        .unwrap();
    assert_eq!(g.sets().count(), 2);
    let l2 = g.leaf(Ipv4Addr::new(10, 2, 0, 1));
    assert_eq!(g.nexthops(l2)[0].ifindex, 2);
    // The last route of a set goes: its number is free, and the next new
    // set takes it.
    let h = g
        .update(&[FibChange::RemovePrefix {
            prefix: Ipv4Addr::new(10, 2, 0, 0),
            len: 24,
        }])
        .unwrap();
    assert_eq!(h.sets().count(), 1);
    assert!(h.set(l2.set().unwrap()).is_none());
    let i = h
        .update(&[FibChange::Add(r([10, 3, 0, 0], 24, 3, 0))])
        .unwrap();
    assert_eq!(i.leaf(Ipv4Addr::new(10, 3, 0, 1)).set(), l2.set());
    assert_eq!(i.nexthops(i.leaf(Ipv4Addr::new(10, 3, 0, 1)))[0].ifindex, 3);
    // Replacing a route by one through the same set keeps the number.
    let j = i
        .update(&[FibChange::Add(r([10, 1, 0, 0], 16, 1, 0))])
        .unwrap();
    assert_eq!(j.sets().count(), 2);
    // The tables it was made from are as they were.
    assert_eq!(g.nexthops(g.leaf(Ipv4Addr::new(10, 2, 0, 1)))[0].ifindex, 2);
}

#[test]
fn a_replaced_short_route_repaints_its_leaf() {
    let f = build([r([10, 0, 0, 0], 8, 1, 0), r([10, 1, 0, 0], 16, 2, 0)]);
    let g = f
        .update(&[FibChange::Add(r([10, 0, 0, 0], 8, 5, 0))])
        .unwrap();
    assert_eq!(g.nexthops(g.leaf(Ipv4Addr::new(10, 9, 0, 1)))[0].ifindex, 5);
    assert_eq!(g.nexthops(g.leaf(Ipv4Addr::new(10, 1, 0, 1)))[0].ifindex, 2);
    // A higher metric waits behind, and takes over when the best goes.
    let h = g
        .update(&[FibChange::Add(r([10, 0, 0, 0], 8, 7, 10))])
        .unwrap();
    assert_eq!(h.nexthops(h.leaf(Ipv4Addr::new(10, 9, 0, 1)))[0].ifindex, 5);
    let i = h
        .update(&[FibChange::Remove {
            prefix: Ipv4Addr::new(10, 0, 0, 0),
            len: 8,
            metric: 0,
        }])
        .unwrap();
    assert_eq!(i.nexthops(i.leaf(Ipv4Addr::new(10, 9, 0, 1)))[0].ifindex, 7);
}
