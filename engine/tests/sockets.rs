//! The engine's sockets against the kernel's, on the real datapath: the
//! same socket calls on a kernel socket and an engine socket in the same
//! namespace give the same results and errnos; datagrams from another
//! namespace reach engine sockets and come back; bad datagrams are counted;
//! the kernel keeps the ports the engine does not hold.
//!
//! Needs root: `cargo xtask test`.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream, UdpSocket as StdUdp};
use std::os::fd::AsRawFd;
use std::time::Duration;
use testbed::frame::UdpFrame;
use testbed::{addr, in_ns, mac_of, require_root, Child, PacketSocket, Topology};
use xdpip::socket::{Ancillary, PktInfo, PmtuDisc, UdpSocket};
use xdpip::Engine;

fn topology() -> Topology {
    require_root();
    let t = Topology::gen_dut_sink(1).expect("topology");
    assert!(t.warm_up(), "the kernel router itself does not forward");
    t
}

/// Starts an engine on dut's two interfaces (in dut) and runs `f` with it.
fn with_engine<T: Send>(t: &Topology, f: impl FnOnce(&Engine) -> T + Send) -> T {
    in_ns(t.dut.name(), || {
        let e = Engine::builder()
            .interface("eth0")
            .interface("eth1")
            .start()
            .expect("engine start");
        let r = f(&e);
        e.stop();
        r
    })
}

fn sa(ip: Ipv4Addr, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(ip, port)
}

/// The socket calls a conformance case makes, on either kind of socket.
/// Each returns a value or the errno.
trait Sock {
    fn bind(&self, a: SocketAddrV4) -> Result<i64, i32>;
    fn connect(&self, a: SocketAddrV4) -> Result<i64, i32>;
    fn send_to(&self, len: usize, a: SocketAddrV4) -> Result<i64, i32>;
    fn send(&self, len: usize) -> Result<i64, i32>;
    fn set(&self, level: i32, name: i32, v: i32) -> Result<i64, i32>;
    fn get(&self, level: i32, name: i32) -> Result<i64, i32>;
}

fn code(e: io::Error) -> i32 {
    e.raw_os_error().unwrap_or(-1)
}

impl Sock for UdpSocket {
    fn bind(&self, a: SocketAddrV4) -> Result<i64, i32> {
        UdpSocket::bind(self, a).map(|_| 0).map_err(code)
    }
    fn connect(&self, a: SocketAddrV4) -> Result<i64, i32> {
        UdpSocket::connect(self, a).map(|_| 0).map_err(code)
    }
    fn send_to(&self, len: usize, a: SocketAddrV4) -> Result<i64, i32> {
        UdpSocket::send_to(self, &vec![7u8; len], a)
            .map(|n| n as i64)
            .map_err(code)
    }
    fn send(&self, len: usize) -> Result<i64, i32> {
        UdpSocket::send(self, &vec![7u8; len])
            .map(|n| n as i64)
            .map_err(code)
    }
    fn set(&self, level: i32, name: i32, v: i32) -> Result<i64, i32> {
        self.set_option(level, name, v).map(|_| 0).map_err(code)
    }
    fn get(&self, level: i32, name: i32) -> Result<i64, i32> {
        self.option(level, name).map(|v| v as i64).map_err(code)
    }
}

/// A kernel UDP socket through libc, so that every errno shows.
struct Kernel(i32);

impl Kernel {
    fn new() -> Kernel {
        // SAFETY: plain socket(2).
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
        assert!(fd >= 0);
        Kernel(fd)
    }
}

impl Drop for Kernel {
    fn drop(&mut self) {
        // SAFETY: our descriptor.
        unsafe { libc::close(self.0) };
    }
}

fn sockaddr(a: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as u16,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*a.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

fn ret(r: isize) -> Result<i64, i32> {
    if r < 0 {
        Err(io::Error::last_os_error().raw_os_error().unwrap())
    } else {
        Ok(r as i64)
    }
}

const SALEN: u32 = std::mem::size_of::<libc::sockaddr_in>() as u32;

impl Sock for Kernel {
    fn bind(&self, a: SocketAddrV4) -> Result<i64, i32> {
        let s = sockaddr(a);
        // SAFETY: a valid sockaddr_in of the given length.
        ret(unsafe { libc::bind(self.0, (&s as *const libc::sockaddr_in).cast(), SALEN) } as isize)
    }
    fn connect(&self, a: SocketAddrV4) -> Result<i64, i32> {
        let s = sockaddr(a);
        // SAFETY: as above.
        ret(
            unsafe { libc::connect(self.0, (&s as *const libc::sockaddr_in).cast(), SALEN) }
                as isize,
        )
    }
    fn send_to(&self, len: usize, a: SocketAddrV4) -> Result<i64, i32> {
        let s = sockaddr(a);
        let b = vec![7u8; len];
        // SAFETY: valid buffer and address.
        ret(unsafe {
            libc::sendto(
                self.0,
                b.as_ptr().cast(),
                len,
                0,
                (&s as *const libc::sockaddr_in).cast(),
                SALEN,
            )
        })
    }
    fn send(&self, len: usize) -> Result<i64, i32> {
        let b = vec![7u8; len];
        // SAFETY: valid buffer.
        ret(unsafe { libc::send(self.0, b.as_ptr().cast(), len, 0) })
    }
    fn set(&self, level: i32, name: i32, v: i32) -> Result<i64, i32> {
        // SAFETY: an int option value.
        ret(unsafe { libc::setsockopt(self.0, level, name, (&v as *const i32).cast(), 4) } as isize)
    }
    fn get(&self, level: i32, name: i32) -> Result<i64, i32> {
        let mut v: i32 = 0;
        let mut l: u32 = 4;
        // SAFETY: an int-sized result buffer.
        let r =
            unsafe { libc::getsockopt(self.0, level, name, (&mut v as *mut i32).cast(), &mut l) };
        ret(r as isize).map(|_| v as i64)
    }
}

/// One conformance case: a name and the calls, given two fresh sockets of
/// one kind and a port base private to that kind.
type Case = (
    &'static str,
    fn(&dyn Sock, &dyn Sock, u16) -> Vec<Result<i64, i32>>,
);

fn cases() -> Vec<Case> {
    use libc::{IPPROTO_IP, SOL_SOCKET};
    vec![
        ("double bind", |a, b, p| {
            vec![
                a.bind(sa(addr::DUT0, p)),
                b.bind(sa(addr::DUT0, p)),
                b.bind(sa(Ipv4Addr::UNSPECIFIED, p)),
                a.bind(sa(addr::DUT0, p + 1)),
            ]
        }),
        ("SO_REUSEADDR on both", |a, b, p| {
            vec![
                a.set(SOL_SOCKET, libc::SO_REUSEADDR, 1),
                b.set(SOL_SOCKET, libc::SO_REUSEADDR, 1),
                a.bind(sa(addr::DUT0, p)),
                b.bind(sa(addr::DUT0, p)),
            ]
        }),
        ("SO_REUSEPORT on one only", |a, b, p| {
            vec![
                a.set(SOL_SOCKET, libc::SO_REUSEPORT, 1),
                a.bind(sa(Ipv4Addr::UNSPECIFIED, p)),
                b.bind(sa(addr::DUT1, p)),
            ]
        }),
        (
            "bind to a foreign address, then with IP_FREEBIND",
            |a, b, p| {
                vec![
                    a.bind(sa(Ipv4Addr::new(10, 77, 0, 1), p)),
                    b.set(IPPROTO_IP, libc::IP_FREEBIND, 1),
                    b.bind(sa(Ipv4Addr::new(10, 77, 0, 1), p)),
                ]
            },
        ),
        ("connect, then send to another address", |a, _, p| {
            vec![
                a.bind(sa(Ipv4Addr::UNSPECIFIED, p)),
                a.connect(sa(addr::SINK, 9)),
                a.send_to(10, sa(addr::GEN, 9)),
                a.get(IPPROTO_IP, libc::IP_MTU),
            ]
        }),
        ("port unreachable on a connected socket", |a, _, p| {
            let mut v = vec![
                a.bind(sa(Ipv4Addr::UNSPECIFIED, p)),
                a.connect(sa(addr::SINK, 9)),
                a.send(10),
            ];
            // sink answers port unreachable; give it time to come back.
            std::thread::sleep(Duration::from_millis(200));
            v.push(a.send_to(10, sa(addr::GEN, 9)));
            v.push(a.send(10));
            v
        }),
        ("send without a peer", |a, _, p| {
            vec![a.bind(sa(Ipv4Addr::UNSPECIFIED, p)), a.send(10)]
        }),
        ("broadcast without and with SO_BROADCAST", |a, _, p| {
            vec![
                a.bind(sa(Ipv4Addr::UNSPECIFIED, p)),
                a.send_to(10, sa(Ipv4Addr::new(10, 2, 0, 255), 9)),
                a.connect(sa(Ipv4Addr::new(10, 2, 0, 255), 9)),
                a.set(SOL_SOCKET, libc::SO_BROADCAST, 1),
                a.send_to(10, sa(Ipv4Addr::new(10, 2, 0, 255), 9)),
            ]
        }),
        ("oversize send in each IP_MTU_DISCOVER mode", |a, _, p| {
            let mut v = vec![a.bind(sa(Ipv4Addr::UNSPECIFIED, p))];
            for mode in [
                PmtuDisc::Dont,
                PmtuDisc::Want,
                PmtuDisc::Do,
                PmtuDisc::Probe,
            ] {
                v.push(a.set(IPPROTO_IP, libc::IP_MTU_DISCOVER, mode as i32));
                v.push(a.send_to(1472, sa(addr::SINK, 9)));
                v.push(a.send_to(1473, sa(addr::SINK, 9)));
                v.push(a.send_to(65507, sa(addr::SINK, 9)));
                v.push(a.send_to(65508, sa(addr::SINK, 9)));
            }
            v.push(a.set(IPPROTO_IP, libc::IP_MTU_DISCOVER, 7));
            v
        }),
        ("unknown options and IP_MTU unconnected", |a, _, _| {
            vec![
                a.set(IPPROTO_IP, 9999, 1),
                a.get(IPPROTO_IP, 9999),
                a.set(SOL_SOCKET, 9999, 1),
                a.get(IPPROTO_IP, libc::IP_MTU),
            ]
        }),
        ("IP_TTL and IP_TOS values", |a, _, _| {
            vec![
                a.get(IPPROTO_IP, libc::IP_TTL),
                a.set(IPPROTO_IP, libc::IP_TTL, 0),
                a.set(IPPROTO_IP, libc::IP_TTL, 256),
                a.set(IPPROTO_IP, libc::IP_TTL, 5),
                a.get(IPPROTO_IP, libc::IP_TTL),
                a.set(IPPROTO_IP, libc::IP_TTL, -1),
                a.get(IPPROTO_IP, libc::IP_TTL),
                a.set(IPPROTO_IP, libc::IP_TOS, 0x10),
                a.get(IPPROTO_IP, libc::IP_TOS),
                a.get(IPPROTO_IP, libc::IP_MTU_DISCOVER),
            ]
        }),
        ("destination port 0, no route, unspecified", |a, _, p| {
            vec![
                a.bind(sa(Ipv4Addr::UNSPECIFIED, p)),
                a.send_to(10, sa(addr::SINK, 0)),
                a.send_to(10, sa(Ipv4Addr::new(192, 0, 2, 1), 9)),
                a.connect(sa(Ipv4Addr::new(192, 0, 2, 1), 9)),
            ]
        }),
    ]
}

#[test]
fn socket_calls_return_what_the_kernel_returns() {
    let t = topology();
    let report = with_engine(&t, |e| {
        let mut diffs = Vec::new();
        let mut table = Vec::new();
        for (i, (name, f)) in cases().into_iter().enumerate() {
            let base = 21000 + 10 * i as u16;
            let kernel = f(&Kernel::new(), &Kernel::new(), base);
            let engine = f(
                &e.udp_socket().unwrap(),
                &e.udp_socket().unwrap(),
                base + 5000,
            );
            table.push(format!("{name}: {kernel:?}"));
            if kernel != engine {
                diffs.push(format!("{name}:\n  kernel {kernel:?}\n  engine {engine:?}"));
            }
        }
        (diffs, table)
    });
    println!("{}", report.1.join("\n"));
    assert!(report.0.is_empty(), "differences:\n{}", report.0.join("\n"));
}

/// recvmsg(2) on a kernel socket: the datagram and its control messages.
fn kernel_recvmsg(fd: i32) -> (Vec<u8>, Ancillary) {
    let mut buf = [0u8; 2048];
    let mut cbuf = [0u64; 64];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut from: libc::sockaddr_in = sockaddr(sa(Ipv4Addr::UNSPECIFIED, 0));
    // SAFETY: zeroed msghdr filled with valid pointers below.
    let mut m: libc::msghdr = unsafe { std::mem::zeroed() };
    m.msg_name = (&mut from as *mut libc::sockaddr_in).cast();
    m.msg_namelen = SALEN;
    m.msg_iov = &mut iov;
    m.msg_iovlen = 1;
    m.msg_control = cbuf.as_mut_ptr().cast();
    m.msg_controllen = std::mem::size_of_val(&cbuf);
    // SAFETY: m points at live buffers.
    let n = unsafe { libc::recvmsg(fd, &mut m, 0) };
    assert!(n >= 0, "recvmsg: {}", io::Error::last_os_error());
    let mut a = Ancillary::default();
    // SAFETY: walking the control buffer the kernel filled, with its macros.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&m);
        while !c.is_null() {
            let d = libc::CMSG_DATA(c);
            match ((*c).cmsg_level, (*c).cmsg_type) {
                (libc::IPPROTO_IP, libc::IP_PKTINFO) => {
                    let p = std::ptr::read_unaligned(d as *const libc::in_pktinfo);
                    a.pktinfo = Some(PktInfo {
                        ifindex: p.ipi_ifindex as u32,
                        spec_dst: Ipv4Addr::from(u32::from_be(p.ipi_spec_dst.s_addr)),
                        addr: Ipv4Addr::from(u32::from_be(p.ipi_addr.s_addr)),
                    });
                }
                (libc::IPPROTO_IP, libc::IP_TTL) => {
                    a.ttl = Some(std::ptr::read_unaligned(d as *const i32) as u8)
                }
                (libc::IPPROTO_IP, libc::IP_TOS) => a.tos = Some(*d),
                (libc::IPPROTO_IP, libc::IP_ORIGDSTADDR) => {
                    let s = std::ptr::read_unaligned(d as *const libc::sockaddr_in);
                    a.orig_dst = Some(sa(
                        Ipv4Addr::from(u32::from_be(s.sin_addr.s_addr)),
                        u16::from_be(s.sin_port),
                    ));
                }
                _ => {}
            }
            c = libc::CMSG_NXTHDR(&m, c);
        }
    }
    (buf[..n as usize].to_vec(), a)
}

#[test]
fn ancillary_data_matches_the_kernel() {
    let t = topology();
    let gen = t.gen.name().to_string();
    let (k, e) = with_engine(&t, |engine| {
        let kernel = Kernel::new();
        let es = engine.udp_socket().unwrap();
        for (level, name) in [
            (libc::IPPROTO_IP, libc::IP_PKTINFO),
            (libc::IPPROTO_IP, libc::IP_RECVTTL),
            (libc::IPPROTO_IP, libc::IP_RECVTOS),
            (libc::IPPROTO_IP, libc::IP_RECVORIGDSTADDR),
        ] {
            kernel.set(level, name, 1).unwrap();
            Sock::set(&es, level, name, 1).unwrap();
        }
        Sock::bind(&kernel, sa(Ipv4Addr::UNSPECIFIED, 4100)).unwrap();
        es.bind(sa(Ipv4Addr::UNSPECIFIED, 4200)).unwrap();
        es.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        in_ns(&gen, || {
            let s = StdUdp::bind("10.1.0.1:0").unwrap();
            s.set_ttl(33).unwrap();
            // SAFETY: an int option on our socket.
            let tos: i32 = 0x28;
            unsafe {
                libc::setsockopt(
                    s.as_raw_fd(),
                    libc::IPPROTO_IP,
                    libc::IP_TOS,
                    (&tos as *const i32).cast(),
                    4,
                )
            };
            s.send_to(b"to kernel", "10.1.0.2:4100").unwrap();
            s.send_to(b"to engine", "10.1.0.2:4200").unwrap();
        });
        let mut buf = [0u8; 100];
        let m = es.recv_msg(&mut buf).expect("engine socket receives");
        assert_eq!(&buf[..m.len], b"to engine");
        let k = kernel_recvmsg(kernel.0);
        assert_eq!(k.0, b"to kernel");
        (k.1, m.ancillary)
    });
    // The ports differ by construction; everything else must not.
    let mut e = e;
    e.orig_dst = e.orig_dst.map(|a| sa(*a.ip(), 4100));
    assert_eq!(k, e, "kernel vs engine ancillary data");
    assert_eq!(k.ttl, Some(33));
    assert_eq!(k.tos, Some(0x28));
}

#[test]
fn echo_example_serves_clients_and_the_kernel_keeps_other_ports() {
    let t = topology();
    let exe = std::env::current_exe().unwrap();
    let example = exe
        .parent()
        .and_then(|d| d.parent())
        .map(|d| d.join("examples/udp_echo"))
        .unwrap();
    assert!(
        example.exists(),
        "{} missing: build with `cargo test --examples` or `cargo xtask test`",
        example.display()
    );
    // The kernel's own UDP socket on P+1 and TCP listener on P, in dut.
    let (tx, rx) = std::sync::mpsc::channel();
    let dut = t.dut.name().to_string();
    let kernel_side = std::thread::spawn(move || {
        in_ns(&dut, || {
            let u = StdUdp::bind("10.1.0.2:7778").unwrap();
            let l = TcpListener::bind("10.1.0.2:7777").unwrap();
            tx.send(()).unwrap();
            u.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut b = [0u8; 64];
            let (n, from) = u.recv_from(&mut b).expect("kernel UDP socket receives");
            u.send_to(&b[..n], from).unwrap();
            let (mut c, _) = l.accept().expect("kernel TCP accepts");
            use std::io::{Read, Write};
            let mut line = [0u8; 5];
            c.read_exact(&mut line).unwrap();
            c.write_all(&line).unwrap();
        })
    });
    rx.recv().unwrap();
    let mut cmd = t.dut.command(example.to_str().unwrap());
    cmd.args(["-i", "eth0", "-i", "eth1", "--bind", "0.0.0.0:7777"]);
    let mut child = Child::spawn(cmd).unwrap();
    child
        .wait_for_line(Duration::from_secs(30), |l| l.contains("serving"))
        .expect("udp_echo start");

    let gen = t.gen.name().to_string();
    in_ns(&gen, || {
        // A std client: every datagram comes back, byte for byte.
        let s = StdUdp::bind("10.1.0.1:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        for i in 0..100u32 {
            let msg: Vec<u8> = (0..(i * 14 % 1400)).map(|b| (b ^ i) as u8).collect();
            s.send_to(&msg, "10.1.0.2:7777").unwrap();
            let mut b = [0u8; 2000];
            let (n, from) = s.recv_from(&mut b).expect("echo");
            assert_eq!(&b[..n], &msg[..], "echo {i}");
            assert_eq!(from, "10.1.0.2:7777".parse().unwrap());
        }
        // The kernel's UDP on another port and TCP on the same port.
        s.send_to(b"kernel", "10.1.0.2:7778").unwrap();
        let mut b = [0u8; 64];
        let (n, _) = s.recv_from(&mut b).expect("kernel UDP echo");
        assert_eq!(&b[..n], b"kernel");
        use std::io::{Read, Write};
        let mut c =
            TcpStream::connect_timeout(&"10.1.0.2:7777".parse().unwrap(), Duration::from_secs(5))
                .expect("TCP to the kernel on the engine's UDP port");
        c.write_all(b"hello").unwrap();
        let mut r = [0u8; 5];
        c.read_exact(&mut r).unwrap();
        assert_eq!(&r, b"hello");
    });
    kernel_side.join().unwrap();
    // socat, as an operator would try it.
    let out = t
        .gen
        .exec(&[
            "sh",
            "-c",
            "echo socat-line | socat -t 2 - UDP4:10.1.0.2:7777",
        ])
        .expect("socat");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "socat-line");

    child.signal(libc::SIGINT);
    let st = child.wait(Duration::from_secs(20)).unwrap();
    assert!(st.success(), "{}", child.stderr().join("\n"));
    let last = child.stdout().join("\n");
    assert!(last.contains("echoed 101"), "{last}");
}

#[test]
fn bad_datagrams_are_counted_and_a_full_socket_drops() {
    let t = topology();
    let gen = t.gen.name().to_string();
    let gen_mac = mac_of(&t.gen, "eth0").unwrap();
    let dut_mac = mac_of(&t.dut, "eth0").unwrap();
    let tx = PacketSocket::open(&t.gen, "eth0").unwrap();
    let frame = |payload: &[u8]| {
        UdpFrame {
            dst_mac: dut_mac,
            src_mac: gen_mac,
            src: addr::GEN,
            dst: addr::DUT0,
            sport: 5555,
            dport: 4300,
            ttl: 64,
            ident: 1,
            tos: 0,
            df: false,
            payload: payload.to_vec(),
        }
        .build()
    };
    let (mib, got, full_mib) = with_engine(&t, |e| {
        let s = e.udp_socket().unwrap();
        s.bind(sa(Ipv4Addr::UNSPECIFIED, 4300)).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let good = frame(b"good");
        let mut bad_sum = frame(b"bad checksum");
        bad_sum[45] ^= 0x55;
        let mut zero = frame(b"no checksum");
        zero[40..42].copy_from_slice(&[0, 0]);
        let mut long = frame(b"length beyond");
        long[38..40].copy_from_slice(&200u16.to_be_bytes());
        for f in [&good, &bad_sum, &zero, &long] {
            tx.send(f).unwrap();
        }
        let mut got = Vec::new();
        let mut b = [0u8; 100];
        while let Ok(n) = s.recv(&mut b) {
            got.push(b[..n].to_vec());
        }
        let mib = e.report().mib;
        // A socket nobody reads: 1500 datagrams into a 1024-deep queue.
        let idle = e.udp_socket().unwrap();
        idle.bind(sa(Ipv4Addr::UNSPECIFIED, 4301)).unwrap();
        in_ns(&gen, || {
            let c = StdUdp::bind("10.1.0.1:0").unwrap();
            for i in 0..1500u32 {
                c.send_to(&i.to_be_bytes(), "10.1.0.2:4301").unwrap();
                if i % 64 == 0 {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        });
        std::thread::sleep(Duration::from_millis(500));
        // The worker did not stall: another socket still gets its datagram.
        tx.send(&good).unwrap();
        let after = s.recv(&mut b).map(|n| b[..n].to_vec());
        assert_eq!(after.as_deref().ok(), Some(&b"good"[..]), "worker stalled");
        assert_eq!(idle.queued(), xdpip::socket::RECV_QUEUE);
        (mib, got, e.report().mib)
    });
    assert_eq!(
        got,
        vec![b"good".to_vec(), b"no checksum".to_vec()],
        "{mib:?}"
    );
    assert_eq!(mib["UdpInCsumErrors"], 1, "{mib:?}");
    assert_eq!(mib["UdpInErrors"], 2, "{mib:?}");
    assert_eq!(mib["UdpInDatagrams"], 2, "{mib:?}");
    let dropped = full_mib["UdpRcvbufErrors"];
    assert_eq!(
        dropped,
        1500 - xdpip::socket::RECV_QUEUE as u64,
        "{full_mib:?}"
    );
}

#[test]
fn ping_is_answered_by_the_engine() {
    let t = topology();
    let before = t.dut.snmp().unwrap();
    let mib = with_engine(&t, |e| {
        let out = in_ns(t.gen.name(), || {
            std::process::Command::new("ping")
                .args(["-c", "5", "-i", "0.2", "-W", "2", "-s", "1000", "10.1.0.2"])
                .output()
                .unwrap()
        });
        assert!(
            out.status.success(),
            "ping: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        e.report().mib
    });
    let after = t.dut.snmp().unwrap();
    assert_eq!(mib["IcmpInEchos"], 5, "{mib:?}");
    assert_eq!(mib["IcmpOutEchoReps"], 5, "{mib:?}");
    assert_eq!(
        after["IcmpInEchos"], before["IcmpInEchos"],
        "the kernel answered instead"
    );
}

/// recvmsg(MSG_ERRQUEUE) on a kernel socket, in the engine's terms.
fn kernel_recv_error(fd: i32) -> Result<(usize, xdpip::socket::ExtendedErr), i32> {
    use xdpip::socket::{ErrOrigin, ExtendedErr};
    let mut buf = [0u8; 2048];
    let mut cbuf = [0u64; 64];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut name: libc::sockaddr_in = sockaddr(sa(Ipv4Addr::UNSPECIFIED, 0));
    // SAFETY: zeroed msghdr filled with valid pointers below.
    let mut m: libc::msghdr = unsafe { std::mem::zeroed() };
    m.msg_name = (&mut name as *mut libc::sockaddr_in).cast();
    m.msg_namelen = SALEN;
    m.msg_iov = &mut iov;
    m.msg_iovlen = 1;
    m.msg_control = cbuf.as_mut_ptr().cast();
    m.msg_controllen = std::mem::size_of_val(&cbuf);
    // SAFETY: m points at live buffers.
    let n = unsafe { libc::recvmsg(fd, &mut m, libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error().raw_os_error().unwrap());
    }
    let mut rec = None;
    // SAFETY: walking the control buffer the kernel filled.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&m);
        while !c.is_null() {
            if ((*c).cmsg_level, (*c).cmsg_type) == (libc::IPPROTO_IP, libc::IP_RECVERR) {
                let d = libc::CMSG_DATA(c);
                let e = std::ptr::read_unaligned(d as *const libc::sock_extended_err);
                let off =
                    std::ptr::read_unaligned(d.add(std::mem::size_of::<libc::sock_extended_err>())
                        as *const libc::sockaddr_in);
                rec = Some(ExtendedErr {
                    errno: e.ee_errno as i32,
                    origin: if e.ee_origin == 2 {
                        ErrOrigin::Icmp
                    } else {
                        ErrOrigin::Local
                    },
                    icmp_type: e.ee_type,
                    icmp_code: e.ee_code,
                    info: e.ee_info,
                    offender: (off.sin_family == libc::AF_INET as u16)
                        .then(|| Ipv4Addr::from(u32::from_be(off.sin_addr.s_addr))),
                    dst: sa(
                        Ipv4Addr::from(u32::from_be(name.sin_addr.s_addr)),
                        u16::from_be(name.sin_port),
                    ),
                });
            }
            c = libc::CMSG_NXTHDR(&m, c);
        }
    }
    Ok((n as usize, rec.expect("IP_RECVERR control message")))
}

#[test]
fn path_mtu_and_error_queue_match_the_kernel() {
    let t = topology();
    // Behind sink, a 1200-byte link: sink answers fragmentation needed.
    for args in [
        &["link", "add", "d0", "type", "veth", "peer", "name", "d1"][..],
        &["link", "set", "d1", "up"],
        &["link", "set", "d0", "mtu", "1200", "up"],
        &["addr", "add", "10.3.0.1/24", "dev", "d0"],
    ] {
        t.sink.ip(args).unwrap();
    }
    t.sink.sysctl("net.ipv4.ip_forward", "1").unwrap();
    t.sink.sysctl("net.ipv4.icmp_ratelimit", "0").unwrap();
    t.dut
        .ip(&["route", "add", "10.3.0.0/24", "via", "10.2.0.2"])
        .unwrap();
    let far = sa(Ipv4Addr::new(10, 3, 0, 9), 9);

    let (kernel, engine) = with_engine(&t, |e| {
        let run = |s: &dyn Sock,
                   recv_err: &dyn Fn() -> Result<(usize, xdpip::socket::ExtendedErr), i32>,
                   port| {
            use libc::IPPROTO_IP;
            let mut v: Vec<String> = Vec::new();
            v.push(format!("{:?}", s.set(IPPROTO_IP, libc::IP_RECVERR, 1)));
            v.push(format!(
                "{:?}",
                s.set(IPPROTO_IP, libc::IP_MTU_DISCOVER, PmtuDisc::Do as i32)
            ));
            v.push(format!("{:?}", s.bind(sa(Ipv4Addr::UNSPECIFIED, port))));
            v.push(format!("{:?}", s.connect(far)));
            v.push(format!("mtu {:?}", s.get(IPPROTO_IP, libc::IP_MTU)));
            v.push(format!("{:?}", s.send(1400)));
            std::thread::sleep(Duration::from_millis(300));
            v.push(format!("mtu {:?}", s.get(IPPROTO_IP, libc::IP_MTU)));
            v.push(format!("{:?}", s.send(1400)));
            for _ in 0..3 {
                v.push(format!("{:?}", recv_err()));
            }
            v.push(format!("{:?}", s.send(1100)));
            v
        };
        let k = Kernel::new();
        let kernel = run(&k, &|| kernel_recv_error(k.0), 4500);
        let es = e.udp_socket().unwrap();
        let engine = run(
            &es,
            &|| {
                let mut b = [0u8; 2048];
                es.recv_error(&mut b).map_err(code)
            },
            4600,
        );
        (kernel, engine)
    });
    println!("kernel: {kernel:#?}");
    assert_eq!(kernel, engine);
}

/// The calls a raw-socket conformance case makes.
trait RawOps {
    fn bind(&self, a: Ipv4Addr) -> Result<i64, i32>;
    fn send_to(&self, buf: &[u8], a: Ipv4Addr) -> Result<i64, i32>;
    fn send(&self, len: usize) -> Result<i64, i32>;
    fn set(&self, level: i32, name: i32, v: i32) -> Result<i64, i32>;
}

impl RawOps for xdpip::socket::RawSocket {
    fn bind(&self, a: Ipv4Addr) -> Result<i64, i32> {
        xdpip::socket::RawSocket::bind(self, a)
            .map(|_| 0)
            .map_err(code)
    }
    fn send_to(&self, buf: &[u8], a: Ipv4Addr) -> Result<i64, i32> {
        xdpip::socket::RawSocket::send_to(self, buf, a)
            .map(|n| n as i64)
            .map_err(code)
    }
    fn send(&self, len: usize) -> Result<i64, i32> {
        xdpip::socket::RawSocket::send(self, &vec![1u8; len])
            .map(|n| n as i64)
            .map_err(code)
    }
    fn set(&self, level: i32, name: i32, v: i32) -> Result<i64, i32> {
        self.set_option(level, name, v).map(|_| 0).map_err(code)
    }
}

/// A kernel raw socket.
struct KernelRaw(i32);

impl KernelRaw {
    fn new(proto: i32) -> Result<KernelRaw, i32> {
        // SAFETY: plain socket(2).
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, proto) };
        if fd < 0 {
            return Err(io::Error::last_os_error().raw_os_error().unwrap());
        }
        Ok(KernelRaw(fd))
    }
}

impl Drop for KernelRaw {
    fn drop(&mut self) {
        // SAFETY: our descriptor.
        unsafe { libc::close(self.0) };
    }
}

impl RawOps for KernelRaw {
    fn bind(&self, a: Ipv4Addr) -> Result<i64, i32> {
        Kernel(self.0).bind_keep(sa(a, 0))
    }
    fn send_to(&self, buf: &[u8], a: Ipv4Addr) -> Result<i64, i32> {
        let s = sockaddr(sa(a, 0));
        // SAFETY: valid buffer and address.
        ret(unsafe {
            libc::sendto(
                self.0,
                buf.as_ptr().cast(),
                buf.len(),
                0,
                (&s as *const libc::sockaddr_in).cast(),
                SALEN,
            )
        })
    }
    fn send(&self, len: usize) -> Result<i64, i32> {
        Kernel(self.0).send_keep(len)
    }
    fn set(&self, level: i32, name: i32, v: i32) -> Result<i64, i32> {
        Kernel(self.0).set_keep(level, name, v)
    }
}

impl Kernel {
    /// Calls on a borrowed descriptor, which must not be closed after.
    fn bind_keep(self, a: SocketAddrV4) -> Result<i64, i32> {
        let r = Sock::bind(&self, a);
        std::mem::forget(self);
        r
    }
    fn send_keep(self, len: usize) -> Result<i64, i32> {
        let r = Sock::send(&self, len);
        std::mem::forget(self);
        r
    }
    fn set_keep(self, level: i32, name: i32, v: i32) -> Result<i64, i32> {
        let r = Sock::set(&self, level, name, v);
        std::mem::forget(self);
        r
    }
}

/// An IPv4 header for IP_HDRINCL with ID, source, length and checksum left
/// zero for the stack to fill in.
fn hdrincl_datagram(proto: u8, dst: Ipv4Addr, payload: usize) -> Vec<u8> {
    let mut v = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 17, proto, 0, 0, 0, 0, 0, 0];
    v.extend_from_slice(&dst.octets());
    v.extend((0..payload).map(|i| i as u8));
    v
}

#[test]
fn raw_sockets_answer_and_carry_what_kernel_raw_sockets_do() {
    let t = topology();
    let (kernel, engine, created) = with_engine(&t, |e| {
        let cases = |s: &dyn RawOps, proto: u8| {
            use libc::IPPROTO_IP;
            vec![
                s.send(10),
                s.send_to(&[1; 10], Ipv4Addr::new(10, 2, 0, 255)),
                s.bind(Ipv4Addr::new(10, 77, 0, 1)),
                s.set(IPPROTO_IP, libc::IP_MTU_DISCOVER, PmtuDisc::Do as i32),
                s.send_to(&[1; 1480], addr::SINK),
                s.send_to(&[1; 1481], addr::SINK),
                s.set(IPPROTO_IP, libc::IP_MTU_DISCOVER, PmtuDisc::Want as i32),
                s.send_to(&[1; 1481], addr::SINK),
                s.send_to(&vec![1; 65516], addr::SINK),
                s.set(IPPROTO_IP, libc::IP_HDRINCL, 1),
                s.send_to(&[0x45; 19], addr::SINK),
                s.send_to(&hdrincl_datagram(proto, addr::SINK, 1480), addr::SINK),
                s.send_to(&hdrincl_datagram(proto, addr::SINK, 1481), addr::SINK),
                s.set(IPPROTO_IP, 9999, 1),
            ]
        };
        let k = KernelRaw::new(254).unwrap();
        let r = e.raw_socket(253).unwrap();
        let created = (
            KernelRaw::new(0).map(|_| ()),
            e.raw_socket(0).map(|_| ()).map_err(code),
        );
        (cases(&k, 254), cases(&r, 253), created)
    });
    println!("kernel raw: {kernel:?}");
    assert_eq!(kernel, engine);
    assert_eq!(created.0, created.1, "protocol 0");
}

#[test]
fn raw_socket_receives_with_the_header_and_hdrincl_is_filled_in() {
    let t = topology();
    let gen = t.gen.name().to_string();
    let sink_rx = PacketSocket::open(&t.sink, "eth0").unwrap();
    let (k, e) = with_engine(&t, |e| {
        let es = e.raw_socket(253).unwrap();
        es.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let ks = KernelRaw::new(254).unwrap();
        in_ns(&gen, || {
            for proto in [253, 254] {
                let g = KernelRaw::new(proto).unwrap();
                g.send_to(b"raw payload", addr::DUT0).unwrap();
            }
        });
        let mut b = [0u8; 2048];
        let (n, from) = es.recv_from(&mut b).unwrap_or_else(|err| {
            let r = e.report();
            panic!(
                "engine raw socket receives: {err}; xdp {:?} drops {:?} mib {:?}",
                r.xdp,
                r.drops.iter().filter(|(_, v)| **v > 0).collect::<Vec<_>>(),
                r.mib
            )
        });
        let engine = (b[..n].to_vec(), from);
        // SAFETY: a valid buffer on our descriptor.
        let kn = unsafe { libc::recv(ks.0, b.as_mut_ptr().cast(), b.len(), 0) };
        assert!(kn > 0);
        let kernel = (b[..kn as usize].to_vec(), addr::GEN);
        // IP_HDRINCL from the engine: length, checksum, ID, source filled.
        es.set_option(libc::IPPROTO_IP, libc::IP_HDRINCL, 1)
            .unwrap();
        es.send_to(&hdrincl_datagram(253, addr::SINK, 8), addr::SINK)
            .unwrap();
        (kernel, engine)
    });
    // Same header fields but the protocol, ID and checksum; same payload.
    let (kh, eh) = (&k.0, &e.0);
    assert_eq!(kh.len(), eh.len());
    assert_eq!(&kh[20..], b"raw payload");
    assert_eq!(&eh[20..], b"raw payload");
    assert_eq!(
        (kh[0], kh[2..4].to_vec(), &kh[12..20]),
        (eh[0], eh[2..4].to_vec(), &eh[12..20])
    );
    assert_eq!(k.1, e.1);
    let got = sink_rx
        .collect(1, Duration::from_secs(3), |f| f.len() > 34 && f[23] == 253)
        .unwrap();
    assert_eq!(got.len(), 1, "hdrincl datagram at sink");
    let ip = &got[0][14..];
    assert_eq!(u16::from_be_bytes([ip[2], ip[3]]), 28, "total length");
    assert_ne!(u16::from_be_bytes([ip[4], ip[5]]), 0, "ID filled in");
    assert_eq!(&ip[12..16], &addr::DUT1.octets(), "source filled in");
    assert_eq!(testbed::frame::checksum(&ip[..20]), 0, "checksum");
}

/// The stock iperf3 client in gen against `examples/iperf3_server` on
/// dut's port 5201: UDP to the engine, TCP control to the kernel. The
/// client's own JSON must show a test that ran and a receiver that got
/// what was sent; the server's counters must agree with the engine's.
#[test]
fn iperf3_udp_against_an_engine_port() {
    let t = topology();
    let example = std::env::current_exe()
        .unwrap()
        .parent()
        .and_then(|d| d.parent())
        .map(|d| d.join("examples/iperf3_server"))
        .unwrap();
    assert!(
        example.exists(),
        "{} missing: build with `cargo test --examples` or `cargo xtask test`",
        example.display()
    );
    assert!(
        std::process::Command::new("iperf3")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success()),
        "iperf3 missing: apt-get install iperf3, or `cargo xtask test`"
    );
    let mut cmd = t.dut.command(example.to_str().unwrap());
    cmd.args(["-i", "eth0", "-i", "eth1", "-p", "5201"]);
    let mut server = Child::spawn(cmd).unwrap();
    server
        .wait_for_line(Duration::from_secs(30), |l| l.contains("serving"))
        .expect("iperf3_server start");

    let client = |extra: &[&str]| {
        let mut c = t.gen.command("iperf3");
        c.args(["-c", "10.1.0.2", "-p", "5201", "--connect-timeout", "5000"]);
        c.args(extra);
        c.stdin(std::process::Stdio::null()).output().unwrap()
    };
    let udp_test = |extra: &[&str]| -> serde_json::Value {
        let mut args = vec!["-u", "-b", "50M", "-t", "3", "-l", "1200", "--json"];
        args.extend_from_slice(extra);
        let out = client(&args);
        let text = String::from_utf8_lossy(&out.stdout);
        let j: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("iperf3 {extra:?} JSON: {e}\n{text}"));
        assert!(
            out.status.success() && j.get("error").is_none(),
            "iperf3 {extra:?} failed: {}",
            j["error"]
        );
        j
    };
    let num = |v: &serde_json::Value| v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"));

    // Forward: gen sends, the engine socket receives.
    let j = udp_test(&[]);
    let (sent, recv) = (&j["end"]["sum_sent"], &j["end"]["sum_received"]);
    println!("forward: sent {sent}\nreceived {recv}");
    let sent_packets = num(&sent["packets"]) as u64;
    let (packets, lost) = (
        num(&recv["packets"]) as u64,
        num(&recv["lost_packets"]) as u64,
    );
    let got = packets - lost;
    assert!(
        sent_packets > 10_000,
        "50 Mbit/s for 3 s: {sent_packets} datagrams"
    );
    assert!(
        got > 0 && got * 10 >= sent_packets * 9,
        "{got} of {sent_packets}"
    );
    assert_eq!(num(&recv["bytes"]) as u64, got * 1200, "bytes vs datagrams");
    assert!(num(&recv["seconds"]) > 2.5, "{recv}");
    let jitter = num(&recv["jitter_ms"]);
    assert!((0.0..50.0).contains(&jitter), "jitter {jitter} ms");
    // The server's own line says the same.
    let line = server
        .wait_for_line(Duration::from_secs(5), |l| l.contains("test 1 done"))
        .unwrap();
    assert!(
        line.contains(&format!("datagrams={got} bytes={}", got * 1200)),
        "{line}"
    );

    // Reverse: the engine socket sends, gen's kernel socket receives.
    let before = t.gen.snmp().unwrap();
    let j = udp_test(&["-R"]);
    let after = t.gen.snmp().unwrap();
    let (sent, recv) = (&j["end"]["sum_sent"], &j["end"]["sum_received"]);
    println!("reverse: sent {sent}\nreceived {recv}");
    let rsent = num(&sent["packets"]) as u64;
    let rlost = num(&recv["lost_packets"]) as u64;
    let rgot = num(&recv["packets"]) as u64 - rlost;
    assert!(rsent > 10_000, "{rsent}");
    // On two shared cores the client falls behind now and then and its
    // kernel socket overflows: those losses are gen's, counted there, and
    // not the engine's.
    let overflow = after["UdpRcvbufErrors"] - before["UdpRcvbufErrors"];
    assert!(
        rlost <= overflow,
        "lost {rlost}, gen's socket overflowed {overflow}"
    );
    assert!(rgot > 0 && rgot * 10 >= rsent * 8, "{rgot} of {rsent}");
    assert_eq!(num(&recv["bytes"]) as u64, rgot * 1200);

    // Refusals the client prints instead of hanging.
    for (args, says) in [
        (&["-u", "-P", "2", "-t", "1"][..], "not implemented"),
        (&["-t", "1"][..], "Protocol not supported"),
    ] {
        let out = client(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(says),
            "{args:?}: {err}"
        );
    }

    server.signal(libc::SIGINT);
    let st = server.wait(Duration::from_secs(20)).unwrap();
    let stdout = server.stdout().join("\n");
    assert!(st.success(), "{stdout}\n{}", server.stderr().join("\n"));
    // Every datagram the engine delivered, the server took and counted.
    let last = server.stdout().pop().unwrap_or_default();
    let field = |name: &str| -> u64 {
        let rest =
            &last[last.find(name).unwrap_or_else(|| panic!("{name}: {last}")) + name.len()..];
        rest.split_whitespace().next().unwrap().parse().unwrap()
    };
    assert_eq!(field("datagrams "), field("UdpInDatagrams "), "{last}");
    assert_eq!(field("data "), got, "{last}");
    assert_eq!(field("connect "), 2, "{last}");
    assert!(field("UdpOutDatagrams ") >= rsent, "{last}");
    println!("{stdout}");
}

/// True when the UDP checksum of an IPv4 frame verifies.
fn udp_checksum_verifies(f: &[u8]) -> bool {
    let ihl = (f[14] & 0x0f) as usize * 4;
    let total = u16::from_be_bytes([f[16], f[17]]) as usize;
    let udp = &f[14 + ihl..14 + total];
    let mut sum = f[26..34].to_vec();
    sum.extend_from_slice(&[0, 17]);
    sum.extend_from_slice(&(udp.len() as u16).to_be_bytes());
    sum.extend_from_slice(udp);
    testbed::frame::checksum(&sum) == 0
}

#[test]
fn a_serving_socket_answers_in_the_worker() {
    use xdpip::socket::{Datagram, ServeStats};
    let t = topology();
    let gen = t.gen.name().to_string();
    let gen_mac = mac_of(&t.gen, "eth0").unwrap();
    let dut_mac = mac_of(&t.dut, "eth0").unwrap();
    let capture = PacketSocket::open(&t.gen, "eth0").unwrap();
    let replies_from_4500 = || {
        capture
            .collect(usize::MAX, Duration::from_millis(500), |f| {
                f.len() > 36
                    && f[12..14] == [8, 0]
                    && f[23] == 17
                    && f[34..36] == 4500u16.to_be_bytes()
            })
            .unwrap()
    };
    // Asks from gen's port `sport`; what came back, if anything.
    let ask = |sport: u16, q: &[u8]| -> Option<(Vec<u8>, SocketAddrV4)> {
        in_ns(&gen, || {
            let c = StdUdp::bind(("10.1.0.1", sport)).unwrap();
            c.set_read_timeout(Some(Duration::from_millis(700)))
                .unwrap();
            c.send_to(q, "10.1.0.2:4500").unwrap();
            let mut b = [0u8; 2048];
            c.recv_from(&mut b).ok().map(|(n, from)| {
                let std::net::SocketAddr::V4(from) = from else {
                    panic!("{from}")
                };
                (b[..n].to_vec(), from)
            })
        })
    };
    let (report, stats, frames, blocked, after) = with_engine(&t, |e| {
        let s = e.udp_socket().unwrap();
        s.bind(sa(Ipv4Addr::UNSPECIFIED, 4500)).unwrap();
        s.set_ttl(33).unwrap();
        s.set_option(libc::IPPROTO_IP, libc::IP_TOS, 0x28).unwrap();
        s.serve(|_worker| {
            |d: &Datagram<'_>, reply: &mut [u8]| {
                if d.payload == b"ignore" {
                    return None;
                }
                let text = format!(
                    "re:{} to {} room {}",
                    String::from_utf8_lossy(d.payload),
                    d.dst,
                    reply.len()
                );
                reply[..text.len()].copy_from_slice(text.as_bytes());
                Some(text.len())
            }
        })
        .unwrap();
        assert_eq!(
            s.serve(|_| |_: &Datagram<'_>, _: &mut [u8]| None)
                .map_err(code),
            Err(libc::EINVAL),
            "a socket serves once"
        );
        let hello = ask(5555, b"hello");
        assert_eq!(
            hello,
            Some((
                b"re:hello to 10.1.0.2:4500 room 1472".to_vec(),
                sa(addr::DUT0, 4500)
            ))
        );
        let frames = replies_from_4500();
        assert_eq!(
            ask(5555, b"ignore"),
            None,
            "a declined datagram is answered"
        );
        // The output hook judges the replies: one to port 7777 is dropped.
        for cmd in [
            "add table ip f",
            "add chain ip f out { type filter hook output priority 0; policy accept; }",
            "add rule ip f out udp dport 7777 drop",
        ] {
            let mut v = vec!["nft"];
            v.extend(cmd.split(' '));
            t.dut.exec(&v).unwrap();
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        while !e.filter().active(xdpip::filter::Hook::Output) {
            assert!(
                std::time::Instant::now() < deadline,
                "the engine has no output rules"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let blocked = ask(7777, b"blocked");
        let after = ask(5555, b"again");
        (e.report(), s.serve_stats(), frames, blocked, after)
    });
    // The reply frame: to gen's MAC from dut's, the socket's TTL and TOS,
    // DF (it fits the path MTU), both checksums right.
    assert_eq!(frames.len(), 1, "{frames:02x?}");
    let f = &frames[0];
    assert_eq!((&f[0..6], &f[6..12]), (&gen_mac[..], &dut_mac[..]));
    assert_eq!((f[15], f[22]), (0x28, 33), "TOS and TTL");
    assert_eq!(f[20] & 0x40, 0x40, "DF");
    assert_eq!(
        testbed::frame::checksum(&f[14..34]),
        0,
        "IP header checksum"
    );
    assert!(udp_checksum_verifies(f), "UDP checksum: {f:02x?}");
    assert_eq!(u16::from_be_bytes([f[36], f[37]]), 5555);
    assert_eq!(
        blocked, None,
        "the output hook let a reply to port 7777 out"
    );
    assert!(after.is_some(), "a reply to another port is blocked too");
    assert_eq!(
        stats,
        Some(ServeStats {
            datagrams: 4,
            replies: 3,
            declined: 1
        })
    );
    assert_eq!(report.mib["UdpInDatagrams"], 4, "{:?}", report.mib);
    assert_eq!(report.mib["UdpOutDatagrams"], 2, "{:?}", report.mib);
    assert_eq!(report.drops["filter_drop"], 1, "{:?}", report.drops);
}
