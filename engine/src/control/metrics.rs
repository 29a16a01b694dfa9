//! Prometheus metrics: the engine's counters in the text exposition format
//! on `GET /metrics`, with the names of `xdpip stats` as label values.

use super::View;
use crate::report::Report;
use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Parses `--metrics`: a bare port means that port on loopback.
///
/// ```
/// use xdpip::control::metrics::parse_addr;
/// assert_eq!(parse_addr("9100").unwrap().to_string(), "127.0.0.1:9100");
/// assert_eq!(parse_addr("0.0.0.0:9100").unwrap().to_string(), "0.0.0.0:9100");
/// assert!(parse_addr("nine").is_err());
/// ```
pub fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    s.parse()
        .map_err(|_| format!("{s:?} is neither a port nor an address:port"))
}

/// The report in the text exposition format.
pub fn render(r: &Report) -> String {
    let mut o = String::new();
    let mut family = |name: &str, help: &str, kind: &str, rows: Vec<(String, u64)>| {
        let _ = writeln!(o, "# HELP {name} {help}");
        let _ = writeln!(o, "# TYPE {name} {kind}");
        for (labels, v) in rows {
            let _ = writeln!(o, "{name}{labels} {v}");
        }
    };
    family(
        "xdpip_ip_mib",
        "IP-MIB and ICMP counters, as nstat names them",
        "counter",
        r.mib
            .iter()
            .map(|(k, v)| (format!("{{counter=\"{k}\"}}"), *v))
            .collect(),
    );
    family(
        "xdpip_drops",
        "packets the engine dropped, by reason",
        "counter",
        r.drops
            .iter()
            .map(|(k, v)| (format!("{{reason=\"{k}\"}}"), *v))
            .collect(),
    );
    family(
        "xdpip_checksums",
        "partial UDP/TCP checksums of local stacks (veth) completed or accepted",
        "counter",
        r.checksums
            .iter()
            .map(|(k, v)| (format!("{{event=\"{k}\"}}"), *v))
            .collect(),
    );
    family(
        "xdpip_xdp_verdicts",
        "verdicts of the XDP program",
        "counter",
        r.xdp
            .iter()
            .map(|(k, v)| (format!("{{verdict=\"{k}\"}}"), *v))
            .collect(),
    );
    for (name, help, f) in [
        (
            "xdpip_port_rx_packets",
            "frames received by the engine",
            (|p: &crate::stats::PortTotals| p.rx_packets) as fn(&crate::stats::PortTotals) -> u64,
        ),
        ("xdpip_port_rx_bytes", "bytes received by the engine", |p| {
            p.rx_bytes
        }),
        (
            "xdpip_port_tx_packets",
            "frames transmitted by the engine",
            |p| p.tx_packets,
        ),
        (
            "xdpip_port_tx_bytes",
            "bytes transmitted by the engine",
            |p| p.tx_bytes,
        ),
    ] {
        family(
            name,
            help,
            "counter",
            r.ports
                .iter()
                .map(|p| (format!("{{port=\"{}\"}}", p.name), f(p)))
                .collect(),
        );
    }
    let socket_rows = |pick: fn(&crate::report::SocketReport) -> u64| {
        r.workers
            .iter()
            .flat_map(|w| {
                w.sockets.iter().map(move |s| {
                    (
                        format!("{{port=\"{}\",queue=\"{}\"}}", s.iface, s.queue),
                        pick(s),
                    )
                })
            })
            .collect::<Vec<_>>()
    };
    let rx_dropped = socket_rows(|s| s.xdp_statistics.rx_dropped);
    let ring_full = socket_rows(|s| s.xdp_statistics.rx_ring_full);
    let fill_empty = socket_rows(|s| s.xdp_statistics.rx_fill_ring_empty_descs);
    let tx_invalid = socket_rows(|s| s.xdp_statistics.tx_invalid_descs);
    family(
        "xdpip_xsk_rx_dropped",
        "XDP_STATISTICS rx_dropped",
        "counter",
        rx_dropped,
    );
    family(
        "xdpip_xsk_rx_ring_full",
        "XDP_STATISTICS rx_ring_full",
        "counter",
        ring_full,
    );
    family(
        "xdpip_xsk_fill_ring_empty",
        "XDP_STATISTICS rx_fill_ring_empty_descs",
        "counter",
        fill_empty,
    );
    family(
        "xdpip_xsk_tx_invalid",
        "XDP_STATISTICS tx_invalid_descs",
        "counter",
        tx_invalid,
    );
    family(
        "xdpip_control_resyncs",
        "full resyncs of the kernel's tables after lost notifications",
        "counter",
        vec![(String::new(), r.control.resyncs)],
    );
    family(
        "xdpip_routes",
        "routes in the FIB",
        "gauge",
        vec![(String::new(), r.control.routes as u64)],
    );
    o
}

/// Connections served at once. Past it, the oldest connection still
/// sending its request is closed to make room, so that idle or slow
/// clients cannot lock a scraper out.
pub const MAX_CONNECTIONS: usize = 64;
/// Time a client has to send its whole request head.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Time a write of the answer may block.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest request head read.
const MAX_REQUEST: u64 = 8192;

/// A connection being served, as the accept loop sees it.
struct Conn {
    id: u64,
    stream: TcpStream,
    since: Instant,
    /// Still reading the request (the only state in which it may be
    /// evicted: its answer is not being written).
    reading: Arc<AtomicBool>,
}

type Conns = Arc<Mutex<Vec<Conn>>>;

/// Answers `GET /metrics` until `stop` is set: one thread per connection,
/// at most [`MAX_CONNECTIONS`], each with [`REQUEST_TIMEOUT`] to send its
/// request.
pub(crate) fn serve(listener: TcpListener, shared: Arc<dyn View>, stop: Arc<AtomicBool>) {
    if let Err(e) = listener.set_nonblocking(true) {
        log::error!("metrics: {e}");
        return;
    }
    let conns: Conns = Arc::default();
    let mut next_id = 0u64;
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((s, _)) => {
                next_id += 1;
                if let Err(e) = admit(s, next_id, &conns, &shared) {
                    log::debug!("metrics: {e}");
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => {
                log::warn!("metrics: {e}");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
    // Connection threads end when their sockets do.
    if let Ok(c) = conns.lock() {
        for conn in c.iter() {
            let _ = conn.stream.shutdown(Shutdown::Both);
        }
    };
}

/// Registers a new connection, making room if needed, and starts its thread.
fn admit(s: TcpStream, id: u64, conns: &Conns, shared: &Arc<dyn View>) -> io::Result<()> {
    s.set_nonblocking(false)?;
    let reading = Arc::new(AtomicBool::new(true));
    {
        let mut c = conns.lock().map_err(|_| io::Error::other("poisoned"))?;
        if c.len() >= MAX_CONNECTIONS {
            let oldest = c
                .iter()
                .filter(|x| x.reading.load(Ordering::Relaxed))
                .min_by_key(|x| x.since)
                .map(|x| x.id);
            match oldest {
                Some(old) => {
                    let i = c.iter().position(|x| x.id == old).expect("listed");
                    let _ = c.swap_remove(i).stream.shutdown(Shutdown::Both);
                }
                None => {
                    // Every slot is writing an answer: this one waits for
                    // nothing, it is told to come back.
                    let mut w = &s;
                    return w.write_all(
                        b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    );
                }
            }
        }
        c.push(Conn {
            id,
            stream: s.try_clone()?,
            since: Instant::now(),
            reading: reading.clone(),
        });
    }
    let (registry, shared) = (conns.clone(), shared.clone());
    let spawned = std::thread::Builder::new()
        .name("xdpip-metrics-conn".into())
        .stack_size(256 << 10)
        .spawn(move || {
            if let Err(e) = answer(&s, &*shared, &reading) {
                log::debug!("metrics: {e}");
            }
            if let Ok(mut c) = registry.lock() {
                c.retain(|x| x.id != id);
            }
        });
    if let Err(e) = spawned {
        // The connection was registered; a thread could not be had.
        if let Ok(mut c) = conns.lock() {
            c.retain(|x| x.id != id);
        }
        return Err(e);
    }
    Ok(())
}

/// Reads one request head within [`REQUEST_TIMEOUT`] and answers it.
fn answer(s: &TcpStream, shared: &dyn View, reading: &AtomicBool) -> io::Result<()> {
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    let mut reader = BufReader::new(s.take(MAX_REQUEST));
    let mut next_line = |buf: &mut String| -> io::Result<usize> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        s.set_read_timeout(Some(left))?;
        reader.read_line(buf)
    };
    let mut request = String::new();
    next_line(&mut request)?;
    // Headers are read and ignored, up to the blank line.
    let mut line = String::new();
    while next_line(&mut line)? > 2 {
        line.clear();
    }
    reading.store(false, Ordering::Relaxed);
    let (status, body, ctype) =
        if request.starts_with("GET /metrics ") || request.starts_with("GET /metrics?") {
            (
                "200 OK",
                render(&shared.report()),
                "text/plain; version=0.0.4",
            )
        } else {
            ("404 Not Found", "try /metrics\n".to_string(), "text/plain")
        };
    s.set_write_timeout(Some(WRITE_TIMEOUT))?;
    let mut w = s;
    write!(
        w,
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}
