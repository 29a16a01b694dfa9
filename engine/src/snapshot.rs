//! The immutable state workers read: FIB, neighbours, and the engine's ports.
//!
//! The control thread builds a new [`Snapshot`] on every change and
//! publishes it with one atomic pointer swap ([`SnapshotCell::publish`]);
//! a worker loads it once per batch ([`SnapshotCell::load`]) and never waits.

use crate::fib::Fib;
use crate::neigh::NeighTable;
use crate::wire::MacAddr;
use arc_swap::ArcSwap;
use std::net::Ipv4Addr;
use std::sync::Arc;

/// Most interfaces one engine serves.
pub const MAX_PORTS: usize = 32;

/// An interface the engine serves, as the kernel currently describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    /// Interface name.
    pub name: String,
    /// Interface index.
    pub ifindex: u32,
    /// Its MAC address, the source of forwarded frames.
    pub mac: MacAddr,
    /// Its MTU.
    pub mtu: u32,
    /// Administratively and operationally up.
    pub up: bool,
    /// Its IPv4 addresses with prefix lengths, primaries first, in the
    /// kernel's order.
    pub addrs: Vec<(Ipv4Addr, u8)>,
    /// `net.ipv4.conf.<port>.forwarding`: forward what arrives here.
    pub forwarding: bool,
    /// `accept_source_route` of `conf/all` and of the port, both set.
    pub accept_source_route: bool,
}

impl Port {
    /// The source address for a packet leaving through this port towards
    /// `dst`, as `inet_select_addr()` picks it: the first primary address
    /// whose subnet holds `dst`, else the first address.
    ///
    /// ```
    /// use xdpip::snapshot::Port;
    /// use std::net::Ipv4Addr;
    /// let p = Port {
    ///     addrs: vec![(Ipv4Addr::new(10, 0, 0, 1), 24), (Ipv4Addr::new(10, 9, 0, 1), 16)],
    ///     ..Port::default()
    /// };
    /// assert_eq!(p.select_addr(Ipv4Addr::new(10, 9, 3, 3)), Some(Ipv4Addr::new(10, 9, 0, 1)));
    /// assert_eq!(p.select_addr(Ipv4Addr::new(8, 8, 8, 8)), Some(Ipv4Addr::new(10, 0, 0, 1)));
    /// ```
    pub fn select_addr(&self, dst: Ipv4Addr) -> Option<Ipv4Addr> {
        let d = u32::from(dst);
        self.addrs
            .iter()
            .find(|(a, len)| {
                let m = if *len == 0 {
                    0
                } else {
                    u32::MAX << (32 - *len as u32)
                };
                u32::from(*a) & m == d & m
            })
            .or(self.addrs.first())
            .map(|(a, _)| *a)
    }
}

impl Default for Port {
    fn default() -> Self {
        Port {
            name: String::new(),
            ifindex: 0,
            mac: MacAddr::default(),
            mtu: 1500,
            up: true,
            addrs: Vec::new(),
            forwarding: true,
            accept_source_route: false,
        }
    }
}

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
        }
    }
}

/// Everything a worker needs to forward, frozen.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Routes of the main table (shared with the next snapshot when only
    /// neighbours change).
    pub fib: Arc<Fib>,
    /// Neighbours of all interfaces.
    pub neigh: Arc<NeighTable>,
    /// The engine's ports, by port number (the order of `-i` options).
    pub ports: Vec<Port>,
    /// Local and broadcast addresses of the namespace (its local table).
    pub locals: Arc<rustc_hash::FxHashSet<Ipv4Addr>>,
    /// Tunables.
    pub sysctl: Sysctl,
    /// Incremented at every publication.
    pub generation: u64,
    /// The host's packet filter, compiled ([`crate::filter`]).
    pub filter: Arc<crate::filter::Ruleset>,
}

impl Snapshot {
    /// True for an address of the namespace (local or broadcast).
    #[inline]
    pub fn is_local(&self, a: Ipv4Addr) -> bool {
        self.locals.contains(&a)
    }

    /// True for the limited broadcast address and for the subnet broadcast
    /// address of any of the engine's ports.
    pub fn is_broadcast(&self, a: Ipv4Addr) -> bool {
        a.is_broadcast()
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
