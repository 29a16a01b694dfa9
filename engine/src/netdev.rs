//! The kernel's `netdev` generic netlink family (Linux 6.8+): which NAPI
//! instance serves a queue, where that NAPI runs (its interrupt, its
//! kernel thread when NAPI is threaded), and the per-NAPI busy-polling
//! settings (`napi-set`, 6.13+).
//!
//! Netlink answers for the network namespace of the calling thread, unlike
//! sysfs, which shows the namespace it was mounted in. The messages are few
//! and small, so they are built by hand on a plain `NETLINK_GENERIC` socket
//! (Documentation/netlink/specs/netdev.yaml has the attributes).
//!
//! ```no_run
//! let mut nl = xdpip::netdev::Netdev::open()?;
//! for q in nl.queues(1)? {
//!     println!("queue {} {:?}: NAPI {:?}", q.id, q.kind, q.napi_id);
//! }
//! # Ok::<(), std::io::Error>(())
//! ```

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const NETLINK_GENERIC: libc::c_int = 16;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const GENL_ID_CTRL: u16 = 0x10;
const CTRL_CMD_GETFAMILY: u8 = 3;
const CTRL_ATTR_FAMILY_ID: u16 = 1;
const CTRL_ATTR_FAMILY_NAME: u16 = 2;
const NLA_TYPE_MASK: u16 = 0x3fff;

const NETDEV_CMD_QUEUE_GET: u8 = 10;
const NETDEV_CMD_NAPI_GET: u8 = 11;
const NETDEV_CMD_NAPI_SET: u8 = 14;

const NETDEV_A_NAPI_IFINDEX: u16 = 1;
const NETDEV_A_NAPI_ID: u16 = 2;
const NETDEV_A_NAPI_IRQ: u16 = 3;
const NETDEV_A_NAPI_PID: u16 = 4;
const NETDEV_A_NAPI_DEFER_HARD_IRQS: u16 = 5;
const NETDEV_A_NAPI_GRO_FLUSH_TIMEOUT: u16 = 6;
const NETDEV_A_NAPI_IRQ_SUSPEND_TIMEOUT: u16 = 7;

const NETDEV_A_QUEUE_ID: u16 = 1;
const NETDEV_A_QUEUE_IFINDEX: u16 = 2;
const NETDEV_A_QUEUE_TYPE: u16 = 3;
const NETDEV_A_QUEUE_NAPI_ID: u16 = 4;

/// Receive or transmit queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueKind {
    /// `NETDEV_QUEUE_TYPE_RX`.
    Rx,
    /// `NETDEV_QUEUE_TYPE_TX`.
    Tx,
}

/// A queue of a device (`queue-get`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queue {
    /// Queue index.
    pub id: u32,
    /// Receive or transmit.
    pub kind: QueueKind,
    /// The NAPI instance serving it, when the driver links one
    /// (`netif_queue_set_napi`; veth does not).
    pub napi_id: Option<u32>,
}

/// A NAPI instance of a device (`napi-get`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Napi {
    /// NAPI id (the one `SO_INCOMING_NAPI_ID` returns).
    pub id: u32,
    /// Its interrupt, if the driver gives one.
    pub irq: Option<u32>,
    /// Its kernel thread (`napi/<dev>-<id>`), when NAPI is threaded.
    pub pid: Option<i32>,
    /// Empty polls before the device interrupt is re-enabled.
    pub defer_hard_irqs: Option<u32>,
    /// Nanoseconds the interrupt stays masked after a poll (a timer
    /// schedules NAPI instead).
    pub gro_flush_timeout: Option<u64>,
    /// Nanoseconds busy polling may keep the interrupt suspended.
    pub irq_suspend_timeout: Option<u64>,
}

/// Busy-polling settings of one NAPI instance (`napi-set`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NapiSettings {
    /// `defer-hard-irqs`.
    pub defer_hard_irqs: u32,
    /// `gro-flush-timeout`, ns.
    pub gro_flush_timeout: u64,
    /// `irq-suspend-timeout`, ns (left alone when `None`).
    pub irq_suspend_timeout: Option<u64>,
}

/// A generic netlink socket talking to the `netdev` family.
#[derive(Debug)]
pub struct Netdev {
    fd: OwnedFd,
    family: u16,
    seq: u32,
}

struct Msg {
    buf: Vec<u8>,
}

impl Msg {
    fn new(kind: u16, flags: u16, seq: u32, cmd: u8) -> Msg {
        let mut buf = Vec::with_capacity(64);
        buf.extend_from_slice(&0u32.to_ne_bytes());
        buf.extend_from_slice(&kind.to_ne_bytes());
        buf.extend_from_slice(&flags.to_ne_bytes());
        buf.extend_from_slice(&seq.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes());
        buf.extend_from_slice(&[cmd, 1, 0, 0]);
        Msg { buf }
    }

    fn attr(mut self, kind: u16, payload: &[u8]) -> Msg {
        let len = 4 + payload.len();
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(payload);
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
        self
    }

    fn finish(mut self) -> Vec<u8> {
        let n = self.buf.len() as u32;
        self.buf[..4].copy_from_slice(&n.to_ne_bytes());
        self.buf
    }
}

/// The attributes of a message body, as (type, payload).
fn attrs(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if b.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
        let kind = u16::from_ne_bytes([b[2], b[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > b.len() {
            return None;
        }
        let payload = &b[4..len];
        b = &b[len.next_multiple_of(4).min(b.len())..];
        Some((kind, payload))
    })
}

fn u32_of(p: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(p.get(..4)?.try_into().ok()?))
}

/// A `uint` attribute: 4 or 8 bytes.
fn uint_of(p: &[u8]) -> Option<u64> {
    match p.len() {
        4 => u32_of(p).map(u64::from),
        8 => Some(u64::from_ne_bytes(p.try_into().ok()?)),
        _ => None,
    }
}

impl Netdev {
    /// Opens a socket and resolves the family. `ENOENT` when the kernel
    /// has no `netdev` family (before 6.3).
    pub fn open() -> io::Result<Netdev> {
        // SAFETY: plain socket(2); checked below.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                NETLINK_GENERIC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new descriptor owned here.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let tv = libc::timeval {
            tv_sec: 2,
            tv_usec: 0,
        };
        // SAFETY: tv is a valid timeval for the call.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        let mut nl = Netdev {
            fd,
            family: 0,
            seq: 0,
        };
        let seq = nl.next_seq();
        let req = Msg::new(GENL_ID_CTRL, NLM_F_REQUEST, seq, CTRL_CMD_GETFAMILY)
            .attr(CTRL_ATTR_FAMILY_NAME, b"netdev\0")
            .finish();
        let mut family = None;
        nl.exchange(&req, seq, |body| {
            for (k, p) in attrs(body) {
                if k == CTRL_ATTR_FAMILY_ID && p.len() >= 2 {
                    family = Some(u16::from_ne_bytes([p[0], p[1]]));
                }
            }
        })?;
        nl.family = family.ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))?;
        Ok(nl)
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Sends `req` and hands the body (after the generic header) of every
    /// answer to `each`, until the ack, the end of a dump or an error.
    fn exchange(&mut self, req: &[u8], seq: u32, mut each: impl FnMut(&[u8])) -> io::Result<()> {
        // SAFETY: req is valid for its length; the kernel's address is
        // implied by the unconnected netlink socket's default (pid 0).
        let r = unsafe { libc::send(self.fd.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        let dump = u16::from_ne_bytes([req[6], req[7]]) & NLM_F_DUMP == NLM_F_DUMP;
        let ack = u16::from_ne_bytes([req[6], req[7]]) & NLM_F_ACK != 0;
        let mut buf = vec![0u8; 64 << 10];
        loop {
            // SAFETY: buf is writable for its length.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            let mut b = &buf[..n as usize];
            while b.len() >= 16 {
                let len = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize;
                let kind = u16::from_ne_bytes([b[4], b[5]]);
                let mseq = u32::from_ne_bytes([b[8], b[9], b[10], b[11]]);
                if len < 16 || len > b.len() {
                    return Err(io::Error::other("netlink: truncated message"));
                }
                let body = &b[16..len];
                b = &b[len.next_multiple_of(4).min(b.len())..];
                if mseq != seq {
                    continue;
                }
                match kind {
                    NLMSG_DONE => return Ok(()),
                    NLMSG_ERROR => {
                        let e = body
                            .get(..4)
                            .map_or(0, |e| i32::from_ne_bytes(e.try_into().expect("4 bytes")));
                        if e == 0 {
                            return Ok(());
                        }
                        return Err(io::Error::from_raw_os_error(-e));
                    }
                    _ if body.len() >= 4 => {
                        each(&body[4..]);
                        if !dump && !ack {
                            return Ok(());
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    /// The queues of device `ifindex`.
    pub fn queues(&mut self, ifindex: u32) -> io::Result<Vec<Queue>> {
        let seq = self.next_seq();
        let req = Msg::new(
            self.family,
            NLM_F_REQUEST | NLM_F_DUMP,
            seq,
            NETDEV_CMD_QUEUE_GET,
        )
        .attr(NETDEV_A_QUEUE_IFINDEX, &ifindex.to_ne_bytes())
        .finish();
        let mut out = Vec::new();
        self.exchange(&req, seq, |body| {
            let (mut id, mut kind, mut napi, mut dev) = (None, None, None, None);
            for (k, p) in attrs(body) {
                match k {
                    NETDEV_A_QUEUE_ID => id = u32_of(p),
                    NETDEV_A_QUEUE_IFINDEX => dev = u32_of(p),
                    NETDEV_A_QUEUE_TYPE => {
                        kind = u32_of(p).map(|t| if t == 0 { QueueKind::Rx } else { QueueKind::Tx })
                    }
                    NETDEV_A_QUEUE_NAPI_ID => napi = u32_of(p),
                    _ => {}
                }
            }
            if let (Some(id), Some(kind)) = (id, kind) {
                if dev.is_none_or(|d| d == ifindex) {
                    out.push(Queue {
                        id,
                        kind,
                        napi_id: napi,
                    });
                }
            }
        })?;
        Ok(out)
    }

    /// The NAPI instances of device `ifindex`.
    pub fn napis(&mut self, ifindex: u32) -> io::Result<Vec<Napi>> {
        let seq = self.next_seq();
        let req = Msg::new(
            self.family,
            NLM_F_REQUEST | NLM_F_DUMP,
            seq,
            NETDEV_CMD_NAPI_GET,
        )
        .attr(NETDEV_A_NAPI_IFINDEX, &ifindex.to_ne_bytes())
        .finish();
        let mut out = Vec::new();
        self.exchange(&req, seq, |body| {
            let mut n = Napi::default();
            let mut dev = None;
            for (k, p) in attrs(body) {
                match k {
                    NETDEV_A_NAPI_ID => n.id = u32_of(p).unwrap_or(0),
                    NETDEV_A_NAPI_IFINDEX => dev = u32_of(p),
                    NETDEV_A_NAPI_IRQ => n.irq = u32_of(p),
                    NETDEV_A_NAPI_PID => n.pid = u32_of(p).map(|p| p as i32),
                    NETDEV_A_NAPI_DEFER_HARD_IRQS => n.defer_hard_irqs = u32_of(p),
                    NETDEV_A_NAPI_GRO_FLUSH_TIMEOUT => n.gro_flush_timeout = uint_of(p),
                    NETDEV_A_NAPI_IRQ_SUSPEND_TIMEOUT => n.irq_suspend_timeout = uint_of(p),
                    _ => {}
                }
            }
            if n.id != 0 && dev.is_none_or(|d| d == ifindex) {
                out.push(n);
            }
        })?;
        Ok(out)
    }

    /// Sets the busy-polling settings of NAPI `id` (CAP_NET_ADMIN).
    pub fn set_napi(&mut self, id: u32, s: &NapiSettings) -> io::Result<()> {
        let seq = self.next_seq();
        let mut m = Msg::new(
            self.family,
            NLM_F_REQUEST | NLM_F_ACK,
            seq,
            NETDEV_CMD_NAPI_SET,
        )
        .attr(NETDEV_A_NAPI_ID, &id.to_ne_bytes())
        .attr(
            NETDEV_A_NAPI_DEFER_HARD_IRQS,
            &s.defer_hard_irqs.to_ne_bytes(),
        )
        .attr(
            NETDEV_A_NAPI_GRO_FLUSH_TIMEOUT,
            &s.gro_flush_timeout.to_ne_bytes(),
        );
        if let Some(t) = s.irq_suspend_timeout {
            m = m.attr(NETDEV_A_NAPI_IRQ_SUSPEND_TIMEOUT, &t.to_ne_bytes());
        }
        let req = m.finish();
        self.exchange(&req, seq, |_| {})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_padded_and_read_back() {
        let m = Msg::new(0x20, NLM_F_REQUEST, 7, NETDEV_CMD_NAPI_SET)
            .attr(NETDEV_A_NAPI_ID, &8193u32.to_ne_bytes())
            .attr(CTRL_ATTR_FAMILY_NAME, b"netdev\0")
            .attr(NETDEV_A_NAPI_GRO_FLUSH_TIMEOUT, &200_000u64.to_ne_bytes())
            .finish();
        assert_eq!(m.len() % 4, 0);
        assert_eq!(
            u32::from_ne_bytes(m[..4].try_into().unwrap()) as usize,
            m.len()
        );
        let got: Vec<(u16, Vec<u8>)> = attrs(&m[20..]).map(|(k, p)| (k, p.to_vec())).collect();
        assert_eq!(got.len(), 3);
        assert_eq!(u32_of(&got[0].1), Some(8193));
        assert_eq!(got[1].1, b"netdev\0");
        assert_eq!(uint_of(&got[2].1), Some(200_000));
        assert_eq!(uint_of(&[1, 0, 0, 0]), Some(1));
    }
}
