//! What the kernel says about a network interface: index, MAC, MTU, flags,
//! driver, queue count and IPv4 addresses.
//!
//! Read with ioctl(2) and getifaddrs(3) rather than sysfs, so that it works
//! from a thread that entered another network namespace with setns(2),
//! where /sys still shows the namespace it was mounted in.

use crate::wire::MacAddr;
use std::ffi::{CStr, CString};
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Most interfaces one engine serves.
pub const MAX_PORTS: usize = 32;

const SIOCETHTOOL: libc::c_ulong = 0x8946;
const ETHTOOL_GDRVINFO: u32 = 0x03;
const ETHTOOL_GCHANNELS: u32 = 0x3c;
const ETHTOOL_GTXCSUM: u32 = 0x16;
const ARPHRD_ETHER: u16 = 1;

#[repr(C)]
struct EthtoolDrvinfo {
    cmd: u32,
    driver: [u8; 32],
    version: [u8; 32],
    fw_version: [u8; 32],
    bus_info: [u8; 32],
    erom_version: [u8; 32],
    reserved2: [u8; 12],
    n_priv_flags: u32,
    n_stats: u32,
    testinfo_len: u32,
    eedump_len: u32,
    regdump_len: u32,
}

#[repr(C)]
#[derive(Default)]
struct EthtoolChannels {
    cmd: u32,
    max_rx: u32,
    max_tx: u32,
    max_other: u32,
    max_combined: u32,
    rx_count: u32,
    tx_count: u32,
    other_count: u32,
    combined_count: u32,
}

/// An interface as the kernel describes it at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// Name.
    pub name: String,
    /// Index.
    pub ifindex: u32,
    /// MAC address (zero for interfaces without one).
    pub mac: MacAddr,
    /// True for an Ethernet interface (ARPHRD_ETHER).
    pub is_ethernet: bool,
    /// MTU.
    pub mtu: u32,
    /// IFF_UP.
    pub up: bool,
    /// IFF_RUNNING (carrier).
    pub running: bool,
    /// Driver name from ethtool, if the driver reports one.
    pub driver: Option<String>,
    /// Queues an AF_XDP socket can bind to: combined channels plus the
    /// smaller of rx-only and tx-only channels; 1 when the driver does not
    /// report channels.
    pub queues: u32,
    /// IPv4 addresses, with prefix length.
    pub ipv4: Vec<(Ipv4Addr, u8)>,
}

/// Why an interface could not be described.
#[derive(Debug)]
pub enum LookupError {
    /// No interface of that name in this network namespace.
    NotFound(String),
    /// The name is not a valid interface name.
    BadName(String),
    /// A system call failed.
    Io(&'static str, io::Error),
}

impl std::fmt::Display for LookupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LookupError::NotFound(n) => {
                write!(f, "no interface named {n:?} in this network namespace")
            }
            LookupError::BadName(n) => write!(f, "{n:?} is not a valid interface name"),
            LookupError::Io(what, e) => write!(f, "{what}: {e}"),
        }
    }
}

impl std::error::Error for LookupError {}

fn ifreq_for(name: &str) -> Result<libc::ifreq, LookupError> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
        return Err(LookupError::BadName(name.to_string()));
    }
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in ifr.ifr_name.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    Ok(ifr)
}

fn control_socket() -> Result<OwnedFd, LookupError> {
    // SAFETY: plain socket(2) call; the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(LookupError::Io("socket", io::Error::last_os_error()));
    }
    // SAFETY: fd is a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn ioctl(fd: &OwnedFd, req: libc::c_ulong, ifr: &mut libc::ifreq) -> io::Result<()> {
    // SAFETY: ifr is a valid ifreq for the duration of the call, and every
    // request used here reads or writes only inside it (or the buffer its
    // ifru_data points to, which the caller keeps alive).
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), req as _, ifr as *mut libc::ifreq) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The index of an interface, if it exists.
pub fn index_of(name: &str) -> Option<u32> {
    let c = CString::new(name).ok()?;
    // SAFETY: c is a valid NUL-terminated string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i)
}

/// The name of an interface index, if it exists.
pub fn name_of(ifindex: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IFNAMSIZ];
    // SAFETY: buf has the IFNAMSIZ bytes if_indextoname may write.
    let p = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: on success buf holds a NUL-terminated name.
    Some(
        unsafe { CStr::from_ptr(buf.as_ptr()) }
            .to_string_lossy()
            .into_owned(),
    )
}

impl Interface {
    /// Describes the interface `name` in the caller's network namespace.
    pub fn lookup(name: &str) -> Result<Interface, LookupError> {
        let mut ifr = ifreq_for(name)?;
        let ifindex = index_of(name).ok_or_else(|| LookupError::NotFound(name.to_string()))?;
        let sock = control_socket()?;

        ioctl(&sock, libc::SIOCGIFHWADDR, &mut ifr)
            .map_err(|e| LookupError::Io("SIOCGIFHWADDR", e))?;
        // SAFETY: SIOCGIFHWADDR filled the ifru_hwaddr member.
        let hw = unsafe { ifr.ifr_ifru.ifru_hwaddr };
        let mut mac = [0u8; 6];
        for (d, s) in mac.iter_mut().zip(hw.sa_data.iter()) {
            *d = *s as u8;
        }
        let is_ethernet = hw.sa_family == ARPHRD_ETHER;

        let mut ifr = ifreq_for(name)?;
        ioctl(&sock, libc::SIOCGIFMTU, &mut ifr).map_err(|e| LookupError::Io("SIOCGIFMTU", e))?;
        // SAFETY: SIOCGIFMTU filled the ifru_mtu member.
        let mtu = unsafe { ifr.ifr_ifru.ifru_mtu } as u32;

        let mut ifr = ifreq_for(name)?;
        ioctl(&sock, libc::SIOCGIFFLAGS, &mut ifr)
            .map_err(|e| LookupError::Io("SIOCGIFFLAGS", e))?;
        // SAFETY: SIOCGIFFLAGS filled the ifru_flags member.
        let flags = unsafe { ifr.ifr_ifru.ifru_flags } as i32;

        Ok(Interface {
            name: name.to_string(),
            ifindex,
            mac: MacAddr(mac),
            is_ethernet,
            mtu,
            up: flags & libc::IFF_UP != 0,
            running: flags & libc::IFF_RUNNING != 0,
            driver: driver(&sock, name),
            queues: queues(&sock, name),
            ipv4: ipv4_addresses(name).map_err(|e| LookupError::Io("getifaddrs", e))?,
        })
    }
}

/// Drivers whose received frames come from a network stack on this host,
/// never from a wire, and may carry partial UDP/TCP checksums (the
/// sender's `CHECKSUM_PARTIAL`: only the pseudo-header sum in the field,
/// [`crate::wire::l4csum`]):
///
/// - `veth`: the peer is a stack on this host (a container's namespace);
///   with transmit checksum offload on, its default, the frames it hands
///   over carry the pseudo-header sum, and native XDP sees them so.
/// - `netkit`: the same pair model (Cilium's replacement for veth in
///   pods); XDP runs in skb mode on it, which shows the skb's bytes as
///   they are.
/// - `tun` (tap mode): frames written by a process on this host (a VM's
///   virtio-net through vhost-net, a user-space stack) with a virtio-net
///   header that says `VIRTIO_NET_HDR_F_NEEDS_CSUM`; tun runs native XDP
///   on such a frame before it builds the skb (`tun_build_skb()`).
///
/// Not listed, so never treated so: physical NICs (a wire delivers
/// complete checksums; a wrong one is corruption and must be dropped);
/// `virtio_net` (it turns the guest checksum offloads off while an XDP
/// program is attached); `bridge`, `macvlan`, `ipvlan`, `bonding`, VLANs
/// (frames from local stacks and from wires on one device: the rule's
/// premise does not hold).
pub const LOCAL_STACK_DRIVERS: &[&str] = &["veth", "netkit", "tun"];

/// True when frames received on interface `name` (in the caller's network
/// namespace) may carry partial checksums: its driver is one of
/// [`LOCAL_STACK_DRIVERS`]. False when the interface or its driver is
/// unknown.
pub fn may_carry_partial_checksums(name: &str) -> bool {
    let Ok(sock) = control_socket() else {
        return false;
    };
    driver(&sock, name).is_some_and(|d| LOCAL_STACK_DRIVERS.contains(&d.as_str()))
}

/// Whether interface `name` (in the caller's network namespace) offloads
/// transmit checksums (`ethtool -k`: `tx-checksumming`).
pub fn tx_checksum_offload(name: &str) -> io::Result<bool> {
    #[repr(C)]
    struct EthtoolValue {
        cmd: u32,
        data: u32,
    }
    let sock = control_socket().map_err(|e| match e {
        LookupError::Io(_, e) => e,
        other => io::Error::other(other.to_string()),
    })?;
    let mut v = EthtoolValue {
        cmd: ETHTOOL_GTXCSUM,
        data: 0,
    };
    let mut ifr = ifreq_for(name).map_err(|e| io::Error::other(e.to_string()))?;
    ifr.ifr_ifru.ifru_data = &mut v as *mut EthtoolValue as *mut libc::c_char;
    ioctl(&sock, SIOCETHTOOL, &mut ifr)?;
    Ok(v.data != 0)
}

fn driver(sock: &OwnedFd, name: &str) -> Option<String> {
    // SAFETY: plain old data; zero is valid.
    let mut info: EthtoolDrvinfo = unsafe { std::mem::zeroed() };
    info.cmd = ETHTOOL_GDRVINFO;
    let mut ifr = ifreq_for(name).ok()?;
    ifr.ifr_ifru.ifru_data = &mut info as *mut EthtoolDrvinfo as *mut libc::c_char;
    ioctl(sock, SIOCETHTOOL, &mut ifr).ok()?;
    let end = info.driver.iter().position(|b| *b == 0).unwrap_or(32);
    let d = String::from_utf8_lossy(&info.driver[..end]).into_owned();
    (!d.is_empty()).then_some(d)
}

fn queues(sock: &OwnedFd, name: &str) -> u32 {
    let mut ch = EthtoolChannels {
        cmd: ETHTOOL_GCHANNELS,
        ..Default::default()
    };
    let Ok(mut ifr) = ifreq_for(name) else {
        return 1;
    };
    ifr.ifr_ifru.ifru_data = &mut ch as *mut EthtoolChannels as *mut libc::c_char;
    if ioctl(sock, SIOCETHTOOL, &mut ifr).is_err() {
        return 1;
    }
    (ch.combined_count + ch.rx_count.min(ch.tx_count)).max(1)
}

/// The IPv4 addresses of an interface, with prefix lengths.
pub fn ipv4_addresses(name: &str) -> io::Result<Vec<(Ipv4Addr, u8)>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list head we free below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: cur is a node of the list getifaddrs returned, alive until
        // freeifaddrs; its pointers are null or valid.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: ifa_name is a valid C string.
        let n = unsafe { CStr::from_ptr(ifa.ifa_name) };
        // SAFETY: ifa_addr is non-null and points to a sockaddr.
        if n.to_bytes() != name.as_bytes()
            || unsafe { (*ifa.ifa_addr).sa_family } as i32 != libc::AF_INET
        {
            continue;
        }
        // SAFETY: the family is AF_INET, so it is a sockaddr_in.
        let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
        let addr = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
        let plen = if ifa.ifa_netmask.is_null() {
            32
        } else {
            // SAFETY: the netmask of an AF_INET address is a sockaddr_in.
            let m = unsafe { &*(ifa.ifa_netmask as *const libc::sockaddr_in) };
            u32::from_be(m.sin_addr.s_addr).count_ones() as u8
        };
        out.push((addr, plen));
    }
    // SAFETY: head came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

/// Source validation by reverse path (`net.ipv4.conf.*.rp_filter`, RFC
/// 3704), as `fib_validate_source()` does it.
///
/// ```
/// use xdpip::iface::RpFilter;
/// assert_eq!(RpFilter::from_sysctl(0, 2), RpFilter::Loose);
/// assert_eq!(RpFilter::from_sysctl(1, 2), RpFilter::Loose);
/// assert_eq!(RpFilter::from_sysctl(1, 0), RpFilter::Strict);
/// assert_eq!(RpFilter::from_sysctl(0, 0), RpFilter::Off);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RpFilter {
    /// 0: no check (a new namespace's default).
    #[default]
    Off,
    /// 1: the route back to the source must leave through the ingress
    /// interface.
    Strict,
    /// 2: there must be a unicast route back to the source, through any
    /// interface.
    Loose,
}

impl RpFilter {
    /// The mode of an interface from `conf/all/rp_filter` and its own:
    /// the larger value wins (`IN_DEV_RPFILTER()`); values above 2 count
    /// as 2.
    pub fn from_sysctl(all: u32, dev: u32) -> RpFilter {
        match all.max(dev) {
            0 => RpFilter::Off,
            1 => RpFilter::Strict,
            _ => RpFilter::Loose,
        }
    }
}

/// An interface the engine serves, as the kernel currently describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    /// Interface name.
    pub name: String,
    /// Interface index.
    pub ifindex: u32,
    /// Its MAC address, the source of forwarded frames.
    pub mac: MacAddr,
    /// Its MTU.
    pub mtu: u32,
    /// Administratively and operationally up.
    pub up: bool,
    /// Its IPv4 addresses with prefix lengths, primaries first, in the
    /// kernel's order.
    pub addrs: Vec<(Ipv4Addr, u8)>,
    /// `net.ipv4.conf.<port>.forwarding`: forward what arrives here.
    pub forwarding: bool,
    /// `accept_source_route` of `conf/all` and of the port, both set.
    pub accept_source_route: bool,
    /// `accept_local` of `conf/all` or of the port: packets from this
    /// host's own addresses are accepted on it, not martians.
    pub accept_local: bool,
    /// Reverse path filtering of what arrives here: the larger of
    /// `conf/all/rp_filter` and `conf/<port>/rp_filter`, as Linux takes it.
    pub rp_filter: RpFilter,
    /// Its frames come from a local stack and may carry partial UDP/TCP
    /// checksums (a veth; [`may_carry_partial_checksums`]): they are
    /// completed or accepted ([`crate::wire::l4csum`]).
    pub partial_csum: bool,
}

impl Port {
    /// The source address for a packet leaving through this port towards
    /// `dst`, as `inet_select_addr()` picks it: the first primary address
    /// whose subnet holds `dst`, else the first address.
    ///
    /// ```
    /// use xdpip::iface::Port;
    /// use std::net::Ipv4Addr;
    /// let p = Port {
    ///     addrs: vec![(Ipv4Addr::new(10, 0, 0, 1), 24), (Ipv4Addr::new(10, 9, 0, 1), 16)],
    ///     ..Port::default()
    /// };
    /// assert_eq!(p.select_addr(Ipv4Addr::new(10, 9, 3, 3)), Some(Ipv4Addr::new(10, 9, 0, 1)));
    /// assert_eq!(p.select_addr(Ipv4Addr::new(8, 8, 8, 8)), Some(Ipv4Addr::new(10, 0, 0, 1)));
    /// ```
    pub fn select_addr(&self, dst: Ipv4Addr) -> Option<Ipv4Addr> {
        let d = u32::from(dst);
        self.addrs
            .iter()
            .find(|(a, len)| {
                let m = if *len == 0 {
                    0
                } else {
                    u32::MAX << (32 - *len as u32)
                };
                u32::from(*a) & m == d & m
            })
            .or(self.addrs.first())
            .map(|(a, _)| *a)
    }
}

impl Default for Port {
    fn default() -> Self {
        Port {
            name: String::new(),
            ifindex: 0,
            mac: MacAddr::default(),
            mtu: 1500,
            up: true,
            addrs: Vec::new(),
            forwarding: true,
            accept_source_route: false,
            accept_local: false,
            rp_filter: RpFilter::Off,
            partial_csum: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_described() {
        let lo = Interface::lookup("lo").unwrap();
        assert_eq!(lo.ifindex, index_of("lo").unwrap());
        assert!(!lo.is_ethernet);
        assert!(lo.ipv4.contains(&(Ipv4Addr::LOCALHOST, 8)) || !lo.up);
        assert_eq!(name_of(lo.ifindex).as_deref(), Some("lo"));
        // The loopback device's driver is not a local-stack Ethernet one.
        assert!(!may_carry_partial_checksums("lo"));
        assert!(!may_carry_partial_checksums("nonexistent0"));
    }

    #[test]
    fn unknown_and_bad_names() {
        assert!(matches!(
            Interface::lookup("nonexistent0"),
            Err(LookupError::NotFound(_))
        ));
        assert!(matches!(
            Interface::lookup("a-name-longer-than-ifnamsiz"),
            Err(LookupError::BadName(_))
        ));
        assert!(matches!(
            Interface::lookup(""),
            Err(LookupError::BadName(_))
        ));
    }
}
