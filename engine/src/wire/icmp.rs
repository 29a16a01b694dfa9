//! ICMP for IPv4 (RFC 792): the header view and the errors a router sends.

use super::checksum;
use core::fmt;

mod field {
    use core::ops::Range;
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: Range<usize> = 2..4;
    pub const REST: Range<usize> = 4..8;
    pub const DATA: usize = 8;
}

/// Length of the ICMP header.
pub const HEADER_LEN: usize = field::DATA;

/// ICMP message types the engine names.
pub mod msg_type {
    /// Echo reply.
    pub const ECHO_REPLY: u8 = 0;
    /// Destination unreachable.
    pub const DEST_UNREACH: u8 = 3;
    /// Source quench (deprecated, still an error type).
    pub const SOURCE_QUENCH: u8 = 4;
    /// Redirect.
    pub const REDIRECT: u8 = 5;
    /// Echo request.
    pub const ECHO_REQUEST: u8 = 8;
    /// Time exceeded.
    pub const TIME_EXCEEDED: u8 = 11;
    /// Parameter problem.
    pub const PARAM_PROBLEM: u8 = 12;
    /// The highest type Linux knows (`NR_ICMP_TYPES`).
    pub const MAX_KNOWN: u8 = 18;
}

/// True for the types Linux treats as errors (`icmp_pointers[].error`):
/// no error is ever sent in reply to one of these.
pub fn is_error(t: u8) -> bool {
    matches!(
        t,
        msg_type::DEST_UNREACH
            | msg_type::SOURCE_QUENCH
            | msg_type::REDIRECT
            | msg_type::TIME_EXCEEDED
            | msg_type::PARAM_PROBLEM
    )
}

/// The buffer is shorter than an ICMP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Truncated;

impl fmt::Display for Truncated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("shorter than an ICMP header")
    }
}

impl std::error::Error for Truncated {}

/// A view of an ICMP message over a byte buffer (the whole buffer is the
/// message; the checksum covers all of it).
///
/// ```
/// use xdpip::wire::icmp::{Packet, RouterError};
/// let mut buf = [0u8; 8 + 28];
/// let mut p = Packet::new_checked(&mut buf[..]).unwrap();
/// RouterError::TimeExceeded.emit_header(&mut p);
/// p.fill_checksum();
/// assert_eq!((p.msg_type(), p.code()), (11, 0));
/// assert!(p.verify_checksum());
/// ```
#[derive(Debug)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer of at least 8 bytes.
    pub fn new_checked(buffer: T) -> Result<Self, Truncated> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(Truncated);
        }
        Ok(Packet { buffer })
    }

    /// Type.
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE]
    }

    /// Code.
    pub fn code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    /// The four bytes after the checksum (identifier/sequence, MTU, pointer).
    pub fn rest(&self) -> [u8; 4] {
        let b = &self.buffer.as_ref()[field::REST];
        [b[0], b[1], b[2], b[3]]
    }

    /// True when the checksum over the whole message verifies.
    pub fn verify_checksum(&self) -> bool {
        checksum::checksum(self.buffer.as_ref()) == 0
    }

    /// The data after the header.
    pub fn data(&self) -> &[u8] {
        &self.buffer.as_ref()[field::DATA..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets type and code.
    pub fn set_type_code(&mut self, t: u8, c: u8) {
        let b = self.buffer.as_mut();
        b[field::TYPE] = t;
        b[field::CODE] = c;
    }

    /// Sets the four bytes after the checksum.
    pub fn set_rest(&mut self, r: [u8; 4]) {
        self.buffer.as_mut()[field::REST].copy_from_slice(&r);
    }

    /// Computes the checksum over the whole buffer.
    pub fn fill_checksum(&mut self) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&[0, 0]);
        let c = checksum::checksum(self.buffer.as_ref());
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&c.to_be_bytes());
    }

    /// The data after the header, mutable.
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::DATA..]
    }
}

/// An ICMP error a router sends about a packet it could not forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouterError {
    /// Destination unreachable, network (no route).
    NetUnreachable,
    /// Destination unreachable, host (an `unreachable` route).
    HostUnreachable,
    /// Destination unreachable, communication administratively prohibited
    /// (a `prohibit` route; Linux's `ICMP_PKT_FILTERED`).
    AdminProhibited,
    /// Destination unreachable, fragmentation needed and DF set, with the
    /// next-hop MTU.
    FragNeeded {
        /// MTU of the next hop.
        mtu: u16,
    },
    /// Destination unreachable, source route failed.
    SourceRouteFailed,
    /// Destination unreachable, port: a local UDP datagram no socket takes.
    PortUnreachable,
    /// Destination unreachable with another code (a packet filter's
    /// `reject with icmp type host-prohibited` is 10).
    DestUnreachable {
        /// The code.
        code: u8,
    },
    /// Time exceeded in transit (TTL).
    TimeExceeded,
    /// Time exceeded, fragment reassembly time exceeded (`ipfrag_time`).
    ReassemblyTimeExceeded,
    /// Parameter problem, pointing at the offending byte of the header.
    ParameterProblem {
        /// Offset in the IP header.
        pointer: u8,
    },
}

impl RouterError {
    /// ICMP type and code.
    pub fn type_code(self) -> (u8, u8) {
        match self {
            RouterError::NetUnreachable => (msg_type::DEST_UNREACH, 0),
            RouterError::HostUnreachable => (msg_type::DEST_UNREACH, 1),
            RouterError::FragNeeded { .. } => (msg_type::DEST_UNREACH, 4),
            RouterError::PortUnreachable => (msg_type::DEST_UNREACH, 3),
            RouterError::DestUnreachable { code } => (msg_type::DEST_UNREACH, code),
            RouterError::SourceRouteFailed => (msg_type::DEST_UNREACH, 5),
            RouterError::AdminProhibited => (msg_type::DEST_UNREACH, 13),
            RouterError::TimeExceeded => (msg_type::TIME_EXCEEDED, 0),
            RouterError::ReassemblyTimeExceeded => (msg_type::TIME_EXCEEDED, 1),
            RouterError::ParameterProblem { .. } => (msg_type::PARAM_PROBLEM, 0),
        }
    }

    /// The four bytes after the checksum.
    pub fn rest(self) -> [u8; 4] {
        match self {
            RouterError::FragNeeded { mtu } => {
                let m = mtu.to_be_bytes();
                [0, 0, m[0], m[1]]
            }
            RouterError::ParameterProblem { pointer } => [pointer, 0, 0, 0],
            _ => [0; 4],
        }
    }

    /// Writes type, code and the rest of the header (not the checksum).
    pub fn emit_header<T: AsRef<[u8]> + AsMut<[u8]>>(self, p: &mut Packet<T>) {
        let (t, c) = self.type_code();
        p.set_type_code(t, c);
        p.set_rest(self.rest());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_types_and_codes() {
        assert_eq!(
            RouterError::FragNeeded { mtu: 1400 }.rest(),
            [0, 0, 0x05, 0x78]
        );
        assert_eq!(
            RouterError::ParameterProblem { pointer: 22 }.rest(),
            [22, 0, 0, 0]
        );
        assert_eq!(RouterError::AdminProhibited.type_code(), (3, 13));
        for t in 0..=255u8 {
            assert_eq!(is_error(t), [3, 4, 5, 11, 12].contains(&t));
        }
        assert!(Packet::new_checked(&[0u8; 7][..]).is_err());
    }
}
