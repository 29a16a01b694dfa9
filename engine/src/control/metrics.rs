//! Prometheus metrics: the engine's counters in the text exposition format
//! on `GET /metrics`, with the names of `xdpip stats` as label values.

use crate::engine::Shared;
use crate::Report;
use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

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
    let socket_rows = |pick: fn(&crate::SocketReport) -> u64| {
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

/// Answers `GET /metrics` until `stop` is set.
pub(crate) fn serve(listener: TcpListener, shared: Arc<Shared>, stop: Arc<AtomicBool>) {
    if let Err(e) = listener.set_nonblocking(true) {
        log::error!("metrics: {e}");
        return;
    }
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((s, _)) => {
                if let Err(e) = answer(s, &shared) {
                    log::debug!("metrics: {e}");
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(50))
            }
            Err(e) => {
                log::warn!("metrics: {e}");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}

fn answer(s: std::net::TcpStream, shared: &Shared) -> io::Result<()> {
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(&s);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    // Headers are read and ignored.
    let mut line = String::new();
    while reader.read_line(&mut line)? > 2 {
        line.clear();
    }
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
    let mut w = &s;
    write!(
        w,
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}
