//! `xdpip-bench mcast`: receive throughput of one multicast group joined
//! by N sockets in dut, N kernel sockets against N engine sockets, with
//! the same generator in gen, in one run.

use crate::gen::{self, GenConfig, GenMode, ZeroCopy};
use crate::{sys, wire};
use serde::Serialize;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use testbed::Topology;

/// Options of `mcast`.
#[derive(clap::Args, Debug, Clone)]
pub struct McastArgs {
    /// Sockets joined to the group on each side.
    #[arg(long, default_value_t = 4)]
    pub sockets: usize,
    /// Seconds of traffic per run.
    #[arg(long, default_value_t = 3.0)]
    pub seconds: f64,
    /// Ethernet frame size with FCS.
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Generator rate in frames per second (default: as fast as it goes).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Runs per system; the median is reported.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Write the results as JSON here.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
}

const GROUP: Ipv4Addr = Ipv4Addr::new(239, 9, 9, 9);
const PORT: u16 = 9100;
const DUT0: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 2);

/// One run of one system.
#[derive(Debug, Clone, Serialize)]
pub struct McastRun {
    /// `kernel` or `xdpip`.
    pub system: &'static str,
    /// Frames the generator sent.
    pub sent: u64,
    /// Seconds it sent for.
    pub seconds: f64,
    /// Datagrams each socket received.
    pub received: Vec<u64>,
}

impl McastRun {
    /// The socket that received least, per second.
    pub fn min_pps(&self) -> f64 {
        self.received.iter().copied().min().unwrap_or(0) as f64 / self.seconds
    }

    /// Share of the sent datagrams the socket that received least got.
    pub fn min_share(&self) -> f64 {
        self.received.iter().copied().min().unwrap_or(0) as f64 / self.sent.max(1) as f64
    }
}

fn in_ns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> io::Result<T> {
    let file = std::fs::File::open(format!("/run/netns/{ns}"))?;
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: an open namespace file; setns changes only this thread.
            let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            if r != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(f())
        })
        .join()
        .map_err(|_| io::Error::other("thread in namespace panicked"))?
    })
}

/// A kernel socket with SO_REUSEADDR, bound to the group's port, joined.
fn kernel_socket() -> io::Result<UdpSocket> {
    // SAFETY: plain socket(2); checked.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor nothing else owns.
    let s = unsafe { UdpSocket::from_raw_fd(fd) };
    let one: i32 = 1;
    // SAFETY: an int option on our socket.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            (&one as *const i32).cast(),
            4,
        )
    };
    let sa = libc::sockaddr_in {
        sin_family: libc::AF_INET as u16,
        sin_port: PORT.to_be(),
        sin_addr: libc::in_addr { s_addr: 0 },
        sin_zero: [0; 8],
    };
    // SAFETY: a valid sockaddr_in.
    let r = unsafe {
        libc::bind(
            fd,
            (&sa as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as u32,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    s.join_multicast_v4(&GROUP, &DUT0)?;
    s.set_read_timeout(Some(Duration::from_millis(100)))?;
    Ok(s)
}

fn generate(t: &Topology, a: &McastArgs) -> Result<(u64, f64), String> {
    let gen_ns = t.gen.name().to_string();
    in_ns(&gen_ns, || -> Result<(u64, f64), String> {
        let info = sys::iface(None, "eth0").map_err(|e| e.to_string())?;
        let o = GROUP.octets();
        let cfg = GenConfig {
            iface: "eth0".into(),
            queue: 0,
            mode: GenMode::Afxdp,
            spec: wire::FrameSpec {
                dst_mac: [0x01, 0x00, 0x5e, o[1] & 0x7f, o[2], o[3]],
                src_mac: info.mac,
                src: Ipv4Addr::new(10, 1, 0, 1),
                dst: GROUP,
                sport: 10000,
                dport: PORT,
                size: a.size,
                fragments: 1,
                flows: 1,
                src_addrs: 1,
            },
            rate: a.rate,
            duration: Duration::from_secs_f64(a.seconds),
            count: None,
            batch: 64,
            zero_copy: ZeroCopy::Auto,
            core: None,
        };
        let r = gen::run(&cfg, &AtomicBool::new(false)).map_err(|e| e.to_string())?;
        Ok((r.sent, r.seconds))
    })
    .map_err(|e| e.to_string())?
}

fn kernel_run(t: &Topology, a: &McastArgs) -> Result<McastRun, String> {
    let dut = t.dut.name().to_string();
    in_ns(&dut, || -> Result<McastRun, String> {
        let socks: Vec<UdpSocket> = (0..a.sockets)
            .map(|_| kernel_socket())
            .collect::<io::Result<_>>()
            .map_err(|e| format!("kernel socket: {e}"))?;
        let stop = AtomicBool::new(false);
        std::thread::scope(|sc| {
            let readers: Vec<_> = socks
                .iter()
                .map(|s| {
                    let stop = &stop;
                    sc.spawn(move || {
                        let mut n = 0u64;
                        let mut b = [0u8; 2048];
                        while !stop.load(Ordering::Relaxed) {
                            if s.recv(&mut b).is_ok() {
                                n += 1;
                            }
                        }
                        n
                    })
                })
                .collect();
            std::thread::sleep(Duration::from_millis(300));
            let g = generate(t, a);
            std::thread::sleep(Duration::from_millis(300));
            stop.store(true, Ordering::Relaxed);
            let received = readers.into_iter().map(|r| r.join().unwrap_or(0)).collect();
            let (sent, seconds) = g?;
            Ok(McastRun {
                system: "kernel",
                sent,
                seconds,
                received,
            })
        })
    })
    .map_err(|e| e.to_string())?
}

fn engine_run(t: &Topology, a: &McastArgs) -> Result<McastRun, String> {
    let dut = t.dut.name().to_string();
    in_ns(&dut, || -> Result<McastRun, String> {
        let engine = xdpip::Engine::builder()
            .interface("eth0")
            .interface("eth1")
            .start()
            .map_err(|e| format!("engine: {e}"))?;
        let socks = (0..a.sockets)
            .map(|_| {
                let s = engine.udp_socket()?;
                s.set_reuse_address(true)?;
                s.bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, PORT))?;
                s.join_multicast_v4(&GROUP, &DUT0)?;
                s.set_read_timeout(Some(Duration::from_millis(100)))?;
                Ok(s)
            })
            .collect::<io::Result<Vec<_>>>()
            .map_err(|e| format!("engine socket: {e}"))?;
        let stop = AtomicBool::new(false);
        let run = std::thread::scope(|sc| {
            let readers: Vec<_> = socks
                .iter()
                .map(|s| {
                    let stop = &stop;
                    sc.spawn(move || {
                        let mut n = 0u64;
                        let mut storage = vec![[0u8; 2048]; 32];
                        let mut meta = vec![
                            xdpip::socket::RecvMeta {
                                len: 0,
                                datagram_len: 0,
                                src: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0),
                                ancillary: Default::default(),
                            };
                            32
                        ];
                        while !stop.load(Ordering::Relaxed) {
                            let mut bufs: Vec<&mut [u8]> =
                                storage.iter_mut().map(|b| &mut b[..]).collect();
                            if let Ok(k) = s.recv_batch(&mut bufs, &mut meta) {
                                n += k as u64;
                            }
                        }
                        n
                    })
                })
                .collect();
            std::thread::sleep(Duration::from_millis(300));
            let g = generate(t, a);
            std::thread::sleep(Duration::from_millis(300));
            stop.store(true, Ordering::Relaxed);
            let received = readers.into_iter().map(|r| r.join().unwrap_or(0)).collect();
            let (sent, seconds) = g?;
            Ok(McastRun {
                system: "xdpip",
                sent,
                seconds,
                received,
            })
        });
        drop(socks);
        engine.stop();
        run
    })
    .map_err(|e| e.to_string())?
}

/// Runs the comparison and prints the table.
pub fn run(a: McastArgs) -> Result<(), String> {
    if !sys::is_root() {
        return Err("mcast builds network namespaces: run it as root".into());
    }
    if a.sockets == 0 || a.runs == 0 || !a.seconds.is_finite() || a.seconds <= 0.0 {
        return Err("--sockets, --runs and --seconds must be positive".into());
    }
    let t = Topology::gen_dut_sink(1).map_err(|e| format!("topology: {e}"))?;
    if !t.warm_up() {
        return Err("the kernel router of the topology does not forward".into());
    }
    let mut all: Vec<McastRun> = Vec::new();
    for _ in 0..a.runs {
        // Alternate, so that both see the same machine over time.
        all.push(kernel_run(&t, &a)?);
        all.push(engine_run(&t, &a)?);
    }
    let median = |sys: &str| -> McastRun {
        let mut v: Vec<&McastRun> = all.iter().filter(|r| r.system == sys).collect();
        v.sort_by(|x, y| x.min_pps().total_cmp(&y.min_pps()));
        v[v.len() / 2].clone()
    };
    let (k, e) = (median("kernel"), median("xdpip"));
    println!(
        "== one group, {} joined sockets, {}-byte frames, median of {} × {} s",
        a.sockets, a.size, a.runs, a.seconds
    );
    println!("system      sent/s    per socket/s (least)   share   /kernel");
    for r in [&k, &e] {
        println!(
            "{:8} {:>10.0} {:>14.0}           {:>6.1}%   {:>6.2}",
            r.system,
            r.sent as f64 / r.seconds,
            r.min_pps(),
            100.0 * r.min_share(),
            r.min_pps() / k.min_pps().max(1.0)
        );
    }
    if let Some(p) = &a.json {
        let j = serde_json::json!({ "runs": all, "kernel": k, "xdpip": e });
        std::fs::write(p, j.to_string()).map_err(|e| format!("{}: {e}", p.display()))?;
    }
    Ok(())
}
