//! Next-hop link-layer addresses, mirrored from the kernel's neighbour
//! table, and the adjacencies built from them.
//!
//! Like the [`crate::fib::Fib`], a [`NeighTable`] is immutable and published
//! in a snapshot. Only entries whose state the kernel itself would transmit
//! to (`NUD_VALID`) carry a MAC; an `INCOMPLETE` or `FAILED` entry stops
//! traffic to that neighbour instead of sending it to a wrong address. The
//! table is cut into chunks behind [`Arc`]s: a change copies one chunk, not
//! the table.
//!
//! An [`Adjacency`] is what the forward path needs to send to one next
//! hop: egress port, MTU, and the 14-byte Ethernet header, ready to copy.
//! [`Adjacencies`] holds one per next-hop set of the FIB (the path of a
//! single-path set, or a group of weighted paths for ECMP); the control
//! thread rebuilds it when a neighbour, a port or the sets change, so that
//! a neighbour change rewrites its adjacencies in the next snapshot.

use crate::fib::{Fib, NextHop};
use crate::iface::Port;
use crate::wire::MacAddr;
use rustc_hash::FxHashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

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

/// Chunks of a [`NeighTable`]; a power of two.
const CHUNKS: usize = 64;

type Chunk = FxHashMap<(u32, u32), Neighbour>;

/// Immutable map from (interface, IPv4 address) to neighbour; cloning it
/// copies 64 pointers, and a change copies the one chunk it touches.
///
/// ```
/// use xdpip::neigh::{NeighTable, Neighbour, nud};
/// use xdpip::wire::MacAddr;
/// use std::net::Ipv4Addr;
///
/// let mut t = NeighTable::default();
/// let ip = Ipv4Addr::new(10, 0, 0, 2);
/// t.insert(3, ip, Neighbour { mac: MacAddr([2, 0, 0, 0, 0, 2]), state: nud::STALE });
/// let before = t.clone();
/// assert_eq!(t.resolve(3, ip), Some(MacAddr([2, 0, 0, 0, 0, 2])));
/// t.insert(3, ip, Neighbour { mac: MacAddr([2, 0, 0, 0, 0, 2]), state: nud::FAILED });
/// assert_eq!(t.resolve(3, ip), None);
/// assert!(before.resolve(3, ip).is_some(), "a clone is a snapshot");
/// ```
#[derive(Debug, Clone)]
pub struct NeighTable {
    chunks: Box<[Arc<Chunk>; CHUNKS]>,
    len: usize,
}

impl Default for NeighTable {
    fn default() -> Self {
        let empty = Arc::new(Chunk::default());
        NeighTable {
            chunks: Box::new(std::array::from_fn(|_| empty.clone())),
            len: 0,
        }
    }
}

impl NeighTable {
    #[inline]
    fn chunk_of(ifindex: u32, ip: u32) -> usize {
        ((ip ^ ifindex.rotate_left(16)).wrapping_mul(0x9e37_79b1) >> 26) as usize % CHUNKS
    }

    /// Adds or replaces an entry.
    pub fn insert(&mut self, ifindex: u32, ip: Ipv4Addr, n: Neighbour) {
        let ip = u32::from(ip);
        let c = Arc::make_mut(&mut self.chunks[Self::chunk_of(ifindex, ip)]);
        if c.insert((ifindex, ip), n).is_none() {
            self.len += 1;
        }
    }

    /// Removes an entry.
    pub fn remove(&mut self, ifindex: u32, ip: Ipv4Addr) {
        let ip = u32::from(ip);
        let i = Self::chunk_of(ifindex, ip);
        if self.chunks[i].contains_key(&(ifindex, ip)) {
            Arc::make_mut(&mut self.chunks[i]).remove(&(ifindex, ip));
            self.len -= 1;
        }
    }

    /// Removes every entry of an interface.
    pub fn remove_interface(&mut self, ifindex: u32) {
        for c in self.chunks.iter_mut() {
            if c.keys().any(|(i, _)| *i == ifindex) {
                let c = Arc::make_mut(c);
                let before = c.len();
                c.retain(|(i, _), _| *i != ifindex);
                self.len -= before - c.len();
            }
        }
    }

    /// The entry, whatever its state.
    #[inline]
    pub fn get(&self, ifindex: u32, ip: Ipv4Addr) -> Option<&Neighbour> {
        let ip = u32::from(ip);
        self.chunks[Self::chunk_of(ifindex, ip)].get(&(ifindex, ip))
    }

    /// The MAC to send to, when the entry exists and is usable.
    #[inline]
    pub fn resolve(&self, ifindex: u32, ip: Ipv4Addr) -> Option<MacAddr> {
        self.get(ifindex, ip).and_then(|n| n.usable_mac())
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// All entries as (ifindex, address, neighbour).
    pub fn iter(&self) -> impl Iterator<Item = (u32, Ipv4Addr, &Neighbour)> {
        self.chunks
            .iter()
            .flat_map(|c| c.iter())
            .map(|((i, a), n)| (*i, Ipv4Addr::from(*a), n))
    }
}

/// Whether an adjacency can be sent to, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum AdjState {
    /// The header is complete: send.
    Ready,
    /// A connected route: the destination itself is the next hop, its MAC
    /// comes from the neighbour table per packet (the header holds the
    /// source MAC and EtherType).
    Glean,
    /// The gateway has no usable MAC: the kernel must resolve it.
    Unresolved,
    /// The egress port is down.
    PortDown,
    /// The egress interface is not one the engine serves.
    ForeignEgress,
    /// Several paths (ECMP): [`Adjacency::group`] names them.
    Multipath,
}

/// What the forward path needs to send to one next hop: one cache line
/// half, read once per packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C, align(32))]
pub struct Adjacency {
    /// The Ethernet header of frames to this next hop: its MAC, the egress
    /// port's MAC, EtherType IPv4.
    pub rewrite: [u8; 14],
    /// Egress port number.
    pub port: u8,
    /// Whether it can be sent to.
    pub state: AdjState,
    /// The egress MTU (IPv4 packets are at most 65535 bytes).
    pub mtu: u16,
    /// For [`AdjState::Multipath`]: the group of paths.
    pub group: u16,
    /// Egress interface.
    pub ifindex: u32,
    /// The gateway (unspecified for a connected route).
    pub next: Ipv4Addr,
}

impl Adjacency {
    /// A placeholder for a set number no route uses.
    const UNUSED: Adjacency = Adjacency {
        rewrite: [0; 14],
        port: 0,
        state: AdjState::ForeignEgress,
        mtu: 0,
        group: 0,
        ifindex: 0,
        next: Ipv4Addr::UNSPECIFIED,
    };

    /// The adjacency of next hop `nh` over `ports` and `neigh`.
    pub fn new(nh: &NextHop, ports: &[Port], neigh: &NeighTable) -> Adjacency {
        let mut a = Adjacency {
            ifindex: nh.ifindex,
            next: nh.gateway.unwrap_or(Ipv4Addr::UNSPECIFIED),
            ..Adjacency::UNUSED
        };
        let Some(port) = ports.iter().position(|p| p.ifindex == nh.ifindex) else {
            return a;
        };
        let p = &ports[port];
        a.port = port as u8;
        a.mtu = p.mtu.min(u16::MAX as u32) as u16;
        a.rewrite[6..12].copy_from_slice(&p.mac.0);
        a.rewrite[12..14].copy_from_slice(&[0x08, 0x00]);
        a.state = if !p.up {
            AdjState::PortDown
        } else {
            match nh.gateway {
                None => AdjState::Glean,
                Some(g) => match neigh.resolve(nh.ifindex, g) {
                    Some(mac) => {
                        a.rewrite[..6].copy_from_slice(&mac.0);
                        AdjState::Ready
                    }
                    None => AdjState::Unresolved,
                },
            }
        };
        a
    }
}

/// A group of weighted paths of an ECMP set.
#[derive(Debug, Clone)]
struct Group {
    paths: Box<[(Adjacency, u32)]>,
    total: u64,
}

/// The adjacencies of every next-hop set of a FIB, by set number.
///
/// ```
/// use xdpip::fib::{Fib, NextHop, Route, RouteKind};
/// use xdpip::neigh::{Adjacencies, AdjState, NeighTable, Neighbour, nud};
/// use xdpip::iface::Port;
/// use xdpip::wire::MacAddr;
/// use std::net::Ipv4Addr;
///
/// let gw = Ipv4Addr::new(10, 2, 0, 1);
/// let mut b = Fib::builder();
/// b.add(Route {
///     prefix: Ipv4Addr::UNSPECIFIED, len: 0, kind: RouteKind::Unicast, metric: 0,
///     nexthops: vec![NextHop { gateway: Some(gw), ifindex: 7, weight: 1 }].into(),
/// }).unwrap();
/// let fib = b.build();
/// let ports = vec![Port { ifindex: 7, mac: MacAddr([2, 0, 0, 0, 0, 7]), ..Port::default() }];
/// let mut neigh = NeighTable::default();
/// neigh.insert(7, gw, Neighbour { mac: MacAddr([2, 0, 0, 0, 9, 1]), state: nud::REACHABLE });
/// let adj = Adjacencies::build(&fib, &ports, &neigh);
/// let a = adj.of_set(fib.leaf(Ipv4Addr::new(8, 8, 8, 8)).set().unwrap());
/// assert_eq!(a.state, AdjState::Ready);
/// assert_eq!(a.rewrite, [2, 0, 0, 0, 9, 1, 2, 0, 0, 0, 0, 7, 0x08, 0x00]);
/// ```
#[derive(Debug, Clone, Default)]
pub struct Adjacencies {
    by_set: Vec<Adjacency>,
    groups: Vec<Group>,
    foreign: usize,
}

impl Adjacencies {
    /// The adjacencies of `fib`'s next-hop sets through `ports`, with the
    /// MACs of `neigh`. Time in proportion to the number of sets.
    pub fn build(fib: &Fib, ports: &[Port], neigh: &NeighTable) -> Adjacencies {
        let mut by_set = vec![Adjacency::UNUSED; fib.set_count()];
        let mut groups = Vec::new();
        let mut foreign = 0;
        for (id, set) in fib.sets() {
            let out =
                |nh: &NextHop| Adjacency::new(nh, ports, neigh).state == AdjState::ForeignEgress;
            foreign += usize::from(set.iter().any(out));
            by_set[id as usize] = match &set[..] {
                [one] => Adjacency::new(one, ports, neigh),
                many => {
                    let paths: Box<[(Adjacency, u32)]> = many
                        .iter()
                        .map(|nh| (Adjacency::new(nh, ports, neigh), nh.weight.max(1)))
                        .collect();
                    let total = paths.iter().map(|p| p.1 as u64).sum();
                    groups.push(Group { paths, total });
                    Adjacency {
                        state: AdjState::Multipath,
                        group: (groups.len() - 1).min(u16::MAX as usize) as u16,
                        ..Adjacency::UNUSED
                    }
                }
            };
        }
        Adjacencies {
            by_set,
            groups,
            foreign,
        }
    }

    /// Next-hop sets with a path through an interface the engine does not
    /// serve: what only the kernel can forward (see `GateMode::Auto`).
    pub fn foreign_egress(&self) -> usize {
        self.foreign
    }

    /// The adjacency of set number `set` (a placeholder in state
    /// [`AdjState::ForeignEgress`] for a number no route uses).
    #[inline(always)]
    pub fn of_set(&self, set: u32) -> &Adjacency {
        self.by_set.get(set as usize).unwrap_or(&Adjacency::UNUSED)
    }

    /// The path of a [`AdjState::Multipath`] adjacency a flow with hash
    /// `flow_hash` takes, as the kernel's hash-threshold selection weighs
    /// them; `a` itself for any other.
    #[inline]
    pub fn path<'a>(&'a self, a: &'a Adjacency, flow_hash: u32) -> &'a Adjacency {
        if a.state != AdjState::Multipath {
            return a;
        }
        let Some(g) = self.groups.get(a.group as usize) else {
            return a;
        };
        let mut point = (flow_hash as u64 * g.total) >> 32;
        for (p, w) in g.paths.iter() {
            if point < *w as u64 {
                return p;
            }
            point -= *w as u64;
        }
        g.paths.last().map_or(a, |p| &p.0)
    }

    /// Whether adjacency `a` (any of its paths, for ECMP) leaves through
    /// interface `ifindex`: the strict reverse path check
    /// (`fib_info_nh_uses_dev()`).
    #[inline]
    pub fn uses_ifindex(&self, a: &Adjacency, ifindex: u32) -> bool {
        if a.state != AdjState::Multipath {
            return a.ifindex == ifindex;
        }
        self.groups
            .get(a.group as usize)
            .is_some_and(|g| g.paths.iter().any(|(p, _)| p.ifindex == ifindex))
    }

    /// Number of sets with an adjacency.
    pub fn len(&self) -> usize {
        self.by_set.len()
    }

    /// True when there is none.
    pub fn is_empty(&self) -> bool {
        self.by_set.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fib::{Route, RouteKind};

    fn ports() -> Vec<Port> {
        (0..2)
            .map(|i| Port {
                ifindex: 10 + i,
                mac: MacAddr([2, 0, 0, 0, 0, i as u8]),
                mtu: 1400 + i,
                ..Port::default()
            })
            .collect()
    }

    fn route(prefix: [u8; 4], len: u8, hops: &[(Option<[u8; 4]>, u32, u32)]) -> Route {
        Route {
            prefix: Ipv4Addr::from(prefix),
            len,
            kind: RouteKind::Unicast,
            metric: 0,
            nexthops: hops
                .iter()
                .map(|(g, i, w)| NextHop {
                    gateway: g.map(Ipv4Addr::from),
                    ifindex: *i,
                    weight: *w,
                })
                .collect::<Vec<_>>()
                .into(),
        }
    }

    #[test]
    fn states_follow_ports_and_neighbours() {
        let mut b = Fib::builder();
        b.add(route([10, 1, 0, 0], 16, &[(Some([10, 9, 0, 1]), 11, 1)]))
            .unwrap();
        b.add(route([10, 2, 0, 0], 16, &[(None, 11, 1)])).unwrap();
        b.add(route([10, 3, 0, 0], 16, &[(None, 99, 1)])).unwrap();
        b.add(route([10, 4, 0, 0], 16, &[(Some([10, 9, 0, 2]), 11, 1)]))
            .unwrap();
        let fib = b.build();
        let mut neigh = NeighTable::default();
        let mac = MacAddr([2, 9, 9, 9, 9, 1]);
        neigh.insert(
            11,
            Ipv4Addr::new(10, 9, 0, 1),
            Neighbour {
                mac,
                state: nud::STALE,
            },
        );
        neigh.insert(
            11,
            Ipv4Addr::new(10, 9, 0, 2),
            Neighbour {
                mac,
                state: nud::INCOMPLETE,
            },
        );
        let mut ports = ports();
        let state = |adj: &Adjacencies, a: [u8; 4]| {
            adj.of_set(fib.leaf(Ipv4Addr::from(a)).set().unwrap()).state
        };
        let adj = Adjacencies::build(&fib, &ports, &neigh);
        assert_eq!(state(&adj, [10, 1, 0, 1]), AdjState::Ready);
        assert_eq!(state(&adj, [10, 2, 0, 1]), AdjState::Glean);
        assert_eq!(state(&adj, [10, 3, 0, 1]), AdjState::ForeignEgress);
        assert_eq!(state(&adj, [10, 4, 0, 1]), AdjState::Unresolved);
        let a = adj.of_set(fib.leaf(Ipv4Addr::new(10, 1, 0, 1)).set().unwrap());
        assert_eq!((a.port, a.mtu), (1, 1401));
        ports[1].up = false;
        let adj = Adjacencies::build(&fib, &ports, &neigh);
        assert_eq!(state(&adj, [10, 1, 0, 1]), AdjState::PortDown);
        assert_eq!(adj.of_set(12345).state, AdjState::ForeignEgress);
    }

    #[test]
    fn ecmp_paths_are_weighted() {
        let mut b = Fib::builder();
        b.add(route(
            [0; 4],
            0,
            &[(Some([10, 9, 0, 1]), 11, 1), (Some([10, 9, 0, 2]), 11, 3)],
        ))
        .unwrap();
        let fib = b.build();
        let mut neigh = NeighTable::default();
        for i in 1..=2 {
            neigh.insert(
                11,
                Ipv4Addr::new(10, 9, 0, i),
                Neighbour {
                    mac: MacAddr([2, 9, 9, 9, 9, i]),
                    state: nud::REACHABLE,
                },
            );
        }
        let adj = Adjacencies::build(&fib, &ports(), &neigh);
        let a = adj.of_set(fib.leaf(Ipv4Addr::new(1, 1, 1, 1)).set().unwrap());
        assert_eq!(a.state, AdjState::Multipath);
        let mut counts = [0u32; 3];
        for h in 0..4096u32 {
            let p = adj.path(a, h.wrapping_mul(0x9e37_79b1));
            counts[p.rewrite[5] as usize] += 1;
        }
        assert!(
            counts[2] > 2 * counts[1] && counts[1] > 500,
            "weights 1:3 spread {counts:?}"
        );
    }

    #[test]
    fn a_change_copies_one_chunk() {
        let mut t = NeighTable::default();
        let n = Neighbour {
            mac: MacAddr([2, 0, 0, 0, 0, 1]),
            state: nud::REACHABLE,
        };
        for i in 0..1000u32 {
            t.insert(3, Ipv4Addr::from(0x0a00_0000 + i), n);
        }
        let before = t.clone();
        t.insert(3, Ipv4Addr::new(10, 0, 0, 5), n);
        t.remove(3, Ipv4Addr::new(10, 0, 0, 6));
        let shared = (0..CHUNKS)
            .filter(|&i| Arc::ptr_eq(&t.chunks[i], &before.chunks[i]))
            .count();
        assert!(shared >= CHUNKS - 2, "{shared} chunks shared");
        assert_eq!((t.len(), before.len()), (999, 1000));
        t.remove_interface(3);
        assert!(t.is_empty());
        assert_eq!(before.iter().count(), 1000);
    }
}
