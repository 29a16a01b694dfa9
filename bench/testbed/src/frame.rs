//! Building and reading Ethernet/IPv4/UDP frames for tests.
//!
//! Written independently of the engine's `wire` module on purpose: tests use
//! it as a second opinion on what the engine produces.

use crate::Netns;
use std::io;
use std::net::Ipv4Addr;

/// The Internet checksum of `data`.
pub fn checksum(data: &[u8]) -> u16 {
    let mut acc: u32 = 0;
    for c in data.chunks(2) {
        let w = if c.len() == 2 {
            (c[0] as u32) << 8 | c[1] as u32
        } else {
            (c[0] as u32) << 8
        };
        acc += w;
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// The MAC address of `ifname` in `ns`.
pub fn mac_of(ns: &Netns, ifname: &str) -> io::Result<[u8; 6]> {
    let out = ns.ip(&["link", "show", "dev", ifname])?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mac = text
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .ok_or_else(|| io::Error::other(format!("{ifname} has no link/ether address")))?;
    let mut m = [0u8; 6];
    for (d, p) in m.iter_mut().zip(mac.split(':')) {
        *d = u8::from_str_radix(p, 16).map_err(io::Error::other)?;
    }
    Ok(m)
}

/// A UDP datagram in an Ethernet frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpFrame {
    /// Destination MAC.
    pub dst_mac: [u8; 6],
    /// Source MAC.
    pub src_mac: [u8; 6],
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// TTL.
    pub ttl: u8,
    /// IP identification.
    pub ident: u16,
    /// TOS byte.
    pub tos: u8,
    /// Don't Fragment.
    pub df: bool,
    /// Payload.
    pub payload: Vec<u8>,
}

impl UdpFrame {
    /// Serializes with correct IP and UDP checksums.
    pub fn build(&self) -> Vec<u8> {
        let udp_len = 8 + self.payload.len();
        let total = 20 + udp_len;
        let mut f = Vec::with_capacity(14 + total);
        f.extend_from_slice(&self.dst_mac);
        f.extend_from_slice(&self.src_mac);
        f.extend_from_slice(&[0x08, 0x00]);
        f.extend_from_slice(&[0x45, self.tos]);
        f.extend_from_slice(&(total as u16).to_be_bytes());
        f.extend_from_slice(&self.ident.to_be_bytes());
        f.extend_from_slice(&(if self.df { 0x4000u16 } else { 0 }).to_be_bytes());
        f.extend_from_slice(&[self.ttl, 17, 0, 0]);
        f.extend_from_slice(&self.src.octets());
        f.extend_from_slice(&self.dst.octets());
        let c = checksum(&f[14..34]);
        f[24..26].copy_from_slice(&c.to_be_bytes());
        f.extend_from_slice(&self.sport.to_be_bytes());
        f.extend_from_slice(&self.dport.to_be_bytes());
        f.extend_from_slice(&(udp_len as u16).to_be_bytes());
        f.extend_from_slice(&[0, 0]);
        f.extend_from_slice(&self.payload);
        let mut pseudo = Vec::with_capacity(12 + udp_len);
        pseudo.extend_from_slice(&self.src.octets());
        pseudo.extend_from_slice(&self.dst.octets());
        pseudo.extend_from_slice(&[0, 17]);
        pseudo.extend_from_slice(&(udp_len as u16).to_be_bytes());
        pseudo.extend_from_slice(&f[34..]);
        let mut u = checksum(&pseudo);
        if u == 0 {
            u = 0xffff;
        }
        f[40..42].copy_from_slice(&u.to_be_bytes());
        f
    }
}

/// Facts about a captured frame carrying IPv4.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipv4Facts {
    /// Destination MAC.
    pub dst_mac: [u8; 6],
    /// Source MAC.
    pub src_mac: [u8; 6],
    /// TTL.
    pub ttl: u8,
    /// Protocol.
    pub protocol: u8,
    /// Source.
    pub src: Ipv4Addr,
    /// Destination.
    pub dst: Ipv4Addr,
    /// Header checksum verifies.
    pub header_ok: bool,
    /// For UDP: the UDP checksum verifies (or is zero).
    pub udp_ok: Option<bool>,
    /// For UDP: destination port.
    pub dport: Option<u16>,
}

/// Reads an Ethernet frame carrying IPv4; `None` for anything else.
pub fn ipv4_facts(f: &[u8]) -> Option<Ipv4Facts> {
    if f.len() < 34 || f[12..14] != [0x08, 0x00] || f[14] >> 4 != 4 {
        return None;
    }
    let ihl = (f[14] & 0x0f) as usize * 4;
    let total = u16::from_be_bytes([f[16], f[17]]) as usize;
    if ihl < 20 || f.len() < 14 + total || total < ihl {
        return None;
    }
    let ip = &f[14..14 + total];
    let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    let (mut udp_ok, mut dport) = (None, None);
    if ip[9] == 17 && total >= ihl + 8 {
        let udp = &ip[ihl..];
        dport = Some(u16::from_be_bytes([udp[2], udp[3]]));
        let ok = if udp[6..8] == [0, 0] {
            true
        } else {
            let mut pseudo = Vec::new();
            pseudo.extend_from_slice(&ip[12..20]);
            pseudo.extend_from_slice(&[0, 17]);
            pseudo.extend_from_slice(&(udp.len() as u16).to_be_bytes());
            pseudo.extend_from_slice(udp);
            checksum(&pseudo) == 0
        };
        udp_ok = Some(ok);
    }
    let mut dst_mac = [0; 6];
    let mut src_mac = [0; 6];
    dst_mac.copy_from_slice(&f[0..6]);
    src_mac.copy_from_slice(&f[6..12]);
    Some(Ipv4Facts {
        dst_mac,
        src_mac,
        ttl: ip[8],
        protocol: ip[9],
        src,
        dst,
        header_ok: checksum(&ip[..ihl]) == 0,
        udp_ok,
        dport,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_frames_verify() {
        let f = UdpFrame {
            dst_mac: [2, 0, 0, 0, 0, 1],
            src_mac: [2, 0, 0, 0, 0, 2],
            src: Ipv4Addr::new(10, 1, 0, 1),
            dst: Ipv4Addr::new(10, 2, 0, 2),
            sport: 1000,
            dport: 2000,
            ttl: 64,
            ident: 7,
            tos: 0,
            df: true,
            payload: b"hello".to_vec(),
        }
        .build();
        let facts = ipv4_facts(&f).unwrap();
        assert!(facts.header_ok);
        assert_eq!(facts.udp_ok, Some(true));
        assert_eq!(facts.dport, Some(2000));
        let mut bad = f.clone();
        bad[45] ^= 1;
        assert_eq!(ipv4_facts(&bad).unwrap().udp_ok, Some(false));
    }
}
