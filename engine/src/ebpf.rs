//! Loader of the XDP program `steer` (`ebpf/steer.bpf.c`) and its maps.
//!
//! The object is compiled by `build.rs` and embedded in the binary. It is
//! attached with a BPF link where the kernel has them (5.9+), so a process
//! that dies, however it dies, takes its program with it; a program attached
//! the older way (netlink) by an earlier xdpip is found and replaced. Another
//! tool's program is never replaced unless asked to.

use aya::maps::{Array, HashMap as BpfHashMap, MapData, PerCpuArray, XskMap};
use aya::programs::xdp::XdpLinkId;
use aya::programs::{Xdp, XdpFlags};
use aya::Ebpf;
use std::ffi::CStr;
use std::fmt;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// The compiled XDP object, as embedded in the binary.
pub static STEER_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/steer.bpf.o"));

/// The name of the XDP program as the kernel shows it (`bpftool prog`).
pub const PROGRAM_NAME: &str = "xdpip_steer";

/// Queues per port in the `xsks` map (`MAX_QUEUES` in steer.bpf.c).
pub const MAX_QUEUES: u32 = 256;

const XDP_PACKET_HEADROOM: u32 = 256;

/// Verdicts the XDP program counts, in the order of `enum verdict` in
/// steer.bpf.c.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Not IPv4: kernel.
    PassNotIpv4,
    /// VLAN tagged: kernel.
    PassVlan,
    /// Truncated or bad version/IHL: kernel (which drops and counts it).
    PassMalformed,
    /// To a local address, port not claimed: kernel.
    PassLocal,
    /// Multicast or limited broadcast: kernel.
    PassMulticast,
    /// Forwarding off in the engine's config: kernel.
    PassForwardingOff,
    /// TTL ≤ 1: kernel (ICMP time exceeded).
    PassTtl,
    /// IP options: kernel.
    PassOptions,
    /// No usable route: kernel (ICMP unreachable).
    PassNoRoute,
    /// Next hop unresolved: kernel (ARP).
    PassNoNeigh,
    /// Larger than the egress MTU: kernel (fragments or ICMP).
    PassFragNeeded,
    /// Forwarding disabled on the ingress device: kernel.
    PassFwdDisabled,
    /// Egress device not served by the engine: kernel.
    PassForeignEgress,
    /// Redirected to the engine for forwarding.
    RedirectForward,
    /// Redirected to the engine, claimed local traffic.
    RedirectLocal,
    /// No AF_XDP socket on the queue: kernel.
    PassNoSocket,
    /// A hook of the packet filter the packet passes has rules only the
    /// kernel evaluates: kernel.
    PassFilter,
}

impl Verdict {
    /// Every verdict, in map order.
    pub const ALL: [Verdict; 17] = [
        Verdict::PassNotIpv4,
        Verdict::PassVlan,
        Verdict::PassMalformed,
        Verdict::PassLocal,
        Verdict::PassMulticast,
        Verdict::PassForwardingOff,
        Verdict::PassTtl,
        Verdict::PassOptions,
        Verdict::PassNoRoute,
        Verdict::PassNoNeigh,
        Verdict::PassFragNeeded,
        Verdict::PassFwdDisabled,
        Verdict::PassForeignEgress,
        Verdict::RedirectForward,
        Verdict::RedirectLocal,
        Verdict::PassNoSocket,
        Verdict::PassFilter,
    ];

    /// The counter's name in stats.
    pub fn name(self) -> &'static str {
        match self {
            Verdict::PassNotIpv4 => "pass_not_ipv4",
            Verdict::PassVlan => "pass_vlan",
            Verdict::PassMalformed => "pass_malformed",
            Verdict::PassLocal => "pass_local",
            Verdict::PassMulticast => "pass_multicast",
            Verdict::PassForwardingOff => "pass_forwarding_off",
            Verdict::PassTtl => "pass_ttl",
            Verdict::PassOptions => "pass_options",
            Verdict::PassNoRoute => "pass_no_route",
            Verdict::PassNoNeigh => "pass_no_neigh",
            Verdict::PassFragNeeded => "pass_frag_needed",
            Verdict::PassFwdDisabled => "pass_fwd_disabled",
            Verdict::PassForeignEgress => "pass_foreign_egress",
            Verdict::RedirectForward => "redirect_forward",
            Verdict::RedirectLocal => "redirect_local",
            Verdict::PassNoSocket => "pass_no_socket",
            Verdict::PassFilter => "pass_filter",
        }
    }
}

/// Which packets the XDP program leaves to the kernel after asking the
/// kernel's FIB (`bpf_fib_lookup`) about them. Asking costs the XDP
/// program about 2.8 times its time per packet (docs/PERFORMANCE.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GateMode {
    /// Ask nothing: every forwardable packet goes to the engine. It asks
    /// the kernel to resolve a next hop it lacks and holds the packet
    /// meanwhile (`neighbour_held`); it drops and counts
    /// (`foreign_egress`) a packet routed through an interface it does
    /// not serve.
    Off = 0,
    /// Packets whose next hop the kernel has not resolved, packets routed
    /// through an interface the engine does not serve, and packets
    /// arriving on an interface with forwarding disabled go to the kernel,
    /// which resolves (ARP) and queues them as Linux does; the engine
    /// answers everything else itself (ICMP errors, fragmentation).
    Neighbours = 1,
    /// Everything the kernel's FIB cannot forward as is goes to the kernel:
    /// no route, unresolved neighbour, too big for the egress MTU,
    /// forwarding disabled.
    Full = 2,
    /// `Off` while every route leaves through interfaces the engine
    /// serves, `Neighbours` while some route does not (the control thread
    /// switches with each routing change, before the workers see it).
    #[default]
    Auto = 3,
}

impl GateMode {
    /// Longest packet the XDP program sends to the engine unchecked while
    /// the gate is off: `Auto` checks longer ones against the kernel's
    /// egress MTU (an MTU change then loses nothing unless an MTU goes
    /// below 576, the datagram every IPv4 host accepts); `Off` checks none.
    pub fn mtu_check_above(self) -> u32 {
        match self {
            GateMode::Auto => 576,
            _ => u32::MAX,
        }
    }

    /// The gate the XDP program applies, given whether some route leaves
    /// through an interface the engine does not serve.
    pub fn effective(self, foreign_egress: bool) -> GateMode {
        match self {
            GateMode::Auto if foreign_egress => GateMode::Neighbours,
            GateMode::Auto => GateMode::Off,
            g => g,
        }
    }
}

impl fmt::Display for GateMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            GateMode::Off => "off",
            GateMode::Neighbours => "neigh",
            GateMode::Full => "full",
            GateMode::Auto => "auto",
        })
    }
}

/// `struct config` of steer.bpf.c.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SteerConfig {
    /// Forward IPv4 through the engine.
    pub forwarding: u32,
    /// A [`GateMode`] as a number.
    pub fib_gate: u32,
    /// 1: fragments to local addresses go to the engine, which reassembles
    /// them (set while engine sockets exist).
    pub local_frags: u32,
    /// With [`GateMode::Off`] in force: packets longer than this still get
    /// the neighbour gate's MTU check ([`GateMode::mtu_check_above`]).
    pub mtu_check_above: u32,
}

// SAFETY: repr(C), only u32 fields, no padding.
unsafe impl aya::Pod for SteerConfig {}

/// `struct claim_key` of steer.bpf.c.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClaimKey {
    /// IP protocol.
    pub protocol: u8,
    pad: u8,
    /// Port in network byte order; 0 claims the whole protocol.
    pub port_be: u16,
}

// SAFETY: repr(C), integer fields, explicit padding byte.
unsafe impl aya::Pod for ClaimKey {}

impl ClaimKey {
    /// A key for `protocol` and `port` (host byte order).
    pub fn new(protocol: u8, port: u16) -> Self {
        ClaimKey {
            protocol,
            pad: 0,
            port_be: port.to_be(),
        }
    }
}

/// The claim "port" of an ICMP message type: `0x100 | type`, so that no
/// type (echo reply is 0) reads as the whole-protocol claim, port 0.
pub fn icmp_claim(msg_type: u8) -> u16 {
    0x100 | msg_type as u16
}

/// The XDP attach mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    /// In the driver (native).
    Native,
    /// Generic, on the skb (slower; for drivers without XDP).
    Skb,
}

impl fmt::Display for XdpMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            XdpMode::Native => "native",
            XdpMode::Skb => "skb",
        })
    }
}

/// What the operator asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum XdpModeRequest {
    /// Native, and skb when the driver refuses native.
    #[default]
    Auto,
    /// Native or nothing.
    Native,
    /// Skb.
    Skb,
}

/// An XDP program found on an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attached {
    /// Program id.
    pub prog_id: u32,
    /// Program name, when it can be read (needs CAP_SYS_ADMIN).
    pub name: Option<String>,
    /// `XDP_ATTACHED_*` mode.
    pub mode: u8,
    /// The BPF link holding it, if it was attached with a link.
    pub link_id: Option<u32>,
}

impl Attached {
    fn mode_name(&self) -> &'static str {
        match self.mode {
            1 => "driver",
            2 => "skb",
            3 => "hardware",
            4 => "multi",
            _ => "unknown",
        }
    }
}

/// Errors of loading and attaching.
#[derive(Debug)]
pub enum SteerError {
    /// The embedded object did not load (verifier, BTF, permissions).
    Load(Box<aya::EbpfError>),
    /// The program did not load into the kernel.
    Program(Box<aya::programs::ProgramError>),
    /// A map operation failed.
    Map(&'static str, Box<aya::maps::MapError>),
    /// Another tool's program is attached.
    ForeignProgram {
        /// Interface.
        iface: String,
        /// What is there.
        attached: Attached,
    },
    /// Another running xdpip serves the interface.
    AlreadyServed {
        /// Interface.
        iface: String,
        /// What is there.
        attached: Attached,
    },
    /// The MTU is too large for single-buffer XDP or for the UMEM frame.
    MtuTooLarge {
        /// Interface.
        iface: String,
        /// Its driver.
        driver: String,
        /// Its MTU.
        mtu: u32,
        /// The largest the driver (or the frame size) takes, when known.
        limit: Option<u32>,
        /// Why.
        why: &'static str,
    },
    /// Attaching failed.
    Attach {
        /// Interface.
        iface: String,
        /// Mode tried.
        mode: XdpMode,
        /// The kernel's answer.
        error: io::Error,
    },
    /// Querying or detaching an existing program failed.
    Query {
        /// Interface.
        iface: String,
        /// The kernel's answer.
        error: io::Error,
    },
    /// The engine's program was taken off the interface while it ran, and
    /// another one put there (`attached`), or it could not be put back.
    Lost {
        /// Interface.
        iface: String,
        /// What is attached now, if anything.
        attached: Option<Attached>,
        /// Why putting it back failed, when nothing else was there.
        error: Option<io::Error>,
    },
}

impl fmt::Display for SteerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SteerError::Load(e) => write!(f, "loading the XDP object: {e}"),
            SteerError::Program(e) => write!(f, "loading the XDP program {PROGRAM_NAME}: {e}"),
            SteerError::Map(m, e) => write!(f, "BPF map {m}: {e}"),
            SteerError::ForeignProgram { iface, attached } => write!(
                f,
                "{iface} already has XDP program {} (id {}, {} mode) attached by another tool; \
                 stop that tool, or pass --replace to take the interface over",
                attached.name.as_deref().map_or(
                    "of unknown name (CAP_SYS_ADMIN needed to read it)".to_string(),
                    |n| format!("{n:?}")
                ),
                attached.prog_id,
                attached.mode_name()
            ),
            SteerError::AlreadyServed { iface, attached } => write!(
                f,
                "{iface} is already served by another running xdpip (program id {}, link id {}); \
                 stop it first, or pass --replace to take the interface over",
                attached.prog_id,
                attached.link_id.unwrap_or(0)
            ),
            SteerError::MtuTooLarge {
                iface,
                driver,
                mtu,
                limit,
                why,
            } => {
                write!(f, "{iface} ({driver}): MTU {mtu} is too large: {why}")?;
                if let Some(l) = limit {
                    write!(
                        f,
                        "; the largest MTU it takes is {l} (ip link set dev {iface} mtu {l})"
                    )?;
                }
                Ok(())
            }
            SteerError::Attach { iface, mode, error } => {
                write!(f, "attaching XDP to {iface} in {mode} mode: {error}")
            }
            SteerError::Query { iface, error } => {
                write!(f, "querying the XDP program of {iface}: {error}")
            }
            SteerError::Lost {
                iface,
                attached: Some(a),
                ..
            } => {
                write!(
                f,
                "{iface}: the engine's XDP program was replaced by program {} (id {}) while it \
                 ran; the kernel now gets what that program passes, the engine stops",
                a.name.as_deref().map_or("?".to_string(), |n| format!("{n:?}")),
                a.prog_id
            )
            }
            SteerError::Lost {
                iface,
                attached: None,
                error,
            } => write!(
                f,
                "{iface}: the engine's XDP program was detached while it ran and could not be \
                 attached again: {}",
                error
                    .as_ref()
                    .map_or("unknown error".to_string(), |e| e.to_string())
            ),
        }
    }
}

impl std::error::Error for SteerError {}

fn page_size() -> u32 {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as u32
    } else {
        4096
    }
}

/// The largest MTU the veth driver takes for a single-buffer XDP program:
/// `SKB_WITH_OVERHEAD(PAGE_SIZE - VETH_XDP_HEADROOM) - ETH_HLEN`, where the
/// skb_shared_info overhead is 320 bytes on 64-bit kernels.
pub fn veth_xdp_max_mtu() -> u32 {
    page_size() - XDP_PACKET_HEADROOM - 320 - 14
}

/// The largest MTU whose frames fit an AF_XDP frame of `frame_size` bytes
/// after the XDP headroom.
pub fn afxdp_max_mtu(frame_size: u32) -> u32 {
    frame_size - XDP_PACKET_HEADROOM - 14
}

/// What is attached to `ifindex`, if anything.
pub fn query(ifindex: u32) -> io::Result<Option<Attached>> {
    // SAFETY: plain old data; zero is valid.
    let mut opts: libbpf_sys::bpf_xdp_query_opts = unsafe { std::mem::zeroed() };
    opts.sz = std::mem::size_of::<libbpf_sys::bpf_xdp_query_opts>() as _;
    // SAFETY: opts is a valid, sized query struct.
    let r = unsafe { libbpf_sys::bpf_xdp_query(ifindex as i32, 0, &mut opts) };
    if r < 0 {
        return Err(io::Error::from_raw_os_error(-r));
    }
    let prog_id = if opts.prog_id != 0 {
        opts.prog_id
    } else {
        opts.drv_prog_id.max(opts.skb_prog_id)
    };
    if prog_id == 0 {
        return Ok(None);
    }
    Ok(Some(Attached {
        prog_id,
        name: program_name(prog_id),
        mode: opts.attach_mode,
        link_id: xdp_link_of(ifindex, prog_id).map(|(id, _)| id),
    }))
}

/// The id of the XDP program attached to `ifindex` (0 for none): one
/// netlink query, no capability needed.
fn attached_prog_id(ifindex: u32) -> io::Result<u32> {
    // SAFETY: plain old data; zero is valid.
    let mut opts: libbpf_sys::bpf_xdp_query_opts = unsafe { std::mem::zeroed() };
    opts.sz = std::mem::size_of::<libbpf_sys::bpf_xdp_query_opts>() as _;
    // SAFETY: opts is a valid, sized query struct.
    let r = unsafe { libbpf_sys::bpf_xdp_query(ifindex as i32, 0, &mut opts) };
    if r < 0 {
        return Err(io::Error::from_raw_os_error(-r));
    }
    Ok(if opts.prog_id != 0 {
        opts.prog_id
    } else {
        opts.drv_prog_id.max(opts.skb_prog_id)
    })
}

fn program_name(id: u32) -> Option<String> {
    // SAFETY: returns a new fd or a negative errno.
    let fd = unsafe { libbpf_sys::bpf_prog_get_fd_by_id(id) };
    if fd < 0 {
        return None;
    }
    // SAFETY: fd is new and owned here.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: plain old data; zero is valid.
    let mut info: libbpf_sys::bpf_prog_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libbpf_sys::bpf_prog_info>() as u32;
    // SAFETY: info is writable for len bytes.
    let r = unsafe { libbpf_sys::bpf_prog_get_info_by_fd(fd.as_raw_fd(), &mut info, &mut len) };
    if r != 0 {
        return None;
    }
    // SAFETY: the kernel NUL-terminates the 16-byte name.
    let name = unsafe { CStr::from_ptr(info.name.as_ptr()) };
    Some(name.to_string_lossy().into_owned())
}

/// The XDP link holding program `prog_id` on `ifindex`: its id and an fd
/// to it. Links are global but ifindexes are per network namespace, so the
/// program id is what tells this namespace's link from another's.
fn xdp_link_of(ifindex: u32, prog_id: u32) -> Option<(u32, OwnedFd)> {
    let mut id = 0u32;
    loop {
        let mut next = 0u32;
        // SAFETY: next is a valid out pointer.
        if unsafe { libbpf_sys::bpf_link_get_next_id(id, &mut next) } != 0 {
            return None;
        }
        id = next;
        // SAFETY: returns a new fd or a negative errno.
        let fd = unsafe { libbpf_sys::bpf_link_get_fd_by_id(id) };
        if fd < 0 {
            continue;
        }
        // SAFETY: fd is new and owned here.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: plain old data; zero is valid.
        let mut info: libbpf_sys::bpf_link_info = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libbpf_sys::bpf_link_info>() as u32;
        // SAFETY: info is writable for len bytes.
        let r = unsafe { libbpf_sys::bpf_link_get_info_by_fd(fd.as_raw_fd(), &mut info, &mut len) };
        // SAFETY: for an XDP link the kernel fills the xdp member of the union.
        if r == 0
            && info.type_ == libbpf_sys::BPF_LINK_TYPE_XDP
            && info.prog_id == prog_id
            && unsafe { info.__bindgen_anon_1.xdp.ifindex } == ifindex
        {
            return Some((id, fd));
        }
    }
}

/// Detaches whatever XDP program is on `ifindex` (its BPF link, or the
/// program attached with netlink); false when there was none. An engine
/// whose program is detached this way attaches it again within a second.
///
/// ```no_run
/// // SAFETY: a NUL-terminated name.
/// let ifindex = unsafe { libc::if_nametoindex(c"eth0".as_ptr()) };
/// xdpip::ebpf::detach(ifindex)?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn detach(ifindex: u32) -> io::Result<bool> {
    match query(ifindex)? {
        Some(a) => detach_existing(ifindex, &a).map(|()| true),
        None => Ok(false),
    }
}

/// Detaches whatever XDP program is on `ifindex`.
fn detach_existing(ifindex: u32, attached: &Attached) -> io::Result<()> {
    if let Some((_, fd)) = xdp_link_of(ifindex, attached.prog_id) {
        // SAFETY: fd is a valid link fd.
        let r = unsafe { libbpf_sys::bpf_link_detach(fd.as_raw_fd()) };
        return if r < 0 {
            Err(io::Error::from_raw_os_error(-r))
        } else {
            Ok(())
        };
    }
    let flags = match attached.mode {
        2 => libbpf_sys::XDP_FLAGS_SKB_MODE,
        3 => libbpf_sys::XDP_FLAGS_HW_MODE,
        _ => libbpf_sys::XDP_FLAGS_DRV_MODE,
    };
    // SAFETY: null opts is allowed.
    let r = unsafe { libbpf_sys::bpf_xdp_detach(ifindex as i32, flags, std::ptr::null()) };
    if r < 0 {
        Err(io::Error::from_raw_os_error(-r))
    } else {
        Ok(())
    }
}

/// The maps of the program, owned by the engine.
pub struct SteerMaps {
    xsks: XskMap<MapData>,
    local_addrs: BpfHashMap<MapData, u32, u32>,
    claimed: BpfHashMap<MapData, ClaimKey, u32>,
    mcast_groups: BpfHashMap<MapData, u32, u32>,
    ports: BpfHashMap<MapData, u32, u32>,
    port_mtu: Array<MapData, u32>,
    /// MTUs last written to `port_mtu`, by port.
    mtus: Vec<u32>,
    config: Array<MapData, SteerConfig>,
    counters: PerCpuArray<MapData, u64>,
    filter_hooks: Array<MapData, u32>,
    /// Local addresses currently in the map (network order keys).
    locals: Vec<u32>,
}

impl fmt::Debug for SteerMaps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SteerMaps")
            .field("locals", &self.locals.len())
            .finish()
    }
}

macro_rules! take {
    ($bpf:expr, $name:literal) => {
        $bpf.take_map($name)
            .ok_or(SteerError::Map(
                $name,
                Box::new(aya::maps::MapError::InvalidName { name: $name.into() }),
            ))?
            .try_into()
            .map_err(|e| SteerError::Map($name, Box::new(e)))?
    };
}

impl SteerMaps {
    /// Registers the AF_XDP socket of (`port`, `queue`). The kernel removes
    /// it from the map when the socket is closed.
    pub fn register_socket(&mut self, port: u32, queue: u32, fd: RawFd) -> Result<(), SteerError> {
        // SAFETY: fd is an open AF_XDP socket for the duration of the call;
        // the map takes its own reference.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        self.xsks
            .set(port * MAX_QUEUES + queue, fd, 0)
            .map_err(|e| SteerError::Map("xsks", Box::new(e)))
    }

    /// Declares the engine's port numbers by ifindex.
    pub fn set_port(&mut self, ifindex: u32, port: u32) -> Result<(), SteerError> {
        self.ports
            .insert(ifindex, port, 0)
            .map_err(|e| SteerError::Map("ports", Box::new(e)))
    }

    /// Tells the program the MTU of each port (by port number) in the
    /// snapshot the workers now use; only changes are written. The
    /// program leaves a packet larger than an egress MTU of the kernel's
    /// that differs from this one to the kernel, so an MTU change loses no
    /// packet while the workers catch up. Call it after publishing.
    pub fn set_port_mtus(&mut self, mtus: &[u32]) -> Result<(), SteerError> {
        for (port, &mtu) in mtus.iter().enumerate().take(crate::iface::MAX_PORTS) {
            if self.mtus.get(port) == Some(&mtu) {
                continue;
            }
            self.port_mtu
                .set(port as u32, mtu, 0)
                .map_err(|e| SteerError::Map("port_mtu", Box::new(e)))?;
            if self.mtus.len() <= port {
                self.mtus.resize(port + 1, 0);
            }
            self.mtus[port] = mtu;
        }
        Ok(())
    }

    /// Writes the configuration.
    pub fn set_config(&mut self, c: SteerConfig) -> Result<(), SteerError> {
        self.config
            .set(0, c, 0)
            .map_err(|e| SteerError::Map("config", Box::new(e)))
    }

    /// Current configuration.
    pub fn config(&self) -> Result<SteerConfig, SteerError> {
        self.config
            .get(&0, 0)
            .map_err(|e| SteerError::Map("config", Box::new(e)))
    }

    /// Makes the local address set equal to `addrs`, touching only what
    /// changed.
    pub fn set_local_addrs(&mut self, addrs: &[Ipv4Addr]) -> Result<(), SteerError> {
        let mut want: Vec<u32> = addrs.iter().map(|a| u32::from(*a).to_be()).collect();
        want.sort_unstable();
        want.dedup();
        for k in &want {
            if self.locals.binary_search(k).is_err() {
                self.local_addrs
                    .insert(*k, 1, 0)
                    .map_err(|e| SteerError::Map("local_addrs", Box::new(e)))?;
            }
        }
        for k in &self.locals {
            if want.binary_search(k).is_err() {
                let _ = self.local_addrs.remove(k);
            }
        }
        self.locals = want;
        Ok(())
    }

    /// Sends UDP to multicast `group` to the engine (an engine socket
    /// joined it), or leaves it to the kernel again.
    pub fn set_group(&mut self, group: Ipv4Addr, on: bool) -> Result<(), SteerError> {
        let k = u32::from(group).to_be();
        if on {
            self.mcast_groups
                .insert(k, 1, 0)
                .map_err(|e| SteerError::Map("mcast_groups", Box::new(e)))
        } else {
            let _ = self.mcast_groups.remove(&k);
            Ok(())
        }
    }

    /// Claims (`protocol`, `port`) for the engine; port 0 claims the protocol.
    pub fn claim(&mut self, protocol: u8, port: u16) -> Result<(), SteerError> {
        self.claimed
            .insert(ClaimKey::new(protocol, port), 1, 0)
            .map_err(|e| SteerError::Map("claimed", Box::new(e)))
    }

    /// Sends fragments to local addresses to the engine, or leaves them to
    /// the kernel; the rest of the config stays.
    pub fn set_local_frags(&mut self, on: bool) -> Result<(), SteerError> {
        let mut c = self.config()?;
        c.local_frags = on as u32;
        self.set_config(c)
    }

    /// Claims ICMP echo requests to local addresses (the engine answers
    /// them); other ICMP stays with the kernel.
    pub fn claim_icmp_echo(&mut self) -> Result<(), SteerError> {
        self.claim(
            crate::wire::ipv4::protocol::ICMP,
            icmp_claim(crate::wire::icmp::msg_type::ECHO_REQUEST),
        )
    }

    /// Sets the hooks of the packet filter whose traffic the kernel must
    /// judge ([`crate::filter::Hook::bit`]): the XDP program passes it.
    pub fn set_filter_hooks(&mut self, bits: u32) -> Result<(), SteerError> {
        self.filter_hooks
            .set(0, bits, 0)
            .map_err(|e| SteerError::Map("filter_hooks", Box::new(e)))
    }

    /// Releases a claim.
    pub fn release(&mut self, protocol: u8, port: u16) {
        let _ = self.claimed.remove(&ClaimKey::new(protocol, port));
    }

    /// The verdict counters summed over CPUs, in [`Verdict::ALL`] order.
    pub fn verdicts(&self) -> [u64; 17] {
        let mut out = [0u64; 17];
        for (i, slot) in out.iter_mut().enumerate() {
            if let Ok(v) = self.counters.get(&(i as u32), 0) {
                *slot = v.iter().sum();
            }
        }
        out
    }
}

/// The loaded program and where it is attached. Dropping it detaches the
/// program from every interface.
pub struct Steer {
    bpf: Ebpf,
    attached: Vec<(String, XdpMode)>,
    /// Per attached interface: its index and our link.
    links: Vec<(u32, XdpLinkId)>,
    /// Programs `--replace` took off, to put back if the start fails.
    replaced: Vec<Replaced>,
}

/// A program detached by `--replace`.
struct Replaced {
    iface: String,
    ifindex: u32,
    prog_id: u32,
    mode: u8,
    /// An fd of it, when it could be had (CAP_SYS_ADMIN).
    fd: Option<OwnedFd>,
}

impl fmt::Debug for Steer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Steer")
            .field("attached", &self.attached)
            .finish()
    }
}

impl Steer {
    /// Loads the embedded object into the kernel (not attached yet) and
    /// takes its maps.
    pub fn load() -> Result<(Steer, SteerMaps), SteerError> {
        let mut bpf = Ebpf::load(STEER_OBJECT).map_err(|e| SteerError::Load(Box::new(e)))?;
        let prog: &mut Xdp = bpf
            .program_mut(PROGRAM_NAME)
            .ok_or_else(|| {
                SteerError::Program(Box::new(aya::programs::ProgramError::UnexpectedProgramType))
            })?
            .try_into()
            .map_err(|e| SteerError::Program(Box::new(e)))?;
        prog.load().map_err(|e| SteerError::Program(Box::new(e)))?;
        let maps = SteerMaps {
            xsks: take!(bpf, "xsks"),
            local_addrs: take!(bpf, "local_addrs"),
            claimed: take!(bpf, "claimed"),
            mcast_groups: take!(bpf, "mcast_groups"),
            ports: take!(bpf, "ports"),
            port_mtu: take!(bpf, "port_mtu"),
            mtus: Vec::new(),
            config: take!(bpf, "config"),
            counters: take!(bpf, "counters"),
            filter_hooks: take!(bpf, "filter_hooks"),
            locals: Vec::new(),
        };
        Ok((
            Steer {
                bpf,
                attached: Vec::new(),
                links: Vec::new(),
                replaced: Vec::new(),
            },
            maps,
        ))
    }

    /// Checks, without changing anything, that the program may be attached
    /// to `iface`: its MTU fits, and what is attached there is nothing, a
    /// leftover of an earlier xdpip, or (with `replace`) another program.
    /// Returns what is there. The engine checks every interface this way
    /// before it touches any.
    pub fn preflight(
        &self,
        iface: &crate::iface::Interface,
        replace: bool,
        frame_size: u32,
    ) -> Result<Option<Attached>, SteerError> {
        let driver = iface.driver.clone().unwrap_or_else(|| "unknown".into());
        let afxdp_limit = afxdp_max_mtu(frame_size);
        let driver_limit = (driver == "veth").then(veth_xdp_max_mtu);
        let (limit, why) = match driver_limit {
            Some(d) if d <= afxdp_limit => {
                (d, "the driver takes single-buffer XDP only up to this MTU")
            }
            _ => (
                afxdp_limit,
                "its frames do not fit an AF_XDP frame (--frame-size) after the XDP headroom",
            ),
        };
        if iface.mtu > limit {
            return Err(SteerError::MtuTooLarge {
                iface: iface.name.clone(),
                driver,
                mtu: iface.mtu,
                limit: Some(limit),
                why,
            });
        }
        let found = query(iface.ifindex).map_err(|error| SteerError::Query {
            iface: iface.name.clone(),
            error,
        })?;
        if let Some(a) = &found {
            let ours = a.name.as_deref() == Some(PROGRAM_NAME);
            if !replace && ours && a.link_id.is_some() {
                return Err(SteerError::AlreadyServed {
                    iface: iface.name.clone(),
                    attached: a.clone(),
                });
            }
            if !replace && !ours {
                return Err(SteerError::ForeignProgram {
                    iface: iface.name.clone(),
                    attached: a.clone(),
                });
            }
        }
        Ok(found)
    }

    /// Attaches to an interface in the requested mode, after dealing with
    /// what is already there ([`Steer::preflight`] again, then the program
    /// found is detached when `replace` allows it). Returns the mode in use.
    pub fn attach(
        &mut self,
        iface: &crate::iface::Interface,
        request: XdpModeRequest,
        replace: bool,
        frame_size: u32,
    ) -> Result<XdpMode, SteerError> {
        let driver = iface.driver.clone().unwrap_or_else(|| "unknown".into());
        if let Some(a) = self.preflight(iface, replace, frame_size)? {
            let ours = a.name.as_deref() == Some(PROGRAM_NAME);
            log::warn!(
                "{}: replacing XDP program {:?} (id {}){}",
                iface.name,
                a.name.as_deref().unwrap_or("?"),
                a.prog_id,
                if ours && a.link_id.is_none() {
                    ", left behind by an earlier xdpip"
                } else {
                    ""
                }
            );
            // Kept so that a start failing later can put it back.
            // SAFETY: returns a new fd or a negative errno.
            let fd = unsafe { libbpf_sys::bpf_prog_get_fd_by_id(a.prog_id) };
            // SAFETY: a non-negative fd is new and owned here.
            let fd = (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) });
            detach_existing(iface.ifindex, &a).map_err(|error| SteerError::Query {
                iface: iface.name.clone(),
                error,
            })?;
            self.replaced.push(Replaced {
                iface: iface.name.clone(),
                ifindex: iface.ifindex,
                prog_id: a.prog_id,
                mode: a.mode,
                fd,
            });
        }

        let modes: &[XdpMode] = match request {
            XdpModeRequest::Auto => &[XdpMode::Native, XdpMode::Skb],
            XdpModeRequest::Native => &[XdpMode::Native],
            XdpModeRequest::Skb => &[XdpMode::Skb],
        };
        let prog: &mut Xdp = self
            .bpf
            .program_mut(PROGRAM_NAME)
            .expect("loaded in Steer::load")
            .try_into()
            .expect("an XDP program");
        let mut last = None;
        for &mode in modes {
            let flags = match mode {
                XdpMode::Native => XdpFlags::DRV_MODE,
                XdpMode::Skb => XdpFlags::SKB_MODE,
            };
            let mut tries = 0;
            let result = loop {
                match prog.attach_to_if_index(iface.ifindex, flags) {
                    Ok(id) => break Ok(id),
                    Err(e) => {
                        let err = program_error_io(&e);
                        // A link of a process that just died may still be
                        // on its way out: retry EBUSY a few times.
                        if err.raw_os_error() == Some(libc::EBUSY) && tries < 10 {
                            tries += 1;
                            std::thread::sleep(Duration::from_millis(100));
                            continue;
                        }
                        break Err(err);
                    }
                }
            };
            match result {
                Ok(link) => {
                    self.links.push((iface.ifindex, link));
                    if mode == XdpMode::Skb && request == XdpModeRequest::Auto {
                        log::warn!(
                            "{}: driver {} refused native XDP ({}); using skb (generic) mode, \
                             which is much slower",
                            iface.name,
                            driver,
                            last.as_ref()
                                .map_or("?".to_string(), |e: &io::Error| e.to_string())
                        );
                    }
                    self.attached.push((iface.name.clone(), mode));
                    return Ok(mode);
                }
                Err(error) => {
                    let code = error.raw_os_error();
                    if mode == XdpMode::Native
                        && (code == Some(libc::ERANGE)
                            || (code == Some(libc::EINVAL) && iface.mtu > 1500))
                    {
                        let veth = driver == "veth";
                        return Err(SteerError::MtuTooLarge {
                            iface: iface.name.clone(),
                            driver,
                            mtu: iface.mtu,
                            limit: veth.then(veth_xdp_max_mtu),
                            why: "the driver refuses single-buffer XDP at this MTU \
                                  (for veth the peer's MTU counts too)",
                        });
                    }
                    // Only a driver without native XDP falls back to skb.
                    let unsupported = matches!(code, Some(libc::EOPNOTSUPP) | Some(libc::EINVAL));
                    if mode == XdpMode::Native && unsupported && modes.len() > 1 {
                        last = Some(error);
                        continue;
                    }
                    return Err(SteerError::Attach {
                        iface: iface.name.clone(),
                        mode,
                        error,
                    });
                }
            }
        }
        Err(SteerError::Attach {
            iface: iface.name.clone(),
            mode: XdpMode::Skb,
            error: last.unwrap_or_else(|| io::Error::other("no mode to try")),
        })
    }

    /// Where the program is attached, and how.
    pub fn attached(&self) -> &[(String, XdpMode)] {
        &self.attached
    }

    fn prog(&mut self) -> &mut Xdp {
        self.bpf
            .program_mut(PROGRAM_NAME)
            .expect("loaded in Steer::load")
            .try_into()
            .expect("an XDP program")
    }

    /// Undoes a start that failed: detaches the program where it was
    /// attached, and puts back the programs `--replace` took off, where an
    /// fd of them could be had (CAP_SYS_ADMIN); the others are named.
    pub fn undo(&mut self) {
        for (_, link) in std::mem::take(&mut self.links) {
            let _ = self.prog().detach(link);
        }
        self.attached.clear();
        for r in std::mem::take(&mut self.replaced) {
            let flags = match r.mode {
                2 => libbpf_sys::XDP_FLAGS_SKB_MODE,
                3 => libbpf_sys::XDP_FLAGS_HW_MODE,
                _ => libbpf_sys::XDP_FLAGS_DRV_MODE,
            };
            let restored = r.fd.as_ref().is_some_and(|fd| {
                // SAFETY: fd is a valid program fd; null opts is allowed.
                unsafe {
                    libbpf_sys::bpf_xdp_attach(
                        r.ifindex as i32,
                        fd.as_raw_fd(),
                        flags,
                        std::ptr::null(),
                    ) == 0
                }
            });
            if restored {
                log::warn!("{}: XDP program id {} put back", r.iface, r.prog_id);
            } else {
                log::error!(
                    "{}: XDP program id {} was replaced and could not be put back",
                    r.iface,
                    r.prog_id
                );
            }
        }
    }

    /// Checks that the program is still attached where it was. One that was
    /// detached with nothing in its place is attached again (returned as
    /// the interfaces where it was); another program in its place, or a
    /// failed re-attach, is an error ([`SteerError::Lost`]): the engine no
    /// longer sees that interface's traffic.
    pub fn keep_attached(&mut self) -> Result<Vec<String>, SteerError> {
        let ours = self.prog().info().map(|i| i.id()).unwrap_or(0);
        let mut again = Vec::new();
        for i in 0..self.links.len() {
            let (ifindex, _) = self.links[i];
            let (name, mode) = self.attached[i].clone();
            let now = attached_prog_id(ifindex).map_err(|error| SteerError::Query {
                iface: name.clone(),
                error,
            })?;
            if now == ours {
                continue;
            }
            if now != 0 {
                return Err(SteerError::Lost {
                    attached: query(ifindex).ok().flatten(),
                    iface: name,
                    error: None,
                });
            }
            let flags = match mode {
                XdpMode::Native => XdpFlags::DRV_MODE,
                XdpMode::Skb => XdpFlags::SKB_MODE,
            };
            match self.prog().attach_to_if_index(ifindex, flags) {
                Ok(link) => {
                    // The old link is defunct: forget it.
                    let old = std::mem::replace(&mut self.links[i].1, link);
                    let _ = self.prog().detach(old);
                    again.push(name);
                }
                Err(e) => {
                    return Err(SteerError::Lost {
                        iface: name,
                        attached: None,
                        error: Some(program_error_io(&e)),
                    })
                }
            }
        }
        Ok(again)
    }
}

fn program_error_io(e: &aya::programs::ProgramError) -> io::Error {
    use aya::programs::ProgramError;
    match e {
        ProgramError::SyscallError(s) => {
            io::Error::from_raw_os_error(s.io_error.raw_os_error().unwrap_or(libc::EIO))
        }
        ProgramError::XdpError(aya::programs::xdp::XdpError::NetlinkError { io_error }) => {
            io::Error::from_raw_os_error(io_error.raw_os_error().unwrap_or(libc::EIO))
        }
        other => io::Error::other(other.to_string()),
    }
}
