//! The peer of a veth: where it is, and whether it offloads transmit
//! checksums (so that the engine says what it does about partial
//! checksums only when there are any).
//!
//! A veth's link attributes give its peer's index and, when the peer is in
//! another network namespace, that namespace's id as this namespace numbers
//! it (`IFLA_LINK`, `IFLA_LINK_NETNSID`). An id is not a handle: to read the
//! peer's offloads the engine finds a file of that namespace (a name under
//! `/run/netns`, as `ip netns` and CNI plugins make, or `/proc/PID/ns/net`
//! of a process in it), asks the kernel the file's id (`RTM_GETNSID`), and
//! enters it with setns(2) on a short-lived thread, which needs
//! `CAP_SYS_ADMIN`. When one of these steps fails, the answer says which.

use crate::control::netlink::Netlink;
use netlink_packet_route::link::{LinkAttribute, LinkMessage};
use netlink_packet_route::nsid::{NsidAttribute, NsidMessage};
use netlink_packet_route::RouteNetlinkMessage;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Transmit checksum offload of a veth's peer, as far as it can be known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerOffload {
    /// The peer (described) offloads transmit checksums: UDP and TCP it
    /// sends carry partial checksums.
    On(String),
    /// The peer (described) computes its checksums itself.
    Off(String),
    /// Not known, and why.
    Unknown(String),
}

/// Where the peer of veth `ifindex` (of the caller's namespace) is, and
/// whether it offloads transmit checksums.
///
/// ```no_run
/// use xdpip::veth::{peer_offload, PeerOffload};
/// let ifindex = xdpip::iface::index_of("veth0").unwrap();
/// if let PeerOffload::On(peer) = peer_offload(ifindex) {
///     println!("{peer} hands over partial checksums");
/// }
/// ```
pub fn peer_offload(ifindex: u32) -> PeerOffload {
    let (peer, nsid) = match peer_of(ifindex) {
        Ok(Some(p)) => p,
        Ok(None) => return PeerOffload::Unknown("the link names no peer".into()),
        Err(e) => return PeerOffload::Unknown(format!("its link attributes: {e}")),
    };
    let Some(nsid) = nsid else {
        return offload_here(peer, "in this namespace");
    };
    let Some((path, file)) = find_namespace(nsid) else {
        return PeerOffload::Unknown(format!(
            "its peer (index {peer}) is in namespace id {nsid}, which has no name under \
             /run/netns and no process this engine can see"
        ));
    };
    let place = format!("in namespace {}", path.display());
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: an open namespace file; setns changes only this
            // short-lived thread.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return PeerOffload::Unknown(format!(
                    "its peer is {place}, which the engine cannot enter: {}",
                    std::io::Error::last_os_error()
                ));
            }
            offload_here(peer, &place)
        })
        .join()
        .unwrap_or_else(|_| PeerOffload::Unknown("the namespace thread panicked".into()))
    })
}

/// The offload of interface `ifindex` of the current thread's namespace.
fn offload_here(ifindex: u32, place: &str) -> PeerOffload {
    let Some(name) = crate::iface::name_of(ifindex) else {
        return PeerOffload::Unknown(format!("no interface with index {ifindex} {place}"));
    };
    let peer = format!("{name} {place}");
    match crate::iface::tx_checksum_offload(&name) {
        Ok(true) => PeerOffload::On(peer),
        Ok(false) => PeerOffload::Off(peer),
        Err(e) => PeerOffload::Unknown(format!("{peer}: {e}")),
    }
}

/// The peer's index and its namespace id (none: the same namespace).
fn peer_of(ifindex: u32) -> std::io::Result<Option<(u32, Option<i32>)>> {
    let mut nl = Netlink::new()?;
    let mut m = LinkMessage::default();
    m.header.index = ifindex;
    let RouteNetlinkMessage::NewLink(l) = nl.query(RouteNetlinkMessage::GetLink(m))? else {
        return Ok(None);
    };
    let mut peer = None;
    let mut nsid = None;
    for a in &l.attributes {
        match a {
            LinkAttribute::Link(p) => peer = Some(*p),
            LinkAttribute::LinkNetNsId(n) => nsid = Some(*n),
            _ => {}
        }
    }
    Ok(peer.map(|p| (p, nsid)))
}

/// The id this namespace gives the namespace of `file`, if it gave one.
fn nsid_of(nl: &mut Netlink, file: &File) -> Option<i32> {
    let mut m = NsidMessage::default();
    m.attributes
        .push(NsidAttribute::Fd(file.as_raw_fd() as u32));
    match nl.query(RouteNetlinkMessage::GetNsId(m)).ok()? {
        RouteNetlinkMessage::NewNsId(r) => r.attributes.iter().find_map(|a| match a {
            NsidAttribute::Id(id) if *id >= 0 => Some(*id),
            _ => None,
        }),
        _ => None,
    }
}

/// A file of the namespace whose id is `nsid`: named ones first, then
/// those of processes, each namespace asked once.
fn find_namespace(nsid: i32) -> Option<(PathBuf, File)> {
    let mut nl = Netlink::new().ok()?;
    let own = std::fs::metadata("/proc/thread-self/ns/net").ok()?.ino();
    let mut seen = std::collections::HashSet::from([own]);
    let named = ["/run/netns", "/var/run/netns"]
        .iter()
        .filter_map(|d| std::fs::read_dir(d).ok())
        .flatten()
        .flatten()
        .map(|e| e.path());
    let processes = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .map(|e| e.path().join("ns/net"));
    for path in named.chain(processes) {
        let Some(file) = open_new(&path, &mut seen) else {
            continue;
        };
        if nsid_of(&mut nl, &file) == Some(nsid) {
            return Some((path, file));
        }
    }
    None
}

/// Opens a namespace file not seen before (by inode).
fn open_new(path: &Path, seen: &mut std::collections::HashSet<u64>) -> Option<File> {
    let ino = std::fs::metadata(path).ok()?.ino();
    if !seen.insert(ino) {
        return None;
    }
    File::open(path).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_has_no_peer() {
        let lo = crate::iface::index_of("lo").unwrap();
        assert!(matches!(peer_offload(lo), PeerOffload::Unknown(_)));
    }
}
