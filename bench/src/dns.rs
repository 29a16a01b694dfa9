//! `xdpip-bench dns`: an authoritative DNS server on dut of a gen ⇄ dut
//! veth pair, loaded from gen, in one run: Knot DNS in XDP mode, Knot DNS
//! on kernel sockets, and the engine's `dns_responder` example (engine
//! UDP sockets): answering in the engine's worker (`--mode worker`, with
//! its default packet cache, and `engine-worker-nocache` with
//! `--packet-cache 0`, every answer built), and on a thread through the
//! socket's queues (`--mode in-place`, `--mode copy`). Each is loaded by `kxdpgun` (Knot's AF_XDP generator) at
//! its highest rate and at fixed rates, then by `dnsperf` (kernel
//! sockets). All serve the same zone (engine/examples/dns/example.test.zone).
//!
//! Placement: the server runs on core 0 (`taskset`; the engine's worker
//! and, in the thread modes, the responder thread), the generators on
//! core 1. A veth runs
//! the receiving side's work on the sending core, so dut's receive path
//! (XDP program, AF_XDP copy or the kernel's UDP input) is charged to the
//! generator's core, and gen's receive path to the server's.

use serde::Serialize;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use testbed::{Child, Netns};

/// Options of `dns`.
#[derive(clap::Args, Debug, Clone)]
pub struct DnsArgs {
    /// Seconds of load per measurement.
    #[arg(long, default_value_t = 5)]
    pub seconds: u32,
    /// Fixed kxdpgun rates (queries per second), besides the highest.
    #[arg(long, value_delimiter = ',', default_value = "20000,50000,100000")]
    pub rates: Vec<u64>,
    /// dnsperf's fixed rate (its latency is read there), besides unlimited.
    #[arg(long, default_value_t = 10000)]
    pub dnsperf_rate: u64,
    /// The engine's responder (default: examples/dns_responder next to
    /// this binary, as `cargo build --release --examples` puts it).
    #[arg(long)]
    pub responder: Option<PathBuf>,
    /// Only these systems (knot-xdp, knot-socket, engine-worker,
    /// engine-worker-nocache, engine, engine-copy).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Write the results as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

const ZONE: &str = include_str!("../../engine/examples/dns/example.test.zone");
/// The query mix: an answer, a name that does not exist, a type that does
/// not (NXDOMAIN and NODATA carry the SOA), an answer with additional data.
const QUERIES: &str = "www.example.test A\nnope.example.test A\nwww.example.test AAAA\n\
                       example.test MX\n";
const DUT: &str = "10.1.0.2";
/// The highest rate asked of kxdpgun (it sends as fast as it can).
const MAX_QPS: u64 = 100_000_000;

/// What one generator run reported.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Load {
    /// `kxdpgun` or `dnsperf`.
    pub tool: &'static str,
    /// Rate asked for; None for the highest.
    pub rate: Option<u64>,
    pub sent: u64,
    pub answered: u64,
    pub seconds: f64,
    /// dnsperf's average, min, max latency and standard deviation, in
    /// microseconds.
    pub latency_us: Option<[f64; 4]>,
    /// Answers by response code, as the tool counts them.
    pub rcodes: Vec<(String, u64)>,
}

impl Load {
    pub fn qps(&self) -> f64 {
        self.answered as f64 / self.seconds.max(1e-9)
    }
    pub fn share(&self) -> f64 {
        self.answered as f64 / self.sent.max(1) as f64
    }
}

/// All loads of one server.
#[derive(Debug, Clone, Serialize)]
pub struct System {
    pub name: &'static str,
    pub loads: Vec<Load>,
    /// What went wrong, when it did not run.
    pub error: Option<String>,
}

/// A server under test.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    KnotXdp,
    KnotSocket,
    /// The responder answering in the engine's worker.
    EngineWorker,
    /// The same, without its packet cache: every answer built.
    EngineWorkerNoCache,
    /// The responder on a thread, the answer built in a send buffer.
    Engine,
    /// The responder on a thread, the answer copied by `send_to`.
    EngineCopy,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::KnotXdp => "knot-xdp",
            Kind::KnotSocket => "knot-socket",
            Kind::EngineWorker => "engine-worker",
            Kind::EngineWorkerNoCache => "engine-worker-nocache",
            Kind::Engine => "engine",
            Kind::EngineCopy => "engine-copy",
        }
    }
}

fn need(tool: &str, package: &str) -> Result<(), String> {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if found {
        Ok(())
    } else {
        Err(format!(
            "{tool} not found: apt-get install {package} (the benchmark needs knot, \
             knot-dnsutils and dnsperf)"
        ))
    }
}

fn default_responder() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("examples/dns_responder")))
        .unwrap_or_else(|| PathBuf::from("target/release/examples/dns_responder"))
}

/// Knot's configuration: its sockets on dut's address, and in XDP mode
/// also eth0's queues.
fn knot_conf(dir: &Path, xdp: bool) -> String {
    let d = dir.display();
    let mut c = format!(
        "server:\n    rundir: {d}/run\n    listen: {DUT}@53\n\
         database:\n    storage: {d}/db\n\
         log:\n  - target: stderr\n    any: info\n"
    );
    if xdp {
        c.push_str("xdp:\n    listen: eth0@53\n    udp: on\n");
    }
    c.push_str(&format!(
        "zone:\n  - domain: example.test\n    file: {d}/example.test.zone\n    \
         zonefile-sync: -1\n    journal-content: none\n"
    ));
    c
}

/// A private directory for Knot's files, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> io::Result<TempDir> {
        let p = std::env::temp_dir().join(format!("xdpip-dns-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(p.join("run"))?;
        std::fs::create_dir_all(p.join("db"))?;
        Ok(TempDir(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Starts the server of `kind` in dut, on core 0, and waits until it
/// answers a query from gen.
fn start(
    kind: Kind,
    gen: &Netns,
    dut: &Netns,
    dir: &Path,
    responder: &Path,
) -> Result<Child, String> {
    let mut cmd = dut.command("taskset");
    cmd.args(["-c", "0"]);
    match kind {
        Kind::KnotXdp | Kind::KnotSocket => {
            let conf = dir.join(format!("{}.conf", kind.name()));
            std::fs::write(&conf, knot_conf(dir, kind == Kind::KnotXdp))
                .map_err(|e| format!("{}: {e}", conf.display()))?;
            cmd.args(["knotd", "-c"]).arg(&conf);
        }
        Kind::EngineWorker | Kind::EngineWorkerNoCache | Kind::Engine | Kind::EngineCopy => {
            cmd.arg(responder)
                .args(["-i", "eth0", "--bind", "0.0.0.0:53", "--mode"])
                .arg(match kind {
                    Kind::EngineWorker | Kind::EngineWorkerNoCache => "worker",
                    Kind::Engine => "in-place",
                    _ => "copy",
                });
            if kind == Kind::EngineWorkerNoCache {
                cmd.args(["--packet-cache", "0"]);
            }
        }
    }
    let mut child = Child::spawn(cmd).map_err(|e| format!("starting {}: {e}", kind.name()))?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = gen
            .command("kdig")
            .args([
                &format!("@{DUT}"),
                "www.example.test",
                "A",
                "+short",
                "+timeout=1",
                "+retry=0",
            ])
            .output()
            .map_err(|e| format!("kdig: {e}"))?;
        if String::from_utf8_lossy(&out.stdout).contains("192.0.2.80") {
            return Ok(child);
        }
        if Instant::now() > deadline {
            let _ = child.wait(Duration::from_millis(10));
            return Err(format!(
                "{} did not answer within 20 s\nstdout:\n{}\nstderr:\n{}",
                kind.name(),
                child.stdout().join("\n"),
                child.stderr().join("\n")
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Stops a server with SIGTERM and waits, so that its XDP program is gone
/// before the next one attaches.
fn stop(mut c: Child) -> Vec<String> {
    c.signal(libc::SIGTERM);
    let _ = c.wait(Duration::from_secs(10));
    let mut lines = c.stdout();
    lines.extend(c.stderr());
    lines
}

fn number_after(text: &str, key: &str) -> Option<f64> {
    let line = text.lines().find(|l| l.trim_start().starts_with(key))?;
    let rest = &line.trim_start()[key.len()..];
    rest.split_whitespace()
        .next()?
        .trim_matches(|c: char| !c.is_ascii_digit() && c != '.')
        .parse()
        .ok()
}

/// Parses kxdpgun's report (Knot 3.2: totals and answers per rcode; it
/// reports no latency).
pub fn parse_kxdpgun(text: &str, rate: Option<u64>) -> Option<Load> {
    let sent = number_after(text, "total queries:")? as u64;
    let answered = number_after(text, "total replies:")? as u64;
    let seconds = number_after(text, "duration:")?;
    let rcodes = text
        .lines()
        .filter_map(|l| {
            let rest = l.trim().strip_prefix("responded ")?;
            let (code, n) = rest.split_once(':')?;
            Some((code.to_string(), n.trim().parse().ok()?))
        })
        .collect();
    Some(Load {
        tool: "kxdpgun",
        rate,
        sent,
        answered,
        seconds,
        latency_us: None,
        rcodes,
    })
}

/// Parses dnsperf's statistics.
pub fn parse_dnsperf(text: &str, rate: Option<u64>) -> Option<Load> {
    let sent = number_after(text, "Queries sent:")? as u64;
    let answered = number_after(text, "Queries completed:")? as u64;
    let seconds = number_after(text, "Run time (s):")?;
    let lat = text
        .lines()
        .find(|l| l.trim_start().starts_with("Average Latency (s):"))
        .map(|l| {
            l.split(|c: char| !(c.is_ascii_digit() || c == '.'))
                .filter_map(|x| x.parse::<f64>().ok())
                .collect::<Vec<_>>()
        });
    let sd = number_after(text, "Latency StdDev (s):");
    let latency_us = match (lat.as_deref(), sd) {
        (Some([avg, min, max, ..]), Some(sd)) => Some([avg * 1e6, min * 1e6, max * 1e6, sd * 1e6]),
        _ => None,
    };
    let rcodes = text
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("Response codes:"))
        .map(|r| {
            r.split(',')
                .filter_map(|p| {
                    let mut w = p.split_whitespace();
                    Some((w.next()?.to_string(), w.next()?.parse().ok()?))
                })
                .collect()
        })
        .unwrap_or_default();
    Some(Load {
        tool: "dnsperf",
        rate,
        sent,
        answered,
        seconds,
        latency_us,
        rcodes,
    })
}

fn run_tool(ns: &Netns, program: &str, args: &[String]) -> Result<String, String> {
    let mut tries = 0;
    let (out, text) = loop {
        let out = ns
            .command("taskset")
            .args(["-c", "1", program])
            .args(args)
            .output()
            .map_err(|e| format!("{program}: {e}"))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // kxdpgun's AF_XDP socket on gen's queue is released a moment
        // after the previous run exits ("requested resource is busy").
        // (kxdpgun may exit with status 0 after that error.)
        tries += 1;
        if !text.contains("resource is busy") || tries == 5 {
            break (out, text);
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    if !out.status.success() {
        return Err(format!(
            "`{program} {}` failed ({}):\n{text}",
            args.join(" "),
            out.status
        ));
    }
    Ok(text)
}

fn measure(a: &DnsArgs, gen: &Netns, qfile: &Path) -> Result<Vec<Load>, String> {
    let secs = a.seconds.to_string();
    let q = qfile.display().to_string();
    let mut loads = Vec::new();
    let rates: Vec<Option<u64>> = std::iter::once(None)
        .chain(a.rates.iter().map(|r| Some(*r)))
        .collect();
    for rate in rates {
        let qps = rate.unwrap_or(MAX_QPS).to_string();
        let args: Vec<String> = [
            "-t", &secs, "-Q", &qps, "-F", "1", "-i", &q, "-I", "eth0", DUT,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let text = run_tool(gen, "kxdpgun", &args)?;
        loads.push(parse_kxdpgun(&text, rate).ok_or_else(|| format!("kxdpgun's report:\n{text}"))?);
    }
    for rate in [None, Some(a.dnsperf_rate)] {
        let mut args: Vec<String> = ["-s", DUT, "-d", &q, "-l", &secs, "-c", "4", "-q", "200"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        if let Some(r) = rate {
            args.extend(["-Q".to_string(), r.to_string()]);
        }
        let text = run_tool(gen, "dnsperf", &args)?;
        loads.push(parse_dnsperf(&text, rate).ok_or_else(|| format!("dnsperf's report:\n{text}"))?);
    }
    Ok(loads)
}

fn uptime() -> String {
    Command::new("uptime")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// Builds gen ⇄ dut, runs every system, prints the table.
pub fn run(a: DnsArgs) -> Result<(), String> {
    for (t, p) in [
        ("knotd", "knot"),
        ("kxdpgun", "knot-dnsutils"),
        ("kdig", "knot-dnsutils"),
        ("dnsperf", "dnsperf"),
        ("taskset", "util-linux"),
    ] {
        need(t, p)?;
    }
    let responder = a.responder.clone().unwrap_or_else(default_responder);
    if !responder.exists() {
        return Err(format!(
            "{}: not built (cargo build --release -p xdpip --example dns_responder)",
            responder.display()
        ));
    }
    let kinds: Vec<Kind> = [
        Kind::KnotXdp,
        Kind::KnotSocket,
        Kind::EngineWorker,
        Kind::EngineWorkerNoCache,
        Kind::Engine,
        Kind::EngineCopy,
    ]
    .into_iter()
    .filter(|k| a.only.is_empty() || a.only.iter().any(|o| o == k.name()))
    .collect();
    let dir = TempDir::new().map_err(|e| format!("temporary directory: {e}"))?;
    std::fs::write(dir.0.join("example.test.zone"), ZONE).map_err(|e| e.to_string())?;
    let qfile = dir.0.join("queries.txt");
    std::fs::write(&qfile, QUERIES).map_err(|e| e.to_string())?;

    let gen = Netns::new("gen").map_err(|e| e.to_string())?;
    let dut = Netns::new("dut").map_err(|e| e.to_string())?;
    testbed::veth(&gen, "eth0", &dut, "eth0").map_err(|e| e.to_string())?;
    for (ns, addr) in [(&gen, "10.1.0.1/24"), (&dut, "10.1.0.2/24")] {
        ns.ip(&["addr", "add", addr, "dev", "eth0"])
            .map_err(|e| e.to_string())?;
        ns.ip(&["link", "set", "eth0", "up"])
            .map_err(|e| e.to_string())?;
    }
    // A real wire carries full checksums; and kxdpgun needs dut's MAC in
    // gen's neighbour table.
    testbed::disable_tx_checksum(&gen, "eth0").map_err(|e| e.to_string())?;
    let _ = gen.exec(&["ping", "-c", "2", "-i", "0.2", "-W", "1", DUT]);

    let started = uptime();
    let date = Command::new("date")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let mut systems = Vec::new();
    for kind in kinds {
        eprintln!("dns: {} ...", kind.name());
        let _ = gen.exec(&["ping", "-c", "1", "-W", "1", DUT]);
        let sys = match start(kind, &gen, &dut, &dir.0, &responder) {
            Ok(child) => {
                let r = measure(&a, &gen, &qfile);
                let log = stop(child);
                // knotd leaves its XDP program on eth0 when it exits.
                let _ = dut.ip(&["link", "set", "eth0", "xdp", "off"]);
                match r {
                    Ok(loads) => System {
                        name: kind.name(),
                        loads,
                        error: None,
                    },
                    Err(e) => System {
                        name: kind.name(),
                        loads: Vec::new(),
                        error: Some(format!("{e}\nserver output:\n{}", log.join("\n"))),
                    },
                }
            }
            Err(e) => System {
                name: kind.name(),
                loads: Vec::new(),
                error: Some(e),
            },
        };
        if let Some(e) = &sys.error {
            eprintln!("dns: {}: {e}", kind.name());
        }
        systems.push(sys);
    }
    let ended = uptime();
    print!("{}", table(&systems, &date, &started, &ended, &a));
    if let Some(p) = &a.json {
        let v = serde_json::json!({
            "date": date, "uptime_start": started, "uptime_end": ended,
            "seconds": a.seconds, "systems": systems,
        });
        std::fs::write(
            p,
            serde_json::to_string_pretty(&v).map_err(|e| e.to_string())?,
        )
        .map_err(|e| format!("{}: {e}", p.display()))?;
    }
    Ok(())
}

fn rate_name(r: Option<u64>) -> String {
    r.map_or("max".into(), |r| r.to_string())
}

/// The Markdown table, with the ratios of the targets.
pub fn table(systems: &[System], date: &str, start: &str, end: &str, a: &DnsArgs) -> String {
    let mut s = format!(
        "\n{date}; load at start: {start}; at end: {end}; {} s per measurement\n\n\
         | server | generator | asked qps | sent | answered qps | answered | latency avg / min / max / sd (µs) |\n\
         | --- | --- | --- | --- | --- | --- | --- |\n",
        a.seconds
    );
    for sys in systems {
        if let Some(e) = &sys.error {
            let first = e.lines().next().unwrap_or("");
            s.push_str(&format!(
                "| {} | did not run: {first} | | | | | |\n",
                sys.name
            ));
            continue;
        }
        for l in &sys.loads {
            let lat = l.latency_us.map_or("—".into(), |v| {
                format!("{:.0} / {:.0} / {:.0} / {:.0}", v[0], v[1], v[2], v[3])
            });
            s.push_str(&format!(
                "| {} | {} | {} | {} | {:.0} | {:.1} % | {} |\n",
                sys.name,
                l.tool,
                rate_name(l.rate),
                l.sent,
                l.qps(),
                100.0 * l.share(),
                lat
            ));
        }
    }
    // The most a server answered under a tool, at whatever rate: past its
    // peak an overloaded veth path answers less, not more.
    let max = |name: &str, tool: &str| {
        systems.iter().find(|x| x.name == name).and_then(|x| {
            x.loads
                .iter()
                .filter(|l| l.tool == tool)
                .map(Load::qps)
                .max_by(f64::total_cmp)
        })
    };
    s.push('\n');
    for tool in ["kxdpgun", "dnsperf"] {
        for engine in ["engine-worker", "engine-worker-nocache", "engine"] {
            let Some(e) = max(engine, tool) else {
                continue;
            };
            for (other, target) in [("knot-xdp", 1.0), ("knot-socket", 2.0)] {
                if let Some(o) = max(other, tool) {
                    s.push_str(&format!(
                        "{engine} / {other}, most answered qps under {tool}: {:.2}× (target ≥ {target:.1}×)\n",
                        e / o.max(1e-9)
                    ));
                }
            }
        }
        if let (Some(w), Some(n)) = (
            max("engine-worker", tool),
            max("engine-worker-nocache", tool),
        ) {
            s.push_str(&format!(
                "engine-worker (packet cache) / engine-worker-nocache (every answer built), most \
                 answered under {tool}: {:.2}×\n",
                w / n.max(1e-9)
            ));
        }
        if let (Some(w), Some(q)) = (max("engine-worker", tool), max("engine", tool)) {
            s.push_str(&format!(
                "engine-worker (answered in the worker) / engine (on a thread), most answered \
                 under {tool}: {:.2}×\n",
                w / q.max(1e-9)
            ));
        }
    }
    if let (Some(e), Some(c)) = (max("engine", "kxdpgun"), max("engine-copy", "kxdpgun")) {
        s.push_str(&format!(
            "engine (answer built in the send buffer) / engine-copy (send_to), most answered \
             under kxdpgun: {:.2}×\n",
            e / c.max(1e-9)
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kxdpgun_report_parses() {
        let t = "using interface eth0, XDP threads 1, UDP, native mode\n\
                 thread#00: sent 40010, received 40010\n\
                 total queries:     40010 (20005 pps)\n\
                 total replies:     39000 (19500 pps) (97%)\n\
                 average DNS reply size: 68 B\n\
                 responded NOERROR:   20005\nresponded NXDOMAIN:  18995\nduration: 2 s\n";
        let l = parse_kxdpgun(t, Some(20000)).expect("parses");
        assert_eq!((l.sent, l.answered), (40010, 39000));
        assert_eq!(l.seconds, 2.0);
        assert_eq!(l.rcodes[1], ("NXDOMAIN".to_string(), 18995));
        assert!((l.qps() - 19500.0).abs() < 1e-6);
    }

    #[test]
    fn the_table_compares_both_engine_modes_with_knot() {
        let sys = |name, qps: u64| System {
            name,
            loads: vec![Load {
                tool: "kxdpgun",
                rate: None,
                sent: 2 * qps,
                answered: qps,
                seconds: 1.0,
                ..Load::default()
            }],
            error: None,
        };
        let a = DnsArgs {
            seconds: 1,
            rates: vec![],
            dnsperf_rate: 1,
            responder: None,
            only: vec![],
            json: None,
        };
        let systems = [
            sys("knot-xdp", 100),
            sys("knot-socket", 50),
            sys("engine-worker", 200),
            sys("engine", 80),
        ];
        let t = table(&systems, "d", "s", "e", &a);
        assert!(
            t.contains("| engine-worker | kxdpgun | max | 400 | 200 | 50.0 % |"),
            "{t}"
        );
        for line in [
            "engine-worker / knot-xdp, most answered qps under kxdpgun: 2.00×",
            "engine-worker / knot-socket, most answered qps under kxdpgun: 4.00×",
            "engine / knot-xdp, most answered qps under kxdpgun: 0.80×",
            "engine-worker (answered in the worker) / engine (on a thread), most answered under \
             kxdpgun: 2.50×",
        ] {
            assert!(t.contains(line), "{line}\n{t}");
        }
    }

    #[test]
    fn dnsperf_report_parses() {
        let t = "Statistics:\n\n  Queries sent:         1000\n  Queries completed:    990 (99.00%)\n\
                 \x20 Queries lost:         10 (1.00%)\n\n  Response codes:       NOERROR 500 (50.51%), NXDOMAIN 490 (49.49%)\n\
                 \x20 Average packet size:  request 34, response 80\n  Run time (s):         5.000100\n\
                 \x20 Queries per second:   197.996040\n\n  Average Latency (s):  0.000250 (min 0.000050, max 0.002000)\n\
                 \x20 Latency StdDev (s):   0.000100\n";
        let l = parse_dnsperf(t, None).expect("parses");
        assert_eq!((l.sent, l.answered), (1000, 990));
        let lat = l.latency_us.expect("latency");
        assert!((lat[0] - 250.0).abs() < 1e-6 && (lat[2] - 2000.0).abs() < 1e-6);
        assert_eq!(l.rcodes[0], ("NOERROR".to_string(), 500));
    }
}
