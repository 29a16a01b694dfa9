//! Multicast on engine sockets against kernel sockets: the same sequence of
//! joins, leaves and source filters (RFC 3376 include/exclude transitions)
//! on a kernel socket and then on an engine socket in dut, with senders on
//! several source addresses in gen; what each receives, datagram for
//! datagram, and the errnos, must be equal. The IGMPv3 reports dut sends
//! for the engine's joins are captured and checked.
//!
//! Needs root: `cargo xtask test`.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket as StdUdp};
use std::os::fd::AsRawFd;
use std::time::Duration;
use testbed::{in_ns, require_root, PacketSocket, Topology};
use xdpip::socket::FilterMode;

const GROUP: Ipv4Addr = Ipv4Addr::new(239, 1, 2, 3);
const PORT: u16 = 5400;
const IFADDR: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 2);
const SOURCES: [Ipv4Addr; 3] = [
    Ipv4Addr::new(10, 1, 0, 11),
    Ipv4Addr::new(10, 1, 0, 12),
    Ipv4Addr::new(10, 1, 0, 13),
];

/// The membership calls of the sequence, on either kind of socket.
trait Member {
    fn op(&self, name: i32, v: &[u8]) -> Result<(), i32>;
    fn filter(&self, mode: FilterMode, sources: &[Ipv4Addr]) -> Result<(), i32>;
    fn drain(&self) -> Vec<String>;
}

fn mreq_source(source: Ipv4Addr) -> Vec<u8> {
    [GROUP.octets(), IFADDR.octets(), source.octets()].concat()
}

fn mreq(group: Ipv4Addr) -> Vec<u8> {
    [group.octets(), IFADDR.octets()].concat()
}

fn msfilter(mode: FilterMode, sources: &[Ipv4Addr]) -> Vec<u8> {
    let m = match mode {
        FilterMode::Include => libc::MCAST_INCLUDE,
        FilterMode::Exclude => libc::MCAST_EXCLUDE,
    } as u32;
    let mut v = [GROUP.octets(), IFADDR.octets()].concat();
    v.extend_from_slice(&m.to_ne_bytes());
    v.extend_from_slice(&(sources.len() as u32).to_ne_bytes());
    for s in sources {
        v.extend_from_slice(&s.octets());
    }
    while v.len() < 20 {
        v.push(0);
    }
    v
}

fn names(buf: &[u8], n: usize) -> String {
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

impl Member for StdUdp {
    fn op(&self, name: i32, v: &[u8]) -> Result<(), i32> {
        // SAFETY: `v` is valid for its length.
        let r = unsafe {
            libc::setsockopt(
                self.as_raw_fd(),
                libc::IPPROTO_IP,
                name,
                v.as_ptr().cast(),
                v.len() as u32,
            )
        };
        if r < 0 {
            Err(io::Error::last_os_error().raw_os_error().unwrap())
        } else {
            Ok(())
        }
    }
    fn filter(&self, mode: FilterMode, sources: &[Ipv4Addr]) -> Result<(), i32> {
        self.op(libc::IP_MSFILTER, &msfilter(mode, sources))
    }
    fn drain(&self) -> Vec<String> {
        let mut got = Vec::new();
        let mut b = [0u8; 256];
        while let Ok((n, _)) = self.recv_from(&mut b) {
            got.push(names(&b, n));
        }
        got.sort();
        got
    }
}

impl Member for xdpip::socket::UdpSocket {
    fn op(&self, name: i32, v: &[u8]) -> Result<(), i32> {
        self.set_option_bytes(libc::IPPROTO_IP, name, v)
            .map_err(|e| e.raw_os_error().unwrap_or(-1))
    }
    fn filter(&self, mode: FilterMode, sources: &[Ipv4Addr]) -> Result<(), i32> {
        self.set_msfilter(GROUP, IFADDR, mode, sources)
            .map_err(|e| e.raw_os_error().unwrap_or(-1))
    }
    fn drain(&self) -> Vec<String> {
        let mut got = Vec::new();
        let mut b = [0u8; 256];
        while let Ok((n, _)) = self.recv_from(&mut b) {
            got.push(names(&b, n));
        }
        got.sort();
        got
    }
}

/// One datagram from each source (and gen's own address) to the group.
fn send_round(gen: &str, step: usize) {
    in_ns(gen, || {
        for src in SOURCES.iter().chain(&[Ipv4Addr::new(10, 1, 0, 1)]) {
            let s = StdUdp::bind(SocketAddrV4::new(*src, 0)).unwrap();
            s.set_multicast_ttl_v4(1).unwrap();
            let a = src.octets();
            // SAFETY: an in_addr option value.
            unsafe {
                libc::setsockopt(
                    s.as_raw_fd(),
                    libc::IPPROTO_IP,
                    libc::IP_MULTICAST_IF,
                    a.as_ptr().cast(),
                    4,
                )
            };
            s.send_to(
                format!("{step} from {src}").as_bytes(),
                SocketAddrV4::new(GROUP, PORT),
            )
            .unwrap();
        }
    });
}

/// The sequence: each entry is an errno result or the datagrams of a
/// round.
fn sequence(s: &dyn Member, gen: &str) -> Vec<String> {
    let mut v = Vec::new();
    let mut step = 0;
    let mut round = |v: &mut Vec<String>, s: &dyn Member| {
        step += 1;
        send_round(gen, step);
        std::thread::sleep(Duration::from_millis(150));
        v.push(format!("{:?}", s.drain()));
    };
    let r = |x: Result<(), i32>| format!("{x:?}");
    v.push(r(s.op(libc::IP_ADD_MEMBERSHIP, &mreq(GROUP))));
    round(&mut v, s);
    v.push(r(s.op(libc::IP_ADD_MEMBERSHIP, &mreq(GROUP))));
    v.push(r(s.op(libc::IP_BLOCK_SOURCE, &mreq_source(SOURCES[1]))));
    round(&mut v, s);
    v.push(r(s.op(libc::IP_UNBLOCK_SOURCE, &mreq_source(SOURCES[1]))));
    v.push(r(s.op(libc::IP_UNBLOCK_SOURCE, &mreq_source(SOURCES[1]))));
    round(&mut v, s);
    v.push(r(s.op(libc::IP_DROP_MEMBERSHIP, &mreq(GROUP))));
    round(&mut v, s);
    v.push(r(s.op(libc::IP_DROP_MEMBERSHIP, &mreq(GROUP))));
    v.push(r(
        s.op(libc::IP_ADD_SOURCE_MEMBERSHIP, &mreq_source(SOURCES[0]))
    ));
    round(&mut v, s);
    v.push(r(
        s.op(libc::IP_ADD_SOURCE_MEMBERSHIP, &mreq_source(SOURCES[2]))
    ));
    round(&mut v, s);
    v.push(r(s.op(libc::IP_BLOCK_SOURCE, &mreq_source(SOURCES[1]))));
    v.push(r(s.filter(FilterMode::Exclude, &[SOURCES[2]])));
    round(&mut v, s);
    v.push(r(s.filter(FilterMode::Include, &[SOURCES[1]])));
    round(&mut v, s);
    v.push(r(
        s.op(libc::IP_DROP_SOURCE_MEMBERSHIP, &mreq_source(SOURCES[1]))
    ));
    round(&mut v, s);
    v.push(r(s.op(
        libc::IP_ADD_MEMBERSHIP,
        &mreq(Ipv4Addr::new(10, 1, 0, 5)),
    )));
    v
}

/// IGMPv3 report records (type, group, sources) in a captured frame, if
/// it is a valid IGMPv3 report (RFC 3376 4.2).
fn igmpv3_records(f: &[u8]) -> Option<Vec<(u8, Ipv4Addr, usize)>> {
    if f.len() < 14 + 20 || f[12..14] != [8, 0] || f[14 + 9] != 2 {
        return None;
    }
    let ihl = (f[14] & 15) as usize * 4;
    let total = u16::from_be_bytes([f[16], f[17]]) as usize;
    let m = &f[14 + ihl..14 + total];
    if m.len() < 8 || m[0] != 0x22 || testbed::frame::checksum(m) != 0 {
        return None;
    }
    let n = u16::from_be_bytes([m[6], m[7]]) as usize;
    let mut recs = Vec::new();
    let mut at = 8;
    for _ in 0..n {
        let (t, aux, ns) = (
            m[at],
            m[at + 1] as usize,
            u16::from_be_bytes([m[at + 2], m[at + 3]]) as usize,
        );
        let g = Ipv4Addr::new(m[at + 4], m[at + 5], m[at + 6], m[at + 7]);
        recs.push((t, g, ns));
        at += 8 + 4 * ns + 4 * aux;
    }
    Some(recs)
}

#[test]
fn memberships_and_filters_deliver_what_kernel_sockets_do() {
    require_root();
    let t = Topology::gen_dut_sink(1).expect("topology");
    assert!(t.warm_up());
    for s in SOURCES {
        t.gen
            .ip(&["addr", "add", &format!("{s}/24"), "dev", "eth0"])
            .unwrap();
    }
    let gen = t.gen.name().to_string();
    let dut = t.dut.name().to_string();

    let kernel = in_ns(&dut, || {
        let s = StdUdp::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, PORT)).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        sequence(&s, &gen)
    });

    let igmp = PacketSocket::open(&t.gen, "eth0").unwrap();
    let (engine, mib) = in_ns(&dut, || {
        let e = xdpip::Engine::builder()
            .interface("eth0")
            .interface("eth1")
            .start()
            .expect("engine");
        let s = e.udp_socket().unwrap();
        s.bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, PORT))
            .unwrap();
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let r = sequence(&s, &gen);
        drop(s);
        (r, e.stop().mib)
    });
    for (i, (k, e)) in kernel.iter().zip(&engine).enumerate() {
        println!("{i:2} kernel {k}\n   engine {e}");
    }
    assert_eq!(kernel, engine);
    // The sequence did deliver (equal but empty would prove nothing).
    assert!(kernel[1].contains("from 10.1.0.12"), "{}", kernel[1]);
    assert!(!kernel[4].contains("from 10.1.0.12"), "{}", kernel[4]);
    assert!(mib["UdpInDatagrams"] >= 10, "{mib:?}");

    // IGMPv3 reports for the engine's joins, byte-valid, with the record
    // types of RFC 3376 for the transitions of the sequence.
    let frames = igmp
        .collect(1000, Duration::from_millis(500), |f| {
            igmpv3_records(f).is_some()
        })
        .unwrap();
    let records: Vec<(u8, Ipv4Addr, usize)> = frames
        .iter()
        .filter_map(|f| igmpv3_records(f))
        .flatten()
        .filter(|r| r.1 == GROUP)
        .collect();
    println!("IGMPv3 records for {GROUP}: {records:?}");
    for want in [4u8, 6, 5, 3] {
        // CHANGE_TO_EXCLUDE (join), BLOCK_OLD, ALLOW_NEW, CHANGE_TO_INCLUDE.
        assert!(
            records.iter().any(|r| r.0 == want),
            "no record of type {want}: {records:?}"
        );
    }
}

#[test]
fn sending_to_a_group_uses_the_group_mac_ttl_interface_and_loop() {
    require_root();
    let t = Topology::gen_dut_sink(1).expect("topology");
    assert!(t.warm_up());
    let dut = t.dut.name().to_string();
    let cap = PacketSocket::open(&t.gen, "eth0").unwrap();
    let looped = in_ns(&dut, || {
        let e = xdpip::Engine::builder()
            .interface("eth0")
            .interface("eth1")
            .start()
            .expect("engine");
        // A receiver in the engine, joined on eth0.
        let rx = e.udp_socket().unwrap();
        rx.bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, PORT))
            .unwrap();
        rx.join_multicast_v4(&GROUP, &IFADDR).unwrap();
        rx.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let tx = e.udp_socket().unwrap();
        assert_eq!(tx.multicast_ttl_v4().unwrap(), 1);
        assert!(tx.multicast_loop_v4().unwrap());
        tx.set_multicast_if_v4(IFADDR).unwrap();
        tx.send_to(b"ttl 1", SocketAddrV4::new(GROUP, PORT))
            .unwrap();
        tx.set_multicast_ttl_v4(5).unwrap();
        tx.send_to(b"ttl 5", SocketAddrV4::new(GROUP, PORT))
            .unwrap();
        tx.set_multicast_loop_v4(false).unwrap();
        tx.send_to(b"no loop", SocketAddrV4::new(GROUP, PORT))
            .unwrap();
        let mut got = Vec::new();
        let mut b = [0u8; 64];
        while let Ok(n) = rx.recv(&mut b) {
            got.push(String::from_utf8_lossy(&b[..n]).into_owned());
        }
        got
    });
    assert_eq!(looped, ["ttl 1", "ttl 5"], "IP_MULTICAST_LOOP copies");
    let frames = cap
        .collect(3, Duration::from_secs(2), |f| {
            f.len() > 42 && f[12..14] == [8, 0] && f[23] == 17 && f[30..34] == GROUP.octets()
        })
        .unwrap();
    assert_eq!(frames.len(), 3, "datagrams on the wire");
    for (f, ttl) in frames.iter().zip([1u8, 5, 5]) {
        assert_eq!(&f[..6], &[0x01, 0x00, 0x5e, 0x01, 0x02, 0x03], "group MAC");
        assert_eq!(f[22], ttl, "TTL");
        assert_eq!(&f[26..30], &IFADDR.octets(), "source of IP_MULTICAST_IF");
    }
}

/// An IGMPv3 general query from gen (RFC 3376 4.1): to 224.0.0.1, TTL 1,
/// Router Alert, Max Resp Code 10 (1 s).
fn general_query(src_mac: [u8; 6]) -> Vec<u8> {
    let mut q = vec![0x11, 10, 0, 0, 0, 0, 0, 0, 0x02, 125, 0, 0];
    let c = testbed::frame::checksum(&q);
    q[2..4].copy_from_slice(&c.to_be_bytes());
    let mut ip = vec![
        0x46, 0xc0, 0, 0, 0, 0, 0, 0, 1, 2, 0, 0, 10, 1, 0, 1, 224, 0, 0, 1,
    ];
    ip.extend_from_slice(&[0x94, 0x04, 0, 0]); // Router Alert
    let total = (ip.len() + q.len()) as u16;
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    let c = testbed::frame::checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let mut f = vec![0x01, 0x00, 0x5e, 0x00, 0x00, 0x01];
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(&ip);
    f.extend_from_slice(&q);
    f
}

#[test]
fn igmp_reports_and_query_answers_keep_rfc_3376_timing() {
    require_root();
    let t = Topology::gen_dut_sink(1).expect("topology");
    assert!(t.warm_up());
    let dut = t.dut.name().to_string();
    let cap = PacketSocket::open(&t.gen, "eth0").unwrap();
    let gen_mac = testbed::mac_of(&t.gen, "eth0").unwrap();
    // (milliseconds after the join, record type) of each report for GROUP.
    let seen = in_ns(&dut, || {
        let e = xdpip::Engine::builder()
            .interface("eth0")
            .interface("eth1")
            .start()
            .expect("engine");
        let s = e.udp_socket().unwrap();
        s.bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, PORT))
            .unwrap();
        let t0 = std::time::Instant::now();
        s.join_multicast_v4(&GROUP, &IFADDR).unwrap();
        let mut seen = Vec::new();
        let record = |until: Duration, seen: &mut Vec<(u128, u8)>| {
            while t0.elapsed() < until {
                if let Ok(Some(f)) = cap.recv(Duration::from_millis(50)) {
                    if let Some(recs) = igmpv3_records(&f) {
                        for r in recs.iter().filter(|r| r.1 == GROUP) {
                            seen.push((t0.elapsed().as_millis(), r.0));
                        }
                    }
                }
            }
        };
        // Unsolicited reports: now, and once more within the Unsolicited
        // Report Interval (1 s), robustness 2.
        record(Duration::from_millis(2500), &mut seen);
        // A general query: a current-state record within Max Resp Time.
        cap.send(&general_query(gen_mac)).unwrap();
        let asked = t0.elapsed().as_millis();
        record(Duration::from_millis(4000), &mut seen);
        drop(s);
        e.stop();
        (seen, asked)
    });
    let (seen, asked) = seen;
    println!("reports for {GROUP} (ms after join, record type): {seen:?}; query at {asked} ms");
    let joins: Vec<u128> = seen.iter().filter(|r| r.1 == 4).map(|r| r.0).collect();
    assert_eq!(
        joins.len(),
        2,
        "CHANGE_TO_EXCLUDE sent twice (robustness 2): {seen:?}"
    );
    assert!(joins[0] <= 200, "first report at once: {seen:?}");
    assert!(
        joins[1] - joins[0] <= 1100,
        "second within the 1 s interval: {seen:?}"
    );
    let answer = seen.iter().find(|r| r.1 == 2 && r.0 >= asked);
    let answer =
        answer.unwrap_or_else(|| panic!("no MODE_IS_EXCLUDE answer to the query: {seen:?}"));
    assert!(
        answer.0 - asked <= 1200,
        "answer within Max Resp Time (1 s): {seen:?}"
    );
}
