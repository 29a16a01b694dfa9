//! Reading the namespace's nf_tables ruleset over netlink (NETLINK_NETFILTER,
//! `NFNL_SUBSYS_NFTABLES`): tables, chains, rules with their expressions,
//! and sets with their elements, as the kernel holds them.
//!
//! The kernel's form is read rather than `nft -j list ruleset`: it is what
//! the kernel runs (nft's listing reconstructs expressions from it, and
//! nftables 1.0.6 lists `ip ttl < 5 ip length > 100` as
//! `ip length != 5-100`), it needs no `nft` binary on the host, and
//! iptables-nft's rules arrive in the same form.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// `NFNL_SUBSYS_NFTABLES`
const SUBSYS: u16 = 10;
/// `NFNLGRP_NFTABLES`: the multicast group of ruleset changes.
pub const GROUP_NFTABLES: u32 = 7;
const NETLINK_NETFILTER: i32 = 12;

/// nf_tables message types (`enum nf_tables_msg_types`).
pub mod msg {
    /// `NFT_MSG_GETTABLE`
    pub const GETTABLE: u16 = 1;
    /// `NFT_MSG_GETCHAIN`
    pub const GETCHAIN: u16 = 4;
    /// `NFT_MSG_GETRULE`
    pub const GETRULE: u16 = 7;
    /// `NFT_MSG_GETSET`
    pub const GETSET: u16 = 10;
    /// `NFT_MSG_GETSETELEM`
    pub const GETSETELEM: u16 = 13;
    /// `NFT_MSG_NEWGEN`: the end of a committed transaction.
    pub const NEWGEN: u16 = 15;
    /// `NFT_MSG_GETGEN`
    pub const GETGEN: u16 = 16;
}

/// Netfilter protocol families (`NFPROTO_*`).
pub mod family {
    /// inet: IPv4 and IPv6
    pub const INET: u8 = 1;
    /// ip
    pub const IPV4: u8 = 2;
    /// arp
    pub const ARP: u8 = 3;
    /// netdev
    pub const NETDEV: u8 = 5;
    /// bridge
    pub const BRIDGE: u8 = 7;
    /// ip6
    pub const IPV6: u8 = 10;
}

/// A table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// `NFPROTO_*`
    pub family: u8,
    /// Name.
    pub name: String,
    /// `NFT_TABLE_F_DORMANT`: its chains are not attached.
    pub dormant: bool,
}

/// A chain; base chains have a hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    /// `NFPROTO_*`
    pub family: u8,
    /// Its table.
    pub table: String,
    /// Name.
    pub name: String,
    /// Handle.
    pub handle: u64,
    /// Hook number, priority, and devices (netdev), for a base chain.
    pub hook: Option<(u32, i32)>,
    /// `NF_DROP` (0) or `NF_ACCEPT` (1), for a base chain.
    pub policy: u32,
    /// `filter`, `nat`, `route`.
    pub kind: String,
}

/// One expression of a rule: its name and its attributes (raw).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expr {
    /// `payload`, `cmp`, `immediate`, ...
    pub name: String,
    /// Its `NFTA_<NAME>_*` attributes.
    pub attrs: Vec<Attr>,
}

impl Expr {
    /// The attribute of type `t`.
    pub fn attr(&self, t: u16) -> Option<&[u8]> {
        self.attrs.iter().find(|a| a.kind == t).map(|a| &a.data[..])
    }

    /// A big-endian u32 attribute.
    pub fn u32(&self, t: u16) -> Option<u32> {
        self.attr(t).and_then(be32)
    }

    /// The value of an `NFTA_DATA_VALUE` nested in attribute `t`.
    pub fn data(&self, t: u16) -> Option<Vec<u8>> {
        let a = self.attr(t)?;
        attrs(a).find(|x| x.kind == 1).map(|x| x.data.to_vec())
    }
}

/// A netlink attribute, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    /// Type (without the nested and byte-order flags).
    pub kind: u16,
    /// Payload.
    pub data: Vec<u8>,
}

/// A rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// `NFPROTO_*`
    pub family: u8,
    /// Table.
    pub table: String,
    /// Chain.
    pub chain: String,
    /// Handle (`nft -a list ruleset` shows it).
    pub handle: u64,
    /// Expressions in order.
    pub exprs: Vec<Expr>,
}

/// A set, with its elements when they could be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Set {
    /// `NFPROTO_*`
    pub family: u8,
    /// Table.
    pub table: String,
    /// Name (`__set%d` for anonymous sets).
    pub name: String,
    /// `NFT_SET_*` flags.
    pub flags: u32,
    /// Key length in bytes.
    pub key_len: u32,
    /// Elements: key, `NFT_SET_ELEM_INTERVAL_END` flag, key end (ranges
    /// of concatenations), has a timeout.
    pub elems: Vec<Elem>,
}

/// One set element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Elem {
    /// Key bytes (network order for addresses and ports).
    pub key: Vec<u8>,
    /// End of an interval (the first value after it).
    pub interval_end: bool,
    /// `NFTA_SET_ELEM_KEY_END`, when the element is a range itself.
    pub key_end: Option<Vec<u8>>,
    /// The element expires (`timeout`).
    pub expires: bool,
}

/// `NFT_SET_*` flags.
pub mod set_flags {
    /// anonymous
    pub const ANONYMOUS: u32 = 0x1;
    /// constant
    pub const CONSTANT: u32 = 0x2;
    /// interval
    pub const INTERVAL: u32 = 0x4;
    /// map
    pub const MAP: u32 = 0x8;
    /// timeout
    pub const TIMEOUT: u32 = 0x10;
    /// dynamic (updated from the packet path)
    pub const EVAL: u32 = 0x20;
    /// object map
    pub const OBJECT: u32 = 0x40;
    /// concatenation
    pub const CONCAT: u32 = 0x80;
}

/// The ruleset of the namespace at one generation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ruleset {
    /// The ruleset generation the dump is consistent with.
    pub generation: u32,
    /// Tables.
    pub tables: Vec<Table>,
    /// Chains.
    pub chains: Vec<Chain>,
    /// Rules, in chain order.
    pub rules: Vec<Rule>,
    /// Sets.
    pub sets: Vec<Set>,
}

fn be32(b: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(..4)?.try_into().ok()?))
}

fn be64(b: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(..8)?.try_into().ok()?))
}

fn string(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// A borrowed attribute.
#[derive(Debug, Clone, Copy)]
pub struct RawAttr<'a> {
    /// Type without flags.
    pub kind: u16,
    /// Payload.
    pub data: &'a [u8],
}

/// The attributes in `b`, in order; stops at the first malformed one.
pub fn attrs(b: &[u8]) -> impl Iterator<Item = RawAttr<'_>> {
    let mut at = 0usize;
    std::iter::from_fn(move || {
        let h = b.get(at..at + 4)?;
        let len = u16::from_ne_bytes([h[0], h[1]]) as usize;
        let kind = u16::from_ne_bytes([h[2], h[3]]) & 0x3fff;
        if len < 4 || at + len > b.len() {
            return None;
        }
        let data = &b[at + 4..at + len];
        at += (len + 3) & !3;
        Some(RawAttr { kind, data })
    })
}

fn find(b: &[u8], kind: u16) -> Option<&[u8]> {
    attrs(b).find(|a| a.kind == kind).map(|a| a.data)
}

/// A NETLINK_NETFILTER socket.
#[derive(Debug)]
pub struct Socket {
    fd: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
}

impl Socket {
    /// A socket for requests.
    pub fn open() -> io::Result<Socket> {
        // SAFETY: plain socket(2); the result is checked.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                NETLINK_NETFILTER,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: a zeroed sockaddr_nl is valid; the kernel assigns a port.
        let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        sa.nl_family = libc::AF_NETLINK as u16;
        // SAFETY: sa is a valid sockaddr_nl of the stated size.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sa as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        // A full ruleset dump comes in pieces of up to 32 KiB.
        let size: libc::c_int = 1 << 20;
        // SAFETY: an int option of the stated size.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&size as *const libc::c_int).cast(),
                4,
            )
        };
        Ok(Socket {
            fd,
            seq: 1,
            buf: vec![0u8; 64 * 1024],
        })
    }

    /// A socket that receives the ruleset change notifications
    /// (`NFNLGRP_NFTABLES`), non-blocking.
    pub fn subscribed() -> io::Result<Socket> {
        let s = Socket::open()?;
        let g = GROUP_NFTABLES as libc::c_int;
        // SAFETY: an int option of the stated size.
        let r = unsafe {
            libc::setsockopt(
                s.fd.as_raw_fd(),
                libc::SOL_NETLINK,
                libc::NETLINK_ADD_MEMBERSHIP,
                (&g as *const libc::c_int).cast(),
                4,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(s)
    }

    /// The descriptor, for poll(2).
    pub fn fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }

    /// Waits up to `timeout_ms` for notifications and drains them. Returns
    /// whether any arrived (ENOBUFS, lost notifications, counts as one).
    pub fn wait_changes(&mut self, timeout_ms: i32) -> io::Result<bool> {
        let mut p = libc::pollfd {
            fd: self.fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut p, 1, timeout_ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(false)
            } else {
                Err(e)
            };
        }
        if n == 0 {
            return Ok(false);
        }
        let mut any = false;
        loop {
            // SAFETY: buf is valid for its length.
            let r = unsafe {
                libc::recv(
                    self.fd(),
                    self.buf.as_mut_ptr().cast(),
                    self.buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if r < 0 {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EAGAIN) => return Ok(any),
                    Some(libc::ENOBUFS) => any = true,
                    Some(libc::EINTR) => {}
                    _ => return Err(e),
                }
            } else {
                any = true;
            }
        }
    }

    fn request(&mut self, kind: u16, flags: u16, family: u8, payload: &[u8]) -> io::Result<u32> {
        self.seq = self.seq.wrapping_add(1);
        let len = 16 + 4 + payload.len();
        let mut m = Vec::with_capacity(len);
        m.extend_from_slice(&(len as u32).to_ne_bytes());
        m.extend_from_slice(&((SUBSYS << 8) | kind).to_ne_bytes());
        m.extend_from_slice(&(libc::NLM_F_REQUEST as u16 | flags).to_ne_bytes());
        m.extend_from_slice(&self.seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        // struct nfgenmsg: family, version NFNETLINK_V0, res_id.
        m.extend_from_slice(&[family, 0, 0, 0]);
        m.extend_from_slice(payload);
        // SAFETY: m is valid for its length; the kernel is the peer.
        let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        sa.nl_family = libc::AF_NETLINK as u16;
        // SAFETY: valid buffer and address.
        let r = unsafe {
            libc::sendto(
                self.fd(),
                m.as_ptr().cast(),
                m.len(),
                0,
                (&sa as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(self.seq)
    }

    /// Sends a request and calls `each` with the attributes (after the
    /// nfgenmsg) of every answer until the dump ends.
    fn dump(
        &mut self,
        kind: u16,
        family: u8,
        payload: &[u8],
        mut each: impl FnMut(u8, &[u8]),
    ) -> io::Result<()> {
        let dump = if kind == msg::GETGEN {
            0
        } else {
            libc::NLM_F_DUMP as u16
        };
        let ack = if dump == 0 { libc::NLM_F_ACK as u16 } else { 0 };
        let seq = self.request(kind, dump | ack, family, payload)?;
        loop {
            // SAFETY: buf is valid for its length.
            let r =
                unsafe { libc::recv(self.fd(), self.buf.as_mut_ptr().cast(), self.buf.len(), 0) };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let mut at = 0usize;
            let n = r as usize;
            while at + 16 <= n {
                let b = &self.buf[at..n];
                let len = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize;
                let t = u16::from_ne_bytes([b[4], b[5]]);
                let s = u32::from_ne_bytes([b[8], b[9], b[10], b[11]]);
                if len < 16 || len > b.len() {
                    return Err(io::Error::other("malformed netlink message"));
                }
                let body = &b[16..len];
                at += (len + 3) & !3;
                if s != seq {
                    continue;
                }
                match t as i32 {
                    libc::NLMSG_DONE => return Ok(()),
                    libc::NLMSG_ERROR => {
                        let code = body
                            .get(..4)
                            .map(|e| i32::from_ne_bytes([e[0], e[1], e[2], e[3]]))
                            .unwrap_or(0);
                        if code == 0 {
                            if dump == 0 {
                                return Ok(());
                            }
                            continue;
                        }
                        return Err(io::Error::from_raw_os_error(-code));
                    }
                    _ => {
                        if body.len() >= 4 {
                            each(body[0], &body[4..]);
                        }
                    }
                }
            }
        }
    }

    /// The ruleset generation now (`NFT_MSG_GETGEN`).
    pub fn generation(&mut self) -> io::Result<u32> {
        let mut g = 0;
        self.dump(msg::GETGEN, 0, &[], |_, a| {
            // NFTA_GEN_ID
            if let Some(v) = find(a, 1).and_then(be32) {
                g = v;
            }
        })?;
        Ok(g)
    }

    /// Reads the whole ruleset, consistently: the dump is repeated when the
    /// generation moved while it was read.
    pub fn ruleset(&mut self) -> io::Result<Ruleset> {
        for _ in 0..10 {
            let before = self.generation()?;
            let mut r = self.read_once()?;
            if self.generation()? == before {
                r.generation = before;
                return Ok(r);
            }
        }
        Err(io::Error::other(
            "the nf_tables ruleset kept changing while it was read",
        ))
    }

    fn read_once(&mut self) -> io::Result<Ruleset> {
        let mut r = Ruleset::default();
        self.dump(msg::GETTABLE, 0, &[], |fam, a| {
            r.tables.push(Table {
                family: fam,
                name: find(a, 1).map(string).unwrap_or_default(),
                dormant: find(a, 2).and_then(be32).is_some_and(|f| f & 1 != 0),
            })
        })?;
        self.dump(msg::GETCHAIN, 0, &[], |fam, a| {
            let hook = find(a, 4).and_then(|h| {
                Some((
                    find(h, 1).and_then(be32)?,
                    find(h, 2).and_then(be32).unwrap_or(0) as i32,
                ))
            });
            r.chains.push(Chain {
                family: fam,
                table: find(a, 1).map(string).unwrap_or_default(),
                name: find(a, 3).map(string).unwrap_or_default(),
                handle: find(a, 2).and_then(be64).unwrap_or(0),
                hook,
                policy: find(a, 5).and_then(be32).unwrap_or(1),
                kind: find(a, 7).map(string).unwrap_or_default(),
            })
        })?;
        self.dump(msg::GETRULE, 0, &[], |fam, a| {
            let mut exprs = Vec::new();
            if let Some(list) = find(a, 4) {
                for e in attrs(list).filter(|e| e.kind == 1) {
                    exprs.push(Expr {
                        name: find(e.data, 1).map(string).unwrap_or_default(),
                        attrs: find(e.data, 2)
                            .map(|d| {
                                attrs(d)
                                    .map(|x| Attr {
                                        kind: x.kind,
                                        data: x.data.to_vec(),
                                    })
                                    .collect()
                            })
                            .unwrap_or_default(),
                    });
                }
            }
            r.rules.push(Rule {
                family: fam,
                table: find(a, 1).map(string).unwrap_or_default(),
                chain: find(a, 2).map(string).unwrap_or_default(),
                handle: find(a, 3).and_then(be64).unwrap_or(0),
                exprs,
            })
        })?;
        self.dump(msg::GETSET, 0, &[], |fam, a| {
            r.sets.push(Set {
                family: fam,
                table: find(a, 1).map(string).unwrap_or_default(),
                name: find(a, 2).map(string).unwrap_or_default(),
                flags: find(a, 3).and_then(be32).unwrap_or(0),
                key_len: find(a, 5).and_then(be32).unwrap_or(0),
                elems: Vec::new(),
            })
        })?;
        for i in 0..r.sets.len() {
            let (fam, table, name) = {
                let s = &r.sets[i];
                (s.family, s.table.clone(), s.name.clone())
            };
            let mut p = Vec::new();
            put_str(&mut p, 1, &table);
            put_str(&mut p, 2, &name);
            let mut elems = Vec::new();
            self.dump(msg::GETSETELEM, fam, &p, |_, a| {
                let Some(list) = find(a, 3) else { return };
                for e in attrs(list).filter(|e| e.kind == 1) {
                    let value = |t| find(e.data, t).and_then(|k| find(k, 1)).map(<[u8]>::to_vec);
                    elems.push(Elem {
                        key: value(1).unwrap_or_default(),
                        interval_end: find(e.data, 3).and_then(be32).is_some_and(|f| f & 1 != 0),
                        key_end: value(10),
                        expires: find(e.data, 4).is_some() || find(e.data, 5).is_some(),
                    });
                }
            })?;
            r.sets[i].elems = elems;
        }
        Ok(r)
    }
}

fn put_str(m: &mut Vec<u8>, kind: u16, s: &str) {
    let len = 4 + s.len() + 1;
    m.extend_from_slice(&(len as u16).to_ne_bytes());
    m.extend_from_slice(&kind.to_ne_bytes());
    m.extend_from_slice(s.as_bytes());
    m.push(0);
    while !m.len().is_multiple_of(4) {
        m.push(0);
    }
}

/// Rules in the kernel's encoding, written by hand: for tests and
/// benchmarks that compile rulesets without a kernel.
///
/// ```
/// use xdpip::filter::nft::build::*;
/// use xdpip::filter::nft::{family, Ruleset};
/// // ip filter forward: udp dport 5555 drop
/// let mut rs = Ruleset::default();
/// rs.chains.push(base_chain(family::IPV4, "filter", "forward", 2, 0, true));
/// rs.rules.push(rule(family::IPV4, "filter", "forward", 1, vec![
///     meta(16), cmp(0, &[17]), payload(2, 2, 2), cmp(0, &5555u16.to_be_bytes()), verdict(0, None),
/// ]));
/// let r = xdpip::filter::compile::compile(&rs, &[]);
/// assert!(r.active(xdpip::filter::Hook::Forward));
/// ```
pub mod build {
    use super::{Attr, Chain, Expr, Rule, Set};

    fn be(v: u32) -> Vec<u8> {
        v.to_be_bytes().to_vec()
    }

    fn nest(kind: u16, data: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&((4 + data.len()) as u16).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(data);
        while !m.len().is_multiple_of(4) {
            m.push(0);
        }
        m
    }

    fn expr(name: &str, attrs: Vec<(u16, Vec<u8>)>) -> Expr {
        Expr {
            name: name.into(),
            attrs: attrs
                .into_iter()
                .map(|(kind, data)| Attr { kind, data })
                .collect(),
        }
    }

    /// `payload load len bytes @ base + offset => reg 1` (base 1 network,
    /// 2 transport).
    pub fn payload(base: u32, offset: u32, len: u32) -> Expr {
        expr(
            "payload",
            vec![(1, be(1)), (2, be(base)), (3, be(offset)), (4, be(len))],
        )
    }

    /// `meta load key => reg 1` (`NFT_META_*`: 4 iif, 6 iifname, 16 l4proto).
    pub fn meta(key: u32) -> Expr {
        expr("meta", vec![(1, be(1)), (2, be(key))])
    }

    /// `cmp op reg 1 data` (0 eq, 1 neq, 2 lt, 3 lte, 4 gt, 5 gte).
    pub fn cmp(op: u32, data: &[u8]) -> Expr {
        expr("cmp", vec![(1, be(1)), (2, be(op)), (3, nest(1, data))])
    }

    /// `range op reg 1 from to` (0 eq, 1 neq).
    pub fn range(op: u32, from: &[u8], to: &[u8]) -> Expr {
        expr(
            "range",
            vec![
                (1, be(1)),
                (2, be(op)),
                (3, nest(1, from)),
                (4, nest(1, to)),
            ],
        )
    }

    /// `bitwise reg 1 = reg 1 & mask`
    pub fn bitwise(mask: &[u8]) -> Expr {
        expr(
            "bitwise",
            vec![
                (1, be(1)),
                (2, be(1)),
                (3, be(mask.len() as u32)),
                (4, nest(1, mask)),
                (5, nest(1, &vec![0; mask.len()])),
            ],
        )
    }

    /// `lookup reg 1 set name` (inverted: `!= @name`).
    pub fn lookup(set: &str, invert: bool) -> Expr {
        let mut name = set.as_bytes().to_vec();
        name.push(0);
        expr(
            "lookup",
            vec![(1, name), (2, be(1)), (5, be(invert as u32))],
        )
    }

    /// A verdict: 0 drop, 1 accept, -3 jump, -4 goto, -5 return.
    pub fn verdict(code: i32, chain: Option<&str>) -> Expr {
        let mut v = nest(1, &code.to_be_bytes());
        if let Some(c) = chain {
            let mut n = c.as_bytes().to_vec();
            n.push(0);
            v.extend(nest(2, &n));
        }
        expr("immediate", vec![(1, be(0)), (2, nest(2, &v))])
    }

    /// `reject` of type 0 (ICMP, with its code), 1 (TCP reset), 2 (icmpx).
    pub fn reject(kind: u32, code: u8) -> Expr {
        expr("reject", vec![(1, be(kind)), (2, vec![code])])
    }

    /// `counter`
    pub fn counter() -> Expr {
        expr("counter", vec![])
    }

    /// A base chain of type filter at `hook` (`NF_INET_*`).
    pub fn base_chain(
        family: u8,
        table: &str,
        name: &str,
        hook: u32,
        prio: i32,
        accept: bool,
    ) -> Chain {
        Chain {
            family,
            table: table.into(),
            name: name.into(),
            handle: 0,
            hook: Some((hook, prio)),
            policy: accept as u32,
            kind: "filter".into(),
        }
    }

    /// A regular chain.
    pub fn chain(family: u8, table: &str, name: &str) -> Chain {
        Chain {
            family,
            table: table.into(),
            name: name.into(),
            handle: 0,
            hook: None,
            policy: 1,
            kind: String::new(),
        }
    }

    /// A rule.
    pub fn rule(family: u8, table: &str, chain: &str, handle: u64, exprs: Vec<Expr>) -> Rule {
        Rule {
            family,
            table: table.into(),
            chain: chain.into(),
            handle,
            exprs,
        }
    }

    /// A set of 4-byte (addresses) or 2-byte (ports) keys, each one value.
    pub fn set(family: u8, table: &str, name: &str, keys: Vec<Vec<u8>>) -> Set {
        Set {
            family,
            table: table.into(),
            name: name.into(),
            flags: 0,
            key_len: keys.first().map_or(4, |k| k.len() as u32),
            elems: keys
                .into_iter()
                .map(|key| super::Elem {
                    key,
                    interval_end: false,
                    key_end: None,
                    expires: false,
                })
                .collect(),
        }
    }
}
