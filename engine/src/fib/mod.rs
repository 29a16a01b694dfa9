//! The forwarding information base: longest-prefix match over the routes of
//! the engine's network namespace.
//!
//! A [`Fib`] is immutable once built; the control thread builds a new one on
//! every routing change and publishes it in a [`crate::Snapshot`], so
//! workers read it without locks. Lookups probe one hash table per prefix
//! length present, longest first, so their cost is bounded by the number of
//! distinct prefix lengths (at most 33), not by the number of routes.

use rustc_hash::FxHashMap;
use std::net::Ipv4Addr;

/// What a route does with a packet (the kernel's `rtm_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteKind {
    /// Forward to the next hop(s).
    Unicast,
    /// Drop silently (`ip route add blackhole`).
    Blackhole,
    /// Drop, host unreachable (`ip route add unreachable`).
    Unreachable,
    /// Drop, administratively prohibited (`ip route add prohibit`).
    Prohibit,
}

/// One next hop of a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NextHop {
    /// The gateway, or `None` for a directly connected destination.
    pub gateway: Option<Ipv4Addr>,
    /// Output interface.
    pub ifindex: u32,
    /// ECMP weight (`ip route ... nexthop ... weight N`), at least 1.
    pub weight: u32,
}

/// A route: a prefix and what to do with packets that match it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Network address (host bits zero).
    pub prefix: Ipv4Addr,
    /// Prefix length, 0 to 32.
    pub len: u8,
    /// What the route does.
    pub kind: RouteKind,
    /// Next hops; one for a plain route, several for ECMP.
    pub nexthops: Vec<NextHop>,
    /// Route metric (`ip route ... metric N`); the lowest wins among routes
    /// with the same prefix.
    pub metric: u32,
}

impl Route {
    /// The next hop for a flow, chosen by a hash of the flow over the
    /// weights (the kernel's hash-threshold selection).
    ///
    /// ```
    /// use xdpip::fib::{Route, RouteKind, NextHop};
    /// use std::net::Ipv4Addr;
    /// let r = Route {
    ///     prefix: Ipv4Addr::new(10, 0, 0, 0), len: 8, kind: RouteKind::Unicast, metric: 0,
    ///     nexthops: vec![NextHop { gateway: None, ifindex: 3, weight: 1 }],
    /// };
    /// assert_eq!(r.nexthop(12345).unwrap().ifindex, 3);
    /// ```
    #[inline]
    pub fn nexthop(&self, flow_hash: u32) -> Option<&NextHop> {
        match self.nexthops.len() {
            0 => None,
            1 => self.nexthops.first(),
            _ => {
                let total: u64 = self.nexthops.iter().map(|n| n.weight.max(1) as u64).sum();
                let mut point = (flow_hash as u64 * total) >> 32;
                for n in &self.nexthops {
                    let w = n.weight.max(1) as u64;
                    if point < w {
                        return Some(n);
                    }
                    point -= w;
                }
                self.nexthops.last()
            }
        }
    }
}

/// Why a route cannot be added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FibError {
    /// Prefix length above 32.
    PrefixLength(u8),
    /// A unicast route without a next hop.
    NoNextHop,
}

impl std::fmt::Display for FibError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FibError::PrefixLength(l) => write!(f, "prefix length {l} above 32"),
            FibError::NoNextHop => f.write_str("unicast route without a next hop"),
        }
    }
}

impl std::error::Error for FibError {}

/// An immutable longest-prefix-match table.
///
/// ```
/// use xdpip::fib::{Fib, Route, RouteKind, NextHop};
/// use std::net::Ipv4Addr;
///
/// let mut b = Fib::builder();
/// b.add(Route {
///     prefix: Ipv4Addr::new(0, 0, 0, 0), len: 0, kind: RouteKind::Unicast, metric: 0,
///     nexthops: vec![NextHop { gateway: Some(Ipv4Addr::new(10, 0, 0, 1)), ifindex: 2, weight: 1 }],
/// }).unwrap();
/// b.add(Route {
///     prefix: Ipv4Addr::new(10, 1, 0, 0), len: 16, kind: RouteKind::Unicast, metric: 0,
///     nexthops: vec![NextHop { gateway: None, ifindex: 3, weight: 1 }],
/// }).unwrap();
/// let fib = b.build();
/// assert_eq!(fib.lookup(Ipv4Addr::new(10, 1, 2, 3)).unwrap().len, 16);
/// assert_eq!(fib.lookup(Ipv4Addr::new(8, 8, 8, 8)).unwrap().len, 0);
/// ```
#[derive(Debug, Default, Clone)]
pub struct Fib {
    /// Route index by masked prefix, one table per prefix length.
    by_len: Vec<FxHashMap<u32, u32>>,
    /// Prefix lengths present, longest first.
    lengths: Vec<u8>,
    routes: Vec<Route>,
}

/// Collects routes for a new [`Fib`].
#[derive(Debug, Default)]
pub struct FibBuilder {
    routes: FxHashMap<(u32, u8), Route>,
}

#[inline]
fn mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - len as u32)
    }
}

impl FibBuilder {
    /// Adds a route; among routes for the same prefix the lowest metric
    /// stays, as in the kernel's lookup.
    pub fn add(&mut self, mut route: Route) -> Result<(), FibError> {
        if route.len > 32 {
            return Err(FibError::PrefixLength(route.len));
        }
        if route.kind == RouteKind::Unicast && route.nexthops.is_empty() {
            return Err(FibError::NoNextHop);
        }
        let key = u32::from(route.prefix) & mask(route.len);
        route.prefix = Ipv4Addr::from(key);
        match self.routes.get(&(key, route.len)) {
            Some(old) if old.metric <= route.metric => {}
            _ => {
                self.routes.insert((key, route.len), route);
            }
        }
        Ok(())
    }

    /// Number of routes so far.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// True when no route was added.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// Freezes the table.
    pub fn build(self) -> Fib {
        let mut by_len: Vec<FxHashMap<u32, u32>> = vec![FxHashMap::default(); 33];
        let mut routes = Vec::with_capacity(self.routes.len());
        for ((key, len), r) in self.routes {
            by_len[len as usize].insert(key, routes.len() as u32);
            routes.push(r);
        }
        let lengths = (0..=32u8)
            .rev()
            .filter(|l| !by_len[*l as usize].is_empty())
            .collect();
        Fib {
            by_len,
            lengths,
            routes,
        }
    }
}

impl Fib {
    /// A builder for a new table.
    pub fn builder() -> FibBuilder {
        FibBuilder::default()
    }

    /// The most specific route for `dst`.
    #[inline]
    pub fn lookup(&self, dst: Ipv4Addr) -> Option<&Route> {
        let a = u32::from(dst);
        for &len in &self.lengths {
            if let Some(&i) = self.by_len[len as usize].get(&(a & mask(len))) {
                return self.routes.get(i as usize);
            }
        }
        None
    }

    /// Number of routes.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// True for a table without routes.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// All routes, in no particular order.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(p: [u8; 4], len: u8, ifindex: u32, metric: u32) -> Route {
        Route {
            prefix: Ipv4Addr::from(p),
            len,
            kind: RouteKind::Unicast,
            nexthops: vec![NextHop {
                gateway: None,
                ifindex,
                weight: 1,
            }],
            metric,
        }
    }

    /// Linear scan as the reference for longest-prefix match.
    fn reference(routes: &[Route], dst: Ipv4Addr) -> Option<(u32, u8)> {
        routes
            .iter()
            .filter(|r| u32::from(dst) & mask(r.len) == u32::from(r.prefix) & mask(r.len))
            .max_by_key(|r| (r.len, std::cmp::Reverse(r.metric)))
            .map(|r| (u32::from(r.prefix) & mask(r.len), r.len))
    }

    #[test]
    fn longest_prefix_wins_and_host_bits_are_ignored() {
        let mut b = Fib::builder();
        b.add(r([10, 0, 0, 0], 8, 1, 0)).unwrap();
        b.add(r([10, 1, 2, 3], 16, 2, 0)).unwrap(); // host bits set
        b.add(r([10, 1, 2, 3], 32, 3, 0)).unwrap();
        let f = b.build();
        assert_eq!(f.lookup(Ipv4Addr::new(10, 1, 2, 3)).unwrap().len, 32);
        assert_eq!(f.lookup(Ipv4Addr::new(10, 1, 9, 9)).unwrap().len, 16);
        assert_eq!(f.lookup(Ipv4Addr::new(10, 9, 9, 9)).unwrap().len, 8);
        assert!(f.lookup(Ipv4Addr::new(11, 0, 0, 1)).is_none());
    }

    #[test]
    fn lowest_metric_wins_for_equal_prefix() {
        let mut b = Fib::builder();
        b.add(r([10, 0, 0, 0], 8, 1, 100)).unwrap();
        b.add(r([10, 0, 0, 0], 8, 2, 10)).unwrap();
        b.add(r([10, 0, 0, 0], 8, 3, 50)).unwrap();
        let f = b.build();
        assert_eq!(
            f.lookup(Ipv4Addr::new(10, 0, 0, 1)).unwrap().nexthops[0].ifindex,
            2
        );
    }

    #[test]
    fn bad_routes_are_refused() {
        let mut b = Fib::builder();
        assert_eq!(b.add(r([0; 4], 33, 1, 0)), Err(FibError::PrefixLength(33)));
        let mut x = r([0; 4], 0, 1, 0);
        x.nexthops.clear();
        assert_eq!(b.add(x.clone()), Err(FibError::NoNextHop));
        x.kind = RouteKind::Blackhole;
        assert!(b.add(x).is_ok());
    }

    #[test]
    fn matches_linear_scan_on_random_tables() {
        let mut rng = crate::testutil::XorShift(0x2545_f491_4f6c_dd1d);
        let mut next = || rng.next();
        let mut routes = Vec::new();
        let mut b = Fib::builder();
        for i in 0..2000 {
            let len = (next() % 33) as u8;
            let route = r((next() as u32).to_be_bytes(), len, i, (next() % 4) as u32);
            b.add(route.clone()).unwrap();
            routes.push(route);
        }
        let f = b.build();
        for _ in 0..20_000 {
            let dst = Ipv4Addr::from(next() as u32);
            let got = f.lookup(dst).map(|r| (u32::from(r.prefix), r.len));
            assert_eq!(got, reference(&routes, dst), "{dst}");
        }
    }

    #[test]
    fn ecmp_spreads_by_weight() {
        let mut route = r([0; 4], 0, 1, 0);
        route.nexthops.push(NextHop {
            gateway: None,
            ifindex: 2,
            weight: 3,
        });
        let mut counts = [0u32; 3];
        for i in 0..40_000u32 {
            let h = i.wrapping_mul(0x9e37_79b9);
            counts[route.nexthop(h).unwrap().ifindex as usize] += 1;
        }
        // weights 1:3 → about 10000 and 30000
        assert!((9_000..11_000).contains(&counts[1]), "{counts:?}");
        assert!((29_000..31_000).contains(&counts[2]), "{counts:?}");
    }
}
