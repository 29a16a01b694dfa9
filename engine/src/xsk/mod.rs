//! AF_XDP sockets of one worker: one UMEM, shared (`XDP_SHARED_UMEM`) by
//! the sockets of every (interface, queue) the worker serves, so a frame
//! received on one interface is transmitted on another without a copy when
//! the driver runs in zero-copy mode.
//!
//! Built on `xsk-rs` (libxdp's xsk API), with libxdp's own XDP program
//! inhibited: the engine's `steer` program and its `xsks` map are used.

use std::fmt;
use std::io;
use std::num::NonZeroU32;
use std::os::fd::{AsRawFd, RawFd};
use std::str::FromStr;
use std::time::Duration;
use xsk_rs::config::{
    BindFlags, FrameSize, Interface as XskIface, LibxdpFlags, QueueSize, SocketConfig, UmemConfig,
};
use xsk_rs::{CompQueue, FillQueue, FrameDesc, RxQueue, Socket, TxQueue, Umem};

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

impl XskError {
    /// True when the error is the driver refusing zero-copy.
    pub fn is_zero_copy_refused(&self) -> bool {
        self.mode == BindMode::ZeroCopy
            && matches!(
                self.error.raw_os_error(),
                Some(libc::EOPNOTSUPP) | Some(libc::EINVAL) | Some(libc::EPROTONOSUPPORT)
            )
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
    pub rx: RxQueue,
    /// Transmit ring.
    pub tx: TxQueue,
    /// Fill ring.
    pub fq: FillQueue,
    /// Completion ring.
    pub cq: CompQueue,
}

impl QueueSocket {
    /// The socket's file descriptor (for the `xsks` map and poll(2)).
    pub fn fd(&self) -> RawFd {
        self.rx.fd().as_raw_fd()
    }
}

/// A worker's UMEM and sockets.
#[derive(Debug)]
pub struct WorkerSockets {
    /// The UMEM all sockets share.
    pub umem: Umem,
    /// Every frame of the UMEM, initially free.
    pub frames: Vec<FrameDesc>,
    /// One socket per (interface, queue).
    pub sockets: Vec<QueueSocket>,
    /// How they are bound.
    pub mode: BindMode,
    /// Ring size in use.
    pub ring_size: u32,
}

fn queue_size(n: u32, queue: u32, mode: BindMode) -> Result<QueueSize, XskError> {
    QueueSize::new(n).map_err(|_| XskError {
        iface: None,
        queue,
        mode,
        what: "ring size (must be a power of two)",
        error: io::Error::from_raw_os_error(libc::EINVAL),
    })
}

/// The errno inside an xsk-rs error (which wraps it as its source), so that
/// callers can tell EBUSY and EOPNOTSUPP apart.
fn os_error(e: &dyn std::error::Error) -> io::Error {
    e.source()
        .and_then(|s| s.downcast_ref::<io::Error>())
        .and_then(|i| i.raw_os_error())
        .map_or_else(
            || io::Error::other(e.to_string()),
            io::Error::from_raw_os_error,
        )
}

/// Creates the UMEM of a worker and binds a socket on `queue` of every
/// interface in `ports` (port number, name), all in `mode`.
///
/// A bind that fails with `EBUSY` is retried a few times: the socket of a
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
    let ring = queue_size(cfg.ring_size, queue, mode)?;
    let umem_cfg = UmemConfig::builder()
        .frame_size(FrameSize::new(cfg.frame_size).map_err(|_| {
            err(
                None,
                "frame size (2048 or 4096)",
                io::Error::from_raw_os_error(libc::EINVAL),
            )
        })?)
        .fill_queue_size(ring)
        .comp_queue_size(ring)
        .build()
        .map_err(|e| err(None, "UMEM configuration", io::Error::other(e.to_string())))?;
    let frames = NonZeroU32::new(cfg.frames_for(ports.len(), batch)).expect("at least one port");
    let (umem, frames) = Umem::new(umem_cfg, frames, false).map_err(|e| {
        let io = os_error(&e);
        err(None, "creating the UMEM", io)
    })?;

    let mut bind = BindFlags::empty();
    bind |= match mode {
        BindMode::ZeroCopy => BindFlags::XDP_ZEROCOPY,
        BindMode::Copy => BindFlags::XDP_COPY,
    };
    if cfg.need_wakeup {
        bind |= BindFlags::XDP_USE_NEED_WAKEUP;
    }
    let sock_cfg = SocketConfig::builder()
        .rx_queue_size(ring)
        .tx_queue_size(ring)
        .libxdp_flags(LibxdpFlags::XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD)
        .bind_flags(bind)
        .build();

    let mut sockets = Vec::with_capacity(ports.len());
    for (port, name) in ports {
        let ifname = XskIface::from_str(name).map_err(|_| {
            err(
                Some(name),
                "interface name",
                io::Error::from_raw_os_error(libc::EINVAL),
            )
        })?;
        let mut tries = 0;
        let (tx, rx, rings) = loop {
            // SAFETY: each (interface, queue) pair is bound once per UMEM, and
            // libxdp's program loading is inhibited, as Socket::new requires.
            match unsafe { Socket::new(sock_cfg, &umem, &ifname, queue) } {
                Ok(s) => break s,
                Err(e) => {
                    let io = os_error(&e);
                    if io.raw_os_error() == Some(libc::EBUSY) && tries < 20 {
                        tries += 1;
                        std::thread::sleep(Duration::from_millis(100));
                        continue;
                    }
                    return Err(err(Some(name), "binding the AF_XDP socket", io));
                }
            }
        };
        let (fq, cq) = rings.ok_or_else(|| {
            err(
                Some(name),
                "fill and completion rings",
                io::Error::other("libxdp returned none"),
            )
        })?;
        sockets.push(QueueSocket {
            port: *port,
            iface: name.clone(),
            queue,
            rx,
            tx,
            fq,
            cq,
        });
    }
    Ok(WorkerSockets {
        umem,
        frames,
        sockets,
        mode,
        ring_size: cfg.ring_size,
    })
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
