//! Building the frames of datagrams the engine's sockets send
//! (`udp_send_skb()`, `ip_make_skb()`), in the worker.

use super::{path, PmtuDisc, SocketShared, TxDatagram};
use crate::snapshot::Snapshot;
use crate::stats::DropReason;
use crate::wire::ipv4::{self, Packet};
use crate::wire::udp;
use std::net::{Ipv4Addr, SocketAddrV4};

/// The frame built for a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Built {
    /// `out[..len]` is the frame: transmit it on `port`.
    Frame { port: usize, len: usize },
    /// `out[..len]` is larger than the egress MTU and may be fragmented:
    /// transmit it as fragments of at most `mtu` bytes.
    Fragment { port: usize, len: usize, mtu: usize },
    /// The next hop has no MAC yet: ask the kernel, keep the datagram.
    Unresolved { ifindex: u32, next: Ipv4Addr },
    /// Dropped.
    Drop(DropReason),
}

/// Builds the Ethernet frame of `d` into `out` (at least 14 + 65535
/// bytes), routed with `snap`.
pub(crate) fn build(
    d: &TxDatagram,
    snap: &Snapshot,
    shared: &SocketShared,
    ident: &mut u16,
    out: &mut [u8],
) -> Built {
    let bound = Some(*d.src.ip()).filter(|a| !a.is_unspecified());
    let routed = if d.oif != 0 {
        path::output_via(snap, *d.dst.ip(), bound, d.oif)
    } else {
        path::output(snap, *d.dst.ip(), bound)
    };
    let Ok(p) = routed else {
        return Built::Drop(DropReason::OutputNoRoute);
    };
    let port = &snap.ports[p.port];
    if !port.up {
        return Built::Drop(DropReason::PortDown);
    }
    let mac = if p.broadcast {
        [0xff; 6]
    } else if d.dst.ip().is_multicast() {
        super::multicast::group_mac(*d.dst.ip())
    } else {
        match snap.neigh.resolve(p.ifindex, p.next) {
            Some(m) => m.0,
            None => {
                return Built::Unresolved {
                    ifindex: p.ifindex,
                    next: p.next,
                }
            }
        }
    };
    let mtu = shared.effective_mtu(&p, *d.dst.ip(), d.pmtudisc) as usize;
    let src = *d.src.ip();
    let src = if src.is_unspecified() { p.src } else { src };
    if let Some((_, true)) = d.raw {
        let egress = Egress {
            port: p.port,
            dst_mac: mac,
            src_mac: port.mac.0,
            mtu,
            src,
        };
        return hdrincl(d, &egress, ident, out);
    }
    let (l4_len, proto) = match d.raw {
        Some((proto, _)) => (d.buf.len(), proto),
        None => (udp::HEADER_LEN + d.buf.len(), ipv4::protocol::UDP),
    };
    let total = ipv4::MIN_HEADER_LEN + l4_len;
    let fits = total <= mtu;
    // ip_dont_fragment() and __ip_make_skb(): DO and PROBE always set DF,
    // WANT only on a datagram that fits, DONT never.
    let df = match d.pmtudisc {
        PmtuDisc::Do | PmtuDisc::Probe => true,
        PmtuDisc::Want => fits,
        PmtuDisc::Dont => false,
    };
    if !fits && df {
        // The MTU shrank after the send call checked it.
        return Built::Drop(DropReason::TooBig);
    }
    *ident = ident.wrapping_add(1);
    let repr = ipv4::Repr {
        src,
        dst: *d.dst.ip(),
        protocol: proto,
        ttl: d.ttl,
        tos: d.tos,
        ident: *ident,
        dont_frag: df,
        payload_len: l4_len,
    };
    let rest = headers(out, (mac, port.mac.0), &repr);
    if d.raw.is_some() {
        rest.copy_from_slice(&d.buf);
    } else {
        rest[udp::HEADER_LEN..].copy_from_slice(&d.buf);
        udp_header(rest, (src, d.src.port()), d.dst);
    }
    if fits {
        Built::Frame {
            port: p.port,
            len: 14 + total,
        }
    } else {
        Built::Fragment {
            port: p.port,
            len: 14 + total,
            mtu,
        }
    }
}

/// Writes the Ethernet header (to the first MAC of `macs`, from the
/// second, EtherType IPv4) and the IPv4 header of `repr`, without options,
/// at the start of `out`; returns the `repr.payload_len` bytes after them.
pub(crate) fn headers<'a>(
    out: &'a mut [u8],
    (dst_mac, src_mac): ([u8; 6], [u8; 6]),
    repr: &ipv4::Repr,
) -> &'a mut [u8] {
    out[0..6].copy_from_slice(&dst_mac);
    out[6..12].copy_from_slice(&src_mac);
    out[12..14].copy_from_slice(&[0x08, 0x00]);
    let total = ipv4::MIN_HEADER_LEN + repr.payload_len;
    let (ip, rest) = out[14..14 + total].split_at_mut(ipv4::MIN_HEADER_LEN);
    repr.emit(&mut Packet::new_unchecked(ip));
    rest
}

/// Fills the UDP header of `datagram`, whose payload is already in place
/// after it: ports, length and the checksum from `from` to `to`.
pub(crate) fn udp_header(datagram: &mut [u8], from: (Ipv4Addr, u16), to: SocketAddrV4) {
    let len = datagram.len() as u16;
    let mut u = udp::Packet::new_unchecked(datagram);
    u.set_src_port(from.1);
    u.set_dst_port(to.port());
    u.set_len(len);
    u.fill_checksum(from.0, *to.ip());
}

/// Where a datagram leaves: port, MACs, MTU and source address.
#[derive(Clone, Copy)]
struct Egress {
    port: usize,
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    mtu: usize,
    src: Ipv4Addr,
}

/// An `IP_HDRINCL` datagram (`raw_send_hdrinc()`): the caller's header
/// with the total length and checksum always filled in, and the ID and
/// source address when zero; never fragmented.
fn hdrincl(d: &TxDatagram, e: &Egress, ident: &mut u16, out: &mut [u8]) -> Built {
    let Egress {
        port,
        dst_mac: mac,
        src_mac,
        mtu,
        src,
    } = *e;
    let port_mac = &src_mac;
    let len = d.buf.len();
    let ihl = (d.buf[0] & 0x0f) as usize * 4;
    if len > mtu {
        return Built::Drop(DropReason::TooBig);
    }
    if ihl < ipv4::MIN_HEADER_LEN || ihl > len {
        // The kernel sends whatever header it is given; a header that does
        // not fit its own datagram could not be routed by anyone.
        return Built::Drop(DropReason::BadHeaderLength);
    }
    out[0..6].copy_from_slice(&mac);
    out[6..12].copy_from_slice(port_mac);
    out[12..14].copy_from_slice(&[0x08, 0x00]);
    out[14..14 + len].copy_from_slice(&d.buf);
    let mut p = Packet::new_unchecked(&mut out[14..14 + ihl]);
    p.set_total_len(len as u16);
    if p.ident() == 0 {
        *ident = ident.wrapping_add(1);
        p.set_ident(*ident);
    }
    if p.src().is_unspecified() {
        p.set_src(src);
    }
    p.fill_checksum();
    Built::Frame {
        port,
        len: 14 + len,
    }
}
