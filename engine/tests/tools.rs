//! Real tools through the engine give the answers they give through the
//! kernel: traceroute (UDP and ICMP), tracepath (which must find the
//! smaller MTU behind dut), ping with fragmented datagrams, and ping with
//! DF over a smaller egress MTU.
//!
//! Each tool runs twice in the same topology, once with the kernel routing
//! in dut and once with the engine; timings are removed from the output
//! before comparing, and learned path MTUs are flushed between runs.
//!
//! Needs root and the Debian packages traceroute and iputils-tracepath
//! (`cargo xtask test` installs them).

use std::time::Duration;
use testbed::{require_root, Child, Topology};

const XDPIP: &str = env!("CARGO_BIN_EXE_xdpip");

/// Output without round-trip times, with spaces collapsed.
fn normalize(out: &str) -> Vec<String> {
    out.lines()
        .map(|l| {
            l.split_whitespace()
                .filter(|w| {
                    let w = w.trim_end_matches("ms");
                    !(w.parse::<f64>().is_ok() && w.contains('.')
                        || w.is_empty()
                        || w.starts_with("time="))
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .filter(|l| !l.contains("packets transmitted") && !l.starts_with("rtt "))
        .collect()
}

fn tool(t: &Topology, args: &[&str]) -> Vec<String> {
    let out = t
        .gen
        .command(args[0])
        .args(&args[1..])
        .output()
        .expect("run tool");
    let _ = t.gen.ip(&["route", "flush", "cache"]);
    normalize(
        &(String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr)),
    )
}

fn compare(setup: &[&[&str]], args: &[&str], expect: &[&str]) {
    require_root();
    let t = Topology::gen_dut_sink(1).expect("topology");
    for cmd in setup {
        t.dut.ip(cmd).unwrap();
        if cmd.contains(&"mtu") {
            t.sink
                .ip(&["link", "set", "dev", "eth0", "mtu", cmd[cmd.len() - 1]])
                .unwrap();
        }
    }
    // sink answers too (port unreachable, echo replies): its own rate
    // limit must not make the two runs differ.
    t.sink.sysctl("net.ipv4.icmp_ratelimit", "0").unwrap();
    assert!(t.warm_up());
    let kernel = tool(&t, args);

    let mut cmd = t.dut.command(XDPIP);
    cmd.args(["run", "--json", "-q", "-i", "eth0", "-i", "eth1"]);
    let mut engine = Child::spawn(cmd).unwrap();
    engine
        .wait_for_line(Duration::from_secs(30), |l| {
            l.contains("\"event\":\"started\"")
        })
        .unwrap();
    let before = t.dut.snmp().unwrap();
    let ours = tool(&t, args);
    let after = t.dut.snmp().unwrap();
    engine.signal(libc::SIGTERM);
    assert!(engine.wait(Duration::from_secs(20)).unwrap().success());

    assert_eq!(
        ours, kernel,
        "{args:?} through the engine differs from the kernel"
    );
    for e in expect {
        assert!(
            kernel.iter().any(|l| l.contains(e)),
            "{args:?}: no line with {e:?} in {kernel:#?}"
        );
    }
    for k in ["IpForwDatagrams", "IcmpOutMsgs"] {
        assert_eq!(
            after[k], before[k],
            "the kernel of dut counted {k} while the engine ran"
        );
    }
}

const MTU_1400: &[&[&str]] = &[&["link", "set", "dev", "eth1", "mtu", "1400"]];

// `-w 5,0,0`: wait the full 5 s for every probe; traceroute's default
// adaptive wait (3 × the hop's round trip) turns a reply delayed by a busy
// machine into a `*`, in either run.
#[test]
fn traceroute_udp() {
    compare(
        &[],
        &["traceroute", "-n", "-w", "5,0,0", "10.2.0.2"],
        &["1 10.1.0.2", "2 10.2.0.2"],
    );
}

#[test]
fn traceroute_icmp() {
    compare(
        &[],
        &["traceroute", "-I", "-n", "-w", "5,0,0", "10.2.0.2"],
        &["1 10.1.0.2", "2 10.2.0.2"],
    );
}

#[test]
fn traceroute_to_an_unrouted_network() {
    compare(
        &[],
        &["traceroute", "-n", "-w", "5,0,0", "-m", "3", "10.99.0.1"],
        &["1 10.1.0.2 !N"],
    );
}

#[test]
fn tracepath_finds_the_smaller_mtu() {
    compare(
        MTU_1400,
        &["tracepath", "-n", "10.2.0.2"],
        &["pmtu 1400", "reached"],
    );
}

#[test]
fn ping_with_fragments() {
    compare(
        MTU_1400,
        &[
            "ping", "-c", "3", "-i", "0.3", "-W", "2", "-s", "3000", "10.2.0.2",
        ],
        &["3008 bytes from 10.2.0.2: icmp_seq=3 ttl=63"],
    );
}

#[test]
fn ping_with_df_over_a_smaller_mtu() {
    compare(
        MTU_1400,
        &[
            "ping", "-c", "2", "-i", "0.3", "-W", "1", "-M", "do", "-s", "1472", "10.2.0.2",
        ],
        &["Frag needed and DF set (mtu = 1400)"],
    );
}
