//! The engine on the real datapath: veth pairs in network namespaces, the
//! real XDP program, real AF_XDP sockets, packets sent by the kernel of
//! `gen` and checked where they arrive in `sink`.
//!
//! Needs root; run with `cargo xtask test` (or `cargo test -p xdpip
//! --features datapath-tests` as root). Every test builds its own
//! namespaces, so they run in parallel and leave nothing behind.

use serde_json::Value;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::process::Command;
use std::time::Duration;
use testbed::frame::{ipv4_facts, UdpFrame};
use testbed::{addr, mac_of, require_root, Child, Netns, PacketSocket, Topology};

const XDPIP: &str = env!("CARGO_BIN_EXE_xdpip");
const START: Duration = Duration::from_secs(30);

fn topology() -> Topology {
    require_root();
    let t = Topology::gen_dut_sink(1).expect("topology");
    assert!(t.warm_up(), "the kernel router itself does not forward");
    t
}

/// Starts `xdpip run --json` in dut and waits for its "started" event.
fn start_engine(t: &Topology, extra: &[&str]) -> (Child, Value) {
    let mut cmd = t.dut.command(XDPIP);
    cmd.args(["run", "--json", "-i", "eth0", "-i", "eth1"])
        .args(extra);
    let mut child = Child::spawn(cmd).expect("spawn xdpip");
    let line = child
        .wait_for_line(START, |l| l.contains("\"event\":\"started\""))
        .expect("engine start");
    (child, serde_json::from_str(&line).expect("json"))
}

/// Stops the engine with SIGTERM and returns its final report.
fn stop_engine(mut child: Child) -> Value {
    child.signal(libc::SIGTERM);
    let st = child.wait(Duration::from_secs(20)).expect("exit");
    assert!(
        st.success(),
        "xdpip exited with {st}; stderr:\n{}",
        child.stderr().join("\n")
    );
    let line = child
        .stdout()
        .into_iter()
        .find(|l| l.contains("\"event\":\"stopped\""))
        .expect("stopped event");
    serde_json::from_str(&line).expect("json")
}

/// XDP program ids attached to an interface (`ip -d link` shows them).
fn xdp_prog_ids(ns: &Netns, ifname: &str) -> Vec<u32> {
    let out = ns
        .ip(&["-d", "link", "show", "dev", ifname])
        .expect("ip link");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let words: Vec<&str> = text.split_whitespace().collect();
    words
        .windows(2)
        .filter(|w| w[0] == "id" && text.contains("prog/xdp"))
        .filter_map(|w| w[1].parse().ok())
        .collect()
}

fn frames_for_comparison(t: &Topology) -> Vec<Vec<u8>> {
    let gen_mac = mac_of(&t.gen, "eth0").unwrap();
    let dut_mac = mac_of(&t.dut, "eth0").unwrap();
    let mut v = Vec::new();
    let sizes = [0usize, 1, 17, 100, 555, 1000, 1472];
    let ttls = [2u8, 64, 255];
    let toses = [0u8, 0xb8, 0x03];
    let mut i = 0u16;
    for &size in &sizes {
        for &ttl in &ttls {
            for &tos in &toses {
                i += 1;
                v.push(
                    UdpFrame {
                        dst_mac: dut_mac,
                        src_mac: gen_mac,
                        src: addr::GEN,
                        dst: addr::SINK,
                        sport: 40000 + i,
                        dport: 9000,
                        ttl,
                        ident: i.wrapping_mul(7919),
                        tos,
                        df: i.is_multiple_of(2),
                        payload: (0..size).map(|b| (b as u16 ^ i) as u8).collect(),
                    }
                    .build(),
                );
            }
        }
    }
    v
}

/// Sends `frames` from gen and returns what arrives in sink on UDP port 9000.
fn send_and_capture(t: &Topology, frames: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let tx = PacketSocket::open(&t.gen, "eth0").unwrap();
    let rx = PacketSocket::open(&t.sink, "eth0").unwrap();
    for f in frames {
        tx.send(f).unwrap();
        // Pace a little: the comparison is about bytes, not rates.
        std::thread::sleep(Duration::from_micros(200));
    }
    rx.collect(frames.len(), Duration::from_secs(3), |f| {
        ipv4_facts(f).is_some_and(|x| x.dport == Some(9000))
    })
    .unwrap()
}

#[test]
fn forwards_udp_byte_identical_to_the_kernel_router() {
    let t = topology();
    let frames = frames_for_comparison(&t);

    let kernel = send_and_capture(&t, &frames);
    assert_eq!(kernel.len(), frames.len(), "the kernel router lost frames");

    let (engine, _) = start_engine(&t, &[]);
    let before = t.dut.snmp().unwrap()["IpForwDatagrams"];
    let ours = send_and_capture(&t, &frames);
    let after = t.dut.snmp().unwrap()["IpForwDatagrams"];
    let report = stop_engine(engine);

    assert_eq!(ours.len(), frames.len(), "the engine lost frames");
    let sink_mac = mac_of(&t.sink, "eth0").unwrap();
    let dut1_mac = mac_of(&t.dut, "eth1").unwrap();
    for (k, (ours, kernel)) in ours.iter().zip(&kernel).enumerate() {
        assert_eq!(ours, kernel, "frame {k} differs from the kernel's");
        let f = ipv4_facts(ours).unwrap();
        let sent = ipv4_facts(&frames[k]).unwrap();
        assert_eq!(f.ttl, sent.ttl - 1);
        assert!(f.header_ok && f.udp_ok == Some(true));
        assert_eq!((f.dst_mac, f.src_mac), (sink_mac, dut1_mac));
    }
    assert_eq!(
        after - before,
        0,
        "the kernel forwarded what the engine should have"
    );
    assert!(report["mib"]["ForwDatagrams"].as_u64().unwrap() >= frames.len() as u64);
    assert!(report["xdp"]["redirect_forward"].as_u64().unwrap() >= frames.len() as u64);
}

#[test]
fn ping_through_the_engine_decrements_ttl() {
    let t = topology();
    let (engine, _) = start_engine(&t, &[]);
    let before = t.dut.snmp().unwrap()["IpForwDatagrams"];
    let out = t
        .gen
        .exec(&["ping", "-c", "5", "-i", "0.2", "-W", "2", "10.2.0.2"])
        .expect("ping through the engine");
    let after = t.dut.snmp().unwrap()["IpForwDatagrams"];
    let text = String::from_utf8_lossy(&out.stdout);
    let report = stop_engine(engine);
    assert!(text.contains(" 0% packet loss"), "{text}");
    assert_eq!(text.matches("ttl=63").count(), 5, "{text}");
    assert_eq!(after, before, "the kernel forwarded the pings");
    assert!(
        report["mib"]["ForwDatagrams"].as_u64().unwrap() >= 10,
        "{report}"
    );
}

#[test]
fn local_tcp_on_an_unclaimed_port_still_reaches_the_kernel() {
    let t = topology();
    let (engine, _) = start_engine(&t, &[]);
    let server = t
        .dut
        .spawn(|| {
            let l = TcpListener::bind("10.1.0.2:2222").unwrap();
            let (mut s, _) = l.accept().unwrap();
            s.write_all(b"SSH-2.0-OpenSSH_9.2\r\n").unwrap();
            let mut buf = [0u8; 64];
            let n = s.read(&mut buf).unwrap();
            buf[..n].to_vec()
        })
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let banner = t
        .gen
        .run(|| {
            let mut s = TcpStream::connect_timeout(
                &"10.1.0.2:2222".parse().unwrap(),
                Duration::from_secs(5),
            )
            .unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut buf = [0u8; 64];
            let n = s.read(&mut buf).unwrap();
            s.write_all(b"SSH-2.0-client\r\n").unwrap();
            buf[..n].to_vec()
        })
        .unwrap();
    let got = server.join().unwrap();
    let report = stop_engine(engine);
    assert_eq!(banner, b"SSH-2.0-OpenSSH_9.2\r\n");
    assert_eq!(got, b"SSH-2.0-client\r\n");
    assert!(
        report["xdp"]["pass_local"].as_u64().unwrap() >= 3,
        "{report}"
    );
}

#[test]
fn copy_mode_fallback_on_veth_is_reported() {
    let t = topology();
    let (engine, started) = start_engine(&t, &[]);
    stop_engine(engine);
    assert_eq!(started["mode"]["afxdp"], "copy");
    let why = started["mode"]["zero_copy_refused"].as_str().unwrap();
    assert!(why.contains("not supported"), "{why}");
    for p in started["mode"]["ports"].as_array().unwrap() {
        assert_eq!(p["xdp_mode"], "native");
        assert_eq!(p["driver"], "veth");
    }

    // The same in text, as an operator reads it.
    let mut cmd = t.dut.command(XDPIP);
    cmd.args(["run", "-q", "--duration", "0.5", "-i", "eth0", "-i", "eth1"]);
    let mut c = Child::spawn(cmd).unwrap();
    assert!(c.wait(Duration::from_secs(20)).unwrap().success());
    let text = c.stdout().join("\n");
    assert!(
        text.contains("AF_XDP: copy mode (zero-copy refused by eth0"),
        "{text}"
    );
    assert!(
        text.contains("eth0: driver veth, 1 queue, XDP native mode"),
        "{text}"
    );

    // Asking for zero-copy on a driver without it is an error naming why,
    // with status 2: the command asks what the interface cannot do.
    let mut cmd = t.dut.command(XDPIP);
    cmd.args(["run", "--zero-copy", "on", "-i", "eth0", "-i", "eth1"]);
    let mut c = Child::spawn(cmd).unwrap();
    let st = c.wait(Duration::from_secs(20)).unwrap();
    assert_eq!(st.code(), Some(2));
    let err = c.stderr().join("\n");
    assert!(
        err.contains("zero-copy mode") && err.contains("not supported"),
        "{err}"
    );
    assert!(
        xdp_prog_ids(&t.dut, "eth0").is_empty(),
        "failed start left a program"
    );
}

#[test]
fn no_program_is_left_or_stacked_after_sigterm_or_sigkill() {
    let t = topology();
    let (engine, _) = start_engine(&t, &[]);
    assert_eq!(xdp_prog_ids(&t.dut, "eth0").len(), 1);
    stop_engine(engine);
    assert!(xdp_prog_ids(&t.dut, "eth0").is_empty());
    assert!(xdp_prog_ids(&t.dut, "eth1").is_empty());

    let (engine, _) = start_engine(&t, &[]);
    engine.signal(libc::SIGKILL);
    drop(engine);
    // The BPF link dies with the process; the kernel may take a moment.
    let mut gone = false;
    for _ in 0..50 {
        if xdp_prog_ids(&t.dut, "eth0").is_empty() && xdp_prog_ids(&t.dut, "eth1").is_empty() {
            gone = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(gone, "a killed engine left its program attached");

    // A restart right away works, with one program per interface.
    let (engine, _) = start_engine(&t, &[]);
    assert_eq!(xdp_prog_ids(&t.dut, "eth0").len(), 1);
    assert_eq!(xdp_prog_ids(&t.dut, "eth1").len(), 1);
    t.gen
        .exec(&["ping", "-c", "2", "-W", "2", "10.2.0.2"])
        .expect("ping after restart");
    stop_engine(engine);

    // A program of ours attached the old way (netlink, as on kernels
    // before 5.9) is found and replaced, not stacked.
    let obj = std::env::temp_dir().join(format!("xdpip-steer-{}.o", std::process::id()));
    std::fs::write(&obj, xdpip::ebpf::STEER_OBJECT).unwrap();
    t.dut
        .ip(&[
            "link",
            "set",
            "dev",
            "eth0",
            "xdpdrv",
            "obj",
            obj.to_str().unwrap(),
            "sec",
            "xdp",
        ])
        .expect("attach a leftover");
    let _ = std::fs::remove_file(&obj);
    let leftover = xdp_prog_ids(&t.dut, "eth0");
    assert_eq!(leftover.len(), 1);
    let (engine, _) = start_engine(&t, &[]);
    let now = xdp_prog_ids(&t.dut, "eth0");
    assert_eq!(now.len(), 1);
    assert_ne!(now, leftover, "the leftover was not replaced");
    let stderr = engine.stderr().join("\n");
    stop_engine(engine);
    assert!(
        stderr.contains("left behind by an earlier xdpip"),
        "{stderr}"
    );
    assert!(xdp_prog_ids(&t.dut, "eth0").is_empty());
}

fn compile_foreign_program() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("xdpip-foreign-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("other.bpf.c");
    std::fs::write(
        &src,
        "#include <linux/bpf.h>\n#include <bpf/bpf_helpers.h>\n\
         SEC(\"xdp\") int xdp_other_tool(struct xdp_md *ctx) { return XDP_PASS; }\n\
         char _license[] SEC(\"license\") = \"GPL\";\n",
    )
    .unwrap();
    let obj = dir.join("other.o");
    let arch = if cfg!(target_arch = "aarch64") {
        "aarch64-linux-gnu"
    } else {
        "x86_64-linux-gnu"
    };
    let st = Command::new("clang")
        .args([
            "-O2",
            "-target",
            "bpf",
            &format!("-I/usr/include/{arch}"),
            "-c",
        ])
        .arg(&src)
        .arg("-o")
        .arg(&obj)
        .status()
        .expect("clang");
    assert!(st.success());
    obj
}

#[test]
fn another_tools_program_is_refused_unless_replace() {
    let t = topology();
    let obj = compile_foreign_program();
    t.dut
        .ip(&[
            "link",
            "set",
            "dev",
            "eth1",
            "xdpdrv",
            "obj",
            obj.to_str().unwrap(),
            "sec",
            "xdp",
        ])
        .unwrap();
    let foreign = xdp_prog_ids(&t.dut, "eth1");

    let mut cmd = t.dut.command(XDPIP);
    cmd.args(["run", "-i", "eth0", "-i", "eth1"]);
    let mut c = Child::spawn(cmd).unwrap();
    let st = c.wait(Duration::from_secs(20)).unwrap();
    let err = c.stderr().join("\n");
    assert_eq!(st.code(), Some(2), "{err}");
    assert!(
        err.contains("xdp_other_tool") && err.contains("--replace"),
        "{err}"
    );
    assert_eq!(
        xdp_prog_ids(&t.dut, "eth1"),
        foreign,
        "the foreign program was touched"
    );
    assert!(
        xdp_prog_ids(&t.dut, "eth0").is_empty(),
        "a refused start left a program"
    );

    let (engine, _) = start_engine(&t, &["--replace"]);
    let ours = xdp_prog_ids(&t.dut, "eth1");
    t.gen
        .exec(&["ping", "-c", "1", "-W", "2", "10.2.0.2"])
        .expect("ping");
    stop_engine(engine);
    assert_eq!(ours.len(), 1);
    assert_ne!(ours, foreign);
    let _ = std::fs::remove_dir_all(obj.parent().unwrap());
}

#[test]
fn bad_input_is_dropped_or_passed_and_counted_never_fatal() {
    let t = topology();
    let (engine, _) = start_engine(&t, &[]);
    let gen_mac = mac_of(&t.gen, "eth0").unwrap();
    let dut_mac = mac_of(&t.dut, "eth0").unwrap();
    let good = UdpFrame {
        dst_mac: dut_mac,
        src_mac: gen_mac,
        src: addr::GEN,
        dst: addr::SINK,
        sport: 5555,
        dport: 9000,
        ttl: 64,
        ident: 1,
        tos: 0,
        df: false,
        payload: vec![0xab; 32],
    }
    .build();
    let mut bad: Vec<(&str, Vec<u8>)> = Vec::new();
    bad.push(("truncated", good[..14 + 10].to_vec()));
    let mut f = good.clone();
    f[14] = 0x44;
    bad.push(("ihl<5", f));
    let mut f = good.clone();
    f[24] ^= 0x5a;
    bad.push(("checksum", f));
    let mut f = good.clone();
    f[16..18].copy_from_slice(&200u16.to_be_bytes());
    f[24..26].copy_from_slice(&[0, 0]);
    let c = testbed::frame::checksum(&f[14..34]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
    bad.push(("total length beyond frame", f));
    let mut f = good.clone();
    f[12..14].copy_from_slice(&[0x88, 0xb5]);
    bad.push(("not ipv4", f));

    let tx = PacketSocket::open(&t.gen, "eth0").unwrap();
    let rx = PacketSocket::open(&t.sink, "eth0").unwrap();
    for _ in 0..10 {
        for (_, f) in &bad {
            tx.send(f).unwrap();
        }
    }
    for _ in 0..10 {
        tx.send(&good).unwrap();
    }
    let got = rx
        .collect(100, Duration::from_secs(2), |f| {
            ipv4_facts(f).is_some_and(|x| x.dport == Some(9000))
        })
        .unwrap();
    let report = stop_engine(engine);
    assert_eq!(got.len(), 10, "only the good frames get through: {report}");
    assert!(got.iter().all(|f| ipv4_facts(f).unwrap().header_ok));
    assert_eq!(report["drops"]["bad_checksum"], 10, "{report}");
    assert_eq!(report["drops"]["total_length_beyond_frame"], 10, "{report}");
    assert_eq!(report["mib"]["InCsumErrors"], 10);
    assert_eq!(report["mib"]["InTruncatedPkts"], 10);
    assert!(report["mib"]["InHdrErrors"].as_u64().unwrap() >= 10);
    assert!(
        report["xdp"]["pass_malformed"].as_u64().unwrap() >= 20,
        "{report}"
    );
    assert!(
        report["xdp"]["pass_not_ipv4"].as_u64().unwrap() >= 10,
        "{report}"
    );
}

fn run_xdpip(ns: &Netns, args: &[&str]) -> (Option<i32>, String) {
    let mut cmd = ns.command(XDPIP);
    cmd.args(args);
    let mut c = Child::spawn(cmd).unwrap();
    let st = c.wait(Duration::from_secs(20)).unwrap();
    (st.code(), c.stderr().join("\n"))
}

#[test]
fn bad_command_lines_get_clear_errors_and_status_2() {
    require_root();
    let ns = Netns::new("cli").unwrap();
    let other = Netns::new("cli-peer").unwrap();
    testbed::veth(&ns, "eth0", &other, "eth0").unwrap();
    ns.ip(&["link", "set", "eth0", "up"]).unwrap();

    let (code, err) = run_xdpip(&ns, &["run", "-i", "nonexistent0"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("no interface named \"nonexistent0\""), "{err}");

    let (code, err) = run_xdpip(&ns, &["run", "-i", "eth0"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("eth0 has no IPv4 address"), "{err}");

    let (code, err) = run_xdpip(&ns, &["run", "-i", "lo"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("lo is not an Ethernet interface"), "{err}");

    let (code, err) = run_xdpip(&ns, &["run", "-i", "eth0", "-i", "eth0"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("given more than once"), "{err}");

    let (code, err) = run_xdpip(&ns, &["run"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--interface"), "{err}");

    let (code, err) = run_xdpip(&ns, &["run", "-i", "eth0", "--frame-size", "1000"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("frame size 1000"), "{err}");

    // Not root: the missing capabilities are named.
    let mut cmd = ns.command("setpriv");
    cmd.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=-all",
        "--bounding-set=-all",
        XDPIP,
        "run",
        "-i",
        "eth0",
    ]);
    let mut c = Child::spawn(cmd).unwrap();
    let st = c.wait(Duration::from_secs(20)).unwrap();
    let err = c.stderr().join("\n");
    assert_eq!(st.code(), Some(2), "{err}");
    assert!(
        err.contains("CAP_NET_ADMIN") && err.contains("CAP_NET_RAW"),
        "{err}"
    );
    assert!(err.contains("CAP_BPF"), "{err}");

    // An MTU single-buffer XDP on veth cannot take.
    ns.ip(&["addr", "add", "192.0.2.1/24", "dev", "eth0"])
        .unwrap();
    other.ip(&["link", "set", "eth0", "mtu", "9000"]).unwrap();
    ns.ip(&["link", "set", "eth0", "mtu", "9000"]).unwrap();
    let (code, err) = run_xdpip(&ns, &["run", "-i", "eth0"]);
    assert_eq!(code, Some(2));
    let limit = xdpip::ebpf::veth_xdp_max_mtu();
    assert!(
        err.contains("MTU 9000 is too large") && err.contains(&format!("mtu {limit}")),
        "{err}"
    );
    assert!(xdp_prog_ids(&ns, "eth0").is_empty());
    // ...and the limit it names is the one that works.
    let l = limit.to_string();
    other.ip(&["link", "set", "eth0", "mtu", &l]).unwrap();
    ns.ip(&["link", "set", "eth0", "mtu", &l]).unwrap();
    let (code, err) = run_xdpip(&ns, &["run", "-q", "--duration", "0.3", "-i", "eth0"]);
    assert_eq!(code, Some(0), "{err}");
}

#[test]
fn forwards_on_two_queues_with_two_workers() {
    require_root();
    let t = Topology::gen_dut_sink(2).expect("topology");
    for ns in [&t.gen, &t.dut, &t.sink] {
        for i in ["eth0", "eth1"] {
            let _ = ns.exec(&["ethtool", "-L", i, "rx", "2", "tx", "2"]);
        }
    }
    assert!(t.warm_up());
    let (engine, started) = start_engine(&t, &[]);
    assert_eq!(started["workers"].as_array().unwrap().len(), 2, "{started}");
    // Sockets get random flow hashes, so sixteen of them spread over both
    // transmit queues of gen's veth, and so over both rx queues of dut's.
    t.gen
        .run(|| {
            for k in 0..16u32 {
                let s = std::net::UdpSocket::bind("10.1.0.1:0").unwrap();
                for i in 0..200u32 {
                    let _ = s.send_to(
                        &(k << 16 | i).to_be_bytes(),
                        (Ipv4Addr::new(10, 2, 0, 2), 9000),
                    );
                }
            }
        })
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let report = stop_engine(engine);
    assert!(
        report["mib"]["ForwDatagrams"].as_u64().unwrap() >= 3200,
        "{report}"
    );
    for w in report["workers"].as_array().unwrap() {
        assert!(
            w["batches"].as_u64().unwrap() > 0,
            "a worker saw no traffic: {report}"
        );
    }
}

/// Without the XDP program's gate the engine meets the unresolved
/// neighbour itself: it asks the kernel to resolve it and holds the frames
/// meanwhile, as the kernel queues them (`unres_qlen`): none is lost.
#[test]
fn without_the_gate_an_unresolved_neighbour_is_resolved_by_the_kernel() {
    let t = topology();
    t.dut.ip(&["neigh", "flush", "dev", "eth1"]).unwrap();
    let (engine, _) = start_engine(&t, &["--fib-gate", "off"]);
    let rx = PacketSocket::open(&t.sink, "eth0").unwrap();
    let sender = t
        .gen
        .spawn(|| {
            let s = std::net::UdpSocket::bind("10.1.0.1:0").unwrap();
            for i in 0..30u32 {
                let _ = s.send_to(&i.to_be_bytes(), (Ipv4Addr::new(10, 2, 0, 2), 9000));
                std::thread::sleep(Duration::from_millis(50));
            }
        })
        .unwrap();
    sender.join().unwrap();
    let got = rx
        .collect(30, Duration::from_secs(1), |f| {
            ipv4_facts(f).is_some_and(|x| x.dport == Some(9000))
        })
        .unwrap();
    let report = stop_engine(engine);
    let held: u64 = report["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["neighbour_held"].as_u64().unwrap())
        .sum();
    assert!(
        held >= 1,
        "the neighbour was resolved before the test: {report}"
    );
    assert!(
        report["control"]["resolve_requests"].as_u64().unwrap() >= 1,
        "{report}"
    );
    assert_eq!(got.len(), 30, "every datagram forwarded: {report}");
    assert_eq!(report["drops"]["neighbour_missing"], 0, "{report}");
    assert!(report["xdp"]["pass_no_neigh"].as_u64().unwrap() == 0);
}

/// When `start()` returns (and `xdpip run` says it started), the control
/// plane has published its first snapshot: the XDP program's gate and port
/// MTUs are set from it. Before, they were set a moment later by the
/// control thread, and a packet sent at once went to the kernel (the
/// default gate asked the kernel's FIB; an oversize fragment found no port
/// MTU): `tools::ping_with_fragments` saw the kernel forward two.
#[test]
fn the_first_snapshot_is_published_before_start_returns() {
    let t = topology();
    for _ in 0..5 {
        let gate = testbed::in_ns(t.dut.name(), || {
            let e = xdpip::Engine::builder()
                .interface("eth0")
                .interface("eth1")
                .start()
                .expect("engine start");
            // At once: no other thread has had to run.
            let gate = e.report().mode.fib_gate;
            e.stop();
            gate
        });
        assert_eq!(gate, "auto (off)");
    }
}

/// The gate an operator gets by default (`--fib-gate auto`): none while
/// every route leaves through the engine's interfaces (the XDP program then
/// skips `bpf_fib_lookup`), the neighbour gate as soon as a route leaves
/// through an interface the engine does not serve, so that the kernel
/// forwards what the engine cannot; none again when that route goes.
#[test]
fn the_default_gate_opens_only_while_a_route_leaves_through_another_interface() {
    let t = topology();
    let (engine, started) = start_engine(&t, &[]);
    let gate = || -> String {
        let out = t
            .dut
            .exec(&[XDPIP, "stats", "--json"])
            .expect("xdpip stats");
        let v: Value = serde_json::from_slice(&out.stdout).expect("stats json");
        v["mode"]["fib_gate"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let settled = |want: &str| -> String {
        let mut g = gate();
        for _ in 0..40 {
            if g == want {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
            g = gate();
        }
        g
    };
    assert_eq!(settled("auto (off)"), "auto (off)", "{started}");

    // A third network behind eth2, which the engine does not serve.
    let far = Netns::new("far").expect("netns");
    testbed::veth(&t.dut, "eth2", &far, "eth0").expect("veth");
    t.dut
        .ip(&["addr", "add", "10.3.0.1/24", "dev", "eth2"])
        .unwrap();
    far.ip(&["addr", "add", "10.3.0.2/24", "dev", "eth0"])
        .unwrap();
    for (ns, i) in [(&t.dut, "eth2"), (&far, "eth0")] {
        ns.ip(&["link", "set", i, "up"]).unwrap();
    }
    far.ip(&["route", "add", "default", "via", "10.3.0.1"])
        .unwrap();
    let with_far = settled("auto (neigh)");
    let far_ping = t
        .gen
        .exec(&["ping", "-c", "3", "-i", "0.2", "-W", "2", "10.3.0.2"]);
    let sink_ping = t
        .gen
        .exec(&["ping", "-c", "3", "-i", "0.2", "-W", "2", "10.2.0.2"]);
    t.dut.ip(&["link", "del", "eth2"]).unwrap();
    let without_far = settled("auto (off)");
    let report = stop_engine(engine);

    assert_eq!(with_far, "auto (neigh)", "{report}");
    assert!(
        far_ping.is_ok(),
        "the kernel did not get the packets to eth2: {report}"
    );
    assert!(sink_ping.is_ok(), "{report}");
    assert_eq!(without_far, "auto (off)", "{report}");
    assert_eq!(report["drops"]["foreign_egress"], 0, "{report}");
    // The first echo request also waited for the far neighbour.
    let to_kernel = report["xdp"]["pass_foreign_egress"].as_u64().unwrap()
        + report["xdp"]["pass_no_neigh"].as_u64().unwrap();
    assert!(to_kernel >= 3, "{report}");
    assert!(
        report["mib"]["ForwDatagrams"].as_u64().unwrap() >= 6,
        "the engine forwarded to sink: {report}"
    );
}
