//! The demultiplexing table workers read: which socket a datagram to
//! (local address, local port) from (remote address, remote port) goes to.
//!
//! Built by the socket registry on every bind, connect and close, and
//! published with one atomic swap like the routing snapshot; a worker loads
//! it once per batch and looks up by hash, never by scanning sockets.

use super::SockCore;
use rustc_hash::FxHashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

/// A socket as the demultiplexer sees it.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// The socket's registry id.
    pub id: u64,
    /// Bound local address, 0 for `INADDR_ANY`.
    pub laddr: u32,
    pub sock: Arc<SockCore>,
}

/// A raw socket as the demultiplexer sees it.
#[derive(Debug, Clone)]
pub(crate) struct RawEntry {
    /// Bound local address, 0 for any.
    pub laddr: u32,
    /// Connected peer, 0 for any.
    pub peer: u32,
    pub sock: Arc<SockCore>,
}

/// The immutable table.
#[derive(Debug, Default)]
pub(crate) struct Demux {
    /// Unconnected UDP sockets by (local address or 0, port). Several only
    /// with `SO_REUSEADDR` or `SO_REUSEPORT`, in bind order.
    pub udp: FxHashMap<(u32, u16), Vec<Entry>>,
    /// Connected UDP sockets by (local port, remote address, remote port).
    pub connected: FxHashMap<(u16, u32, u16), Vec<Entry>>,
    /// Ports with at least one unconnected or connected socket (for
    /// broadcast delivery, which visits every socket on the port).
    pub ports: FxHashMap<u16, Vec<Entry>>,
    /// Whether sockets of a (address, port) group share by flow hash
    /// (`SO_REUSEPORT`) rather than the newest taking all (`SO_REUSEADDR`).
    pub reuseport: FxHashMap<(u32, u16), bool>,
    /// Answer ICMP echo requests to the engine's addresses.
    pub echo: bool,
    /// Some socket answers in the workers ([`super::serve`]).
    pub serve: bool,
    /// Raw sockets by protocol; each gets a copy of every datagram of its
    /// protocol to its address from its peer (`raw_v4_input()`).
    pub raw: FxHashMap<u8, Vec<RawEntry>>,
    /// Multicast memberships by socket id.
    pub mships: FxHashMap<u64, Vec<super::multicast::Membership>>,
    /// (group, interface) pairs some engine socket joined.
    pub joined: rustc_hash::FxHashSet<(u32, u32)>,
}

impl Demux {
    /// The socket a unicast datagram goes to, as `__udp4_lib_lookup()`
    /// scores them: a connected socket matching the 4-tuple first, then one
    /// bound to the address, then one bound to `INADDR_ANY`.
    #[inline]
    pub fn lookup(
        &self,
        dst: Ipv4Addr,
        dport: u16,
        src: Ipv4Addr,
        sport: u16,
    ) -> Option<&SockCore> {
        let (d, s) = (u32::from(dst), u32::from(src));
        if !self.connected.is_empty() {
            if let Some(v) = self.connected.get(&(dport, s, sport)) {
                if let Some(e) = v
                    .iter()
                    .find(|e| e.laddr == d)
                    .or_else(|| v.iter().find(|e| e.laddr == 0))
                {
                    return Some(&e.sock);
                }
            }
        }
        for key in [(d, dport), (0, dport)] {
            if let Some(v) = self.udp.get(&key) {
                let pick = if v.len() == 1 {
                    0
                } else if self.reuseport.get(&key).copied().unwrap_or(false) {
                    // reuseport_select_sock(): the flow hash picks one.
                    let h = (s ^ sport as u32).wrapping_mul(0x9e37_79b1) ^ (d ^ dport as u32);
                    ((h.wrapping_mul(0x85eb_ca6b) as u64 * v.len() as u64) >> 32) as usize
                } else {
                    // SO_REUSEADDR: the socket bound last takes unicast.
                    v.len() - 1
                };
                return Some(&v[pick].sock);
            }
        }
        None
    }

    /// The socket that sent a datagram from `src:sport` to `dst:dport`
    /// (for an ICMP error quoting it).
    pub fn sender(
        &self,
        src: Ipv4Addr,
        sport: u16,
        dst: Ipv4Addr,
        dport: u16,
    ) -> Option<&SockCore> {
        let (s, d) = (u32::from(src), u32::from(dst));
        if let Some(v) = self.connected.get(&(sport, d, dport)) {
            if let Some(e) = v.iter().find(|e| e.laddr == s || e.laddr == 0) {
                return Some(&e.sock);
            }
        }
        [(s, sport), (0, sport)]
            .iter()
            .find_map(|k| self.udp.get(k).and_then(|v| v.last()))
            .map(|e| &*e.sock)
    }

    /// Every socket a datagram to multicast `group:dport` from `src:sport`
    /// arriving on `ifindex` goes to (`__udp4_lib_mcast_deliver()` with
    /// `ip_mc_sf_allow()`): the interface joined the group, and the socket
    /// is bound to the port (wildcard or the group), connected to that
    /// sender if at all, and its own membership's filter admits the source;
    /// a socket without a membership of the group receives it as Linux's
    /// `IP_MULTICAST_ALL` (on by default) has it.
    pub fn multicast<'a>(
        &'a self,
        group: Ipv4Addr,
        dport: u16,
        src: Ipv4Addr,
        sport: u16,
        ifindex: u32,
    ) -> impl Iterator<Item = &'a SockCore> + 'a {
        let (g, s) = (u32::from(group), u32::from(src));
        let joined = self.joined.contains(&(g, ifindex));
        self.ports
            .get(&dport)
            .into_iter()
            .flatten()
            .filter(move |e| {
                joined
                    && (e.laddr == 0 || e.laddr == g)
                    && e.sock.peer_matches(s, sport)
                    && self.mships.get(&e.id).is_none_or(|v| {
                        v.iter()
                            .find(|m| m.group == group && m.ifindex == ifindex)
                            .is_none_or(|m| m.admits(src))
                    })
            })
            .map(|e| &*e.sock)
    }

    /// Every socket a broadcast datagram to `dst:dport` from `src:sport`
    /// goes to (`__udp4_lib_mcast_deliver()`): bound to the port and to the
    /// wildcard or that address, and, if connected, to that peer.
    pub fn broadcast<'a>(
        &'a self,
        dst: Ipv4Addr,
        dport: u16,
        src: Ipv4Addr,
        sport: u16,
    ) -> impl Iterator<Item = &'a SockCore> + 'a {
        let (d, s) = (u32::from(dst), u32::from(src));
        self.ports
            .get(&dport)
            .into_iter()
            .flatten()
            .filter(move |e| (e.laddr == 0 || e.laddr == d) && e.sock.peer_matches(s, sport))
            .map(|e| &*e.sock)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sock() -> Arc<SockCore> {
        Arc::new(SockCore::new().unwrap())
    }

    fn entry(laddr: Ipv4Addr, s: &Arc<SockCore>) -> Entry {
        Entry {
            id: 0,
            laddr: u32::from(laddr),
            sock: s.clone(),
        }
    }

    const ANY: Ipv4Addr = Ipv4Addr::UNSPECIFIED;
    const ME: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

    #[test]
    fn connected_beats_bound_beats_wildcard() {
        let (wild, bound, conn) = (sock(), sock(), sock());
        let peer = Ipv4Addr::new(10, 0, 0, 9);
        let mut d = Demux::default();
        d.udp.insert((0, 53), vec![entry(ANY, &wild)]);
        d.udp.insert((u32::from(ME), 53), vec![entry(ME, &bound)]);
        d.connected
            .insert((53, u32::from(peer), 1000), vec![entry(ME, &conn)]);
        let is = |a: Option<&SockCore>, b: &Arc<SockCore>| std::ptr::eq(a.unwrap(), &**b);
        assert!(is(d.lookup(ME, 53, peer, 1000), &conn));
        assert!(is(d.lookup(ME, 53, peer, 1001), &bound));
        assert!(is(
            d.lookup(Ipv4Addr::new(10, 0, 0, 2), 53, peer, 1000),
            &wild
        ));
        assert!(d.lookup(ME, 54, peer, 1000).is_none());
        assert!(is(d.sender(ME, 53, peer, 1000), &conn));
    }

    #[test]
    fn reuseport_spreads_flows_and_reuseaddr_gives_the_newest() {
        let socks: Vec<_> = (0..4).map(|_| sock()).collect();
        let mut d = Demux::default();
        d.udp
            .insert((0, 80), socks.iter().map(|s| entry(ANY, s)).collect());
        d.reuseport.insert((0, 80), true);
        let mut hits = [0usize; 4];
        for port in 1000..5000u16 {
            let s = d.lookup(ME, 80, Ipv4Addr::new(10, 0, 1, 1), port).unwrap();
            let i = socks.iter().position(|x| std::ptr::eq(&**x, s)).unwrap();
            hits[i] += 1;
            // The same flow always lands on the same socket.
            let again = d.lookup(ME, 80, Ipv4Addr::new(10, 0, 1, 1), port).unwrap();
            assert!(std::ptr::eq(s, again));
        }
        assert!(hits.iter().all(|&h| h > 700), "{hits:?}");
        d.reuseport.insert((0, 80), false);
        let s = d.lookup(ME, 80, Ipv4Addr::new(10, 0, 1, 1), 1).unwrap();
        assert!(std::ptr::eq(s, &*socks[3]));
    }
}
