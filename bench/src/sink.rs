//! `xdpip-bench sink`: takes the generator's frames off an interface.
//!
//! * `count`: the XDP program `sink_count` counts them in a per-CPU counter
//!   and drops them, in the driver, before any skb exists: the cheapest
//!   receiver there is, for rates.
//! * `afxdp`: `sink_xsk` redirects them to an AF_XDP socket per rx queue;
//!   a thread reads each frame's sequence number and transmit time and
//!   computes one-way latency (the generator's clock is this host's
//!   CLOCK_MONOTONIC) into an HDR histogram, loss (sequence numbers never
//!   seen) and reordering (frames arriving after a later one).
//!
//! Everything that is not the generator's (ARP above all: the router in
//! front must keep resolving the sink) goes to the kernel.

use crate::ebpf::{chain, slot, Loaded, SinkConfig as SinkMap, XdpMode, SINK_OBJECT};
use crate::gen::Result;
use crate::sys;
use crate::wire::{self, Received};
use aya::maps::{MapData, PerCpuArray, XskMap};
use hdrhistogram::Histogram;
use serde::Serialize;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use xdpip::xsk::{ring::Desc, WorkerSockets, XskConfig};

/// How the sink takes frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SinkMode {
    /// Count and drop in XDP.
    Count,
    /// Read with AF_XDP: latency, loss, reordering.
    Afxdp,
}

/// A sink.
#[derive(Debug, Clone)]
pub struct SinkConfig {
    /// Interface (in the calling thread's namespace).
    pub iface: String,
    /// How.
    pub mode: SinkMode,
    /// UDP destination port of the generator's traffic.
    pub port: u16,
    /// Core for the AF_XDP reader.
    pub core: Option<usize>,
    /// Refuse skb-mode XDP.
    pub native_only: bool,
    /// Run the AF_XDP reader in SCHED_FIFO (ahead of normal threads on its
    /// core).
    pub fifo: bool,
}

/// Counters of the XDP program.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Frames taken.
    pub packets: u64,
    /// Their bytes (without FCS).
    pub bytes: u64,
    /// Frames dropped for want of a socket on their queue (afxdp).
    pub no_socket: u64,
}

/// Latency, loss and order, from the AF_XDP reader.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// Frames carrying a stamp (unfragmented datagrams, first fragments).
    pub stamped: u64,
    /// Later fragments.
    pub later_fragments: u64,
    /// Lowest sequence number seen.
    pub first_seq: Option<u64>,
    /// Highest sequence number seen.
    pub last_seq: Option<u64>,
    /// Sequence numbers between the first and the last never seen.
    pub lost: u64,
    /// Frames that arrived after one with a higher sequence number.
    pub reordered: u64,
    /// Stamps from the future (another clock): not in the histogram.
    pub clock_errors: u64,
    /// Percentiles of one-way latency, ns.
    pub p50_ns: u64,
    /// 90th.
    pub p90_ns: u64,
    /// 99th.
    pub p99_ns: u64,
    /// 99.9th.
    pub p999_ns: u64,
    /// Largest.
    pub max_ns: u64,
    /// Smallest.
    pub min_ns: u64,
    /// Mean.
    pub mean_ns: f64,
}

/// What a sink saw.
#[derive(Debug, Clone, Serialize)]
pub struct SinkReport {
    /// `count` or `afxdp`.
    pub mode: SinkMode,
    /// Interface.
    pub iface: String,
    /// XDP attach mode.
    pub xdp_mode: String,
    /// AF_XDP bind mode, for `afxdp`.
    pub afxdp: Option<String>,
    /// The XDP counters.
    pub counts: Counts,
    /// Seconds between the first and the last frame (to 10 ms), when
    /// watched.
    pub active_seconds: f64,
    /// Frames per second over that time.
    pub pps: f64,
    /// For `afxdp`.
    pub latency: Option<Latency>,
}

struct Reader {
    handle: JoinHandle<io::Result<()>>,
    stop: Arc<AtomicBool>,
    tracker: Arc<Mutex<Tracker>>,
    /// CLOCK_MONOTONIC ns of the last frame read.
    last_frame: Arc<AtomicU64>,
    bind: &'static str,
}

/// A running sink: its XDP program stays attached until it is finished or
/// dropped.
///
/// The AF_XDP sockets are bound once per sink (binding waits for the
/// kernel to release a queue's previous socket);
/// [`Sink::use_program`] switches between counting and reading, and
/// [`Sink::take_latency`] starts a new measurement.
pub struct Sink {
    obj: Loaded,
    counters: PerCpuArray<MapData, u64>,
    reader: Option<Reader>,
    ifindex: u32,
    cfg: SinkConfig,
    xdp_mode: XdpMode,
    program: SinkMode,
    first: Option<Instant>,
    last: Option<Instant>,
    seen: u64,
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sink")
            .field("iface", &self.cfg.iface)
            .field("mode", &self.cfg.mode)
            .finish()
    }
}

/// One queue's socket (`sockets[0]`) and its own UMEM.
struct QueueReader {
    xsk: WorkerSockets,
    queue: u32,
}

/// Entries of the rx and fill rings.
const RING: u32 = 4096;

fn rx_queues(iface: &str) -> u32 {
    std::fs::read_dir(format!("/sys/class/net/{iface}/queues"))
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
                .count() as u32
        })
        .unwrap_or(1)
        .max(1)
}

fn open_sockets(iface: &str) -> Result<(Vec<QueueReader>, &'static str)> {
    let cfg = XskConfig {
        frame_size: 2048,
        ring_size: RING,
        need_wakeup: true,
    };
    let mut out = Vec::new();
    let mut bind = "copy";
    for queue in 0..rx_queues(iface) {
        let (mut xsk, mode) = crate::gen::open_one(iface, queue, crate::gen::ZeroCopy::Auto, &cfg)?;
        bind = mode;
        // The UMEM has more frames than the fill ring takes (it is sized
        // for a forwarding worker); the rest stay unused.
        let frames = std::mem::take(&mut xsk.frames);
        let n = xsk.sockets[0].fq.produce(&frames);
        if n != RING as usize {
            return Err(format!("could fill only {n} of {RING} frames").into());
        }
        out.push(QueueReader { xsk, queue });
    }
    Ok((out, bind))
}

impl Sink {
    /// Attaches the sink to its interface (in the calling thread's network
    /// namespace) and, for `afxdp`, starts the reader thread.
    pub fn start(cfg: &SinkConfig) -> Result<Sink> {
        let ifindex = sys::iface(None, &cfg.iface)?.ifindex;
        let mut obj = Loaded::load(
            SINK_OBJECT,
            "sink.bpf.o",
            &["sink_count", "sink_xsk", "xdp_pass"],
        )?;
        let mut config: aya::maps::Array<MapData, SinkMap> = obj.take_map("config")?;
        config
            .set(
                0,
                SinkMap {
                    port_be: cfg.port.to_be(),
                    pad: 0,
                },
                0,
            )
            .map_err(|e| format!("BPF map config: {}", chain(&e)))?;
        let counters: PerCpuArray<MapData, u64> = obj.take_map("counters")?;
        let mut reader = None;
        if cfg.mode == SinkMode::Afxdp {
            let mut xsks: XskMap<MapData> = obj.take_map("xsks")?;
            let (queues, bind) = open_sockets(&cfg.iface)?;
            for q in &queues {
                xsks.set(q.queue, q.xsk.sockets[0].fd(), 0)
                    .map_err(|e| format!("BPF map xsks: {}", chain(&e)))?;
            }
            let stop = Arc::new(AtomicBool::new(false));
            let tracker = Arc::new(Mutex::new(Tracker::new()));
            let last_frame = Arc::new(AtomicU64::new(0));
            let (s, t, l) = (stop.clone(), tracker.clone(), last_frame.clone());
            let (port, core, fifo) = (cfg.port, cfg.core, cfg.fifo);
            let handle = std::thread::Builder::new()
                .name("sink-afxdp".into())
                .spawn(move || read_loop(queues, port, core, fifo, &s, &t, &l))?;
            reader = Some(Reader {
                handle,
                stop,
                tracker,
                last_frame,
                bind,
            });
        }
        let prog = match cfg.mode {
            SinkMode::Count => "sink_count",
            SinkMode::Afxdp => "sink_xsk",
        };
        let xdp_mode = obj.attach(prog, &cfg.iface, ifindex, cfg.native_only)?;
        Ok(Sink {
            obj,
            counters,
            reader,
            ifindex,
            cfg: cfg.clone(),
            xdp_mode,
            program: cfg.mode,
            first: None,
            last: None,
            seen: 0,
        })
    }

    /// Switches the XDP program: `count` counts and drops in XDP, `afxdp`
    /// hands the frames to the reader (for a sink started in `afxdp`
    /// mode). Call it from a thread in the sink's network namespace: the
    /// kernel reads the interface index in the caller's.
    pub fn use_program(&mut self, mode: SinkMode) -> Result<()> {
        if mode == self.program {
            return Ok(());
        }
        if mode == SinkMode::Afxdp && self.reader.is_none() {
            return Err("this sink was started without AF_XDP sockets".into());
        }
        self.obj.detach_all()?;
        let prog = match mode {
            SinkMode::Count => "sink_count",
            SinkMode::Afxdp => "sink_xsk",
        };
        self.xdp_mode =
            self.obj
                .attach(prog, &self.cfg.iface, self.ifindex, self.cfg.native_only)?;
        self.program = mode;
        Ok(())
    }

    /// Waits until no frame has come for 50 ms (at most 2 s), then returns
    /// latency, loss and order since the sink started or since the last
    /// call, and starts afresh. `None` without an AF_XDP reader.
    pub fn take_latency(&self) -> Option<Latency> {
        let r = self.reader.as_ref()?;
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline
            && wire::now_ns().saturating_sub(r.last_frame.load(Ordering::Relaxed)) < 50_000_000
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut t = r.tracker.lock().unwrap_or_else(|p| p.into_inner());
        let old = std::mem::replace(&mut *t, Tracker::new());
        Some(old.report())
    }

    /// The XDP counters now.
    pub fn counts(&self) -> Result<Counts> {
        let get = |i: u32| -> Result<u64> {
            Ok(self
                .counters
                .get(&i, 0)
                .map_err(|e| format!("BPF map counters: {}", chain(&e)))?
                .iter()
                .sum())
        };
        Ok(Counts {
            packets: get(slot::PACKETS)?,
            bytes: get(slot::BYTES)?,
            no_socket: get(slot::NO_SOCKET)?,
        })
    }

    /// Samples the counters every 10 ms for `duration` (or until `stop`),
    /// noting when frames first and last arrived; calls `each_second` with
    /// the counts once a second.
    pub fn watch(
        &mut self,
        duration: Option<Duration>,
        stop: &AtomicBool,
        mut each_second: impl FnMut(&Counts, f64),
    ) -> Result<()> {
        let start = Instant::now();
        let mut next = start + Duration::from_secs(1);
        let mut last_second = self.counts()?;
        while !stop.load(Ordering::Relaxed) && duration.is_none_or(|d| start.elapsed() < d) {
            std::thread::sleep(Duration::from_millis(10));
            let c = self.counts()?;
            let now = Instant::now();
            if c.packets != self.seen {
                if self.first.is_none() {
                    self.first = Some(now);
                }
                self.last = Some(now);
                self.seen = c.packets;
            }
            if now >= next {
                let secs = (now - next + Duration::from_secs(1)).as_secs_f64();
                each_second(&c, (c.packets - last_second.packets) as f64 / secs);
                last_second = c;
                next = now + Duration::from_secs(1);
            }
        }
        Ok(())
    }

    /// Stops the reader once the frames in flight are read (it waits for
    /// 50 ms of quiet), detaches the program and reports.
    pub fn finish(mut self) -> Result<SinkReport> {
        let latency = self.take_latency();
        let counts = self.counts()?;
        let mut afxdp = None;
        if let Some(r) = self.reader.take() {
            r.stop.store(true, Ordering::Relaxed);
            r.handle
                .join()
                .map_err(|_| "the AF_XDP reader panicked")?
                .map_err(|e| format!("AF_XDP reader: {e}"))?;
            afxdp = Some(r.bind.to_string());
        }
        self.obj.detach_all()?;
        let active = match (self.first, self.last) {
            (Some(a), Some(b)) => (b - a).as_secs_f64(),
            _ => 0.0,
        };
        Ok(SinkReport {
            mode: self.cfg.mode,
            iface: self.cfg.iface.clone(),
            xdp_mode: self.xdp_mode.to_string(),
            afxdp,
            counts,
            active_seconds: active,
            pps: if active > 0.0 {
                counts.packets as f64 / active
            } else {
                0.0
            },
            latency,
        })
    }
}

/// Latency, loss and order as frames come in.
struct Tracker {
    hist: Histogram<u64>,
    stamped: u64,
    later_fragments: u64,
    first_seq: Option<u64>,
    last_seq: Option<u64>,
    reordered: u64,
    clock_errors: u64,
}

impl Tracker {
    fn new() -> Tracker {
        Tracker {
            // 1 ns to 100 s, 3 significant digits.
            hist: Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("valid bounds"),
            stamped: 0,
            later_fragments: 0,
            first_seq: None,
            last_seq: None,
            reordered: 0,
            clock_errors: 0,
        }
    }

    fn frame(&mut self, f: &[u8], port: u16, now: u64) {
        match wire::read(f, port) {
            Received::Stamped { seq, sent_ns } => {
                self.stamped += 1;
                self.first_seq = Some(self.first_seq.map_or(seq, |s| s.min(seq)));
                match self.last_seq {
                    Some(l) if seq < l => self.reordered += 1,
                    _ => self.last_seq = Some(seq),
                }
                if sent_ns > now {
                    self.clock_errors += 1;
                } else {
                    self.hist.saturating_record((now - sent_ns).max(1));
                }
            }
            Received::LaterFragment => self.later_fragments += 1,
            Received::Other => {}
        }
    }

    fn report(&self) -> Latency {
        let expected = match (self.first_seq, self.last_seq) {
            (Some(a), Some(b)) => b - a + 1,
            _ => 0,
        };
        let h = &self.hist;
        let empty = h.is_empty();
        let q = |p: f64| if empty { 0 } else { h.value_at_quantile(p) };
        Latency {
            stamped: self.stamped,
            later_fragments: self.later_fragments,
            first_seq: self.first_seq,
            last_seq: self.last_seq,
            lost: expected.saturating_sub(self.stamped),
            reordered: self.reordered,
            clock_errors: self.clock_errors,
            p50_ns: q(0.5),
            p90_ns: q(0.9),
            p99_ns: q(0.99),
            p999_ns: q(0.999),
            max_ns: if empty { 0 } else { h.max() },
            min_ns: if empty { 0 } else { h.min() },
            mean_ns: if empty { 0.0 } else { h.mean() },
        }
    }
}

/// Reads every queue's socket until `stop` is set. Sleeps in poll(2) when
/// there is nothing to read.
fn read_loop(
    mut queues: Vec<QueueReader>,
    port: u16,
    core: Option<usize>,
    fifo: bool,
    stop: &AtomicBool,
    tracker: &Mutex<Tracker>,
    last_frame: &AtomicU64,
) -> io::Result<()> {
    if let Some(c) = core {
        sys::pin(c)?;
    }
    if fifo {
        crate::topo::set_fifo(0, 40)?;
    }
    let mut descs = vec![Desc::default(); 64];
    let mut addrs = vec![0u64; 64];
    let mut pollfds: Vec<libc::pollfd> = queues
        .iter()
        .map(|q| libc::pollfd {
            fd: q.xsk.sockets[0].fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    while !stop.load(Ordering::Relaxed) {
        let mut got = 0;
        for q in queues.iter_mut() {
            let sock = &mut q.xsk.sockets[0];
            let n = sock.rx.consume(&mut descs);
            if n == 0 {
                continue;
            }
            got += n;
            let now = wire::now_ns();
            {
                let mut t = tracker.lock().unwrap_or_else(|p| p.into_inner());
                for d in &descs[..n] {
                    // SAFETY: the frame was just received and is ours until
                    // it goes back to the fill ring; slice() keeps the read
                    // inside its frame whatever the descriptor says.
                    let data = unsafe { q.xsk.umem.slice(d.addr, d.len as usize) };
                    t.frame(data, port, now);
                }
            }
            last_frame.store(now, Ordering::Relaxed);
            for (a, d) in addrs.iter_mut().zip(&descs[..n]) {
                *a = q.xsk.umem.frame_of(d.addr);
            }
            let mut put = 0;
            while put < n {
                // The same frames go back to the fill ring, which has room:
                // it held them before.
                put += sock.fq.produce(&addrs[put..n]);
            }
            if sock.fq.needs_wakeup() {
                // Zero-copy drivers ask to be woken to take fill entries.
                sock.kick_rx();
            }
        }
        if got > 0 {
            continue;
        }
        // SAFETY: pollfds holds the live sockets' descriptors.
        let r = unsafe { libc::poll(pollfds.as_mut_ptr(), pollfds.len() as libc::nfds_t, 10) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
    Ok(())
}

/// Microseconds, for text.
fn us(ns: u64) -> String {
    format!("{:.1}", ns as f64 / 1000.0)
}

/// A line of text for a report.
pub fn summary(r: &SinkReport) -> String {
    let mut s = format!(
        "sink {} on {} (XDP {} mode{}): {} frames, {} bytes",
        match r.mode {
            SinkMode::Count => "count",
            SinkMode::Afxdp => "afxdp",
        },
        r.iface,
        r.xdp_mode,
        r.afxdp
            .as_ref()
            .map(|b| format!(", AF_XDP {b} mode"))
            .unwrap_or_default(),
        r.counts.packets,
        r.counts.bytes
    );
    if r.active_seconds > 0.0 {
        s += &format!(" in {:.2} s = {:.0} pps", r.active_seconds, r.pps);
    }
    if let Some(l) = &r.latency {
        s += &format!(
            "\n  {} stamped, {} later fragments, sequence {}..{}, {} lost, {} reordered\n  \
             one-way latency µs: p50 {} p90 {} p99 {} p99.9 {} max {} (min {}, mean {:.1})",
            l.stamped,
            l.later_fragments,
            l.first_seq.map_or("-".into(), |v| v.to_string()),
            l.last_seq.map_or("-".into(), |v| v.to_string()),
            l.lost,
            l.reordered,
            us(l.p50_ns),
            us(l.p90_ns),
            us(l.p99_ns),
            us(l.p999_ns),
            us(l.max_ns),
            us(l.min_ns),
            l.mean_ns / 1000.0
        );
        if l.clock_errors > 0 {
            s += &format!(
                "\n  {} stamps from the future: generator and sink must share this host's clock",
                l.clock_errors
            );
        }
    }
    if r.counts.no_socket > 0 {
        s += &format!(
            "\n  {} frames found no AF_XDP socket on their queue",
            r.counts.no_socket
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::FrameSpec;
    use std::net::Ipv4Addr;

    fn frame(seq: u64, sent: u64) -> Vec<u8> {
        let spec = FrameSpec {
            dst_mac: [2, 0, 0, 0, 0, 1],
            src_mac: [2, 0, 0, 0, 0, 2],
            src: Ipv4Addr::new(10, 1, 0, 1),
            dst: Ipv4Addr::new(10, 2, 0, 2),
            sport: 10000,
            dport: 9000,
            size: 64,
            fragments: 1,
            flows: 1,
            src_addrs: 1,
        };
        let mut f = spec.datagram(0, 0).remove(0);
        wire::set_seq(&mut f, seq);
        wire::set_time(&mut f, sent);
        f
    }

    #[test]
    fn loss_reordering_and_percentiles() {
        let mut t = Tracker::new();
        // 0..100 with 50 missing and 60 arriving after 61.
        for seq in (0..100u64).filter(|s| *s != 50 && *s != 60) {
            t.frame(&frame(seq, 1_000), 9000, 1_000 + 1_000 * (seq + 1));
            if seq == 61 {
                t.frame(&frame(60, 1_000), 9000, 500_000);
            }
        }
        t.frame(&frame(100, 10_000), 9000, 5_000); // from the future
        t.frame(&frame(101, 0), 9001, 5_000); // another port
        let r = t.report();
        assert_eq!(r.stamped, 100);
        assert_eq!(r.lost, 1, "sequence number 50 never came");
        assert_eq!(r.reordered, 1);
        assert_eq!(r.clock_errors, 1);
        assert_eq!((r.first_seq, r.last_seq), (Some(0), Some(100)));
        // Latencies 1..100 µs but 50: the median is about 50 µs.
        assert!((49_000..=52_000).contains(&r.p50_ns), "{}", r.p50_ns);
        assert!(r.p99_ns >= 98_000 && r.max_ns >= 499_000, "{r:?}");
    }
}
