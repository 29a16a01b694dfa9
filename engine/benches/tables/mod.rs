//! Deterministic routing tables and destinations for the benchmarks.
// Each benchmark uses a part of this module.
#![allow(dead_code)]

use std::net::Ipv4Addr;
use xdpip::fib::{NextHop, Route, RouteKind};

/// A xorshift64 generator: the same tables on every run, no dependency.
pub struct XorShift(pub u64);

impl XorShift {
    /// The next value.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// A random unicast address: 1.0.0.0 to 223.255.255.255 but 127/8, so
/// that the forward path takes it.
pub fn unicast(rng: &mut XorShift) -> u32 {
    loop {
        let x = rng.next();
        let a = (1 + (x >> 40) as u32 % 223) << 24 | (x as u32 & 0x00ff_ffff);
        if a >> 24 != 127 {
            return a;
        }
    }
}

/// `n` random unicast destinations.
pub fn destinations(n: usize, seed: u64) -> Vec<Ipv4Addr> {
    let mut rng = XorShift(seed);
    (0..n).map(|_| Ipv4Addr::from(unicast(&mut rng))).collect()
}

/// An Internet-like table of `n` routes over the unicast space, a default
/// route first: per mille of a full BGP table, mostly /24, many /16–/23,
/// some /8–/15, a few /25–/32. `nexthop` gives the next hop of route `i`.
/// Prefixes are drawn at random, so a few repeat; a [`xdpip::fib::Fib`]
/// keeps the first of each.
pub fn internet_like(n: usize, seed: u64, nexthop: impl Fn(usize) -> NextHop) -> Vec<Route> {
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
    let route = |prefix: u32, len: u8, i: usize| Route {
        prefix: Ipv4Addr::from(prefix),
        len,
        kind: RouteKind::Unicast,
        nexthops: vec![nexthop(i)].into(),
        metric: 0,
    };
    let mut v = Vec::with_capacity(n);
    v.push(route(0, 0, 0));
    while v.len() < n {
        let mut pick = (rng.next() % 1000) as u32;
        let len = LENS
            .iter()
            .find(|(_, w)| {
                let hit = pick < *w;
                pick = pick.saturating_sub(*w);
                hit
            })
            .map_or(24, |(l, _)| *l);
        let mask = u32::MAX << (32 - len);
        let r = route(unicast(&mut rng) & mask, len, v.len());
        v.push(r);
    }
    v
}
