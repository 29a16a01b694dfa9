//! Answers to rejected packets that are not ICMP errors: the TCP reset of
//! `reject with tcp reset`, built as `nf_send_reset()` builds it; and the
//! source address of ICMP errors about packets rejected at the input hook.

use crate::snapshot::Snapshot;
use crate::wire::checksum;

/// The egress port and next-hop MAC towards `to`, as the kernel routes a
/// packet it originates back to a sender.
fn route_back(snap: &Snapshot, to: std::net::Ipv4Addr) -> Option<(usize, [u8; 6])> {
    let route = snap.fib.lookup(to)?;
    let nh = route.nexthop(0)?;
    let port = snap.port_of(nh.ifindex)?;
    let mac = snap.neigh.resolve(nh.ifindex, nh.gateway.unwrap_or(to))?;
    Some((port, mac.0))
}

fn sum16(b: &[u8]) -> u32 {
    b.chunks(2)
        .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32)
        .sum()
}

fn fold(mut s: u32) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// The TCP checksum of a segment, over its pseudo header.
fn tcp_checksum(src: &[u8], dst: &[u8], seg: &[u8]) -> u16 {
    fold(sum16(src) + sum16(dst) + 6 + seg.len() as u32 + sum16(seg))
}

/// Builds into `out` the reset answering the TCP segment in `ip` (an IPv4
/// packet whose header the engine validated), Ethernet header included.
/// Returns the egress port and the frame length; `None` where Linux sends
/// none: not TCP, not the first fragment, a reset, a bad checksum, a
/// broadcast or multicast destination, no route back.
///
/// ```
/// use xdpip::forward::reject::tcp_reset;
/// let snap = xdpip::snapshot::Snapshot::default();
/// let mut out = [0u8; 64];
/// // Not TCP: no reset.
/// let mut ip = [0u8; 28];
/// ip[0] = 0x45; ip[3] = 28; ip[9] = 17;
/// assert_eq!(tcp_reset(&ip, &snap, &mut out), None);
/// ```
pub fn tcp_reset(ip: &[u8], snap: &Snapshot, out: &mut [u8]) -> Option<(usize, usize)> {
    let hl = ((ip.first()? & 0x0f) as usize) * 4;
    let total = u16::from_be_bytes([*ip.get(2)?, *ip.get(3)?]) as usize;
    let ip = ip.get(..total)?;
    if ip[9] != 6 || u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff != 0 {
        return None;
    }
    let th = ip.get(hl..)?;
    if th.len() < 20 {
        return None;
    }
    let doff = ((th[12] >> 4) as usize) * 4;
    let flags = th[13];
    if doff < 20 || doff > th.len() || flags & 0x04 != 0 {
        return None;
    }
    if tcp_checksum(&ip[12..16], &ip[16..20], th) != 0 {
        return None;
    }
    let (src, dst) = (&ip[12..16], &ip[16..20]);
    let dst_addr = std::net::Ipv4Addr::new(dst[0], dst[1], dst[2], dst[3]);
    if dst_addr.is_broadcast() || dst_addr.is_multicast() || snap.is_broadcast(dst_addr) {
        return None;
    }
    let (port, mac) = route_back(
        snap,
        std::net::Ipv4Addr::new(src[0], src[1], src[2], src[3]),
    )?;
    let out = out.get_mut(..14 + 40)?;
    out.fill(0);
    out[0..6].copy_from_slice(&mac);
    out[6..12].copy_from_slice(&snap.ports[port].mac.0);
    out[12..14].copy_from_slice(&[0x08, 0x00]);
    // nf_reject_iphdr_put(): no TOS, ID 0, DF, the route's hop limit.
    let h = &mut out[14..34];
    h[0] = 0x45;
    h[2..4].copy_from_slice(&40u16.to_be_bytes());
    h[6] = 0x40;
    h[8] = snap.sysctl.ip_default_ttl;
    h[9] = 6;
    h[12..16].copy_from_slice(dst);
    h[16..20].copy_from_slice(src);
    let c = checksum::checksum(h);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    // nf_reject_ip_tcphdr_put()
    let t = &mut out[34..54];
    t[0..2].copy_from_slice(&th[2..4]);
    t[2..4].copy_from_slice(&th[0..2]);
    if flags & 0x10 != 0 {
        t[4..8].copy_from_slice(&th[8..12]);
        t[13] = 0x04;
    } else {
        let seq = u32::from_be_bytes([th[4], th[5], th[6], th[7]]);
        let syn_fin = (flags & 0x02 != 0) as u32 + (flags & 0x01 != 0) as u32;
        let ack = seq
            .wrapping_add(syn_fin)
            .wrapping_add((total - hl - doff) as u32);
        t[8..12].copy_from_slice(&ack.to_be_bytes());
        t[13] = 0x14;
    }
    t[12] = 5 << 4;
    let c = tcp_checksum(dst, src, t);
    t[16..18].copy_from_slice(&c.to_be_bytes());
    Some((port, 54))
}

/// True when the UDP or TCP checksum of `ip` does not verify: Linux's
/// reject sends nothing then (`nf_reject_verify_csum()`); a UDP datagram
/// without a checksum verifies.
pub fn bad_transport_checksum(ip: &[u8]) -> bool {
    let hl = ((ip[0] & 0x0f) as usize) * 4;
    let total = (u16::from_be_bytes([ip[2], ip[3]]) as usize).min(ip.len());
    if u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0 || total < hl {
        return false;
    }
    let seg = &ip[hl..total];
    let proto = ip[9];
    match proto {
        6 if seg.len() >= 20 => tcp_checksum(&ip[12..16], &ip[16..20], seg) != 0,
        17 if seg.len() >= 8 && seg[6..8] != [0, 0] => {
            fold(sum16(&ip[12..16]) + sum16(&ip[16..20]) + 17 + seg.len() as u32 + sum16(seg)) != 0
        }
        _ => false,
    }
}

/// Rewrites the source of an ICMP error frame (Ethernet header included)
/// to `src`, fixing the header checksum: Linux answers a packet to a
/// local address from that address (`__icmp_send()`, `RTCF_LOCAL`).
pub fn set_source(frame: &mut [u8], src: std::net::Ipv4Addr) {
    let Some(h) = frame.get_mut(14..34) else {
        return;
    };
    h[12..16].copy_from_slice(&src.octets());
    h[10..12].fill(0);
    let hl = ((h[0] & 0x0f) as usize) * 4;
    let c = checksum::checksum(&frame[14..14 + hl]);
    frame[24..26].copy_from_slice(&c.to_be_bytes());
}
