//! `xdpip-bench xsk-forward`: the AF_XDP floor. A forwarder between two
//! interfaces that does nothing but the AF_XDP I/O and a MAC rewrite, on
//! the engine's own AF_XDP code (`xdpip::xsk`: the same rings, the same
//! UMEM shared by both sockets, the same ring and frame sizes and batch),
//! the engine's placement rule and the engine's idle policy
//! (`xdpip::worker::idle`). Whatever xdpip forwards below this floor, on
//! the same cores, is the cost of what it does per packet.
//!
//! Frames received on interface *i* (IPv4 only: `xsk_fwd.bpf.c` leaves ARP
//! to the kernel) leave on the other interface with its MAC as source and
//! `--dst-mac` *o* as destination. No TTL, no checksum, no lookup. One
//! queue (0) per interface.
//!
//! It prints JSON lines as `xdpip run --json` does: `started` (with the
//! placement) and `stopped` (frames forwarded, `XDP_STATISTICS`).

use crate::ebpf::{chain, Loaded, XSK_FWD_OBJECT};
use crate::gen::Result;
use crate::sys;
use aya::maps::{HashMap, MapData, XskMap};
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use xdpip::placement;
use xdpip::stats::WorkerCounters;
use xdpip::worker::idle::{Idle, IdleConfig, Policy};
use xdpip::xsk::{self, ring::Desc, BindMode, XskConfig};

/// Slots per port in `xsks` (MAX_QUEUES of xsk_fwd.bpf.c).
const MAX_QUEUES: u32 = 256;

/// What to forward.
#[derive(Debug, Clone)]
pub struct FloorConfig {
    /// The two interfaces.
    pub ifaces: [String; 2],
    /// Destination MAC of frames leaving each interface.
    pub dst_macs: [[u8; 6]; 2],
    /// Cores, as `xdpip run --cores` (empty: the engine's default rule).
    pub cores: Vec<usize>,
    /// Frames per batch.
    pub batch: usize,
    /// Ring and frame sizes.
    pub xsk: XskConfig,
}

/// Runs until `stop` is set.
pub fn run(cfg: &FloorConfig, stop: &AtomicBool) -> Result<()> {
    if !cfg.cores.is_empty() {
        placement::check(&cfg.cores, &placement::existing(), &placement::allowed())
            .map_err(|e| format!("--cores: {e}"))?;
    }
    let mut info = Vec::new();
    for name in &cfg.ifaces {
        let i = xdpip::iface::Interface::lookup(name).map_err(|e| e.to_string())?;
        info.push(i);
    }
    let mut l = Loaded::load(XSK_FWD_OBJECT, "xsk_fwd.bpf.o", &["xsk_fwd"])?;
    let mut ports: HashMap<MapData, u32, u32> = l.take_map("ports")?;
    let mut xsks: XskMap<MapData> = l.take_map("xsks")?;
    for (p, i) in info.iter().enumerate() {
        ports
            .insert(i.ifindex, p as u32, 0)
            .map_err(|e| format!("BPF map ports: {}", chain(&e)))?;
    }
    // The program first: a veth takes AF_XDP frames only with one attached.
    for i in &info {
        l.attach("xsk_fwd", &i.name, i.ifindex, true)?;
    }
    let targets: Vec<(usize, String)> = cfg.ifaces.iter().cloned().enumerate().collect();
    let mut ws = match xsk::open(&targets, 0, &cfg.xsk, cfg.batch, BindMode::ZeroCopy) {
        Err(e) if e.is_zero_copy_refused() => {
            xsk::open(&targets, 0, &cfg.xsk, cfg.batch, BindMode::Copy)
        }
        other => other,
    }
    .map_err(|e| e.to_string())?;

    let services = placement::services(
        &info
            .iter()
            .map(|i| placement::Port {
                name: i.name.clone(),
                ifindex: i.ifindex,
                driver: i.driver.clone(),
                queues: 1,
            })
            .collect::<Vec<_>>(),
        1,
    );
    let place = placement::place(&services, &cfg.cores, &placement::allowed())
        .pop()
        .ok_or("no placement")?;
    if let Some(c) = &place.cores {
        placement::pin_current(c).map_err(|e| format!("pinning to {}: {e}", place.describe()))?;
    }
    let counters = WorkerCounters::new(2, 2);
    let mut idle = Idle::new(
        IdleConfig {
            policy: if place.shares_napi == Some(true) {
                Policy::SharedWithNapi
            } else {
                Policy::OwnCore
            },
            busy_poll: vec![false; 2],
        },
        0,
    );

    let ring = ws.ring_size;
    let copy_mode = ws.mode == BindMode::Copy;
    let mut pool: Vec<u64> = std::mem::take(&mut ws.frames);
    let mut fill = [0u32; 2];
    let mut in_flight = [0u32; 2];
    let mut forwarded = [0u64; 2];
    let mut tx_full = 0u64;
    let mut pending: [Vec<Desc>; 2] = [
        Vec::with_capacity(cfg.batch * 2),
        Vec::with_capacity(cfg.batch * 2),
    ];
    let mut rx = vec![Desc::default(); cfg.batch];
    let mut comp = vec![0u64; ring as usize];
    let macs = [info[0].mac.0, info[1].mac.0];
    let mut pollfds: Vec<libc::pollfd> = ws
        .sockets
        .iter()
        .map(|s| libc::pollfd {
            fd: s.fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    for (i, s) in ws.sockets.iter_mut().enumerate() {
        refill(s, &mut fill[i], ring, &mut pool);
    }
    for s in &ws.sockets {
        xsks.set(s.port as u32 * MAX_QUEUES + s.queue, s.fd(), 0)
            .map_err(|e| format!("BPF map xsks: {}", chain(&e)))?;
    }
    println!(
        "{}",
        json!({
            "event": "started",
            "mode": {"afxdp": ws.mode.to_string()},
            "cores": place.cores,
            "placement": place.why,
            "policy": format!("{:?}", if place.shares_napi == Some(true) {
                Policy::SharedWithNapi } else { Policy::OwnCore }),
        })
    );

    let umem = &ws.umem;
    while !stop.load(Ordering::Relaxed) {
        let mut work = 0;
        for (i, s) in ws.sockets.iter_mut().enumerate() {
            let n = s.rx.consume(&mut rx);
            if n == 0 {
                continue;
            }
            work += n;
            fill[i] -= n as u32;
            let o = 1 - i;
            for d in &rx[..n] {
                // SAFETY: just received: the frame is ours until it is put
                // on a ring.
                let f = unsafe { umem.slice_mut(d.addr, d.len as usize) };
                if f.len() >= 12 {
                    f[..6].copy_from_slice(&cfg.dst_macs[o]);
                    f[6..12].copy_from_slice(&macs[o]);
                }
                pending[o].push(*d);
            }
        }
        for (o, s) in ws.sockets.iter_mut().enumerate() {
            if !pending[o].is_empty() {
                let sent = s.tx.produce(&pending[o]);
                for d in &pending[o][sent..] {
                    tx_full += 1;
                    pool.push(umem.frame_of(d.addr));
                }
                pending[o].clear();
                in_flight[o] += sent as u32;
                forwarded[o] += sent as u64;
            }
            // As the engine kicks: while frames sit on the ring (copy mode
            // sends a budget per call).
            let max_kicks = if copy_mode {
                s.tx.pending().div_ceil(s.tx_budget.max(1)) + 1
            } else {
                1
            };
            let mut kicks = 0;
            while kicks < max_kicks && s.tx.pending() > 0 && s.tx.needs_wakeup() {
                s.kick_tx();
                kicks += 1;
            }
            let n = s.cq.consume(&mut comp);
            if n > 0 {
                work += n;
                in_flight[o] -= n as u32;
                pool.extend(comp[..n].iter().map(|a| umem.frame_of(*a)));
            }
        }
        for (i, s) in ws.sockets.iter_mut().enumerate() {
            refill(s, &mut fill[i], ring, &mut pool);
        }
        idle.after_round(
            work,
            in_flight.iter().any(|n| *n > 0),
            &mut pollfds,
            &counters,
            &(),
        );
    }
    let stats: Vec<serde_json::Value> = ws
        .sockets
        .iter()
        .map(|s| {
            json!({
                "iface": s.iface,
                "queue": s.queue,
                "xdp_statistics": xsk::statistics(s.fd()).ok(),
            })
        })
        .collect();
    l.detach_all()?;
    println!(
        "{}",
        json!({
            "event": "stopped",
            "forwarded": forwarded[0] + forwarded[1],
            "forwarded_per_egress": forwarded,
            "drops": {"tx_ring_full": tx_full},
            "sleeps": counters.sleeps.get(),
            "sockets": stats,
        })
    );
    Ok(())
}

/// Keeps the fill ring full.
fn refill(s: &mut xsk::QueueSocket, fill: &mut u32, ring: u32, pool: &mut Vec<u64>) {
    let take = (ring - *fill).min(pool.len() as u32) as usize;
    if take == 0 {
        return;
    }
    let from = pool.len() - take;
    let n = s.fq.produce(&pool[from..]);
    pool.truncate(pool.len() - n);
    *fill += n as u32;
    if n > 0 && s.fq.needs_wakeup() {
        s.kick_rx();
    }
}

/// `xdpip-bench xsk-forward` from the command line.
pub fn main(ifaces: &[String], dst_macs: &[[u8; 6]], cores: &[usize]) -> Result<()> {
    if !sys::is_root() {
        return Err("needs root: it attaches an XDP program and opens AF_XDP sockets".into());
    }
    let (Ok(ifaces), Ok(dst_macs)) = (
        <[String; 2]>::try_from(ifaces.to_vec()),
        <[[u8; 6]; 2]>::try_from(dst_macs.to_vec()),
    ) else {
        return Err("give two interfaces (-i A -i B) and a --dst-mac for each".into());
    };
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone())
            .map_err(|e| format!("installing a signal handler: {e}"))?;
    }
    let cfg = FloorConfig {
        ifaces,
        dst_macs,
        cores: cores.to_vec(),
        batch: 64,
        xsk: XskConfig::default(),
    };
    run(&cfg, &stop)
}
