//! `dns_responder` on tokio: the engine socket's readiness handle (an
//! eventfd, `UdpSocket::readiness_fd`, also its `AsRawFd`) registered
//! with `AsyncFd`, so the responder is one task among others of an async
//! program.
//!
//! ```text
//! dns_responder_tokio -i IFACE [-i IFACE ...] --bind ADDR:PORT [--zone FILE]
//! ```
//!
//! The socket is non-blocking. When the handle turns readable the task
//! receives and answers batches until `EAGAIN`, then clears the readiness
//! and awaits the next (the handle is edge-triggered: it is signalled only
//! after a receive found the queue empty). A single-threaded runtime, one
//! socket; SIGINT or SIGTERM ends it with the counters.

#[path = "dns/answer.rs"]
mod answer;

use answer::{Responder, Zone};
use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

fn usage() -> ! {
    eprintln!("usage: dns_responder_tokio -i IFACE [-i IFACE ...] --bind ADDR:PORT [--zone FILE]");
    std::process::exit(2);
}

const BATCH: usize = 64;
const QUERY_MAX: usize = 4096;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut ifaces = Vec::new();
    let mut bind: Option<SocketAddrV4> = None;
    let mut zone_file = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "-i" | "--interface" => ifaces.push(value()),
            "--bind" => {
                let v = value();
                bind = Some(v.parse().unwrap_or_else(|e| {
                    eprintln!("dns_responder_tokio: --bind {v}: {e}");
                    usage()
                }));
            }
            "--zone" => zone_file = Some(value()),
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

    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGINT, stop.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGTERM, stop.clone())?;

    let mut b = xdpip::Engine::builder().privileged_ports(true);
    for i in &ifaces {
        b = b.interface(i.as_str());
    }
    let engine = b.start()?;
    let sock = engine.udp_socket()?;
    sock.bind(bind)?;
    sock.set_nonblocking(true)?;
    println!(
        "dns_responder_tokio: serving {} ({} names) on {} {}",
        zone.apex(),
        zone.names(),
        sock.local_addr()?,
        ifaces.join(", ")
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?;
    let responder = Responder::new(Arc::new(zone));
    let stats = rt.block_on(serve(sock, responder, stop))?;
    let report = engine.stop();
    println!("dns_responder_tokio: {stats}");
    println!(
        "dns_responder_tokio: UdpInDatagrams {} UdpOutDatagrams {} UdpSndbufErrors {}",
        report.mib["UdpInDatagrams"], report.mib["UdpOutDatagrams"], report.mib["UdpSndbufErrors"]
    );
    Ok(())
}

async fn serve(
    sock: xdpip::socket::UdpSocket,
    mut r: Responder,
    stop: Arc<AtomicBool>,
) -> std::io::Result<answer::Stats> {
    // SAFETY: the socket's readiness eventfd, which it owns and returns
    // from every as_raw_fd() call, lives as long as the socket, which the
    // AsyncFd owns.
    let fd = unsafe { AsyncFd::register_with_interest(sock, Interest::READABLE) }
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let any = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0);
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
    while !stop.load(Ordering::Relaxed) {
        // Look at the stop flag now and then.
        let Ok(guard) = tokio::time::timeout(Duration::from_millis(200), fd.readable()).await
        else {
            continue;
        };
        let mut guard = guard?;
        let sock = fd.get_ref();
        loop {
            let mut bufs: Vec<&mut [u8]> = storage.iter_mut().map(|b| &mut b[..]).collect();
            let n = match sock.recv_batch(&mut bufs, &mut meta) {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    guard.clear_ready();
                    break;
                }
                Err(e) => return Err(e),
            };
            for (q, m) in bufs.iter().zip(&meta[..n]) {
                let query = if m.datagram_len > m.len {
                    &[][..]
                } else {
                    &q[..m.len]
                };
                let mut b = sock.send_buf();
                if r.respond(query, &mut b) {
                    if let Err(e) = sock.send_buf_to(b, m.src) {
                        if e.raw_os_error() != Some(libc::ENOBUFS) {
                            eprintln!("dns_responder_tokio: send to {}: {e}", m.src);
                        }
                    }
                }
            }
            // Let other tasks run between batches.
            tokio::task::yield_now().await;
        }
    }
    Ok(r.stats)
}
