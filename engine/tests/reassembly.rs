//! Reassembly through the engine, against the kernel's: the cases of the
//! kernel's IPv4 defragmentation self-test (tools/testing/selftests/net/
//! ip_defrag.c) sent from another namespace to a kernel socket and then to
//! an engine socket, big pings and UDP datagrams to and through the engine,
//! and a flood of fragments that never complete.
//!
//! Needs root: `cargo xtask test`.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket as StdUdp};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use testbed::frame::checksum;
use testbed::{addr, in_ns, mac_of, require_root, PacketSocket, Topology};
use xdpip::Engine;

fn topology(queues: u32) -> Topology {
    require_root();
    let t = Topology::gen_dut_sink(queues).expect("topology");
    assert!(t.warm_up(), "the kernel router itself does not forward");
    t
}

/// A UDP datagram from gen to dut:`port` as an IP packet (header and
/// payload), identification `id`.
fn udp_datagram(id: u16, port: u16, payload: &[u8]) -> Vec<u8> {
    let udp_len = 8 + payload.len();
    let mut u = Vec::with_capacity(udp_len);
    u.extend_from_slice(&40000u16.to_be_bytes());
    u.extend_from_slice(&port.to_be_bytes());
    u.extend_from_slice(&(udp_len as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&addr::GEN.octets());
    pseudo.extend_from_slice(&addr::DUT0.octets());
    pseudo.extend_from_slice(&[0, 17]);
    pseudo.extend_from_slice(&(udp_len as u16).to_be_bytes());
    pseudo.extend_from_slice(&u);
    let c = match checksum(&pseudo) {
        0 => 0xffff,
        c => c,
    };
    u[6..8].copy_from_slice(&c.to_be_bytes());
    let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0];
    ip[4..6].copy_from_slice(&id.to_be_bytes());
    ip.extend_from_slice(&addr::GEN.octets());
    ip.extend_from_slice(&addr::DUT0.octets());
    ip.extend_from_slice(&u);
    ip
}

/// The fragment of `datagram` covering payload bytes `offset..offset+len`
/// (offset a multiple of 8), as an Ethernet frame to `dst_mac`. MF is set
/// unless `last` (None: set when the piece ends before the payload does).
fn piece(
    datagram: &[u8],
    offset: usize,
    len: usize,
    last: Option<bool>,
    macs: ([u8; 6], [u8; 6]),
) -> Vec<u8> {
    let payload = &datagram[20..];
    let end = (offset + len).min(payload.len());
    let more = match last {
        Some(l) => !l,
        None => end < payload.len(),
    };
    let mut f = Vec::with_capacity(14 + 20 + end - offset);
    f.extend_from_slice(&macs.0);
    f.extend_from_slice(&macs.1);
    f.extend_from_slice(&[0x08, 0x00]);
    let mut h = datagram[..20].to_vec();
    h[2..4].copy_from_slice(&((20 + end - offset) as u16).to_be_bytes());
    let fo = (offset / 8) as u16 | if more { 0x2000 } else { 0 };
    h[6..8].copy_from_slice(&fo.to_be_bytes());
    h[10..12].copy_from_slice(&[0, 0]);
    let c = checksum(&h);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&h);
    f.extend_from_slice(&payload[offset..end]);
    f
}

/// Fragments of `size` payload bytes each (a multiple of 8).
fn split(datagram: &[u8], size: usize, macs: ([u8; 6], [u8; 6])) -> Vec<Vec<u8>> {
    (0..datagram.len() - 20)
        .step_by(size)
        .map(|o| piece(datagram, o, size, None, macs))
        .collect()
}

fn payload(seed: u32, n: usize) -> Vec<u8> {
    (0..n).map(|i| (i as u32 * 31 + seed) as u8).collect()
}

/// The ip_defrag.c cases: each is the frames sent and the payload that
/// should come out when the stack reassembles it (the test compares what
/// the kernel and the engine deliver, not this expectation alone).
fn cases(macs: ([u8; 6], [u8; 6]), port: u16) -> Vec<(&'static str, Vec<Vec<u8>>)> {
    let mut v = Vec::new();
    let d = |id, n| udp_datagram(id, port, &payload(id as u32, n));
    let dg = d(101, 3000);
    v.push(("in order", split(&dg, 1000, macs)));
    let dg = d(102, 3000);
    let mut f = split(&dg, 1000, macs);
    f.reverse();
    v.push(("reverse order", f));
    let dg = d(103, 5000);
    let mut f = split(&dg, 504, macs);
    // A fixed shuffle: odd pieces, then even, then the first.
    let mut g: Vec<Vec<u8>> = f.iter().skip(1).step_by(2).cloned().collect();
    g.extend(f.iter().skip(2).step_by(2).cloned());
    g.push(f.remove(0));
    v.push(("random order", g));
    let dg = d(104, 3000);
    let f = split(&dg, 1000, macs);
    v.push((
        "overlap",
        vec![
            f[0].clone(),
            piece(&dg, 992, 1000, None, macs),
            f[1].clone(),
            f[2].clone(),
        ],
    ));
    let dg = d(105, 3000);
    let f = split(&dg, 1000, macs);
    v.push((
        "duplicates",
        vec![
            f[0].clone(),
            f[1].clone(),
            f[1].clone(),
            f[0].clone(),
            f[2].clone(),
        ],
    ));
    let dg = d(106, 400);
    v.push(("tiny fragments", split(&dg, 8, macs)));
    let dg = d(107, 65507);
    v.push(("largest datagram", split(&dg, 1480, macs)));
    let dg = d(108, 2000);
    let mut f = split(&dg, 1000, macs);
    // A last fragment that would end past 65535.
    let mut beyond = piece(&dg, 0, 8, Some(true), macs);
    beyond[14 + 6..14 + 8].copy_from_slice(&((65528u16 / 8).to_be_bytes()));
    beyond[14 + 10..14 + 12].copy_from_slice(&[0, 0]);
    let c = checksum(&beyond[14..34]);
    beyond[14 + 10..14 + 12].copy_from_slice(&c.to_be_bytes());
    f.insert(1, beyond);
    v.push(("fragment past 65535", f));
    let dg = d(109, 3000);
    let f = split(&dg, 1000, macs);
    v.push((
        "two last fragments",
        vec![
            f[0].clone(),
            f[2].clone(),
            piece(&dg, 1000, 1000, Some(true), macs),
            f[1].clone(),
        ],
    ));
    v
}

/// Sends each case from gen and returns, per case, the payloads `recv`
/// got within a short wait.
fn run_cases(
    t: &Topology,
    cases: &[(&'static str, Vec<Vec<u8>>)],
    recv: &mut dyn FnMut() -> Option<Vec<u8>>,
) -> Vec<(String, Vec<usize>)> {
    let tx = PacketSocket::open(&t.gen, "eth0").unwrap();
    let mut out = Vec::new();
    for (name, frames) in cases {
        for f in frames {
            tx.send(f).unwrap();
        }
        let mut got = Vec::new();
        while let Some(p) = recv() {
            got.push(p.len());
        }
        out.push((name.to_string(), got));
    }
    out
}

#[test]
fn defrag_selftest_cases_match_the_kernel() {
    let t = topology(1);
    let macs = (
        mac_of(&t.dut, "eth0").unwrap(),
        mac_of(&t.gen, "eth0").unwrap(),
    );
    let cases = cases(macs, 6000);
    let dut = t.dut.name().to_string();
    let before = t.dut.snmp().unwrap();
    let kernel = in_ns(&dut, || {
        let s = StdUdp::bind("10.1.0.2:6000").unwrap();
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut b = vec![0u8; 70000];
        run_cases(&t, &cases, &mut || {
            s.recv(&mut b).ok().map(|n| b[..n].to_vec())
        })
    });
    let after = t.dut.snmp().unwrap();
    let kernel_mib = |k: &str| after[k] - before[k];
    let (engine, mib) = in_ns(&dut, || {
        let e = Engine::builder()
            .interface("eth0")
            .interface("eth1")
            .start()
            .expect("engine");
        let s = e.udp_socket().unwrap();
        s.bind(SocketAddrV4::new(addr::DUT0, 6000)).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut b = vec![0u8; 70000];
        let r = run_cases(&t, &cases, &mut || {
            s.recv(&mut b).ok().map(|n| b[..n].to_vec())
        });
        (r, e.stop().mib)
    });
    for (k, e) in kernel.iter().zip(&engine) {
        println!("{:22} kernel {:?} engine {:?}", k.0, k.1, e.1);
    }
    assert_eq!(kernel, engine);
    // The cases that complete did complete (the comparison alone would
    // pass if neither stack delivered anything).
    let delivered: Vec<&str> = kernel
        .iter()
        .filter(|c| !c.1.is_empty())
        .map(|c| c.0.as_str())
        .collect();
    assert_eq!(
        delivered,
        // Duplicates too, with other fragments: Linux's run-based queue
        // appends a duplicate of the last fragment as new data, so the
        // datagram never adds up; the engine does the same.
        [
            "in order",
            "reverse order",
            "random order",
            "tiny fragments",
            "largest datagram"
        ]
    );
    // The counters agree too (failures that time out later are not yet
    // counted by either).
    assert_eq!(mib["ReasmOKs"], kernel_mib("IpReasmOKs"), "{mib:?}");
    assert_eq!(mib["ReasmFails"], kernel_mib("IpReasmFails"), "{mib:?}");
    assert_eq!(mib["ReasmReqds"], kernel_mib("IpReasmReqds"), "{mib:?}");
}

#[test]
fn big_pings_and_datagrams_to_and_through_the_engine() {
    let t = topology(1);
    let dut = t.dut.name().to_string();
    let gen = t.gen.name().to_string();
    let report = in_ns(&dut, || {
        let e = Engine::builder()
            .interface("eth0")
            .interface("eth1")
            .start()
            .expect("engine");
        // An engine socket makes the engine take local fragments.
        let s = e.udp_socket().unwrap();
        s.bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 6100))
            .unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        // A kernel socket on another port: its fragmented datagrams pass
        // through the engine's reassembly and are handed back.
        let k = StdUdp::bind("10.1.0.2:6101").unwrap();
        k.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        in_ns(&gen, || {
            for dst in ["10.1.0.2", "10.2.0.2"] {
                let out = std::process::Command::new("ping")
                    .args(["-c", "5", "-i", "0.2", "-W", "2", "-s", "8000", dst])
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "ping -s 8000 {dst}: {}",
                    String::from_utf8_lossy(&out.stdout)
                );
            }
            let c = StdUdp::bind("10.1.0.1:0").unwrap();
            for n in [8000usize, 30000, 65507] {
                c.send_to(&payload(n as u32, n), "10.1.0.2:6100").unwrap();
                c.send_to(&payload(n as u32 + 1, n), "10.1.0.2:6101")
                    .unwrap();
            }
        });
        let mut b = vec![0u8; 70000];
        for n in [8000usize, 30000, 65507] {
            let got = s.recv(&mut b).expect("engine socket: reassembled datagram");
            assert_eq!(&b[..got], &payload(n as u32, n)[..]);
            let got = k.recv(&mut b).expect("kernel socket: datagram handed back");
            assert_eq!(&b[..got], &payload(n as u32 + 1, n)[..]);
        }
        e.stop()
    });
    assert!(report.mib["IcmpOutEchoReps"] >= 5, "{:?}", report.mib);
    assert!(report.mib["ReasmOKs"] >= 5 + 6, "{:?}", report.mib);
    let to_kernel: u64 = report.workers.iter().map(|w| w.to_kernel).sum();
    assert_eq!(to_kernel, 3);
}

#[test]
fn a_fragment_flood_stays_bounded_and_legitimate_datagrams_get_through() {
    let t = topology(2);
    let macs = (
        mac_of(&t.dut, "eth0").unwrap(),
        mac_of(&t.gen, "eth0").unwrap(),
    );
    let dut = t.dut.name().to_string();
    let (sent, got, report, flooded) = in_ns(&dut, || {
        let e = Engine::builder()
            .interface("eth0")
            .interface("eth1")
            .start()
            .expect("engine");
        let s = e.udp_socket().unwrap();
        s.bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 6200))
            .unwrap();
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let stop = AtomicBool::new(false);
        let (sent, flooded, got) = std::thread::scope(|sc| {
            // The flood: first fragments that never complete, from 65536
            // sources, as fast as a packet socket sends them.
            let flood = sc.spawn(|| {
                let tx = PacketSocket::open(&t.gen, "eth0").unwrap();
                let dg = udp_datagram(0, 6200, &[0u8; 1400]);
                let mut f = piece(&dg, 0, 1200, Some(false), macs);
                let mut n = 0u32;
                let start = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    // New source and ID each time; only the IP header
                    // checksum is redone (the UDP one is checked after
                    // reassembly, which never comes).
                    let ip = &mut f[14..34];
                    ip[4..6].copy_from_slice(&(n as u16).to_be_bytes());
                    ip[12..16]
                        .copy_from_slice(&Ipv4Addr::from(0x0a64_0000 | (n & 0xffff)).octets());
                    ip[10..12].copy_from_slice(&[0, 0]);
                    let c = checksum(ip);
                    ip[10..12].copy_from_slice(&c.to_be_bytes());
                    let _ = tx.send(&f);
                    n += 1;
                }
                (n, start.elapsed())
            });
            // Legitimate datagrams of 3 fragments, 1000 of them, while the
            // flood runs.
            let legit = sc.spawn(|| {
                let tx = PacketSocket::open(&t.gen, "eth0").unwrap();
                std::thread::sleep(Duration::from_millis(300));
                for i in 0..1000u32 {
                    let dg = udp_datagram(0x8000 | i as u16, 6200, &payload(i, 3000));
                    for f in split(&dg, 1008, macs) {
                        tx.send(&f).unwrap();
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
                1000u32
            });
            let mut got = 0u32;
            let mut b = vec![0u8; 4000];
            let deadline = Instant::now() + Duration::from_secs(30);
            while !legit.is_finished() && Instant::now() < deadline {
                if let Ok(n) = s.recv(&mut b) {
                    if n == 3000 {
                        got += 1;
                    }
                }
            }
            stop.store(true, Ordering::Relaxed);
            while let Ok(n) = s.recv(&mut b) {
                if n == 3000 {
                    got += 1;
                }
            }
            (legit.join().unwrap(), flood.join().unwrap(), got)
        });
        (sent, got, e.stop(), flooded)
    });
    let peak: u64 = report.workers.iter().map(|w| w.reasm_memory_peak).sum();
    let fails = report.mib["ReasmFails"];
    println!(
        "flood: {} fragments in {:?} ({:.0}/s); legitimate {got}/{sent}; peak reassembly memory {peak}; ReasmFails {fails}; handed off {}",
        flooded.0,
        flooded.1,
        flooded.0 as f64 / flooded.1.as_secs_f64(),
        report.workers.iter().map(|w| w.handed_off).sum::<u64>()
    );
    let drops: Vec<_> = report.drops.iter().filter(|(_, v)| **v > 0).collect();
    println!("drops: {drops:?}");
    for w in &report.workers {
        for s in &w.sockets {
            println!("worker {} {} {:?}", w.id, s.iface, s.xdp_statistics);
        }
    }
    assert!(peak <= 4 << 20, "peak {peak} over ipfrag_high_thresh");
    assert!(fails > 0, "the flood never filled the table: not a flood");
    assert!(
        got * 100 >= sent * 99,
        "{got} of {sent} legitimate datagrams"
    );
}

/// `iperf3 -u -l 8000`: each datagram is six fragments. Through the
/// engine to a kernel iperf3 server in sink (forwarded as fragments), and
/// to `examples/iperf3_server` on an engine port (reassembled).
#[test]
fn iperf3_with_8000_byte_datagrams_through_and_to_the_engine() {
    let t = topology(1);
    let example = std::env::current_exe()
        .unwrap()
        .parent()
        .and_then(|d| d.parent())
        .map(|d| d.join("examples/iperf3_server"))
        .unwrap();
    assert!(
        example.exists(),
        "{} missing: `cargo xtask test` builds it",
        example.display()
    );
    let run = |dst: &str, port: &str| -> (f64, f64) {
        let out = t
            .gen
            .command("iperf3")
            .args([
                "-u", "-c", dst, "-p", port, "-b", "20M", "-t", "2", "-l", "8000", "--json",
            ])
            .args(["--connect-timeout", "5000"])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let j: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("iperf3 JSON: {e}\n{text}"));
        assert!(
            out.status.success() && j.get("error").is_none(),
            "iperf3: {}",
            j["error"]
        );
        let s = &j["end"]["sum"];
        (
            s["packets"].as_f64().unwrap_or(0.0),
            s["lost_packets"].as_f64().unwrap_or(0.0),
        )
    };

    // Through: the engine forwards between gen and sink.
    let kernel_server = testbed::Child::spawn({
        let mut c = t.sink.command("iperf3");
        c.args(["-s", "-p", "5202"]);
        c
    })
    .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let mut xdpip = testbed::Child::spawn({
        let mut c = t.dut.command(env!("CARGO_BIN_EXE_xdpip"));
        c.args(["run", "--json", "-q", "-i", "eth0", "-i", "eth1"]);
        c
    })
    .unwrap();
    xdpip
        .wait_for_line(Duration::from_secs(30), |l| {
            l.contains("\"event\":\"started\"")
        })
        .expect("engine start");
    let (through, through_lost) = run("10.2.0.2", "5202");
    xdpip.signal(libc::SIGTERM);
    let _ = xdpip.wait(Duration::from_secs(20));
    let fwd = xdpip
        .stdout()
        .into_iter()
        .find(|l| l.contains("\"event\":\"stopped\""))
        .map(|l| serde_json::from_str::<serde_json::Value>(&l).unwrap())
        .expect("stopped event");
    kernel_server.signal(libc::SIGTERM);

    // To: the engine's iperf3 server reassembles.
    let mut server = testbed::Child::spawn({
        let mut c = t.dut.command(example.to_str().unwrap());
        c.args(["-i", "eth0", "-i", "eth1", "-p", "5201"]);
        c
    })
    .unwrap();
    server
        .wait_for_line(Duration::from_secs(30), |l| l.contains("serving"))
        .expect("iperf3_server start");
    let (to, to_lost) = run("10.1.0.2", "5201");
    server.signal(libc::SIGINT);
    let _ = server.wait(Duration::from_secs(20));
    println!(
        "through: {through} datagrams, {through_lost} lost; to: {to} datagrams, {to_lost} lost; \
         engine forwarded {} fragments",
        fwd["mib"]["ForwDatagrams"]
    );
    assert!(
        through > 0.0 && through_lost <= through * 0.05,
        "through the engine"
    );
    assert!(fwd["mib"]["ForwDatagrams"].as_u64().unwrap_or(0) >= through as u64 * 6);
    assert!(to > 0.0 && to_lost <= to * 0.05, "to the engine");
}
