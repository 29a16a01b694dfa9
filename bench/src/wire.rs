//! The frames the generator sends and the sink reads.
//!
//! Ethernet + IPv4 (no options) + UDP to the sink's port, with the UDP
//! checksum left at zero (none; legal for IPv4, and the same bytes for
//! every router under test). The UDP payload starts with the stamp: the
//! sequence number (u64, big-endian) and the transmit time in nanoseconds
//! of CLOCK_MONOTONIC (u64, big-endian), then a fill pattern.
//!
//! Sizes are Ethernet frame sizes *with* the 4-byte FCS, as RFC 2544 and
//! NIC data sheets count them: `--size 64` sends 60 bytes to the driver.
//! With fragments, every fragment is a separate frame (padded to the
//! Ethernet minimum); the stamp is in the first.

use std::net::Ipv4Addr;
use testbed::frame::checksum;

/// Ethernet + IPv4 + UDP headers.
pub const HDR_LEN: usize = 42;
/// Where the stamp starts in an unfragmented frame or a first fragment.
pub const STAMP_OFFSET: usize = HDR_LEN;
/// Sequence number and timestamp.
pub const STAMP_LEN: usize = 16;
/// The smallest `--size`: headers and stamp, plus the FCS, rounded up to
/// Ethernet's minimum frame.
pub const MIN_SIZE: usize = 64;
/// Ethernet FCS, counted in sizes but not sent to the driver.
pub const FCS: usize = 4;
/// Frames shorter than this (without FCS) are padded.
const MIN_FRAME: usize = 60;

/// What every frame of a run has in common.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameSpec {
    /// Destination MAC (the next hop's).
    pub dst_mac: [u8; 6],
    /// Source MAC (the sending interface's).
    pub src_mac: [u8; 6],
    /// Source address of flow 0.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Source port of flow 0.
    pub sport: u16,
    /// Destination port (the sink's).
    pub dport: u16,
    /// Ethernet frame size with FCS, of an unfragmented datagram.
    pub size: usize,
    /// IP fragments per datagram (1: not fragmented, Don't Fragment set).
    pub fragments: usize,
    /// Flows: flow f has source port `sport + f`...
    pub flows: u32,
    /// ... and source address `src + f % src_addrs`.
    pub src_addrs: u32,
}

impl FrameSpec {
    /// The UDP length of a datagram.
    fn udp_len(&self) -> usize {
        self.size - FCS - 14 - 20
    }

    /// Bytes of IP payload per fragment (a multiple of 8, the first one
    /// holding the UDP header and the stamp).
    fn chunk(&self) -> usize {
        let l = self.udp_len();
        let per = l.div_ceil(self.fragments.max(1));
        (per.div_ceil(8) * 8).max(8 + STAMP_LEN)
    }

    /// Checks the sizes, ports and counts; the error says what to change.
    pub fn validate(&self, mtu: Option<u32>) -> Result<(), String> {
        if self.fragments == 0 {
            return Err("--fragments must be at least 1".into());
        }
        if self.size < MIN_SIZE {
            return Err(format!(
                "--size {} is below {MIN_SIZE} bytes (Ethernet frame with FCS): the headers and \
                 the 16-byte stamp need that much",
                self.size
            ));
        }
        if self.size - FCS - 14 > 65535 {
            return Err(format!("--size {} is beyond an IPv4 datagram", self.size));
        }
        if let Some(mtu) = mtu {
            let largest = mtu as usize + 14 + FCS;
            if self.fragments == 1 && self.size > largest {
                return Err(format!(
                    "--size {} does not fit the interface's MTU {mtu}: at most {largest}, or \
                     send it as fragments (--fragments)",
                    self.size
                ));
            }
            if self.fragments > 1 && 20 + self.chunk() > mtu as usize {
                return Err(format!(
                    "the fragments of a {}-byte frame in {} pieces do not fit the MTU {mtu}: \
                     use more fragments",
                    self.size, self.fragments
                ));
            }
        }
        if self.fragments > 1 {
            let n = self.udp_len().div_ceil(self.chunk());
            if n != self.fragments {
                return Err(format!(
                    "a {}-byte frame does not split into {} fragments of equal size (a multiple \
                     of 8 bytes, the first holding the UDP header and the stamp); {n} would do",
                    self.size, self.fragments
                ));
            }
        }
        if self.flows == 0 || self.src_addrs == 0 {
            return Err("--flows and --src-addrs must be at least 1".into());
        }
        if self.sport as u64 + self.flows as u64 > 65536 {
            return Err(format!(
                "--flows {} from source port {} runs past port 65535",
                self.flows, self.sport
            ));
        }
        if u32::from(self.src) as u64 + self.src_addrs as u64 > 1 << 32 {
            return Err("--src-addrs runs past 255.255.255.255".into());
        }
        Ok(())
    }

    /// Source port and address of flow `f`.
    pub fn flow(&self, f: u32) -> (u16, Ipv4Addr) {
        let f = f % self.flows;
        (
            self.sport + f as u16,
            Ipv4Addr::from(u32::from(self.src) + f % self.src_addrs),
        )
    }

    /// The frames of one datagram of flow `f` with IP identification
    /// `ident`, stamp zeroed. Fragmented datagrams get their IP checksum
    /// fixed per datagram by [`set_ident`].
    pub fn datagram(&self, f: u32, ident: u16) -> Vec<Vec<u8>> {
        let (sport, src) = self.flow(f);
        let udp_len = self.udp_len();
        let mut udp = Vec::with_capacity(udp_len);
        udp.extend_from_slice(&sport.to_be_bytes());
        udp.extend_from_slice(&self.dport.to_be_bytes());
        udp.extend_from_slice(&(udp_len as u16).to_be_bytes());
        udp.extend_from_slice(&[0, 0]);
        udp.extend_from_slice(&[0; STAMP_LEN]);
        udp.extend((udp.len()..udp_len).map(|i| (i as u8).wrapping_mul(31)));
        let chunk = if self.fragments == 1 {
            udp_len
        } else {
            self.chunk()
        };
        let mut out = Vec::with_capacity(self.fragments);
        for (k, piece) in udp.chunks(chunk).enumerate() {
            let last = (k + 1) * chunk >= udp_len;
            let mut flags_off = (k * chunk / 8) as u16;
            if self.fragments == 1 {
                flags_off |= 0x4000; // DF
            } else if !last {
                flags_off |= 0x2000; // MF
            }
            let total = 20 + piece.len();
            let mut f = Vec::with_capacity((14 + total).max(MIN_FRAME));
            f.extend_from_slice(&self.dst_mac);
            f.extend_from_slice(&self.src_mac);
            f.extend_from_slice(&[0x08, 0x00]);
            f.extend_from_slice(&[0x45, 0]);
            f.extend_from_slice(&(total as u16).to_be_bytes());
            f.extend_from_slice(&ident.to_be_bytes());
            f.extend_from_slice(&flags_off.to_be_bytes());
            f.extend_from_slice(&[64, 17, 0, 0]);
            f.extend_from_slice(&src.octets());
            f.extend_from_slice(&self.dst.octets());
            let c = checksum(&f[14..34]);
            f[24..26].copy_from_slice(&c.to_be_bytes());
            f.extend_from_slice(piece);
            f.resize(f.len().max(MIN_FRAME), 0);
            out.push(f);
        }
        out
    }
}

/// Rewrites the IP identification of a frame and its header checksum.
pub fn set_ident(frame: &mut [u8], ident: u16) {
    frame[18..20].copy_from_slice(&ident.to_be_bytes());
    frame[24..26].copy_from_slice(&[0, 0]);
    let c = checksum(&frame[14..34]);
    frame[24..26].copy_from_slice(&c.to_be_bytes());
}

/// Writes the sequence number of an unfragmented frame or first fragment.
pub fn set_seq(frame: &mut [u8], seq: u64) {
    frame[STAMP_OFFSET..STAMP_OFFSET + 8].copy_from_slice(&seq.to_be_bytes());
}

/// Writes the transmit time (ns of CLOCK_MONOTONIC).
pub fn set_time(frame: &mut [u8], ns: u64) {
    frame[STAMP_OFFSET + 8..STAMP_OFFSET + 16].copy_from_slice(&ns.to_be_bytes());
}

/// What the sink reads from a frame of the generator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// An unfragmented datagram or a first fragment: its stamp.
    Stamped {
        /// Sequence number.
        seq: u64,
        /// Transmit time, ns of CLOCK_MONOTONIC.
        sent_ns: u64,
    },
    /// A fragment other than the first.
    LaterFragment,
    /// Not a frame of the generator.
    Other,
}

/// Reads a received frame.
pub fn read(frame: &[u8], dport: u16) -> Received {
    if frame.len() < 34 || frame[12..14] != [0x08, 0x00] || frame[14] >> 4 != 4 || frame[23] != 17 {
        return Received::Other;
    }
    let ihl = (frame[14] & 0x0f) as usize * 4;
    let off = u16::from_be_bytes([frame[20], frame[21]]) & 0x1fff;
    if off != 0 {
        return Received::LaterFragment;
    }
    let udp = 14 + ihl;
    if frame.len() < udp + 8 + STAMP_LEN || frame[udp + 2..udp + 4] != dport.to_be_bytes() {
        return Received::Other;
    }
    let s = udp + 8;
    let word = |o: usize| u64::from_be_bytes(frame[o..o + 8].try_into().expect("8 bytes"));
    Received::Stamped {
        seq: word(s),
        sent_ns: word(s + 8),
    }
}

/// Now, in ns of CLOCK_MONOTONIC (what the stamps carry; the clock
/// `bpf_ktime_get_ns` reads too).
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use testbed::frame::ipv4_facts;

    fn spec(size: usize, fragments: usize) -> FrameSpec {
        FrameSpec {
            dst_mac: [2, 0, 0, 0, 0, 1],
            src_mac: [2, 0, 0, 0, 0, 2],
            src: Ipv4Addr::new(10, 1, 0, 1),
            dst: Ipv4Addr::new(10, 2, 0, 2),
            sport: 10000,
            dport: 9000,
            size,
            fragments,
            flows: 4,
            src_addrs: 2,
        }
    }

    #[test]
    fn sixty_four_byte_frames_carry_the_stamp() {
        let s = spec(64, 1);
        s.validate(Some(1500)).unwrap();
        let mut d = s.datagram(3, 0);
        assert_eq!(d.len(), 1);
        let f = &mut d[0];
        assert_eq!(f.len(), 60);
        set_seq(f, 77);
        set_time(f, 123_456);
        let facts = ipv4_facts(f).unwrap();
        assert!(facts.header_ok);
        assert_eq!(facts.udp_ok, Some(true), "checksum zero means none");
        assert_eq!(
            facts.src,
            Ipv4Addr::new(10, 1, 0, 2),
            "flow 3 of 2 addresses"
        );
        assert_eq!(u16::from_be_bytes([f[34], f[35]]), 10003);
        assert_eq!(
            read(f, 9000),
            Received::Stamped {
                seq: 77,
                sent_ns: 123_456
            }
        );
        assert_eq!(read(f, 9001), Received::Other);
    }

    #[test]
    fn fragments_split_on_eight_bytes_with_the_stamp_first() {
        let s = spec(64, 2);
        s.validate(Some(1500)).unwrap();
        let mut d = s.datagram(0, 0);
        assert_eq!(d.len(), 2);
        for f in d.iter_mut() {
            set_ident(f, 0x1234);
            assert!(ipv4_facts(f).unwrap().header_ok);
        }
        set_seq(&mut d[0], 5);
        assert!(matches!(
            read(&d[0], 9000),
            Received::Stamped { seq: 5, .. }
        ));
        assert_eq!(read(&d[1], 9000), Received::LaterFragment);
        // 26 bytes of UDP: 24 in the first (MF), 2 at offset 3 (x8).
        assert_eq!(u16::from_be_bytes([d[0][16], d[0][17]]), 20 + 24);
        assert_eq!(u16::from_be_bytes([d[0][20], d[0][21]]), 0x2000);
        assert_eq!(u16::from_be_bytes([d[1][20], d[1][21]]), 3);
        assert!(spec(64, 3).validate(Some(1500)).is_err());
        let big = spec(1518, 4);
        big.validate(Some(1500)).unwrap();
        assert_eq!(big.datagram(0, 1).len(), 4);
    }

    #[test]
    fn bad_sizes_name_the_limit() {
        assert!(spec(60, 1).validate(None).unwrap_err().contains("64"));
        assert!(spec(1600, 1)
            .validate(Some(1500))
            .unwrap_err()
            .contains("at most 1518"));
        let mut s = spec(64, 1);
        s.sport = 65535;
        assert!(s.validate(None).unwrap_err().contains("65535"));
    }
}
