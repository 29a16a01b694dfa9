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
    let leaf = snap.fib.leaf(dst);
    let nh = match leaf.kind().ok_or_else(|| e(libc::ENETUNREACH))? {
        RouteKind::Unicast => snap.fib.nexthops(leaf).first().copied(),
        // A subnet broadcast goes out of the device of its local-table
        // route (rare: the control plane's lookup finds it).
        RouteKind::Broadcast => snap.fib.lookup(dst).and_then(|r| r.nexthop(0).copied()),
        // To this host: the kernel loops it back; the engine has no
        // loopback device.
        RouteKind::Local => None,
        // fib_props[]: the error each route type gives on output.
        RouteKind::Unreachable => return Err(e(libc::EHOSTUNREACH)),
        RouteKind::Prohibit => return Err(e(libc::EACCES)),
        RouteKind::Blackhole => return Err(e(libc::EINVAL)),
    };
    let nh = nh.ok_or_else(|| e(libc::ENETUNREACH))?;
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

/// Routes multicast to `dst` out of interface `ifindex`
/// (`IP_MULTICAST_IF`): no route lookup, the interface's address as
/// source unless bound.
pub(crate) fn output_via(
    snap: &Snapshot,
    dst: Ipv4Addr,
    bound: Option<Ipv4Addr>,
    ifindex: u32,
) -> io::Result<Path> {
    let e = io::Error::from_raw_os_error;
    let port = snap.port_of(ifindex).ok_or_else(|| e(libc::ENETUNREACH))?;
    let p = &snap.ports[port];
    let src = match bound.filter(|a| !a.is_unspecified()) {
        Some(a) => a,
        None => p
            .addrs
            .first()
            .map(|a| a.0)
            .ok_or_else(|| e(libc::EADDRNOTAVAIL))?,
    };
    Ok(Path {
        port,
        ifindex,
        next: dst,
        src,
        mtu: p.mtu,
        broadcast: false,
    })
}

/// Path MTUs learnt from ICMP fragmentation-needed messages (the kernel's
/// route exceptions, `ip_rt_update_pmtu()`), shared by workers (which
/// learn) and application threads (which check sends against them).
///
/// Direct mapped and lock-free: a collision forgets the older entry, which
/// only costs another fragmentation-needed round trip.
pub(crate) struct PmtuCache {
    /// destination << 32 | MTU; 0 when empty.
    key: Box<[std::sync::atomic::AtomicU64]>,
    /// Expiry, in the engine's milliseconds.
    expires: Box<[std::sync::atomic::AtomicU64]>,
}

/// `ip_rt_min_pmtu`: a smaller advertised MTU is raised to this.
pub(crate) const MIN_PMTU: u32 = 552;
/// `ip_rt_mtu_expires`: 10 minutes.
const PMTU_EXPIRES_MS: u64 = 600_000;
const PMTU_SLOTS: usize = 1024;

impl std::fmt::Debug for PmtuCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PmtuCache").finish_non_exhaustive()
    }
}

impl Default for PmtuCache {
    fn default() -> Self {
        use std::sync::atomic::AtomicU64;
        PmtuCache {
            key: (0..PMTU_SLOTS).map(|_| AtomicU64::new(0)).collect(),
            expires: (0..PMTU_SLOTS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl PmtuCache {
    fn slot(dst: Ipv4Addr) -> usize {
        (u32::from(dst).wrapping_mul(0x9e37_79b1) >> 22) as usize % PMTU_SLOTS
    }

    /// Learns `mtu` towards `dst` (only ever lowers it, as the kernel).
    pub fn learn(&self, dst: Ipv4Addr, mtu: u32, dev_mtu: u32, now_ms: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        let mtu = mtu.max(MIN_PMTU);
        if mtu >= self.get(dst, now_ms).unwrap_or(dev_mtu) {
            return;
        }
        let i = Self::slot(dst);
        self.expires[i].store(now_ms + PMTU_EXPIRES_MS, Relaxed);
        self.key[i].store((u32::from(dst) as u64) << 32 | mtu as u64, Relaxed);
    }

    /// The learnt path MTU towards `dst`, if any.
    pub fn get(&self, dst: Ipv4Addr, now_ms: u64) -> Option<u32> {
        self.get_at(dst, || now_ms)
    }

    /// [`get`](Self::get), reading the clock only when `dst` has an entry:
    /// most destinations have none, and a worker asks per datagram.
    pub fn get_at(&self, dst: Ipv4Addr, now_ms: impl FnOnce() -> u64) -> Option<u32> {
        use std::sync::atomic::Ordering::Relaxed;
        let i = Self::slot(dst);
        let k = self.key[i].load(Relaxed);
        (k >> 32 == u32::from(dst) as u64 && k != 0 && now_ms() < self.expires[i].load(Relaxed))
            .then_some(k as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pmtu_is_learnt_lowered_only_and_expires() {
        let c = PmtuCache::default();
        let d = Ipv4Addr::new(10, 3, 0, 9);
        assert_eq!(c.get(d, 0), None);
        c.learn(d, 1200, 1500, 1000);
        assert_eq!(c.get(d, 1000), Some(1200));
        c.learn(d, 1400, 1500, 2000);
        assert_eq!(c.get(d, 2000), Some(1200), "never raised");
        c.learn(d, 100, 1500, 3000);
        assert_eq!(c.get(d, 3000), Some(MIN_PMTU));
        assert_eq!(c.get(d, 3000 + PMTU_EXPIRES_MS), None);
        assert_eq!(c.get(Ipv4Addr::new(10, 3, 0, 8), 3000), None);
    }
}
