//! Test hosts for xdpip: network namespaces joined by veth pairs, with
//! helpers to run code or commands inside them and to send and capture raw
//! frames.
//!
//! Every namespace has a unique name (`xdpt-<pid>-<n>-<role>`), so tests run
//! in parallel; dropping a [`Netns`] deletes it, also when a test panics, and
//! namespaces left by a killed test process are removed by the next one.
//! Interfaces are created directly inside their namespaces, so their names
//! (`eth0`, `eth1`) never collide between tests.

pub mod frame;
pub mod packet;
pub mod process;

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Once;

pub use frame::{mac_of, UdpFrame};
pub use packet::PacketSocket;
pub use process::Child;

static SEQ: AtomicU32 = AtomicU32::new(0);
static REAP: Once = Once::new();
const PREFIX: &str = "xdpt-";

/// Runs `f` on a thread that has entered network namespace `ns` (a name
/// under /run/netns), and returns what it returns. Unlike
/// [`Netns::run`], `f` may borrow from the caller: the thread is scoped.
///
/// Panics when the namespace cannot be entered or `f` panics, which is
/// what a test wants.
pub fn in_ns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    let file = File::open(format!("/run/netns/{ns}"))
        .unwrap_or_else(|e| panic!("network namespace {ns}: {e}"));
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: an open namespace file; setns changes only this thread.
            let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(r, 0, "setns {ns}: {}", io::Error::last_os_error());
            f()
        })
        .join()
        .unwrap_or_else(|_| panic!("thread in namespace {ns} panicked"))
    })
}

/// Fails with a clear message unless running as root: the tests need to
/// create namespaces, attach XDP programs and open AF_XDP sockets.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        panic!(
            "the datapath tests create network namespaces and attach XDP programs: run them \
             as root (cargo xtask test)"
        );
    }
}

/// Runs a command, failing with its stderr when it fails.
pub fn sh(args: &[&str]) -> io::Result<Output> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "`{}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(out)
}

/// Removes namespaces of earlier test processes that no longer exist.
fn reap_stale() {
    let Ok(dir) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = sh(&["ip", "netns", "del", &name]);
        }
    }
}

/// A network namespace, deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates a namespace for `role` with its loopback up.
    pub fn new(role: &str) -> io::Result<Netns> {
        REAP.call_once(reap_stale);
        let name = format!(
            "{PREFIX}{}-{}-{role}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        sh(&["ip", "netns", "add", &name])?;
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Its name, for `ip netns exec`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip -n NAME args...`.
    pub fn ip(&self, args: &[&str]) -> io::Result<Output> {
        let mut v = vec!["ip", "-n", &self.name];
        v.extend_from_slice(args);
        sh(&v)
    }

    /// Runs a command inside the namespace, failing when it fails.
    pub fn exec(&self, args: &[&str]) -> io::Result<Output> {
        let mut v = vec!["ip", "netns", "exec", &self.name];
        v.extend_from_slice(args);
        sh(&v)
    }

    /// A `Command` that runs `program` inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Sets a sysctl of the namespace (`net.ipv4.ip_forward`, ...).
    pub fn sysctl(&self, key: &str, value: &str) -> io::Result<()> {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        let value = value.to_string();
        self.run(move || std::fs::write(path, value))?
    }

    /// Runs `f` on a thread that has entered the namespace and returns its
    /// result. Sockets `f` opens live in the namespace.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> io::Result<T> {
        self.spawn(f)?
            .join()
            .map_err(|_| io::Error::other("thread in namespace panicked"))
    }

    /// Starts `f` on a thread that has entered the namespace.
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> io::Result<std::thread::JoinHandle<T>> {
        let file = File::open(format!("/run/netns/{}", self.name))?;
        let (tx, rx) = std::sync::mpsc::channel();
        let h = std::thread::spawn(move || {
            // SAFETY: file is an open namespace file; setns affects only
            // this thread.
            let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            let ok = r == 0;
            let _ = tx.send(if ok {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            });
            if !ok {
                panic!("setns failed");
            }
            f()
        });
        rx.recv()
            .map_err(|_| io::Error::other("namespace thread vanished"))??;
        Ok(h)
    }

    /// IP-MIB counters of the namespace from /proc/net/snmp, as `nstat`
    /// names them (`IpForwDatagrams`, `UdpInDatagrams`, ...).
    pub fn snmp(&self) -> io::Result<std::collections::BTreeMap<String, u64>> {
        let text = self.run(|| std::fs::read_to_string("/proc/thread-self/net/snmp"))??;
        let mut out = std::collections::BTreeMap::new();
        let lines: Vec<&str> = text.lines().collect();
        for pair in lines.chunks(2) {
            if let [names, values] = pair {
                let mut n = names.split_whitespace();
                let mut v = values.split_whitespace();
                let proto = n.next().unwrap_or("").trim_end_matches(':').to_string();
                v.next();
                for (k, val) in n.zip(v) {
                    if let Ok(x) = val.parse::<i64>() {
                        out.insert(format!("{proto}{k}"), x.max(0) as u64);
                    }
                }
            }
        }
        Ok(out)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Processes still inside keep the namespace alive but unnamed:
        // kill them first.
        if let Ok(out) = sh(&["ip", "netns", "pids", &self.name]) {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                if let Ok(p) = pid.parse::<i32>() {
                    // SAFETY: kill has no memory preconditions.
                    unsafe { libc::kill(p, libc::SIGKILL) };
                }
            }
        }
        let _ = sh(&["ip", "netns", "del", &self.name]);
    }
}

/// Creates a veth pair with one end in each namespace.
pub fn veth(a: &Netns, a_name: &str, b: &Netns, b_name: &str) -> io::Result<()> {
    sh(&[
        "ip",
        "link",
        "add",
        "name",
        a_name,
        "netns",
        a.name(),
        "type",
        "veth",
        "peer",
        "name",
        b_name,
        "netns",
        b.name(),
    ])?;
    Ok(())
}

const SIOCETHTOOL: libc::c_ulong = 0x8946;
const ETHTOOL_STXCSUM: u32 = 0x17;

/// Turns off transmit checksum offload of an interface, from a thread in
/// its namespace. Not the default: the testbed keeps veth's default
/// offloads, as containers have them, and the engine completes the partial
/// UDP/TCP checksums they hand over. A test or benchmark that calls this
/// says why (on veth it also turns off TSO, and so changes which frames
/// the peer's NAPI sees).
pub fn disable_tx_checksum(ns: &Netns, ifname: &str) -> io::Result<()> {
    let ifname = ifname.to_string();
    ns.run(move || -> io::Result<()> {
        #[repr(C)]
        struct EthtoolValue {
            cmd: u32,
            data: u32,
        }
        let mut v = EthtoolValue {
            cmd: ETHTOOL_STXCSUM,
            data: 0,
        };
        // SAFETY: plain old data; zero is valid.
        let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
        for (d, s) in ifr.ifr_name.iter_mut().zip(ifname.as_bytes()) {
            *d = *s as libc::c_char;
        }
        ifr.ifr_ifru.ifru_data = &mut v as *mut EthtoolValue as *mut libc::c_char;
        // SAFETY: socket(2) with checked result.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: ifr and v outlive the call.
        let r = unsafe { libc::ioctl(fd, SIOCETHTOOL as _, &mut ifr) };
        let err = io::Error::last_os_error();
        // SAFETY: fd is ours.
        unsafe { libc::close(fd) };
        if r < 0 {
            return Err(err);
        }
        Ok(())
    })?
}

/// The classic router test topology:
///
/// ```text
///  gen eth0 10.1.0.1/24 ── 10.1.0.2/24 eth0 dut eth1 10.2.0.1/24 ── 10.2.0.2/24 eth0 sink
/// ```
///
/// `gen` and `sink` route everything through `dut`, which has
/// `ip_forward=1`; nothing runs in `dut` until a test starts something.
/// Every veth keeps its default offloads (transmit checksum offload on):
/// kernel sockets in `gen` and `sink` send partial UDP/TCP checksums, as a
/// container's do.
#[derive(Debug)]
pub struct Topology {
    /// The traffic source.
    pub gen: Netns,
    /// The device under test.
    pub dut: Netns,
    /// The traffic sink.
    pub sink: Netns,
}

/// Addresses of [`Topology`].
pub mod addr {
    use std::net::Ipv4Addr;
    /// gen's address.
    pub const GEN: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);
    /// dut's address towards gen.
    pub const DUT0: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 2);
    /// dut's address towards sink.
    pub const DUT1: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 1);
    /// sink's address.
    pub const SINK: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 2);
}

impl Topology {
    /// Builds gen ⇄ dut ⇄ sink. `queues` sets the veth queue count.
    pub fn gen_dut_sink(queues: u32) -> io::Result<Topology> {
        let t = Topology {
            gen: Netns::new("gen")?,
            dut: Netns::new("dut")?,
            sink: Netns::new("sink")?,
        };
        let q = queues.to_string();
        for (a, an, b, bn) in [
            (&t.gen, "eth0", &t.dut, "eth0"),
            (&t.dut, "eth1", &t.sink, "eth0"),
        ] {
            sh(&[
                "ip",
                "link",
                "add",
                "name",
                an,
                "netns",
                a.name(),
                "numtxqueues",
                &q,
                "numrxqueues",
                &q,
                "type",
                "veth",
                "peer",
                "name",
                bn,
                "netns",
                b.name(),
                "numtxqueues",
                &q,
                "numrxqueues",
                &q,
            ])?;
        }
        t.gen.ip(&["addr", "add", "10.1.0.1/24", "dev", "eth0"])?;
        t.dut.ip(&["addr", "add", "10.1.0.2/24", "dev", "eth0"])?;
        t.dut.ip(&["addr", "add", "10.2.0.1/24", "dev", "eth1"])?;
        t.sink.ip(&["addr", "add", "10.2.0.2/24", "dev", "eth0"])?;
        for (ns, i) in [
            (&t.gen, "eth0"),
            (&t.dut, "eth0"),
            (&t.dut, "eth1"),
            (&t.sink, "eth0"),
        ] {
            ns.ip(&["link", "set", i, "up"])?;
        }
        t.gen.ip(&["route", "add", "default", "via", "10.1.0.2"])?;
        t.sink.ip(&["route", "add", "default", "via", "10.2.0.1"])?;
        t.dut.sysctl("net.ipv4.ip_forward", "1")?;
        Ok(t)
    }

    /// Pings sink from gen once so that every neighbour on the path is
    /// resolved; returns whether the ping came back.
    pub fn warm_up(&self) -> bool {
        (0..30).any(|_| {
            self.gen
                .exec(&["ping", "-c", "1", "-W", "1", "-q", "10.2.0.2"])
                .is_ok()
        })
    }
}
