//! The forwarding information base: longest-prefix match over the routes of
//! the engine's network namespace.
//!
//! A [`Fib`] is immutable once built; the control thread publishes a new one
//! in a [`crate::snapshot::Snapshot`] on every routing change, so workers read it
//! without locks. [`Fib::update`] makes the new table from the current one
//! and the changes, sharing everything the changes do not touch, in time
//! proportional to the changes rather than to the table.
//!
//! The layout is a 16-8-8 multibit trie in the manner of DPDK's DIR-24-8.
//! The root has a 4-byte entry per /16 naming the best route of /0 to /16
//! that covers it, and flagging the /16s that hold longer routes: those
//! have a block, with a table by the third address byte and, for /24s
//! with longer routes, tables by the fourth. A lookup reads one root entry
//! and at most two table entries, whatever the size of the table. Every
//! array is cut into chunks of 256 behind [`Arc`]s so that an update copies
//! only the chunks and blocks it changes; the routes of /0 to /16 are kept
//! by prefix so that removing one finds the route it uncovers.

mod block;
#[cfg(test)]
mod tests;

use block::Block;
use std::mem::size_of;
use std::net::Ipv4Addr;
use std::sync::Arc;

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
    /// Adds a route, replacing the one with the same prefix, length and
    /// metric (as `RTM_NEWROUTE` with `NLM_F_REPLACE` does).
    Add(Route),
    /// Removes the route with this prefix, length and metric, if there is
    /// one; the route with the next higher metric, or else the next shorter
    /// prefix, takes over its addresses.
    Remove {
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
            &FibChange::Remove { prefix, len, .. } | &FibChange::RemovePrefix { prefix, len } => {
                (u32::from(prefix), len)
            }
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

/// The order routes are kept in: by length, prefix, then metric.
#[inline]
fn key(r: &Route) -> (u8, u32, u32) {
    (r.len, u32::from(r.prefix), r.metric)
}

/// Bytes the next hops of `r` hold on the heap.
fn nexthops_size(r: &Route) -> usize {
    // Counted whole for every route that shares the set: an upper bound.
    r.nexthops.len() * size_of::<NextHop>()
}

/// Applies one normalized change to routes sorted by [`key`]; returns the
/// change in their number.
fn apply<T>(
    routes: &mut Vec<T>,
    change: FibChange,
    route: impl Fn(&T) -> &Route,
    wrap: impl FnOnce(Route) -> T,
) -> isize {
    match change {
        FibChange::Add(r) => match routes.binary_search_by(|x| key(route(x)).cmp(&key(&r))) {
            Ok(i) => {
                routes[i] = wrap(r);
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
        } => {
            let k = (len, u32::from(prefix), metric);
            match routes.binary_search_by(|x| key(route(x)).cmp(&k)) {
                Ok(i) => {
                    routes.remove(i);
                    -1
                }
                Err(_) => 0,
            }
        }
        FibChange::RemovePrefix { prefix, len } => {
            let p = u32::from(prefix);
            let lo = routes.partition_point(|x| key(route(x)) < (len, p, 0));
            let hi = routes.partition_point(|x| key(route(x)) <= (len, p, u32::MAX));
            routes.drain(lo..hi);
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

/// Marks a root entry whose /16 holds routes longer than /16, in a block.
const HAS_BLOCK: u32 = 1 << 31;

/// Root entries of 256 consecutive /16s: each the [`short_index`] of the
/// best route of /0 to /16 covering the /16 (0 for none), with
/// [`HAS_BLOCK`]. Four bytes a /16 keep the root in 256 KiB, which stays in
/// a core's L2 cache.
#[derive(Debug, Clone)]
struct RootChunk([u32; 256]);

/// The blocks of 256 consecutive /16s.
#[derive(Debug, Clone)]
struct BlockChunk([Option<Arc<Block>>; 256]);

/// 256 consecutive entries of the table of short routes, by
/// [`short_index`].
#[derive(Debug, Clone)]
struct ShortChunk {
    /// The lowest-metric route of each prefix, where lookups read it.
    best: [Option<Arc<Route>>; 256],
    /// All routes of each prefix, sorted by metric.
    sets: [Option<ShortSet>; 256],
}

/// The routes of one prefix of /0 to /16, sorted by metric.
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
/// let fib = b.build();
/// assert_eq!(fib.lookup(Ipv4Addr::new(10, 1, 2, 3)).unwrap().len, 16);
/// assert_eq!(fib.lookup(Ipv4Addr::new(8, 8, 8, 8)).unwrap().len, 0);
/// ```
#[derive(Clone)]
pub struct Fib {
    /// Root entries, one per /16, in chunks of 256 so that an update
    /// copies only the chunks it changes.
    root: Box<[Arc<RootChunk>; 256]>,
    /// Blocks, one per /16 with routes longer than /16, in chunks of 256.
    blocks: Box<[Arc<BlockChunk>; 256]>,
    /// Every route of /0 to /16, by [`short_index`], in chunks of 256.
    short: Box<[Arc<ShortChunk>; SHORT_CHUNKS]>,
    /// Number of routes.
    len: usize,
}

impl Default for Fib {
    fn default() -> Self {
        // Every chunk of an empty table is the same empty chunk.
        let root = Arc::new(RootChunk([0; 256]));
        let blocks = Arc::new(BlockChunk(std::array::from_fn(|_| None)));
        let short = Arc::new(ShortChunk {
            best: std::array::from_fn(|_| None),
            sets: std::array::from_fn(|_| None),
        });
        Fib {
            root: Box::new(std::array::from_fn(|_| root.clone())),
            blocks: Box::new(std::array::from_fn(|_| blocks.clone())),
            short: Box::new(std::array::from_fn(|_| short.clone())),
            len: 0,
        }
    }
}

impl std::fmt::Debug for Fib {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fib")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

/// Collects routes for a new [`Fib`].
#[derive(Debug, Default)]
pub struct FibBuilder {
    routes: Vec<Route>,
}

impl FibBuilder {
    /// Adds a route; among routes for the same prefix the lowest metric
    /// wins, as in the kernel's lookup, and the others stay behind it for
    /// when it goes. Of two routes with the same prefix, length and metric
    /// the first added stays.
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
            let (len, prefix, metric) = key(r);
            (long as u128) << 120
                | (block as u128) << 96
                | (len as u128) << 64
                | (prefix as u128) << 32
                | metric as u128
        });
        routes.dedup_by(|b, a| key(a) == key(b));
        let mut fib = Fib {
            len: routes.len(),
            ..Fib::default()
        };
        let mut long = routes.split_off(routes.partition_point(|r| r.len <= SHORT_MAX));

        let mut short = routes.into_iter().peekable();
        while let Some(first) = short.next() {
            let (len, prefix, _) = key(&first);
            let mut set = vec![Arc::new(first)];
            while let Some(r) = short.next_if(|r| (r.len, u32::from(r.prefix)) == (len, prefix)) {
                set.push(Arc::new(r));
            }
            let index = short_index(prefix, len);
            let (best, sets) = fib.short_mut(index);
            *best = Some(set[0].clone());
            *sets = Some(set.into());
            fib.paint(prefix, len, |e| *e = index);
        }

        // From the end, so that each block's routes leave without moving
        // the others.
        while let Some(last) = long.last() {
            let id = u32::from(last.prefix) >> 16;
            let first = long.partition_point(|r| u32::from(r.prefix) >> 16 < id);
            let block = Block::new(long.split_off(first));
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
    fn root_entry(&self, a: u32) -> u32 {
        self.root[(a >> 24) as usize].0[(a >> 16) as u8 as usize]
    }

    /// The block of the /16 holding `a`.
    #[inline(always)]
    fn block(&self, a: u32) -> Option<&Block> {
        self.blocks[(a >> 24) as usize].0[(a >> 16) as u8 as usize].as_deref()
    }

    /// The best route of the short prefix a root entry names.
    #[inline(always)]
    fn best(&self, entry: u32) -> Option<&Route> {
        let i = (entry & !HAS_BLOCK) as usize;
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

    /// Replaces the block of /16 number `id` and flags its root entry.
    fn set_block(&mut self, id: u32, block: Option<Block>) {
        let (hi, lo) = ((id >> 8) as u8 as usize, id as u8 as usize);
        let flag = if block.is_some() { HAS_BLOCK } else { 0 };
        Arc::make_mut(&mut self.blocks[hi]).0[lo] = block.map(Arc::new);
        if self.root[hi].0[lo] & HAS_BLOCK != flag {
            let e = &mut Arc::make_mut(&mut self.root[hi]).0[lo];
            *e = *e & !HAS_BLOCK | flag;
        }
    }

    /// Calls `f` on the root entry of every /16 `prefix/len` (len at most
    /// 16) covers, without its [`HAS_BLOCK`] flag, copying chunks first if
    /// shared.
    fn paint(&mut self, prefix: u32, len: u8, mut f: impl FnMut(&mut u32)) {
        let first = (prefix >> 16) as usize;
        let end = first + (1usize << (SHORT_MAX - len.min(SHORT_MAX)));
        let mut s = first;
        while s < end {
            let chunk = Arc::make_mut(&mut self.root[(s >> 8) as u8 as usize]);
            let next = end.min((s | 255) + 1);
            let lo = s & 255;
            for e in &mut chunk.0[lo..lo + (next - s)] {
                let mut short = *e & !HAS_BLOCK;
                f(&mut short);
                *e = *e & HAS_BLOCK | short;
            }
            s = next;
        }
    }

    /// The most specific route for `dst`, and among routes for that prefix
    /// the one of lowest metric.
    #[inline]
    pub fn lookup(&self, dst: Ipv4Addr) -> Option<&Route> {
        let a = u32::from(dst);
        let e = self.root_entry(a);
        if e & HAS_BLOCK != 0 {
            if let Some(r) = self.block(a).and_then(|b| b.lookup(a)) {
                return Some(r);
            }
        }
        self.best(e)
    }

    /// Hints the first memory a lookup of `dst` reads to the cache, so that
    /// the lookup itself, a little later, waits less: a worker calls it for
    /// each packet of a batch before forwarding them, and their cache
    /// misses overlap.
    ///
    /// ```
    /// # use xdpip::fib::Fib;
    /// # use std::net::Ipv4Addr;
    /// let fib = Fib::default();
    /// let dsts = [Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 9, 1)];
    /// for d in dsts {
    ///     fib.prefetch(d);
    /// }
    /// assert!(dsts.iter().all(|d| fib.lookup(*d).is_none()));
    /// ```
    #[inline]
    pub fn prefetch(&self, dst: Ipv4Addr) {
        let a = u32::from(dst);
        let e = self.root_entry(a);
        if e & HAS_BLOCK != 0 {
            if let Some(b) = self.block(a) {
                b.prefetch(a);
            }
        }
        if let Some(r) = self.best(e) {
            prefetch(r);
        }
    }

    /// Looks up `dsts` into `out` (as many as the shorter of the two holds),
    /// in stages across the batch with prefetches, so that the cache misses
    /// of different addresses overlap instead of adding up; this pays for
    /// large tables, when the caller does more per address than look it up.
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
    /// let dsts = [Ipv4Addr::new(10, 1, 1, 1), Ipv4Addr::new(11, 1, 1, 1)];
    /// let mut out = [None; 2];
    /// fib.lookup_batch(&dsts, &mut out);
    /// assert_eq!(out.map(|r| r.map(|r| r.len)), [Some(8), None]);
    /// ```
    pub fn lookup_batch<'a>(&'a self, dsts: &[Ipv4Addr], out: &mut [Option<&'a Route>]) {
        // More addresses in flight than this overflow the core's miss
        // buffers, and prefetches are dropped.
        const LANES: usize = 16;
        for (dsts, out) in dsts.chunks(LANES).zip(out.chunks_mut(LANES)) {
            let n = dsts.len().min(out.len());
            let mut addrs = [0u32; LANES];
            let mut roots = [0u32; LANES];
            let mut blocks: [Option<&Block>; LANES] = [None; LANES];
            let mut entries = [0u32; LANES];
            for i in 0..n {
                let a = u32::from(dsts[i]);
                addrs[i] = a;
                roots[i] = self.root_entry(a);
                if roots[i] & HAS_BLOCK != 0 {
                    blocks[i] = self.block(a);
                    if let Some(b) = blocks[i] {
                        b.prefetch(a);
                    }
                }
                if let Some(r) = self.best(roots[i]) {
                    prefetch(r);
                }
            }
            for i in 0..n {
                if let Some(b) = blocks[i] {
                    entries[i] = b.entry(addrs[i]);
                    if entries[i] != 0 {
                        b.prefetch_entry(addrs[i], entries[i]);
                        continue;
                    }
                }
                // The short route it falls back to was hinted above.
                if let Some(r) = self.best(roots[i]) {
                    prefetch(r.nexthops.as_ptr());
                }
            }
            for i in 0..n {
                let found = blocks[i]
                    .and_then(|b| b.resolve(addrs[i], entries[i]))
                    .or_else(|| self.best(roots[i]));
                if let Some(r) = found {
                    prefetch(r.nexthops.as_ptr());
                }
                out[i] = found;
            }
        }
    }

    /// The route of lowest metric for exactly `prefix/len` (host bits
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

    /// Applies changes to the routes of `prefix/len` (len at most 16); when
    /// the prefix gains its first route or loses its last, repaints the
    /// root entries it covers.
    fn update_short(&mut self, prefix: u32, len: u8, changes: Vec<FibChange>) -> isize {
        let index = short_index(prefix, len);
        let (best, set) = self.short_mut(index);
        let mut routes: Vec<Arc<Route>> = set.as_deref().map(<[_]>::to_vec).unwrap_or_default();
        let had = !routes.is_empty();
        let delta: isize = changes
            .into_iter()
            .map(|c| apply(&mut routes, c, |r: &Arc<Route>| &**r, Arc::new))
            .sum();
        *best = routes.first().cloned();
        let has = best.is_some();
        *set = has.then(|| routes.into());
        match (had, has) {
            // It takes the /16s where it is now the longest match.
            (false, true) => self.paint(prefix, len, |e| {
                if short_len(*e).is_none_or(|l| l < len) {
                    *e = index;
                }
            }),
            // The longest shorter prefix with a route takes its /16s.
            (true, false) => {
                let cover = (0..len)
                    .rev()
                    .map(|l| short_index(prefix & mask(l), l))
                    .find(|&i| self.short_set(i).is_some())
                    .unwrap_or(0);
                self.paint(prefix, len, |e| {
                    if *e == index {
                        *e = cover;
                    }
                })
            }
            _ => {}
        }
        delta
    }

    /// Applies changes to the routes longer than /16 in /16 number `id`.
    fn update_block(&mut self, id: u32, changes: Vec<FibChange>) -> isize {
        let mut routes = self
            .block(id << 16)
            .map(|b| b.routes().to_vec())
            .unwrap_or_default();
        let delta = changes
            .into_iter()
            .map(|c| apply(&mut routes, c, |r| r, |r| r))
            .sum();
        self.set_block(id, Block::new(routes));
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
            .blocks
            .iter()
            .flat_map(|c| c.0.iter().flatten())
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
        let mut total = size_of::<[Arc<RootChunk>; 256]>()
            + size_of::<[Arc<BlockChunk>; 256]>()
            + size_of::<[Arc<ShortChunk>; SHORT_CHUNKS]>();
        total += distinct(&self.root[..]).len() * (counters + size_of::<RootChunk>());
        for c in distinct(&self.blocks[..]) {
            total += counters + size_of::<BlockChunk>();
            total += c.0.iter().flatten().map(|b| b.heap_size()).sum::<usize>();
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
        total
    }
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
