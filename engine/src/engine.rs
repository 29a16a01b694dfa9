//! The engine: interfaces, the XDP program, AF_XDP sockets, workers and the
//! control thread, started together and stopped together.

use crate::capability::{self, Capability};
use crate::control::sysctl::{self, Overrides};
use crate::control::{Control, ControlCounters, ControlLinks, Opened, SharedOverrides};
use crate::ebpf::{
    self, GateMode, Steer, SteerConfig, SteerError, SteerMaps, Verdict, XdpMode, XdpModeRequest,
};
use crate::iface::{Interface, LookupError};
use crate::snapshot::Sysctl;
use crate::snapshot::{SnapshotCell, MAX_PORTS};
use crate::socket::{RawSocket, SocketShared, UdpSocket};
use crate::stats::{self, DropReason, Mib, PortTotals, WorkerCounters};
use crate::worker::Worker;
use crate::xsk::{self, BindMode, XskConfig, XskError, ZeroCopy};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

/// Why the engine did not start.
#[derive(Debug)]
pub enum Error {
    /// An interface could not be found or described.
    Interface(LookupError),
    /// The interface is not Ethernet.
    NotEthernet(String),
    /// The interface has no IPv4 address.
    NoIpv4Address(String),
    /// The same interface was given twice.
    DuplicateInterface(String),
    /// No interface was given, or more than the engine serves.
    PortCount(usize),
    /// The process lacks capabilities.
    MissingCapabilities(Vec<Capability>),
    /// An option is out of range.
    Config(String),
    /// The XDP program could not be loaded or attached.
    Steer(SteerError),
    /// The AF_XDP sockets could not be set up.
    Xsk(XskError),
    /// Reading the kernel's tables failed.
    Netlink(io::Error),
    /// A thread could not be started.
    Thread(io::Error),
}

impl Error {
    /// True for errors in what the operator asked for or must fix first
    /// (the command line exits with status 2 for these).
    pub fn is_usage(&self) -> bool {
        match self {
            Error::Interface(_)
            | Error::NotEthernet(_)
            | Error::NoIpv4Address(_)
            | Error::DuplicateInterface(_)
            | Error::PortCount(_)
            | Error::MissingCapabilities(_)
            | Error::Config(_) => true,
            Error::Steer(s) => matches!(
                s,
                SteerError::MtuTooLarge { .. }
                    | SteerError::ForeignProgram { .. }
                    | SteerError::AlreadyServed { .. }
            ),
            _ => false,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Interface(e) => e.fmt(f),
            Error::NotEthernet(n) => write!(
                f,
                "{n} is not an Ethernet interface (AF_XDP forwarding needs ARPHRD_ETHER)"
            ),
            Error::NoIpv4Address(n) => write!(
                f,
                "{n} has no IPv4 address (address family AF_INET); the engine routes IPv4 and \
                 answers from the interface's address: add one with `ip addr add ADDR/LEN dev {n}`"
            ),
            Error::DuplicateInterface(n) => write!(f, "interface {n} given more than once"),
            Error::PortCount(0) => f.write_str(
                "no interface given: pass -i/--interface IFACE (or interfaces in --config)",
            ),
            Error::PortCount(n) => write!(f, "{n} interfaces given, the most is {MAX_PORTS}"),
            Error::MissingCapabilities(caps) => {
                let names: Vec<&str> = caps.iter().map(|c| c.name()).collect();
                write!(
                    f,
                    "missing capabilit{} {}: run as root, or grant them (e.g. \
                     `setcap cap_net_admin,cap_net_raw,cap_bpf,cap_ipc_lock+ep xdpip`)",
                    if caps.len() == 1 { "y" } else { "ies" },
                    names.join(", ")
                )
            }
            Error::Config(s) => f.write_str(s),
            Error::Steer(e) => e.fmt(f),
            Error::Xsk(e) => e.fmt(f),
            Error::Netlink(e) => write!(f, "reading the kernel's tables over rtnetlink: {e}"),
            Error::Thread(e) => write!(f, "starting a thread: {e}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<SteerError> for Error {
    fn from(e: SteerError) -> Self {
        Error::Steer(e)
    }
}

/// Builds and starts an [`Engine`].
///
/// ```no_run
/// let engine = xdpip::Engine::builder()
///     .interface("eth0")
///     .interface("eth1")
///     .start()?;
/// println!("{:?}", engine.report().mib);
/// engine.stop();
/// # Ok::<(), xdpip::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct EngineBuilder {
    interfaces: Vec<String>,
    cores: Vec<usize>,
    xdp_mode: XdpModeRequest,
    zero_copy: ZeroCopy,
    replace: bool,
    xsk: XskConfig,
    batch: usize,
    fib_gate: GateMode,
    sysctl: Vec<(String, String)>,
    icmp_echo: bool,
    privileged_ports: Option<bool>,
}

impl Default for EngineBuilder {
    fn default() -> Self {
        EngineBuilder {
            interfaces: Vec::new(),
            cores: Vec::new(),
            xdp_mode: XdpModeRequest::Auto,
            zero_copy: ZeroCopy::Auto,
            replace: false,
            xsk: XskConfig::default(),
            batch: 64,
            fib_gate: GateMode::default(),
            sysctl: Vec::new(),
            icmp_echo: true,
            privileged_ports: None,
        }
    }
}

impl EngineBuilder {
    /// Serves an interface (in the current network namespace).
    pub fn interface(mut self, name: impl Into<String>) -> Self {
        self.interfaces.push(name.into());
        self
    }

    /// Cores to pin workers to, worker `i` on `cores[i % len]`. Default: all
    /// cores this process may run on.
    pub fn cores(mut self, cores: &[usize]) -> Self {
        self.cores = cores.to_vec();
        self
    }

    /// XDP attach mode.
    pub fn xdp_mode(mut self, m: XdpModeRequest) -> Self {
        self.xdp_mode = m;
        self
    }

    /// Zero-copy policy.
    pub fn zero_copy(mut self, z: ZeroCopy) -> Self {
        self.zero_copy = z;
        self
    }

    /// Replace another tool's XDP program instead of refusing.
    pub fn replace(mut self, r: bool) -> Self {
        self.replace = r;
        self
    }

    /// UMEM frame size (2048 or 4096).
    pub fn frame_size(mut self, n: u32) -> Self {
        self.xsk.frame_size = n;
        self
    }

    /// Entries per ring (power of two, 64 to 16384).
    pub fn ring_size(mut self, n: u32) -> Self {
        self.xsk.ring_size = n;
        self
    }

    /// Frames per batch (1 to 1024).
    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch = n;
        self
    }

    /// What the XDP program leaves to the kernel after asking its FIB
    /// ([`GateMode`]; default: unresolved neighbours).
    pub fn fib_gate(mut self, mode: GateMode) -> Self {
        self.fib_gate = mode;
        self
    }

    /// Sets a tunable by its sysctl name (`ip_default_ttl`, ...), over the
    /// namespace's value; checked when the engine starts.
    pub fn sysctl(mut self, name: &str, value: &str) -> Self {
        self.sysctl.push((name.to_string(), value.to_string()));
        self
    }

    /// Answers ICMP echo requests to the namespace's addresses on the fast
    /// path (on by default, so `ping` works; off leaves them to the kernel).
    pub fn icmp_echo(mut self, on: bool) -> Self {
        self.icmp_echo = on;
        self
    }

    /// Whether engine sockets may bind ports below 1024. By default they may
    /// when the process has `CAP_NET_BIND_SERVICE`, as for kernel sockets; an
    /// embedding program can decide otherwise.
    pub fn privileged_ports(mut self, allow: bool) -> Self {
        self.privileged_ports = Some(allow);
        self
    }

    fn overrides(&self) -> Result<Overrides, Error> {
        let mut o = Overrides::new();
        for (n, v) in &self.sysctl {
            let t = sysctl::lookup(n).map_err(|e| Error::Config(e.to_string()))?;
            o.insert(
                t.name,
                t.parse(v).map_err(|e| Error::Config(e.to_string()))?,
            );
        }
        Ok(o)
    }

    fn validate(&self) -> Result<(), Error> {
        if self.interfaces.is_empty() || self.interfaces.len() > MAX_PORTS {
            return Err(Error::PortCount(self.interfaces.len()));
        }
        for (i, n) in self.interfaces.iter().enumerate() {
            if self.interfaces[..i].contains(n) {
                return Err(Error::DuplicateInterface(n.clone()));
            }
        }
        if !matches!(self.xsk.frame_size, 2048 | 4096) {
            return Err(Error::Config(format!(
                "frame size {} is not 2048 or 4096",
                self.xsk.frame_size
            )));
        }
        let r = self.xsk.ring_size;
        if !r.is_power_of_two() || !(64..=16384).contains(&r) {
            return Err(Error::Config(format!(
                "ring size {r} is not a power of two from 64 to 16384"
            )));
        }
        if self.batch == 0 || self.batch > 1024 || self.batch as u32 > r / 2 {
            return Err(Error::Config(format!(
                "batch size {} must be from 1 to 1024 and at most half the ring size ({})",
                self.batch,
                r / 2
            )));
        }
        Ok(())
    }

    /// Checks everything that can be checked without touching the system:
    /// options, tunables, capabilities, interfaces. `start` does the same
    /// first; a caller may check before preparing anything else.
    pub fn check(&self) -> Result<(), Error> {
        self.checked().map(|_| ())
    }

    fn checked(&self) -> Result<(Overrides, Vec<Interface>), Error> {
        self.validate()?;
        let overrides = self.overrides()?;
        let missing = capability::check().map_err(|e| Error::Config(e.to_string()))?;
        if !missing.is_empty() {
            return Err(Error::MissingCapabilities(missing));
        }
        let mut ifaces = Vec::new();
        for name in &self.interfaces {
            let i = Interface::lookup(name).map_err(Error::Interface)?;
            if !i.is_ethernet {
                return Err(Error::NotEthernet(name.clone()));
            }
            if i.ipv4.is_empty() {
                return Err(Error::NoIpv4Address(name.clone()));
            }
            ifaces.push(i);
        }
        Ok((overrides, ifaces))
    }

    /// Starts the engine: attaches the XDP program, binds the sockets,
    /// starts workers and the control thread.
    pub fn start(self) -> Result<Engine, Error> {
        let (overrides, ifaces) = self.checked()?;
        for i in &ifaces {
            if i.driver.as_deref() == Some("veth") {
                log::warn!(
                    "{} is a veth: its peer must not offload transmit checksums \
                     (`ethtool -K PEER tx off`), or the frames it hands over carry partial \
                     UDP/TCP checksums that no wire would",
                    i.name
                );
            }
        }
        raise_memlock();

        let opened: Opened = Control::open().map_err(Error::Netlink)?;
        let (mut steer, mut maps) = Steer::load()?;
        let forwarding = crate::control::read_tunables(&overrides).ip_forward;
        maps.set_config(SteerConfig {
            forwarding: forwarding as u32,
            fib_gate: self.fib_gate as u32,
            local_frags: 0,
        })?;
        for (port, i) in ifaces.iter().enumerate() {
            maps.set_port(i.ifindex, port as u32)?;
        }
        maps.set_local_addrs(&opened.mirror.local_addrs())?;

        // The host's filter holds from the first packet: read and compiled,
        // and its kernel-only hooks passed to the kernel, before the XDP
        // program is attached.
        let filter = {
            let names: Vec<crate::filter::compile::Iface> = ifaces
                .iter()
                .map(|i| crate::filter::compile::Iface {
                    name: i.name.clone(),
                    ifindex: i.ifindex,
                })
                .collect();
            let r = crate::filter::watch::read(&names)
                .unwrap_or_else(|e| crate::filter::watch::unreadable(&e));
            maps.set_filter_hooks(r.kernel_hooks)?;
            let workers = ifaces.iter().map(|i| i.queues).max().unwrap_or(1) as usize;
            Arc::new(crate::filter::watch::Shared::new(r, workers))
        };

        let mut ports = Vec::new();
        for i in &ifaces {
            let mode = steer.attach(i, self.xdp_mode, self.replace, self.xsk.frame_size)?;
            ports.push(PortInfo {
                name: i.name.clone(),
                ifindex: i.ifindex,
                driver: i.driver.clone().unwrap_or_else(|| "unknown".into()),
                queues: i.queues,
                xdp_mode: mode,
            });
        }

        let queues = ifaces.iter().map(|i| i.queues).max().unwrap_or(1);
        if queues > ebpf::MAX_QUEUES {
            return Err(Error::Config(format!(
                "{queues} queues: the engine serves at most {} per interface; reduce them with \
                 `ethtool -L`",
                ebpf::MAX_QUEUES
            )));
        }
        if ifaces.iter().any(|i| i.queues != queues) {
            log::warn!(
                "interfaces have different queue counts ({}); a worker transmits only on \
                 interfaces that have its queue: set equal counts with `ethtool -L`",
                ifaces
                    .iter()
                    .map(|i| format!("{} {}", i.name, i.queues))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        let mut mode = match self.zero_copy {
            ZeroCopy::Off => BindMode::Copy,
            _ => BindMode::ZeroCopy,
        };
        let mut zero_copy_refused = None;
        let mut sockets = Vec::new();
        for q in 0..queues {
            let targets: Vec<(usize, String)> = ifaces
                .iter()
                .enumerate()
                .filter(|(_, i)| q < i.queues)
                .map(|(p, i)| (p, i.name.clone()))
                .collect();
            let ws = match xsk::open(&targets, q, &self.xsk, self.batch, mode) {
                Err(e) if e.is_zero_copy_refused() && self.zero_copy == ZeroCopy::Auto => {
                    zero_copy_refused = Some(format!(
                        "{}: {}",
                        e.iface.as_deref().unwrap_or("?"),
                        e.error
                    ));
                    mode = BindMode::Copy;
                    xsk::open(&targets, q, &self.xsk, self.batch, mode)
                }
                other => other,
            }
            .map_err(Error::Xsk)?;
            sockets.push(ws);
        }

        let cores = if self.cores.is_empty() {
            core_affinity::get_core_ids()
                .unwrap_or_default()
                .into_iter()
                .map(|c| c.id)
                .collect()
        } else {
            self.cores.clone()
        };
        let names: Vec<String> = ifaces.iter().map(|i| i.name.clone()).collect();
        let ifindexes: Vec<u32> = ifaces.iter().map(|i| i.ifindex).collect();
        let mut opened = opened;
        let cell = Arc::new(SnapshotCell::new(crate::snapshot::Snapshot {
            filter: filter.current(),
            ..Control::snapshot(&mut opened.mirror, &ifindexes, &overrides, 0)
        }));
        let overrides = Arc::new(SharedOverrides::new(overrides));
        let stop = Arc::new(AtomicBool::new(false));
        let maps = Arc::new(Mutex::new(maps));
        let privileged = self.privileged_ports.unwrap_or_else(|| {
            // CAP_NET_BIND_SERVICE is capability 10.
            crate::capability::effective().is_ok_and(|e| e & (1 << 10) != 0)
        });
        let local = Arc::new(
            SocketShared::new(
                maps.clone(),
                cell.clone(),
                sockets.len(),
                privileged,
                self.icmp_echo,
            )
            .map_err(|e| Error::Config(format!("sockets: {e}")))?,
        );
        // Random per run, so that an attacker cannot aim all fragments at
        // one worker.
        let reasm_seed = crate::reasm::random_seed();
        let handoff = Arc::new(crate::reasm::handoff::Handoff::new(sockets.len(), 1024));
        let mut workers = Vec::new();
        let mut threads = Vec::new();
        let mut registrations = Vec::new();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let resolve = Arc::new(crate::worker::ResolveQueue::new(1024));
        let nworkers = sockets.len();
        for (id, ws) in sockets.into_iter().enumerate() {
            let counters = Arc::new(WorkerCounters::new(ifaces.len(), ws.sockets.len()));
            for s in &ws.sockets {
                registrations.push((s.port as u32, s.queue, s.fd()));
            }
            let core = (!cores.is_empty()).then(|| cores[id % cores.len()]);
            workers.push(WorkerInfo {
                id,
                queue: id as u32,
                core,
                sockets: ws
                    .sockets
                    .iter()
                    .map(|s| (s.iface.clone(), s.queue))
                    .collect(),
                counters: counters.clone(),
            });
            let w = Worker {
                id,
                queue: id as u32,
                core,
                batch: self.batch,
                workers: nworkers,
                xsk: ws,
                snapshot: cell.clone(),
                counters,
                stop: stop.clone(),
                ready: Some(ready_tx.clone()),
                resolve: resolve.clone(),
                sockets: local.clone(),
                handoff: handoff.clone(),
                reasm_seed,
            };
            let t = std::thread::Builder::new()
                .name(format!("xdpip-w{id}"))
                .spawn(move || w.run());
            match t {
                Ok(t) => threads.push(t),
                Err(e) => {
                    stop.store(true, Ordering::Relaxed);
                    for t in threads {
                        let _ = t.join();
                    }
                    return Err(Error::Thread(e));
                }
            }
        }
        drop(ready_tx);
        // A worker that died before filling its rings drops its sender, so
        // this ends either way.
        for _ in 0..threads.len() {
            if ready_rx.recv().is_err() {
                break;
            }
        }
        {
            let mut m = maps.lock().expect("not poisoned");
            for (port, queue, fd) in registrations {
                if let Err(e) = m.register_socket(port, queue, fd) {
                    drop(m);
                    stop.store(true, Ordering::Relaxed);
                    for t in threads {
                        let _ = t.join();
                    }
                    return Err(e.into());
                }
            }
        }

        let control_counters = Arc::new(ControlCounters::default());
        let control = Control::new(
            opened,
            ifindexes,
            self.fib_gate,
            ControlLinks {
                cell: cell.clone(),
                maps: maps.clone(),
                counters: control_counters.clone(),
                resolve,
                overrides: overrides.clone(),
                filter: filter.clone(),
            },
        );
        let cstop = stop.clone();
        let control = std::thread::Builder::new()
            .name("xdpip-control".into())
            .spawn(move || control.run(cstop))
            .map_err(Error::Thread)?;
        let watch = crate::filter::watch::Watch {
            shared: filter.clone(),
            cell: cell.clone(),
            maps: maps.clone(),
        };
        let wstop = stop.clone();
        let filter_thread = std::thread::Builder::new()
            .name("xdpip-filter".into())
            .spawn(move || watch.run(wstop))
            .map_err(Error::Thread)?;

        Ok(Engine {
            steer: Some(steer),
            threads,
            control: Some(control),
            services: vec![filter_thread],
            stop,
            shared: Arc::new(Shared {
                maps,
                info: EngineInfo {
                    ports,
                    bind_mode: mode,
                    zero_copy_refused,
                    workers,
                    names,
                    fib_gate: self.fib_gate,
                },
                cell,
                control_counters,
                overrides,
                started: Instant::now(),
                sockets: local,
                filter,
            }),
        })
    }
}

fn raise_memlock() {
    let r = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit reads r; failure is harmless (CAP_IPC_LOCK covers it).
    unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &r) };
}

/// A served interface.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PortInfo {
    /// Name.
    pub name: String,
    /// Index.
    pub ifindex: u32,
    /// Driver.
    pub driver: String,
    /// Queues with a socket.
    pub queues: u32,
    /// XDP attach mode.
    pub xdp_mode: XdpMode,
}

/// A worker.
#[derive(Debug, Clone)]
pub struct WorkerInfo {
    /// Number.
    pub id: usize,
    /// Queue index.
    pub queue: u32,
    /// Core it is pinned to.
    pub core: Option<usize>,
    /// Its sockets: (interface, queue).
    pub sockets: Vec<(String, u32)>,
    counters: Arc<WorkerCounters>,
}

/// How the engine runs.
#[derive(Debug, Clone)]
pub struct EngineInfo {
    /// Interfaces, by port number.
    pub ports: Vec<PortInfo>,
    /// How the sockets are bound.
    pub bind_mode: BindMode,
    /// Why zero-copy was not used, when it was refused.
    pub zero_copy_refused: Option<String>,
    /// Workers.
    pub workers: Vec<WorkerInfo>,
    names: Vec<String>,
    /// Whether the XDP program's FIB gate is on.
    pub fib_gate: GateMode,
}

/// A running engine. Dropping it stops it.
pub struct Engine {
    steer: Option<Steer>,
    threads: Vec<JoinHandle<()>>,
    control: Option<JoinHandle<()>>,
    services: Vec<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    shared: Arc<Shared>,
}

impl Shared {
    pub(crate) fn set_sysctl(&self, name: &str, value: &str) -> Result<(), sysctl::SysctlError> {
        let t = sysctl::lookup(name)?;
        self.overrides.set(t.name, t.parse(value)?);
        Ok(())
    }

    /// The counters now.
    pub(crate) fn report(&self) -> Report {
        let ws: Vec<&WorkerCounters> = self.info.workers.iter().map(|w| &*w.counters).collect();
        let mut mib = BTreeMap::new();
        for m in Mib::ALL {
            mib.insert(
                m.name().to_string(),
                ws.iter().map(|w| w.mib[*m as usize].get()).sum(),
            );
        }
        mib.insert(
            Mib::UdpSndbufErrors.name().to_string(),
            self.sockets
                .counters
                .sndbuf_errors
                .load(std::sync::atomic::Ordering::Relaxed),
        );
        let mut drops = BTreeMap::new();
        for d in DropReason::ALL {
            drops.insert(
                d.name().to_string(),
                ws.iter().map(|w| w.drops[*d as usize].get()).sum(),
            );
        }
        let verdicts = self.maps.lock().map(|m| m.verdicts()).unwrap_or([0; 17]);
        let xdp = Verdict::ALL
            .iter()
            .zip(verdicts)
            .map(|(v, n)| (v.name().to_string(), n))
            .collect();
        let workers = self
            .info
            .workers
            .iter()
            .map(|w| WorkerReport {
                id: w.id,
                queue: w.queue,
                core: w.core,
                batches: w.counters.batches.get(),
                sleeps: w.counters.sleeps.get(),
                wakeups: w.counters.wakeups.get(),
                free_frames: w.counters.free_frames.get(),
                reasm_memory: w.counters.reasm_memory.get(),
                reasm_memory_peak: w.counters.reasm_memory_peak.get(),
                reasm_queues: w.counters.reasm_queues.get(),
                to_kernel: w.counters.to_kernel.get(),
                handed_off: w.counters.handed_off.get(),
                sockets: w
                    .sockets
                    .iter()
                    .zip(&w.counters.sockets)
                    .map(|((iface, queue), c)| SocketReport {
                        iface: iface.clone(),
                        queue: *queue,
                        xdp_statistics: xsk::XdpStatistics {
                            rx_dropped: c.rx_dropped.get(),
                            rx_invalid_descs: c.rx_invalid_descs.get(),
                            tx_invalid_descs: c.tx_invalid_descs.get(),
                            rx_ring_full: c.rx_ring_full.get(),
                            rx_fill_ring_empty_descs: c.fill_ring_empty.get(),
                            tx_ring_empty_descs: c.tx_ring_empty.get(),
                        },
                        fill_level: c.fill_level.get(),
                        tx_in_flight: c.tx_in_flight.get(),
                    })
                    .collect(),
            })
            .collect();
        let snap = self.cell.load();
        let filter = FilterReport::of(&self.filter.current());
        Report {
            uptime: self.started.elapsed().as_secs_f64(),
            mode: ModeReport {
                ports: self.info.ports.clone(),
                afxdp: self.info.bind_mode.to_string(),
                zero_copy_refused: self.info.zero_copy_refused.clone(),
                fib_gate: self.info.fib_gate.to_string(),
            },
            ports: stats::sum_ports(&ws, &self.info.names),
            mib,
            drops,
            xdp,
            workers,
            control: ControlReport {
                generation: snap.generation,
                routes: snap.fib.len(),
                neighbours: snap.neigh.len(),
                messages: self.control_counters.messages.get(),
                resyncs: self.control_counters.resyncs.get(),
                resolve_requests: self.control_counters.resolve_requests.get(),
            },
            filter,
        }
    }
}

/// What the engine's service threads (control socket, metrics) read.
pub(crate) struct Shared {
    maps: Arc<Mutex<SteerMaps>>,
    info: EngineInfo,
    pub(crate) cell: Arc<SnapshotCell>,
    control_counters: Arc<ControlCounters>,
    overrides: Arc<SharedOverrides>,
    started: Instant,
    sockets: Arc<SocketShared>,
    filter: Arc<crate::filter::watch::Shared>,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("info", &self.shared.info)
            .finish()
    }
}

/// Counters of one socket in a [`Report`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SocketReport {
    /// Interface.
    pub iface: String,
    /// Queue.
    pub queue: u32,
    /// `XDP_STATISTICS`.
    pub xdp_statistics: xsk::XdpStatistics,
    /// Frames in the fill ring (or held by the kernel for it).
    pub fill_level: u64,
    /// Frames transmitted and not yet completed.
    pub tx_in_flight: u64,
}

/// Counters of one worker in a [`Report`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerReport {
    /// Number.
    pub id: usize,
    /// Queue.
    pub queue: u32,
    /// Core.
    pub core: Option<usize>,
    /// Batches with work.
    pub batches: u64,
    /// Sleeps in poll(2).
    pub sleeps: u64,
    /// Wake-up system calls.
    pub wakeups: u64,
    /// Free frames in its pool.
    pub free_frames: u64,
    /// Reassembly memory now and at its highest, in bytes.
    pub reasm_memory: u64,
    /// Highest reassembly memory seen.
    pub reasm_memory_peak: u64,
    /// Datagrams being reassembled.
    pub reasm_queues: u64,
    /// Datagrams handed to the kernel (reassembled ones no engine socket
    /// wanted; ones the engine sent through a filter hook of the kernel's).
    pub to_kernel: u64,
    /// Fragments passed to the worker that owns their datagram.
    pub handed_off: u64,
    /// Its sockets.
    pub sockets: Vec<SocketReport>,
}

/// Everything the engine counts, at one moment.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// Seconds since start.
    pub uptime: f64,
    /// "native"/"skb" per port, and the bind mode.
    pub mode: ModeReport,
    /// Per port totals.
    pub ports: Vec<PortTotals>,
    /// IP-MIB counters, summed over workers.
    pub mib: BTreeMap<String, u64>,
    /// Drops by reason, summed over workers.
    pub drops: BTreeMap<String, u64>,
    /// The XDP program's verdicts, summed over CPUs.
    pub xdp: BTreeMap<String, u64>,
    /// Per worker.
    pub workers: Vec<WorkerReport>,
    /// Control thread.
    pub control: ControlReport,
    /// The packet filter.
    #[serde(default)]
    pub filter: FilterReport,
}

/// The packet filter in a [`Report`]: the rules the engine compiled with
/// what they matched, and the hooks left to the kernel with why.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FilterReport {
    /// The nf_tables generation compiled.
    pub generation: u32,
    /// Hooks whose traffic goes to the kernel.
    pub kernel_hooks: Vec<String>,
    /// Why, one line per rule or table.
    pub kernel_reasons: Vec<String>,
    /// Every rule, with the packets and bytes it matched on the fast path.
    pub rules: Vec<FilterRuleReport>,
}

/// One rule in a [`FilterReport`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FilterRuleReport {
    /// Where it is and what it does.
    #[serde(flatten)]
    pub rule: crate::filter::RuleInfo,
    /// Packets it matched (on the engine's fast path only).
    pub packets: u64,
    /// Their bytes (IP total length).
    pub bytes: u64,
}

impl FilterReport {
    fn of(r: &crate::filter::Ruleset) -> Self {
        FilterReport {
            generation: r.generation,
            kernel_hooks: crate::filter::Hook::ALL
                .iter()
                .filter(|h| r.kernel(**h))
                .map(|h| h.name().to_string())
                .collect(),
            kernel_reasons: r.kernel_reasons.clone(),
            rules: r
                .rules
                .iter()
                .zip(r.totals())
                .map(|(i, (packets, bytes))| FilterRuleReport {
                    rule: i.clone(),
                    packets,
                    bytes,
                })
                .collect(),
        }
    }
}

/// Datapath modes in a [`Report`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModeReport {
    /// Per port.
    pub ports: Vec<PortInfo>,
    /// "zero-copy" or "copy".
    pub afxdp: String,
    /// Why zero-copy was refused, if it was.
    pub zero_copy_refused: Option<String>,
    /// FIB gate in the XDP program: off, neigh or full.
    pub fib_gate: String,
}

/// Control thread counters in a [`Report`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ControlReport {
    /// Snapshot generation.
    pub generation: u64,
    /// Routes in the FIB.
    pub routes: usize,
    /// Neighbour entries.
    pub neighbours: usize,
    /// Netlink messages applied.
    pub messages: u64,
    /// Resyncs after lost notifications.
    pub resyncs: u64,
    /// Next hops the kernel was asked to resolve.
    pub resolve_requests: u64,
}

impl Engine {
    /// A builder.
    pub fn builder() -> EngineBuilder {
        EngineBuilder::default()
    }

    /// A new UDP socket on the engine's fast path, unbound; see
    /// [`UdpSocket`].
    ///
    /// ```no_run
    /// let engine = xdpip::Engine::builder().interface("eth0").start()?;
    /// let sock = engine.udp_socket()?;
    /// sock.bind("10.0.0.1:5000".parse().unwrap())?;
    /// sock.send_to(b"hello", "10.0.0.2:5000".parse().unwrap())?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn udp_socket(&self) -> io::Result<UdpSocket> {
        UdpSocket::new(self.shared.sockets.clone())
    }

    /// A new raw IP socket of `protocol` on the engine's fast path; see
    /// [`RawSocket`] for what it receives. `EPROTONOSUPPORT` for protocol 0.
    pub fn raw_socket(&self, protocol: u8) -> io::Result<RawSocket> {
        RawSocket::new(self.shared.sockets.clone(), protocol)
    }

    /// How the engine runs.
    pub fn info(&self) -> &EngineInfo {
        &self.shared.info
    }

    /// The packet filter in force ([`crate::filter`]).
    pub fn filter(&self) -> Arc<crate::filter::Ruleset> {
        self.shared.filter.current()
    }

    /// The tunables in force.
    pub fn sysctl(&self) -> Sysctl {
        self.shared.cell.load().sysctl
    }

    /// Sets a tunable while the engine runs; it takes effect within 100 ms.
    pub fn set_sysctl(&self, name: &str, value: &str) -> Result<(), sysctl::SysctlError> {
        self.shared.set_sysctl(name, value)
    }

    /// Serves the control socket (`xdpip stats`, `routes`, `neigh`,
    /// `sysctl`) at `path`, owner-only, until the engine stops.
    pub fn serve_control(&mut self, path: &std::path::Path) -> io::Result<()> {
        let l = crate::control::api::bind(path)?;
        self.serve_control_on(l, path)
    }

    /// Serves the control socket on a listener bound with
    /// [`crate::control::api::bind`] (before the engine started, so that a
    /// second engine in the namespace is refused before it touches the
    /// interfaces).
    pub fn serve_control_on(
        &mut self,
        l: std::os::unix::net::UnixListener,
        path: &std::path::Path,
    ) -> io::Result<()> {
        let (shared, stop, path) = (self.shared.clone(), self.stop.clone(), path.to_path_buf());
        self.services.push(
            std::thread::Builder::new()
                .name("xdpip-api".into())
                .spawn(move || crate::control::api::serve(l, path, shared, stop))?,
        );
        Ok(())
    }

    /// Serves Prometheus metrics on `addr` until the engine stops.
    pub fn serve_metrics(
        &mut self,
        addr: std::net::SocketAddr,
    ) -> io::Result<std::net::SocketAddr> {
        let l = std::net::TcpListener::bind(addr)?;
        let bound = l.local_addr()?;
        let (shared, stop) = (self.shared.clone(), self.stop.clone());
        self.services.push(
            std::thread::Builder::new()
                .name("xdpip-metrics".into())
                .spawn(move || crate::control::metrics::serve(l, shared, stop))?,
        );
        Ok(bound)
    }

    /// The counters now.
    pub fn report(&self) -> Report {
        self.shared.report()
    }

    /// Detaches the XDP program (the kernel takes all traffic back at
    /// once), then stops the workers and the control thread and closes the
    /// sockets. Returns the final counters.
    pub fn stop(mut self) -> Report {
        self.shutdown();
        self.report()
    }

    fn shutdown(&mut self) {
        if let Some(steer) = self.steer.take() {
            drop(steer);
        }
        self.stop.store(true, Ordering::Release);
        for t in self.threads.drain(..).chain(self.services.drain(..)) {
            let _ = t.join();
        }
        if let Some(c) = self.control.take() {
            let _ = c.join();
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.shutdown();
    }
}
