//! The Internet checksum (RFC 1071) and its incremental update (RFC 1624).
//!
//! Sums are accumulated 32 bits at a time into a `u64`, which cannot overflow
//! for any buffer an IPv4 packet can hold, and folded once at the end.

/// Adds `data` to a running one's-complement sum, as big-endian 16-bit words.
/// An odd trailing byte is padded with zero, as RFC 1071 says.
///
/// ```
/// use xdpip::wire::checksum;
/// let sum = checksum::sum(0, &[0x45, 0x00, 0x00, 0x1c]);
/// assert_eq!(checksum::fold(sum), 0x451c);
/// ```
#[inline]
pub fn sum(mut acc: u64, data: &[u8]) -> u64 {
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        acc += u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as u64;
    }
    let rest = chunks.remainder();
    let mut i = 0;
    while i + 1 < rest.len() {
        acc += u16::from_be_bytes([rest[i], rest[i + 1]]) as u64;
        i += 2;
    }
    if i < rest.len() {
        acc += (rest[i] as u64) << 8;
    }
    acc
}

/// Folds a running sum to 16 bits (without complementing it).
#[inline]
pub fn fold(mut acc: u64) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// The checksum of `data`: the complement of its folded sum.
///
/// A buffer that carries its own correct checksum gives 0.
///
/// ```
/// use xdpip::wire::checksum;
/// // An IPv4 header with its checksum in place verifies to zero.
/// let hdr = [0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11,
///            0xb8, 0x61, 0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7];
/// assert_eq!(checksum::checksum(&hdr), 0);
/// ```
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    !fold(sum(0, data))
}

/// Updates checksum `check` for a 16-bit field that changed from `old` to
/// `new`, as RFC 1624 eqn. 3 gives it: `HC' = ~(~HC + ~m + m')`.
///
/// Unlike eqn. 2 of RFC 1141 this never yields 0xffff for a header whose
/// true checksum is 0x0000.
///
/// ```
/// use xdpip::wire::checksum;
/// let mut hdr = [0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11,
///                0xb8, 0x61, 0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7];
/// let old = u16::from_be_bytes([hdr[8], hdr[9]]);
/// hdr[8] -= 1; // TTL 64 -> 63
/// let new = u16::from_be_bytes([hdr[8], hdr[9]]);
/// let check = checksum::update(u16::from_be_bytes([hdr[10], hdr[11]]), old, new);
/// hdr[10..12].copy_from_slice(&check.to_be_bytes());
/// assert_eq!(checksum::checksum(&hdr), 0);
/// ```
#[inline]
pub fn update(check: u16, old: u16, new: u16) -> u16 {
    let acc = (!check) as u64 + (!old) as u64 + new as u64;
    !fold(acc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::XorShift;

    /// Bit-by-bit reference: 16-bit words, end-around carry after each add.
    fn reference(data: &[u8]) -> u16 {
        let mut acc: u32 = 0;
        for pair in data.chunks(2) {
            let w = if pair.len() == 2 {
                u16::from_be_bytes([pair[0], pair[1]])
            } else {
                u16::from_be_bytes([pair[0], 0])
            };
            acc += w as u32;
            acc = (acc & 0xffff) + (acc >> 16);
        }
        !(acc as u16)
    }

    #[test]
    fn matches_reference_on_random_buffers() {
        let mut s = XorShift(0x9e37_79b9_7f4a_7c15);
        for len in 0..300 {
            let buf = s.bytes(len);
            assert_eq!(checksum(&buf), reference(&buf), "len {len}");
        }
        let big = s.bytes(65535);
        assert_eq!(checksum(&big), reference(&big));
        let ones = vec![0xffu8; 65535];
        assert_eq!(checksum(&ones), reference(&ones));
    }

    #[test]
    fn incremental_update_equals_recomputation() {
        let mut s = XorShift(0x1234_5678_9abc_def1);
        for _ in 0..10_000 {
            let mut hdr = [0u8; 20];
            for b in hdr.iter_mut() {
                *b = s.next() as u8;
            }
            hdr[10] = 0;
            hdr[11] = 0;
            let c = checksum(&hdr);
            hdr[10..12].copy_from_slice(&c.to_be_bytes());
            let word = (s.next() % 10) as usize * 2;
            if word == 10 {
                continue;
            }
            let old = u16::from_be_bytes([hdr[word], hdr[word + 1]]);
            let new = s.next() as u16;
            hdr[word..word + 2].copy_from_slice(&new.to_be_bytes());
            let upd = update(c, old, new);
            hdr[10..12].copy_from_slice(&upd.to_be_bytes());
            assert_eq!(checksum(&hdr), 0, "update must keep the header valid");
        }
    }

    #[test]
    fn rfc1624_example_never_gives_negative_zero() {
        // RFC 1624 section 4: a header whose checksum field must become 0x0000.
        // ~(~0xdd2f + ~0x5555 + 0x3285) = 0x0000 (eqn. 3), not 0xffff (eqn. 2).
        assert_eq!(update(0xdd2f, 0x5555, 0x3285), 0x0000);
    }
}
