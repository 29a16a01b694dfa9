//! Sources that are the router's own addresses, refused on input as
//! `fib_validate_source()` refuses them: a packet arriving on an
//! interface from an address of any interface of the namespace is a
//! martian (`accept_local` off, the default), whether it is to be
//! forwarded or delivered.
//!
//! The check runs on every packet, so it must cost next to nothing when
//! the source is foreign, which is nearly always: a 256-bit filter answers
//! "not ours" with one load, and only a hit searches the sorted addresses.

use std::net::Ipv4Addr;
use std::sync::Arc;

/// The IPv4 addresses of every interface of the namespace (not the
/// broadcast addresses: a packet may come from those), as
/// `inet_lookup_ifaddr_rcu()` finds them.
///
/// ```
/// use xdpip::forward::source::OwnAddrs;
/// use std::net::Ipv4Addr;
/// let own = OwnAddrs::new([Ipv4Addr::new(10, 1, 0, 2), Ipv4Addr::new(192, 0, 2, 1)]);
/// assert!(own.contains(Ipv4Addr::new(192, 0, 2, 1)));
/// assert!(!own.contains(Ipv4Addr::new(10, 1, 0, 1)));
/// assert!(!OwnAddrs::default().contains(Ipv4Addr::new(10, 1, 0, 2)));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OwnAddrs {
    filter: [u64; 4],
    sorted: Arc<[u32]>,
}

#[inline(always)]
fn bit(a: u32) -> usize {
    (a.wrapping_mul(0x9e37_79b1) >> 24) as usize
}

impl OwnAddrs {
    /// The set of `addrs` (duplicates allowed).
    pub fn new(addrs: impl IntoIterator<Item = Ipv4Addr>) -> Self {
        let mut v: Vec<u32> = addrs.into_iter().map(u32::from).collect();
        v.sort_unstable();
        v.dedup();
        let mut filter = [0u64; 4];
        for &a in &v {
            let b = bit(a);
            filter[b >> 6] |= 1 << (b & 63);
        }
        OwnAddrs {
            filter,
            sorted: v.into(),
        }
    }

    /// True when `a` is an address of an interface of the namespace.
    #[inline(always)]
    pub fn contains(&self, a: Ipv4Addr) -> bool {
        let x = u32::from(a);
        let b = bit(x);
        self.filter[b >> 6] & (1 << (b & 63)) != 0 && self.sorted.binary_search(&x).is_ok()
    }

    /// Number of addresses.
    pub fn len(&self) -> usize {
        self.sorted.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.sorted.is_empty()
    }
}

/// True when a packet from `src` arriving on a port with `accept_local`
/// as given must be dropped as a martian source (one of the router's own
/// addresses).
#[inline(always)]
pub fn own_source(own: &OwnAddrs, src: Ipv4Addr, accept_local: bool) -> bool {
    !accept_local && own.contains(src)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fib::{Fib, NextHop, Route, RouteKind};
    use crate::forward::{forward, Verdict};
    use crate::neigh::{nud, NeighTable, Neighbour};
    use crate::snapshot::{Port, Snapshot};
    use crate::stats::DropReason;
    use crate::wire::{ipv4, MacAddr};

    /// eth0 10.1.0.2/24, eth1 10.2.0.1/24 with sink 10.2.0.2 resolved, and
    /// 192.0.2.1 on an interface the engine does not serve.
    fn snapshot() -> Snapshot {
        let mut s = Snapshot::default();
        for (i, a) in [[10, 1, 0, 2], [10, 2, 0, 1]].into_iter().enumerate() {
            s.ports.push(Port {
                ifindex: 10 + i as u32,
                mac: MacAddr([2, 0, 0, 0, 0, i as u8]),
                addrs: vec![(Ipv4Addr::from(a), 24)],
                ..Port::default()
            });
        }
        let mut fib = Fib::builder();
        fib.add(Route {
            prefix: Ipv4Addr::new(10, 2, 0, 0),
            len: 24,
            kind: RouteKind::Unicast,
            metric: 0,
            nexthops: vec![NextHop {
                gateway: None,
                ifindex: 11,
                weight: 1,
            }]
            .into(),
        })
        .unwrap();
        s.fib = Arc::new(fib.build());
        let mut n = NeighTable::default();
        let mac = MacAddr([2, 0, 0, 0, 9, 9]);
        let state = nud::REACHABLE;
        n.insert(11, Ipv4Addr::new(10, 2, 0, 2), Neighbour { mac, state });
        s.neigh = Arc::new(n);
        s.own = OwnAddrs::new([[10, 1, 0, 2], [10, 2, 0, 1], [192, 0, 2, 1]].map(Ipv4Addr::from));
        s
    }

    fn udp_from(src: [u8; 4]) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 28];
        f[..6].copy_from_slice(&[2, 0, 0, 0, 0, 0]);
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        let repr = ipv4::Repr {
            src: Ipv4Addr::from(src),
            dst: Ipv4Addr::new(10, 2, 0, 2),
            protocol: 17,
            ttl: 64,
            payload_len: 8,
            ..ipv4::Repr::default()
        };
        repr.emit(&mut ipv4::Packet::new_unchecked(&mut f[14..]));
        f
    }

    #[test]
    fn own_addresses_are_martian_sources_unless_accept_local() {
        let mut s = snapshot();
        for src in [[10, 1, 0, 2], [10, 2, 0, 1], [192, 0, 2, 1]] {
            assert_eq!(
                forward(&mut udp_from(src), 0, &s, 0),
                Verdict::Drop(DropReason::MartianSource),
                "{src:?}"
            );
        }
        // A broadcast address is not an interface's: forwarded.
        for src in [[10, 1, 0, 1], [10, 1, 0, 255]] {
            let v = forward(&mut udp_from(src), 0, &s, 0);
            assert!(matches!(v, Verdict::Transmit { port: 1, .. }), "{v:?}");
        }
        s.ports[0].accept_local = true;
        let v = forward(&mut udp_from([10, 2, 0, 1]), 0, &s, 0);
        assert!(matches!(v, Verdict::Transmit { port: 1, .. }), "{v:?}");
    }

    #[test]
    fn every_member_is_found_and_few_others_pass_the_filter() {
        let addrs: Vec<Ipv4Addr> = (0..40u32)
            .map(|i| Ipv4Addr::from(0x0a00_0001 + i * 4099))
            .collect();
        let own = OwnAddrs::new(addrs.iter().copied());
        assert_eq!(own.len(), 40);
        for a in &addrs {
            assert!(own.contains(*a));
            assert!(own_source(&own, *a, false));
            assert!(!own_source(&own, *a, true), "accept_local lets it in");
        }
        let mut x = crate::testutil::XorShift(7);
        let (mut passed, mut found) = (0, 0);
        for _ in 0..100_000 {
            let a = Ipv4Addr::from(x.next() as u32);
            let b = bit(u32::from(a));
            passed += (own.filter[b >> 6] & (1 << (b & 63)) != 0) as u32;
            found += own.contains(a) as u32;
        }
        assert_eq!(found, 0);
        // 40 addresses set at most 40 of 256 bits.
        assert!(passed < 100_000 * 40 / 256 + 2_000, "{passed}");
    }
}
