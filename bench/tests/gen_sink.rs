//! The generator and the sink checked against each other and against the
//! interface counters (`ip -s link`), on a direct veth pair between two
//! network namespaces:
//!
//! ```text
//!  gen eth0 10.9.0.1/24 ──── 10.9.0.2/24 eth0 sink
//! ```
//!
//! Both tools run as a user runs them (`ip netns exec NS xdpip-bench ...
//! --json`), at a rate the sink sustains, so that what the generator says
//! it sent is exactly what the sink counts and what the interfaces count.
//!
//! Needs root; run with `cargo xtask test`, or `cargo test -p xdpip-bench
//! --features datapath-tests` as root.

use serde_json::Value;
use std::time::Duration;
use testbed::{mac_of, require_root, veth, Child, Netns};

const BENCH: &str = env!("CARGO_BIN_EXE_xdpip-bench");

struct Pair {
    gen: Netns,
    sink: Netns,
    sink_mac: String,
}

fn pair() -> Pair {
    require_root();
    let gen = Netns::new("gen").expect("namespace");
    let sink = Netns::new("sink").expect("namespace");
    // No IPv6: its neighbour discovery and MLD frames would be in the
    // interface counters too.
    for ns in [&gen, &sink] {
        for k in ["all", "default"] {
            ns.sysctl(&format!("net.ipv6.conf.{k}.disable_ipv6"), "1")
                .unwrap();
        }
    }
    veth(&gen, "eth0", &sink, "eth0").expect("veth pair");
    gen.ip(&["addr", "add", "10.9.0.1/24", "dev", "eth0"])
        .unwrap();
    sink.ip(&["addr", "add", "10.9.0.2/24", "dev", "eth0"])
        .unwrap();
    for ns in [&gen, &sink] {
        ns.ip(&["link", "set", "eth0", "up"]).unwrap();
    }
    let m = mac_of(&sink, "eth0").unwrap();
    let sink_mac = m
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    Pair {
        gen,
        sink,
        sink_mac,
    }
}

/// Starts `xdpip-bench sink --json ARGS` in sink and waits until it is
/// attached.
fn start_sink(p: &Pair, args: &[&str]) -> Child {
    let mut cmd = p.sink.command(BENCH);
    cmd.args(["sink", "-i", "eth0", "--json", "-q"]).args(args);
    let mut c = Child::spawn(cmd).expect("spawn the sink");
    c.wait_for_line(Duration::from_secs(20), |l| {
        l.contains("\"event\":\"ready\"")
    })
    .expect("the sink attaches");
    c
}

/// Ends the sink with SIGTERM and returns its report.
fn stop_sink(mut c: Child) -> Value {
    // Frames still on their way.
    std::thread::sleep(Duration::from_millis(300));
    c.signal(libc::SIGTERM);
    let st = c.wait(Duration::from_secs(20)).expect("the sink exits");
    assert!(st.success(), "sink failed: {}", c.stderr().join("\n"));
    report(&c, "sink")
}

fn report(c: &Child, event: &str) -> Value {
    let tag = format!("\"event\":\"{event}\"");
    let line = c
        .stdout()
        .into_iter()
        .find(|l| l.contains(&tag))
        .unwrap_or_else(|| {
            panic!(
                "no {event} report; stdout:\n{}\nstderr:\n{}",
                c.stdout().join("\n"),
                c.stderr().join("\n")
            )
        });
    serde_json::from_str(&line).expect("the report is JSON")
}

/// Runs `xdpip-bench gen --json ARGS` in gen to its end; returns its report.
fn run_gen(p: &Pair, args: &[&str]) -> Value {
    let mut cmd = p.gen.command(BENCH);
    cmd.args(["gen", "-i", "eth0", "--dst", "10.9.0.2", "--dst-mac"])
        .arg(&p.sink_mac)
        .args(["--json"])
        .args(args);
    let mut c = Child::spawn(cmd).expect("spawn the generator");
    let st = c
        .wait(Duration::from_secs(60))
        .expect("the generator exits");
    assert!(st.success(), "gen failed: {}", c.stderr().join("\n"));
    report(&c, "gen")
}

fn n(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("{v} is not a count"))
}

/// The checks every run shares: the generator's count, the sink's XDP
/// counter and both interfaces' counters agree exactly.
fn assert_counts_agree(gen: &Value, sink: &Value, frames_per_datagram: u64) {
    let sent = n(&gen["sent"]);
    assert!(sent > 10_000, "too little traffic to compare: {gen}");
    assert_eq!(n(&gen["refused"]), 0, "the interface refused frames: {gen}");
    assert_eq!(
        n(&gen["datagrams"]) * frames_per_datagram,
        sent,
        "datagrams and frames: {gen}"
    );
    assert_eq!(
        n(&sink["counts"]["packets"]),
        sent,
        "the sink counted other than the generator sent\ngen: {gen}\nsink: {sink}"
    );
    assert_eq!(
        n(&gen["link"]["tx_packets"]),
        sent,
        "gen's eth0 (ip -s link) counted other than the generator says it sent: {gen}"
    );
    assert_eq!(
        n(&sink["link"]["rx_packets"]),
        sent,
        "sink's eth0 (ip -s link) counted other than the sink: {sink}"
    );
    // Pacing never overshoots the target. It may fall short when the host
    // deschedules the generator (a loaded CI machine does), but then the
    // report must say so: every shortfall of more than 1 ms is a slip.
    let pps = gen["pps"].as_f64().unwrap();
    let target = gen["target_pps"].as_f64().unwrap();
    assert!(
        pps < target * 1.05,
        "achieved {pps} pps, over the target of {target}: {gen}"
    );
    if pps < target * 0.9 {
        assert!(
            n(&gen["pacing_slips"]) > 0,
            "achieved {pps} pps for a target of {target}, and no pacing slip reported: {gen}"
        );
    }
}

#[test]
fn afxdp_generator_and_xdp_counting_sink_agree_with_the_interfaces() {
    let p = pair();
    let sink = start_sink(&p, &["--mode", "count"]);
    let gen = run_gen(
        &p,
        &[
            "--rate",
            "40000",
            "--duration",
            "1",
            "--flows",
            "8",
            "--src-addrs",
            "2",
        ],
    );
    let sink = stop_sink(sink);
    assert_eq!(gen["mode"], "afxdp");
    assert_eq!(gen["transmit"], "copy", "veth has no AF_XDP zero-copy");
    assert_eq!(sink["xdp_mode"], "native");
    assert_counts_agree(&gen, &sink, 1);
    assert_eq!(
        n(&sink["counts"]["bytes"]),
        n(&gen["sent"]) * 60,
        "64-byte frames are 60 bytes without FCS"
    );
}

#[test]
fn afxdp_sink_sees_every_sequence_number_once_in_order() {
    let p = pair();
    let sink = start_sink(&p, &["--mode", "afxdp"]);
    let gen = run_gen(&p, &["--rate", "30000", "--duration", "1", "--size", "128"]);
    let sink = stop_sink(sink);
    assert_counts_agree(&gen, &sink, 1);
    let l = &sink["latency"];
    assert_eq!(n(&l["stamped"]), n(&gen["datagrams"]), "{sink}");
    assert_eq!(n(&l["first_seq"]), 0);
    assert_eq!(n(&l["last_seq"]), n(&gen["datagrams"]) - 1);
    assert_eq!(n(&l["lost"]), 0);
    assert_eq!(n(&l["reordered"]), 0);
    assert_eq!(n(&l["clock_errors"]), 0, "same host, same clock");
    // One-way latency on a veth pair: positive, ordered percentiles.
    let (p50, p99, max) = (n(&l["p50_ns"]), n(&l["p99_ns"]), n(&l["max_ns"]));
    assert!(0 < p50 && p50 <= p99 && p99 <= max, "{l}");
}

#[test]
fn fragments_are_counted_as_frames_and_stamped_once() {
    let p = pair();
    let sink = start_sink(&p, &["--mode", "afxdp"]);
    let gen = run_gen(
        &p,
        &[
            "--rate",
            "30000",
            "--duration",
            "1",
            "--size",
            "1000",
            "--fragments",
            "3",
        ],
    );
    let sink = stop_sink(sink);
    assert_counts_agree(&gen, &sink, 3);
    let l = &sink["latency"];
    let datagrams = n(&gen["datagrams"]);
    assert_eq!(n(&l["stamped"]), datagrams, "first fragments: {sink}");
    assert_eq!(n(&l["later_fragments"]), 2 * datagrams, "{sink}");
    assert_eq!(n(&l["lost"]), 0);
}

#[test]
fn live_frames_generator_agrees_with_the_sink() {
    // XDP live frames need kernel 5.18+; the sink's XDP program lets the
    // veth take XDP frames.
    let p = pair();
    let sink = start_sink(&p, &["--mode", "count"]);
    let gen = run_gen(
        &p,
        &[
            "--mode",
            "live",
            "--rate",
            "40000",
            "--duration",
            "1",
            "--flows",
            "4",
        ],
    );
    let sink = stop_sink(sink);
    assert_eq!(gen["transmit"], "live");
    assert_counts_agree(&gen, &sink, 1);
}

#[test]
fn a_bad_size_is_refused_with_the_limit() {
    let p = pair();
    let mut cmd = p.gen.command(BENCH);
    cmd.args(["gen", "-i", "eth0", "--dst", "10.9.0.2", "--dst-mac"])
        .arg(&p.sink_mac)
        .args(["--size", "9000", "--duration", "0.1"]);
    let mut c = Child::spawn(cmd).unwrap();
    let st = c.wait(Duration::from_secs(20)).unwrap();
    assert!(!st.success());
    let err = c.stderr().join("\n");
    assert!(
        err.contains("MTU 1500") && err.contains("at most 1518"),
        "{err}"
    );
}
