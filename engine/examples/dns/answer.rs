//! The authoritative answering of `dns_responder` and `dns_responder_tokio`:
//! one zone in memory, a query in, the answer's wire format out, without
//! allocating per query (the `domain` crate parses the query where it lies
//! and composes the answer into a buffer the caller reuses).
//!
//! What it answers matches Knot DNS 3.2 for the same zone (checked by
//! `tests/dns.rs` against `kdig`): AA on answers from the zone; NXDOMAIN
//! and NODATA with the zone's SOA in the authority section (TTL
//! min(SOA TTL, MINIMUM), RFC 2308); A/AAAA of in-zone NS, MX and SRV
//! targets as additional data; REFUSED for names outside the zone and
//! classes other than IN; NOTIMP for opcodes other than QUERY (NOTAUTH for
//! NOTIFY); FORMERR for a query without a question, with trailing bytes,
//! with records that do not parse or with two OPT records; BADVERS for an
//! EDNS version above 0; OPT with a 1232-byte UDP size and the query's DO
//! bit when the query had EDNS; TC when the answer exceeds 512 bytes (or
//! the client's EDNS size, at most 1232). Like Knot, it drops what cannot
//! be answered at all: a header shorter than 12 bytes, a response (QR
//! set), more than one question, a question that does not parse.
//! Not there: wildcards, delegations below the apex, DNSSEC, ANY
//! answered with more than one RRset (RFC 8482: the first RRset of the
//! name), TCP.

// Each example uses a different part of this module.
#![allow(dead_code)]

use domain::base::iana::{Class, Opcode, OptRcode, Rcode, Rtype};
use domain::base::message_builder::{AdditionalBuilder, AnswerBuilder, StaticCompressor};
use domain::base::name::{FlattenInto, Name, ToName};
use domain::base::rdata::RecordData;
use domain::base::{Message, MessageBuilder, Record, Ttl};
use domain::dep::octseq::Octets;
use domain::rdata::ZoneRecordData;
use domain::zonefile::inplace::{Entry, Zonefile};
use std::collections::HashMap;

type ZName = Name<bytes::Bytes>;
type ZData = ZoneRecordData<bytes::Bytes, ZName>;
type Target = StaticCompressor<Vec<u8>>;

/// The zone `dns_responder` serves when given no `--zone`.
pub const BUILTIN_ZONE: &str = include_str!("example.test.zone");

/// The EDNS UDP payload size the responder announces and answers up to,
/// as Knot's `udp-max-payload` default (DNS flag day 2020).
pub const EDNS_UDP_SIZE: u16 = 1232;

/// Records of one type at one name.
#[derive(Debug)]
struct RrSet {
    rtype: Rtype,
    ttl: Ttl,
    data: Vec<ZData>,
}

/// One zone: its apex, SOA, and RRsets by owner (lower-case wire format).
/// Names between an owner and the apex exist as empty non-terminals.
#[derive(Debug)]
pub struct Zone {
    apex: ZName,
    soa: ZData,
    /// TTL of the SOA in negative answers: min(SOA TTL, MINIMUM).
    neg_ttl: Ttl,
    nodes: HashMap<Vec<u8>, Vec<RrSet>>,
}

impl Zone {
    /// Parses a zone file (RFC 1035 master format, no `$INCLUDE`); the
    /// first record must be the SOA, whose owner is the apex.
    pub fn parse(text: &[u8]) -> Result<Zone, String> {
        let mut zf = Zonefile::new();
        // A record without a class is IN, as in every zone file met in
        // practice (RFC 1035 leaves the first one's class to the file).
        zf.set_default_class(Class::IN);
        zf.extend_from_slice(text);
        let mut apex: Option<(ZName, ZData, Ttl)> = None;
        let mut nodes: HashMap<Vec<u8>, Vec<RrSet>> = HashMap::new();
        while let Some(entry) = zf.next_entry().map_err(|e| e.to_string())? {
            let rec = match entry {
                Entry::Record(r) => r,
                Entry::Include { .. } => return Err("$INCLUDE is not supported".into()),
            };
            let rec: Record<ZName, ZData> = rec.flatten_into();
            if rec.class() != Class::IN {
                return Err(format!("{}: only class IN is served", rec.owner()));
            }
            let owner = rec.owner().clone();
            let rtype = rec.data().rtype();
            match &apex {
                None if rtype == Rtype::SOA => {
                    let ZoneRecordData::Soa(soa) = rec.data() else {
                        unreachable!("an SOA record holds SOA data")
                    };
                    let neg = rec.ttl().min(soa.minimum());
                    apex = Some((owner.clone(), rec.data().clone(), neg));
                }
                None => return Err(format!("{owner}: the first record must be the SOA")),
                Some((a, _, _)) if !owner.ends_with(a) => {
                    return Err(format!("{owner} is outside the zone {a}"))
                }
                Some(_) if rtype == Rtype::SOA => {
                    return Err(format!("{owner}: a second SOA record"))
                }
                Some(_) => {}
            }
            let key = canonical(&owner);
            let sets = nodes.entry(key).or_default();
            match sets.iter_mut().find(|s| s.rtype == rtype) {
                Some(s) => {
                    // RFC 2181 5.2: one TTL per RRset, the lowest.
                    s.ttl = s.ttl.min(rec.ttl());
                    s.data.push(rec.data().clone());
                }
                None => sets.push(RrSet {
                    rtype,
                    ttl: rec.ttl(),
                    data: vec![rec.data().clone()],
                }),
            }
        }
        let Some((apex, soa, neg_ttl)) = apex else {
            return Err("no records (a zone starts with its SOA)".into());
        };
        // Empty non-terminals: every name between an owner and the apex.
        let owners: Vec<Vec<u8>> = nodes.keys().cloned().collect();
        let apex_len = canonical(&apex).len();
        for o in owners {
            let mut at = 0;
            while o.len() - at > apex_len {
                at += 1 + o[at] as usize;
                nodes.entry(o[at..].to_vec()).or_default();
            }
        }
        Ok(Zone {
            apex,
            soa,
            neg_ttl,
            nodes,
        })
    }

    /// The apex.
    pub fn apex(&self) -> String {
        self.apex.to_string()
    }

    /// Names with records or empty non-terminals.
    pub fn names(&self) -> usize {
        self.nodes.len()
    }
}

/// Lower-case uncompressed wire format of a name.
fn canonical(n: &impl ToName) -> Vec<u8> {
    let mut v = Vec::with_capacity(n.compose_len() as usize);
    canonical_into(n, &mut v);
    v
}

/// [`canonical`] into a buffer that is reused.
fn canonical_into<'a>(n: &impl ToName, v: &'a mut Vec<u8>) -> &'a [u8] {
    v.clear();
    let _ = n.compose_canonical(v);
    v
}

/// What became of a query, counted in [`Stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered from the zone (records, or a referral to a CNAME).
    NoError,
    /// The name exists, the type does not (NOERROR, no answer).
    NoData,
    NxDomain,
    Refused,
    FormErr,
    NotImp,
    BadVers,
    /// Not answered: not a query that can be answered (shorter than a
    /// header, a response, several questions, an unparsable question).
    Dropped,
}

/// Counters of a responder.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    pub queries: u64,
    pub noerror: u64,
    pub nodata: u64,
    pub nxdomain: u64,
    pub refused: u64,
    pub formerr: u64,
    pub notimp: u64,
    pub badvers: u64,
    pub truncated: u64,
    pub dropped: u64,
    /// Answers given from the packet cache (counted above too).
    pub cached: u64,
}

impl Stats {
    fn count(&mut self, o: Outcome) {
        self.queries += 1;
        *match o {
            Outcome::NoError => &mut self.noerror,
            Outcome::NoData => &mut self.nodata,
            Outcome::NxDomain => &mut self.nxdomain,
            Outcome::Refused => &mut self.refused,
            Outcome::FormErr => &mut self.formerr,
            Outcome::NotImp => &mut self.notimp,
            Outcome::BadVers => &mut self.badvers,
            Outcome::Dropped => &mut self.dropped,
        } += 1;
    }

    /// Adds another responder's counters.
    pub fn add(&mut self, o: &Stats) {
        self.queries += o.queries;
        self.noerror += o.noerror;
        self.nodata += o.nodata;
        self.nxdomain += o.nxdomain;
        self.refused += o.refused;
        self.formerr += o.formerr;
        self.notimp += o.notimp;
        self.badvers += o.badvers;
        self.truncated += o.truncated;
        self.dropped += o.dropped;
        self.cached += o.cached;
    }
}

impl std::fmt::Display for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "queries {} noerror {} nodata {} nxdomain {} refused {} formerr {} notimp {} \
             badvers {} truncated {} dropped {} cached {}",
            self.queries,
            self.noerror,
            self.nodata,
            self.nxdomain,
            self.refused,
            self.formerr,
            self.notimp,
            self.badvers,
            self.truncated,
            self.dropped,
            self.cached
        )
    }
}

/// The query's EDNS, when it had an OPT record.
#[derive(Debug, Clone, Copy)]
struct Edns {
    udp_size: u16,
    dnssec_ok: bool,
}

/// The answers a responder already built, by query (its bytes with the ID
/// zeroed), as PowerDNS's packet cache keeps them: the zone does not change
/// while the responder runs, and an answer depends on nothing but the
/// query and the zone, so the same query gets the same bytes but for the
/// ID, copied from the query. Bounded: once full, new queries are answered
/// without being kept.
#[derive(Debug, Default)]
struct PacketCache {
    entries: usize,
    answers: rustc_hash::FxHashMap<Box<[u8]>, Cached>,
    /// The query being looked up, its ID zeroed (reused).
    key: Vec<u8>,
}

/// An answer in the [`PacketCache`], its ID zeroed, and how it was
/// counted when it was built.
#[derive(Debug)]
struct Cached {
    outcome: Outcome,
    truncated: bool,
    answer: Box<[u8]>,
}

/// Answers queries for one zone. One per thread; the zone is shared.
#[derive(Debug)]
pub struct Responder {
    zone: std::sync::Arc<Zone>,
    cache: PacketCache,
    /// The query name, lower-cased, for the lookup (reused).
    key: Vec<u8>,
    /// The same for names the answer leads to (CNAME, NS, MX, SRV targets).
    scratch: Vec<u8>,
    /// Counters.
    pub stats: Stats,
}

impl Responder {
    pub fn new(zone: std::sync::Arc<Zone>) -> Responder {
        Responder {
            zone,
            cache: PacketCache::default(),
            key: Vec::with_capacity(255),
            scratch: Vec::with_capacity(255),
            stats: Stats::default(),
        }
    }

    /// Keeps up to `entries` answers to give again to the same query
    /// ([`PacketCache`]); 0 (the default) builds every answer.
    pub fn with_packet_cache(mut self, entries: usize) -> Responder {
        self.cache.entries = entries;
        self
    }

    /// Writes the answer to `query` into `out` (cleared first); returns
    /// false when the query is dropped (then `out` is empty).
    pub fn respond(&mut self, query: &[u8], out: &mut Vec<u8>) -> bool {
        let c = &mut self.cache;
        let cached = c.entries > 0 && query.len() >= 12;
        if cached {
            c.key.clear();
            c.key.extend_from_slice(query);
            c.key[..2].fill(0);
            if let Some(hit) = c.answers.get(&c.key[..]) {
                out.clear();
                out.extend_from_slice(&hit.answer);
                out[..2].copy_from_slice(&query[..2]);
                self.stats.cached += 1;
                self.stats.count(hit.outcome);
                self.stats.truncated += hit.truncated as u64;
                return true;
            }
        }
        let truncated = self.stats.truncated;
        let target = StaticCompressor::new(std::mem::take(out));
        let (outcome, target) = self.answer(query, target);
        self.stats.count(outcome);
        *out = target.into_target();
        if outcome == Outcome::Dropped {
            out.clear();
            return false;
        }
        let c = &mut self.cache;
        if cached && c.answers.len() < c.entries && out.len() >= 2 {
            let mut answer: Box<[u8]> = out.as_slice().into();
            answer[..2].fill(0);
            let cached = Cached {
                outcome,
                truncated: self.stats.truncated != truncated,
                answer,
            };
            c.answers.insert(c.key.as_slice().into(), cached);
        }
        true
    }

    fn answer(&mut self, query: &[u8], target: Target) -> (Outcome, Target) {
        let Ok(msg) = Message::from_octets(query) else {
            return (Outcome::Dropped, target);
        };
        let header = msg.header();
        let qdcount = msg.header_counts().qdcount();
        if header.qr() || qdcount > 1 {
            return (Outcome::Dropped, target);
        }
        // A Vec always takes the header.
        let mb = MessageBuilder::from_target(target).unwrap_or_else(|e| match e {});
        if qdcount == 0 {
            let a = mb.start_error(&msg, Rcode::FORMERR);
            return (Outcome::FormErr, a.finish());
        }
        let Ok(question) = msg.sole_question() else {
            return (Outcome::Dropped, mb.finish());
        };
        if header.opcode() != Opcode::QUERY {
            let rcode = if header.opcode() == Opcode::NOTIFY {
                Rcode::NOTAUTH
            } else {
                Rcode::NOTIMP
            };
            return (Outcome::NotImp, mb.start_error(&msg, rcode).finish());
        }
        let edns = match check_records(&msg) {
            Ok(e) => e,
            Err(()) => {
                return (
                    Outcome::FormErr,
                    mb.start_error(&msg, Rcode::FORMERR).finish(),
                )
            }
        };
        let mut a = mb.start_error(&msg, Rcode::NOERROR);
        if let Some((e, version)) = edns {
            if version != 0 {
                let mut add = a.additional();
                let _ = add.opt(|o| {
                    o.set_udp_payload_size(EDNS_UDP_SIZE);
                    o.set_rcode(OptRcode::BADVERS);
                    Ok(())
                });
                return (Outcome::BadVers, add.finish());
            }
            let _ = e;
        }
        let edns = edns.map(|(e, _)| e);
        let qname = question.qname();
        let zone = &*self.zone;
        if question.qclass() != Class::IN || !qname.ends_with(&zone.apex) {
            a.header_mut().set_rcode(Rcode::REFUSED);
            return (Outcome::Refused, with_opt(a.additional(), edns).finish());
        }
        a.header_mut().set_aa(true);
        let qtype = question.qtype();
        let outcome = match zone.nodes.get(canonical_into(&qname, &mut self.key)) {
            None => {
                a.header_mut().set_rcode(Rcode::NXDOMAIN);
                Outcome::NxDomain
            }
            Some(sets) => {
                let found = if qtype == Rtype::ANY {
                    sets.first()
                } else {
                    sets.iter()
                        .find(|s| s.rtype == qtype)
                        .or_else(|| sets.iter().find(|s| s.rtype == Rtype::CNAME))
                };
                match found {
                    Some(set) => {
                        let mut ok = push_set(&mut a, &qname, set);
                        if set.rtype == Rtype::CNAME && qtype != Rtype::CNAME {
                            // One step along the alias inside the zone, as
                            // Knot follows it.
                            if let Some(ZoneRecordData::Cname(c)) = set.data.first() {
                                let t = c.cname();
                                if let Some(ts) = zone
                                    .nodes
                                    .get(canonical_into(t, &mut self.scratch))
                                    .and_then(|s| s.iter().find(|s| s.rtype == qtype))
                                {
                                    ok &= push_set(&mut a, t, ts);
                                }
                            }
                        }
                        let _ = ok;
                        let mut add = a.additional();
                        for d in &set.data {
                            let target = match d {
                                ZoneRecordData::Ns(n) => n.nsdname(),
                                ZoneRecordData::Mx(m) => m.exchange(),
                                ZoneRecordData::Srv(s) => s.target(),
                                _ => continue,
                            };
                            glue(&mut add, zone, target, &mut self.scratch);
                        }
                        return self.finish(add, edns, Outcome::NoError);
                    }
                    None => Outcome::NoData,
                }
            }
        };
        let mut auth = a.authority();
        let _ = auth.push((&zone.apex, Class::IN, zone.neg_ttl, &zone.soa));
        self.finish(auth.additional(), edns, outcome)
    }

    /// Adds the OPT record, and truncates an answer larger than the client
    /// takes to its header and question with TC.
    fn finish(
        &mut self,
        add: AdditionalBuilder<Target>,
        edns: Option<Edns>,
        outcome: Outcome,
    ) -> (Outcome, Target) {
        let limit = match edns {
            Some(e) => e.udp_size.clamp(512, EDNS_UDP_SIZE) as usize,
            None => 512,
        };
        let add = with_opt(add, edns);
        if add.as_slice().len() <= limit {
            return (outcome, add.finish());
        }
        self.stats.truncated += 1;
        let mut q = add.builder().question();
        q.header_mut().set_tc(true);
        let mut ans = q.answer();
        ans.rewind();
        let mut auth = ans.authority();
        auth.rewind();
        let mut add = auth.additional();
        add.rewind();
        (outcome, with_opt(add, edns).finish())
    }
}

/// Pushes every record of `set` with owner `owner`; false when the answer
/// ran out of room (a Vec does not).
fn push_set(a: &mut AnswerBuilder<Target>, owner: &impl ToName, set: &RrSet) -> bool {
    set.data
        .iter()
        .all(|d| a.push((owner, Class::IN, set.ttl, d)).is_ok())
}

/// A and AAAA records of an in-zone name as additional data.
fn glue(add: &mut AdditionalBuilder<Target>, zone: &Zone, name: &ZName, key: &mut Vec<u8>) {
    if !name.ends_with(&zone.apex) {
        return;
    }
    let Some(sets) = zone.nodes.get(canonical_into(name, key)) else {
        return;
    };
    for t in [Rtype::A, Rtype::AAAA] {
        for s in sets.iter().filter(|s| s.rtype == t) {
            for d in &s.data {
                let _ = add.push((name, Class::IN, s.ttl, d));
            }
        }
    }
}

fn with_opt(mut add: AdditionalBuilder<Target>, edns: Option<Edns>) -> AdditionalBuilder<Target> {
    if let Some(e) = edns {
        let _ = add.opt(|o| {
            o.set_udp_payload_size(EDNS_UDP_SIZE);
            o.set_dnssec_ok(e.dnssec_ok);
            Ok(())
        });
    }
    add
}

/// Checks that every record after the question parses, that there is at
/// most one OPT and nothing after the last record; returns the OPT's EDNS
/// and version.
fn check_records<O: Octets + ?Sized>(msg: &Message<O>) -> Result<Option<(Edns, u8)>, ()> {
    let (_, answer, authority, mut additional) = msg.sections().map_err(|_| ())?;
    for section in [answer, authority] {
        for r in section {
            r.map_err(|_| ())?;
        }
    }
    let mut edns = None;
    for r in &mut additional {
        let r = r.map_err(|_| ())?;
        if r.rtype() == Rtype::OPT {
            if edns.is_some() || !r.owner().is_root() {
                return Err(());
            }
            let opt = msg.opt().ok_or(())?;
            edns = Some((
                Edns {
                    udp_size: opt.udp_payload_size(),
                    dnssec_ok: opt.dnssec_ok(),
                },
                opt.version(),
            ));
        }
    }
    if additional.pos() != msg.as_slice().len() {
        return Err(());
    }
    Ok(edns)
}
