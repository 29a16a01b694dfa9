//! The one-pass form of a hook: every field of a packet looked up with no
//! branch but the last, as the worker's vector path asks it for each
//! frame of a vector, reading the fields where the frame holds them.
//!
//! Looking the fields up one at a time, each lookup ends in a branch (is a
//! rule left?) and the next waits for the last one's result. Here the
//! small fields are cross-producted into one table and the others each
//! looked up in their bucket index, independently, so the CPU overlaps
//! them (and the lookups of the next packets); only a packet that still
//! holds a rule of a base chain then walks the chains, in order, so
//! verdicts and per-rule counts are those of the field-by-field form.

use super::{Field, Hook, Meta, Program, RuleCounters, Ruleset, Table, Verdict, ABSENT, INSIDE};

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
    /// ([`Ruleset::counters_of`]); a packet no rule of a base chain
    /// matches costs no branch but the last.
    #[inline(always)]
    pub(crate) fn judge(self, m: &Meta, counters: Option<&RuleCounters>) -> Verdict {
        match self {
            Gate::Open => Verdict::Accept,
            Gate::Fast(p, f) => {
                let mask = f.mask(&p.tables, m);
                if mask & f.base == 0 {
                    p.nothing
                } else {
                    p.matched(mask, m.len, counters)
                }
            }
            Gate::Fields(p) => p.run(m, counters),
        }
    }
}

impl Program {
    /// The chains walked for a packet some rule matched: rare, out of line.
    #[inline(never)]
    fn matched(&self, mask: u64, len: u16, counters: Option<&RuleCounters>) -> Verdict {
        self.walk(&[mask], len, counters)
    }
}

/// A hook of at most 63 rules as one pass over the packets: the small
/// fields (interfaces, protocol, ICMP type and code, TTL, TOS) cross-
/// producted into one table (Recursive Flow Classification: each value
/// has a class, the classes index one mask), then the interval fields
/// (ports, length, addresses) each looked up in its bucket index. The mask
/// stays in a register and the packet costs no branch but the last.
#[derive(Debug, Clone)]
pub(crate) struct Fast {
    /// Per small field, in [`SMALL`] order: the class of each value,
    /// times the field's stride in `combined`.
    classes: Box<[[u32; 257]; 7]>,
    /// The mask of each combination of classes.
    combined: Vec<u64>,
    /// The interval fields some rule looks at.
    wide: Vec<Wide>,
    /// The rules of the hook's base chains.
    base: u64,
}

/// An interval field as [`Fast`] looks it up: the mask of each bucket of
/// values, one load, or [`SEARCH`] for the rare bucket in which an
/// interval starts.
#[derive(Debug, Clone)]
struct Wide {
    /// The field's place in [`WIDE`].
    at: u8,
    /// Its table in [`Program::tables`], for the buckets to search.
    table: u16,
    shift: u32,
    buckets: Box<[u64]>,
}

/// In [`Wide::buckets`]: search the bucket. A bit no rule has: the one-pass
/// form is for hooks of at most 63 rules.
const SEARCH: u64 = 1 << 63;

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
    /// The one-pass form of a hook of `rules` rules whose `tables` are
    /// these and whose base chains hold `base`; `None` for 64 rules or
    /// more, or when its small fields have too many combinations.
    pub(crate) fn build(tables: &[Table], rules: usize, base: &[u64]) -> Option<Fast> {
        let base = *base.first()?;
        if rules >= 64
            || tables
                .iter()
                .any(|t| !SMALL.contains(&t.field) && !WIDE.contains(&t.field))
        {
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
        let mut wide = Vec::new();
        for (at, f) in WIDE.iter().enumerate() {
            if let Some(i) = tables.iter().position(|t| t.field == *f) {
                let t = &tables[i];
                if t.starts.is_empty() {
                    return None;
                }
                let buckets = t
                    .first
                    .iter()
                    .map(|&e| {
                        if e & INSIDE != 0 {
                            SEARCH
                        } else {
                            t.masks[e as usize] & !SEARCH
                        }
                    })
                    .collect();
                wide.push(Wide {
                    at: at as u8,
                    table: i as u16,
                    shift: t.shift,
                    buckets,
                });
            }
        }
        Some(Fast {
            classes,
            combined,
            wide,
            base,
        })
    }

    /// The rules of the hook whose every field matches `m`: the mask
    /// [`Program::walk`](super::Program) walks.
    #[inline(always)]
    pub(crate) fn mask(&self, tables: &[Table], m: &Meta) -> u64 {
        let (dport, sport, itype, icode) = match m.l4 {
            Some(x) => (x & 0xffff, x >> 16, x >> 24, (x >> 16) & 0xff),
            None => (ABSENT, ABSENT, 256, 256),
        };
        let c = &*self.classes;
        let k = c[0][m.iif as usize]
            + c[1][m.oif as usize]
            + c[2][m.proto as usize]
            + c[3][itype as usize]
            + c[4][icode as usize]
            + c[5][m.ttl as usize]
            + c[6][m.tos as usize];
        let mut mask = self.combined[k as usize];
        // In WIDE order; eight, so that the index needs no bounds check.
        let values = [dport, sport, m.len as u32, m.src, m.dst, 0, 0, 0];
        for w in &self.wide {
            let v = values[w.at as usize & 7];
            let row = w.buckets[(v >> w.shift) as usize];
            mask &= if row & SEARCH == 0 {
                row
            } else {
                let t = &tables[w.table as usize];
                t.masks[t.interval(v)]
            };
        }
        mask
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

    #[test]
    fn batch_judges_jumps_policies_and_wide_hooks_as_packet_by_packet() {
        same(&chains, 0xfeed);
        same(&wide, 0xbeef);
    }
}
