//! Preferred busy polling (`--busy-poll`): the worker runs its queues'
//! NAPI itself, in its `recvfrom`/`sendto` calls, and the device keeps its
//! interrupt masked meanwhile, so that a worker and its NAPI can share a
//! core without either starving the other.
//!
//! Three parts, as the kernel needs them (net/core/dev.c `napi_busy_loop`,
//! net/xdp/xsk.c):
//!
//! * on each AF_XDP socket, `SO_PREFER_BUSY_POLL`, `SO_BUSY_POLL` and
//!   `SO_BUSY_POLL_BUDGET` ([`crate::xsk::QueueSocket::set_busy_poll`]);
//! * on each device, `defer-hard-irqs` and `gro-flush-timeout`: per NAPI
//!   over netlink (`netdev` `napi-set`, Linux 6.13+), else the device-wide
//!   `napi_defer_hard_irqs` and `gro_flush_timeout` in sysfs; without them
//!   the interrupt comes back after every busy poll. The old values are put
//!   back when the engine stops ([`DeviceSettings`] on drop);
//! * a NAPI id on the socket: the kernel polls the NAPI instance the driver
//!   links to the queue the socket is bound to. A driver that links none
//!   (veth) leaves the socket without one, and busy polling cannot run.
//!
//! Whether it really runs is checked, not assumed ([`Monitor`]): the
//! namespace's `BusyPollRxPackets` (`/proc/net/netstat`, TcpExt), which
//! counts frames NAPI polls found while busy polling, must move while the
//! sockets receive. Every outcome is said in plain words; the engine
//! forwards either way.

use crate::netdev::{NapiSettings, Netdev, QueueKind};
use crate::xsk::BusyPoll;
use serde::{Deserialize, Serialize};
use std::io;

/// Busy-polling parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BusyPollConfig {
    /// Socket options.
    pub socket: BusyPoll,
    /// Device: empty NAPI polls before its interrupt comes back.
    pub defer_hard_irqs: u32,
    /// Device: how long the interrupt stays masked after a busy poll, ns
    /// (a timer polls NAPI if the worker has not by then).
    pub gro_flush_timeout_ns: u64,
}

impl BusyPollConfig {
    /// The values of the kernel's documentation (napi.rst) for a poller
    /// that keeps polling: budget of one batch, 2 deferred interrupts,
    /// 200 µs.
    pub fn for_batch(batch: usize) -> BusyPollConfig {
        BusyPollConfig {
            socket: BusyPoll {
                usecs: 20,
                budget: batch.clamp(1, 1024) as u16,
                prefer: true,
            },
            defer_hard_irqs: 2,
            gro_flush_timeout_ns: 200_000,
        }
    }
}

/// The busy-polling options for one socket. Zero-copy with
/// `SO_PREFER_BUSY_POLL` leaves transmission to the NAPI that busy polling
/// runs: the kernel then skips the driver's wake-up in `sendto(2)`, and
/// busy-polls the receive queue's NAPI only. A driver that transmits from
/// another NAPI (virtio_net; igb without queue pairs) would never send.
/// There, and where the driver does not say which NAPI transmits, the
/// preference is left off: the socket still busy-polls, and `sendto(2)`
/// still wakes the driver to transmit.
pub fn socket_options(
    cfg: &BusyPollConfig,
    nl: Option<&mut Netdev>,
    (iface, ifindex, queue): (&str, u32, u32),
    rx_napi: Option<u32>,
    zero_copy: bool,
) -> BusyPoll {
    let mut o = cfg.socket;
    if !(o.prefer && zero_copy) {
        return o;
    }
    let tx_napi = nl
        .and_then(|nl| nl.queues(ifindex).ok())
        .and_then(|qs| {
            qs.into_iter()
                .find(|q| q.kind == QueueKind::Tx && q.id == queue)
        })
        .and_then(|q| q.napi_id);
    if tx_napi.is_none() || tx_napi != rx_napi {
        o.prefer = false;
        log::info!(
            "{iface} queue {queue}: transmit runs in {}, not in the receive NAPI {} that \
             busy polling runs: SO_PREFER_BUSY_POLL left off, so that sendto(2) still wakes \
             the driver to transmit",
            tx_napi.map_or("a NAPI the driver does not name".into(), |n| format!(
                "NAPI {n}"
            )),
            rx_napi.map_or("?".into(), |n| n.to_string())
        );
    }
    o
}

enum Changed {
    Napi {
        iface: String,
        id: u32,
        old: NapiSettings,
    },
    Sysfs {
        iface: String,
        file: &'static str,
        old: String,
    },
}

/// Device settings changed for busy polling; put back on drop.
pub struct DeviceSettings {
    changed: Vec<Changed>,
    /// What was done, one line each.
    pub notes: Vec<String>,
    /// What could not be done, one line each.
    pub problems: Vec<String>,
}

impl std::fmt::Debug for DeviceSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceSettings")
            .field("notes", &self.notes)
            .field("problems", &self.problems)
            .finish()
    }
}

/// Sets defer-hard-irqs and gro-flush-timeout on every NAPI of the
/// `(name, ifindex)` devices. Never fails: what could not be set is in the
/// notes.
pub fn set_devices(ports: &[(String, u32)], cfg: &BusyPollConfig) -> DeviceSettings {
    let mut d = DeviceSettings {
        changed: Vec::new(),
        notes: Vec::new(),
        problems: Vec::new(),
    };
    let mut nl = Netdev::open();
    let new = NapiSettings {
        defer_hard_irqs: cfg.defer_hard_irqs,
        gro_flush_timeout: cfg.gro_flush_timeout_ns,
        irq_suspend_timeout: None,
    };
    if ports.is_empty() {
        d.notes
            .push("no device has a NAPI to busy-poll: device settings left alone".into());
    }
    for (name, ifindex) in ports {
        let by_netlink = match nl.as_mut() {
            Ok(nl) => set_napis(nl, name, *ifindex, &new, &mut d),
            Err(e) => Err(format!("no netdev netlink family: {e}")),
        };
        match by_netlink {
            Ok(0) => d.problems.push(format!(
                "{name}: no NAPI instance to set defer-hard-irqs on (the driver has none \
                 enabled)"
            )),
            Ok(n) => d.notes.push(format!(
                "{name}: defer-hard-irqs {} and gro-flush-timeout {} ns on {n} NAPI instance{} \
                 (netlink napi-set; restored at exit)",
                cfg.defer_hard_irqs,
                cfg.gro_flush_timeout_ns,
                if n == 1 { "" } else { "s" }
            )),
            Err(why) => match set_sysfs(name, *ifindex, cfg, &mut d) {
                Ok(()) => d.notes.push(format!(
                    "{name}: napi_defer_hard_irqs {} and gro_flush_timeout {} ns in sysfs \
                     (restored at exit; per-NAPI netlink: {why})",
                    cfg.defer_hard_irqs, cfg.gro_flush_timeout_ns
                )),
                Err(e) => d.problems.push(format!(
                    "{name}: could not set defer-hard-irqs and gro-flush-timeout: {why}; \
                     sysfs: {e}; the interrupt will come back after every busy poll"
                )),
            },
        }
    }
    d
}

fn set_napis(
    nl: &mut Netdev,
    name: &str,
    ifindex: u32,
    new: &NapiSettings,
    d: &mut DeviceSettings,
) -> Result<usize, String> {
    let napis = nl.napis(ifindex).map_err(|e| format!("napi-get: {e}"))?;
    let mut n = 0;
    for napi in napis {
        let (Some(defer), Some(gro)) = (napi.defer_hard_irqs, napi.gro_flush_timeout) else {
            return Err("napi-get gives no per-NAPI settings (Linux before 6.13)".into());
        };
        nl.set_napi(napi.id, new)
            .map_err(|e| format!("napi-set on NAPI {}: {e}", napi.id))?;
        d.changed.push(Changed::Napi {
            iface: name.to_string(),
            id: napi.id,
            old: NapiSettings {
                defer_hard_irqs: defer,
                gro_flush_timeout: gro,
                irq_suspend_timeout: None,
            },
        });
        n += 1;
    }
    Ok(n)
}

fn set_sysfs(
    name: &str,
    ifindex: u32,
    cfg: &BusyPollConfig,
    d: &mut DeviceSettings,
) -> io::Result<()> {
    let dir = format!("/sys/class/net/{name}");
    // sysfs shows the namespace it was mounted in: only write there if it
    // is this device.
    let idx = std::fs::read_to_string(format!("{dir}/ifindex"))?;
    if idx.trim().parse::<u32>().ok() != Some(ifindex) {
        return Err(io::Error::other(format!(
            "{dir} is another namespace's device (sysfs mounted elsewhere)"
        )));
    }
    for (file, value) in [
        ("napi_defer_hard_irqs", cfg.defer_hard_irqs.to_string()),
        ("gro_flush_timeout", cfg.gro_flush_timeout_ns.to_string()),
    ] {
        let path = format!("{dir}/{file}");
        let old = std::fs::read_to_string(&path)?.trim().to_string();
        std::fs::write(&path, &value)?;
        d.changed.push(Changed::Sysfs {
            iface: name.to_string(),
            file,
            old,
        });
    }
    Ok(())
}

impl Drop for DeviceSettings {
    fn drop(&mut self) {
        let mut nl = None;
        for c in self.changed.drain(..).rev() {
            match c {
                Changed::Napi { iface, id, old } => {
                    if nl.is_none() {
                        nl = Netdev::open().ok();
                    }
                    let r = nl
                        .as_mut()
                        .map_or(Err(io::Error::other("no netlink")), |n| {
                            n.set_napi(id, &old)
                        });
                    match r {
                        Ok(()) => {}
                        // The NAPI went away (a driver re-creating its
                        // queues), and its settings with it.
                        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                            log::debug!("{iface}: NAPI {id} is gone: nothing to restore")
                        }
                        Err(e) => log::warn!(
                            "{iface}: could not restore defer-hard-irqs {} and \
                             gro-flush-timeout {} on NAPI {id}: {e}",
                            old.defer_hard_irqs,
                            old.gro_flush_timeout
                        ),
                    }
                }
                Changed::Sysfs { iface, file, old } => {
                    let path = format!("/sys/class/net/{iface}/{file}");
                    if let Err(e) = std::fs::write(&path, &old) {
                        log::warn!("could not restore {path} to {old}: {e}");
                    }
                }
            }
        }
    }
}

/// Whether busy polling runs on one socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Set up; no frame received yet to tell.
    Waiting,
    /// `BusyPollRxPackets` moved while the socket received.
    Engaged,
    /// It moved not, though the socket received.
    NotEngaged,
    /// It cannot run on this socket (the reason says why).
    Unavailable,
}

/// Busy polling on one socket, in a report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SocketBusyPoll {
    /// Interface.
    pub iface: String,
    /// Queue.
    pub queue: u32,
    /// The NAPI instance its calls poll.
    pub napi_id: Option<u32>,
    /// Where it stands.
    pub state: State,
    /// Why, in plain words.
    pub reason: String,
}

/// Busy polling in a report (`xdpip stats --json`: `busy_poll`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BusyPollReport {
    /// Per socket.
    pub sockets: Vec<SocketBusyPoll>,
    /// What was set on the devices.
    pub devices: Vec<String>,
    /// `BusyPollRxPackets` of the namespace since the engine started.
    pub busy_poll_rx_packets: u64,
}

/// The namespace's `TcpExt: BusyPollRxPackets` (of the calling thread's
/// namespace).
pub fn busy_poll_rx_packets() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/net/netstat").ok()?;
    let mut lines = s.lines();
    while let Some(names) = lines.next() {
        let values = lines.next()?;
        if !names.starts_with("TcpExt:") {
            continue;
        }
        let i = names
            .split_whitespace()
            .position(|n| n == "BusyPollRxPackets")?;
        return values.split_whitespace().nth(i)?.parse().ok();
    }
    None
}

/// The state of one socket at start, from its socket options and NAPI id.
pub fn initial(
    iface: &str,
    driver: &str,
    queue: u32,
    napi_id: Option<u32>,
    set: &io::Result<()>,
) -> SocketBusyPoll {
    let (state, reason) = match (set, napi_id) {
        (Err(e), _) => (
            State::Unavailable,
            format!(
                "busy polling unavailable on {iface} queue {queue}: the socket refused {e}; \
                 forwarding goes on with wake-ups"
            ),
        ),
        (Ok(()), None) => (
            State::Unavailable,
            format!(
                "busy polling unavailable on {iface} ({driver}): the driver links no NAPI \
                 instance to queue {queue}, so the socket's calls have nothing to poll; \
                 forwarding goes on with wake-ups"
            ),
        ),
        (Ok(()), Some(id)) => (
            State::Waiting,
            format!(
                "busy polling set up on {iface} queue {queue} (NAPI {id}); waiting for \
                 traffic to see it engage"
            ),
        ),
    };
    SocketBusyPoll {
        iface: iface.to_string(),
        queue,
        napi_id,
        state,
        reason,
    }
}

/// Follows whether busy polling engages: once a second, with each
/// socket's received-frame count.
#[derive(Debug)]
pub struct Monitor {
    report: BusyPollReport,
    base: Option<u64>,
    last_bp: u64,
    last_rx: Vec<u64>,
    quiet_checks: Vec<u32>,
}

/// Checks with traffic and no movement before a socket is said to be not
/// engaged.
const CHECKS: u32 = 3;

impl Monitor {
    /// Starts following `sockets` (from [`initial`]), with the counter
    /// now (`busy_poll_rx_packets()`).
    pub fn new(sockets: Vec<SocketBusyPoll>, devices: Vec<String>, base: Option<u64>) -> Monitor {
        let n = sockets.len();
        Monitor {
            report: BusyPollReport {
                sockets,
                devices,
                busy_poll_rx_packets: 0,
            },
            base,
            last_bp: base.unwrap_or(0),
            last_rx: vec![0; n],
            quiet_checks: vec![0; n],
        }
    }

    /// One check, with the frames each socket has received so far
    /// (`rx[i]` for socket `i`) and the counter now. Returns the sockets
    /// whose state changed.
    pub fn check(&mut self, rx: &[u64], counter: Option<u64>) -> Vec<SocketBusyPoll> {
        let Some(base) = self.base else {
            let mut changed = Vec::new();
            for s in &mut self.report.sockets {
                if s.state == State::Waiting {
                    s.state = State::NotEngaged;
                    s.reason = format!(
                        "busy polling on {} queue {} cannot be checked: no BusyPollRxPackets \
                         in /proc/net/netstat (a kernel without CONFIG_NET_RX_BUSY_POLL?)",
                        s.iface, s.queue
                    );
                    changed.push(s.clone());
                }
            }
            return changed;
        };
        let now = counter.unwrap_or(self.last_bp);
        let moved = now > self.last_bp;
        self.report.busy_poll_rx_packets = now.saturating_sub(base);
        let mut changed = Vec::new();
        for (i, s) in self.report.sockets.iter_mut().enumerate() {
            let r = rx.get(i).copied().unwrap_or(0);
            let received = r > self.last_rx[i];
            self.last_rx[i] = r;
            if !matches!(s.state, State::Waiting | State::NotEngaged) || !received {
                continue;
            }
            if moved {
                s.state = State::Engaged;
                s.reason = format!(
                    "busy polling engaged on {} queue {} (NAPI {}): BusyPollRxPackets moves \
                     while it receives",
                    s.iface,
                    s.queue,
                    s.napi_id.unwrap_or(0)
                );
                changed.push(s.clone());
            } else if s.state == State::Waiting {
                self.quiet_checks[i] += 1;
                if self.quiet_checks[i] >= CHECKS {
                    s.state = State::NotEngaged;
                    s.reason = format!(
                        "busy polling not engaged on {} queue {} (NAPI {}): BusyPollRxPackets \
                         stayed at {} while it received {r} frames; forwarding goes on with \
                         wake-ups",
                        s.iface,
                        s.queue,
                        s.napi_id.unwrap_or(0),
                        now - base
                    );
                    changed.push(s.clone());
                }
            }
        }
        self.last_bp = now;
        changed
    }

    /// The report now.
    pub fn report(&self) -> BusyPollReport {
        self.report.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_copy_prefers_busy_polling_only_where_the_polled_napi_transmits() {
        let cfg = BusyPollConfig::for_batch(64);
        // Copy mode: the kernel transmits in sendto(2) itself.
        let copy = socket_options(&cfg, None, ("d0", 1, 0), Some(8193), false);
        assert!(copy.prefer);
        // Zero-copy, transmit NAPI unknown: sendto(2) must keep waking it.
        let zc = socket_options(&cfg, None, ("eth0", 1, 0), Some(8193), true);
        assert!(!zc.prefer);
        assert_eq!((zc.usecs, zc.budget), (cfg.socket.usecs, cfg.socket.budget));
    }

    #[test]
    fn a_socket_without_napi_is_unavailable_and_says_why() {
        let s = initial("d0", "veth", 0, None, &Ok(()));
        assert_eq!(s.state, State::Unavailable);
        assert!(
            s.reason
                .starts_with("busy polling unavailable on d0 (veth)"),
            "{}",
            s.reason
        );
        let e = initial(
            "d0",
            "virtio_net",
            0,
            Some(8193),
            &Err(io::Error::other(
                "SO_PREFER_BUSY_POLL: Operation not permitted",
            )),
        );
        assert_eq!(e.state, State::Unavailable);
        assert!(e.reason.contains("Operation not permitted"));
    }

    fn two() -> Vec<SocketBusyPoll> {
        vec![
            initial("eth0", "virtio_net", 0, Some(8193), &Ok(())),
            initial("eth1", "virtio_net", 0, Some(8194), &Ok(())),
        ]
    }

    #[test]
    fn engaged_only_when_the_counter_moves_with_traffic() {
        let mut m = Monitor::new(two(), vec![], Some(10));
        // No traffic: waiting, whatever the counter does.
        assert!(m.check(&[0, 0], Some(50)).is_empty());
        // eth0 receives and the counter moves: engaged; eth1 idle.
        let c = m.check(&[100, 0], Some(90));
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].state, State::Engaged);
        assert!(c[0].reason.starts_with("busy polling engaged on eth0"));
        assert_eq!(m.report().sockets[1].state, State::Waiting);
        assert_eq!(m.report().busy_poll_rx_packets, 80);
    }

    #[test]
    fn not_engaged_when_traffic_passes_and_the_counter_stands() {
        let mut m = Monitor::new(two(), vec![], Some(10));
        for i in 1..=CHECKS {
            let c = m.check(&[100 * i as u64, 0], Some(10));
            assert_eq!(c.is_empty(), i < CHECKS);
        }
        let r = m.report();
        assert_eq!(r.sockets[0].state, State::NotEngaged);
        assert!(r.sockets[0]
            .reason
            .contains("BusyPollRxPackets stayed at 0"));
        // It engages later if the counter starts moving.
        let c = m.check(&[1000, 0], Some(20));
        assert_eq!(c[0].state, State::Engaged);
    }

    #[test]
    fn no_counter_is_said_plainly() {
        let mut m = Monitor::new(two(), vec![], None);
        let c = m.check(&[1, 1], None);
        assert_eq!(c.len(), 2);
        assert!(c[0].reason.contains("cannot be checked"));
    }

    #[test]
    fn the_netstat_counter_is_read_where_the_kernel_has_it() {
        let s = std::fs::read_to_string("/proc/thread-self/net/netstat").unwrap_or_default();
        assert_eq!(
            busy_poll_rx_packets().is_some(),
            s.contains("BusyPollRxPackets")
        );
    }
}
