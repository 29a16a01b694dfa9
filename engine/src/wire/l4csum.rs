//! UDP and TCP checksums a local sender left for its device to finish
//! (the kernel's `CHECKSUM_PARTIAL`): recognised, completed before
//! forwarding, accepted on local delivery.
//!
//! A stack that offloads transmit checksums to its device writes only the
//! folded sum of the pseudo-header into the checksum field
//! (`udp4_hwcsum()`, `__tcp_v4_send_check()`: `~csum_tcpudp_magic()`) and
//! leaves the device to add the segment. A veth "device" never does: it
//! hands the frame to its peer's stack, which trusts the skb's
//! `CHECKSUM_PARTIAL` mark and finishes the sum only if the frame leaves
//! through a device that cannot. An XDP program sees the bytes without the
//! mark, so the engine recognises such a checksum by its value.
//!
//! The rule, applied only to frames from devices whose frames come from a
//! local stack, never from a wire ([`crate::iface::may_carry_partial_checksums`]):
//! a UDP or TCP checksum field equal to the folded pseudo-header sum of its
//! packet is a candidate (a comparison, no pass over the payload); only a
//! candidate gets the full sum, and if that does not verify, the field is
//! partial. One complete checksum in 65536 equals the pseudo-header sum by
//! chance; the full sum verifies for it and it is left alone (completing
//! it would give the same field anyway, see [`complete`]).

use super::checksum;
use super::ipv4::protocol;
use std::net::Ipv4Addr;

/// The folded one's complement sum of the IPv4 pseudo-header of a UDP or
/// TCP segment of `len` bytes: what a sender that offloads the checksum
/// leaves in the checksum field. Never 0 (the sum is never zero), so a UDP
/// field of 0 ("no checksum") is never taken for it.
///
/// ```
/// use xdpip::wire::l4csum::pseudo_header_sum;
/// use std::net::Ipv4Addr;
/// // 0a00+0001 + 0a00+0002 + 0011 + 000a = 0x141e
/// let p = pseudo_header_sum(Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2), 17, 10);
/// assert_eq!(p, 0x141e);
/// ```
#[inline]
pub fn pseudo_header_sum(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, len: usize) -> u16 {
    checksum::fold(u32::from(src) as u64 + u32::from(dst) as u64 + protocol as u64 + len as u64)
}

/// Where a packet's UDP or TCP segment and its checksum field are.
#[derive(Debug, Clone, Copy)]
struct Segment {
    /// Offset of the segment (the IP header length).
    start: usize,
    /// Offset of its checksum field.
    check_at: usize,
    /// The folded pseudo-header sum.
    pseudo: u16,
}

/// The segment of `ip` (an IPv4 packet, header first, cut at its total
/// length) when it is a whole UDP or TCP segment that could carry a
/// partial checksum: not a fragment (the kernel finishes checksums before
/// it fragments), long enough to hold its checksum field, and for UDP a
/// length field equal to the IP payload (the offloaded sum covers the
/// whole payload).
#[inline]
fn segment(ip: &[u8]) -> Option<Segment> {
    if ip.len() < 20 {
        return None;
    }
    let start = ((ip[0] & 0x0f) as usize) * 4;
    let frag = u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff;
    if frag != 0 || start < 20 || ip.len() < start {
        return None;
    }
    let len = ip.len() - start;
    let check_at = match ip[9] {
        protocol::UDP if len >= 8 => {
            if u16::from_be_bytes([ip[start + 4], ip[start + 5]]) as usize != len {
                return None;
            }
            start + 6
        }
        protocol::TCP if len >= 20 => start + 16,
        _ => return None,
    };
    let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    Some(Segment {
        start,
        check_at,
        pseudo: pseudo_header_sum(src, dst, ip[9], len),
    })
}

/// True when the UDP or TCP checksum field of `ip` equals its folded
/// pseudo-header sum: the cheap test, a few additions and a comparison.
/// A candidate is partial unless the full sum verifies ([`complete`]).
///
/// `ip` is an IPv4 packet, header first, cut at its total length.
#[inline]
pub fn is_candidate(ip: &[u8]) -> bool {
    segment(ip).is_some_and(|s| field(ip, s.check_at) == s.pseudo)
}

#[inline]
fn field(ip: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([ip[at], ip[at + 1]])
}

/// Completes in place a partial UDP or TCP checksum of `ip` (an IPv4
/// packet, header first, cut at its total length) as the device would
/// have (`skb_checksum_help()`): the complement of the sum of the segment
/// with the pseudo-header sum in the field, 0 sent as 0xffff. Returns true
/// if it completed one; false, touching nothing, for a packet that is not
/// a candidate ([`is_candidate`]) or whose checksum already verifies.
///
/// Why a verified candidate needs nothing: with the field f = P (the
/// pseudo-header sum) and R the sum of the rest of the segment, the full
/// sum verifies when P + R + f ≡ 0, that is R ≡ −2P (one's complement,
/// modulo 0xffff); completing would write −(R + f) ≡ −(−2P + P) = P = f.
/// Both readings of the field give the same bytes.
///
/// ```
/// use xdpip::wire::l4csum::{complete, pseudo_header_sum};
/// use xdpip::wire::udp;
/// use std::net::Ipv4Addr;
/// let (src, dst) = (Ipv4Addr::new(10, 1, 0, 1), Ipv4Addr::new(10, 2, 0, 2));
/// // An IPv4 header (no checksum needed here) and a UDP datagram "hi"
/// // whose checksum field holds the pseudo-header sum, as a veth peer
/// // that offloads checksums hands it over.
/// let mut ip = vec![0x45, 0, 0, 30, 0, 0, 0, 0, 64, 17, 0, 0, 10, 1, 0, 1, 10, 2, 0, 2];
/// ip.extend_from_slice(&[0x9c, 0x40, 0x23, 0x28, 0, 10, 0, 0, b'h', b'i']);
/// let p = pseudo_header_sum(src, dst, 17, 10);
/// ip[26..28].copy_from_slice(&p.to_be_bytes());
/// assert!(!udp::Packet::new_checked(&ip[20..]).unwrap().verify_checksum(src, dst));
///
/// assert!(complete(&mut ip));
/// assert!(udp::Packet::new_checked(&ip[20..]).unwrap().verify_checksum(src, dst));
/// // Done once: a complete checksum is not a candidate any more.
/// assert!(!complete(&mut ip));
/// ```
#[inline]
pub fn complete(ip: &mut [u8]) -> bool {
    let Some(s) = segment(ip) else {
        return false;
    };
    if field(ip, s.check_at) != s.pseudo {
        return false;
    }
    // One pass: R + f, the sum the device would take.
    let seg = checksum::fold(checksum::fast_sum(0, &ip[s.start..]));
    if checksum::fold(s.pseudo as u64 + seg as u64) == 0xffff {
        return false;
    }
    let c = !seg;
    let c = if c == 0 { 0xffff } else { c };
    ip[s.check_at..s.check_at + 2].copy_from_slice(&c.to_be_bytes());
    true
}

/// For local delivery: true when a UDP datagram whose checksum did not
/// verify holds the folded pseudo-header sum in its field, a partial
/// checksum the kernel would accept unchecked (`udp4_csum_init()` trusts
/// `CHECKSUM_PARTIAL`). `udp` is the datagram as far as its length field
/// says.
///
/// ```
/// use xdpip::wire::l4csum::{pseudo_header_sum, udp_is_partial};
/// use std::net::Ipv4Addr;
/// let (src, dst) = (Ipv4Addr::new(10, 1, 0, 1), Ipv4Addr::new(10, 1, 0, 2));
/// let mut d = [0x9c, 0x40, 0x1e, 0x61, 0, 10, 0, 0, b'h', b'i'];
/// d[6..8].copy_from_slice(&pseudo_header_sum(src, dst, 17, 10).to_be_bytes());
/// assert!(udp_is_partial(src, dst, &d));
/// d[7] ^= 1;
/// assert!(!udp_is_partial(src, dst, &d));
/// ```
#[inline]
pub fn udp_is_partial(src: Ipv4Addr, dst: Ipv4Addr, udp: &[u8]) -> bool {
    udp.len() >= 8
        && u16::from_be_bytes([udp[6], udp[7]])
            == pseudo_header_sum(src, dst, protocol::UDP, udp.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::XorShift;
    use crate::wire::udp;

    const SRC: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);
    const DST: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 2);

    /// An IPv4 packet of `protocol` carrying `l4` (checksum field as given).
    fn packet(protocol: u8, l4: &[u8]) -> Vec<u8> {
        let mut ip = vec![0u8; 20];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
        ip[8] = 64;
        ip[9] = protocol;
        ip[12..16].copy_from_slice(&SRC.octets());
        ip[16..20].copy_from_slice(&DST.octets());
        ip.extend_from_slice(l4);
        ip
    }

    /// A full checksum the reference way: over pseudo-header and segment.
    fn full(ip: &[u8], check_at: usize) -> u16 {
        let len = ip.len() - 20;
        let mut ph = Vec::new();
        ph.extend_from_slice(&ip[12..20]);
        ph.extend_from_slice(&[0, ip[9]]);
        ph.extend_from_slice(&(len as u16).to_be_bytes());
        let mut seg = ip[20..].to_vec();
        seg[check_at - 20..check_at - 18].copy_from_slice(&[0, 0]);
        ph.extend_from_slice(&seg);
        let c = checksum::checksum(&ph);
        if c == 0 {
            0xffff
        } else {
            c
        }
    }

    fn verifies(ip: &[u8]) -> bool {
        let len = ip.len() - 20;
        let p = u32::from(SRC) as u64 + u32::from(DST) as u64 + ip[9] as u64 + len as u64;
        checksum::fold(checksum::sum(p, &ip[20..])) == 0xffff
    }

    fn udp_segment(payload: &[u8]) -> Vec<u8> {
        let mut d = vec![0x9c, 0x40, 0x23, 0x28, 0, 0, 0, 0];
        d[4..6].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        d.extend_from_slice(payload);
        d
    }

    fn tcp_segment(payload: &[u8]) -> Vec<u8> {
        let mut t = vec![0u8; 20];
        t[0..2].copy_from_slice(&40000u16.to_be_bytes());
        t[2..4].copy_from_slice(&5201u16.to_be_bytes());
        t[4..8].copy_from_slice(&0x1234_5678u32.to_be_bytes());
        t[12] = 5 << 4;
        t[13] = 0x18;
        t[14..16].copy_from_slice(&502u16.to_be_bytes());
        t.extend_from_slice(payload);
        t
    }

    /// The bytes the sender's stack hands over with offload on.
    fn offloaded(protocol: u8, l4: &[u8]) -> (Vec<u8>, usize) {
        let mut ip = packet(protocol, l4);
        let at = if protocol == 17 { 26 } else { 36 };
        let p = pseudo_header_sum(SRC, DST, protocol, l4.len());
        ip[at..at + 2].copy_from_slice(&p.to_be_bytes());
        (ip, at)
    }

    #[test]
    fn completion_equals_the_full_checksum_for_random_segments() {
        let mut x = XorShift(0x5eed_cafe);
        for round in 0..4000 {
            let n = (x.next() % 1500) as usize;
            let payload = x.bytes(n);
            let (proto, l4) = if round % 2 == 0 {
                (17, udp_segment(&payload))
            } else {
                (6, tcp_segment(&payload))
            };
            let (mut ip, at) = offloaded(proto, &l4);
            let want = full(&ip, at);
            let was_valid = verifies(&ip);
            let done = complete(&mut ip);
            assert!(verifies(&ip), "round {round}: does not verify");
            assert_eq!(done, !was_valid, "round {round}");
            if done {
                assert_eq!(field(&ip, at), want, "round {round}");
            }
            // Once complete, never again a candidate that needs work.
            assert!(!complete(&mut ip));
        }
    }

    #[test]
    fn complete_checksums_and_wrong_ones_are_left_alone() {
        let mut x = XorShift(0xfeed);
        for _ in 0..2000 {
            let n = (x.next() % 300) as usize;
            let payload = x.bytes(n);
            for proto in [17u8, 6] {
                let l4 = if proto == 17 {
                    udp_segment(&payload)
                } else {
                    tcp_segment(&payload)
                };
                let mut ip = packet(proto, &l4);
                let at = if proto == 17 { 26 } else { 36 };
                let c = full(&ip, at);
                ip[at..at + 2].copy_from_slice(&c.to_be_bytes());
                let before = ip.clone();
                assert!(!complete(&mut ip));
                assert_eq!(ip, before, "a valid checksum was changed");
                // A wrong checksum that is not the pseudo-header sum stays
                // wrong: the receiver drops it, as from a wire.
                let wrong = c.wrapping_add(1 + (x.next() % 100) as u16);
                if wrong != pseudo_header_sum(SRC, DST, proto, l4.len()) {
                    ip[at..at + 2].copy_from_slice(&wrong.to_be_bytes());
                    let before = ip.clone();
                    assert!(!complete(&mut ip));
                    assert_eq!(ip, before);
                }
            }
        }
    }

    /// The 1-in-65536 case: a complete, correct checksum that happens to
    /// equal the pseudo-header sum. It is a candidate; the full sum
    /// verifies, so nothing is written and nothing is counted.
    #[test]
    fn a_complete_checksum_equal_to_the_pseudo_header_sum_is_left_alone() {
        // Search payloads until the full checksum equals the pseudo sum.
        let mut x = XorShift(0x0bad_f00d);
        let mut found = 0;
        for _ in 0..2_000_000 {
            let mut payload = x.bytes(6);
            payload[0] = 0x55;
            let l4 = udp_segment(&payload);
            let mut ip = packet(17, &l4);
            let c = full(&ip, 26);
            if c != pseudo_header_sum(SRC, DST, 17, l4.len()) {
                continue;
            }
            ip[26..28].copy_from_slice(&c.to_be_bytes());
            assert!(is_candidate(&ip));
            assert!(verifies(&ip));
            let before = ip.clone();
            assert!(!complete(&mut ip), "a valid checksum was 'completed'");
            assert_eq!(ip, before);
            found += 1;
            if found == 3 {
                break;
            }
        }
        assert_eq!(found, 3, "no coincidence found in 2M random datagrams");
    }

    #[test]
    fn udp_completion_never_writes_zero() {
        // A datagram whose completed checksum is 0 must carry 0xffff (RFC
        // 768: 0 means none). Find one by adjusting the last payload word.
        let payload = [0u8; 8];
        let mut l4 = udp_segment(&payload);
        let (ip0, at) = offloaded(17, &l4);
        // Sum R + f of the segment as completion sees it, then set the last
        // word so that it becomes 0xffff: the complement is then 0.
        let s = checksum::fold(checksum::sum(0, &ip0[20..]));
        let fix = !s; // adding this makes the sum 0xffff
        let n = l4.len();
        l4[n - 2..].copy_from_slice(&fix.to_be_bytes());
        let (mut ip, _) = offloaded(17, &l4);
        assert!(complete(&mut ip));
        assert_eq!(field(&ip, at), 0xffff);
        assert!(verifies(&ip));
    }

    #[test]
    fn fragments_other_protocols_and_short_segments_are_not_candidates() {
        let (ip, _) = offloaded(17, &udp_segment(b"hello"));
        assert!(is_candidate(&ip));
        let mut f = ip.clone();
        f[6] = 0x20; // more fragments
        assert!(!is_candidate(&f) && !complete(&mut f));
        let mut f = ip.clone();
        f[7] = 1; // offset 8
        assert!(!is_candidate(&f));
        let mut f = ip.clone();
        f[9] = 1; // ICMP
        assert!(!is_candidate(&f));
        // UDP length disagreeing with the IP payload.
        let mut f = ip.clone();
        f[25] -= 1;
        assert!(!is_candidate(&f));
        // Too short for the field, or for a header.
        assert!(!is_candidate(&ip[..25]));
        assert!(!is_candidate(&ip[..10]));
        let (t, _) = offloaded(6, &tcp_segment(b""));
        assert!(is_candidate(&t));
        assert!(!is_candidate(&t[..39]));
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut x = XorShift(0x1357_9bdf);
        for _ in 0..100_000 {
            let n = (x.next() % 80) as usize;
            let mut b = x.bytes(n);
            if n > 10 && x.next().is_multiple_of(2) {
                b[9] = if x.next().is_multiple_of(2) { 6 } else { 17 };
                b[0] = 0x45;
                b[6] = 0;
                b[7] = 0;
            }
            let _ = is_candidate(&b);
            let _ = complete(&mut b);
            let _ = udp_is_partial(SRC, DST, &b);
        }
    }

    #[test]
    fn local_delivery_accepts_partial_udp_and_still_refuses_a_wrong_one() {
        let l4 = udp_segment(b"a DNS query would be here");
        let (ip, _) = offloaded(17, &l4);
        let d = udp::Packet::new_checked(&ip[20..]).unwrap();
        assert!(!d.verify_checksum(SRC, DST));
        assert!(udp_is_partial(SRC, DST, &ip[20..]));
        let mut bad = ip.clone();
        bad[27] ^= 0x40;
        assert!(!udp_is_partial(SRC, DST, &bad[20..]));
    }
}
