//! Next-hop link-layer addresses, mirrored from the kernel's neighbour table.
//!
//! Like the [`crate::fib::Fib`], a [`NeighTable`] is immutable and published
//! in a snapshot. Only entries whose state the kernel itself would transmit
//! to (`NUD_VALID`) carry a MAC; an `INCOMPLETE` or `FAILED` entry stops
//! traffic to that neighbour instead of sending it to a wrong address.

use crate::wire::MacAddr;
use rustc_hash::FxHashMap;
use std::net::Ipv4Addr;

/// Neighbour states (`NUD_*` of `include/uapi/linux/neighbour.h`).
pub mod nud {
    /// Resolution under way.
    pub const INCOMPLETE: u16 = 0x01;
    /// Confirmed recently.
    pub const REACHABLE: u16 = 0x02;
    /// Usable, to be confirmed on next use.
    pub const STALE: u16 = 0x04;
    /// Waiting for confirmation.
    pub const DELAY: u16 = 0x08;
    /// Being probed.
    pub const PROBE: u16 = 0x10;
    /// Resolution failed.
    pub const FAILED: u16 = 0x20;
    /// No resolution needed on this device.
    pub const NOARP: u16 = 0x40;
    /// Static entry.
    pub const PERMANENT: u16 = 0x80;
    /// States in which the kernel transmits to the cached address.
    pub const VALID: u16 = PERMANENT | NOARP | REACHABLE | PROBE | STALE | DELAY;
}

/// A neighbour entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Neighbour {
    /// Its link-layer address (zero while unresolved).
    pub mac: MacAddr,
    /// Its `NUD_*` state.
    pub state: u16,
}

impl Neighbour {
    /// The address to send to, if the state allows sending.
    #[inline]
    pub fn usable_mac(&self) -> Option<MacAddr> {
        (self.state & nud::VALID != 0).then_some(self.mac)
    }
}

/// Immutable map from (interface, IPv4 address) to neighbour.
///
/// ```
/// use xdpip::neigh::{NeighTable, Neighbour, nud};
/// use xdpip::wire::MacAddr;
/// use std::net::Ipv4Addr;
///
/// let mut t = NeighTable::default();
/// let ip = Ipv4Addr::new(10, 0, 0, 2);
/// t.insert(3, ip, Neighbour { mac: MacAddr([2, 0, 0, 0, 0, 2]), state: nud::STALE });
/// assert_eq!(t.resolve(3, ip), Some(MacAddr([2, 0, 0, 0, 0, 2])));
/// t.insert(3, ip, Neighbour { mac: MacAddr([2, 0, 0, 0, 0, 2]), state: nud::FAILED });
/// assert_eq!(t.resolve(3, ip), None);
/// ```
#[derive(Debug, Default, Clone)]
pub struct NeighTable {
    map: FxHashMap<(u32, u32), Neighbour>,
}

impl NeighTable {
    /// Adds or replaces an entry.
    pub fn insert(&mut self, ifindex: u32, ip: Ipv4Addr, n: Neighbour) {
        self.map.insert((ifindex, u32::from(ip)), n);
    }

    /// Removes an entry.
    pub fn remove(&mut self, ifindex: u32, ip: Ipv4Addr) {
        self.map.remove(&(ifindex, u32::from(ip)));
    }

    /// Removes every entry of an interface.
    pub fn remove_interface(&mut self, ifindex: u32) {
        self.map.retain(|(i, _), _| *i != ifindex);
    }

    /// The entry, whatever its state.
    pub fn get(&self, ifindex: u32, ip: Ipv4Addr) -> Option<&Neighbour> {
        self.map.get(&(ifindex, u32::from(ip)))
    }

    /// The MAC to send to, when the entry exists and is usable.
    #[inline]
    pub fn resolve(&self, ifindex: u32, ip: Ipv4Addr) -> Option<MacAddr> {
        self.map
            .get(&(ifindex, u32::from(ip)))
            .and_then(|n| n.usable_mac())
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// All entries as (ifindex, address, neighbour).
    pub fn iter(&self) -> impl Iterator<Item = (u32, Ipv4Addr, &Neighbour)> {
        self.map
            .iter()
            .map(|((i, a), n)| (*i, Ipv4Addr::from(*a), n))
    }
}
