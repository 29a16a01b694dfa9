//! The engine: interfaces, the XDP program, AF_XDP sockets, workers and the
//! control thread, started together and stopped together.

use crate::busypoll::{self, BusyPollConfig, DeviceSettings};
use crate::capability::{self, Capability};
use crate::control::sysctl::{self, Overrides};
use crate::control::{Control, ControlCounters, ControlLinks, Opened, SharedOverrides, View};
use crate::ebpf::{
    self, GateMode, Steer, SteerConfig, SteerError, SteerMaps, Verdict, XdpModeRequest,
};
use crate::iface::{Interface, LookupError};
use crate::placement::{self, Placement};
use crate::report::{
    ControlReport, FilterReport, ModeReport, PortInfo, Report, SocketReport, WorkerReport,
};
use crate::snapshot::Sysctl;
use crate::snapshot::{SnapshotCell, MAX_PORTS};
use crate::socket::{RawSocket, SocketShared, UdpSocket};
use crate::stats::{self, Checksum, DropReason, Mib, WorkerCounters};
use crate::worker::idle::{IdleConfig, Policy};
use crate::worker::Worker;
use crate::xsk::{self, BindMode, XskConfig, XskError, ZeroCopy};
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
            Error::Steer(s) => match s {
                SteerError::MtuTooLarge { .. }
                | SteerError::ForeignProgram { .. }
                | SteerError::AlreadyServed { .. } => true,
                // Another program holds the interface (a link).
                SteerError::Attach { error, .. } => {
                    matches!(error.raw_os_error(), Some(libc::EBUSY) | Some(libc::EEXIST))
                }
                _ => false,
            },
            // Another AF_XDP user (another engine) holds the queue, or
            // zero-copy was required and the driver refuses it.
            Error::Xsk(e) => e.is_queue_busy() || e.is_zero_copy_refused(),
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
            Error::Xsk(e) if e.is_queue_busy() => write!(
                f,
                "{e}: another AF_XDP socket holds this queue (another running xdpip?); stop it \
                 first, --replace does not take queues over"
            ),
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
    busy_poll: bool,
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
            busy_poll: false,
        }
    }
}

impl EngineBuilder {
    /// Serves an interface (in the current network namespace).
    pub fn interface(mut self, name: impl Into<String>) -> Self {
        self.interfaces.push(name.into());
        self
    }

    /// Cores to pin workers to, worker `i` on `cores[i % len]`; each must
    /// exist and be allowed to the process. Default (empty): off the cores
    /// that service each worker's queues where the kernel says which they
    /// are, unpinned otherwise ([`crate::placement::place`]).
    pub fn cores(mut self, cores: &[usize]) -> Self {
        self.cores = cores.to_vec();
        self
    }

    /// Preferred busy polling ([`crate::busypoll`]): the workers run their
    /// queues' NAPI in their own system calls. Where the driver does not
    /// allow it (veth), the engine says so and forwards as without it.
    pub fn busy_poll(mut self, on: bool) -> Self {
        self.busy_poll = on;
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
    /// ([`GateMode`]; default: [`GateMode::Auto`]).
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
        if !self.cores.is_empty() {
            placement::check(&self.cores, &placement::existing(), &placement::allowed())
                .map_err(|e| Error::Config(format!("cores: {e}")))?;
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
                say_partial_checksums(i);
            }
        }
        raise_memlock();

        let opened: Opened = Control::open().map_err(Error::Netlink)?;
        let (mut steer, mut maps) = Steer::load()?;
        let forwarding = crate::control::read_tunables(&overrides).ip_forward;
        maps.set_config(SteerConfig {
            forwarding: forwarding as u32,
            // Auto asks the kernel until the first snapshot tells.
            fib_gate: self.fib_gate.effective(true) as u32,
            local_frags: 0,
            mtu_check_above: self.fib_gate.mtu_check_above(),
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
            let r = crate::control::filter::read(&names)
                .unwrap_or_else(|e| crate::control::filter::unreadable(&e));
            maps.set_filter_hooks(r.kernel_hooks)?;
            let workers = ifaces.iter().map(|i| i.queues).max().unwrap_or(1) as usize;
            Arc::new(crate::control::filter::Shared::new(r, workers))
        };

        // A takeover is all or nothing: every check that can refuse it
        // comes before the first program is detached. What is attached
        // where, and the MTUs, first; then the queues, which another
        // engine's sockets hold (EBUSY) as long as it runs; only then the
        // programs, and if one fails the others are undone.
        for i in &ifaces {
            steer.preflight(i, self.replace, self.xsk.frame_size)?;
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
        // Receive buffers before the programs switch drivers to zero-copy.
        for ws in &mut sockets {
            ws.fill_rings();
        }

        let mut ports = Vec::new();
        for i in &ifaces {
            let mode = match steer.attach(i, self.xdp_mode, self.replace, self.xsk.frame_size) {
                Ok(m) => m,
                Err(e) => {
                    steer.undo();
                    return Err(e.into());
                }
            };
            ports.push(PortInfo {
                name: i.name.clone(),
                ifindex: i.ifindex,
                driver: i.driver.clone().unwrap_or_else(|| "unknown".into()),
                queues: i.queues,
                xdp_mode: mode,
            });
        }

        let services = placement::services(
            &ifaces
                .iter()
                .map(|i| placement::Port {
                    name: i.name.clone(),
                    ifindex: i.ifindex,
                    driver: i.driver.clone(),
                    queues: i.queues,
                })
                .collect::<Vec<_>>(),
            queues,
        );
        let placements = placement::place(&services, &self.cores, &placement::allowed());
        // Busy polling: socket options first; the devices are set only
        // where a socket has a NAPI to poll (on the others, a deferred
        // interrupt would only delay frames).
        let mut busy_sockets = Vec::new();
        let devices = self.busy_poll.then(|| {
            let cfg = BusyPollConfig::for_batch(self.batch);
            let mut nl = crate::netdev::Netdev::open().ok();
            for (id, ws) in sockets.iter().enumerate() {
                for s in &ws.sockets {
                    let i = &ifaces[s.port];
                    let opts = busypoll::socket_options(
                        &cfg,
                        nl.as_mut(),
                        (&s.iface, i.ifindex, s.queue),
                        s.napi_id(),
                        ws.mode == BindMode::ZeroCopy,
                    );
                    let set = s.set_busy_poll(&opts);
                    let driver = ifaces[s.port].driver.as_deref();
                    let b = busypoll::initial(
                        &s.iface,
                        driver.unwrap_or("unknown driver"),
                        s.queue,
                        s.napi_id(),
                        &set,
                    );
                    busy_sockets.push((b, id, s.port));
                }
            }
            let polled: Vec<(String, u32)> = ifaces
                .iter()
                .enumerate()
                .filter(|(p, _)| {
                    busy_sockets
                        .iter()
                        .any(|(b, _, bp)| bp == p && b.state != busypoll::State::Unavailable)
                })
                .map(|(_, i)| (i.name.clone(), i.ifindex))
                .collect();
            busypoll::set_devices(&polled, &cfg)
        });
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
        let handoff = Arc::new(crate::reasm::handoff::Handoff::new(
            sockets.len(),
            crate::reasm::handoff::Handoff::slots_for(sockets.len()),
        ));
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
            let place: Placement = placements[id].clone();
            let polled: Vec<bool> = busy_sockets
                .iter()
                .filter(|(_, w, _)| *w == id)
                .map(|(b, ..)| b.state != busypoll::State::Unavailable)
                .collect();
            let idle = IdleConfig {
                policy: if place.shares_napi == Some(true) {
                    Policy::SharedWithNapi
                } else {
                    Policy::OwnCore
                },
                busy_poll: polled,
            };
            workers.push(WorkerInfo {
                id,
                queue: id as u32,
                core: place.core(),
                cores: place.cores.clone(),
                placement: place.why.clone(),
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
                // Pinned below, to one core or a set.
                core: None,
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
                idle,
            };
            let t = std::thread::Builder::new()
                .name(format!("xdpip-w{id}"))
                .spawn(move || {
                    if let Some(c) = &place.cores {
                        if let Err(e) = placement::pin_current(c) {
                            log::warn!("worker {id}: could not pin to {}: {e}", place.describe());
                        }
                    }
                    w.run()
                });
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
        let mut control = Control::new(
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
        control.prime();
        let cstop = stop.clone();
        let control = std::thread::Builder::new()
            .name("xdpip-control".into())
            .spawn(move || control.run(cstop))
            .map_err(Error::Thread)?;
        let filter_watch = crate::control::filter::Watch {
            shared: filter.clone(),
            cell: cell.clone(),
            maps: maps.clone(),
        };
        let wstop = stop.clone();
        let filter_thread = std::thread::Builder::new()
            .name("xdpip-filter".into())
            .spawn(move || filter_watch.run(wstop))
            .map_err(Error::Thread)?;

        let mut services = Vec::new();
        let busy_poll = match &devices {
            Some(d) => {
                let (m, t) = busy_poll_monitor(d, busy_sockets, &workers, stop.clone())?;
                services.push(t);
                Some(m)
            }
            None => None,
        };

        let steer = Arc::new(Mutex::new(Some(steer)));
        let shared = Arc::new(Shared {
            maps,
            lost: Mutex::new(None),
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
            busy_poll,
            filter,
        });
        let watch = {
            let (steer, shared, stop) = (steer.clone(), shared.clone(), stop.clone());
            std::thread::Builder::new()
                .name("xdpip-watch".into())
                .spawn(move || watch(&steer, &shared, &stop))
                .map_err(Error::Thread)?
        };
        Ok(Engine {
            steer,
            threads,
            control: Some(control),
            services: {
                services.push(watch);
                services.push(filter_thread);
                services
            },
            devices,
            stop,
            shared,
        })
    }
}

/// Says, for a veth whose peer offloads transmit checksums, what the
/// engine does with the partial checksums it hands over; nothing when the
/// peer computes its own, and what is unknown when it cannot be told.
fn say_partial_checksums(i: &Interface) {
    const DOES: &str = "the engine completes the partial UDP/TCP checksums it hands over \
                        before forwarding them and accepts them for its own sockets, as the \
                        kernel does (counted as csum_partial_completed and \
                        csum_partial_accepted)";
    match crate::veth::peer_offload(i.ifindex) {
        crate::veth::PeerOffload::On(peer) => log::info!(
            "{}: its veth peer {peer} offloads transmit checksums: {DOES}",
            i.name
        ),
        crate::veth::PeerOffload::Off(_) => {}
        crate::veth::PeerOffload::Unknown(why) => log::info!(
            "{}: whether its veth peer offloads transmit checksums is unknown ({why}); if it \
             does, {DOES}",
            i.name
        ),
    }
}

/// Says where busy polling stands on every socket, and starts the thread
/// that checks once a second whether it engages.
fn busy_poll_monitor(
    devices: &DeviceSettings,
    sockets: Vec<(busypoll::SocketBusyPoll, usize, usize)>,
    workers: &[WorkerInfo],
    stop: Arc<AtomicBool>,
) -> Result<(Arc<Mutex<busypoll::Monitor>>, JoinHandle<()>), Error> {
    for n in &devices.notes {
        log::info!("{n}");
    }
    for n in &devices.problems {
        log::warn!("{n}");
    }
    for (b, ..) in &sockets {
        if b.state == busypoll::State::Unavailable {
            log::warn!("{}", b.reason);
        } else {
            log::info!("{}", b.reason);
        }
    }
    let rx: Vec<Arc<WorkerCounters>> = sockets
        .iter()
        .map(|(_, w, _)| workers[*w].counters.clone())
        .collect();
    let ports: Vec<usize> = sockets.iter().map(|(_, _, p)| *p).collect();
    let m = Arc::new(Mutex::new(busypoll::Monitor::new(
        sockets.into_iter().map(|(b, ..)| b).collect(),
        devices
            .notes
            .iter()
            .chain(&devices.problems)
            .cloned()
            .collect(),
        busypoll::busy_poll_rx_packets(),
    )));
    let monitor = m.clone();
    let t = std::thread::Builder::new()
        .name("xdpip-busypoll".into())
        .spawn(move || {
            let mut last = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(std::time::Duration::from_millis(100));
                if last.elapsed().as_secs() < 1 {
                    continue;
                }
                last = Instant::now();
                let now: Vec<u64> = rx
                    .iter()
                    .zip(&ports)
                    .map(|(c, p)| c.ports[*p].rx_packets.get())
                    .collect();
                let changed = monitor
                    .lock()
                    .expect("not poisoned")
                    .check(&now, busypoll::busy_poll_rx_packets());
                for b in changed {
                    if b.state == busypoll::State::Engaged {
                        log::info!("{}", b.reason);
                    } else {
                        log::warn!("{}", b.reason);
                    }
                }
            }
        })
        .map_err(Error::Thread)?;
    Ok((m, t))
}

/// How often the watch thread checks that the program is still attached:
/// an engine whose program is removed notices within a second.
const WATCH_PERIOD: std::time::Duration = std::time::Duration::from_millis(250);

/// Checks every [`WATCH_PERIOD`] that the XDP program is still attached:
/// puts it back where it was detached, and records the loss (see
/// [`Engine::lost`]) where another program took its place or it could not
/// be put back. Ends with the engine, or at the first loss.
fn watch(steer: &Mutex<Option<Steer>>, shared: &Shared, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(WATCH_PERIOD);
        let Ok(mut guard) = steer.lock() else {
            return;
        };
        // Taken at shutdown: the engine detached it itself.
        let Some(s) = guard.as_mut() else {
            return;
        };
        match s.keep_attached() {
            Ok(again) => {
                for iface in again {
                    log::warn!(
                        "{iface}: the engine's XDP program was detached from under it; \
                         attached it again"
                    );
                }
            }
            // A query that failed says nothing about the program.
            Err(SteerError::Query { iface, error }) => {
                log::debug!("{iface}: checking the XDP program: {error}");
            }
            Err(e) => {
                log::error!("{e}");
                if let Ok(mut l) = shared.lost.lock() {
                    *l = Some(e.to_string());
                }
                return;
            }
        }
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

/// A worker.
#[derive(Debug, Clone)]
pub struct WorkerInfo {
    /// Number.
    pub id: usize,
    /// Queue index.
    pub queue: u32,
    /// Core it is pinned to, when it is pinned to one.
    pub core: Option<usize>,
    /// Cores it may run on; `None`: unpinned.
    pub cores: Option<Vec<usize>>,
    /// Why it runs there.
    pub placement: String,
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
    /// The XDP program's FIB gate, as asked for.
    pub fib_gate: GateMode,
}

/// A running engine. Dropping it stops it.
pub struct Engine {
    /// Shared with the watch thread, which puts the program back when it is
    /// detached from under the engine.
    steer: Arc<Mutex<Option<Steer>>>,
    threads: Vec<JoinHandle<()>>,
    control: Option<JoinHandle<()>>,
    services: Vec<JoinHandle<()>>,
    /// Busy-polling settings of the devices, put back at stop.
    devices: Option<DeviceSettings>,
    stop: Arc<AtomicBool>,
    shared: Arc<Shared>,
}

impl crate::control::View for Shared {
    fn set_sysctl(&self, name: &str, value: &str) -> Result<(), sysctl::SysctlError> {
        let t = sysctl::lookup(name)?;
        self.overrides.set(t.name, t.parse(value)?);
        Ok(())
    }

    fn snapshot(&self) -> Arc<crate::snapshot::Snapshot> {
        Arc::clone(&self.cell.load())
    }

    fn report(&self) -> Report {
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
        let checksums = Checksum::ALL
            .iter()
            .map(|c| {
                let n = ws.iter().map(|w| w.checksums[*c as usize].get()).sum();
                (c.name().to_string(), n)
            })
            .collect();
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
                cores: w.cores.clone(),
                placement: w.placement.clone(),
                batches: w.counters.batches.get(),
                sleeps: w.counters.sleeps.get(),
                wakeups: w.counters.wakeups.get(),
                free_frames: w.counters.free_frames.get(),
                reasm_memory: w.counters.reasm_memory.get(),
                reasm_memory_peak: w.counters.reasm_memory_peak.get(),
                reasm_queues: w.counters.reasm_queues.get(),
                to_kernel: w.counters.to_kernel.get(),
                handed_off: w.counters.handed_off.get(),
                vector_forwarded: w.counters.vector_forwarded.get(),
                slow_path: w.counters.slow_path.get(),
                neighbour_held: w.counters.neighbour_held.get(),
                frames_leaked: w.counters.frames_leaked.get(),
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
                fib_gate: match self.info.fib_gate {
                    GateMode::Auto => format!("auto ({})", self.control_counters.gate()),
                    g => g.to_string(),
                },
            },
            ports: stats::sum_ports(&ws, &self.info.names),
            mib,
            drops,
            checksums,
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
            busy_poll: self
                .busy_poll
                .as_ref()
                .map(|m| m.lock().expect("not poisoned").report()),
            filter,
        }
    }
}

/// What the engine's service threads (control socket, metrics) read.
pub(crate) struct Shared {
    maps: Arc<Mutex<SteerMaps>>,
    /// Why the engine lost an interface while running, if it did.
    lost: Mutex<Option<String>>,
    info: EngineInfo,
    pub(crate) cell: Arc<SnapshotCell>,
    control_counters: Arc<ControlCounters>,
    overrides: Arc<SharedOverrides>,
    started: Instant,
    sockets: Arc<SocketShared>,
    busy_poll: Option<Arc<Mutex<busypoll::Monitor>>>,
    filter: Arc<crate::control::filter::Shared>,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("info", &self.shared.info)
            .finish()
    }
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

    /// Why the engine no longer serves one of its interfaces, when that
    /// happened while it ran: its XDP program was replaced by another, or
    /// detached and could not be attached again (a program merely detached
    /// is attached again within a second). The `xdpip` command stops and
    /// exits with status 1 then.
    pub fn lost(&self) -> Option<String> {
        self.shared.lost.lock().ok().and_then(|l| l.clone())
    }

    fn shutdown(&mut self) {
        // Device settings first: detaching the program may take the NAPI
        // instances they were set on away (veth).
        drop(self.devices.take());
        let steer = self.steer.lock().ok().and_then(|mut s| s.take());
        drop(steer);
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
