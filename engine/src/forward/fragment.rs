//! Fragmentation on egress, laid out as Linux's `ip_do_fragment()` lays it
//! out: the same header on every fragment (options not copied replaced by
//! NOPs after the first, `ip_options_fragment()`), data in multiples of 8
//! bytes except in the last fragment, MF on all but the last (and on the
//! last too when the packet was itself a non-final fragment).

use crate::wire::ipopt;
use crate::wire::ipv4::Packet;

/// Splits `frame` (Ethernet + IPv4, already rewritten for the egress port,
/// TTL decremented) into fragments that fit `mtu`, building each in
/// `scratch` (at least as long as `frame`) and calling `emit` with its bytes,
/// in order. Returns the number of fragments, or `None` when the header
/// leaves no room for 8 bytes of data in `mtu` or `scratch` is too short.
///
/// ```
/// use xdpip::forward::fragment::split;
/// use xdpip::wire::ipv4::{Packet, Repr};
/// use std::net::Ipv4Addr;
/// let repr = Repr { src: Ipv4Addr::new(10, 0, 0, 1), dst: Ipv4Addr::new(10, 0, 1, 1),
///                   protocol: 17, payload_len: 3000, ..Repr::default() };
/// let mut frame = vec![0u8; 14 + repr.buffer_len()];
/// repr.emit(&mut Packet::new_unchecked(&mut frame[14..]));
/// let mut sizes = vec![];
/// let mut scratch = vec![0u8; frame.len()];
/// let n = split(&frame, 1400, &mut scratch, |f| sizes.push(f.len() - 14));
/// assert_eq!(n, Some(3));
/// assert_eq!(sizes, vec![1396, 1396, 268]); // 1376 + 1376 + 248 data bytes, 20-byte headers
/// ```
pub fn split(
    frame: &[u8],
    mtu: usize,
    scratch: &mut [u8],
    mut emit: impl FnMut(&[u8]),
) -> Option<usize> {
    let (eth, ip) = frame.split_at(14);
    let pkt = Packet::new_unchecked(ip);
    let hlen = pkt.header_len();
    let total = pkt.total_len() as usize;
    let room = mtu.checked_sub(hlen)? & !7;
    if room == 0 {
        return None;
    }
    let not_last = pkt.more_frags();
    let base = pkt.frag_offset() as usize;
    let mut header = [0u8; 60];
    header[..hlen].copy_from_slice(&ip[..hlen]);
    if scratch.len() < frame.len() || total + 14 > frame.len() {
        return None;
    }
    scratch[..14].copy_from_slice(eth);
    let (mut ptr, mut count) = (hlen, 0);
    while ptr < total {
        let left = total - ptr;
        let len = if left > mtu - hlen { room } else { left };
        let last = ptr + len == total;
        let out = &mut scratch[..14 + hlen + len];
        out[14..14 + hlen].copy_from_slice(&header[..hlen]);
        out[14 + hlen..].copy_from_slice(&ip[ptr..ptr + len]);
        let mut p = Packet::new_unchecked(&mut out[14..]);
        p.set_flags_and_offset(false, !last || not_last, (base + ptr - hlen) as u16);
        p.set_total_len((hlen + len) as u16);
        p.fill_checksum();
        emit(out);
        if count == 0 && hlen > 20 {
            ipopt::strip_for_fragments(&mut header[..hlen]);
        }
        ptr += len;
        count += 1;
    }
    Some(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ipv4::Repr;
    use std::net::Ipv4Addr;

    fn frame(payload: usize, opts: &[u8], flags: (bool, u16)) -> Vec<u8> {
        let hlen = 20 + opts.len();
        let mut f = vec![0u8; 14 + hlen + payload];
        let repr = Repr {
            src: Ipv4Addr::new(10, 0, 0, 1),
            dst: Ipv4Addr::new(10, 0, 1, 1),
            protocol: 17,
            payload_len: payload,
            ..Repr::default()
        };
        repr.emit(&mut Packet::new_unchecked(&mut f[14..]));
        f[14 + 20..14 + hlen].copy_from_slice(opts);
        for (i, b) in f[14 + hlen..].iter_mut().enumerate() {
            *b = i as u8;
        }
        let mut p = Packet::new_unchecked(&mut f[14..]);
        p.set_version_and_header_len(hlen);
        p.set_total_len((hlen + payload) as u16);
        p.set_flags_and_offset(false, flags.0, flags.1);
        p.fill_checksum();
        f
    }

    #[test]
    fn reassembles_to_the_original_payload() {
        for payload in [1usize, 7, 8, 1380, 1381, 2999, 65535 - 20] {
            let f = frame(payload, &[], (false, 0));
            let mut data = vec![];
            let mut offsets = vec![];
            split(&f, 1400, &mut vec![0; f.len()], |x| {
                let p = Packet::new_checked(&x[14..]).unwrap();
                assert!(p.verify_checksum());
                assert!(x.len() - 14 <= 1400);
                offsets.push((p.frag_offset(), p.more_frags()));
                data.extend_from_slice(p.payload());
            })
            .unwrap();
            assert_eq!(data, f[34..]);
            assert!(offsets.iter().all(|(o, _)| o % 8 == 0));
            assert!(!offsets.last().unwrap().1);
            assert!(offsets[..offsets.len() - 1].iter().all(|(_, mf)| *mf));
        }
    }

    #[test]
    fn a_fragment_keeps_mf_and_its_offset() {
        let f = frame(2000, &[], (true, 800));
        let mut v = vec![];
        split(&f, 1000, &mut vec![0; f.len()], |x| {
            let p = Packet::new_checked(&x[14..]).unwrap();
            v.push((p.frag_offset(), p.more_frags()));
        })
        .unwrap();
        assert_eq!(v, vec![(800, true), (1776, true), (2752, true)]);
    }

    #[test]
    fn options_not_copied_become_nops_after_the_first_fragment() {
        let opts = [ipopt::RR, 7, 8, 1, 2, 3, 4, ipopt::EOL];
        let f = frame(100, &opts, (false, 0));
        let mut heads = vec![];
        split(&f, 28 + 48, &mut vec![0; f.len()], |x| {
            heads.push(x[14 + 20..14 + 28].to_vec())
        })
        .unwrap();
        assert_eq!(heads[0], opts);
        assert!(heads[1..].iter().all(|h| h[..7] == [1u8; 7] && h[7] == 0));
    }

    #[test]
    fn impossible_mtu() {
        let f = frame(100, &[], (false, 0));
        assert_eq!(split(&f, 27, &mut vec![0; f.len()], |_| {}), None);
    }
}
