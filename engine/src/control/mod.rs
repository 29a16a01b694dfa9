//! The control plane: a live mirror of the kernel's links, IPv4 addresses,
//! routes and neighbours, turned into snapshots for the workers and into
//! the XDP program's map of local addresses.
//!
//! The kernel's tables are the engine's control plane: `ip route`, FRR or
//! BIRD change them and the engine follows. The mirror starts with a full
//! dump and then applies change notifications; a lost notification (ENOBUFS)
//! triggers a full resync.

pub mod api;
pub mod filter;
pub mod metrics;
pub mod netlink;
pub mod sysctl;

use crate::ebpf::{GateMode, SteerConfig, SteerMaps};
use crate::fib::{Fib, FibChange, NextHop, Route, RouteKind};
use crate::neigh::{NeighTable, Neighbour};
use crate::snapshot::{OwnAddrs, Port, Snapshot, SnapshotCell, Sysctl};
use crate::stats::Counter;
use crate::wire::MacAddr;
use netlink::{Netlink, Received, Table};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteType};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use rustc_hash::FxHashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the control socket ([`api`]) and the metrics endpoint ([`metrics`])
/// read from and set in a running engine; the engine implements it, so that
/// `control` does not depend on `engine`.
pub(crate) trait View: Send + Sync {
    /// The counters now.
    fn report(&self) -> crate::report::Report;
    /// The snapshot the workers use now.
    fn snapshot(&self) -> Arc<Snapshot>;
    /// Sets a tunable of ip(7) for the engine (not for the kernel).
    fn set_sysctl(&self, name: &str, value: &str) -> Result<(), sysctl::SysctlError>;
}

const RT_TABLE_MAIN: u32 = 254;
const RT_TABLE_LOCAL: u32 = 255;

/// A link as the mirror keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Name.
    pub name: String,
    /// MAC address.
    pub mac: MacAddr,
    /// MTU.
    pub mtu: u32,
    /// IFF_UP and IFF_LOWER_UP (carrier).
    pub up: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct RouteKey {
    dst: u32,
    len: u8,
    tos: u8,
    metric: u32,
}

/// The mirrored tables.
///
/// Routes of the main table live in the FIB itself (it keeps every route
/// of every metric): changes are queued and applied with one incremental
/// [`Fib::update`] per publication, which shares everything they leave
/// alone with the previous table. A full table is not held twice.
#[derive(Debug, Default)]
pub struct Mirror {
    /// Links by ifindex.
    pub links: FxHashMap<u32, Link>,
    /// IPv4 addresses by ifindex, in the kernel's order: (address, prefix
    /// length, secondary).
    pub addrs: FxHashMap<u32, Vec<(Ipv4Addr, u8, bool)>>,
    fib: Arc<Fib>,
    pending: Vec<FibChange>,
    /// Routes of a dump, built into the FIB when it ends.
    building: Option<crate::fib::FibBuilder>,
    locals: FxHashMap<RouteKey, Ipv4Addr>,
    neigh: NeighTable,
    /// The neighbour table last handed out, while it is still current.
    neigh_published: Option<Arc<NeighTable>>,
    /// Next-hop sets shared by routes.
    nexthop_sets: FxHashMap<Vec<NextHop>, Arc<[NextHop]>>,
}

fn route_key(m: &RouteMessage) -> Option<(RouteKey, u32)> {
    let mut dst = Ipv4Addr::UNSPECIFIED;
    let mut metric = 0;
    let mut table = m.header.table as u32;
    for a in &m.attributes {
        match a {
            RouteAttribute::Destination(RouteAddress::Inet(d)) => dst = *d,
            RouteAttribute::Priority(p) => metric = *p,
            RouteAttribute::Table(t) => table = *t,
            _ => {}
        }
    }
    (m.header.address_family == AddressFamily::Inet).then_some((
        RouteKey {
            dst: u32::from(dst),
            len: m.header.destination_prefix_length,
            tos: m.header.tos,
            metric,
        },
        table,
    ))
}

fn nexthops(m: &RouteMessage) -> Vec<NextHop> {
    let mut gateway = None;
    let mut oif = None;
    let mut out = Vec::new();
    for a in &m.attributes {
        match a {
            RouteAttribute::Gateway(RouteAddress::Inet(g)) => gateway = Some(*g),
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::MultiPath(hops) => {
                for h in hops {
                    let gw = h.attributes.iter().find_map(|a| match a {
                        RouteAttribute::Gateway(RouteAddress::Inet(g)) => Some(*g),
                        _ => None,
                    });
                    out.push(NextHop {
                        gateway: gw,
                        ifindex: h.interface_index,
                        weight: h.hops as u32 + 1,
                    });
                }
            }
            _ => {}
        }
    }
    if let Some(ifindex) = oif {
        out.insert(
            0,
            NextHop {
                gateway,
                ifindex,
                weight: 1,
            },
        );
    }
    out
}

impl Mirror {
    /// Applies one message (from a dump or a notification).
    pub fn apply(&mut self, msg: RouteNetlinkMessage) {
        match msg {
            RouteNetlinkMessage::NewLink(l) => self.new_link(&l),
            RouteNetlinkMessage::DelLink(l) => {
                self.links.remove(&l.header.index);
                self.neigh.remove_interface(l.header.index);
                self.neigh_published = None;
                self.flush_routes_through(l.header.index);
                self.addrs.remove(&l.header.index);
            }
            RouteNetlinkMessage::NewAddress(a) => {
                if let Some((ifindex, addr, plen, secondary)) = addr_entry(&a) {
                    let v = self.addrs.entry(ifindex).or_default();
                    match v.iter_mut().find(|(x, l, _)| *x == addr && *l == plen) {
                        Some(e) => e.2 = secondary,
                        None => v.push((addr, plen, secondary)),
                    }
                }
            }
            RouteNetlinkMessage::DelAddress(a) => {
                if let Some((ifindex, addr, plen, _)) = addr_entry(&a) {
                    if let Some(v) = self.addrs.get_mut(&ifindex) {
                        v.retain(|(x, l, _)| !(*x == addr && *l == plen));
                    }
                }
            }
            RouteNetlinkMessage::NewRoute(r) => self.new_route(&r),
            RouteNetlinkMessage::DelRoute(r) => {
                if let Some((key, table)) = route_key(&r) {
                    match table {
                        RT_TABLE_MAIN => self.pending.push(FibChange::Remove {
                            prefix: Ipv4Addr::from(key.dst),
                            len: key.len,
                            metric: key.metric,
                        }),
                        RT_TABLE_LOCAL if self.locals.remove(&key).is_some() => {
                            self.pending.push(FibChange::RemoveLocal {
                                prefix: Ipv4Addr::from(key.dst),
                                len: key.len,
                                metric: key.metric,
                            })
                        }
                        _ => {}
                    }
                }
            }
            RouteNetlinkMessage::NewNeighbour(n) => {
                if let Some((ifindex, ip, neighbour)) = neigh_entry(&n) {
                    self.neigh.insert(ifindex, ip, neighbour);
                    self.neigh_published = None;
                }
            }
            RouteNetlinkMessage::DelNeighbour(n) => {
                if let Some((ifindex, ip, _)) = neigh_entry(&n) {
                    self.neigh.remove(ifindex, ip);
                    self.neigh_published = None;
                }
            }
            _ => {}
        }
    }

    fn new_link(&mut self, l: &LinkMessage) {
        let mut link = Link {
            name: String::new(),
            mac: MacAddr::default(),
            mtu: 0,
            up: link_up(l.header.flags),
        };
        for a in &l.attributes {
            match a {
                LinkAttribute::IfName(n) => link.name = n.clone(),
                LinkAttribute::Mtu(m) => link.mtu = *m,
                LinkAttribute::Address(b) if b.len() == 6 => {
                    link.mac = MacAddr([b[0], b[1], b[2], b[3], b[4], b[5]])
                }
                _ => {}
            }
        }
        if !l.header.flags.contains(LinkFlags::Up) {
            // The kernel flushes the routes through a link set down without
            // a notification per route (fib_disable_ip()); so does the
            // mirror. Multipath routes lose that next hop only.
            self.flush_routes_through(l.header.index);
        }
        self.links.insert(l.header.index, link);
    }

    fn new_route(&mut self, r: &RouteMessage) {
        let Some((key, table)) = route_key(r) else {
            return;
        };
        // The local table's local and broadcast routes share the FIB with
        // the main table's: one lookup decides forward, local or broadcast.
        let kind = match (r.header.kind, table) {
            (RouteType::Unicast, RT_TABLE_MAIN) => RouteKind::Unicast,
            (RouteType::BlackHole, RT_TABLE_MAIN) => RouteKind::Blackhole,
            (RouteType::Unreachable, RT_TABLE_MAIN) => RouteKind::Unreachable,
            (RouteType::Prohibit, RT_TABLE_MAIN) => RouteKind::Prohibit,
            (RouteType::Local, RT_TABLE_LOCAL) => RouteKind::Local,
            (RouteType::Broadcast, RT_TABLE_LOCAL) => RouteKind::Broadcast,
            _ => return,
        };
        if kind.is_local_table() {
            self.locals.insert(key, Ipv4Addr::from(key.dst));
        }
        let route = Route {
            prefix: Ipv4Addr::from(key.dst),
            len: key.len,
            kind,
            // The device of a local or broadcast route is kept: a
            // broadcast is sent out of it.
            nexthops: if matches!(
                kind,
                RouteKind::Unicast | RouteKind::Local | RouteKind::Broadcast
            ) {
                self.intern(nexthops(r))
            } else {
                Arc::from([])
            },
            metric: key.metric,
        };
        if kind == RouteKind::Unicast && route.nexthops.is_empty() {
            // e.g. a route through a nexthop object without compat info
            log::debug!(
                "route {}/{} without a usable next hop ignored",
                route.prefix,
                route.len
            );
            return;
        }
        match &mut self.building {
            // Routes are validated above; the builder refuses nothing else.
            Some(b) => {
                let _ = b.add(route);
            }
            None => self.pending.push(FibChange::Add(route)),
        }
    }

    /// The shared copy of a next-hop set.
    fn intern(&mut self, set: Vec<NextHop>) -> Arc<[NextHop]> {
        if let Some(a) = self.nexthop_sets.get(&set) {
            return a.clone();
        }
        // Forget sets no route uses any more before the table grows.
        if self.nexthop_sets.len() >= 4096 {
            self.nexthop_sets.retain(|_, a| Arc::strong_count(a) > 1);
        }
        let a: Arc<[NextHop]> = Arc::from(set.as_slice());
        self.nexthop_sets.insert(set, a.clone());
        a
    }

    fn flush_routes_through(&mut self, ifindex: u32) {
        let fib = self.fib();
        for r in fib.routes() {
            if r.kind != RouteKind::Unicast || r.nexthops.iter().all(|n| n.ifindex != ifindex) {
                continue;
            }
            let rest: Vec<NextHop> = r
                .nexthops
                .iter()
                .copied()
                .filter(|n| n.ifindex != ifindex)
                .collect();
            if rest.is_empty() {
                self.pending.push(FibChange::Remove {
                    prefix: r.prefix,
                    len: r.len,
                    metric: r.metric,
                });
            } else {
                let rest = self.intern(rest);
                self.pending.push(FibChange::Add(Route {
                    nexthops: rest,
                    ..r.clone()
                }));
            }
        }
    }

    /// The routes of the main table, with the changes since the last call
    /// applied.
    pub fn fib(&mut self) -> Arc<Fib> {
        if !self.pending.is_empty() {
            let changes = std::mem::take(&mut self.pending);
            match self.fib.update(&changes) {
                Ok(f) => self.fib = Arc::new(f),
                // Changes are validated when they enter the mirror, so this
                // is a bug: apply what applies, one by one.
                Err(e) => {
                    log::error!("FIB update refused ({e}); applying changes one by one");
                    for c in changes {
                        if let Ok(f) = self.fib.update(std::slice::from_ref(&c)) {
                            self.fib = Arc::new(f);
                        }
                    }
                }
            }
        }
        self.fib.clone()
    }

    /// The neighbour table, shared with the last snapshot while unchanged.
    pub fn neighbours(&mut self) -> Arc<NeighTable> {
        self.neigh_published
            .get_or_insert_with(|| Arc::new(self.neigh.clone()))
            .clone()
    }

    /// Local and broadcast addresses (the kernel's local table).
    pub fn local_addrs(&self) -> Vec<Ipv4Addr> {
        let mut v: Vec<Ipv4Addr> = self.locals.values().copied().collect();
        v.sort();
        v.dedup();
        v
    }

    /// The engine's ports as the kernel now describes them; `conf` reads a
    /// per-interface sysctl (`conf/<name>/<key>`).
    pub fn ports(
        &self,
        ifindexes: &[u32],
        conf: &dyn Fn(&str, &str) -> Option<u32>,
        sys: &Sysctl,
    ) -> Vec<Port> {
        let flag = |iface: &str, key: &str| conf(iface, key).map(|v| v != 0);
        ifindexes
            .iter()
            .map(|&ifindex| {
                let link = self.links.get(&ifindex);
                let name = link.map(|l| l.name.clone()).unwrap_or_default();
                let mut addrs: Vec<(Ipv4Addr, u8, bool)> =
                    self.addrs.get(&ifindex).cloned().unwrap_or_default();
                // Primaries first, keeping the kernel's order otherwise.
                addrs.sort_by_key(|a| a.2);
                Port {
                    ifindex,
                    mac: link.map(|l| l.mac).unwrap_or_default(),
                    mtu: link.map(|l| l.mtu).unwrap_or(0),
                    up: link.is_some_and(|l| l.up),
                    addrs: addrs.into_iter().map(|(a, l, _)| (a, l)).collect(),
                    forwarding: flag(&name, "forwarding").unwrap_or(true),
                    accept_source_route: sys.accept_source_route
                        && flag(&name, "accept_source_route").unwrap_or(false),
                    accept_local: flag("all", "accept_local").unwrap_or(false)
                        || flag(&name, "accept_local").unwrap_or(false),
                    rp_filter: crate::iface::RpFilter::from_sysctl(
                        conf("all", "rp_filter").unwrap_or(0),
                        conf(&name, "rp_filter").unwrap_or(0),
                    ),
                    partial_csum: crate::iface::may_carry_partial_checksums(&name),
                    name,
                }
            })
            .collect()
    }

    /// Dumps every table into a fresh mirror.
    pub fn dump(nl: &mut Netlink) -> io::Result<Mirror> {
        let mut m = Mirror {
            building: Some(Fib::builder()),
            ..Mirror::default()
        };
        for t in [
            Table::Links,
            Table::Addresses,
            Table::Routes,
            Table::Neighbours,
        ] {
            nl.dump(t, |msg| m.apply(msg))?;
            if t == Table::Routes {
                if let Some(b) = m.building.take() {
                    m.fib = Arc::new(b.build());
                    // A large table is read all over at random: 2 MiB
                    // pages spare the TLB misses (docs/PERFORMANCE.md).
                    if m.fib.len() >= 100_000 {
                        let n = crate::fib::advise_huge_pages(&m.fib);
                        log::info!("{} routes: {n} huge pages for the FIB", m.fib.len());
                    }
                }
                // Building a full table leaves the allocator holding the
                // builder's memory; hand it back to the system.
                #[cfg(target_env = "gnu")]
                // SAFETY: malloc_trim only releases free memory.
                unsafe {
                    libc::malloc_trim(0);
                }
            }
        }
        Ok(m)
    }
}

/// Administratively up with carrier: what the kernel needs to transmit
/// (`netif_running() && netif_carrier_ok()`). IFF_RUNNING also waits for
/// the operational state, which linkwatch updates up to a second late.
fn link_up(flags: LinkFlags) -> bool {
    flags.contains(LinkFlags::Up) && flags.contains(LinkFlags::LowerUp)
}

fn addr_entry(a: &AddressMessage) -> Option<(u32, Ipv4Addr, u8, bool)> {
    if a.header.family != AddressFamily::Inet {
        return None;
    }
    let addr = a.attributes.iter().find_map(|x| match x {
        AddressAttribute::Local(IpAddr::V4(v)) => Some(*v),
        _ => None,
    });
    let addr = addr.or_else(|| {
        a.attributes.iter().find_map(|x| match x {
            AddressAttribute::Address(IpAddr::V4(v)) => Some(*v),
            _ => None,
        })
    })?;
    let secondary = a
        .header
        .flags
        .contains(netlink_packet_route::address::AddressHeaderFlags::Secondary);
    Some((a.header.index, addr, a.header.prefix_len, secondary))
}

fn neigh_entry(n: &NeighbourMessage) -> Option<(u32, Ipv4Addr, Neighbour)> {
    if n.header.family != AddressFamily::Inet {
        return None;
    }
    let mut ip = None;
    let mut mac = MacAddr::default();
    for a in &n.attributes {
        match a {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(d)) => ip = Some(*d),
            NeighbourAttribute::LinkLayerAddress(b) if b.len() == 6 => {
                mac = MacAddr([b[0], b[1], b[2], b[3], b[4], b[5]])
            }
            _ => {}
        }
    }
    Some((
        n.header.ifindex,
        ip?,
        Neighbour {
            mac,
            state: u16::from(n.header.state),
        },
    ))
}

/// Reads an IPv4 sysctl of the current network namespace
/// (`/proc/sys/net/ipv4/<name>`).
pub fn read_sysctl(name: &str) -> io::Result<String> {
    std::fs::read_to_string(format!("/proc/sys/net/ipv4/{name}")).map(|s| s.trim().to_string())
}

/// A per-interface numeric sysctl (`conf/<iface>/<key>`), if readable.
pub fn read_conf(iface: &str, key: &str) -> Option<u32> {
    read_sysctl(&format!("conf/{iface}/{key}"))
        .ok()
        .and_then(|v| v.parse().ok())
}

/// The tunables now: the namespace's sysctls, under `overrides`.
pub fn read_tunables(overrides: &sysctl::Overrides) -> Sysctl {
    sysctl::resolve(|p| read_sysctl(p).ok(), overrides)
}

/// Counters of the control thread.
#[derive(Debug, Default)]
pub struct ControlCounters {
    /// Snapshots published.
    pub publications: Counter,
    /// Next hops the kernel was asked to resolve.
    pub resolve_requests: Counter,
    /// Full resyncs after lost notifications.
    pub resyncs: Counter,
    /// Netlink messages applied.
    pub messages: Counter,
    /// The FIB gate in force in the XDP program ([`GateMode`] as a number).
    gate: Counter,
}

impl ControlCounters {
    /// The FIB gate in force in the XDP program now.
    pub fn gate(&self) -> GateMode {
        match self.gate.get() {
            0 => GateMode::Off,
            1 => GateMode::Neighbours,
            _ => GateMode::Full,
        }
    }
}

/// The control thread's state.
pub struct Control {
    events: Netlink,
    dumper: Netlink,
    mirror: Mirror,
    ports: Vec<u32>,
    generation: u64,
    fib_gate: GateMode,
    cell: Arc<SnapshotCell>,
    maps: Arc<Mutex<SteerMaps>>,
    counters: Arc<ControlCounters>,
    resolve: Arc<crate::worker::ResolveQueue>,
    overrides: Arc<SharedOverrides>,
    seen_overrides: u64,
    filter: Arc<filter::Shared>,
}

/// Tunables the operator set, shared by the control thread and whoever
/// changes them at run time; the generation tells the control thread to
/// republish.
#[derive(Debug, Default)]
pub struct SharedOverrides {
    values: Mutex<sysctl::Overrides>,
    generation: std::sync::atomic::AtomicU64,
}

impl SharedOverrides {
    /// Starts with `o`.
    pub fn new(o: sysctl::Overrides) -> Self {
        SharedOverrides {
            values: Mutex::new(o),
            generation: Default::default(),
        }
    }

    /// The values now.
    pub fn current(&self) -> sysctl::Overrides {
        self.values.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// Sets one; the control thread applies it within 100 ms.
    pub fn set(&self, name: &'static str, v: sysctl::Value) {
        if let Ok(mut m) = self.values.lock() {
            m.insert(name, v);
        }
        self.generation.fetch_add(1, Ordering::Release);
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control")
            .field("ports", &self.ports)
            .field("generation", &self.generation)
            .finish()
    }
}

/// What the control thread shares with the rest of the engine.
#[derive(Debug)]
pub struct ControlLinks {
    /// Where snapshots are published.
    pub cell: Arc<SnapshotCell>,
    /// The XDP program's maps.
    pub maps: Arc<Mutex<SteerMaps>>,
    /// Its counters.
    pub counters: Arc<ControlCounters>,
    /// Next hops the workers want resolved.
    pub resolve: Arc<crate::worker::ResolveQueue>,
    /// Tunables set by the operator.
    pub overrides: Arc<SharedOverrides>,
    /// The compiled packet filter in force.
    pub filter: Arc<filter::Shared>,
}

/// The mirror, dumped, with its sockets, before the engine has anything to
/// publish to.
#[derive(Debug)]
pub struct Opened {
    events: Netlink,
    dumper: Netlink,
    /// The tables as dumped.
    pub mirror: Mirror,
}

impl Control {
    /// Subscribes to changes, then dumps the tables, so that no change
    /// between the two is lost.
    pub fn open() -> io::Result<Opened> {
        let events = Netlink::subscribed(Duration::from_millis(100))?;
        let mut dumper = Netlink::new()?;
        let mirror = Mirror::dump(&mut dumper)?;
        Ok(Opened {
            events,
            dumper,
            mirror,
        })
    }

    /// The control thread's state, serving `ports` (ifindexes by port).
    pub fn new(opened: Opened, ports: Vec<u32>, fib_gate: GateMode, with: ControlLinks) -> Control {
        // What the engine put in the XDP program's config before starting.
        with.counters.gate.set(fib_gate.effective(true) as u64);
        Control {
            events: opened.events,
            dumper: opened.dumper,
            mirror: opened.mirror,
            ports,
            generation: 0,
            fib_gate,
            cell: with.cell,
            maps: with.maps,
            counters: with.counters,
            resolve: with.resolve,
            seen_overrides: with.overrides.generation(),
            overrides: with.overrides,
            filter: with.filter,
        }
    }

    /// A snapshot of a mirror, with the tunables as they are now.
    pub fn snapshot(
        mirror: &mut Mirror,
        ports: &[u32],
        overrides: &sysctl::Overrides,
        generation: u64,
    ) -> Snapshot {
        let sys = read_tunables(overrides);
        let ports = mirror.ports(ports, &read_conf, &sys);
        // Own addresses: those of every interface of the namespace, as
        // fib_validate_source() looks them up.
        let own = OwnAddrs::of(mirror.addrs.values().flatten().map(|a| a.0));
        Snapshot {
            generation,
            own: Arc::new(own),
            ..Snapshot::new(mirror.fib(), mirror.neighbours(), ports, sys)
        }
    }

    /// Publishes the mirror to the workers and the XDP program.
    pub fn publish(&mut self) {
        self.generation += 1;
        let overrides = self.overrides.current();
        let snap = Control::snapshot(&mut self.mirror, &self.ports, &overrides, self.generation);
        // The gate opens before the workers see a route only the kernel
        // can forward, and closes after they no longer do.
        let gate = self.fib_gate.effective(snap.adj.foreign_egress() > 0);
        let (before, after) = if gate == GateMode::Off {
            (None, Some(gate))
        } else {
            (Some(gate), None)
        };
        if let Some(g) = before {
            self.set_gate(g);
        }
        filter::publish(&self.cell, &self.filter, snap);
        if let Some(g) = after {
            self.set_gate(g);
        }
        let locals = self.mirror.local_addrs();
        if let Ok(mut maps) = self.maps.lock() {
            if let Err(e) = maps.set_local_addrs(&locals) {
                log::error!("updating local addresses in the XDP program: {e}");
            }
            // After the publication: the program hands the kernel what
            // exceeds an MTU the workers do not have yet (issue 15).
            let mtus: Vec<u32> = self.cell.load().ports.iter().map(|p| p.mtu).collect();
            if let Err(e) = maps.set_port_mtus(&mtus) {
                log::error!("updating port MTUs in the XDP program: {e}");
            }
        }
        self.counters.publications.add(1);
    }

    /// Puts `gate` in the XDP program's config when it is not there.
    fn set_gate(&mut self, gate: GateMode) {
        if let Ok(mut maps) = self.maps.lock() {
            let Ok(mut c) = maps.config() else { return };
            if c.fib_gate != gate as u32 {
                log::info!("FIB gate {}: {gate}", self.fib_gate);
                c.fib_gate = gate as u32;
                if let Err(e) = maps.set_config(c) {
                    log::error!("updating the XDP program's FIB gate: {e}");
                    return;
                }
            }
            self.counters.gate.set(gate as u64);
        }
    }

    /// Follows the sysctls: `ip_forward` into the XDP program's config,
    /// tunables and per-port settings into a new snapshot when they changed.
    fn sync_sysctls(&mut self) {
        let current = self.cell.load();
        let sys = read_tunables(&self.overrides.current());
        let ports = self.mirror.ports(&self.ports, &read_conf, &sys);
        if sys != current.sysctl || ports != current.ports {
            drop(current);
            self.publish();
        }
        let forwarding = sys.ip_forward;
        if let Ok(mut maps) = self.maps.lock() {
            let now = maps.config().ok();
            // local_frags belongs to the sockets; keep it.
            let want = SteerConfig {
                forwarding: forwarding as u32,
                fib_gate: self.counters.gate() as u32,
                local_frags: now.map_or(0, |c| c.local_frags),
                mtu_check_above: self.fib_gate.mtu_check_above(),
            };
            if now != Some(want) {
                log::info!(
                    "ip_forward is {}: forwarding through the engine {}",
                    forwarding as u8,
                    if forwarding { "on" } else { "off" }
                );
                if let Err(e) = maps.set_config(want) {
                    log::error!("updating the XDP program's config: {e}");
                }
            }
        }
    }

    /// The first publication, before the engine says it started: the
    /// sysctls followed, the mirror's snapshot given to the workers, and
    /// the XDP program's gate, local addresses and port MTUs set from it.
    /// Until then the program asks the kernel's FIB for every packet and
    /// hands the kernel what exceeds an MTU the workers do not know, so a
    /// packet sent right after `started` would reach the kernel.
    pub fn prime(&mut self) {
        self.sync_sysctls();
        self.publish();
    }

    /// Follows the kernel until `stop` is set; primes first
    /// ([`Control::prime`]) when that was not done.
    pub fn run(mut self, stop: Arc<AtomicBool>) {
        if self.generation == 0 {
            self.prime();
        }
        let mut last_sysctl = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            let mut changed = false;
            // Drain what is queued, then publish once: wait only for the
            // first datagram (a new MTU must reach the workers before the
            // next packet, not a receive timeout later).
            loop {
                match self.events.receive(!changed) {
                    Ok(Received::Messages(msgs)) if msgs.is_empty() => break,
                    Ok(Received::Messages(msgs)) => {
                        self.counters.messages.add(msgs.len() as u64);
                        for m in msgs {
                            self.log_change(&m);
                            self.mirror.apply(m);
                        }
                        changed = true;
                    }
                    Ok(Received::Overrun) => {
                        log::warn!("netlink notifications lost (ENOBUFS): resyncing");
                        self.counters.resyncs.add(1);
                        match Mirror::dump(&mut self.dumper) {
                            Ok(m) => self.mirror = m,
                            Err(e) => log::error!("netlink resync failed: {e}"),
                        }
                        changed = true;
                    }
                    Err(e) => {
                        log::error!("netlink receive: {e}");
                        std::thread::sleep(Duration::from_millis(100));
                        break;
                    }
                }
                if stop.load(Ordering::Relaxed) {
                    break;
                }
            }
            if changed {
                self.publish();
            }
            while let Some((ifindex, ip)) = self.resolve.pop() {
                self.counters.resolve_requests.add(1);
                if let Err(e) = self.dumper.resolve(ifindex, ip) {
                    log::debug!("asking the kernel to resolve {ip} on {ifindex}: {e}");
                }
            }
            let g = self.overrides.generation();
            if g != self.seen_overrides || last_sysctl.elapsed() >= Duration::from_secs(1) {
                self.seen_overrides = g;
                last_sysctl = Instant::now();
                self.sync_sysctls();
            }
        }
    }

    fn log_change(&self, m: &RouteNetlinkMessage) {
        if let RouteNetlinkMessage::NewLink(l) = m {
            if let (Some(old), true) = (
                self.mirror.links.get(&l.header.index),
                self.ports.contains(&l.header.index),
            ) {
                let up = link_up(l.header.flags);
                if old.up != up {
                    log::info!("{}: link {}", old.name, if up { "up" } else { "down" });
                }
            }
        }
    }
}
