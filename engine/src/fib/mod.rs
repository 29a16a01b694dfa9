//! The forwarding information base: longest-prefix match over the routes of
//! the engine's network namespace.
//!
//! A [`Fib`] is immutable once built; the control thread publishes a new one
//! in a [`crate::snapshot::Snapshot`] on every routing change, so workers read it
//! without locks. [`Fib::update`] makes the new table from the current one
//! and the changes, sharing everything the changes do not touch, in time
//! proportional to the changes rather than to the table.
//!
//! The layout is a 16-8-8 multibit trie in the manner of DPDK's DIR-24-8,
//! whose entries are [`Leaf`]s: what the forward path needs, a route kind
//! and a next-hop set, never the [`Route`] itself. The root has an entry
//! per /16 with the leaf of the best route of /0 to /16 that covers it and,
//! for /16s that hold longer routes, their block: a table by the third
//! address byte and, for /24s with longer routes, tables by the fourth. A
//! lookup reads one root entry (the root, 1 MiB, stays in a core's L2) and
//! at most two table entries, whatever the size of the table; a batch of
//! lookups goes in stages with prefetches so that their cache misses
//! overlap ([`Fib::lookup_batch`], or, interleaved with other work as the
//! forward path does, [`Fib::prefetch_root`], [`Root::probe`] and
//! [`Probe::leaf`]). The root is cut into chunks of 256
//! behind [`Arc`]s so that an update copies only the chunks and blocks it
//! changes; the routes of /0 to /16 are kept by prefix so that removing one
//! finds the route it uncovers.
//!
//! Next-hop sets are numbered by the table ([`Fib::set`]); the snapshot's
//! adjacency table ([`crate::neigh::Adjacencies`]) turns a set number into
//! egress port, MTU and a ready Ethernet header. The kernel's local table
//! lives in the same trie as [`RouteKind::Local`] and
//! [`RouteKind::Broadcast`] routes, which win over main-table routes of the
//! same prefix: one lookup decides forward, local or broadcast.

mod block;
#[cfg(test)]
mod tests;

use block::Block;
use rustc_hash::FxHashMap;
use std::mem::size_of;
use std::net::Ipv4Addr;
use std::sync::Arc;

/// What a route does with a packet (the kernel's `rtm_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteKind {
    /// Forward to the next hop(s).
    Unicast,
    /// An address of this host (`RTN_LOCAL`, from the local table).
    Local,
    /// A broadcast address of this host (`RTN_BROADCAST`, local table).
    Broadcast,
    /// Drop silently (`ip route add blackhole`).
    Blackhole,
    /// Drop, host unreachable (`ip route add unreachable`).
    Unreachable,
    /// Drop, administratively prohibited (`ip route add prohibit`).
    Prohibit,
}

impl RouteKind {
    const ALL: [RouteKind; 6] = [
        RouteKind::Unicast,
        RouteKind::Local,
        RouteKind::Broadcast,
        RouteKind::Blackhole,
        RouteKind::Unreachable,
        RouteKind::Prohibit,
    ];

    /// True for the kinds of the kernel's local table.
    #[inline]
    pub fn is_local_table(self) -> bool {
        matches!(self, RouteKind::Local | RouteKind::Broadcast)
    }
}

/// What a lookup gives the forward path: the kind of the best route and,
/// for a unicast route, the number of its next-hop set ([`Fib::set`]).
/// Four bytes; [`Leaf::NONE`] when no route matches.
///
/// ```
/// use xdpip::fib::{Leaf, RouteKind};
/// assert_eq!(Leaf::NONE.kind(), None);
/// let l = Leaf::unicast(7);
/// assert_eq!((l.kind(), l.set()), (Some(RouteKind::Unicast), Some(7)));
/// assert_eq!(Leaf::of_kind(RouteKind::Local).set(), None);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Leaf(u32);

impl Leaf {
    /// No route.
    pub const NONE: Leaf = Leaf(0);
    const KIND_SHIFT: u32 = 28;
    const SET_MASK: u32 = (1 << Self::KIND_SHIFT) - 1;
    const UNICAST: u32 = 1 << Self::KIND_SHIFT;
    /// Most next-hop sets a table numbers.
    pub const MAX_SETS: u32 = Self::SET_MASK + 1;

    /// The leaf of a unicast route through next-hop set `set` (below
    /// [`Leaf::MAX_SETS`]).
    #[inline]
    pub const fn unicast(set: u32) -> Leaf {
        Leaf(Self::UNICAST | set & Self::SET_MASK)
    }

    /// The leaf of a route of kind `k`, without a next-hop set.
    #[inline]
    pub const fn of_kind(k: RouteKind) -> Leaf {
        Leaf((k as u32 + 1) << Self::KIND_SHIFT)
    }

    /// The kind of the route, `None` for no route.
    #[inline]
    pub fn kind(self) -> Option<RouteKind> {
        let k = (self.0 >> Self::KIND_SHIFT) as usize;
        RouteKind::ALL.get(k.wrapping_sub(1)).copied()
    }

    /// The next-hop set of a unicast leaf.
    #[inline]
    pub fn set(self) -> Option<u32> {
        self.is_unicast().then_some(self.0 & Self::SET_MASK)
    }

    /// True for a unicast route: the common case, tested first.
    #[inline(always)]
    pub fn is_unicast(self) -> bool {
        self.0 >> Self::KIND_SHIFT == 1
    }

    /// The next-hop set number of a leaf known to be unicast.
    #[inline(always)]
    pub fn set_unchecked(self) -> u32 {
        self.0 & Self::SET_MASK
    }
}

/// One next hop of a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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
    /// Shared between routes with the same set (a full table uses a
    /// handful of next hops): the mirror interns them, so a million routes
    /// do not make a million allocations.
    pub nexthops: Arc<[NextHop]>,
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
    ///     nexthops: vec![NextHop { gateway: None, ifindex: 3, weight: 1 }].into(),
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
                for n in self.nexthops.iter() {
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

/// A change to a [`Fib`], for [`Fib::update`]. Prefixes need not have
/// their host bits cleared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FibChange {
    /// Adds a route, replacing the one of the same table with the same
    /// prefix, length and metric (as `RTM_NEWROUTE` with `NLM_F_REPLACE`
    /// does). Local and broadcast routes are of the local table.
    Add(Route),
    /// Removes the main-table route with this prefix, length and metric,
    /// if there is one; the route with the next higher metric, or else the
    /// next shorter prefix, takes over its addresses.
    Remove {
        /// Network address.
        prefix: Ipv4Addr,
        /// Prefix length, 0 to 32.
        len: u8,
        /// The metric of the route to remove.
        metric: u32,
    },
    /// Removes the local-table route (local or broadcast) with this
    /// prefix, length and metric.
    RemoveLocal {
        /// Network address.
        prefix: Ipv4Addr,
        /// Prefix length, 0 to 32.
        len: u8,
        /// The metric of the route to remove.
        metric: u32,
    },
    /// Removes every route for this prefix, whatever its metric.
    RemovePrefix {
        /// Network address.
        prefix: Ipv4Addr,
        /// Prefix length, 0 to 32.
        len: u8,
    },
}

impl FibChange {
    /// The change with host bits cleared, after checking it.
    fn normalized(&self) -> Result<FibChange, FibError> {
        Ok(match self {
            FibChange::Add(r) => FibChange::Add(checked(r.clone())?),
            &FibChange::Remove {
                prefix,
                len,
                metric,
            } => FibChange::Remove {
                prefix: masked(prefix, len)?,
                len,
                metric,
            },
            &FibChange::RemoveLocal {
                prefix,
                len,
                metric,
            } => FibChange::RemoveLocal {
                prefix: masked(prefix, len)?,
                len,
                metric,
            },
            &FibChange::RemovePrefix { prefix, len } => FibChange::RemovePrefix {
                prefix: masked(prefix, len)?,
                len,
            },
        })
    }

    /// Prefix and length the change is about.
    fn target(&self) -> (u32, u8) {
        match self {
            FibChange::Add(r) => (u32::from(r.prefix), r.len),
            &FibChange::Remove { prefix, len, .. }
            | &FibChange::RemoveLocal { prefix, len, .. }
            | &FibChange::RemovePrefix { prefix, len } => (u32::from(prefix), len),
        }
    }
}

/// Longest prefix length kept in the root and in the table of short
/// routes; longer ones go to [`Block`]s.
const SHORT_MAX: u8 = 16;

#[inline]
fn mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - len.min(32) as u32)
    }
}

/// `prefix` with its host bits cleared, if `len` is a prefix length.
fn masked(prefix: Ipv4Addr, len: u8) -> Result<Ipv4Addr, FibError> {
    if len > 32 {
        return Err(FibError::PrefixLength(len));
    }
    Ok(Ipv4Addr::from(u32::from(prefix) & mask(len)))
}

/// `route` with its host bits cleared, if it may enter a table.
fn checked(mut route: Route) -> Result<Route, FibError> {
    route.prefix = masked(route.prefix, route.len)?;
    if route.kind == RouteKind::Unicast && route.nexthops.is_empty() {
        return Err(FibError::NoNextHop);
    }
    Ok(route)
}

/// The order routes are kept in: by length, prefix, table (local before
/// main: the kernel looks the local table up first), then metric. The
/// first route of a prefix is the one lookups take.
#[inline]
fn key(r: &Route) -> (u8, u32, u8, u32) {
    (r.len, u32::from(r.prefix), rank(r.kind), r.metric)
}

/// 0 for routes of the local table, 1 for the main table.
#[inline]
fn rank(k: RouteKind) -> u8 {
    (!k.is_local_table()) as u8
}

/// Bytes the next hops of `r` hold on the heap.
fn nexthops_size(r: &Route) -> usize {
    // Counted whole for every route that shares the set: an upper bound.
    r.nexthops.len() * size_of::<NextHop>()
}

/// Applies one normalized change to routes sorted by [`key`]; returns the
/// change in their number and puts the routes it removed or replaced in
/// `gone`.
fn apply<T>(
    routes: &mut Vec<T>,
    change: FibChange,
    route: impl Fn(&T) -> &Route,
    wrap: impl FnOnce(Route) -> T,
    gone: &mut Vec<T>,
) -> isize {
    let mut remove = |routes: &mut Vec<T>, k: (u8, u32, u8, u32)| match routes
        .binary_search_by(|x| key(route(x)).cmp(&k))
    {
        Ok(i) => {
            gone.push(routes.remove(i));
            -1
        }
        Err(_) => 0,
    };
    match change {
        FibChange::Add(r) => match routes.binary_search_by(|x| key(route(x)).cmp(&key(&r))) {
            Ok(i) => {
                gone.push(std::mem::replace(&mut routes[i], wrap(r)));
                0
            }
            Err(i) => {
                routes.insert(i, wrap(r));
                1
            }
        },
        FibChange::Remove {
            prefix,
            len,
            metric,
        } => remove(routes, (len, u32::from(prefix), 1, metric)),
        FibChange::RemoveLocal {
            prefix,
            len,
            metric,
        } => remove(routes, (len, u32::from(prefix), 0, metric)),
        FibChange::RemovePrefix { prefix, len } => {
            let p = u32::from(prefix);
            let lo = routes.partition_point(|x| key(route(x)) < (len, p, 0, 0));
            let hi = routes.partition_point(|x| key(route(x)) <= (len, p, u8::MAX, u32::MAX));
            gone.extend(routes.drain(lo..hi));
            -((hi - lo) as isize)
        }
    }
}

/// Hints the cache line holding `p` into the cache; a lookup of a batch of
/// addresses issues these so that its cache misses overlap.
#[inline(always)]
fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 is a hint: it never faults and has no
    // architectural effect whatever the address; SSE, which it needs, is
    // part of the x86_64 baseline.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast())
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// The next-hop sets of a table, numbered: what a unicast [`Leaf`] names.
/// A set keeps its number while any route uses it; a freed number is
/// given to the next new set.
#[derive(Debug, Clone, Default)]
struct Sets {
    /// By number: the set and the number of routes using it.
    by_id: Vec<Option<(Arc<[NextHop]>, u32)>>,
    ids: FxHashMap<Arc<[NextHop]>, u32>,
    /// Freed numbers; the lowest is given first, so that numbers stay
    /// small and blocks keep their 16-bit tables.
    free: std::collections::BTreeSet<u32>,
}

impl Sets {
    /// Counts one more route using `set`; its number.
    fn acquire(&mut self, set: &Arc<[NextHop]>) -> u32 {
        if let Some(&id) = self.ids.get(&**set) {
            if let Some((_, n)) = &mut self.by_id[id as usize] {
                *n += 1;
            }
            return id;
        }
        let id = self.free.pop_first().unwrap_or(self.by_id.len() as u32);
        if id as usize == self.by_id.len() {
            self.by_id.push(None);
        }
        self.by_id[id as usize] = Some((set.clone(), 1));
        self.ids.insert(set.clone(), id);
        id
    }

    /// Counts one route less using `set`; frees its number at zero.
    fn release(&mut self, set: &[NextHop]) {
        let Some(&id) = self.ids.get(set) else {
            return;
        };
        if let Some((_, n)) = &mut self.by_id[id as usize] {
            *n -= 1;
            if *n == 0 {
                self.by_id[id as usize] = None;
                self.ids.remove(set);
                self.free.insert(id);
            }
        }
    }

    /// The leaf of `r` (its set must have been acquired).
    fn leaf_of(&self, r: &Route) -> Leaf {
        match r.kind {
            RouteKind::Unicast => {
                let id = self.ids.get(&*r.nexthops).copied();
                debug_assert!(id.is_some(), "next-hop set of {r:?} not numbered");
                id.filter(|&i| i < Leaf::MAX_SETS)
                    .map_or(Leaf::NONE, Leaf::unicast)
            }
            k => Leaf::of_kind(k),
        }
    }

    fn acquire_route(&mut self, r: &Route) {
        if r.kind == RouteKind::Unicast {
            self.acquire(&r.nexthops);
        }
    }

    fn release_route(&mut self, r: &Route) {
        if r.kind == RouteKind::Unicast {
            self.release(&r.nexthops);
        }
    }
}

/// The root entry of one /16.
#[derive(Debug, Clone, Default)]
struct RootEntry {
    /// Routes longer than /16 in this /16, if there are.
    block: Option<Arc<Block>>,
    /// The leaf of the best route of /0 to /16 covering the /16.
    leaf: Leaf,
    /// The [`short_index`] of that route's prefix (0 for none).
    short: u32,
}

/// A lookup's first stage done ([`Fib::prefetch_root`]): where the root
/// entry of an address is, not read yet.
#[derive(Debug, Clone, Copy)]
pub struct Root<'a>(&'a RootEntry);

/// A lookup's second stage done ([`Root::probe`]): the root entry of an
/// address, read.
#[derive(Debug, Clone, Copy)]
pub struct Probe<'a>(&'a RootEntry);

/// The root entry of no route, for probes not yet made.
static NO_ROOT: RootEntry = RootEntry {
    block: None,
    leaf: Leaf::NONE,
    short: 0,
};

impl<'a> Root<'a> {
    /// A root entry of no route, to fill arrays with.
    pub const NONE: Root<'static> = Root(&NO_ROOT);

    /// The second stage of the lookup of `dst`, the address this was made
    /// for: reads the root entry and hints the entry of its block, if it
    /// has one, to the cache.
    #[inline(always)]
    pub fn probe(self, dst: Ipv4Addr) -> Probe<'a> {
        if let Some(b) = &self.0.block {
            b.prefetch(u32::from(dst));
        }
        Probe(self.0)
    }
}

impl Probe<'_> {
    /// A probe that finds no route, to fill arrays of probes with.
    pub const NONE: Probe<'static> = Probe(&NO_ROOT);

    /// The last stage of the lookup: the leaf of the most specific route
    /// for `dst`, the address this probe was made for.
    #[inline(always)]
    pub fn leaf(self, dst: Ipv4Addr) -> Leaf {
        let e = self.0;
        if let Some(b) = &e.block {
            let l = b.leaf(u32::from(dst));
            if l != Leaf::NONE {
                return l;
            }
        }
        e.leaf
    }
}

/// Root entries of 256 consecutive /16s.
#[derive(Debug, Clone)]
struct RootChunk([RootEntry; 256]);

/// 256 consecutive entries of the table of short routes, by
/// [`short_index`].
#[derive(Debug, Clone)]
struct ShortChunk {
    /// The route lookups take for each prefix.
    best: [Option<Arc<Route>>; 256],
    /// All routes of each prefix, sorted by [`key`].
    sets: [Option<ShortSet>; 256],
}

/// The routes of one prefix of /0 to /16, sorted by [`key`].
type ShortSet = Arc<[Arc<Route>]>;

/// Where the routes of `prefix/len` (len at most 16) are in the table of
/// short routes: a binary heap's numbering, 1 for /0, 2 and 3 for the /1s…
/// so that 0 means none and the length is the position of the top bit.
#[inline]
fn short_index(prefix: u32, len: u8) -> u32 {
    let len = len.min(SHORT_MAX);
    (1u32 << len) | ((prefix as u64) >> (32 - len as u32)) as u32
}

/// The prefix length of a [`short_index`], `None` for 0.
#[inline]
fn short_len(index: u32) -> Option<u8> {
    index.checked_ilog2().map(|l| l as u8)
}

/// Number of chunks of the table of short routes (2^17 entries).
const SHORT_CHUNKS: usize = 1 << (SHORT_MAX as usize + 1 - 8);

/// Addresses a staged lookup keeps in flight: enough to overlap the cache
/// misses of a batch, not so many that the core's miss buffers drop
/// prefetches.
const LANES: usize = 32;

/// An immutable longest-prefix-match table.
///
/// ```
/// use xdpip::fib::{Fib, Route, RouteKind, NextHop};
/// use std::net::Ipv4Addr;
///
/// let mut b = Fib::builder();
/// b.add(Route {
///     prefix: Ipv4Addr::new(0, 0, 0, 0), len: 0, kind: RouteKind::Unicast, metric: 0,
///     nexthops: vec![NextHop { gateway: Some(Ipv4Addr::new(10, 0, 0, 1)), ifindex: 2, weight: 1 }].into(),
/// }).unwrap();
/// b.add(Route {
///     prefix: Ipv4Addr::new(10, 1, 0, 0), len: 16, kind: RouteKind::Unicast, metric: 0,
///     nexthops: vec![NextHop { gateway: None, ifindex: 3, weight: 1 }].into(),
/// }).unwrap();
/// b.add(Route {
///     prefix: Ipv4Addr::new(10, 1, 0, 1), len: 32, kind: RouteKind::Local, metric: 0,
///     nexthops: vec![].into(),
/// }).unwrap();
/// let fib = b.build();
/// assert_eq!(fib.lookup(Ipv4Addr::new(10, 1, 2, 3)).unwrap().len, 16);
/// assert_eq!(fib.lookup(Ipv4Addr::new(8, 8, 8, 8)).unwrap().len, 0);
/// // The forward path's view: a leaf, and the next hops of its set.
/// let leaf = fib.leaf(Ipv4Addr::new(10, 1, 2, 3));
/// assert_eq!(fib.nexthops(leaf)[0].ifindex, 3);
/// assert_eq!(fib.leaf(Ipv4Addr::new(10, 1, 0, 1)).kind(), Some(RouteKind::Local));
/// ```
#[derive(Clone)]
pub struct Fib {
    /// Root entries, one per /16, in chunks of 256 so that an update
    /// copies only the chunks it changes.
    root: Box<[Arc<RootChunk>; 256]>,
    /// Every route of /0 to /16, by [`short_index`], in chunks of 256.
    short: Box<[Arc<ShortChunk>; SHORT_CHUNKS]>,
    /// The next-hop sets routes use, numbered.
    sets: Arc<Sets>,
    /// Number of routes.
    len: usize,
}

impl Default for Fib {
    fn default() -> Self {
        // Every chunk of an empty table is the same empty chunk.
        let root = Arc::new(RootChunk(std::array::from_fn(|_| RootEntry::default())));
        let short = Arc::new(ShortChunk {
            best: std::array::from_fn(|_| None),
            sets: std::array::from_fn(|_| None),
        });
        Fib {
            root: Box::new(std::array::from_fn(|_| root.clone())),
            short: Box::new(std::array::from_fn(|_| short.clone())),
            sets: Arc::default(),
            len: 0,
        }
    }
}

impl std::fmt::Debug for Fib {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fib")
            .field("len", &self.len)
            .field("sets", &self.sets.ids.len())
            .finish_non_exhaustive()
    }
}

/// Collects routes for a new [`Fib`].
#[derive(Debug, Default)]
pub struct FibBuilder {
    routes: Vec<Route>,
}

impl FibBuilder {
    /// Adds a route; among routes for the same prefix the local table's
    /// win, then the lowest metric, as in the kernel's lookup, and the
    /// others stay behind it for when it goes. Of two routes with the same
    /// prefix, length, table and metric the first added stays.
    pub fn add(&mut self, route: Route) -> Result<(), FibError> {
        self.routes.push(checked(route)?);
        Ok(())
    }

    /// Number of routes added so far (duplicates included).
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// True when no route was added.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// Freezes the table.
    pub fn build(self) -> Fib {
        let mut routes = self.routes;
        // Short routes first, by length so that longer ones are painted over
        // shorter ones; then long routes by /16, in their block's order. The
        // sort is stable, so the first of duplicates stays.
        routes.sort_by_key(|r| {
            let long = r.len > SHORT_MAX;
            let block = if long { u32::from(r.prefix) >> 16 } else { 0 };
            let (len, prefix, rank, metric) = key(r);
            (long as u128) << 120
                | (block as u128) << 96
                | (len as u128) << 80
                | (prefix as u128) << 48
                | (rank as u128) << 32
                | metric as u128
        });
        routes.dedup_by(|b, a| key(a) == key(b));
        let mut sets = Sets::default();
        for r in &routes {
            sets.acquire_route(r);
        }
        let mut fib = Fib {
            len: routes.len(),
            sets: Arc::new(sets),
            ..Fib::default()
        };
        let mut long = routes.split_off(routes.partition_point(|r| r.len <= SHORT_MAX));

        let mut short = routes.into_iter().peekable();
        while let Some(first) = short.next() {
            let (len, prefix, _, _) = key(&first);
            let mut set = vec![Arc::new(first)];
            while let Some(r) = short.next_if(|r| (r.len, u32::from(r.prefix)) == (len, prefix)) {
                set.push(Arc::new(r));
            }
            let index = short_index(prefix, len);
            let leaf = fib.sets.leaf_of(&set[0]);
            let (best, sets) = fib.short_mut(index);
            *best = Some(set[0].clone());
            *sets = Some(set.into());
            fib.paint(prefix, len, |e| {
                e.short = index;
                e.leaf = leaf;
            });
        }

        // From the end, so that each block's routes leave without moving
        // the others.
        while let Some(last) = long.last() {
            let id = u32::from(last.prefix) >> 16;
            let first = long.partition_point(|r| u32::from(r.prefix) >> 16 < id);
            let sets = fib.sets.clone();
            let block = Block::new(long.split_off(first), &|r| sets.leaf_of(r));
            fib.set_block(id, block);
        }
        fib
    }
}

impl Fib {
    /// A builder for a new table.
    pub fn builder() -> FibBuilder {
        FibBuilder::default()
    }

    /// The root entry of the /16 holding `a`.
    #[inline(always)]
    fn root(&self, a: u32) -> &RootEntry {
        &self.root[(a >> 24) as usize].0[(a >> 16) as u8 as usize]
    }

    /// The block of the /16 holding `a`.
    #[inline(always)]
    fn block(&self, a: u32) -> Option<&Block> {
        self.root(a).block.as_deref()
    }

    /// The route lookups take for a short prefix a root entry names.
    #[inline(always)]
    fn best(&self, index: u32) -> Option<&Route> {
        let i = index as usize;
        self.short[(i >> 8) % SHORT_CHUNKS].best[i & 255].as_deref()
    }

    /// The best route and all routes of a short prefix, copied first if
    /// shared.
    fn short_mut(&mut self, index: u32) -> (&mut Option<Arc<Route>>, &mut Option<ShortSet>) {
        let i = index as usize;
        let chunk = Arc::make_mut(&mut self.short[(i >> 8) % SHORT_CHUNKS]);
        (&mut chunk.best[i & 255], &mut chunk.sets[i & 255])
    }

    /// All routes of a short prefix.
    fn short_set(&self, index: u32) -> Option<&ShortSet> {
        let i = index as usize;
        self.short[(i >> 8) % SHORT_CHUNKS].sets[i & 255].as_ref()
    }

    /// Replaces the block of /16 number `id`.
    fn set_block(&mut self, id: u32, block: Option<Block>) {
        let (hi, lo) = ((id >> 8) as u8 as usize, id as u8 as usize);
        Arc::make_mut(&mut self.root[hi]).0[lo].block = block.map(Arc::new);
    }

    /// Calls `f` on the root entry of every /16 `prefix/len` (len at most
    /// 16) covers, copying chunks first if shared.
    fn paint(&mut self, prefix: u32, len: u8, mut f: impl FnMut(&mut RootEntry)) {
        let first = (prefix >> 16) as usize;
        let end = first + (1usize << (SHORT_MAX - len.min(SHORT_MAX)));
        let mut s = first;
        while s < end {
            let chunk = Arc::make_mut(&mut self.root[(s >> 8) as u8 as usize]);
            let next = end.min((s | 255) + 1);
            let lo = s & 255;
            for e in &mut chunk.0[lo..lo + (next - s)] {
                f(e);
            }
            s = next;
        }
    }

    /// The leaf of the route for `dst`: what the forward path acts on.
    /// Lock-free and allocation-free; at most three memory reads.
    #[inline]
    pub fn leaf(&self, dst: Ipv4Addr) -> Leaf {
        Probe(self.root(u32::from(dst))).leaf(dst)
    }

    /// The next-hop set numbered `id`, while a route uses it.
    #[inline]
    pub fn set(&self, id: u32) -> Option<&Arc<[NextHop]>> {
        self.sets
            .by_id
            .get(id as usize)
            .and_then(|s| s.as_ref())
            .map(|(s, _)| s)
    }

    /// The next hops of a leaf: its set's for a unicast route, none
    /// otherwise.
    #[inline]
    pub fn nexthops(&self, leaf: Leaf) -> &[NextHop] {
        leaf.set()
            .and_then(|id| self.set(id))
            .map_or(&[], |s| &s[..])
    }

    /// Every numbered next-hop set, with its number.
    pub fn sets(&self) -> impl Iterator<Item = (u32, &Arc<[NextHop]>)> {
        self.sets
            .by_id
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|(s, _)| (i as u32, s)))
    }

    /// One above the highest set number in use: the size of a table by
    /// set number.
    pub fn set_count(&self) -> usize {
        self.sets.by_id.len()
    }

    /// The leaf a route of this table has.
    pub fn leaf_of(&self, route: &Route) -> Leaf {
        self.sets.leaf_of(route)
    }

    /// The route lookups take for `dst`: the longest prefix, the local
    /// table first, then the lowest metric. This is the control plane's
    /// view (it probes each longer prefix length); the forward path uses
    /// [`Fib::leaf`] and [`Fib::lookup_batch`].
    pub fn lookup(&self, dst: Ipv4Addr) -> Option<&Route> {
        let a = u32::from(dst);
        let e = self.root(a);
        if let Some(b) = &e.block {
            for len in (SHORT_MAX + 1..=32).rev() {
                if let Some(r) = b.get(a & mask(len), len) {
                    return Some(r);
                }
            }
        }
        self.best(e.short)
    }

    /// The first stage of a staged lookup of `dst`: hints its root entry
    /// to the cache without reading it, and says where it is.
    /// [`Root::probe`], a stage later, reads it; [`Probe::leaf`], a stage
    /// after that, finishes the lookup. The forward path runs the stages
    /// over a batch, so that the cache misses of its addresses overlap.
    ///
    /// ```
    /// # use xdpip::fib::{Fib, Route, RouteKind};
    /// # use std::net::Ipv4Addr;
    /// let mut b = Fib::builder();
    /// b.add(Route {
    ///     prefix: Ipv4Addr::new(10, 0, 0, 0), len: 8, kind: RouteKind::Blackhole,
    ///     nexthops: vec![].into(), metric: 0,
    /// }).unwrap();
    /// let fib = b.build();
    /// let dst = Ipv4Addr::new(10, 1, 1, 1);
    /// let root = fib.prefetch_root(dst);
    /// let probe = root.probe(dst);
    /// assert_eq!(probe.leaf(dst), fib.leaf(dst));
    /// ```
    #[inline(always)]
    pub fn prefetch_root(&self, dst: Ipv4Addr) -> Root<'_> {
        let e = self.root(u32::from(dst));
        prefetch(e);
        Root(e)
    }

    /// Hints the first memory a lookup of `dst` reads to the cache, so that
    /// the lookup itself, a little later, waits less.
    ///
    /// ```
    /// # use xdpip::fib::{Fib, Leaf};
    /// # use std::net::Ipv4Addr;
    /// let fib = Fib::default();
    /// let dsts = [Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 9, 1)];
    /// for d in dsts {
    ///     fib.prefetch(d);
    /// }
    /// assert!(dsts.iter().all(|d| fib.leaf(*d) == Leaf::NONE));
    /// ```
    #[inline]
    pub fn prefetch(&self, dst: Ipv4Addr) {
        Root(self.root(u32::from(dst))).probe(dst);
    }

    /// Looks up `dsts` into `out` (as many as the shorter of the two
    /// holds), in stages across the batch with prefetches, so that the
    /// cache misses of different addresses overlap instead of adding up.
    ///
    /// ```
    /// # use xdpip::fib::{Fib, Leaf, Route, RouteKind};
    /// # use std::net::Ipv4Addr;
    /// let mut b = Fib::builder();
    /// b.add(Route {
    ///     prefix: Ipv4Addr::new(10, 0, 0, 0), len: 8, kind: RouteKind::Blackhole,
    ///     nexthops: vec![].into(), metric: 0,
    /// }).unwrap();
    /// let fib = b.build();
    /// let dsts = [Ipv4Addr::new(10, 1, 1, 1), Ipv4Addr::new(11, 1, 1, 1)];
    /// let mut out = [Leaf::NONE; 2];
    /// fib.lookup_batch(&dsts, &mut out);
    /// assert_eq!(out.map(|l| l.kind()), [Some(RouteKind::Blackhole), None]);
    /// ```
    #[inline]
    pub fn lookup_batch(&self, dsts: &[Ipv4Addr], out: &mut [Leaf]) {
        for (dsts, out) in dsts.chunks(LANES).zip(out.chunks_mut(LANES)) {
            let n = dsts.len().min(out.len());
            let mut probes = [Probe::NONE; LANES];
            // The root entries (1 MiB, mostly in L2), and a hint for each
            // block's first table: the miss of a large table, overlapped
            // with the others of the batch.
            for i in 0..n {
                probes[i] = Root(self.root(u32::from(dsts[i]))).probe(dsts[i]);
            }
            for i in 0..n {
                out[i] = probes[i].leaf(dsts[i]);
            }
        }
    }

    /// The route lookups take for exactly `prefix/len` (host bits
    /// ignored), if there is one.
    ///
    /// ```
    /// # use xdpip::fib::{Fib, Route, RouteKind};
    /// # use std::net::Ipv4Addr;
    /// let mut b = Fib::builder();
    /// b.add(Route {
    ///     prefix: Ipv4Addr::new(10, 0, 0, 0), len: 8, kind: RouteKind::Blackhole,
    ///     nexthops: vec![].into(), metric: 0,
    /// }).unwrap();
    /// let fib = b.build();
    /// assert!(fib.get(Ipv4Addr::new(10, 9, 9, 9), 8).is_some());
    /// assert!(fib.get(Ipv4Addr::new(10, 0, 0, 0), 9).is_none());
    /// ```
    pub fn get(&self, prefix: Ipv4Addr, len: u8) -> Option<&Route> {
        let p = u32::from(masked(prefix, len).ok()?);
        if len <= SHORT_MAX {
            self.best(short_index(p, len))
        } else {
            self.block(p)?.get(p, len)
        }
    }

    /// A new table: this one with `changes` applied in order. It shares
    /// with this one whatever the changes leave alone, and takes time in
    /// proportion to the changes and the address space they cover, not to
    /// the number of routes. Either every change is valid and applied, or
    /// none is.
    ///
    /// ```
    /// use xdpip::fib::{Fib, FibChange, NextHop, Route, RouteKind};
    /// use std::net::Ipv4Addr;
    ///
    /// let route = |len, metric, ifindex| Route {
    ///     prefix: Ipv4Addr::new(10, 1, 0, 0), len, kind: RouteKind::Unicast, metric,
    ///     nexthops: vec![NextHop { gateway: None, ifindex, weight: 1 }].into(),
    /// };
    /// let old = Fib::default()
    ///     .update(&[
    ///         FibChange::Add(route(16, 0, 1)),
    ///         FibChange::Add(route(24, 10, 2)),
    ///         FibChange::Add(route(24, 20, 3)),
    ///     ])
    ///     .unwrap();
    /// let dst = Ipv4Addr::new(10, 1, 0, 7);
    /// assert_eq!(old.lookup(dst).unwrap().nexthops[0].ifindex, 2);
    ///
    /// let prefix = Ipv4Addr::new(10, 1, 0, 0);
    /// let new = old.update(&[FibChange::Remove { prefix, len: 24, metric: 10 }]).unwrap();
    /// assert_eq!(new.lookup(dst).unwrap().nexthops[0].ifindex, 3);
    /// assert_eq!(new.nexthops(new.leaf(dst))[0].ifindex, 3);
    /// let newer = new.update(&[FibChange::RemovePrefix { prefix, len: 24 }]).unwrap();
    /// assert_eq!(newer.lookup(dst).unwrap().nexthops[0].ifindex, 1);
    /// // The old table is still whole.
    /// assert_eq!((old.len(), new.len(), newer.len()), (3, 2, 1));
    /// assert_eq!(old.lookup(dst).unwrap().nexthops[0].ifindex, 2);
    /// ```
    pub fn update(&self, changes: &[FibChange]) -> Result<Fib, FibError> {
        // Group the changes by what they touch, keeping their order within
        // each group: short routes by prefix (ids below 2^17), long ones by
        // /16.
        let mut changes = changes
            .iter()
            .map(|c| {
                let c = c.normalized()?;
                let (prefix, len) = c.target();
                let group = if len <= SHORT_MAX {
                    short_index(prefix, len)
                } else {
                    1 << 17 | prefix >> 16
                };
                Ok((group, c))
            })
            .collect::<Result<Vec<_>, FibError>>()?;
        changes.sort_by_key(|(group, _)| *group);

        let mut fib = self.clone();
        let mut changes = changes.into_iter().peekable();
        while let Some((group, first)) = changes.next() {
            let (prefix, len) = first.target();
            let mut batch = vec![first];
            while let Some((_, c)) = changes.next_if(|(g, _)| *g == group) {
                batch.push(c);
            }
            let delta = if len <= SHORT_MAX {
                fib.update_short(prefix, len, batch)
            } else {
                fib.update_block(prefix >> 16, batch)
            };
            fib.len = fib.len.saturating_add_signed(delta);
        }
        Ok(fib)
    }

    /// Numbers the sets of the routes `changes` add; applies the changes
    /// to `routes` and releases the sets of the routes they remove.
    fn apply_all<T>(
        &mut self,
        routes: &mut Vec<T>,
        changes: Vec<FibChange>,
        route: impl Fn(&T) -> &Route + Copy,
        wrap: impl Fn(Route) -> T + Copy,
    ) -> isize {
        let sets = Arc::make_mut(&mut self.sets);
        let mut gone = Vec::new();
        let mut delta = 0;
        for c in changes {
            if let FibChange::Add(r) = &c {
                sets.acquire_route(r);
            }
            delta += apply(routes, c, route, wrap, &mut gone);
        }
        for g in &gone {
            sets.release_route(route(g));
        }
        delta
    }

    /// Applies changes to the routes of `prefix/len` (len at most 16) and
    /// repaints the root entries where it is the longest match.
    fn update_short(&mut self, prefix: u32, len: u8, changes: Vec<FibChange>) -> isize {
        let index = short_index(prefix, len);
        let mut routes: Vec<Arc<Route>> = self
            .short_set(index)
            .map(|s| s.to_vec())
            .unwrap_or_default();
        let had = !routes.is_empty();
        let delta = self.apply_all(&mut routes, changes, |r: &Arc<Route>| &**r, Arc::new);
        let leaf = routes.first().map_or(Leaf::NONE, |r| self.sets.leaf_of(r));
        let (best, set) = self.short_mut(index);
        *best = routes.first().cloned();
        let has = best.is_some();
        *set = has.then(|| routes.into());
        match (had, has) {
            // It takes the /16s where it is now the longest match.
            (false, true) => self.paint(prefix, len, |e| {
                if short_len(e.short).is_none_or(|l| l < len) {
                    e.short = index;
                    e.leaf = leaf;
                }
            }),
            // The longest shorter prefix with a route takes its /16s.
            (true, false) => {
                let cover = (0..len)
                    .rev()
                    .map(|l| short_index(prefix & mask(l), l))
                    .find(|&i| self.short_set(i).is_some())
                    .unwrap_or(0);
                let cover_leaf = self
                    .best(cover)
                    .map_or(Leaf::NONE, |r| self.sets.leaf_of(r));
                self.paint(prefix, len, |e| {
                    if e.short == index {
                        e.short = cover;
                        e.leaf = cover_leaf;
                    }
                })
            }
            // Its best route may have changed.
            (true, true) => self.paint(prefix, len, |e| {
                if e.short == index && e.leaf != leaf {
                    e.leaf = leaf;
                }
            }),
            (false, false) => {}
        }
        delta
    }

    /// Applies changes to the routes longer than /16 in /16 number `id`.
    fn update_block(&mut self, id: u32, changes: Vec<FibChange>) -> isize {
        let mut routes = self
            .block(id << 16)
            .map(|b| b.routes().to_vec())
            .unwrap_or_default();
        let delta = self.apply_all(&mut routes, changes, |r| r, |r| r);
        let sets = self.sets.clone();
        self.set_block(id, Block::new(routes, &|r| sets.leaf_of(r)));
        delta
    }

    /// Number of routes, all metrics counted.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for a table without routes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// All routes, all metrics: those of /0 to /16 by length then prefix,
    /// then the longer ones by address.
    pub fn routes(&self) -> Routes<'_> {
        let short = self
            .short
            .iter()
            .flat_map(|c| c.sets.iter().flatten())
            .flat_map(|set| set.iter().map(|r| &**r));
        let long = self
            .root
            .iter()
            .flat_map(|c| c.0.iter().filter_map(|e| e.block.as_deref()))
            .flat_map(|b| b.routes().iter());
        Routes {
            inner: Box::new(short.chain(long)),
            left: self.len,
        }
    }

    /// Bytes of memory this table holds, shared parts included once:
    /// what it costs alone. Allocator overhead is not counted.
    ///
    /// ```
    /// # use xdpip::fib::Fib;
    /// assert!(Fib::default().heap_size() < 64 * 1024);
    /// ```
    pub fn heap_size(&self) -> usize {
        fn distinct<T>(chunks: &[Arc<T>]) -> Vec<&Arc<T>> {
            let mut v: Vec<&Arc<T>> = chunks.iter().collect();
            v.sort_by_key(|c| Arc::as_ptr(c));
            v.dedup_by(|a, b| Arc::ptr_eq(a, b));
            v
        }
        let counters = 2 * size_of::<usize>();
        let mut total =
            size_of::<[Arc<RootChunk>; 256]>() + size_of::<[Arc<ShortChunk>; SHORT_CHUNKS]>();
        for c in distinct(&self.root[..]) {
            total += counters + size_of::<RootChunk>();
            total +=
                c.0.iter()
                    .filter_map(|e| e.block.as_deref())
                    .map(Block::heap_size)
                    .sum::<usize>();
        }
        for c in distinct(&self.short[..]) {
            total += counters + size_of::<ShortChunk>();
            for set in c.sets.iter().flatten() {
                total += counters + set.len() * size_of::<Arc<Route>>();
                total += set
                    .iter()
                    .map(|r| counters + size_of::<Route>() + nexthops_size(r))
                    .sum::<usize>();
            }
        }
        total += counters
            + self.sets.by_id.capacity() * size_of::<Option<(Arc<[NextHop]>, u32)>>()
            + self.sets.ids.capacity() * (size_of::<(Arc<[NextHop]>, u32)>() + 1);
        total
    }
}

/// Asks the kernel to back the memory holding `fib`'s lookup tables with
/// 2 MiB pages (`MADV_HUGEPAGE`, then `MADV_COLLAPSE` to do it now): random
/// lookups in a table of tens of megabytes are dominated by TLB misses on
/// 4 KiB pages. The tables are many small allocations; each 2 MiB region
/// holding one is advised. Returns how many regions the kernel took; 0
/// where transparent huge pages are off (`never`) or the kernel is older
/// than 6.1 (no `MADV_COLLAPSE`: the pages are collapsed later, by
/// khugepaged). `XDPIP_HUGE_PAGES=0` in the environment skips it (to measure
/// without).
pub fn advise_huge_pages(fib: &Fib) -> usize {
    let mut regions: Vec<usize> = Vec::new();
    for c in fib.root.iter() {
        regions.push(Arc::as_ptr(c) as usize);
        for e in c.0.iter() {
            if let Some(b) = &e.block {
                regions.push(Arc::as_ptr(b) as usize);
            }
        }
    }
    advise_regions(regions)
}

/// [`advise_huge_pages`] for one large slice (a benchmark's flat table).
pub fn advise_huge_pages_of<T>(s: &[T]) -> usize {
    let start = s.as_ptr() as usize;
    let end = start + std::mem::size_of_val(s);
    advise_regions((start..end).step_by(HUGE).collect())
}

const HUGE: usize = 2 << 20;

fn advise_regions(mut addrs: Vec<usize>) -> usize {
    if std::env::var_os("XDPIP_HUGE_PAGES").is_some_and(|v| v == "0") {
        return 0;
    }
    /// `MADV_COLLAPSE` (Linux 6.1), which libc may not name yet.
    const MADV_COLLAPSE: libc::c_int = 25;
    for a in addrs.iter_mut() {
        *a &= !(HUGE - 1);
    }
    addrs.sort_unstable();
    addrs.dedup();
    addrs
        .into_iter()
        .filter(|&a| {
            let p = a as *mut libc::c_void;
            // SAFETY: advice only: it changes how the kernel backs these
            // pages, never their contents; a region not wholly mapped is
            // refused with an error, which is ignored.
            unsafe {
                libc::madvise(p, HUGE, libc::MADV_HUGEPAGE) == 0
                    && libc::madvise(p, HUGE, MADV_COLLAPSE) == 0
            }
        })
        .count()
}

/// The routes of a [`Fib`], from [`Fib::routes`].
pub struct Routes<'a> {
    inner: Box<dyn Iterator<Item = &'a Route> + 'a>,
    left: usize,
}

impl<'a> Iterator for Routes<'a> {
    type Item = &'a Route;

    fn next(&mut self) -> Option<&'a Route> {
        let r = self.inner.next()?;
        self.left = self.left.saturating_sub(1);
        Some(r)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for Routes<'_> {}

impl std::fmt::Debug for Routes<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Routes").field("left", &self.left).finish()
    }
}
