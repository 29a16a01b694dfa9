//! `xdpip-bench`: runs the engine on a test topology and measures it.
//!
//! * `demo`: the README's first command (kernel sockets as generator and
//!   sink; see demo.rs).
//! * `gen`: IPv4/UDP at the highest rate the machine allows, or paced, by
//!   AF_XDP or XDP live frames, each frame stamped with a sequence number
//!   and its transmit time.
//! * `sink`: counts the generator's frames in XDP, or reads them with
//!   AF_XDP for one-way latency, loss and reordering.
//! * `dns`: Knot DNS (XDP and socket modes) against the engine's DNS
//!   responder example, loaded by kxdpgun and dnsperf.
//! * `compare`: builds `gen ⇄ dut ⇄ sink` on veth and measures the kernel
//!   router, an in-kernel XDP forwarder and xdpip with the same generator
//!   and sink, in one run.

mod compare;
mod demo;
mod dns;
mod ebpf;
mod floor;
mod gen;
mod mcast;
mod plot;
mod sink;
mod sys;
mod topo;
mod wire;

use clap::{Args, Parser, Subcommand};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "xdpip-bench",
    version,
    about = "Traffic and measurements for xdpip"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Route UDP from gen to sink through the kernel, then through xdpip,
    /// on a veth topology it builds and removes.
    Demo {
        /// Seconds of traffic per run.
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
        /// UDP payload bytes.
        #[arg(long, default_value_t = 64)]
        payload: usize,
        /// UDP flows (source ports).
        #[arg(long, default_value_t = 4)]
        flows: u16,
        /// The xdpip binary (default: next to this one).
        #[arg(long)]
        xdpip: Option<PathBuf>,
    },
    /// Send IPv4/UDP from an interface of this network namespace (run it
    /// with `ip netns exec NS` for another), as fast as possible or at
    /// --rate, and print the achieved rate.
    Gen(GenArgs),
    /// Count (XDP) or read (AF_XDP) the generator's frames on an interface
    /// of this network namespace, and print rate, loss, reordering and
    /// one-way latency percentiles.
    Sink(SinkArgs),
    /// Build gen ⇄ dut ⇄ sink on veth and measure, with the same generator
    /// and sink, the Linux kernel as router, in-kernel XDP forwarding
    /// (bpf_fib_lookup) and xdpip: forwarding rate, and latency at 10, 50
    /// and 90% of the kernel's rate. Prints a table with ratios.
    Compare(compare::CompareArgs),
    /// Draw the plot of a `compare` run again from its JSON (`compare
    /// --json`), as `compare --png` draws it.
    Plot {
        /// The JSON `compare --json` wrote.
        #[arg(long)]
        json: PathBuf,
        /// The PNG to write.
        #[arg(long)]
        png: PathBuf,
    },
    /// Receive throughput of one multicast group joined by N sockets in
    /// dut: N kernel sockets against N engine sockets, same generator, one
    /// run, on a veth topology it builds and removes.
    Mcast(mcast::McastArgs),
    /// An authoritative DNS server on dut loaded from gen, in one run: Knot
    /// DNS in XDP mode, Knot on kernel sockets and the engine's
    /// dns_responder example, by kxdpgun (highest and fixed rates) and
    /// dnsperf; prints a table with the ratios.
    Dns(dns::DnsArgs),
    /// Forward IPv4 between interfaces of this network namespace with the
    /// in-kernel XDP forwarder `compare` measures (bpf_fib_lookup and a
    /// devmap redirect) until SIGINT or SIGTERM: the peer to compare xdpip
    /// with on a real NIC.
    XdpForward {
        /// Interface to forward between (repeat for each; at least two).
        #[arg(short = 'i', long = "interface", value_name = "IFACE", required = true)]
        ifaces: Vec<String>,
        /// Allow skb (generic) mode on drivers without native XDP.
        #[arg(long)]
        skb: bool,
    },
    /// The AF_XDP floor: forward IPv4 between two interfaces of this
    /// network namespace with nothing but AF_XDP I/O (the engine's own
    /// xdpip::xsk rings and sizes, its placement and idle policy) and a MAC
    /// rewrite, until SIGINT or SIGTERM. `compare` measures xdpip against
    /// it.
    XskForward {
        /// The two interfaces (-i A -i B).
        #[arg(short = 'i', long = "interface", value_name = "IFACE", required = true)]
        ifaces: Vec<String>,
        /// Destination MAC of the frames leaving each interface, in the
        /// order of -i.
        #[arg(long, value_parser = sys::mac_arg, required = true)]
        dst_mac: Vec<[u8; 6]>,
        /// Cores, as `xdpip run --cores` [default: the engine's rule].
        #[arg(long, value_delimiter = ',', value_name = "N,...")]
        cores: Vec<usize>,
    },
}

#[derive(Args)]
struct GenArgs {
    /// Interface to send from.
    #[arg(short = 'i', long = "interface", value_name = "IFACE")]
    iface: String,
    /// Destination address.
    #[arg(long)]
    dst: Ipv4Addr,
    /// Destination MAC (default: the neighbour entry of the route's next
    /// hop).
    #[arg(long, value_parser = sys::mac_arg)]
    dst_mac: Option<[u8; 6]>,
    /// Source address of flow 0 (default: the interface's).
    #[arg(long)]
    src: Option<Ipv4Addr>,
    /// AF_XDP socket or XDP live frames (BPF_PROG_RUN, kernel 5.18+).
    #[arg(long, value_enum, default_value = "afxdp")]
    mode: gen::GenMode,
    /// Ethernet frame size in bytes, with the 4-byte FCS (64..).
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Flows: source ports --sport, --sport+1, ...
    #[arg(long, default_value_t = 1)]
    flows: u32,
    /// Source addresses the flows cycle through: --src, --src+1, ...
    #[arg(long, default_value_t = 1)]
    src_addrs: u32,
    /// Source port of flow 0.
    #[arg(long, default_value_t = 10000)]
    sport: u16,
    /// Destination port (the sink's --port).
    #[arg(long, default_value_t = 9000)]
    dport: u16,
    /// Send every datagram as this many IPv4 fragments (afxdp mode).
    #[arg(long, default_value_t = 1)]
    fragments: usize,
    /// Target rate in frames per second (default: as fast as possible).
    #[arg(long)]
    rate: Option<f64>,
    /// Seconds to send.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Stop after this many datagrams.
    #[arg(long)]
    count: Option<u64>,
    /// Frames per batch at full rate.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Queue of the interface.
    #[arg(long, default_value_t = 0)]
    queue: u32,
    /// AF_XDP zero-copy.
    #[arg(long, value_enum, default_value = "auto")]
    zero_copy: gen::ZeroCopy,
    /// Core to pin the generator to.
    #[arg(long)]
    core: Option<usize>,
    /// Print the report as one JSON line.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct SinkArgs {
    /// Interface to receive on.
    #[arg(short = 'i', long = "interface", value_name = "IFACE")]
    iface: String,
    /// Count in XDP, or read with AF_XDP (latency, loss, reordering).
    #[arg(long, value_enum, default_value = "count")]
    mode: sink::SinkMode,
    /// UDP destination port of the generator's frames.
    #[arg(long, default_value_t = 9000)]
    port: u16,
    /// Stop after this many seconds (default: at SIGINT or SIGTERM).
    #[arg(long)]
    duration: Option<f64>,
    /// Core for the AF_XDP reader.
    #[arg(long)]
    core: Option<usize>,
    /// Native XDP only (no fallback to skb mode).
    #[arg(long)]
    native: bool,
    /// Run the AF_XDP reader in SCHED_FIFO, ahead of normal threads on its
    /// core (a generator on the same core, say).
    #[arg(long)]
    fifo: bool,
    /// No line per second.
    #[arg(short, long)]
    quiet: bool,
    /// JSON lines: `ready`, `second` each second, then the report.
    #[arg(long)]
    json: bool,
}

/// `xdpip-bench plot`: a compare run's JSON drawn again.
fn replot(json: &std::path::Path, png: &std::path::Path) -> Result<(), String> {
    let text =
        std::fs::read_to_string(json).map_err(|e| format!("reading {}: {e}", json.display()))?;
    let run: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", json.display()))?;
    let data = compare::plot_data(&run).map_err(|e| format!("{}: {e}", json.display()))?;
    plot::write_png(png, &data).map_err(|e| format!("writing {}: {e}", png.display()))?;
    println!("wrote {}", png.display());
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (name, result) = match cli.command {
        Cmd::Demo {
            seconds,
            payload,
            flows,
            xdpip,
        } => (
            "demo",
            demo::demo(seconds, payload, flows.max(1), xdpip).map_err(|e| e.to_string()),
        ),
        Cmd::Gen(a) => ("gen", run_gen(a).map_err(|e| e.to_string())),
        Cmd::Sink(a) => ("sink", run_sink(a).map_err(|e| e.to_string())),
        Cmd::Compare(a) => ("compare", compare::run(a).map_err(|e| e.to_string())),
        Cmd::Plot { json, png } => ("plot", replot(&json, &png)),
        Cmd::Mcast(a) => ("mcast", mcast::run(a)),
        Cmd::Dns(a) => ("dns", dns::run(a)),
        Cmd::XskForward {
            ifaces,
            dst_mac,
            cores,
        } => (
            "xsk-forward",
            floor::main(&ifaces, &dst_mac, &cores).map_err(|e| e.to_string()),
        ),
        Cmd::XdpForward { ifaces, skb } => (
            "xdp-forward",
            run_forward(&ifaces, skb).map_err(|e| e.to_string()),
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xdpip-bench {name}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A flag set by SIGINT and SIGTERM.
fn stop_flag() -> gen::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone())
            .map_err(|e| format!("installing a signal handler: {e}"))?;
    }
    Ok(stop)
}

fn need_root(what: &str) -> gen::Result<()> {
    if !sys::is_root() {
        return Err(format!("needs root: it {what}").into());
    }
    Ok(())
}

fn run_gen(a: GenArgs) -> gen::Result<()> {
    need_root("opens AF_XDP sockets or runs XDP programs")?;
    let info = sys::iface(None, &a.iface)?;
    let src = match a.src.or(info.addr) {
        Some(s) => s,
        None => {
            return Err(format!("{} has no IPv4 address: pass --src", a.iface).into());
        }
    };
    let dst_mac = match a.dst_mac {
        Some(m) => m,
        None => sys::next_hop_mac(&a.iface, a.dst)?,
    };
    if !(a.duration > 0.0 && a.duration.is_finite()) {
        return Err(format!(
            "--duration {}: give a positive number of seconds",
            a.duration
        )
        .into());
    }
    let cfg = gen::GenConfig {
        iface: a.iface,
        queue: a.queue,
        mode: a.mode,
        spec: wire::FrameSpec {
            dst_mac,
            src_mac: info.mac,
            src,
            dst: a.dst,
            sport: a.sport,
            dport: a.dport,
            size: a.size,
            fragments: a.fragments,
            flows: a.flows,
            src_addrs: a.src_addrs,
        },
        rate: a.rate,
        duration: Duration::from_secs_f64(a.duration),
        count: a.count,
        batch: a.batch.max(1),
        zero_copy: a.zero_copy,
        core: a.core,
    };
    let stop = stop_flag()?;
    let r = gen::run(&cfg, &stop)?;
    if a.json {
        let mut v = serde_json::to_value(&r)?;
        v["event"] = "gen".into();
        println!("{v}");
    } else {
        println!("{}", gen::summary(&r));
        println!(
            "  interface counters (ip -s link) over the run: TX {} packets, {} dropped",
            r.link.tx_packets, r.link.tx_dropped
        );
    }
    Ok(())
}

fn run_sink(a: SinkArgs) -> gen::Result<()> {
    need_root("attaches an XDP program")?;
    let duration = match a.duration {
        Some(d) if d > 0.0 && d.is_finite() => Some(Duration::from_secs_f64(d)),
        Some(d) => return Err(format!("--duration {d}: give a positive number of seconds").into()),
        None => None,
    };
    let cfg = sink::SinkConfig {
        iface: a.iface.clone(),
        mode: a.mode,
        port: a.port,
        core: a.core,
        native_only: a.native,
        fifo: a.fifo,
    };
    let stop = stop_flag()?;
    let mut s = sink::Sink::start(&cfg)?;
    let link0 = sys::link_counters(None, &a.iface)?;
    if a.json {
        println!(
            "{}",
            serde_json::json!({"event": "ready", "iface": a.iface, "mode": a.mode})
        );
    } else if !a.quiet {
        println!(
            "sink on {} ({:?} mode), port {}: ready; SIGINT or SIGTERM ends it",
            a.iface, a.mode, a.port
        );
    }
    let (json, quiet) = (a.json, a.quiet);
    s.watch(duration, &stop, |c, pps| {
        if json && !quiet {
            println!(
                "{}",
                serde_json::json!({"event": "second", "packets": c.packets, "pps": pps.round()})
            );
        } else if !quiet {
            println!("  {:>12} frames  {:>12.0} pps", c.packets, pps);
        }
    })?;
    let r = s.finish()?;
    let link = sys::link_counters(None, &a.iface)?.since(&link0);
    if a.json {
        let mut v = serde_json::to_value(&r)?;
        v["event"] = "sink".into();
        v["link"] = serde_json::to_value(link)?;
        println!("{v}");
    } else {
        println!("{}", sink::summary(&r));
        println!(
            "  interface counters (ip -s link) over the run: RX {} packets, {} dropped",
            link.rx_packets, link.rx_dropped
        );
    }
    Ok(())
}

fn run_forward(ifaces: &[String], skb: bool) -> gen::Result<()> {
    need_root("attaches XDP programs")?;
    if ifaces.len() < 2 {
        return Err("give at least two interfaces (-i A -i B)".into());
    }
    let stop = stop_flag()?;
    let mut l = ebpf::Loaded::load(ebpf::FWD_OBJECT, "xdp_fwd.bpf.o", &["xdp_fwd"])?;
    let mut ports: aya::maps::DevMapHash<aya::maps::MapData> = l.take_map("tx_ports")?;
    let mut idx = Vec::new();
    for name in ifaces {
        let i = sys::iface(None, name)?.ifindex;
        ports
            .insert(i, i, None, 0)
            .map_err(|e| format!("BPF map tx_ports: {}", ebpf::chain(&e)))?;
        idx.push((name, i));
    }
    for (name, i) in idx {
        let mode = l.attach("xdp_fwd", name, i, !skb)?;
        println!("{name}: xdp_fwd attached in {mode} mode");
    }
    println!(
        "forwarding IPv4 with bpf_fib_lookup between {}; SIGINT or SIGTERM ends it \
         (ip_forward must be 1: the FIB lookup honours it)",
        ifaces.join(", ")
    );
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
    }
    l.detach_all()?;
    Ok(())
}
