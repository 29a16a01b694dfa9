//! The host's packet filter on the fast path: the nf_tables ruleset of the
//! namespace, compiled.
//!
//! The engine never bypasses the host's rules. The control side
//! (`control::filter`) reads the ruleset over netlink ([`nft`]) at start and on
//! every change, and compiles the stateless part of the `ip` and `inet`
//! filter chains ([`compile`]) into an immutable [`Ruleset`] published in
//! the next snapshot. What it cannot compile (connection tracking, NAT,
//! marks, `log`, `limit`, sets updated from the packet path, legacy
//! iptables rules, ...) makes its hook "the kernel's": the XDP program
//! passes the traffic of that hook to the kernel, whose filter sees it.
//!
//! A hook's rules become a classifier: every match of every rule is a set
//! of values of one packet field ([`Field`]); per field, the values are cut
//! into intervals, each holding the bit mask of the rules that accept it.
//! A packet costs one table lookup per field some rule looks at, an AND of
//! the masks (stopping as soon as no rule is left), and a walk over the
//! chains that visits only the rules whose every match holds, with
//! jumps, gotos, returns and base chain policies in priority order. The
//! vector path judges a vector of packets at once ([`batch`]): for hooks
//! of up to 64 rules, the small fields cross-producted into one table and
//! one pass over the packets without a branch per field.
//!
//! ```
//! use xdpip::filter::{Hook, Meta, Ruleset, Verdict};
//! let empty = Ruleset::default();
//! assert!(!empty.active(Hook::Forward));
//! assert_eq!(empty.judge(Hook::Forward, &Meta::default(), 0), Verdict::Accept);
//! ```

pub mod batch;
pub mod compile;
pub mod legacy;
pub mod nft;
#[doc(hidden)]
pub mod sample;
pub mod set;

use crate::stats::Counter;
use serde::{Deserialize, Serialize};

/// The netfilter hooks of IPv4 the engine's traffic passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Hook {
    /// Every received packet, before the route lookup.
    Prerouting = 0,
    /// Packets to a local address.
    Input = 1,
    /// Forwarded packets.
    Forward = 2,
    /// Locally generated packets.
    Output = 3,
    /// Forwarded and locally generated packets, leaving.
    Postrouting = 4,
}

impl Hook {
    /// Every hook, by number (`NF_INET_*`).
    pub const ALL: [Hook; 5] = [
        Hook::Prerouting,
        Hook::Input,
        Hook::Forward,
        Hook::Output,
        Hook::Postrouting,
    ];

    /// Its name, as nft writes it.
    pub fn name(self) -> &'static str {
        match self {
            Hook::Prerouting => "prerouting",
            Hook::Input => "input",
            Hook::Forward => "forward",
            Hook::Output => "output",
            Hook::Postrouting => "postrouting",
        }
    }

    /// Its bit in hook masks (the XDP program's `filter_hooks`).
    pub fn bit(self) -> u32 {
        1 << self as u32
    }
}

/// Hooks a forwarded packet passes.
pub const FORWARDED: u32 = 1 | 4 | 16;
/// Hooks a packet delivered locally passes.
pub const DELIVERED: u32 = 1 | 2;
/// Hooks a locally generated packet passes.
pub const ORIGINATED: u32 = 8 | 16;

/// The interface slot of "no interface" (the input interface of a
/// locally generated packet, the output interface of a delivered one).
pub const NO_IFACE: u8 = crate::iface::MAX_PORTS as u8;

/// The value of a transport field when the packet has none: a non-first
/// fragment, or a transport header shorter than 4 bytes (nft's payload
/// expression fails there, and the rule does not match).
pub const ABSENT: u32 = 0x1_0000;

/// What the filter looks at in a packet, parsed once per hook pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// Input interface: the engine's port number, or [`NO_IFACE`].
    pub iif: u8,
    /// Output interface: the engine's port number, or [`NO_IFACE`].
    pub oif: u8,
    /// Source address.
    pub src: u32,
    /// Destination address.
    pub dst: u32,
    /// IP protocol (`ip protocol`, `meta l4proto`).
    pub proto: u8,
    /// The TOS byte (`ip dscp` is its high six bits).
    pub tos: u8,
    /// TTL.
    pub ttl: u8,
    /// IP total length (`ip length`; nft's counters count it too).
    pub len: u16,
    /// The first four bytes of the transport header (ports; ICMP type and
    /// code), big endian, when present.
    pub l4: Option<u32>,
}

impl Default for Meta {
    fn default() -> Self {
        Meta {
            iif: NO_IFACE,
            oif: NO_IFACE,
            src: 0,
            dst: 0,
            proto: 0,
            tos: 0,
            ttl: 64,
            len: 20,
            l4: None,
        }
    }
}

impl Meta {
    /// Parses an IPv4 packet (from its header on) whose header the caller
    /// has validated; `None` when it is shorter than its header says.
    ///
    /// ```
    /// use xdpip::filter::Meta;
    /// let mut p = [0u8; 28];
    /// p[0] = 0x45; p[3] = 28; p[8] = 64; p[9] = 17;
    /// p[20..24].copy_from_slice(&[0x9c, 0x40, 0x15, 0xb3]);
    /// let m = Meta::parse(&p, 0, 1).unwrap();
    /// assert_eq!(m.l4, Some(0x9c40_15b3));
    /// assert_eq!(m.proto, 17);
    /// ```
    #[inline]
    pub fn parse(ip: &[u8], iif: u8, oif: u8) -> Option<Meta> {
        let h = ip.get(..20)?;
        let hl = ((h[0] & 0x0f) as usize) * 4;
        let len = u16::from_be_bytes([h[2], h[3]]);
        let frag = u16::from_be_bytes([h[6], h[7]]) & 0x1fff;
        let l4 = if frag == 0 && hl + 4 <= len as usize {
            ip.get(hl..hl + 4)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        } else {
            None
        };
        Some(Meta {
            iif,
            oif,
            src: u32::from_be_bytes([h[12], h[13], h[14], h[15]]),
            dst: u32::from_be_bytes([h[16], h[17], h[18], h[19]]),
            proto: h[9],
            tos: h[1],
            ttl: h[8],
            len,
            l4,
        })
    }
}

/// A packet field the classifier looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Field {
    /// Input interface slot.
    Iif,
    /// Output interface slot.
    Oif,
    /// IP protocol.
    Proto,
    /// Transport bytes 2-3: destination port.
    Dport,
    /// Transport bytes 0-1: source port (for ICMP, type and code).
    Sport,
    /// Transport byte 0: ICMP type.
    Itype,
    /// Transport byte 1: ICMP code.
    Icode,
    /// TTL.
    Ttl,
    /// TOS byte.
    Tos,
    /// Total length.
    Length,
    /// Source address.
    Src,
    /// Destination address.
    Dst,
}

impl Field {
    /// Every field, in the order the classifier looks them up: cheap,
    /// selective ones first.
    pub const ALL: [Field; 12] = [
        Field::Iif,
        Field::Oif,
        Field::Proto,
        Field::Dport,
        Field::Sport,
        Field::Itype,
        Field::Icode,
        Field::Ttl,
        Field::Tos,
        Field::Length,
        Field::Src,
        Field::Dst,
    ];

    /// The largest value a packet can have in this field, counting the
    /// "absent" value of transport fields.
    pub fn max(self) -> u32 {
        match self {
            Field::Iif | Field::Oif => NO_IFACE as u32,
            Field::Proto | Field::Ttl | Field::Tos => 255,
            Field::Itype | Field::Icode => 256,
            Field::Dport | Field::Sport => ABSENT,
            Field::Length => 65535,
            Field::Src | Field::Dst => u32::MAX,
        }
    }

    /// The largest value a match can name: a match never accepts an
    /// absent transport header, negated or not.
    pub fn max_present(self) -> u32 {
        match self {
            Field::Itype | Field::Icode => 255,
            Field::Dport | Field::Sport => 65535,
            f => f.max(),
        }
    }

    /// Width in bits of the value nft loads.
    pub fn bits(self) -> u32 {
        match self {
            Field::Iif | Field::Oif => 8,
            Field::Proto | Field::Ttl | Field::Tos | Field::Itype | Field::Icode => 8,
            Field::Dport | Field::Sport | Field::Length => 16,
            Field::Src | Field::Dst => 32,
        }
    }

    /// Its value in `m`.
    #[inline(always)]
    pub fn value(self, m: &Meta) -> u32 {
        match self {
            Field::Iif => m.iif as u32,
            Field::Oif => m.oif as u32,
            Field::Proto => m.proto as u32,
            Field::Dport => m.l4.map_or(ABSENT, |x| x & 0xffff),
            Field::Sport => m.l4.map_or(ABSENT, |x| x >> 16),
            Field::Itype => m.l4.map_or(256, |x| x >> 24),
            Field::Icode => m.l4.map_or(256, |x| (x >> 16) & 0xff),
            Field::Ttl => m.ttl as u32,
            Field::Tos => m.tos as u32,
            Field::Length => m.len as u32,
            Field::Src => m.src,
            Field::Dst => m.dst,
        }
    }

    /// How nft writes it.
    pub fn name(self) -> &'static str {
        match self {
            Field::Iif => "iif",
            Field::Oif => "oif",
            Field::Proto => "l4proto",
            Field::Dport => "th dport",
            Field::Sport => "th sport",
            Field::Itype => "icmp type",
            Field::Icode => "icmp code",
            Field::Ttl => "ip ttl",
            Field::Tos => "ip tos",
            Field::Length => "ip length",
            Field::Src => "ip saddr",
            Field::Dst => "ip daddr",
        }
    }
}

/// How a rejected packet is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Reject {
    /// An ICMP destination unreachable with this code (`reject with icmp
    /// type host-prohibited` is 10, plain `reject` 3).
    Icmp(u8),
    /// A TCP reset (`reject with tcp reset`); nothing for other protocols.
    TcpReset,
}

/// The outcome of a hook for one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Goes on.
    Accept,
    /// Dropped, silently.
    Drop,
    /// Dropped and answered.
    Reject(Reject),
    /// A rule the engine cannot evaluate applies: the kernel must judge
    /// it. The XDP program passes such traffic to the kernel before the
    /// engine sees it; a packet judged `Kernel` got past it during a change
    /// and is dropped.
    Kernel,
}

/// What a matching rule does, compiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Nothing (a rule with only `counter`): the next rule.
    Continue,
    /// `accept`: the end of this base chain.
    Accept,
    /// `drop`
    Drop,
    /// `reject`
    Reject(Reject),
    /// `jump`: to the chain of this index, then back.
    Jump(u16),
    /// `goto`: to the chain of this index, not back.
    Goto(u16),
    /// `return`
    Return,
    /// The rule holds something only the kernel evaluates.
    Kernel,
}

/// Where a rule came from, and what the engine makes of it: shown by
/// `xdpip stats` and at start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleInfo {
    /// `ip` or `inet`.
    pub family: String,
    /// Table.
    pub table: String,
    /// Chain.
    pub chain: String,
    /// Handle (`nft -a list ruleset`).
    pub handle: u64,
    /// What it does, compiled ("drop", "reject icmp code 10", ...).
    pub action: String,
    /// Why its hook's traffic goes to the kernel, when it does.
    pub kernel: Option<String>,
}

/// One hook's rules as a classifier.
#[derive(Debug, Clone)]
pub(crate) struct Program {
    /// Words per rule mask.
    words: usize,
    /// Looked up in this order.
    tables: Vec<Table>,
    /// Per rule, in chain order: action and id (into [`Ruleset::rules`]).
    rules: Vec<(Action, u32)>,
    /// Chain ranges of rule indexes.
    chains: Vec<(u32, u32)>,
    /// Base chains in priority order: chain index, policy drops.
    bases: Vec<(u16, bool)>,
    /// The verdict when no rule matches.
    nothing: Verdict,
    /// The rules of the base chains (the others run only when a rule of
    /// a base chain jumps to them): once none of these is left, no rule
    /// matches.
    base_mask: Vec<u64>,
    /// The one-pass form for vectors ([`batch`]), when it has one.
    fast: Option<batch::Fast>,
}

/// The masks of one field: a direct table for small domains, intervals
/// otherwise.
#[derive(Debug, Clone)]
pub(crate) struct Table {
    field: Field,
    /// Interval starts (empty for a direct table); the first is 0.
    starts: Vec<u32>,
    /// For interval tables: `index[b]` is the first interval starting at
    /// or after `b << shift`, so a lookup searches one bucket of `starts`.
    index: Vec<u32>,
    /// For interval tables, per bucket: the interval holding its first
    /// value, with [`INSIDE`] set when another interval starts inside the
    /// bucket. Most buckets hold no start: their lookup is this one load.
    first: Vec<u32>,
    shift: u32,
    /// `words` masks per interval (or per value of a direct table).
    masks: Vec<u64>,
}

/// In [`Table::first`]: the bucket must be searched.
const INSIDE: u32 = 1 << 31;

impl Table {
    /// A direct table: `masks` holds one row per value.
    pub(crate) fn direct(field: Field, masks: Vec<u64>) -> Table {
        Table {
            field,
            starts: Vec::new(),
            index: Vec::new(),
            first: Vec::new(),
            shift: 0,
            masks,
        }
    }

    /// An interval table over sorted `starts` (the first 0), with a
    /// bucket index on the top bits of the field, so that most lookups
    /// land in a bucket without a start and search nothing: 12 bits of a
    /// 16-bit field (4,096 buckets of 16 values); for addresses, about 32
    /// buckets per start, from 256 (a /8 each) to 65,536 (a /16 each), so
    /// that a few prefixes cost a table that stays in cache and a set of
    /// thousands of addresses leaves most buckets empty.
    pub(crate) fn intervals(field: Field, starts: Vec<u32>, masks: Vec<u64>) -> Table {
        let bits = if field.bits() > 16 {
            (usize::BITS - starts.len().leading_zeros() + 5).clamp(8, 16)
        } else {
            12
        };
        let shift = field.bits() - bits;
        let buckets = (field.max() >> shift) as usize + 1;
        let index: Vec<u32> = (0..=buckets)
            .map(|b| {
                let from = (b as u64) << shift;
                starts.partition_point(|&s| (s as u64) < from) as u32
            })
            .collect();
        let first = (0..buckets)
            .map(|b| {
                let from = (b as u64) << shift;
                let at = starts.partition_point(|&s| (s as u64) <= from) as u32 - 1;
                // A start after the first value and before the next bucket.
                let inside = (at + 1) < index[b + 1];
                at | if inside { INSIDE } else { 0 }
            })
            .collect();
        Table {
            field,
            starts,
            index,
            first,
            shift,
            masks,
        }
    }

    /// The interval of `v` in an interval table.
    #[inline(always)]
    fn interval(&self, v: u32) -> usize {
        let b = (v >> self.shift) as usize;
        let e = self.first[b];
        if e & INSIDE == 0 {
            e as usize
        } else {
            self.search(b, e & !INSIDE, v)
        }
    }

    /// The interval of `v` in bucket `b`, whose first value is in interval
    /// `at`: `at`, or the last one starting inside the bucket at or below
    /// `v`.
    #[cold]
    #[inline(never)]
    fn search(&self, b: usize, at: u32, v: u32) -> usize {
        let (lo, hi) = (at as usize + 1, self.index[b + 1] as usize);
        at as usize + self.starts[lo..hi].partition_point(|&s| s <= v)
    }

    #[inline(always)]
    fn row(&self, v: u32, words: usize) -> &[u64] {
        let i = if self.starts.is_empty() {
            v as usize
        } else {
            self.interval(v)
        };
        &self.masks[i * words..i * words + words]
    }
}

/// Most rules per hook: 8 mask words.
pub const MAX_RULES_PER_HOOK: usize = 512;
/// nf_tables' `NFT_JUMP_STACK_SIZE`.
const JUMP_STACK: usize = 16;

/// Per-rule counters of one worker: packets and bytes, two per rule.
#[derive(Debug, Default)]
pub struct RuleCounters(Box<[Counter]>);

impl RuleCounters {
    #[inline]
    fn count(&self, rule: u32, bytes: u16) {
        let i = rule as usize * 2;
        if let Some(c) = self.0.get(i..i + 2) {
            c[0].add(1);
            c[1].add(bytes as u64);
        }
    }
}

/// The compiled ruleset: immutable, shared by all workers through the
/// snapshot.
#[derive(Debug, Default)]
pub struct Ruleset {
    pub(crate) programs: [Option<Program>; 5],
    /// Hooks whose traffic the kernel must judge (bits of [`Hook::bit`]).
    pub kernel_hooks: u32,
    /// Every compiled rule, by id.
    pub rules: Vec<RuleInfo>,
    /// Why hooks are the kernel's, one line each (rules, legacy iptables).
    pub kernel_reasons: Vec<String>,
    /// The nf_tables generation it was read at.
    pub generation: u32,
    /// This compilation's number, unique in the process (0 for none): what
    /// a worker's carried memo is checked against ([`crate::worker::Carry`]).
    pub(crate) id: u64,
    /// Per worker counters, indexed by worker id.
    counters: Vec<RuleCounters>,
}

impl Ruleset {
    /// True when `hook` has rules the engine evaluates: a hook without
    /// costs nothing.
    #[inline(always)]
    pub fn active(&self, hook: Hook) -> bool {
        self.programs[hook as usize].is_some()
    }

    /// True when the kernel must see the traffic of `hook`.
    #[inline(always)]
    pub fn kernel(&self, hook: Hook) -> bool {
        self.kernel_hooks & hook.bit() != 0
    }

    /// A number for a new compilation: never 0, never given twice.
    pub(crate) fn next_id() -> u64 {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// No rule the engine judges: every hook is the kernel's, for `why`.
    pub fn all_to_kernel(why: String) -> Ruleset {
        Ruleset {
            kernel_hooks: FORWARDED | DELIVERED | ORIGINATED,
            kernel_reasons: vec![why],
            ..Ruleset::default()
        }
    }

    /// Judges one packet at `hook`, counting matched rules in the counters
    /// of `worker`. Never allocates, locks or blocks.
    #[inline(always)]
    pub fn judge(&self, hook: Hook, m: &Meta, worker: usize) -> Verdict {
        self.gate(hook).judge(m, self.counters_of(worker))
    }

    /// Worker `worker`'s counter row, for [`batch::Gate::judge`].
    #[inline(always)]
    pub(crate) fn counters_of(&self, worker: usize) -> Option<&RuleCounters> {
        self.counters.get(worker)
    }

    /// Packets and bytes each rule matched, summed over workers, by rule id.
    pub fn totals(&self) -> Vec<(u64, u64)> {
        let mut t = vec![(0u64, 0u64); self.rules.len()];
        for w in &self.counters {
            for (i, x) in t.iter_mut().enumerate() {
                if let Some(c) = w.0.get(i * 2..i * 2 + 2) {
                    x.0 += c[0].get();
                    x.1 += c[1].get();
                }
            }
        }
        t
    }

    /// The ruleset judged field by field, without its one-pass forms: what
    /// the tests compare those with.
    #[cfg(test)]
    pub(crate) fn field_by_field(mut self) -> Self {
        for p in self.programs.iter_mut().flatten() {
            p.fast = None;
        }
        self
    }

    /// Adds `n` workers' counter rows (done once, when it is compiled).
    pub(crate) fn with_counters(mut self, workers: usize, carried: &[(u64, u64)]) -> Self {
        let n = self.rules.len();
        self.counters = (0..workers)
            .map(|_| RuleCounters((0..n * 2).map(|_| Counter::default()).collect()))
            .collect();
        // Counts of unchanged rules carry over from the ruleset this one
        // replaces, kept in the first worker's row.
        if let Some(first) = self.counters.first() {
            for (i, &(p, b)) in carried.iter().enumerate().take(n) {
                first.0[i * 2].set(p);
                first.0[i * 2 + 1].set(b);
            }
        }
        self
    }
}

impl Program {
    #[inline]
    fn run(&self, m: &Meta, counters: Option<&RuleCounters>) -> Verdict {
        let w = self.words;
        if w == 1 {
            // Up to 64 rules: one word, the common case.
            let base = self.base_mask[0];
            let mut mask = u64::MAX;
            for t in &self.tables {
                mask &= t.row(t.field.value(m), 1)[0];
                if mask & base == 0 {
                    return self.nothing;
                }
            }
            return self.walk(&[mask], m.len, counters);
        }
        let mut mask = [0u64; MAX_RULES_PER_HOOK / 64];
        let mut first = true;
        for t in &self.tables {
            let row = t.row(t.field.value(m), w);
            let mut any = 0;
            for i in 0..w {
                mask[i] = if first { row[i] } else { mask[i] & row[i] };
                any |= mask[i] & self.base_mask[i];
            }
            first = false;
            if any == 0 {
                return self.nothing;
            }
        }
        if first {
            // No field looked at: every rule matches.
            let n = self.rules.len();
            for (i, x) in mask.iter_mut().enumerate().take(w) {
                let left = n.saturating_sub(i * 64);
                *x = if left >= 64 {
                    u64::MAX
                } else {
                    (1u64 << left) - 1
                };
            }
        }
        self.walk(&mask[..w], m.len, counters)
    }

    /// The first rule at or after `from` and before `to` whose bit is set.
    #[inline(always)]
    fn next(mask: &[u64], from: u32, to: u32) -> Option<u32> {
        let mut i = from;
        while i < to {
            let word = mask[(i / 64) as usize] >> (i % 64);
            if word != 0 {
                let r = i + word.trailing_zeros();
                return (r < to).then_some(r);
            }
            i = (i / 64 + 1) * 64;
        }
        None
    }

    fn walk(&self, mask: &[u64], len: u16, counters: Option<&RuleCounters>) -> Verdict {
        'bases: for &(base, policy_drop) in &self.bases {
            let mut stack = [(0u16, 0u32); JUMP_STACK];
            let mut depth = 0usize;
            let mut chain = base;
            let mut pos = self.chains[chain as usize].0;
            loop {
                let end = self.chains[chain as usize].1;
                let Some(r) = Self::next(mask, pos, end) else {
                    // The end of a chain: back to the caller, or the
                    // policy of the base chain.
                    if depth == 0 {
                        if policy_drop {
                            return Verdict::Drop;
                        }
                        continue 'bases;
                    }
                    depth -= 1;
                    (chain, pos) = stack[depth];
                    continue;
                };
                let (action, id) = self.rules[r as usize];
                if let Some(c) = counters {
                    c.count(id, len);
                }
                match action {
                    Action::Continue => pos = r + 1,
                    Action::Accept => continue 'bases,
                    Action::Drop => return Verdict::Drop,
                    Action::Reject(k) => return Verdict::Reject(k),
                    Action::Kernel => return Verdict::Kernel,
                    Action::Jump(c) => {
                        if depth == JUMP_STACK {
                            return Verdict::Kernel;
                        }
                        stack[depth] = (chain, r + 1);
                        depth += 1;
                        chain = c;
                        pos = self.chains[c as usize].0;
                    }
                    Action::Goto(c) => {
                        chain = c;
                        pos = self.chains[c as usize].0;
                    }
                    Action::Return => {
                        if depth == 0 {
                            if policy_drop {
                                return Verdict::Drop;
                            }
                            continue 'bases;
                        }
                        depth -= 1;
                        (chain, pos) = stack[depth];
                    }
                }
            }
        }
        Verdict::Accept
    }
}
