//! AF_XDP sockets of one worker: one UMEM, shared (`XDP_SHARED_UMEM`) by
//! the sockets of every (interface, queue) the worker serves, so a frame
//! received on one interface is transmitted on another without a copy when
//! the driver runs in zero-copy mode.
//!
//! Written on the system calls of the kernel's AF_XDP interface
//! (Documentation/networking/af_xdp.rst): xsk-rs 0.7, which the design
//! named, hands libxdp pointers to ring structures it then moves, and the
//! munmap of garbage addresses when a socket is closed corrupted the heap
//! (a worker died in free() at exit). Only the engine's XDP program is
//! used; nothing here loads one.

pub mod frame;
pub mod ring;

pub use frame::{Frame, Pool};
use ring::{ConsRing, Desc, MmapOffsets, ProdRing};
use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

const SOL_XDP: libc::c_int = 283;
const XDP_MMAP_OFFSETS: libc::c_int = 1;
const XDP_RX_RING: libc::c_int = 2;
const XDP_TX_RING: libc::c_int = 3;
const XDP_UMEM_REG: libc::c_int = 4;
const XDP_UMEM_FILL_RING: libc::c_int = 5;
const XDP_UMEM_COMPLETION_RING: libc::c_int = 6;
const XDP_PGOFF_RX_RING: i64 = 0;
const XDP_PGOFF_TX_RING: i64 = 0x8000_0000;
const XDP_UMEM_PGOFF_FILL_RING: i64 = 0x1_0000_0000;
const XDP_UMEM_PGOFF_COMPLETION_RING: i64 = 0x1_8000_0000;
const XDP_SHARED_UMEM: u16 = 1;
const XDP_COPY: u16 = 2;
const XDP_ZEROCOPY: u16 = 4;
const XDP_USE_NEED_WAKEUP: u16 = 8;

/// Where the kernel puts received data in a frame, in aligned mode:
/// `XDP_PACKET_HEADROOM` after the start of the chunk.
pub const HEADROOM: u64 = 256;

/// Zero-copy policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ZeroCopy {
    /// Zero-copy where the driver allows it, copy mode otherwise.
    #[default]
    Auto,
    /// Zero-copy or an error.
    On,
    /// Copy mode.
    Off,
}

/// How the sockets of a worker are bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindMode {
    /// Zero-copy: the NIC DMAs into the UMEM.
    ZeroCopy,
    /// Copy mode: the kernel copies between its buffers and the UMEM.
    Copy,
}

impl fmt::Display for BindMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BindMode::ZeroCopy => "zero-copy",
            BindMode::Copy => "copy",
        })
    }
}

/// Ring and frame sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XskConfig {
    /// UMEM frame size: 2048 or 4096 (the page size, which zero-copy drivers
    /// prefer and which leaves room for a 3.5 KB MTU).
    pub frame_size: u32,
    /// Entries of each rx, tx, fill and completion ring (a power of two).
    pub ring_size: u32,
    /// Set `XDP_USE_NEED_WAKEUP`, so the kernel is woken only when it asks.
    pub need_wakeup: bool,
}

impl Default for XskConfig {
    fn default() -> Self {
        XskConfig {
            frame_size: 4096,
            ring_size: 2048,
            need_wakeup: true,
        }
    }
}

impl XskConfig {
    /// Frames in a UMEM serving `sockets` sockets: a full fill ring and a
    /// full tx ring each, and a batch of slack.
    pub fn frames_for(&self, sockets: usize, batch: usize) -> u32 {
        (sockets as u32) * 2 * self.ring_size + batch as u32
    }
}

/// Why the sockets of a worker could not be set up.
#[derive(Debug)]
pub struct XskError {
    /// Interface, if the error concerns one socket.
    pub iface: Option<String>,
    /// Queue.
    pub queue: u32,
    /// Mode tried.
    pub mode: BindMode,
    /// What was being done.
    pub what: &'static str,
    /// The kernel's answer.
    pub error: io::Error,
}

impl fmt::Display for XskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.iface {
            Some(i) => write!(
                f,
                "{} for {i} queue {} ({} mode): {}",
                self.what, self.queue, self.mode, self.error
            ),
            None => write!(f, "{} for queue {}: {}", self.what, self.queue, self.error),
        }
    }
}

impl std::error::Error for XskError {}

/// What [`XskError::what`] says of a failed bind.
const BINDING: &str = "binding the AF_XDP socket";

impl XskError {
    /// True when another AF_XDP socket is bound to the queue (`EBUSY` at
    /// bind, after the retries).
    pub fn is_queue_busy(&self) -> bool {
        self.what == BINDING && self.error.raw_os_error() == Some(libc::EBUSY)
    }

    /// True when the error is the driver refusing zero-copy.
    pub fn is_zero_copy_refused(&self) -> bool {
        self.mode == BindMode::ZeroCopy
            && matches!(
                self.error.raw_os_error(),
                Some(libc::EOPNOTSUPP) | Some(libc::EINVAL) | Some(libc::EPROTONOSUPPORT)
            )
    }
}

/// A worker's UMEM: the memory its sockets' frames live in.
#[derive(Debug)]
pub struct Umem {
    base: *mut u8,
    len: usize,
    frame_size: u64,
}

// SAFETY: the area is plain memory; which side may touch which frame is
// decided by the rings, and one worker thread owns the Umem.
unsafe impl Send for Umem {}

impl Umem {
    fn new(frames: u32, frame_size: u32) -> io::Result<Umem> {
        let len = frames as usize * frame_size as usize;
        // SAFETY: an anonymous private mapping; checked below.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Umem {
            base: base as *mut u8,
            len,
            frame_size: frame_size as u64,
        })
    }

    /// Size of its frames.
    #[inline]
    pub fn frame_size(&self) -> u32 {
        self.frame_size as u32
    }

    /// The start of the frame holding `addr`.
    #[inline]
    pub fn frame_of(&self, addr: u64) -> u64 {
        addr - addr % self.frame_size
    }

    /// Bytes from `addr` to the end of its frame.
    #[inline]
    pub fn room(&self, addr: u64) -> usize {
        (self.frame_size - addr % self.frame_size) as usize
    }

    /// The `len` bytes at `addr`, cut at the end of the frame and of the
    /// UMEM, so that no descriptor can make it read outside.
    ///
    /// # Safety
    /// The frame must not be on a ring the kernel may write to (fill, rx
    /// not yet consumed), nor borrowed mutably elsewhere.
    #[inline]
    pub unsafe fn slice(&self, addr: u64, len: usize) -> &[u8] {
        let (off, n) = self.clamp(addr, len);
        // SAFETY: off + n lies inside the mapping (clamp); the caller
        // guarantees nobody writes the frame meanwhile.
        unsafe { std::slice::from_raw_parts(self.base.add(off), n) }
    }

    /// The `len` bytes at `addr`, mutable, cut as [`Umem::slice`] cuts.
    ///
    /// # Safety
    /// The frame must belong to the caller alone: received and not yet put
    /// back on a ring, or taken from the free pool.
    #[inline]
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn slice_mut(&self, addr: u64, len: usize) -> &mut [u8] {
        let (off, n) = self.clamp(addr, len);
        // SAFETY: in bounds (clamp); exclusive by the caller's guarantee.
        unsafe { std::slice::from_raw_parts_mut(self.base.add(off), n) }
    }

    /// The packet a frame holds.
    ///
    /// # Safety
    /// `f` came from this UMEM's rings or pool (a [`Frame`] is the proof
    /// that nobody else holds it).
    #[inline]
    pub unsafe fn bytes<'a>(&'a self, f: &'a Frame) -> &'a [u8] {
        // SAFETY: the frame is the caller's, from this UMEM.
        unsafe { self.slice(f.addr(), f.len()) }
    }

    /// The packet a frame holds, to rewrite.
    ///
    /// # Safety
    /// As for [`Umem::bytes`].
    #[inline]
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn bytes_mut<'a>(&'a self, f: &'a mut Frame) -> &'a mut [u8] {
        // SAFETY: the frame is the caller's alone (it holds the token
        // mutably), from this UMEM.
        unsafe { self.slice_mut(f.addr(), f.len()) }
    }

    /// `bytes` copied into frame `f` (taken from the pool), which then
    /// holds them; false when they do not fit after the headroom.
    ///
    /// # Safety
    /// As for [`Umem::bytes`].
    #[inline]
    pub unsafe fn write(&self, f: &mut Frame, bytes: &[u8]) -> bool {
        if bytes.len() > self.room(f.addr()) {
            return false;
        }
        f.set_len(bytes.len());
        // SAFETY: as above; the length fits the frame (checked).
        unsafe { self.bytes_mut(f) }.copy_from_slice(bytes);
        true
    }

    #[inline]
    fn clamp(&self, addr: u64, len: usize) -> (usize, usize) {
        let off = (addr as usize).min(self.len);
        (off, len.min(self.room(addr)).min(self.len - off))
    }
}

impl Drop for Umem {
    fn drop(&mut self) {
        // SAFETY: base/len are what mmap returned; the sockets using the
        // area are dropped before it (field order of WorkerSockets).
        unsafe { libc::munmap(self.base as *mut libc::c_void, self.len) };
    }
}

/// The socket of one (interface, queue), with the fill and completion rings
/// of that pair.
#[derive(Debug)]
pub struct QueueSocket {
    /// Port number of the interface.
    pub port: usize,
    /// Interface name.
    pub iface: String,
    /// Queue index.
    pub queue: u32,
    /// Receive ring.
    pub rx: ConsRing<Desc>,
    /// Transmit ring.
    pub tx: ProdRing<Desc>,
    /// Fill ring.
    pub fq: ProdRing<u64>,
    /// Completion ring.
    pub cq: ConsRing<u64>,
    /// Frames one sendto(2) transmits in copy mode (`max_tx_budget`).
    pub tx_budget: u32,
    // Declared last: the rings are unmapped before the socket is closed.
    fd: OwnedFd,
}

impl QueueSocket {
    /// The socket's file descriptor (for the `xsks` map and poll(2)).
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Asks the kernel to transmit what is on the tx ring.
    pub fn kick_tx(&self) {
        // SAFETY: a zero-length send on our socket, no buffers involved.
        let r = unsafe {
            libc::sendto(
                self.fd(),
                std::ptr::null(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null(),
                0,
            )
        };
        if r < 0 {
            // EAGAIN, EBUSY, ENOBUFS: the kernel is busy; the frames stay
            // on the ring for the next kick. ENETDOWN: the link is down.
            log::trace!("tx kick: {}", io::Error::last_os_error());
        }
    }

    /// Takes up to `max` received frames into `out`; returns how many.
    /// `scratch` holds the descriptors on the way (at least `max` long).
    #[inline]
    pub fn receive(&mut self, out: &mut Vec<Frame>, scratch: &mut [Desc], max: usize) -> usize {
        let max = max.min(scratch.len());
        let n = self.rx.consume(&mut scratch[..max]);
        out.extend(scratch[..n].iter().map(|d| Frame::new(d.addr, d.len)));
        n
    }

    /// Moves as many of `frames` to the tx ring as there is room for,
    /// from the front; what did not fit stays in `frames`. Returns the
    /// number moved and their bytes.
    #[inline]
    pub fn transmit(&mut self, frames: &mut Vec<Frame>, scratch: &mut [Desc]) -> (usize, u64) {
        let want = frames.len().min(scratch.len());
        let mut bytes = 0;
        for (d, f) in scratch.iter_mut().zip(&frames[..want]) {
            *d = Desc {
                addr: f.addr(),
                len: f.len() as u32,
                options: 0,
            };
            bytes += f.len() as u64;
        }
        let n = self.tx.produce(&scratch[..want]);
        if n < want {
            bytes = scratch[..n].iter().map(|d| d.len as u64).sum();
        }
        for f in frames.drain(..n) {
            // The ring holds it now; the completion ring gives it back.
            let _ = f.into_raw();
        }
        (n, bytes)
    }

    /// Moves up to `n` free frames from `pool` to the fill ring; returns
    /// how many.
    #[inline]
    pub fn fill(&mut self, pool: &mut Pool, n: usize) -> usize {
        let free = pool.peek(n);
        let peeked = free.len();
        let done = self.fq.produce(free);
        pool.taken(peeked, done);
        done
    }

    /// Takes the frames the kernel finished transmitting back into
    /// `pool`; returns how many. `scratch` bounds one call.
    #[inline]
    pub fn complete(&mut self, pool: &mut Pool, scratch: &mut [u64]) -> usize {
        let n = self.cq.consume(scratch);
        for a in &scratch[..n] {
            pool.put_addr(*a);
        }
        n
    }

    /// Wakes the driver to take frames from the fill ring.
    pub fn kick_rx(&self) {
        // SAFETY: a zero-length receive on our socket, no buffers involved.
        unsafe {
            libc::recvfrom(
                self.fd(),
                std::ptr::null_mut(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        };
    }
}

/// Busy-polling options of an AF_XDP socket (`SO_BUSY_POLL`,
/// `SO_PREFER_BUSY_POLL`, `SO_BUSY_POLL_BUDGET`): the socket's
/// `recvfrom`/`sendto` then run its queue's NAPI in the caller's context,
/// and with `prefer` the device's interrupt stays masked while the caller
/// keeps polling (the device's `napi_defer_hard_irqs` and
/// `gro_flush_timeout` must be set for that).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BusyPoll {
    /// `SO_BUSY_POLL` in µs; for non-blocking calls only its being
    /// non-zero matters (one NAPI poll per call).
    pub usecs: u32,
    /// `SO_BUSY_POLL_BUDGET`: frames one NAPI poll may process.
    pub budget: u16,
    /// `SO_PREFER_BUSY_POLL`.
    pub prefer: bool,
}

// asm-generic values (x86, arm, riscv); the libc crate lacks some.
const SO_BUSY_POLL: libc::c_int = 46;
const SO_INCOMING_NAPI_ID: libc::c_int = 56;
const SO_PREFER_BUSY_POLL: libc::c_int = 69;
const SO_BUSY_POLL_BUDGET: libc::c_int = 70;

fn set_sol_socket(fd: RawFd, name: libc::c_int, v: libc::c_int) -> io::Result<()> {
    // SAFETY: v outlives the call; the kernel reads an int.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            name,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl QueueSocket {
    /// Sets the busy-polling options (CAP_NET_ADMIN). The error names the
    /// option the kernel refused.
    pub fn set_busy_poll(&self, b: &BusyPoll) -> io::Result<()> {
        for (name, what, v) in [
            (
                SO_PREFER_BUSY_POLL,
                "SO_PREFER_BUSY_POLL",
                b.prefer as libc::c_int,
            ),
            (SO_BUSY_POLL, "SO_BUSY_POLL", b.usecs as libc::c_int),
            (
                SO_BUSY_POLL_BUDGET,
                "SO_BUSY_POLL_BUDGET",
                b.budget as libc::c_int,
            ),
        ] {
            set_sol_socket(self.fd(), name, v)
                .map_err(|e| io::Error::new(e.kind(), format!("{what}: {e}")))?;
        }
        Ok(())
    }

    /// The NAPI instance the kernel polls for this socket
    /// (`SO_INCOMING_NAPI_ID`); `None` when it knows none, and then busy
    /// polling cannot run (the driver does not link its queues to NAPI
    /// instances, as veth does not).
    pub fn napi_id(&self) -> Option<u32> {
        let mut v: libc::c_uint = 0;
        let mut len = std::mem::size_of::<libc::c_uint>() as libc::socklen_t;
        // SAFETY: v is writable for len bytes.
        let r = unsafe {
            libc::getsockopt(
                self.fd(),
                libc::SOL_SOCKET,
                SO_INCOMING_NAPI_ID,
                (&mut v as *mut libc::c_uint).cast(),
                &mut len,
            )
        };
        (r == 0 && v != 0).then_some(v)
    }
}

/// A worker's UMEM and sockets.
#[derive(Debug)]
pub struct WorkerSockets {
    /// One socket per (interface, queue). Dropped before the UMEM.
    pub sockets: Vec<QueueSocket>,
    /// The UMEM all sockets share.
    pub umem: Umem,
    /// Every frame of the UMEM (its start address), initially free; those
    /// [`WorkerSockets::fill_rings`] put on the fill rings are not here.
    pub frames: Vec<u64>,
    /// Frames on each socket's fill ring from [`WorkerSockets::fill_rings`].
    pub filled: Vec<u32>,
    /// How they are bound.
    pub mode: BindMode,
    /// Ring size in use.
    pub ring_size: u32,
}

fn setsockopt<T>(fd: &OwnedFd, name: libc::c_int, v: &T) -> io::Result<()> {
    // SAFETY: v is valid for size_of::<T>() bytes for the call.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            SOL_XDP,
            name,
            v as *const T as *const libc::c_void,
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `struct xdp_umem_reg`
#[repr(C)]
struct UmemReg {
    addr: u64,
    len: u64,
    chunk_size: u32,
    headroom: u32,
    flags: u32,
    tx_metadata_len: u32,
}

/// `struct sockaddr_xdp`
#[repr(C)]
struct SockaddrXdp {
    family: u16,
    flags: u16,
    ifindex: u32,
    queue_id: u32,
    shared_umem_fd: u32,
}

fn new_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); checked below.
    let fd = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is new and owned here.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn mmap_offsets(fd: &OwnedFd) -> io::Result<MmapOffsets> {
    let mut off = MmapOffsets::default();
    let mut len = std::mem::size_of::<MmapOffsets>() as libc::socklen_t;
    // SAFETY: off is writable for len bytes.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            SOL_XDP,
            XDP_MMAP_OFFSETS,
            &mut off as *mut MmapOffsets as *mut libc::c_void,
            &mut len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    if len as usize != std::mem::size_of::<MmapOffsets>() {
        // Kernels before 5.4 have no ring flags, so no need_wakeup.
        return Err(io::Error::other(
            "kernel too old: AF_XDP rings without flags (5.4+ needed)",
        ));
    }
    Ok(off)
}

/// Creates the UMEM of a worker and binds a socket on `queue` of every
/// interface in `ports` (port number, name), all in `mode`.
///
/// A bind that fails with `EBUSY` is retried for up to 2 s: the socket of a
/// process that just exited is torn down asynchronously.
pub fn open(
    ports: &[(usize, String)],
    queue: u32,
    cfg: &XskConfig,
    batch: usize,
    mode: BindMode,
) -> Result<WorkerSockets, XskError> {
    let err = |iface: Option<&str>, what: &'static str, error: io::Error| XskError {
        iface: iface.map(str::to_string),
        queue,
        mode,
        what,
        error,
    };
    let einval = || io::Error::from_raw_os_error(libc::EINVAL);
    let ring = cfg.ring_size;
    if !ring.is_power_of_two() {
        return Err(err(None, "ring size (must be a power of two)", einval()));
    }
    if !matches!(cfg.frame_size, 2048 | 4096) {
        return Err(err(None, "frame size (2048 or 4096)", einval()));
    }
    let nframes = cfg.frames_for(ports.len(), batch);
    let umem = Umem::new(nframes, cfg.frame_size).map_err(|e| err(None, "mapping the UMEM", e))?;

    let mut sockets: Vec<QueueSocket> = Vec::with_capacity(ports.len());
    for (port, name) in ports {
        let ifindex = crate::iface::index_of(name).ok_or_else(|| {
            err(
                Some(name),
                "interface",
                io::Error::from_raw_os_error(libc::ENODEV),
            )
        })?;
        let fd = new_socket().map_err(|e| err(Some(name), "creating the AF_XDP socket", e))?;
        let first = sockets.is_empty();
        if first {
            let reg = UmemReg {
                addr: umem.base as u64,
                len: umem.len as u64,
                chunk_size: cfg.frame_size,
                headroom: 0,
                flags: 0,
                tx_metadata_len: 0,
            };
            setsockopt(&fd, XDP_UMEM_REG, &reg)
                .map_err(|e| err(Some(name), "registering the UMEM", e))?;
        }
        // Every (interface, queue) has its own fill and completion rings,
        // also when it shares the UMEM.
        for (opt, what) in [
            (XDP_UMEM_FILL_RING, "sizing the fill ring"),
            (XDP_UMEM_COMPLETION_RING, "sizing the completion ring"),
            (XDP_RX_RING, "sizing the rx ring"),
            (XDP_TX_RING, "sizing the tx ring"),
        ] {
            setsockopt(&fd, opt, &ring).map_err(|e| err(Some(name), what, e))?;
        }
        let off = mmap_offsets(&fd).map_err(|e| err(Some(name), "reading the ring offsets", e))?;
        let map = |what: &'static str, e: io::Error| err(Some(name), what, e);
        let rx = ConsRing::map(fd.as_fd(), &off.rx, XDP_PGOFF_RX_RING, ring)
            .map_err(|e| map("mapping the rx ring", e))?;
        let tx = ProdRing::map(fd.as_fd(), &off.tx, XDP_PGOFF_TX_RING, ring)
            .map_err(|e| map("mapping the tx ring", e))?;
        let fq = ProdRing::map(fd.as_fd(), &off.fr, XDP_UMEM_PGOFF_FILL_RING, ring)
            .map_err(|e| map("mapping the fill ring", e))?;
        let cq = ConsRing::map(fd.as_fd(), &off.cr, XDP_UMEM_PGOFF_COMPLETION_RING, ring)
            .map_err(|e| map("mapping the completion ring", e))?;

        let addr = if first {
            let mut flags = match mode {
                BindMode::ZeroCopy => XDP_ZEROCOPY,
                BindMode::Copy => XDP_COPY,
            };
            if cfg.need_wakeup {
                flags |= XDP_USE_NEED_WAKEUP;
            }
            SockaddrXdp {
                family: libc::AF_XDP as u16,
                flags,
                ifindex,
                queue_id: queue,
                shared_umem_fd: 0,
            }
        } else {
            // The mode and need_wakeup follow the socket that owns the UMEM.
            SockaddrXdp {
                family: libc::AF_XDP as u16,
                flags: XDP_SHARED_UMEM,
                ifindex,
                queue_id: queue,
                shared_umem_fd: sockets[0].fd() as u32,
            }
        };
        let mut tries = 0;
        loop {
            // SAFETY: addr is a valid sockaddr_xdp for the call.
            let r = unsafe {
                libc::bind(
                    fd.as_raw_fd(),
                    &addr as *const SockaddrXdp as *const libc::sockaddr,
                    std::mem::size_of::<SockaddrXdp>() as libc::socklen_t,
                )
            };
            if r == 0 {
                break;
            }
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EBUSY) && tries < 20 {
                tries += 1;
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            return Err(err(Some(name), BINDING, e));
        }
        let tx_budget = if mode == BindMode::Copy {
            raise_tx_budget(fd.as_raw_fd(), ring)
        } else {
            ring
        };
        sockets.push(QueueSocket {
            port: *port,
            iface: name.clone(),
            queue,
            rx,
            tx,
            fq,
            cq,
            tx_budget,
            fd,
        });
    }
    let frames = (0..nframes as u64)
        .map(|i| i * cfg.frame_size as u64)
        .collect();
    Ok(WorkerSockets {
        filled: vec![0; sockets.len()],
        sockets,
        umem,
        frames,
        mode,
        ring_size: ring,
    })
}

impl WorkerSockets {
    /// Fills every fill ring from `frames`, before the XDP program is
    /// attached. A driver that sets up zero-copy when the program comes
    /// (igb resets its rings then) takes its receive buffers from the fill
    /// ring at that moment; an empty ring leaves it with none, and nothing
    /// asks for a wake-up yet (the kernel raises need_wakeup only once the
    /// driver's NAPI has run), so it would never receive.
    pub fn fill_rings(&mut self) {
        for (s, filled) in self.sockets.iter_mut().zip(&mut self.filled) {
            let n = (self.ring_size as usize).min(self.frames.len());
            let from = self.frames.len() - n;
            let done = s.fq.produce(&self.frames[from..]);
            self.frames.drain(from..from + done);
            *filled += done as u32;
        }
    }
}

/// Copy mode transmits `max_tx_budget` frames per sendto(2), 32 unless
/// raised with `XDP_MAX_TX_SKB_BUDGET` (Linux 6.17+): raise it to the ring
/// size, so that one system call empties the ring. Returns the budget in
/// force.
fn raise_tx_budget(fd: RawFd, ring: u32) -> u32 {
    const SOL_XDP: libc::c_int = 283;
    const XDP_MAX_TX_SKB_BUDGET: libc::c_int = 9;
    const TX_BATCH_SIZE: u32 = 32;
    // SAFETY: ring outlives the call; the kernel reads 4 bytes.
    let r = unsafe {
        libc::setsockopt(
            fd,
            SOL_XDP,
            XDP_MAX_TX_SKB_BUDGET,
            &ring as *const u32 as *const libc::c_void,
            std::mem::size_of::<u32>() as libc::socklen_t,
        )
    };
    if r == 0 {
        ring
    } else {
        log::debug!(
            "XDP_MAX_TX_SKB_BUDGET: {} (kernel before 6.17?): {TX_BATCH_SIZE} frames per send",
            io::Error::last_os_error()
        );
        TX_BATCH_SIZE
    }
}

/// `XDP_STATISTICS` of a socket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct XdpStatistics {
    /// Dropped for reasons other than invalid descriptors (e.g. no frame).
    pub rx_dropped: u64,
    /// Dropped because of invalid descriptors.
    pub rx_invalid_descs: u64,
    /// Invalid descriptors on the tx ring.
    pub tx_invalid_descs: u64,
    /// Dropped because the rx ring was full.
    pub rx_ring_full: u64,
    /// Times the fill ring was empty when the kernel needed a frame.
    pub rx_fill_ring_empty_descs: u64,
    /// Times the tx ring was empty when the kernel looked for work.
    pub tx_ring_empty_descs: u64,
}

/// Reads `XDP_STATISTICS` of an AF_XDP socket.
pub fn statistics(fd: RawFd) -> io::Result<XdpStatistics> {
    #[repr(C)]
    #[derive(Default)]
    struct Raw {
        rx_dropped: u64,
        rx_invalid_descs: u64,
        tx_invalid_descs: u64,
        rx_ring_full: u64,
        rx_fill_ring_empty_descs: u64,
        tx_ring_empty_descs: u64,
    }
    const SOL_XDP: libc::c_int = 283;
    const XDP_STATISTICS: libc::c_int = 7;
    let mut raw = Raw::default();
    let mut len = std::mem::size_of::<Raw>() as libc::socklen_t;
    // SAFETY: raw is writable for len bytes; the kernel writes at most that.
    let r = unsafe {
        libc::getsockopt(
            fd,
            SOL_XDP,
            XDP_STATISTICS,
            &mut raw as *mut Raw as *mut libc::c_void,
            &mut len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(XdpStatistics {
        rx_dropped: raw.rx_dropped,
        rx_invalid_descs: raw.rx_invalid_descs,
        tx_invalid_descs: raw.tx_invalid_descs,
        rx_ring_full: raw.rx_ring_full,
        rx_fill_ring_empty_descs: raw.rx_fill_ring_empty_descs,
        tx_ring_empty_descs: raw.tx_ring_empty_descs,
    })
}
