//! `xdpip-bench gen`: IPv4/UDP from one interface at the highest rate the
//! machine allows, or paced to a target rate.
//!
//! Two ways to transmit:
//!
//! * `afxdp`: an AF_XDP socket on one queue. The frames are written into
//!   the UMEM from a template (flow, IP identification, sequence number),
//!   stamped with the time just before the batch is handed to the kernel,
//!   and transmitted with one `sendto(2)` per batch (per 32 frames in copy
//!   mode, the kernel's budget per call). A frame the interface refuses
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
use std::io::{self, Write};
use std::num::NonZeroU32;
use std::os::fd::{AsFd, AsRawFd};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use xsk_rs::config::{
    BindFlags, FrameSize, Interface as XskIface, LibxdpFlags, QueueSize, SocketConfig, UmemConfig,
};
use xsk_rs::{CompQueue, FillQueue, FrameDesc, RxQueue, Socket, TxQueue, Umem};

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

/// The errno inside an xsk-rs error.
fn os_error(e: &dyn Error) -> io::Error {
    e.source()
        .and_then(|s| s.downcast_ref::<io::Error>())
        .and_then(|i| i.raw_os_error())
        .map_or_else(
            || io::Error::other(e.to_string()),
            io::Error::from_raw_os_error,
        )
}

const RING: u32 = 2048;
const FRAMES: u32 = 4096;

/// An AF_XDP socket bound to one queue, with its UMEM, for transmitting.
///
/// Open it once per process and interface queue and reuse it for every
/// run: xsk-rs 0.7 hands libxdp pointers to ring structs that it then
/// moves, so deleting a socket leaves its rings mapped and the queue
/// bound until the process exits, and a second bind on the queue fails
/// with EBUSY.
pub struct Transmitter {
    umem: Umem,
    tx: TxQueue,
    _rx: RxQueue,
    _fq: FillQueue,
    cq: CompQueue,
    pool: Vec<FrameDesc>,
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

impl Transmitter {
    /// Binds a socket to `queue` of `iface` (in the calling thread's
    /// namespace) with frames of `frame_size` bytes (2048 or 4096).
    pub fn open(iface: &str, queue: u32, zero_copy: ZeroCopy, frame_size: u32) -> Result<Self> {
        let q = |n| QueueSize::new(n).expect("power of two");
        let umem_cfg = UmemConfig::builder()
            .frame_size(
                FrameSize::new(frame_size).map_err(|_| "AF_XDP frame size is 2048 or 4096")?,
            )
            .fill_queue_size(q(RING))
            .comp_queue_size(q(FRAMES))
            .build()
            .map_err(|e| format!("UMEM configuration: {e}"))?;
        let ifname = XskIface::from_str(iface).map_err(|_| "interface name")?;
        let tries: &[(BindFlags, &'static str)] = match zero_copy {
            ZeroCopy::Auto => &[
                (BindFlags::XDP_ZEROCOPY, "zero-copy"),
                (BindFlags::XDP_COPY, "copy"),
            ],
            ZeroCopy::On => &[(BindFlags::XDP_ZEROCOPY, "zero-copy")],
            ZeroCopy::Off => &[(BindFlags::XDP_COPY, "copy")],
        };
        let mut refusal = String::new();
        for (flags, name) in tries {
            // A failed bind keeps the UMEM's rings: every try gets a new UMEM.
            let (umem, pool) =
                Umem::new(umem_cfg, NonZeroU32::new(FRAMES).expect("nonzero"), false).map_err(
                    |e| {
                        format!(
                            "creating the UMEM: {} (locked memory: ulimit -l, or run as root)",
                            os_error(&e)
                        )
                    },
                )?;
            let sock_cfg = SocketConfig::builder()
                .rx_queue_size(q(64))
                .tx_queue_size(q(RING))
                .libxdp_flags(LibxdpFlags::XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD)
                .bind_flags(*flags | BindFlags::XDP_USE_NEED_WAKEUP)
                .build();
            // SAFETY: the (interface, queue) pair is bound once on this UMEM,
            // and libxdp's program loading is inhibited.
            match crate::sink::bind_retrying(|| unsafe {
                Socket::new(sock_cfg, &umem, &ifname, queue)
            }) {
                Ok((tx, rx, rings)) => {
                    let (fq, cq) = rings.ok_or("libxdp returned no completion ring")?;
                    return Ok(Transmitter {
                        umem,
                        tx,
                        _rx: rx,
                        _fq: fq,
                        cq,
                        pool,
                        frame_size,
                        mode: name,
                        iface: iface.to_string(),
                        queue,
                    });
                }
                Err(e) => refusal = format!("{name} mode: {}", os_error(&e)),
            }
        }
        Err(format!("binding an AF_XDP socket to {iface} queue {queue}: {refusal}").into())
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

    /// Transmits one frame in copy mode per budget, reporting refusals.
    fn kick(&self, refused: &mut u64) -> Result<()> {
        let fd = self.tx.fd().as_raw_fd();
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
    let mut comp = vec![FrameDesc::default(); FRAMES as usize];
    let mut batch: Vec<FrameDesc> = Vec::with_capacity(max_batch);
    let mut in_flight = 0u64;
    let mut seq = 0u64;
    let start = Instant::now();
    let mut last_tx = start;
    let (mut sent_frames, mut refused) = (0u64, 0u64);

    while !stop.load(Ordering::Relaxed) {
        if start.elapsed() >= cfg.duration || cfg.count.is_some_and(|c| seq >= c) {
            break;
        }
        // SAFETY: completions are addresses of this UMEM's frames.
        let n = unsafe { t.cq.consume(&mut comp) };
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
        batch.extend(t.pool.drain(from..));
        for (k, d) in batch.iter_mut().enumerate() {
            let frag = k % per_dg;
            let dg = seq + (k / per_dg) as u64;
            // SAFETY: the frame came from the pool: no ring holds it.
            let mut data = unsafe { t.umem.data_mut(d) };
            let mut cur = data.cursor();
            cur.set_pos(0);
            cur.write_all(&template[frag]).expect("fits the frame");
            let f = data.contents_mut();
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
        }
        let now = wire::now_ns();
        for d in batch.iter_mut().step_by(per_dg) {
            // SAFETY: as above.
            let mut data = unsafe { t.umem.data_mut(d) };
            wire::set_time(data.contents_mut(), now);
        }
        // SAFETY: the descriptors are this UMEM's frames, owned by us.
        let put = unsafe { t.tx.produce(&batch) };
        if put == 0 {
            t.pool.append(&mut batch);
            t.kick(&mut refused)?;
            continue;
        }
        seq += (want / per_dg) as u64;
        in_flight += put as u64;
        if t.tx.needs_wakeup() {
            t.kick(&mut refused)?;
        }
        last_tx = Instant::now();
    }
    // Let the last frames go and complete.
    let deadline = Instant::now() + Duration::from_secs(2);
    while in_flight > 0 && Instant::now() < deadline {
        t.kick(&mut refused)?;
        // SAFETY: as above.
        let n = unsafe { t.cq.consume(&mut comp) };
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
    while !stop.load(Ordering::Relaxed) && start.elapsed() < cfg.duration {
        let mut n = chunk;
        if let Some(c) = cfg.count {
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
