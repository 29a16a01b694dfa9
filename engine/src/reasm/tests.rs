//! The cases of Linux's tools/testing/selftests/net/ip_defrag.c for IPv4,
//! and the limits: timeout, memory, max_dist.

use super::check::{check_datagram, content, Spec};
use super::*;
use crate::testutil::XorShift;

const SRC: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const DST: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);

fn key(id: u16) -> Key {
    Key::new(SRC, DST, 17, id)
}

fn spec(k: Key, offset: u32, len: u32, more: bool) -> Spec {
    Spec {
        key: k,
        offset: offset as u16,
        len: len as u16,
        more,
        dont_frag: false,
        tos: 0,
        option_words: 0,
    }
}

fn frag(k: Key, offset: u32, len: u32, more: bool) -> Vec<u8> {
    spec(k, offset, len, more).build()
}

/// Splits `total` bytes of data into fragments of `max` (a multiple of 8).
fn split(k: Key, total: u32, max: u32) -> Vec<Vec<u8>> {
    let mut v = Vec::new();
    let mut off = 0;
    while off < total {
        let len = max.min(total - off);
        v.push(frag(k, off, len, off + len < total));
        off += len;
    }
    v
}

fn table() -> Reassembler {
    Reassembler::new(Config::linux(0x1234_5678))
}

/// Feeds all fragments; returns the datagram if the last one completed it
/// and no earlier one did.
fn feed(r: &mut Reassembler, frags: &[Vec<u8>]) -> Option<Vec<u8>> {
    let n = frags.len();
    for (i, f) in frags.iter().enumerate() {
        match r.insert(0, f) {
            Outcome::Ready(d) => {
                assert_eq!(i, n - 1, "complete before the last fragment");
                return Some(d.to_vec());
            }
            Outcome::NeedMore => {}
            other => panic!("fragment {i}: {other:?}"),
        }
    }
    None
}

fn assert_datagram(k: Key, d: &[u8], data_len: u32) {
    check_datagram(&k, d);
    assert_eq!(d.len() as u32, 20 + data_len);
}

#[test]
fn in_order_reverse_and_random_order() {
    let mut rng = XorShift(0x5eed);
    for (i, &(total, max)) in [
        (1u32, 8u32),
        (9, 8),
        (1472, 1480),
        (3000, 1480),
        (65515, 1480),
    ]
    .iter()
    .enumerate()
    {
        let k = key(i as u16);
        let frags = split(k, total, max);
        let mut r = table();
        if frags.len() == 1 {
            // A single "fragment" with MF clear and offset 0 is no fragment.
            assert!(matches!(
                r.insert(0, &frags[0]),
                Outcome::Invalid(Invalid::NotFragment)
            ));
            continue;
        }
        assert_datagram(k, &feed(&mut r, &frags).unwrap(), total);

        let mut rev = frags.clone();
        rev.reverse();
        assert_datagram(k, &feed(&mut r, &rev).unwrap(), total);

        for _ in 0..5 {
            let mut shuffled = frags.clone();
            for j in (1..shuffled.len()).rev() {
                shuffled.swap(j, rng.next() as usize % (j + 1));
            }
            assert_datagram(k, &feed(&mut r, &shuffled).unwrap(), total);
        }
        assert_eq!(r.memory(), 0);
        assert_eq!(r.queues(), 0);
        assert_eq!(r.stats().oks, 7);
        assert_eq!(r.stats().fails, 0);
    }
}

/// ip_defrag.c: the UDP header alone at offset 0, then pieces of
/// `max_frag_len` of the payload, odd pieces first, then the header, then
/// the even pieces; message lengths up to 60000, piece sizes from 8.
#[test]
fn selftest_odd_then_header_then_even() {
    let cfg = Config {
        // ip_defrag.sh raises the limit for 8-byte pieces of 60000 bytes.
        high_thresh: 9_000_000,
        ..Config::linux(99)
    };
    let mut r = Reassembler::new(cfg);
    let mut id = 0;
    for msg_len in [1u32, 7, 100, 1000, 4095, 20000, 59999] {
        for max in [8u32, 16, 64, 256, 1000, 1496] {
            if max > msg_len && max != 8 {
                continue;
            }
            id += 1;
            let k = key(id);
            let piece = |off: u32| {
                let last = msg_len - off <= max;
                let len = if last { msg_len - off } else { max };
                frag(k, 8 + off, len, !last)
            };
            let mut order = Vec::new();
            let mut off = 0;
            while off < msg_len {
                order.push(piece(off));
                off += 2 * max;
            }
            order.push(frag(k, 0, 8, true));
            off = max;
            while off < msg_len {
                order.push(piece(off));
                off += 2 * max;
            }
            let d = feed(&mut r, &order).unwrap_or_else(|| panic!("{msg_len}/{max}"));
            assert_datagram(k, &d, 8 + msg_len);
            assert_eq!(r.memory(), 0);
        }
    }
}

#[test]
fn overlap_discards_the_datagram_and_later_fragments_start_over() {
    let k = key(1);
    // Each case: fragments before, then the overlapping one.
    type Span = (u32, u32);
    let cases: [(&[Span], Span); 4] = [
        // Tail path: starts inside the last run, ends beyond it.
        (&[(0, 16)], (8, 16)),
        // Search path: straddles the end of a run.
        (&[(0, 16), (32, 16)], (8, 16)),
        // Spans a gap between two runs.
        (&[(8, 8), (32, 16)], (8, 32)),
        // Covers a run entirely.
        (&[(16, 8), (40, 8)], (8, 24)),
    ];
    for (before, (o, l)) in cases {
        let mut r = table();
        for &(off, len) in before {
            assert!(matches!(
                r.insert(0, &frag(k, off, len, true)),
                Outcome::NeedMore
            ));
        }
        let out = r.insert(0, &frag(k, o, l, true));
        assert!(
            matches!(out, Outcome::Invalid(Invalid::Overlap)),
            "{before:?} then {o}+{l}: {out:?}"
        );
        assert_eq!(out.drop_reason(), Some(DropReason::ReasmOverlap));
        assert_eq!((r.stats().fails, r.stats().overlaps), (1, 1));
        assert_eq!((r.memory(), r.queues()), (0, 0));
    }

    // As in Linux the dead queue is unhashed: the rest of the datagram
    // builds a new queue, which cannot complete and times out.
    let mut r = table();
    assert!(matches!(
        r.insert(0, &frag(k, 8, 8, true)),
        Outcome::NeedMore
    ));
    assert!(matches!(
        r.insert(0, &frag(k, 12 & !7, 16, true)),
        Outcome::Invalid(Invalid::Overlap)
    ));
    assert!(matches!(
        r.insert(10, &frag(k, 0, 8, true)),
        Outcome::NeedMore
    ));
    assert!(matches!(
        r.insert(20, &frag(k, 16, 8, false)),
        Outcome::NeedMore
    ));
    let mut quoted = 0;
    assert_eq!(
        r.expire(30_010, |e| quoted += e.first_fragment.unwrap().len()),
        1
    );
    assert_eq!(quoted, 28);
    assert_eq!((r.stats().timeout, r.stats().fails), (1, 2));
}

#[test]
fn duplicates_are_dropped_and_the_datagram_completes() {
    let k = key(2);
    let frags = split(k, 4000, 1480);
    let mut r = table();
    for f in &frags[..2] {
        assert!(matches!(r.insert(0, f), Outcome::NeedMore));
        let mem = r.memory();
        assert!(matches!(r.insert(0, f), Outcome::Duplicate));
        assert_eq!(r.memory(), mem, "a duplicate takes no memory");
    }
    let d = r.insert(0, &frags[2]);
    match d {
        Outcome::Ready(d) => assert_datagram(k, d, 4000),
        other => panic!("{other:?}"),
    }
    assert_eq!(r.stats().fails, 0);
    // A duplicate of the last fragment, once more, starts a new queue.
    assert!(matches!(r.insert(0, &frags[2]), Outcome::NeedMore));
}

#[test]
fn duplicate_or_overlap_depends_on_arrival_order_as_in_linux() {
    let k = key(3);
    // In order, 0..8 and 8..16 form one run: 8..16 inside it is a duplicate
    // even though it is no single fragment received.
    let mut r = table();
    r.insert(0, &frag(k, 0, 8, true));
    r.insert(0, &frag(k, 8, 16, true));
    assert!(matches!(
        r.insert(0, &frag(k, 8, 8, true)),
        Outcome::Duplicate
    ));
    // Reversed, they are separate runs: the same fragment overlaps.
    let mut r = table();
    r.insert(0, &frag(k, 8, 16, true));
    r.insert(0, &frag(k, 0, 8, true));
    assert!(matches!(
        r.insert(0, &frag(k, 0, 16, true)),
        Outcome::Invalid(Invalid::Overlap)
    ));
}

#[test]
fn tiny_fragments_and_lengths_not_multiple_of_8() {
    let k = key(4);
    let mut r = table();
    let d = feed(&mut r, &split(k, 1000, 8)).unwrap();
    assert_datagram(k, &d, 1000);

    // 12 bytes with MF set: trimmed to 8, the rest comes again.
    assert!(matches!(
        r.insert(0, &frag(k, 0, 12, true)),
        Outcome::NeedMore
    ));
    match r.insert(0, &frag(k, 8, 5, false)) {
        Outcome::Ready(d) => assert_datagram(k, d, 13),
        other => panic!("{other:?}"),
    }
    // 7 bytes with MF set leaves nothing: the datagram is discarded.
    assert!(matches!(
        r.insert(0, &frag(k, 16, 8, true)),
        Outcome::NeedMore
    ));
    assert!(matches!(
        r.insert(0, &frag(k, 0, 7, true)),
        Outcome::Invalid(Invalid::Empty)
    ));
    assert_eq!((r.queues(), r.stats().fails), (0, 1));
    // So does a last fragment without data.
    assert!(matches!(
        r.insert(0, &frag(k, 64, 0, false)),
        Outcome::Invalid(Invalid::Empty)
    ));
}

#[test]
fn largest_datagram_and_a_fragment_past_65535() {
    let k = key(5);
    let mut r = table();
    let d = feed(&mut r, &split(k, MAX_DATA, 1480)).unwrap();
    assert_eq!(d.len(), 65535);
    assert_datagram(k, &d, MAX_DATA);

    // One byte more can never complete: discarded at once.
    assert!(matches!(
        r.insert(0, &frag(k, 0, 1480, true)),
        Outcome::NeedMore
    ));
    let out = r.insert(0, &frag(k, 65512, 4, false));
    assert!(matches!(out, Outcome::Invalid(Invalid::TooLong)), "{out:?}");
    assert_eq!((r.queues(), r.memory()), (0, 0));
    let out = r.insert(0, &frag(k, 65528, 100, true));
    assert!(matches!(out, Outcome::Invalid(Invalid::TooLong)), "{out:?}");

    // With 4 bytes of options in the first fragment, 65515 bytes of data
    // make 65539: Linux finds it when it completes.
    let mut frags = split(k, MAX_DATA, 1480);
    let mut first = spec(k, 0, 1480, true);
    first.option_words = 1;
    frags[0] = first.build();
    let n = frags.len();
    for f in &frags[..n - 1] {
        assert!(matches!(r.insert(0, f), Outcome::NeedMore));
    }
    assert!(matches!(
        r.insert(0, &frags[n - 1]),
        Outcome::Invalid(Invalid::TooLong)
    ));
    assert_eq!((r.queues(), r.memory(), r.stats().fails), (0, 0, 3));
}

#[test]
fn last_fragment_fixes_the_length() {
    let k = key(6);
    let mut r = table();
    r.insert(0, &frag(k, 0, 16, true));
    r.insert(0, &frag(k, 32, 8, false));
    // Another last fragment with another end.
    assert!(matches!(
        r.insert(0, &frag(k, 40, 8, false)),
        Outcome::Invalid(Invalid::LengthConflict)
    ));
    r.insert(0, &frag(k, 32, 8, false));
    // Data beyond the end.
    assert!(matches!(
        r.insert(0, &frag(k, 40, 8, true)),
        Outcome::Invalid(Invalid::BeyondEnd)
    ));
    r.insert(0, &frag(k, 32, 16, true));
    // A last fragment that ends before data already queued.
    assert!(matches!(
        r.insert(0, &frag(k, 8, 16, false)),
        Outcome::Invalid(Invalid::LengthConflict)
    ));
    assert_eq!(r.stats().fails, 3);
    assert_eq!(r.queues(), 0);
}

#[test]
fn header_of_the_first_fragment_ecn_and_df() {
    let k = key(7);
    let mut r = table();
    let mut first = spec(k, 0, 16, true);
    first.option_words = 2;
    first.tos = 0x10 | 2; // ECT(0)
    first.dont_frag = true;
    let mut last = spec(k, 16, 8, false);
    last.tos = 3; // CE
    last.dont_frag = true;
    r.insert(0, &last.build());
    match r.insert(0, &first.build()) {
        Outcome::Ready(d) => {
            let p = ipv4::Packet::new_checked(d).unwrap();
            assert_eq!(p.header_len(), 28);
            assert_eq!(p.options(), &[1; 8]);
            assert_eq!(p.tos(), 0x10 | 3, "CE carried over");
            assert!(p.dont_frag(), "the largest fragment had DF");
            assert!(p.verify_checksum());
            assert_eq!(p.payload().len(), 24);
            assert_eq!(p.payload()[20], content(&k, 20));
        }
        other => panic!("{other:?}"),
    }
    // The largest fragment without DF: no DF on the datagram.
    last.dont_frag = false;
    last.len = 40;
    r.insert(0, &last.build());
    match r.insert(0, &first.build()) {
        Outcome::Ready(d) => assert!(!ipv4::Packet::new_checked(d).unwrap().dont_frag()),
        other => panic!("{other:?}"),
    }
    // Not-ECT mixed with CE: dropped.
    last.tos = 0;
    r.insert(0, &last.build());
    let mut ce = first;
    ce.tos = 3;
    assert!(matches!(
        r.insert(0, &ce.build()),
        Outcome::Invalid(Invalid::EcnConflict)
    ));
    assert_eq!((r.stats().oks, r.stats().fails), (2, 1));
}

#[test]
fn timeout_with_and_without_the_first_fragment() {
    let mut r = table();
    r.insert(1000, &frag(key(1), 0, 16, true));
    r.insert(2000, &frag(key(2), 16, 16, true));
    r.insert(2500, &frag(key(1), 32, 16, false)); // does not extend the timer
    assert_eq!(r.next_deadline(), Some(31_000));
    assert_eq!(r.expire(30_999, |_| panic!("too early")), 0);
    let mut seen = Vec::new();
    let n = r.expire(32_000, |e| {
        seen.push((e.key.id, e.first_fragment.map(|f| f.to_vec())));
    });
    assert_eq!(n, 2);
    assert_eq!(seen[0].0, 1);
    let f = seen[0]
        .1
        .as_ref()
        .expect("first fragment for the ICMP error");
    assert_eq!(f.len(), 20 + 16);
    let p = ipv4::Packet::new_checked(&f[..]).unwrap();
    assert_eq!((p.ident(), p.frag_offset(), p.more_frags()), (1, 0, true));
    assert_eq!(seen[1], (2, None), "no ICMP without the first fragment");
    let s = r.stats();
    assert_eq!((s.timeout, s.fails, s.reqds), (2, 2, 3));
    assert_eq!((r.memory(), r.queues(), r.next_deadline()), (0, 0, None));
    let d = r.take_stats();
    assert_eq!(d.timeout, 2);
    assert_eq!(r.take_stats(), Stats::default());
    assert!(d.mib().contains(&(Mib::ReasmTimeout, 2)));
}

#[test]
fn memory_flood_stays_under_the_threshold_and_recovers() {
    let high = 256 * 1024;
    let mut r = Reassembler::new(Config {
        high_thresh: high,
        ..Config::linux(5)
    });
    let mut refused = 0;
    let mut accepted = 0;
    for i in 0..2000u32 {
        // Many sources, one incomplete datagram each.
        let k = Key::new(Ipv4Addr::from(0x0a00_0000 + i), DST, 17, i as u16);
        match r.insert(i as u64, &frag(k, 8, 1480, true)) {
            Outcome::NeedMore => accepted += 1,
            Outcome::OutOfMemory => refused += 1,
            other => panic!("{other:?}"),
        }
        assert!(r.memory() <= high, "{} > {high}", r.memory());
    }
    let per_queue = QUEUE_OVERHEAD + truesize(1480);
    assert_eq!(accepted, high / per_queue);
    assert_eq!(r.memory(), accepted * per_queue);
    assert_eq!(refused, 2000 - accepted);
    assert_eq!(r.stats().fails, refused);

    // Linux refuses a legitimate datagram too while the table is full…
    let k = key(999);
    let frags = split(k, 3000, 1480);
    assert!(matches!(r.insert(3000, &frags[0]), Outcome::OutOfMemory));
    // …until the flood times out.
    assert_eq!(r.expire(3000 + 30_000, |_| {}) as u64, accepted);
    assert_eq!(r.memory(), 0);
    let d = feed(&mut r, &frags).unwrap();
    assert_datagram(k, &d, 3000);
}

#[test]
fn memory_refusal_leaves_the_queue_intact() {
    let k = key(8);
    let frags = split(k, 2960, 1480);
    let one = QUEUE_OVERHEAD + truesize(1480);
    let mut r = Reassembler::new(Config {
        high_thresh: one + truesize(1480) - 1,
        ..Config::linux(5)
    });
    assert!(matches!(r.insert(0, &frags[0]), Outcome::NeedMore));
    assert!(matches!(r.insert(0, &frags[1]), Outcome::OutOfMemory));
    assert_eq!((r.memory(), r.queues()), (one, 1));
    let mut c = *r.config();
    c.high_thresh += 1;
    r.set_config(c);
    assert_datagram(k, &feed(&mut r, &frags[1..]).unwrap(), 2960);
}

#[test]
fn max_dist_resets_a_queue_left_behind() {
    for (between, reset) in [(63u32, false), (64, true)] {
        let mut r = table();
        let k = key(1);
        let frags = split(k, 2960, 1480);
        assert!(matches!(r.insert(0, &frags[0]), Outcome::NeedMore));
        for i in 0..between {
            // Other datagrams of the same source; two queues.
            let other = key(100 + (i % 2) as u16);
            r.insert(0, &frag(other, 8 * (1 + i), 8, true));
            // Other sources do not count.
            let stranger = Key::new(Ipv4Addr::new(203, 0, 113, 9), DST, 17, 1);
            r.insert(0, &frag(stranger, 8 * (1 + i), 8, true));
        }
        let fails = r.stats().fails;
        let out = r.insert(0, &frags[1]);
        if reset {
            // The old fragment is gone; the new one starts the queue again.
            assert!(matches!(out, Outcome::NeedMore), "{out:?}");
            assert_eq!(r.stats().fails, fails + 1);
            assert_datagram(k, &feed(&mut r, &frags[..1]).unwrap(), 2960);
        } else {
            match out {
                Outcome::Ready(d) => assert_datagram(k, d, 2960),
                other => panic!("{other:?}"),
            }
            assert_eq!(r.stats().fails, fails);
        }
    }
    // max_dist 0 turns it off.
    let mut r = Reassembler::new(Config {
        max_dist: 0,
        ..Config::linux(1)
    });
    let frags = split(key(1), 2960, 1480);
    r.insert(0, &frags[0]);
    for i in 0..1000 {
        r.insert(0, &frag(key(2), 8 * (1 + i), 8, true));
    }
    assert!(matches!(r.insert(0, &frags[1]), Outcome::Ready(_)));
}

#[test]
fn a_reset_restarts_the_timer() {
    let mut r = Reassembler::new(Config {
        max_dist: 1,
        ..Config::linux(1)
    });
    r.insert(0, &frag(key(1), 0, 8, true));
    r.insert(10, &frag(key(2), 0, 8, true));
    r.insert(20, &frag(key(2), 8, 8, true));
    r.insert(1000, &frag(key(1), 8, 8, true)); // 4 - 1 > 1: reset
    assert_eq!(r.stats().fails, 1);
    let mut ids = Vec::new();
    r.expire(30_010, |e| ids.push((e.key.id, e.first_fragment.is_some())));
    assert_eq!(ids, [(2, true)]);
    r.expire(31_000, |e| ids.push((e.key.id, e.first_fragment.is_some())));
    assert_eq!(ids, [(2, true), (1, false)]);
}

#[test]
fn pools_stop_growing_in_steady_state() {
    let mut r = table();
    let run = |r: &mut Reassembler| {
        for id in 0..200u16 {
            let k = key(id);
            let mut f = split(k, 3000, 1480);
            f.reverse();
            assert!(feed(r, &f).is_some());
        }
    };
    run(&mut r);
    let sizes = |r: &Reassembler| {
        (
            r.queues.len(),
            r.frags.len(),
            r.chunk_next.len(),
            r.index.capacity(),
        )
    };
    let before = sizes(&r);
    run(&mut r);
    assert_eq!(sizes(&r), before);
    assert_eq!(before.0, 1);
}

#[test]
fn owner_spreads_keys_and_depends_on_the_seed() {
    let workers = 4;
    let mut count = [0usize; 4];
    let mut moved = 0;
    for id in 0..20_000u16 {
        let w = owner(42, SRC, DST, 17, id, workers);
        count[w] += 1;
        if w != owner(43, SRC, DST, 17, id, workers) {
            moved += 1;
        }
    }
    for c in count {
        assert!((4500..5500).contains(&c), "{count:?}");
    }
    assert!(moved > 12_000, "{moved}");
}

#[test]
fn random_sequences_keep_the_invariants() {
    let mut rng = XorShift(0xf00d);
    for _ in 0..300 {
        let len = 4 + 8 * (rng.next() % 200) as usize;
        let bytes = rng.bytes(len);
        let _ = check::run(&bytes);
    }
}

#[test]
fn malformed_and_unfragmented_packets_count_nothing() {
    let mut r = table();
    assert!(matches!(
        r.insert(0, &[0x45, 0]),
        Outcome::Invalid(Invalid::Malformed(ipv4::Error::Truncated))
    ));
    let mut whole = frag(key(1), 0, 8, false);
    assert!(matches!(
        r.insert(0, &whole),
        Outcome::Invalid(Invalid::NotFragment)
    ));
    whole[0] = 0x65;
    assert!(matches!(
        r.insert(0, &whole),
        Outcome::Invalid(Invalid::Malformed(_))
    ));
    assert_eq!(r.stats(), Stats::default());
}

#[test]
fn evicting_the_oldest_lets_legitimate_datagrams_through_a_flood() {
    // A flood of first fragments from many sources that never complete,
    // with a legitimate 3-fragment datagram after every 20 flood fragments.
    for evict in [false, true] {
        let mut r = Reassembler::new(Config {
            high_thresh: 256 << 10,
            low_thresh: 192 << 10,
            max_dist: 0,
            ..Config::linux(99)
        });
        r.set_evict(evict);
        let mut done = 0u32;
        let legit = 2000u32;
        for i in 0..legit {
            for j in 0..20u32 {
                let n = i * 20 + j;
                let k = Key::new(Ipv4Addr::from(0x0a00_0000 | n), DST, 17, n as u16);
                let _ = r.insert(u64::from(i), &frag(k, 0, 1200, true));
                assert!(r.memory() <= 256 << 10, "memory {}", r.memory());
            }
            let k = Key::new(SRC, DST, 17, i as u16);
            for f in split(k, 3000, 1200) {
                if let Outcome::Ready(d) = r.insert(u64::from(i), &f) {
                    assert_datagram(k, d, 3000);
                    done += 1;
                }
            }
        }
        if evict {
            assert!(done * 100 >= legit * 99, "{done} of {legit} completed");
        } else {
            // Refusing (Linux since 4.17) starves them once the table is full.
            assert!(done * 100 < legit * 10, "{done} of {legit} completed");
        }
    }
}

/// Every input of the committed fuzz corpus, through the same invariant
/// checks as the fuzz target: the corpus runs wherever `cargo test` does.
#[test]
fn fuzz_corpus_replays() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/reasm");
    let mut n = 0;
    let mut total = Stats::default();
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let s = std::panic::catch_unwind(|| check::run(&data))
            .unwrap_or_else(|_| panic!("{} breaks an invariant", path.display()));
        total.oks += s.oks;
        total.fails += s.fails;
        total.timeout += s.timeout;
        total.overlaps += s.overlaps;
        n += 1;
    }
    assert!(n >= 20, "only {n} corpus files in {}", dir.display());
    // The corpus reaches completion, failure, timeout and overlap.
    assert!(
        total.oks > 0 && total.overlaps > 0 && total.timeout > 0 && total.fails > total.timeout,
        "{total:?}"
    );
}
