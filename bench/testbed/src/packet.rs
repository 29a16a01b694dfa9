//! Raw Ethernet frames in and out of an interface (AF_PACKET).

use crate::Netns;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

const ETH_P_ALL: u16 = 0x0003;
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;

/// An AF_PACKET socket bound to one interface of a namespace.
#[derive(Debug)]
pub struct PacketSocket {
    fd: OwnedFd,
    ifindex: i32,
}

impl PacketSocket {
    /// Opens a socket on `ifname` of `ns` that sees frames received there
    /// (not those sent) and can send frames out of it.
    pub fn open(ns: &Netns, ifname: &str) -> io::Result<PacketSocket> {
        let ifname = std::ffi::CString::new(ifname).map_err(io::Error::other)?;
        ns.run(move || -> io::Result<PacketSocket> {
            // SAFETY: plain socket(2) call; result checked.
            let fd = unsafe {
                libc::socket(
                    libc::AF_PACKET,
                    libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                    (ETH_P_ALL.to_be()) as i32,
                )
            };
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: fd is new and owned here.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            // SAFETY: ifname is NUL terminated.
            let ifindex = unsafe { libc::if_nametoindex(ifname.as_ptr()) } as i32;
            if ifindex == 0 {
                return Err(io::Error::other("no such interface"));
            }
            // SAFETY: plain old data; zero is valid.
            let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_protocol = ETH_P_ALL.to_be();
            sll.sll_ifindex = ifindex;
            // SAFETY: sll is a valid sockaddr_ll of the given size.
            let r = unsafe {
                libc::bind(
                    fd.as_raw_fd(),
                    &sll as *const libc::sockaddr_ll as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            if r < 0 {
                return Err(io::Error::last_os_error());
            }
            let one: libc::c_int = 1;
            // SAFETY: one outlives the call.
            unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_PACKET,
                    PACKET_IGNORE_OUTGOING,
                    &one as *const libc::c_int as *const libc::c_void,
                    4,
                )
            };
            Ok(PacketSocket { fd, ifindex })
        })?
    }

    /// Sends one frame.
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        // SAFETY: frame is valid for its length.
        let r = unsafe {
            libc::send(
                self.fd.as_raw_fd(),
                frame.as_ptr() as *const libc::c_void,
                frame.len(),
                0,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Receives one frame, or `None` after `timeout`.
    pub fn recv(&self, timeout: Duration) -> io::Result<Option<Vec<u8>>> {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: pfd is valid for the call.
        let r = unsafe { libc::poll(&mut pfd, 1, ms) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        if r == 0 {
            return Ok(None);
        }
        let mut buf = vec![0u8; 65536];
        // SAFETY: buf is writable for its length.
        let n = unsafe {
            libc::recv(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
                0,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        buf.truncate(n as usize);
        Ok(Some(buf))
    }

    /// Collects frames that satisfy `keep` until `want` are in or `timeout`
    /// has passed since the last one arrived.
    pub fn collect(
        &self,
        want: usize,
        timeout: Duration,
        keep: impl Fn(&[u8]) -> bool,
    ) -> io::Result<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        let mut deadline = Instant::now() + timeout;
        while out.len() < want {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            if let Some(f) = self.recv(left)? {
                if keep(&f) {
                    out.push(f);
                    deadline = Instant::now() + timeout;
                }
            }
        }
        Ok(out)
    }

    /// The interface index it is bound to.
    pub fn ifindex(&self) -> i32 {
        self.ifindex
    }
}
