//! The `xdpip` command.

use clap::{Parser, Subcommand, ValueEnum};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use xdpip::control::{api, api::Request, metrics, sysctl};
use xdpip::ebpf::{GateMode, XdpModeRequest};
use xdpip::xsk::ZeroCopy;
use xdpip::{Engine, Report};

#[derive(Parser, Debug)]
#[command(name = "xdpip", version, about = "AF_XDP IPv4 packet engine")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the engine on interfaces of the current network namespace until
    /// SIGINT or SIGTERM, forwarding IPv4 between them like the kernel would.
    Run(RunArgs),
    /// Counters of the engine running in this network namespace.
    Stats {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Print again every second.
        #[arg(long)]
        watch: bool,
        /// The engine's control socket.
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
    },
    /// The routes the running engine forwards by.
    Routes {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// The engine's control socket.
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
    },
    /// The neighbours the running engine knows.
    Neigh {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// The engine's control socket.
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
    },
    /// Show the running engine's tunables, or set one (`name=value`).
    Sysctl {
        /// `name` to show one, `name=value` to set it.
        assignment: Option<String>,
        /// The engine's control socket.
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
enum XdpModeArg {
    /// Native (driver) mode, falling back to skb mode if the driver refuses.
    Auto,
    /// Native (driver) mode only.
    Native,
    /// Generic (skb) mode.
    Skb,
}

#[derive(ValueEnum, Clone, Copy, Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
enum GateArg {
    /// `off` while every route leaves through the engine's interfaces,
    /// `neigh` while some route does not.
    Auto,
    /// The engine decides everything.
    Off,
    /// Unresolved next hops go to the kernel.
    Neigh,
    /// Anything the kernel's FIB cannot forward as is goes to the kernel.
    Full,
}

#[derive(ValueEnum, Clone, Copy, Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
enum ZeroCopyArg {
    /// Zero-copy if the driver allows it, else copy mode.
    Auto,
    /// Zero-copy, or fail.
    On,
    /// Copy mode.
    Off,
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Interface to serve (repeat for each; at least one, here or in --config).
    #[arg(short = 'i', long = "interface", value_name = "IFACE")]
    interfaces: Vec<String>,
    /// A TOML file with these options (command-line options win); see
    /// docs/USER_GUIDE.md.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Set a tunable by its sysctl name, over the namespace's value (repeat).
    #[arg(long = "sysctl", value_name = "NAME=VALUE")]
    sysctl: Vec<String>,
    /// Cores to pin workers to, comma separated, worker i on the i-th
    /// [default: off the cores that service each worker's queues where the
    /// kernel says which, else unpinned; printed at start].
    #[arg(long, value_delimiter = ',', value_name = "N,...")]
    cores: Vec<usize>,
    /// Preferred busy polling: the workers run their queues' NAPI in their
    /// own system calls (SO_PREFER_BUSY_POLL; the devices'
    /// defer-hard-irqs and gro-flush-timeout are set, and restored at
    /// exit). Said at start, and in `xdpip stats`, whether it engaged.
    #[arg(long)]
    busy_poll: bool,
    /// XDP attach mode [default: auto].
    #[arg(long, value_enum)]
    xdp_mode: Option<XdpModeArg>,
    /// AF_XDP zero-copy [default: auto].
    #[arg(long, value_enum)]
    zero_copy: Option<ZeroCopyArg>,
    /// Replace another tool's XDP program on the interfaces.
    #[arg(long)]
    replace: bool,
    /// UMEM frame size in bytes, 2048 or 4096 [default: 4096].
    #[arg(long)]
    frame_size: Option<u32>,
    /// Entries per AF_XDP ring, a power of two [default: 2048].
    #[arg(long)]
    ring_size: Option<u32>,
    /// Frames per batch [default: 64].
    #[arg(long)]
    batch_size: Option<usize>,
    /// What the XDP program leaves to the kernel after asking its FIB
    /// (which costs it time per packet): `neigh` (packets whose next hop the
    /// kernel has not resolved: it resolves and queues them; packets routed
    /// through an interface the engine does not serve), `full` (everything
    /// the kernel's FIB cannot forward as is), `off` (nothing: the engine
    /// holds packets while the kernel resolves their next hop, and drops
    /// what leaves through other interfaces), `auto` (`off` while every
    /// route leaves through the engine's interfaces, else `neigh`)
    /// [default: auto].
    #[arg(long, value_enum)]
    fib_gate: Option<GateArg>,
    /// Serve Prometheus metrics on ADDR (a bare port means loopback).
    #[arg(long, value_name = "ADDR")]
    metrics: Option<String>,
    /// Control socket for `xdpip stats` and friends
    /// [default: /run/xdpip/net-<namespace inode>.sock].
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Do not serve a control socket.
    #[arg(long)]
    no_socket: bool,
    /// Stop after this many seconds.
    #[arg(long, value_name = "SECS")]
    duration: Option<f64>,
    /// Print nothing once a second, only the final counters.
    #[arg(short, long)]
    quiet: bool,
    /// Print JSON lines (started, stats once a second, stopped) instead of text.
    #[arg(long)]
    json: bool,
}

/// The --config file: the options of `run`, and tunables.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    interfaces: Option<Vec<String>>,
    cores: Option<Vec<usize>>,
    busy_poll: Option<bool>,
    xdp_mode: Option<XdpModeArg>,
    zero_copy: Option<ZeroCopyArg>,
    replace: Option<bool>,
    frame_size: Option<u32>,
    ring_size: Option<u32>,
    batch_size: Option<usize>,
    fib_gate: Option<GateArg>,
    metrics: Option<String>,
    socket: Option<PathBuf>,
    /// Tunables by sysctl name; values as strings or numbers.
    sysctl: Option<BTreeMap<String, toml::Value>>,
}

/// Largest config file read: a real one is a few hundred bytes.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Reads the config file: a regular file (symbolic links followed) of at
/// most [`MAX_CONFIG_BYTES`], so that `/dev/zero`, a FIFO or a huge file
/// is refused instead of read until memory runs out.
fn load_config(path: &Path) -> Result<Config, String> {
    use std::io::Read;
    let shown = path.display();
    let mut f = std::fs::File::open(path).map_err(|e| format!("reading config {shown}: {e}"))?;
    let meta = f
        .metadata()
        .map_err(|e| format!("reading config {shown}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("config {shown} is not a regular file"));
    }
    let mut text = String::new();
    (&mut f)
        .take(MAX_CONFIG_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("reading config {shown}: {e}"))?;
    if text.len() as u64 > MAX_CONFIG_BYTES {
        return Err(format!(
            "config {shown} is larger than {MAX_CONFIG_BYTES} bytes"
        ));
    }
    toml::from_str(&text).map_err(|e| format!("config {shown}: {e}"))
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp(None)
        .format_target(false)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => run(args),
        Command::Stats {
            json,
            watch,
            socket,
        } => client(socket, |path| stats(path, json, watch)),
        Command::Routes { json, socket } => client(socket, |path| routes(path, json)),
        Command::Neigh { json, socket } => client(socket, |path| neigh(path, json)),
        Command::Sysctl { assignment, socket } => {
            // A bad name or value is a usage error, said before asking.
            let checked = match assignment.as_deref() {
                Some(a) if a.contains('=') => sysctl::parse_assignment(a).map(|_| ()),
                Some(name) => sysctl::lookup(name).map(|_| ()),
                None => Ok(()),
            };
            if let Err(e) = checked {
                return usage_error(e);
            }
            client(socket, |path| sysctl_cmd(path, assignment.as_deref()))
        }
    }
}

/// Runs a client command against the engine's socket; errors exit 1.
fn client(socket: Option<PathBuf>, f: impl FnOnce(&Path) -> io::Result<()>) -> ExitCode {
    let path = match socket.map_or_else(api::default_socket_path, Ok) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("xdpip: finding the control socket: {e}");
            return ExitCode::from(1);
        }
    };
    match f(&path) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xdpip: {e}");
            ExitCode::from(1)
        }
    }
}

fn stats(path: &Path, json: bool, watch: bool) -> io::Result<()> {
    let mut last: Option<Report> = None;
    loop {
        let v = api::request(path, &Request::Stats)?;
        if json {
            println!("{v}");
        } else {
            let r: Report = serde_json::from_value(v).map_err(io::Error::other)?;
            match (&last, watch) {
                (Some(l), true) => print_line(&r, l, (r.uptime - l.uptime).max(0.001)),
                _ => print_stats(&r),
            }
            last = Some(r);
        }
        if !watch {
            return Ok(());
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn routes(path: &Path, json: bool) -> io::Result<()> {
    let v = api::request(path, &Request::Routes)?;
    if json {
        println!("{v}");
        return Ok(());
    }
    for r in v.as_array().into_iter().flatten() {
        let mut line = format!(
            "{} {}",
            r["kind"].as_str().unwrap_or("?"),
            r["prefix"].as_str().unwrap_or("?")
        );
        for n in r["nexthops"].as_array().into_iter().flatten() {
            if let Some(g) = n["gateway"].as_str() {
                line += &format!(" via {g}");
            }
            line += &format!(" dev {}", n["dev"].as_str().unwrap_or("?"));
            if r["nexthops"].as_array().is_some_and(|a| a.len() > 1) {
                line += &format!(" weight {}", n["weight"]);
            }
        }
        if r["metric"] != 0 {
            line += &format!(" metric {}", r["metric"]);
        }
        println!("{line}");
    }
    Ok(())
}

fn neigh(path: &Path, json: bool) -> io::Result<()> {
    let v = api::request(path, &Request::Neigh)?;
    if json {
        println!("{v}");
        return Ok(());
    }
    for n in v.as_array().into_iter().flatten() {
        println!(
            "{} dev {} lladdr {} {}",
            n["ip"].as_str().unwrap_or("?"),
            n["dev"].as_str().unwrap_or("?"),
            n["mac"].as_str().unwrap_or("?"),
            n["state"].as_str().unwrap_or("?")
        );
    }
    Ok(())
}

/// Shows or sets tunables; `assignment` was checked by the caller.
fn sysctl_cmd(path: &Path, assignment: Option<&str>) -> io::Result<()> {
    let set = assignment.filter(|a| a.contains('=')).map(str::to_string);
    let v = api::request(path, &Request::Sysctl { set })?;
    let want = assignment.map(|a| {
        a.split('=')
            .next()
            .unwrap_or(a)
            .trim()
            .trim_start_matches("net.ipv4.")
    });
    for (k, val) in v.as_object().into_iter().flatten() {
        if want.is_none_or(|w| w == k) {
            println!("net.ipv4.{k} = {}", val.as_str().unwrap_or("?"));
        }
    }
    Ok(())
}

fn usage_error(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("xdpip: {msg}");
    ExitCode::from(2)
}

fn run(args: RunArgs) -> ExitCode {
    let config = match args.config.as_deref().map(load_config).transpose() {
        Ok(c) => c.unwrap_or_default(),
        Err(e) => return usage_error(e),
    };
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(sig, stop.clone()) {
            eprintln!("xdpip: installing a signal handler: {e}");
            return ExitCode::from(1);
        }
    }
    let interfaces = if args.interfaces.is_empty() {
        config.interfaces.clone().unwrap_or_default()
    } else {
        args.interfaces.clone()
    };
    // Cores are checked here, to name where a bad one came from.
    let cores_from = |what: &str, cores: &[usize]| {
        xdpip::placement::check(
            cores,
            &xdpip::placement::existing(),
            &xdpip::placement::allowed(),
        )
        .map_err(|e| format!("{what}: {e}"))
    };
    if let (Some(c), Some(path)) = (&config.cores, &args.config) {
        if let Err(e) = cores_from(&format!("config {}: cores", path.display()), c) {
            return usage_error(e);
        }
    }
    let cores = if args.cores.is_empty() {
        config.cores.clone().unwrap_or_default()
    } else {
        if let Err(e) = cores_from("--cores", &args.cores) {
            return usage_error(e);
        }
        args.cores.clone()
    };
    let mut b = Engine::builder()
        .cores(&cores)
        .busy_poll(args.busy_poll || config.busy_poll.unwrap_or(false))
        .xdp_mode(
            match args
                .xdp_mode
                .or(config.xdp_mode)
                .unwrap_or(XdpModeArg::Auto)
            {
                XdpModeArg::Auto => XdpModeRequest::Auto,
                XdpModeArg::Native => XdpModeRequest::Native,
                XdpModeArg::Skb => XdpModeRequest::Skb,
            },
        )
        .zero_copy(
            match args
                .zero_copy
                .or(config.zero_copy)
                .unwrap_or(ZeroCopyArg::Auto)
            {
                ZeroCopyArg::Auto => ZeroCopy::Auto,
                ZeroCopyArg::On => ZeroCopy::On,
                ZeroCopyArg::Off => ZeroCopy::Off,
            },
        )
        .replace(args.replace || config.replace.unwrap_or(false))
        .frame_size(args.frame_size.or(config.frame_size).unwrap_or(4096))
        .ring_size(args.ring_size.or(config.ring_size).unwrap_or(2048))
        .batch_size(args.batch_size.or(config.batch_size).unwrap_or(64))
        .fib_gate(
            match args.fib_gate.or(config.fib_gate).unwrap_or(GateArg::Auto) {
                GateArg::Auto => GateMode::Auto,
                GateArg::Off => GateMode::Off,
                GateArg::Neigh => GateMode::Neighbours,
                GateArg::Full => GateMode::Full,
            },
        );
    for (name, value) in config.sysctl.iter().flatten() {
        let v = match value {
            toml::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        b = b.sysctl(name, &v);
    }
    for a in &args.sysctl {
        match a.split_once('=') {
            Some((n, v)) => b = b.sysctl(n.trim(), v.trim()),
            None => return usage_error(sysctl::SysctlError::Syntax(a.clone())),
        }
    }
    let metrics = match args.metrics.clone().or(config.metrics.clone()) {
        Some(m) => match metrics::parse_addr(&m) {
            Ok(a) => Some(a),
            Err(e) => return usage_error(format!("--metrics: {e}")),
        },
        None => None,
    };
    for i in &interfaces {
        b = b.interface(i);
    }
    if let Err(e) = b.check() {
        eprintln!("xdpip: {e}");
        return ExitCode::from(if e.is_usage() { 2 } else { 1 });
    }
    // The control socket next: a second engine in this namespace stops
    // here, before it touches the interfaces.
    let control = if args.no_socket {
        None
    } else {
        let path = args
            .socket
            .clone()
            .or(config.socket.clone())
            .map_or_else(api::default_socket_path, Ok);
        match path.and_then(|p| api::bind(&p).map(|l| (l, p))) {
            Ok(c) => Some(c),
            Err(e) => {
                return usage_error(format!(
                    "control socket: {e} (--socket PATH to use another, --no-socket for none)"
                ))
            }
        }
    };
    let mut engine = match b.start() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("xdpip: {e}");
            return ExitCode::from(if e.is_usage() { 2 } else { 1 });
        }
    };
    if let Some((l, p)) = control {
        match engine.serve_control_on(l, &p) {
            Ok(()) => log::info!("control socket {}", p.display()),
            Err(e) => {
                eprintln!("xdpip: control socket: {e}");
                return ExitCode::from(1);
            }
        }
    }
    if let Some(addr) = metrics {
        match engine.serve_metrics(addr) {
            Ok(a) => log::info!("metrics on http://{a}/metrics"),
            Err(e) => {
                eprintln!("xdpip: --metrics {addr}: {e}");
                return ExitCode::from(2);
            }
        }
    }

    let info = engine.info();
    let out = std::io::stdout();
    if args.json {
        let started = serde_json::json!({
            "event": "started",
            "mode": engine.report().mode,
            "workers": info.workers.iter().map(|w| serde_json::json!({
                "id": w.id, "queue": w.queue, "core": w.core, "cores": w.cores,
                "placement": w.placement,
            })).collect::<Vec<_>>(),
            "busy_poll": engine.report().busy_poll,
            "filter": xdpip::control::filter::describe(&engine.filter()),
        });
        let _ = writeln!(out.lock(), "{started}");
    } else {
        let _ = writeln!(
            out.lock(),
            "xdpip {}: serving {} with {} worker{}",
            env!("CARGO_PKG_VERSION"),
            info.ports
                .iter()
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            info.workers.len(),
            if info.workers.len() == 1 { "" } else { "s" }
        );
        for p in &info.ports {
            let _ = writeln!(
                out.lock(),
                "{}: driver {}, {} queue{}, XDP {} mode",
                p.name,
                p.driver,
                p.queues,
                if p.queues == 1 { "" } else { "s" },
                p.xdp_mode,
            );
        }
        let _ = writeln!(
            out.lock(),
            "AF_XDP: {} mode{}",
            info.bind_mode,
            info.zero_copy_refused
                .as_ref()
                .map_or(String::new(), |r| format!(" (zero-copy refused by {r})"))
        );
        for w in &info.workers {
            let _ = writeln!(
                out.lock(),
                "worker {}: queue {} on {}: {}",
                w.id,
                w.queue,
                match &w.cores {
                    Some(c) if c.len() == 1 => format!("core {}", c[0]),
                    Some(c) => format!("cores {}", xdpip::placement::list(c)),
                    None => "any core".to_string(),
                },
                w.placement
            );
        }
        if let Some(bp) = engine.report().busy_poll {
            for s in &bp.sockets {
                let _ = writeln!(out.lock(), "{}", s.reason);
            }
        }
        for l in xdpip::control::filter::describe(&engine.filter()) {
            let _ = writeln!(out.lock(), "{l}");
        }
    }

    let start = Instant::now();
    let deadline = args.duration.map(Duration::from_secs_f64);
    let mut last = engine.report();
    let mut last_t = Instant::now();
    let mut lost = None;
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
        if deadline.is_some_and(|d| start.elapsed() >= d) {
            break;
        }
        // The program was taken off an interface and could not be put
        // back: the kernel has that traffic now; say so and stop.
        if let Some(why) = engine.lost() {
            lost = Some(why);
            break;
        }
        if last_t.elapsed() >= Duration::from_secs(1) {
            let now = engine.report();
            let dt = last_t.elapsed().as_secs_f64();
            last_t = Instant::now();
            if !args.quiet {
                if args.json {
                    print_json("stats", &now);
                } else {
                    print_line(&now, &last, dt);
                }
            }
            last = now;
        }
    }
    let total = start.elapsed().as_secs_f64();
    let report = engine.stop();
    if args.json {
        print_json("stopped", &report);
    } else {
        print_summary(&report, total);
    }
    match lost {
        Some(why) => {
            eprintln!("xdpip: stopped: {why}");
            ExitCode::from(1)
        }
        None => ExitCode::SUCCESS,
    }
}

fn print_json(event: &str, r: &Report) {
    let mut v = serde_json::to_value(r).expect("serializable");
    v["event"] = serde_json::Value::from(event);
    println!("{v}");
}

fn rate(bytes: u64, dt: f64) -> String {
    let bits = bytes as f64 * 8.0 / dt;
    if bits >= 1e9 {
        format!("{:.2} Gbit/s", bits / 1e9)
    } else if bits >= 1e6 {
        format!("{:.1} Mbit/s", bits / 1e6)
    } else {
        format!("{:.0} kbit/s", bits / 1e3)
    }
}

/// `name=value` for the non-zero values (minus `base`), or `none`.
fn nonzero(values: &BTreeMap<String, u64>, base: Option<&BTreeMap<String, u64>>) -> String {
    let v: Vec<String> = values
        .iter()
        .map(|(k, n)| (k, n - base.map_or(0, |b| b[k])))
        .filter(|(_, n)| *n > 0)
        .map(|(k, n)| format!("{k}={n}"))
        .collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(" ")
    }
}

fn print_line(now: &Report, last: &Report, dt: f64) {
    let ports: Vec<String> = now
        .ports
        .iter()
        .zip(&last.ports)
        .map(|(p, l)| {
            format!(
                "{} rx {:.0} pps {} tx {:.0} pps {}",
                p.name,
                (p.rx_packets - l.rx_packets) as f64 / dt,
                rate(p.rx_bytes - l.rx_bytes, dt),
                (p.tx_packets - l.tx_packets) as f64 / dt,
                rate(p.tx_bytes - l.tx_bytes, dt),
            )
        })
        .collect();
    println!(
        "[{:>5.0}s] {} | forwarded {} | drops {}",
        now.uptime,
        ports.join(" | "),
        now.mib["ForwDatagrams"] - last.mib["ForwDatagrams"],
        nonzero(&now.drops, Some(&last.drops))
    );
}

fn print_stats(r: &Report) {
    println!(
        "up {:.0} s; AF_XDP {} mode; FIB gate {}; {} routes, {} neighbours",
        r.uptime, r.mode.afxdp, r.mode.fib_gate, r.control.routes, r.control.neighbours
    );
    print_counters(r);
    print_filter(r);
    for w in &r.workers {
        println!(
            "worker {} queue {}: on {}: {}",
            w.id,
            w.queue,
            match &w.cores {
                Some(c) if c.len() == 1 => format!("core {}", c[0]),
                Some(c) => format!("cores {}", xdpip::placement::list(c)),
                None => "any core".to_string(),
            },
            w.placement
        );
    }
    if let Some(bp) = &r.busy_poll {
        for s in &bp.sockets {
            println!("{}", s.reason);
        }
        println!("BusyPollRxPackets since start: {}", bp.busy_poll_rx_packets);
    }
    for w in &r.workers {
        for s in &w.sockets {
            let x = &s.xdp_statistics;
            println!(
                "worker {} {} queue {}: rx_dropped={} rx_ring_full={} fill_ring_empty={} tx_invalid={} tx_ring_empty={} fill_level={} tx_in_flight={}",
                w.id, s.iface, s.queue, x.rx_dropped, x.rx_ring_full, x.rx_fill_ring_empty_descs,
                x.tx_invalid_descs, x.tx_ring_empty_descs, s.fill_level, s.tx_in_flight
            );
        }
    }
}

/// The packet filter: hooks left to the kernel and why, and what each
/// rule matched on the fast path.
fn print_filter(r: &Report) {
    let f = &r.filter;
    println!(
        "filter: nf_tables generation {}, {} rules; hooks to the kernel: {}",
        f.generation,
        f.rules.len(),
        if f.kernel_hooks.is_empty() {
            "none".to_string()
        } else {
            f.kernel_hooks.join(", ")
        }
    );
    for why in &f.kernel_reasons {
        println!("filter:   to the kernel: {why}");
    }
    for x in &f.rules {
        let i = &x.rule;
        println!(
            "filter:   {} {} {} handle {}: {} -- {} packets {} bytes{}",
            i.family,
            i.table,
            i.chain,
            i.handle,
            i.action,
            x.packets,
            x.bytes,
            i.kernel
                .as_ref()
                .map_or(String::new(), |k| format!(" (kernel: {k})"))
        );
    }
}

fn print_summary(r: &Report, secs: f64) {
    println!("xdpip stopped after {secs:.1} s");
    print_counters(r);
}

fn print_counters(r: &Report) {
    for p in &r.ports {
        println!(
            "{}: rx {} packets {} bytes, tx {} packets {} bytes",
            p.name, p.rx_packets, p.rx_bytes, p.tx_packets, p.tx_bytes
        );
    }
    println!("IP-MIB: {}", nonzero(&r.mib, None));
    println!("drops: {}", nonzero(&r.drops, None));
    println!("checksums: {}", nonzero(&r.checksums, None));
    println!("XDP verdicts: {}", nonzero(&r.xdp, None));
}
