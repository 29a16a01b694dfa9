//! Facts about interfaces, read the way an operator reads them (`ip -j`,
//! `ethtool -S`), and thread placement.

use serde_json::Value;
use std::collections::BTreeMap;
use std::io;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

/// Runs `ip [-n NS] ARGS` (JSON output expected) and parses it.
fn ip_json(netns: Option<&str>, args: &[&str]) -> io::Result<Value> {
    let mut c = Command::new("ip");
    if let Some(ns) = netns {
        c.args(["-n", ns]);
    }
    let out = c
        .arg("-j")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| io::Error::other(format!("running ip (iproute2): {e}")))?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "`ip -j {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    serde_json::from_slice(&out.stdout)
        .map_err(|e| io::Error::other(format!("`ip -j {}`: {e}", args.join(" "))))
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut m = [0u8; 6];
    let mut parts = s.split(':');
    for d in m.iter_mut() {
        *d = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(m)
}

/// Parses a MAC address given on the command line.
pub fn mac_arg(s: &str) -> Result<[u8; 6], String> {
    parse_mac(s).ok_or_else(|| format!("{s:?} is not a MAC address (aa:bb:cc:dd:ee:ff)"))
}

/// What the generator needs to know about its interface.
#[derive(Debug, Clone)]
pub struct IfaceInfo {
    /// ifindex.
    pub ifindex: u32,
    /// MAC address.
    pub mac: [u8; 6],
    /// MTU.
    pub mtu: u32,
    /// First IPv4 address, if any.
    pub addr: Option<Ipv4Addr>,
    /// Driver-independent state: UP or not.
    pub up: bool,
}

/// Reads `ip -j addr show dev NAME` in the current namespace (or `netns`).
pub fn iface(netns: Option<&str>, name: &str) -> io::Result<IfaceInfo> {
    let v = ip_json(netns, &["addr", "show", "dev", name]).map_err(|e| {
        io::Error::other(format!(
            "interface {name}: {e} (is it in this network namespace?)"
        ))
    })?;
    let l = &v[0];
    let mac = l["address"]
        .as_str()
        .and_then(parse_mac)
        .ok_or_else(|| io::Error::other(format!("{name} has no Ethernet address")))?;
    let addr = l["addr_info"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["family"] == "inet")
        .and_then(|a| a["local"].as_str())
        .and_then(|a| a.parse().ok());
    Ok(IfaceInfo {
        ifindex: l["ifindex"].as_u64().unwrap_or(0) as u32,
        mac,
        mtu: l["mtu"].as_u64().unwrap_or(1500) as u32,
        addr,
        up: l["flags"]
            .as_array()
            .is_some_and(|f| f.iter().any(|x| x == "UP")),
    })
}

/// The MAC address frames to `dst` leave `dev` for: the neighbour entry of
/// the route's gateway (or of `dst` itself when on link).
pub fn next_hop_mac(dev: &str, dst: Ipv4Addr) -> io::Result<[u8; 6]> {
    let d = dst.to_string();
    let r = ip_json(None, &["route", "get", &d, "oif", dev])?;
    let hop = r[0]["gateway"].as_str().unwrap_or(&d).to_string();
    let n = ip_json(None, &["neigh", "show", "to", &hop, "dev", dev])?;
    let entry = n.as_array().and_then(|a| a.first());
    let mac = entry
        .and_then(|e| e["lladdr"].as_str())
        .and_then(parse_mac)
        .ok_or_else(|| {
            io::Error::other(format!(
                "no neighbour entry for the next hop {hop} on {dev}: ping {d} once first, or \
                 pass --dst-mac"
            ))
        })?;
    Ok(mac)
}

/// Packet counters of an interface as `ip -s link` shows them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct LinkCounters {
    /// RX packets.
    pub rx_packets: u64,
    /// RX dropped.
    pub rx_dropped: u64,
    /// TX packets.
    pub tx_packets: u64,
    /// TX dropped.
    pub tx_dropped: u64,
}

impl LinkCounters {
    /// Counter differences since `before`.
    pub fn since(&self, before: &LinkCounters) -> LinkCounters {
        LinkCounters {
            rx_packets: self.rx_packets.wrapping_sub(before.rx_packets),
            rx_dropped: self.rx_dropped.wrapping_sub(before.rx_dropped),
            tx_packets: self.tx_packets.wrapping_sub(before.tx_packets),
            tx_dropped: self.tx_dropped.wrapping_sub(before.tx_dropped),
        }
    }
}

/// Reads `ip -s link show dev NAME` (of `netns`, or the current one).
pub fn link_counters(netns: Option<&str>, name: &str) -> io::Result<LinkCounters> {
    let v = ip_json(netns, &["-s", "link", "show", "dev", name])?;
    let s = &v[0]["stats64"];
    let g = |dir: &str, k: &str| s[dir][k].as_u64().unwrap_or(0);
    Ok(LinkCounters {
        rx_packets: g("rx", "packets"),
        rx_dropped: g("rx", "dropped"),
        tx_packets: g("tx", "packets"),
        tx_dropped: g("tx", "dropped"),
    })
}

/// `ethtool -S NAME` of `netns` (or the current one); empty when ethtool is
/// missing or the driver has no statistics.
pub fn ethtool_stats(netns: Option<&str>, name: &str) -> BTreeMap<String, u64> {
    let mut c = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, "ethtool", "-S", name]);
            c
        }
        None => {
            let mut c = Command::new("ethtool");
            c.args(["-S", name]);
            c
        }
    };
    let Ok(out) = c.stdin(Stdio::null()).stderr(Stdio::null()).output() else {
        return BTreeMap::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.trim().to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

/// Sum of the `ethtool -S` counters whose names end with `suffix`.
pub fn stat_sum(stats: &BTreeMap<String, u64>, prefix: &str, suffix: &str) -> u64 {
    stats
        .iter()
        .filter(|(k, _)| k.starts_with(prefix) && k.ends_with(suffix))
        .map(|(_, v)| v)
        .sum()
}

/// Pins the calling thread to `core`, failing with the cores there are.
pub fn pin(core: usize) -> io::Result<()> {
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    if !cores.iter().any(|c| c.id == core) {
        return Err(io::Error::other(format!(
            "no core {core} to pin to (this machine has {})",
            cores.len()
        )));
    }
    if !core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
        return Err(io::Error::other(format!("could not pin to core {core}")));
    }
    Ok(())
}

/// Lets the calling thread's sleeps end on time (timer slack of 1 ns
/// instead of 50 µs), for pacing.
pub fn tight_timer_slack() {
    // SAFETY: prctl(PR_SET_TIMERSLACK) takes an integer argument.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1u64, 0u64, 0u64, 0u64) };
}

/// Sleeps until `deadline_ns` of CLOCK_MONOTONIC.
pub fn sleep_until(deadline_ns: u64) {
    let ts = libc::timespec {
        tv_sec: (deadline_ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (deadline_ns % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: ts is valid; a null remainder is allowed with TIMER_ABSTIME.
    unsafe {
        libc::clock_nanosleep(
            libc::CLOCK_MONOTONIC,
            libc::TIMER_ABSTIME,
            &ts,
            std::ptr::null_mut(),
        )
    };
}

/// True when running as root (effective uid 0).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_parse() {
        let m = mac_arg("02:00:0a:ff:00:01").unwrap();
        assert_eq!(m, [2, 0, 10, 255, 0, 1]);
        assert!(mac_arg("02:00:0a:ff:00").is_err());
        assert!(mac_arg("02:00:0a:ff:00:01:02").is_err());
    }

    #[test]
    fn loopback_has_counters() {
        // Any Linux machine with iproute2 has lo.
        if Command::new("ip").arg("-V").output().is_err() {
            return;
        }
        let c = link_counters(None, "lo").unwrap();
        let again = link_counters(None, "lo").unwrap();
        assert!(again.rx_packets >= c.rx_packets);
    }
}
