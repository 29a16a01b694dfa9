//! Multicast on engine UDP sockets: memberships per socket with source
//! filters, and the `IP_MULTICAST_*` options of ip(7).
//!
//! Every membership call is first made on a kernel socket that shadows the
//! engine socket (unbound, so it never receives): the kernel checks it and
//! answers with its errno, and it is the kernel that speaks IGMPv3 for the
//! resulting interface state (reports on join, leave and filter change with
//! robustness 2, answers to queries, IGMPv2/v1 compatibility), as RFC 3376
//! asks and exactly as for its own sockets. The engine keeps the same state
//! to filter what it delivers, and tells the XDP program which groups to
//! steer to it.

use super::{errno, flag, UdpSocket};
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// One socket's membership of a group on an interface, with its source
/// filter (RFC 3376 socket state).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Membership {
    pub group: Ipv4Addr,
    pub ifindex: u32,
    /// `MCAST_INCLUDE` (true) or `MCAST_EXCLUDE`.
    pub include: bool,
    pub sources: Vec<Ipv4Addr>,
}

impl Membership {
    /// Whether a datagram from `src` passes the filter.
    pub fn admits(&self, src: Ipv4Addr) -> bool {
        self.sources.contains(&src) == self.include
    }
}

/// `MCAST_INCLUDE` / `MCAST_EXCLUDE` for [`UdpSocket::set_msfilter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterMode {
    /// Only the listed sources.
    Include,
    /// All but the listed sources.
    Exclude,
}

fn addr(b: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(b[0], b[1], b[2], b[3])
}

impl UdpSocket {
    fn shadow(&self) -> io::Result<i32> {
        let mut sh = self.shadow.lock().expect("not poisoned");
        if let Some(fd) = sh.as_ref() {
            return Ok(fd.as_raw_fd());
        }
        // SAFETY: plain socket(2); the result is checked.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new descriptor nothing else owns.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        let raw = owned.as_raw_fd();
        *sh = Some(owned);
        Ok(raw)
    }

    /// Makes the call on the kernel's shadow socket: its errno is ours.
    fn kernel_setsockopt(&self, name: i32, value: &[u8]) -> io::Result<()> {
        let fd = self.shadow()?;
        // SAFETY: `value` is valid for its length.
        let r = unsafe {
            libc::setsockopt(
                fd,
                libc::IPPROTO_IP,
                name,
                value.as_ptr().cast(),
                value.len() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// The interface a membership call names: an index, else the
    /// interface holding the address, else the route to the group
    /// (`ip_mc_find_dev()`).
    fn mc_ifindex(&self, group: Ipv4Addr, ifaddr: Ipv4Addr, ifindex: u32) -> u32 {
        if ifindex != 0 {
            return ifindex;
        }
        let snap = self.shared.snapshot();
        if !ifaddr.is_unspecified() {
            if let Some(p) = snap
                .ports
                .iter()
                .find(|p| p.addrs.iter().any(|(a, _)| *a == ifaddr))
            {
                return p.ifindex;
            }
            // An interface the engine does not serve: no traffic of it
            // reaches the engine anyway.
            return 0;
        }
        snap.fib
            .lookup(group)
            .and_then(|r| r.nexthop(0))
            .map_or(0, |n| n.ifindex)
    }

    /// `setsockopt(2)` with a structure, for the multicast options of ip(7)
    /// (`IP_ADD_MEMBERSHIP`, `IP_DROP_MEMBERSHIP` with `ip_mreqn` or
    /// `ip_mreq`; `IP_ADD_SOURCE_MEMBERSHIP`, `IP_DROP_SOURCE_MEMBERSHIP`,
    /// `IP_BLOCK_SOURCE`, `IP_UNBLOCK_SOURCE` with `ip_mreq_source`;
    /// `IP_MSFILTER`; `IP_MULTICAST_IF` with `ip_mreqn`, `ip_mreq` or
    /// `in_addr`, told apart by size as the kernel does; `IP_MULTICAST_TTL`
    /// and `IP_MULTICAST_LOOP` as an int or a byte). Other options with a
    /// 4-byte value go to [`set_option`](Self::set_option); anything else
    /// is `ENOPROTOOPT`.
    pub fn set_option_bytes(&self, level: i32, name: i32, value: &[u8]) -> io::Result<()> {
        if level != libc::IPPROTO_IP {
            return match value.try_into() {
                Ok(v) => self.set_option(level, name, i32::from_ne_bytes(v)),
                Err(_) => Err(errno(libc::EINVAL)),
            };
        }
        match name {
            libc::IP_ADD_MEMBERSHIP
            | libc::IP_DROP_MEMBERSHIP
            | libc::IP_ADD_SOURCE_MEMBERSHIP
            | libc::IP_DROP_SOURCE_MEMBERSHIP
            | libc::IP_BLOCK_SOURCE
            | libc::IP_UNBLOCK_SOURCE
            | libc::IP_MSFILTER => {
                self.kernel_setsockopt(name, value)?;
                self.apply_membership(name, value);
                Ok(())
            }
            libc::IP_MULTICAST_IF => {
                self.kernel_setsockopt(name, value)?;
                let (ifaddr, ifindex) = match value.len() {
                    n if n >= 12 => (
                        addr(&value[4..8]),
                        u32::from_ne_bytes(value[8..12].try_into().expect("4 bytes")),
                    ),
                    n if n >= 8 => (addr(&value[4..8]), 0),
                    _ => (addr(&value[0..4]), 0),
                };
                let mut st = self.state();
                st.mcast_if = if ifaddr.is_unspecified() && ifindex == 0 {
                    None
                } else {
                    let ix = self.mc_ifindex(Ipv4Addr::UNSPECIFIED, ifaddr, ifindex);
                    Some((ix, ifaddr))
                };
                Ok(())
            }
            libc::IP_MULTICAST_TTL | libc::IP_MULTICAST_LOOP => {
                self.kernel_setsockopt(name, value)?;
                let v = match value.len() {
                    1 => value[0] as i32,
                    _ => i32::from_ne_bytes(value[..4].try_into().expect("checked by the kernel")),
                };
                let mut st = self.state();
                if name == libc::IP_MULTICAST_TTL {
                    st.mcast_ttl = if v == -1 { 1 } else { v as u8 };
                } else {
                    self.core.set_flag(flag::MCAST_NOLOOP, v == 0);
                }
                Ok(())
            }
            _ => match value.try_into() {
                Ok(v) => self.set_option(level, name, i32::from_ne_bytes(v)),
                Err(_) => Err(errno(libc::ENOPROTOOPT)),
            },
        }
    }

    /// Updates the engine's membership state after the kernel accepted the
    /// same call, and republishes.
    fn apply_membership(&self, name: i32, v: &[u8]) {
        let mut r = self.shared.registry.lock().expect("not poisoned");
        let list = r.mships.entry(self.id).or_default();
        let find = |list: &Vec<Membership>, g, ix| {
            list.iter().position(|m| m.group == g && m.ifindex == ix)
        };
        match name {
            libc::IP_ADD_MEMBERSHIP | libc::IP_DROP_MEMBERSHIP => {
                let group = addr(&v[0..4]);
                let ifaddr = addr(&v[4..8]);
                let ifindex = if v.len() >= 12 {
                    u32::from_ne_bytes(v[8..12].try_into().expect("4 bytes"))
                } else {
                    0
                };
                let ix = self.mc_ifindex(group, ifaddr, ifindex);
                if name == libc::IP_ADD_MEMBERSHIP {
                    list.push(Membership {
                        group,
                        ifindex: ix,
                        include: false,
                        sources: Vec::new(),
                    });
                } else if let Some(i) = find(list, group, ix) {
                    list.remove(i);
                }
            }
            libc::IP_MSFILTER => {
                // struct ip_msfilter: group, interface, fmode, numsrc, slist.
                let group = addr(&v[0..4]);
                let ix = self.mc_ifindex(group, addr(&v[4..8]), 0);
                let include = u32::from_ne_bytes(v[8..12].try_into().expect("4 bytes"))
                    == libc::MCAST_INCLUDE as u32;
                let n = u32::from_ne_bytes(v[12..16].try_into().expect("4 bytes")) as usize;
                let sources: Vec<Ipv4Addr> =
                    (0..n).map(|i| addr(&v[16 + 4 * i..20 + 4 * i])).collect();
                match find(list, group, ix) {
                    Some(i) if include && sources.is_empty() => {
                        list.remove(i);
                    }
                    Some(i) => {
                        list[i].include = include;
                        list[i].sources = sources;
                    }
                    None => {}
                }
            }
            _ => {
                // struct ip_mreq_source: group, interface, source.
                let group = addr(&v[0..4]);
                let ix = self.mc_ifindex(group, addr(&v[4..8]), 0);
                let source = addr(&v[8..12]);
                let i = find(list, group, ix);
                match (name, i) {
                    (libc::IP_ADD_SOURCE_MEMBERSHIP, None) => list.push(Membership {
                        group,
                        ifindex: ix,
                        include: true,
                        sources: vec![source],
                    }),
                    (libc::IP_ADD_SOURCE_MEMBERSHIP | libc::IP_BLOCK_SOURCE, Some(i))
                        if !list[i].sources.contains(&source) =>
                    {
                        list[i].sources.push(source);
                    }
                    (libc::IP_DROP_SOURCE_MEMBERSHIP | libc::IP_UNBLOCK_SOURCE, Some(i)) => {
                        list[i].sources.retain(|s| *s != source);
                        if list[i].include && list[i].sources.is_empty() {
                            list.remove(i);
                        }
                    }
                    _ => {}
                }
            }
        }
        if list.is_empty() {
            r.mships.remove(&self.id);
        }
        self.shared.publish(&r);
    }

    /// `IP_ADD_MEMBERSHIP` with `ip_mreq`: joins `group` on the interface
    /// holding `interface` (any: the route's), as
    /// [`std::net::UdpSocket::join_multicast_v4`].
    pub fn join_multicast_v4(&self, group: &Ipv4Addr, interface: &Ipv4Addr) -> io::Result<()> {
        self.set_option_bytes(
            libc::IPPROTO_IP,
            libc::IP_ADD_MEMBERSHIP,
            &mreq(*group, *interface),
        )
    }

    /// `IP_DROP_MEMBERSHIP` with `ip_mreq`.
    pub fn leave_multicast_v4(&self, group: &Ipv4Addr, interface: &Ipv4Addr) -> io::Result<()> {
        self.set_option_bytes(
            libc::IPPROTO_IP,
            libc::IP_DROP_MEMBERSHIP,
            &mreq(*group, *interface),
        )
    }

    /// `IP_ADD_SOURCE_MEMBERSHIP`: receive `group` from `source` only.
    pub fn join_source(
        &self,
        group: Ipv4Addr,
        interface: Ipv4Addr,
        source: Ipv4Addr,
    ) -> io::Result<()> {
        self.set_option_bytes(
            libc::IPPROTO_IP,
            libc::IP_ADD_SOURCE_MEMBERSHIP,
            &mreq_source(group, interface, source),
        )
    }

    /// `IP_DROP_SOURCE_MEMBERSHIP`.
    pub fn leave_source(
        &self,
        group: Ipv4Addr,
        interface: Ipv4Addr,
        source: Ipv4Addr,
    ) -> io::Result<()> {
        self.set_option_bytes(
            libc::IPPROTO_IP,
            libc::IP_DROP_SOURCE_MEMBERSHIP,
            &mreq_source(group, interface, source),
        )
    }

    /// `IP_BLOCK_SOURCE`: an any-source membership stops taking `source`.
    pub fn block_source(
        &self,
        group: Ipv4Addr,
        interface: Ipv4Addr,
        source: Ipv4Addr,
    ) -> io::Result<()> {
        self.set_option_bytes(
            libc::IPPROTO_IP,
            libc::IP_BLOCK_SOURCE,
            &mreq_source(group, interface, source),
        )
    }

    /// `IP_UNBLOCK_SOURCE`; `EADDRNOTAVAIL` when it was not blocked.
    pub fn unblock_source(
        &self,
        group: Ipv4Addr,
        interface: Ipv4Addr,
        source: Ipv4Addr,
    ) -> io::Result<()> {
        self.set_option_bytes(
            libc::IPPROTO_IP,
            libc::IP_UNBLOCK_SOURCE,
            &mreq_source(group, interface, source),
        )
    }

    /// `IP_MSFILTER`: the whole filter of a membership at once.
    pub fn set_msfilter(
        &self,
        group: Ipv4Addr,
        interface: Ipv4Addr,
        mode: FilterMode,
        sources: &[Ipv4Addr],
    ) -> io::Result<()> {
        let mut v = Vec::with_capacity(16 + 4 * sources.len().max(1));
        v.extend_from_slice(&group.octets());
        v.extend_from_slice(&interface.octets());
        let m = match mode {
            FilterMode::Include => libc::MCAST_INCLUDE,
            FilterMode::Exclude => libc::MCAST_EXCLUDE,
        } as u32;
        v.extend_from_slice(&m.to_ne_bytes());
        v.extend_from_slice(&(sources.len() as u32).to_ne_bytes());
        for s in sources {
            v.extend_from_slice(&s.octets());
        }
        // struct ip_msfilter always has room for one source.
        while v.len() < 20 {
            v.push(0);
        }
        self.set_option_bytes(libc::IPPROTO_IP, libc::IP_MSFILTER, &v)
    }

    /// `IP_MULTICAST_TTL` (default 1).
    pub fn set_multicast_ttl_v4(&self, ttl: u32) -> io::Result<()> {
        self.set_option_bytes(
            libc::IPPROTO_IP,
            libc::IP_MULTICAST_TTL,
            &(ttl as i32).to_ne_bytes(),
        )
    }

    /// `IP_MULTICAST_TTL`.
    pub fn multicast_ttl_v4(&self) -> io::Result<u32> {
        Ok(self.state().mcast_ttl as u32)
    }

    /// `IP_MULTICAST_LOOP` (default on): engine sockets of this engine get
    /// a copy of what is sent to a group they receive.
    pub fn set_multicast_loop_v4(&self, on: bool) -> io::Result<()> {
        self.set_option_bytes(
            libc::IPPROTO_IP,
            libc::IP_MULTICAST_LOOP,
            &(on as i32).to_ne_bytes(),
        )
    }

    /// `IP_MULTICAST_LOOP`.
    pub fn multicast_loop_v4(&self) -> io::Result<bool> {
        Ok(!self.core.has(flag::MCAST_NOLOOP))
    }

    /// `IP_MULTICAST_IF` with an `in_addr`: send multicast from the
    /// interface holding `interface` (unspecified: by route).
    pub fn set_multicast_if_v4(&self, interface: Ipv4Addr) -> io::Result<()> {
        self.set_option_bytes(libc::IPPROTO_IP, libc::IP_MULTICAST_IF, &interface.octets())
    }

    /// Leaves every group (on close), so that the kernel reports it.
    pub(crate) fn drop_memberships(&self) {
        let mut r = self.shared.registry.lock().expect("not poisoned");
        if r.mships.remove(&self.id).is_some() {
            self.shared.publish(&r);
        }
        // Closing the shadow socket makes the kernel leave its groups.
        self.shadow.lock().expect("not poisoned").take();
    }
}

fn mreq(group: Ipv4Addr, interface: Ipv4Addr) -> [u8; 8] {
    let mut v = [0u8; 8];
    v[..4].copy_from_slice(&group.octets());
    v[4..].copy_from_slice(&interface.octets());
    v
}

fn mreq_source(group: Ipv4Addr, interface: Ipv4Addr, source: Ipv4Addr) -> [u8; 12] {
    let mut v = [0u8; 12];
    v[..4].copy_from_slice(&group.octets());
    v[4..8].copy_from_slice(&interface.octets());
    v[8..].copy_from_slice(&source.octets());
    v
}

/// The Ethernet address of a group (RFC 1112): 01:00:5e and its low 23
/// bits.
pub(crate) fn group_mac(g: Ipv4Addr) -> [u8; 6] {
    let o = g.octets();
    [0x01, 0x00, 0x5e, o[1] & 0x7f, o[2], o[3]]
}
