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
//! * `floor`: the AF_XDP floor, `xdpip-bench xsk-forward` (floor.rs): the
//!   engine's AF_XDP rings, sizes, placement and idle policy, and nothing
//!   but a MAC rewrite, so that xdpip's overhead over its I/O shows;
//! * `engine`: `xdpip run --json -i eth0 -i eth1 --cores CORE`.
//!
//! Placements (`--placements`), the sink and the generator always on the
//! load core (sink's threads in SCHED_FIFO so that a generator running flat
//! out never starves them: the sink must not be what limits a run;
//! `dropped_towards_sink` says when it did):
//! * `one-core`: the receive path of dut's eth0 runs in a threaded NAPI
//!   kernel thread pinned to the DUT core, and the worker of the floor and
//!   of xdpip runs there too, so each system has exactly one core for all
//!   of its work (see topo.rs);
//! * `split`: dut's NAPI thread on `--split-napi-core` (default: the load
//!   core), the worker alone on the DUT core (floor and xdpip only);
//! * `default`: dut's eth0 NAPI not threaded, so that it runs where veth
//!   runs it by default, in softirq on the core that sends (the
//!   generator's); xdpip without `--cores`, and with `--cores C` for every
//!   core C, in the same repetition: the default placement against the
//!   best choice.
//!
//! The generator, dut's NAPI thread and the systems' processes run at nice
//! -20; the floor and xdpip start in a session of their own whose autogroup
//! is at nice -20 too (an autogroup shares a core as one task of its nice,
//! whatever the nice of its threads: at nice 0 it would have 1/88 of the
//! weight of a NAPI thread at nice -20), so that other work on the machine
//! (builds) takes about 1% of their cores and no system is favoured.
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
use std::os::unix::process::CommandExt;
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
    /// The AF_XDP floor (`xdpip-bench xsk-forward`).
    Floor,
    /// xdpip.
    Engine,
}

impl System {
    /// Its name in tables.
    pub fn label(self) -> &'static str {
        match self {
            System::Kernel => "kernel router",
            System::Xdp => "XDP forward",
            System::Floor => "AF_XDP floor",
            System::Engine => "xdpip",
        }
    }

    /// True for the systems with a user-space worker.
    fn has_worker(self) -> bool {
        matches!(self, System::Floor | System::Engine)
    }
}

/// Where dut's work runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Placement {
    /// dut's NAPI thread and the worker on the DUT core.
    OneCore,
    /// dut's NAPI thread on --split-napi-core, the worker alone on the DUT
    /// core.
    Split,
    /// dut's NAPI in softirq on the sending core (veth's own placement);
    /// xdpip without --cores against every --cores choice.
    Default,
}

impl Placement {
    /// Its name in tables.
    pub fn label(self) -> &'static str {
        match self {
            Placement::OneCore => "one-core",
            Placement::Split => "split",
            Placement::Default => "default",
        }
    }
}

/// One system in one placement: what a rate run measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Variant {
    /// System.
    pub system: System,
    /// Placement.
    pub placement: Placement,
    /// `--cores` of the worker (floor, xdpip); `None` for xdpip's default
    /// placement, and for systems without a worker.
    pub cores: Option<usize>,
}

impl Variant {
    /// Its name in tables.
    pub fn label(&self) -> String {
        match (self.placement, self.system.has_worker(), self.cores) {
            (Placement::Default, true, None) => format!("{} (no --cores)", self.system.label()),
            (Placement::Default, true, Some(c)) => {
                format!("{} --cores {c}", self.system.label())
            }
            _ => self.system.label().to_string(),
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
    #[arg(long, value_enum, value_delimiter = ',', default_values = ["kernel", "xdp", "floor", "engine"])]
    pub systems: Vec<System>,
    /// Placements to measure the rate in, comma separated (latency is
    /// measured in `one-core`).
    #[arg(long, value_enum, value_delimiter = ',', default_values = ["one-core", "split", "default"])]
    pub placements: Vec<Placement>,
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
    /// Core of the worker (floor, xdpip) in the one-core and split
    /// placements, if not --dut-core.
    #[arg(long)]
    pub engine_core: Option<usize>,
    /// Core of dut's NAPI thread in the split placement [default: the
    /// load core].
    #[arg(long)]
    pub split_napi_core: Option<usize>,
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
    /// Placement.
    pub placement: Placement,
    /// The worker's --cores (`null`: none given).
    pub cores: Option<usize>,
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
    /// Share of a core dut's NAPI thread used over the window (0 when
    /// NAPI is not threaded: default placement).
    pub dut_napi_cpu: f64,
    /// Share of a core the floor or xdpip used over the window (all its
    /// threads).
    pub engine_cpu: Option<f64>,
    /// The floor's or xdpip's counters at exit: forwarded, drops by
    /// reason, placement.
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

/// Medians of a system in a placement.
#[derive(Debug, Clone, Serialize)]
pub struct SystemSummary {
    /// System.
    pub system: System,
    /// Placement.
    pub placement: Placement,
    /// The worker's --cores (`null`: none given).
    pub cores: Option<usize>,
    /// Its name in tables.
    pub label: String,
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

/// The median of the ratios `a[i] / b[i]` of runs made in turn (run `i`
/// of one system right after run `i` of the other), and those ratios:
/// on a host whose speed drifts, each pair shares its conditions, so
/// this says more than the ratio of the two medians.
fn paired(a: &[f64], b: &[f64]) -> Option<(f64, Vec<f64>)> {
    let ratios: Vec<f64> = a
        .iter()
        .zip(b)
        .filter(|(_, &y)| y > 0.0)
        .map(|(x, y)| x / y)
        .collect();
    let mut sorted = ratios.clone();
    median(&mut sorted).map(|m| (m, ratios))
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
    /// The floor or xdpip.
    Process(Box<Child>),
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
    /// dut's NAPI thread (0 while NAPI is not threaded).
    dut_napi: i32,
    xdpip: Option<PathBuf>,
    /// This binary, for the floor.
    me: PathBuf,
    /// Where dut's NAPI runs now.
    placement: Placement,
    stop: Arc<AtomicBool>,
    afxdp_mode: Option<String>,
    /// The `started` line of the floor or xdpip running now.
    started: Option<Value>,
    /// Destination MACs of the floor: gen's eth0, sink's eth0.
    macs: [[u8; 6]; 2],
}

/// The autogroup of this process (its session) at nice -20 while it
/// lives: the generator runs in it, and at nice 0 it would get 1/88 of
/// the weight of the NAPI threads at -20 on its core. The old value is
/// put back on drop.
struct RaisedAutogroup {
    old: Option<i32>,
}

impl RaisedAutogroup {
    fn raise() -> (RaisedAutogroup, String) {
        let path = "/proc/self/autogroup";
        // "/autogroup-8 nice 0"
        let old = std::fs::read_to_string(path).ok().and_then(|s| {
            s.split_whitespace()
                .skip_while(|w| *w != "nice")
                .nth(1)?
                .parse::<i32>()
                .ok()
        });
        let note = match old {
            None => "no autogroup (kernel.sched_autogroup_enabled=0 or no CONFIG_SCHED_AUTOGROUP)"
                .to_string(),
            Some(n) => match std::fs::write(path, NICE.to_string()) {
                Ok(()) => {
                    format!("compare's own autogroup at nice {NICE} (was {n}; put back at exit)")
                }
                Err(e) => format!("compare's own autogroup left at nice {n}: {e}"),
            },
        };
        (RaisedAutogroup { old }, note)
    }
}

impl Drop for RaisedAutogroup {
    fn drop(&mut self) {
        if let Some(n) = self.old {
            let _ = std::fs::write("/proc/self/autogroup", n.to_string());
        }
    }
}

fn mac_text(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
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
    placements: Vec<Placement>,
    load_core: usize,
    dut_core: usize,
    engine_core: usize,
    split_napi_core: usize,
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

    /// Puts dut's NAPI where `placement` wants it.
    fn place_napi(&mut self, placement: Placement) -> Result<()> {
        if placement == self.placement {
            return Ok(());
        }
        let core = match placement {
            Placement::OneCore => self.args.dut_core,
            Placement::Split => self.args.split_napi_core,
            Placement::Default => {
                topo::unthreaded_napi(&self.t.dut, "eth0")?;
                self.dut_napi = 0;
                self.placement = placement;
                return Ok(());
            }
        };
        if self.dut_napi == 0 {
            self.dut_napi =
                topo::threaded_napi(&self.t.dut, "eth0", core, topo::Sched::Nice(NICE))?;
        } else {
            topo::pin_pid(self.dut_napi, core)?;
        }
        self.placement = placement;
        Ok(())
    }

    /// Brings `v` up in dut.
    fn setup(&mut self, v: Variant) -> Result<Running> {
        self.place_napi(v.placement)?;
        match v.system {
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
            System::Floor | System::Engine => {
                let mut cmd = self.t.dut.command("nice");
                cmd.args(["-n", &NICE.to_string()]);
                if v.system == System::Engine {
                    let xdpip = self.xdpip.as_ref().ok_or("no xdpip binary")?;
                    cmd.arg(xdpip)
                        .args(["run", "--json", "-i", "eth0", "-i", "eth1"])
                        .args(&self.args.engine_args);
                } else {
                    cmd.arg(&self.me).args([
                        "xsk-forward",
                        "-i",
                        "eth0",
                        "-i",
                        "eth1",
                        "--dst-mac",
                        &mac_text(self.macs[0]),
                        "--dst-mac",
                        &mac_text(self.macs[1]),
                    ]);
                }
                if let Some(c) = v.cores {
                    cmd.args(["--cores", &c.to_string()]);
                }
                // A session of its own, so an autogroup of its own, which
                // gets the nice value of the rest (see the module's doc).
                // SAFETY: setsid is async-signal-safe; nothing else runs
                // between fork and exec.
                unsafe {
                    cmd.pre_exec(|| {
                        libc::setsid();
                        Ok(())
                    })
                };
                let mut child = Child::spawn(cmd)?;
                if let Err(e) =
                    std::fs::write(format!("/proc/{}/autogroup", child.pid()), NICE.to_string())
                {
                    eprintln!("    warning: autogroup nice {NICE} for {}: {e}", v.label());
                }
                let line = child
                    .wait_for_line(Duration::from_secs(30), |l| {
                        l.contains("\"event\":\"started\"")
                    })
                    .map_err(|e| format!("{} did not start: {e}", v.label()))?;
                let started: Value = serde_json::from_str(&line)?;
                if let Some(m) = started["mode"]["afxdp"].as_str() {
                    self.afxdp_mode = Some(m.to_string());
                }
                self.started = Some(started);
                std::thread::sleep(Duration::from_millis(300));
                Ok(Running::Process(Box::new(child)))
            }
        }
    }

    /// Takes a system down; for the floor and xdpip, returns their final
    /// counters.
    fn teardown(&mut self, r: Running) -> Result<Option<Value>> {
        match r {
            Running::Kernel => Ok(None),
            Running::Xdp(l) => {
                drop(l);
                Ok(None)
            }
            Running::Process(mut child) => {
                child.signal(libc::SIGTERM);
                let st = child.wait(Duration::from_secs(20))?;
                if !st.success() {
                    return Err(format!("exited with {st}: {}", child.stderr().join("\n")).into());
                }
                let report: Value = child
                    .stdout()
                    .iter()
                    .find(|l| l.contains("\"event\":\"stopped\""))
                    .map(|l| serde_json::from_str(l))
                    .transpose()?
                    .ok_or("no final report")?;
                let started = self.started.take().unwrap_or(Value::Null);
                let placement = started["workers"][0]["placement"]
                    .as_str()
                    .or(started["placement"].as_str())
                    .map(str::to_string);
                if report.get("mib").is_none() {
                    // The floor's report.
                    let mut r = report.clone();
                    r["placement"] = placement.into();
                    return Ok(Some(r));
                }
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
                    "placement": placement,
                    "cores": report["workers"][0]["cores"],
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

    fn rate_run(&mut self, v: Variant, rep: usize) -> Result<RateRun> {
        let running = self.setup(v)?;
        let engine_pid = match &running {
            Running::Process(c) => Some(c.pid()),
            _ => None,
        };
        let dut_napi = self.dut_napi;
        let mut measure = || -> Result<RateRun> {
            let drops0 = self.towards_sink_drops()?;
            let total0 = self.sink().counts()?.packets;
            let warm = self.args.warmup;
            let h = self.start_gen(None, warm + self.args.seconds + 0.2)?;
            std::thread::sleep(Duration::from_secs_f64(warm));
            let (c1, t1, cpu1) = (self.sink().counts()?, Instant::now(), topo::cpu_times());
            let napi1 = topo::cpu_ticks(dut_napi);
            let eng1 = engine_pid.and_then(topo::cpu_ticks);
            std::thread::sleep(Duration::from_secs_f64(self.args.seconds));
            let (c2, t2, cpu2) = (self.sink().counts()?, Instant::now(), topo::cpu_times());
            let napi2 = topo::cpu_ticks(dut_napi);
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
                system: v.system,
                placement: v.placement,
                cores: v.cores,
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
        let running = self.setup(Variant {
            system,
            placement: Placement::OneCore,
            cores: system.has_worker().then_some(self.args.engine_core),
        })?;
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

/// What the plot of a `compare` run shows, read from its JSON (as
/// written by `--json`): the same for a run that just ended and for
/// `xdpip-bench plot` redrawing an old one. Errors name the missing key.
pub fn plot_data(run: &serde_json::Value) -> std::result::Result<plot::PlotData, String> {
    fn key<'a>(
        v: &'a serde_json::Value,
        k: &str,
    ) -> std::result::Result<&'a serde_json::Value, String> {
        v.get(k).ok_or_else(|| format!("no \"{k}\" in the JSON"))
    }
    let summary = key(run, "summary")?
        .as_array()
        .ok_or("\"summary\" is not a list")?;
    let config = key(run, "config")?;
    let loads: Vec<u32> = key(config, "loads")?
        .as_array()
        .ok_or("\"config.loads\" is not a list")?
        .iter()
        .filter_map(|l| l.as_u64().map(|l| l as u32))
        .collect();
    let mut data = plot::PlotData {
        title: format!(
            "xdpip-bench compare, {}, {}-byte frames, Linux {}",
            utc(key(run, "unix_time")?.as_u64().unwrap_or(0)),
            key(config, "size")?.as_u64().unwrap_or(0),
            key(run, "machine")?
                .get("kernel")
                .and_then(|k| k.as_str())
                .unwrap_or("")
        ),
        systems: Vec::new(),
        rates_mpps: Vec::new(),
        loads: loads.clone(),
        latency_us: Vec::new(),
    };
    for s in summary {
        let label = key(s, "label")?.as_str().unwrap_or("?");
        data.systems.push(match key(s, "placement")?.as_str() {
            Some(p) if p != Placement::OneCore.label() => format!("{label} ({p})"),
            _ => label.to_string(),
        });
        let mpps = |v: &serde_json::Value| v.as_f64().unwrap_or(0.0) / 1e6;
        data.rates_mpps.push((
            mpps(key(s, "rate_pps")?),
            key(s, "rate_runs")?
                .as_array()
                .map_or_else(Vec::new, |r| r.iter().map(mpps).collect()),
        ));
        let latency = key(s, "latency")?;
        data.latency_us.push(
            loads
                .iter()
                .map(|l| {
                    let at = latency.get(l.to_string())?;
                    let us = |k: &str| at.get(k).and_then(|v| v.as_f64()).map(|ns| ns / 1e3);
                    Some([us("p50_ns")?, us("p90_ns")?, us("p99_ns")?, us("p999_ns")?])
                })
                .collect(),
        );
    }
    Ok(data)
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
    let mut placements = a.placements.clone();
    placements.sort();
    placements.dedup();
    if placements.is_empty() {
        return Err("--placements names none".into());
    }
    let cores = core_affinity::get_core_ids().unwrap_or_default().len();
    for (name, c) in [
        ("--load-core", a.load_core),
        ("--dut-core", a.dut_core),
        ("--engine-core", a.engine_core.unwrap_or(a.dut_core)),
        (
            "--split-napi-core",
            a.split_napi_core.unwrap_or(a.load_core),
        ),
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
        placements: placements.clone(),
        load_core: a.load_core,
        dut_core: a.dut_core,
        engine_core: a.engine_core.unwrap_or(a.dut_core),
        split_napi_core: a.split_napi_core.unwrap_or(a.load_core),
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
    let (_autogroup, autogroup_note) = RaisedAutogroup::raise();
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
         (both SCHED_FIFO) on core {}; dut's NAPI thread (nice {NICE}): one-core on core {}, \
         split on core {}, default none (softirq on the sending core); worker of the floor and \
         xdpip (own session, autogroup nice {NICE}): one-core and split on core {}, default \
         without --cores and with each; {autogroup_note}",
        a.load_core, a.dut_core, args.split_napi_core, args.engine_core,
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
    let macs = [mac_of(&t.gen, "eth0")?, mac_of(&t.sink, "eth0")?];
    let mut b = Bench {
        sink: Some(sink),
        tx,
        t,
        spec,
        args: args.clone(),
        dut_napi,
        xdpip,
        me: std::env::current_exe()?,
        placement: Placement::OneCore,
        stop,
        afxdp_mode: None,
        started: None,
        macs,
    };
    // Each repetition: the placements in turn, the systems in turn in each.
    let mut variants = Vec::new();
    for &p in &placements {
        for &s in &systems {
            match p {
                Placement::OneCore | Placement::Split if s.has_worker() => variants.push(Variant {
                    system: s,
                    placement: p,
                    cores: Some(args.engine_core),
                }),
                Placement::OneCore => variants.push(Variant {
                    system: s,
                    placement: p,
                    cores: None,
                }),
                Placement::Default if s == System::Engine => {
                    variants.push(Variant {
                        system: s,
                        placement: p,
                        cores: None,
                    });
                    for c in 0..cores {
                        variants.push(Variant {
                            system: s,
                            placement: p,
                            cores: Some(c),
                        });
                    }
                }
                _ => {}
            }
        }
    }

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
        let mut last = None;
        for &v in &variants {
            b.check_stop()?;
            if last != Some(v.placement) {
                println!("  placement {}:", v.placement.label());
                last = Some(v.placement);
            }
            let r = b.rate_run(v, rep)?;
            println!(
                "  {:<22} run {}: {:>6.3} Mpps forwarded ({:.3} offered, {:.3} accepted by \
                 dut); CPU busy {}; dut NAPI thread {:.0}%{}",
                v.label(),
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
                    .map(|e| format!(", {} {:.0}%", v.system.label(), e * 100.0))
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
                if drops
                    .as_object()
                    .is_some_and(|d| !d.is_empty() && d.values().any(|x| x != 0))
                {
                    println!("    {} drops: {drops}", v.system.label());
                }
                if rep == 0 {
                    if let Some(p) = e["placement"].as_str() {
                        println!("    worker placement: {p}");
                    }
                }
            }
            rates.push(r);
        }
    }
    b.sink_program(SinkMode::Afxdp)?;

    let mut summary: Vec<SystemSummary> = variants
        .iter()
        .map(|v| {
            let mut runs: Vec<f64> = rates
                .iter()
                .filter(|r| {
                    r.system == v.system && r.placement == v.placement && r.cores == v.cores
                })
                .map(|r| r.forwarded_pps)
                .collect();
            let rate_runs = runs.clone();
            SystemSummary {
                system: v.system,
                placement: v.placement,
                cores: v.cores,
                label: v.label(),
                rate_pps: median(&mut runs),
                rate_runs,
                latency: BTreeMap::new(),
            }
        })
        .collect();
    // In the default placement, the run without --cores.
    fn summary_in(sum: &[SystemSummary], p: Placement, s: System) -> Option<&SystemSummary> {
        sum.iter().find(|x| {
            x.system == s && x.placement == p && (p != Placement::Default || x.cores.is_none())
        })
    }
    let rate_in = |sum: &[SystemSummary], p: Placement, s: System| {
        summary_in(sum, p, s).and_then(|x| x.rate_pps)
    };
    let rate_of = |sum: &[SystemSummary], s: System| rate_in(sum, Placement::OneCore, s);
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
    for sum in summary
        .iter_mut()
        .filter(|s| s.placement == Placement::OneCore)
    {
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
    // The best --cores choice in the default placement.
    let best = summary
        .iter()
        .filter(|x| x.placement == Placement::Default && x.cores.is_some())
        .filter_map(|x| Some((x.rate_pps?, x.cores?)))
        .max_by(|a, b| a.0.total_cmp(&b.0));
    println!(
        "{:<9} {:<22} {:>8} {:>8} {:>8} {:>8} {:>8}   runs (Mpps)",
        "placement", "system", "Mpps", "/kernel", "/xdp", "/floor", "/best"
    );
    for s in &summary {
        let one = s.placement == Placement::OneCore;
        let floor = rate_in(&summary, s.placement, System::Floor);
        println!(
            "{:<9} {:<22} {:>8} {:>8} {:>8} {:>8} {:>8}   {}",
            s.placement.label(),
            s.label,
            s.rate_pps.map_or("-".into(), |r| format!("{:.3}", r / 1e6)),
            fmt_ratio(ratio(s.rate_pps, kernel)),
            fmt_ratio(if one { ratio(s.rate_pps, xdp) } else { None }),
            fmt_ratio(if s.system.has_worker() {
                ratio(s.rate_pps, floor)
            } else {
                None
            }),
            fmt_ratio(if s.placement == Placement::Default {
                ratio(s.rate_pps, best.map(|b| b.0))
            } else {
                None
            }),
            s.rate_runs
                .iter()
                .map(|r| format!("{:.3}", r / 1e6))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    println!(
        "(/kernel and /xdp: against the one-core kernel router and XDP forward; /floor: against \
         the AF_XDP floor in the same placement; /best: against the best --cores choice)"
    );
    if !lat.is_empty() {
        println!(
            "\n== one-way latency in µs (median of {} × {} s per load)",
            args.repeat, args.latency_seconds
        );
        println!(
            "{:<14} {:>5} {:>9} {:>8} {:>8} {:>8} {:>8} {:>9} {:>6} {:>7}",
            "system", "load", "pps", "p50", "p90", "p99", "p99.9", "max", "lost", "reorder"
        );
        for s in summary.iter().filter(|s| s.placement == Placement::OneCore) {
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
            .find(|x| x.system == s && x.placement == Placement::OneCore)
            .and_then(|x| x.latency.get(&load))
            .map(|l| l.p99_ns as f64)
    };
    let split_engine = rate_in(&summary, Placement::Split, System::Engine);
    let split_floor = rate_in(&summary, Placement::Split, System::Floor);
    let runs_in =
        |p: Placement, s: System| summary_in(&summary, p, s).map_or(&[][..], |x| &x.rate_runs[..]);
    let split_paired = paired(
        runs_in(Placement::Split, System::Engine),
        runs_in(Placement::Split, System::Floor),
    );
    let one_paired = paired(
        runs_in(Placement::OneCore, System::Engine),
        runs_in(Placement::OneCore, System::Kernel),
    );
    let fmt_paired = |p: &Option<(f64, Vec<f64>)>| match p {
        Some((m, runs)) => format!(
            "{m:.2} paired [{}]",
            runs.iter()
                .map(|r| format!("{r:.2}"))
                .collect::<Vec<_>>()
                .join(" ")
        ),
        None => "-".into(),
    };
    let one_floor = rate_of(&summary, System::Floor);
    let unpinned = rate_in(&summary, Placement::Default, System::Engine);
    println!("\n== xdpip against its I/O floor and the kernel, by placement");
    if engine.is_some() {
        println!(
            "  one-core: xdpip / kernel router {} ({}), xdpip / AF_XDP floor {}, AF_XDP floor / \
             kernel router {}",
            fmt_ratio(ratio(engine, kernel)),
            fmt_paired(&one_paired),
            fmt_ratio(ratio(engine, one_floor)),
            fmt_ratio(ratio(one_floor, kernel))
        );
    }
    if split_engine.is_some() || split_floor.is_some() {
        println!(
            "  split:    xdpip / AF_XDP floor {} ({}; worker alone on core {}, dut's NAPI \
             thread on core {})",
            fmt_ratio(ratio(split_engine, split_floor)),
            fmt_paired(&split_paired),
            args.engine_core,
            args.split_napi_core
        );
    }
    if unpinned.is_some() {
        println!(
            "  default:  xdpip without --cores / the best --cores choice ({}) {}",
            best.map_or("-".into(), |b| format!("--cores {}", b.1)),
            fmt_ratio(ratio(unpinned, best.map(|b| b.0)))
        );
    }
    let targets = json!({
        "split_engine_over_floor": {"target": 0.95,
            "measured": ratio(split_engine, split_floor),
            "paired": split_paired.as_ref().map(|p| p.0),
            "paired_runs": split_paired.as_ref().map(|p| &p.1)},
        "one_core_engine_over_kernel": {"target": 0.5, "measured": ratio(engine, kernel),
            "paired": one_paired.as_ref().map(|p| p.0),
            "paired_runs": one_paired.as_ref().map(|p| &p.1)},
        "default_placement_over_best_cores": {"target": 0.9,
            "measured": ratio(unpinned, best.map(|b| b.0)),
            "best_cores": best.map(|b| b.1)},
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
    // The targets of the issue judged by the paired ratios, as the
    // forward bench judges its own; the ratios of medians are above.
    println!(
        "  split: rate / AF_XDP floor, paired         ≥ 0.95 : {}",
        verdict(split_paired.as_ref().map(|p| p.0), &|m| m >= 0.95)
    );
    println!(
        "  one-core: rate / kernel router, paired     ≥ 0.5  : {}",
        verdict(one_paired.as_ref().map(|p| p.0), &|m| m >= 0.5)
    );
    println!(
        "  default: no --cores / best --cores         ≥ 0.9  : {}",
        verdict(ratio(unpinned, best.map(|b| b.0)), &|m| m >= 0.9)
    );
    println!(
        "  one-core: rate / kernel router             ≥ 1.2  : {}",
        verdict(ratio(engine, kernel), &|m| m >= 1.2)
    );
    println!(
        "  one-core: rate / XDP forward               ≥ 0.5  : {}",
        verdict(ratio(engine, xdp), &|m| m >= 0.5)
    );
    println!(
        "  one-core: p99 at 50% / kernel router's     ≤ 1.0  : {}",
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
            "sink_reader": a.load_core,
            "one_core": {"dut_napi_thread": a.dut_core, "worker": args.engine_core},
            "split": {"dut_napi_thread": args.split_napi_core, "worker": args.engine_core},
            "default": {"dut_napi": "softirq on the sending core (not threaded)",
                        "worker": "xdpip without --cores, and with --cores C for each core"},
            "scheduling": format!("generator, dut NAPI thread, floor and xdpip: nice {NICE}; \
                                   floor and xdpip in a session of their own, autogroup nice \
                                   {NICE}; sink NAPI thread and sink reader: SCHED_FIFO; \
                                   {autogroup_note}"),
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
        let data = plot_data(&result)?;
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
    fn the_plot_is_read_from_the_runs_json() {
        let run = json!({
            "unix_time": 1_796_185_000u64,
            "config": {"size": 64, "loads": [10, 50]},
            "machine": {"kernel": "6.18"},
            "summary": [
                {"label": "kernel router", "placement": "one-core", "rate_pps": 2.0e6,
                 "rate_runs": [1.0e6, 2.0e6],
                 "latency": {"10": {"p50_ns": 1000, "p90_ns": 2000, "p99_ns": 3000, "p999_ns": 4000}}},
                {"label": "xdpip", "placement": "split", "rate_pps": null, "rate_runs": [],
                 "latency": {}},
            ],
        });
        let d = plot_data(&run).unwrap();
        assert_eq!(
            d.title,
            "xdpip-bench compare, 2026-12-02 04:16 UTC, 64-byte frames, Linux 6.18"
        );
        assert_eq!(d.systems, ["kernel router", "xdpip (split)"]);
        assert_eq!(d.rates_mpps, [(2.0, vec![1.0, 2.0]), (0.0, vec![])]);
        assert_eq!(d.loads, [10, 50]);
        assert_eq!(
            d.latency_us,
            [vec![Some([1.0, 2.0, 3.0, 4.0]), None], vec![None, None]]
        );
        let mut broken = run.clone();
        broken["config"].as_object_mut().unwrap().remove("loads");
        assert_eq!(plot_data(&broken).unwrap_err(), "no \"loads\" in the JSON");
    }

    #[test]
    fn paired_ratios_are_taken_run_by_run() {
        // The host slowed down for the second pair and for the first
        // system's third run: the medians give 1.8 / 10, two pairs of
        // three 0.9.
        let (m, runs) = paired(&[9.0, 1.8, 1.8], &[10.0, 2.0, 10.0]).unwrap();
        assert!((m - 0.9).abs() < 1e-9, "{m}");
        assert_eq!(runs.len(), 3);
        assert_eq!(paired(&[], &[1.0]), None);
        // A pair with a run that forwarded nothing on the second side is
        // left out, not divided by zero.
        assert_eq!(paired(&[1.0, 2.0], &[0.0, 4.0]).unwrap().0, 0.5);
    }

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
