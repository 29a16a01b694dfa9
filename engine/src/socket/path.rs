//! Output routing for datagrams the engine originates: the route, the
//! egress port and next hop, the source address, and the errno the kernel's
//! `ip_route_output_key()` gives when there is none.

use crate::fib::RouteKind;
use crate::snapshot::Snapshot;
use std::io;
use std::net::Ipv4Addr;

/// Where a locally originated datagram goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Path {
    /// Egress port number.
    pub port: usize,
    /// Egress interface.
    pub ifindex: u32,
    /// The next hop (gateway or the destination).
    pub next: Ipv4Addr,
    /// Source address (`inet_select_addr()`), or the bound one.
    pub src: Ipv4Addr,
    /// The egress MTU.
    pub mtu: u32,
    /// The destination is a broadcast address of the egress port (sent to
    /// ff:ff:ff:ff:ff:ff, needs `SO_BROADCAST`).
    pub broadcast: bool,
}

/// Routes a datagram to `dst`, from `bound` when the socket is bound to an
/// address.
pub(crate) fn output(snap: &Snapshot, dst: Ipv4Addr, bound: Option<Ipv4Addr>) -> io::Result<Path> {
    let e = io::Error::from_raw_os_error;
    if dst.is_unspecified() {
        return Err(e(libc::EINVAL));
    }
    let route = snap.fib.lookup(dst).ok_or_else(|| e(libc::ENETUNREACH))?;
    match route.kind {
        RouteKind::Unicast => {}
        // fib_props[]: the error each route type gives on output.
        RouteKind::Unreachable => return Err(e(libc::EHOSTUNREACH)),
        RouteKind::Prohibit => return Err(e(libc::EACCES)),
        RouteKind::Blackhole => return Err(e(libc::EINVAL)),
    }
    let nh = route.nexthop(0).ok_or_else(|| e(libc::ENETUNREACH))?;
    // A route through an interface the engine does not serve: the kernel
    // would send it, the engine cannot.
    let port = snap
        .port_of(nh.ifindex)
        .ok_or_else(|| e(libc::ENETUNREACH))?;
    let p = &snap.ports[port];
    let next = nh.gateway.unwrap_or(dst);
    let src = match bound.filter(|a| !a.is_unspecified()) {
        Some(a) => a,
        None => p.select_addr(next).ok_or_else(|| e(libc::EADDRNOTAVAIL))?,
    };
    let broadcast = snap.is_broadcast(dst);
    Ok(Path {
        port,
        ifindex: nh.ifindex,
        next,
        src,
        mtu: p.mtu,
        broadcast,
    })
}
