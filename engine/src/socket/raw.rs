//! Raw IP sockets (raw(7)) on the fast path: one protocol, datagrams
//! received with their IP header, sent with one the engine writes or, with
//! `IP_HDRINCL`, with the caller's.

use super::{
    errno, flag, path, PmtuDisc, RawBinding, RecvMeta, SockCore, SocketShared, TxDatagram,
};
use crate::wire::ipv4::protocol;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// `IPPROTO_RAW`: send-only, `IP_HDRINCL` implied.
const IPPROTO_RAW: u8 = 255;

#[derive(Debug, Clone)]
struct RawState {
    local: Option<Ipv4Addr>,
    peer: Option<Ipv4Addr>,
    ttl: Option<u8>,
    tos: u8,
    hdrincl: bool,
    pmtudisc: PmtuDisc,
    freebind: bool,
    nonblocking: bool,
    read_timeout: Option<Duration>,
}

/// A raw IPv4 socket of one protocol on the engine's fast path, as
/// `socket(AF_INET, SOCK_RAW, protocol)` gives: every datagram of that
/// protocol to the engine's addresses (from the connected peer, to the
/// bound address) arrives with its IP header; sends get an IP header
/// unless `IP_HDRINCL` is on, in which case the caller's header goes out
/// with the total length and checksum filled in, and the ID and source
/// address when they are zero.
///
/// What reaches it: the XDP program steers a protocol other than ICMP, UDP
/// and TCP to the engine while a raw socket of it is open, which takes it
/// from the kernel; for ICMP it steers echo replies (so a raw-socket ping
/// through the engine works) besides what the engine already takes (echo
/// requests, errors about engine sockets); raw UDP and TCP sockets see
/// only what the engine's other sockets claim.
///
/// ```no_run
/// let engine = xdpip::Engine::builder().interface("eth0").start()?;
/// let raw = engine.raw_socket(253)?;
/// raw.send_to(b"experiment", "10.0.0.2".parse().unwrap())?;
/// let mut buf = [0u8; 2048];
/// let (n, from) = raw.recv_from(&mut buf)?; // buf[..n] starts with the IP header
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct RawSocket {
    id: u64,
    protocol: u8,
    shared: Arc<SocketShared>,
    core: Arc<SockCore>,
    state: Mutex<RawState>,
    worker: usize,
}

impl std::fmt::Debug for RawSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawSocket")
            .field("protocol", &self.protocol)
            .finish_non_exhaustive()
    }
}

impl RawSocket {
    pub(crate) fn new(shared: Arc<SocketShared>, proto: u8) -> io::Result<Self> {
        if proto == 0 {
            // IPPROTO_IP is not a protocol a raw socket can carry.
            return Err(errno(libc::EPROTONOSUPPORT));
        }
        let core = Arc::new(SockCore::new()?);
        let pmtudisc = if shared.snapshot().sysctl.ip_no_pmtu_disc == 0 {
            PmtuDisc::Want
        } else {
            PmtuDisc::Dont
        };
        core.set_flag(flag::PMTU_DONT, pmtudisc == PmtuDisc::Dont);
        let id = {
            let mut r = shared.registry.lock().expect("not poisoned");
            r.next_id += 1;
            let id = r.next_id;
            // A raw socket receives from the moment it exists.
            if proto != IPPROTO_RAW {
                let first = !r.raw.values().any(|b| b.protocol == proto);
                if first {
                    shared.claim_raw(proto)?;
                }
                r.raw.insert(
                    id,
                    RawBinding {
                        protocol: proto,
                        laddr: Ipv4Addr::UNSPECIFIED,
                        peer: None,
                        core: core.clone(),
                    },
                );
                shared.publish(&r);
            }
            id
        };
        let worker = id as usize % shared.tx.len();
        Ok(RawSocket {
            id,
            protocol: proto,
            shared,
            core,
            state: Mutex::new(RawState {
                local: None,
                peer: None,
                ttl: None,
                tos: 0,
                hdrincl: proto == IPPROTO_RAW,
                pmtudisc,
                freebind: false,
                nonblocking: false,
                read_timeout: None,
            }),
            worker,
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, RawState> {
        self.state.lock().expect("not poisoned")
    }

    fn update(&self, st: &RawState) {
        let mut r = self.shared.registry.lock().expect("not poisoned");
        if let Some(b) = r.raw.get_mut(&self.id) {
            b.laddr = st.local.unwrap_or(Ipv4Addr::UNSPECIFIED);
            b.peer = st.peer;
        }
        self.shared.publish(&r);
    }

    /// The protocol.
    pub fn protocol(&self) -> u8 {
        self.protocol
    }

    /// Receives only datagrams to `addr`; `EADDRNOTAVAIL` when it is not
    /// local (unless `IP_FREEBIND` or `ip_nonlocal_bind`).
    pub fn bind(&self, addr: Ipv4Addr) -> io::Result<()> {
        let mut st = self.state();
        let snap = self.shared.snapshot();
        let ok = addr.is_unspecified()
            || addr.is_multicast()
            || addr.is_broadcast()
            || snap.is_local(addr)
            || st.freebind
            || snap.sysctl.ip_nonlocal_bind;
        if !ok {
            return Err(errno(libc::EADDRNOTAVAIL));
        }
        st.local = Some(addr);
        self.update(&st);
        Ok(())
    }

    /// Receives only from `peer` and sends there by default.
    pub fn connect(&self, peer: Ipv4Addr) -> io::Result<()> {
        let mut st = self.state();
        let snap = self.shared.snapshot();
        let p = path::output(&snap, peer, st.local)?;
        if p.broadcast && !self.core.has(flag::BROADCAST) {
            return Err(errno(libc::EACCES));
        }
        st.peer = Some(peer);
        self.update(&st);
        Ok(())
    }

    /// Sends to the connected peer; `EDESTADDRREQ` when not connected.
    pub fn send(&self, buf: &[u8]) -> io::Result<usize> {
        let peer = self.state().peer.ok_or_else(|| errno(libc::EDESTADDRREQ))?;
        self.send_to(buf, peer)
    }

    /// Sends one datagram (the payload, or with `IP_HDRINCL` the whole IP
    /// datagram) routed to `dst`.
    ///
    /// Errors as `raw_sendmsg()`: `EINVAL` for an `IP_HDRINCL` datagram
    /// shorter than an IP header, `EMSGSIZE` over 65535 bytes or, with
    /// `IP_HDRINCL` (never fragmented) or `IP_PMTUDISC_DO`/`PROBE`, over the
    /// MTU; `EACCES` for a broadcast without `SO_BROADCAST`; route errors.
    pub fn send_to(&self, buf: &[u8], dst: Ipv4Addr) -> io::Result<usize> {
        let st = self.state().clone();
        if st.hdrincl && buf.len() < 20 {
            return Err(errno(libc::EINVAL));
        }
        let max = if st.hdrincl { 0xffff } else { 0xffff - 20 };
        if buf.len() > max {
            return Err(errno(libc::EMSGSIZE));
        }
        let snap = self.shared.snapshot();
        let p = path::output(&snap, dst, st.local.filter(|a| !a.is_unspecified()))?;
        if p.broadcast && !self.core.has(flag::BROADCAST) {
            return Err(errno(libc::EACCES));
        }
        let total = if st.hdrincl {
            buf.len()
        } else {
            buf.len() + 20
        };
        let mtu = self.shared.effective_mtu(&p, dst, st.pmtudisc);
        let refuse = st.hdrincl || matches!(st.pmtudisc, PmtuDisc::Do | PmtuDisc::Probe);
        if refuse && total > mtu as usize {
            return Err(self.core.too_big(SocketAddrV4::new(dst, 0), mtu));
        }
        if let Some(e) = self.core.take_error() {
            return Err(e);
        }
        let ttl = st.ttl.unwrap_or(if dst.is_multicast() {
            1
        } else {
            snap.sysctl.ip_default_ttl
        });
        drop(snap);
        let mut data = self.core.tx_free.pop().unwrap_or_default();
        data.extend_from_slice(buf);
        let d = TxDatagram {
            sock: self.core.clone(),
            buf: data,
            src: SocketAddrV4::new(st.local.unwrap_or(Ipv4Addr::UNSPECIFIED), 0),
            dst: SocketAddrV4::new(dst, 0),
            ttl,
            tos: st.tos,
            pmtudisc: st.pmtudisc,
            raw: Some((self.protocol, st.hdrincl)),
            oif: 0,
            mcast_loop: false,
            queued_ms: self.shared.now_ms(),
        };
        self.shared.enqueue(self.worker, d, st.nonblocking, None)?;
        Ok(buf.len())
    }

    /// Receives one datagram, IP header included; returns its length (or
    /// what fit) and the sender.
    pub fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, Ipv4Addr)> {
        let m = self.recv_msg(buf)?;
        Ok((m.len, *m.src.ip()))
    }

    /// Receives one datagram with its ancillary data.
    pub fn recv_msg(&self, buf: &mut [u8]) -> io::Result<RecvMeta> {
        if self.protocol == IPPROTO_RAW {
            // An IPPROTO_RAW socket never receives.
            return self
                .core
                .next_datagram(true, None)
                .map(|d| self.core.finish_recv(d, buf));
        }
        let (nb, t) = {
            let st = self.state();
            (st.nonblocking, st.read_timeout)
        };
        let d = self.core.next_datagram(nb, t)?;
        Ok(self.core.finish_recv(d, buf))
    }

    /// Non-blocking mode.
    pub fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        self.state().nonblocking = on;
        Ok(())
    }

    /// `SO_RCVTIMEO`.
    pub fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        if t == Some(Duration::ZERO) {
            return Err(errno(libc::EINVAL));
        }
        self.state().read_timeout = t;
        Ok(())
    }

    /// The readiness descriptor, as for [`super::UdpSocket::readiness_fd`].
    pub fn readiness_fd(&self) -> BorrowedFd<'_> {
        self.core.event.as_fd()
    }

    /// `setsockopt(2)` with an integer value: `IP_HDRINCL`, `IP_TTL`,
    /// `IP_TOS`, `IP_MTU_DISCOVER`, `IP_RECVERR`, `IP_PKTINFO`,
    /// `IP_RECVTTL`, `IP_RECVTOS`, `IP_FREEBIND`, `SO_BROADCAST`; anything
    /// else is `ENOPROTOOPT`.
    pub fn set_option(&self, level: i32, name: i32, value: i32) -> io::Result<()> {
        let mut st = self.state();
        let on = value != 0;
        match (level, name) {
            (libc::IPPROTO_IP, libc::IP_HDRINCL) => {
                // IPPROTO_RAW sockets always include the header.
                if self.protocol != IPPROTO_RAW {
                    st.hdrincl = on;
                }
            }
            (libc::IPPROTO_IP, libc::IP_TTL) => st.ttl = super::ttl_option(value)?,
            (libc::IPPROTO_IP, libc::IP_TOS) => st.tos = value as u8,
            (libc::IPPROTO_IP, libc::IP_MTU_DISCOVER) => {
                st.pmtudisc = self.core.pmtu_option(value)?
            }
            (libc::IPPROTO_IP, libc::IP_FREEBIND) => st.freebind = on,
            _ if self.core.set_flag_option(level, name, on) => {}
            _ => return Err(errno(libc::ENOPROTOOPT)),
        }
        Ok(())
    }

    /// `getsockopt(2)` for the options of [`set_option`](Self::set_option).
    pub fn option(&self, level: i32, name: i32) -> io::Result<i32> {
        let st = self.state();
        if let Some(v) = self.core.flag_option(level, name) {
            return Ok(v);
        }
        Ok(match (level, name) {
            (libc::IPPROTO_IP, libc::IP_HDRINCL) => st.hdrincl as i32,
            (libc::IPPROTO_IP, libc::IP_TTL) => st
                .ttl
                .map_or(self.shared.snapshot().sysctl.ip_default_ttl as i32, |t| {
                    t as i32
                }),
            (libc::IPPROTO_IP, libc::IP_TOS) => st.tos as i32,
            (libc::IPPROTO_IP, libc::IP_MTU_DISCOVER) => st.pmtudisc as i32,
            (libc::IPPROTO_IP, libc::IP_FREEBIND) => st.freebind as i32,
            _ => return Err(errno(libc::ENOPROTOOPT)),
        })
    }
}

impl AsRawFd for RawSocket {
    /// The readiness descriptor.
    fn as_raw_fd(&self) -> RawFd {
        self.core.event.as_raw_fd()
    }
}

impl Drop for RawSocket {
    fn drop(&mut self) {
        let mut r = self.shared.registry.lock().expect("not poisoned");
        if r.raw.remove(&self.id).is_some() {
            if !r.raw.values().any(|b| b.protocol == self.protocol) {
                self.shared.release_raw(self.protocol);
            }
            self.shared.publish(&r);
        }
    }
}

/// The claim a raw socket of `proto` makes: the whole protocol, except
/// for protocols the kernel must keep (see [`RawSocket`]).
pub(super) fn raw_claim(proto: u8) -> Option<(u8, u16)> {
    match proto {
        protocol::ICMP => Some((
            protocol::ICMP,
            crate::ebpf::icmp_claim(crate::wire::icmp::msg_type::ECHO_REPLY),
        )),
        protocol::UDP | protocol::TCP | IPPROTO_RAW => None,
        p => Some((p, 0)),
    }
}
