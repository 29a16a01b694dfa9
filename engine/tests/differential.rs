//! The kernel as oracle: every case sends the same crafted frames from
//! `gen` through `dut` twice, once with the Linux kernel routing in `dut`
//! and once with the engine, captures what leaves `dut` towards `sink` and
//! back towards `gen`, and compares the bytes.
//!
//! Fields the kernel chooses at random or by the clock are masked, and
//! listed here: the IP identification and header checksum of every packet
//! arriving at `gen` (ICMP errors, echo replies and TCP resets get a random
//! IP ID), and the time values written into timestamp options (in the
//! header, and in the header an ICMP error quotes), with the checksums that
//! cover them.
//!
//! Each run also checks who answered: during the engine's run the kernel of
//! `dut` forwards nothing and sends no ICMP, unless the case is one the XDP
//! program leaves to the kernel (noted per case). The case list with the
//! kernel's and the engine's behaviour is in docs/SEMANTICS.md.
//!
//! `DIFF_SHOW=1` prints every frame captured in both runs.
//!
//! Needs root: `cargo xtask test`.

use std::net::Ipv4Addr;
use std::time::Duration;
use testbed::frame::checksum;
use testbed::{mac_of, require_root, Child, PacketSocket, Topology};

const XDPIP: &str = env!("CARGO_BIN_EXE_xdpip");

/// An IPv4 packet to craft: header fields, options and an L4 payload.
#[derive(Clone)]
struct Ip {
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ttl: u8,
    tos: u8,
    id: u16,
    df: bool,
    mf: bool,
    frag_offset: u16,
    protocol: u8,
    options: Vec<u8>,
    payload: Vec<u8>,
    /// The frame's destination MAC when not dut's (a link broadcast).
    eth_dst: Option<[u8; 6]>,
}

impl Ip {
    fn udp(dst: Ipv4Addr, len: usize) -> Ip {
        let mut p = vec![0u8; 8 + len];
        p[0..2].copy_from_slice(&40000u16.to_be_bytes());
        p[2..4].copy_from_slice(&9000u16.to_be_bytes());
        p[4..6].copy_from_slice(&((8 + len) as u16).to_be_bytes());
        for (i, b) in p[8..].iter_mut().enumerate() {
            *b = (i * 7) as u8;
        }
        Ip {
            src: Ipv4Addr::new(10, 1, 0, 1),
            dst,
            ttl: 64,
            tos: 0,
            id: 0x1234,
            df: false,
            mf: false,
            frag_offset: 0,
            protocol: 17,
            options: Vec::new(),
            payload: p,
            eth_dst: None,
        }
    }

    fn to_sink(len: usize) -> Ip {
        Ip::udp(Ipv4Addr::new(10, 2, 0, 2), len)
    }

    /// The frame, with a correct UDP checksum where there is a whole
    /// datagram, and a correct header checksum.
    fn frame(&self, dst_mac: [u8; 6], src_mac: [u8; 6]) -> Vec<u8> {
        let hlen = 20 + self.options.len();
        assert_eq!(hlen % 4, 0, "options must pad to 32 bits");
        let total = hlen + self.payload.len();
        let mut f = Vec::with_capacity(14 + total);
        f.extend_from_slice(&self.eth_dst.unwrap_or(dst_mac));
        f.extend_from_slice(&src_mac);
        f.extend_from_slice(&[0x08, 0x00]);
        f.push(0x40 | (hlen / 4) as u8);
        f.push(self.tos);
        f.extend_from_slice(&(total as u16).to_be_bytes());
        f.extend_from_slice(&self.id.to_be_bytes());
        let fo = ((self.df as u16) << 14) | ((self.mf as u16) << 13) | (self.frag_offset / 8);
        f.extend_from_slice(&fo.to_be_bytes());
        f.extend_from_slice(&[self.ttl, self.protocol, 0, 0]);
        f.extend_from_slice(&self.src.octets());
        f.extend_from_slice(&self.dst.octets());
        f.extend_from_slice(&self.options);
        let mut payload = self.payload.clone();
        if self.protocol == 17 && !self.mf && self.frag_offset == 0 && payload.len() >= 8 {
            payload[6..8].copy_from_slice(&[0, 0]);
            let mut ph = Vec::new();
            ph.extend_from_slice(&self.src.octets());
            ph.extend_from_slice(&self.dst.octets());
            ph.extend_from_slice(&[0, 17]);
            ph.extend_from_slice(&(payload.len() as u16).to_be_bytes());
            ph.extend_from_slice(&payload);
            let c = checksum(&ph);
            payload[6..8].copy_from_slice(&(if c == 0 { 0xffff } else { c }).to_be_bytes());
        }
        if self.protocol == 1 && payload.len() >= 4 {
            payload[2..4].copy_from_slice(&[0, 0]);
            let c = checksum(&payload);
            payload[2..4].copy_from_slice(&c.to_be_bytes());
        }
        f.extend_from_slice(&payload);
        let c = checksum(&f[14..14 + hlen]);
        f[24..26].copy_from_slice(&c.to_be_bytes());
        f
    }
}

/// A case: how to set dut up, what to send, and what may differ.
struct Case {
    setup: &'static [&'static [&'static str]],
    /// Sysctls of dut set before both runs (`net.ipv4.icmp_echo_ignore_all`).
    sysctls: &'static [(&'static str, &'static str)],
    /// `ip` commands in dut between the kernel's run and the engine's, so
    /// that both start from the same state (removing a neighbour entry the
    /// kernel's run created).
    before_engine: &'static [&'static [&'static str]],
    packets: Vec<Ip>,
    /// Byte ranges (in the frame) masked in frames reaching sink.
    mask_sink: Vec<std::ops::Range<usize>>,
    /// The XDP program leaves this case to the kernel on purpose.
    kernel_handles: bool,
    /// Frames send one at a time with this pause (rate limits are per
    /// second).
    pause: Duration,
}

impl Case {
    fn new(packets: Vec<Ip>) -> Case {
        Case {
            setup: &[],
            sysctls: &[],
            before_engine: &[],
            packets,
            mask_sink: Vec::new(),
            kernel_handles: false,
            pause: Duration::from_millis(20),
        }
    }
}

#[derive(Debug, Default)]
struct Capture {
    sink: Vec<Vec<u8>>,
    gen: Vec<Vec<u8>>,
}

fn is_ipv4(f: &[u8]) -> bool {
    f.len() >= 34 && f[12..14] == [0x08, 0x00]
}

fn send_and_capture(t: &Topology, frames: &[Vec<u8>], pause: Duration) -> Capture {
    let tx = PacketSocket::open(&t.gen, "eth0").unwrap();
    let at_sink = PacketSocket::open(&t.sink, "eth0").unwrap();
    let at_gen = PacketSocket::open(&t.gen, "eth0").unwrap();
    for f in frames {
        tx.send(f).unwrap();
        std::thread::sleep(pause);
    }
    let quiet = Duration::from_millis(700);
    let sink = at_sink.collect(usize::MAX, quiet, is_ipv4).unwrap();
    let gen = at_gen
        .collect(usize::MAX, Duration::from_millis(100), is_ipv4)
        .unwrap();
    Capture { sink, gen }
}

/// Zeroes the time values of timestamp options in an IP header; true when
/// there were any.
fn zero_timestamps(h: &mut [u8]) -> bool {
    let hlen = ((h[0] & 15) as usize * 4).min(h.len());
    let mut i = 20;
    let mut any = false;
    while i < hlen {
        match h[i] {
            0 => break,
            1 => {
                i += 1;
                continue;
            }
            _ => {}
        }
        let len = *h.get(i + 1).unwrap_or(&0) as usize;
        if len < 2 || i + len > hlen {
            break;
        }
        if h[i] == 68 && len >= 4 {
            let ptr = (h[i + 2] as usize).min(len + 1);
            let step = if h[i + 3] & 15 == 0 { 4 } else { 8 };
            let mut slot = 4;
            while slot + step < ptr {
                let t = i + slot + step - 4;
                h[t..t + 4].fill(0);
                any = true;
                slot += step;
            }
        }
        i += len;
    }
    any
}

/// Masks `ranges`, and the times of timestamp options with the checksums
/// that cover them, in the header and in the header an ICMP error quotes.
fn masked(f: &[u8], ranges: &[std::ops::Range<usize>]) -> Vec<u8> {
    let mut v = f.to_vec();
    for r in ranges {
        for b in v.get_mut(r.clone()).into_iter().flatten() {
            *b = 0;
        }
    }
    if is_ipv4(&v) {
        let hlen = (v[14] & 15) as usize * 4;
        if zero_timestamps(&mut v[14..]) {
            v[24..26].fill(0);
        }
        let icmp = 14 + hlen;
        if v[23] == 1
            && v.len() > icmp + 8 + 20
            && [3, 11, 12].contains(&v[icmp])
            && zero_timestamps(&mut v[icmp + 8..])
        {
            v[icmp + 2..icmp + 4].fill(0);
            v[icmp + 8 + 10..icmp + 8 + 12].fill(0);
        }
    }
    v
}

/// IP ID and header checksum of frames arriving at gen.
fn gen_mask() -> Vec<std::ops::Range<usize>> {
    vec![18..20, 24..26]
}

fn decode(f: &[u8]) -> String {
    if !is_ipv4(f) {
        return format!("non-IPv4 frame of {} bytes", f.len());
    }
    let ip = &f[14..];
    let hlen = (ip[0] & 15) as usize * 4;
    let mut s = format!(
        "{}.{}.{}.{} -> {}.{}.{}.{} len {} id {:#06x} frag {:#06x} ttl {} proto {} tos {:#04x} csum {:#06x}",
        ip[12], ip[13], ip[14], ip[15], ip[16], ip[17], ip[18], ip[19],
        u16::from_be_bytes([ip[2], ip[3]]),
        u16::from_be_bytes([ip[4], ip[5]]),
        u16::from_be_bytes([ip[6], ip[7]]),
        ip[8], ip[9], ip[1],
        u16::from_be_bytes([ip[10], ip[11]])
    );
    if hlen > 20 {
        s += &format!(" options {:02x?}", &ip[20..hlen.min(ip.len())]);
    }
    if ip[9] == 1 && ip.len() >= hlen + 8 {
        s += &format!(
            " icmp type {} code {} rest {:02x?}",
            ip[hlen],
            ip[hlen + 1],
            &ip[hlen + 4..hlen + 8]
        );
    }
    s + &format!("\n    {:02x?}", f)
}

fn compare(side: &str, kernel: &[Vec<u8>], ours: &[Vec<u8>], mask: &[std::ops::Range<usize>]) {
    let k: Vec<Vec<u8>> = kernel.iter().map(|f| masked(f, mask)).collect();
    let o: Vec<Vec<u8>> = ours.iter().map(|f| masked(f, mask)).collect();
    if k != o {
        let mut msg = format!(
            "towards {side}: the kernel sent {} frames, the engine {}\n",
            kernel.len(),
            ours.len()
        );
        for (i, f) in kernel.iter().enumerate() {
            msg += &format!("  kernel[{i}]: {}\n", decode(f));
        }
        for (i, f) in ours.iter().enumerate() {
            msg += &format!("  engine[{i}]: {}\n", decode(f));
        }
        panic!("{msg}");
    }
}

fn start_engine(t: &Topology) -> Child {
    let mut cmd = t.dut.command(XDPIP);
    cmd.args(["run", "--json", "-q", "-i", "eth0", "-i", "eth1"]);
    let mut c = Child::spawn(cmd).unwrap();
    c.wait_for_line(Duration::from_secs(30), |l| {
        l.contains("\"event\":\"started\"")
    })
    .expect("engine start");
    c
}

fn stop_engine(mut c: Child) -> serde_json::Value {
    c.signal(libc::SIGTERM);
    assert!(
        c.wait(Duration::from_secs(20)).unwrap().success(),
        "{}",
        c.stderr().join("\n")
    );
    let line = c
        .stdout()
        .into_iter()
        .find(|l| l.contains("\"event\":\"stopped\""))
        .expect("final report");
    serde_json::from_str(&line).unwrap()
}

fn run(case: Case) {
    require_root();
    let t = Topology::gen_dut_sink(1).expect("topology");
    for cmd in case.setup {
        t.dut.ip(cmd).expect("setup");
    }
    for (k, v) in case.sysctls {
        t.dut.sysctl(k, v).expect("sysctl");
    }
    // sink answers too (port unreachable, echo replies): its own rate
    // limit must not make the two runs differ.
    t.sink.sysctl("net.ipv4.icmp_ratelimit", "0").unwrap();
    assert!(t.warm_up(), "no route through the kernel");
    let gen_mac = mac_of(&t.gen, "eth0").unwrap();
    let dut_mac = mac_of(&t.dut, "eth0").unwrap();
    let frames: Vec<Vec<u8>> = case
        .packets
        .iter()
        .map(|p| p.frame(dut_mac, gen_mac))
        .collect();

    let kernel = send_and_capture(&t, &frames, case.pause);
    for cmd in case.before_engine {
        t.dut.ip(cmd).expect("before the engine's run");
    }
    let engine = start_engine(&t);
    let before = t.dut.snmp().unwrap();
    let ours = send_and_capture(&t, &frames, case.pause);
    let after = t.dut.snmp().unwrap();
    let report = stop_engine(engine);

    if std::env::var_os("DIFF_SHOW").is_some() {
        for (who, c) in [("kernel", &kernel), ("engine", &ours)] {
            for f in &c.sink {
                eprintln!("{who} to sink: {}", decode(f));
            }
            for f in &c.gen {
                eprintln!("{who} to gen: {}", decode(f));
            }
        }
    }
    compare("sink", &kernel.sink, &ours.sink, &case.mask_sink);
    compare("gen", &kernel.gen, &ours.gen, &gen_mask());
    if !case.kernel_handles {
        for k in ["IpForwDatagrams", "IcmpOutMsgs"] {
            assert_eq!(
                after[k], before[k],
                "the kernel of dut counted {k} during the engine's run: {report}"
            );
        }
        assert!(
            report["mib"]["InReceives"].as_u64().unwrap() >= 1 || ours.sink.is_empty(),
            "the engine saw nothing: {report}"
        );
    }
}

macro_rules! cases {
    ($($name:ident => $case:expr;)+) => {
        $(
            #[test]
            fn $name() {
                run($case);
            }
        )+
    };
}

fn udp(len: usize) -> Ip {
    Ip::to_sink(len)
}

fn with<F: FnOnce(&mut Ip)>(mut p: Ip, f: F) -> Ip {
    f(&mut p);
    p
}

fn tcp_syn() -> Ip {
    tcp_syn_from(Ipv4Addr::new(10, 1, 0, 1))
}

/// A TCP SYN to sink's port 9 from `src`, checksummed for that source.
fn tcp_syn_from(src: Ipv4Addr) -> Ip {
    let mut p = udp(0);
    p.src = src;
    p.protocol = 6;
    let mut t = vec![0u8; 20];
    t[0..2].copy_from_slice(&40001u16.to_be_bytes());
    t[2..4].copy_from_slice(&9u16.to_be_bytes());
    t[4..8].copy_from_slice(&1u32.to_be_bytes());
    t[12] = 5 << 4;
    t[13] = 0x02;
    t[14..16].copy_from_slice(&65535u16.to_be_bytes());
    let mut ph = Vec::new();
    ph.extend_from_slice(&p.src.octets());
    ph.extend_from_slice(&p.dst.octets());
    ph.extend_from_slice(&[0, 6, 0, 20]);
    ph.extend_from_slice(&t);
    let c = checksum(&ph);
    t[16..18].copy_from_slice(&c.to_be_bytes());
    p.payload = t;
    p
}

fn icmp(msg_type: u8, code: u8, body: &[u8]) -> Ip {
    let mut p = udp(0);
    p.protocol = 1;
    let mut m = vec![msg_type, code, 0, 0, 0x12, 0x34, 0, 1];
    m.extend_from_slice(body);
    p.payload = m;
    p
}

const MTU_1400: &[&[&str]] = &[&["link", "set", "dev", "eth1", "mtu", "1400"]];

/// dut's own addresses: both ports', and one on its loopback that the
/// engine does not serve.
const DUT_ETH0: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 2);
const DUT_ETH1: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 1);
const DUT_LO: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const LO_ADDRESS: &[&[&str]] = &[&["addr", "add", "192.0.2.1/32", "dev", "lo"]];

/// UDP, a TCP SYN and an echo request to sink from each of dut's own
/// addresses, and UDP from one of them to a network without a route.
fn from_own_addresses() -> Vec<Ip> {
    let mut v: Vec<Ip> = [DUT_ETH0, DUT_ETH1, DUT_LO]
        .into_iter()
        .flat_map(|a| {
            [
                with(udp(10), |p| p.src = a),
                tcp_syn_from(a),
                with(icmp(8, 0, b"from dut's address"), |p| p.src = a),
            ]
        })
        .collect();
    v.push(with(Ip::udp(Ipv4Addr::new(10, 99, 0, 1), 10), |p| {
        p.src = DUT_ETH0
    }));
    v
}

/// A timestamp option with flag 3 (pre-specified addresses), room for one
/// address and its time, the address `a`.
fn prespec_timestamp(a: [u8; 4]) -> Ip {
    with(udp(20), |p| {
        p.options = vec![68, 12, 5, 3, a[0], a[1], a[2], a[3], 0, 0, 0, 0];
    })
}

/// An echo request to `dst`, in a frame to `eth_dst` (dut's MAC if none).
fn ping(dst: Ipv4Addr, eth_dst: Option<[u8; 6]>) -> Ip {
    with(icmp(8, 0, b"ping dut"), |p| {
        p.dst = dst;
        p.eth_dst = eth_dst;
    })
}

/// Packets from gen whose sources route back through eth0 (gen itself),
/// through eth1 (sink's address, so that the answers of the loose case
/// have a neighbour to go to: an unresolved one would leave them to
/// neighbour timeouts), or nowhere (198.51.100.7: dut has no default
/// route), forwarded, expiring and to the router.
fn reverse_path_sources() -> Vec<Ip> {
    let mut v = Vec::new();
    for src in [
        Ipv4Addr::new(10, 1, 0, 1),
        Ipv4Addr::new(10, 2, 0, 2),
        Ipv4Addr::new(198, 51, 100, 7),
    ] {
        v.push(with(udp(10), |p| p.src = src));
        v.push(with(udp(10), |p| {
            p.src = src;
            p.ttl = 1;
        }));
        v.push(with(ping(DUT_ETH0, None), |p| p.src = src));
    }
    v
}

const BROADCAST_MAC: [u8; 6] = [0xff; 6];

cases! {
    udp_small => Case::new(vec![udp(0), udp(18), udp(100)]);
    udp_full_size => Case::new(vec![udp(1472), with(udp(1000), |p| { p.tos = 0xb8; p.df = true; })]);
    tcp_syn_and_reset => Case::new(vec![tcp_syn()]);
    icmp_echo_and_reply => Case::new(vec![icmp(8, 0, b"ping through dut")]);
    ttl_2_is_forwarded_with_ttl_1 => Case::new(vec![with(udp(10), |p| p.ttl = 2)]);
    ttl_1_gets_time_exceeded => Case::new(vec![with(udp(10), |p| p.ttl = 1), with(udp(600), |p| p.ttl = 1)]);
    ttl_0_gets_time_exceeded => Case::new(vec![with(udp(10), |p| p.ttl = 0)]);
    no_route_gets_net_unreachable => Case::new(vec![Ip::udp(Ipv4Addr::new(10, 99, 0, 1), 10)]);
    no_route_burst_is_rate_limited => Case::new((0..8).map(|_| Ip::udp(Ipv4Addr::new(10, 99, 0, 1), 10)).collect());
    ttl_burst_is_rate_limited => Case::new((0..10).map(|_| with(udp(10), |p| p.ttl = 1)).collect());
    unreachable_route_gets_host_unreachable => Case {
        setup: &[&["route", "add", "unreachable", "10.98.0.0/16"]],
        ..Case::new(vec![Ip::udp(Ipv4Addr::new(10, 98, 0, 1), 10)])
    };
    prohibit_route_gets_admin_prohibited => Case {
        setup: &[&["route", "add", "prohibit", "10.97.0.0/16"]],
        ..Case::new(vec![Ip::udp(Ipv4Addr::new(10, 97, 0, 1), 10)])
    };
    blackhole_route_is_silent => Case {
        setup: &[&["route", "add", "blackhole", "10.96.0.0/16"]],
        ..Case::new(vec![Ip::udp(Ipv4Addr::new(10, 96, 0, 1), 10)])
    };
    df_oversize_gets_frag_needed => Case {
        setup: MTU_1400,
        ..Case::new(vec![with(udp(1472), |p| p.df = true)])
    };
    oversize_without_df_is_fragmented => Case {
        setup: MTU_1400,
        ..Case::new(vec![udp(1472), with(udp(1300), |p| p.tos = 0x10)])
    };
    fragment_is_refragmented => Case {
        setup: MTU_1400,
        ..Case::new(vec![with(udp(1472), |p| { p.mf = true; p.payload.truncate(1480); })])
    };
    non_first_fragment_ttl_1_is_silent => Case::new(vec![with(udp(100), |p| { p.ttl = 1; p.frag_offset = 1480; })]);
    first_fragment_ttl_1_gets_time_exceeded => Case::new(vec![with(udp(100), |p| { p.ttl = 1; p.mf = true; })]);
    record_route => Case::new(vec![with(udp(20), |p| p.options = vec![7, 11, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0])]);
    record_route_full => Case::new(vec![with(udp(20), |p| p.options = vec![7, 7, 8, 1, 2, 3, 4, 0])]);
    timestamp_only => Case {
        mask_sink: vec![24..26, 14 + 24..14 + 28],
        ..Case::new(vec![with(udp(20), |p| p.options = vec![68, 12, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0])])
    };
    timestamp_and_address => Case {
        mask_sink: vec![24..26, 14 + 28..14 + 32],
        ..Case::new(vec![with(udp(20), |p| p.options = vec![68, 12, 5, 1, 0, 0, 0, 0, 0, 0, 0, 0])])
    };
    timestamp_overflow => Case::new(vec![with(udp(20), |p| p.options = vec![68, 8, 9, 0, 0, 0, 0, 0])]);
    loose_source_route_is_dropped => Case::new(vec![with(udp(20), |p| p.options = vec![131, 7, 4, 10, 2, 0, 2, 0])]);
    strict_source_route_is_dropped => Case::new(vec![with(udp(20), |p| p.options = vec![137, 7, 4, 10, 2, 0, 2, 0])]);
    router_alert_is_forwarded => Case::new(vec![with(udp(20), |p| p.options = vec![148, 4, 0, 0])]);
    nops_are_forwarded => Case::new(vec![with(udp(20), |p| p.options = vec![1, 1, 1, 0])]);
    malformed_option_length_gets_parameter_problem => Case::new(vec![with(udp(20), |p| p.options = vec![7, 9, 4, 0])]);
    malformed_option_pointer_gets_parameter_problem => Case::new(vec![with(udp(20), |p| p.options = vec![7, 7, 3, 0, 0, 0, 0, 0])]);
    malformed_ttl_1_with_options => Case::new(vec![with(udp(20), |p| { p.ttl = 1; p.options = vec![7, 7, 4, 0, 0, 0, 0, 0]; })]);
    no_error_about_an_icmp_error => Case::new(vec![with(icmp(3, 1, &[0x45; 28]), |p| p.ttl = 1), with(icmp(11, 0, &[0x45; 28]), |p| p.ttl = 1)]);
    error_about_an_echo_request => Case::new(vec![with(icmp(8, 0, b"x"), |p| p.ttl = 1)]);
    martian_sources_are_dropped => Case::new(vec![
        with(udp(10), |p| p.src = Ipv4Addr::new(127, 0, 0, 1)),
        with(udp(10), |p| p.src = Ipv4Addr::new(0, 1, 2, 3)),
        with(udp(10), |p| p.src = Ipv4Addr::new(224, 0, 0, 5)),
        with(udp(10), |p| p.src = Ipv4Addr::new(255, 255, 255, 255)),
        with(udp(10), |p| p.src = Ipv4Addr::new(0, 0, 0, 0)),
        with(udp(10), |p| p.src = Ipv4Addr::new(0, 1, 2, 3)),
        with(udp(10), |p| p.src = Ipv4Addr::new(240, 0, 0, 1)),
    ]);
    martian_destinations => Case::new(vec![
        Ip::udp(Ipv4Addr::new(0, 1, 2, 3), 10),
        Ip::udp(Ipv4Addr::new(0, 0, 0, 0), 10),
        Ip::udp(Ipv4Addr::new(127, 0, 0, 1), 10),
        Ip::udp(Ipv4Addr::new(240, 0, 0, 1), 10),
    ]);
    ttl_1_with_record_route_room => Case::new(vec![with(udp(20), |p| { p.ttl = 1; p.options = vec![7, 11, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0]; })]);
    ttl_1_with_timestamps => Case::new(vec![with(udp(20), |p| { p.ttl = 1; p.options = vec![68, 20, 5, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]; })]);
    own_address_sources_are_martians => Case {
        setup: LO_ADDRESS,
        ..Case::new(from_own_addresses())
    };
    own_address_sources_with_accept_local => Case {
        setup: LO_ADDRESS,
        sysctls: &[("net.ipv4.conf.eth0.accept_local", "1")],
        ..Case::new(from_own_addresses())
    };
    cipso_too_short_gets_parameter_problem => Case::new(vec![
        with(udp(20), |p| p.options = vec![134, 6, 0, 0, 0, 1, 1, 0]),
    ]);
    cipso_unknown_doi_gets_parameter_problem => Case::new(vec![
        with(udp(20), |p| p.options = vec![134, 10, 0, 0, 0, 5, 1, 4, 0, 0, 0, 0]),
        with(udp(20), |p| p.options = vec![1, 1, 1, 1, 134, 8, 0, 0, 0, 0, 1, 2]),
    ]);
    timestamp_prespecified_addresses => Case::new(vec![
        prespec_timestamp([0, 0, 0, 0]),
        prespec_timestamp([255, 255, 255, 255]),
        prespec_timestamp([224, 0, 0, 1]),
        prespec_timestamp([0, 9, 9, 9]),
        prespec_timestamp([10, 1, 0, 2]),
        prespec_timestamp([10, 1, 0, 255]),
        prespec_timestamp([10, 2, 0, 2]),
    ]);
    ttl_1_with_prespecified_timestamp => Case::new(vec![
        with(prespec_timestamp([0, 0, 0, 0]), |p| p.ttl = 1),
        with(udp(20), |p| {
            p.ttl = 1;
            p.options = vec![68, 20, 5, 3, 10, 1, 0, 2, 0, 0, 0, 0, 224, 0, 0, 1, 0, 0, 0, 0];
        }),
        with(udp(20), |p| {
            p.ttl = 1;
            p.options = vec![68, 20, 5, 3, 10, 1, 0, 2, 0, 0, 0, 0, 10, 1, 0, 2, 0, 0, 0, 0];
        }),
        with(udp(20), |p| {
            p.ttl = 1;
            p.options = vec![68, 20, 5, 3, 10, 1, 0, 2, 0, 0, 0, 0, 10, 9, 9, 9, 0, 0, 0, 0];
        }),
    ]);
    malformed_option_after_record_route_echoes_it => Case::new(vec![
        with(udp(20), |p| p.options = vec![7, 7, 4, 0, 0, 0, 0, 1, 68, 3, 5, 0]),
        with(udp(20), |p| p.options = vec![7, 7, 4, 0, 0, 0, 0, 1, 134, 6, 0, 0, 0, 1, 1, 0]),
    ]);
    // rp_filter 1: sources routed back through eth1, or not at all, are
    // dropped on eth0, also when their TTL expires and when they ping the
    // router; 2: only those without a route back.
    rp_filter_strict => Case {
        sysctls: &[("net.ipv4.conf.all.rp_filter", "1")],
        // dut's own answers reach sink too: their IP IDs differ.
        mask_sink: gen_mask(),
        ..Case::new(reverse_path_sources())
    };
    rp_filter_loose => Case {
        sysctls: &[("net.ipv4.conf.eth0.rp_filter", "2")],
        // dut's own answers reach sink too: their IP IDs differ.
        mask_sink: gen_mask(),
        ..Case::new(reverse_path_sources())
    };
    echo_ignore_all => Case {
        sysctls: &[("net.ipv4.icmp_echo_ignore_all", "1")],
        ..Case::new(vec![ping(DUT_ETH0, None), ping(DUT_ETH1, None)])
    };
    echo_to_a_broadcast_is_ignored_by_default => Case::new(vec![
        ping(Ipv4Addr::new(10, 1, 0, 255), None),
        ping(Ipv4Addr::new(10, 1, 0, 255), Some(BROADCAST_MAC)),
    ]);
    echo_to_a_broadcast_answered_when_not_ignored => Case {
        sysctls: &[("net.ipv4.icmp_echo_ignore_broadcasts", "0")],
        ..Case::new(vec![
            ping(Ipv4Addr::new(10, 1, 0, 255), None),
            ping(Ipv4Addr::new(10, 1, 0, 255), Some(BROADCAST_MAC)),
            ping(DUT_ETH0, None),
        ])
    };
    ttl_1_from_a_broadcast_source_gets_time_exceeded => Case {
        // The kernel's run leaves a NOARP neighbour entry for the
        // broadcast address: the engine's run starts without it, as the
        // kernel's did.
        before_engine: &[&["neigh", "del", "10.1.0.255", "dev", "eth0"]],
        ..Case::new(vec![with(udp(10), |p| { p.ttl = 1; p.src = Ipv4Addr::new(10, 1, 0, 255); })])
    };
    broadcast_destinations_are_not_forwarded => Case {
        kernel_handles: true,
        ..Case::new(vec![
            Ip::udp(Ipv4Addr::new(10, 2, 0, 255), 10),
            Ip::udp(Ipv4Addr::new(255, 255, 255, 255), 10),
        ])
    };
}

/// Malformed headers are dropped by both; crafted at the byte level.
#[test]
fn bad_headers_are_dropped_by_both() {
    require_root();
    let t = Topology::gen_dut_sink(1).expect("topology");
    assert!(t.warm_up());
    let gen_mac = mac_of(&t.gen, "eth0").unwrap();
    let dut_mac = mac_of(&t.dut, "eth0").unwrap();
    let good = udp(40).frame(dut_mac, gen_mac);
    let fix = |f: &mut Vec<u8>| {
        f[24..26].copy_from_slice(&[0, 0]);
        let c = checksum(&f[14..34]);
        f[24..26].copy_from_slice(&c.to_be_bytes());
    };
    let mut frames = Vec::new();
    let mut f = good.clone();
    f[24] ^= 0x11;
    frames.push(f); // bad checksum
    let mut f = good.clone();
    f[14] = 0x44;
    fix(&mut f);
    frames.push(f); // IHL 4
    let mut f = good.clone();
    f[16..18].copy_from_slice(&300u16.to_be_bytes());
    fix(&mut f);
    frames.push(f); // total length beyond the frame
    let mut f = good.clone();
    f[16..18].copy_from_slice(&16u16.to_be_bytes());
    fix(&mut f);
    frames.push(f); // total length below the header
    let mut f = good.clone();
    f[14] = 0x65;
    fix(&mut f);
    frames.push(f); // version 6 in an IPv4 frame
    frames.push(good[..30].to_vec()); // truncated header

    let kernel = send_and_capture(&t, &frames, Duration::from_millis(10));
    let engine = start_engine(&t);
    let ours = send_and_capture(&t, &frames, Duration::from_millis(10));
    let report = stop_engine(engine);
    compare("sink", &kernel.sink, &ours.sink, &[]);
    compare("gen", &kernel.gen, &ours.gen, &gen_mask());
    assert!(kernel.sink.is_empty());
    assert_eq!(report["drops"]["bad_checksum"], 1, "{report}");
    assert_eq!(report["drops"]["total_length_beyond_frame"], 1, "{report}");
    assert_eq!(report["drops"]["total_length_below_header"], 1, "{report}");
}
