//! An iperf3 server whose UDP data path is an engine socket.
//!
//! ```text
//! iperf3_server -i IFACE [-i IFACE ...] [-p PORT] [--bind ADDR] [--once]
//! ```
//!
//! The stock `iperf3` client runs UDP tests against it:
//! `iperf3 -u -c ADDR -p PORT -b RATE -t SECS -l LEN`, and `-R` (the
//! server sends). The control connection is a kernel TCP listener on the
//! same port number: binding the UDP port steers only UDP to the engine.
//! One test at a time, one stream; a TCP test, `-P` above 1 and `--bidir`
//! are refused with the error message the client prints. Serves until
//! SIGINT or SIGTERM (after the first test with `--once`), then prints the
//! engine's UDP counters.
//!
//! The protocol, as iperf3 3.x speaks it: the client connects over TCP and
//! writes a 37-byte cookie; from then on the server drives the test with
//! one-byte states (PARAM_EXCHANGE, CREATE_STREAMS, TEST_START,
//! TEST_RUNNING, EXCHANGE_RESULTS, DISPLAY_RESULTS) and the client answers
//! with its parameters and results as JSON behind a 4-byte big-endian
//! length, and with TEST_END, IPERF_DONE or CLIENT_TERMINATE. A UDP stream
//! opens with a 4-byte datagram from the client that the server answers
//! with another; every data datagram starts with the send time (seconds
//! and microseconds of CLOCK_MONOTONIC, 32 bits each) and a sequence
//! number from 1 (32 bits, or 64 with `--udp-counters-64bit`), all big
//! endian.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use xdpip::socket::{RecvMeta, UdpSocket};

/// Control states (`signed char` on the wire).
mod state {
    pub const TEST_START: i8 = 1;
    pub const TEST_RUNNING: i8 = 2;
    pub const TEST_END: i8 = 4;
    pub const PARAM_EXCHANGE: i8 = 9;
    pub const CREATE_STREAMS: i8 = 10;
    pub const SERVER_TERMINATE: i8 = 11;
    pub const CLIENT_TERMINATE: i8 = 12;
    pub const EXCHANGE_RESULTS: i8 = 13;
    pub const DISPLAY_RESULTS: i8 = 14;
    pub const IPERF_DONE: i8 = 16;
    pub const ACCESS_DENIED: i8 = -1;
    pub const SERVER_ERROR: i8 = -2;
}

/// The client's error numbers (`i_errno`) we send with SERVER_ERROR; the
/// client prints its own text for them.
/// "an option you are trying to set is not implemented yet"
const IE_UNIMP: i32 = 13;
/// "unable to start stream listener: <strerror(errno)>"
const IE_STREAM_LISTEN: i32 = 202;

const COOKIE_SIZE: usize = 37;
/// The stream opening datagram and its answer: 4-byte integers the client
/// writes and compares in host order. Old clients sent 123456789.
const UDP_CONNECT_MSG: u32 = 0x3637_3839;
const LEGACY_UDP_CONNECT_MSG: u32 = 123_456_789;
const UDP_CONNECT_REPLY: u32 = 0x3938_3736;
/// The one stream's id: iperf3 numbers the first stream 1.
const STREAM_ID: u32 = 1;
/// The real server gives a test this long beyond its duration before it
/// gives up on the client (4 s for each of 10 state changes).
const GRACE: Duration = Duration::from_secs(40);
/// How often blocking waits look at the stop flag.
const TICK: Duration = Duration::from_millis(100);
/// Room for the largest UDP payload, so nothing is truncated.
const DGRAM_MAX: usize = 65536;
const BATCH: usize = 32;

fn usage() -> ! {
    eprintln!(
        "usage: iperf3_server -i IFACE [-i IFACE ...] [-p PORT (5201)] [--bind ADDR] [--once]"
    );
    std::process::exit(2);
}

/// Counts over the server's life, printed at exit next to the engine's
/// MIB: every datagram taken from the socket is in exactly one of them.
#[derive(Default)]
struct Totals {
    tests: AtomicU64,
    data: AtomicU64,
    connects: AtomicU64,
    /// From another peer, or queued between tests.
    other: AtomicU64,
    sent: AtomicU64,
}

struct Server<'a> {
    sock: &'a UdpSocket,
    stop: &'a AtomicBool,
    totals: &'a Totals,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut ifaces = Vec::new();
    let mut port = 5201u16;
    let mut bind = Ipv4Addr::UNSPECIFIED;
    let mut once = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "-i" | "--interface" => ifaces.push(args.next().unwrap_or_else(|| usage())),
            "-p" | "--port" => {
                let v = args.next().unwrap_or_else(|| usage());
                port = v.parse().map_err(|e| format!("-p {v}: {e}"))?;
            }
            "--bind" | "-B" => {
                let v = args.next().unwrap_or_else(|| usage());
                bind = v.parse().map_err(|e| format!("--bind {v}: {e}"))?;
            }
            "--once" | "-1" => once = true,
            _ => usage(),
        }
    }
    if ifaces.is_empty() || port == 0 {
        usage();
    }

    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGINT, stop.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGTERM, stop.clone())?;

    let mut b = xdpip::Engine::builder();
    for i in &ifaces {
        b = b.interface(i.as_str());
    }
    let engine = b.start()?;
    let sock = engine.udp_socket()?;
    sock.bind(SocketAddrV4::new(bind, port))?;
    let listener = TcpListener::bind(SocketAddrV4::new(bind, port))?;
    // Accepting never blocks, so that a signal is noticed.
    listener.set_nonblocking(true)?;
    println!(
        "iperf3_server: serving {} (UDP on the engine, TCP control on the kernel) on {}",
        SocketAddrV4::new(bind, port),
        ifaces.join(", ")
    );

    let totals = Totals::default();
    let server = Server {
        sock: &sock,
        stop: &stop,
        totals: &totals,
    };
    std::thread::scope(|s| {
        let mut running: Option<std::thread::ScopedJoinHandle<'_, ()>> = None;
        let mut served = 0u64;
        while !stop.load(Ordering::Relaxed) {
            if running.as_ref().is_some_and(|h| h.is_finished()) {
                let _ = running.take().map(|h| h.join());
                served += 1;
            }
            if once && served > 0 {
                break;
            }
            let (ctrl, peer) = match listener.accept() {
                Ok(c) => c,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
                Err(e) => {
                    eprintln!("iperf3_server: accept: {e}");
                    continue;
                }
            };
            if running.is_some() || (once && served > 0) {
                // As the real server: one test at a time, the others are
                // told the server is busy, without reading their cookie.
                println!("iperf3_server: {peer} refused: a test is running");
                let mut c = ctrl;
                let _ = c.write_all(&[state::ACCESS_DENIED as u8]);
                continue;
            }
            let server = &server;
            running = Some(s.spawn(move || {
                let n = server.totals.tests.fetch_add(1, Ordering::Relaxed) + 1;
                if let Err(e) = server.serve(n, ctrl, peer) {
                    println!("iperf3_server: test {n} from {peer}: {e}");
                }
            }));
        }
        if let Some(h) = running {
            let _ = h.join();
        }
    });

    // Whatever came after the last test, so that the counts below add up
    // to the engine's.
    server.drain(None);
    let report = engine.stop();
    let t = &totals;
    println!(
        "iperf3_server: tests {} datagrams {} (data {} connect {} other {}) sent {}; \
         UdpInDatagrams {} UdpOutDatagrams {} UdpInErrors {} UdpRcvbufErrors {}",
        t.tests.load(Ordering::Relaxed),
        t.data.load(Ordering::Relaxed)
            + t.connects.load(Ordering::Relaxed)
            + t.other.load(Ordering::Relaxed),
        t.data.load(Ordering::Relaxed),
        t.connects.load(Ordering::Relaxed),
        t.other.load(Ordering::Relaxed),
        t.sent.load(Ordering::Relaxed),
        report.mib["UdpInDatagrams"],
        report.mib["UdpOutDatagrams"],
        report.mib["UdpInErrors"],
        report.mib["UdpRcvbufErrors"]
    );
    Ok(())
}

/// Why a test ended early.
#[derive(Debug)]
enum Abort {
    /// Our signal: the client is told SERVER_TERMINATE.
    Stopped,
    Io(io::Error),
    Protocol(String),
}

impl std::fmt::Display for Abort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Abort::Stopped => write!(f, "stopped by a signal"),
            Abort::Io(e) => write!(f, "{e}"),
            Abort::Protocol(m) => write!(f, "{m}"),
        }
    }
}

impl From<io::Error> for Abort {
    fn from(e: io::Error) -> Self {
        Abort::Io(e)
    }
}

/// The parameters a client sends, with iperf3's defaults; numbers are read
/// leniently (cJSON writes integers, but nothing forbids 5e7).
struct Params {
    udp: bool,
    parallel: u64,
    reverse: bool,
    bidirectional: bool,
    time: f64,
    omit: f64,
    len: usize,
    bandwidth: f64,
    pacing_timer_us: u64,
    burst: u64,
    bytes: u64,
    blocks: u64,
    counters_64bit: bool,
    server_output: bool,
    client_version: String,
}

impl Params {
    fn from_json(j: &Value) -> Params {
        let num = |k: &str| j.get(k).and_then(Value::as_f64).unwrap_or(0.0);
        Params {
            udp: j.get("udp").is_some(),
            parallel: (num("parallel") as u64).max(1),
            reverse: j.get("reverse").is_some(),
            bidirectional: j.get("bidirectional").is_some(),
            time: num("time"),
            omit: num("omit"),
            len: match num("len") as usize {
                0 => 1460,
                n => n,
            },
            bandwidth: num("bandwidth"),
            pacing_timer_us: match num("pacing_timer") as u64 {
                0 => 1000,
                n => n,
            },
            burst: num("burst") as u64,
            bytes: num("num") as u64,
            blocks: num("blockcount") as u64,
            counters_64bit: j.get("udp_counters_64bit").is_some(),
            server_output: j.get("get_server_output").is_some(),
            client_version: j
                .get("client_version")
                .and_then(Value::as_str)
                .unwrap_or("?")
                .to_string(),
        }
    }
    fn header_len(&self) -> usize {
        if self.counters_64bit {
            16
        } else {
            12
        }
    }
}

/// The control connection: blocking reads and writes that give up on a
/// signal or a deadline.
struct Ctrl<'a> {
    s: TcpStream,
    stop: &'a AtomicBool,
}

impl Ctrl<'_> {
    fn read_full(&mut self, buf: &mut [u8], deadline: Instant) -> Result<(), Abort> {
        let mut got = 0;
        while got < buf.len() {
            if self.stop.load(Ordering::Relaxed) {
                return Err(Abort::Stopped);
            }
            if Instant::now() > deadline {
                return Err(Abort::Protocol("the client went silent".into()));
            }
            match self.s.read(&mut buf[got..]) {
                Ok(0) => {
                    return Err(Abort::Protocol(
                        "the client has unexpectedly closed the connection".into(),
                    ))
                }
                Ok(n) => got += n,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    fn read_state(&mut self, deadline: Instant) -> Result<i8, Abort> {
        let mut b = [0u8];
        self.read_full(&mut b, deadline)?;
        Ok(b[0] as i8)
    }

    fn send_state(&mut self, s: i8) -> io::Result<()> {
        self.s.write_all(&[s as u8])
    }

    fn read_json(&mut self, deadline: Instant) -> Result<Value, Abort> {
        let mut len = [0u8; 4];
        self.read_full(&mut len, deadline)?;
        let len = u32::from_be_bytes(len) as usize;
        if len > 1 << 20 {
            return Err(Abort::Protocol(format!("a {len}-byte JSON block")));
        }
        let mut body = vec![0u8; len];
        self.read_full(&mut body, deadline)?;
        serde_json::from_slice(&body).map_err(|e| Abort::Protocol(format!("client JSON: {e}")))
    }

    fn send_json(&mut self, v: &Value) -> io::Result<()> {
        let body = serde_json::to_vec(v).map_err(io::Error::other)?;
        let mut m = (body.len() as u32).to_be_bytes().to_vec();
        m.extend_from_slice(&body);
        self.s.write_all(&m)
    }

    /// The refusal the real server sends when it cannot run a test: the
    /// client prints the message for `ierr`, with `strerror(errno)` for
    /// some.
    fn send_error(&mut self, ierr: i32, errno: i32) -> io::Result<()> {
        let mut m = vec![state::SERVER_ERROR as u8];
        m.extend_from_slice(&ierr.to_be_bytes());
        m.extend_from_slice(&errno.to_be_bytes());
        self.s.write_all(&m)
    }
}

/// CLOCK_MONOTONIC as iperf3 stamps datagrams: seconds and microseconds.
fn mono_now() -> (u32, u32) {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec to fill; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u32, (ts.tv_nsec / 1000) as u32)
}

/// User and system CPU seconds of the process.
fn cpu_times() -> (f64, f64) {
    // SAFETY: rusage is plain data; getrusage fills it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid rusage for RUSAGE_SELF.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (secs(ru.ru_utime), secs(ru.ru_stime))
}

/// The three `cpu_util_*` numbers iperf3 reports: percent of one CPU over
/// the test, total, user and system.
struct CpuMeter {
    wall: Instant,
    user: f64,
    system: f64,
}

impl CpuMeter {
    fn start() -> CpuMeter {
        let (user, system) = cpu_times();
        CpuMeter {
            wall: Instant::now(),
            user,
            system,
        }
    }
    fn percent(&self) -> [f64; 3] {
        let (u, s) = cpu_times();
        let wall = self.wall.elapsed().as_secs_f64().max(1e-6);
        let (u, s) = (
            (u - self.user) / wall * 100.0,
            (s - self.system) / wall * 100.0,
        );
        [u + s, u, s]
    }
}

/// What the receiving side of a stream keeps, as iperf3 keeps it.
#[derive(Default)]
struct RxStats {
    bytes: u64,
    datagrams: u64,
    /// Highest sequence number seen; iperf3 reports it as "packets".
    packet_count: u64,
    /// Gaps in the sequence, less the late arrivals that filled them.
    lost: u64,
    out_of_order: u64,
    jitter: f64,
    prev_transit: f64,
    /// Counts at the end of the `-O` period, which the client subtracts.
    omitted_packets: u64,
    omitted_lost: u64,
    omitted_out_of_order: u64,
    too_short: u64,
}

impl RxStats {
    fn datagram(&mut self, d: &[u8], counters_64bit: bool, arrival: (u32, u32)) {
        let first = self.bytes == 0;
        self.bytes += d.len() as u64;
        self.datagrams += 1;
        let need = if counters_64bit { 16 } else { 12 };
        if d.len() < need {
            self.too_short += 1;
            return;
        }
        let be32 = |i: usize| u32::from_be_bytes(d[i..i + 4].try_into().expect("4 bytes"));
        let (sec, usec) = (be32(0), be32(4));
        let seq = if counters_64bit {
            u64::from_be_bytes(d[8..16].try_into().expect("8 bytes"))
        } else {
            // A signed 32-bit counter on the sender; keep it unsigned here.
            be32(8) as u64
        };
        if seq > self.packet_count {
            // Forward; a jump counts the skipped numbers as lost.
            self.lost += seq - 1 - self.packet_count;
            self.packet_count = seq;
        } else {
            // Late (or repeated): it fills a gap counted as a loss.
            self.out_of_order += 1;
            self.lost = self.lost.saturating_sub(1);
        }
        // RFC 1889 interarrival jitter (6.3.1, A.8) over the difference of
        // the relative transit times; clock offsets between the two hosts
        // cancel out.
        let us = |s: u32, u: u32| s as i64 * 1_000_000 + u as i64;
        let transit = (us(arrival.0, arrival.1) - us(sec, usec)).abs() as f64 / 1e6;
        if first {
            self.prev_transit = transit;
        }
        let d = (transit - self.prev_transit).abs();
        self.prev_transit = transit;
        self.jitter += (d - self.jitter) / 16.0;
    }

    /// End of the omit period: what came so far is not the test's.
    fn omit_done(&mut self) {
        self.omitted_packets = self.packet_count;
        self.omitted_lost = self.lost;
        self.omitted_out_of_order = self.out_of_order;
        self.jitter = 0.0;
        self.bytes = 0;
    }
}

impl Server<'_> {
    /// Takes every queued datagram; those from `peer` go to `rx`, the rest
    /// are counted as other. Returns when the queue is empty.
    fn drain(&self, mut rx: Option<(SocketAddrV4, &mut RxStats, bool)>) {
        let mut storage = vec![vec![0u8; DGRAM_MAX]; BATCH];
        let mut meta = vec![blank_meta(); BATCH];
        let _ = self.sock.set_nonblocking(true);
        loop {
            let mut bufs: Vec<&mut [u8]> = storage.iter_mut().map(|b| &mut b[..]).collect();
            let n = match self.sock.recv_batch(&mut bufs, &mut meta) {
                Ok(n) => n,
                Err(_) => break,
            };
            for (b, m) in bufs.iter().zip(&meta[..n]) {
                match rx.as_mut() {
                    Some((peer, st, c64)) if m.src == *peer => {
                        st.datagram(&b[..m.len], *c64, mono_now());
                        self.totals.data.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        self.totals.other.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
    }

    fn serve(&self, n: u64, ctrl: TcpStream, peer: SocketAddr) -> Result<(), Abort> {
        ctrl.set_nonblocking(false)?;
        ctrl.set_nodelay(true)?;
        // Reads wake up now and then to look at the stop flag.
        ctrl.set_read_timeout(Some(TICK))?;
        let mut c = Ctrl {
            s: ctrl,
            stop: self.stop,
        };
        let r = self.run_test(n, &mut c, peer);
        if let Err(Abort::Stopped) = r {
            let _ = c.send_state(state::SERVER_TERMINATE);
        }
        r
    }

    fn run_test(&self, n: u64, c: &mut Ctrl<'_>, peer: SocketAddr) -> Result<(), Abort> {
        let setup = Instant::now() + Duration::from_secs(30);
        let mut cookie = [0u8; COOKIE_SIZE];
        c.read_full(&mut cookie, setup)?;
        c.send_state(state::PARAM_EXCHANGE)?;
        let params_json = c.read_json(setup)?;
        let p = Params::from_json(&params_json);
        // Refusals, each with the message the client will print.
        let refusal = if !p.udp {
            Some((
                IE_STREAM_LISTEN,
                libc::EPROTONOSUPPORT,
                "only UDP tests (-u) are served here",
            ))
        } else if p.parallel > 1 {
            Some((IE_UNIMP, 0, "one stream only (no -P above 1)"))
        } else if p.bidirectional {
            Some((IE_UNIMP, 0, "no --bidir"))
        } else {
            None
        };
        if let Some((ierr, errno, why)) = refusal {
            c.send_error(ierr, errno)?;
            println!(
                "iperf3_server: test {n} from {peer} refused: {why} (client {})",
                p.client_version
            );
            return Ok(());
        }

        // Datagrams queued since the last test belong to nobody.
        self.drain(None);
        c.send_state(state::CREATE_STREAMS)?;
        let data_peer = self.accept_stream(c, setup)?;
        c.send_state(state::TEST_START)?;
        c.send_state(state::TEST_RUNNING)?;
        println!(
            "iperf3_server: test {n} from {peer}: UDP stream {data_peer}, {}, {} bytes, {} bit/s, {} s (client {})",
            if p.reverse { "server sends" } else { "client sends" },
            p.len,
            p.bandwidth,
            p.time,
            p.client_version
        );
        let cpu = CpuMeter::start();
        // The real server ends a test the client never ends after this.
        let deadline =
            Instant::now() + Duration::from_secs_f64(p.time.max(0.0) + p.omit.max(0.0)) + GRACE;
        let outcome = if p.reverse {
            self.send_stream(c, &p, data_peer, deadline)?
        } else {
            self.recv_stream(c, &p, data_peer, deadline)?
        };

        // TEST_END came: results go both ways.
        c.send_state(state::EXCHANGE_RESULTS)?;
        let results_deadline = Instant::now() + Duration::from_secs(30);
        let theirs = c.read_json(results_deadline)?;
        let cpu = cpu.percent();
        let summary = outcome.summary(n, &theirs);
        let mut ours = json!({
            "cpu_util_total": cpu[0],
            "cpu_util_user": cpu[1],
            "cpu_util_system": cpu[2],
            // -1: the receiver has none to tell; a UDP sender has none.
            "sender_has_retransmits": if p.reverse { 0 } else { -1 },
            "streams": [outcome.stream_json()],
        });
        if p.server_output {
            ours["server_output_text"] = Value::String(format!("{summary}\n"));
        }
        c.send_json(&ours)?;
        c.send_state(state::DISPLAY_RESULTS)?;
        println!("{summary}");
        // The client says IPERF_DONE and closes; either will do.
        match c.read_state(Instant::now() + Duration::from_secs(5)) {
            Ok(state::IPERF_DONE) | Err(Abort::Protocol(_)) => Ok(()),
            Ok(s) => Err(Abort::Protocol(format!("state {s} instead of IPERF_DONE"))),
            Err(e) => Err(e),
        }
    }

    /// Waits for the client's stream opening datagram and answers it;
    /// returns the client's data address.
    fn accept_stream(&self, c: &mut Ctrl<'_>, deadline: Instant) -> Result<SocketAddrV4, Abort> {
        self.sock.set_nonblocking(false)?;
        self.sock.set_read_timeout(Some(TICK))?;
        let mut b = [0u8; DGRAM_MAX];
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return Err(Abort::Stopped);
            }
            if Instant::now() > deadline {
                return Err(Abort::Protocol("no UDP stream from the client".into()));
            }
            if let Some(s) = poll_ctrl(c)? {
                return Err(ended_early(s));
            }
            let (len, src) = match self.sock.recv_from(&mut b) {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e.into()),
            };
            let v = (len == 4).then(|| u32::from_ne_bytes(b[..4].try_into().expect("4 bytes")));
            if matches!(v, Some(UDP_CONNECT_MSG | LEGACY_UDP_CONNECT_MSG)) {
                self.totals.connects.fetch_add(1, Ordering::Relaxed);
                self.sock.send_to(&UDP_CONNECT_REPLY.to_ne_bytes(), src)?;
                self.totals.sent.fetch_add(1, Ordering::Relaxed);
                return Ok(src);
            }
            self.totals.other.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The client sends: count what comes from `peer` until TEST_END.
    fn recv_stream(
        &self,
        c: &mut Ctrl<'_>,
        p: &Params,
        peer: SocketAddrV4,
        deadline: Instant,
    ) -> Result<Outcome, Abort> {
        let mut st = RxStats::default();
        let start = Instant::now();
        let omit_end = start + Duration::from_secs_f64(p.omit.max(0.0));
        let mut omitting = p.omit > 0.0;
        let mut begun = start;
        let mut storage = vec![vec![0u8; DGRAM_MAX]; BATCH];
        let mut meta = vec![blank_meta(); BATCH];
        self.sock.set_nonblocking(true)?;
        let ev = self.sock.readiness_fd().as_raw_fd();
        let cfd = c.s.as_raw_fd();
        loop {
            // Receive until the queue is empty, which arms the readiness
            // descriptor for the poll below.
            loop {
                let mut bufs: Vec<&mut [u8]> = storage.iter_mut().map(|b| &mut b[..]).collect();
                let k = match self.sock.recv_batch(&mut bufs, &mut meta) {
                    Ok(k) => k,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e.into()),
                };
                for (b, m) in bufs.iter().zip(&meta[..k]) {
                    if m.src == peer {
                        st.datagram(&b[..m.len], p.counters_64bit, mono_now());
                        self.totals.data.fetch_add(1, Ordering::Relaxed);
                    } else {
                        self.totals.other.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            if omitting && Instant::now() >= omit_end {
                omitting = false;
                st.omit_done();
                begun = Instant::now();
            }
            if self.stop.load(Ordering::Relaxed) {
                return Err(Abort::Stopped);
            }
            if Instant::now() > deadline {
                return Err(Abort::Protocol("the client never ended the test".into()));
            }
            let mut fds = [
                libc::pollfd {
                    fd: ev,
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: cfd,
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            // SAFETY: two valid pollfds on descriptors that outlive the call.
            unsafe { libc::poll(fds.as_mut_ptr(), 2, TICK.as_millis() as i32) };
            if fds[1].revents != 0 {
                match c.read_state(deadline)? {
                    state::TEST_END => break,
                    state::TEST_START | state::TEST_RUNNING => {}
                    s => return Err(ended_early(s)),
                }
            }
        }
        // Datagrams sent before TEST_END are part of the test, and the last
        // may still be on their way through the engine while TEST_END took
        // the kernel's TCP path: take them until 20 ms bring nothing more.
        let seconds = begun.elapsed().as_secs_f64();
        let settle = Instant::now() + Duration::from_millis(250);
        loop {
            let before = st.datagrams;
            self.drain(Some((peer, &mut st, p.counters_64bit)));
            if st.datagrams == before || Instant::now() > settle {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Outcome::Received {
            st,
            seconds,
            peer,
            drops: self.sock.rcvbuf_errors(),
        })
    }

    /// The server sends (`-R`): datagrams of `len` bytes at `bandwidth`
    /// until TEST_END, paced like iperf3: send while the average rate since
    /// the start is below the target, else nap for the pacing timer.
    fn send_stream(
        &self,
        c: &mut Ctrl<'_>,
        p: &Params,
        peer: SocketAddrV4,
        deadline: Instant,
    ) -> Result<Outcome, Abort> {
        let done = AtomicBool::new(false);
        let header = p.header_len();
        let len = p.len.max(header);
        let sender = || -> io::Result<(u64, u64, u64, u64, f64)> {
            self.sock.set_nonblocking(false)?;
            self.sock.set_write_timeout(Some(TICK))?;
            let mut buf = vec![0u8; len];
            // The payload beyond the header: anything but zeros.
            for (i, b) in buf.iter_mut().enumerate().skip(header) {
                *b = (i % 251) as u8;
            }
            let start = Instant::now();
            let omit = Duration::from_secs_f64(p.omit.max(0.0));
            let (mut seq, mut bytes) = (0u64, 0u64);
            let (mut omitted_seq, mut omitted_bytes, mut begun) = (0u64, 0u64, None);
            let burst = p.burst.max(1);
            let pace = Duration::from_micros(p.pacing_timer_us);
            while !done.load(Ordering::Relaxed) {
                let t = start.elapsed();
                if begun.is_none() && t >= omit {
                    (omitted_seq, omitted_bytes, begun) = (seq, bytes, Some(Instant::now()));
                }
                let limit_reached =
                    (p.bytes > 0 && bytes >= p.bytes) || (p.blocks > 0 && seq >= p.blocks);
                if limit_reached {
                    std::thread::sleep(pace);
                    continue;
                }
                if p.bandwidth > 0.0 {
                    // Ahead of the rate: nap until the next datagram is
                    // due, at most a pacing period, which keeps bursts
                    // short for the receiver's socket buffer.
                    let due = Duration::from_secs_f64((bytes * 8) as f64 / p.bandwidth);
                    if due > t {
                        std::thread::sleep((due - t).min(pace));
                        continue;
                    }
                }
                for _ in 0..burst {
                    seq += 1;
                    let (s, us) = mono_now();
                    buf[0..4].copy_from_slice(&s.to_be_bytes());
                    buf[4..8].copy_from_slice(&us.to_be_bytes());
                    if p.counters_64bit {
                        buf[8..16].copy_from_slice(&seq.to_be_bytes());
                    } else {
                        buf[8..12].copy_from_slice(&(seq as u32).to_be_bytes());
                    }
                    match self.sock.send_to(&buf, peer) {
                        Ok(n) => bytes += n as u64,
                        // A full queue past the timeout: this one is lost,
                        // as a full kernel queue would lose it.
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(e) => return Err(e),
                    }
                    self.totals.sent.fetch_add(1, Ordering::Relaxed);
                }
            }
            let secs = begun.map_or(0.0, |b| b.elapsed().as_secs_f64());
            Ok((seq, bytes, omitted_seq, omitted_bytes, secs))
        };
        let (ended, sent) = std::thread::scope(|s| {
            let h = s.spawn(sender);
            let ended = loop {
                if h.is_finished() {
                    break Err(Abort::Protocol("the sender stopped".into()));
                }
                match c.read_state(deadline) {
                    Ok(state::TEST_END) => break Ok(()),
                    Ok(state::TEST_START | state::TEST_RUNNING) => {}
                    Ok(s) => break Err(ended_early(s)),
                    Err(e) => break Err(e),
                }
            };
            done.store(true, Ordering::Relaxed);
            (ended, h.join().expect("sender thread"))
        });
        ended?;
        let (packets, bytes, omitted_packets, omitted_bytes, seconds) = sent?;
        Ok(Outcome::Sent {
            packets,
            bytes: bytes - omitted_bytes,
            omitted_packets,
            seconds,
            peer,
        })
    }
}

/// Looks at the control connection without waiting: a state byte the
/// client sent early (CLIENT_TERMINATE, a close).
fn poll_ctrl(c: &mut Ctrl<'_>) -> Result<Option<i8>, Abort> {
    c.s.set_nonblocking(true)?;
    let mut b = [0u8];
    let r = c.s.read(&mut b);
    c.s.set_nonblocking(false)?;
    match r {
        Ok(0) => Err(Abort::Protocol(
            "the client has unexpectedly closed the connection".into(),
        )),
        Ok(_) => Ok(Some(b[0] as i8)),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn ended_early(s: i8) -> Abort {
    match s {
        state::CLIENT_TERMINATE => Abort::Protocol("the client has terminated".into()),
        s => Abort::Protocol(format!("unexpected state {s} from the client")),
    }
}

fn blank_meta() -> RecvMeta {
    RecvMeta {
        len: 0,
        datagram_len: 0,
        src: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0),
        ancillary: Default::default(),
    }
}

/// One finished stream, from our side.
enum Outcome {
    Received {
        st: RxStats,
        seconds: f64,
        peer: SocketAddrV4,
        drops: u64,
    },
    Sent {
        packets: u64,
        bytes: u64,
        omitted_packets: u64,
        seconds: f64,
        peer: SocketAddrV4,
    },
}

impl Outcome {
    /// Our entry of the results' "streams".
    fn stream_json(&self) -> Value {
        match self {
            Outcome::Received { st, seconds, .. } => json!({
                "id": STREAM_ID,
                "bytes": st.bytes,
                "retransmits": -1,
                "jitter": st.jitter,
                "errors": st.lost,
                "omitted_errors": st.omitted_lost,
                "packets": st.packet_count,
                "omitted_packets": st.omitted_packets,
                "start_time": 0.0,
                "end_time": seconds,
            }),
            Outcome::Sent {
                packets,
                bytes,
                omitted_packets,
                seconds,
                ..
            } => json!({
                "id": STREAM_ID,
                "bytes": bytes,
                "retransmits": -1,
                "jitter": 0.0,
                "errors": 0,
                "omitted_errors": 0,
                "packets": packets,
                "omitted_packets": omitted_packets,
                "start_time": 0.0,
                "end_time": seconds,
            }),
        }
    }

    /// One line for our stdout, `key=value`, and for `--get-server-output`.
    fn summary(&self, n: u64, theirs: &Value) -> String {
        match self {
            Outcome::Received {
                st,
                seconds,
                peer,
                drops,
            } => {
                let packets = st.packet_count - st.omitted_packets;
                let lost = st.lost - st.omitted_lost;
                format!(
                    "iperf3_server: test {n} done: peer={peer} mode=receive seconds={seconds:.3} \
                     datagrams={} bytes={} packets={packets} lost={lost} lost_percent={:.3} \
                     out_of_order={} jitter_ms={:.4} mbit_s={:.2} socket_drops={drops}",
                    st.datagrams,
                    st.bytes,
                    if packets > 0 {
                        100.0 * lost as f64 / packets as f64
                    } else {
                        0.0
                    },
                    st.out_of_order - st.omitted_out_of_order,
                    st.jitter * 1000.0,
                    st.bytes as f64 * 8.0 / seconds.max(1e-6) / 1e6,
                )
            }
            Outcome::Sent {
                packets,
                bytes,
                seconds,
                peer,
                ..
            } => {
                // The client's own receiver numbers, from its results.
                let s = &theirs["streams"][0];
                let f = |k: &str| s.get(k).and_then(Value::as_f64).unwrap_or(f64::NAN);
                format!(
                    "iperf3_server: test {n} done: peer={peer} mode=send seconds={seconds:.3} \
                     packets={packets} bytes={bytes} mbit_s={:.2}; client received bytes={} \
                     packets={} lost={} jitter_ms={:.4}",
                    *bytes as f64 * 8.0 / seconds.max(1e-6) / 1e6,
                    f("bytes"),
                    f("packets"),
                    f("errors"),
                    f("jitter") * 1000.0,
                )
            }
        }
    }
}
