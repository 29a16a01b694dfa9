//! UDP (RFC 768): the header view and its checksum over the IPv4
//! pseudo-header.

use super::checksum;
use core::fmt;
use std::net::Ipv4Addr;

mod field {
    use core::ops::Range;
    pub const SRC_PORT: Range<usize> = 0..2;
    pub const DST_PORT: Range<usize> = 2..4;
    pub const LENGTH: Range<usize> = 4..6;
    pub const CHECKSUM: Range<usize> = 6..8;
    pub const PAYLOAD: usize = 8;
}

/// Length of the UDP header.
pub const HEADER_LEN: usize = field::PAYLOAD;

/// Why a UDP datagram is refused; each reason is a counter (`UdpInErrors`,
/// `UdpInCsumErrors`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// Shorter than a UDP header.
    Truncated,
    /// The length field is below the header or beyond the IP payload.
    Length {
        /// The length field.
        field: u16,
        /// Bytes the IP payload holds.
        payload: usize,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Truncated => f.write_str("shorter than a UDP header"),
            Error::Length { field, payload } => write!(
                f,
                "UDP length {field} does not fit the {payload} bytes of IP payload"
            ),
        }
    }
}

impl std::error::Error for Error {}

/// A view of a UDP datagram over a byte buffer (the IP payload).
///
/// ```
/// use xdpip::wire::udp::Packet;
/// use std::net::Ipv4Addr;
/// let (src, dst) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
/// let mut buf = [0u8; 8 + 5];
/// let mut p = Packet::new_unchecked(&mut buf[..]);
/// p.set_src_port(4000);
/// p.set_dst_port(7);
/// p.set_len(13);
/// p.payload_mut().copy_from_slice(b"hello");
/// p.fill_checksum(src, dst);
/// let p = Packet::new_checked(&buf[..]).unwrap();
/// assert_eq!((p.src_port(), p.dst_port(), p.payload()), (4000, 7, &b"hello"[..]));
/// assert!(p.verify_checksum(src, dst));
/// ```
#[derive(Debug)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// A view without checks; accessors may panic on a short buffer.
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// A view of a datagram whose length field fits the buffer; once this
    /// succeeds no accessor panics.
    pub fn new_checked(buffer: T) -> Result<Packet<T>, Error> {
        let p = Packet { buffer };
        p.check_len()?;
        Ok(p)
    }

    /// Checks the header and length field against the buffer.
    pub fn check_len(&self) -> Result<(), Error> {
        let b = self.buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let field = u16::from_be_bytes([b[4], b[5]]);
        if (field as usize) < HEADER_LEN || field as usize > b.len() {
            return Err(Error::Length {
                field,
                payload: b.len(),
            });
        }
        Ok(())
    }

    /// Source port.
    pub fn src_port(&self) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_be_bytes([b[field::SRC_PORT.start], b[field::SRC_PORT.start + 1]])
    }

    /// Destination port.
    pub fn dst_port(&self) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_be_bytes([b[field::DST_PORT.start], b[field::DST_PORT.start + 1]])
    }

    /// The length field (header and payload).
    pub fn len(&self) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_be_bytes([b[field::LENGTH.start], b[field::LENGTH.start + 1]])
    }

    /// True when the length field says there is no payload.
    pub fn is_empty(&self) -> bool {
        self.len() as usize <= HEADER_LEN
    }

    /// The checksum field; 0 means the sender computed none.
    pub fn checksum(&self) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_be_bytes([b[field::CHECKSUM.start], b[field::CHECKSUM.start + 1]])
    }

    /// The payload, as far as the length field says.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..self.len() as usize]
    }

    /// True when the checksum is absent (0, allowed over IPv4) or verifies
    /// over the pseudo-header.
    pub fn verify_checksum(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        if self.checksum() == 0 {
            return true;
        }
        let b = &self.buffer.as_ref()[..self.len() as usize];
        checksum::fold(checksum::sum(pseudo_sum(src, dst, b.len()), b)) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the source port.
    pub fn set_src_port(&mut self, v: u16) {
        self.buffer.as_mut()[field::SRC_PORT].copy_from_slice(&v.to_be_bytes());
    }

    /// Sets the destination port.
    pub fn set_dst_port(&mut self, v: u16) {
        self.buffer.as_mut()[field::DST_PORT].copy_from_slice(&v.to_be_bytes());
    }

    /// Sets the length field.
    pub fn set_len(&mut self, v: u16) {
        self.buffer.as_mut()[field::LENGTH].copy_from_slice(&v.to_be_bytes());
    }

    /// The payload, writable, as far as the length field says.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = self.len() as usize;
        &mut self.buffer.as_mut()[HEADER_LEN..end]
    }

    /// Computes the checksum over the pseudo-header, header and payload. A
    /// computed 0 is sent as 0xffff (RFC 768), since 0 means "none".
    pub fn fill_checksum(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        let end = self.len() as usize;
        let b = self.buffer.as_mut();
        b[field::CHECKSUM].copy_from_slice(&[0, 0]);
        let c = !checksum::fold(checksum::sum(pseudo_sum(src, dst, end), &b[..end]));
        let c = if c == 0 { 0xffff } else { c };
        b[field::CHECKSUM].copy_from_slice(&c.to_be_bytes());
    }
}

/// The running sum of the IPv4 pseudo-header for UDP of `len` bytes.
fn pseudo_sum(src: Ipv4Addr, dst: Ipv4Addr, len: usize) -> u64 {
    u32::from(src) as u64 + u32::from(dst) as u64 + 17 + len as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_datagram_verifies_and_corruption_is_caught() {
        // 10.0.0.1:4000 -> 10.0.0.2:7 "hi", checksum computed by hand:
        // pseudo 0a00+0001+0a00+0002+0011+000a = 0x141e, header
        // 0fa0+0007+000a = 0x0fb1, data 6869 -> 0x8c38; ~ = 0x73c7.
        let mut d = [0x0f, 0xa0, 0x00, 0x07, 0x00, 0x0a, 0x73, 0xc7, b'h', b'i'];
        let (s, t) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
        assert!(Packet::new_checked(&d[..]).unwrap().verify_checksum(s, t));
        d[9] ^= 1;
        assert!(!Packet::new_checked(&d[..]).unwrap().verify_checksum(s, t));
        // No checksum at all is accepted over IPv4.
        d[6..8].copy_from_slice(&[0, 0]);
        assert!(Packet::new_checked(&d[..]).unwrap().verify_checksum(s, t));
    }

    #[test]
    fn length_field_is_checked() {
        let d = [0, 1, 0, 2, 0, 20, 0, 0, 1, 2];
        assert_eq!(
            Packet::new_checked(&d[..]).unwrap_err(),
            Error::Length {
                field: 20,
                payload: 10
            }
        );
        assert_eq!(Packet::new_checked(&d[..4]).unwrap_err(), Error::Truncated);
        // Shorter than the IP payload is fine: the rest is padding.
        let d = [0, 1, 0, 2, 0, 9, 0, 0, 7, 0, 0];
        assert_eq!(Packet::new_checked(&d[..]).unwrap().payload(), &[7]);
    }
}
