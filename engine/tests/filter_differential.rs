//! The host's packet filter, the kernel as oracle: one nftables ruleset is
//! loaded with `nft -f` in `dut`; the same crafted frames go from `gen`
//! through `dut` with the kernel routing and filtering, then with the
//! engine; what reaches `sink` and what comes back to `gen` (forwards,
//! ICMP errors of `reject`, TCP resets, echo replies, a UDP socket's
//! answers) must be the same bytes, and the local UDP socket must receive
//! the same datagrams. The IP ID and header checksum of frames arriving at
//! gen are masked (Linux picks IDs at random).
//!
//! Special setting: `icmp_ratelimit` 0 on dut (for both runs), because the
//! suite sends more rejected packets from one address within a second than
//! the default per-destination burst (6) answers.
//!
//! Needs root: `cargo xtask test`.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use testbed::frame::checksum;
use testbed::{in_ns, mac_of, require_root, Child, PacketSocket, Topology};
use xdpip::filter::Hook;
use xdpip::Engine;

const XDPIP: &str = env!("CARGO_BIN_EXE_xdpip");
const DUT0: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 2);
const SINK: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 2);
/// The local UDP service the input chain protects.
const SERVICE: u16 = 7000;

/// An IPv4 packet to craft.
#[derive(Clone)]
struct Ip {
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ttl: u8,
    tos: u8,
    protocol: u8,
    payload: Vec<u8>,
    /// Leave a wrong transport checksum.
    bad_checksum: bool,
}

fn udp_to(dst: Ipv4Addr, sport: u16, dport: u16, len: usize) -> Ip {
    let mut p = vec![0u8; 8 + len];
    p[0..2].copy_from_slice(&sport.to_be_bytes());
    p[2..4].copy_from_slice(&dport.to_be_bytes());
    p[4..6].copy_from_slice(&((8 + len) as u16).to_be_bytes());
    for (i, b) in p[8..].iter_mut().enumerate() {
        *b = (i * 7 + dport as usize) as u8;
    }
    Ip {
        src: Ipv4Addr::new(10, 1, 0, 1),
        dst,
        ttl: 64,
        tos: 0,
        protocol: 17,
        payload: p,
        bad_checksum: false,
    }
}

fn udp(dport: u16) -> Ip {
    udp_to(SINK, 40000, dport, 20)
}

fn tcp(dport: u16, flags: u8) -> Ip {
    let mut p = udp(dport);
    p.protocol = 6;
    let mut t = vec![0u8; 20];
    t[0..2].copy_from_slice(&40001u16.to_be_bytes());
    t[2..4].copy_from_slice(&dport.to_be_bytes());
    t[4..8].copy_from_slice(&1000u32.to_be_bytes());
    t[8..12].copy_from_slice(&77u32.to_be_bytes());
    t[12] = 5 << 4;
    t[13] = flags;
    t[14..16].copy_from_slice(&65535u16.to_be_bytes());
    p.payload = t;
    p
}

fn ping(dst: Ipv4Addr, len: usize) -> Ip {
    let mut p = udp(0);
    p.dst = dst;
    p.protocol = 1;
    let mut m = vec![8, 0, 0, 0, 0x12, 0x34, 0, 1];
    m.extend((0..len).map(|i| i as u8));
    p.payload = m;
    p
}

fn with(mut p: Ip, f: impl FnOnce(&mut Ip)) -> Ip {
    f(&mut p);
    p
}

impl Ip {
    fn frame(&self, dst_mac: [u8; 6], src_mac: [u8; 6]) -> Vec<u8> {
        let total = 20 + self.payload.len();
        let mut f = Vec::new();
        f.extend_from_slice(&dst_mac);
        f.extend_from_slice(&src_mac);
        f.extend_from_slice(&[0x08, 0x00, 0x45, self.tos]);
        f.extend_from_slice(&(total as u16).to_be_bytes());
        f.extend_from_slice(&[0x12, 0x34, 0, 0, self.ttl, self.protocol, 0, 0]);
        f.extend_from_slice(&self.src.octets());
        f.extend_from_slice(&self.dst.octets());
        let mut p = self.payload.clone();
        let pseudo = |p: &[u8]| {
            let mut ph = Vec::new();
            ph.extend_from_slice(&self.src.octets());
            ph.extend_from_slice(&self.dst.octets());
            ph.extend_from_slice(&[0, self.protocol]);
            ph.extend_from_slice(&(p.len() as u16).to_be_bytes());
            ph.extend_from_slice(p);
            checksum(&ph)
        };
        match self.protocol {
            17 => {
                let c = pseudo(&p);
                p[6..8].copy_from_slice(&(if c == 0 { 0xffff } else { c }).to_be_bytes());
            }
            6 => {
                let c = pseudo(&p);
                p[16..18].copy_from_slice(&c.to_be_bytes());
            }
            1 => {
                let c = checksum(&p);
                p[2..4].copy_from_slice(&c.to_be_bytes());
            }
            _ => {}
        }
        if self.bad_checksum {
            let at = if self.protocol == 6 { 16 } else { 6 };
            p[at] ^= 0x5a;
        }
        f.extend_from_slice(&p);
        let c = checksum(&f[14..34]);
        f[24..26].copy_from_slice(&c.to_be_bytes());
        f
    }
}

const RULESET: &str = r#"
table inet filter {
  set blocked {
    type ipv4_addr; flags interval;
    elements = { 10.1.0.64/26, 10.1.0.9 }
  }
  set rejected_ports {
    type inet_service; flags interval;
    elements = { 6000-6099, 7100 }
  }
  chain input {
    type filter hook input priority filter; policy accept;
    ip saddr @blocked drop
    icmp type echo-request ip length > 100 drop
    icmp type echo-request ip saddr 10.1.0.7 reject with icmp type admin-prohibited
    udp dport 7000 ip saddr 10.1.0.8 reject
    udp dport 7001 drop
  }
  chain forward {
    type filter hook forward priority filter; policy accept;
    ip saddr @blocked counter drop
    udp dport @rejected_ports reject with icmp type host-prohibited
    udp dport 5555 reject with icmp type admin-prohibited
    tcp dport 22 reject with tcp reset
    tcp dport { 80, 443 } drop
    ip daddr 10.2.0.2 udp dport 9000-9100 jump checks
    ip dscp ef drop
    ip ttl < 10 drop
  }
  chain checks {
    udp sport 40000 return
    ip length > 300 reject with icmp type net-prohibited
    udp sport 40001 drop
  }
}
table ip early {
  chain pre {
    type filter hook prerouting priority -150; policy accept;
    udp dport 4444 drop
  }
}
"#;

fn packets() -> Vec<Ip> {
    let from = |p: Ip, a: [u8; 4]| with(p, |p| p.src = Ipv4Addr::from(a));
    vec![
        udp(9),                                     // forwarded; sink answers port unreachable
        udp(6050),                                  // host-prohibited
        udp(7100),                                  // host-prohibited
        udp(5555),                                  // admin-prohibited
        with(udp(5555), |p| p.bad_checksum = true), // rejected, not answered
        tcp(22, 0x02),                              // reset to a SYN
        tcp(22, 0x10),                              // reset to an ACK
        tcp(443, 0x02),                             // dropped
        tcp(8080, 0x02),                            // forwarded; sink resets
        udp(9050),                                  // jump, return: forwarded
        udp_to(SINK, 40002, 9050, 400),             // net-prohibited
        udp_to(SINK, 40001, 9050, 20),              // dropped in the jumped-to chain
        with(udp(9), |p| p.tos = 0xb8),             // DSCP EF dropped
        with(udp(9), |p| p.ttl = 10),               // TTL 9 at forward: dropped
        with(udp(9), |p| p.ttl = 11),               // TTL 10 at forward: forwarded
        from(udp(9), [10, 1, 0, 9]),                // blocked source
        from(udp(9), [10, 1, 0, 70]),               // blocked source (prefix)
        udp(4444),                                  // prerouting drop
        ping(DUT0, 20),                             // echo reply
        ping(DUT0, 200),                            // dropped: too long
        from(ping(DUT0, 20), [10, 1, 0, 7]),        // admin-prohibited from dut
        ping(SINK, 20),                             // forwarded, sink answers
        udp_to(DUT0, 40000, SERVICE, 30),           // to the socket, which answers
        from(udp_to(DUT0, 40000, SERVICE, 30), [10, 1, 0, 8]), // port unreachable
        udp_to(DUT0, 40000, 7001, 30),              // dropped by input
        from(udp_to(DUT0, 40000, SERVICE, 40), [10, 1, 0, 9]), // blocked source, input
    ]
}

#[derive(Debug, Default)]
struct Capture {
    sink: Vec<Vec<u8>>,
    gen: Vec<Vec<u8>>,
}

fn is_ipv4(f: &[u8]) -> bool {
    f.len() >= 34 && f[12..14] == [0x08, 0x00]
}

fn send_and_capture(t: &Topology, frames: &[Vec<u8>]) -> Capture {
    let tx = PacketSocket::open(&t.gen, "eth0").unwrap();
    let at_sink = PacketSocket::open(&t.sink, "eth0").unwrap();
    let at_gen = PacketSocket::open(&t.gen, "eth0").unwrap();
    for f in frames {
        tx.send(f).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    let sink = at_sink
        .collect(usize::MAX, Duration::from_millis(700), is_ipv4)
        .unwrap();
    let gen = at_gen
        .collect(usize::MAX, Duration::from_millis(100), is_ipv4)
        .unwrap();
    // Only what comes from dut's side matters at gen (not gen's own frames).
    let gen_mac = mac_of(&t.gen, "eth0").unwrap();
    let gen = gen.into_iter().filter(|f| f[6..12] != gen_mac).collect();
    Capture { sink, gen }
}

fn masked(f: &[u8], gen_side: bool) -> Vec<u8> {
    let mut v = f.to_vec();
    if gen_side && v.len() >= 26 {
        v[18..20].fill(0);
        v[24..26].fill(0);
    }
    v
}

fn decode(f: &[u8]) -> String {
    let ip = &f[14..];
    format!(
        "{}.{}.{}.{} -> {}.{}.{}.{} proto {} len {} ttl {} {:02x?}",
        ip[12],
        ip[13],
        ip[14],
        ip[15],
        ip[16],
        ip[17],
        ip[18],
        ip[19],
        ip[9],
        u16::from_be_bytes([ip[2], ip[3]]),
        ip[8],
        &ip[20..ip.len().min(48)]
    )
}

fn compare(side: &str, kernel: &[Vec<u8>], ours: &[Vec<u8>]) {
    let g = side == "gen";
    // Sorted: the socket's answer leaves when its thread gets to it, so
    // its place among the others varies.
    let mut k: Vec<Vec<u8>> = kernel.iter().map(|f| masked(f, g)).collect();
    let mut o: Vec<Vec<u8>> = ours.iter().map(|f| masked(f, g)).collect();
    k.sort();
    o.sort();
    if k != o {
        let mut msg = format!(
            "towards {side}: kernel {} frames, engine {}\n",
            k.len(),
            o.len()
        );
        for f in kernel {
            msg += &format!("  kernel: {}\n", decode(f));
        }
        for f in ours {
            msg += &format!("  engine: {}\n", decode(f));
        }
        panic!("{msg}");
    }
}

/// Echoes what a socket receives back to its sender; returns what it got.
fn echo_server<S: Send + 'static>(
    sock: S,
    recv: impl Fn(&S, &mut [u8]) -> Option<(usize, SocketAddrV4)> + Send + 'static,
    send: impl Fn(&S, &[u8], SocketAddrV4) + Send + 'static,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<(SocketAddrV4, Vec<u8>)>> {
    std::thread::spawn(move || {
        let mut got = Vec::new();
        let mut buf = [0u8; 2048];
        while !stop.load(Ordering::Relaxed) {
            if let Some((n, from)) = recv(&sock, &mut buf) {
                send(&sock, &buf[..n], from);
                got.push((from, buf[..n].to_vec()));
            }
        }
        got
    })
}

fn setup() -> Topology {
    let t = Topology::gen_dut_sink(1).expect("topology");
    // gen answers ARP for the other sources the suite uses.
    for a in ["10.1.0.7/24", "10.1.0.8/24"] {
        t.gen.ip(&["addr", "add", a, "dev", "eth0"]).unwrap();
    }
    t.sink.sysctl("net.ipv4.icmp_ratelimit", "0").unwrap();
    t.dut.sysctl("net.ipv4.icmp_ratelimit", "0").unwrap();
    // What dut's kernel originates (resets, the UDP socket's answers)
    // would otherwise reach gen with the partial checksum a veth leaves;
    // a real wire carries the full one, as the engine sends it.
    testbed::disable_tx_checksum(&t.dut, "eth0").unwrap();
    assert!(t.warm_up(), "no route through the kernel");
    for a in ["10.1.0.7", "10.1.0.8"] {
        t.gen
            .exec(&["ping", "-c", "1", "-W", "1", "-q", "-I", a, "10.1.0.2"])
            .unwrap();
    }
    let path = std::env::temp_dir().join(format!("xdpip-fd-{}.nft", std::process::id()));
    std::fs::write(&path, RULESET).unwrap();
    let r = t.dut.exec(&["nft", "-f", path.to_str().unwrap()]);
    let _ = std::fs::remove_file(&path);
    r.unwrap();
    t
}

#[test]
fn the_same_ruleset_gives_the_same_wire_through_the_kernel_and_the_engine() {
    require_root();
    let t = setup();
    let gen_mac = mac_of(&t.gen, "eth0").unwrap();
    let dut_mac = mac_of(&t.dut, "eth0").unwrap();
    let frames: Vec<Vec<u8>> = packets()
        .iter()
        .map(|p| p.frame(dut_mac, gen_mac))
        .collect();
    let service = SocketAddrV4::new(DUT0, SERVICE);

    // The kernel, with a kernel socket.
    let stop = Arc::new(AtomicBool::new(false));
    let server = in_ns(t.dut.name(), || {
        let s = std::net::UdpSocket::bind(service).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        echo_server(
            s,
            |s, b| match s.recv_from(b) {
                Ok((n, std::net::SocketAddr::V4(a))) => Some((n, a)),
                _ => None,
            },
            |s, b, to| {
                s.send_to(b, to).unwrap();
            },
            stop.clone(),
        )
    });
    let kernel = send_and_capture(&t, &frames);
    stop.store(true, Ordering::Relaxed);
    let kernel_got = server.join().unwrap();

    // The engine, with an engine socket.
    let before = t.dut.snmp().unwrap();
    let (ours, ours_got, report) = in_ns(t.dut.name(), || {
        let e = Engine::builder()
            .interface("eth0")
            .interface("eth1")
            .start()
            .expect("engine start");
        assert_eq!(
            e.filter().kernel_hooks,
            0,
            "{:?}",
            e.filter().kernel_reasons
        );
        let s = e.udp_socket().unwrap();
        s.bind(service).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let server = echo_server(
            s,
            |s, b| s.recv_from(b).ok(),
            |s, b, to| {
                s.send_to(b, to).unwrap();
            },
            stop.clone(),
        );
        let c = send_and_capture(&t, &frames);
        stop.store(true, Ordering::Relaxed);
        let got = server.join().unwrap();
        (c, got, e.stop())
    });
    let after = t.dut.snmp().unwrap();

    compare("sink", &kernel.sink, &ours.sink);
    compare("gen", &kernel.gen, &ours.gen);
    assert_eq!(kernel_got, ours_got, "the UDP socket's deliveries");
    assert_eq!(kernel_got.len(), 1, "one datagram passes the input chain");
    // The engine did it all: dut's kernel neither forwarded nor answered.
    for k in ["IpForwDatagrams", "IcmpOutMsgs"] {
        assert_eq!(
            after[k], before[k],
            "the kernel counted {k} during the engine's run"
        );
    }
    assert!(report.drops["filter_drop"] >= 9, "{:?}", report.drops);
    assert!(report.drops["filter_reject"] >= 8, "{:?}", report.drops);
    // The first rule of the forward chain counted the two blocked sources.
    let blocked = report
        .filter
        .rules
        .iter()
        .find(|r| r.rule.chain == "forward")
        .expect("forward rules in the report");
    assert_eq!(blocked.packets, 2, "{:?}", report.filter);
}

/// `ct state established,related accept`: the forward hook is the
/// kernel's; its traffic is forwarded correctly by the kernel, and the
/// start-up message says why.
#[test]
fn connection_tracking_rules_leave_their_hook_to_the_kernel() {
    require_root();
    let t = Topology::gen_dut_sink(1).expect("topology");
    assert!(t.warm_up());
    let path = std::env::temp_dir().join(format!("xdpip-ct-{}.nft", std::process::id()));
    std::fs::write(
        &path,
        "table inet f {\n chain forward {\n  type filter hook forward priority 0; policy drop;\n  \
         ct state established,related accept\n  iifname \"eth0\" udp dport 9 accept\n  \
         iifname \"eth0\" icmp type echo-request accept\n }\n}\n",
    )
    .unwrap();
    let r = t.dut.exec(&["nft", "-f", path.to_str().unwrap()]);
    let _ = std::fs::remove_file(&path);
    r.unwrap();
    let mut c = t.dut.command(XDPIP);
    c.args(["run", "-i", "eth0", "-i", "eth1"]);
    let mut engine = Child::spawn(c).unwrap();
    let line = engine
        .wait_for_line(Duration::from_secs(30), |l| {
            l.contains("ct (connection tracking)")
        })
        .expect("the start-up message names the ct rule");
    assert!(line.contains("forward: inet f forward handle"), "{line}");
    let before = t.dut.snmp().unwrap();
    // Pings there and back: the replies are `established` to the kernel.
    t.gen
        .exec(&["ping", "-c", "3", "-i", "0.2", "-W", "1", "-q", "10.2.0.2"])
        .expect("pings forwarded by the kernel");
    // Sink's own ping towards gen is not established and not allowed.
    assert!(t
        .sink
        .exec(&["ping", "-c", "1", "-W", "1", "-q", "10.1.0.1"])
        .is_err());
    let after = t.dut.snmp().unwrap();
    assert!(
        after["IpForwDatagrams"] >= before["IpForwDatagrams"] + 6,
        "{after:?}"
    );
    engine.signal(libc::SIGTERM);
    assert!(engine.wait(Duration::from_secs(20)).unwrap().success());
    let out = engine.stdout().join("\n");
    assert!(out.contains("pass_filter="), "{out}");
}

/// Legacy iptables rules: their hook goes to the kernel, which applies
/// them, and the engine says so.
#[test]
fn legacy_iptables_rules_leave_their_hook_to_the_kernel() {
    require_root();
    let t = Topology::gen_dut_sink(1).expect("topology");
    assert!(t.warm_up());
    t.dut
        .exec(&[
            "iptables-legacy",
            "-A",
            "FORWARD",
            "-p",
            "udp",
            "--dport",
            "5555",
            "-j",
            "DROP",
        ])
        .unwrap();
    let mut c = t.dut.command(XDPIP);
    c.args(["run", "-i", "eth0", "-i", "eth1"]);
    let mut engine = Child::spawn(c).unwrap();
    engine
        .wait_for_line(Duration::from_secs(30), |l| {
            l.contains("forward: legacy iptables table filter: rules")
        })
        .expect("the start-up message names the legacy table");
    let gen_mac = mac_of(&t.gen, "eth0").unwrap();
    let dut_mac = mac_of(&t.dut, "eth0").unwrap();
    let frames = vec![
        udp(5555).frame(dut_mac, gen_mac),
        udp(9).frame(dut_mac, gen_mac),
    ];
    let before = t.dut.snmp().unwrap();
    let c = send_and_capture(&t, &frames);
    let after = t.dut.snmp().unwrap();
    // 5555 dropped by the kernel's iptables; 9 forwarded by the kernel.
    assert_eq!(
        c.sink.len(),
        1,
        "{:?}",
        c.sink.iter().map(|f| decode(f)).collect::<Vec<_>>()
    );
    assert_eq!(
        u16::from_be_bytes([c.sink[0][36], c.sink[0][37]]),
        9,
        "{}",
        decode(&c.sink[0])
    );
    // The kernel forwarded the datagram and sink's port unreachable back.
    assert!(
        after["IpForwDatagrams"] >= before["IpForwDatagrams"] + 2,
        "{after:?}"
    );
    engine.signal(libc::SIGTERM);
    assert!(engine.wait(Duration::from_secs(20)).unwrap().success());
}

/// Rules change under traffic: a drop added while a stream flows holds
/// for every packet sent from 100 ms after `nft` returned; deleted, the
/// stream flows again; a `ct` rule added turns the hook over to the
/// kernel, which goes on forwarding.
#[test]
fn changes_under_traffic_apply_within_100_ms() {
    require_root();
    let t = Topology::gen_dut_sink(1).expect("topology");
    assert!(t.warm_up());
    let nft = |args: &[&str]| {
        let mut v = vec!["nft"];
        v.extend_from_slice(args);
        t.dut.exec(&v).unwrap();
    };
    nft(&["add", "table", "ip", "f"]);
    nft(&[
        "add",
        "chain",
        "ip",
        "f",
        "fw",
        "{ type filter hook forward priority 0; policy accept; }",
    ]);
    let gen_mac = mac_of(&t.gen, "eth0").unwrap();
    let dut_mac = mac_of(&t.dut, "eth0").unwrap();
    let tx = PacketSocket::open(&t.gen, "eth0").unwrap();
    let at_sink = PacketSocket::open(&t.sink, "eth0").unwrap();
    // Numbered datagrams to port 9: the sequence number is the source port.
    let send = |from: u16, n: u16| {
        for i in from..from + n {
            tx.send(&udp_to(SINK, i, 9, 10).frame(dut_mac, gen_mac))
                .unwrap();
            std::thread::sleep(Duration::from_millis(2));
        }
    };
    let seen = || -> Vec<u16> {
        at_sink
            .collect(usize::MAX, Duration::from_millis(300), |f| {
                is_ipv4(f) && f[23] == 17
            })
            .unwrap()
            .iter()
            .map(|f| u16::from_be_bytes([f[34], f[35]]))
            .collect()
    };
    in_ns(t.dut.name(), || {
        let e = Engine::builder()
            .interface("eth0")
            .interface("eth1")
            .start()
            .expect("engine start");
        send(1000, 20);
        assert_eq!(seen().len(), 20, "before any rule");

        nft(&["add", "rule", "ip", "f", "fw", "udp", "dport", "9", "drop"]);
        std::thread::sleep(Duration::from_millis(100));
        send(2000, 20);
        assert_eq!(seen(), Vec::<u16>::new(), "100 ms after the drop was added");

        nft(&["flush", "chain", "ip", "f", "fw"]);
        std::thread::sleep(Duration::from_millis(100));
        send(3000, 20);
        assert_eq!(seen().len(), 20, "100 ms after the drop was deleted");

        let before = t.dut.snmp().unwrap();
        nft(&[
            "add", "rule", "ip", "f", "fw", "ct", "state", "new", "accept",
        ]);
        std::thread::sleep(Duration::from_millis(100));
        send(4000, 20);
        assert_eq!(seen().len(), 20, "forwarded by the kernel");
        let after = t.dut.snmp().unwrap();
        assert!(after["IpForwDatagrams"] >= before["IpForwDatagrams"] + 20);
        assert!(e.filter().kernel(Hook::Forward));
        let r = e.stop();
        assert!(r.xdp["pass_filter"] >= 20, "{:?}", r.xdp);
        assert!(r.drops["filter_drop"] >= 20, "{:?}", r.drops);
    });
}
