//! An authoritative DNS responder on the engine's fast path.
//!
//! ```text
//! dns_responder -i IFACE [-i IFACE ...] --bind ADDR:PORT [--zone FILE]
//!               [--mode worker|in-place|copy] [--threads N]
//!               [--packet-cache N]
//! ```
//!
//! Run it as root inside the interfaces' network namespace; it serves the
//! built-in zone `example.test` (or the zone file given) over UDP until
//! SIGINT or SIGTERM, then prints its counters and the engine's UDP MIB.
//! The port is the engine's: no kernel socket holds it (`ss -ulpn`), and
//! TCP to it stays with the kernel.
//!
//! `--mode worker` (the default) answers in the engine's workers: one
//! socket, which `serve`s, each worker answering the queries it receives
//! with its own `Responder`, in its batch, the reply going out with it.
//!
//! The other modes answer on threads of the application, through the
//! socket's queues: one thread and one socket per engine worker (or
//! `--threads N`), the sockets sharing the port with `SO_REUSEPORT`; each
//! thread receives a batch (`recv_batch`), answers it and sends the
//! answers. `--mode in-place` composes each answer in a send buffer of the
//! socket (`send_buf`), `--mode copy` composes it in the thread's own
//! buffer and sends a copy (`send_to`), for measuring what the copy costs.
//! (`--send in-place|copy` is the same as `--mode`.)
//!
//! `--packet-cache N` (default 4096, 0 for none) keeps, per responder, the
//! answers to up to N distinct queries and gives the same bytes again to
//! the same query with its own ID, as PowerDNS's packet cache does: the
//! zone does not change while the responder runs.

#[path = "dns/answer.rs"]
mod answer;

use answer::{Responder, Stats, Zone};
use std::net::SocketAddrV4;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn usage() -> ! {
    eprintln!(
        "usage: dns_responder -i IFACE [-i IFACE ...] --bind ADDR:PORT [--zone FILE] \
         [--mode worker|in-place|copy] [--threads N] [--packet-cache N]"
    );
    std::process::exit(2);
}

/// Datagrams received per call.
const BATCH: usize = 64;
/// Receive buffer: the largest query over UDP a server takes (EDNS sizes
/// above this are not sent by clients in practice); longer ones are
/// truncated and then fail to parse.
const QUERY_MAX: usize = 4096;
/// Answers each responder keeps by default (`--packet-cache`).
const PACKET_CACHE: usize = 4096;

#[derive(Clone, Copy, PartialEq, Eq)]
enum SendMode {
    /// In the engine's workers (`UdpSocket::serve`).
    Worker,
    /// On threads, the answer built in a send buffer of the socket.
    InPlace,
    /// On threads, the answer copied by `send_to`.
    Copy,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut ifaces = Vec::new();
    let mut bind: Option<SocketAddrV4> = None;
    let mut zone_file = None;
    let mut threads = None;
    let mut mode = SendMode::Worker;
    let mut cache = PACKET_CACHE;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "-i" | "--interface" => ifaces.push(value()),
            "--bind" => {
                let v = value();
                bind = Some(v.parse().unwrap_or_else(|e| {
                    eprintln!("dns_responder: --bind {v}: {e}");
                    usage()
                }));
            }
            "--zone" => zone_file = Some(value()),
            "--threads" => {
                let v = value();
                threads = Some(
                    v.parse::<usize>()
                        .ok()
                        .filter(|n| *n > 0)
                        .unwrap_or_else(|| {
                            eprintln!("dns_responder: --threads {v}: a positive number");
                            usage()
                        }),
                );
            }
            "--packet-cache" => {
                let v = value();
                cache = v.parse().unwrap_or_else(|_| {
                    eprintln!("dns_responder: --packet-cache {v}: a number of answers");
                    usage()
                });
            }
            "--mode" | "--send" => {
                mode = match value().as_str() {
                    "worker" if a == "--mode" => SendMode::Worker,
                    "copy" => SendMode::Copy,
                    "in-place" => SendMode::InPlace,
                    other => {
                        eprintln!("dns_responder: {a} {other}: worker, in-place or copy");
                        usage()
                    }
                }
            }
            _ => usage(),
        }
    }
    let (Some(bind), false) = (bind, ifaces.is_empty()) else {
        usage()
    };
    let zone = match &zone_file {
        Some(f) => {
            let text = std::fs::read(f).map_err(|e| format!("--zone {f}: {e}"))?;
            Zone::parse(&text).map_err(|e| format!("--zone {f}: {e}"))?
        }
        None => Zone::parse(answer::BUILTIN_ZONE.as_bytes()).expect("the built-in zone parses"),
    };
    let zone = Arc::new(zone);

    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGINT, stop.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGTERM, stop.clone())?;

    let mut b = xdpip::Engine::builder().privileged_ports(true);
    for i in &ifaces {
        b = b.interface(i.as_str());
    }
    let engine = b.start()?;
    if mode == SendMode::Worker {
        return serve_in_workers(engine, bind, &ifaces, zone, cache, &stop);
    }
    let n = threads.unwrap_or(engine.info().workers.len().max(1));
    let mut socks = Vec::with_capacity(n);
    for _ in 0..n {
        let s = engine.udp_socket()?;
        if n > 1 {
            s.set_reuse_port(true)?;
        }
        s.bind(bind)?;
        // Wake up now and then to notice a signal.
        s.set_read_timeout(Some(Duration::from_millis(200)))?;
        socks.push(s);
    }
    println!(
        "dns_responder: serving {} ({} names) on {} {}, {n} thread(s)",
        zone.apex(),
        zone.names(),
        socks[0].local_addr()?,
        ifaces.join(", ")
    );

    let totals = std::thread::scope(|s| {
        let handles: Vec<_> = socks
            .iter()
            .map(|sock| {
                let zone = zone.clone();
                let stop = &stop;
                let r = Responder::new(zone).with_packet_cache(cache);
                s.spawn(move || serve(sock, r, mode == SendMode::Copy, stop))
            })
            .collect();
        let mut total = Stats::default();
        for h in handles {
            match h.join() {
                Ok(Ok(st)) => total.add(&st),
                Ok(Err(e)) => eprintln!("dns_responder: {e}"),
                Err(_) => eprintln!("dns_responder: a thread panicked"),
            }
        }
        total
    });
    drop(socks);
    let report = engine.stop();
    print_report(&report, &totals);
    Ok(())
}

/// Prints the responders' and the engine's counters.
fn print_report(report: &xdpip::Report, totals: &Stats) {
    println!("dns_responder: {totals}");
    println!(
        "dns_responder: UdpInDatagrams {} UdpOutDatagrams {} UdpInErrors {} UdpRcvbufErrors {} \
         UdpSndbufErrors {}",
        report.mib["UdpInDatagrams"],
        report.mib["UdpOutDatagrams"],
        report.mib["UdpInErrors"],
        report.mib["UdpRcvbufErrors"],
        report.mib["UdpSndbufErrors"]
    );
}

/// A worker's responder: answers in the worker's batch, and adds its
/// counters to the totals when the worker drops it (the socket closed or
/// the engine stopped).
struct InWorker {
    r: Responder,
    /// The answer's wire format, composed by the `domain` crate into a
    /// vector, then written into the reply frame.
    out: Vec<u8>,
    totals: Arc<Mutex<Stats>>,
}

impl xdpip::socket::Handler for InWorker {
    fn datagram(&mut self, d: &xdpip::socket::Datagram<'_>, reply: &mut [u8]) -> Option<usize> {
        if !self.r.respond(d.payload, &mut self.out) {
            return None;
        }
        // The answer is at most 1232 bytes (EDNS) and the reply buffer
        // holds the path MTU: it fits on any link of 1280 bytes or more.
        let n = self.out.len();
        reply.get_mut(..n)?.copy_from_slice(&self.out);
        Some(n)
    }
}

impl Drop for InWorker {
    fn drop(&mut self) {
        if let Ok(mut t) = self.totals.lock() {
            t.add(&self.r.stats);
        }
    }
}

/// `--mode worker`: one socket answers in every worker until `stop`.
fn serve_in_workers(
    engine: xdpip::Engine,
    bind: SocketAddrV4,
    ifaces: &[String],
    zone: Arc<Zone>,
    cache: usize,
    stop: &AtomicBool,
) -> Result<(), Box<dyn std::error::Error>> {
    let sock = engine.udp_socket()?;
    sock.bind(bind)?;
    let (apex, names) = (zone.apex(), zone.names());
    let totals = Arc::new(Mutex::new(Stats::default()));
    let t = totals.clone();
    sock.serve(move |_worker| InWorker {
        r: Responder::new(zone.clone()).with_packet_cache(cache),
        out: Vec::with_capacity(1232),
        totals: t.clone(),
    })?;
    println!(
        "dns_responder: serving {apex} ({names} names) on {} {}, in {} worker(s)",
        sock.local_addr()?,
        ifaces.join(", "),
        engine.info().workers.len()
    );
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(sock);
    // The workers drop their handlers when they stop: the totals are
    // complete after the engine's stop.
    let report = engine.stop();
    let totals = *totals.lock().expect("not poisoned");
    print_report(&report, &totals);
    Ok(())
}

/// Receives batches of queries on `sock` and answers them until `stop`:
/// into a send buffer of the socket, or with `copy` into the thread's own
/// buffer, sent by `send_to`.
fn serve(
    sock: &xdpip::socket::UdpSocket,
    mut r: Responder,
    copy: bool,
    stop: &AtomicBool,
) -> std::io::Result<Stats> {
    let any = SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, 0);
    let mut storage = vec![[0u8; QUERY_MAX]; BATCH];
    let mut meta = vec![
        xdpip::socket::RecvMeta {
            len: 0,
            datagram_len: 0,
            src: any,
            ancillary: Default::default(),
        };
        BATCH
    ];
    let mut out = Vec::with_capacity(512);
    while !stop.load(Ordering::Relaxed) {
        let mut bufs: Vec<&mut [u8]> = storage.iter_mut().map(|b| &mut b[..]).collect();
        let n = match sock.recv_batch(&mut bufs, &mut meta) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        };
        for (q, m) in bufs.iter().zip(&meta[..n]) {
            // A query longer than the buffer is not taken (an empty
            // slice is dropped and counted as malformed).
            let query = if m.datagram_len > m.len {
                &[][..]
            } else {
                &q[..m.len]
            };
            let sent = match copy {
                false => {
                    let mut b = sock.send_buf();
                    if !r.respond(query, &mut b) {
                        continue;
                    }
                    sock.send_buf_to(b, m.src)
                }
                true => {
                    if !r.respond(query, &mut out) {
                        continue;
                    }
                    sock.send_to(&out, m.src)
                }
            };
            if let Err(e) = sent {
                // ENOBUFS (the worker's queue is full) loses this answer
                // only, as a kernel socket's full send buffer would.
                if e.raw_os_error() != Some(libc::ENOBUFS) {
                    eprintln!("dns_responder: send to {}: {e}", m.src);
                }
            }
        }
    }
    Ok(r.stats)
}
