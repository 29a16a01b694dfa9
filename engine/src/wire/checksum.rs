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

/// The same sum as [`sum`] up to folding (`fold(fast_sum(a, d)) ==
/// fold(sum(a, d))`), faster on long buffers (UDP and ICMP payloads): AVX2
/// or SSE2 when the CPU has them, chosen at run time; [`sum`] otherwise.
///
/// The vector paths add the bytes at even and at odd positions separately
/// (`psadbw` sums eight bytes into a 64-bit lane, so nothing can
/// overflow) and weigh the even ones by 256: the big-endian 16-bit words.
///
/// ```
/// use xdpip::wire::checksum;
/// let data: Vec<u8> = (0..1500u32).map(|i| (i * 7) as u8).collect();
/// assert_eq!(
///     checksum::fold(checksum::fast_sum(0, &data)),
///     checksum::fold(checksum::sum(0, &data))
/// );
/// ```
#[inline]
pub fn fast_sum(acc: u64, data: &[u8]) -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        if data.len() >= 64 {
            if std::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU has AVX2, checked just above.
                let (even, odd, done) = unsafe { x86::sum_avx2(data) };
                return sum(acc + (even << 8) + odd, &data[done..]);
            }
            // SAFETY: SSE2 is part of x86_64.
            let (even, odd, done) = unsafe { x86::sum_sse2(data) };
            return sum(acc + (even << 8) + odd, &data[done..]);
        }
    }
    sum(acc, data)
}

/// [`checksum`] through [`fast_sum`].
#[inline]
pub fn fast_checksum(data: &[u8]) -> u16 {
    !fold(fast_sum(0, data))
}

/// Verifies the checksums of a batch of IPv4 headers: `out[i]` is true if
/// `headers[i]` (the header alone, options included) sums to zero, as
/// `checksum(h) == 0`. Headers of 20 bytes, nearly all of them, take a
/// straight-line path of five native-endian 32-bit words. (A 128-bit
/// `psadbw` per header measured slower, 3.4 against 2.6 ns a header: for
/// 20 bytes the horizontal sum costs more than it saves;
/// docs/PERFORMANCE.md.)
///
/// ```
/// use xdpip::wire::checksum;
/// let good = [0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11,
///             0xb8, 0x61, 0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7];
/// let mut bad = good;
/// bad[8] = 0x3f;
/// let mut ok = [false; 2];
/// checksum::verify_headers(&[&good[..], &bad[..]], &mut ok);
/// assert_eq!(ok, [true, false]);
/// ```
///
/// # Panics
///
/// If `out` is shorter than `headers`.
pub fn verify_headers(headers: &[&[u8]], out: &mut [bool]) {
    assert!(out.len() >= headers.len(), "out shorter than headers");
    for (h, o) in headers.iter().zip(out.iter_mut()) {
        *o = header_ok(h);
    }
}

/// [`verify_headers`] for up to 64 headers, as a bit mask: bit `i` set if
/// `headers[i]` verifies.
///
/// # Panics
///
/// If there are more than 64 headers.
pub fn verify_headers_mask(headers: &[&[u8]]) -> u64 {
    assert!(headers.len() <= 64, "more than 64 headers");
    let mut ok = [false; 64];
    verify_headers(headers, &mut ok[..headers.len()]);
    ok.iter()
        .enumerate()
        .fold(0, |m, (i, &b)| m | (b as u64) << i)
}

/// A header sums to 0xffff exactly when its checksum field is right. The
/// sum is taken on native-endian words: the one's complement sum is
/// independent of byte order (RFC 1071 2.B), and 0xffff reads the same
/// both ways.
#[inline(always)]
fn header_ok(h: &[u8]) -> bool {
    if let Ok(w) = <&[u8; 20]>::try_from(h) {
        let word = |i: usize| u32::from_ne_bytes([w[i], w[i + 1], w[i + 2], w[i + 3]]) as u64;
        fold(word(0) + word(4) + word(8) + word(12) + word(16)) == 0xffff
    } else {
        checksum(h) == 0
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// Sums of the bytes at even and at odd offsets of the whole 64-byte
    /// blocks of `data`, and how many bytes that was.
    #[target_feature(enable = "avx2")]
    pub(super) fn sum_avx2(data: &[u8]) -> (u64, u64, usize) {
        let lo_mask = _mm256_set1_epi16(0x00ff);
        let zero = _mm256_setzero_si256();
        let (mut even, mut odd) = (_mm256_setzero_si256(), _mm256_setzero_si256());
        let blocks = data.chunks_exact(64);
        let done = data.len() - blocks.remainder().len();
        for b in blocks {
            // SAFETY: `b` has 64 bytes; loadu takes any alignment.
            let (v0, v1) = unsafe {
                (
                    _mm256_loadu_si256(b.as_ptr() as *const __m256i),
                    _mm256_loadu_si256(b.as_ptr().add(32) as *const __m256i),
                )
            };
            // Byte 2k is the high byte of big-endian word k: the low byte
            // of the little-endian 16-bit lane.
            even = _mm256_add_epi64(even, _mm256_sad_epu8(_mm256_and_si256(v0, lo_mask), zero));
            odd = _mm256_add_epi64(odd, _mm256_sad_epu8(_mm256_srli_epi16(v0, 8), zero));
            even = _mm256_add_epi64(even, _mm256_sad_epu8(_mm256_and_si256(v1, lo_mask), zero));
            odd = _mm256_add_epi64(odd, _mm256_sad_epu8(_mm256_srli_epi16(v1, 8), zero));
        }
        let mut e = [0u64; 4];
        let mut o = [0u64; 4];
        // SAFETY: each array holds 32 bytes; storeu takes any alignment.
        unsafe {
            _mm256_storeu_si256(e.as_mut_ptr() as *mut __m256i, even);
            _mm256_storeu_si256(o.as_mut_ptr() as *mut __m256i, odd);
        }
        (e.iter().sum(), o.iter().sum(), done)
    }

    /// [`sum_avx2`] with 128-bit vectors, over 32-byte blocks.
    #[target_feature(enable = "sse2")]
    pub(super) fn sum_sse2(data: &[u8]) -> (u64, u64, usize) {
        let lo_mask = _mm_set1_epi16(0x00ff);
        let zero = _mm_setzero_si128();
        let (mut even, mut odd) = (_mm_setzero_si128(), _mm_setzero_si128());
        let blocks = data.chunks_exact(32);
        let done = data.len() - blocks.remainder().len();
        for b in blocks {
            // SAFETY: `b` has 32 bytes; loadu takes any alignment.
            let (v0, v1) = unsafe {
                (
                    _mm_loadu_si128(b.as_ptr() as *const __m128i),
                    _mm_loadu_si128(b.as_ptr().add(16) as *const __m128i),
                )
            };
            even = _mm_add_epi64(even, _mm_sad_epu8(_mm_and_si128(v0, lo_mask), zero));
            odd = _mm_add_epi64(odd, _mm_sad_epu8(_mm_srli_epi16(v0, 8), zero));
            even = _mm_add_epi64(even, _mm_sad_epu8(_mm_and_si128(v1, lo_mask), zero));
            odd = _mm_add_epi64(odd, _mm_sad_epu8(_mm_srli_epi16(v1, 8), zero));
        }
        let mut e = [0u64; 2];
        let mut o = [0u64; 2];
        // SAFETY: each array holds 16 bytes; storeu takes any alignment.
        unsafe {
            _mm_storeu_si128(e.as_mut_ptr() as *mut __m128i, even);
            _mm_storeu_si128(o.as_mut_ptr() as *mut __m128i, odd);
        }
        (e[0] + e[1], o[0] + o[1], done)
    }
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
    /// Random lengths and alignments: every path agrees with `sum`.
    #[test]
    fn vector_paths_match_scalar() {
        let mut s = XorShift(0x0123_4567_89ab_cdef);
        let buf = s.bytes(70_000);
        let ones = vec![0xffu8; 70_000];
        for round in 0..3000 {
            let src = if round % 10 == 0 { &ones } else { &buf };
            let len = match round % 3 {
                0 => (s.next() % 200) as usize,
                1 => (s.next() % 2000) as usize,
                _ => (s.next() % 65536) as usize,
            };
            let start = (s.next() % 64) as usize;
            let d = &src[start..start + len];
            let acc = if round % 2 == 0 { 0 } else { s.next() >> 24 };
            let want = fold(sum(acc, d));
            assert_eq!(fold(fast_sum(acc, d)), want, "len {len} at {start}");
            assert_eq!(fast_checksum(d), checksum(d));
            #[cfg(target_arch = "x86_64")]
            {
                // SAFETY: SSE2 is part of x86_64.
                let (e, o, n) = unsafe { x86::sum_sse2(d) };
                assert_eq!(fold(sum(acc + (e << 8) + o, &d[n..])), want, "sse2");
                if std::is_x86_feature_detected!("avx2") {
                    // SAFETY: AVX2 detected just above.
                    let (e, o, n) = unsafe { x86::sum_avx2(d) };
                    assert_eq!(fold(sum(acc + (e << 8) + o, &d[n..])), want, "avx2");
                }
            }
        }
    }

    #[test]
    fn batched_header_verification_matches_scalar() {
        let mut s = XorShift(0xfeed_f00d);
        let mut store = Vec::new();
        for i in 0..500 {
            let ihl = if i % 7 == 0 {
                5 + (s.next() % 11) as usize
            } else {
                5
            };
            let mut h = s.bytes(ihl * 4);
            h[10] = 0;
            h[11] = 0;
            if i % 3 != 0 {
                let c = checksum(&h);
                h[10..12].copy_from_slice(&c.to_be_bytes());
            }
            if i % 11 == 0 {
                let at = (s.next() % h.len() as u64) as usize;
                h[at] ^= 1 << (s.next() % 8);
            }
            // Odd start: unaligned loads.
            let mut v = vec![0u8; 1 + h.len()];
            v[1..].copy_from_slice(&h);
            store.push(v);
        }
        let headers: Vec<&[u8]> = store.iter().map(|v| &v[1..]).collect();
        let want: Vec<bool> = headers.iter().map(|h| checksum(h) == 0).collect();
        assert!(want.iter().filter(|&&b| b).count() > 200);
        assert!(want.iter().filter(|&&b| !b).count() > 150);
        let mut got = vec![false; headers.len()];
        verify_headers(&headers, &mut got);
        assert_eq!(got, want);
        let m = verify_headers_mask(&headers[..64]);
        for (i, &w) in want[..64].iter().enumerate() {
            assert_eq!(m >> i & 1 == 1, w);
        }
    }
}
