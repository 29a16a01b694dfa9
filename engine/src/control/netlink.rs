//! A synchronous rtnetlink client: dumps and change notifications.
//!
//! `netlink-packet-route` parses and emits the messages; the socket is a
//! plain blocking `netlink-sys` socket with a receive timeout, so the
//! control thread needs no async runtime and sees `ENOBUFS` (a lost
//! notification) directly, which it answers with a full resync.

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP,
    NLM_F_REQUEST,
};
use netlink_packet_route::address::AddressMessage;
use netlink_packet_route::link::LinkMessage;
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::RouteMessage;
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

/// Multicast groups of the tables the engine mirrors.
const RTNLGRP_LINK: u32 = 1;
const RTNLGRP_NEIGH: u32 = 3;
const RTNLGRP_IPV4_IFADDR: u32 = 5;
const RTNLGRP_IPV4_ROUTE: u32 = 7;

/// Receive buffer asked for on the notification socket: a full Internet
/// table changing at once must not overflow it.
const RCVBUF: usize = 32 << 20;

/// An rtnetlink socket.
pub struct Netlink {
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl std::fmt::Debug for Netlink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Netlink").field("seq", &self.seq).finish()
    }
}

/// What one receive produced.
#[derive(Debug)]
pub enum Received {
    /// Messages (possibly none, when the timeout expired).
    Messages(Vec<RouteNetlinkMessage>),
    /// The kernel dropped notifications (ENOBUFS): resync.
    Overrun,
}

fn set_timeout(sock: &Socket, t: Duration) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: t.as_secs() as libc::time_t,
        tv_usec: t.subsec_micros() as libc::suseconds_t,
    };
    // SAFETY: tv is a valid timeval for the duration of the call.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &tv as *const libc::timeval as *const libc::c_void,
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl Netlink {
    /// A socket for requests (dumps).
    pub fn new() -> io::Result<Netlink> {
        let mut sock = Socket::new(NETLINK_ROUTE)?;
        sock.bind_auto()?;
        sock.connect(&SocketAddr::new(0, 0))?;
        Ok(Netlink {
            sock,
            seq: 0,
            buf: vec![0; 1 << 20],
        })
    }

    /// A socket subscribed to link, address, route and neighbour changes,
    /// whose receives return after `timeout` without messages.
    pub fn subscribed(timeout: Duration) -> io::Result<Netlink> {
        let nl = Netlink::new()?;
        for g in [
            RTNLGRP_LINK,
            RTNLGRP_NEIGH,
            RTNLGRP_IPV4_IFADDR,
            RTNLGRP_IPV4_ROUTE,
        ] {
            nl.sock.add_membership(g)?;
        }
        if nl.sock.set_rx_buf_sz(RCVBUF).is_err() {
            log::debug!("netlink: could not raise the receive buffer");
        }
        set_timeout(&nl.sock, timeout)?;
        Ok(nl)
    }

    fn request(&mut self, msg: RouteNetlinkMessage, flags: u16) -> io::Result<u32> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = self.seq;
        let mut m = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        m.finalize();
        let mut out = vec![0u8; m.buffer_len()];
        m.serialize(&mut out);
        self.sock.send(&out, 0)?;
        Ok(self.seq)
    }

    /// Dumps a table: links, IPv4 addresses, IPv4 routes or IPv4
    /// neighbours, handing each message to `each` as it arrives (a full
    /// Internet table is a million messages: they are not collected).
    pub fn dump(
        &mut self,
        what: Table,
        mut each: impl FnMut(RouteNetlinkMessage),
    ) -> io::Result<()> {
        let msg = match what {
            Table::Links => RouteNetlinkMessage::GetLink(LinkMessage::default()),
            Table::Addresses => {
                let mut a = AddressMessage::default();
                a.header.family = AddressFamily::Inet;
                RouteNetlinkMessage::GetAddress(a)
            }
            Table::Routes => {
                let mut r = RouteMessage::default();
                r.header.address_family = AddressFamily::Inet;
                RouteNetlinkMessage::GetRoute(r)
            }
            Table::Neighbours => {
                let mut n = NeighbourMessage::default();
                n.header.family = AddressFamily::Inet;
                RouteNetlinkMessage::GetNeighbour(n)
            }
        };
        let seq = self.request(msg, NLM_F_REQUEST | NLM_F_DUMP)?;
        loop {
            let n = self.sock.recv(&mut &mut self.buf[..], 0)?;
            let mut off = 0;
            while off < n {
                let m = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&self.buf[off..n])
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                let len = m.header.length as usize;
                if len == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "netlink: zero length",
                    ));
                }
                off += (len + 3) & !3;
                if m.header.sequence_number != seq {
                    continue;
                }
                match m.payload {
                    NetlinkPayload::Done(_) => return Ok(()),
                    NetlinkPayload::Error(e) => {
                        return Err(e.to_io());
                    }
                    NetlinkPayload::InnerMessage(i) => each(i),
                    _ => {}
                }
            }
        }
    }

    /// Sends one request (a `GetLink` of one index, a `GetNsId`, ...) and
    /// returns the kernel's answer, or the error it gave.
    pub fn query(&mut self, msg: RouteNetlinkMessage) -> io::Result<RouteNetlinkMessage> {
        let seq = self.request(msg, NLM_F_REQUEST)?;
        loop {
            let len = self.sock.recv(&mut &mut self.buf[..], 0)?;
            let m = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&self.buf[..len])
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            if m.header.sequence_number != seq {
                continue;
            }
            return match m.payload {
                NetlinkPayload::InnerMessage(i) => Ok(i),
                NetlinkPayload::Error(e) if e.code.is_some() => Err(e.to_io()),
                _ => Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "netlink: no answer to the request",
                )),
            };
        }
    }

    /// Asks the kernel to resolve `ip` on `ifindex` (RTM_NEWNEIGH with
    /// NTF_USE: it creates the entry if needed and sends ARP requests, as
    /// when it has a packet to send there). The answer arrives as a
    /// neighbour notification.
    pub fn resolve(&mut self, ifindex: u32, ip: std::net::Ipv4Addr) -> io::Result<()> {
        let mut n = NeighbourMessage::default();
        n.header.family = AddressFamily::Inet;
        n.header.ifindex = ifindex;
        n.header.flags = NeighbourFlags::Use;
        n.header.state = NeighbourState::None;
        n.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)));
        let seq = self.request(
            RouteNetlinkMessage::NewNeighbour(n),
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE,
        )?;
        loop {
            let len = self.sock.recv(&mut &mut self.buf[..], 0)?;
            let m = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&self.buf[..len])
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            if m.header.sequence_number != seq {
                continue;
            }
            return match m.payload {
                NetlinkPayload::Error(e) if e.code.is_some() => Err(e.to_io()),
                _ => Ok(()),
            };
        }
    }

    /// Receives a datagram of notifications (a buffer's worth at most).
    /// With `wait`, waits for one up to the socket's timeout; without, only
    /// takes what is already queued, so that a caller draining the queue
    /// acts on a change at once rather than a timeout later.
    pub fn receive(&mut self, wait: bool) -> io::Result<Received> {
        let flags = if wait { 0 } else { libc::MSG_DONTWAIT };
        match self.sock.recv(&mut &mut self.buf[..], flags) {
            Ok(n) => {
                let mut out = Vec::new();
                let mut off = 0;
                while off < n {
                    let Ok(m) =
                        NetlinkMessage::<RouteNetlinkMessage>::deserialize(&self.buf[off..n])
                    else {
                        // A message this library cannot parse: skip the rest
                        // of the datagram rather than misread it.
                        log::debug!("netlink: unparsable notification skipped");
                        break;
                    };
                    let len = m.header.length as usize;
                    if len == 0 {
                        break;
                    }
                    off += (len + 3) & !3;
                    if let NetlinkPayload::InnerMessage(i) = m.payload {
                        out.push(i);
                    }
                }
                Ok(Received::Messages(out))
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => Ok(Received::Overrun),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EINTR)) => {
                Ok(Received::Messages(Vec::new()))
            }
            Err(e) => Err(e),
        }
    }
}

/// A kernel table to dump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    /// Links.
    Links,
    /// IPv4 addresses.
    Addresses,
    /// IPv4 routes, all tables.
    Routes,
    /// IPv4 neighbours.
    Neighbours,
}
