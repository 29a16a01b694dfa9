//! `xdpip-bench compare`: the kernel router, in-kernel XDP forwarding and
//! xdpip on the same veth topology, with the same generator and sink, in
//! one run.
//!
//! ```text
//!  gen eth0 ──── eth0 [dut] eth1 ──── eth0 sink
//!  10.1.0.1      10.1.0.2   10.2.0.1  10.2.0.2
//! ```
//!
//! Systems, one at a time in dut:
//! * `kernel`: Linux forwarding (ip_forward=1), nothing attached;
//! * `xdp`: bench/ebpf/xdp_fwd.bpf.c on dut's eth0 and eth1: bpf_fib_lookup
//!   and a devmap redirect, as xdp-tools' xdp-forward does it;
//! * `engine`: `xdpip run --json -i eth0 -i eth1 --cores DUT_CORE`.
//!
//! Placement (2 cores): the receive path of dut's eth0 runs in a threaded
//! NAPI kernel thread pinned to the DUT core, and xdpip's worker runs there
//! too, so each system has exactly one core for all of its work; the
//! generator, the sink's NAPI thread and its AF_XDP reader share the other
//! core (see topo.rs), the sink's threads in SCHED_FIFO so that a generator
//! running flat out never starves them: the sink must not be what limits a
//! run (`dropped_towards_sink` says when it did). The generator, dut's NAPI
//! thread and xdpip run at nice -20, so that other work on the machine
//! (builds) takes about 1% of their cores.
//!
//! Measurements, each repeated (`--repeat`), the systems taking turns
//! within each repetition so that background load falls on all alike; the
//! median is reported:
//! * rate: the generator (XDP live frames by default: dut then receives
//!   frames the way a NIC driver's XDP path does) sends as fast as it can
//!   for 0.5 s of warm-up plus `--seconds`; the forwarding rate is what the
//!   counting sink receives per second over the measured window;
//! * latency: the generator (AF_XDP by default: it paces finely) is paced
//!   at each `--loads` percentage of the kernel router's median rate, and
//!   the AF_XDP sink records one-way latency.

use crate::ebpf::{chain, Loaded, FWD_OBJECT};
use crate::gen::{self, GenConfig, GenMode, GenReport, Result, Transmitter, ZeroCopy};
use crate::sink::{Latency, Sink, SinkConfig, SinkMode};
use crate::wire::FrameSpec;
use crate::{plot, sys, topo};
use clap::{Args, ValueEnum};
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use testbed::{addr, mac_of, Child, Topology};

/// Nice value of the generator, dut's NAPI thread and xdpip: other work on
/// the machine (builds) gets about 1% of their cores while they run.
const NICE: i32 = -20;

/// A router under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum System {
    /// The Linux kernel as router.
    Kernel,
    /// In-kernel XDP forwarding (bpf_fib_lookup + devmap redirect).
    Xdp,
    /// xdpip.
    Engine,
}

impl System {
    /// Its name in tables.
    pub fn label(self) -> &'static str {
        match self {
            System::Kernel => "kernel router",
            System::Xdp => "XDP forward",
            System::Engine => "xdpip",
        }
    }
}

/// Options of `compare`.
#[derive(Args, Debug)]
pub struct CompareArgs {
    /// A smoke run: one repetition, 1 s per measurement (for CI).
    #[arg(long)]
    pub quick: bool,
    /// Repetitions of every measurement; the median is reported.
    #[arg(long, default_value_t = 3)]
    pub repeat: usize,
    /// Seconds of each rate measurement (after 0.5 s of warm-up).
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
    /// Seconds of each latency measurement.
    #[arg(long, default_value_t = 3.0)]
    pub latency_seconds: f64,
    /// Ethernet frame size with FCS.
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Flows (source ports).
    #[arg(long, default_value_t = 16)]
    pub flows: u32,
    /// How the generator transmits in the rate runs. `live` (XDP frames)
    /// hands dut frames as a NIC driver's XDP path sees them; `afxdp` in
    /// copy mode hands it skbs already built on the generator's core.
    #[arg(long, value_enum, default_value = "live")]
    pub gen_mode: GenMode,
    /// How the generator transmits in the latency runs: `afxdp` paces in
    /// 50 µs bursts, `live` only in 100 ms bursts.
    #[arg(long, value_enum, default_value = "afxdp")]
    pub latency_gen_mode: GenMode,
    /// Systems to measure, comma separated.
    #[arg(long, value_enum, value_delimiter = ',', default_values = ["kernel", "xdp", "engine"])]
    pub systems: Vec<System>,
    /// Loads for the latency runs, in % of the kernel router's rate.
    #[arg(long, value_delimiter = ',', default_values_t = [10u32, 50, 90])]
    pub loads: Vec<u32>,
    /// The 100% of --loads in frames/s, instead of the kernel's measured
    /// rate (needed when `kernel` is not among --systems).
    #[arg(long)]
    pub base_rate: Option<f64>,
    /// Core of the generator, the sink's NAPI thread and its reader.
    #[arg(long, default_value_t = 0)]
    pub load_core: usize,
    /// Core of the router under test: dut's NAPI thread and xdpip's worker.
    #[arg(long, default_value_t = 1)]
    pub dut_core: usize,
    /// Core of xdpip's worker, if not --dut-core.
    #[arg(long)]
    pub engine_core: Option<usize>,
    /// Also write the results as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Also write a PNG plot (rates, latency percentiles) to this file.
    #[arg(long, value_name = "FILE")]
    pub png: Option<PathBuf>,
    /// The xdpip binary (default: next to this one).
    #[arg(long)]
    pub xdpip: Option<PathBuf>,
    /// An extra argument for `xdpip run` (repeat for more).
    #[arg(long = "engine-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub engine_args: Vec<String>,
}

/// One rate measurement.
#[derive(Debug, Clone, Serialize)]
pub struct RateRun {
    /// System.
    pub system: System,
    /// Repetition.
    pub rep: usize,
    /// Frames per second the sink received over the measured window.
    pub forwarded_pps: f64,
    /// Frames per second the generator offered (sent + refused).
    pub offered_pps: f64,
    /// Frames per second dut's eth0 accepted from the generator.
    pub accepted_pps: f64,
    /// Frames the generator sent (accepted) in the whole run.
    pub gen_sent: u64,
    /// Frames the sink counted in the whole run.
    pub sink_received: u64,
    /// Frames dut could not hand to the sink's interface (dut eth1: TX
    /// dropped and XDP transmit errors): a sink that does not keep up.
    pub dropped_towards_sink: u64,
    /// Busy fraction of each CPU over the window (everything on the
    /// machine, other builds included).
    pub cpu_busy: Vec<f64>,
    /// Share of a core dut's NAPI thread used over the window.
    pub dut_napi_cpu: f64,
    /// Share of a core xdpip used over the window (all its threads).
    pub engine_cpu: Option<f64>,
    /// xdpip's counters at exit: forwarded, and drops by reason.
    pub engine: Option<Value>,
}

/// One latency measurement.
#[derive(Debug, Clone, Serialize)]
pub struct LatencyRun {
    /// System.
    pub system: System,
    /// Repetition.
    pub rep: usize,
    /// % of the base rate.
    pub load_pct: u32,
    /// Generator's target, frames/s.
    pub target_pps: f64,
    /// What the generator achieved.
    pub sent_pps: f64,
    /// What the sink saw.
    pub latency: Latency,
}

/// Medians of a system.
#[derive(Debug, Clone, Serialize)]
pub struct SystemSummary {
    /// System.
    pub system: System,
    /// Median forwarding rate, frames/s.
    pub rate_pps: Option<f64>,
    /// Every run's rate.
    pub rate_runs: Vec<f64>,
    /// Per load: median p50, p90, p99, p99.9, max (ns), lost, reordered.
    pub latency: BTreeMap<u32, LatencySummary>,
}

/// Medians of a system's latency runs at one load.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct LatencySummary {
    /// Target rate.
    pub target_pps: f64,
    /// p50, ns.
    pub p50_ns: u64,
    /// p90, ns.
    pub p90_ns: u64,
    /// p99, ns.
    pub p99_ns: u64,
    /// p99.9, ns.
    pub p999_ns: u64,
    /// max, ns.
    pub max_ns: u64,
    /// Lost frames, summed over runs.
    pub lost: u64,
    /// Reordered frames, summed over runs.
    pub reordered: u64,
    /// Frames stamped, summed over runs.
    pub received: u64,
}

fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

fn median_u64(v: impl Iterator<Item = u64>) -> u64 {
    let mut v: Vec<f64> = v.map(|x| x as f64).collect();
    median(&mut v).unwrap_or(0.0) as u64
}

type GenThread = std::thread::JoinHandle<(Option<Transmitter>, Result<GenReport>)>;

/// What is running in dut.
enum Running {
    Kernel,
    Xdp(Box<Loaded>),
    Engine(Box<Child>),
}

struct Bench {
    t: Topology,
    /// The sink, AF_XDP sockets bound once (see gen::Transmitter); lent to
    /// a thread in sink's namespace to switch programs.
    sink: Option<Sink>,
    /// The generator's socket, lent to each run's thread.
    tx: Option<Transmitter>,
    spec: FrameSpec,
    args: Resolved,
    dut_napi: i32,
    xdpip: Option<PathBuf>,
    stop: Arc<AtomicBool>,
    afxdp_mode: Option<String>,
}

/// The options after --quick.
#[derive(Debug, Clone, Serialize)]
struct Resolved {
    repeat: usize,
    seconds: f64,
    latency_seconds: f64,
    warmup: f64,
    size: usize,
    flows: u32,
    gen_mode: GenMode,
    latency_gen_mode: GenMode,
    systems: Vec<System>,
    loads: Vec<u32>,
    load_core: usize,
    dut_core: usize,
    engine_core: usize,
    engine_args: Vec<String>,
}

impl Bench {
    fn sink(&self) -> &Sink {
        self.sink
            .as_ref()
            .expect("the sink is back from its namespace")
    }

    /// Switches the sink's XDP program, from a thread in its namespace.
    fn sink_program(&mut self, mode: SinkMode) -> Result<()> {
        let mut s = self.sink.take().expect("the sink is here");
        let (s, r) = self.t.sink.run(move || {
            let r = s.use_program(mode);
            (s, r)
        })?;
        self.sink = Some(s);
        r
    }

    fn check_stop(&self) -> Result<()> {
        if self.stop.load(Ordering::Relaxed) {
            return Err("interrupted".into());
        }
        Ok(())
    }

    /// Brings `system` up in dut.
    fn setup(&mut self, system: System) -> Result<Running> {
        match system {
            System::Kernel => Ok(Running::Kernel),
            System::Xdp => {
                let loaded = self.t.dut.run(|| -> Result<Loaded> {
                    let mut l = Loaded::load(FWD_OBJECT, "xdp_fwd.bpf.o", &["xdp_fwd"])?;
                    let mut ports: aya::maps::DevMapHash<aya::maps::MapData> =
                        l.take_map("tx_ports")?;
                    let mut idx = Vec::new();
                    for ifname in ["eth0", "eth1"] {
                        let i = sys::iface(None, ifname)?.ifindex;
                        ports
                            .insert(i, i, None, 0)
                            .map_err(|e| format!("BPF map tx_ports: {}", chain(&e)))?;
                        idx.push((ifname, i));
                    }
                    for (ifname, i) in idx {
                        l.attach("xdp_fwd", ifname, i, true)?;
                    }
                    // The map lives on in the kernel with the program.
                    drop(ports);
                    Ok(l)
                })??;
                Ok(Running::Xdp(Box::new(loaded)))
            }
            System::Engine => {
                let xdpip = self.xdpip.as_ref().ok_or("no xdpip binary")?;
                let mut cmd = self.t.dut.command("nice");
                cmd.args(["-n", &NICE.to_string()])
                    .arg(xdpip)
                    .args(["run", "--json", "-i", "eth0", "-i", "eth1", "--cores"])
                    .arg(self.args.engine_core.to_string())
                    .args(&self.args.engine_args);
                let mut child = Child::spawn(cmd)?;
                let line = child
                    .wait_for_line(Duration::from_secs(30), |l| {
                        l.contains("\"event\":\"started\"")
                    })
                    .map_err(|e| format!("xdpip did not start: {e}"))?;
                let started: Value = serde_json::from_str(&line)?;
                if let Some(m) = started["mode"]["afxdp"].as_str() {
                    self.afxdp_mode = Some(m.to_string());
                }
                std::thread::sleep(Duration::from_millis(300));
                Ok(Running::Engine(Box::new(child)))
            }
        }
    }

    /// Takes `system` down; for xdpip, returns its final counters.
    fn teardown(&self, r: Running) -> Result<Option<Value>> {
        match r {
            Running::Kernel => Ok(None),
            Running::Xdp(l) => {
                drop(l);
                Ok(None)
            }
            Running::Engine(mut child) => {
                child.signal(libc::SIGTERM);
                let st = child.wait(Duration::from_secs(20))?;
                if !st.success() {
                    return Err(
                        format!("xdpip exited with {st}: {}", child.stderr().join("\n")).into(),
                    );
                }
                let report: Value = child
                    .stdout()
                    .iter()
                    .find(|l| l.contains("\"event\":\"stopped\""))
                    .map(|l| serde_json::from_str(l))
                    .transpose()?
                    .ok_or("xdpip printed no final report")?;
                let drops: BTreeMap<String, u64> = report["drops"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_u64().filter(|x| *x > 0)?)))
                    .collect();
                let sockets: Vec<Value> = report["workers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .flat_map(|w| w["sockets"].as_array().cloned().unwrap_or_default())
                    .collect();
                Ok(Some(json!({
                    "forwarded": report["mib"]["ForwDatagrams"],
                    "redirect_forward": report["xdp"]["redirect_forward"],
                    "drops": drops,
                    "sockets": sockets,
                    "sleeps": report["workers"][0]["sleeps"],
                    "wakeups": report["workers"][0]["wakeups"],
                    "batches": report["workers"][0]["batches"],
                })))
            }
        }
    }

    fn gen_config(&self, rate: Option<f64>, seconds: f64) -> GenConfig {
        GenConfig {
            iface: "eth0".into(),
            queue: 0,
            // Rate runs send flat out; latency runs are paced.
            mode: if rate.is_none() {
                self.args.gen_mode
            } else {
                self.args.latency_gen_mode
            },
            spec: self.spec.clone(),
            rate,
            duration: Duration::from_secs_f64(seconds),
            count: None,
            batch: 64,
            zero_copy: ZeroCopy::Auto,
            core: Some(self.args.load_core),
        }
    }

    /// Starts the generator on a thread in gen's namespace; [`Self::join_gen`]
    /// waits for it.
    fn start_gen(&mut self, rate: Option<f64>, seconds: f64) -> Result<GenThread> {
        let cfg = self.gen_config(rate, seconds);
        let stop = self.stop.clone();
        let mut tx = self.tx.take();
        Ok(self.t.gen.spawn(move || {
            let r = topo::set_nice(0, NICE)
                .map_err(|e| e.into())
                .and_then(|()| gen::run_with(&cfg, tx.as_mut(), &stop));
            (tx, r)
        })?)
    }

    fn join_gen(&mut self, h: GenThread) -> Result<GenReport> {
        let (tx, r) = h.join().map_err(|_| "generator thread panicked")?;
        self.tx = tx;
        r
    }

    fn towards_sink_drops(&self) -> Result<u64> {
        let ns = Some(self.t.dut.name());
        let link = sys::link_counters(ns, "eth1")?;
        let stats = sys::ethtool_stats(ns, "eth1");
        Ok(link.tx_dropped + sys::stat_sum(&stats, "tx_queue_", "_xdp_xmit_errors"))
    }

    fn rate_run(&mut self, system: System, rep: usize) -> Result<RateRun> {
        let running = self.setup(system)?;
        let engine_pid = match &running {
            Running::Engine(c) => Some(c.pid()),
            _ => None,
        };
        let mut measure = || -> Result<RateRun> {
            let drops0 = self.towards_sink_drops()?;
            let total0 = self.sink().counts()?.packets;
            let warm = self.args.warmup;
            let h = self.start_gen(None, warm + self.args.seconds + 0.2)?;
            std::thread::sleep(Duration::from_secs_f64(warm));
            let (c1, t1, cpu1) = (self.sink().counts()?, Instant::now(), topo::cpu_times());
            let napi1 = topo::cpu_ticks(self.dut_napi);
            let eng1 = engine_pid.and_then(topo::cpu_ticks);
            std::thread::sleep(Duration::from_secs_f64(self.args.seconds));
            let (c2, t2, cpu2) = (self.sink().counts()?, Instant::now(), topo::cpu_times());
            let napi2 = topo::cpu_ticks(self.dut_napi);
            let eng2 = engine_pid.and_then(topo::cpu_ticks);
            let g = self.join_gen(h)?;
            std::thread::sleep(Duration::from_millis(300));
            let total = self.sink().counts()?.packets - total0;
            let secs = (t2 - t1).as_secs_f64();
            let share = |a: Option<u64>, b: Option<u64>| match (a, b) {
                (Some(a), Some(b)) => Some((b - a) as f64 / topo::ticks_per_second() / secs),
                _ => None,
            };
            Ok(RateRun {
                system,
                rep,
                forwarded_pps: (c2.packets - c1.packets) as f64 / secs,
                offered_pps: (g.sent + g.refused) as f64 / g.seconds.max(1e-9),
                accepted_pps: g.pps,
                gen_sent: g.sent,
                sink_received: total,
                dropped_towards_sink: self.towards_sink_drops()? - drops0,
                cpu_busy: topo::busy_between(&cpu1, &cpu2),
                dut_napi_cpu: share(napi1, napi2).unwrap_or(0.0),
                engine_cpu: share(eng1, eng2),
                engine: None,
            })
        };
        let result = measure();
        let engine = self.teardown(running)?;
        let mut r = result?;
        r.engine = engine;
        Ok(r)
    }

    fn latency_runs(
        &mut self,
        system: System,
        rep: usize,
        base: f64,
        out: &mut Vec<LatencyRun>,
    ) -> Result<()> {
        let running = self.setup(system)?;
        let mut measure = || -> Result<()> {
            for load in self.args.loads.clone() {
                self.check_stop()?;
                let rate = base * load as f64 / 100.0;
                // Start afresh: whatever came before is not this run's.
                self.sink().take_latency();
                let h = self.start_gen(Some(rate), self.args.latency_seconds)?;
                let g = self.join_gen(h)?;
                let latency = self
                    .sink()
                    .take_latency()
                    .ok_or("the sink has no AF_XDP reader")?;
                println!(
                    "  {:<14} {:>3}% load ({:>8.0} pps): p50 {:>7.1} µs  p99 {:>8.1} µs  \
                     p99.9 {:>8.1} µs  lost {}",
                    system.label(),
                    load,
                    rate,
                    latency.p50_ns as f64 / 1e3,
                    latency.p99_ns as f64 / 1e3,
                    latency.p999_ns as f64 / 1e3,
                    latency.lost
                );
                out.push(LatencyRun {
                    system,
                    rep,
                    load_pct: load,
                    target_pps: rate,
                    sent_pps: g.pps,
                    latency,
                });
            }
            Ok(())
        };
        let result = measure();
        self.teardown(running)?;
        result
    }
}

fn mode_name(m: GenMode) -> &'static str {
    match m {
        GenMode::Afxdp => "AF_XDP",
        GenMode::Live => "XDP live-frames",
    }
}

fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown".to_string(), |(_, v)| v.trim().to_string());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let hypervisor = cpuinfo.contains(" hypervisor");
    let load: Vec<f64> = std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .filter_map(|x| x.parse().ok())
        .collect();
    json!({"cpu": model, "cores": cores, "kernel": kernel, "virtual_machine": hypervisor,
           "loadavg_at_start": load, "driver": "veth"})
}

fn unix_time() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A date as `YYYY-MM-DD HH:MM UTC`.
fn utc(secs: u64) -> String {
    let days = (secs / 86400) as i64;
    let (h, m) = ((secs % 86400) / 3600, (secs % 3600) / 60);
    // Civil from days (H. Hinnant).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{m:02} UTC")
}

/// Runs `compare`.
pub fn run(a: CompareArgs) -> Result<()> {
    if !sys::is_root() {
        return Err(
            "needs root: it creates network namespaces, attaches XDP programs and opens \
                    AF_XDP sockets"
                .into(),
        );
    }
    let mut systems = a.systems.clone();
    systems.sort();
    systems.dedup();
    if systems.is_empty() {
        return Err("--systems names none".into());
    }
    let cores = core_affinity::get_core_ids().unwrap_or_default().len();
    for (name, c) in [
        ("--load-core", a.load_core),
        ("--dut-core", a.dut_core),
        ("--engine-core", a.engine_core.unwrap_or(a.dut_core)),
    ] {
        if c >= cores {
            return Err(format!("{name} {c}: this machine has cores 0..{}", cores - 1).into());
        }
    }
    if a.load_core == a.dut_core {
        eprintln!(
            "xdpip-bench compare: warning: --load-core and --dut-core are both {}: generator, \
             sink and router share one core",
            a.dut_core
        );
    }
    let args = Resolved {
        repeat: if a.quick { 1 } else { a.repeat.max(1) },
        seconds: if a.quick { 1.0 } else { a.seconds.max(0.1) },
        latency_seconds: if a.quick {
            1.0
        } else {
            a.latency_seconds.max(0.1)
        },
        warmup: if a.quick { 0.3 } else { 0.5 },
        size: a.size,
        flows: a.flows,
        gen_mode: a.gen_mode,
        latency_gen_mode: a.latency_gen_mode,
        systems: systems.clone(),
        loads: a.loads.clone(),
        load_core: a.load_core,
        dut_core: a.dut_core,
        engine_core: a.engine_core.unwrap_or(a.dut_core),
        engine_args: a.engine_args.clone(),
    };
    let xdpip = if systems.contains(&System::Engine) {
        Some(crate::demo::find_xdpip(a.xdpip.clone()).map_err(|e| e.to_string())?)
    } else {
        None
    };
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone())
            .map_err(|e| format!("installing a signal handler: {e}"))?;
    }
    let started = unix_time();
    let command: Vec<String> = std::env::args().collect();
    let machine = machine();
    println!(
        "xdpip-bench compare, {} — {} ({} cores{}), Linux {}",
        utc(started),
        machine["cpu"].as_str().unwrap_or("?"),
        machine["cores"],
        if machine["virtual_machine"] == true {
            ", virtual machine"
        } else {
            ""
        },
        machine["kernel"].as_str().unwrap_or("?")
    );
    println!("building gen ⇄ dut ⇄ sink on veth pairs in new network namespaces");
    let t = Topology::gen_dut_sink(1)?;
    // Frames from dut to sink must be GRO-eligible for the sink's XDP
    // program to see them: no TSO on dut's interfaces (tx off drops it).
    // gen and sink too, as the method in docs/PERFORMANCE.md says (the
    // testbed keeps veth's default offloads): every interface that sends
    // towards an XDP program. The generator's UDP checksum is zero, so
    // this changes no checksum work, only which frames NAPI sees.
    for (ns, i) in [
        (&t.dut, "eth0"),
        (&t.dut, "eth1"),
        (&t.gen, "eth0"),
        (&t.sink, "eth0"),
    ] {
        testbed::disable_tx_checksum(ns, i)?;
    }
    if !t.warm_up() {
        return Err("the topology does not route even through the kernel".into());
    }
    let dut_napi = topo::threaded_napi(&t.dut, "eth0", a.dut_core, topo::Sched::Nice(NICE))?;
    let sink_napi = topo::threaded_napi(&t.sink, "eth0", a.load_core, topo::Sched::Fifo)?;
    println!(
        "placement: generator (nice {NICE}), sink NAPI thread (pid {sink_napi}) and sink reader \
         (both SCHED_FIFO) on core {}; dut's NAPI thread (pid {dut_napi}, nice {NICE}) on core \
         {}{}",
        a.load_core,
        a.dut_core,
        if xdpip.is_some() {
            format!(
                "; xdpip's worker (nice {NICE}) on core {}",
                args.engine_core
            )
        } else {
            String::new()
        }
    );
    let spec = FrameSpec {
        dst_mac: mac_of(&t.dut, "eth0")?,
        src_mac: mac_of(&t.gen, "eth0")?,
        src: addr::GEN,
        dst: addr::SINK,
        sport: 10000,
        dport: 9000,
        size: a.size,
        fragments: 1,
        flows: a.flows,
        src_addrs: 1,
    };
    spec.validate(Some(1500))?;
    // One sink and one generator socket for the whole run, bound now.
    let sink_cfg = SinkConfig {
        iface: "eth0".into(),
        mode: SinkMode::Afxdp,
        port: spec.dport,
        core: Some(a.load_core),
        native_only: true,
        fifo: true,
    };
    let sink = t.sink.run(move || Sink::start(&sink_cfg))??;
    let tx = if [a.gen_mode, a.latency_gen_mode].contains(&GenMode::Afxdp) {
        let size = Transmitter::frame_size_for(&spec)?;
        Some(
            t.gen
                .run(move || Transmitter::open("eth0", 0, ZeroCopy::Auto, size))??,
        )
    } else {
        None
    };
    let mut b = Bench {
        sink: Some(sink),
        tx,
        t,
        spec,
        args: args.clone(),
        dut_napi,
        xdpip,
        stop,
        afxdp_mode: None,
    };

    // Rates.
    b.sink_program(SinkMode::Count)?;
    println!(
        "\nforwarding rate: {} generator at full speed, {}-byte frames, {} flows; {} × {} s \
         per system, taking turns",
        mode_name(args.gen_mode),
        args.size,
        args.flows,
        args.repeat,
        args.seconds
    );
    let mut rates = Vec::new();
    for rep in 0..args.repeat {
        for &s in &systems {
            b.check_stop()?;
            let r = b.rate_run(s, rep)?;
            println!(
                "  {:<14} run {}: {:>6.3} Mpps forwarded ({:.3} offered, {:.3} accepted by \
                 dut); CPU busy {}; dut NAPI thread {:.0}%{}",
                s.label(),
                rep + 1,
                r.forwarded_pps / 1e6,
                r.offered_pps / 1e6,
                r.accepted_pps / 1e6,
                r.cpu_busy
                    .iter()
                    .enumerate()
                    .map(|(i, x)| format!("cpu{i} {:.0}%", x * 100.0))
                    .collect::<Vec<_>>()
                    .join(" "),
                r.dut_napi_cpu * 100.0,
                r.engine_cpu
                    .map(|e| format!(", xdpip {:.0}%", e * 100.0))
                    .unwrap_or_default()
            );
            if r.dropped_towards_sink > r.sink_received / 100 {
                println!(
                    "    warning: {} frames could not be handed to the sink: the sink, not \
                     the router, limited this run",
                    r.dropped_towards_sink
                );
            }
            if let Some(e) = &r.engine {
                let drops = &e["drops"];
                if drops.as_object().is_some_and(|d| !d.is_empty()) {
                    println!("    xdpip drops: {drops}");
                }
            }
            rates.push(r);
        }
    }
    b.sink_program(SinkMode::Afxdp)?;

    let mut summary: Vec<SystemSummary> = systems
        .iter()
        .map(|&s| {
            let mut runs: Vec<f64> = rates
                .iter()
                .filter(|r| r.system == s)
                .map(|r| r.forwarded_pps)
                .collect();
            let rate_runs = runs.clone();
            SystemSummary {
                system: s,
                rate_pps: median(&mut runs),
                rate_runs,
                latency: BTreeMap::new(),
            }
        })
        .collect();
    let rate_of = |sum: &[SystemSummary], s: System| {
        sum.iter().find(|x| x.system == s).and_then(|x| x.rate_pps)
    };
    let base = a.base_rate.or(rate_of(&summary, System::Kernel));

    // Latency.
    let mut lat = Vec::new();
    match base {
        Some(base) if !args.loads.is_empty() => {
            println!(
                "\none-way latency: AF_XDP sink, {} generator paced at {} % of {:.0} pps{}; {} \
                 × {} s per load",
                mode_name(args.latency_gen_mode),
                args.loads
                    .iter()
                    .map(|l| l.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                base,
                if a.base_rate.is_some() {
                    " (--base-rate)"
                } else {
                    " (the kernel router's rate)"
                },
                args.repeat,
                args.latency_seconds
            );
            for rep in 0..args.repeat {
                for &s in &systems {
                    b.check_stop()?;
                    b.latency_runs(s, rep, base, &mut lat)?;
                }
            }
        }
        _ => println!("\nno latency runs: no base rate (measure `kernel` or pass --base-rate)"),
    }
    for sum in summary.iter_mut() {
        for &load in &args.loads {
            let runs: Vec<&LatencyRun> = lat
                .iter()
                .filter(|r| r.system == sum.system && r.load_pct == load)
                .collect();
            if runs.is_empty() {
                continue;
            }
            sum.latency.insert(
                load,
                LatencySummary {
                    target_pps: runs[0].target_pps,
                    p50_ns: median_u64(runs.iter().map(|r| r.latency.p50_ns)),
                    p90_ns: median_u64(runs.iter().map(|r| r.latency.p90_ns)),
                    p99_ns: median_u64(runs.iter().map(|r| r.latency.p99_ns)),
                    p999_ns: median_u64(runs.iter().map(|r| r.latency.p999_ns)),
                    max_ns: median_u64(runs.iter().map(|r| r.latency.max_ns)),
                    lost: runs.iter().map(|r| r.latency.lost).sum(),
                    reordered: runs.iter().map(|r| r.latency.reordered).sum(),
                    received: runs.iter().map(|r| r.latency.stamped).sum(),
                },
            );
        }
    }

    // The table.
    let kernel = rate_of(&summary, System::Kernel);
    let xdp = rate_of(&summary, System::Xdp);
    let ratio = |x: Option<f64>, y: Option<f64>| match (x, y) {
        (Some(x), Some(y)) if y > 0.0 => Some(x / y),
        _ => None,
    };
    let fmt_ratio = |r: Option<f64>| r.map_or("-".to_string(), |r| format!("{r:.2}"));
    println!(
        "\n== forwarding rate ({}-byte frames, {} flows, median of {} × {} s)",
        args.size, args.flows, args.repeat, args.seconds
    );
    println!(
        "{:<14} {:>9} {:>9} {:>9}   runs (Mpps)",
        "system", "Mpps", "/kernel", "/xdp"
    );
    for s in &summary {
        println!(
            "{:<14} {:>9} {:>9} {:>9}   {}",
            s.system.label(),
            s.rate_pps.map_or("-".into(), |r| format!("{:.3}", r / 1e6)),
            fmt_ratio(ratio(s.rate_pps, kernel)),
            fmt_ratio(ratio(s.rate_pps, xdp)),
            s.rate_runs
                .iter()
                .map(|r| format!("{:.3}", r / 1e6))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    if !lat.is_empty() {
        println!(
            "\n== one-way latency in µs (median of {} × {} s per load)",
            args.repeat, args.latency_seconds
        );
        println!(
            "{:<14} {:>5} {:>9} {:>8} {:>8} {:>8} {:>8} {:>9} {:>6} {:>7}",
            "system", "load", "pps", "p50", "p90", "p99", "p99.9", "max", "lost", "reorder"
        );
        for s in &summary {
            for (load, l) in &s.latency {
                let us = |ns: u64| format!("{:.1}", ns as f64 / 1e3);
                println!(
                    "{:<14} {:>4}% {:>9.0} {:>8} {:>8} {:>8} {:>8} {:>9} {:>6} {:>7}",
                    s.system.label(),
                    load,
                    l.target_pps,
                    us(l.p50_ns),
                    us(l.p90_ns),
                    us(l.p99_ns),
                    us(l.p999_ns),
                    us(l.max_ns),
                    l.lost,
                    l.reordered
                );
            }
        }
    }

    // Targets.
    let engine = rate_of(&summary, System::Engine);
    let p99_at = |s: System, load: u32| {
        summary
            .iter()
            .find(|x| x.system == s)
            .and_then(|x| x.latency.get(&load))
            .map(|l| l.p99_ns as f64)
    };
    let targets = json!({
        "engine_over_kernel_rate": {"target": 1.2, "measured": ratio(engine, kernel)},
        "engine_over_xdp_rate": {"target": 0.5, "measured": ratio(engine, xdp)},
        "engine_over_kernel_p99_at_50pct": {"target_at_most": 1.0,
            "measured": ratio(p99_at(System::Engine, 50), p99_at(System::Kernel, 50))},
    });
    println!("\n== targets (xdpip)");
    let verdict = |m: Option<f64>, ok: &dyn Fn(f64) -> bool| match m {
        Some(m) if ok(m) => format!("{m:.2} (met)"),
        Some(m) => format!("{m:.2} (missed)"),
        None => "not measured".into(),
    };
    println!(
        "  rate / kernel router   ≥ 1.2 : {}",
        verdict(ratio(engine, kernel), &|m| m >= 1.2)
    );
    println!(
        "  rate / XDP forward     ≥ 0.5 : {}",
        verdict(ratio(engine, xdp), &|m| m >= 0.5)
    );
    println!(
        "  p99 at 50% / kernel's  ≤ 1.0 : {}",
        verdict(
            ratio(p99_at(System::Engine, 50), p99_at(System::Kernel, 50)),
            &|m| m <= 1.0
        )
    );
    let load_end: Vec<f64> = std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .filter_map(|x| x.parse().ok())
        .collect();
    println!(
        "\nAF_XDP in {} mode on veth; load average at start {}, at end {} (other work on the \
         machine shares these cores)",
        b.afxdp_mode.as_deref().unwrap_or("copy"),
        machine["loadavg_at_start"],
        json!(load_end)
    );

    let result = json!({
        "command": command.join(" "),
        "date": utc(started),
        "unix_time": started,
        "duration_seconds": unix_time() - started,
        "machine": machine,
        "loadavg_at_end": load_end,
        "config": args,
        "placement": {
            "load_core": a.load_core, "dut_core": a.dut_core,
            "generator": a.load_core, "sink_napi_thread": a.load_core,
            "sink_reader": a.load_core, "dut_napi_thread": a.dut_core,
            "engine_worker": args.engine_core,
            "scheduling": format!("generator, dut NAPI thread, xdpip: nice {NICE}; sink NAPI \
                                   thread and sink reader: SCHED_FIFO"),
        },
        "afxdp_mode": b.afxdp_mode,
        "summary": summary,
        "targets": targets,
        "rate_runs": rates,
        "latency_runs": lat,
    });
    if let Some(path) = &a.json {
        std::fs::write(path, serde_json::to_string_pretty(&result)? + "\n")
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
        println!("wrote {}", path.display());
    }
    if let Some(path) = &a.png {
        let data = plot::PlotData {
            title: format!(
                "xdpip-bench compare, {}, {}-byte frames, Linux {}",
                utc(started),
                args.size,
                machine["kernel"].as_str().unwrap_or("")
            ),
            systems: summary
                .iter()
                .map(|s| s.system.label().to_string())
                .collect(),
            rates_mpps: summary
                .iter()
                .map(|s| {
                    (
                        s.rate_pps.unwrap_or(0.0) / 1e6,
                        s.rate_runs.iter().map(|r| r / 1e6).collect(),
                    )
                })
                .collect(),
            loads: args.loads.clone(),
            latency_us: summary
                .iter()
                .map(|s| {
                    args.loads
                        .iter()
                        .map(|l| {
                            s.latency.get(l).map(|l| {
                                [l.p50_ns, l.p90_ns, l.p99_ns, l.p999_ns].map(|x| x as f64 / 1e3)
                            })
                        })
                        .collect()
                })
                .collect(),
        };
        plot::write_png(path, &data).map_err(|e| format!("writing {}: {e}", path.display()))?;
        println!("wrote {}", path.display());
    }
    b.sink.take().expect("the sink is here").finish()?;
    println!("removing the namespaces");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&mut []), None);
        assert_eq!(median_u64([5u64, 9, 1].into_iter()), 5);
    }

    #[test]
    fn dates_are_utc() {
        assert_eq!(utc(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00 UTC");
        assert_eq!(utc(1_767_225_600 + 3_660), "2026-01-01 01:01 UTC");
    }
}
