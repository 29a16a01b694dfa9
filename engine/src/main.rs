//! The `xdpip` command.

use clap::{Parser, Subcommand, ValueEnum};
use std::collections::BTreeMap;
use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
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
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum XdpModeArg {
    /// Native (driver) mode, falling back to skb mode if the driver refuses.
    Auto,
    /// Native (driver) mode only.
    Native,
    /// Generic (skb) mode.
    Skb,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum GateArg {
    /// The engine decides everything.
    Off,
    /// Unresolved next hops go to the kernel.
    Neigh,
    /// Anything the kernel's FIB cannot forward as is goes to the kernel.
    Full,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
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
    /// Interface to serve (repeat for each; at least one).
    #[arg(short = 'i', long = "interface", value_name = "IFACE", required = true)]
    interfaces: Vec<String>,
    /// Cores to pin workers to, comma separated (default: all).
    #[arg(long, value_delimiter = ',', value_name = "N,...")]
    cores: Vec<usize>,
    /// XDP attach mode.
    #[arg(long, value_enum, default_value = "auto")]
    xdp_mode: XdpModeArg,
    /// AF_XDP zero-copy.
    #[arg(long, value_enum, default_value = "auto")]
    zero_copy: ZeroCopyArg,
    /// Replace another tool's XDP program on the interfaces.
    #[arg(long)]
    replace: bool,
    /// UMEM frame size in bytes (2048 or 4096).
    #[arg(long, default_value_t = 4096)]
    frame_size: u32,
    /// Entries per AF_XDP ring (a power of two).
    #[arg(long, default_value_t = 2048)]
    ring_size: u32,
    /// Frames per batch.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// What the XDP program leaves to the kernel after asking its FIB:
    /// `neigh` (packets whose next hop the kernel has not resolved: it
    /// resolves and queues them), `full` (everything the kernel's FIB cannot
    /// forward as is: no route, too big, unresolved), `off` (nothing).
    #[arg(long, value_enum, default_value = "neigh")]
    fib_gate: GateArg,
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

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp(None)
        .format_target(false)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => run(args),
    }
}

fn run(args: RunArgs) -> ExitCode {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(sig, stop.clone()) {
            eprintln!("xdpip: installing a signal handler: {e}");
            return ExitCode::from(1);
        }
    }
    let mut b = Engine::builder()
        .cores(&args.cores)
        .xdp_mode(match args.xdp_mode {
            XdpModeArg::Auto => XdpModeRequest::Auto,
            XdpModeArg::Native => XdpModeRequest::Native,
            XdpModeArg::Skb => XdpModeRequest::Skb,
        })
        .zero_copy(match args.zero_copy {
            ZeroCopyArg::Auto => ZeroCopy::Auto,
            ZeroCopyArg::On => ZeroCopy::On,
            ZeroCopyArg::Off => ZeroCopy::Off,
        })
        .replace(args.replace)
        .frame_size(args.frame_size)
        .ring_size(args.ring_size)
        .batch_size(args.batch_size)
        .fib_gate(match args.fib_gate {
            GateArg::Off => GateMode::Off,
            GateArg::Neigh => GateMode::Neighbours,
            GateArg::Full => GateMode::Full,
        });
    for i in &args.interfaces {
        b = b.interface(i);
    }
    let engine = match b.start() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("xdpip: {e}");
            return ExitCode::from(if e.is_usage() { 2 } else { 1 });
        }
    };

    let info = engine.info();
    let out = std::io::stdout();
    if args.json {
        let started = serde_json::json!({
            "event": "started",
            "mode": engine.report().mode,
            "workers": info.workers.iter().map(|w| serde_json::json!({
                "id": w.id, "queue": w.queue, "core": w.core,
            })).collect::<Vec<_>>(),
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
                "worker {}: queue {} on core {}",
                w.id,
                w.queue,
                w.core.map_or("any".to_string(), |c| c.to_string())
            );
        }
    }

    let start = Instant::now();
    let deadline = args.duration.map(Duration::from_secs_f64);
    let mut last = engine.report();
    let mut last_t = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
        if deadline.is_some_and(|d| start.elapsed() >= d) {
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
    ExitCode::SUCCESS
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
fn nonzero(values: &BTreeMap<&str, u64>, base: Option<&BTreeMap<&str, u64>>) -> String {
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

fn print_summary(r: &Report, secs: f64) {
    println!("xdpip stopped after {secs:.1} s");
    for p in &r.ports {
        println!(
            "{}: rx {} packets {} bytes, tx {} packets {} bytes",
            p.name, p.rx_packets, p.rx_bytes, p.tx_packets, p.tx_bytes
        );
    }
    println!("IP-MIB: {}", nonzero(&r.mib, None));
    println!("drops: {}", nonzero(&r.drops, None));
    println!("XDP verdicts: {}", nonzero(&r.xdp, None));
}
