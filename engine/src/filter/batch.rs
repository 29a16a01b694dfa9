//! The classifier over a vector of packets at once, as the worker's vector
//! path asks it.
//!
//! Judging one packet at a time, every field lookup ends in a branch (is a
//! rule left?) and the next packet waits for the last one's chain of
//! lookups. Here each field's table is looked up for every packet of the
//! vector in one loop whose iterations are independent (the CPU overlaps
//! them) and free of branches but for the rare bucket that must be
//! searched;
//! only the packets that still hold a rule of a base chain then walk the
//! chains, in order, so verdicts and per-rule counts are those of
//! [`Ruleset::judge`] packet by packet.

use super::{Field, Hook, Meta, Program, RuleCounters, Ruleset, Table, Verdict, ABSENT};

/// Packets judged in one pass over the tables.
pub const VECTOR: usize = 64;

impl Ruleset {
    /// Judges every packet of `metas` at `hook`: `out[i]` is the verdict of
    /// `metas[i]`, the same as [`Ruleset::judge`] gives, and the same rules
    /// are counted in the counters of `worker`. Never allocates, locks or
    /// blocks.
    ///
    /// ```
    /// use xdpip::filter::{Hook, Meta, Verdict};
    /// let r = xdpip::filter::sample::twenty_rules(1);
    /// let gre = Meta { proto: 47, ..Meta::default() };
    /// let mut out = [Verdict::Kernel; 2];
    /// r.judge_batch(Hook::Forward, &[Meta::default(), gre], 0, &mut out);
    /// assert_eq!(out, [Verdict::Accept, Verdict::Drop]);
    /// ```
    pub fn judge_batch(&self, hook: Hook, metas: &[Meta], worker: usize, out: &mut [Verdict]) {
        let n = metas.len().min(out.len());
        let (metas, out) = (&metas[..n], &mut out[..n]);
        match &self.programs[hook as usize] {
            None => out.fill(Verdict::Accept),
            Some(p) => {
                let counters = self.counters.get(worker);
                for (m, o) in metas.chunks(VECTOR).zip(out.chunks_mut(VECTOR)) {
                    p.run_batch(m, counters, o);
                }
            }
        }
    }
}

impl Program {
    /// At most [`VECTOR`] packets.
    fn run_batch(&self, metas: &[Meta], counters: Option<&RuleCounters>, out: &mut [Verdict]) {
        if self.words != 1 {
            // More than 64 rules: rare enough to judge packet by packet.
            for (m, o) in metas.iter().zip(out.iter_mut()) {
                *o = self.run(m, counters);
            }
            return;
        }
        let base = self.base_mask[0];
        if let Some(f) = &self.fast {
            return self.run_fast(f, metas, counters, out);
        }
        let mut masks = [u64::MAX; VECTOR];
        let masks = &mut masks[..metas.len()];
        for t in &self.tables {
            // No packet of the vector holds a base chain rule any more.
            if t.and_column(metas, masks) & base == 0 {
                out.fill(self.nothing);
                return;
            }
        }
        for ((m, &mask), o) in metas.iter().zip(masks.iter()).zip(out.iter_mut()) {
            *o = if mask & base == 0 {
                self.nothing
            } else {
                self.walk(&[mask], m.len, counters)
            };
        }
    }
}

/// A hook of at most 64 rules as one pass over the packets: the small
/// fields (interfaces, protocol, ICMP type and code, TTL, TOS) cross-
/// producted into one table (Recursive Flow Classification: each value
/// has a class, the classes index one mask), then the interval fields
/// (ports, length, addresses) each looked up in its bucket index; a field
/// no rule looks at has a table of one bucket. The mask stays in a
/// register and the packet costs no branch but the last.
#[derive(Debug, Clone)]
pub(crate) struct Fast {
    /// Per small field, in [`SMALL`] order: the class of each value,
    /// times the field's stride in `combined`.
    classes: Box<[[u32; 257]; 7]>,
    /// The mask of each combination of classes.
    combined: Vec<u64>,
    /// Per interval field, in [`WIDE`] order: its table in
    /// [`Program::tables`], or none.
    wide: [Option<usize>; 5],
    /// The table of a field no rule looks at.
    any: Table,
}

/// The small fields, as [`Fast::classes`] holds them.
const SMALL: [Field; 7] = [
    Field::Iif,
    Field::Oif,
    Field::Proto,
    Field::Itype,
    Field::Icode,
    Field::Ttl,
    Field::Tos,
];
/// The interval fields, as [`Fast::wide`] holds them.
const WIDE: [Field; 5] = [
    Field::Dport,
    Field::Sport,
    Field::Length,
    Field::Src,
    Field::Dst,
];
/// Most combinations of small-field classes (32 KiB of masks).
const COMBINED: usize = 4096;

impl Fast {
    /// The one-pass form of a one-word hook whose `tables` are these;
    /// `None` when its small fields have too many combinations.
    pub(crate) fn build(tables: &[Table], words: usize) -> Option<Fast> {
        if words != 1 {
            return None;
        }
        let mut classes = Box::new([[0u32; 257]; 7]);
        let mut reps: Vec<Vec<u64>> = Vec::new();
        let mut stride = 1usize;
        for (f, class) in SMALL.iter().zip(classes.iter_mut()) {
            let Some(t) = tables.iter().find(|t| t.field == *f) else {
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
        let combined = (0..stride)
            .map(|k| {
                let mut at = k;
                let mut mask = u64::MAX;
                for r in &reps {
                    mask &= r[at % r.len()];
                    at /= r.len();
                }
                mask
            })
            .collect();
        let mut wide = [None; 5];
        for (f, w) in WIDE.iter().zip(wide.iter_mut()) {
            *w = tables.iter().position(|t| t.field == *f);
            if w.is_some_and(|i| tables[i].starts.is_empty()) {
                return None;
            }
        }
        if tables
            .iter()
            .any(|t| !SMALL.contains(&t.field) && !WIDE.contains(&t.field))
        {
            return None;
        }
        let any = Table {
            field: Field::Src,
            starts: vec![0],
            index: vec![0, 1, 1],
            first: vec![0, 0],
            shift: 31,
            masks: vec![u64::MAX],
        };
        Some(Fast {
            classes,
            combined,
            wide,
            any,
        })
    }
}

impl Program {
    /// [`Program::run_batch`] in one pass ([`Fast`]).
    #[inline]
    fn run_fast(
        &self,
        f: &Fast,
        metas: &[Meta],
        counters: Option<&RuleCounters>,
        out: &mut [Verdict],
    ) {
        let base = self.base_mask[0];
        let t = f.wide.map(|w| w.map_or(&f.any, |i| &self.tables[i]));
        let c = &*f.classes;
        let row = |t: &Table, v: u32| t.masks[t.interval(v)];
        for (m, o) in metas.iter().zip(out.iter_mut()) {
            let (dport, sport, itype, icode) = match m.l4 {
                Some(x) => (x & 0xffff, x >> 16, x >> 24, (x >> 16) & 0xff),
                None => (ABSENT, ABSENT, 256, 256),
            };
            let k = c[0][m.iif as usize]
                + c[1][m.oif as usize]
                + c[2][m.proto as usize]
                + c[3][itype as usize]
                + c[4][icode as usize]
                + c[5][m.ttl as usize]
                + c[6][m.tos as usize];
            let mask = f.combined[k as usize]
                & row(t[0], dport)
                & row(t[1], sport)
                & row(t[2], m.len as u32)
                & row(t[3], m.src)
                & row(t[4], m.dst);
            *o = if mask & base == 0 {
                self.nothing
            } else {
                self.walk(&[mask], m.len, counters)
            };
        }
    }
}

impl Table {
    /// `masks[i] &=` the row of `metas[i]`'s value, for every packet;
    /// returns the union of the new masks. One loop per field, so that the
    /// value is read without a branch on the field.
    #[inline]
    fn and_column(&self, metas: &[Meta], masks: &mut [u64]) -> u64 {
        // The field is matched once, outside the loops: each arm's
        // `Field::value` is a constant field, folded to one load.
        macro_rules! by {
            ($f:expr) => {
                if self.starts.is_empty() {
                    self.and_rows(metas, masks, |m| $f.value(m) as usize)
                } else {
                    self.and_rows(metas, masks, |m| self.interval($f.value(m)))
                }
            };
        }
        match self.field {
            Field::Iif => by!(Field::Iif),
            Field::Oif => by!(Field::Oif),
            Field::Proto => by!(Field::Proto),
            Field::Dport => by!(Field::Dport),
            Field::Sport => by!(Field::Sport),
            Field::Itype => by!(Field::Itype),
            Field::Icode => by!(Field::Icode),
            Field::Ttl => by!(Field::Ttl),
            Field::Tos => by!(Field::Tos),
            Field::Length => by!(Field::Length),
            Field::Src => by!(Field::Src),
            Field::Dst => by!(Field::Dst),
        }
    }

    /// `masks[i] &= masks row row(metas[i])`; the union of the new masks.
    #[inline(always)]
    fn and_rows(&self, metas: &[Meta], masks: &mut [u64], row: impl Fn(&Meta) -> usize) -> u64 {
        let rows = &self.masks[..];
        let mut any = 0;
        for (m, x) in metas.iter().zip(masks.iter_mut()) {
            *x &= rows[row(m)];
            any |= *x;
        }
        any
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

    /// Verdicts and counts of the batch judge and of the packet-by-packet
    /// one, on two copies of `r`'s counters.
    fn same(make: &dyn Fn() -> Ruleset, seed: u64) {
        same_as(make, seed, false);
        // The column-by-column form, for hooks without a one-pass form.
        same_as(make, seed, true);
    }

    fn same_as(make: &dyn Fn() -> Ruleset, seed: u64, columns: bool) {
        let (one, mut batch) = (make(), make());
        for p in batch.programs.iter_mut().flatten() {
            if columns {
                p.fast = None;
            } else {
                assert!(p.fast.is_some() || p.words > 1, "a one-pass form");
            }
        }
        let mut x = XorShift(seed);
        let mut judged = [0usize; 4];
        for round in 0..300 {
            let n = 1 + round % 100;
            let metas: Vec<Meta> = (0..n).map(|_| packet(&mut x)).collect();
            for hook in Hook::ALL {
                let mut out = vec![Verdict::Kernel; n];
                batch.judge_batch(hook, &metas, 0, &mut out);
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
            crate::filter::sample::twenty_rules(7),
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
            let mut out = [Verdict::Kernel; 64];
            batch.judge_batch(Hook::Forward, &metas, 0, &mut out);
            for (m, v) in metas.iter().zip(out) {
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

    #[test]
    fn batch_judges_jumps_policies_and_wide_hooks_as_packet_by_packet() {
        same(&chains, 0xfeed);
        same(&wide, 0xbeef);
    }
}
