//! The one-pass form of a hook: every field of a packet looked up with no
//! loop and no branch but the last, as the worker's vector path asks it
//! for each frame of a vector, reading the fields where the frame holds
//! them (`Plain`).
//!
//! Looking the fields up one at a time, each lookup ends in a branch (is a
//! rule left?) and the next waits for the last one's result. Here the
//! small fields are cross-producted into one table and the others each
//! looked up in their bucket index, independently, so the CPU overlaps
//! them (and the lookups of the next packets); only a packet that still
//! holds a rule of a base chain then walks the chains, in order, and only
//! one whose value falls in a bucket that must be searched has its
//! interval fields looked up again, searching that bucket, so verdicts
//! and per-rule counts are those of the field-by-field form.

use super::{Field, Hook, Meta, Program, RuleCounters, Ruleset, Table, Verdict, INSIDE, NO_IFACE};

/// A hook as a stage asks it for every packet of a vector, looked up once
/// for the vector: without rules, in its one-pass form ([`Fast`]), or
/// field by field.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Gate<'a> {
    /// No rules: everything passes.
    Open,
    /// The one-pass form.
    Fast(&'a Program, &'a Fast),
    /// Field by field (64 rules or more, or too many combinations).
    Fields(&'a Program),
}

impl Ruleset {
    /// `hook` as [`Gate::judge`] asks it.
    #[inline(always)]
    pub(crate) fn gate(&self, hook: Hook) -> Gate<'_> {
        match &self.programs[hook as usize] {
            None => Gate::Open,
            Some(p) => match &p.fast {
                Some(f) => Gate::Fast(p, f),
                None => Gate::Fields(p),
            },
        }
    }
}

impl Gate<'_> {
    /// True when the hook has rules.
    #[inline(always)]
    pub(crate) fn active(self) -> bool {
        !matches!(self, Gate::Open)
    }

    /// The hook's verdict on `m`, the matched rules counted in `counters`
    /// ([`Ruleset::counters_of`]).
    #[inline(always)]
    pub(crate) fn judge(self, m: &Meta, counters: Option<&RuleCounters>) -> Verdict {
        match (self, m.l4) {
            (Gate::Open, _) => Verdict::Accept,
            (Gate::Fast(p, f), Some(l4)) => f.judge(p, Parsed { m, l4 }, counters),
            (Gate::Fast(p, _) | Gate::Fields(p), _) => p.run(m, counters),
        }
    }

    /// The hook's verdict on the frame `x`, as [`Gate::judge`] gives it
    /// on `x.meta()`.
    #[inline(always)]
    pub(crate) fn judge_frame(self, x: Plain, counters: Option<&RuleCounters>) -> Verdict {
        match self {
            Gate::Open => Verdict::Accept,
            Gate::Fast(p, f) => f.judge(p, x, counters),
            Gate::Fields(p) => x.run(p, counters),
        }
    }
}

/// A hook in its one-pass form whose packets that no rule matches pass
/// (its policies accept): the vector path asks it first whether a packet
/// passes with no rule matched, which costs the masks and one test, and
/// only for the others what its verdict is ([`Quick::verdict`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Quick<'a> {
    p: &'a Program,
    f: &'a Fast,
}

impl<'a> Gate<'a> {
    /// The gate as a [`Quick`] one, when it is one.
    pub(crate) fn quick(self) -> Option<Quick<'a>> {
        match self {
            Gate::Fast(p, f) if p.nothing == Verdict::Accept => Some(Quick { p, f }),
            _ => None,
        }
    }
}

impl<'a> Quick<'a> {
    /// True when a rule of the gate may read the output port: the key of
    /// its memo must hold it.
    #[inline(always)]
    pub(crate) fn reads_oif(self) -> bool {
        self.f.oif
    }

    /// `memo` learns the flow of `frame`, received on `iif` and leaving
    /// on `oif`, which it did not hold ([`Seen::New`]): what the memo then
    /// makes of the frame (never [`Seen::New`]), `None` for a header that
    /// is not plain. For a path that calls it out of line, to leave the
    /// registers of the vector path's stage to the frames of a burst.
    #[inline(always)]
    pub(crate) fn learn<const OIF: bool>(
        self,
        memo: &mut Memo<'a>,
        frame: &[u8],
        (iif, oif): (u8, u8),
    ) -> Option<Seen> {
        let (Some(h), Some(p)) = (frame.first_chunk::<38>(), Plain::read(frame, iif)) else {
            return None;
        };
        let key = Memo::key::<OIF>(h, iif, oif);
        let q = p.forwarded(oif);
        let part = self.f.part(q) & self.f.addrs[0].row(q.src());
        let rules = part & self.f.base;
        // The span of the one rule left (the common case: a flow that only
        // a rule on destinations may still match); with more, all
        // destinations: a loop over their spans made every new flow of
        // the bench's random sources dearer.
        let span = if rules & rules.wrapping_sub(1) != 0 {
            Span::ALL
        } else {
            // One rule, or none: then bit 63's, never a rule's.
            self.f.spans[rules.trailing_zeros().min(63) as usize]
        };
        *memo = Memo {
            key,
            part,
            rules,
            span,
            dsts: self.f.addrs[1].view(),
        };
        // The frame is of the flow just learned: no compare of its key.
        Some(memo.to(q.dst()))
    }

    /// The verdict on `x`, whose mask [`Memo::seen`] or [`Quick::learn`] gave: as
    /// [`Gate::judge_frame`] gives it.
    #[inline(always)]
    pub(crate) fn verdict<F: Fields>(
        self,
        mask: u64,
        x: F,
        counters: Option<&RuleCounters>,
    ) -> Verdict {
        self.f.decide(self.p, mask, x, counters)
    }
}

/// What [`Memo::seen`] makes of a frame (and [`Quick::learn`] of a plain
/// one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Seen {
    /// No rule matched: it passes.
    Passes,
    /// This mask holds a rule of a base chain: [`Quick::verdict`].
    Rules(u64),
    /// Not of the memo's flow: for [`Quick::learn`].
    New,
}

/// The fields but the destination of the last frame a [`Quick`] gate
/// judged, as the frame holds them, and the part of its mask they gave
/// ([`Fast::part`] and the source's bucket). A NIC queue delivers bursts
/// of one flow: their later frames are judged on their destination
/// alone. Lives with the worker's hooks, which borrow the ruleset it was
/// computed on; carried to the next batch [`Memo::detached`] from it, and
/// attached again only to the same ruleset (`worker::Carry`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Memo<'a> {
    key: Key,
    part: u64,
    /// The rules of the base chains in `part`: a frame whose
    /// destination's bucket has none of them passes.
    rules: u64,
    /// The destinations those rules may match lie in this span
    /// ([`Fast::spans`]): a frame to another passes.
    span: Span,
    /// The destinations' buckets: held here, so that a frame of the flow
    /// is judged on the memo alone.
    dsts: Rows<'a>,
}

/// What [`Memo`] compares of a frame: every field the part reads, and all
/// that makes the header plain.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(16))]
pub(crate) struct Key {
    /// Bytes 14-29 of the frame, the IPv4 header up to the destination:
    /// version and header length, TOS, total length, identification,
    /// fragment offset and flags, TTL, protocol, checksum, source. All
    /// are compared but the identification and the checksum ([`IGNORED`]).
    head: [u8; 16],
    /// Bytes 34-37 (ports; ICMP type and code), then the input and output
    /// ports (0 for the output port a gate does not read).
    rest: u64,
}

/// The bytes of [`Key::head`] not compared, 0xff: the identification
/// (bytes 4-5) and the checksum (10-11).
const IGNORED: [u8; 16] = {
    let mut m = [0; 16];
    (m[4], m[5], m[10], m[11]) = (0xff, 0xff, 0xff, 0xff);
    m
};

impl Default for Memo<'_> {
    /// Matches no frame: the top bytes of a key's `rest` are 0.
    fn default() -> Self {
        Memo {
            key: Key {
                head: [0xff; 16],
                rest: u64::MAX,
            },
            part: 0,
            rules: 0,
            span: Span::NONE,
            dsts: Rows::SEARCH,
        }
    }
}

impl<'a> Memo<'a> {
    /// The memo without its borrow of the ruleset, to keep from one batch
    /// to the next ([`Memo::attached`]). On its own it sends every frame
    /// of its flow in the span of its rules to a search
    /// ([`Rows::SEARCH`]): slower, never wrong.
    pub(crate) fn detached(self) -> Memo<'static> {
        Memo {
            dsts: Rows::SEARCH,
            ..self
        }
    }

    /// A memo [`Memo::detached`] from the gate `q`, judging with it again.
    pub(crate) fn attached(m: Memo<'_>, q: Quick<'a>) -> Memo<'a> {
        Memo {
            dsts: q.f.addrs[1].view(),
            ..m
        }
    }

    /// What the memo makes of `frame`, received on port `iif` and leaving
    /// on `oif`, when the frame is of its flow: a compare of the header,
    /// a test of the destination against the span of the rules left
    /// ([`Fast::spans`]) and, inside it, its bucket and one test. Reads
    /// the memo and the frame, nothing else.
    #[inline(always)]
    pub(crate) fn seen<const OIF: bool>(&self, frame: &[u8], iif: u8, oif: u8) -> Seen {
        let Some(h) = frame.first_chunk::<38>() else {
            return Seen::New;
        };
        if !self.holds(&Memo::key::<OIF>(h, iif, oif)) {
            return Seen::New;
        }
        // The rewrite reads the TTL and checksum next: without this, the
        // compiler takes them from the 16 bytes just compared, kept on the
        // stack (nine instructions a packet more).
        barrier();
        self.to(u32::from_be_bytes([h[30], h[31], h[32], h[33]]))
    }

    /// What the memo makes of a frame of its flow to `dst`.
    #[inline(always)]
    fn to(&self, dst: u32) -> Seen {
        // Outside the span of the memo's rules, none of them matches: no
        // bucket to load.
        if !self.span.holds(dst) {
            return Seen::Passes;
        }
        let row = self.dsts.row(dst);
        if row & self.rules == 0 {
            Seen::Passes
        } else {
            Seen::Rules(self.part & row)
        }
    }

    /// The key of the frame whose first bytes are `h`, received on port
    /// `iif` and leaving on `oif`; with the output port 0 unless `OIF`
    /// ([`Quick::reads_oif`]).
    #[inline(always)]
    fn key<const OIF: bool>(h: &[u8; 38], iif: u8, oif: u8) -> Key {
        let oif = if OIF { oif } else { 0 };
        let mut head = [0; 16];
        head.copy_from_slice(&h[14..30]);
        let ports = u32::from_ne_bytes([h[34], h[35], h[36], h[37]]) as u64;
        Key {
            head,
            rest: ports | (iif as u64) << 32 | (oif as u64) << 40,
        }
    }

    /// True when `key` is the memo's.
    #[inline(always)]
    fn holds(&self, key: &Key) -> bool {
        same(&self.key.head, &key.head, &IGNORED) & (self.key.rest == key.rest)
    }
}

/// True when the bytes of `a` equal those of `b` but where `ignored` is
/// 0xff: on x86-64, one compare of the 16 at once (SSE2, which every
/// x86-64 CPU has), the ignored bytes set in its result, and one test.
#[inline(always)]
fn same(a: &[u8; 16], b: &[u8; 16], ignored: &[u8; 16]) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128};
        // SAFETY: SSE2 is part of x86-64; each load reads the 16 bytes
        // of its array, at any alignment.
        unsafe {
            let [a, b, i] = [a, b, ignored].map(|x| _mm_loadu_si128(x.as_ptr().cast()));
            _mm_movemask_epi8(_mm_or_si128(_mm_cmpeq_epi8(a, b), i)) == 0xffff
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        a.iter()
            .zip(b)
            .zip(ignored)
            .all(|((x, y), i)| x | i == y | i)
    }
}

/// Tells the compiler that memory may have changed, so that it reads the
/// frame's bytes again where the path reads them next. No instruction.
#[inline(always)]
fn barrier() {
    // SAFETY: an empty instruction; only the compiler sees it.
    unsafe { std::arch::asm!("", options(nostack, preserves_flags)) }
}

impl Program {
    /// The chains walked for a packet some rule matched: rare, out of line.
    #[inline(never)]
    fn matched(&self, mask: u64, len: u16, counters: Option<&RuleCounters>) -> Verdict {
        self.walk(&[mask], len, counters)
    }
}

/// The fields the one-pass form looks at, of a packet with a transport
/// header: [`Meta`] as [`Field::value`] reads it, wherever they are.
pub(crate) trait Fields: Copy {
    fn iif(self) -> u8;
    fn oif(self) -> u8;
    fn proto(self) -> u8;
    fn tos(self) -> u8;
    fn ttl(self) -> u8;
    fn len(self) -> u16;
    fn src(self) -> u32;
    fn dst(self) -> u32;
    /// Transport bytes 0-3, big endian.
    fn l4(self) -> u32;

    /// As [`Meta`], for the field-by-field form.
    fn meta(self) -> Meta {
        Meta {
            iif: self.iif(),
            oif: self.oif(),
            src: self.src(),
            dst: self.dst(),
            proto: self.proto(),
            tos: self.tos(),
            ttl: self.ttl(),
            len: self.len(),
            l4: Some(self.l4()),
        }
    }

    /// Judged by `p` field by field, for the rare packet the one-pass
    /// form does not judge alone.
    #[inline(always)]
    fn run(self, p: &Program, counters: Option<&RuleCounters>) -> Verdict {
        p.run(&self.meta(), counters)
    }
}

/// A [`Meta`] with a transport header.
#[derive(Debug, Clone, Copy)]
struct Parsed<'a> {
    m: &'a Meta,
    l4: u32,
}

impl Fields for Parsed<'_> {
    #[inline(always)]
    fn iif(self) -> u8 {
        self.m.iif
    }
    #[inline(always)]
    fn oif(self) -> u8 {
        self.m.oif
    }
    #[inline(always)]
    fn proto(self) -> u8 {
        self.m.proto
    }
    #[inline(always)]
    fn tos(self) -> u8 {
        self.m.tos
    }
    #[inline(always)]
    fn ttl(self) -> u8 {
        self.m.ttl
    }
    #[inline(always)]
    fn len(self) -> u16 {
        self.m.len
    }
    #[inline(always)]
    fn src(self) -> u32 {
        self.m.src
    }
    #[inline(always)]
    fn dst(self) -> u32 {
        self.m.dst
    }
    #[inline(always)]
    fn l4(self) -> u32 {
        self.l4
    }
}

/// A frame with a plain header, as the one-pass form reads it: an IPv4
/// header without options, the first fragment (or none), and the first
/// four bytes of the transport header (ports; ICMP type and code). Its
/// fields are read where the frame holds them, when a hook looks at them,
/// rather than copied out once: a hook costs a few loads more than it
/// would from registers, and no register is held across hooks.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Plain<'a> {
    /// The Ethernet and IPv4 headers and the transport header's first
    /// four bytes.
    h: &'a [u8; 38],
    iif: u8,
    oif: u8,
    /// Subtracted from the frame's TTL: 1 once the packet is forwarded.
    hops: u8,
}

impl<'a> Plain<'a> {
    /// `frame` (from its Ethernet header on), received on port `iif`,
    /// with no output interface yet: `None` unless its IPv4 header has
    /// no options, it is not a later fragment and its total length
    /// holds four bytes of transport header (then [`Meta::parse`] reads
    /// it).
    #[inline(always)]
    pub(crate) fn read(frame: &'a [u8], iif: u8) -> Option<Plain<'a>> {
        let h = frame.first_chunk::<38>()?;
        let x = Plain {
            h,
            iif,
            oif: NO_IFACE,
            hops: 0,
        };
        let plain = h[14] == 0x45 && x.be16(20) & 0x1fff == 0 && x.len() >= 24;
        plain.then_some(x)
    }

    /// As `ip_forward()` hands it to the forward hook: the TTL
    /// decremented, leaving on port `oif`.
    #[inline(always)]
    pub(crate) fn forwarded(self, oif: u8) -> Plain<'a> {
        Plain {
            oif,
            hops: 1,
            ..self
        }
    }

    #[inline(always)]
    fn be16(self, i: usize) -> u16 {
        u16::from_be_bytes([self.h[i], self.h[i + 1]])
    }

    #[inline(always)]
    fn be32(self, i: usize) -> u32 {
        let h = self.h;
        u32::from_be_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]])
    }
}

impl Fields for Plain<'_> {
    #[inline(always)]
    fn iif(self) -> u8 {
        self.iif
    }
    #[inline(always)]
    fn oif(self) -> u8 {
        self.oif
    }
    #[inline(always)]
    fn proto(self) -> u8 {
        self.h[23]
    }
    #[inline(always)]
    fn tos(self) -> u8 {
        self.h[15]
    }
    #[inline(always)]
    fn ttl(self) -> u8 {
        self.h[22].wrapping_sub(self.hops)
    }
    #[inline(always)]
    fn len(self) -> u16 {
        self.be16(16)
    }
    #[inline(always)]
    fn src(self) -> u32 {
        self.be32(26)
    }
    #[inline(always)]
    fn dst(self) -> u32 {
        self.be32(30)
    }
    #[inline(always)]
    fn l4(self) -> u32 {
        self.be32(34)
    }

    #[inline(always)]
    fn run(self, p: &Program, counters: Option<&RuleCounters>) -> Verdict {
        run_frame(p, self.h, self.iif, self.oif, self.hops, counters)
    }
}

/// [`Fields::run`] of a [`Plain`], out of line and given its parts, not
/// the struct (which would be stored for it on the way of every packet):
/// the hot path keeps none of the fields it read.
#[cold]
#[inline(never)]
fn run_frame(
    p: &Program,
    h: &[u8; 38],
    iif: u8,
    oif: u8,
    hops: u8,
    counters: Option<&RuleCounters>,
) -> Verdict {
    let x = Plain { h, iif, oif, hops };
    p.run(&x.meta(), counters)
}

/// A hook of at most 63 rules as one pass over a packet's fields, with no
/// loop and no branch but the last: the small fields (interfaces,
/// protocol, ICMP type and code, TTL, TOS) cross-producted into one table
/// (Recursive Flow Classification: each value has a class, the classes
/// index one mask), then each interval field (ports, length, addresses)
/// one load of the mask of its bucket of values. A field no rule looks at
/// has a bucket of all rules, so every hook has the same five loads.
///
/// A bucket with an interval start inside must be searched: its mask holds
/// the rules of every interval in it, so that the AND of the masks holds
/// every rule that may match. A packet whose mask holds no rule of a base
/// chain passes with one test, searched or not. Bit 63, a bit no rule has
/// ([`CLEAR`]), is set in every mask but those of the buckets to search:
/// the AND keeps it only when the rules it holds are those that match, and
/// the rare packet whose mask holds a rule without it is sent to
/// [`Fast::searched`].
#[derive(Debug, Clone)]
pub(crate) struct Fast {
    /// The small fields and the 16-bit ones.
    t: Box<Tables>,
    /// Source and destination addresses.
    addrs: [Addr; 2],
    /// The rules of the hook's base chains: a packet whose mask holds
    /// none of these passes.
    base: u64,
    /// Per rule of a base chain (by bit), the destinations it may match
    /// lie in this span: what the memo tests a destination against first.
    spans: Box<[Span; 64]>,
    /// Some rule may read the output port: the memo's key holds it.
    oif: bool,
    /// Per interval field, [`NARROW`] then [`ADDRS`]: its table among the
    /// hook's, which a packet whose bucket must be searched is looked up
    /// in; `None` when no rule looks at the field.
    searched: [Option<u8>; 5],
}

/// The tables of [`Fast`] of a fixed size, in one allocation: every load
/// of a packet's lookup is at an offset from one address.
#[derive(Debug, Clone)]
struct Tables {
    /// Per small field, in [`SMALL`] order: the class of each value,
    /// times the field's stride in `combined`.
    classes: [[u32; 257]; 7],
    /// The mask of each combination of classes, [`CLEAR`] set; only the
    /// first combinations are used.
    combined: [u64; COMBINED],
    /// The 16-bit fields, in [`NARROW`] order, as 4,096 buckets of 16
    /// values (the buckets of their [`Table`]).
    narrow: [[u64; 4096]; 3],
    /// Per 16-bit field, `0xfff`, or 0 when no rule looks at it: then
    /// only its first bucket, of all rules, is read.
    pick: [usize; 3],
}

/// An address as [`Fast`] looks it up: the buckets of its [`Table`], from
/// 256 to 65,536; one of all rules when no rule looks at it.
#[derive(Debug, Clone)]
struct Addr {
    /// From 16 to 24; 32 for the single bucket.
    shift: u32,
    buckets: Box<[u64]>,
}

impl Addr {
    #[inline(always)]
    fn row(&self, v: u32) -> u64 {
        self.view().row(v)
    }

    /// Its buckets, borrowed.
    #[inline(always)]
    fn view(&self) -> Rows<'_> {
        Rows {
            buckets: &self.buckets,
            shift: self.shift,
        }
    }
}

/// The buckets of an [`Addr`], borrowed: 2^(32 - `shift`) of them.
#[derive(Debug, Clone, Copy)]
struct Rows<'a> {
    buckets: &'a [u64],
    shift: u32,
}

impl Rows<'_> {
    /// One bucket of all rules, to search, for every address: what may
    /// match, not knowing the buckets.
    const SEARCH: Rows<'static> = Rows {
        buckets: &[!CLEAR],
        shift: 32,
    };

    #[inline(always)]
    fn row(self, v: u32) -> u64 {
        let b = (v as u64 >> self.shift) as usize;
        debug_assert!(b < self.buckets.len());
        // SAFETY: `buckets` has 2^(32 - shift) entries ([`Fast::build`];
        // 1 with `shift` 32 for `SEARCH`), and a 32-bit value shifted
        // right by `shift` is below that.
        unsafe { *self.buckets.get_unchecked(b) }
    }
}

/// Destinations from `lo` to `lo + width`: those a rule may match.
#[derive(Debug, Clone, Copy)]
struct Span {
    lo: u32,
    width: u32,
}

impl Span {
    const ALL: Span = Span {
        lo: 0,
        width: u32::MAX,
    };
    /// For no destination: 0.0.0.0 alone, whose bucket then says that no
    /// rule matches, as a span cannot be empty.
    const NONE: Span = Span { lo: 0, width: 0 };

    #[inline(always)]
    fn holds(self, v: u32) -> bool {
        v.wrapping_sub(self.lo) <= self.width
    }
}

/// In the masks of [`Fast`]: no field needs a search. A bit no rule has:
/// the one-pass form is for hooks of at most 63 rules.
const CLEAR: u64 = 1 << 63;

/// The small fields, as [`Tables::classes`] holds them.
const SMALL: [Field; 7] = [
    Field::Iif,
    Field::Oif,
    Field::Proto,
    Field::Itype,
    Field::Icode,
    Field::Ttl,
    Field::Tos,
];
/// The 16-bit interval fields, as [`Tables::narrow`] holds them.
const NARROW: [Field; 3] = [Field::Dport, Field::Sport, Field::Length];
/// The addresses, as [`Fast::addrs`] holds them.
const ADDRS: [Field; 2] = [Field::Src, Field::Dst];
/// Most combinations of small-field classes (32 KiB of masks).
const COMBINED: usize = 4096;

impl Fast {
    /// The one-pass form of a hook of `rules` rules whose `tables` are
    /// these and whose base chains hold `base`; `None` for 64 rules or
    /// more, or when its small fields have too many combinations.
    pub(crate) fn build(tables: &[Table], rules: usize, base: &[u64]) -> Option<Fast> {
        let base = *base.first()?;
        let known = |f: &Field| SMALL.contains(f) || NARROW.contains(f) || ADDRS.contains(f);
        if rules >= 64 || tables.iter().any(|t| !known(&t.field)) {
            return None;
        }
        let table = |f: Field| tables.iter().find(|t| t.field == f);
        // A hook has a table per field at most: an index fits in a byte.
        let searched = [NARROW[0], NARROW[1], NARROW[2], ADDRS[0], ADDRS[1]]
            .map(|f| tables.iter().position(|t| t.field == f).map(|i| i as u8));
        let mut tables = Box::new(Tables {
            classes: [[0; 257]; 7],
            combined: [0; COMBINED],
            narrow: [[u64::MAX; 4096]; 3],
            pick: [0; 3],
        });
        let mut reps: Vec<Vec<u64>> = Vec::new();
        let mut stride = 1usize;
        for (f, class) in SMALL.iter().zip(tables.classes.iter_mut()) {
            let Some(t) = table(*f) else {
                reps.push(vec![u64::MAX]);
                continue;
            };
            if !t.starts.is_empty() {
                return None;
            }
            let mut distinct: Vec<u64> = Vec::new();
            for (v, &row) in t.masks.iter().enumerate().take(257) {
                let id = match distinct.iter().position(|&r| r == row) {
                    Some(id) => id,
                    None => {
                        distinct.push(row);
                        distinct.len() - 1
                    }
                };
                class[v] = (id * stride) as u32;
            }
            stride *= distinct.len();
            if stride > COMBINED {
                return None;
            }
            reps.push(distinct);
        }
        for (k, c) in tables.combined.iter_mut().enumerate().take(stride) {
            let mut at = k;
            let mut mask = u64::MAX;
            for r in &reps {
                mask &= r[at % r.len()];
                at /= r.len();
            }
            *c = mask | CLEAR;
        }
        // Bucket `b`'s mask: its interval's; for a bucket to search, the
        // rules of all its intervals, without CLEAR.
        let bucket = |t: &Table, b: usize, e: u32| {
            if e & INSIDE != 0 {
                let at = (e & !INSIDE) as usize;
                let end = t.index[b + 1] as usize;
                t.masks[at..end].iter().fold(0, |m, r| m | r) & !CLEAR
            } else {
                t.masks[e as usize] | CLEAR
            }
        };
        let Tables { narrow, pick, .. } = &mut *tables;
        for ((f, buckets), pick) in NARROW.iter().zip(narrow).zip(pick) {
            match table(*f) {
                None => {}
                Some(t) if t.starts.is_empty() || t.shift != 4 || t.first.len() < 4096 => {
                    return None
                }
                Some(t) => {
                    for (b, (m, &e)) in buckets.iter_mut().zip(&t.first).enumerate() {
                        *m = bucket(t, b, e);
                    }
                    *pick = 0xfff;
                }
            }
        }
        let mut addrs = Vec::new();
        for f in ADDRS {
            addrs.push(match table(f) {
                None => Addr {
                    shift: 32,
                    buckets: Box::new([u64::MAX]),
                },
                Some(t) if t.starts.is_empty() || t.first.len() != 1 << (32 - t.shift) => {
                    return None
                }
                // The length `Addr::row` relies on, checked above.
                Some(t) => Addr {
                    shift: t.shift,
                    buckets: t
                        .first
                        .iter()
                        .enumerate()
                        .map(|(b, &e)| bucket(t, b, e))
                        .collect(),
                },
            });
        }
        // Per rule, from the lowest to the highest destination it may
        // match (none while `lo > hi`).
        let mut ends = [(0, u32::MAX); 64];
        if let Some(t) = table(Field::Dst) {
            ends.fill((u32::MAX, 0));
            for (k, &from) in t.starts.iter().enumerate() {
                let to = t.starts.get(k + 1).map_or(u32::MAX, |&s| s - 1);
                let mut m = t.masks[k] & base & !CLEAR;
                while m != 0 {
                    let (lo, hi) = &mut ends[m.trailing_zeros() as usize];
                    (*lo, *hi) = ((*lo).min(from), (*hi).max(to));
                    m &= m - 1;
                }
            }
        }
        let mut spans = Box::new(ends.map(|(lo, hi)| match hi.checked_sub(lo) {
            Some(width) => Span { lo, width },
            None => Span::NONE,
        }));
        spans[63] = Span::NONE;
        // The first output port's class is 0: another one's differs only
        // when a rule tells them apart.
        let oif = tables.classes[1].iter().any(|&c| c != 0);
        Some(Fast {
            t: tables,
            addrs: addrs.try_into().ok()?,
            base: base & !CLEAR,
            spans,
            oif,
            searched,
        })
    }

    /// The hook's verdict on `x`; a packet no rule of a base chain
    /// matches costs no branch but the last.
    #[inline(always)]
    fn judge<F: Fields>(&self, p: &Program, x: F, counters: Option<&RuleCounters>) -> Verdict {
        let mask = self.mask(x);
        if self.clear(mask) {
            p.nothing
        } else {
            self.decide(p, mask, x, counters)
        }
    }

    /// The verdict on `x`, whose `mask` holds a rule of a base chain.
    #[inline(always)]
    fn decide<F: Fields>(
        &self,
        p: &Program,
        mask: u64,
        x: F,
        counters: Option<&RuleCounters>,
    ) -> Verdict {
        if mask & CLEAR == 0 {
            // A field's bucket must be searched.
            self.searched(p, x, counters)
        } else {
            p.matched(mask & !CLEAR, x.len(), counters)
        }
    }

    /// The verdict on `x`, whose bucket in some interval field must be
    /// searched (it holds a set's address or a range's end): the small
    /// fields' classes again, and each interval field looked up in its
    /// table, searching where it must; not every field again, as the
    /// field-by-field form would.
    #[cold]
    #[inline(never)]
    fn searched<F: Fields>(&self, p: &Program, x: F, counters: Option<&RuleCounters>) -> Verdict {
        let (t, l4) = (&*self.t, x.l4());
        let c = &t.classes;
        // The small fields in [`SMALL`] order, combined as `mask` combines
        // them. Not a helper shared with `mask`: with one, the compiler
        // spilled more around the hot path (238.9 instructions a packet
        // for `filter20` against 227.4).
        let small = [
            x.iif(),
            x.oif(),
            x.proto(),
            (l4 >> 24) as u8,
            (l4 >> 16) as u8,
            x.ttl(),
            x.tos(),
        ];
        let k: u32 = small.iter().zip(c).map(|(&v, c)| c[v as usize]).sum();
        let mut mask = t.combined[k as usize & (COMBINED - 1)] & !CLEAR;
        let values = [l4 & 0xffff, l4 >> 16, x.len() as u32, x.src(), x.dst()];
        for (at, v) in self.searched.iter().zip(values) {
            if let Some(t) = at.and_then(|i| p.tables.get(i as usize)) {
                mask &= t.row(v, 1)[0];
            }
        }
        if self.clear(mask) {
            p.nothing
        } else {
            p.matched(mask, x.len(), counters)
        }
    }

    /// Every rule of the hook that may match `x`; with [`CLEAR`] when no
    /// field needs a search, and then exactly those whose every field
    /// matches: the mask [`Program::walk`](super::Program) walks.
    #[inline(always)]
    fn mask<F: Fields>(&self, x: F) -> u64 {
        self.part(x) & self.addresses(x)
    }

    /// [`Fast::mask`] but for the addresses: the small fields' combination
    /// and the 16-bit fields' buckets.
    #[inline(always)]
    fn part<F: Fields>(&self, x: F) -> u64 {
        let t = &*self.t;
        let c = &t.classes;
        let l4 = x.l4();
        let (itype, icode) = ((l4 >> 24) as u8, (l4 >> 16) as u8);
        let k = c[0][x.iif() as usize]
            + c[1][x.oif() as usize]
            + c[2][x.proto() as usize]
            + c[3][itype as usize]
            + c[4][icode as usize]
            + c[5][x.ttl() as usize]
            + c[6][x.tos() as usize];
        // Each index below its table's length by construction: masks, no
        // bounds checks.
        let at = |i: usize, v: u16| t.narrow[i][(v >> 4) as usize & t.pick[i]];
        t.combined[k as usize & (COMBINED - 1)]
            & at(0, l4 as u16)
            & at(1, (l4 >> 16) as u16)
            & at(2, x.len())
    }

    /// The addresses' part of [`Fast::mask`]: their buckets.
    #[inline(always)]
    fn addresses<F: Fields>(&self, x: F) -> u64 {
        let [src, dst] = &self.addrs;
        src.row(x.src()) & dst.row(x.dst())
    }

    /// True when `mask` holds no rule of a base chain: no rule matches the
    /// packet, whether a field needs a search or not.
    #[inline(always)]
    fn clear(&self, mask: u64) -> bool {
        mask & self.base == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::compile::{compile, Iface};
    use crate::filter::nft::build::*;
    use crate::filter::nft::{family, Expr, Ruleset as Nft};
    use crate::filter::sample::{port_rules, udp_dport as dport};
    use crate::testutil::XorShift;

    /// Values near every boundary the rulesets below name, and random ones.
    fn packet(x: &mut XorShift) -> Meta {
        let r = x.next();
        let pick = |r: u64, set: &[u32], bits: u32| -> u32 {
            if r.is_multiple_of(3) {
                (r >> 8) as u32 & ((1u64 << bits) - 1) as u32
            } else {
                let v = set[(r >> 8) as usize % set.len()];
                v.wrapping_add(((r >> 20) % 3) as u32).wrapping_sub(1)
            }
        };
        let ports = [0, 7, 19, 22, 23, 53, 80, 123, 443, 1000, 1001, 1064, 1098];
        let ports = [&ports[..], &[3306, 5555, 6000, 6999, 7000, 65535]].concat();
        let addrs = [
            0x0a01_0000,
            0x0a01_ffff,
            0x0a00_0000,
            0x0aff_ffff,
            0xc0a8_0000,
            0xc0a8_ffff,
            0xac10_0000,
            0xac1f_ffff,
            0xc000_0000,
            0xffff_ffff,
        ];
        let l4 = if r.is_multiple_of(7) {
            None
        } else {
            let sport = pick(x.next(), &ports, 16) & 0xffff;
            let dport = pick(x.next(), &ports, 16) & 0xffff;
            Some(sport << 16 | dport)
        };
        Meta {
            iif: [0, 1, 2, crate::filter::NO_IFACE][(r >> 4) as usize % 4],
            oif: [0, 1, crate::filter::NO_IFACE][(r >> 6) as usize % 3],
            src: pick(x.next(), &addrs, 32),
            dst: pick(x.next(), &addrs, 32),
            proto: [1, 6, 17, 47, 0, 255][(r >> 8) as usize % 6],
            tos: pick(x.next(), &[0, 0xb8, 0xbc, 0x20], 8) as u8,
            ttl: pick(x.next(), &[1, 2, 64, 255], 8) as u8,
            len: pick(x.next(), &[20, 28, 1400, 1401, 65535], 16) as u16,
            l4,
        }
    }

    /// `r` judged field by field, without its one-pass form.
    fn by_fields(mut r: Ruleset) -> Ruleset {
        for p in r.programs.iter_mut().flatten() {
            p.fast = None;
        }
        r
    }

    /// Verdicts and counts of the one-pass form and of the field-by-field
    /// one, on two copies of `r`'s counters.
    fn same(make: &dyn Fn() -> Ruleset, seed: u64) {
        let (one, batch) = (by_fields(make()), make());
        for p in batch.programs.iter().flatten() {
            assert!(p.fast.is_some() || p.rules.len() >= 64, "a one-pass form");
        }
        let mut x = XorShift(seed);
        let mut judged = [0usize; 4];
        for round in 0..300 {
            let n = 1 + round % 100;
            let metas: Vec<Meta> = (0..n).map(|_| packet(&mut x)).collect();
            for hook in Hook::ALL {
                let out: Vec<Verdict> = metas.iter().map(|m| batch.judge(hook, m, 0)).collect();
                for (m, v) in metas.iter().zip(&out) {
                    let want = one.judge(hook, m, 0);
                    assert_eq!(*v, want, "{hook:?} {m:?}");
                    judged[match want {
                        Verdict::Accept => 0,
                        Verdict::Drop => 1,
                        Verdict::Reject(_) => 2,
                        Verdict::Kernel => 3,
                    }] += 1;
                }
            }
        }
        assert_eq!(one.totals(), batch.totals());
        assert!(one.totals().iter().any(|c| c.0 > 0), "no rule matched");
        assert!(judged[0] > 0 && judged[1] + judged[2] > 0, "{judged:?}");
    }

    #[test]
    fn batch_judges_the_bench_ruleset_as_packet_by_packet() {
        same(&|| crate::filter::sample::twenty_rules(7), 0x1234_5678);
        // Its own traffic: random sources and destinations, some of them
        // in the set.
        let (one, batch) = (
            by_fields(crate::filter::sample::twenty_rules(7)),
            crate::filter::sample::twenty_rules(7),
        );
        let mut x = XorShift(99);
        for _ in 0..200 {
            let metas: Vec<Meta> = (0..64)
                .map(|_| {
                    let mut m = packet(&mut x);
                    m.src = x.next() as u32 | 0xc000_0000;
                    m
                })
                .collect();
            for m in &metas {
                let v = batch.judge(Hook::Forward, m, 0);
                assert_eq!(v, one.judge(Hook::Forward, m, 0));
            }
        }
        assert_eq!(one.totals(), batch.totals());
    }

    /// The address at `offset` (12 source, 16 destination) in (op 0) or
    /// not in (op 1) the /8 of `first`.
    fn net(offset: u32, first: u8, op: u32) -> Vec<Expr> {
        vec![
            payload(1, offset, 4),
            bitwise(&[255, 0, 0, 0]),
            cmp(op, &[first, 0, 0, 0]),
        ]
    }

    /// Two base chains, jump, goto and return, counters, a policy drop.
    fn chains() -> Ruleset {
        let mut rs = Nft::default();
        rs.chains
            .push(base_chain(family::IPV4, "t", "fw", 2, 0, true));
        rs.chains
            .push(base_chain(family::INET, "u", "early", 2, -5, false));
        rs.chains
            .push(base_chain(family::IPV4, "t", "pre", 0, 0, true));
        rs.chains.push(chain(family::IPV4, "t", "sub"));
        rs.chains.push(chain(family::IPV4, "t", "deep"));
        let mut h = 0;
        let mut add = |rs: &mut Nft, c: &str, e: Vec<Expr>| {
            h += 1;
            rs.rules.push(rule(family::IPV4, "t", c, h, e));
        };
        add(
            &mut rs,
            "fw",
            [dport(22), vec![verdict(-3, Some("sub"))]].concat(),
        );
        add(
            &mut rs,
            "fw",
            [dport(53), vec![verdict(-4, Some("deep"))]].concat(),
        );
        add(
            &mut rs,
            "fw",
            vec![payload(1, 8, 1), cmp(2, &[2]), counter(), reject(0, 10)],
        );
        add(
            &mut rs,
            "fw",
            vec![meta(16), cmp(0, &[6]), verdict(1, None)],
        );
        add(&mut rs, "fw", [dport(80), vec![counter()]].concat());
        add(
            &mut rs,
            "sub",
            [net(12, 10, 0), vec![verdict(-5, None)]].concat(),
        );
        add(&mut rs, "sub", vec![reject(1, 0)]);
        add(
            &mut rs,
            "deep",
            [net(16, 192, 1), vec![verdict(1, None)]].concat(),
        );
        add(&mut rs, "deep", [dport(7), vec![verdict(0, None)]].concat());
        let tos = vec![payload(1, 1, 1), bitwise(&[0xfc]), cmp(0, &[0xb8])];
        add(&mut rs, "pre", [tos, vec![verdict(0, None)]].concat());
        add(&mut rs, "pre", vec![verdict(1, None)]);
        rs.rules.push(rule(
            family::INET,
            "u",
            "early",
            99,
            [dport(1000), vec![verdict(0, None)]].concat(),
        ));
        let ports = [0, 1].map(|i| Iface {
            name: format!("eth{i}"),
            ifindex: 10 + i,
        });
        let r = compile(&rs, &ports);
        assert!(r.kernel_hooks == 0, "{:?}", r.kernel_reasons);
        r.with_counters(1, &[])
    }

    /// More than 64 rules: several mask words.
    fn wide() -> Ruleset {
        let mut rs = Nft::default();
        rs.chains
            .push(base_chain(family::IPV4, "t", "late", 2, 10, true));
        port_rules(&mut rs, family::IPV4, "t", "late", 100);
        rs.rules.push(rule(
            family::IPV4,
            "t",
            "late",
            200,
            [net(16, 10, 0), vec![verdict(1, None)]].concat(),
        ));
        compile(&rs, &[]).with_counters(1, &[])
    }

    /// `m` as a frame: Ethernet header, IPv4 header without options, the
    /// transport header's first four bytes (zeros when `m` has none).
    fn frame_of(m: &Meta) -> [u8; 38] {
        let mut f = [0u8; 38];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        let ip = &mut f[14..];
        ip[0] = 0x45;
        ip[1] = m.tos;
        ip[2..4].copy_from_slice(&m.len.to_be_bytes());
        ip[8] = m.ttl;
        ip[9] = m.proto;
        ip[12..16].copy_from_slice(&m.src.to_be_bytes());
        ip[16..20].copy_from_slice(&m.dst.to_be_bytes());
        ip[20..24].copy_from_slice(&m.l4.unwrap_or(0).to_be_bytes());
        f
    }

    #[test]
    fn frames_are_read_and_judged_as_parsed() {
        let make = || crate::filter::sample::twenty_rules(7);
        let (one, batch) = (by_fields(make()), make());
        let mut x = XorShift(0xf00d);
        let (mut read, mut refused) = (0, 0);
        for _ in 0..20_000 {
            let m = packet(&mut x);
            let mut f = frame_of(&m);
            let r = x.next();
            // Now and then what the one-pass form does not read: header
            // options, a later fragment (or just more fragments), a
            // total length without a transport header, a short frame.
            match r % 16 {
                0 => f[14] = 0x46,
                1 => f[14 + 6..14 + 8].copy_from_slice(&[0x20, (r >> 8) as u8 & 3]),
                2 => f[14 + 2..14 + 4].copy_from_slice(&((r >> 8) as u16 % 24).to_be_bytes()),
                _ => {}
            }
            let short = r % 16 == 3;
            let frame = if short {
                &f[..30 + (r >> 8) as usize % 8]
            } else {
                &f[..]
            };
            let parsed = Meta::parse(&frame[14..], m.iif, NO_IFACE);
            let Some(p) = Plain::read(frame, m.iif) else {
                // Only the frames Meta::parse reads without a transport
                // header, or with options, are left to it.
                assert!(
                    f[14] != 0x45 || parsed.is_none_or(|m| m.l4.is_none()),
                    "{f:?}"
                );
                continue;
            };
            read += 1;
            assert_eq!(Some(p.meta()), parsed);
            let forwarded = p.forwarded(m.oif);
            let want = Meta {
                ttl: m.ttl.wrapping_sub(1),
                oif: m.oif,
                ..p.meta()
            };
            assert_eq!(forwarded.meta(), want);
            for hook in Hook::ALL {
                for (q, meta) in [(p, p.meta()), (forwarded, want)] {
                    let v = batch.gate(hook).judge_frame(q, batch.counters_of(0));
                    assert_eq!(v, one.judge(hook, &meta, 0), "{hook:?} {meta:?}");
                    refused += (v != Verdict::Accept) as usize;
                }
            }
        }
        assert!(
            read > 10_000 && refused > 1_000,
            "{read} read, {refused} refused"
        );
        assert_eq!(one.totals(), batch.totals());
    }

    /// What the worker's `Hooks` say of a forwarded frame: prerouting,
    /// then forward and postrouting as the packet leaves, asked in order
    /// on the parsed packet.
    fn passage(r: &Ruleset, m: &Meta, oif: u8) -> (crate::forward::Passage, Option<Hook>) {
        use crate::forward::Passage;
        let v = r.judge(Hook::Prerouting, m, 0);
        if v != Verdict::Accept {
            return (Passage::RefusedAsReceived, Some(Hook::Prerouting));
        }
        let out = Meta {
            ttl: m.ttl.wrapping_sub(1),
            oif,
            ..*m
        };
        for hook in [Hook::Forward, Hook::Postrouting] {
            if r.judge(hook, &out, 0) != Verdict::Accept {
                return (Passage::RefusedAsForwarded, Some(hook));
            }
        }
        (Passage::Through, None)
    }

    #[test]
    fn hooks_pass_frames_as_the_hooks_judge_them_in_order() {
        use crate::forward::{Judge, Passage};
        use crate::worker::Hooks;
        // The forward chain alone (the one gate the hooks then ask), and
        // base chains at prerouting and forward (one of them with a drop
        // policy: nothing goes through).
        let makes: [(&dyn Fn() -> Ruleset, bool); 2] = [
            (&|| crate::filter::sample::twenty_rules(3), true),
            (&chains, false),
        ];
        for (make, through) in makes {
            let (one, batch) = (by_fields(make()), make());
            let mut x = XorShift(0xcafe);
            let mut refused = [None; 1];
            // Through, refused at prerouting, refused later.
            let mut seen = [0usize; 3];
            for _ in 0..5_000 {
                let m = packet(&mut x);
                if m.iif == NO_IFACE || m.oif == NO_IFACE {
                    continue;
                }
                let f = frame_of(&m);
                refused[0] = None;
                let got = Hooks::new(&batch, 0, &mut refused).pass(&f, 0, m.iif as usize, m.oif);
                let meta = Meta::parse(&f[14..], m.iif, NO_IFACE).unwrap();
                let (want, hook) = passage(&one, &meta, m.oif);
                assert_eq!(got, want, "{meta:?}");
                assert_eq!(refused[0].map(|(h, _)| h), hook, "{meta:?}");
                seen[match got {
                    Passage::Through => 0,
                    Passage::RefusedAsReceived => 1,
                    Passage::RefusedAsForwarded => 2,
                }] += 1;
            }
            let prerouting = batch.active(Hook::Prerouting);
            assert!(
                (seen[0] > 100) == through && seen[2] > 100 && (seen[1] > 100) == prerouting,
                "{seen:?}"
            );
        }
    }

    /// A memo detached from its ruleset (carried to the next batch) gives
    /// the verdicts of the memo it was, on frames of its flow to any
    /// destination: with the sample ruleset, and with two rules on
    /// destinations whose span holds others (10.1.0.0/16 and 10.3.0.0/16,
    /// so that the buckets tell).
    #[test]
    fn a_detached_memo_judges_as_the_memo_it_was() {
        let mut rs = Nft::default();
        rs.chains
            .push(base_chain(family::IPV4, "filter", "forward", 2, 0, true));
        for (handle, net) in [(1, [10, 1, 0, 0]), (2, [10, 3, 0, 0])] {
            let e = vec![
                payload(1, 16, 4),
                bitwise(&[255, 255, 0, 0]),
                cmp(0, &net),
                verdict(0, None),
            ];
            rs.rules
                .push(rule(family::IPV4, "filter", "forward", handle, e));
        }
        let two = compile(&rs, &[]).with_counters(1, &[]);
        for batch in [crate::filter::sample::twenty_rules(3), two] {
            let q = batch.gate(Hook::Forward).quick().expect("forward only");
            let mut x = XorShift(11);
            let mut judged = [0usize; 2];
            for _ in 0..300 {
                let mut flow = packet(&mut x);
                (flow.iif, flow.oif) = (flow.iif.min(2), flow.oif.min(1));
                let mut memo = Memo::default();
                let first = frame_of(&flow);
                if q.learn::<true>(&mut memo, &first, (flow.iif, flow.oif))
                    .is_none()
                {
                    continue;
                }
                let detached = memo.detached();
                for k in 0..32 {
                    let r = x.next() as u32;
                    let dst = match k % 3 {
                        0 => 0xc0a8_0000 | r >> 16,
                        1 => 0x0a00_0000 | r >> 14,
                        _ => r,
                    };
                    let f = frame_of(&Meta { dst, ..flow });
                    let verdict = |memo: &Memo| match memo.seen::<true>(&f, flow.iif, flow.oif) {
                        Seen::Passes => Verdict::Accept,
                        Seen::Rules(mask) => {
                            let p = Plain::read(&f, flow.iif).expect("plain");
                            q.verdict(mask, p.forwarded(flow.oif), None)
                        }
                        Seen::New => panic!("a frame of the memo's flow"),
                    };
                    let want = verdict(&memo);
                    assert_eq!(verdict(&detached), want, "{flow:?} to {dst:#x}");
                    judged[(want == Verdict::Accept) as usize] += 1;
                }
            }
            assert!(judged[0] > 300 && judged[1] > 300, "{judged:?}");
        }
    }

    /// A batch through one `Hooks`, as the worker asks it: runs of frames
    /// of one flow to many destinations (judged on the memo of the one
    /// before), frames that differ from the one before in one field the
    /// memo keys on, and new flows; verdicts and refusals as the hooks
    /// judge each frame alone.
    #[test]
    fn a_batch_is_judged_with_its_memo_as_frame_by_frame() {
        use crate::forward::{Judge, Passage};
        use crate::worker::Hooks;
        let make = || crate::filter::sample::twenty_rules(3);
        let (one, batch) = (by_fields(make()), make());
        let mut x = XorShift(0x5eed);
        let mut refused = vec![None; 64];
        let mut seen = [0usize; 3];
        for _ in 0..400 {
            let mut want = Vec::new();
            let mut hooks = Hooks::new(&batch, 0, &mut refused);
            let mut prev = packet(&mut x);
            for lane in 0..64u16 {
                let new = packet(&mut x);
                let r = x.next();
                let mut m = match r % 8 {
                    0 | 1 => new,
                    2..=4 => Meta {
                        dst: new.dst,
                        ..prev
                    },
                    5 => Meta {
                        src: new.src,
                        ..prev
                    },
                    6 => Meta {
                        ttl: new.ttl,
                        tos: new.tos,
                        ..prev
                    },
                    _ => Meta {
                        len: new.len,
                        l4: new.l4,
                        oif: new.oif,
                        ..prev
                    },
                };
                // The vector path's frames come from a port and leave
                // through one.
                m.iif = m.iif.min(2);
                m.oif = m.oif.min(1);
                let f = frame_of(&m);
                let got = hooks.pass(&f, lane, m.iif as usize, m.oif);
                let meta = Meta::parse(&f[14..], m.iif, NO_IFACE).unwrap();
                let (passage, hook) = passage(&one, &meta, m.oif);
                assert_eq!(got, passage, "{meta:?}");
                seen[match got {
                    Passage::Through => 0,
                    Passage::RefusedAsReceived => 1,
                    Passage::RefusedAsForwarded => 2,
                }] += 1;
                want.push(hook);
                prev = m;
            }
            // The hooks' borrow of `refused` ends here.
            for (lane, hook) in want.into_iter().enumerate() {
                assert_eq!(refused[lane].take().map(|(h, _)| h), hook);
            }
        }
        assert!(seen[0] > 5_000 && seen[2] > 1_000, "{seen:?}");
        assert_eq!(one.totals(), batch.totals());
    }

    #[test]
    fn batch_judges_jumps_policies_and_wide_hooks_as_packet_by_packet() {
        same(&chains, 0xfeed);
        same(&wide, 0xbeef);
    }
}
