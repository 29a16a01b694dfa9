//! The forwarding decision, made in place on the frames' buffers.
//!
//! Two paths give the same result. [`forward_batch`] is the vector path a
//! worker runs on each received batch: it validates the batch, looks it
//! up in the FIB in stages with prefetches, takes each frame's adjacency,
//! checks TTL and MTU and rewrites the frame (TTL − 1 with the RFC 1624
//! checksum update, the adjacency's ready Ethernet header). Whatever is
//! not plain forwarding — options, TTL ≤ 1, too big, unresolved next hops,
//! local or broadcast destinations, anything malformed — it leaves
//! untouched and marks [`Step::Slow`], for [`forward`]: the per-frame path,
//! which decides every case and says why ([`Verdict`]).
//!
//! Both are pure: bytes and a [`Snapshot`] in, a decision out. Workers call
//! them on frames in UMEM; tests and benchmarks on plain buffers. The
//! checks of [`forward`] follow the order of Linux's receive and forward
//! paths (`ip_rcv_core()`, `ip_route_input_slow()`, `ip_forward()`), so
//! that a packet with several faults is counted under the reason Linux
//! gives it.

pub mod fragment;
pub mod icmp;
pub mod reject;

use crate::fib::{Leaf, Probe, Root, RouteKind};
use crate::iface::{Port, RpFilter};
use crate::neigh::{AdjState, Adjacency};
use crate::snapshot::{OwnAddrs, Snapshot};
use crate::stats::DropReason;
use crate::wire::ethernet::{self, ethertype};
use crate::wire::icmp::RouterError;
use crate::wire::ipopt;
use crate::wire::ipv4::{self, Packet};
use crate::wire::MacAddr;
use std::net::Ipv4Addr;

pub use icmp::Origin;

/// What to do with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Transmit the first `len` bytes of the rewritten frame on `port`.
    Transmit {
        /// Egress port number.
        port: usize,
        /// Frame length to transmit (Ethernet padding trimmed).
        len: usize,
    },
    /// The rewritten frame is larger than the egress MTU and may be
    /// fragmented: transmit it as fragments of at most `mtu` bytes.
    Fragment {
        /// Egress port number.
        port: usize,
        /// The egress MTU.
        mtu: usize,
    },
    /// Drop it, counting `reason`, and answer the sender with `error`. The
    /// frame is as received (options already updated, as Linux quotes it).
    Icmp {
        /// The error to send.
        error: RouterError,
        /// Which rate limits it passes.
        origin: Origin,
        /// Why the packet is dropped.
        reason: DropReason,
        /// Its options as compiled, echoed in the error.
        options: Option<ipopt::Options>,
    },
    /// Drop it (`neighbour_missing`): the next hop `next` on interface
    /// `ifindex` has no usable MAC; the kernel should be asked to resolve it.
    Unresolved {
        /// Interface of the next hop.
        ifindex: u32,
        /// The next hop.
        next: Ipv4Addr,
    },
    /// To a local address of the namespace (steered because an engine
    /// socket or the echo responder claims it): deliver it locally.
    Local,
    /// Drop it, counting `DropReason`.
    Drop(DropReason),
}

/// Source addresses Linux refuses on input (`martian_source`). Since the
/// unicast extensions (5.x) 0.0.0.0/8 is a valid source but for 0.0.0.0.
#[inline]
fn martian_source(a: Ipv4Addr) -> bool {
    a.is_unspecified() || a.octets()[0] == 127 || a.is_multicast() || a.is_broadcast()
}

/// Destinations that are never forwarded (`martian_destination`, and the
/// broadcast and multicast the XDP program leaves to the kernel). As for
/// sources, 0.0.0.0/8 is unicast but for 0.0.0.0.
#[inline]
fn martian_destination(a: Ipv4Addr) -> bool {
    a.is_unspecified() || a.octets()[0] == 127 || a.is_multicast() || a.is_broadcast()
}

/// The ECMP flow hash of a packet under `fib_multipath_hash_policy`: 0
/// hashes the addresses; 1 (and above) adds protocol and ports, but for
/// fragments, which carry no ports after the first. (Linux's jhash and
/// its secret seed are not reproduced: the same flows stay together, but
/// may take another next hop than through the kernel.)
#[inline]
fn flow_hash<T: AsRef<[u8]>>(pkt: &Packet<T>, policy: u8) -> u32 {
    let mut x = (u32::from(pkt.src()) as u64) << 32 | u32::from(pkt.dst()) as u64;
    let proto = pkt.protocol();
    if policy >= 1
        && !pkt.is_fragment()
        && matches!(proto, ipv4::protocol::TCP | ipv4::protocol::UDP)
    {
        if let Some(p) = pkt.payload().get(..4) {
            let ports = u32::from_be_bytes([p[0], p[1], p[2], p[3]]) as u64;
            x ^= (ports | (proto as u64) << 32).wrapping_mul(0xff51_afd7_ed55_8ccd);
        }
    }
    x = (x ^ (x >> 33)).wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    (x ^ (x >> 33)) as u32
}

/// The path of adjacency `adj` a packet takes: itself, or for ECMP the one
/// its flow hash picks.
#[inline]
fn path<'a, T: AsRef<[u8]>>(
    snap: &'a Snapshot,
    adj: &'a Adjacency,
    pkt: &Packet<T>,
) -> &'a Adjacency {
    if adj.state == AdjState::Multipath {
        snap.adj
            .path(adj, flow_hash(pkt, snap.sysctl.fib_multipath_hash_policy))
    } else {
        adj
    }
}

/// Decides what happens to one frame received on port `ingress` and, when
/// it is to be forwarded, rewrites it in place. `timestamp` is the value
/// for IP timestamp options (milliseconds since midnight UTC,
/// [`ipopt::timestamp_now`]).
///
/// ```
/// use xdpip::forward::{forward, Verdict};
/// use xdpip::fib::{Fib, NextHop, Route, RouteKind};
/// use xdpip::neigh::{nud, Neighbour, NeighTable};
/// use xdpip::snapshot::{Port, Snapshot};
/// use xdpip::stats::DropReason;
/// use xdpip::wire::{ipv4, MacAddr};
/// use std::net::Ipv4Addr;
/// use std::sync::Arc;
///
/// let mut snap = Snapshot::default();
/// for (i, name) in ["eth0", "eth1"].iter().enumerate() {
///     snap.ports.push(Port {
///         name: name.to_string(), ifindex: 10 + i as u32, mac: MacAddr([2, 0, 0, 0, 0, i as u8]),
///         ..Port::default()
///     });
/// }
/// let mut fib = Fib::builder();
/// fib.add(Route {
///     prefix: Ipv4Addr::new(10, 2, 0, 0), len: 24, kind: RouteKind::Unicast, metric: 0,
///     nexthops: vec![NextHop { gateway: None, ifindex: 11, weight: 1 }].into(),
/// }).unwrap();
/// snap.fib = Arc::new(fib.build());
/// let sink_mac = MacAddr([2, 0, 0, 0, 9, 9]);
/// let mut neigh = NeighTable::default();
/// neigh.insert(11, Ipv4Addr::new(10, 2, 0, 2), Neighbour { mac: sink_mac, state: nud::REACHABLE });
/// let snap = Snapshot::new(snap.fib, Arc::new(neigh), snap.ports, snap.sysctl);
///
/// // A frame to eth0's MAC carrying a 28-byte UDP datagram, TTL 64.
/// let mut frame = vec![0u8; 14 + 28];
/// frame[..6].copy_from_slice(&snap.ports[0].mac.0);
/// frame[12..14].copy_from_slice(&[0x08, 0x00]);
/// let repr = ipv4::Repr {
///     src: Ipv4Addr::new(10, 1, 0, 1), dst: Ipv4Addr::new(10, 2, 0, 2),
///     protocol: 17, ttl: 64, payload_len: 8, ..ipv4::Repr::default()
/// };
/// repr.emit(&mut ipv4::Packet::new_unchecked(&mut frame[14..]));
///
/// assert_eq!(forward(&mut frame, 0, &snap, 0), Verdict::Transmit { port: 1, len: 42 });
/// assert_eq!(frame[..6], sink_mac.0);
/// let ip = ipv4::Packet::new_checked(&frame[14..]).unwrap();
/// assert_eq!(ip.ttl(), 63);
/// assert!(ip.verify_checksum());
///
/// frame[..6].copy_from_slice(&snap.ports[0].mac.0);
/// frame[14 + 10] ^= 0xff; // corrupt the checksum
/// assert_eq!(forward(&mut frame, 0, &snap, 0), Verdict::Drop(DropReason::BadChecksum));
/// ```
#[inline]
pub fn forward(frame: &mut [u8], ingress: usize, snap: &Snapshot, timestamp: u32) -> Verdict {
    match forward_inner(frame, ingress, snap, timestamp) {
        Ok(v) => v,
        Err(reason) => Verdict::Drop(reason),
    }
}

fn icmp(
    error: RouterError,
    origin: Origin,
    reason: DropReason,
    options: Option<ipopt::Options>,
) -> Result<Verdict, DropReason> {
    Ok(Verdict::Icmp {
        error,
        origin,
        reason,
        options,
    })
}

#[inline(always)]
fn forward_inner(
    frame: &mut [u8],
    ingress: usize,
    snap: &Snapshot,
    timestamp: u32,
) -> Result<Verdict, DropReason> {
    if frame.len() < ethernet::HEADER_LEN
        || u16::from_be_bytes([frame[12], frame[13]]) != ethertype::IPV4
    {
        return Err(DropReason::NotIpv4);
    }
    let in_port = snap.ports.get(ingress).ok_or(DropReason::NotForHost)?;
    // Only frames to this port's MAC are routed (PACKET_HOST); broadcast
    // frames may still be for a local broadcast address.
    let to_us = frame[0..6] == in_port.mac.0;
    // Broadcast and multicast MACs set the group bit.
    if !to_us && frame[0] & 1 == 0 {
        return Err(DropReason::NotForHost);
    }
    let (eth, ip) = frame.split_at_mut(ethernet::HEADER_LEN);
    let pkt = Packet::new_unchecked(&mut *ip);
    pkt.check_header()?;
    if !pkt.verify_checksum() {
        return Err(DropReason::BadChecksum);
    }
    pkt.check_len()?;
    let (src, dst) = (pkt.src(), pkt.dst());
    if martian_source(src) {
        return Err(DropReason::MartianSource);
    }
    // fib_validate_source(): a packet from one of this host's own
    // addresses arriving on an interface is a martian (accept_local=0).
    if !in_port.accept_local && snap.is_own(src) {
        return Err(DropReason::MartianSource);
    }
    // rp_filter applies to every received packet, local, multicast or
    // forwarded (ip_route_input_slow() and ip_mc_validate_source()).
    reverse_path(snap, src, in_port)?;
    // The XDP program steers only groups engine sockets joined: multicast
    // is never forwarded here, only delivered.
    if dst.is_multicast() {
        return Ok(Verdict::Local);
    }
    if martian_destination(dst) {
        return Err(DropReason::MartianDestination);
    }
    let leaf = snap.fib.leaf(dst);
    if matches!(leaf.kind(), Some(RouteKind::Local | RouteKind::Broadcast)) {
        return Ok(Verdict::Local);
    }
    if !to_us {
        return Err(DropReason::NotForHost);
    }

    let hlen = pkt.header_len();
    let mut pkt = pkt;
    let mut opts = None;
    if hlen > ipv4::MIN_HEADER_LEN {
        // Options are compiled after the route lookup and before its
        // result is acted on, as in ip_rcv_finish().
        let spec_dst = in_port.select_addr(src).unwrap_or(Ipv4Addr::UNSPECIFIED);
        let header = &mut pkt_bytes(&mut pkt)[..hlen];
        match ipopt::compile(header, spec_dst, timestamp, |a| snap.is_local(a)) {
            Ok(o) => {
                if o.srr.is_some() {
                    return Err(if in_port.accept_source_route {
                        DropReason::SourceRouteUnsupported
                    } else {
                        DropReason::SourceRoute
                    });
                }
                opts = Some(o);
            }
            Err(e) => {
                return icmp(
                    RouterError::ParameterProblem { pointer: e.pointer },
                    Origin::Other,
                    DropReason::BadOptions,
                    Some(e.options),
                )
            }
        }
    }
    if !in_port.forwarding {
        // ip_error() without forwarding: counted, never answered.
        return Err(match leaf.kind() {
            None => DropReason::NoRoute,
            Some(_) => DropReason::ForwardingDisabled,
        });
    }

    match leaf.kind() {
        Some(RouteKind::Unicast) => {}
        None => {
            return icmp(
                RouterError::NetUnreachable,
                Origin::RouteError,
                DropReason::NoRoute,
                opts,
            )
        }
        Some(RouteKind::Unreachable) => {
            return icmp(
                RouterError::HostUnreachable,
                Origin::RouteError,
                DropReason::RouteUnreachable,
                opts,
            )
        }
        Some(RouteKind::Prohibit) => {
            return icmp(
                RouterError::AdminProhibited,
                Origin::RouteError,
                DropReason::RouteProhibit,
                opts,
            )
        }
        Some(RouteKind::Blackhole) => return Err(DropReason::RouteBlackhole),
        // Handled above.
        Some(RouteKind::Local | RouteKind::Broadcast) => return Ok(Verdict::Local),
    }
    let adj = path(snap, snap.adj.of_set(leaf.set_unchecked()), &pkt);
    match adj.state {
        AdjState::ForeignEgress | AdjState::Multipath => return Err(DropReason::ForeignEgress),
        AdjState::PortDown => return Err(DropReason::PortDown),
        AdjState::Ready | AdjState::Glean | AdjState::Unresolved => {}
    }
    let port_no = adj.port as usize;

    if pkt.ttl() <= 1 {
        return icmp(
            RouterError::TimeExceeded,
            Origin::Other,
            DropReason::TtlExceeded,
            opts,
        );
    }
    let total = pkt.total_len() as usize;
    let mtu = adj.mtu as usize;
    if total > mtu && pkt.dont_frag() {
        return icmp(
            RouterError::FragNeeded {
                mtu: mtu.min(u16::MAX as usize) as u16,
            },
            Origin::Other,
            DropReason::TooBig,
            opts,
        );
    }
    let next = if adj.state == AdjState::Glean {
        dst
    } else {
        adj.next
    };
    let mac = match adj.state {
        AdjState::Ready => [
            adj.rewrite[0],
            adj.rewrite[1],
            adj.rewrite[2],
            adj.rewrite[3],
            adj.rewrite[4],
            adj.rewrite[5],
        ],
        _ => match snap.neigh.resolve(adj.ifindex, next) {
            Some(m) if adj.state == AdjState::Glean => m.0,
            _ => {
                return Ok(Verdict::Unresolved {
                    ifindex: adj.ifindex,
                    next,
                })
            }
        },
    };

    pkt.decrement_ttl();
    if let Some(o) = opts {
        let egress_src = snap.ports[port_no]
            .select_addr(next)
            .unwrap_or(Ipv4Addr::UNSPECIFIED);
        ipopt::forward(&mut pkt_bytes(&mut pkt)[..hlen], &o, egress_src);
        pkt.fill_checksum();
    }
    eth[0..6].copy_from_slice(&mac);
    eth[6..12].copy_from_slice(&adj.rewrite[6..12]);
    // A local stack's partial UDP/TCP checksum is finished before the
    // packet leaves, as its device would have (issue 15).
    if in_port.partial_csum && crate::wire::l4csum::complete(&mut pkt_bytes(&mut pkt)[..total]) {
        crate::stats::tally(crate::stats::Checksum::PartialCompleted);
    }
    if total > mtu {
        return Ok(Verdict::Fragment { port: port_no, mtu });
    }
    Ok(Verdict::Transmit {
        port: port_no,
        len: ethernet::HEADER_LEN + total,
    })
}

/// What the vector path did with one frame of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Rewritten for transmission: send the first `len` bytes on `port`.
    Tx {
        /// Egress port number.
        port: u8,
        /// Frame length (Ethernet padding trimmed).
        len: u16,
    },
    /// Left untouched: [`forward`] decides (a rare case or a fault).
    Slow,
    /// Refused by the packet filter ([`Judge`]), which knows at which hook
    /// and why. Refused at prerouting, the frame is as received; at forward
    /// or postrouting, it is rewritten (TTL − 1), as those hooks see it.
    Refused,
}

/// The packet filter's say on the packets the vector path forwards: the
/// worker's view of the host's ruleset ([`crate::filter`]), asked for each
/// frame of stage 3 when a hook on its way has rules, with the fields read
/// where the frame holds them. `()` is no filter.
pub trait Judge {
    /// True when prerouting, forward or postrouting has rules to ask.
    fn active(&self) -> bool;
    /// Judges frame `lane` (at `frame`, as received on port `iif`, its TTL
    /// above 1) at prerouting, then, as it leaves on port `oif` with its
    /// TTL decremented, at forward and postrouting.
    fn pass(&mut self, frame: &[u8], lane: u16, iif: usize, oif: u8) -> Passage;
}

/// What the filter's hooks make of a forwarded frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Passage {
    /// Every hook let it through.
    Through,
    /// Refused at prerouting: the packet as it was received.
    RefusedAsReceived,
    /// Refused at forward or postrouting: the packet as it was to leave,
    /// its TTL decremented.
    RefusedAsForwarded,
}

impl Judge for () {
    #[inline(always)]
    fn active(&self) -> bool {
        false
    }
    #[inline(always)]
    fn pass(&mut self, _: &[u8], _: u16, _: usize, _: u8) -> Passage {
        Passage::Through
    }
}

/// Frames the vector path takes through each stage at once.
const VECTOR: usize = 64;

/// A batch of frames as the vector path reads and rewrites them: plain
/// buffers, or frames in a worker's UMEM.
pub trait Frames {
    /// Number of frames.
    fn count(&self) -> usize;
    /// The bytes of frame `i` (below [`Frames::count`]).
    fn frame(&mut self, i: usize) -> &mut [u8];
}

impl Frames for [&mut [u8]] {
    #[inline(always)]
    fn count(&self) -> usize {
        self.len()
    }
    #[inline(always)]
    fn frame(&mut self, i: usize) -> &mut [u8] {
        self[i]
    }
}

/// The vector path over a batch of frames received on port `ingress`:
/// `out[i]` says what became of `frames[i]` ([`Step`]). Frames marked
/// [`Step::Tx`] are rewritten and counted in the return value, the number
/// forwarded; the others are as received. Per frame it costs a header
/// check, its share of a staged FIB lookup, an adjacency read and the
/// rewrite: no allocation, no lock, no division.
///
/// ```
/// use xdpip::forward::{forward_batch, Step};
/// use xdpip::fib::{Fib, NextHop, Route, RouteKind};
/// use xdpip::neigh::{nud, Neighbour, NeighTable};
/// use xdpip::snapshot::{Port, Snapshot, Sysctl};
/// use xdpip::wire::{ipv4, MacAddr};
/// use std::net::Ipv4Addr;
/// use std::sync::Arc;
///
/// let ports: Vec<Port> = ["eth0", "eth1"].iter().enumerate().map(|(i, name)| Port {
///     name: name.to_string(), ifindex: 10 + i as u32, mac: MacAddr([2, 0, 0, 0, 0, i as u8]),
///     ..Port::default()
/// }).collect();
/// let gw = Ipv4Addr::new(10, 2, 0, 1);
/// let mut fib = Fib::builder();
/// fib.add(Route {
///     prefix: Ipv4Addr::UNSPECIFIED, len: 0, kind: RouteKind::Unicast, metric: 0,
///     nexthops: vec![NextHop { gateway: Some(gw), ifindex: 11, weight: 1 }].into(),
/// }).unwrap();
/// let mut neigh = NeighTable::default();
/// neigh.insert(11, gw, Neighbour { mac: MacAddr([2, 0, 0, 0, 9, 1]), state: nud::REACHABLE });
/// let snap = Snapshot::new(Arc::new(fib.build()), Arc::new(neigh), ports, Sysctl::default());
///
/// let mut frame = vec![0u8; 14 + 28];
/// frame[..6].copy_from_slice(&snap.ports[0].mac.0);
/// frame[12..14].copy_from_slice(&[0x08, 0x00]);
/// ipv4::Repr {
///     src: Ipv4Addr::new(10, 1, 0, 1), dst: Ipv4Addr::new(192, 0, 2, 9),
///     protocol: 17, ttl: 64, payload_len: 8, ..ipv4::Repr::default()
/// }.emit(&mut ipv4::Packet::new_unchecked(&mut frame[14..]));
/// let mut expired = frame.clone();
/// expired[14 + 8] = 1; // TTL 1: the slow path answers it
///
/// let mut out = [Step::Slow; 2];
/// let n = forward_batch(&mut [&mut frame[..], &mut expired[..]][..], 0, &snap, &mut (), &mut out);
/// assert_eq!((n, out), (1, [Step::Tx { port: 1, len: 42 }, Step::Slow]));
/// assert_eq!(frame[..6], [2, 0, 0, 0, 9, 1]);
/// assert_eq!(frame[14 + 8], 63);
/// assert!(ipv4::Packet::new_checked(&frame[14..]).unwrap().verify_checksum());
/// ```
// Never inlined: a function of its own per judge, whose registers the
// caller's code does not share (inlined into `Hooks::forward`, the
// filter's path took nine instructions more a packet, spills and
// reloads).
#[inline(never)]
pub fn forward_batch<F: Frames + ?Sized, J: Judge>(
    frames: &mut F,
    ingress: usize,
    snap: &Snapshot,
    judge: &mut J,
    out: &mut [Step],
) -> usize {
    let n = frames.count().min(out.len());
    out[..n].fill(Step::Slow);
    let Some(port) = snap.ports.get(ingress) else {
        return 0;
    };
    if !port.forwarding {
        return 0;
    }
    // With rp_filter on, the route back to each source is looked up in
    // the same stages as the destination's: a copy of the stages for it.
    if port.rp_filter == RpFilter::Off {
        vectors::<F, J, false>(frames, n, ingress, port, snap, judge, out)
    } else {
        vectors::<F, J, true>(frames, n, ingress, port, snap, judge, out)
    }
}

/// [`forward_batch`] on the first `n` frames, received on `port` (number
/// `ingress`), in vectors; `RP` when the port checks sources by reverse
/// path.
#[inline(always)]
fn vectors<F: Frames + ?Sized, J: Judge, const RP: bool>(
    frames: &mut F,
    n: usize,
    ingress: usize,
    port: &Port,
    snap: &Snapshot,
    judge: &mut J,
    out: &mut [Step],
) -> usize {
    let mac = port.mac.0;
    let own = snap.own.bits_if(!port.accept_local);
    let partial = port.partial_csum;
    let filtering = judge.active();
    let mut completed = 0;
    let mut forwarded = 0;
    let mut base = 0;
    while base < n {
        let end = n.min(base + VECTOR);
        // Stage 1: the frames that may be plain forwarding, and their
        // destinations.
        let mut lanes = [0u16; VECTOR];
        let mut dsts = [Ipv4Addr::UNSPECIFIED; VECTOR];
        let mut roots = [Root::NONE; VECTOR];
        // With RP, the same for the sources (the compiler drops them
        // without).
        let mut srcs = [Ipv4Addr::UNSPECIFIED; VECTOR];
        let mut src_roots = [Root::NONE; VECTOR];
        let mut m = 0;
        for i in base..end {
            if let Some((src, dst)) = candidate(frames.frame(i), &mac, own) {
                // m < VECTOR here (one lane per frame of the vector): the
                // mask is what tells the compiler, without a branch.
                let k = m % VECTOR;
                roots[k] = snap.fib.prefetch_root(dst);
                lanes[k] = i as u16;
                dsts[k] = dst;
                if RP {
                    src_roots[k] = snap.fib.prefetch_root(src);
                    srcs[k] = src;
                }
                m += 1;
            }
        }
        // Stage 2: their root entries, prefetched in stage 1; the entries
        // of their blocks prefetched for stage 3.
        let probes: [Probe; VECTOR] = std::array::from_fn(|j| match roots[..m].get(j) {
            Some(r) => r.probe(dsts[j]),
            None => Probe::NONE,
        });
        let src_probes: [Probe; VECTOR] = std::array::from_fn(|j| match src_roots[..m].get(j) {
            Some(r) if RP => r.probe(srcs[j]),
            _ => Probe::NONE,
        });
        // Stage 3: leaf, adjacency, TTL, MTU; rewrite.
        for (j, ((&lane, p), &dst)) in lanes[..m]
            .iter()
            .zip(&probes[..m])
            .zip(&dsts[..m])
            .enumerate()
        {
            let i = lane as usize;
            // A source that fails the reverse path check is for the slow
            // path, which drops and counts it.
            if RP && reverse_path_of(snap, src_probes[j].leaf(srcs[j]), port).is_err() {
                continue;
            }
            let leaf = p.leaf(dst);
            let frame = frames.frame(i);
            // Stage 1 checked that the frame holds the header.
            let Some(h) = frame.first_chunk::<34>() else {
                continue;
            };
            let next = match plan(h, leaf, snap) {
                Plan::Ready(next) => next,
                Plan::Other(adj) => {
                    let to = (ingress, i as u16, &mut out[i]);
                    forwarded += other(frame, adj, dst, snap, judge, to) as usize;
                    continue;
                }
                Plan::Slow => continue,
            };
            let to = (ingress, i as u16, &mut out[i]);
            forwarded += send(frame, next, filtering, judge, to) as usize;
        }
        // A local stack's partial UDP/TCP checksum is finished before the
        // packet leaves, as its device would have: a pass of its own, on
        // the ports that take such packets only.
        if partial {
            for &lane in &lanes[..m] {
                let i = lane as usize;
                if let Step::Tx { len, .. } = out[i] {
                    let ip = &mut frames.frame(i)[ethernet::HEADER_LEN..len as usize];
                    completed += crate::wire::l4csum::complete(ip) as u64;
                }
            }
        }
        base = end;
    }
    if completed > 0 {
        crate::stats::tally_n(crate::stats::Checksum::PartialCompleted, completed);
    }
    forwarded
}

/// `fib_validate_source()` with `rp_filter` on: the route back to `src`
/// must be unicast (or local with `accept_local`), and with strict
/// filtering leave through `port`. Off, it checks nothing.
#[inline]
fn reverse_path(snap: &Snapshot, src: Ipv4Addr, port: &Port) -> Result<(), DropReason> {
    if port.rp_filter == RpFilter::Off {
        return Ok(());
    }
    reverse_path_of(snap, snap.fib.leaf(src), port)
}

/// [`reverse_path`] with the leaf of the route back to the source looked
/// up, for a port with `rp_filter` on.
#[inline(always)]
fn reverse_path_of(snap: &Snapshot, leaf: Leaf, port: &Port) -> Result<(), DropReason> {
    match leaf.kind() {
        Some(RouteKind::Unicast) => {
            let adj = snap.adj.of_set(leaf.set_unchecked());
            if port.rp_filter == RpFilter::Loose || snap.adj.uses_ifindex(adj, port.ifindex) {
                Ok(())
            } else {
                Err(DropReason::RpFilter)
            }
        }
        // Own addresses as sources got this far only with accept_local.
        Some(RouteKind::Local) if port.accept_local => Ok(()),
        // No route back at all (last_resort with rp_filter on).
        None => Err(DropReason::RpFilter),
        // A route back of another type: -EINVAL, a martian source.
        Some(_) => Err(DropReason::MartianSource),
    }
}

/// First bytes of the addresses the vector path leaves to the slow path:
/// 0/8, 127/8 and 224/3.
const ODD_FIRST_BYTE: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = b == 0 || b == 127 || b >= 224;
        b += 1;
    }
    t
};

/// The source and destination of a frame the vector path may forward: an
/// IPv4 packet without options to this port's MAC, whole, with a good
/// header checksum, from a source that is not a martian (nor possibly one
/// of this host's addresses), to a unicast destination. Anything else is
/// for [`forward`]. The reverse path check comes in stage 3.
#[inline(always)]
fn candidate(frame: &[u8], mac: &[u8; 6], own: &[u64; 1024]) -> Option<(Ipv4Addr, Ipv4Addr)> {
    let h: &[u8; 34] = frame.get(..34)?.try_into().ok()?;
    let u32_at = |i: usize| u32::from_ne_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
    let u16_at = |i: usize| u16::from_ne_bytes([h[i], h[i + 1]]);
    // Destination MAC, EtherType IPv4 and version 4 without options, as
    // three loads and compares.
    let ours = u32_at(0) == u32::from_ne_bytes([mac[0], mac[1], mac[2], mac[3]])
        && u16_at(4) == u16::from_ne_bytes([mac[4], mac[5]]);
    if !ours || u32_at(12) & 0x00ff_ffff != u32::from_ne_bytes([0x08, 0x00, 0x45, 0]) {
        return None;
    }
    let total = u16::from_be_bytes([h[16], h[17]]) as usize;
    if total < ipv4::MIN_HEADER_LEN || ethernet::HEADER_LEN + total > frame.len() {
        return None;
    }
    // The header's one's complement sum is 0xffff exactly when its
    // checksum is right, that is when the plain sum of its words is a
    // multiple of 0xffff (2^16 ≡ 1): one multiply instead of the folds.
    // In native-endian 32-bit words (RFC 1071 2.B); never 0, as the
    // version is not.
    let w = |i: usize| u32_at(i) as u64;
    if (w(14) + w(18) + w(22) + w(26) + w(30)) % 0xffff != 0 {
        return None;
    }
    let src = Ipv4Addr::new(h[26], h[27], h[28], h[29]);
    let dst = Ipv4Addr::new(h[30], h[31], h[32], h[33]);
    // This network (0/8), loopback, multicast, class E and the limited
    // broadcast, at either end, by their first byte: all for the slow
    // path, which tells martians from what it forwards.
    if ODD_FIRST_BYTE[h[26] as usize] | ODD_FIRST_BYTE[h[30] as usize] {
        return None;
    }
    if OwnAddrs::may_hold(own, src) {
        return None;
    }
    Some((src, dst))
}

/// Where a frame the vector path forwards goes, and its new Ethernet
/// addresses: the adjacency's, with the neighbour's MAC for a connected
/// route.
#[derive(Clone, Copy)]
struct Next<'a> {
    /// Frame length to transmit (Ethernet padding trimmed).
    len: u16,
    adj: &'a Adjacency,
    /// The destination's MAC, for a connected route ([`AdjState::Glean`]).
    neighbour: Option<MacAddr>,
}

impl Next<'_> {
    /// Rewrites the frame for transmission: MACs, TTL − 1 and the checksum
    /// as `ip_decrease_ttl()` updates it. Returns the frame's length.
    #[inline(always)]
    fn rewrite(&self, frame: &mut [u8]) -> usize {
        let Some(h) = frame.first_chunk_mut::<26>() else {
            return 0; // never: plan() read this header
        };
        // Straight from the adjacency: no copy of the header on the way.
        h[..12].copy_from_slice(&self.adj.rewrite[..12]);
        if let Some(mac) = self.neighbour {
            h[..6].copy_from_slice(&mac.0);
        }
        // TTL − 1, and the checksum as ip_decrease_ttl() updates it.
        h[22] -= 1;
        let check = ipv4::ttl_decremented_checksum_bytes([h[24], h[25]]);
        h[24..26].copy_from_slice(&check);
        self.len as usize
    }
}

/// What stage 3 makes of a frame, before touching it.
enum Plan<'a> {
    /// Plain forwarding to a ready adjacency: the hot path.
    Ready(Next<'a>),
    /// A unicast route whose adjacency or packet needs more: [`other`].
    Other(&'a Adjacency),
    /// Not a unicast route: for the slow path.
    Slow,
}

/// Stage 3 for one frame, without touching it: its adjacency, TTL and
/// MTU; where it goes when it is plain forwarding to a ready adjacency.
#[inline(always)]
fn plan<'a>(h: &[u8; 34], leaf: Leaf, snap: &'a Snapshot) -> Plan<'a> {
    if !leaf.is_unicast() {
        return Plan::Slow;
    }
    let adj = snap.adj.of_set(leaf.set_unchecked());
    let ttl = h[22];
    let total = u16::from_be_bytes([h[16], h[17]]);
    // The common case first, in three tests: a complete header to send.
    if adj.state == AdjState::Ready && ttl > 1 && total <= adj.mtu {
        return Plan::Ready(Next {
            len: ethernet::HEADER_LEN as u16 + total,
            adj,
            neighbour: None,
        });
    }
    Plan::Other(adj)
}

/// The filter's hooks on a frame to send as `next`, then its rewrite;
/// `to` holds the port the frame came in on, its number in the batch and
/// its step. True when it is sent.
#[inline(always)]
fn send<J: Judge>(
    frame: &mut [u8],
    next: Next,
    filtering: bool,
    judge: &mut J,
    (ingress, lane, out): (usize, u16, &mut Step),
) -> bool {
    // Before the rewrite: prerouting sees the packet as received, forward
    // and postrouting as it will leave.
    if filtering {
        match judge.pass(frame, lane, ingress, next.adj.port) {
            Passage::Through => {}
            Passage::RefusedAsReceived => {
                *out = Step::Refused;
                return false;
            }
            Passage::RefusedAsForwarded => {
                next.rewrite(frame);
                *out = Step::Refused;
                return false;
            }
        }
    }
    let len = next.rewrite(frame);
    *out = Step::Tx {
        port: next.adj.port,
        len: len as u16,
    };
    true
}

/// Stage 3 and [`send`] for a frame [`plan`] leaves to a path of a
/// multipath group, a connected route's neighbour, or the checks of TTL
/// and MTU: out of line, so that the hot path's [`Next`] is known to
/// need no neighbour's MAC. Merged into the hot path, that MAC was kept
/// across the filter's judgement: stored, copied and tested, nine
/// instructions a packet.
#[inline(never)]
fn other<J: Judge>(
    frame: &mut [u8],
    adj: &Adjacency,
    dst: Ipv4Addr,
    snap: &Snapshot,
    judge: &mut J,
    to: (usize, u16, &mut Step),
) -> bool {
    let Some(h) = frame.first_chunk::<34>() else {
        return false;
    };
    match plan_other(h, adj, dst, snap) {
        Some(next) => send(frame, next, judge.active(), judge, to),
        None => false,
    }
}

/// [`plan`] for an adjacency that is not [`AdjState::Ready`], or a packet
/// it does not take as it is: a path of a multipath group, a connected
/// route's neighbour.
#[inline(never)]
fn plan_other<'a>(
    h: &[u8; 34],
    adj: &'a Adjacency,
    dst: Ipv4Addr,
    snap: &'a Snapshot,
) -> Option<Next<'a>> {
    let adj = path(
        snap,
        adj,
        &Packet::new_unchecked(&h[ethernet::HEADER_LEN..]),
    );
    let ttl = h[22];
    let total = u16::from_be_bytes([h[16], h[17]]);
    if ttl <= 1 || total > adj.mtu {
        return None;
    }
    let neighbour = match adj.state {
        AdjState::Ready => None,
        AdjState::Glean => Some(snap.neigh.resolve(adj.ifindex, dst)?),
        _ => return None,
    };
    Some(Next {
        len: ethernet::HEADER_LEN as u16 + total,
        adj,
        neighbour,
    })
}

/// The bytes under a packet view (for in-place option processing).
fn pkt_bytes<'a>(p: &'a mut Packet<&mut [u8]>) -> &'a mut [u8] {
    p.as_mut_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fib::{Fib, NextHop, Route};
    use crate::neigh::{nud, Neighbour};
    use crate::snapshot::Port;
    use crate::wire::icmp::RouterError;
    use crate::wire::MacAddr;

    const GW: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 254);

    fn snapshot() -> Snapshot {
        let mut s = Snapshot::default();
        for i in 0..2u8 {
            s.ports.push(Port {
                name: format!("eth{i}"),
                ifindex: 10 + i as u32,
                mac: MacAddr([2, 0, 0, 0, 0, i]),
                addrs: vec![(Ipv4Addr::new(10, 1 + i, 0, 254), 24)],
                ..Port::default()
            });
        }
        let mut b = Fib::builder();
        let add = |b: &mut crate::fib::FibBuilder, p: [u8; 4], len, kind, gw, ifindex| {
            b.add(Route {
                prefix: Ipv4Addr::from(p),
                len,
                kind,
                metric: 0,
                nexthops: vec![NextHop {
                    gateway: gw,
                    ifindex,
                    weight: 1,
                }]
                .into(),
            })
            .unwrap()
        };
        add(&mut b, [10, 2, 0, 0], 24, RouteKind::Unicast, None, 11);
        add(&mut b, [10, 9, 0, 0], 16, RouteKind::Unicast, Some(GW), 11);
        add(&mut b, [10, 7, 0, 0], 16, RouteKind::Unicast, None, 99);
        add(&mut b, [10, 6, 1, 0], 24, RouteKind::Blackhole, None, 11);
        add(&mut b, [10, 6, 2, 0], 24, RouteKind::Unreachable, None, 11);
        add(&mut b, [10, 6, 3, 0], 24, RouteKind::Prohibit, None, 11);
        add(
            &mut b,
            [10, 6, 4, 0],
            24,
            RouteKind::Unicast,
            Some(Ipv4Addr::new(10, 2, 0, 77)),
            11,
        );
        s.fib = std::sync::Arc::new(b.build());
        let n = |m| Neighbour {
            mac: MacAddr([2, 0, 0, 0, 9, m]),
            state: nud::REACHABLE,
        };
        let mut t = crate::neigh::NeighTable::default();
        t.insert(11, Ipv4Addr::new(10, 2, 0, 2), n(2));
        t.insert(11, GW, n(254));
        t.insert(
            11,
            Ipv4Addr::new(10, 2, 0, 77),
            Neighbour {
                mac: MacAddr::default(),
                state: nud::FAILED,
            },
        );
        s.neigh = std::sync::Arc::new(t);
        rebuilt(s)
    }

    /// `s` with `route` added to its FIB, and its adjacencies made again.
    fn with_route(mut s: Snapshot, route: Route) -> Snapshot {
        let mut b = crate::fib::Fib::builder();
        for r in s.fib.routes() {
            b.add(r.clone()).unwrap();
        }
        b.add(route).unwrap();
        s.fib = std::sync::Arc::new(b.build());
        rebuilt(s)
    }

    /// A route of `kind` through interface `ifindex`, without a gateway.
    fn direct(prefix: [u8; 4], len: u8, kind: RouteKind, ifindex: u32) -> Route {
        Route {
            prefix: Ipv4Addr::from(prefix),
            len,
            kind,
            metric: 0,
            nexthops: vec![NextHop {
                gateway: None,
                ifindex,
                weight: 1,
            }]
            .into(),
        }
    }

    /// The snapshot with its adjacencies made from its tables again.
    fn rebuilt(s: Snapshot) -> Snapshot {
        Snapshot::new(s.fib, s.neigh, s.ports, s.sysctl)
    }

    fn frame(src: [u8; 4], dst: [u8; 4], ttl: u8, payload: usize) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + payload];
        f[..6].copy_from_slice(&[2, 0, 0, 0, 0, 0]);
        f[12] = 0x08;
        let repr = ipv4::Repr {
            src: Ipv4Addr::from(src),
            dst: Ipv4Addr::from(dst),
            protocol: 17,
            ttl,
            payload_len: payload,
            ..ipv4::Repr::default()
        };
        repr.emit(&mut Packet::new_unchecked(&mut f[14..]));
        f
    }

    fn verdict(f: &mut [u8]) -> Verdict {
        forward(f, 0, &snapshot(), 0)
    }

    fn icmp_of(v: Verdict) -> (RouterError, DropReason) {
        match v {
            Verdict::Icmp { error, reason, .. } => (error, reason),
            other => panic!("not an ICMP verdict: {other:?}"),
        }
    }

    #[test]
    fn forwards_via_gateway_with_rewritten_macs() {
        let mut f = frame([10, 1, 0, 1], [10, 9, 3, 4], 64, 10);
        let orig = f.clone();
        assert_eq!(
            verdict(&mut f),
            Verdict::Transmit {
                port: 1,
                len: f.len()
            }
        );
        assert_eq!(f[0..6], [2, 0, 0, 0, 9, 254]);
        assert_eq!(f[6..12], [2, 0, 0, 0, 0, 1]);
        assert_eq!(f[14 + 8], 63);
        assert!(Packet::new_checked(&f[14..]).unwrap().verify_checksum());
        // Nothing else changed: TTL and checksum are the only IP bytes touched.
        for i in 14..f.len() {
            if ![14 + 8, 14 + 10, 14 + 11].contains(&i) {
                assert_eq!(f[i], orig[i], "byte {i}");
            }
        }
    }

    #[test]
    fn ethernet_padding_is_trimmed() {
        let mut f = frame([10, 1, 0, 1], [10, 2, 0, 2], 64, 0);
        f.resize(60, 0); // a 34-byte frame padded to the Ethernet minimum
        assert_eq!(verdict(&mut f), Verdict::Transmit { port: 1, len: 34 });
    }

    #[test]
    fn each_fault_has_its_reason() {
        use DropReason::*;
        let answered = [
            (
                frame([10, 1, 0, 1], [11, 0, 0, 1], 64, 0),
                RouterError::NetUnreachable,
                NoRoute,
            ),
            (
                frame([10, 1, 0, 1], [10, 2, 0, 2], 1, 0),
                RouterError::TimeExceeded,
                TtlExceeded,
            ),
            (
                frame([10, 1, 0, 1], [10, 6, 2, 1], 64, 0),
                RouterError::HostUnreachable,
                RouteUnreachable,
            ),
            (
                frame([10, 1, 0, 1], [10, 6, 3, 1], 64, 0),
                RouterError::AdminProhibited,
                RouteProhibit,
            ),
        ];
        for (mut f, e, r) in answered {
            assert_eq!(icmp_of(verdict(&mut f)), (e, r));
        }
        // DF set and too big: fragmentation needed with the MTU.
        let mut f = frame([10, 1, 0, 1], [10, 2, 0, 2], 64, 1481);
        f[14 + 6] = 0x40;
        Packet::new_unchecked(&mut f[14..]).fill_checksum();
        assert_eq!(
            icmp_of(verdict(&mut f)),
            (RouterError::FragNeeded { mtu: 1500 }, TooBig)
        );
        // DF clear and too big: fragments.
        let mut f = frame([10, 1, 0, 1], [10, 2, 0, 2], 64, 1481);
        assert_eq!(verdict(&mut f), Verdict::Fragment { port: 1, mtu: 1500 });
        let mut f = frame([10, 1, 0, 1], [10, 2, 0, 3], 64, 0);
        assert_eq!(
            verdict(&mut f),
            Verdict::Unresolved {
                ifindex: 11,
                next: Ipv4Addr::new(10, 2, 0, 3)
            }
        );
        // A FAILED entry stops traffic to it: the kernel is asked again.
        let mut f = frame([10, 1, 0, 1], [10, 6, 4, 1], 64, 0);
        assert_eq!(
            verdict(&mut f),
            Verdict::Unresolved {
                ifindex: 11,
                next: Ipv4Addr::new(10, 2, 0, 77)
            }
        );
        let cases: Vec<(Vec<u8>, DropReason)> = vec![
            (frame([10, 1, 0, 1], [10, 7, 0, 1], 64, 0), ForeignEgress),
            (frame([10, 1, 0, 1], [10, 6, 1, 1], 64, 0), RouteBlackhole),
            (frame([127, 0, 0, 1], [10, 2, 0, 2], 64, 0), MartianSource),
            (frame([0, 0, 0, 0], [10, 2, 0, 2], 64, 0), MartianSource),
            (frame([224, 0, 0, 1], [10, 2, 0, 2], 64, 0), MartianSource),
            (
                frame([10, 1, 0, 1], [127, 0, 0, 1], 64, 0),
                MartianDestination,
            ),
            (
                frame([10, 1, 0, 1], [255, 255, 255, 255], 64, 0),
                MartianDestination,
            ),
            (frame([10, 1, 0, 1], [0; 4], 64, 0), MartianDestination),
        ];
        for (mut f, want) in cases {
            assert_eq!(verdict(&mut f), Verdict::Drop(want));
        }
        // Exactly the MTU passes.
        let mut f = frame([10, 1, 0, 1], [10, 2, 0, 2], 64, 1480);
        assert!(matches!(verdict(&mut f), Verdict::Transmit { .. }));
    }

    #[test]
    fn malformed_headers() {
        use DropReason::*;
        let good = frame([10, 1, 0, 1], [10, 2, 0, 2], 64, 8);
        let mut f = good.clone();
        f[0] = 0xff;
        assert_eq!(verdict(&mut f), Verdict::Drop(NotForHost));
        let mut f = good.clone();
        f[12] = 0x86;
        f[13] = 0xdd;
        assert_eq!(verdict(&mut f), Verdict::Drop(NotIpv4));
        assert_eq!(
            verdict(&mut good.clone()[..13].to_vec()),
            Verdict::Drop(NotIpv4)
        );
        assert_eq!(
            verdict(&mut good.clone()[..30].to_vec()),
            Verdict::Drop(Truncated)
        );
        let mut f = good.clone();
        f[14] = 0x44;
        assert_eq!(verdict(&mut f), Verdict::Drop(BadHeaderLength));
        let mut f = good.clone();
        f[14] = 0x55;
        assert_eq!(verdict(&mut f), Verdict::Drop(BadVersion));
        let mut f = good.clone();
        f[14 + 10] ^= 1;
        assert_eq!(verdict(&mut f), Verdict::Drop(BadChecksum));
        // Total length beyond the frame: checksum fixed up so only the length is wrong.
        let mut f = good.clone();
        f[14 + 2..14 + 4].copy_from_slice(&200u16.to_be_bytes());
        Packet::new_unchecked(&mut f[14..]).fill_checksum();
        assert_eq!(verdict(&mut f), Verdict::Drop(TotalLengthBeyondFrame));
        let mut f = good.clone();
        f[14 + 2..14 + 4].copy_from_slice(&19u16.to_be_bytes());
        Packet::new_unchecked(&mut f[14..]).fill_checksum();
        assert_eq!(verdict(&mut f), Verdict::Drop(TotalLengthBelowHeader));
        // A bad checksum is found before a bad length, as in ip_rcv_core().
        let mut f = good.clone();
        f[14 + 2..14 + 4].copy_from_slice(&200u16.to_be_bytes());
        assert_eq!(verdict(&mut f), Verdict::Drop(BadChecksum));
    }

    fn with_options(opts: &[u8]) -> Vec<u8> {
        let hlen = 20 + opts.len();
        let mut f = vec![0u8; 14 + hlen];
        f[..6].copy_from_slice(&[2, 0, 0, 0, 0, 0]);
        f[12] = 0x08;
        f[14] = 0x40 | (hlen / 4) as u8;
        f[14 + 2..14 + 4].copy_from_slice(&(hlen as u16).to_be_bytes());
        f[14 + 8] = 64;
        f[14 + 12..14 + 16].copy_from_slice(&[10, 1, 0, 1]);
        f[14 + 16..14 + 20].copy_from_slice(&[10, 2, 0, 2]);
        f[14 + 20..].copy_from_slice(opts);
        Packet::new_unchecked(&mut f[14..]).fill_checksum();
        f
    }

    #[test]
    fn options() {
        use crate::wire::ipopt::{EOL, LSRR, RR};
        // Record route: the egress port's address is recorded.
        let mut f = with_options(&[RR, 7, 4, 0, 0, 0, 0, EOL]);
        assert!(matches!(verdict(&mut f), Verdict::Transmit { port: 1, .. }));
        let p = Packet::new_checked(&f[14..]).unwrap();
        assert!(p.verify_checksum());
        assert_eq!(p.options(), &[RR, 7, 8, 10, 2, 0, 254, EOL]);
        // Malformed: parameter problem pointing at the length byte.
        let mut f = with_options(&[RR, 9, 4, 0]);
        assert_eq!(
            icmp_of(verdict(&mut f)),
            (
                RouterError::ParameterProblem { pointer: 20 },
                DropReason::BadOptions
            )
        );
        // Source routes are dropped while accept_source_route is off.
        let mut f = with_options(&[LSRR, 7, 4, 10, 2, 0, 2, EOL]);
        assert_eq!(verdict(&mut f), Verdict::Drop(DropReason::SourceRoute));
    }

    #[test]
    fn forwarding_disabled_on_the_ingress_port() {
        let mut s = snapshot();
        s.ports[0].forwarding = false;
        let s = rebuilt(s);
        let mut f = frame([10, 1, 0, 1], [10, 2, 0, 2], 64, 0);
        assert_eq!(
            forward(&mut f, 0, &s, 0),
            Verdict::Drop(DropReason::ForwardingDisabled)
        );
        let mut f = frame([10, 1, 0, 1], [11, 0, 0, 1], 64, 0);
        assert_eq!(
            forward(&mut f, 0, &s, 0),
            Verdict::Drop(DropReason::NoRoute)
        );
    }

    #[test]
    fn ecmp_policy_0_keeps_a_host_pair_on_one_path_policy_1_spreads_ports() {
        let gw2 = Ipv4Addr::new(10, 2, 0, 2);
        let mut s = with_route(
            snapshot(),
            Route {
                prefix: Ipv4Addr::new(10, 50, 0, 0),
                len: 16,
                kind: RouteKind::Unicast,
                metric: 0,
                nexthops: vec![
                    NextHop {
                        gateway: Some(GW),
                        ifindex: 11,
                        weight: 1,
                    },
                    NextHop {
                        gateway: Some(gw2),
                        ifindex: 11,
                        weight: 1,
                    },
                ]
                .into(),
            },
        );
        let next_mac = |s: &Snapshot, sport: u16| {
            let mut f = frame([10, 1, 0, 1], [10, 50, 0, 1], 64, 8);
            f[34..36].copy_from_slice(&sport.to_be_bytes());
            assert!(matches!(forward(&mut f, 0, s, 0), Verdict::Transmit { .. }));
            f[5]
        };
        let macs: std::collections::BTreeSet<u8> = (0..64).map(|p| next_mac(&s, p)).collect();
        assert_eq!(macs.len(), 1, "policy 0: one path for one address pair");
        s.sysctl.fib_multipath_hash_policy = 1;
        let macs: std::collections::BTreeSet<u8> = (0..64).map(|p| next_mac(&s, p)).collect();
        assert_eq!(macs.len(), 2, "policy 1: ports spread over both paths");
    }

    #[test]
    fn port_down_stops_forwarding() {
        let mut s = snapshot();
        s.ports[1].up = false;
        let s = rebuilt(s);
        let mut f = frame([10, 1, 0, 1], [10, 2, 0, 2], 64, 0);
        assert_eq!(
            forward(&mut f, 0, &s, 0),
            Verdict::Drop(DropReason::PortDown)
        );
    }

    /// A frame of one of the cases the forward path tells apart, with now
    /// and then a byte changed.
    fn case(x: &mut crate::testutil::XorShift) -> Vec<u8> {
        let dsts: [[u8; 4]; 10] = [
            [10, 2, 0, 2],   // connected, resolved
            [10, 2, 0, 3],   // connected, unresolved
            [10, 9, 3, 4],   // via a gateway
            [10, 7, 0, 1],   // foreign egress
            [10, 6, 1, 1],   // blackhole
            [10, 6, 2, 1],   // unreachable
            [10, 6, 4, 1],   // gateway FAILED
            [11, 0, 0, 1],   // no route
            [10, 1, 0, 254], // local
            [224, 0, 0, 5],  // multicast
        ];
        let r = x.next();
        let dst = dsts[(r % dsts.len() as u64) as usize];
        let ttl = [64, 2, 1, 0][(r >> 8) as usize % 4];
        let payload = [0, 8, 100, 1481, 1500][(r >> 16) as usize % 5];
        let mut f = frame([10, 1, 0, 1], dst, ttl, payload);
        if (r >> 24).is_multiple_of(3) {
            f[14 + 6] = 0x40; // DF
            Packet::new_unchecked(&mut f[14..]).fill_checksum();
        }
        if (r >> 28).is_multiple_of(8) {
            let i = (r >> 32) as usize % f.len().min(60);
            f[i] ^= 1 << ((r >> 40) % 8);
        }
        f
    }

    #[test]
    fn the_vector_path_forwards_as_the_slow_path_and_leaves_the_rest() {
        let s = snapshot();
        let mut x = crate::testutil::XorShift(0x005e_ed0f_fa57);
        let mut forwarded = 0;
        for _ in 0..200 {
            let mut batch: Vec<Vec<u8>> = (0..64).map(|_| case(&mut x)).collect();
            let received = batch.clone();
            let mut slow = batch.clone();
            let mut out = [Step::Slow; 64];
            let mut refs: Vec<&mut [u8]> = batch.iter_mut().map(|f| &mut f[..]).collect();
            let n = forward_batch(&mut refs[..], 0, &s, &mut (), &mut out);
            assert_eq!(n, out.iter().filter(|o| **o != Step::Slow).count());
            forwarded += n;
            for i in 0..64 {
                let v = forward(&mut slow[i], 0, &s, 0);
                match out[i] {
                    Step::Tx { port, len } => {
                        let want = Verdict::Transmit {
                            port: port as usize,
                            len: len as usize,
                        };
                        assert_eq!(v, want, "frame {i}: {:?}", received[i]);
                        assert_eq!(batch[i], slow[i], "same bytes");
                    }
                    Step::Refused => unreachable!("no filter"),
                    Step::Slow => {
                        assert_eq!(batch[i], received[i], "left untouched");
                        // A plain packet to a resolved next hop is never
                        // left to the slow path.
                        let plain = received[i][14] == 0x45;
                        assert!(
                            !(plain && matches!(v, Verdict::Transmit { .. })),
                            "frame {i} forwardable but slow: {:?}",
                            received[i]
                        );
                    }
                }
            }
        }
        assert!(forwarded > 500, "{forwarded} forwarded");
    }

    #[test]
    fn reverse_path_filter_strict_and_loose() {
        let s = with_route(
            snapshot(),
            direct([10, 1, 0, 0], 24, RouteKind::Unicast, 10),
        );
        use DropReason::{MartianSource, RpFilter as Rpf};
        // Source; what strict, loose and no filtering do with it.
        let cases = [
            // The route back leaves through the ingress port.
            ([10, 1, 0, 1], None, None, None),
            // Through the other port.
            ([10, 2, 0, 9], Some(Rpf), None, None),
            // Through an interface the engine does not serve.
            ([10, 7, 0, 9], Some(Rpf), None, None),
            // No route back.
            ([192, 0, 2, 1], Some(Rpf), Some(Rpf), None),
            // A blackhole route back: not unicast, a martian.
            (
                [10, 6, 1, 9],
                Some(MartianSource),
                Some(MartianSource),
                None,
            ),
        ];
        for (i, mode) in [RpFilter::Strict, RpFilter::Loose, RpFilter::Off]
            .into_iter()
            .enumerate()
        {
            let mut m = s.clone();
            m.ports[0].rp_filter = mode;
            let m = rebuilt(m);
            for (src, strict, loose, off) in cases {
                let want = [strict, loose, off][i];
                let mut f = frame(src, [10, 2, 0, 2], 64, 8);
                let mut out = [Step::Slow];
                let n = forward_batch(&mut [&mut f.clone()[..]][..], 0, &m, &mut (), &mut out);
                assert_eq!(n == 1, want.is_none(), "{mode:?} {src:?}: vector path");
                match (forward(&mut f, 0, &m, 0), want) {
                    (Verdict::Transmit { port: 1, .. }, None) => {}
                    (Verdict::Drop(r), Some(w)) if r == w => {}
                    (v, w) => panic!("{mode:?} {src:?}: {v:?}, expected {w:?}"),
                }
            }
        }
    }

    #[test]
    fn own_sources_are_martians_unless_accept_local() {
        let s = with_route(
            snapshot(),
            direct([10, 1, 0, 254], 32, RouteKind::Local, 10),
        );
        let mut f = frame([10, 1, 0, 254], [10, 2, 0, 2], 64, 8);
        let mut out = [Step::Slow];
        assert_eq!(
            forward_batch(&mut [&mut f[..]][..], 0, &s, &mut (), &mut out),
            0
        );
        assert_eq!(
            forward(&mut f, 0, &s, 0),
            Verdict::Drop(DropReason::MartianSource)
        );
        let mut s = s;
        s.ports[0].accept_local = true;
        let s = rebuilt(s);
        assert!(matches!(
            forward(&mut f, 0, &s, 0),
            Verdict::Transmit { port: 1, .. }
        ));
    }

    #[test]
    fn random_bytes_never_panic() {
        let s = snapshot();
        let mut x = crate::testutil::XorShift(0x0123_4567_89ab_cdef);
        for _ in 0..50_000 {
            let len = (x.next() % 100) as usize;
            let mut f = x.bytes(len);
            if f.len() > 6 && !x.next().is_multiple_of(4) {
                f[..6].copy_from_slice(&s.ports[0].mac.0);
            }
            if f.len() > 14 {
                f[12] = 0x08;
                f[13] = 0x00;
                f[14] = 0x45;
            }
            let _ = forward(&mut f, 0, &s, 0);
        }
    }

    /// The snapshot with a third port, eth2, and 10.8.0.0/16 through it
    /// (gateway 10.3.0.5), and 192.168.0.0/16 through the gateway of eth1.
    fn three_ports() -> Snapshot {
        let mut s = snapshot();
        s.ports.push(Port {
            name: "eth2".into(),
            ifindex: 12,
            mac: MacAddr([2, 0, 0, 0, 0, 2]),
            addrs: vec![(Ipv4Addr::new(10, 3, 0, 254), 24)],
            ..Port::default()
        });
        let mut t = (*s.neigh).clone();
        let gw2 = Ipv4Addr::new(10, 3, 0, 5);
        let mac = MacAddr([2, 0, 0, 0, 9, 5]);
        t.insert(
            12,
            gw2,
            Neighbour {
                mac,
                state: nud::REACHABLE,
            },
        );
        s.neigh = std::sync::Arc::new(t);
        let via = |prefix: [u8; 4], gateway, ifindex| Route {
            prefix: Ipv4Addr::from(prefix),
            len: 16,
            kind: RouteKind::Unicast,
            metric: 0,
            nexthops: vec![NextHop {
                gateway: Some(gateway),
                ifindex,
                weight: 1,
            }]
            .into(),
        };
        let s = with_route(s, via([10, 8, 0, 0], gw2, 12));
        with_route(s, via([192, 168, 0, 0], GW, 11))
    }

    /// The forward chain the vector path's filter test judges with; with
    /// `oif`, a rule on the output port too.
    fn forward_rules(oif: bool) -> crate::filter::Ruleset {
        use crate::filter::compile::{compile, Iface};
        use crate::filter::nft::build::*;
        use crate::filter::nft::{family::IPV4, Ruleset as Nft};
        let net = |offset, addr: [u8; 4], len: u32| {
            let mask = (u32::MAX << (32 - len)).to_be_bytes();
            vec![payload(1, offset, 4), bitwise(&mask), cmp(0, &addr)]
        };
        let l4 = |proto: u8| vec![meta(16), cmp(0, &[proto])];
        let dport = |p: u16| vec![payload(2, 2, 2), cmp(0, &p.to_be_bytes())];
        let drop = || vec![counter(), verdict(0, None)];
        let mut rules = vec![
            [net(16, [192, 168, 0, 0], 16), drop()].concat(),
            [
                net(12, [10, 1, 0, 0], 16),
                l4(17),
                dport(5555),
                vec![reject(0, 10)],
            ]
            .concat(),
            [
                l4(17),
                vec![
                    payload(2, 2, 2),
                    range(0, &6000u16.to_be_bytes(), &6999u16.to_be_bytes()),
                ],
                drop(),
            ]
            .concat(),
            [net(16, [10, 9, 7, 0], 24), l4(6), dport(80), drop()].concat(),
        ];
        if oif {
            let mut name = [0u8; 16];
            name[..4].copy_from_slice(b"eth2");
            rules.push([vec![meta(7), cmp(0, &name)], l4(17), dport(53), drop()].concat());
        }
        let mut rs = Nft::default();
        rs.chains
            .push(base_chain(IPV4, "filter", "forward", 2, 0, true));
        for (i, e) in rules.into_iter().enumerate() {
            rs.rules
                .push(rule(IPV4, "filter", "forward", i as u64 + 1, e));
        }
        let ports: Vec<Iface> = (0..3)
            .map(|i| Iface {
                name: format!("eth{i}"),
                ifindex: 10 + i,
            })
            .collect();
        compile(&rs, &ports).with_counters(1, &[])
    }

    /// Batches of runs of one flow to many destinations (the frames after
    /// the first judged on the memo of the one before, a run going on
    /// into the next batch with the memo carried), through ports with
    /// and without a rule on them, some to a connected neighbour (out of
    /// the hot path): every frame forwarded or refused as the ruleset
    /// judges it field by field, alone, with the same counts.
    #[test]
    fn the_vector_path_filters_frames_as_judged_alone() {
        use crate::filter::Hook;
        use crate::testutil::XorShift;
        use crate::worker::{Carry, Hooks};
        let snap = three_ports();
        for oif in [false, true] {
            let (one, batch) = (forward_rules(oif).field_by_field(), forward_rules(oif));
            let quick = batch
                .gate(Hook::Forward)
                .quick()
                .expect("a forward-only ruleset");
            assert_eq!(quick.reads_oif(), oif);
            let mut x = XorShift(7 + oif as u64);
            let mut seen = [0usize; 3];
            let mut carry = Carry::default();
            let (mut src, mut proto, mut sport, mut dport, mut ttl) = ([0; 4], 0, 0u16, 0u16, 0);
            for _ in 0..200 {
                let mut frames = Vec::new();
                let mut ports = Vec::new();
                for k in 0..64 {
                    let r = x.next();
                    if src[0] == 0 || r.is_multiple_of(4) {
                        src =
                            [[10, 1, 0, 7], [10, 1, 200, 1], [10, 3, 9, 9]][(r >> 4) as usize % 3];
                        proto = [17, 6][(r >> 8) as usize % 2];
                        dport = [53, 80, 5555, 6500, 9999][(r >> 12) as usize % 5];
                        sport = (r >> 16) as u16;
                        ttl = [64, 30][(r >> 32) as usize % 2];
                    }
                    let b = (r >> 40) as u8;
                    let (dst, port) = match (r >> 48) % 5 {
                        0 => ([10, 9, b, k], 1),
                        1 => ([10, 9, 7, b], 1),
                        2 => ([10, 8, b, k], 2),
                        3 => ([192, 168, b, k], 1),
                        _ => ([10, 2, 0, 2], 1),
                    };
                    let mut f = frame(src, dst, ttl, 8);
                    f[14 + 9] = proto;
                    f[34..36].copy_from_slice(&sport.to_be_bytes());
                    f[36..38].copy_from_slice(&dport.to_be_bytes());
                    let mut p = Packet::new_unchecked(&mut f[14..]);
                    p.fill_checksum();
                    frames.push(f);
                    ports.push(port);
                }
                let want: Vec<_> = frames
                    .iter()
                    .zip(&ports)
                    .map(|(f, &port)| {
                        let mut refused = [None];
                        let passage = Hooks::new(&one, 0, &mut refused).pass(f, 0, 0, port);
                        (passage, refused[0])
                    })
                    .collect();
                let mut bufs: Vec<&mut [u8]> = frames.iter_mut().map(|f| &mut f[..]).collect();
                let mut refused = vec![None; 64];
                let mut out = vec![Step::Slow; 64];
                Hooks::new(&batch, 0, &mut refused)
                    .carrying(&mut carry)
                    .forward(&mut bufs[..], 0, &snap, &mut out);
                for (i, (passage, why)) in want.into_iter().enumerate() {
                    let step = match passage {
                        Passage::Through => Step::Tx {
                            port: ports[i],
                            len: 14 + 28,
                        },
                        _ => Step::Refused,
                    };
                    assert_eq!((out[i], refused[i]), (step, why), "frame {i}");
                    seen[passage as usize] += 1;
                }
            }
            assert!(seen[0] > 3_000 && seen[2] > 1_000, "{seen:?}");
            assert_eq!(one.totals(), batch.totals());
        }
    }

    /// A memo carried from a batch judged by one ruleset is not used by
    /// the next, judged by another: its frames of the same flow are
    /// judged by the new rules from the first.
    #[test]
    fn a_carried_memo_serves_its_own_ruleset_alone() {
        use crate::filter::compile::compile;
        use crate::filter::nft::build::*;
        use crate::filter::nft::{family::IPV4, Ruleset as Nft};
        use crate::worker::{Carry, Hooks};
        let snap = three_ports();
        // Drops UDP to port 9999: the flow below.
        let mut rs = Nft::default();
        rs.chains
            .push(base_chain(IPV4, "filter", "forward", 2, 0, true));
        let e = vec![
            meta(16),
            cmp(0, &[17]),
            payload(2, 2, 2),
            cmp(0, &9999u16.to_be_bytes()),
            verdict(0, None),
        ];
        rs.rules.push(rule(IPV4, "filter", "forward", 1, e));
        let drops = compile(&rs, &[]).with_counters(1, &[]);
        let passes = forward_rules(false);
        let mut carry = Carry::default();
        let mut batch = |rules: &crate::filter::Ruleset| {
            let mut frames: Vec<Vec<u8>> = (0..64u8)
                .map(|k| {
                    let mut f = frame([10, 3, 9, 9], [10, 9, 1, k], 64, 8);
                    f[36..38].copy_from_slice(&9999u16.to_be_bytes());
                    f
                })
                .collect();
            let mut bufs: Vec<&mut [u8]> = frames.iter_mut().map(|f| &mut f[..]).collect();
            let (mut refused, mut out) = (vec![None; 64], vec![Step::Slow; 64]);
            Hooks::new(rules, 0, &mut refused)
                .carrying(&mut carry)
                .forward(&mut bufs[..], 0, &snap, &mut out)
        };
        assert_eq!(batch(&passes), 64);
        assert_eq!(batch(&drops), 0);
        assert_eq!(batch(&passes), 64);
        assert_eq!(batch(&passes), 64);
        assert_eq!(batch(&drops), 0);
    }
}
