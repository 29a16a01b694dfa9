//! Counters: IP-MIB counters with the names `nstat` gives them (without the
//! `Ip` prefix), a counter for every reason the engine drops a packet, and
//! per-port packet and byte counts.
//!
//! Every counter has one writer, the worker that owns it, so an increment is
//! a plain load and store (no atomic read-modify-write, no shared cache line
//! on the fast path); readers sum the workers' counters.

use serde::Serialize;
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// A counter written by one thread and read by any.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`. Only the owning worker calls this.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }

    /// Current value.
    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }

    /// Sets a gauge or a value read elsewhere. Only the owning worker calls
    /// this.
    #[inline]
    pub fn set(&self, v: u64) {
        self.0.store(v, Relaxed);
    }
}

macro_rules! named_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident = $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($(#[$vm])* $v),+ }
        impl $name {
            /// Every value, in counter order.
            pub const ALL: &'static [$name] = &[$($name::$v),+];
            /// Number of values.
            pub const COUNT: usize = $name::ALL.len();
            /// The counter's name.
            pub fn name(self) -> &'static str {
                match self { $($name::$v => $s),+ }
            }
        }
    };
}

named_enum! {
    /// IP-MIB counters (RFC 4293) the engine keeps, as Linux counts them.
    Mib {
        /// Packets received from the engine's sockets.
        InReceives = "InReceives",
        /// Header errors: version, IHL, checksum, total length; TTL expired in transit.
        InHdrErrors = "InHdrErrors",
        /// Header checksum errors (also counted in InHdrErrors).
        InCsumErrors = "InCsumErrors",
        /// Frames shorter than the IPv4 total length.
        InTruncatedPkts = "InTruncatedPkts",
        /// Martian source or destination addresses.
        InAddrErrors = "InAddrErrors",
        /// No route to the destination.
        InNoRoutes = "InNoRoutes",
        /// Datagrams forwarded.
        ForwDatagrams = "ForwDatagrams",
        /// Datagrams dropped on output for lack of resources (tx ring full).
        OutDiscards = "OutDiscards",
        /// Fragment queues that timed out (`ipfrag_time`).
        ReasmTimeout = "ReasmTimeout",
        /// Fragments received for reassembly.
        ReasmReqds = "ReasmReqds",
        /// Datagrams reassembled.
        ReasmOKs = "ReasmOKs",
        /// Reassembly failures: datagrams discarded (overlap, bad length),
        /// timed out or reset (`ipfrag_max_dist`), fragments refused for memory.
        ReasmFails = "ReasmFails",
        /// Datagrams discarded for overlapping fragments (`IpExt` in
        /// /proc/net/netstat; also counted in ReasmFails).
        ReasmOverlaps = "ReasmOverlaps",
        /// Datagrams that needed fragmenting and could not be.
        FragFails = "FragFails",
        /// Datagrams fragmented.
        FragOKs = "FragOKs",
        /// Fragments created.
        FragCreates = "FragCreates",
        /// ICMP messages sent.
        IcmpOutMsgs = "IcmpOutMsgs",
        /// ICMP destination unreachable messages sent.
        IcmpOutDestUnreachs = "IcmpOutDestUnreachs",
        /// ICMP time exceeded messages sent.
        IcmpOutTimeExcds = "IcmpOutTimeExcds",
        /// ICMP parameter problem messages sent.
        IcmpOutParmProbs = "IcmpOutParmProbs",
        /// ICMP errors not sent: per-destination limit.
        IcmpOutRateLimitHost = "IcmpOutRateLimitHost",
        /// ICMP errors not sent: global limit.
        IcmpOutRateLimitGlobal = "IcmpOutRateLimitGlobal",
        /// Datagrams delivered to the engine's local protocols (UDP
        /// sockets, the ICMP echo responder).
        InDelivers = "InDelivers",
        /// Datagrams the engine originated (socket sends, echo replies).
        OutRequests = "OutRequests",
        /// Originated datagrams with no route (the route vanished after the
        /// send call checked it).
        OutNoRoutes = "OutNoRoutes",
        /// ICMP messages received by the engine.
        IcmpInMsgs = "IcmpInMsgs",
        /// ICMP messages received with errors (bad checksum, truncated).
        IcmpInErrors = "IcmpInErrors",
        /// ICMP messages received with a bad checksum.
        IcmpInCsumErrors = "IcmpInCsumErrors",
        /// ICMP echo requests received.
        IcmpInEchos = "IcmpInEchos",
        /// ICMP echo replies sent.
        IcmpOutEchoReps = "IcmpOutEchoReps",
        /// UDP datagrams delivered to sockets.
        UdpInDatagrams = "UdpInDatagrams",
        /// UDP datagrams to a port no socket holds.
        UdpNoPorts = "UdpNoPorts",
        /// UDP datagrams not delivered for other reasons (bad length,
        /// checksum, full socket).
        UdpInErrors = "UdpInErrors",
        /// UDP datagrams with a bad checksum.
        UdpInCsumErrors = "UdpInCsumErrors",
        /// UDP datagrams dropped because the socket's queue was full.
        UdpRcvbufErrors = "UdpRcvbufErrors",
        /// UDP datagrams sent.
        UdpOutDatagrams = "UdpOutDatagrams",
        /// UDP sends refused because the worker's send queue was full
        /// (counted by the sending thread, not a worker).
        UdpSndbufErrors = "UdpSndbufErrors",
    }
}

named_enum! {
    /// Why the engine dropped a packet. Each reason has its own counter and
    /// adds to the IP-MIB counters Linux would increment ([`DropReason::mib`]).
    DropReason {
        /// The frame is not IPv4 (the XDP program should have passed it).
        NotIpv4 = "not_ipv4",
        /// Shorter than an IPv4 header or its IHL.
        Truncated = "truncated",
        /// IP version not 4.
        BadVersion = "bad_version",
        /// IHL below 5.
        BadHeaderLength = "bad_header_length",
        /// Header checksum does not verify.
        BadChecksum = "bad_checksum",
        /// Total length below the header length.
        TotalLengthBelowHeader = "total_length_below_header",
        /// Total length beyond the received frame.
        TotalLengthBeyondFrame = "total_length_beyond_frame",
        /// Source address that cannot be a source (0/8, 127/8, multicast, broadcast).
        MartianSource = "martian_source",
        /// Reverse path filter (`rp_filter` 1 or 2 on the ingress
        /// interface): no route back to the source, or, in strict mode, none
        /// through the ingress interface. Linux counts it as TcpExt
        /// `IPReversePathFilter`, in no IP-MIB counter.
        RpFilter = "rp_filter",
        /// Destination that cannot be forwarded (0/8, 127/8, multicast, broadcast).
        MartianDestination = "martian_destination",
        /// TTL would reach zero.
        TtlExceeded = "ttl_exceeded",
        /// The frame was not addressed to the port's MAC (another host,
        /// broadcast or multicast).
        NotForHost = "not_for_host",
        /// Malformed IP options (answered with a parameter problem).
        BadOptions = "bad_options",
        /// A source route option while `accept_source_route` is off.
        SourceRoute = "source_route",
        /// A source route option with `accept_source_route` on: the engine
        /// does not route by source routes.
        SourceRouteUnsupported = "source_route_unsupported",
        /// Forwarding disabled on the ingress interface
        /// (`conf/<iface>/forwarding`).
        ForwardingDisabled = "forwarding_disabled",
        /// No route to the destination.
        NoRoute = "no_route",
        /// An `unreachable` route matched.
        RouteUnreachable = "route_unreachable",
        /// A `prohibit` route matched.
        RouteProhibit = "route_prohibit",
        /// A `blackhole` route matched.
        RouteBlackhole = "route_blackhole",
        /// The route leaves through an interface the engine does not serve.
        ForeignEgress = "foreign_egress",
        /// The egress port is down.
        PortDown = "port_down",
        /// The next hop's MAC is unknown or its entry FAILED.
        NeighbourMissing = "neighbour_missing",
        /// Larger than the egress MTU.
        TooBig = "too_big",
        /// The egress transmit ring was full.
        TxRingFull = "tx_ring_full",
        /// The worker has no socket on the egress interface.
        NoTxQueue = "no_tx_queue",
        /// No free frame for a fragment or an ICMP error.
        NoFreeFrame = "no_free_frame",
        /// A local UDP datagram shorter than its header or with a length
        /// field beyond the IP payload.
        UdpBadLength = "udp_bad_length",
        /// A local UDP datagram whose checksum does not verify.
        UdpBadChecksum = "udp_bad_checksum",
        /// A local UDP datagram to a port no engine socket holds (answered
        /// with port unreachable).
        UdpNoSocket = "udp_no_socket",
        /// The socket's receive queue was full.
        UdpSocketFull = "udp_socket_full",
        /// A local ICMP message whose checksum does not verify.
        IcmpBadChecksum = "icmp_bad_checksum",
        /// Local traffic the engine has no use for (an ICMP type other than
        /// echo request, another protocol).
        LocalUnclaimed = "local_unclaimed",
        /// An echo request not answered: `icmp_echo_ignore_all` is set.
        IcmpEchoIgnoreAll = "icmp_echo_ignore_all",
        /// An echo request to a broadcast address not answered:
        /// `icmp_echo_ignore_broadcasts` is set.
        IcmpEchoIgnoreBroadcasts = "icmp_echo_ignore_broadcasts",
        /// An originated datagram found no route at transmit time.
        OutputNoRoute = "output_no_route",
        /// An originated datagram waited too long for its next hop's MAC.
        OutputNeighbourTimeout = "output_neighbour_timeout",
        /// A fragment that overlaps another of its datagram, which is
        /// discarded.
        ReasmOverlap = "reasm_overlap",
        /// A fragment that makes its datagram invalid (length conflicts,
        /// no data, over 65535 bytes, ECN mix), which is discarded.
        ReasmInvalid = "reasm_invalid",
        /// A fragment whose data is already queued.
        ReasmDuplicate = "reasm_duplicate",
        /// A fragment refused at the reassembly memory limit
        /// (`ipfrag_high_thresh`).
        ReasmNoMemory = "reasm_no_memory",
        /// The lane to the worker that owns the fragment's datagram was
        /// full.
        HandoffFull = "handoff_full",
        /// A reassembled datagram for the kernel could not be handed back.
        KernelHandbackFailed = "kernel_handback_failed",
        /// Dropped by an nftables rule (`drop`, or a base chain's policy).
        FilterDrop = "filter_drop",
        /// Rejected by an nftables rule (`reject`), and answered.
        FilterReject = "filter_reject",
        /// Reached a rule only the kernel evaluates while the XDP program
        /// was not yet passing its hook to the kernel (during a change).
        FilterKernel = "filter_kernel",
    }
}

named_enum! {
    /// What the engine did with partial UDP/TCP checksums that a local
    /// stack left for its device to finish ([`crate::wire::l4csum`]); only
    /// frames from veth-like ports ([`crate::snapshot::Port::partial_csum`]).
    Checksum {
        /// Completed before the packet was forwarded.
        PartialCompleted = "csum_partial_completed",
        /// Accepted for local delivery, as the kernel accepts them.
        PartialAccepted = "csum_partial_accepted",
    }
}

thread_local! {
    /// Checksum events of this thread, not yet in its worker's counters:
    /// [`crate::forward::forward`] and local delivery are pure functions of
    /// a frame and a snapshot, with no counters at hand.
    static TALLY: [Cell<u64>; Checksum::COUNT] = const { [Cell::new(0), Cell::new(0)] };
}

/// Counts one checksum event on this thread; the worker moves the tally
/// into its counters ([`WorkerCounters::take_tally`]). A thread-local add:
/// no atomic, no shared line.
#[inline]
pub fn tally(e: Checksum) {
    tally_n(e, 1);
}

/// Counts `n` checksum events on this thread (a batch's).
#[inline]
pub fn tally_n(e: Checksum, n: u64) {
    TALLY.with(|t| {
        let c = &t[e as usize];
        c.set(c.get() + n);
    });
}

impl DropReason {
    /// The IP-MIB counters Linux increments when it drops a packet for the
    /// same reason (`ip_rcv_core()`, `ip_forward()`, `ip_error()`).
    pub fn mib(self) -> &'static [Mib] {
        use DropReason::*;
        match self {
            Truncated
            | BadVersion
            | BadHeaderLength
            | TotalLengthBelowHeader
            | TtlExceeded
            | BadOptions => &[Mib::InHdrErrors],
            BadChecksum => &[Mib::InCsumErrors, Mib::InHdrErrors],
            TotalLengthBeyondFrame => &[Mib::InTruncatedPkts],
            MartianSource | MartianDestination | ForwardingDisabled => &[Mib::InAddrErrors],
            NoRoute => &[Mib::InNoRoutes],
            TooBig => &[Mib::FragFails],
            TxRingFull | NoTxQueue | NoFreeFrame => &[Mib::OutDiscards],
            UdpBadLength => &[Mib::UdpInErrors],
            UdpBadChecksum => &[Mib::UdpInCsumErrors, Mib::UdpInErrors],
            UdpNoSocket => &[Mib::UdpNoPorts],
            UdpSocketFull => &[Mib::UdpRcvbufErrors, Mib::UdpInErrors],
            IcmpBadChecksum => &[Mib::IcmpInCsumErrors, Mib::IcmpInErrors],
            OutputNoRoute => &[Mib::OutNoRoutes],
            // Delivered to ICMP, which counts the request (icmp_rcv()),
            // then ignores it; a broadcast one as an error.
            IcmpEchoIgnoreAll => &[Mib::InDelivers, Mib::IcmpInMsgs, Mib::IcmpInEchos],
            IcmpEchoIgnoreBroadcasts => &[
                Mib::InDelivers,
                Mib::IcmpInMsgs,
                Mib::IcmpInEchos,
                Mib::IcmpInErrors,
            ],
            LocalUnclaimed | OutputNeighbourTimeout | RpFilter => &[],
            NotIpv4
            | NotForHost
            | SourceRoute
            | SourceRouteUnsupported
            | RouteUnreachable
            | RouteProhibit
            | RouteBlackhole
            | ForeignEgress
            | PortDown
            | NeighbourMissing => &[],
            // The reassembler counts ReasmFails once per datagram, not per
            // fragment dropped (reasm::Stats).
            ReasmOverlap | ReasmInvalid | ReasmDuplicate | ReasmNoMemory => &[],
            HandoffFull => &[Mib::ReasmFails],
            KernelHandbackFailed => &[],
            // Linux counts no IP-MIB drop for netfilter verdicts.
            FilterDrop | FilterReject | FilterKernel => &[],
        }
    }
}

impl From<crate::wire::ipv4::Error> for DropReason {
    fn from(e: crate::wire::ipv4::Error) -> Self {
        use crate::wire::ipv4::Error as E;
        match e {
            E::Truncated => DropReason::Truncated,
            E::Version(_) => DropReason::BadVersion,
            E::HeaderLength(_) => DropReason::BadHeaderLength,
            E::Checksum => DropReason::BadChecksum,
            E::TotalLengthBelowHeader(_) => DropReason::TotalLengthBelowHeader,
            E::TotalLengthBeyondFrame { .. } => DropReason::TotalLengthBeyondFrame,
        }
    }
}

/// Packet and byte counts of one port in one worker.
#[derive(Debug, Default)]
pub struct PortCounters {
    /// Frames received.
    pub rx_packets: Counter,
    /// Bytes received (Ethernet header included).
    pub rx_bytes: Counter,
    /// Frames transmitted.
    pub tx_packets: Counter,
    /// Bytes transmitted.
    pub tx_bytes: Counter,
}

/// State of one AF_XDP socket, refreshed by its worker about once a second.
#[derive(Debug, Default)]
pub struct SocketCounters {
    /// `XDP_STATISTICS.rx_dropped`
    pub rx_dropped: Counter,
    /// `XDP_STATISTICS.rx_invalid_descs`
    pub rx_invalid_descs: Counter,
    /// `XDP_STATISTICS.tx_invalid_descs`
    pub tx_invalid_descs: Counter,
    /// `XDP_STATISTICS.rx_ring_full`
    pub rx_ring_full: Counter,
    /// `XDP_STATISTICS.rx_fill_ring_empty_descs`
    pub fill_ring_empty: Counter,
    /// `XDP_STATISTICS.tx_ring_empty_descs`
    pub tx_ring_empty: Counter,
    /// Frames given to the fill ring and not yet received (gauge).
    pub fill_level: Counter,
    /// Frames on the tx ring not yet completed (gauge).
    pub tx_in_flight: Counter,
}

/// The counters of one worker.
#[derive(Debug)]
pub struct WorkerCounters {
    /// IP-MIB counters, indexed by [`Mib`].
    pub mib: [Counter; Mib::COUNT],
    /// Drop counters, indexed by [`DropReason`].
    pub drops: [Counter; DropReason::COUNT],
    /// Per port, indexed by port number.
    pub ports: Vec<PortCounters>,
    /// Batches processed.
    pub batches: Counter,
    /// Times the worker went to sleep in poll(2) for lack of work.
    pub sleeps: Counter,
    /// Wake-up system calls made (need_wakeup set, or copy-mode transmit).
    pub wakeups: Counter,
    /// Free frames in the worker's pool (gauge).
    pub free_frames: Counter,
    /// Reassembly memory in bytes (gauge), and its highest value.
    pub reasm_memory: Counter,
    /// Highest reassembly memory seen.
    pub reasm_memory_peak: Counter,
    /// Datagrams being reassembled (gauge).
    pub reasm_queues: Counter,
    /// Datagrams handed to the kernel through a raw socket: reassembled
    /// ones no engine socket wanted, and ones the engine sent while the
    /// output or postrouting hook of the filter is the kernel's.
    pub to_kernel: Counter,
    /// Fragments passed to the worker that owns their datagram.
    pub handed_off: Counter,
    /// Frames forwarded by the vector path.
    pub vector_forwarded: Counter,
    /// Frames the vector path left to the slow path.
    pub slow_path: Counter,
    /// Forwarded frames held while the kernel resolved their next hop
    /// (the kernel's queue on an unresolved neighbour).
    pub neighbour_held: Counter,
    /// UMEM frames lost to a bug (dropped without a ring or the pool) in
    /// the process: 0.
    pub frames_leaked: Counter,
    /// Per socket, in the order of the worker's sockets.
    pub sockets: Vec<SocketCounters>,
    /// Partial checksums, indexed by [`Checksum`].
    pub checksums: [Counter; Checksum::COUNT],
}

impl WorkerCounters {
    /// Zeroed counters for `ports` ports and `sockets` sockets.
    pub fn new(ports: usize, sockets: usize) -> Self {
        WorkerCounters {
            mib: std::array::from_fn(|_| Counter::default()),
            drops: std::array::from_fn(|_| Counter::default()),
            ports: (0..ports).map(|_| PortCounters::default()).collect(),
            batches: Counter::default(),
            sleeps: Counter::default(),
            wakeups: Counter::default(),
            free_frames: Counter::default(),
            reasm_memory: Counter::default(),
            reasm_memory_peak: Counter::default(),
            reasm_queues: Counter::default(),
            to_kernel: Counter::default(),
            handed_off: Counter::default(),
            vector_forwarded: Counter::default(),
            slow_path: Counter::default(),
            neighbour_held: Counter::default(),
            frames_leaked: Counter::default(),
            sockets: (0..sockets).map(|_| SocketCounters::default()).collect(),
            checksums: std::array::from_fn(|_| Counter::default()),
        }
    }

    /// Moves this thread's checksum tally ([`tally`]) into these counters.
    /// Only the owning worker calls this, from its own thread.
    pub fn take_tally(&self) {
        TALLY.with(|t| {
            for (c, n) in self.checksums.iter().zip(t) {
                c.add(n.take());
            }
        });
    }

    /// Counts one drop under its reason and its IP-MIB counters.
    #[inline]
    pub fn count_drop(&self, reason: DropReason) {
        self.drops[reason as usize].add(1);
        for m in reason.mib() {
            self.mib[*m as usize].add(1);
        }
    }

    /// Adds to an IP-MIB counter.
    #[inline]
    pub fn mib(&self, m: Mib, n: u64) {
        self.mib[m as usize].add(n);
    }
}

/// Totals of one port, summed over workers.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct PortTotals {
    /// Interface name.
    pub name: String,
    /// Frames the engine received on it.
    pub rx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Frames the engine transmitted on it.
    pub tx_packets: u64,
    /// Bytes transmitted.
    pub tx_bytes: u64,
}

/// Sums counters of several workers into named totals.
pub fn sum_ports(workers: &[&WorkerCounters], names: &[String]) -> Vec<PortTotals> {
    names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let mut t = PortTotals {
                name: name.clone(),
                ..PortTotals::default()
            };
            for w in workers {
                if let Some(p) = w.ports.get(i) {
                    t.rx_packets += p.rx_packets.get();
                    t.rx_bytes += p.rx_bytes.get();
                    t.tx_packets += p.tx_packets.get();
                    t.tx_bytes += p.tx_bytes.get();
                }
            }
            t
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_drops_feed_the_mib() {
        let mut names: Vec<&str> = DropReason::ALL.iter().map(|d| d.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), DropReason::COUNT);
        let w = WorkerCounters::new(2, 2);
        w.count_drop(DropReason::BadChecksum);
        w.count_drop(DropReason::TtlExceeded);
        assert_eq!(w.mib[Mib::InHdrErrors as usize].get(), 2);
        assert_eq!(w.mib[Mib::InCsumErrors as usize].get(), 1);
        assert_eq!(w.drops[DropReason::BadChecksum as usize].get(), 1);
    }

    #[test]
    fn a_threads_tally_moves_to_its_counters_once() {
        let w = WorkerCounters::new(1, 1);
        std::thread::scope(|s| {
            s.spawn(|| {
                tally(Checksum::PartialCompleted);
                tally(Checksum::PartialCompleted);
                tally(Checksum::PartialAccepted);
                w.take_tally();
                w.take_tally();
            });
            // Another thread's tally is its own.
            s.spawn(|| tally(Checksum::PartialAccepted)).join().unwrap();
        });
        assert_eq!(w.checksums[Checksum::PartialCompleted as usize].get(), 2);
        assert_eq!(w.checksums[Checksum::PartialAccepted as usize].get(), 1);
    }
}
