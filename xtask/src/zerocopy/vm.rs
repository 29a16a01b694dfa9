//! One guest: QEMU under software emulation (KVM here cannot run stock
//! kernels) with two NICs on host taps, each tap moved into a network
//! namespace of its own, and a command channel on the guest's second
//! serial port.
//!
//! Namespaces have unique names (testbed's `xdpt-<pid>-...`), taps carry
//! the process id (`zc<pid>a`, `zc<pid>b`). Everything is removed when the
//! [`Vm`] is dropped, and on SIGINT, SIGTERM or SIGHUP by [`on_signals`];
//! QEMU dies with this process (PR_SET_PDEATHSIG).

use std::fs;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use testbed::Netns;

use super::Fail;

/// The NIC model under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    /// virtio-net, with `disable-legacy=on,iommu_platform=on`: without
    /// them the zero-copy bind fails with EINVAL (virtio_net's XSK needs
    /// the DMA API).
    Virtio,
    /// igb (Intel 82576), on q35 with a PCIe root port per NIC.
    Igb,
}

impl Driver {
    /// How reports name it.
    pub fn name(self) -> &'static str {
        match self {
            Driver::Virtio => "virtio-net",
            Driver::Igb => "igb",
        }
    }

    /// The guest kernel's driver name (`ethtool -i`).
    pub fn kernel_driver(self) -> &'static str {
        match self {
            Driver::Virtio => "virtio_net",
            Driver::Igb => "igb",
        }
    }
}

/// Addresses: host side A (10.99.1.1) -- xa (10.99.1.2) guest xb
/// (10.99.2.2) -- host side B (10.99.2.1).
pub const HOST_A: &str = "10.99.1.1";
pub const GUEST_A: &str = "10.99.1.2";
pub const GUEST_B: &str = "10.99.2.2";
pub const HOST_B: &str = "10.99.2.1";

/// What is alive now, for the signal handler.
struct Live {
    qemu: i32,
    netns: Vec<String>,
}

static LIVE: Mutex<Vec<Live>> = Mutex::new(Vec::new());
static SIGNAL_PIPE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(_: libc::c_int) {
    let fd = SIGNAL_PIPE.load(Ordering::Relaxed);
    if fd >= 0 {
        // SAFETY: write(2) is async-signal-safe; the buffer is static.
        unsafe { libc::write(fd, b"x".as_ptr().cast(), 1) };
    }
}

/// Installs handlers for SIGINT, SIGTERM and SIGHUP that kill the guests
/// and delete their namespaces, then exit with status 130. The handler
/// only wakes a thread, which does the work.
pub fn on_signals() {
    let mut fds = [0; 2];
    // SAFETY: a pipe for the handler to write to.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return;
    }
    SIGNAL_PIPE.store(fds[1], Ordering::Relaxed);
    let read_fd = fds[0];
    std::thread::spawn(move || {
        let mut b = [0u8; 1];
        // SAFETY: reads one byte from our pipe.
        let n = unsafe { libc::read(read_fd, b.as_mut_ptr().cast(), 1) };
        if n != 1 {
            return;
        }
        eprintln!("\nzerocopy: interrupted; stopping the guest and removing its namespaces");
        let live = LIVE.lock().map(|l| {
            l.iter()
                .map(|x| (x.qemu, x.netns.clone()))
                .collect::<Vec<_>>()
        });
        for (pid, names) in live.unwrap_or_default() {
            // SAFETY: kill and waitpid on our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
            for n in names {
                // What runs inside (host-side pings) would keep it alive.
                if let Ok(o) = Command::new("ip").args(["netns", "pids", &n]).output() {
                    for p in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                        if let Ok(p) = p.parse::<i32>() {
                            // SAFETY: kill has no memory preconditions.
                            unsafe { libc::kill(p, libc::SIGKILL) };
                        }
                    }
                }
                let _ = Command::new("ip").args(["netns", "del", &n]).status();
            }
        }
        std::process::exit(130);
    });
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: a handler that only calls write(2).
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as *const () as usize;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

/// What a guest boots from.
pub struct Boot<'a> {
    pub qemu: &'a str,
    pub vmlinuz: &'a Path,
    pub initrd: &'a Path,
    /// Where its logs go (console.log, qemu.log, commands.log).
    pub dir: &'a Path,
    /// How long it may take to answer.
    pub boot_timeout: Duration,
}

/// A command's answer.
#[derive(Debug)]
pub struct Reply {
    pub status: i32,
    pub out: String,
}

impl Reply {
    pub fn ok(&self) -> bool {
        self.status == 0
    }
}

/// A running guest.
pub struct Vm {
    pub driver: Driver,
    /// The host namespace on xa's side, and on xb's.
    pub a: Netns,
    pub b: Netns,
    pub tap_a: String,
    pub tap_b: String,
    qemu: Child,
    chan: Option<UnixStream>,
    buf: Vec<u8>,
    next: u64,
    broken: Option<String>,
    pub console: PathBuf,
    transcript: fs::File,
    sock: PathBuf,
    /// QEMU's human monitor, to look at the devices from outside.
    mon: PathBuf,
    /// What the guest said when it was ready.
    pub ready_line: String,
}

fn tap_exists(name: &str) -> bool {
    Path::new(&format!("/sys/class/net/{name}")).exists()
}

fn ip(args: &[&str]) -> Result<(), Fail> {
    testbed::sh(&[&["ip"], args].concat())
        .map(|_| ())
        .map_err(|e| Fail(e.to_string()))
}

impl Vm {
    /// Boots a guest with two NICs of `driver` and waits until it serves
    /// commands.
    pub fn boot(driver: Driver, b: &Boot) -> Result<Vm, Fail> {
        fs::create_dir_all(b.dir).map_err(|e| Fail(format!("{}: {e}", b.dir.display())))?;
        let pid = std::process::id();
        let tap_a = format!("zc{pid}a");
        let tap_b = format!("zc{pid}b");
        // A guest just killed may still hold them for a moment.
        let t = Instant::now();
        while (tap_exists(&tap_a) || tap_exists(&tap_b)) && t.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(100));
        }
        let ns_a = Netns::new("zca").map_err(|e| Fail(format!("creating a namespace: {e}")))?;
        let ns_b = Netns::new("zcb").map_err(|e| Fail(format!("creating a namespace: {e}")))?;
        let console = b.dir.join("console.log");
        let _ = fs::remove_file(&console);
        let mut sock = b.dir.join("cmd.sock");
        if sock.as_os_str().len() > 100 {
            sock = PathBuf::from(format!("/tmp/xdpip-zc-{pid}.sock"));
        }
        let _ = fs::remove_file(&sock);
        let mon = sock.with_extension("mon");
        let _ = fs::remove_file(&mon);
        let qlog = fs::File::create(b.dir.join("qemu.log"))
            .map_err(|e| Fail(format!("{}: {e}", b.dir.display())))?;

        let mut cmd = Command::new(b.qemu);
        cmd.args([
            "-accel",
            "tcg,thread=multi",
            "-cpu",
            "max",
            "-m",
            "1024",
            "-smp",
            "2",
        ])
        .args(["-nodefaults", "-display", "none", "-no-reboot"])
        .arg("-serial")
        .arg(format!("file:{}", console.display()))
        .arg("-chardev")
        .arg(format!(
            "socket,id=cmd,path={},server=on,wait=off",
            sock.display()
        ))
        .args(["-serial", "chardev:cmd"])
        .arg("-monitor")
        .arg(format!("unix:{},server=on,wait=off", mon.display()))
        .arg("-kernel")
        .arg(b.vmlinuz)
        .arg("-initrd")
        .arg(b.initrd)
        .arg("-append")
        .arg(match driver {
            // See docs/TUNING.md: with KASLR, virtio_net's misplaced XSK
            // header may land on any page of the guest's RAM.
            Driver::Virtio => "console=ttyS0 panic=-1 quiet nokaslr",
            Driver::Igb => "console=ttyS0 panic=-1 quiet",
        });
        for (i, tap) in [&tap_a, &tap_b].iter().enumerate() {
            let mac = format!("52:54:00:99:0{}:02", i + 1);
            match driver {
                Driver::Virtio => {
                    cmd.arg("-netdev")
                        .arg(format!(
                            "tap,id=n{i},ifname={tap},script=no,downscript=no,queues=2"
                        ))
                        .arg("-device")
                        .arg(format!(
                            "virtio-net-pci,netdev=n{i},mac={mac},mq=on,vectors=6,\
                             disable-legacy=on,iommu_platform=on"
                        ));
                }
                Driver::Igb => {
                    cmd.arg("-device")
                        .arg(format!("pcie-root-port,id=rp{i},chassis={}", i + 1))
                        .arg("-netdev")
                        .arg(format!("tap,id=n{i},ifname={tap},script=no,downscript=no"))
                        .arg("-device")
                        .arg(format!("igb,netdev=n{i},bus=rp{i},mac={mac}"));
                }
            }
        }
        if driver == Driver::Igb {
            cmd.args(["-machine", "q35"]);
        }
        cmd.stdin(Stdio::null())
            .stdout(qlog.try_clone().map_err(|e| Fail(e.to_string()))?)
            .stderr(qlog);
        // SAFETY: prctl is async-signal-safe; QEMU dies with this process.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let qemu = cmd
            .spawn()
            .map_err(|e| Fail(format!("cannot run {}: {e}", b.qemu)))?;
        if let Ok(mut l) = LIVE.lock() {
            l.push(Live {
                qemu: qemu.id() as i32,
                netns: vec![ns_a.name().to_string(), ns_b.name().to_string()],
            });
        }
        let transcript = fs::File::create(b.dir.join("commands.log"))
            .map_err(|e| Fail(format!("{}: {e}", b.dir.display())))?;
        let mut vm = Vm {
            driver,
            a: ns_a,
            b: ns_b,
            tap_a,
            tap_b,
            qemu,
            chan: None,
            buf: Vec::new(),
            next: 1,
            broken: None,
            console,
            transcript,
            sock,
            mon,
            ready_line: String::new(),
        };
        vm.connect(b)?;
        Ok(vm)
    }

    fn qemu_exited(&mut self, dir: &Path) -> Option<Fail> {
        match self.qemu.try_wait() {
            Ok(Some(s)) => Some(Fail(format!(
                "QEMU exited ({s}): {}",
                fs::read_to_string(dir.join("qemu.log"))
                    .unwrap_or_default()
                    .trim()
            ))),
            _ => None,
        }
    }

    fn connect(&mut self, b: &Boot) -> Result<(), Fail> {
        let t = Instant::now();
        // The taps appear when QEMU has set up its NICs.
        while !(tap_exists(&self.tap_a) && tap_exists(&self.tap_b)) {
            if let Some(f) = self.qemu_exited(b.dir) {
                return Err(f);
            }
            if t.elapsed() > Duration::from_secs(60) {
                return Err(Fail(format!(
                    "QEMU did not create taps {} and {} within 60 s",
                    self.tap_a, self.tap_b
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        for (tap, ns, me, guest, other) in [
            (&self.tap_a, &self.a, HOST_A, GUEST_A, "10.99.2.0/24"),
            (&self.tap_b, &self.b, HOST_B, GUEST_B, "10.99.1.0/24"),
        ] {
            ip(&["link", "set", tap, "netns", ns.name()])?;
            ns.ip(&["addr", "add", &format!("{me}/24"), "dev", tap])
                .and_then(|_| ns.ip(&["link", "set", tap, "up"]))
                .and_then(|_| ns.ip(&["route", "add", other, "via", guest]))
                .map_err(|e| Fail(format!("configuring {tap} in {}: {e}", ns.name())))?;
        }
        while self.chan.is_none() {
            match UnixStream::connect(&self.sock) {
                Ok(s) => self.chan = Some(s),
                Err(e) => {
                    if let Some(f) = self.qemu_exited(b.dir) {
                        return Err(f);
                    }
                    if t.elapsed() > Duration::from_secs(60) {
                        return Err(Fail(format!(
                            "QEMU's command socket {}: {e}",
                            self.sock.display()
                        )));
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
        // The guest says READY on its console once the command server runs.
        loop {
            let text = fs::read_to_string(&self.console).unwrap_or_default();
            // Whole lines only: QEMU may have written part of one.
            let mut lines = text.split_inclusive('\n').filter(|l| l.ends_with('\n'));
            if let Some(l) = lines.clone().find(|l| l.starts_with("ZC ERROR")) {
                return Err(Fail(format!("guest: {}", l.trim())));
            }
            if let Some(l) = lines.find(|l| l.starts_with("ZC READY")) {
                self.ready_line = l.trim().to_string();
                break;
            }
            if let Some(f) = self.qemu_exited(b.dir) {
                return Err(Fail(format!("{} (console: {})", f.0, tail(&text, 15))));
            }
            if t.elapsed() > b.boot_timeout {
                return Err(Fail(format!(
                    "the guest was not ready within {} s; console: {}",
                    b.boot_timeout.as_secs(),
                    tail(&text, 15)
                )));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        // The first answer proves the channel; a lost line is sent again.
        for _ in 0..6 {
            if self.exchange("true", Duration::from_secs(10))?.is_some() {
                return Ok(());
            }
        }
        Err(Fail("the guest's command server did not answer".into()))
    }

    /// Runs `cmd` (a line of shell, with /etc/zc/lib.sh loaded) in the guest
    /// and returns its status and output. If the guest does not answer in
    /// `timeout`, the channel is given up and every later command fails.
    pub fn sh(&mut self, cmd: &str, timeout: Duration) -> Result<Reply, Fail> {
        if let Some(b) = &self.broken {
            return Err(Fail(format!("not run: {b}")));
        }
        match self.exchange(cmd, timeout)? {
            Some(r) => Ok(r),
            None => {
                let why = format!(
                    "the guest did not answer `{cmd}` within {} s",
                    timeout.as_secs()
                );
                self.broken = Some(why.clone());
                Err(Fail(why))
            }
        }
    }

    /// Sends a command and waits for its answer; None when none came in
    /// time.
    fn exchange(&mut self, cmd: &str, timeout: Duration) -> Result<Option<Reply>, Fail> {
        let id = self.next;
        self.next += 1;
        let _ = writeln!(self.transcript, "$ {cmd}");
        let chan = self.chan.as_mut().expect("connected");
        if let Err(e) = chan.write_all(format!("{id}\t{cmd}\n").as_bytes()) {
            let why = format!("the guest's command channel failed: {e}");
            self.broken = Some(why.clone());
            return Err(Fail(why));
        }
        let marker = format!("\n@@END {id} ").into_bytes();
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(at) = find(&self.buf, &marker) {
                let rest = &self.buf[at + marker.len()..];
                if let Some(nl) = rest.iter().position(|&b| b == b'\n') {
                    let status = String::from_utf8_lossy(&rest[..nl])
                        .trim()
                        .parse()
                        .unwrap_or(-1);
                    let out = String::from_utf8_lossy(&self.buf[..at]).into_owned();
                    // Drop what belonged to this command (and stale answers).
                    self.buf.drain(..at + marker.len() + nl + 1);
                    let _ = writeln!(self.transcript, "{out}\n[status {status}]");
                    return Ok(Some(Reply { status, out }));
                }
            }
            let now = Instant::now();
            if now >= deadline {
                let _ = writeln!(
                    self.transcript,
                    "{}\n[no answer within {} s]",
                    String::from_utf8_lossy(&self.buf),
                    timeout.as_secs()
                );
                return Ok(None);
            }
            let _ = chan.set_read_timeout(Some((deadline - now).min(Duration::from_millis(200))));
            let mut b = [0u8; 4096];
            match chan.read(&mut b) {
                Ok(0) => {
                    let why = "the guest's command channel closed".to_string();
                    self.broken = Some(why.clone());
                    return Err(Fail(why));
                }
                Ok(n) => self.buf.extend_from_slice(&b[..n]),
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(e) => {
                    let why = format!("the guest's command channel failed: {e}");
                    self.broken = Some(why.clone());
                    return Err(Fail(why));
                }
            }
        }
    }

    /// Runs a command of QEMU's human monitor (`info virtio`, `xp`, ...)
    /// and returns its output.
    pub fn monitor(&mut self, cmd: &str) -> Result<String, Fail> {
        let mut s = UnixStream::connect(&self.mon)
            .map_err(|e| Fail(format!("QEMU monitor {}: {e}", self.mon.display())))?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        let prompt = b"(qemu) ";
        let read_to_prompt = |s: &mut UnixStream| -> Result<Vec<u8>, Fail> {
            let mut got = Vec::new();
            let mut b = [0u8; 4096];
            while !got.ends_with(prompt) {
                let n = s
                    .read(&mut b)
                    .map_err(|e| Fail(format!("QEMU monitor: {e}")))?;
                if n == 0 {
                    return Err(Fail("QEMU monitor closed".into()));
                }
                got.extend_from_slice(&b[..n]);
            }
            Ok(got)
        };
        read_to_prompt(&mut s)?;
        s.write_all(format!("{cmd}\n").as_bytes())?;
        let out = read_to_prompt(&mut s)?;
        let text = String::from_utf8_lossy(&out[..out.len() - prompt.len()]).replace('\r', "");
        // The monitor echoes the command line first.
        let body = text.split_once('\n').map_or("", |(_, b)| b);
        let _ = writeln!(self.transcript, "(qemu) {cmd}\n{body}");
        Ok(body.to_string())
    }

    /// True once a command went unanswered.
    pub fn unresponsive(&self) -> bool {
        self.broken.is_some()
    }

    /// The last lines of the guest's console.
    pub fn console_tail(&self, n: usize) -> String {
        tail(&fs::read_to_string(&self.console).unwrap_or_default(), n)
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.qemu.kill();
        let _ = self.qemu.wait();
        let pid = self.qemu.id() as i32;
        if let Ok(mut l) = LIVE.lock() {
            l.retain(|x| x.qemu != pid);
        }
        let _ = fs::remove_file(&self.sock);
        let _ = fs::remove_file(&self.mon);
        // The namespaces go with self.a and self.b.
    }
}
