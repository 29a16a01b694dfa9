//! Local delivery in the worker: UDP datagrams to the engine's sockets and
//! ICMP echo requests to its addresses (`ip_local_deliver()`,
//! `__udp4_lib_rcv()`, `icmp_echo()`).

use super::demux::Demux;
use super::{Arrival, ErrOrigin, ExtendedErr, QueuedErr, SocketShared};
use crate::snapshot::Snapshot;
use crate::stats::DropReason;
use crate::wire::icmp::{self, msg_type};
use crate::wire::ipv4::{self, Packet};
use crate::wire::{checksum, l4csum, udp};
use std::net::{Ipv4Addr, SocketAddrV4};

/// What became of a local datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Local {
    /// Queued on `n` sockets (more than one for a broadcast).
    Delivered(usize),
    /// The frame was rewritten in place into an echo reply: transmit its
    /// first `len` bytes on `port`, fragmented if they exceed its MTU.
    EchoReply { port: usize, len: usize },
    /// The echo reply's next hop has no MAC yet.
    Unresolved { ifindex: u32, next: Ipv4Addr },
    /// No socket on the port: answer with ICMP port unreachable (unless
    /// it was a broadcast).
    NoSocket { broadcast: bool },
    /// Dropped.
    Drop(DropReason),
}

/// Delivers the IPv4 packet in `frame` (Ethernet header included, already
/// validated by [`crate::forward::forward`]) that arrived on `ingress`.
pub(crate) fn deliver(
    frame: &mut [u8],
    ingress: usize,
    snap: &Snapshot,
    demux: &Demux,
    shared: &SocketShared,
    ident: &mut u16,
) -> Local {
    let pkt = Packet::new_unchecked(&frame[14..]);
    if pkt.is_fragment() {
        // Reassembly is not wired in yet; the XDP program leaves fragments
        // to the kernel, so this is a race with a map update.
        return Local::Drop(DropReason::LocalUnclaimed);
    }
    let raw = raw_input(frame, ingress, snap, demux);
    let to_raw = || match raw {
        0 => Local::Drop(DropReason::LocalUnclaimed),
        n => Local::Delivered(n),
    };
    match pkt.protocol() {
        ipv4::protocol::UDP => udp_input(frame, ingress, snap, demux),
        ipv4::protocol::ICMP => {
            let hl = pkt.header_len();
            match frame.get(14 + hl) {
                Some(&t) if icmp::is_error(t) => icmp_error(frame, snap, demux, shared),
                Some(&msg_type::ECHO_REQUEST) if demux.echo => echo(frame, ingress, snap, ident),
                _ => to_raw(),
            }
        }
        _ => to_raw(),
    }
}

/// Gives a copy of the datagram, IP header included, to every raw socket
/// of its protocol bound to its destination (or any) and connected to its
/// source (or none), as `raw_v4_input()` does; returns how many took it.
pub(crate) fn raw_input(frame: &[u8], ingress: usize, snap: &Snapshot, demux: &Demux) -> usize {
    if demux.raw.is_empty() {
        return 0;
    }
    let pkt = Packet::new_unchecked(&frame[14..]);
    let Some(list) = demux.raw.get(&pkt.protocol()) else {
        return 0;
    };
    let (src, dst) = (pkt.src(), pkt.dst());
    let (s, d) = (u32::from(src), u32::from(dst));
    let port = &snap.ports[ingress];
    let spec_dst = if snap.is_broadcast(dst) {
        port.select_addr(src).unwrap_or(Ipv4Addr::UNSPECIFIED)
    } else {
        dst
    };
    let datagram = &frame[14..14 + pkt.total_len() as usize];
    let at = Arrival {
        src: SocketAddrV4::new(src, 0),
        dst: SocketAddrV4::new(dst, 0),
        ttl: pkt.ttl(),
        tos: pkt.tos(),
        ifindex: port.ifindex,
        spec_dst,
    };
    list.iter()
        .filter(|e| (e.laddr == 0 || e.laddr == d) && (e.peer == 0 || e.peer == s))
        .filter(|e| e.sock.deliver(datagram, &at))
        .count()
}

/// The UDP datagram of a local packet (`frame`, Ethernet header
/// included), checked as `__udp4_lib_rcv()` checks it: its length, and its
/// checksum (a local stack's partial checksum accepted as the kernel
/// accepts CHECKSUM_PARTIAL).
pub(crate) fn udp_checked<'a>(
    frame: &'a [u8],
    ingress: usize,
    snap: &Snapshot,
) -> Result<udp::Packet<&'a [u8]>, DropReason> {
    let pkt = Packet::new_unchecked(&frame[14..]);
    let (src, dst) = (pkt.src(), pkt.dst());
    let hl = pkt.header_len();
    let total = pkt.total_len() as usize;
    let Ok(d) = udp::Packet::new_checked(&frame[14 + hl..14 + total]) else {
        return Err(DropReason::UdpBadLength);
    };
    if !d.verify_checksum(src, dst) {
        let dgram = &frame[14 + hl..14 + hl + d.len() as usize];
        if !(snap.ports[ingress].partial_csum && l4csum::udp_is_partial(src, dst, dgram)) {
            return Err(DropReason::UdpBadChecksum);
        }
        crate::stats::tally(crate::stats::Checksum::PartialAccepted);
    }
    Ok(d)
}

fn udp_input(frame: &[u8], ingress: usize, snap: &Snapshot, demux: &Demux) -> Local {
    let pkt = Packet::new_unchecked(&frame[14..]);
    let (src, dst) = (pkt.src(), pkt.dst());
    let d = match udp_checked(frame, ingress, snap) {
        Ok(d) => d,
        Err(r) => return Local::Drop(r),
    };
    let (sport, dport) = (d.src_port(), d.dst_port());
    let from = SocketAddrV4::new(src, sport);
    let to = SocketAddrV4::new(dst, dport);
    let port = &snap.ports[ingress];
    // ipi_spec_dst: the address a reply should come from: the destination
    // when it is ours, else the ingress address that suits the sender.
    let broadcast = snap.is_broadcast(dst);
    let spec_dst = if broadcast {
        port.select_addr(src).unwrap_or(Ipv4Addr::UNSPECIFIED)
    } else {
        dst
    };
    let at = Arrival {
        src: from,
        dst: to,
        ttl: pkt.ttl(),
        tos: pkt.tos(),
        ifindex: port.ifindex,
        spec_dst,
    };
    if dst.is_multicast() {
        let mut n = 0;
        let mut full = 0;
        for s in demux.multicast(dst, dport, src, sport, port.ifindex) {
            if s.deliver(d.payload(), &at) {
                n += 1;
            } else {
                full += 1;
            }
        }
        // No port unreachable for multicast (RFC 1122).
        return match (n, full) {
            (0, 0) => Local::NoSocket { broadcast: true },
            (0, _) => Local::Drop(DropReason::UdpSocketFull),
            _ => Local::Delivered(n),
        };
    }
    if broadcast {
        let mut n = 0;
        let mut full = 0;
        for s in demux.broadcast(dst, dport, src, sport) {
            if s.deliver(d.payload(), &at) {
                n += 1;
            } else {
                full += 1;
            }
        }
        return match (n, full) {
            (0, 0) => Local::NoSocket { broadcast: true },
            (0, _) => Local::Drop(DropReason::UdpSocketFull),
            _ => Local::Delivered(n),
        };
    }
    match demux.lookup(dst, dport, src, sport) {
        Some(s) => {
            if s.deliver(d.payload(), &at) {
                Local::Delivered(1)
            } else {
                Local::Drop(DropReason::UdpSocketFull)
            }
        }
        None => Local::NoSocket { broadcast: false },
    }
}

/// An ICMP error about a datagram an engine socket sent
/// (`__udp4_lib_err()`): the errno and whether it is hard, as
/// `icmp_err_convert[]` gives them.
fn icmp_error(frame: &[u8], snap: &Snapshot, demux: &Demux, shared: &SocketShared) -> Local {
    let pkt = Packet::new_unchecked(&frame[14..]);
    let hl = pkt.header_len();
    let total = pkt.total_len() as usize;
    let Ok(msg) = icmp::Packet::new_checked(&frame[14 + hl..14 + total]) else {
        return Local::Drop(DropReason::LocalUnclaimed);
    };
    if !msg.verify_checksum() {
        return Local::Drop(DropReason::IcmpBadChecksum);
    }
    let (t, code) = (msg.msg_type(), msg.code());
    // The quoted header and the first 8 bytes of its UDP datagram.
    let q = &frame[14 + hl + icmp::HEADER_LEN..14 + total];
    if q.len() < 28 || q[0] >> 4 != 4 || q[9] != ipv4::protocol::UDP {
        return Local::Drop(DropReason::LocalUnclaimed);
    }
    let ihl = ((q[0] & 0x0f) as usize) * 4;
    if q.len() < ihl + 4 {
        return Local::Drop(DropReason::LocalUnclaimed);
    }
    let src = Ipv4Addr::new(q[12], q[13], q[14], q[15]);
    let dst = Ipv4Addr::new(q[16], q[17], q[18], q[19]);
    let sport = u16::from_be_bytes([q[ihl], q[ihl + 1]]);
    let dport = u16::from_be_bytes([q[ihl + 2], q[ihl + 3]]);
    let rest = &frame[14 + hl + 4..14 + hl + 8];
    let mut info = 0;
    let (err, hard) = match (t, code) {
        (msg_type::DEST_UNREACH, 4) => {
            // Fragmentation needed: the path MTU is learnt whoever sent
            // the datagram (ipv4_sk_update_pmtu()); the socket hears of it
            // unless it said IP_PMTUDISC_DONT.
            let mtu = u16::from_be_bytes([rest[2], rest[3]]) as u32;
            if let Ok(p) = super::path::output(snap, dst, None) {
                shared.pmtu.learn(dst, mtu, p.mtu, shared.now_ms());
            }
            // ee_info is the MTU as advertised.
            info = mtu;
            (libc::EMSGSIZE, true)
        }
        (msg_type::DEST_UNREACH, c) => UNREACH
            .get(c as usize)
            .copied()
            .unwrap_or((libc::EHOSTUNREACH, false)),
        (msg_type::TIME_EXCEEDED, _) => (libc::EHOSTUNREACH, false),
        (msg_type::PARAM_PROBLEM, _) => {
            info = rest[0] as u32;
            (libc::EPROTO, true)
        }
        _ => return Local::Drop(DropReason::LocalUnclaimed),
    };
    let outer = Packet::new_unchecked(&frame[14..]);
    let quoted = &q[(ihl + 8).min(q.len())..];
    let mut data = [0u8; super::ERR_DATA];
    let len = quoted.len().min(data.len());
    data[..len].copy_from_slice(&quoted[..len]);
    let e = QueuedErr {
        err: ExtendedErr {
            errno: err,
            origin: ErrOrigin::Icmp,
            icmp_type: t,
            icmp_code: code,
            info,
            offender: Some(outer.src()),
            dst: SocketAddrV4::new(dst, dport),
        },
        data,
        len,
    };
    match demux.sender(src, sport, dst, dport) {
        Some(s) => {
            s.icmp_error(e, hard);
            Local::Delivered(0)
        }
        None => Local::Drop(DropReason::LocalUnclaimed),
    }
}

/// `icmp_err_convert[]`: errno and whether it is fatal, by unreachable code.
const UNREACH: [(i32, bool); 16] = [
    (libc::ENETUNREACH, false),
    (libc::EHOSTUNREACH, false),
    (libc::ENOPROTOOPT, true),
    (libc::ECONNREFUSED, true),
    (libc::EMSGSIZE, false),
    (libc::EOPNOTSUPP, false),
    (libc::ENETUNREACH, true),
    (libc::EHOSTDOWN, true),
    (libc::ENONET, true),
    (libc::ENETUNREACH, true),
    (libc::EHOSTUNREACH, true),
    (libc::ENETUNREACH, false),
    (libc::EHOSTUNREACH, false),
    (libc::EHOSTUNREACH, true),
    (libc::EHOSTUNREACH, true),
    (libc::EHOSTUNREACH, true),
];

/// Rewrites an echo request into its reply in place (`icmp_echo()` and
/// `icmp_reply()`): addresses swapped, the pinged address as source (for a
/// broadcast, the ingress address that suits the sender), a fresh header
/// with `ip_default_ttl`, the request's TOS, no DF. `icmp_echo_ignore_all`
/// and `icmp_echo_ignore_broadcasts` silence it as they silence Linux.
fn echo(frame: &mut [u8], ingress: usize, snap: &Snapshot, ident: &mut u16) -> Local {
    let pkt = Packet::new_unchecked(&frame[14..]);
    let (src, dst) = (pkt.src(), pkt.dst());
    let hl = pkt.header_len();
    let total = pkt.total_len() as usize;
    let tos = pkt.tos();
    let Ok(msg) = icmp::Packet::new_checked(&frame[14 + hl..14 + total]) else {
        return Local::Drop(DropReason::LocalUnclaimed);
    };
    if !msg.verify_checksum() {
        return Local::Drop(DropReason::IcmpBadChecksum);
    }
    if msg.msg_type() != msg_type::ECHO_REQUEST {
        return Local::Drop(DropReason::LocalUnclaimed);
    }
    // In icmp_rcv()'s order: the broadcast check, then icmp_echo()'s.
    let broadcast = snap.is_broadcast(dst);
    if broadcast && snap.sysctl.icmp_echo_ignore_broadcasts {
        return Local::Drop(DropReason::IcmpEchoIgnoreBroadcasts);
    }
    if snap.sysctl.icmp_echo_ignore_all {
        return Local::Drop(DropReason::IcmpEchoIgnoreAll);
    }
    // The XDP program only steers option-less packets here.
    if hl != ipv4::MIN_HEADER_LEN {
        return Local::Drop(DropReason::LocalUnclaimed);
    }
    // fib_compute_spec_dst(): the pinged address, or for a broadcast the
    // address of the ingress port that suits the sender.
    let from = if broadcast {
        match snap.ports[ingress].select_addr(src) {
            Some(a) => a,
            None => return Local::Drop(DropReason::LocalUnclaimed),
        }
    } else {
        dst
    };
    let Ok(path) = super::path::output(snap, src, Some(from)) else {
        return Local::Drop(DropReason::OutputNoRoute);
    };
    // The kernel learnt the sender from its ARP request a moment ago, but
    // the mirror may not have it yet: a sender on the ingress link is
    // answered at the MAC it sent from, which is what the neighbour entry
    // will say.
    let on_link = path.next == src && path.port == ingress;
    let sender =
        crate::wire::MacAddr([frame[6], frame[7], frame[8], frame[9], frame[10], frame[11]]);
    let Some(mac) = snap
        .neigh
        .resolve(path.ifindex, path.next)
        .or(on_link.then_some(sender))
    else {
        return Local::Unresolved {
            ifindex: path.ifindex,
            next: path.next,
        };
    };
    // A reply larger than the egress MTU (a reassembled request, or one
    // that came in on a larger-MTU port) is fragmented by the caller.
    let out = &snap.ports[path.port];
    // The ICMP header: type 0, checksum adjusted for the type change only.
    let icmp_at = 14 + hl;
    frame[icmp_at] = msg_type::ECHO_REPLY;
    let old = u16::from_be_bytes([frame[icmp_at + 2], frame[icmp_at + 3]]);
    let c = checksum::update(old, (msg_type::ECHO_REQUEST as u16) << 8, 0);
    frame[icmp_at + 2..icmp_at + 4].copy_from_slice(&c.to_be_bytes());
    *ident = ident.wrapping_add(1);
    let repr = ipv4::Repr {
        src: from,
        dst: src,
        protocol: ipv4::protocol::ICMP,
        ttl: snap.sysctl.ip_default_ttl,
        tos,
        ident: *ident,
        dont_frag: false,
        payload_len: total - hl,
    };
    {
        let mut p = Packet::new_unchecked(&mut frame[14..14 + hl]);
        repr.emit(&mut p);
    }
    frame[0..6].copy_from_slice(&mac.0);
    frame[6..12].copy_from_slice(&out.mac.0);
    Local::EchoReply {
        port: path.port,
        len: 14 + total,
    }
}
