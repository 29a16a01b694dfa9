//! The checks, all in one boot of a guest: each is reported by name, pass
//! or fail, with what it saw.
//!
//! Traffic flows between the two host namespaces through the guest, where
//! `xdpip run --zero-copy on` routes it (or `udp_echo` answers it). Rates
//! stay far below the ~200 packets/s a software-emulated guest forwards.
//! The first packet to an unresolved neighbour is dropped by design
//! (`neighbour_missing`), so a few warm-up pings precede the counted ones;
//! every counted packet must arrive.

use std::net::{SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use serde_json::Value;
use testbed::Netns;

use super::vm::{Driver, Vm, GUEST_A, GUEST_B, HOST_A, HOST_B};
use super::Fail;

/// The result of one check.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
}

/// Which checks a boot runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suite {
    /// Everything.
    Full,
    /// Zero-copy binding and forwarding only (`--quick`, for loops).
    Quick,
}

const T_CMD: Duration = Duration::from_secs(60);
const T_ENGINE: Duration = Duration::from_secs(150);

/// Runs the suite on a booted guest.
pub fn run(vm: &mut Vm, suite: Suite, report: &mut dyn FnMut(&Outcome)) -> Vec<Outcome> {
    let mut r = Runner {
        vm,
        outcomes: Vec::new(),
        report,
        diag: false,
    };
    r.suite(suite);
    r.outcomes
}

struct Runner<'a> {
    vm: &'a mut Vm,
    outcomes: Vec<Outcome>,
    report: &'a mut dyn FnMut(&Outcome),
    diag: bool,
}

type Check = Result<String, Fail>;

impl Runner<'_> {
    fn check(&mut self, name: &'static str, f: impl FnOnce(&mut Vm) -> Check) -> bool {
        let t = Instant::now();
        let (ok, detail) = match f(self.vm) {
            Ok(d) => (true, d),
            Err(e) => (false, e.0),
        };
        let o = Outcome {
            name,
            ok,
            detail: format!("{detail} [{:.1} s]", t.elapsed().as_secs_f64()),
        };
        (self.report)(&o);
        self.outcomes.push(o);
        if !ok && !self.diag && !self.vm.unresponsive() {
            // Once per boot: what the guest and the host saw.
            self.diag = true;
            diagnose(self.vm);
        }
        ok
    }

    fn suite(&mut self, suite: Suite) {
        let driver = self.vm.driver;
        let ready = self.vm.ready_line.clone();
        let want = format!(
            "xa={} xb={}",
            driver.kernel_driver(),
            driver.kernel_driver()
        );
        self.check("guest-boot", |_| {
            if ready.contains(&want) {
                Ok(ready.trim_start_matches("ZC READY ").to_string())
            } else {
                Err(Fail(format!("expected {want}, the guest said: {ready}")))
            }
        });

        let started = self.check("engine-start", |vm| {
            // As when a router restarts: traffic flows both ways while the
            // engine attaches its program and binds its sockets.
            let mut pings = Vec::new();
            for (ns, dst) in [(&vm.a, HOST_B), (&vm.b, HOST_A)] {
                let c = ns
                    .command("ping")
                    .args(["-q", "-n", "-i", "0.05", "-c", "4000", dst])
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn();
                if let Ok(c) = c {
                    pings.push(c);
                }
            }
            let r = vm.sh("engine engine --zero-copy on -q", T_ENGINE);
            for mut p in pings {
                let _ = p.kill();
                let _ = p.wait();
            }
            let r = r?;
            if !r.ok() {
                return Err(Fail(format!(
                    "xdpip run --zero-copy on did not start: {}",
                    r.out.trim()
                )));
            }
            Ok("xdpip run -i xa -i xb --zero-copy on, started under ping traffic".into())
        });
        if started {
            self.check("zero-copy-bound", zero_copy_bound);
            self.check("umem-shared", umem_shared);
            warm_up(self.vm);
            self.forwarding();
            if suite == Suite::Full {
                self.check("fragment-to-mtu-1000", fragment);
            }
            if driver == Driver::Virtio {
                self.check("virtio-xsk-tx-header", virtio_tx_header);
            }
        }
        self.check("sigterm-detach", |vm| stop_and_detached(vm, "engine"));
        if suite == Suite::Full {
            self.check("sigkill-restart", sigkill_restart);
            self.check("engine-socket-echo", engine_socket_echo);
            self.check("busy-poll", busy_poll);
        }
    }

    fn forwarding(&mut self) {
        for (name, from_a, size) in [
            ("ping-a-to-b", true, 56),
            ("ping-b-to-a", false, 56),
            ("ping-1400-a-to-b", true, 1400),
            ("ping-1400-b-to-a", false, 1400),
        ] {
            self.check(name, |vm| {
                let before = forwarded(vm)?;
                let (ns, dst) = if from_a {
                    (&vm.a, HOST_B)
                } else {
                    (&vm.b, HOST_A)
                };
                let (sent, got) = ping(ns, dst, 20, size, "0.1")?;
                let fwd = forwarded(vm)? - before;
                if got != sent {
                    return Err(Fail(format!(
                        "{got} of {sent} echo replies (ForwDatagrams +{fwd})"
                    )));
                }
                if fwd < 2 * sent {
                    return Err(Fail(format!(
                        "{got} of {sent} replies, but the engine forwarded only {fwd} of {} \
                         (the kernel forwarded the rest)",
                        2 * sent
                    )));
                }
                Ok(format!(
                    "{got}/{sent} replies of {size} bytes, ForwDatagrams +{fwd}"
                ))
            });
        }
        for (name, from_a) in [("udp-a-to-b", true), ("udp-b-to-a", false)] {
            self.check(name, |vm| {
                let before = forwarded(vm)?;
                let (from, from_ip, to, to_ip) = if from_a {
                    (&vm.a, HOST_A, &vm.b, HOST_B)
                } else {
                    (&vm.b, HOST_B, &vm.a, HOST_A)
                };
                let sizes = [16, 200, 512, 1000, 1400, 1472];
                let n = 60;
                let got = udp_flow(from, from_ip, to, to_ip, &sizes, n, false)?;
                let fwd = forwarded(vm)? - before;
                if fwd < n as u64 {
                    return Err(Fail(format!(
                        "{got} datagrams arrived intact, but the engine forwarded only {fwd}"
                    )));
                }
                Ok(format!(
                    "{got}/{n} datagrams of 16 to 1472 bytes arrived intact, ForwDatagrams +{fwd}"
                ))
            });
        }
    }
}

/// A command that must succeed; its output.
fn must(vm: &mut Vm, cmd: &str, timeout: Duration) -> Result<String, Fail> {
    let r = vm.sh(cmd, timeout)?;
    if !r.ok() {
        return Err(Fail(format!(
            "`{cmd}` failed ({}): {}",
            r.status,
            r.out.trim()
        )));
    }
    Ok(r.out)
}

fn stats(vm: &mut Vm) -> Result<Value, Fail> {
    let out = must(vm, "xdpip stats --json", T_CMD)?;
    serde_json::from_str(out.trim())
        .map_err(|e| Fail(format!("xdpip stats --json: {e}: {}", out.trim())))
}

fn mib(s: &Value, name: &str) -> u64 {
    s["mib"][name].as_u64().unwrap_or(0)
}

fn forwarded(vm: &mut Vm) -> Result<u64, Fail> {
    Ok(mib(&stats(vm)?, "ForwDatagrams"))
}

/// Receive queues of a guest NIC.
fn queues(vm: &mut Vm, iface: &str) -> Result<u32, Fail> {
    let out = must(vm, &format!("ls /sys/class/net/{iface}/queues"), T_CMD)?;
    let n = out
        .split_whitespace()
        .filter(|q| q.starts_with("rx-"))
        .count() as u32;
    if n == 0 {
        return Err(Fail(format!("{iface} has no receive queues: {out}")));
    }
    Ok(n)
}

/// An AF_XDP socket as `ss --xdp` shows it (the kernel's view).
#[derive(Debug)]
struct XskView {
    ifindex: u64,
    qid: u64,
    umem: u64,
    zc: bool,
}

fn xdp_sockets(vm: &mut Vm) -> Result<Vec<XskView>, Fail> {
    let out = must(vm, "ss -a -O -e --xdp", T_CMD)?;
    let mut v = Vec::new();
    for l in out.lines() {
        let Some(at) = l.find("umem(") else { continue };
        let inner = &l[at + 5..];
        let inner = &inner[..inner.find(')').unwrap_or(inner.len())];
        let field = |k: &str| {
            inner
                .split(',')
                .find_map(|kv| kv.strip_prefix(k).and_then(|v| v.strip_prefix(':')))
                .and_then(|v| v.parse::<u64>().ok())
        };
        match (field("id"), field("ifindex"), field("qid"), field("zc")) {
            (Some(umem), Some(ifindex), Some(qid), Some(zc)) => v.push(XskView {
                ifindex,
                qid,
                umem,
                zc: zc == 1,
            }),
            _ => return Err(Fail(format!("unexpected `ss --xdp` line: {l}"))),
        }
    }
    Ok(v)
}

fn ifindex(vm: &mut Vm, iface: &str) -> Result<u64, Fail> {
    let out = must(vm, &format!("cat /sys/class/net/{iface}/ifindex"), T_CMD)?;
    out.trim()
        .parse()
        .map_err(|_| Fail(format!("ifindex of {iface}: {out}")))
}

/// The engine reports zero-copy, has a socket on every queue of both NICs,
/// and the kernel agrees that each of them is bound zero-copy.
fn zero_copy_bound(vm: &mut Vm) -> Check {
    let s = stats(vm)?;
    let mode = s["mode"]["afxdp"].as_str().unwrap_or("?");
    if mode != "zero-copy" {
        return Err(Fail(format!("xdpip stats reports AF_XDP mode {mode:?}")));
    }
    let mut total = 0;
    for iface in ["xa", "xb"] {
        let q = queues(vm, iface)?;
        let port = s["mode"]["ports"]
            .as_array()
            .and_then(|p| p.iter().find(|p| p["name"] == iface))
            .ok_or_else(|| Fail(format!("xdpip stats has no port {iface}")))?;
        if port["xdp_mode"] != "native" || port["queues"].as_u64() != Some(q as u64) {
            return Err(Fail(format!(
                "{iface}: xdpip stats reports {port} for {q} queues"
            )));
        }
        for qi in 0..q {
            let found = s["workers"].as_array().is_some_and(|ws| {
                ws.iter().any(|w| {
                    w["sockets"].as_array().is_some_and(|ss| {
                        ss.iter()
                            .any(|x| x["iface"] == iface && x["queue"].as_u64() == Some(qi as u64))
                    })
                })
            });
            if !found {
                return Err(Fail(format!(
                    "no socket on {iface} queue {qi} in xdpip stats"
                )));
            }
        }
        total += q;
    }
    let kernel = xdp_sockets(vm)?;
    let zc = kernel.iter().filter(|x| x.zc).count();
    if kernel.len() != total as usize || zc != kernel.len() {
        return Err(Fail(format!(
            "the kernel shows {} AF_XDP sockets, {zc} of them zero-copy; expected {total}",
            kernel.len()
        )));
    }
    Ok(format!(
        "xdpip stats: zero-copy, native XDP, {total} sockets on all queues; ss --xdp: {zc} zc"
    ))
}

/// On each queue, the xa and xb sockets share one UMEM (so a frame goes
/// from one NIC to the other without a copy): in the kernel's view and in
/// the engine's (one worker per queue serving both NICs).
fn umem_shared(vm: &mut Vm) -> Check {
    let (ia, ib) = (ifindex(vm, "xa")?, ifindex(vm, "xb")?);
    let kernel = xdp_sockets(vm)?;
    let q = queues(vm, "xa")? as u64;
    let mut ids = Vec::new();
    for qi in 0..q {
        let on = |i: u64| kernel.iter().find(|x| x.ifindex == i && x.qid == qi);
        let (Some(a), Some(b)) = (on(ia), on(ib)) else {
            return Err(Fail(format!("no socket pair on queue {qi}: {kernel:?}")));
        };
        if a.umem != b.umem {
            return Err(Fail(format!(
                "queue {qi}: xa's socket has UMEM {} and xb's UMEM {}",
                a.umem, b.umem
            )));
        }
        ids.push(a.umem);
    }
    let s = stats(vm)?;
    for w in s["workers"].as_array().into_iter().flatten() {
        let ifs: Vec<&str> = w["sockets"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|x| x["iface"].as_str())
            .collect();
        if !(ifs.contains(&"xa") && ifs.contains(&"xb")) {
            return Err(Fail(format!(
                "worker {} serves {ifs:?}, not both NICs",
                w["id"]
            )));
        }
    }
    Ok(format!(
        "UMEM ids per queue {ids:?}, each shared by xa and xb"
    ))
}

fn warm_up(vm: &mut Vm) {
    let _ = ping(&vm.a, HOST_B, 3, 56, "0.3");
    let _ = ping(&vm.b, HOST_A, 3, 56, "0.3");
}

/// `ping` from a host namespace: (sent, received).
fn ping(ns: &Netns, dst: &str, count: u32, size: u32, interval: &str) -> Result<(u64, u64), Fail> {
    let out = ns
        .command("ping")
        .args(["-q", "-n", "-W", "3", "-i", interval])
        .args(["-c", &count.to_string(), "-s", &size.to_string(), dst])
        .output()
        .map_err(|e| Fail(format!("ping: {e}")))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .ok_or_else(|| {
            Fail(format!(
                "ping {dst}: {}{}",
                text.trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        })?;
    let nums: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    match nums[..] {
        [sent, got, ..] => Ok((sent, got)),
        _ => Err(Fail(format!("ping {dst}: {line}"))),
    }
}

/// Datagram `seq` of `size` bytes: a header (magic, seq, size) and a
/// pattern that depends on both, so a corrupted or misplaced byte shows.
fn payload(seq: u32, size: usize) -> Vec<u8> {
    let mut p: Vec<u8> = (0..size)
        .map(|j| (seq as usize * 131 + j * 7 + 3) as u8)
        .collect();
    let head = [
        b"XDZC".as_slice(),
        &seq.to_be_bytes(),
        &(size as u32).to_be_bytes(),
    ]
    .concat();
    let n = head.len().min(size);
    p[..n].copy_from_slice(&head[..n]);
    p
}

fn verify(d: &[u8], sizes: &[usize]) -> Result<u32, String> {
    if d.len() < 12 || &d[..4] != b"XDZC" {
        return Err(format!("a {}-byte datagram without our header", d.len()));
    }
    let seq = u32::from_be_bytes([d[4], d[5], d[6], d[7]]);
    let want = sizes[seq as usize % sizes.len()];
    if d != payload(seq, want).as_slice() {
        return Err(format!(
            "datagram {seq}: {} bytes, expected {want} bytes of its pattern",
            d.len()
        ));
    }
    Ok(seq)
}

const PORT: u16 = 7777;

/// Sends `n` datagrams (sizes in turn) from a kernel socket in `from` to one
/// in `to`, 10 ms apart, and checks that each arrives once and intact.
/// `no_df` clears DF (IP_PMTUDISC_DONT), so the router may fragment them.
fn udp_flow(
    from: &Netns,
    from_ip: &str,
    to: &Netns,
    to_ip: &str,
    sizes: &[usize],
    n: usize,
    no_df: bool,
) -> Result<usize, Fail> {
    let dst: SocketAddrV4 = format!("{to_ip}:{PORT}").parse().expect("address");
    let src: SocketAddrV4 = format!("{from_ip}:0").parse().expect("address");
    let sizes_rx = sizes.to_vec();
    let (bound_tx, bound_rx) = std::sync::mpsc::channel();
    let wait = Duration::from_millis(10 * n as u64) + Duration::from_secs(20);
    let rx = to
        .spawn(move || -> Result<Vec<u32>, String> {
            let s = UdpSocket::bind(dst).map_err(|e| format!("bind {dst}: {e}"));
            let _ = bound_tx.send(s.is_ok());
            let s = s?;
            s.set_read_timeout(Some(Duration::from_millis(200)))
                .map_err(|e| e.to_string())?;
            let deadline = Instant::now() + wait;
            let mut seen = Vec::new();
            let mut buf = vec![0u8; 65536];
            while seen.len() < n && Instant::now() < deadline {
                match s.recv(&mut buf) {
                    Ok(len) => seen.push(verify(&buf[..len], &sizes_rx)?),
                    Err(e)
                        if e.kind() == std::io::ErrorKind::WouldBlock
                            || e.kind() == std::io::ErrorKind::TimedOut => {}
                    Err(e) => return Err(e.to_string()),
                }
            }
            Ok(seen)
        })
        .map_err(|e| Fail(format!("receiver in {}: {e}", to.name())))?;
    if bound_rx.recv_timeout(Duration::from_secs(10)) != Ok(true) {
        let r = rx.join();
        return Err(Fail(format!(
            "receiver: {:?}",
            r.ok().and_then(|r| r.err())
        )));
    }
    let sizes_tx = sizes.to_vec();
    let sent = from
        .run(move || -> Result<(), String> {
            let s = UdpSocket::bind(src).map_err(|e| format!("bind {src}: {e}"))?;
            if no_df {
                set_no_df(&s)?;
            }
            for i in 0..n {
                let p = payload(i as u32, sizes_tx[i % sizes_tx.len()]);
                s.send_to(&p, dst)
                    .map_err(|e| format!("send to {dst}: {e}"))?;
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok(())
        })
        .map_err(|e| Fail(format!("sender in {}: {e}", from.name())))?;
    sent.map_err(Fail)?;
    let seen = rx
        .join()
        .map_err(|_| Fail("receiver panicked".into()))?
        .map_err(Fail)?;
    let mut uniq = seen.clone();
    uniq.sort_unstable();
    uniq.dedup();
    if uniq.len() != seen.len() {
        return Err(Fail(format!(
            "duplicates among {} datagrams received",
            seen.len()
        )));
    }
    if seen.len() != n {
        let missing: Vec<usize> = (0..n).filter(|i| !uniq.contains(&(*i as u32))).collect();
        return Err(Fail(format!(
            "{} of {n} datagrams arrived; missing {:?}{}",
            seen.len(),
            &missing[..missing.len().min(12)],
            if missing.len() > 12 { " ..." } else { "" }
        )));
    }
    Ok(seen.len())
}

fn set_no_df(s: &UdpSocket) -> Result<(), String> {
    let v: libc::c_int = libc::IP_PMTUDISC_DONT;
    // SAFETY: an int option on our socket.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(format!(
            "IP_MTU_DISCOVER: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// xb's MTU lowered to 1000 in the guest: 1400-byte datagrams without DF
/// from A are fragmented by the engine and arrive whole at B after the
/// host's reassembly.
fn fragment(vm: &mut Vm) -> Check {
    // igb resets its rings on an MTU change (the link drops for a few
    // seconds); virtio-net does not. Traffic is counted once the link is
    // back and the path answers again.
    must(
        vm,
        "ip link set xb mtu 1000 && linkup xb 60",
        Duration::from_secs(90),
    )?;
    let result = (|| {
        warm_up(vm);
        let s0 = stats(vm)?;
        let n = 20;
        let got = udp_flow(&vm.a, HOST_A, &vm.b, HOST_B, &[1400], n, true)?;
        let s1 = stats(vm)?;
        let oks = mib(&s1, "FragOKs") - mib(&s0, "FragOKs");
        let creates = mib(&s1, "FragCreates") - mib(&s0, "FragCreates");
        if oks < n as u64 || creates < 2 * n as u64 {
            return Err(Fail(format!(
                "{got} arrived, but the engine counted FragOKs +{oks}, FragCreates +{creates}"
            )));
        }
        Ok(format!(
            "{got}/{n} datagrams of 1400 bytes arrived whole; FragOKs +{oks}, FragCreates +{creates}"
        ))
    })();
    let restore = must(
        vm,
        "ip link set xb mtu 1500 && linkup xb 60",
        Duration::from_secs(90),
    );
    let out = result?;
    restore?;
    warm_up(vm);
    Ok(out)
}

/// Stops `name` with SIGTERM: it exits with status 0 and leaves no XDP
/// program on either NIC.
fn stop_and_detached(vm: &mut Vm, name: &str) -> Check {
    let r = vm.sh(&format!("stop {name} TERM 60"), Duration::from_secs(90))?;
    let status = r.out.trim().lines().last().unwrap_or("").to_string();
    if !r.ok() || status != "0" {
        return Err(Fail(format!("after SIGTERM: {}", r.out.trim())));
    }
    let left = must(vm, "xdplink xa; xdplink xb", T_CMD)?;
    if !left.trim().is_empty() {
        return Err(Fail(format!(
            "XDP still attached after exit: {}",
            left.trim()
        )));
    }
    Ok("exit status 0, ip link shows no XDP program".into())
}

/// SIGKILL leaves the kernel to clean up (the BPF link dies with the
/// process); a restart must then start, attach exactly one program per NIC
/// and forward.
fn sigkill_restart(vm: &mut Vm) -> Check {
    let r = vm.sh("engine engine --zero-copy on -q", T_ENGINE)?;
    if !r.ok() {
        return Err(Fail(format!("start: {}", r.out.trim())));
    }
    let r = vm.sh("stop engine KILL 60", Duration::from_secs(90))?;
    if r.out.trim() != "137" {
        return Err(Fail(format!("after SIGKILL: {}", r.out.trim())));
    }
    let r = vm.sh("engine engine --zero-copy on -q", T_ENGINE)?;
    if !r.ok() {
        return Err(Fail(format!("restart after SIGKILL: {}", r.out.trim())));
    }
    for iface in ["xa", "xb"] {
        let l = must(vm, &format!("xdplink {iface}"), T_CMD)?;
        let progs = l.matches("prog/xdp").count();
        if progs != 1 || l.contains("xdpmulti") {
            return Err(Fail(format!("{iface} after restart: {}", l.trim())));
        }
    }
    warm_up(vm);
    let (sa, ga) = ping(&vm.a, HOST_B, 10, 56, "0.1")?;
    let (sb, gb) = ping(&vm.b, HOST_A, 10, 56, "0.1")?;
    if ga != sa || gb != sb {
        return Err(Fail(format!(
            "after restart: a->b {ga}/{sa}, b->a {gb}/{sb} replies"
        )));
    }
    stop_and_detached(vm, "engine")?;
    Ok(format!(
        "exit 137, restart attached one program per NIC, pings {ga}/{sa} and {gb}/{sb}, \
         clean SIGTERM"
    ))
}

/// The `udp_echo` example (an engine socket on the fast path) answers from
/// both sides, and its sockets are bound zero-copy.
fn engine_socket_echo(vm: &mut Vm) -> Check {
    let r = vm.sh(
        &format!(
            "reap; bg echo udp_echo -i xa -i xb --bind 0.0.0.0:{PORT}; up echo 90 inlog echo serving"
        ),
        T_ENGINE,
    )?;
    if !r.ok() {
        return Err(Fail(format!("udp_echo did not start: {}", r.out.trim())));
    }
    let kernel = xdp_sockets(vm)?;
    if kernel.is_empty() || kernel.iter().any(|x| !x.zc) {
        return Err(Fail(format!(
            "udp_echo's sockets are not all zero-copy: {kernel:?}"
        )));
    }
    warm_up(vm);
    let mut total = 0;
    for (ns, src, dst) in [(&vm.a, HOST_A, GUEST_A), (&vm.b, HOST_B, GUEST_B)] {
        total += echo_flow(ns, src, dst, 30)?;
    }
    let r = vm.sh(
        "stop echo TERM 60; cat /tmp/echo.log",
        Duration::from_secs(90),
    )?;
    let echoed = r
        .out
        .split("echoed ")
        .nth(1)
        .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0);
    if echoed < total as u64 {
        return Err(Fail(format!(
            "udp_echo reports {echoed} echoed: {}",
            r.out.trim()
        )));
    }
    Ok(format!(
        "{total} datagrams echoed intact from both sides; {} zero-copy sockets; udp_echo \
         counted {echoed}",
        kernel.len()
    ))
}

fn echo_flow(ns: &Netns, src_ip: &str, dst_ip: &str, n: usize) -> Result<usize, Fail> {
    let dst: SocketAddrV4 = format!("{dst_ip}:{PORT}").parse().expect("address");
    let src: SocketAddrV4 = format!("{src_ip}:0").parse().expect("address");
    let sizes = vec![16usize, 100, 700, 1400];
    let r = ns
        .run(move || -> Result<usize, String> {
            let s = UdpSocket::bind(src).map_err(|e| format!("bind {src}: {e}"))?;
            for i in 0..n {
                let p = payload(i as u32, sizes[i % sizes.len()]);
                s.send_to(&p, dst)
                    .map_err(|e| format!("send to {dst}: {e}"))?;
                std::thread::sleep(Duration::from_millis(10));
            }
            s.set_read_timeout(Some(Duration::from_millis(200)))
                .map_err(|e| e.to_string())?;
            let deadline = Instant::now() + Duration::from_secs(20);
            let mut seen = std::collections::BTreeSet::new();
            let mut buf = vec![0u8; 65536];
            while seen.len() < n && Instant::now() < deadline {
                match s.recv_from(&mut buf) {
                    Ok((len, from)) => {
                        if from != std::net::SocketAddr::V4(dst) {
                            return Err(format!("an answer from {from}, not {dst}"));
                        }
                        seen.insert(verify(&buf[..len], &sizes)?);
                    }
                    Err(e)
                        if e.kind() == std::io::ErrorKind::WouldBlock
                            || e.kind() == std::io::ErrorKind::TimedOut => {}
                    Err(e) => return Err(e.to_string()),
                }
            }
            if seen.len() != n {
                return Err(format!("{} of {n} echoes from {dst}", seen.len()));
            }
            Ok(n)
        })
        .map_err(|e| Fail(format!("in {}: {e}", ns.name())))?;
    r.map_err(Fail)
}

/// `xdpip run --busy-poll`: the worker runs the queues' NAPI in its own
/// system calls. Passes when the guest's BusyPollRxPackets grows while
/// traffic crosses the engine both ways, and the engine reports (`xdpip
/// stats --json`, `busy_poll`) at least one socket of each NIC `engaged`
/// and none `not_engaged` or `unavailable`. virtio_net links a NAPI
/// instance to each queue, so busy polling can run there (veth cannot).
fn busy_poll(vm: &mut Vm) -> Check {
    let counter = "netstat BusyPollRxPackets";
    let before: u64 = must(vm, counter, T_CMD)?
        .trim()
        .parse()
        .map_err(|_| Fail("no TcpExt BusyPollRxPackets in the guest".into()))?;
    let r = vm.sh("engine engine --zero-copy on -q --busy-poll", T_ENGINE)?;
    if !r.ok() {
        return Err(Fail(format!(
            "xdpip run --busy-poll did not start: {}",
            r.out.trim()
        )));
    }
    let result = (|| {
        let states = |s: &Value| -> Vec<(String, u64, String)> {
            s["busy_poll"]["sockets"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|x| {
                    (
                        x["iface"].as_str().unwrap_or("?").to_string(),
                        x["queue"].as_u64().unwrap_or(0),
                        x["state"].as_str().unwrap_or("?").to_string(),
                    )
                })
                .collect()
        };
        let s = stats(vm)?;
        if s["busy_poll"].is_null() {
            return Err(Fail(
                "xdpip stats --json has no busy_poll report though --busy-poll was given".into(),
            ));
        }
        let total = queues(vm, "xa")? + queues(vm, "xb")?;
        if states(&s).len() != total as usize {
            return Err(Fail(format!(
                "busy polling set up on {} sockets, expected {total}: {}",
                states(&s).len(),
                s["busy_poll"]
            )));
        }
        warm_up(vm);
        // The engine checks once a second; traffic both ways until it has
        // seen busy polling engage on both NICs, for at most 4 rounds.
        let mut last = s;
        for round in 0..4 {
            let (sa, ga) = ping(&vm.a, HOST_B, 30, 56, "0.02")?;
            let (sb, gb) = ping(&vm.b, HOST_A, 30, 56, "0.02")?;
            if ga != sa || gb != sb {
                return Err(Fail(format!(
                    "with --busy-poll: a->b {ga}/{sa}, b->a {gb}/{sb} replies; {}",
                    socket_state(vm)
                )));
            }
            if round == 0 {
                udp_flow(&vm.a, HOST_A, &vm.b, HOST_B, &[64, 1000], 40, false)?;
                udp_flow(&vm.b, HOST_B, &vm.a, HOST_A, &[64, 1000], 40, false)?;
            }
            std::thread::sleep(Duration::from_millis(1500));
            last = stats(vm)?;
            let st = states(&last);
            let engaged = |i: &str| st.iter().any(|(f, _, s)| f == i && s == "engaged");
            if engaged("xa") && engaged("xb") {
                break;
            }
        }
        let after: u64 = must(vm, counter, T_CMD)?.trim().parse().unwrap_or(0);
        let st = states(&last);
        let shown: Vec<String> = st.iter().map(|(i, q, s)| format!("{i}:q{q} {s}")).collect();
        let engine_count = last["busy_poll"]["busy_poll_rx_packets"]
            .as_u64()
            .unwrap_or(0);
        // Where the driver transmits from another NAPI than the one busy
        // polling runs, the engine leaves SO_PREFER_BUSY_POLL off.
        let log = must(vm, "cat /tmp/engine.log", T_CMD)?;
        let not_preferred = log
            .lines()
            .filter(|l| l.contains("SO_PREFER_BUSY_POLL left off"))
            .count();
        let seen = format!(
            "BusyPollRxPackets {before} -> {after} (engine: +{engine_count}); sockets: {}; \
             SO_PREFER_BUSY_POLL left off on {not_preferred}",
            shown.join(", ")
        );
        if after <= before {
            return Err(Fail(format!("{seen}: the counter did not move")));
        }
        if let Some((i, q, state)) = st
            .iter()
            .find(|(_, _, s)| s == "not_engaged" || s == "unavailable")
        {
            let why = last["busy_poll"]["sockets"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|x| x["iface"] == i.as_str() && x["queue"].as_u64() == Some(*q))
                .map(|x| x["reason"].to_string())
                .unwrap_or_default();
            return Err(Fail(format!("{seen}: {i} queue {q} is {state}: {why}")));
        }
        for iface in ["xa", "xb"] {
            if !st.iter().any(|(i, _, s)| i == iface && s == "engaged") {
                return Err(Fail(format!(
                    "{seen}: the engine reports no socket of {iface} engaged"
                )));
            }
        }
        Ok(seen)
    })();
    let stopped = stop_and_detached(vm, "engine");
    let out = result?;
    stopped?;
    Ok(out)
}

/// The engine's sockets now, for a failure seen while it runs: frames
/// out on each tx ring, and the wake-up calls of each worker.
fn socket_state(vm: &mut Vm) -> String {
    let Ok(s) = stats(vm) else {
        return "no xdpip stats".into();
    };
    let mut v = Vec::new();
    for w in s["workers"].as_array().into_iter().flatten() {
        for x in w["sockets"].as_array().into_iter().flatten() {
            v.push(format!(
                "{}:q{} tx_in_flight {}",
                x["iface"].as_str().unwrap_or("?"),
                x["queue"],
                x["tx_in_flight"]
            ));
        }
        v.push(format!("worker {} wakeups {}", w["id"], w["wakeups"]));
    }
    format!("engine: {}", v.join(", "))
}

/// What the guest and the host saw, for a failed check: the NICs' queue
/// counters and interrupts, the AF_XDP sockets, the engine's counters and
/// log, the kernel log, and the host side of the taps. All of it is in the
/// run's commands.log; the counters that tell where frames stopped are
/// printed here.
fn diagnose(vm: &mut Vm) {
    let show = |what: &str, text: &str| {
        for l in text.lines().filter(|l| !l.trim().is_empty()) {
            eprintln!("    {what}: {}", l.trim_end());
        }
    };
    eprintln!("    --- diagnostics (everything in commands.log) ---");
    let cmds = [
        ("nic", "for i in xa xb; do echo \"$i: $(ethtool -S $i | grep -vE ': 0$|NIC stat' | tr -s ' \\n' ' ')\"; done"),
        ("irq", "grep -E 'virtio|xa|xb|igb|eth' /proc/interrupts | tr -s ' '"),
        ("xsk", "ss -a -O -e --xdp"),
        ("log", "tail -n 15 /tmp/engine.log"),
        ("dmesg", "dmesg | tail -n 15"),
    ];
    for (what, cmd) in cmds {
        match vm.sh(cmd, Duration::from_secs(60)) {
            Ok(r) => show(what, &r.out),
            Err(e) => show(what, &e.0),
        }
    }
    if let Ok(s) = stats(vm) {
        for p in s["ports"].as_array().into_iter().flatten() {
            eprintln!("    engine: {p}");
        }
        for w in s["workers"].as_array().into_iter().flatten() {
            for x in w["sockets"].as_array().into_iter().flatten() {
                eprintln!(
                    "    engine: worker {} {}:q{} in_flight {} {}",
                    w["id"], x["iface"], x["queue"], x["tx_in_flight"], x["xdp_statistics"]
                );
            }
            eprintln!("    engine: worker {} wakeups {}", w["id"], w["wakeups"]);
        }
    }
    for (ns, tap) in [(&vm.a, &vm.tap_a), (&vm.b, &vm.tap_b)] {
        match ns.ip(&["-s", "-o", "link", "show", tap]) {
            Ok(o) => show("host", &String::from_utf8_lossy(&o.stdout)),
            Err(e) => show("host", &e.to_string()),
        }
    }
}

/// Where the device reads the virtio-net header of zero-copy frames.
///
/// virtio_net (Linux 6.13 to at least 7.3.4, built as a module) DMA-maps the
/// header it puts before every AF_XDP frame from a static variable of the
/// module. `dma_map_single()` of a module address is not allowed (module
/// memory is not in the linear map); on x86-64 `__pa()` takes it for a
/// kernel-image address and returns `addr - __START_KERNEL_map +
/// phys_base`, a page that has nothing to do with the variable. The device
/// reads the header from that page: zeros, or garbage that makes QEMU's tap
/// drop every frame the engine transmits (the transmit stall,
/// docs/TUNING.md). With KASLR the page is random. The guest boots with
/// `nokaslr` (`phys_base` 0) and 1 GiB of RAM, which puts every module
/// address's `__pa()` at 1 GiB or above: past the end of RAM, where QEMU
/// reads zeros. This check verifies that from the kernel's own numbers
/// and QEMU's page-table walk, and fails if the page can be RAM.
fn virtio_tx_header(vm: &mut Vm) -> Check {
    const START_KERNEL_MAP: u64 = 0xffff_ffff_8000_0000;
    let hex = |s: &str| u64::from_str_radix(s.trim().trim_start_matches("0x"), 16).ok();
    let facts = must(
        vm,
        "grep -m1 -w _text /proc/kallsyms; cat /sys/module/virtio_net/sections/.bss; \
         grep 'System RAM' /proc/iomem",
        T_CMD,
    )?;
    let text = facts
        .lines()
        .find(|l| l.ends_with(" _text"))
        .and_then(|l| hex(l.split_whitespace().next()?))
        .ok_or_else(|| Fail(format!("no _text in /proc/kallsyms: {facts}")))?;
    let bss = facts
        .lines()
        .find(|l| l.starts_with("0x"))
        .and_then(hex)
        .ok_or_else(|| Fail(format!("no .bss of virtio_net: {facts}")))?;
    let ram_end = facts
        .lines()
        .filter(|l| l.contains("System RAM"))
        .filter_map(|l| hex(l.trim().split(['-', ' ']).nth(1)?))
        .max()
        .ok_or_else(|| Fail(format!("no System RAM in /proc/iomem: {facts}")))?
        + 1;
    let gpa = |vm: &mut Vm, va: u64| -> Result<u64, Fail> {
        let r = vm.monitor(&format!("gva2gpa {va:#x}"))?;
        r.trim()
            .strip_prefix("gpa: ")
            .and_then(hex)
            .ok_or_else(|| Fail(format!("gva2gpa {va:#x}: {}", r.trim())))
    };
    let phys_base = gpa(vm, text)?.wrapping_sub(text - START_KERNEL_MAP);
    let bss_real = gpa(vm, bss)?;
    // Where __pa() puts the module's data, hence the header's DMA address.
    let bss_pa = (bss - START_KERNEL_MAP).wrapping_add(phys_base);
    let seen = format!(
        "virtio_net's data lies at {bss_real:#x}, but __pa() of it is {bss_pa:#x} \
         (phys_base {phys_base:#x}); RAM ends at {ram_end:#x}"
    );
    if bss_pa < ram_end {
        return Err(Fail(format!(
            "{seen}: the device reads the header of zero-copy frames from RAM that is not \
             the driver's header; frames are mangled or dropped whenever that RAM is not zero"
        )));
    }
    Ok(format!(
        "{seen}: the device reads zeros past the end of RAM"
    ))
}
