//! Invariants of the reassembler under arbitrary input: the fuzz target
//! (`fuzz/fuzz_targets/reasm.rs`) and the replay of its corpus in
//! `cargo test` both run [`run`], which panics when one breaks.
//!
//! The input bytes are a small configuration followed by 8-byte records,
//! each a fragment or a step of the clock. Every fragment of a datagram
//! carries the bytes [`content`] gives for its place, so a reassembled
//! datagram can be checked byte for byte whatever order, duplicates or
//! overlaps led to it.

use super::{Config, Key, Outcome, Reassembler, MAX_DATA};
use crate::wire::ipv4::{self, Packet};
use std::net::Ipv4Addr;

/// The byte at position `pos` of the data of the datagram `key`.
#[inline]
pub fn content(key: &Key, pos: u32) -> u8 {
    (pos.wrapping_mul(31) ^ (pos >> 8) ^ key.id as u32 ^ u32::from(key.src)) as u8
}

/// A fragment as the tests and the fuzzer describe it.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    /// Its datagram.
    pub key: Key,
    /// Offset of its data in bytes (a multiple of 8 on the wire).
    pub offset: u16,
    /// Bytes of data.
    pub len: u16,
    /// More fragments.
    pub more: bool,
    /// Don't fragment.
    pub dont_frag: bool,
    /// The TOS byte (ECN in the low two bits).
    pub tos: u8,
    /// Words of options (NOPs) in the header, 0 to 10.
    pub option_words: u8,
}

impl Spec {
    /// The fragment as a packet, its data from [`content`].
    pub fn build(&self) -> Vec<u8> {
        let hlen = ipv4::MIN_HEADER_LEN + 4 * self.option_words.min(10) as usize;
        let repr = ipv4::Repr {
            src: self.key.src,
            dst: self.key.dst,
            protocol: self.key.protocol,
            ttl: 64,
            tos: self.tos,
            ident: self.key.id,
            dont_frag: self.dont_frag,
            payload_len: 0,
        };
        let mut b = vec![0u8; hlen + self.len as usize];
        repr.emit(&mut Packet::new_unchecked(&mut b[..]));
        b[ipv4::MIN_HEADER_LEN..hlen].fill(1); // NOP options
        let mut p = Packet::new_unchecked(&mut b[..]);
        p.set_version_and_header_len(hlen);
        p.set_total_len((hlen + self.len as usize) as u16);
        p.set_flags_and_offset(self.dont_frag, self.more, self.offset & !7);
        p.fill_checksum();
        let off = (self.offset & !7) as u32;
        for (i, x) in b[hlen..].iter_mut().enumerate() {
            *x = content(&self.key, off + i as u32);
        }
        b
    }
}

/// One step of a run.
#[derive(Debug, Clone, Copy)]
pub enum Step {
    /// Insert this fragment.
    Fragment(Spec),
    /// Advance the clock by this many milliseconds, then expire.
    Wait(u32),
}

/// Decodes fuzzer bytes into a configuration and steps.
pub fn decode(data: &[u8]) -> (Config, Vec<Step>) {
    let get = |i: usize| data.get(i).copied().unwrap_or(0);
    // Small thresholds reach the memory limit in few records.
    let high_thresh = 1024 + (get(0) as u64) * 1024;
    let cfg = Config {
        high_thresh,
        low_thresh: high_thresh / 2,
        timeout_ms: 1000 + get(1) as u64 * 100,
        max_dist: (get(2) % 16) as u32,
        seed: u128::from_le_bytes([get(3); 16]),
    };
    let mut steps = Vec::new();
    for r in data.get(4..).unwrap_or(&[]).chunks_exact(8) {
        if r[0] & 7 == 7 {
            steps.push(Step::Wait(u16::from_le_bytes([r[1], r[2]]) as u32 * 10));
            continue;
        }
        let key = Key::new(
            Ipv4Addr::new(10, 0, 0, r[0] >> 6),
            Ipv4Addr::new(10, 1, 0, 1),
            17,
            (r[1] & 3) as u16,
        );
        let wide = r[0] & 8 != 0;
        let (offset, len) = if wide {
            // Anywhere in the 16-bit space: too long, past the end.
            (
                u16::from_le_bytes([r[2], r[3]]),
                u16::from_le_bytes([r[4], r[5]]) % 9000,
            )
        } else {
            // A small datagram that can complete: offsets up to 504.
            ((r[2] % 64) as u16 * 8, (r[4] % 80) as u16)
        };
        steps.push(Step::Fragment(Spec {
            key,
            offset,
            len,
            more: r[6] & 1 != 0,
            dont_frag: r[6] & 2 != 0,
            tos: (r[6] >> 2) & 3,
            option_words: (r[7] % 4) * (r[0] >> 4 & 1),
        }));
    }
    (cfg, steps)
}

/// Runs the steps that `data` decodes to and panics if an invariant
/// breaks: memory never above the threshold, memory zero exactly when no
/// queue is left, every datagram a valid packet of the right key and
/// bytes, counters that add up, nothing left after the last expiry.
/// Returns the counters, so that a corpus can show what it reaches.
pub fn run(data: &[u8]) -> super::Stats {
    let (cfg, steps) = decode(data);
    let mut r = Reassembler::new(cfg);
    let mut now = 0u64;
    let (mut inserted, mut ready, mut expired) = (0u64, 0u64, 0u64);
    for step in steps {
        match step {
            Step::Wait(ms) => {
                now += ms as u64;
                expired += r.expire(now, |e| check_expired(&e)) as u64;
            }
            Step::Fragment(spec) => {
                let pkt = spec.build();
                // Offset 0 without MF is no fragment: refused, not counted.
                inserted += (spec.more || spec.offset >= 8) as u64;
                if let Outcome::Ready(d) = r.insert(now, &pkt) {
                    check_datagram(&spec.key, d);
                    ready += 1;
                }
            }
        }
        assert!(
            r.memory() <= cfg.high_thresh,
            "{} > {}",
            r.memory(),
            cfg.high_thresh
        );
        assert_eq!(r.memory() == 0, r.queues() == 0, "memory {}", r.memory());
        assert!(r.queues() as u64 * super::QUEUE_OVERHEAD <= r.memory());
    }
    let s = r.stats();
    assert_eq!(s.reqds, inserted);
    assert_eq!(s.oks, ready);
    assert_eq!(s.timeout, expired);
    assert!(s.fails >= s.timeout + s.overlaps);
    let left = r.queues() as u64;
    assert_eq!(r.expire(u64::MAX, |e| check_expired(&e)) as u64, left);
    assert_eq!((r.memory(), r.queues()), (0, 0));
    assert_eq!(r.stats().timeout, expired + left);
    r.stats()
}

/// A reassembled datagram: a valid IPv4 packet of `key`, not a fragment,
/// every data byte from [`content`].
pub fn check_datagram(key: &Key, d: &[u8]) {
    let p = Packet::new_checked(d).expect("datagram parses");
    assert_eq!(p.total_len() as usize, d.len());
    assert!(p.verify_checksum(), "checksum");
    assert!(!p.more_frags() && p.frag_offset() == 0, "still a fragment");
    assert_eq!(Key::of(&p), *key);
    assert!(d.len() <= 65535 && p.payload().len() as u32 <= MAX_DATA);
    assert!(!p.payload().is_empty());
    for (i, &b) in p.payload().iter().enumerate() {
        assert_eq!(
            b,
            content(key, i as u32),
            "byte {i} of {}",
            p.payload().len()
        );
    }
}

/// The first fragment of an expired datagram: its header as received (the
/// total length may count bytes of a non-multiple of 8 that were trimmed),
/// then its data.
fn check_expired(e: &super::Expired<'_>) {
    if let Some(f) = e.first_fragment {
        let p = Packet::new_unchecked(f);
        p.check_header().expect("first fragment header");
        assert_eq!(p.frag_offset(), 0);
        assert_eq!(Key::of(&p), e.key);
        assert!(p.verify_checksum());
        assert!(f.len() <= p.total_len() as usize);
        for (i, &b) in f[p.header_len()..].iter().enumerate() {
            assert_eq!(b, content(&e.key, i as u32));
        }
    }
}
