//! IPv4 reassembly with Linux's semantics (`net/ipv4/ip_fragment.c`,
//! `net/ipv4/inet_fragment.c`; RFC 791, RFC 815).
//!
//! One [`Reassembler`] per worker: it owns its table, so there are no locks
//! and no atomics. Fragments of one datagram must all reach the same worker;
//! [`owner`] names it, with a keyed hash so that an attacker cannot aim every
//! datagram at one worker.
//!
//! # What matches Linux
//!
//! * Queues are keyed by (source, destination, protocol, identification).
//! * A fragment that overlaps data already queued discards the whole
//!   datagram (RFC 5722 applied to IPv4 since Linux 4.19): `ReasmFails` and
//!   `ReasmOverlaps`. A fragment that lies inside data already queued as one
//!   in-order run is a duplicate and is dropped alone, the queue kept
//!   (Linux's `IPFRAG_DUP`). Like Linux, a discarded queue is removed from
//!   the table at once: later fragments of the same datagram start a new
//!   queue, which will time out (Linux's `inet_frag_kill()` unhashes the
//!   queue; it does not keep a dead entry that swallows them).
//! * The last fragment (MF clear) fixes the length; a second last fragment
//!   with another end, a last fragment that ends before data already
//!   queued, or data beyond a known end discard the datagram.
//! * A fragment with MF set whose length is not a multiple of 8 is cut down
//!   to one (Linux trims, it does not drop); a fragment left with no data
//!   (zero length, or MF set and under 8 bytes) discards the datagram.
//! * The reassembled datagram has the header of the fragment at offset 0
//!   (options included), total length set, offset and MF cleared, DF set
//!   only if the largest fragment carried DF, ECN combined as RFC 3168 5.3
//!   says (an impossible mix drops the datagram), checksum recomputed: what
//!   `ip_frag_reasm()` produces.
//! * `ipfrag_time`: a queue lives that long from its first fragment, never
//!   extended by later ones. On expiry `ReasmTimeout` and `ReasmFails`, and
//!   if the fragment at offset 0 had arrived, the caller gets it back to
//!   send ICMP time exceeded, code 1 ([`Expired`]).
//! * `ipfrag_max_dist`: every fragment from a source advances that source's
//!   counter; when it advanced by more than `max_dist` between two
//!   fragments of a queue (`max_dist` or more other fragments from the
//!   source came in between), the queue is emptied and restarted
//!   with the new fragment (`ip_frag_too_far()`, `ip_frag_reinit()`), and
//!   `ReasmFails` counts it. The counters live in this table, per source,
//!   as long as the source has a queue here.
//! * `ipfrag_high_thresh`: memory of all queues is counted; a fragment that
//!   would take it over the threshold is refused (`ReasmFails`). Linux has
//!   had no evictor since 4.17: `ipfrag_low_thresh` is obsolete there
//!   ("The kernel still accepts new fragments", ip-sysctl.rst) and only
//!   bounds `ipfrag_high_thresh` from below. Queues leave only by completing,
//!   failing or timing out, here as there.
//!
//! # Where it differs, and why
//!
//! * Linux refuses fragments once memory is *above* the threshold, so it
//!   can exceed it by one fragment; here a fragment is refused if it would
//!   *take* memory above it, so [`Reassembler::memory`] never exceeds it.
//!   The check comes first, as in Linux, so at the limit a duplicate is
//!   refused (and counted) like any other fragment.
//! * Linux finds a datagram too long (header plus data above 65535) only
//!   when it completes it. A fragment ending beyond 65515 bytes of data
//!   (65535 less the shortest header) can never complete, so it discards
//!   its datagram at once ([`Invalid::TooLong`]), which frees the memory
//!   early and counts the same `ReasmFails`.
//! * Memory is counted, not measured: [`truesize`] charges each fragment
//!   its data rounded up to 512 bytes plus 576 bytes (what an `sk_buff` and
//!   its `skb_shared_info` cost Linux), and each queue 200 bytes (Linux's
//!   `struct ipq`). A 1480-byte fragment costs 2112 here; Linux charges
//!   the buffer the driver received it in, 2944 for a 1500-byte frame by
//!   its own comment in `ipv4_frags_init_net()`. The data really is held in
//!   512-byte chunks, so what is counted bounds what is used. With 8-byte
//!   fragments a 65535-byte datagram costs 8.9 MB, under the 9 MB that
//!   Linux's `ip_defrag.sh` selftest sets for the same case.
//! * The table is per worker. Give each worker its share of
//!   `ipfrag_high_thresh` ([`Config::from_sysctl`] divides by the number of
//!   workers): the sum then bounds the engine as the sysctl bounds Linux.
//!   The `max_dist` counter of a source sees only the fragments of that
//!   source that this worker owns, about 1/workers of them when the
//!   source's datagrams spread over the workers; `from_sysctl` divides
//!   `max_dist` by the number of workers (rounding up) to keep the same
//!   distance in time.
//!
//! # Memory and allocation
//!
//! Fragment data is copied into the table, so the caller can recycle the
//! frame at once (an AF_XDP frame held for 30 s would drain the UMEM under
//! attack). Chunks, fragment records, queues and the hash index are pooled:
//! they grow to the largest load seen, bounded by the memory threshold, and
//! are reused; steady state allocates nothing. A queue of more than 64
//! disjoint runs (fragments arriving out of order in tiny pieces) may grow
//! its run list once. The reassembled datagram is written into a 64 KiB
//! buffer the table owns, valid until the next call.
//!
//! ```
//! use xdpip::reasm::{Config, Outcome, Reassembler};
//! use xdpip::wire::ipv4::{Packet, Repr, protocol};
//! use std::net::Ipv4Addr;
//!
//! // Two fragments of a 16-byte UDP payload, as a host would send them.
//! fn fragment(offset: u16, more: bool, data: &[u8]) -> Vec<u8> {
//!     let repr = Repr {
//!         src: Ipv4Addr::new(10, 0, 0, 1),
//!         dst: Ipv4Addr::new(10, 0, 0, 2),
//!         protocol: protocol::UDP,
//!         ttl: 64,
//!         ident: 7,
//!         payload_len: data.len(),
//!         ..Repr::default()
//!     };
//!     let mut b = vec![0u8; repr.buffer_len()];
//!     let mut p = Packet::new_unchecked(&mut b[..]);
//!     repr.emit(&mut p);
//!     p.set_flags_and_offset(false, more, offset);
//!     p.fill_checksum();
//!     p.payload_mut().copy_from_slice(data);
//!     b
//! }
//!
//! let mut r = Reassembler::new(Config::linux(xdpip::reasm::random_seed()));
//! assert!(matches!(r.insert(0, &fragment(8, false, b"world!!!")), Outcome::NeedMore));
//! match r.insert(1, &fragment(0, true, b"hello, ")) {
//!     // 7 bytes with MF set are cut to 0: the datagram is discarded.
//!     Outcome::Invalid(reason) => assert_eq!(reason, xdpip::reasm::Invalid::Empty),
//!     other => panic!("{other:?}"),
//! }
//! assert!(matches!(r.insert(2, &fragment(0, true, b"hello, w")), Outcome::NeedMore));
//! match r.insert(3, &fragment(8, false, b"orld!!!!")) {
//!     Outcome::Ready(datagram) => {
//!         let p = Packet::new_checked(datagram).unwrap();
//!         assert_eq!(p.payload(), b"hello, world!!!!");
//!         assert!(!p.more_frags() && p.frag_offset() == 0 && p.verify_checksum());
//!     }
//!     other => panic!("{other:?}"),
//! }
//! assert_eq!(r.stats().oks, 1);
//! assert_eq!(r.memory(), 0);
//! ```

pub mod check;
pub mod handoff;
pub mod hash;

use crate::stats::{DropReason, Mib};
use crate::wire::ipv4;
use hash::SipBuild;
use std::collections::HashMap;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::net::Ipv4Addr;

/// Bytes of data per storage chunk; what a fragment's data is rounded up to.
pub const CHUNK: usize = 512;
/// Memory charged per fragment beyond its data (Linux's `sk_buff` plus
/// `skb_shared_info`, cache-aligned, which `SKB_TRUESIZE` adds).
pub const FRAG_OVERHEAD: u64 = 576;
/// Memory charged per queue (Linux's `struct ipq`).
pub const QUEUE_OVERHEAD: u64 = 200;
/// The most data a datagram can carry: 65535 less the shortest header.
pub const MAX_DATA: u32 = 65535 - ipv4::MIN_HEADER_LEN as u32;
/// ICMP type the caller sends for an [`Expired`] datagram (time exceeded).
pub const ICMP_TIME_EXCEEDED: u8 = 11;
/// ICMP code: fragment reassembly time exceeded (`ICMP_EXC_FRAGTIME`).
pub const ICMP_EXC_FRAGTIME: u8 = 1;

const NIL: u32 = u32::MAX;
const FIRST_IN: u8 = 1;
const LAST_IN: u8 = 2;
/// Runs a recycled queue keeps room for; more is given back on release.
const RUNS_KEPT: usize = 64;

/// The memory charged for a fragment carrying `data_len` bytes of data:
/// the data rounded up to [`CHUNK`], plus [`FRAG_OVERHEAD`].
///
/// ```
/// assert_eq!(xdpip::reasm::truesize(1480), 1536 + 576);
/// assert_eq!(xdpip::reasm::truesize(8), 512 + 576);
/// ```
#[inline]
pub const fn truesize(data_len: u32) -> u64 {
    (data_len as u64).div_ceil(CHUNK as u64) * CHUNK as u64 + FRAG_OVERHEAD
}

/// Which worker of `workers` reassembles the datagram with this key: a
/// SipHash-1-3 of the key under `seed`, mapped onto `0..workers`.
///
/// Draw `seed` at start ([`random_seed`]) and give every worker the same
/// one: all fragments of a datagram then meet on one worker, and an
/// attacker who cannot learn the seed cannot steer datagrams to a worker
/// of their choosing. `workers` of 0 is taken as 1.
///
/// ```
/// use std::net::Ipv4Addr;
/// use xdpip::reasm::owner;
/// let (s, d) = (Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(198, 51, 100, 7));
/// let w = owner(0x1234, s, d, 17, 0xabcd, 4);
/// assert!(w < 4);
/// assert_eq!(w, owner(0x1234, s, d, 17, 0xabcd, 4));
/// assert_eq!(owner(0x1234, s, d, 17, 0xabcd, 1), 0);
/// ```
#[inline]
pub fn owner(
    seed: u128,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    protocol: u8,
    id: u16,
    workers: usize,
) -> usize {
    let (k0, k1) = hash::keys(seed);
    let h = hash::siphash13(k0, k1, &Key::new(src, dst, protocol, id).words());
    // Multiply-high maps the hash onto 0..workers without a division.
    ((h as u128 * workers.max(1) as u128) >> 64) as usize
}

pub use hash::random_seed;

/// What identifies the fragments of one datagram (RFC 791).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Protocol.
    pub protocol: u8,
    /// Identification.
    pub id: u16,
}

impl Key {
    /// A key.
    pub const fn new(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, id: u16) -> Key {
        Key {
            src,
            dst,
            protocol,
            id,
        }
    }

    /// The key of a packet.
    pub fn of<T: AsRef<[u8]>>(p: &ipv4::Packet<T>) -> Key {
        Key::new(p.src(), p.dst(), p.protocol(), p.ident())
    }

    /// The key as two words, what is hashed.
    #[inline]
    fn words(&self) -> [u64; 2] {
        [
            (u32::from(self.src) as u64) << 32 | u32::from(self.dst) as u64,
            (self.protocol as u64) << 16 | self.id as u64,
        ]
    }
}

impl Hash for Key {
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        let [a, b] = self.words();
        state.write_u64(a);
        state.write_u64(b);
    }
}

/// Settings of one table: the `ipfrag_*` sysctls, and the hash seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// `ipfrag_high_thresh` for this table, in bytes of [`truesize`]: a
    /// fragment that would take the table above it is refused.
    pub high_thresh: u64,
    /// `ipfrag_low_thresh`: kept for the sysctl, unused, as in Linux since
    /// 4.17.
    pub low_thresh: u64,
    /// `ipfrag_time` in milliseconds.
    pub timeout_ms: u64,
    /// `ipfrag_max_dist`; 0 turns the check off.
    pub max_dist: u32,
    /// Key of the table's hash; random in production ([`random_seed`]).
    pub seed: u128,
}

impl Config {
    /// Linux's defaults: 4 MiB, 3 MiB, 30 s, 64.
    pub fn linux(seed: u128) -> Config {
        Config {
            high_thresh: 4 << 20,
            low_thresh: 3 << 20,
            timeout_ms: 30_000,
            max_dist: 64,
            seed,
        }
    }

    /// The share of one of `workers` tables: thresholds and `max_dist`
    /// divided by the number of workers (see the module documentation).
    ///
    /// ```
    /// use xdpip::{reasm::Config, snapshot::Sysctl};
    /// let c = Config::from_sysctl(&Sysctl::default(), 2, 7);
    /// assert_eq!((c.high_thresh, c.timeout_ms, c.max_dist), (2 << 20, 30_000, 32));
    /// ```
    pub fn from_sysctl(s: &crate::snapshot::Sysctl, workers: usize, seed: u128) -> Config {
        let n = workers.max(1) as u64;
        Config {
            high_thresh: s.ipfrag_high_thresh / n,
            low_thresh: s.ipfrag_low_thresh / n,
            timeout_ms: s.ipfrag_time as u64 * 1000,
            max_dist: (s.ipfrag_max_dist as u64).div_ceil(n) as u32,
            seed,
        }
    }
}

/// Why a fragment was refused and its datagram discarded. Each adds to
/// `ReasmFails` ([`Invalid::mib`]) except [`Invalid::NotFragment`] and
/// [`Invalid::Malformed`], which the caller should not have passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    /// The fragment overlaps data already queued (not a duplicate).
    Overlap,
    /// A last fragment (MF clear) disagrees with the end already known, or
    /// ends before data already queued.
    LengthConflict,
    /// Data beyond the end fixed by the last fragment.
    BeyondEnd,
    /// No data left (zero length, or MF set with under 8 bytes).
    Empty,
    /// The datagram would exceed 65535 bytes.
    TooLong,
    /// Fragments with ECN not-ECT mixed with ECT or CE (RFC 3168 5.3).
    EcnConflict,
    /// Not a fragment: neither MF nor an offset.
    NotFragment,
    /// Not a valid IPv4 packet.
    Malformed(ipv4::Error),
}

impl Invalid {
    /// The IP-MIB counters this adds to (once per datagram discarded).
    pub fn mib(self) -> &'static [Mib] {
        match self {
            Invalid::Overlap => &[Mib::ReasmFails, Mib::ReasmOverlaps],
            Invalid::NotFragment | Invalid::Malformed(_) => &[],
            _ => &[Mib::ReasmFails],
        }
    }

    /// The drop reason of the fragment refused.
    pub fn drop_reason(self) -> DropReason {
        match self {
            Invalid::Overlap => DropReason::ReasmOverlap,
            Invalid::Malformed(e) => e.into(),
            _ => DropReason::ReasmInvalid,
        }
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Invalid::Overlap => f.write_str("fragment overlaps queued data"),
            Invalid::LengthConflict => f.write_str("last fragment conflicts with the known end"),
            Invalid::BeyondEnd => f.write_str("fragment beyond the end of the datagram"),
            Invalid::Empty => f.write_str("fragment without data"),
            Invalid::TooLong => f.write_str("datagram longer than 65535 bytes"),
            Invalid::EcnConflict => f.write_str("fragments mix not-ECT with ECT or CE"),
            Invalid::NotFragment => f.write_str("not a fragment"),
            Invalid::Malformed(e) => write!(f, "malformed: {e}"),
        }
    }
}

/// What became of a fragment.
#[derive(Debug)]
pub enum Outcome<'a> {
    /// Queued; the datagram is not complete yet.
    NeedMore,
    /// The datagram is complete: the whole IPv4 packet, valid until the next
    /// call on the reassembler.
    Ready(&'a [u8]),
    /// Dropped: its data is already queued. The queue is kept.
    Duplicate,
    /// Dropped, and its datagram discarded (unless the reason is
    /// [`Invalid::NotFragment`] or [`Invalid::Malformed`]).
    Invalid(Invalid),
    /// Refused: the table is at its memory threshold. The queue, if any, is
    /// kept. Counts `ReasmFails`.
    OutOfMemory,
}

impl Outcome<'_> {
    /// The drop reason of the fragment, when it was dropped.
    pub fn drop_reason(&self) -> Option<DropReason> {
        match self {
            Outcome::NeedMore | Outcome::Ready(_) => None,
            Outcome::Duplicate => Some(DropReason::ReasmDuplicate),
            Outcome::Invalid(i) => Some(i.drop_reason()),
            Outcome::OutOfMemory => Some(DropReason::ReasmNoMemory),
        }
    }
}

/// A datagram that timed out.
#[derive(Debug)]
pub struct Expired<'a> {
    /// Its key.
    pub key: Key,
    /// If its first fragment (offset 0) had arrived: that fragment as it was
    /// received (header and data), for the ICMP time exceeded, code 1
    /// ([`ICMP_TIME_EXCEEDED`], [`ICMP_EXC_FRAGTIME`]) Linux sends then.
    /// The ICMP builder quotes what fits.
    pub first_fragment: Option<&'a [u8]>,
}

/// The IP-MIB counters of a table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// `ReasmReqds`: fragments received.
    pub reqds: u64,
    /// `ReasmOKs`: datagrams reassembled.
    pub oks: u64,
    /// `ReasmFails`: failures (discarded, timed out, reset by `max_dist`,
    /// refused for memory).
    pub fails: u64,
    /// `ReasmTimeout`: datagrams timed out.
    pub timeout: u64,
    /// `ReasmOverlaps` (IpExt): datagrams discarded for an overlap.
    pub overlaps: u64,
}

impl Stats {
    /// The counters with their IP-MIB names, to add to the worker's.
    pub fn mib(&self) -> [(Mib, u64); 5] {
        [
            (Mib::ReasmTimeout, self.timeout),
            (Mib::ReasmReqds, self.reqds),
            (Mib::ReasmOKs, self.oks),
            (Mib::ReasmFails, self.fails),
            (Mib::ReasmOverlaps, self.overlaps),
        ]
    }

    fn minus(&self, o: &Stats) -> Stats {
        Stats {
            reqds: self.reqds - o.reqds,
            oks: self.oks - o.oks,
            fails: self.fails - o.fails,
            timeout: self.timeout - o.timeout,
            overlaps: self.overlaps - o.overlaps,
        }
    }
}

/// A stretch of data `start..end` built by fragments that arrived in order,
/// each one starting where the previous ended (Linux's "run"). Duplicates
/// are recognised within a run; anything else that touches one overlaps.
#[derive(Debug, Clone, Copy)]
struct Run {
    start: u32,
    end: u32,
}

/// One stored fragment: its place in the datagram and its chain of chunks.
#[derive(Debug, Clone, Copy)]
struct Frag {
    offset: u32,
    len: u32,
    chunk: u32,
    next: u32,
}

#[derive(Debug)]
struct Queue {
    key: Key,
    deadline: u64,
    flags: u8,
    /// End of the data known so far (fixed once LAST_IN).
    len: u32,
    /// Bytes of data queued.
    meat: u32,
    /// Memory charged, queue overhead included.
    mem: u64,
    /// The source's fragment counter when this queue last got a fragment.
    rid: u32,
    has_peer: bool,
    /// RFC 3168 ECN codepoints seen, one bit each (`ip4_frag_ecn()`).
    ecn: u8,
    /// Largest fragment (header and data), and largest with DF.
    max_size: u32,
    max_df_size: u32,
    hdr: [u8; 60],
    hlen: u8,
    /// Data bytes of the fragment at offset 0, for the ICMP quote.
    first_len: u32,
    frags: u32,
    runs: Vec<Run>,
    /// Neighbours in the deadline list.
    prev: u32,
    next: u32,
}

impl Queue {
    fn empty() -> Queue {
        Queue {
            key: Key::new(Ipv4Addr::UNSPECIFIED, Ipv4Addr::UNSPECIFIED, 0, 0),
            deadline: 0,
            flags: 0,
            len: 0,
            meat: 0,
            mem: 0,
            rid: 0,
            has_peer: false,
            ecn: 0,
            max_size: 0,
            max_df_size: 0,
            hdr: [0; 60],
            hlen: 0,
            first_len: 0,
            frags: NIL,
            runs: Vec::new(),
            prev: NIL,
            next: NIL,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Peer {
    rid: u32,
    queues: u32,
}

/// An IPv4 reassembly table, owned by one worker.
pub struct Reassembler {
    cfg: Config,
    index: HashMap<Key, u32, SipBuild>,
    peers: HashMap<u32, Peer, SipBuild>,
    queues: Vec<Queue>,
    free_queues: Vec<u32>,
    /// Deadline order: oldest first. Deadlines are set at creation and
    /// reset by `max_dist`, both to now + timeout, so appending keeps order.
    oldest: u32,
    newest: u32,
    frags: Vec<Frag>,
    free_frag: u32,
    /// Chunk storage: `CHUNK` bytes each, chained by `chunk_next`.
    chunks: Vec<u8>,
    chunk_next: Vec<u32>,
    free_chunk: u32,
    mem: u64,
    stats: Stats,
    taken: Stats,
    out: Vec<u8>,
    /// Evict the oldest queues instead of refusing fragments at
    /// `high_thresh` ([`Reassembler::set_evict`]).
    evict: bool,
}

impl fmt::Debug for Reassembler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reassembler")
            .field("queues", &self.index.len())
            .field("memory", &self.mem)
            .field("stats", &self.stats)
            .finish()
    }
}

impl Reassembler {
    /// An empty table. Allocates the 64 KiB output buffer and a little
    /// room; the rest grows with use up to what `high_thresh` allows.
    pub fn new(cfg: Config) -> Reassembler {
        // Table and owner() hash the same keys: a different key for the
        // table keeps its buckets independent of the worker choice.
        let seed = cfg.seed ^ 0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c834;
        let room = 256;
        Reassembler {
            cfg,
            index: HashMap::with_capacity_and_hasher(room, SipBuild::new(seed)),
            peers: HashMap::with_capacity_and_hasher(room, SipBuild::new(seed.rotate_left(64))),
            queues: Vec::with_capacity(room),
            free_queues: Vec::with_capacity(room),
            oldest: NIL,
            newest: NIL,
            frags: Vec::new(),
            free_frag: NIL,
            chunks: Vec::new(),
            chunk_next: Vec::new(),
            free_chunk: NIL,
            mem: 0,
            stats: Stats::default(),
            taken: Stats::default(),
            out: vec![0; 65535],
            evict: false,
        }
    }

    /// The settings.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Changes the settings (a sysctl changed). The seed stays the one the
    /// table was made with. A shorter timeout applies to new queues; queues
    /// behind an older one in the deadline list may expire up to the old
    /// timeout late.
    pub fn set_config(&mut self, cfg: Config) {
        self.cfg = Config {
            seed: self.cfg.seed,
            ..cfg
        };
    }

    /// With `on`, a fragment that would take memory over `high_thresh`
    /// first evicts the oldest queues (other than its own) down to
    /// `low_thresh`, each counted in `ReasmFails`, instead of being refused.
    ///
    /// This is Linux before 4.17 (`inet_frag_evictor()`), not after: under a
    /// flood of fragments that never complete, refusing keeps the table
    /// full of garbage for `ipfrag_time` and every legitimate datagram
    /// fails, while evicting the oldest lets datagrams whose fragments
    /// arrive close together complete. Memory stays bounded either way. The
    /// engine turns it on; [`Config::linux`] tables start with it off.
    pub fn set_evict(&mut self, on: bool) {
        self.evict = on;
    }

    /// Memory charged to the queues now, in bytes of [`truesize`] and
    /// [`QUEUE_OVERHEAD`]; never above `high_thresh` (unless
    /// [`Reassembler::set_config`] lowered it below what is queued: then
    /// nothing is accepted until enough queues complete or expire).
    pub fn memory(&self) -> u64 {
        self.mem
    }

    /// Datagrams being reassembled.
    pub fn queues(&self) -> usize {
        self.index.len()
    }

    /// Counters since the table was made.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Counters since the last call, to add to the worker's
    /// ([`Stats::mib`]).
    pub fn take_stats(&mut self) -> Stats {
        let d = self.stats.minus(&self.taken);
        self.taken = self.stats;
        d
    }

    /// Takes one fragment, an IPv4 packet starting at its header (bytes
    /// beyond its total length are ignored). `now_ms` is a monotonic clock;
    /// call [`Reassembler::expire`] with it first, so that no queue past its
    /// deadline takes a fragment.
    pub fn insert(&mut self, now_ms: u64, packet: &[u8]) -> Outcome<'_> {
        let pkt = match ipv4::Packet::new_checked(packet) {
            Ok(p) => p,
            Err(e) => return Outcome::Invalid(Invalid::Malformed(e)),
        };
        if !pkt.is_fragment() {
            return Outcome::Invalid(Invalid::NotFragment);
        }
        self.stats.reqds += 1;
        let key = Key::of(&pkt);
        let hlen = pkt.header_len();
        let payload = pkt.payload();
        let offset = pkt.frag_offset() as u32;
        let more = pkt.more_frags();
        let mut end = offset + payload.len() as u32;
        if more {
            // Linux trims a non-last fragment to a multiple of 8.
            end &= !7;
        }
        let data_len = end - offset;
        let cost = truesize(data_len);

        let existing = self.index.get(&key).copied();
        let need = cost
            + if existing.is_some() {
                0
            } else {
                QUEUE_OVERHEAD
            };
        if self.mem + need > self.cfg.high_thresh && self.evict {
            let target = self
                .cfg
                .low_thresh
                .min(self.cfg.high_thresh.saturating_sub(need));
            self.evict_to(target, existing.unwrap_or(NIL));
        }
        if self.mem + need > self.cfg.high_thresh {
            self.stats.fails += 1;
            return Outcome::OutOfMemory;
        }
        let qi = match existing {
            Some(qi) => qi,
            None => self.create(now_ms, key),
        };

        if self.too_far(qi) {
            self.stats.fails += 1;
            self.reinit(now_ms, qi);
        }

        if end > MAX_DATA {
            return self.discard(qi, Invalid::TooLong);
        }
        let q = &mut self.queues[qi as usize];
        if !more {
            if end < q.len || (q.flags & LAST_IN != 0 && end != q.len) {
                return self.discard(qi, Invalid::LengthConflict);
            }
            q.flags |= LAST_IN;
            q.len = end;
        } else if end > q.len {
            if q.flags & LAST_IN != 0 {
                return self.discard(qi, Invalid::BeyondEnd);
            }
            q.len = end;
        }
        if end == offset {
            return self.discard(qi, Invalid::Empty);
        }

        match place(&mut q.runs, offset, end) {
            Place::Ok => {}
            Place::Duplicate => return Outcome::Duplicate,
            Place::Overlap => return self.discard(qi, Invalid::Overlap),
        }

        let chunk = self.store(&payload[..data_len as usize]);
        let fi = self.alloc_frag(Frag {
            offset,
            len: data_len,
            chunk,
            next: NIL,
        });
        let q = &mut self.queues[qi as usize];
        self.frags[fi as usize].next = q.frags;
        q.frags = fi;
        q.meat += data_len;
        q.mem += cost;
        self.mem += cost;
        q.ecn |= 1 << (pkt.tos() & 3);
        if offset == 0 {
            q.flags |= FIRST_IN;
            q.hdr[..hlen].copy_from_slice(&packet[..hlen]);
            q.hlen = hlen as u8;
            q.first_len = data_len;
        }
        let size = data_len + hlen as u32;
        q.max_size = q.max_size.max(size);
        if pkt.dont_frag() {
            q.max_df_size = q.max_df_size.max(size);
        }
        if q.flags == FIRST_IN | LAST_IN && q.meat == q.len {
            return self.reassemble(qi);
        }
        Outcome::NeedMore
    }

    /// Drops the queues whose deadline is at or before `now_ms`, oldest
    /// first, calling `on_expired` for each (to send the ICMP error), and
    /// returns how many. Each counts `ReasmTimeout` and `ReasmFails`. Cheap
    /// when nothing expires: call it once per batch.
    pub fn expire(&mut self, now_ms: u64, mut on_expired: impl FnMut(Expired<'_>)) -> usize {
        let mut n = 0;
        while self.oldest != NIL && self.queues[self.oldest as usize].deadline <= now_ms {
            let qi = self.oldest;
            self.stats.timeout += 1;
            self.stats.fails += 1;
            let q = &self.queues[qi as usize];
            let key = q.key;
            let first = if q.flags & FIRST_IN != 0 {
                let hlen = q.hlen as usize;
                let total = hlen + q.first_len as usize;
                self.out[..hlen].copy_from_slice(&q.hdr[..hlen]);
                let mut f = q.frags;
                while f != NIL && self.frags[f as usize].offset != 0 {
                    f = self.frags[f as usize].next;
                }
                debug_assert!(f != NIL, "FIRST_IN without a fragment at 0");
                if f != NIL {
                    let fr = self.frags[f as usize];
                    copy_chain(
                        &self.chunks,
                        &self.chunk_next,
                        fr.chunk,
                        &mut self.out[hlen..total],
                    );
                }
                Some(total)
            } else {
                None
            };
            on_expired(Expired {
                key,
                first_fragment: first.map(|t| &self.out[..t]),
            });
            self.release(qi);
            n += 1;
        }
        n
    }

    /// The deadline of the oldest queue, if any: when [`Reassembler::expire`]
    /// next has work.
    pub fn next_deadline(&self) -> Option<u64> {
        (self.oldest != NIL).then(|| self.queues[self.oldest as usize].deadline)
    }

    /// Releases the oldest queues but `keep` until memory is at most
    /// `target`.
    fn evict_to(&mut self, target: u64, keep: u32) {
        let mut qi = self.oldest;
        while self.mem > target && qi != NIL {
            let next = self.queues[qi as usize].next;
            if qi != keep {
                self.stats.fails += 1;
                self.release(qi);
            }
            qi = next;
        }
    }

    fn create(&mut self, now_ms: u64, key: Key) -> u32 {
        let qi = match self.free_queues.pop() {
            Some(i) => i,
            None => {
                self.queues.push(Queue::empty());
                (self.queues.len() - 1) as u32
            }
        };
        let has_peer = self.cfg.max_dist != 0;
        if has_peer {
            self.peers
                .entry(u32::from(key.src))
                .or_insert(Peer { rid: 0, queues: 0 })
                .queues += 1;
        }
        let q = &mut self.queues[qi as usize];
        let runs = std::mem::take(&mut q.runs);
        *q = Queue {
            key,
            deadline: now_ms + self.cfg.timeout_ms,
            mem: QUEUE_OVERHEAD,
            has_peer,
            runs,
            ..Queue::empty()
        };
        self.mem += QUEUE_OVERHEAD;
        self.index.insert(key, qi);
        self.link_newest(qi);
        qi
    }

    /// `ip_frag_too_far()`: advances the source's counter; true if more
    /// than `max_dist` fragments of the source came since this queue's last.
    fn too_far(&mut self, qi: u32) -> bool {
        let max = self.cfg.max_dist;
        let q = &mut self.queues[qi as usize];
        if !q.has_peer || max == 0 {
            return false;
        }
        let Some(peer) = self.peers.get_mut(&u32::from(q.key.src)) else {
            return false;
        };
        peer.rid = peer.rid.wrapping_add(1);
        let start = q.rid;
        q.rid = peer.rid;
        q.frags != NIL && peer.rid.wrapping_sub(start) > max
    }

    /// `ip_frag_reinit()`: empties a queue and restarts its timer.
    fn reinit(&mut self, now_ms: u64, qi: u32) {
        self.free_frags(qi);
        let q = &mut self.queues[qi as usize];
        q.flags = 0;
        q.len = 0;
        q.meat = 0;
        q.ecn = 0;
        q.max_size = 0;
        q.max_df_size = 0;
        q.first_len = 0;
        q.runs.clear();
        q.deadline = now_ms + self.cfg.timeout_ms;
        self.unlink(qi);
        self.link_newest(qi);
    }

    fn discard(&mut self, qi: u32, why: Invalid) -> Outcome<'_> {
        for m in why.mib() {
            match m {
                Mib::ReasmFails => self.stats.fails += 1,
                Mib::ReasmOverlaps => self.stats.overlaps += 1,
                _ => {}
            }
        }
        self.release(qi);
        Outcome::Invalid(why)
    }

    /// `ip_frag_reasm()`: builds the datagram in `out` and frees the queue.
    fn reassemble(&mut self, qi: u32) -> Outcome<'_> {
        let q = &self.queues[qi as usize];
        let ecn = match ecn_combine(q.ecn) {
            Some(e) => e,
            None => return self.discard(qi, Invalid::EcnConflict),
        };
        let hlen = q.hlen as usize;
        let total = hlen + q.len as usize;
        if total > 65535 {
            return self.discard(qi, Invalid::TooLong);
        }
        self.out[..hlen].copy_from_slice(&q.hdr[..hlen]);
        let mut f = q.frags;
        while f != NIL {
            let fr = self.frags[f as usize];
            let at = hlen + fr.offset as usize;
            copy_chain(
                &self.chunks,
                &self.chunk_next,
                fr.chunk,
                &mut self.out[at..at + fr.len as usize],
            );
            f = fr.next;
        }
        let df = q.max_df_size == q.max_size;
        let mut p = ipv4::Packet::new_unchecked(&mut self.out[..total]);
        p.set_total_len(total as u16);
        let tos = p.tos() | ecn;
        p.set_tos(tos);
        p.set_flags_and_offset(df, false, 0);
        p.fill_checksum();
        self.stats.oks += 1;
        self.release(qi);
        Outcome::Ready(&self.out[..total])
    }

    fn release(&mut self, qi: u32) {
        self.free_frags(qi);
        self.unlink(qi);
        let q = &mut self.queues[qi as usize];
        self.mem -= q.mem;
        q.mem = 0;
        q.runs.clear();
        q.runs.shrink_to(RUNS_KEPT);
        let key = q.key;
        if q.has_peer {
            let src = u32::from(key.src);
            if let Some(p) = self.peers.get_mut(&src) {
                p.queues -= 1;
                if p.queues == 0 {
                    self.peers.remove(&src);
                }
            }
        }
        self.index.remove(&key);
        self.free_queues.push(qi);
    }

    /// Frees a queue's fragments and their memory, keeping the queue.
    fn free_frags(&mut self, qi: u32) {
        let q = &mut self.queues[qi as usize];
        let mut f = std::mem::replace(&mut q.frags, NIL);
        self.mem -= q.mem - QUEUE_OVERHEAD;
        q.mem = QUEUE_OVERHEAD;
        while f != NIL {
            let fr = self.frags[f as usize];
            let mut c = fr.chunk;
            while c != NIL {
                let next = self.chunk_next[c as usize];
                self.chunk_next[c as usize] = self.free_chunk;
                self.free_chunk = c;
                c = next;
            }
            self.frags[f as usize].next = self.free_frag;
            self.free_frag = f;
            f = fr.next;
        }
    }

    fn alloc_frag(&mut self, fr: Frag) -> u32 {
        if self.free_frag != NIL {
            let i = self.free_frag;
            self.free_frag = self.frags[i as usize].next;
            self.frags[i as usize] = fr;
            i
        } else {
            self.frags.push(fr);
            (self.frags.len() - 1) as u32
        }
    }

    /// Copies `data` into a chain of chunks; returns the first (NIL for no
    /// data, which cannot happen for a stored fragment).
    fn store(&mut self, data: &[u8]) -> u32 {
        let mut first = NIL;
        let mut last = NIL;
        for piece in data.chunks(CHUNK) {
            let c = if self.free_chunk != NIL {
                let c = self.free_chunk;
                self.free_chunk = self.chunk_next[c as usize];
                c
            } else {
                self.chunks.resize(self.chunks.len() + CHUNK, 0);
                self.chunk_next.push(NIL);
                (self.chunk_next.len() - 1) as u32
            };
            let at = c as usize * CHUNK;
            self.chunks[at..at + piece.len()].copy_from_slice(piece);
            self.chunk_next[c as usize] = NIL;
            if last == NIL {
                first = c;
            } else {
                self.chunk_next[last as usize] = c;
            }
            last = c;
        }
        first
    }

    fn link_newest(&mut self, qi: u32) {
        let q = &mut self.queues[qi as usize];
        q.prev = self.newest;
        q.next = NIL;
        if self.newest != NIL {
            self.queues[self.newest as usize].next = qi;
        } else {
            self.oldest = qi;
        }
        self.newest = qi;
    }

    fn unlink(&mut self, qi: u32) {
        let (prev, next) = {
            let q = &self.queues[qi as usize];
            (q.prev, q.next)
        };
        if prev != NIL {
            self.queues[prev as usize].next = next;
        } else {
            self.oldest = next;
        }
        if next != NIL {
            self.queues[next as usize].prev = prev;
        } else {
            self.newest = prev;
        }
        let q = &mut self.queues[qi as usize];
        q.prev = NIL;
        q.next = NIL;
    }
}

fn copy_chain(chunks: &[u8], next: &[u32], mut c: u32, out: &mut [u8]) {
    for piece in out.chunks_mut(CHUNK) {
        let at = c as usize * CHUNK;
        piece.copy_from_slice(&chunks[at..at + piece.len()]);
        c = next[c as usize];
    }
}

enum Place {
    Ok,
    Duplicate,
    Overlap,
}

/// `inet_frag_queue_insert()`: places `offset..end` among the runs. A
/// fragment that starts where the last run ends extends it; one inside a
/// single run is a duplicate; one that touches any run otherwise overlaps.
/// The runs are disjoint and sorted, so the run Linux's tree search stops
/// at is the first one that ends after `offset`.
fn place(runs: &mut Vec<Run>, offset: u32, end: u32) -> Place {
    let Some(last) = runs.last_mut() else {
        runs.push(Run { start: offset, end });
        return Place::Ok;
    };
    if last.end < end {
        if offset < last.end {
            return Place::Overlap;
        }
        if offset == last.end {
            last.end = end;
        } else {
            runs.push(Run { start: offset, end });
        }
        return Place::Ok;
    }
    let i = runs.partition_point(|r| r.end <= offset);
    match runs.get(i) {
        Some(r) if r.start < end => {
            if offset >= r.start && end <= r.end {
                Place::Duplicate
            } else {
                Place::Overlap
            }
        }
        _ => {
            runs.insert(i, Run { start: offset, end });
            Place::Ok
        }
    }
}

/// `ip_frag_ecn_table`: the ECN bits to OR into the header, or None to drop
/// the datagram (not-ECT mixed with ECT or CE).
fn ecn_combine(seen: u8) -> Option<u8> {
    const NOT_ECT: u8 = 1 << 0;
    const CE: u8 = 1 << 3;
    if seen & NOT_ECT != 0 {
        return if seen == NOT_ECT { Some(0) } else { None };
    }
    if seen & CE != 0 && seen != CE {
        return Some(3);
    }
    Some(0)
}

#[cfg(test)]
mod tests;
