//! IPv4 headers (RFC 791).
//!
//! [`Packet`] is a view over untrusted bytes: [`Packet::new_checked`] runs the
//! checks of Linux's `ip_rcv_core()` (except the checksum, which the worker
//! verifies for a whole batch), after which no accessor can panic.

use super::checksum;
use core::fmt;
use std::net::Ipv4Addr;

mod field {
    use core::ops::Range;
    pub const VER_IHL: usize = 0;
    pub const DSCP_ECN: usize = 1;
    pub const LENGTH: Range<usize> = 2..4;
    pub const IDENT: Range<usize> = 4..6;
    pub const FLG_OFF: Range<usize> = 6..8;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: Range<usize> = 10..12;
    pub const SRC: Range<usize> = 12..16;
    pub const DST: Range<usize> = 16..20;
}

/// Length of a header without options.
pub const MIN_HEADER_LEN: usize = 20;

/// IP protocol numbers the engine names.
pub mod protocol {
    /// ICMP
    pub const ICMP: u8 = 1;
    /// TCP
    pub const TCP: u8 = 6;
    /// UDP
    pub const UDP: u8 = 17;
}

/// Why a buffer is not a valid IPv4 packet. Each reason maps to the IP-MIB
/// counter Linux increments for it ([`Error::mib_counter`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// Shorter than 20 bytes, or than the header length field says.
    Truncated,
    /// The version field is not 4.
    Version(u8),
    /// The header length field is below 5 (20 bytes).
    HeaderLength(u8),
    /// The header checksum does not verify.
    Checksum,
    /// The total length field is smaller than the header.
    TotalLengthBelowHeader(u16),
    /// The frame holds fewer bytes than the total length field says.
    TotalLengthBeyondFrame {
        /// the total length field
        total: u16,
        /// bytes available
        available: usize,
    },
}

impl Error {
    /// The IP-MIB counter Linux increments for this reason, as `nstat` names
    /// it without the `Ip` prefix.
    pub fn mib_counter(&self) -> &'static str {
        match self {
            Error::TotalLengthBeyondFrame { .. } => "InTruncatedPkts",
            Error::Checksum => "InCsumErrors",
            _ => "InHdrErrors",
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Truncated => f.write_str("truncated IPv4 header"),
            Error::Version(v) => write!(f, "IP version {v}, not 4"),
            Error::HeaderLength(ihl) => write!(f, "IHL {ihl} below 5"),
            Error::Checksum => f.write_str("bad IPv4 header checksum"),
            Error::TotalLengthBelowHeader(t) => {
                write!(f, "total length {t} smaller than the header")
            }
            Error::TotalLengthBeyondFrame { total, available } => {
                write!(
                    f,
                    "total length {total} beyond the {available} bytes received"
                )
            }
        }
    }
}

impl std::error::Error for Error {}

/// A view of an IPv4 packet over a byte buffer.
///
/// ```
/// use xdpip::wire::ipv4::{Packet, Repr, protocol};
/// use std::net::Ipv4Addr;
///
/// let repr = Repr {
///     src: Ipv4Addr::new(10, 0, 0, 1),
///     dst: Ipv4Addr::new(10, 0, 1, 1),
///     protocol: protocol::UDP,
///     ttl: 64,
///     payload_len: 8,
///     ..Repr::default()
/// };
/// let mut buf = vec![0u8; repr.buffer_len()];
/// repr.emit(&mut Packet::new_unchecked(&mut buf[..]));
///
/// let pkt = Packet::new_checked(&buf[..]).unwrap();
/// assert!(pkt.verify_checksum());
/// assert_eq!(pkt.ttl(), 64);
/// assert_eq!(Repr::parse(&pkt).unwrap(), repr);
/// ```
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking it. Accessors may panic on a buffer
    /// that [`Packet::check_len`] would refuse.
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps a buffer after [`Packet::check_len`].
    pub fn new_checked(buffer: T) -> Result<Packet<T>, Error> {
        let p = Packet::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// The checks of `ip_rcv_core()` that come before the checksum: at least
    /// 20 bytes, version 4, IHL at least 5, the whole header present.
    pub fn check_header(&self) -> Result<(), Error> {
        let b = self.buffer.as_ref();
        if b.len() < MIN_HEADER_LEN {
            return Err(Error::Truncated);
        }
        let ihl = b[field::VER_IHL] & 0x0f;
        let version = b[field::VER_IHL] >> 4;
        if ihl < 5 {
            return Err(Error::HeaderLength(ihl));
        }
        if version != 4 {
            return Err(Error::Version(version));
        }
        if b.len() < ihl as usize * 4 {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// [`Packet::check_header`], then the total length against the header
    /// and the buffer. After this no accessor panics.
    pub fn check_len(&self) -> Result<(), Error> {
        self.check_header()?;
        let total = self.total_len();
        let available = self.buffer.as_ref().len();
        if (total as usize) > available {
            return Err(Error::TotalLengthBeyondFrame { total, available });
        }
        if (total as usize) < self.header_len() {
            return Err(Error::TotalLengthBelowHeader(total));
        }
        Ok(())
    }

    /// Gives the buffer back.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The underlying bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// Version field.
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// Header length in bytes (IHL × 4).
    pub fn header_len(&self) -> usize {
        (self.buffer.as_ref()[field::VER_IHL] & 0x0f) as usize * 4
    }

    /// DSCP and ECN, the old TOS byte.
    pub fn tos(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN]
    }

    /// Total length field.
    pub fn total_len(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::LENGTH];
        u16::from_be_bytes([b[0], b[1]])
    }

    /// Identification field.
    pub fn ident(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::IDENT];
        u16::from_be_bytes([b[0], b[1]])
    }

    fn flg_off(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::FLG_OFF];
        u16::from_be_bytes([b[0], b[1]])
    }

    /// Don't Fragment flag.
    pub fn dont_frag(&self) -> bool {
        self.flg_off() & 0x4000 != 0
    }

    /// More Fragments flag.
    pub fn more_frags(&self) -> bool {
        self.flg_off() & 0x2000 != 0
    }

    /// Fragment offset in bytes.
    pub fn frag_offset(&self) -> u16 {
        (self.flg_off() & 0x1fff) * 8
    }

    /// True for any fragment (offset or MF set).
    pub fn is_fragment(&self) -> bool {
        self.flg_off() & 0x3fff != 0
    }

    /// Time to live.
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    /// Protocol of the payload.
    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL]
    }

    /// Header checksum field.
    pub fn checksum(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::CHECKSUM];
        u16::from_be_bytes([b[0], b[1]])
    }

    /// Source address.
    pub fn src(&self) -> Ipv4Addr {
        let b = &self.buffer.as_ref()[field::SRC];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }

    /// Destination address.
    pub fn dst(&self) -> Ipv4Addr {
        let b = &self.buffer.as_ref()[field::DST];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }

    /// True when the header checksum verifies.
    pub fn verify_checksum(&self) -> bool {
        checksum::checksum(&self.buffer.as_ref()[..self.header_len()]) == 0
    }

    /// The options bytes (empty when IHL is 5).
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[MIN_HEADER_LEN..self.header_len()]
    }

    /// The payload, up to the total length.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..self.total_len() as usize]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// The underlying bytes, mutable (for in-place option processing).
    pub fn as_mut_bytes(&mut self) -> &mut [u8] {
        self.buffer.as_mut()
    }

    /// Sets version 4 and the header length in bytes (a multiple of 4).
    pub fn set_version_and_header_len(&mut self, header_len: usize) {
        self.buffer.as_mut()[field::VER_IHL] = 0x40 | ((header_len / 4) as u8 & 0x0f);
    }

    /// Sets DSCP and ECN.
    pub fn set_tos(&mut self, tos: u8) {
        self.buffer.as_mut()[field::DSCP_ECN] = tos;
    }

    /// Sets the total length field.
    pub fn set_total_len(&mut self, len: u16) {
        self.buffer.as_mut()[field::LENGTH].copy_from_slice(&len.to_be_bytes());
    }

    /// Sets the identification field.
    pub fn set_ident(&mut self, id: u16) {
        self.buffer.as_mut()[field::IDENT].copy_from_slice(&id.to_be_bytes());
    }

    /// Sets flags and fragment offset (in bytes, a multiple of 8).
    pub fn set_flags_and_offset(&mut self, dont_frag: bool, more_frags: bool, offset: u16) {
        let v = (dont_frag as u16) << 14 | (more_frags as u16) << 13 | (offset / 8);
        self.buffer.as_mut()[field::FLG_OFF].copy_from_slice(&v.to_be_bytes());
    }

    /// Sets the time to live, leaving the checksum alone.
    pub fn set_ttl(&mut self, ttl: u8) {
        self.buffer.as_mut()[field::TTL] = ttl;
    }

    /// Sets the protocol.
    pub fn set_protocol(&mut self, p: u8) {
        self.buffer.as_mut()[field::PROTOCOL] = p;
    }

    /// Sets the checksum field.
    pub fn set_checksum(&mut self, c: u16) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&c.to_be_bytes());
    }

    /// Sets the source address.
    pub fn set_src(&mut self, a: Ipv4Addr) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&a.octets());
    }

    /// Sets the destination address.
    pub fn set_dst(&mut self, a: Ipv4Addr) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&a.octets());
    }

    /// Computes and stores the header checksum.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = checksum::checksum(&self.buffer.as_ref()[..self.header_len()]);
        self.set_checksum(c);
    }

    /// Decrements the TTL and updates the checksum incrementally
    /// (RFC 1624), as a router does. The caller has checked TTL > 1.
    pub fn decrement_ttl(&mut self) {
        let b = self.buffer.as_mut();
        b[field::TTL] = b[field::TTL].wrapping_sub(1);
        let c = u16::from_be_bytes([b[field::CHECKSUM.start], b[field::CHECKSUM.start + 1]]);
        b[field::CHECKSUM].copy_from_slice(&ttl_decremented_checksum(c).to_be_bytes());
    }

    /// The payload, mutable, up to the total length.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (h, t) = (self.header_len(), self.total_len() as usize);
        &mut self.buffer.as_mut()[h..t]
    }
}

/// The fields of an IPv4 header without options, parsed or to be emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Payload protocol.
    pub protocol: u8,
    /// Time to live.
    pub ttl: u8,
    /// DSCP and ECN.
    pub tos: u8,
    /// Identification.
    pub ident: u16,
    /// Don't Fragment.
    pub dont_frag: bool,
    /// Length of the payload in bytes.
    pub payload_len: usize,
}

impl Default for Repr {
    fn default() -> Self {
        Repr {
            src: Ipv4Addr::UNSPECIFIED,
            dst: Ipv4Addr::UNSPECIFIED,
            protocol: 0,
            ttl: 64,
            tos: 0,
            ident: 0,
            dont_frag: false,
            payload_len: 0,
        }
    }
}

impl Repr {
    /// Parses a checked packet that is neither a fragment nor carries options
    /// and whose checksum verifies.
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Result<Repr, Error> {
        p.check_len()?;
        if !p.verify_checksum() {
            return Err(Error::Checksum);
        }
        Ok(Repr {
            src: p.src(),
            dst: p.dst(),
            protocol: p.protocol(),
            ttl: p.ttl(),
            tos: p.tos(),
            ident: p.ident(),
            dont_frag: p.dont_frag(),
            payload_len: p.total_len() as usize - p.header_len(),
        })
    }

    /// Bytes the header and payload take.
    pub fn buffer_len(&self) -> usize {
        MIN_HEADER_LEN + self.payload_len
    }

    /// Writes the header, with its checksum, into the front of `p`.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Packet<T>) {
        p.set_version_and_header_len(MIN_HEADER_LEN);
        p.set_tos(self.tos);
        p.set_total_len((MIN_HEADER_LEN + self.payload_len) as u16);
        p.set_ident(self.ident);
        p.set_flags_and_offset(self.dont_frag, false, 0);
        p.set_ttl(self.ttl);
        p.set_protocol(self.protocol);
        p.set_src(self.src);
        p.set_dst(self.dst);
        p.fill_checksum();
    }
}

/// The header checksum after the TTL is decremented by one, as the
/// kernel's `ip_decrease_ttl()` updates it: the TTL is the high byte of its
/// 16-bit word, so the sum gains 0x0100, with the end-around carry. The
/// same as RFC 1624 eqn. 3 for every checksum (a unit test checks all).
///
/// ```
/// use xdpip::wire::{checksum, ipv4};
/// let mut hdr = [0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11,
///                0xb8, 0x61, 0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7];
/// hdr[8] -= 1;
/// let c = ipv4::ttl_decremented_checksum(u16::from_be_bytes([hdr[10], hdr[11]]));
/// hdr[10..12].copy_from_slice(&c.to_be_bytes());
/// assert_eq!(checksum::checksum(&hdr), 0);
/// ```
#[inline(always)]
pub fn ttl_decremented_checksum(check: u16) -> u16 {
    let c = check as u32 + 0x0100;
    (c + (c >= 0xffff) as u32) as u16
}

/// [`ttl_decremented_checksum`] on the checksum's two bytes as the header
/// holds them, without byte swaps: a one's complement sum is the same
/// whatever the order of its bytes, so the checksum read little-endian
/// gains 1 where its big-endian value gains 0x0100.
///
/// ```
/// use xdpip::wire::{checksum, ipv4};
/// let mut hdr = [0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11,
///                0xb8, 0x61, 0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7];
/// hdr[8] -= 1;
/// let c = ipv4::ttl_decremented_checksum_bytes([hdr[10], hdr[11]]);
/// hdr[10..12].copy_from_slice(&c);
/// assert_eq!(checksum::checksum(&hdr), 0);
/// ```
#[inline(always)]
pub fn ttl_decremented_checksum_bytes(check: [u8; 2]) -> [u8; 2] {
    let c = u16::from_le_bytes(check) as u32 + 1;
    ((c + (c >= 0xffff) as u32) as u16).to_le_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_update_in_header_order_agrees_with_the_checksum_update_for_every_checksum() {
        for check in 0..=u16::MAX {
            let [hi, lo] = check.to_be_bytes();
            assert_eq!(
                u16::from_be_bytes(ttl_decremented_checksum_bytes([hi, lo])),
                ttl_decremented_checksum(check),
                "checksum {check:#06x}"
            );
        }
    }

    fn sample() -> Vec<u8> {
        let repr = Repr {
            src: Ipv4Addr::new(192, 168, 0, 1),
            dst: Ipv4Addr::new(192, 168, 0, 199),
            protocol: protocol::UDP,
            ttl: 64,
            ident: 0x1234,
            dont_frag: true,
            payload_len: 12,
            ..Repr::default()
        };
        let mut buf = vec![0u8; repr.buffer_len()];
        repr.emit(&mut Packet::new_unchecked(&mut buf[..]));
        buf
    }

    #[test]
    fn round_trip() {
        let buf = sample();
        let p = Packet::new_checked(&buf[..]).unwrap();
        assert!(p.verify_checksum());
        assert!(p.dont_frag());
        assert!(!p.is_fragment());
        assert_eq!(p.payload().len(), 12);
        assert_eq!(p.ident(), 0x1234);
    }

    #[test]
    fn every_truncation_is_an_error_never_a_panic() {
        let buf = sample();
        for n in 0..buf.len() {
            let r = Packet::new_checked(&buf[..n]);
            match r {
                Err(Error::Truncated) => assert!(n < 20),
                Err(Error::TotalLengthBeyondFrame {
                    total: 32,
                    available,
                }) => {
                    assert_eq!(available, n)
                }
                other => panic!("{n}: {other:?}"),
            }
        }
    }

    #[test]
    fn header_field_errors() {
        let mut b = sample();
        b[0] = 0x44;
        assert_eq!(
            Packet::new_checked(&b[..]).unwrap_err(),
            Error::HeaderLength(4)
        );
        b[0] = 0x65;
        assert_eq!(Packet::new_checked(&b[..]).unwrap_err(), Error::Version(6));
        b[0] = 0x4f; // 60-byte header in a 32-byte buffer
        assert_eq!(Packet::new_checked(&b[..]).unwrap_err(), Error::Truncated);
        let mut b = sample();
        b[2..4].copy_from_slice(&16u16.to_be_bytes());
        assert_eq!(
            Packet::new_checked(&b[..]).unwrap_err(),
            Error::TotalLengthBelowHeader(16)
        );
        assert_eq!(Error::Checksum.mib_counter(), "InCsumErrors");
        assert_eq!(
            Error::TotalLengthBeyondFrame {
                total: 1,
                available: 0
            }
            .mib_counter(),
            "InTruncatedPkts"
        );
        assert_eq!(Error::Version(6).mib_counter(), "InHdrErrors");
    }

    #[test]
    fn ttl_decrement_keeps_checksum_valid() {
        let mut buf = sample();
        for _ in 0..63 {
            let mut p = Packet::new_checked(&mut buf[..]).unwrap();
            p.decrement_ttl();
            assert!(p.verify_checksum());
        }
        assert_eq!(Packet::new_checked(&buf[..]).unwrap().ttl(), 1);
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut s = crate::testutil::XorShift(0xdead_beef);
        for _ in 0..20_000 {
            let len = (s.next() % 80) as usize;
            let buf = s.bytes(len);
            if let Ok(p) = Packet::new_checked(&buf[..]) {
                let _ = (p.payload(), p.options(), p.src(), p.verify_checksum());
            }
        }
    }

    #[test]
    fn ttl_checksum_update_is_rfc_1624_for_every_checksum() {
        for check in 0..=u16::MAX {
            for (ttl, proto) in [(2u8, 17u8), (64, 6), (255, 1), (1, 0)] {
                let old = u16::from_be_bytes([ttl, proto]);
                let new = u16::from_be_bytes([ttl - 1, proto]);
                assert_eq!(
                    ttl_decremented_checksum(check),
                    checksum::update(check, old, new),
                    "check {check:#06x} ttl {ttl}"
                );
            }
        }
    }
}
