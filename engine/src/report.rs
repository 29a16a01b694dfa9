//! What `xdpip stats` shows: everything a running engine counts, at one
//! moment, as the control socket and the metrics endpoint serve it.

use crate::busypoll::BusyPollReport;
use crate::ebpf::XdpMode;
use crate::stats::PortTotals;
use crate::xsk;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A served interface.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PortInfo {
    /// Name.
    pub name: String,
    /// Index.
    pub ifindex: u32,
    /// Driver.
    pub driver: String,
    /// Queues with a socket.
    pub queues: u32,
    /// XDP attach mode.
    pub xdp_mode: XdpMode,
}

/// Counters of one socket in a [`Report`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SocketReport {
    /// Interface.
    pub iface: String,
    /// Queue.
    pub queue: u32,
    /// `XDP_STATISTICS`.
    pub xdp_statistics: xsk::XdpStatistics,
    /// Frames in the fill ring (or held by the kernel for it).
    pub fill_level: u64,
    /// Frames transmitted and not yet completed.
    pub tx_in_flight: u64,
}

/// Counters of one worker in a [`Report`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerReport {
    /// Number.
    pub id: usize,
    /// Queue.
    pub queue: u32,
    /// Core it is pinned to, when it is pinned to one.
    pub core: Option<usize>,
    /// Cores it may run on; `null`: unpinned.
    #[serde(default)]
    pub cores: Option<Vec<usize>>,
    /// Why it runs there.
    #[serde(default)]
    pub placement: String,
    /// Batches with work.
    pub batches: u64,
    /// Sleeps in poll(2).
    pub sleeps: u64,
    /// Wake-up system calls.
    pub wakeups: u64,
    /// Free frames in its pool.
    pub free_frames: u64,
    /// Reassembly memory now and at its highest, in bytes.
    pub reasm_memory: u64,
    /// Highest reassembly memory seen.
    pub reasm_memory_peak: u64,
    /// Datagrams being reassembled.
    pub reasm_queues: u64,
    /// Datagrams handed to the kernel (reassembled ones no engine socket
    /// wanted; ones the engine sent through a filter hook of the kernel's).
    pub to_kernel: u64,
    /// Fragments passed to the worker that owns their datagram.
    pub handed_off: u64,
    /// Frames forwarded by the vector path.
    #[serde(default)]
    pub vector_forwarded: u64,
    /// Frames the vector path left to the slow path (options, errors,
    /// local delivery, unresolved next hops...).
    #[serde(default)]
    pub slow_path: u64,
    /// Forwarded frames held while the kernel resolved their next hop.
    #[serde(default)]
    pub neighbour_held: u64,
    /// UMEM frames lost to a bug: 0.
    #[serde(default)]
    pub frames_leaked: u64,
    /// Its sockets.
    pub sockets: Vec<SocketReport>,
}

/// Everything the engine counts, at one moment.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// Seconds since start.
    pub uptime: f64,
    /// "native"/"skb" per port, and the bind mode.
    pub mode: ModeReport,
    /// Per port totals.
    pub ports: Vec<PortTotals>,
    /// IP-MIB counters, summed over workers.
    pub mib: BTreeMap<String, u64>,
    /// Drops by reason, summed over workers.
    pub drops: BTreeMap<String, u64>,
    /// Partial checksums of local stacks completed or accepted
    /// (`csum_partial_completed`, `csum_partial_accepted`), summed over
    /// workers.
    #[serde(default)]
    pub checksums: BTreeMap<String, u64>,
    /// The XDP program's verdicts, summed over CPUs.
    pub xdp: BTreeMap<String, u64>,
    /// Per worker.
    pub workers: Vec<WorkerReport>,
    /// Control thread.
    pub control: ControlReport,
    /// Busy polling (`--busy-poll`): per socket whether it engaged, and
    /// what was set on the devices; `null` when not asked for.
    #[serde(default)]
    pub busy_poll: Option<BusyPollReport>,
    /// The packet filter.
    #[serde(default)]
    pub filter: FilterReport,
}

/// The packet filter in a [`Report`]: the rules the engine compiled with
/// what they matched, and the hooks left to the kernel with why.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FilterReport {
    /// The nf_tables generation compiled.
    pub generation: u32,
    /// Hooks whose traffic goes to the kernel.
    pub kernel_hooks: Vec<String>,
    /// Why, one line per rule or table.
    pub kernel_reasons: Vec<String>,
    /// Every rule, with the packets and bytes it matched on the fast path.
    pub rules: Vec<FilterRuleReport>,
}

/// One rule in a [`FilterReport`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FilterRuleReport {
    /// Where it is and what it does.
    #[serde(flatten)]
    pub rule: crate::filter::RuleInfo,
    /// Packets it matched (on the engine's fast path only).
    pub packets: u64,
    /// Their bytes (IP total length).
    pub bytes: u64,
}

impl FilterReport {
    pub(crate) fn of(r: &crate::filter::Ruleset) -> Self {
        FilterReport {
            generation: r.generation,
            kernel_hooks: crate::filter::Hook::ALL
                .iter()
                .filter(|h| r.kernel(**h))
                .map(|h| h.name().to_string())
                .collect(),
            kernel_reasons: r.kernel_reasons.clone(),
            rules: r
                .rules
                .iter()
                .zip(r.totals())
                .map(|(i, (packets, bytes))| FilterRuleReport {
                    rule: i.clone(),
                    packets,
                    bytes,
                })
                .collect(),
        }
    }
}

/// Datapath modes in a [`Report`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModeReport {
    /// Per port.
    pub ports: Vec<PortInfo>,
    /// "zero-copy" or "copy".
    pub afxdp: String,
    /// Why zero-copy was refused, if it was.
    pub zero_copy_refused: Option<String>,
    /// FIB gate in the XDP program: off, neigh or full.
    pub fib_gate: String,
}

/// Control thread counters in a [`Report`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ControlReport {
    /// Snapshot generation.
    pub generation: u64,
    /// Routes in the FIB.
    pub routes: usize,
    /// Neighbour entries.
    pub neighbours: usize,
    /// Netlink messages applied.
    pub messages: u64,
    /// Resyncs after lost notifications.
    pub resyncs: u64,
    /// Next hops the kernel was asked to resolve.
    pub resolve_requests: u64,
}
