//! Answering datagrams in the worker ([`UdpSocket::serve`]): the worker
//! that receives a datagram for a serving socket calls that worker's
//! [`Handler`] with the payload where it lies in the received frame, and
//! transmits the reply in the same batch, built in a frame of its UMEM:
//! no queue, no other thread, no copy of the query, one write of the reply.
//!
//! The reply goes as a datagram the socket sends goes: routed back to the
//! sender from the address and port the datagram came to, with the
//! socket's `IP_TTL`, `IP_TOS` and `IP_MTU_DISCOVER`, through the filter's
//! output and postrouting hooks, counted in the UDP MIB.
//!
//! [`UdpSocket::serve`]: super::UdpSocket::serve

use super::demux::Demux;
use super::{input, output, path, PmtuDisc, SockCore, SocketShared};
use crate::snapshot::Snapshot;
use crate::stats::{Counter, DropReason, Mib, WorkerCounters};
use crate::wire::ipv4::{self, Packet};
use crate::wire::{udp, MacAddr};
use crate::xsk::{Frame, Pool, Umem};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A datagram as a [`Handler`] sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Datagram<'a> {
    /// The UDP payload, in the frame it arrived in.
    pub payload: &'a [u8],
    /// Sender; the reply goes there.
    pub src: SocketAddrV4,
    /// Destination: the engine's address and the socket's port; the reply
    /// comes from there.
    pub dst: SocketAddrV4,
    /// TTL of the datagram.
    pub ttl: u8,
    /// TOS byte of the datagram.
    pub tos: u8,
    /// Interface it arrived on.
    pub ifindex: u32,
}

/// Answers the datagrams of a serving socket in one worker
/// ([`UdpSocket::serve`](super::UdpSocket::serve)).
///
/// It runs on the worker's thread, in the middle of the worker's batch:
/// it must not block, and what it takes is time the worker does not spend
/// on packets. It is the worker's own (`&mut self`, no lock).
pub trait Handler: Send {
    /// Writes the payload of the reply to `d` into `reply` and returns its
    /// length, or `None` for no reply. `reply` holds what fits the path MTU
    /// and the frame (at most 1472 bytes on a 1500-byte link); a length
    /// beyond it is not sent (counted `too_big`).
    fn datagram(&mut self, d: &Datagram<'_>, reply: &mut [u8]) -> Option<usize>;
}

impl<F> Handler for F
where
    F: FnMut(&Datagram<'_>, &mut [u8]) -> Option<usize> + Send,
{
    fn datagram(&mut self, d: &Datagram<'_>, reply: &mut [u8]) -> Option<usize> {
        self(d, reply)
    }
}

/// Counters of a serving socket, summed over the workers
/// ([`UdpSocket::serve_stats`](super::UdpSocket::serve_stats)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServeStats {
    /// Datagrams given to a handler.
    pub datagrams: u64,
    /// Replies the handlers returned (sent, or dropped and counted under
    /// a drop reason of the engine).
    pub replies: u64,
    /// Datagrams the handlers answered with `None`.
    pub declined: u64,
}

/// One worker's counters of a serving socket, on a cache line of its own:
/// each has one writer.
#[derive(Debug, Default)]
#[repr(align(64))]
struct Row {
    datagrams: Counter,
    replies: Counter,
    declined: Counter,
}

type Factory = dyn Fn(usize) -> Box<dyn Handler> + Send + Sync;

/// What a serving socket shares with the workers.
pub(crate) struct Serving {
    factory: Box<Factory>,
    rows: Box<[Row]>,
    /// Set when the socket closes: workers drop their handler.
    closed: AtomicBool,
}

impl std::fmt::Debug for Serving {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Serving").finish_non_exhaustive()
    }
}

impl Serving {
    pub(crate) fn new(factory: Box<Factory>, workers: usize) -> Serving {
        Serving {
            factory,
            rows: (0..workers.max(1)).map(|_| Row::default()).collect(),
            closed: AtomicBool::new(false),
        }
    }

    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
    }

    pub(crate) fn stats(&self) -> ServeStats {
        let mut s = ServeStats::default();
        for r in self.rows.iter() {
            s.datagrams += r.datagrams.get();
            s.replies += r.replies.get();
            s.declined += r.declined.get();
        }
        s
    }
}

/// The output settings of a socket its workers read: `IP_TTL` (0 for
/// `ip_default_ttl`), `IP_TOS` and `IP_MTU_DISCOVER`, packed in one word.
pub(crate) fn pack_output(ttl: Option<u8>, tos: u8, pmtudisc: PmtuDisc) -> u32 {
    ttl.unwrap_or(0) as u32 | (tos as u32) << 8 | (pmtudisc as u32) << 16
}

fn unpack_output(v: u32) -> (Option<u8>, u8, PmtuDisc) {
    let ttl = Some(v as u8).filter(|t| *t != 0);
    let mode = PmtuDisc::from_raw(((v >> 16) & 3) as i32).unwrap_or(PmtuDisc::Want);
    (ttl, (v >> 8) as u8, mode)
}

/// What the worker needs to answer: the tables of this round, its
/// counters and its UMEM.
pub(crate) struct Ctx<'a> {
    pub snap: &'a Snapshot,
    pub demux: &'a Demux,
    pub shared: &'a SocketShared,
    pub counters: &'a WorkerCounters,
    pub umem: &'a Umem,
}

/// What became of a local datagram offered to the serving sockets.
#[derive(Debug)]
pub(crate) enum Served {
    /// Not for a serving socket: deliver it as usual.
    Pass,
    /// Taken, and counted (delivered, declined, or dropped).
    Done,
    /// The reply, in `frame`: to transmit on `port` if the output and
    /// postrouting hooks let it (then count `UdpOutDatagrams`).
    Reply { frame: Frame, port: usize },
    /// Taken; the reply's next hop has no MAC yet (counted
    /// `neighbour_missing`): ask the kernel.
    Unresolved { ifindex: u32, next: Ipv4Addr },
}

/// A worker's handlers, one per serving socket it has met.
#[derive(Default)]
pub(crate) struct Handlers {
    worker: usize,
    list: Vec<(Arc<Serving>, Box<dyn Handler>)>,
}

impl std::fmt::Debug for Handlers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handlers")
            .field("worker", &self.worker)
            .field("sockets", &self.list.len())
            .finish()
    }
}

impl Handlers {
    pub(crate) fn new(worker: usize) -> Handlers {
        Handlers {
            worker,
            list: Vec::new(),
        }
    }

    /// Drops the handlers of closed sockets (about once a second).
    pub(crate) fn prune(&mut self) {
        self.list.retain(|(s, _)| !s.closed.load(Ordering::Relaxed));
    }

    /// This worker's handler of `s`, made by its factory the first time
    /// (the only allocation, once per worker and socket).
    fn handler(&mut self, s: &Arc<Serving>) -> usize {
        // A few serving sockets at most: a scan beats a hash.
        if let Some(i) = self.list.iter().position(|(x, _)| Arc::ptr_eq(x, s)) {
            return i;
        }
        self.list.push((s.clone(), (s.factory)(self.worker)));
        self.list.len() - 1
    }

    /// Offers a whole local datagram (`data`, Ethernet header included,
    /// IPv4 header valid, not a fragment, through the input hook) that
    /// arrived on `ingress` to the serving sockets. Counts what it takes.
    pub(crate) fn answer(
        &mut self,
        cx: &Ctx<'_>,
        data: &[u8],
        ingress: usize,
        pool: &mut Pool,
        ident: &mut u16,
    ) -> Served {
        if !cx.demux.serve {
            return Served::Pass;
        }
        let Some((sock, serving)) = serving_socket(cx, data) else {
            return Served::Pass;
        };
        let c = cx.counters;
        let d = match input::udp_checked(data, ingress, cx.snap) {
            Ok(d) => d,
            Err(r) => {
                c.count_drop(r);
                return Served::Done;
            }
        };
        // Raw sockets of UDP get their copy, as in input::deliver.
        if !cx.demux.raw.is_empty() {
            input::raw_input(data, ingress, cx.snap, cx.demux);
        }
        c.mib(Mib::InDelivers, 1);
        c.mib(Mib::UdpInDatagrams, 1);
        let pkt = Packet::new_unchecked(&data[14..]);
        let at = 14 + pkt.header_len();
        let q = Datagram {
            payload: &data[at + udp::HEADER_LEN..at + d.len() as usize],
            src: SocketAddrV4::new(pkt.src(), d.src_port()),
            dst: SocketAddrV4::new(pkt.dst(), d.dst_port()),
            ttl: pkt.ttl(),
            tos: pkt.tos(),
            ifindex: cx.snap.ports[ingress].ifindex,
        };
        let sender = MacAddr([data[6], data[7], data[8], data[9], data[10], data[11]]);
        let row = &serving.rows[self.worker % serving.rows.len()];
        row.datagrams.add(1);
        let (ttl, tos, pmtudisc) = unpack_output(sock.output.load(Ordering::Relaxed));
        // Back to the sender, from the address it wrote to, by the route.
        let Ok(p) = path::output(cx.snap, *q.src.ip(), Some(*q.dst.ip())) else {
            c.count_drop(DropReason::OutputNoRoute);
            return Served::Done;
        };
        let Some(mut f) = pool.take() else {
            c.count_drop(DropReason::NoFreeFrame);
            return Served::Done;
        };
        f.set_len(cx.umem.room(f.addr()));
        // SAFETY: a free frame of this worker's pool, from its UMEM, and
        // not the frame `data` may lie in.
        let out = unsafe { cx.umem.bytes_mut(&mut f) };
        let mtu = cx.shared.effective_mtu(&p, *q.src.ip(), pmtudisc) as usize;
        let room = out.len().min(14 + mtu).saturating_sub(PAYLOAD_AT);
        let h = self.handler(serving);
        let Some(n) = self.list[h]
            .1
            .datagram(&q, &mut out[PAYLOAD_AT..PAYLOAD_AT + room])
        else {
            row.declined.add(1);
            pool.put(f);
            return Served::Done;
        };
        row.replies.add(1);
        let port = &cx.snap.ports[p.port];
        let why = if n > room {
            Some(DropReason::TooBig)
        } else if !port.up {
            Some(DropReason::PortDown)
        } else {
            None
        };
        if let Some(r) = why {
            c.count_drop(r);
            pool.put(f);
            return Served::Done;
        }
        // The kernel learnt the sender from its ARP request a moment ago,
        // but the mirror may not have it yet: a sender on the ingress link
        // is answered at the MAC it sent from, as the echo responder does.
        let on_link = p.next == *q.src.ip() && p.port == ingress;
        let Some(mac) = cx
            .snap
            .neigh
            .resolve(p.ifindex, p.next)
            .or(on_link.then_some(sender))
        else {
            c.count_drop(DropReason::NeighbourMissing);
            pool.put(f);
            return Served::Unresolved {
                ifindex: p.ifindex,
                next: p.next,
            };
        };
        *ident = ident.wrapping_add(1);
        let repr = ipv4::Repr {
            src: *q.dst.ip(),
            dst: *q.src.ip(),
            protocol: ipv4::protocol::UDP,
            ttl: ttl.unwrap_or(cx.snap.sysctl.ip_default_ttl),
            tos,
            ident: *ident,
            // The reply fits the path MTU: DF unless IP_PMTUDISC_DONT.
            dont_frag: pmtudisc != PmtuDisc::Dont,
            payload_len: udp::HEADER_LEN + n,
        };
        let datagram = output::headers(out, (mac.0, port.mac.0), &repr);
        output::udp_header(datagram, (*q.dst.ip(), q.dst.port()), q.src);
        f.set_len(PAYLOAD_AT + n);
        Served::Reply {
            frame: f,
            port: p.port,
        }
    }
}

/// Where a reply's payload starts in its frame: after the Ethernet, IPv4
/// (no options) and UDP headers.
const PAYLOAD_AT: usize = 14 + ipv4::MIN_HEADER_LEN + udp::HEADER_LEN;

/// The serving socket a unicast UDP datagram goes to, if any.
fn serving_socket<'a>(cx: &Ctx<'a>, data: &[u8]) -> Option<(&'a SockCore, &'a Arc<Serving>)> {
    let pkt = Packet::new_unchecked(data.get(14..)?);
    if pkt.protocol() != ipv4::protocol::UDP {
        return None;
    }
    let (src, dst) = (pkt.src(), pkt.dst());
    // Broadcast and multicast datagrams go to the socket's queue.
    if dst.is_multicast() || cx.snap.is_broadcast(dst) {
        return None;
    }
    let ports = data.get(14 + pkt.header_len()..14 + pkt.header_len() + 4)?;
    let sport = u16::from_be_bytes([ports[0], ports[1]]);
    let dport = u16::from_be_bytes([ports[2], ports[3]]);
    let s = cx.demux.lookup(dst, dport, src, sport)?;
    Some((s, s.serving.get()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_settings_pack_and_unpack() {
        for (ttl, tos, m) in [
            (None, 0, PmtuDisc::Want),
            (Some(1), 0xb8, PmtuDisc::Dont),
            (Some(255), 0xff, PmtuDisc::Probe),
            (Some(64), 3, PmtuDisc::Do),
        ] {
            assert_eq!(unpack_output(pack_output(ttl, tos, m)), (ttl, tos, m));
        }
    }
}
