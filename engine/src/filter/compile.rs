//! From the kernel's ruleset ([`nft::Ruleset`]) to a [`Ruleset`]: every
//! rule of the `ip` and `inet` base chains of the five IPv4 hooks (and of
//! the chains they jump to) becomes a conjunction of field value sets and
//! an action; a hook's rules become its classifier.
//!
//! The rules are read as the kernel runs them, expression by expression:
//! `payload` and `meta` loads into registers, `bitwise` masks, `cmp`,
//! `range` and `lookup` tests, `immediate` verdicts, `counter`, `reject`.
//! Anything else (`ct`, `nat`, `log`, `limit`, `meta mark`, a map, a set
//! the packet path updates, ...) makes the rule the kernel's.

use super::nft::{self, family, set_flags, Expr};
use super::set::Intervals;
use super::{
    Action, Field, Hook, Program, Reject, RuleInfo, Ruleset, Table, Verdict, MAX_RULES_PER_HOOK,
    NO_IFACE,
};
use std::collections::HashMap;

/// An interface the engine serves, as the filter names it: its port
/// number is its position in the list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Iface {
    /// Name now.
    pub name: String,
    /// Index.
    pub ifindex: u32,
}

/// A `meta` key the engine evaluates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MetaKey {
    Iif,
    Oif,
    IifName,
    OifName,
    L4proto,
    Nfproto,
    Protocol,
}

/// What a register holds.
#[derive(Debug, Clone)]
enum Reg {
    /// Packet bytes: the fields they cover (field, offset in the register,
    /// length), and a mask applied by `bitwise`.
    Payload {
        parts: Vec<(Field, usize, usize)>,
        mask: Option<Vec<u8>>,
    },
    Meta(MetaKey),
    /// Something the engine does not evaluate (named).
    Unknown(String),
}

/// A rule, compiled.
#[derive(Debug, Clone)]
struct CRule {
    preds: Vec<(Field, Intervals)>,
    action: RAction,
    /// Never matches (an empty value set).
    never: bool,
    kernel: Option<String>,
    info: RuleInfo,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum RAction {
    Continue,
    Accept,
    Drop,
    Reject(Reject),
    Jump(String),
    Goto(String),
    Return,
    Kernel,
}

fn family_name(f: u8) -> &'static str {
    match f {
        family::INET => "inet",
        family::IPV4 => "ip",
        family::IPV6 => "ip6",
        family::ARP => "arp",
        family::BRIDGE => "bridge",
        family::NETDEV => "netdev",
        _ => "unknown",
    }
}

/// The field(s) a payload load covers, or why not.
fn payload_parts(base: u32, offset: u32, len: u32) -> Result<Vec<(Field, usize, usize)>, String> {
    // NFT_PAYLOAD_NETWORK_HEADER, NFT_PAYLOAD_TRANSPORT_HEADER
    let known: &[(u32, u32, Field)] = match base {
        1 => &[
            (1, 1, Field::Tos),
            (2, 2, Field::Length),
            (8, 1, Field::Ttl),
            (9, 1, Field::Proto),
            (12, 4, Field::Src),
            (16, 4, Field::Dst),
        ],
        2 => match (offset, len) {
            (0, 1) => return Ok(vec![(Field::Itype, 0, 1)]),
            (1, 1) => return Ok(vec![(Field::Icode, 0, 1)]),
            _ => &[(0, 2, Field::Sport), (2, 2, Field::Dport)],
        },
        _ => return Err("a link-layer or inner header match".into()),
    };
    let mut parts = Vec::new();
    let mut at = offset;
    while at < offset + len {
        let Some(&(_, l, f)) = known.iter().find(|(o, _, _)| *o == at) else {
            return Err(format!(
                "a match on {} header bytes {offset}..{}",
                if base == 1 { "network" } else { "transport" },
                offset + len
            ));
        };
        // A prefix of a field (nft loads only the bytes a prefix match
        // needs: `ip daddr 10.2.0.0/24` loads three).
        let l = l.min(offset + len - at);
        parts.push((f, (at - offset) as usize, l as usize));
        at += l;
    }
    if at != offset + len {
        return Err(format!("a partial field match at byte {offset}"));
    }
    Ok(parts)
}

fn be(b: &[u8]) -> u32 {
    b.iter().take(4).fold(0u32, |a, &x| a << 8 | x as u32)
}

/// Register number to its 4-byte slot (`nft_parse_register()`).
fn slot(r: u32) -> u32 {
    if r <= 4 {
        r * 4
    } else {
        r.wrapping_sub(8) + 4
    }
}

struct Ctx<'a> {
    ports: &'a [Iface],
    sets: HashMap<(u8, &'a str, &'a str), &'a nft::Set>,
}

/// `cmp` operators (`enum nft_cmp_ops`).
const EQ: u32 = 0;
const NEQ: u32 = 1;
const LT: u32 = 2;
const LTE: u32 = 3;
const GT: u32 = 4;
const GTE: u32 = 5;

/// A field's value set, or a constant truth.
enum Pred {
    Set(Field, Intervals),
    Const(bool),
}

impl Ctx<'_> {
    /// The interface slots (port numbers, and [`NO_IFACE`]) for which `f`
    /// holds.
    fn slots(&self, f: impl Fn(u32, &[u8; 16]) -> bool) -> Intervals {
        let mut v = Vec::new();
        for (i, p) in self.ports.iter().enumerate() {
            let mut name = [0u8; 16];
            for (d, s) in name.iter_mut().zip(p.name.bytes().take(15)) {
                *d = s;
            }
            if f(p.ifindex, &name) {
                v.push((i as u32, i as u32));
            }
        }
        if f(0, &[0u8; 16]) {
            v.push((NO_IFACE as u32, NO_IFACE as u32));
        }
        Intervals::from_ranges(v)
    }

    fn iface_field(k: MetaKey) -> Field {
        match k {
            MetaKey::Iif | MetaKey::IifName => Field::Iif,
            _ => Field::Oif,
        }
    }

    fn cmp(&self, reg: &Reg, op: u32, data: &[u8]) -> Result<Vec<Pred>, String> {
        let negate = |f: Field, s: Intervals| match op {
            EQ => Ok(s),
            NEQ => Ok(s.complement(f.max_present())),
            _ => Err(format!("an ordering comparison on {}", f.name())),
        };
        match reg {
            Reg::Unknown(what) => Err(what.clone()),
            Reg::Payload { parts, mask } => {
                let total: usize = parts.iter().map(|p| p.2).sum();
                if data.len() != total {
                    return Err("a comparison of mismatched length".into());
                }
                if parts.len() > 1 && op != EQ {
                    return Err("a negated comparison of several fields".into());
                }
                let mut out = Vec::new();
                for &(f, off, len) in parts {
                    // A partial load holds the high bytes of the field.
                    let shift = f.bits() - (len * 8) as u32;
                    let bits = f.bits();
                    let loaded = if len >= 4 {
                        u32::MAX
                    } else {
                        (1u32 << (len * 8)) - 1
                    };
                    let v = be(&data[off..off + len]) << shift;
                    let m = (mask.as_ref().map_or(u32::MAX, |m| be(&m[off..off + len])) & loaded)
                        << shift;
                    let mask = if shift > 0 {
                        Some(Vec::new())
                    } else {
                        mask.clone()
                    };
                    let set = match op {
                        EQ | NEQ => negate(
                            f,
                            Intervals::masked(m, v, bits)
                                .ok_or_else(|| format!("a sparse mask on {}", f.name()))?,
                        )?,
                        _ if mask.is_some() => {
                            return Err(format!("an ordering comparison on masked {}", f.name()))
                        }
                        LT if v == 0 => Intervals::empty(),
                        LT => Intervals::range(0, v - 1),
                        LTE => Intervals::range(0, v),
                        GT if v < f.max_present() => Intervals::range(v + 1, f.max_present()),
                        GT => Intervals::empty(),
                        GTE => Intervals::range(v, f.max_present()),
                        _ => return Err(format!("comparison operator {op}")),
                    };
                    out.push(Pred::Set(f, set));
                }
                Ok(out)
            }
            Reg::Meta(k) => {
                let p = match k {
                    MetaKey::Iif | MetaKey::Oif => {
                        if data.len() != 4 {
                            return Err("a comparison of mismatched length".into());
                        }
                        let want = u32::from_ne_bytes([data[0], data[1], data[2], data[3]]);
                        let f = Self::iface_field(*k);
                        Pred::Set(f, negate(f, self.slots(|ix, _| ix == want))?)
                    }
                    MetaKey::IifName | MetaKey::OifName => {
                        if data.len() > 16 {
                            return Err("a comparison of mismatched length".into());
                        }
                        let f = Self::iface_field(*k);
                        Pred::Set(f, negate(f, self.slots(|_, n| n[..data.len()] == *data))?)
                    }
                    MetaKey::L4proto => {
                        return self.cmp(
                            &Reg::Payload {
                                parts: vec![(Field::Proto, 0, 1)],
                                mask: None,
                            },
                            op,
                            data,
                        )
                    }
                    MetaKey::Nfproto | MetaKey::Protocol => {
                        let ipv4 = if *k == MetaKey::Nfproto {
                            data == [family::IPV4]
                        } else {
                            data == [0x08, 0x00]
                        };
                        match op {
                            EQ => Pred::Const(ipv4),
                            NEQ => Pred::Const(!ipv4),
                            _ => return Err("an ordering comparison on meta nfproto".into()),
                        }
                    }
                };
                Ok(vec![p])
            }
        }
    }

    fn single(reg: &Reg) -> Result<Field, String> {
        match reg {
            Reg::Payload { parts, mask: None }
                if parts.len() == 1 && parts[0].2 as u32 * 8 == parts[0].0.bits() =>
            {
                Ok(parts[0].0)
            }
            Reg::Meta(MetaKey::L4proto) => Ok(Field::Proto),
            Reg::Unknown(w) => Err(w.clone()),
            _ => Err("a range or set match on several or masked fields".into()),
        }
    }

    fn range(&self, reg: &Reg, op: u32, from: &[u8], to: &[u8]) -> Result<Pred, String> {
        let f = Self::single(reg)?;
        let s = Intervals::range(be(from), be(to));
        Ok(Pred::Set(
            f,
            if op == EQ {
                s
            } else {
                s.complement(f.max_present())
            },
        ))
    }

    fn lookup(&self, reg: &Reg, set: &nft::Set, invert: bool) -> Result<Pred, String> {
        let name = if set.flags & set_flags::ANONYMOUS != 0 {
            "an anonymous set".to_string()
        } else {
            format!("set @{}", set.name)
        };
        if set.flags & (set_flags::MAP | set_flags::OBJECT) != 0 {
            return Err(format!("{name} is a map"));
        }
        if set.flags & (set_flags::EVAL | set_flags::TIMEOUT) != 0
            || set.elems.iter().any(|e| e.expires)
        {
            return Err(format!(
                "{name} is updated from the packet path or its elements expire"
            ));
        }
        if set.flags & set_flags::CONCAT != 0 {
            return Err(format!("{name} is a concatenation"));
        }
        let (f, s) = match reg {
            Reg::Meta(k @ (MetaKey::Iif | MetaKey::Oif | MetaKey::IifName | MetaKey::OifName)) => {
                if set.flags & set_flags::INTERVAL != 0 {
                    return Err(format!("{name} of interfaces has wildcards"));
                }
                let f = Self::iface_field(*k);
                let by_name = matches!(k, MetaKey::IifName | MetaKey::OifName);
                let s = self.slots(|ix, n| {
                    set.elems.iter().any(|e| {
                        if by_name {
                            let mut key = [0u8; 16];
                            for (d, s) in key.iter_mut().zip(&e.key) {
                                *d = *s;
                            }
                            key == *n
                        } else {
                            e.key.len() == 4
                                && u32::from_ne_bytes([e.key[0], e.key[1], e.key[2], e.key[3]])
                                    == ix
                        }
                    })
                });
                (f, s)
            }
            _ => {
                let f = Self::single(reg)?;
                let bytes = (f.bits() / 8) as usize;
                if set.key_len as usize != bytes {
                    return Err(format!("{name} has keys of another length"));
                }
                let mut keys: Vec<(u32, bool, Option<u32>)> = set
                    .elems
                    .iter()
                    .map(|e| (be(&e.key), e.interval_end, e.key_end.as_deref().map(be)))
                    .collect();
                keys.sort_by_key(|k| (k.0, !k.1));
                let mut v = Vec::new();
                if set.flags & set_flags::INTERVAL != 0 {
                    for (i, &(k, end, key_end)) in keys.iter().enumerate() {
                        if end {
                            continue;
                        }
                        let hi = match key_end {
                            Some(e) => e,
                            // An interval runs to the next element (an
                            // end, or the start of an adjacent interval).
                            None => keys
                                .get(i + 1)
                                .map_or(f.max_present(), |n| n.0.wrapping_sub(1)),
                        };
                        v.push((k, hi));
                    }
                } else {
                    v.extend(keys.iter().map(|k| (k.0, k.0)));
                }
                (f, Intervals::from_ranges(v))
            }
        };
        Ok(Pred::Set(
            f,
            if invert {
                s.complement(f.max_present())
            } else {
                s
            },
        ))
    }

    fn rule(&self, r: &nft::Rule) -> CRule {
        let mut c = CRule {
            preds: Vec::new(),
            action: RAction::Continue,
            never: false,
            kernel: None,
            info: RuleInfo {
                family: family_name(r.family).into(),
                table: r.table.clone(),
                chain: r.chain.clone(),
                handle: r.handle,
                action: String::new(),
                kernel: None,
            },
        };
        let mut regs: HashMap<u32, Reg> = HashMap::new();
        for e in &r.exprs {
            if let Err(why) = self.expr(r, e, &mut regs, &mut c) {
                c.kernel.get_or_insert(why);
            }
        }
        if c.kernel.is_some() {
            c.action = RAction::Kernel;
        }
        // Merge the sets of one field.
        let mut merged: Vec<(Field, Intervals)> = Vec::new();
        for (f, s) in c.preds.drain(..) {
            match merged.iter_mut().find(|(g, _)| *g == f) {
                Some((_, t)) => *t = t.intersect(&s),
                None => merged.push((f, s)),
            }
        }
        c.never |= merged.iter().any(|(_, s)| s.is_empty());
        c.preds = merged;
        c.info.action = match &c.action {
            RAction::Continue => "continue".into(),
            RAction::Accept => "accept".into(),
            RAction::Drop => "drop".into(),
            RAction::Reject(Reject::Icmp(code)) => format!("reject icmp code {code}"),
            RAction::Reject(Reject::TcpReset) => "reject tcp reset".into(),
            RAction::Jump(t) => format!("jump {t}"),
            RAction::Goto(t) => format!("goto {t}"),
            RAction::Return => "return".into(),
            RAction::Kernel => "kernel".into(),
        };
        c.info.kernel = c.kernel.clone();
        c
    }

    fn expr(
        &self,
        rule: &nft::Rule,
        e: &Expr,
        regs: &mut HashMap<u32, Reg>,
        c: &mut CRule,
    ) -> Result<(), String> {
        let reg = |regs: &HashMap<u32, Reg>, a: u16| -> Result<Reg, String> {
            let r = e.u32(a).ok_or("a malformed expression")?;
            Ok(regs
                .get(&slot(r))
                .cloned()
                .unwrap_or(Reg::Unknown("an unset register".into())))
        };
        let mut add = |p: Vec<Pred>| {
            for p in p {
                match p {
                    Pred::Set(f, s) => c.preds.push((f, s)),
                    Pred::Const(false) => c.never = true,
                    Pred::Const(true) => {}
                }
            }
        };
        match e.name.as_str() {
            "payload" => {
                if e.attr(5).is_some() {
                    return Err("payload mangling".into());
                }
                let (dreg, base, off, len) = (
                    e.u32(1).ok_or("a malformed payload")?,
                    e.u32(2).unwrap_or(0),
                    e.u32(3).unwrap_or(0),
                    e.u32(4).unwrap_or(0),
                );
                let v = match payload_parts(base, off, len) {
                    Ok(parts) => Reg::Payload { parts, mask: None },
                    Err(w) => Reg::Unknown(w),
                };
                regs.insert(slot(dreg), v);
            }
            "meta" => {
                let Some(dreg) = e.u32(1) else {
                    return Err("meta set".into());
                };
                let key = e.u32(2).unwrap_or(u32::MAX);
                let v = match key {
                    1 => Reg::Meta(MetaKey::Protocol),
                    4 => Reg::Meta(MetaKey::Iif),
                    5 => Reg::Meta(MetaKey::Oif),
                    6 => Reg::Meta(MetaKey::IifName),
                    7 => Reg::Meta(MetaKey::OifName),
                    15 => Reg::Meta(MetaKey::Nfproto),
                    16 => Reg::Meta(MetaKey::L4proto),
                    0 => Reg::Unknown("meta length".into()),
                    3 => Reg::Unknown("meta mark".into()),
                    k => Reg::Unknown(format!("meta key {k}")),
                };
                regs.insert(slot(dreg), v);
            }
            "cmp" => {
                let r = reg(regs, 1)?;
                let op = e.u32(2).unwrap_or(EQ);
                let data = e.data(3).ok_or("a malformed cmp")?;
                add(self.cmp(&r, op, &data)?);
            }
            "range" => {
                let r = reg(regs, 1)?;
                let op = e.u32(2).unwrap_or(EQ);
                let (from, to) = (
                    e.data(3).ok_or("a malformed range")?,
                    e.data(4).ok_or("a malformed range")?,
                );
                add(vec![self.range(&r, op, &from, &to)?]);
            }
            "lookup" => {
                if e.attr(3).is_some() {
                    return Err("a map lookup".into());
                }
                let name = e
                    .attr(1)
                    .map(|b| {
                        String::from_utf8_lossy(b.split(|&x| x == 0).next().unwrap_or(b))
                            .into_owned()
                    })
                    .unwrap_or_default();
                let set = self
                    .sets
                    .get(&(rule.family, rule.table.as_str(), name.as_str()))
                    .ok_or_else(|| format!("set @{name} could not be read"))?;
                let r = reg(regs, 2)?;
                let invert = e.u32(5).unwrap_or(0) & 1 != 0;
                add(vec![self.lookup(&r, set, invert)?]);
            }
            "bitwise" => {
                if e.u32(6).is_some_and(|op| op != 0) {
                    return Err("a bit shift".into());
                }
                let src = reg(regs, 1)?;
                let dreg = e.u32(2).ok_or("a malformed bitwise")?;
                let mask = e.data(4).unwrap_or_default();
                let xor = e.data(5).unwrap_or_default();
                let v = match src {
                    _ if xor.iter().any(|&b| b != 0) => Reg::Unknown("a bitwise xor".into()),
                    Reg::Payload { parts, mask: old } => {
                        let m = match old {
                            Some(o) => o.iter().zip(&mask).map(|(a, b)| a & b).collect(),
                            None => mask,
                        };
                        Reg::Payload {
                            parts,
                            mask: Some(m),
                        }
                    }
                    _ => Reg::Unknown("a masked meta value".into()),
                };
                regs.insert(slot(dreg), v);
            }
            "immediate" => {
                let dreg = e.u32(1).unwrap_or(0);
                if dreg != 0 {
                    regs.insert(slot(dreg), Reg::Unknown("an immediate value".into()));
                    return Ok(());
                }
                let v = e
                    .attr(2)
                    .and_then(|d| nft::attrs(d).find(|a| a.kind == 2))
                    .ok_or("a malformed verdict")?;
                let code = nft::attrs(v.data)
                    .find(|a| a.kind == 1)
                    .and_then(|a| a.data.get(..4))
                    .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                    .ok_or("a malformed verdict")?;
                let chain = nft::attrs(v.data).find(|a| a.kind == 2).map(|a| {
                    String::from_utf8_lossy(a.data.split(|&x| x == 0).next().unwrap_or(a.data))
                        .into_owned()
                });
                c.action = match code {
                    -1 => RAction::Continue,
                    -3 => RAction::Jump(chain.ok_or("a jump without a chain")?),
                    -4 => RAction::Goto(chain.ok_or("a goto without a chain")?),
                    -5 => RAction::Return,
                    x if x >= 0 && x & 0xff == 0 => RAction::Drop,
                    x if x >= 0 && x & 0xff == 1 => RAction::Accept,
                    x if x >= 0 && x & 0xff == 3 => return Err("queue".into()),
                    x => return Err(format!("verdict {x}")),
                };
            }
            "counter" => {}
            "reject" => {
                let kind = e.u32(1).unwrap_or(0);
                let code = e.attr(2).and_then(|b| b.first().copied()).unwrap_or(3);
                c.action = RAction::Reject(match kind {
                    0 => Reject::Icmp(code),
                    1 => Reject::TcpReset,
                    2 => Reject::Icmp(match code {
                        0 => 0,
                        1 => 3,
                        2 => 1,
                        _ => 13,
                    }),
                    k => return Err(format!("reject type {k}")),
                });
            }
            "byteorder" => {
                if let Some(d) = e.u32(2) {
                    regs.insert(slot(d), Reg::Unknown("a byte order conversion".into()));
                }
            }
            "ct" => return Err("ct (connection tracking)".into()),
            "match" | "target" => return Err("an iptables (xt) extension".into()),
            "nat" | "masq" | "redir" => return Err(format!("{} (NAT)", e.name)),
            other => return Err(other.to_string()),
        }
        Ok(())
    }
}

/// A chain by family, table, name.
type ChainKey<'a> = (u8, &'a str, &'a str);

/// Compiles the IPv4 filter of `rs` for the engine's interfaces `ports`
/// (by port number).
pub fn compile(rs: &nft::Ruleset, ports: &[Iface]) -> Ruleset {
    let dormant: Vec<(u8, &str)> = rs
        .tables
        .iter()
        .filter(|t| t.dormant)
        .map(|t| (t.family, t.name.as_str()))
        .collect();
    let live = |fam: u8, table: &str| !dormant.contains(&(fam, table));
    let ctx = Ctx {
        ports,
        sets: rs
            .sets
            .iter()
            .map(|s| ((s.family, s.table.as_str(), s.name.as_str()), s))
            .collect(),
    };
    let mut by_chain: HashMap<ChainKey, Vec<CRule>> = HashMap::new();
    for r in &rs.rules {
        if !matches!(r.family, family::IPV4 | family::INET) || !live(r.family, &r.table) {
            continue;
        }
        by_chain
            .entry((r.family, r.table.as_str(), r.chain.as_str()))
            .or_default()
            .push(ctx.rule(r));
    }
    let mut out = Ruleset {
        generation: rs.generation,
        id: Ruleset::next_id(),
        ..Ruleset::default()
    };
    let mut ids: HashMap<(u8, String, String, u64), u32> = HashMap::new();
    let kernel = |out: &mut Ruleset, bits: u32, why: String| {
        out.kernel_hooks |= bits;
        if !out.kernel_reasons.contains(&why) {
            out.kernel_reasons.push(why);
        }
    };

    let mut per_hook: [Vec<&nft::Chain>; 5] = Default::default();
    for ch in &rs.chains {
        let Some((hooknum, _)) = ch.hook else {
            continue;
        };
        if !live(ch.family, &ch.table) {
            continue;
        }
        let rules = by_chain
            .get(&(ch.family, ch.table.as_str(), ch.name.as_str()))
            .map_or(0, Vec::len);
        let fname = family_name(ch.family);
        match ch.family {
            // Device chains (netdev, inet ingress): the engine does not
            // run them. The bypass they would suffer is the kernel's to
            // avoid: their hooks go to the kernel.
            family::NETDEV | family::INET
                if (ch.family == family::NETDEV || hooknum == 5)
                    && (rs.rules.iter().any(|r| {
                        r.family == ch.family && r.table == ch.table && r.chain == ch.name
                    }) || ch.policy == 0) =>
            {
                let (bits, what) = if ch.family == family::NETDEV && hooknum == 1 {
                    (Hook::Postrouting.bit(), "egress")
                } else {
                    (Hook::Prerouting.bit(), "ingress")
                };
                kernel(
                    &mut out,
                    bits,
                    format!("{fname} {} {}: an {what} device chain", ch.table, ch.name),
                );
            }
            family::IPV4 | family::INET if hooknum <= 4 => {
                let hook = Hook::ALL[hooknum as usize];
                if ch.kind != "filter" && !ch.kind.is_empty() {
                    if rules > 0 {
                        kernel(
                            &mut out,
                            hook.bit(),
                            format!(
                                "{}: {fname} {} {}: a {} chain",
                                hook.name(),
                                ch.table,
                                ch.name,
                                ch.kind
                            ),
                        );
                    }
                    continue;
                }
                per_hook[hooknum as usize].push(ch);
            }
            _ => {}
        }
    }

    for hook in Hook::ALL {
        let bases = &mut per_hook[hook as usize];
        bases.sort_by_key(|c| c.hook.map_or(0, |h| h.1));
        if bases.is_empty() {
            continue;
        }
        // Chain instances: the base chains, then what they reach.
        let mut keys: Vec<ChainKey> = bases
            .iter()
            .map(|c| (c.family, c.table.as_str(), c.name.as_str()))
            .collect();
        let mut chains: Vec<(u32, u32)> = Vec::new();
        let mut rules: Vec<(Action, u32)> = Vec::new();
        let mut preds: Vec<&[(Field, Intervals)]> = Vec::new();
        let mut kernel_rule = None;
        let mut i = 0;
        while i < keys.len() {
            let key = keys[i];
            let start = rules.len() as u32;
            for c in by_chain.get(&key).map_or(&[][..], Vec::as_slice) {
                if c.never {
                    continue;
                }
                let id = *ids
                    .entry((key.0, key.1.to_string(), key.2.to_string(), c.info.handle))
                    .or_insert_with(|| {
                        out.rules.push(c.info.clone());
                        (out.rules.len() - 1) as u32
                    });
                let mut target = |name: &str| -> u16 {
                    let k = (key.0, key.1, name);
                    match keys
                        .iter()
                        .position(|x| x.0 == k.0 && x.1 == k.1 && x.2 == k.2)
                    {
                        Some(p) => p as u16,
                        None => {
                            // Borrow the name from the chain list.
                            let n = rs
                                .chains
                                .iter()
                                .find(|c| c.family == k.0 && c.table == k.1 && c.name == name)
                                .map_or("", |c| c.name.as_str());
                            keys.push((k.0, k.1, n));
                            (keys.len() - 1) as u16
                        }
                    }
                };
                let action = match &c.action {
                    RAction::Continue => Action::Continue,
                    RAction::Accept => Action::Accept,
                    RAction::Drop => Action::Drop,
                    RAction::Reject(k) => Action::Reject(*k),
                    RAction::Jump(t) => Action::Jump(target(t)),
                    RAction::Goto(t) => Action::Goto(target(t)),
                    RAction::Return => Action::Return,
                    RAction::Kernel => {
                        if kernel_rule.is_none() {
                            kernel_rule = Some(c.info.clone());
                        }
                        kernel(
                            &mut out,
                            hook.bit(),
                            format!(
                                "{}: {} {} {} handle {}: {}",
                                hook.name(),
                                c.info.family,
                                c.info.table,
                                c.info.chain,
                                c.info.handle,
                                c.kernel.as_deref().unwrap_or("")
                            ),
                        );
                        Action::Kernel
                    }
                };
                rules.push((action, id));
                preds.push(&c.preds);
            }
            chains.push((start, rules.len() as u32));
            i += 1;
        }
        let policy_drop: Vec<(u16, bool)> = bases
            .iter()
            .enumerate()
            .map(|(i, c)| (i as u16, c.policy == 0))
            .collect();
        if rules.is_empty() && policy_drop.iter().all(|b| !b.1) {
            continue;
        }
        if rules.len() > MAX_RULES_PER_HOOK {
            kernel(
                &mut out,
                hook.bit(),
                format!(
                    "{}: {} rules, more than the engine compiles ({MAX_RULES_PER_HOOK})",
                    hook.name(),
                    rules.len()
                ),
            );
            continue;
        }
        let words = rules.len().div_ceil(64).max(1);
        let tables: Vec<Table> = Field::ALL
            .iter()
            .filter(|f| preds.iter().any(|p| p.iter().any(|(g, _)| g == *f)))
            .map(|&f| table(f, &preds, words))
            .collect();
        let nothing = if policy_drop.iter().any(|b| b.1) {
            Verdict::Drop
        } else {
            Verdict::Accept
        };
        let mut base_mask = vec![0u64; words];
        for &(c, _) in &policy_drop {
            let (a, b) = chains[c as usize];
            for r in a..b {
                base_mask[r as usize / 64] |= 1 << (r % 64);
            }
        }
        let fast = super::batch::Fast::build(&tables, rules.len(), &base_mask);
        out.programs[hook as usize] = Some(Program {
            words,
            tables,
            rules,
            chains,
            bases: policy_drop,
            nothing,
            base_mask,
            fast,
        });
    }
    out
}

fn set_bit(masks: &mut [u64], row: usize, words: usize, r: usize) {
    masks[row * words + r / 64] |= 1 << (r % 64);
}

/// The masks of field `f`: per value (small domains) or per interval.
fn table(f: Field, preds: &[&[(Field, Intervals)]], words: usize) -> Table {
    let constraint = |r: usize| preds[r].iter().find(|(g, _)| *g == f).map(|(_, s)| s);
    let max = f.max();
    if max <= 256 {
        let n = max as usize + 1;
        let mut masks = vec![0u64; n * words];
        for r in 0..preds.len() {
            for v in 0..n {
                if constraint(r).is_none_or(|s| s.contains(v as u32)) {
                    set_bit(&mut masks, v, words, r);
                }
            }
        }
        return Table::direct(f, masks);
    }
    let mut starts = vec![0u32];
    for r in 0..preds.len() {
        if let Some(s) = constraint(r) {
            for &(a, b) in &s.0 {
                starts.push(a);
                if b < max {
                    starts.push(b + 1);
                }
            }
        }
    }
    starts.sort_unstable();
    starts.dedup();
    let mut masks = vec![0u64; starts.len() * words];
    for r in 0..preds.len() {
        match constraint(r) {
            None => {
                for i in 0..starts.len() {
                    set_bit(&mut masks, i, words, r);
                }
            }
            Some(s) => {
                for &(a, b) in &s.0 {
                    let mut i = starts.partition_point(|&x| x < a);
                    while i < starts.len() && starts[i] <= b {
                        set_bit(&mut masks, i, words, r);
                        i += 1;
                    }
                }
            }
        }
    }
    // Neighbouring intervals with the same rules are one.
    let mut s2 = Vec::with_capacity(starts.len());
    let mut m2: Vec<u64> = Vec::with_capacity(masks.len());
    for (i, &s) in starts.iter().enumerate() {
        let row = &masks[i * words..(i + 1) * words];
        if i > 0 && m2[m2.len() - words..] == *row {
            continue;
        }
        s2.push(s);
        m2.extend_from_slice(row);
    }
    Table::intervals(f, s2, m2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::nft::build::*;
    use crate::filter::nft::Ruleset as Nft;
    use crate::filter::sample::{port_rules, udp_dport as dport};
    use crate::filter::Meta;

    fn udp(dport: u16) -> Meta {
        Meta {
            iif: 0,
            oif: 1,
            src: 0x0a01_0001,
            dst: 0x0a02_0002,
            proto: 17,
            l4: Some(40000 << 16 | dport as u32),
            ..Meta::default()
        }
    }

    #[test]
    fn more_than_64_rules_and_base_chains_in_priority_order() {
        let mut rs = Nft::default();
        // Priority 10 runs after priority -5, whatever the dump order.
        rs.chains
            .push(base_chain(family::IPV4, "t", "late", 2, 10, true));
        rs.chains
            .push(base_chain(family::INET, "u", "early", 2, -5, true));
        rs.chains.push(chain(family::IPV4, "t", "sub"));
        port_rules(&mut rs, family::IPV4, "t", "late", 100);
        rs.rules.push(rule(
            family::IPV4,
            "t",
            "late",
            200,
            [dport(7), vec![verdict(-3, Some("sub"))]].concat(),
        ));
        rs.rules
            .push(rule(family::IPV4, "t", "sub", 201, vec![reject(1, 0)]));
        // The early chain accepts 1098: accept ends a base chain only,
        // and the late chain still drops it.
        rs.rules.push(rule(
            family::INET,
            "u",
            "early",
            1,
            [dport(1098), vec![verdict(1, None)]].concat(),
        ));
        // The early chain drops 1001 before the late one would reject it.
        rs.rules.push(rule(
            family::INET,
            "u",
            "early",
            2,
            [dport(1001), vec![verdict(0, None)]].concat(),
        ));
        let r = compile(&rs, &[]).with_counters(1, &[]);
        let j = |p| r.judge(Hook::Forward, &udp(p), 0);
        assert_eq!(j(1098), Verdict::Drop);
        assert_eq!(j(1099), Verdict::Reject(Reject::Icmp(10)));
        assert_eq!(j(1001), Verdict::Drop);
        assert_eq!(j(1064), Verdict::Drop);
        assert_eq!(j(1065), Verdict::Reject(Reject::Icmp(10)));
        assert_eq!(j(7), Verdict::Reject(Reject::TcpReset));
        assert_eq!(j(2000), Verdict::Accept);
        let totals = r.totals();
        let at = |h: u64, c: &str| {
            r.rules
                .iter()
                .position(|i| i.handle == h && i.chain == c)
                .unwrap()
        };
        assert_eq!(totals[at(100, "late")], (1, 20));
        assert_eq!(totals[at(201, "sub")], (1, 20));
        assert_eq!(totals[at(1, "early")], (1, 20));
    }

    #[test]
    fn a_policy_drop_with_no_rules_and_an_empty_hook() {
        let mut rs = Nft::default();
        rs.chains
            .push(base_chain(family::IPV4, "t", "in", 1, 0, false));
        rs.chains
            .push(base_chain(family::IPV4, "t", "fw", 2, 0, true));
        let r = compile(&rs, &[]);
        assert_eq!(r.judge(Hook::Input, &udp(9), 0), Verdict::Drop);
        assert!(
            !r.active(Hook::Forward),
            "an empty accepting chain costs nothing"
        );
        assert_eq!(r.judge(Hook::Forward, &udp(9), 0), Verdict::Accept);
    }
}
