//! `demo`: the README's first command. It builds `gen ⇄ dut ⇄ sink` on veth
//! pairs in fresh network namespaces, runs the kernel as the router for a
//! few seconds, then xdpip, with the same UDP traffic, prints what went
//! through and how fast, and removes everything.

use serde_json::Value;
use std::net::UdpSocket;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use testbed::{Child, Topology};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

struct Run {
    sent: u64,
    received: u64,
    secs: f64,
    /// UdpRcvbufErrors of sink during the run: datagrams that arrived but
    /// found the socket's buffer full.
    rcvbuf_errors: u64,
}

/// Blasts UDP from gen to sink for `secs` and counts what sink's socket gets.
fn traffic(t: &Topology, secs: f64, payload: usize, flows: u16) -> Result<Run> {
    let rcvbuf0 = t.sink.snmp()?["UdpRcvbufErrors"];
    let received = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (r, s) = (received.clone(), stop.clone());
    let sink = t.sink.spawn(move || -> std::io::Result<()> {
        let sock = UdpSocket::bind("10.2.0.2:9000")?;
        sock.set_read_timeout(Some(Duration::from_millis(100)))?;
        let mut buf = [0u8; 2048];
        while !s.load(Ordering::Relaxed) {
            if sock.recv(&mut buf).is_ok() {
                r.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    })?;
    std::thread::sleep(Duration::from_millis(200));
    let (sent, elapsed) = t.gen.run(move || -> std::io::Result<(u64, f64)> {
        let socks: Vec<UdpSocket> = (0..flows)
            .map(|f| UdpSocket::bind(("10.1.0.1", 20000 + f)))
            .collect::<std::io::Result<_>>()?;
        for s in &socks {
            s.connect("10.2.0.2:9000")?;
        }
        let msg = vec![0x5au8; payload];
        let start = Instant::now();
        let mut sent = 0u64;
        while start.elapsed().as_secs_f64() < secs {
            for s in &socks {
                for _ in 0..16 {
                    if s.send(&msg).is_ok() {
                        sent += 1;
                    }
                }
            }
        }
        Ok((sent, start.elapsed().as_secs_f64()))
    })??;
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    sink.join().map_err(|_| "sink thread panicked")??;
    Ok(Run {
        sent,
        received: received.load(Ordering::Relaxed),
        secs: elapsed,
        rcvbuf_errors: t.sink.snmp()?["UdpRcvbufErrors"] - rcvbuf0,
    })
}

fn ping_ttls(t: &Topology) -> Result<(u32, Vec<u8>)> {
    let out = t
        .gen
        .command("ping")
        .args(["-c", "3", "-i", "0.2", "-W", "2", "10.2.0.2"])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let ttls: Vec<u8> = text
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("ttl=")?.parse().ok())
        .collect();
    Ok((3, ttls))
}

pub(crate) fn find_xdpip(explicit: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p);
    }
    let me = std::env::current_exe()?;
    let p = me.with_file_name("xdpip");
    if p.exists() {
        Ok(p)
    } else {
        Err(format!(
            "no xdpip binary next to {}; pass --xdpip PATH",
            me.display()
        )
        .into())
    }
}

fn line(name: &str, r: &Run) {
    println!(
        "  {name:<14} sent {:>9}  received {:>9}  ({:>5.1}%)  {:>9.0} pps received; \
         sink socket buffer overflows {}",
        r.sent,
        r.received,
        if r.sent > 0 {
            100.0 * r.received as f64 / r.sent as f64
        } else {
            0.0
        },
        r.received as f64 / r.secs,
        r.rcvbuf_errors
    );
}

pub(crate) fn demo(secs: f64, payload: usize, flows: u16, xdpip: Option<PathBuf>) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("needs root: it creates network namespaces and attaches XDP programs".into());
    }
    let xdpip = find_xdpip(xdpip)?;
    println!("building gen ⇄ dut ⇄ sink on veth pairs in new network namespaces");
    let t = Topology::gen_dut_sink(1)?;
    if !t.warm_up() {
        return Err("the topology does not route even through the kernel".into());
    }
    println!("  gen  10.1.0.1 ─ 10.1.0.2 eth0 [dut] eth1 10.2.0.1 ─ 10.2.0.2  sink");

    println!("\n1. the Linux kernel as the router ({secs} s of UDP, {payload}-byte payloads, {flows} flows)");
    let k0 = t.dut.snmp()?["IpForwDatagrams"];
    let kernel = traffic(&t, secs, payload, flows)?;
    let k1 = t.dut.snmp()?["IpForwDatagrams"];
    line("kernel router", &kernel);

    println!("\n2. xdpip as the router ({})", xdpip.display());
    let mut cmd = t.dut.command(xdpip.to_str().ok_or("path is not UTF-8")?);
    cmd.args(["run", "--json", "-i", "eth0", "-i", "eth1"]);
    let mut engine = Child::spawn(cmd)?;
    let started: Value =
        serde_json::from_str(&engine.wait_for_line(Duration::from_secs(30), |l| {
            l.contains("\"event\":\"started\"")
        })?)?;
    for p in started["mode"]["ports"].as_array().into_iter().flatten() {
        println!(
            "  {}: driver {}, XDP {} mode, AF_XDP {} mode",
            p["name"].as_str().unwrap_or("?"),
            p["driver"].as_str().unwrap_or("?"),
            p["xdp_mode"].as_str().unwrap_or("?"),
            started["mode"]["afxdp"].as_str().unwrap_or("?")
        );
    }
    let e0 = t.dut.snmp()?["IpForwDatagrams"];
    let ours = traffic(&t, secs, payload, flows)?;
    let (pings, ttls) = ping_ttls(&t)?;
    let e1 = t.dut.snmp()?["IpForwDatagrams"];
    engine.signal(libc::SIGTERM);
    let status = engine.wait(Duration::from_secs(20))?;
    if !status.success() {
        return Err(format!("xdpip exited with {status}: {}", engine.stderr().join("\n")).into());
    }
    let report: Value = engine
        .stdout()
        .iter()
        .find(|l| l.contains("\"event\":\"stopped\""))
        .map(|l| serde_json::from_str(l))
        .transpose()?
        .ok_or("xdpip printed no final report")?;
    line("xdpip", &ours);
    let fwd = report["mib"]["ForwDatagrams"].as_u64().unwrap_or(0);
    println!("  xdpip forwarded {fwd} datagrams (IP-MIB ForwDatagrams); the kernel of dut forwarded {} meanwhile", e1 - e0);
    let drops: Vec<String> = report["drops"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, v)| v.as_u64() > Some(0))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    println!(
        "  drops in xdpip: {}",
        if drops.is_empty() {
            "none".to_string()
        } else {
            drops.join(" ")
        }
    );
    println!(
        "  ping gen → sink through xdpip: {}/{pings} replies, ttl {}",
        ttls.len(),
        ttls.iter()
            .map(|t| t.to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    println!(
        "\nsummary: kernel router {:.0} pps, xdpip {:.0} pps received at sink (ratio {:.2}); \
         the kernel forwarded {} in run 1.",
        kernel.received as f64 / kernel.secs,
        ours.received as f64 / ours.secs,
        (ours.received as f64 / ours.secs) / (kernel.received as f64 / kernel.secs).max(1.0),
        k1 - k0
    );
    println!(
        "This is a demo with kernel UDP sockets as generator and sink, on veth in copy mode, \
         all on this machine's cores: the sink and generator, not the router, set these rates."
    );
    println!("removing the namespaces");
    if ttls.len() as u32 != pings || ttls.iter().any(|t| *t != 63) || fwd == 0 || e1 != e0 {
        return Err("xdpip did not forward as expected (see above)".into());
    }
    Ok(())
}
