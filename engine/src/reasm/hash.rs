//! SipHash-1-3, keyed: the hash of the reassembly table and of the
//! worker that owns a datagram.
//!
//! A keyed PRF rather than a fast unkeyed mix because the keys of the
//! reassembly table come from the network: with a known hash an attacker
//! could pile every queue into one bucket, or every fragment onto one
//! worker. Linux does the same with `jhash2` and a random seed. The key is
//! chosen at random when the engine starts ([`random_seed`]).

use std::hash::{BuildHasher, Hasher};

/// SipHash with `C` compression and `D` finalization rounds over a message
/// given as 64-bit little-endian words. `sip::<1, 3>` is SipHash-1-3 (what
/// Rust's `HashMap` uses); `sip::<2, 4>` is the reference SipHash-2-4.
#[derive(Clone, Copy)]
struct State<const C: usize, const D: usize> {
    v: [u64; 4],
    words: u64,
}

impl<const C: usize, const D: usize> State<C, D> {
    #[inline]
    fn new(k0: u64, k1: u64) -> Self {
        State {
            v: [
                k0 ^ 0x736f_6d65_7073_6575,
                k1 ^ 0x646f_7261_6e64_6f6d,
                k0 ^ 0x6c79_6765_6e65_7261,
                k1 ^ 0x7465_6462_7974_6573,
            ],
            words: 0,
        }
    }

    #[inline(always)]
    fn round(v: &mut [u64; 4]) {
        v[0] = v[0].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(13);
        v[1] ^= v[0];
        v[0] = v[0].rotate_left(32);
        v[2] = v[2].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(16);
        v[3] ^= v[2];
        v[0] = v[0].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(21);
        v[3] ^= v[0];
        v[2] = v[2].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(17);
        v[1] ^= v[2];
        v[2] = v[2].rotate_left(32);
    }

    #[inline]
    fn word(&mut self, m: u64) {
        self.v[3] ^= m;
        for _ in 0..C {
            Self::round(&mut self.v);
        }
        self.v[0] ^= m;
        self.words += 1;
    }

    /// Ends a message of whole words: the last block holds only the length.
    #[inline]
    fn finish(mut self) -> u64 {
        let b = (self.words.wrapping_mul(8) & 0xff) << 56;
        self.v[3] ^= b;
        for _ in 0..C {
            Self::round(&mut self.v);
        }
        self.v[0] ^= b;
        self.v[2] ^= 0xff;
        for _ in 0..D {
            Self::round(&mut self.v);
        }
        self.v[0] ^ self.v[1] ^ self.v[2] ^ self.v[3]
    }
}

/// SipHash-1-3 of `words` (as their little-endian bytes) under key
/// `(k0, k1)`.
#[inline]
pub fn siphash13(k0: u64, k1: u64, words: &[u64]) -> u64 {
    let mut s = State::<1, 3>::new(k0, k1);
    for &w in words {
        s.word(w);
    }
    s.finish()
}

/// Splits a 128-bit seed into SipHash's two key words.
#[inline]
pub fn keys(seed: u128) -> (u64, u64) {
    (seed as u64, (seed >> 64) as u64)
}

/// 128 random bits for a seed, from the operating system's generator
/// through the standard library's `RandomState` (each `RandomState` is
/// keyed from OS entropy at the first use in a thread, then varied).
/// Called once at start, never on the fast path.
pub fn random_seed() -> u128 {
    use std::collections::hash_map::RandomState;
    let a = RandomState::new().hash_one(0x5eed_u64);
    let b = RandomState::new().hash_one(0xfeed_u64);
    (a as u128) << 64 | b as u128
}

/// A [`BuildHasher`] of keyed SipHash-1-3 for the reassembly table's maps.
#[derive(Clone, Copy, Debug)]
pub struct SipBuild {
    k0: u64,
    k1: u64,
}

impl SipBuild {
    /// A builder keyed by `seed`.
    pub fn new(seed: u128) -> Self {
        let (k0, k1) = keys(seed);
        SipBuild { k0, k1 }
    }
}

impl BuildHasher for SipBuild {
    type Hasher = SipHasher13;
    #[inline]
    fn build_hasher(&self) -> SipHasher13 {
        SipHasher13(State::new(self.k0, self.k1))
    }
}

/// Keyed SipHash-1-3 as a [`Hasher`]. The keys hashed here write whole
/// integers (`write_u64`, `write_u32`…), each taken as one 64-bit word;
/// `write` of a byte slice is padded to whole words. The result is a keyed
/// PRF of what was written, though not byte-for-byte SipHash of unaligned
/// input.
#[derive(Clone)]
pub struct SipHasher13(State<1, 3>);

impl Hasher for SipHasher13 {
    #[inline]
    fn finish(&self) -> u64 {
        self.0.finish()
    }

    fn write(&mut self, bytes: &[u8]) {
        for c in bytes.chunks(8) {
            let mut w = [0u8; 8];
            w[..c.len()].copy_from_slice(c);
            self.0.word(u64::from_le_bytes(w));
        }
    }

    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.0.word(i);
    }

    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.0.word(i as u64);
    }

    #[inline]
    fn write_u16(&mut self, i: u16) {
        self.0.word(i as u64);
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.0.word(i as u64);
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.0.word(i as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(deprecated)]
    fn rounds_match_the_reference_siphash_2_4() {
        // std's deprecated SipHasher is SipHash-2-4 on the byte stream; the
        // same rounds here must give the same value for whole words.
        use crate::testutil::XorShift;
        let mut r = XorShift(0xdead_beef_1234_5678);
        for n in 0..6 {
            let (k0, k1) = (r.next(), r.next());
            let words: Vec<u64> = (0..n).map(|_| r.next()).collect();
            let mut reference = std::hash::SipHasher::new_with_keys(k0, k1);
            for w in &words {
                reference.write(&w.to_le_bytes());
            }
            let mut s = State::<2, 4>::new(k0, k1);
            for &w in &words {
                s.word(w);
            }
            assert_eq!(s.finish(), reference.finish(), "{n} words");
        }
    }

    #[test]
    fn keyed_hash_depends_on_the_key() {
        let a = siphash13(1, 2, &[42, 43]);
        assert_ne!(a, siphash13(1, 3, &[42, 43]));
        assert_ne!(a, siphash13(1, 2, &[42, 44]));
        assert_eq!(a, siphash13(1, 2, &[42, 43]));
        assert_ne!(random_seed(), random_seed());
    }
}
