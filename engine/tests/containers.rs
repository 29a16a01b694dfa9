//! Containers and veth as users run them: every veth keeps its default
//! offloads (transmit checksum offload on), so kernel sockets hand over
//! partial UDP/TCP checksums, which the engine completes before forwarding
//! and accepts for its own sockets; a pod-like topology; MTU changes while
//! the engine runs.
//!
//! Needs root; run with `cargo xtask test` (or `cargo test -p xdpip
//! --features datapath-tests --test containers` as root).

use serde_json::Value;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::time::Duration;
use testbed::{in_ns, require_root, Child, Netns, Topology};

const XDPIP: &str = env!("CARGO_BIN_EXE_xdpip");

fn topology() -> Topology {
    require_root();
    let t = Topology::gen_dut_sink(1).expect("topology");
    assert!(t.warm_up(), "the kernel router itself does not forward");
    t
}

/// The precondition of every test here: the sender's veth offloads
/// transmit checksums, as a container's does by default.
fn assert_offloads(ns: &Netns, ifname: &str) {
    let on = in_ns(ns.name(), || xdpip::iface::tx_checksum_offload(ifname)).unwrap();
    assert!(on, "{ifname} in {} does not offload checksums", ns.name());
}

/// Starts `xdpip run --json -i ...` in `ns`, waits for "started".
fn start_engine(ns: &Netns, ifaces: &[&str]) -> Child {
    let mut cmd = ns.command(XDPIP);
    cmd.args(["run", "--json", "-q"]);
    for i in ifaces {
        cmd.args(["-i", i]);
    }
    let mut c = Child::spawn(cmd).expect("spawn xdpip");
    c.wait_for_line(Duration::from_secs(30), |l| {
        l.contains("\"event\":\"started\"")
    })
    .expect("engine start");
    c
}

/// Stops it with SIGTERM; its final report.
fn stop_engine(mut c: Child) -> Value {
    c.signal(libc::SIGTERM);
    let st = c.wait(Duration::from_secs(20)).expect("exit");
    assert!(st.success(), "xdpip: {st}\n{}", c.stderr().join("\n"));
    let line = c
        .stdout()
        .into_iter()
        .find(|l| l.contains("\"event\":\"stopped\""))
        .expect("stopped event");
    serde_json::from_str(&line).expect("json")
}

fn n(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("{v} is not a count"))
}

fn snmp(ns: &Netns, key: &str) -> u64 {
    ns.snmp().unwrap()[key]
}

/// Sends `count` UDP datagrams from a kernel socket in `from` (bound to
/// `src`) to a kernel socket in `to` listening on `dst`; returns the
/// payloads that arrived, in order.
fn udp_through(
    from: &Netns,
    src: Ipv4Addr,
    to: &Netns,
    dst: SocketAddrV4,
    count: u32,
) -> Vec<Vec<u8>> {
    let rx = to
        .spawn(move || {
            let s = UdpSocket::bind(dst).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 2048];
            while let Ok(k) = s.recv(&mut buf) {
                got.push(buf[..k].to_vec());
                if got.len() == count as usize {
                    break;
                }
            }
            got
        })
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    from.run(move || {
        let s = UdpSocket::bind((src, 0)).unwrap();
        for i in 0..count {
            s.send_to(&payload(i, 100 + 37 * i as usize), dst).unwrap();
            std::thread::sleep(Duration::from_millis(5));
        }
    })
    .unwrap();
    rx.join().unwrap()
}

fn payload(i: u32, len: usize) -> Vec<u8> {
    (0..len).map(|k| (k as u32 * 7 + i) as u8).collect()
}

#[test]
fn udp_from_a_kernel_socket_is_forwarded_with_its_checksum_completed() {
    let t = topology();
    assert_offloads(&t.gen, "eth0");
    let dst = SocketAddrV4::new(Ipv4Addr::new(10, 2, 0, 2), 9000);
    let want: Vec<Vec<u8>> = (0..20).map(|i| payload(i, 100 + 37 * i as usize)).collect();

    let errors = snmp(&t.sink, "UdpInCsumErrors");
    let kernel = udp_through(&t.gen, Ipv4Addr::new(10, 1, 0, 1), &t.sink, dst, 20);
    assert_eq!(kernel, want, "through the kernel router");

    let engine = start_engine(&t.dut, &["eth0", "eth1"]);
    let forwarded = snmp(&t.dut, "IpForwDatagrams");
    let ours = udp_through(&t.gen, Ipv4Addr::new(10, 1, 0, 1), &t.sink, dst, 20);
    let by_kernel = snmp(&t.dut, "IpForwDatagrams") - forwarded;
    let report = stop_engine(engine);

    assert_eq!(ours, want, "through the engine: {report}");
    assert_eq!(
        snmp(&t.sink, "UdpInCsumErrors"),
        errors,
        "sink counted checksum errors: {report}"
    );
    assert_eq!(by_kernel, 0, "dut's kernel forwarded them, not the engine");
    assert!(
        n(&report["checksums"]["csum_partial_completed"]) >= 20,
        "{report}"
    );
}

/// iperf3 as a user runs it, then a stream whose every byte is checked
/// (iperf3's own receive count stops when the client says the test is
/// over, so it may miss what is still in flight: it is not a byte check).
#[test]
fn tcp_through_the_engine_iperf3_and_every_byte_checked() {
    let t = topology();
    assert_offloads(&t.gen, "eth0");
    let mut server = t.sink.command("iperf3");
    server.args(["-s", "-1", "-B", "10.2.0.2", "--forceflush"]);
    let mut server = Child::spawn(server).expect("iperf3 -s");
    server
        .wait_for_line(Duration::from_secs(10), |l| l.contains("listening"))
        .expect("iperf3 server listening");
    let engine = start_engine(&t.dut, &["eth0", "eth1"]);
    let forwarded = snmp(&t.dut, "IpForwDatagrams");
    let errors = snmp(&t.sink, "TcpInCsumErrors");
    let out = t
        .gen
        .exec(&["iperf3", "-c", "10.2.0.2", "-n", "16M", "--json"])
        .expect("iperf3 -c");
    let exact = tcp_transfer(
        &t.gen,
        &t.sink,
        SocketAddrV4::new(Ipv4Addr::new(10, 2, 0, 2), 8080),
        16 << 20,
    );
    let by_kernel = snmp(&t.dut, "IpForwDatagrams") - forwarded;
    let report = stop_engine(engine);
    let _ = server.wait(Duration::from_secs(10));

    let r: Value = serde_json::from_slice(&out.stdout).expect("iperf3 json");
    // iperf3 -n counts whole blocks (128 KiB), so it may send one more.
    assert!(
        n(&r["end"]["sum_sent"]["bytes"]) >= 16 << 20,
        "{}",
        r["end"]
    );
    assert!(n(&r["end"]["sum_received"]["bytes"]) > 0, "{}", r["end"]);
    assert!(exact, "16 MiB over TCP did not arrive intact: {report}");
    assert_eq!(
        snmp(&t.sink, "TcpInCsumErrors"),
        errors,
        "sink counted TCP checksum errors: {report}"
    );
    assert_eq!(by_kernel, 0, "dut's kernel forwarded, not the engine");
    // What sink received left the engine towards sink: the checked 16 MiB
    // and what iperf3's server counted (the rest of iperf3's 16 MiB may
    // still sit in gen's send buffer when the client ends the test).
    // Counted in bytes: how many segments carry them depends on the MSS.
    let to_sink = report["ports"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["name"] == "eth1"))
        .unwrap_or_else(|| panic!("no eth1 in {report}"));
    let received = (16 << 20) + n(&r["end"]["sum_received"]["bytes"]);
    assert!(n(&to_sink["tx_bytes"]) > received, "{report}");
    // Every segment came from a local stack with a partial checksum, the
    // data segments to sink and the ACKs back: the engine completed each.
    assert!(
        n(&report["checksums"]["csum_partial_completed"]) >= n(&to_sink["tx_packets"]),
        "{report}"
    );
}

#[test]
fn udp_to_an_engine_socket_is_accepted_and_answered() {
    let t = topology();
    assert_offloads(&t.gen, "eth0");
    let (echoed, report) = in_ns(t.dut.name(), || {
        let e = xdpip::Engine::builder()
            .interface("eth0")
            .interface("eth1")
            .start()
            .expect("engine start");
        let sock = e.udp_socket().unwrap();
        sock.bind("10.1.0.2:7777".parse().unwrap()).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let client = t
            .gen
            .spawn(|| {
                let s = UdpSocket::bind("10.1.0.1:0").unwrap();
                s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                let mut ok = 0;
                let mut buf = [0u8; 2048];
                for i in 0..20u32 {
                    let p = payload(i, 40 + 20 * i as usize);
                    s.send_to(&p, "10.1.0.2:7777").unwrap();
                    if let Ok((k, _)) = s.recv_from(&mut buf) {
                        ok += (buf[..k] == p[..]) as u32;
                    }
                }
                ok
            })
            .unwrap();
        let mut buf = [0u8; 2048];
        let until = std::time::Instant::now() + Duration::from_secs(30);
        while !client.is_finished() && std::time::Instant::now() < until {
            if let Ok((k, from)) = sock.recv_from(&mut buf) {
                sock.send_to(&buf[..k], from).unwrap();
            }
        }
        let echoed = client.join().unwrap();
        (echoed, e.stop())
    });
    assert_eq!(echoed, 20, "{:?}", report.checksums);
    assert_eq!(report.mib["UdpInCsumErrors"], 0);
    assert!(
        report.checksums["csum_partial_accepted"] >= 20,
        "{:?}",
        report.checksums
    );
}

#[test]
fn the_start_message_names_partial_checksums_only_when_the_peer_offloads() {
    let t = topology();
    let engine = start_engine(&t.dut, &["eth0", "eth1"]);
    let said = engine.stderr().join("\n");
    stop_engine(engine);
    for (port, peer) in [("eth0", &t.gen), ("eth1", &t.sink)] {
        let line = format!(
            "{port}: its veth peer eth0 in namespace /run/netns/{} offloads transmit checksums: \
             the engine completes the partial UDP/TCP checksums",
            peer.name()
        );
        assert!(said.contains(&line), "{said}");
    }
    assert!(!said.contains("tx off"), "{said}");

    for ns in [&t.gen, &t.sink] {
        testbed::disable_tx_checksum(ns, "eth0").unwrap();
    }
    let engine = start_engine(&t.dut, &["eth0", "eth1"]);
    let said = engine.stderr().join("\n");
    stop_engine(engine);
    assert!(!said.contains("checksums"), "{said}");
}

/// Sets the MTU of the dut ⇄ sink link, both ends, and at once pings
/// sink from gen with 8000 bytes (six fragments from gen); true if the
/// reply came.
fn change_mtu_and_ping(t: &Topology, mtu: &str) -> bool {
    t.dut.ip(&["link", "set", "eth1", "mtu", mtu]).unwrap();
    t.sink.ip(&["link", "set", "eth0", "mtu", mtu]).unwrap();
    t.gen
        .exec(&["ping", "-c", "1", "-W", "2", "-s", "8000", "10.2.0.2"])
        .is_ok()
}

#[test]
fn an_mtu_change_while_the_engine_runs_loses_no_packet() {
    let t = topology();
    let rounds = ["1400", "1500", "1400", "1300", "1500", "1400"];
    let kernel: Vec<bool> = rounds.iter().map(|m| change_mtu_and_ping(&t, m)).collect();
    assert!(
        kernel.iter().all(|&ok| ok),
        "the kernel router lost: {kernel:?}"
    );

    change_mtu_and_ping(&t, "1500");
    let engine = start_engine(&t.dut, &["eth0", "eth1"]);
    let ours: Vec<bool> = rounds.iter().map(|m| change_mtu_and_ping(&t, m)).collect();
    let report = stop_engine(engine);
    assert!(
        ours.iter().all(|&ok| ok),
        "pings lost after an MTU change: {ours:?} (rounds {rounds:?}): {report}"
    );
    // Something went through the engine, refragmented to the new MTUs.
    assert!(n(&report["mib"]["FragCreates"]) > 0, "{report}");
}

/// A locked route MTU (which the engine does not model, and which
/// bpf_fib_lookup() applies, as the kernel's forwarding does): the XDP
/// program sees the packet is larger than the egress MTU of the kernel's,
/// not the engine's, and leaves it to the kernel. The same path keeps an
/// MTU change from losing packets before the engine follows it.
#[test]
fn a_locked_route_mtu_is_left_to_the_kernel() {
    let t = topology();
    t.dut
        .ip(&[
            "route",
            "add",
            "10.2.0.2/32",
            "dev",
            "eth1",
            "mtu",
            "lock",
            "1400",
        ])
        .unwrap();
    let df = |t: &Topology| {
        let out = t
            .gen
            .command("ping")
            .args(["-c", "1", "-W", "2", "-M", "do", "-s", "1450", "10.2.0.2"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let kernel = df(&t);
    assert!(kernel.contains("mtu = 1400"), "{kernel}");
    // gen forgets the path MTU it learnt, and dut's kernel may answer
    // again (its ICMP rate limit).
    t.gen.ip(&["route", "flush", "cache"]).unwrap();
    std::thread::sleep(Duration::from_millis(1100));

    let engine = start_engine(&t.dut, &["eth0", "eth1"]);
    let ours = df(&t);
    t.gen.ip(&["route", "flush", "cache"]).unwrap();
    let big = t
        .gen
        .exec(&["ping", "-c", "2", "-W", "2", "-s", "8000", "10.2.0.2"]);
    let report = stop_engine(engine);
    assert!(ours.contains("mtu = 1400"), "{ours}\n{report}");
    assert!(big.is_ok(), "8000-byte pings over the route MTU: {report}");
    assert!(n(&report["xdp"]["pass_frag_needed"]) >= 1, "{report}");
}

/// A DNS query for `kubernetes.default.svc.cluster.local`, type A (54
/// bytes).
fn dns_query(id: u16) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in ["kubernetes", "default", "svc", "cluster", "local"] {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// The answer: the query echoed as a response with sixteen A records
/// (pointers to the name), 310 bytes.
fn dns_answer(query: &[u8]) -> Vec<u8> {
    let mut a = query.to_vec();
    a[2] = 0x81;
    a[3] = 0x80;
    a[7] = 16;
    for i in 0..16u8 {
        a.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 30, 0, 4, 10, 96, 0, i]);
    }
    a
}

/// Two pods, each joined to the node by a veth, as the CNI `ptp` plugin
/// does (no bridge): a /32 per pod, the same gateway address on every
/// node-side veth, a /32 route per pod on the node.
struct Pods {
    node: Netns,
    a: Netns,
    b: Netns,
}

const POD_A: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 2);
const POD_B: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 3);

fn pods() -> Pods {
    require_root();
    let p = Pods {
        node: Netns::new("node").unwrap(),
        a: Netns::new("pod-a").unwrap(),
        b: Netns::new("pod-b").unwrap(),
    };
    for (pod, host, ip) in [(&p.a, "vetha", POD_A), (&p.b, "vethb", POD_B)] {
        testbed::veth(pod, "eth0", &p.node, host).unwrap();
        p.node
            .ip(&["addr", "add", "10.244.0.1/32", "dev", host])
            .unwrap();
        p.node.ip(&["link", "set", host, "up"]).unwrap();
        p.node
            .ip(&[
                "route",
                "add",
                &format!("{ip}/32"),
                "dev",
                host,
                "scope",
                "link",
            ])
            .unwrap();
        pod.ip(&["addr", "add", &format!("{ip}/32"), "dev", "eth0"])
            .unwrap();
        pod.ip(&["link", "set", "eth0", "up"]).unwrap();
        pod.ip(&["route", "add", "10.244.0.1", "dev", "eth0", "scope", "link"])
            .unwrap();
        pod.ip(&[
            "route",
            "add",
            "default",
            "via",
            "10.244.0.1",
            "dev",
            "eth0",
        ])
        .unwrap();
    }
    p.node.sysctl("net.ipv4.ip_forward", "1").unwrap();
    let up = (0..30).any(|_| {
        p.a.exec(&["ping", "-c", "1", "-W", "1", "-q", "10.244.0.3"])
            .is_ok()
    });
    assert!(up, "the node's kernel does not route between the pods");
    p
}

/// Sends `len` bytes over TCP from `from` to a server in `to` at `dst`;
/// the server answers with the byte count and a hash of what it read.
/// True if both match what was sent.
fn tcp_transfer(from: &Netns, to: &Netns, dst: SocketAddrV4, len: u32) -> bool {
    let data: Vec<u8> = (0..len).map(|i| (i ^ (i >> 9)) as u8).collect();
    let hash = |d: &[u8]| {
        d.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
            (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
        })
    };
    let want = (data.len() as u64, hash(&data));
    let server = to
        .spawn(move || {
            let l = TcpListener::bind(dst).unwrap();
            let (mut s, _) = l.accept().unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).unwrap();
            let mut r = (got.len() as u64).to_be_bytes().to_vec();
            r.extend_from_slice(&hash(&got).to_be_bytes());
            s.write_all(&r).unwrap();
        })
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let got = from
        .run(move || {
            let mut s = TcpStream::connect_timeout(&dst.into(), Duration::from_secs(5)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            s.write_all(&data).unwrap();
            s.shutdown(std::net::Shutdown::Write).unwrap();
            let mut r = [0u8; 16];
            s.read_exact(&mut r).unwrap();
            (
                u64::from_be_bytes(r[..8].try_into().unwrap()),
                u64::from_be_bytes(r[8..].try_into().unwrap()),
            )
        })
        .unwrap();
    server.join().unwrap();
    got == want
}

/// Twenty DNS-sized round trips from pod a to a resolver in pod b;
/// returns how many answers came back intact.
fn dns_between_pods(p: &Pods) -> u32 {
    let server =
        p.b.spawn(|| {
            let s = UdpSocket::bind((POD_B, 53)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            let mut buf = [0u8; 512];
            while let Ok((k, from)) = s.recv_from(&mut buf) {
                s.send_to(&dns_answer(&buf[..k]), from).unwrap();
            }
        })
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let ok =
        p.a.run(|| {
            let s = UdpSocket::bind((POD_A, 0)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
            let mut ok = 0;
            let mut buf = [0u8; 512];
            for id in 0..20u16 {
                let q = dns_query(0x4000 + id);
                assert_eq!(q.len(), 54);
                s.send_to(&q, (POD_B, 53)).unwrap();
                if let Ok(k) = s.recv(&mut buf) {
                    ok += (buf[..k] == dns_answer(&q)[..]) as u32;
                }
            }
            ok
        })
        .unwrap();
    server.join().unwrap();
    ok
}

#[test]
fn pod_to_pod_udp_tcp_and_dns_go_through_the_engine() {
    let p = pods();
    assert_offloads(&p.a, "eth0");
    assert_offloads(&p.b, "eth0");
    assert_eq!(dns_answer(&dns_query(1)).len(), 310);

    let engine = start_engine(&p.node, &["vetha", "vethb"]);
    let forwarded = snmp(&p.node, "IpForwDatagrams");
    let errors = [
        snmp(&p.b, "UdpInCsumErrors"),
        snmp(&p.b, "TcpInCsumErrors"),
        snmp(&p.a, "UdpInCsumErrors"),
        snmp(&p.a, "TcpInCsumErrors"),
    ];
    let dst = SocketAddrV4::new(POD_B, 9000);
    let want: Vec<Vec<u8>> = (0..20).map(|i| payload(i, 100 + 37 * i as usize)).collect();
    let udp = udp_through(&p.a, POD_A, &p.b, dst, 20);
    let tcp = tcp_transfer(&p.a, &p.b, SocketAddrV4::new(POD_B, 8080), 4 << 20);
    let dns = dns_between_pods(&p);
    let by_kernel = snmp(&p.node, "IpForwDatagrams") - forwarded;
    let report = stop_engine(engine);

    assert_eq!(udp, want, "UDP between pods: {report}");
    assert!(tcp, "TCP between pods: {report}");
    assert_eq!(dns, 20, "DNS round trips: {report}");
    assert_eq!(
        [
            snmp(&p.b, "UdpInCsumErrors"),
            snmp(&p.b, "TcpInCsumErrors"),
            snmp(&p.a, "UdpInCsumErrors"),
            snmp(&p.a, "TcpInCsumErrors"),
        ],
        errors,
        "checksum errors in the pods: {report}"
    );
    assert_eq!(by_kernel, 0, "the node's kernel forwarded, not the engine");
    // UDP, DNS both ways, and the TCP segments of 4 MiB.
    assert!(
        n(&report["mib"]["ForwDatagrams"]) > 60 + (4 << 20) / 1448,
        "{report}"
    );
    assert!(
        n(&report["checksums"]["csum_partial_completed"]) > 60,
        "{report}"
    );
}
