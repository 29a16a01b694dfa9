//! Sockets on the fast path: UDP sockets that behave like the kernel's
//! `AF_INET` datagram sockets of ip(7), served by the engine's workers.
//!
//! A socket is a pair of lock-free queues between the application and the
//! workers. Receiving: a worker checks the UDP datagram, finds the socket in
//! the demultiplexing table (`demux`) and copies the payload into one of
//! the socket's recycled buffers; a full socket drops and counts
//! (`UdpRcvbufErrors`), it never blocks the worker. Sending: the call checks
//! what the kernel checks (route, broadcast, size, MTU discovery) and returns
//! the kernel's errno, then hands the datagram to a worker, which routes it,
//! builds the frame in its UMEM and transmits it.
//!
//! Binding a port makes the XDP program claim (UDP, port) for the engine;
//! closing the last socket on the port releases it, and the kernel keeps
//! everything else.
//!
//! ```no_run
//! use std::net::SocketAddrV4;
//! let engine = xdpip::Engine::builder().interface("eth0").start()?;
//! let sock = engine.udp_socket()?;
//! sock.bind("0.0.0.0:7".parse::<SocketAddrV4>().unwrap())?;
//! let mut buf = [0u8; 2048];
//! loop {
//!     let (n, peer) = sock.recv_from(&mut buf)?;
//!     sock.send_to(&buf[..n], peer)?;
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub(crate) mod demux;
mod doorbell;
pub(crate) mod input;
mod multicast;
pub(crate) mod output;
pub(crate) mod path;
mod raw;
pub(crate) mod serve;

pub use multicast::FilterMode;
pub use raw::RawSocket;
pub use serve::{Datagram, Handler, ServeStats};

use crate::ebpf::SteerMaps;
use crate::snapshot::{Snapshot, SnapshotCell};
use arc_swap::ArcSwap;
use crossbeam::queue::ArrayQueue;
use demux::{Demux, Entry};
use rustc_hash::FxHashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Datagrams a socket's receive queue holds (its `SO_RCVBUF`, in packets).
pub const RECV_QUEUE: usize = 1024;
/// Datagrams a worker's send queue holds, shared by the sockets it serves.
pub const SEND_QUEUE: usize = 4096;
/// Capacity of a receive buffer; a larger datagram grows its buffer once.
const BUF_CAPACITY: usize = 2048;
/// Largest UDP payload over IPv4: 65535 - 20 - 8.
pub const MAX_PAYLOAD: usize = 65507;
/// `ip_unprivileged_port_start`.
const UNPRIVILEGED_PORT_START: u16 = 1024;

fn errno(e: i32) -> io::Error {
    io::Error::from_raw_os_error(e)
}

/// `IP_MTU_DISCOVER` modes (ip(7)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PmtuDisc {
    /// `IP_PMTUDISC_DONT`: never set DF.
    Dont = 0,
    /// `IP_PMTUDISC_WANT`: set DF when the datagram fits the path MTU,
    /// fragment it when it does not.
    Want = 1,
    /// `IP_PMTUDISC_DO`: always set DF; a datagram over the path MTU fails
    /// with `EMSGSIZE`.
    Do = 2,
    /// `IP_PMTUDISC_PROBE`: set DF and ignore the path MTU (the interface
    /// MTU still applies).
    Probe = 3,
}

impl PmtuDisc {
    fn from_raw(v: i32) -> io::Result<Self> {
        Ok(match v {
            0 => PmtuDisc::Dont,
            1 => PmtuDisc::Want,
            2 => PmtuDisc::Do,
            3 => PmtuDisc::Probe,
            _ => return Err(errno(libc::EINVAL)),
        })
    }
}

/// `IP_TTL`: -1 restores the default, 1 to 255 sets it, the rest is
/// `EINVAL`.
fn ttl_option(value: i32) -> io::Result<Option<u8>> {
    match value {
        -1 => Ok(None),
        1..=255 => Ok(Some(value as u8)),
        _ => Err(errno(libc::EINVAL)),
    }
}

/// The on/off options kept as [`SockCore`] flags, by (level, name).
fn flag_of(level: i32, name: i32) -> Option<u32> {
    Some(match (level, name) {
        (libc::SOL_SOCKET, libc::SO_BROADCAST) => flag::BROADCAST,
        (libc::IPPROTO_IP, libc::IP_PKTINFO) => flag::PKTINFO,
        (libc::IPPROTO_IP, libc::IP_RECVTTL) => flag::RECVTTL,
        (libc::IPPROTO_IP, libc::IP_RECVTOS) => flag::RECVTOS,
        (libc::IPPROTO_IP, libc::IP_RECVORIGDSTADDR) => flag::ORIGDSTADDR,
        (libc::IPPROTO_IP, libc::IP_RECVERR) => flag::RECVERR,
        _ => return None,
    })
}

/// Bits of [`SockCore::flags`] a worker reads.
mod flag {
    pub const BROADCAST: u32 = 1 << 0;
    pub const PKTINFO: u32 = 1 << 1;
    pub const RECVTTL: u32 = 1 << 2;
    pub const RECVTOS: u32 = 1 << 3;
    pub const ORIGDSTADDR: u32 = 1 << 4;
    pub const RECVERR: u32 = 1 << 5;
    /// IP_PMTUDISC_DONT is set (frag-needed errors are not reported).
    pub const PMTU_DONT: u32 = 1 << 6;
    /// IP_MULTICAST_LOOP is off.
    pub const MCAST_NOLOOP: u32 = 1 << 7;
}

/// Where an error in the error queue comes from (`ee_origin`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrOrigin {
    /// `SO_EE_ORIGIN_LOCAL`: found by the sending call itself.
    Local = 1,
    /// `SO_EE_ORIGIN_ICMP`: an ICMP error about a sent datagram.
    Icmp = 2,
}

/// A record of the error queue (`IP_RECVERR`), the typed form of
/// `struct sock_extended_err` and the offender address that follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtendedErr {
    /// `ee_errno`.
    pub errno: i32,
    /// `ee_origin`.
    pub origin: ErrOrigin,
    /// `ee_type`: the ICMP type (0 for a local error).
    pub icmp_type: u8,
    /// `ee_code`: the ICMP code.
    pub icmp_code: u8,
    /// `ee_info`: the MTU for fragmentation needed and for local
    /// `EMSGSIZE`.
    pub info: u32,
    /// `SO_EE_OFFENDER`: who sent the ICMP error (`None` for local errors).
    pub offender: Option<Ipv4Addr>,
    /// The destination of the datagram the error is about (the message
    /// name `recvmsg(MSG_ERRQUEUE)` returns).
    pub dst: SocketAddrV4,
}

/// What a worker queues: the record and the start of the payload the
/// error quoted (what `recvmsg(MSG_ERRQUEUE)` returns as data).
#[derive(Debug, Clone, Copy)]
pub(crate) struct QueuedErr {
    pub err: ExtendedErr,
    pub data: [u8; ERR_DATA],
    pub len: usize,
}

/// Bytes of quoted payload an error record keeps: all that an ICMP error
/// of 576 bytes (RFC 1812, Linux) can quote after the headers.
const ERR_DATA: usize = 548;

/// Error records a socket keeps (the kernel bounds them by `SO_RCVBUF`).
const ERR_QUEUE: usize = 64;

/// Ancillary data of a received datagram, the typed form of the control
/// messages the kernel gives with `recvmsg(2)`; a field is `Some` when its
/// option is on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ancillary {
    /// `IP_PKTINFO`: the interface index, the local address the reply
    /// should come from (`ipi_spec_dst`) and the destination address of
    /// the header (`ipi_addr`).
    pub pktinfo: Option<PktInfo>,
    /// `IP_RECVTTL`: the TTL of the datagram.
    pub ttl: Option<u8>,
    /// `IP_RECVTOS`: the TOS byte of the datagram.
    pub tos: Option<u8>,
    /// `IP_RECVORIGDSTADDR`: the destination address and port.
    pub orig_dst: Option<SocketAddrV4>,
}

/// `struct in_pktinfo`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PktInfo {
    /// Interface the datagram came in on.
    pub ifindex: u32,
    /// Local address for a reply (`ipi_spec_dst`).
    pub spec_dst: Ipv4Addr,
    /// Destination address in the header (`ipi_addr`).
    pub addr: Ipv4Addr,
}

/// What [`UdpSocket::recv_msg`] returns besides the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecvMeta {
    /// Bytes copied into the buffer.
    pub len: usize,
    /// Length of the datagram; more than `len` when it was truncated
    /// (`MSG_TRUNC`).
    pub datagram_len: usize,
    /// Sender.
    pub src: SocketAddrV4,
    /// Ancillary data asked for with the `IP_RECV*`/`IP_PKTINFO` options.
    pub ancillary: Ancillary,
}

/// A datagram waiting in a socket's receive queue.
#[derive(Debug)]
pub(crate) struct RxDatagram {
    pub buf: Vec<u8>,
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
    pub ttl: u8,
    pub tos: u8,
    pub ifindex: u32,
    pub spec_dst: Ipv4Addr,
}

/// A datagram handed to a worker to send.
#[derive(Debug)]
pub(crate) struct TxDatagram {
    pub sock: Arc<SockCore>,
    pub buf: Vec<u8>,
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
    pub ttl: u8,
    pub tos: u8,
    pub pmtudisc: PmtuDisc,
    /// For a raw socket: its protocol, and whether `buf` holds the IP
    /// header too (`IP_HDRINCL`).
    pub raw: Option<(u8, bool)>,
    /// For multicast: the interface of `IP_MULTICAST_IF`, 0 for by route.
    pub oif: u32,
    /// For multicast: `IP_MULTICAST_LOOP`.
    pub mcast_loop: bool,
    /// Monotonic milliseconds when it was queued (for giving up on an
    /// unresolved neighbour).
    pub queued_ms: u64,
}

/// How a datagram arrived: what a receiving socket's ancillary data tells.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Arrival {
    /// Sender.
    pub src: SocketAddrV4,
    /// Destination.
    pub dst: SocketAddrV4,
    /// `IP_RECVTTL`.
    pub ttl: u8,
    /// `IP_RECVTOS`.
    pub tos: u8,
    /// Interface it arrived on (`IP_PKTINFO`).
    pub ifindex: u32,
    /// The address a reply comes from (`ipi_spec_dst`).
    pub spec_dst: Ipv4Addr,
}

/// The part of a socket that workers touch.
#[derive(Debug)]
pub(crate) struct SockCore {
    rx: ArrayQueue<RxDatagram>,
    /// Empty buffers for the worker to fill; as many as the queue holds, so
    /// an empty pool means a full socket.
    rx_free: ArrayQueue<Vec<u8>>,
    /// Buffers of sent datagrams, returned by the worker for the next send.
    tx_free: ArrayQueue<Vec<u8>>,
    /// Set by the application when it found the queue empty and may sleep;
    /// the worker then signals `event`.
    waiting: AtomicBool,
    event: OwnedFd,
    flags: AtomicU32,
    /// Connected peer: address << 16 | port, with bit 48 set; 0 when not
    /// connected.
    peer: AtomicU64,
    /// Datagrams dropped because the queue was full.
    pub rcvbuf_errors: AtomicU64,
    /// The pending error (`sk_err`) an ICMP error set, reported and
    /// cleared by the next send or receive; 0 for none.
    error: AtomicI32,
    /// `IP_RECVERR` records. A mutex, unlike the data path: reading the
    /// queue must see the next record (the kernel's `sk_err` becomes its
    /// errno), and a worker only ever try-locks it, on an ICMP error.
    errq: Mutex<std::collections::VecDeque<QueuedErr>>,
    /// Set when the socket answers in the workers ([`UdpSocket::serve`]).
    serving: OnceLock<Arc<serve::Serving>>,
    /// `IP_TTL`, `IP_TOS`, `IP_MTU_DISCOVER` for the replies built in the
    /// workers ([`serve::pack_output`]).
    output: AtomicU32,
}

impl SockCore {
    fn new() -> io::Result<Self> {
        // SAFETY: eventfd(2) with valid flags; the result is checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a new descriptor that nothing else owns.
        let event = unsafe { OwnedFd::from_raw_fd(fd) };
        let rx_free = ArrayQueue::new(RECV_QUEUE);
        for _ in 0..RECV_QUEUE {
            let _ = rx_free.push(Vec::with_capacity(BUF_CAPACITY));
        }
        Ok(SockCore {
            rx: ArrayQueue::new(RECV_QUEUE),
            rx_free,
            tx_free: ArrayQueue::new(256),
            waiting: AtomicBool::new(true),
            event,
            flags: AtomicU32::new(0),
            peer: AtomicU64::new(0),
            rcvbuf_errors: AtomicU64::new(0),
            error: AtomicI32::new(0),
            errq: Mutex::new(std::collections::VecDeque::with_capacity(ERR_QUEUE)),
            serving: OnceLock::new(),
            output: AtomicU32::new(serve::pack_output(None, 0, PmtuDisc::Want)),
        })
    }

    fn has(&self, f: u32) -> bool {
        self.flags.load(Ordering::Relaxed) & f != 0
    }

    fn set_flag(&self, f: u32, on: bool) {
        if on {
            self.flags.fetch_or(f, Ordering::Relaxed);
        } else {
            self.flags.fetch_and(!f, Ordering::Relaxed);
        }
    }

    /// True when unconnected or connected to `addr:port`.
    pub fn peer_matches(&self, addr: u32, port: u16) -> bool {
        let p = self.peer.load(Ordering::Relaxed);
        p == 0 || p == (1 << 48) | (addr as u64) << 16 | port as u64
    }

    /// A worker queues a received payload. False when the socket is full
    /// (the caller counts `UdpRcvbufErrors`).
    pub fn deliver(&self, payload: &[u8], at: &Arrival) -> bool {
        let Arrival {
            src,
            dst,
            ttl,
            tos,
            ifindex,
            spec_dst,
        } = *at;
        let Some(mut buf) = self.rx_free.pop() else {
            self.rcvbuf_errors.fetch_add(1, Ordering::Relaxed);
            return false;
        };
        buf.clear();
        buf.extend_from_slice(payload);
        let d = RxDatagram {
            buf,
            src,
            dst,
            ttl,
            tos,
            ifindex,
            spec_dst,
        };
        if let Err(d) = self.rx.push(d) {
            let _ = self.rx_free.push(d.buf);
            self.rcvbuf_errors.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        // SeqCst pairs with the application's store of `waiting` before it
        // looks at the queue again: one of the two sees the other.
        if self.waiting.load(Ordering::SeqCst) && self.waiting.swap(false, Ordering::SeqCst) {
            self.signal();
        }
        true
    }

    fn signal(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our eventfd; a full
        // counter (EAGAIN) already means "readable".
        unsafe { libc::write(self.event.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    fn clear_signal(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads 8 bytes into a live u64 from our non-blocking
        // eventfd.
        unsafe { libc::read(self.event.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
    }

    /// True when connected to a peer.
    pub fn is_connected(&self) -> bool {
        self.peer.load(Ordering::Relaxed) != 0
    }

    /// A worker reports an ICMP error about a datagram this socket sent,
    /// as `__udp4_lib_err()` does: with `IP_RECVERR` the error is queued
    /// and becomes the pending error; without it, only a hard error on a
    /// connected socket does. Fragmentation needed is not reported to an
    /// `IP_PMTUDISC_DONT` socket.
    pub fn icmp_error(&self, e: QueuedErr, hard: bool) -> bool {
        let frag_needed = e.err.icmp_type == 3 && e.err.icmp_code == 4;
        if frag_needed && self.has(flag::PMTU_DONT) {
            return false;
        }
        if self.has(flag::RECVERR) {
            // A full queue (or one the application is reading right now)
            // drops the record, as a full receive buffer does; the worker
            // never waits.
            if let Ok(mut q) = self.errq.try_lock() {
                if q.len() < ERR_QUEUE {
                    q.push_back(e);
                }
            }
        } else if !hard || !self.is_connected() {
            return false;
        }
        self.error.store(e.err.errno, Ordering::Relaxed);
        if self.waiting.load(Ordering::SeqCst) && self.waiting.swap(false, Ordering::SeqCst) {
            self.signal();
        }
        true
    }

    /// Sets an on/off option kept as a flag; false when it is not one.
    fn set_flag_option(&self, level: i32, name: i32, on: bool) -> bool {
        let Some(f) = flag_of(level, name) else {
            return false;
        };
        self.set_flag(f, on);
        if f == flag::RECVERR && !on {
            // Turning IP_RECVERR off purges the queue, as the kernel does.
            self.errq.lock().expect("not poisoned").clear();
        }
        true
    }

    /// The value of an on/off option kept as a flag.
    fn flag_option(&self, level: i32, name: i32) -> Option<i32> {
        flag_of(level, name).map(|f| self.has(f) as i32)
    }

    /// `IP_MTU_DISCOVER`: the mode, noted for the workers.
    fn pmtu_option(&self, value: i32) -> io::Result<PmtuDisc> {
        let mode = PmtuDisc::from_raw(value)?;
        self.set_flag(flag::PMTU_DONT, mode == PmtuDisc::Dont);
        Ok(mode)
    }

    /// A send refused for size: `EMSGSIZE`, and with `IP_RECVERR` a local
    /// record carrying the MTU, as `ip_local_error()` queues it.
    fn too_big(&self, dst: SocketAddrV4, mtu: u32) -> io::Error {
        if self.has(flag::RECVERR) {
            let mut q = self.errq.lock().expect("not poisoned");
            if q.len() < ERR_QUEUE {
                q.push_back(QueuedErr {
                    err: ExtendedErr {
                        errno: libc::EMSGSIZE,
                        origin: ErrOrigin::Local,
                        icmp_type: 0,
                        icmp_code: 0,
                        info: mtu,
                        offender: None,
                        dst,
                    },
                    data: [0; ERR_DATA],
                    len: 0,
                });
            }
        }
        errno(libc::EMSGSIZE)
    }

    /// Takes the pending error (`sock_error()`).
    fn take_error(&self) -> Option<io::Error> {
        match self.error.swap(0, Ordering::Relaxed) {
            0 => None,
            e => Some(errno(e)),
        }
    }

    /// Copies a datagram out, with the ancillary data asked for, and
    /// recycles its buffer.
    fn finish_recv(&self, d: RxDatagram, buf: &mut [u8]) -> RecvMeta {
        let len = d.buf.len().min(buf.len());
        buf[..len].copy_from_slice(&d.buf[..len]);
        let f = self.flags.load(Ordering::Relaxed);
        let meta = RecvMeta {
            len,
            datagram_len: d.buf.len(),
            src: d.src,
            ancillary: Ancillary {
                pktinfo: (f & flag::PKTINFO != 0).then_some(PktInfo {
                    ifindex: d.ifindex,
                    spec_dst: d.spec_dst,
                    addr: *d.dst.ip(),
                }),
                ttl: (f & flag::RECVTTL != 0).then_some(d.ttl),
                tos: (f & flag::RECVTOS != 0).then_some(d.tos),
                orig_dst: (f & flag::ORIGDSTADDR != 0).then_some(d.dst),
            },
        };
        let _ = self.rx_free.push(d.buf);
        meta
    }

    /// The next datagram, waiting as the socket's mode says.
    fn next_datagram(
        &self,
        nonblocking: bool,
        timeout: Option<Duration>,
    ) -> io::Result<RxDatagram> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            if let Some(d) = self.rx.pop() {
                return Ok(d);
            }
            if let Some(e) = self.take_error() {
                return Err(e);
            }
            // Arm the wakeup, then look again: a datagram queued in between
            // is seen now, or its worker sees `waiting` and signals.
            self.clear_signal();
            self.waiting.store(true, Ordering::SeqCst);
            if let Some(d) = self.rx.pop() {
                return Ok(d);
            }
            if nonblocking {
                return Err(errno(libc::EAGAIN));
            }
            let wait_ms = match deadline {
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(errno(libc::EAGAIN));
                    }
                    left.as_millis().clamp(1, i32::MAX as u128) as i32
                }
                None => -1,
            };
            let mut pfd = libc::pollfd {
                fd: self.event.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd on our eventfd.
            let r = unsafe { libc::poll(&mut pfd, 1, wait_ms) };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }

    /// A worker gives back the buffer of a sent datagram.
    pub fn recycle_tx(&self, mut buf: Vec<u8>) {
        buf.clear();
        // A full pool drops the buffer: the application sent faster than
        // the pool holds, which only costs an allocation on its side.
        let _ = self.tx_free.push(buf);
    }
}

/// A send buffer of a socket ([`UdpSocket::send_buf`]): a `Vec<u8>` to
/// write a payload into, sent without a copy by
/// [`UdpSocket::send_buf_to`], back in the socket's pool when dropped.
pub struct SendBuf {
    buf: Vec<u8>,
    core: Arc<SockCore>,
}

impl std::fmt::Debug for SendBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendBuf")
            .field("len", &self.buf.len())
            .finish()
    }
}

impl std::ops::Deref for SendBuf {
    type Target = Vec<u8>;
    fn deref(&self) -> &Vec<u8> {
        &self.buf
    }
}

impl std::ops::DerefMut for SendBuf {
    fn deref_mut(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }
}

impl Drop for SendBuf {
    fn drop(&mut self) {
        if self.buf.capacity() > 0 {
            self.core.recycle_tx(std::mem::take(&mut self.buf));
        }
    }
}

/// UDP counters that are not a worker's (sent from application threads).
#[derive(Debug, Default)]
pub struct SendCounters {
    /// Datagrams refused because the worker's send queue was full
    /// (`UdpSndbufErrors`).
    pub sndbuf_errors: AtomicU64,
}

/// What sockets share with each other, the workers and the engine.
pub(crate) struct SocketShared {
    registry: Mutex<Registry>,
    /// Groups the XDP program steers to the engine now.
    groups: Mutex<rustc_hash::FxHashSet<Ipv4Addr>>,
    /// Whether the XDP program sends local fragments to the engine.
    local_frags: AtomicBool,
    /// Path MTUs learnt from fragmentation-needed messages.
    pub pmtu: path::PmtuCache,
    pub demux: ArcSwap<Demux>,
    maps: Arc<Mutex<SteerMaps>>,
    cell: Arc<SnapshotCell>,
    /// Per worker, the datagrams to send.
    pub tx: Vec<ArrayQueue<TxDatagram>>,
    /// Per worker, what wakes it when a datagram is queued while it sleeps.
    bells: Vec<doorbell::Doorbell>,
    pub counters: SendCounters,
    allow_privileged: bool,
    started: Instant,
}

impl std::fmt::Debug for SocketShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocketShared").finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct Binding {
    laddr: Ipv4Addr,
    port: u16,
    peer: Option<SocketAddrV4>,
    reuseaddr: bool,
    reuseport: bool,
    core: Arc<SockCore>,
}

/// A raw socket as the registry keeps it.
#[derive(Debug)]
struct RawBinding {
    protocol: u8,
    laddr: Ipv4Addr,
    peer: Option<Ipv4Addr>,
    core: Arc<SockCore>,
}

#[derive(Debug, Default)]
struct Registry {
    next_id: u64,
    bound: FxHashMap<u64, Binding>,
    raw: FxHashMap<u64, RawBinding>,
    /// Multicast memberships by socket.
    mships: FxHashMap<u64, Vec<multicast::Membership>>,
    /// Sockets per port, for conflicts and claims.
    ports: FxHashMap<u16, Vec<u64>>,
    /// The next ephemeral port to try.
    next_ephemeral: u32,
    echo: bool,
}

impl SocketShared {
    pub(crate) fn new(
        maps: Arc<Mutex<SteerMaps>>,
        cell: Arc<SnapshotCell>,
        workers: usize,
        allow_privileged: bool,
        echo: bool,
    ) -> io::Result<Self> {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        if echo {
            maps.lock()
                .expect("not poisoned")
                .claim_icmp_echo()
                .map_err(io::Error::other)?;
        }
        Ok(SocketShared {
            registry: Mutex::new(Registry {
                next_ephemeral: seed,
                echo,
                ..Registry::default()
            }),
            demux: ArcSwap::from_pointee(Demux {
                echo,
                ..Demux::default()
            }),
            pmtu: path::PmtuCache::default(),
            local_frags: AtomicBool::new(false),
            groups: Mutex::new(Default::default()),
            maps,
            cell,
            tx: (0..workers.max(1))
                .map(|_| ArrayQueue::new(SEND_QUEUE))
                .collect(),
            bells: (0..workers.max(1))
                .map(|_| doorbell::Doorbell::new())
                .collect::<io::Result<_>>()?,
            counters: SendCounters::default(),
            allow_privileged,
            started: Instant::now(),
        })
    }

    /// Worker `w`'s doorbell descriptor, for its poll(2).
    pub(crate) fn doorbell_fd(&self, w: usize) -> RawFd {
        self.bells[w].fd()
    }

    /// Worker `w` is about to sleep: true when it may (its send queue is
    /// empty, and a datagram queued from now on wakes it).
    pub(crate) fn may_sleep(&self, w: usize) -> bool {
        self.bells[w].arm(|| self.tx[w].is_empty())
    }

    /// Worker `w` is awake again.
    pub(crate) fn woke(&self, w: usize) {
        self.bells[w].disarm();
    }

    /// The MTU a datagram to `dst` on `p` is held to: the learnt path MTU,
    /// except for `IP_PMTUDISC_PROBE`, which uses the interface's
    /// (`ip_sk_use_pmtu()`).
    pub(crate) fn effective_mtu(&self, p: &path::Path, dst: Ipv4Addr, mode: PmtuDisc) -> u32 {
        if mode == PmtuDisc::Probe {
            return p.mtu;
        }
        self.pmtu
            .get_at(dst, || self.now_ms())
            .map_or(p.mtu, |m| m.min(p.mtu))
    }

    /// Hands a datagram to worker `w`: `ENOBUFS` when its queue is full and
    /// the socket is non-blocking, else waits (up to `timeout`, then
    /// `EAGAIN`).
    fn enqueue(
        &self,
        w: usize,
        mut d: TxDatagram,
        nonblocking: bool,
        timeout: Option<Duration>,
    ) -> io::Result<()> {
        let q = &self.tx[w];
        let start = Instant::now();
        loop {
            match q.push(d) {
                Ok(()) => {
                    self.bells[w].ring();
                    return Ok(());
                }
                Err(back) => d = back,
            }
            if nonblocking {
                self.counters.sndbuf_errors.fetch_add(1, Ordering::Relaxed);
                return Err(errno(libc::ENOBUFS));
            }
            if timeout.is_some_and(|t| start.elapsed() >= t) {
                return Err(errno(libc::EAGAIN));
            }
            // The worker drains the queue every round: a short nap is
            // enough, and there is no wakeup to wait on.
            std::thread::sleep(Duration::from_micros(50));
        }
    }

    fn claim_raw(&self, proto: u8) -> io::Result<()> {
        if let Some((p, port)) = raw::raw_claim(proto) {
            self.maps
                .lock()
                .expect("not poisoned")
                .claim(p, port)
                .map_err(|e| io::Error::other(format!("claiming protocol {proto}: {e}")))?;
        }
        Ok(())
    }

    fn release_raw(&self, proto: u8) {
        if let Some((p, port)) = raw::raw_claim(proto) {
            if let Ok(mut m) = self.maps.lock() {
                m.release(p, port);
            }
        }
    }

    /// Milliseconds on the clock workers use for queued datagrams.
    pub(crate) fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn publish(&self, r: &Registry) {
        let mut d = Demux {
            echo: r.echo,
            serve: r.bound.values().any(|b| b.core.serving.get().is_some()),
            ..Demux::default()
        };
        // Bind order (ids grow) decides which SO_REUSEADDR socket is newest.
        let mut ids: Vec<&u64> = r.bound.keys().collect();
        ids.sort();
        for id in ids {
            let b = &r.bound[id];
            let e = Entry {
                id: *id,
                laddr: u32::from(b.laddr),
                sock: b.core.clone(),
            };
            d.ports.entry(b.port).or_default().push(e.clone());
            match b.peer {
                Some(p) => d
                    .connected
                    .entry((b.port, u32::from(*p.ip()), p.port()))
                    .or_default()
                    .push(e),
                None => {
                    let key = (u32::from(b.laddr), b.port);
                    d.udp.entry(key).or_default().push(e);
                    let rp = d.reuseport.entry(key).or_insert(true);
                    *rp &= b.reuseport;
                }
            }
        }
        let mut ids: Vec<&u64> = r.raw.keys().collect();
        ids.sort();
        for id in ids {
            let b = &r.raw[id];
            d.raw.entry(b.protocol).or_default().push(demux::RawEntry {
                laddr: u32::from(b.laddr),
                peer: b.peer.map_or(0, u32::from),
                sock: b.core.clone(),
            });
        }
        d.mships = r.mships.clone();
        d.joined = r
            .mships
            .values()
            .flatten()
            .map(|m| (u32::from(m.group), m.ifindex))
            .collect();
        self.demux.store(Arc::new(d));
        let want: rustc_hash::FxHashSet<Ipv4Addr> =
            r.mships.values().flatten().map(|m| m.group).collect();
        {
            let mut have = self.groups.lock().expect("not poisoned");
            if *have != want {
                if let Ok(mut m) = self.maps.lock() {
                    for g in want.difference(&have) {
                        if let Err(e) = m.set_group(*g, true) {
                            log::error!("steering group {g}: {e}");
                        }
                    }
                    for g in have.difference(&want) {
                        let _ = m.set_group(*g, false);
                    }
                }
                *have = want;
            }
        }
        // Fragments to local addresses come to the engine while it has
        // sockets that could want them.
        let want = !r.bound.is_empty() || !r.raw.is_empty();
        if want != self.local_frags.swap(want, Ordering::Relaxed) {
            if let Ok(mut m) = self.maps.lock() {
                if let Err(e) = m.set_local_frags(want) {
                    log::error!("steering local fragments: {e}");
                }
            }
        }
    }

    fn snapshot(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.cell.load()
    }
}

impl Registry {
    /// `inet_csk_bind_conflict()` for UDP: another socket on the port whose
    /// address overlaps conflicts unless both share by `SO_REUSEADDR` or
    /// both by `SO_REUSEPORT`.
    fn conflicts(
        &self,
        id: u64,
        laddr: Ipv4Addr,
        port: u16,
        reuseaddr: bool,
        reuseport: bool,
    ) -> bool {
        self.ports.get(&port).is_some_and(|ids| {
            ids.iter().filter(|o| **o != id).any(|o| {
                let b = &self.bound[o];
                let overlap = b.laddr == laddr
                    || b.laddr == Ipv4Addr::UNSPECIFIED
                    || laddr == Ipv4Addr::UNSPECIFIED;
                overlap && !(reuseaddr && b.reuseaddr) && !(reuseport && b.reuseport)
            })
        })
    }

    /// A free port from `ip_local_port_range`, from a pseudo-random start
    /// as `udp_lib_get_port()` picks; an ephemeral port is never shared.
    fn ephemeral(&mut self, range: (u16, u16)) -> io::Result<u16> {
        let (lo, hi) = range;
        let n = (hi as u32).saturating_sub(lo as u32) + 1;
        for _ in 0..n {
            self.next_ephemeral = self
                .next_ephemeral
                .wrapping_mul(1_103_515_245)
                .wrapping_add(12345);
            let port = lo as u32 + (self.next_ephemeral >> 8) % n;
            let port = port as u16;
            if !self.ports.contains_key(&port) {
                return Ok(port);
            }
        }
        Err(errno(libc::EAGAIN))
    }
}

#[derive(Debug, Clone)]
struct SockState {
    local: Option<SocketAddrV4>,
    peer: Option<SocketAddrV4>,
    ttl: Option<u8>,
    tos: u8,
    pmtudisc: PmtuDisc,
    reuseaddr: bool,
    reuseport: bool,
    freebind: bool,
    bind_no_port: bool,
    nonblocking: bool,
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
    /// IP_MULTICAST_TTL.
    mcast_ttl: u8,
    /// IP_MULTICAST_IF: interface index and address.
    mcast_if: Option<(u32, Ipv4Addr)>,
}

/// A UDP socket on the engine's fast path, shaped like
/// [`std::net::UdpSocket`]: errors are [`io::Error`]s whose
/// `raw_os_error()` is the errno the kernel returns for the same call.
///
/// Made by [`crate::Engine::udp_socket`]; closed when dropped, which
/// releases its port.
pub struct UdpSocket {
    id: u64,
    shared: Arc<SocketShared>,
    core: Arc<SockCore>,
    state: Mutex<SockState>,
    worker: usize,
    /// The kernel socket that takes this socket's multicast memberships
    /// (see the `multicast` module).
    shadow: Mutex<Option<OwnedFd>>,
}

impl std::fmt::Debug for UdpSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.state();
        f.debug_struct("UdpSocket")
            .field("local", &s.local)
            .field("peer", &s.peer)
            .finish()
    }
}

impl UdpSocket {
    pub(crate) fn new(shared: Arc<SocketShared>) -> io::Result<Self> {
        let core = Arc::new(SockCore::new()?);
        let id = {
            let mut r = shared.registry.lock().expect("not poisoned");
            r.next_id += 1;
            r.next_id
        };
        let pmtudisc = if shared.snapshot().sysctl.ip_no_pmtu_disc == 0 {
            PmtuDisc::Want
        } else {
            PmtuDisc::Dont
        };
        let worker = id as usize % shared.tx.len();
        core.set_flag(flag::PMTU_DONT, pmtudisc == PmtuDisc::Dont);
        core.output
            .store(serve::pack_output(None, 0, pmtudisc), Ordering::Relaxed);
        Ok(UdpSocket {
            id,
            shared,
            core,
            state: Mutex::new(SockState {
                local: None,
                peer: None,
                ttl: None,
                tos: 0,
                pmtudisc,
                reuseaddr: false,
                reuseport: false,
                freebind: false,
                bind_no_port: false,
                nonblocking: false,
                read_timeout: None,
                write_timeout: None,
                mcast_ttl: 1,
                mcast_if: None,
            }),
            worker,
            shadow: Mutex::new(None),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, SockState> {
        self.state.lock().expect("not poisoned")
    }

    /// Binds to a local address and port; port 0 picks an ephemeral port
    /// from `ip_local_port_range`.
    ///
    /// Errors as the kernel's: `EINVAL` when already bound,
    /// `EADDRNOTAVAIL` for an address that is not local (unless
    /// `IP_FREEBIND` or `ip_nonlocal_bind`), `EACCES` for a port below 1024
    /// without `CAP_NET_BIND_SERVICE`, `EADDRINUSE` when taken.
    pub fn bind(&self, addr: SocketAddrV4) -> io::Result<()> {
        let mut st = self.state();
        if st.local.is_some() {
            return Err(errno(libc::EINVAL));
        }
        let snap = self.shared.snapshot();
        let ip = *addr.ip();
        let local_ok = ip.is_unspecified()
            || ip.is_multicast()
            || ip.is_broadcast()
            || snap.is_local(ip)
            || st.freebind
            || snap.sysctl.ip_nonlocal_bind;
        if !local_ok {
            return Err(errno(libc::EADDRNOTAVAIL));
        }
        if addr.port() != 0
            && addr.port() < UNPRIVILEGED_PORT_START
            && !self.shared.allow_privileged
        {
            return Err(errno(libc::EACCES));
        }
        let range = snap.sysctl.ip_local_port_range;
        drop(snap);
        let port = self.register(&st, ip, addr.port(), None, range)?;
        st.local = Some(SocketAddrV4::new(ip, port));
        Ok(())
    }

    /// Adds or moves the socket in the registry, claims its port and
    /// publishes a new demultiplexing table.
    fn register(
        &self,
        st: &SockState,
        laddr: Ipv4Addr,
        port: u16,
        peer: Option<SocketAddrV4>,
        range: (u16, u16),
    ) -> io::Result<u16> {
        let mut r = self.shared.registry.lock().expect("not poisoned");
        let port = if port == 0 {
            r.ephemeral(range)?
        } else {
            if r.conflicts(self.id, laddr, port, st.reuseaddr, st.reuseport) {
                return Err(errno(libc::EADDRINUSE));
            }
            port
        };
        if !r.ports.contains_key(&port) {
            self.shared
                .maps
                .lock()
                .expect("not poisoned")
                .claim(crate::wire::ipv4::protocol::UDP, port)
                .map_err(|e| io::Error::other(format!("claiming UDP port {port}: {e}")))?;
        }
        let ids = r.ports.entry(port).or_default();
        if !ids.contains(&self.id) {
            ids.push(self.id);
        }
        r.bound.insert(
            self.id,
            Binding {
                laddr,
                port,
                peer,
                reuseaddr: st.reuseaddr,
                reuseport: st.reuseport,
                core: self.core.clone(),
            },
        );
        self.shared.publish(&r);
        Ok(port)
    }

    /// Connects to a peer: datagrams from others are no longer received,
    /// and [`send`](Self::send) goes there. An unbound socket is bound to an
    /// ephemeral port; one bound to `INADDR_ANY` takes the route's source
    /// address, as `ip4_datagram_connect()` does.
    ///
    /// Errors: `ENETUNREACH` (no route), `EHOSTUNREACH`/`EACCES`/`EINVAL`
    /// (unreachable, prohibit, blackhole routes), `EACCES` for a broadcast
    /// address without `SO_BROADCAST`.
    pub fn connect(&self, peer: SocketAddrV4) -> io::Result<()> {
        let mut st = self.state();
        let snap = self.shared.snapshot();
        let p = path::output(&snap, *peer.ip(), st.local.map(|l| *l.ip()))?;
        if p.broadcast && !self.core.has(flag::BROADCAST) {
            return Err(errno(libc::EACCES));
        }
        let laddr = match st.local {
            Some(l) if !l.ip().is_unspecified() => *l.ip(),
            _ => p.src,
        };
        let port = st.local.map_or(0, |l| l.port());
        let range = snap.sysctl.ip_local_port_range;
        drop(snap);
        let port = self.register(&st, laddr, port, Some(peer), range)?;
        st.local = Some(SocketAddrV4::new(laddr, port));
        st.peer = Some(peer);
        self.core.peer.store(
            (1 << 48) | (u32::from(*peer.ip()) as u64) << 16 | peer.port() as u64,
            Ordering::Relaxed,
        );
        Ok(())
    }

    /// The local address (`getsockname`): `0.0.0.0:0` before a bind.
    pub fn local_addr(&self) -> io::Result<SocketAddrV4> {
        Ok(self
            .state()
            .local
            .unwrap_or(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)))
    }

    /// The connected peer (`getpeername`); `ENOTCONN` when not connected.
    pub fn peer_addr(&self) -> io::Result<SocketAddrV4> {
        self.state().peer.ok_or_else(|| errno(libc::ENOTCONN))
    }

    /// Sends to the connected peer; `EDESTADDRREQ` when not connected, as
    /// the kernel answers `send(2)` on an unconnected UDP socket.
    pub fn send(&self, buf: &[u8]) -> io::Result<usize> {
        let peer = self.state().peer.ok_or_else(|| errno(libc::EDESTADDRREQ))?;
        self.send_to(buf, peer)
    }

    /// Sends one datagram to `dst` (allowed on a connected socket too, as
    /// Linux allows it for UDP).
    ///
    /// Errors: `EINVAL` for port 0, `EMSGSIZE` over 65507 bytes or, with
    /// `IP_PMTUDISC_DO`/`PROBE`, over the MTU; `EACCES` for a broadcast
    /// without `SO_BROADCAST`; route errors as for
    /// [`connect`](Self::connect); `ENOBUFS` when the worker's send queue is
    /// full (non-blocking), `EAGAIN` on a send timeout.
    pub fn send_to(&self, buf: &[u8], dst: SocketAddrV4) -> io::Result<usize> {
        self.send_prepared(buf.len(), dst, || {
            let mut data = self.core.tx_free.pop().unwrap_or_default();
            data.extend_from_slice(buf);
            data
        })
    }

    /// A buffer from the socket's pool of send buffers, empty, to write a
    /// datagram's payload into and send with
    /// [`send_buf_to`](Self::send_buf_to): the payload is then not copied
    /// on its way to the worker, as it is by [`send_to`](Self::send_to).
    /// Dropped unsent, it goes back to the pool.
    ///
    /// ```no_run
    /// # let engine = xdpip::Engine::builder().interface("eth0").start()?;
    /// let sock = engine.udp_socket()?;
    /// let mut b = sock.send_buf();
    /// b.extend_from_slice(b"built in place");
    /// sock.send_buf_to(b, "10.1.0.1:9".parse().unwrap())?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn send_buf(&self) -> SendBuf {
        SendBuf {
            buf: self.core.tx_free.pop().unwrap_or_default(),
            core: self.core.clone(),
        }
    }

    /// Sends `buf` to `dst` as [`send_to`](Self::send_to) sends
    /// `&buf[..]`, with the same checks and errors, handing the buffer
    /// itself to the worker. On an error the buffer goes back to the pool.
    pub fn send_buf_to(&self, mut buf: SendBuf, dst: SocketAddrV4) -> io::Result<usize> {
        let len = buf.len();
        self.send_prepared(len, dst, || std::mem::take(&mut buf.buf))
    }

    /// Checks a datagram of `len` bytes to `dst`, then queues the payload
    /// `data` gives.
    fn send_prepared(
        &self,
        len: usize,
        dst: SocketAddrV4,
        data: impl FnOnce() -> Vec<u8>,
    ) -> io::Result<usize> {
        let d = self.prepare(len, dst, data)?;
        // The pending error comes after the route and size checks, where
        // sock_alloc_send_pskb() looks at it.
        if let Some(e) = self.core.take_error() {
            self.core.recycle_tx(d.buf);
            return Err(e);
        }
        self.enqueue(d)?;
        Ok(len)
    }

    fn prepare(
        &self,
        len: usize,
        dst: SocketAddrV4,
        data: impl FnOnce() -> Vec<u8>,
    ) -> io::Result<TxDatagram> {
        if dst.port() == 0 {
            return Err(errno(libc::EINVAL));
        }
        if len > MAX_PAYLOAD {
            return Err(errno(libc::EMSGSIZE));
        }
        let mut st = self.state();
        let snap = self.shared.snapshot();
        let bound_ip = st.local.map(|l| *l.ip()).filter(|a| !a.is_unspecified());
        let oif = match st.mcast_if {
            Some((ix, _)) if dst.ip().is_multicast() => ix,
            _ => 0,
        };
        let p = if oif != 0 {
            path::output_via(&snap, *dst.ip(), bound_ip, oif)?
        } else {
            path::output(&snap, *dst.ip(), bound_ip)?
        };
        if p.broadcast && !self.core.has(flag::BROADCAST) {
            return Err(errno(libc::EACCES));
        }
        let total = len + 28;
        let mtu = self.shared.effective_mtu(&p, *dst.ip(), st.pmtudisc);
        if matches!(st.pmtudisc, PmtuDisc::Do | PmtuDisc::Probe) && total > mtu as usize {
            return Err(self.core.too_big(dst, mtu));
        }
        // Multicast goes with IP_MULTICAST_TTL, whatever IP_TTL says.
        let ttl = if dst.ip().is_multicast() {
            st.mcast_ttl
        } else {
            st.ttl.unwrap_or(snap.sysctl.ip_default_ttl)
        };
        let range = snap.sysctl.ip_local_port_range;
        drop(snap);
        if st.local.is_none() {
            // Autobind (inet_autobind()): an ephemeral port on the wildcard.
            let port = self.register(&st, Ipv4Addr::UNSPECIFIED, 0, None, range)?;
            st.local = Some(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port));
        }
        let local = st.local.expect("bound above");
        let src = bound_ip.unwrap_or(p.src);
        Ok(TxDatagram {
            sock: self.core.clone(),
            buf: data(),
            src: SocketAddrV4::new(src, local.port()),
            dst,
            ttl,
            tos: st.tos,
            pmtudisc: st.pmtudisc,
            raw: None,
            oif,
            mcast_loop: !self.core.has(flag::MCAST_NOLOOP),
            queued_ms: self.shared.now_ms(),
        })
    }

    fn enqueue(&self, d: TxDatagram) -> io::Result<()> {
        let (nonblocking, timeout) = {
            let st = self.state();
            (st.nonblocking, st.write_timeout)
        };
        self.shared.enqueue(self.worker, d, nonblocking, timeout)
    }

    /// Sends several datagrams to their destinations; returns how many were
    /// queued. Stops at the first that fails, whose error is returned only
    /// when it is the first.
    pub fn send_batch(&self, msgs: &[(&[u8], SocketAddrV4)]) -> io::Result<usize> {
        for (i, (buf, dst)) in msgs.iter().enumerate() {
            if let Err(e) = self.send_to(buf, *dst) {
                return if i == 0 { Err(e) } else { Ok(i) };
            }
        }
        Ok(msgs.len())
    }

    /// Receives one datagram from the connected peer or anyone; a datagram
    /// longer than `buf` is truncated and the rest discarded, as the
    /// kernel does.
    pub fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddrV4)> {
        let m = self.recv_msg(buf)?;
        Ok((m.len, m.src))
    }

    /// [`recv_from`](Self::recv_from) without the sender.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        Ok(self.recv_msg(buf)?.len)
    }

    /// Receives one datagram with its ancillary data (`recvmsg(2)`).
    ///
    /// `EAGAIN` when non-blocking and nothing is queued, or when a read
    /// timeout passes.
    pub fn recv_msg(&self, buf: &mut [u8]) -> io::Result<RecvMeta> {
        let d = self.next_datagram()?;
        Ok(self.finish_recv(d, buf))
    }

    /// Receives up to `bufs.len()` datagrams without blocking once the
    /// first has come; returns how many, with their metadata in `meta`.
    pub fn recv_batch(&self, bufs: &mut [&mut [u8]], meta: &mut [RecvMeta]) -> io::Result<usize> {
        let n = bufs.len().min(meta.len());
        if n == 0 {
            return Ok(0);
        }
        let first = self.next_datagram()?;
        meta[0] = self.finish_recv(first, bufs[0]);
        let mut i = 1;
        while i < n {
            let Some(d) = self.core.rx.pop() else { break };
            meta[i] = self.finish_recv(d, bufs[i]);
            i += 1;
        }
        Ok(i)
    }

    fn finish_recv(&self, d: RxDatagram, buf: &mut [u8]) -> RecvMeta {
        self.core.finish_recv(d, buf)
    }

    fn next_datagram(&self) -> io::Result<RxDatagram> {
        let (nonblocking, timeout) = {
            let st = self.state();
            (st.nonblocking, st.read_timeout)
        };
        self.core.next_datagram(nonblocking, timeout)
    }

    /// A descriptor that becomes readable when a datagram arrives after a
    /// receive call found the queue empty: register it with epoll, mio or
    /// tokio's `AsyncFd`, and on readiness receive until `EAGAIN`
    /// (edge-triggered use).
    pub fn readiness_fd(&self) -> BorrowedFd<'_> {
        self.core.event.as_fd()
    }

    /// Answers this socket's datagrams in the engine's workers, with no
    /// queue and no thread of the application in between: each worker
    /// makes its own [`Handler`] with `factory(worker)` (on the worker's
    /// thread, the first time a datagram comes to it), and calls it for
    /// every unicast datagram to this socket it receives, with the payload
    /// where it lies in the received frame and a reply buffer in the frame
    /// the reply will leave in. The reply is transmitted in the worker's
    /// batch: back to the sender, from the address and port the datagram
    /// was sent to, routed, with this socket's `IP_TTL`, `IP_TOS` and
    /// `IP_MTU_DISCOVER` (it fits the path MTU, so it is never
    /// fragmented), through the filter's output and postrouting hooks,
    /// counted in `UdpOutDatagrams`; every datagram handled counts in
    /// `UdpInDatagrams`, every reply lost under a drop reason. A handler
    /// that returns `None` sends nothing ([`ServeStats::declined`]).
    ///
    /// Broadcast and multicast datagrams still go to the receive queue.
    /// The handler must not block: it runs in the middle of the worker's
    /// batch. It is dropped, on its worker, when the socket closes (within
    /// about a second) or the engine stops. `EINVAL` when the socket
    /// already serves.
    ///
    /// ```no_run
    /// use std::net::SocketAddrV4;
    /// use xdpip::socket::Datagram;
    /// let engine = xdpip::Engine::builder().interface("eth0").start()?;
    /// let sock = engine.udp_socket()?;
    /// sock.bind("0.0.0.0:7".parse::<SocketAddrV4>().unwrap())?;
    /// // An echo server: each worker gets its own closure and counter.
    /// sock.serve(|_worker| {
    ///     let mut echoed = 0u64;
    ///     move |d: &Datagram<'_>, reply: &mut [u8]| {
    ///         let n = d.payload.len().min(reply.len());
    ///         reply[..n].copy_from_slice(&d.payload[..n]);
    ///         echoed += 1;
    ///         Some(n)
    ///     }
    /// })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn serve<H, F>(&self, factory: F) -> io::Result<()>
    where
        H: Handler + 'static,
        F: Fn(usize) -> H + Send + Sync + 'static,
    {
        let make = move |w: usize| Box::new(factory(w)) as Box<dyn Handler>;
        let s = serve::Serving::new(Box::new(make), self.shared.tx.len());
        self.core
            .serving
            .set(Arc::new(s))
            .map_err(|_| errno(libc::EINVAL))?;
        // Workers look for serving sockets once the table says there are.
        let r = self.shared.registry.lock().expect("not poisoned");
        self.shared.publish(&r);
        Ok(())
    }

    /// What the handlers of a serving socket did ([`serve`](Self::serve));
    /// `None` when it does not serve.
    pub fn serve_stats(&self) -> Option<ServeStats> {
        self.core.serving.get().map(|s| s.stats())
    }

    /// Datagrams waiting in the receive queue.
    pub fn queued(&self) -> usize {
        self.core.rx.len()
    }

    /// Datagrams this socket dropped because its queue was full.
    pub fn rcvbuf_errors(&self) -> u64 {
        self.core.rcvbuf_errors.load(Ordering::Relaxed)
    }

    /// `SO_ERROR`: takes the pending error, if any.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        Ok(self.core.take_error())
    }

    /// Non-blocking mode (`O_NONBLOCK`).
    pub fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        self.state().nonblocking = on;
        Ok(())
    }

    /// `SO_RCVTIMEO`; `Some(0)` is `EINVAL` as in std.
    pub fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        if t == Some(Duration::ZERO) {
            return Err(errno(libc::EINVAL));
        }
        self.state().read_timeout = t;
        Ok(())
    }

    /// `SO_SNDTIMEO`; `Some(0)` is `EINVAL` as in std.
    pub fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        if t == Some(Duration::ZERO) {
            return Err(errno(libc::EINVAL));
        }
        self.state().write_timeout = t;
        Ok(())
    }

    /// `SO_BROADCAST`: allow sending to broadcast addresses.
    pub fn set_broadcast(&self, on: bool) -> io::Result<()> {
        self.core.set_flag(flag::BROADCAST, on);
        Ok(())
    }

    /// `SO_BROADCAST`.
    pub fn broadcast(&self) -> io::Result<bool> {
        Ok(self.core.has(flag::BROADCAST))
    }

    /// `IP_TTL` of unicast datagrams; 1 to 255.
    pub fn set_ttl(&self, ttl: u32) -> io::Result<()> {
        self.set_option(libc::IPPROTO_IP, libc::IP_TTL, ttl as i32)
    }

    /// `IP_TTL`: the value set, or `ip_default_ttl`.
    pub fn ttl(&self) -> io::Result<u32> {
        Ok(self.option(libc::IPPROTO_IP, libc::IP_TTL)? as u32)
    }

    /// `IP_MTU`: the path MTU of the connected peer; `ENOTCONN` when not
    /// connected.
    pub fn mtu(&self) -> io::Result<u32> {
        Ok(self.option(libc::IPPROTO_IP, libc::IP_MTU)? as u32)
    }

    /// `SO_REUSEADDR`; set before bind.
    pub fn set_reuse_address(&self, on: bool) -> io::Result<()> {
        self.set_option(libc::SOL_SOCKET, libc::SO_REUSEADDR, on as i32)
    }

    /// `SO_REUSEPORT`; set before bind on every socket of the group.
    pub fn set_reuse_port(&self, on: bool) -> io::Result<()> {
        self.set_option(libc::SOL_SOCKET, libc::SO_REUSEPORT, on as i32)
    }

    /// `IP_MTU_DISCOVER`.
    pub fn set_mtu_discover(&self, mode: PmtuDisc) -> io::Result<()> {
        self.set_option(libc::IPPROTO_IP, libc::IP_MTU_DISCOVER, mode as i32)
    }

    /// Reads one record of the error queue (`recvmsg(2)` with
    /// `MSG_ERRQUEUE`): the quoted payload goes into `buf` (truncated to
    /// it); returns its length and the record. `EAGAIN` when the queue is
    /// empty. The pending error becomes the next record's, or none.
    pub fn recv_error(&self, buf: &mut [u8]) -> io::Result<(usize, ExtendedErr)> {
        let mut queue = self.core.errq.lock().expect("not poisoned");
        let q = queue.pop_front().ok_or_else(|| errno(libc::EAGAIN))?;
        let n = q.len.min(buf.len());
        buf[..n].copy_from_slice(&q.data[..n]);
        self.core
            .error
            .store(queue.front().map_or(0, |n| n.err.errno), Ordering::Relaxed);
        Ok((n, q.err))
    }

    /// `IP_MTU_DISCOVER`.
    pub fn mtu_discover(&self) -> PmtuDisc {
        self.state().pmtudisc
    }

    /// `setsockopt(2)` with an integer value, for the options of ip(7) and
    /// `SOL_SOCKET` the engine's sockets implement; any other is
    /// `ENOPROTOOPT`, as the kernel answers an unknown option.
    ///
    /// Implemented: `SO_REUSEADDR`, `SO_REUSEPORT`, `SO_BROADCAST`,
    /// `IP_TTL`, `IP_TOS`, `IP_MTU_DISCOVER`, `IP_RECVERR`, `IP_PKTINFO`, `IP_RECVTTL`,
    /// `IP_RECVTOS`, `IP_RECVORIGDSTADDR`, `IP_FREEBIND`,
    /// `IP_BIND_ADDRESS_NO_PORT`.
    pub fn set_option(&self, level: i32, name: i32, value: i32) -> io::Result<()> {
        let mut st = self.state();
        let on = value != 0;
        match (level, name) {
            (libc::SOL_SOCKET, libc::SO_REUSEADDR) => st.reuseaddr = on,
            (libc::SOL_SOCKET, libc::SO_REUSEPORT) => st.reuseport = on,
            (libc::IPPROTO_IP, libc::IP_TTL) => st.ttl = ttl_option(value)?,
            // The kernel keeps the TOS byte as given (ECN bits included for
            // UDP).
            (libc::IPPROTO_IP, libc::IP_TOS) => st.tos = value as u8,
            (libc::IPPROTO_IP, libc::IP_MTU_DISCOVER) => {
                st.pmtudisc = self.core.pmtu_option(value)?
            }
            (libc::IPPROTO_IP, libc::IP_FREEBIND) => st.freebind = on,
            _ if self.core.set_flag_option(level, name, on) => {}
            (libc::IPPROTO_IP, libc::IP_BIND_ADDRESS_NO_PORT) => st.bind_no_port = on,
            _ => return Err(errno(libc::ENOPROTOOPT)),
        }
        // What replies built in the workers read.
        self.core.output.store(
            serve::pack_output(st.ttl, st.tos, st.pmtudisc),
            Ordering::Relaxed,
        );
        Ok(())
    }

    /// `getsockopt(2)` for the integer options of
    /// [`set_option`](Self::set_option), and `IP_MTU` (connected only,
    /// `ENOTCONN` otherwise).
    pub fn option(&self, level: i32, name: i32) -> io::Result<i32> {
        let st = self.state();
        if let Some(v) = self.core.flag_option(level, name) {
            return Ok(v);
        }
        Ok(match (level, name) {
            (libc::SOL_SOCKET, libc::SO_REUSEADDR) => st.reuseaddr as i32,
            (libc::SOL_SOCKET, libc::SO_REUSEPORT) => st.reuseport as i32,
            (libc::IPPROTO_IP, libc::IP_TTL) => st
                .ttl
                .map_or(self.shared.snapshot().sysctl.ip_default_ttl as i32, |t| {
                    t as i32
                }),
            (libc::IPPROTO_IP, libc::IP_TOS) => st.tos as i32,
            (libc::IPPROTO_IP, libc::IP_MTU_DISCOVER) => st.pmtudisc as i32,
            (libc::IPPROTO_IP, libc::IP_FREEBIND) => st.freebind as i32,
            (libc::IPPROTO_IP, libc::IP_BIND_ADDRESS_NO_PORT) => st.bind_no_port as i32,
            (libc::IPPROTO_IP, libc::IP_MTU) => {
                let peer = st.peer.ok_or_else(|| errno(libc::ENOTCONN))?;
                let snap = self.shared.snapshot();
                let p = path::output(&snap, *peer.ip(), st.local.map(|l| *l.ip()))?;
                // dst_mtu(): the learnt path MTU whatever the mode.
                self.shared.effective_mtu(&p, *peer.ip(), PmtuDisc::Want) as i32
            }
            _ => return Err(errno(libc::ENOPROTOOPT)),
        })
    }
}

impl AsRawFd for UdpSocket {
    /// The readiness descriptor ([`UdpSocket::readiness_fd`]).
    fn as_raw_fd(&self) -> RawFd {
        self.core.event.as_raw_fd()
    }
}

impl Drop for UdpSocket {
    fn drop(&mut self) {
        if let Some(s) = self.core.serving.get() {
            s.close();
        }
        self.drop_memberships();
        let mut r = self.shared.registry.lock().expect("not poisoned");
        if let Some(b) = r.bound.remove(&self.id) {
            let last = match r.ports.get_mut(&b.port) {
                Some(ids) => {
                    ids.retain(|o| *o != self.id);
                    ids.is_empty()
                }
                None => false,
            };
            if last {
                r.ports.remove(&b.port);
                if let Ok(mut m) = self.shared.maps.lock() {
                    m.release(crate::wire::ipv4::protocol::UDP, b.port);
                }
            }
            self.shared.publish(&r);
        }
    }
}
