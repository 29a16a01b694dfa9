//! `xdpip-bench gen`: IPv4/UDP from one interface at the highest rate the
//! machine allows, or paced to a target rate.
//!
//! Two ways to transmit:
//!
//! * `afxdp`: an AF_XDP socket on one queue. The frames are written into
//!   the UMEM from a template (flow, IP identification, sequence number),
//!   stamped with the time just before the batch is handed to the kernel,
//!   and transmitted with one `sendto(2)` per batch (in copy mode, per
//!   budget of the kernel: 32 frames a call, or the whole ring where Linux
//!   6.17+ lets `xdpip::xsk` raise it). A frame the interface refuses
//!   (`sendto` fails with EBUSY: a full veth ring, say) is counted as
//!   refused, not sent.
//! * `live`: `BPF_PROG_RUN` with `BPF_F_TEST_XDP_LIVE_FRAMES` (kernel 5.18+):
//!   the kernel runs `gen_live` (bench/ebpf/gen.bpf.c) on frames of its own
//!   page pool and transmits them as XDP_TX frames through the interface's
//!   `ndo_xdp_xmit`, with no socket, no skb and no copy. The program writes
//!   flow, sequence number and timestamp. What the driver took is read from
//!   its counters (`ethtool -S`: `*xdp_xmit`, or `ip -s link` TX packets
//!   when it has none); the rest counts as refused. On veth the peer must
//!   have an XDP program or GRO enabled, or the kernel refuses every frame
//!   without a word.
//!
//! Pacing (`--rate`): AF_XDP frames leave in bursts of at most 50 µs worth
//! of traffic (live frames: 100 ms, as each BPF_PROG_RUN call costs the
//! kernel a page pool set up and torn down, tens of ms on a busy machine;
//! use `afxdp` for latency); between bursts the generator sleeps until the next one is due
//! (to the nanosecond: timer slack 1 ns), so a sink and a router sharing
//! its core get the CPU. A generator that falls more than 1 ms behind drops
//! the backlog instead of bursting it out, and counts a slip.

use crate::ebpf::{chain, GenConfig as GenMap, Loaded, GEN_OBJECT};
use crate::sys::{self, LinkCounters};
use crate::wire::{self, FrameSpec};
use serde::Serialize;
use std::error::Error;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use xdpip::xsk::{self, ring::Desc, BindMode, WorkerSockets, XskConfig};

/// Errors of the generator and the sink.
pub type Result<T> = std::result::Result<T, Box<dyn Error + Send + Sync>>;

/// How frames are transmitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GenMode {
    /// An AF_XDP socket (zero-copy where the driver has it).
    Afxdp,
    /// XDP live frames (BPF_PROG_RUN), kernel 5.18+.
    Live,
}

/// AF_XDP zero-copy policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ZeroCopy {
    /// Zero-copy if the driver takes it, else copy mode.
    Auto,
    /// Zero-copy or fail.
    On,
    /// Copy mode.
    Off,
}

/// A generator run.
#[derive(Debug, Clone)]
pub struct GenConfig {
    /// Interface to send from (in the calling thread's namespace).
    pub iface: String,
    /// Its queue.
    pub queue: u32,
    /// How.
    pub mode: GenMode,
    /// The frames.
    pub spec: FrameSpec,
    /// Frames per second; `None`: as fast as possible.
    pub rate: Option<f64>,
    /// How long.
    pub duration: Duration,
    /// Stop after this many datagrams, if given.
    pub count: Option<u64>,
    /// Frames per batch (kick) at full rate.
    pub batch: usize,
    /// AF_XDP zero-copy.
    pub zero_copy: ZeroCopy,
    /// Core to pin the generator to.
    pub core: Option<usize>,
}

/// What a generator run did.
#[derive(Debug, Clone, Serialize)]
pub struct GenReport {
    /// `afxdp` or `live`.
    pub mode: GenMode,
    /// AF_XDP bind mode (`copy`, `zero-copy`), or `live`.
    pub transmit: String,
    /// Interface.
    pub iface: String,
    /// Frame size with FCS.
    pub size: usize,
    /// Flows.
    pub flows: u32,
    /// Source addresses.
    pub src_addrs: u32,
    /// Fragments per datagram.
    pub fragments: usize,
    /// Target rate, frames/s.
    pub target_pps: Option<f64>,
    /// Core it ran on.
    pub core: Option<usize>,
    /// Datagrams built (sequence numbers 0..datagrams).
    pub datagrams: u64,
    /// Frames the interface accepted.
    pub sent: u64,
    /// Frames the interface refused (dropped at transmit).
    pub refused: u64,
    /// Seconds from the first to the last transmission.
    pub seconds: f64,
    /// Achieved rate: sent frames per second.
    pub pps: f64,
    /// Achieved rate in Mbit/s of Ethernet frames (with FCS).
    pub mbps: f64,
    /// Times pacing fell more than 1 ms behind and skipped ahead.
    pub pacing_slips: u64,
    /// The interface's counters (`ip -s link`) over the run.
    pub link: LinkCounters,
}

/// Paces bursts to a rate.
struct Pacer {
    /// Frames per second.
    rate: f64,
    /// Schedule origin, ns.
    origin: u64,
    /// Frames scheduled so far.
    frames: u64,
    slips: u64,
}

impl Pacer {
    /// Frames per burst: 50 µs worth, at least 1, at most `max`.
    fn burst(rate: f64, max: usize) -> usize {
        ((rate * 50e-6) as usize).clamp(1, max.max(1))
    }

    /// Waits until a burst of `n` frames is due.
    fn wait(&mut self, n: usize) {
        let due = self.origin + (self.frames as f64 * 1e9 / self.rate) as u64;
        self.frames += n as u64;
        let now = wire::now_ns();
        if now + 2_000 < due {
            sys::sleep_until(due - 1_000);
        }
        while wire::now_ns() < due {
            std::hint::spin_loop();
        }
        if now > due + 1_000_000 {
            // More than 1 ms behind: start the schedule again from now.
            self.slips += 1;
            self.origin += now - due;
        }
    }
}

/// Runs the generator in the calling thread's network namespace until the
/// duration or count is reached or `stop` is set, on a socket of its own
/// (for `afxdp`).
pub fn run(cfg: &GenConfig, stop: &AtomicBool) -> Result<GenReport> {
    check(cfg)?;
    let mut t = match cfg.mode {
        GenMode::Afxdp => Some(Transmitter::open(
            &cfg.iface,
            cfg.queue,
            cfg.zero_copy,
            Transmitter::frame_size_for(&cfg.spec)?,
        )?),
        GenMode::Live => None,
    };
    run_with(cfg, t.as_mut(), stop)
}

/// Like [`run`], on an open [`Transmitter`] for `afxdp`.
pub fn run_with(
    cfg: &GenConfig,
    transmitter: Option<&mut Transmitter>,
    stop: &AtomicBool,
) -> Result<GenReport> {
    let info = check(cfg)?;
    if let Some(c) = cfg.core {
        sys::pin(c)?;
    }
    sys::tight_timer_slack();
    let link0 = sys::link_counters(None, &cfg.iface)?;
    let mut report = match cfg.mode {
        GenMode::Afxdp => run_afxdp(
            cfg,
            transmitter.ok_or("afxdp mode needs an AF_XDP transmitter")?,
            stop,
        )?,
        GenMode::Live => run_live(cfg, &info, stop)?,
    };
    report.link = sys::link_counters(None, &cfg.iface)?.since(&link0);
    if cfg.mode == GenMode::Live && report.sent == u64::MAX {
        // The driver has no XDP transmit counter: trust ip -s link.
        report.sent = report.link.tx_packets.min(report.datagrams);
        report.refused = report.datagrams - report.sent;
    }
    report.pps = if report.seconds > 0.0 {
        report.sent as f64 / report.seconds
    } else {
        0.0
    };
    let frame_bits =
        8.0 * (cfg.spec.size as f64 / cfg.spec.fragments as f64).max(wire::MIN_SIZE as f64);
    report.mbps = report.pps * frame_bits / 1e6;
    if report.sent == 0 && report.datagrams > 0 {
        return Err(format!(
            "{} refused every frame ({} tried){}",
            cfg.iface,
            report.refused,
            if cfg.mode == GenMode::Live {
                "; XDP frames into a veth need an XDP program or GRO on its peer \
                 (ethtool -K PEER gro on)"
            } else {
                ""
            }
        )
        .into());
    }
    Ok(report)
}

/// Checks a configuration against the interface; returns its facts.
fn check(cfg: &GenConfig) -> Result<sys::IfaceInfo> {
    let info = sys::iface(None, &cfg.iface)?;
    if !info.up {
        return Err(format!("{} is down (ip link set {} up)", cfg.iface, cfg.iface).into());
    }
    cfg.spec.validate(Some(info.mtu))?;
    if cfg.mode == GenMode::Live && cfg.spec.fragments > 1 {
        return Err("--fragments needs --mode afxdp: a live frame is one frame per run".into());
    }
    if let Some(r) = cfg.rate {
        if r.is_nan() || r <= 0.0 {
            return Err(format!("--rate {r}: give a positive rate in frames per second").into());
        }
    }
    Ok(info)
}

fn base_report(cfg: &GenConfig, transmit: String) -> GenReport {
    GenReport {
        mode: cfg.mode,
        transmit,
        iface: cfg.iface.clone(),
        size: cfg.spec.size,
        flows: cfg.spec.flows,
        src_addrs: cfg.spec.src_addrs,
        fragments: cfg.spec.fragments,
        target_pps: cfg.rate,
        core: cfg.core,
        datagrams: 0,
        sent: 0,
        refused: 0,
        seconds: 0.0,
        pps: 0.0,
        mbps: 0.0,
        pacing_slips: 0,
        link: LinkCounters::default(),
    }
}

/// Entries of the transmitter's tx and completion rings.
const RING: u32 = 2048;

/// An AF_XDP socket bound to one queue, with its own UMEM, for
/// transmitting (`xdpip::xsk`, the engine's AF_XDP code, with a single
/// interface).
///
/// Open it once and reuse it for every run: the kernel releases a closed
/// socket's queue asynchronously, so binding the queue again may wait (up
/// to 2 s in `xdpip::xsk::open`).
pub struct Transmitter {
    /// The UMEM and its one socket (`sockets[0]`).
    xsk: WorkerSockets,
    /// Frames no ring holds.
    pool: Vec<u64>,
    frame_size: u32,
    /// `copy` or `zero-copy`.
    pub mode: &'static str,
    iface: String,
    queue: u32,
}

impl std::fmt::Debug for Transmitter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transmitter")
            .field("iface", &self.iface)
            .field("queue", &self.queue)
            .field("mode", &self.mode)
            .finish()
    }
}

/// Binds one AF_XDP socket with its own UMEM to `queue` of `iface`, zero-copy
/// or copy mode as `zero_copy` says (`Auto` falls back to copy mode when
/// the driver refuses zero-copy). Returns the sockets and the mode's name.
pub(crate) fn open_one(
    iface: &str,
    queue: u32,
    zero_copy: ZeroCopy,
    cfg: &XskConfig,
) -> Result<(WorkerSockets, &'static str)> {
    let ports = [(0, iface.to_string())];
    let first = match zero_copy {
        ZeroCopy::Off => BindMode::Copy,
        ZeroCopy::Auto | ZeroCopy::On => BindMode::ZeroCopy,
    };
    let ws = match xsk::open(&ports, queue, cfg, 0, first) {
        Err(e) if e.is_zero_copy_refused() && zero_copy == ZeroCopy::Auto => {
            xsk::open(&ports, queue, cfg, 0, BindMode::Copy)
        }
        other => other,
    }
    .map_err(|e| format!("AF_XDP socket: {e}"))?;
    let mode = match ws.mode {
        BindMode::ZeroCopy => "zero-copy",
        BindMode::Copy => "copy",
    };
    Ok((ws, mode))
}

impl Transmitter {
    /// Binds a socket to `queue` of `iface` (in the calling thread's
    /// namespace) with frames of `frame_size` bytes (2048 or 4096).
    pub fn open(iface: &str, queue: u32, zero_copy: ZeroCopy, frame_size: u32) -> Result<Self> {
        let cfg = XskConfig {
            frame_size,
            ring_size: RING,
            need_wakeup: true,
        };
        let (mut xsk, mode) = open_one(iface, queue, zero_copy, &cfg)?;
        // 2 × RING frames: a full tx ring and a full completion ring.
        let pool = std::mem::take(&mut xsk.frames);
        Ok(Transmitter {
            xsk,
            pool,
            frame_size,
            mode,
            iface: iface.to_string(),
            queue,
        })
    }

    /// The frame size a run of `cfg` needs.
    pub fn frame_size_for(spec: &FrameSpec) -> Result<u32> {
        let longest = spec.size - wire::FCS;
        if longest > 4096 {
            return Err(format!(
                "--size {} does not fit a 4096-byte AF_XDP frame; use --fragments",
                spec.size
            )
            .into());
        }
        Ok(if longest <= 2048 { 2048 } else { 4096 })
    }

    /// Asks the kernel to transmit the tx ring (copy mode: up to one budget
    /// of frames per call), reporting refusals.
    fn kick(&self, refused: &mut u64) -> Result<()> {
        let fd = self.xsk.sockets[0].fd();
        let mut again = 0;
        loop {
            // SAFETY: a zero-length sendto on our own socket.
            let r = unsafe {
                libc::sendto(
                    fd,
                    std::ptr::null(),
                    0,
                    libc::MSG_DONTWAIT,
                    std::ptr::null(),
                    0,
                )
            };
            if r >= 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                // A frame the device dropped: copy mode stops there.
                Some(libc::EBUSY) => *refused += 1,
                // The kernel's budget per call, or a full completion ring.
                Some(libc::EAGAIN) | Some(libc::ENOBUFS) => {
                    again += 1;
                    if again > 64 {
                        return Ok(());
                    }
                }
                _ => return Err(format!("transmitting on {}: {e}", self.iface).into()),
            }
        }
    }
}

fn run_afxdp(cfg: &GenConfig, t: &mut Transmitter, stop: &AtomicBool) -> Result<GenReport> {
    if t.iface != cfg.iface || t.queue != cfg.queue {
        return Err(format!(
            "the transmitter is bound to {} queue {}, not {} queue {}",
            t.iface, t.queue, cfg.iface, cfg.queue
        )
        .into());
    }
    if Transmitter::frame_size_for(&cfg.spec)? > t.frame_size {
        return Err("the transmitter's frames are too small for --size".into());
    }
    let mut report = base_report(cfg, t.mode.to_string());

    // One template per fragment; flows, identification and checksums are
    // patched per datagram.
    let template = cfg.spec.datagram(0, 0);
    let per_dg = template.len();
    let max_batch = (cfg.batch.max(per_dg) / per_dg) * per_dg;
    let burst = match cfg.rate {
        Some(r) => Pacer::burst(r, max_batch).div_ceil(per_dg) * per_dg,
        None => max_batch,
    };
    let mut pacer = cfg.rate.map(|rate| Pacer {
        rate,
        origin: wire::now_ns(),
        frames: 0,
        slips: 0,
    });
    let mut comp = vec![0u64; 2 * RING as usize];
    let mut batch: Vec<Desc> = Vec::with_capacity(max_batch);
    let mut in_flight = 0u64;
    let mut seq = 0u64;
    let start = Instant::now();
    let mut last_tx = start;
    let (mut sent_frames, mut refused) = (0u64, 0u64);

    while !stop.load(Ordering::Relaxed) {
        if start.elapsed() >= cfg.duration || cfg.count.is_some_and(|c| seq >= c) {
            break;
        }
        let n = t.xsk.sockets[0].cq.consume(&mut comp);
        in_flight -= n as u64;
        sent_frames += n as u64;
        t.pool.extend_from_slice(&comp[..n]);
        let mut want = burst.min(t.pool.len() / per_dg * per_dg);
        if let Some(c) = cfg.count {
            want = want.min(((c - seq) as usize) * per_dg);
        }
        if want == 0 {
            t.kick(&mut refused)?;
            std::hint::spin_loop();
            continue;
        }
        if let Some(p) = pacer.as_mut() {
            p.wait(want);
        }
        batch.clear();
        let from = t.pool.len() - want;
        for (k, addr) in t.pool.drain(from..).enumerate() {
            let frag = k % per_dg;
            let dg = seq + (k / per_dg) as u64;
            let len = template[frag].len();
            // SAFETY: the frame came from the pool: no ring holds it, and
            // nothing else borrows it.
            let f = unsafe { t.xsk.umem.slice_mut(addr, len) };
            f.copy_from_slice(&template[frag]);
            let flow = (dg % cfg.spec.flows as u64) as u32;
            if flow != 0 || per_dg > 1 {
                let (sport, src) = cfg.spec.flow(flow);
                if frag == 0 {
                    f[34..36].copy_from_slice(&sport.to_be_bytes());
                }
                f[26..30].copy_from_slice(&src.octets());
                wire::set_ident(f, dg as u16);
            }
            if frag == 0 {
                wire::set_seq(f, dg);
            }
            batch.push(Desc {
                addr,
                len: len as u32,
                options: 0,
            });
        }
        let now = wire::now_ns();
        for d in batch.iter().step_by(per_dg) {
            // SAFETY: as above: still ours, not yet on the tx ring.
            let f = unsafe { t.xsk.umem.slice_mut(d.addr, d.len as usize) };
            wire::set_time(f, now);
        }
        // The ring takes what it has room for; the fragments of a datagram
        // go together, so one cut short is finished before going on.
        let mut put = t.xsk.sockets[0].tx.produce(&batch);
        let whole = put.next_multiple_of(per_dg);
        while put < whole && !stop.load(Ordering::Relaxed) {
            t.kick(&mut refused)?;
            put += t.xsk.sockets[0].tx.produce(&batch[put..whole]);
        }
        t.pool.extend(batch[put..].iter().map(|d| d.addr));
        if put == 0 {
            t.kick(&mut refused)?;
            continue;
        }
        seq += (put / per_dg) as u64;
        in_flight += put as u64;
        if t.xsk.sockets[0].tx.needs_wakeup() {
            t.kick(&mut refused)?;
        }
        last_tx = Instant::now();
    }
    // Let the last frames go and complete.
    let deadline = Instant::now() + Duration::from_secs(2);
    while in_flight > 0 && Instant::now() < deadline {
        t.kick(&mut refused)?;
        let n = t.xsk.sockets[0].cq.consume(&mut comp);
        in_flight -= n as u64;
        sent_frames += n as u64;
        t.pool.extend_from_slice(&comp[..n]);
        if n == 0 {
            std::thread::sleep(Duration::from_micros(100));
        }
    }
    if in_flight > 0 {
        return Err(format!(
            "{in_flight} frames never completed on {} within 2 s",
            cfg.iface
        )
        .into());
    }
    report.datagrams = seq;
    // Completed frames include those the device refused.
    report.sent = sent_frames - refused;
    report.refused = refused;
    report.seconds = (last_tx - start).as_secs_f64();
    report.pacing_slips = pacer.map_or(0, |p| p.slips);
    Ok(report)
}

const BPF_F_TEST_XDP_LIVE_FRAMES: u32 = 1 << 1;

fn run_live(cfg: &GenConfig, info: &sys::IfaceInfo, stop: &AtomicBool) -> Result<GenReport> {
    let mut obj = Loaded::load(GEN_OBJECT, "gen.bpf.o", &["gen_live"])?;
    let template = cfg.spec.datagram(0, 0).remove(0);
    let mut hdr = [0u8; wire::HDR_LEN];
    hdr.copy_from_slice(&template[..wire::HDR_LEN]);
    let mut map: aya::maps::Array<aya::maps::MapData, GenMap> = obj.take_map("gen_cfg")?;
    map.set(
        0,
        GenMap {
            hdr,
            sport: cfg.spec.sport,
            saddr: u32::from(cfg.spec.src),
            flows: cfg.spec.flows,
            addrs: cfg.spec.src_addrs,
        },
        0,
    )
    .map_err(|e| format!("BPF map gen_cfg: {}", chain(&e)))?;
    let seqs: aya::maps::PerCpuArray<aya::maps::MapData, u64> = obj.take_map("gen_seq")?;
    let prog_fd = obj.program("gen_live")?.fd()?.as_fd().as_raw_fd();

    let mut report = base_report(cfg, "live".into());
    // Frames the driver took from ndo_xdp_xmit (veth: tx_queue_N_xdp_xmit;
    // mlx5: tx_xdp_xmit), if it counts them.
    let xmitted = || {
        let s = sys::ethtool_stats(None, &cfg.iface);
        s.keys()
            .any(|k| k.ends_with("xdp_xmit"))
            .then(|| sys::stat_sum(&s, "", "xdp_xmit"))
    };
    let xmit0 = xmitted();
    // Every call costs the kernel a page pool set up and torn down (tens
    // of ms on a busy machine, in which nothing is sent): calls are large.
    // Paced, a call is a burst of 100 ms worth of frames; at full speed
    // about 200 ms, for a duty cycle near 90%.
    let mut chunk: u32 = match cfg.rate {
        Some(r) => ((r * 0.1) as u32).max(1),
        None => 8192,
    };
    let mut pacer = cfg.rate.map(|rate| Pacer {
        rate,
        origin: wire::now_ns(),
        frames: 0,
        slips: 0,
    });
    let mut data = template.clone();
    // struct xdp_md: data, data_end, data_meta, ingress_ifindex,
    // rx_queue_index, egress_ifindex; the kernel wants data_end to be the
    // frame's length.
    let mut ctx = [0u32, data.len() as u32, 0, info.ifindex, cfg.queue, 0];
    let mut runs = 0u64;
    let start = Instant::now();
    // Paced, the run holds rate × duration frames: a last chunk that
    // started just before the end would otherwise overshoot by 10%.
    let limit = match (cfg.count, cfg.rate) {
        (Some(c), _) => Some(c),
        (None, Some(r)) => Some((r * cfg.duration.as_secs_f64()) as u64),
        (None, None) => None,
    };
    while !stop.load(Ordering::Relaxed) && start.elapsed() < cfg.duration {
        let mut n = chunk;
        if let Some(c) = limit {
            if runs >= c {
                break;
            }
            n = n.min((c - runs) as u32);
        }
        if let Some(p) = pacer.as_mut() {
            p.wait(n as usize);
        }
        // SAFETY: plain old data; zero is valid.
        let mut opts: libbpf_sys::bpf_test_run_opts = unsafe { std::mem::zeroed() };
        opts.sz = std::mem::size_of::<libbpf_sys::bpf_test_run_opts>() as _;
        opts.data_in = data.as_mut_ptr() as *const libc::c_void;
        opts.data_size_in = data.len() as u32;
        opts.ctx_in = ctx.as_mut_ptr() as *const libc::c_void;
        opts.ctx_size_in = std::mem::size_of_val(&ctx) as u32;
        opts.repeat = n as i32;
        opts.flags = BPF_F_TEST_XDP_LIVE_FRAMES;
        opts.batch_size = 64;
        let t0 = Instant::now();
        // SAFETY: data and ctx outlive the call; opts is sized.
        let r = unsafe { libbpf_sys::bpf_prog_test_run_opts(prog_fd, &mut opts) };
        if cfg.rate.is_none() {
            let took = t0.elapsed().as_secs_f64().max(1e-4);
            chunk = ((chunk as f64 * 0.2 / took) as u32).clamp(1024, 1 << 22);
        }
        if r != 0 {
            let e = io::Error::from_raw_os_error(-r);
            return Err(format!(
                "BPF_PROG_RUN with live frames on {}: {e} (needs kernel 5.18+ and an XDP \
                 capable driver)",
                cfg.iface
            )
            .into());
        }
        runs += n as u64;
    }
    // A paced chunk goes out in a burst at the start of its slot; the run
    // ends with the last slot, so that the rate is frames over the slots.
    if let Some(p) = pacer.as_mut() {
        p.wait(0);
    }
    let seconds = start.elapsed().as_secs_f64();
    let built: u64 = seqs
        .get(&0, 0)
        .map_err(|e| format!("BPF map gen_seq: {}", chain(&e)))?
        .iter()
        .sum();
    report.datagrams = built;
    match (xmit0, xmitted()) {
        (Some(a), Some(b)) => {
            report.sent = (b - a).min(built);
            report.refused = built - report.sent;
        }
        // Filled in from ip -s link by the caller.
        _ => report.sent = u64::MAX,
    }
    report.seconds = seconds;
    report.pacing_slips = pacer.map_or(0, |p| p.slips);
    Ok(report)
}

/// A line of text for a report.
pub fn summary(r: &GenReport) -> String {
    format!(
        "gen {} ({}) on {}: {} frames sent in {:.3} s = {:.0} pps ({:.1} Mbit/s), {} refused by \
         the interface, {} datagrams of {} bytes, {} flows, {} source addresses{}{}",
        match r.mode {
            GenMode::Afxdp => "afxdp",
            GenMode::Live => "live",
        },
        r.transmit,
        r.iface,
        r.sent,
        r.seconds,
        r.pps,
        r.mbps,
        r.refused,
        r.datagrams,
        r.size,
        r.flows,
        r.src_addrs,
        if r.fragments > 1 {
            format!(", {} fragments each", r.fragments)
        } else {
            String::new()
        },
        r.target_pps
            .map(|t| format!(", target {t:.0} pps ({} slips)", r.pacing_slips))
            .unwrap_or_default()
    )
}
