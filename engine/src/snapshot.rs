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
    /// Its first IPv4 address, the source of ICMP errors it sends.
    pub addr: Option<Ipv4Addr>,
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
    /// Incremented at every publication.
    pub generation: u64,
}

impl Snapshot {
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
}
