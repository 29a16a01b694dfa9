//! A UDP echo server on the engine's fast path.
//!
//! ```text
//! udp_echo -i IFACE [-i IFACE ...] --bind ADDR:PORT
//! ```
//!
//! Run it as root inside the interfaces' network namespace; it serves until
//! SIGINT or SIGTERM and then prints its counters. Everything but UDP to
//! the bound port (and ICMP echo, which the engine answers) stays with the
//! kernel.

use std::net::SocketAddrV4;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn usage() -> ! {
    eprintln!("usage: udp_echo -i IFACE [-i IFACE ...] --bind ADDR:PORT");
    std::process::exit(2);
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut ifaces = Vec::new();
    let mut bind: Option<SocketAddrV4> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "-i" | "--interface" => ifaces.push(args.next().unwrap_or_else(|| usage())),
            "--bind" => {
                let v = args.next().unwrap_or_else(|| usage());
                bind = Some(v.parse().map_err(|e| format!("--bind {v}: {e}"))?);
            }
            "-h" | "--help" => usage(),
            _ => usage(),
        }
    }
    let (Some(bind), false) = (bind, ifaces.is_empty()) else {
        usage()
    };

    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGINT, stop.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGTERM, stop.clone())?;

    let mut b = xdpip::Engine::builder();
    for i in &ifaces {
        b = b.interface(i.as_str());
    }
    let engine = b.start()?;
    let sock = engine.udp_socket()?;
    sock.bind(bind)?;
    // Wake up now and then to notice a signal.
    sock.set_read_timeout(Some(Duration::from_millis(200)))?;
    println!(
        "udp_echo: serving {} on {}",
        sock.local_addr()?,
        ifaces.join(", ")
    );

    // Room for the largest UDP payload, so nothing is truncated.
    let mut storage = vec![vec![0u8; 65536]; 32];
    let mut meta = vec![
        xdpip::socket::RecvMeta {
            len: 0,
            datagram_len: 0,
            src: bind,
            ancillary: Default::default(),
        };
        32
    ];
    let mut echoed = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let mut bufs: Vec<&mut [u8]> = storage.iter_mut().map(|b| &mut b[..]).collect();
        let n = match sock.recv_batch(&mut bufs, &mut meta) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e.into()),
        };
        for (buf, m) in bufs.iter().zip(&meta[..n]) {
            match sock.send_to(&buf[..m.len], m.src) {
                Ok(_) => echoed += 1,
                Err(e) => eprintln!("udp_echo: send to {}: {e}", m.src),
            }
        }
    }
    let report = engine.stop();
    println!(
        "udp_echo: echoed {echoed}; UdpInDatagrams {} UdpOutDatagrams {} UdpInErrors {} UdpRcvbufErrors {}",
        report.mib["UdpInDatagrams"],
        report.mib["UdpOutDatagrams"],
        report.mib["UdpInErrors"],
        report.mib["UdpRcvbufErrors"]
    );
    Ok(())
}
