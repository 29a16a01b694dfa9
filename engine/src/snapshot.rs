//! The immutable state workers read: FIB, adjacencies, neighbours, and the
//! engine's ports.
//!
//! The control thread builds a new [`Snapshot`] on every change and
//! publishes it with one atomic pointer swap ([`SnapshotCell::publish`]);
//! a worker loads it once per batch ([`SnapshotCell::load`]) and never waits.

use crate::fib::{Fib, RouteKind};
use crate::neigh::{Adjacencies, NeighTable};
use arc_swap::ArcSwap;
use std::net::Ipv4Addr;
use std::sync::Arc;

pub use crate::iface::{Port, MAX_PORTS};

/// The IPv4 tunables of ip(7), with the kernel's defaults; see
/// [`crate::control::sysctl`] for where their values come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sysctl {
    /// `ip_forward`
    pub ip_forward: bool,
    /// `ip_local_port_range`: ephemeral ports.
    pub ip_local_port_range: (u16, u16),
    /// `ip_no_pmtu_disc`
    pub ip_no_pmtu_disc: u8,
    /// `ip_nonlocal_bind`
    pub ip_nonlocal_bind: bool,
    /// `ipfrag_high_thresh`: reassembly memory limit in bytes.
    pub ipfrag_high_thresh: u64,
    /// `ipfrag_low_thresh`: reassembly memory evicted down to.
    pub ipfrag_low_thresh: u64,
    /// `ipfrag_time`: seconds a fragment is kept.
    pub ipfrag_time: u32,
    /// `ipfrag_max_dist`
    pub ipfrag_max_dist: u32,
    /// `conf/all/accept_source_route`
    pub accept_source_route: bool,
    /// `ip_default_ttl`: TTL of packets the engine originates.
    pub ip_default_ttl: u8,
    /// `icmp_ratelimit`: milliseconds per ICMP error per destination.
    pub icmp_ratelimit: u32,
    /// `icmp_ratemask`: the ICMP types that `icmp_ratelimit` applies to.
    pub icmp_ratemask: u32,
    /// `icmp_msgs_per_sec`: ICMP messages per second, all destinations.
    pub icmp_msgs_per_sec: u32,
    /// `icmp_msgs_burst`: burst allowed above `icmp_msgs_per_sec`.
    pub icmp_msgs_burst: u32,
    /// `fib_multipath_hash_policy`: 0 hashes ECMP flows on addresses, 1 on
    /// the 5-tuple (addresses only for fragments).
    pub fib_multipath_hash_policy: u8,
    /// `icmp_echo_ignore_all`: answer no echo request.
    pub icmp_echo_ignore_all: bool,
    /// `icmp_echo_ignore_broadcasts`: answer no echo request to a
    /// broadcast address.
    pub icmp_echo_ignore_broadcasts: bool,
}

impl Default for Sysctl {
    fn default() -> Self {
        Sysctl {
            ip_forward: true,
            ip_local_port_range: (32768, 60999),
            ip_no_pmtu_disc: 0,
            ip_nonlocal_bind: false,
            ipfrag_high_thresh: 4 << 20,
            ipfrag_low_thresh: 3 << 20,
            ipfrag_time: 30,
            ipfrag_max_dist: 64,
            accept_source_route: false,
            ip_default_ttl: 64,
            icmp_ratelimit: 1000,
            icmp_ratemask: 6168,
            icmp_msgs_per_sec: 1000,
            icmp_msgs_burst: 50,
            fib_multipath_hash_policy: 0,
            icmp_echo_ignore_all: false,
            icmp_echo_ignore_broadcasts: true,
        }
    }
}

/// A filter of the namespace's own addresses (`RTN_LOCAL`), so that the
/// forward path rules out nearly every source without a lookup: a bit per
/// hash of an address, 8 KiB, in L1 or L2.
#[derive(Clone)]
pub struct OwnAddrs {
    bits: Box<[u64; 1024]>,
}

impl Default for OwnAddrs {
    fn default() -> Self {
        OwnAddrs {
            bits: Box::new([0; 1024]),
        }
    }
}

impl std::fmt::Debug for OwnAddrs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n: u32 = self.bits.iter().map(|w| w.count_ones()).sum();
        f.debug_struct("OwnAddrs").field("bits", &n).finish()
    }
}

/// The filter of no address: what a port that accepts its own addresses
/// as sources ([`Port::accept_local`]) checks them against, so that the
/// vector path asks one filter or the other and never tests a flag.
static NO_OWN: [u64; 1024] = [0; 1024];

impl OwnAddrs {
    /// The address's bit, hashed as the header holds it (network byte
    /// order read natively): no byte swap on the vector path.
    #[inline(always)]
    fn bit(a: Ipv4Addr) -> usize {
        (u32::from_ne_bytes(a.octets()).wrapping_mul(0x9e37_79b1) >> 16) as usize
    }

    /// The filter of `addrs`: the addresses of every interface of the
    /// namespace.
    pub fn of(addrs: impl IntoIterator<Item = Ipv4Addr>) -> OwnAddrs {
        let mut f = OwnAddrs::default();
        for a in addrs {
            let b = Self::bit(a);
            f.bits[b / 64] |= 1 << (b % 64);
        }
        f
    }

    /// False when `a` is certainly not an own address.
    #[inline(always)]
    pub fn may_contain(&self, a: Ipv4Addr) -> bool {
        Self::may_hold(&self.bits, a)
    }

    /// These bits, or those of no address when `check` is false.
    #[inline(always)]
    pub(crate) fn bits_if(&self, check: bool) -> &[u64; 1024] {
        if check {
            &self.bits
        } else {
            &NO_OWN
        }
    }

    /// [`OwnAddrs::may_contain`] on the bits [`OwnAddrs::bits_if`] gave.
    #[inline(always)]
    pub(crate) fn may_hold(bits: &[u64; 1024], a: Ipv4Addr) -> bool {
        let b = Self::bit(a);
        bits[b / 64] & 1 << (b % 64) != 0
    }
}

/// Everything a worker needs to forward, frozen.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Routes of the main and local tables (shared with the next snapshot
    /// when only neighbours change).
    pub fib: Arc<Fib>,
    /// The adjacency of every next-hop set of `fib`.
    pub adj: Arc<Adjacencies>,
    /// Neighbours of all interfaces.
    pub neigh: Arc<NeighTable>,
    /// The engine's ports, by port number (the order of `-i` options).
    pub ports: Vec<Port>,
    /// The namespace's own addresses, for the martian source check.
    pub own: Arc<OwnAddrs>,
    /// Tunables.
    pub sysctl: Sysctl,
    /// Incremented at every publication.
    pub generation: u64,
    /// The host's packet filter, compiled ([`crate::filter`]).
    pub filter: Arc<crate::filter::Ruleset>,
}

impl Snapshot {
    /// The snapshot of these tables: the adjacencies are derived from
    /// them, and the filter of own addresses from the ports' addresses (the
    /// control thread gives it every interface's: [`Snapshot::own`]).
    pub fn new(fib: Arc<Fib>, neigh: Arc<NeighTable>, ports: Vec<Port>, sysctl: Sysctl) -> Self {
        let own = OwnAddrs::of(ports.iter().flat_map(|p| p.addrs.iter().map(|a| a.0)));
        Snapshot {
            adj: Arc::new(Adjacencies::build(&fib, &ports, &neigh)),
            own: Arc::new(own),
            fib,
            neigh,
            ports,
            filter: Arc::default(),
            sysctl,
            generation: 0,
        }
    }

    /// True for an address of the namespace (a local or broadcast route of
    /// its local table).
    #[inline]
    pub fn is_local(&self, a: Ipv4Addr) -> bool {
        matches!(
            self.fib.leaf(a).kind(),
            Some(RouteKind::Local | RouteKind::Broadcast)
        )
    }

    /// True for one of the namespace's own addresses (`RTN_LOCAL`): a
    /// packet from one, arriving on an interface, is a martian while
    /// `accept_local` is off.
    #[inline(always)]
    pub fn is_own(&self, a: Ipv4Addr) -> bool {
        self.own.may_contain(a) && self.fib.leaf(a).kind() == Some(RouteKind::Local)
    }

    /// True for the limited broadcast address, a broadcast route of the
    /// local table, and the subnet broadcast address of any of the
    /// engine's ports.
    pub fn is_broadcast(&self, a: Ipv4Addr) -> bool {
        a.is_broadcast()
            || self.fib.leaf(a).kind() == Some(RouteKind::Broadcast)
            || self.ports.iter().any(|p| {
                p.addrs
                    .iter()
                    .any(|(x, len)| *len < 31 && u32::from(a) == u32::from(*x) | (u32::MAX >> *len))
            })
    }

    /// The port number of an interface the engine serves.
    #[inline]
    pub fn port_of(&self, ifindex: u32) -> Option<usize> {
        // At most MAX_PORTS entries, usually two: a scan beats hashing.
        self.ports.iter().position(|p| p.ifindex == ifindex)
    }
}

/// Holder of the current snapshot, shared by the control thread and workers.
///
/// ```
/// use xdpip::snapshot::{Snapshot, SnapshotCell};
/// let cell = SnapshotCell::new(Snapshot::default());
/// let mut next = Snapshot::clone(&cell.load());
/// next.generation = 7;
/// cell.publish(next);
/// assert_eq!(cell.load().generation, 7);
/// ```
#[derive(Debug)]
pub struct SnapshotCell {
    current: ArcSwap<Snapshot>,
}

impl SnapshotCell {
    /// A cell holding `s`.
    pub fn new(s: Snapshot) -> Self {
        SnapshotCell {
            current: ArcSwap::from_pointee(s),
        }
    }

    /// The current snapshot; lock-free, never blocks, and touches no
    /// reference count shared with other workers.
    #[inline]
    pub fn load(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.current.load()
    }

    /// Replaces the current snapshot; readers see the old or the new one.
    pub fn publish(&self, s: Snapshot) {
        self.current.store(Arc::new(s));
    }

    /// Replaces the current snapshot with `f(current)`, calling `f` again
    /// if another thread published meanwhile (two threads publish: the
    /// control thread and the filter thread).
    pub fn update(&self, mut f: impl FnMut(&Snapshot) -> Snapshot) {
        self.current.rcu(|cur| f(cur));
    }
}
