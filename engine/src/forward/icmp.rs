//! ICMP errors a router sends, built as Linux's `__icmp_send()` builds
//! them, and rate limited as Linux limits them.

use crate::snapshot::Snapshot;
use crate::wire::icmp::{self, RouterError};
use crate::wire::ipopt;
use crate::wire::ipv4::{self, Packet};
use crate::wire::MacAddr;
use std::net::Ipv4Addr;

/// Largest ICMP error datagram: the original is quoted up to this size
/// (RFC 1812 4.3.2.3, Linux's 576-byte room).
const MAX_ERROR_LEN: usize = 576;
/// `IPTOS_PREC_INTERNETCONTROL`
const TOS_INTERNETCONTROL: u8 = 0xc0;
/// `IPTOS_TOS_MASK`
const TOS_MASK: u8 = 0x1e;
/// `ip_rt_error_cost` and `ip_rt_error_burst` (jiffies as ms).
const RT_ERROR_COST: u64 = 1000;
const RT_ERROR_BURST: u64 = 5 * RT_ERROR_COST;
/// `XRLIM_BURST_FACTOR`
const XRLIM_BURST: u64 = 6;
/// Destinations whose rate-limit state a worker keeps (direct mapped).
const PEERS: usize = 4096;

/// Why an ICMP error was not sent. Linux sends none in these cases either.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suppressed {
    /// The offending frame was not addressed to the router's MAC.
    NotForHost,
    /// The offending packet went to a broadcast or multicast address.
    BroadcastDestination,
    /// Not the first fragment.
    NotFirstFragment,
    /// The offending packet is itself an ICMP error (or of unknown type).
    AboutIcmpError,
    /// The per-destination limit (`icmp_ratelimit`, route error cost).
    RateLimitHost,
    /// The global limit (`icmp_msgs_per_sec`, `icmp_msgs_burst`).
    RateLimitGlobal,
    /// No route back to the sender, or its next hop unresolved.
    NoRouteBack,
    /// No address to send from.
    NoSourceAddress,
    /// The packet's options cannot be echoed (`__ip_options_echo()` fails).
    OptionsEcho,
}

/// Which limits an error passes, as in Linux: errors about routes (from
/// `ip_error()`) first pay the route error cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// From route input (`ip_error()`: unreachable, prohibited).
    RouteError,
    /// Any other.
    Other,
}

#[derive(Debug, Clone, Copy, Default)]
struct Peer {
    addr: u32,
    tokens: u64,
    last: u64,
    used: bool,
}

/// Per-worker state for ICMP errors: rate limits and the IP ID counter.
#[derive(Debug)]
pub struct IcmpState {
    peers: Box<[Peer]>,
    credit: u64,
    credit_last: u64,
    ident: u16,
    /// Share of the global limit this worker has (1/workers).
    share: u64,
}

impl IcmpState {
    /// State for one of `workers` workers; `seed` varies the IP IDs.
    pub fn new(workers: usize, seed: u16) -> Self {
        IcmpState {
            peers: vec![Peer::default(); PEERS].into_boxed_slice(),
            credit: u64::MAX,
            credit_last: 0,
            ident: seed,
            share: workers.max(1) as u64,
        }
    }

    fn peer(&mut self, addr: Ipv4Addr, now: u64) -> &mut Peer {
        let a = u32::from(addr);
        let i = (a.wrapping_mul(0x9e37_79b1) >> 20) as usize % PEERS;
        let p = &mut self.peers[i];
        if !p.used || p.addr != a {
            // A new peer starts as if long idle: full burst.
            *p = Peer {
                addr: a,
                tokens: 0,
                last: now.saturating_sub(60_000),
                used: true,
            };
        }
        p
    }

    /// `ip_error()`'s limit: false when the error must not be sent.
    fn route_error_allow(&mut self, dst: Ipv4Addr, now: u64) -> bool {
        let p = self.peer(dst, now);
        p.tokens = (p.tokens + now.saturating_sub(p.last)).min(RT_ERROR_BURST);
        p.last = now;
        if p.tokens >= RT_ERROR_COST {
            p.tokens -= RT_ERROR_COST;
            true
        } else {
            false
        }
    }

    /// `icmpv4_xrlim_allow()`'s per-destination token bucket.
    fn host_allow(&mut self, dst: Ipv4Addr, timeout: u64, now: u64) -> bool {
        let p = self.peer(dst, now);
        let mut t = p.tokens + now.saturating_sub(p.last);
        p.last = now;
        t = t.min(XRLIM_BURST * timeout);
        let ok = t >= timeout;
        if ok {
            t -= timeout;
        }
        p.tokens = t;
        ok
    }

    /// `icmp_global_allow()`: `msgs_per_sec` with a burst, this worker's share.
    fn global_allow(&mut self, per_sec: u32, burst: u32, now: u64) -> bool {
        let burst = (burst as u64 / self.share).max(1);
        if self.credit == u64::MAX {
            self.credit = burst;
            self.credit_last = now;
        }
        let delta = now.saturating_sub(self.credit_last).min(1000);
        if delta >= 20 {
            let incr = per_sec as u64 / self.share * delta / 1000;
            if incr > 0 {
                self.credit = (self.credit + incr).min(burst);
                self.credit_last = now;
            }
        }
        if self.credit > 0 {
            self.credit -= 1;
            true
        } else {
            false
        }
    }
}

fn masked_by_ratemask(e: RouterError, mask: u32) -> bool {
    let (t, c) = e.type_code();
    if t == icmp::msg_type::DEST_UNREACH && c == 4 {
        return false; // PMTU discovery is never limited
    }
    t < 32 && mask & (1 << t) != 0
}

/// A packet an ICMP error is about, and the error.
#[derive(Debug, Clone, Copy)]
pub struct Offending<'a> {
    /// The Ethernet frame as received, carrying a validated IPv4 header.
    pub frame: &'a [u8],
    /// Port it arrived on.
    pub ingress: usize,
    /// The error to send.
    pub error: RouterError,
    /// Which rate limits it passes.
    pub origin: Origin,
    /// Its options as compiled, echoed in the error.
    pub options: Option<&'a ipopt::Options>,
}

/// Builds the ICMP error about `o.frame` into `out`, ready to transmit.
/// Returns the egress port and the frame length, or why no error is sent.
///
/// `clock` is a monotonic clock in milliseconds and the IP timestamp
/// option's time of day.
pub fn build_error(
    o: &Offending<'_>,
    snap: &Snapshot,
    state: &mut IcmpState,
    clock: (u64, u32),
    out: &mut [u8],
) -> Result<(usize, usize), Suppressed> {
    let Offending {
        frame,
        ingress,
        error,
        origin,
        options,
    } = *o;
    let (now, timestamp) = clock;
    let in_port = &snap.ports[ingress];
    let dst_mac = MacAddr([frame[0], frame[1], frame[2], frame[3], frame[4], frame[5]]);
    if dst_mac != in_port.mac {
        return Err(Suppressed::NotForHost);
    }
    let orig = Packet::new_unchecked(&frame[14..]);
    let (src, dst) = (orig.src(), orig.dst());
    if dst.is_broadcast()
        || dst.is_multicast()
        || snap.is_local(dst) && is_broadcast_addr(snap, dst)
    {
        return Err(Suppressed::BroadcastDestination);
    }
    if orig.frag_offset() != 0 {
        return Err(Suppressed::NotFirstFragment);
    }
    let total = orig.total_len() as usize;
    if orig.protocol() == ipv4::protocol::ICMP {
        // The inner type must be readable and not an error.
        let hl = orig.header_len();
        match frame[14..14 + total].get(hl) {
            Some(&t) if t <= icmp::msg_type::MAX_KNOWN && !icmp::is_error(t) => {}
            _ => return Err(Suppressed::AboutIcmpError),
        }
    }

    // The route back to the sender picks port, next hop and source.
    let (out_port_no, next, mac) = route_back(snap, src).ok_or(Suppressed::NoRouteBack)?;
    let out_port = &snap.ports[out_port_no];
    let saddr = out_port
        .select_addr(next)
        .ok_or(Suppressed::NoSourceAddress)?;

    if origin == Origin::RouteError && !state.route_error_allow(src, now) {
        return Err(Suppressed::RateLimitHost);
    }
    let sys = &snap.sysctl;
    if masked_by_ratemask(error, sys.icmp_ratemask) {
        if !state.global_allow(sys.icmp_msgs_per_sec, sys.icmp_msgs_burst, now) {
            return Err(Suppressed::RateLimitGlobal);
        }
        if !state.host_allow(src, sys.icmp_ratelimit as u64, now) {
            return Err(Suppressed::RateLimitHost);
        }
    }

    let echo = match options {
        Some(o) => {
            let hl = orig.header_len();
            Some(
                ipopt::Echo::new(&frame[14..14 + hl], o, |a| snap.is_local(a))
                    .ok_or(Suppressed::OptionsEcho)?,
            )
        }
        None => None,
    };
    let optlen = echo.as_ref().map_or(0, |e| e.len());
    let hlen = ipv4::MIN_HEADER_LEN + optlen;
    let room = (out_port.mtu as usize).min(MAX_ERROR_LEN) - hlen - icmp::HEADER_LEN;
    let quote = total.min(room);
    let ip_len = hlen + icmp::HEADER_LEN + quote;
    let len = 14 + ip_len;
    let out = &mut out[..len];
    out[0..6].copy_from_slice(&mac.0);
    out[6..12].copy_from_slice(&out_port.mac.0);
    out[12..14].copy_from_slice(&[0x08, 0x00]);
    state.ident = state.ident.wrapping_add(1);
    let repr = ipv4::Repr {
        src: saddr,
        dst: src,
        protocol: ipv4::protocol::ICMP,
        ttl: sys.ip_default_ttl,
        tos: (orig.tos() & TOS_MASK) | TOS_INTERNETCONTROL,
        ident: state.ident,
        dont_frag: false,
        payload_len: icmp::HEADER_LEN + quote,
    };
    let (ip_hdr, rest) = out[14..].split_at_mut(hlen);
    let mut p = Packet::new_unchecked(&mut ip_hdr[..]);
    repr.emit(&mut p);
    if let Some(e) = echo {
        e.write(&mut ip_hdr[ipv4::MIN_HEADER_LEN..], saddr, timestamp);
        let mut p = Packet::new_unchecked(&mut ip_hdr[..]);
        p.set_version_and_header_len(hlen);
        p.set_total_len(ip_len as u16);
        p.fill_checksum();
    }
    rest[icmp::HEADER_LEN..].copy_from_slice(&frame[14..14 + quote]);
    let mut msg = icmp::Packet::new_checked(&mut rest[..]).map_err(|_| Suppressed::NoRouteBack)?;
    error.emit_header(&mut msg);
    msg.fill_checksum();
    Ok((out_port_no, len))
}

/// Port, next hop and its MAC towards `dst`, for a packet the router
/// originates: the first path of the route's adjacency. A destination that
/// is a subnet broadcast address of a port (a `broadcast` route of the
/// local table) is reached as Linux answers such a sender: with a link
/// broadcast on that port, which needs no neighbour entry.
pub(crate) fn route_back(snap: &Snapshot, dst: Ipv4Addr) -> Option<(usize, Ipv4Addr, MacAddr)> {
    use crate::neigh::AdjState;
    if let Some(port) = subnet_broadcast_port(snap, dst) {
        return Some((port, dst, MacAddr([0xff; 6])));
    }
    let set = snap.fib.leaf(dst).set()?;
    let adj = snap.adj.path(snap.adj.of_set(set), 0);
    match adj.state {
        AdjState::Ready => {
            let mut mac = [0; 6];
            mac.copy_from_slice(&adj.rewrite[..6]);
            Some((adj.port as usize, adj.next, MacAddr(mac)))
        }
        AdjState::Glean => Some((
            adj.port as usize,
            dst,
            snap.neigh.resolve(adj.ifindex, dst)?,
        )),
        _ => None,
    }
}

/// The port whose subnet has `a` as its broadcast address, when the local
/// table has it (the kernel adds one per address with a prefix below 31).
fn subnet_broadcast_port(snap: &Snapshot, a: Ipv4Addr) -> Option<usize> {
    if snap.fib.leaf(a).kind() != Some(crate::fib::RouteKind::Broadcast) {
        return None;
    }
    let x = u32::from(a);
    snap.ports.iter().position(|p| {
        p.addrs
            .iter()
            .any(|(y, len)| *len < 31 && x == u32::from(*y) | (u32::MAX >> *len))
    })
}

/// True for a subnet broadcast address of the namespace (in the local
/// table but not an address of any port).
fn is_broadcast_addr(snap: &Snapshot, a: Ipv4Addr) -> bool {
    !snap
        .ports
        .iter()
        .any(|p| p.addrs.iter().any(|(x, _)| *x == a))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_limit_allows_a_burst_of_six_then_one_per_interval() {
        let mut s = IcmpState::new(1, 0);
        let a = Ipv4Addr::new(10, 0, 0, 1);
        let allowed = (0..10).filter(|_| s.host_allow(a, 1000, 100_000)).count();
        assert_eq!(allowed, 6);
        assert!(!s.host_allow(a, 1000, 100_500));
        assert!(s.host_allow(a, 1000, 101_000));
        // Another destination has its own bucket.
        assert!(s.host_allow(Ipv4Addr::new(10, 0, 0, 2), 1000, 101_000));
    }

    #[test]
    fn route_errors_share_the_bucket() {
        let mut s = IcmpState::new(1, 0);
        let a = Ipv4Addr::new(10, 0, 0, 1);
        let mut sent = 0;
        for _ in 0..10 {
            if s.route_error_allow(a, 100_000) && s.host_allow(a, 1000, 100_000) {
                sent += 1;
            }
        }
        // Both limits take from one bucket per peer, so a burst of route
        // errors gets two answers, as Linux gives (the differential test
        // no_route_burst_is_rate_limited checks it against the kernel).
        assert_eq!(sent, 2);
    }

    #[test]
    fn global_limit() {
        let mut s = IcmpState::new(1, 0);
        let n = (0..100).filter(|_| s.global_allow(1000, 50, 5_000)).count();
        assert_eq!(n, 50);
        assert!(s.global_allow(1000, 50, 5_020), "credit refills");
    }
}
