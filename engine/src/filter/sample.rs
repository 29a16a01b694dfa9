//! A sample ruleset for benchmarks and tests: the forward chain of 20
//! rules with a 1,000-address set that `benches/filter.rs` and
//! `benches/forward.rs` judge, and the filter's tests compare the batch
//! judge on. Not part of the engine.

use super::compile::{compile, Iface};
use super::nft::build::*;
use super::nft::{family::IPV4, Expr, Ruleset as Nft};
use super::{Hook, Ruleset};

/// xorshift64: the set's addresses here, the packets of the filter bench.
pub struct Rng(pub u64);

impl Rng {
    /// The next value, its low 32 bits.
    pub fn next_u32(&mut self) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 as u32
    }
}

fn proto(p: u8) -> Vec<Expr> {
    vec![meta(16), cmp(0, &[p])]
}

fn dport(p: u16) -> Vec<Expr> {
    vec![payload(2, 2, 2), cmp(0, &p.to_be_bytes())]
}

/// `udp dport p`: the protocol, then the port.
pub fn udp_dport(p: u16) -> Vec<Expr> {
    [proto(17), dport(p)].concat()
}

/// `n` rules in `chain` of `table`, handles 1 to `n`: rule `i` counts UDP
/// to port 1000 + `i` and drops it (even `i`) or rejects it with
/// host-prohibited (odd `i`). More than 64 of them make a hook of several
/// mask words.
pub fn port_rules(rs: &mut Nft, family: u8, table: &str, chain: &str, n: u16) {
    for i in 0..n {
        let v = if i % 2 == 0 {
            verdict(0, None)
        } else {
            reject(0, 10)
        };
        rs.rules.push(rule(
            family,
            table,
            chain,
            i as u64 + 1,
            [udp_dport(1000 + i), vec![counter(), v]].concat(),
        ));
    }
}

fn prefix(offset: u32, addr: [u8; 4], len: u32) -> Vec<Expr> {
    let mask = (u32::MAX << (32 - len)).to_be_bytes();
    vec![payload(1, offset, 4), bitwise(&mask), cmp(0, &addr)]
}

/// The 20 rules of the forward chain, one of them a lookup of the source
/// in a set of 1,000 addresses of 192.0.0.0/2 drawn from `seed`, for ports
/// `eth0` (ifindex 10) and `eth1` (ifindex 11); with counters for one
/// worker.
///
/// ```
/// use xdpip::filter::{Hook, Meta, Verdict};
/// let r = xdpip::filter::sample::twenty_rules(1);
/// assert_eq!(r.judge(Hook::Forward, &Meta::default(), 0), Verdict::Accept);
/// ```
pub fn twenty_rules(seed: u64) -> Ruleset {
    let mut rng = Rng(seed.max(1));
    let mut rs = Nft::default();
    rs.chains
        .push(base_chain(IPV4, "filter", "forward", 2, 0, true));
    rs.chains.push(chain(IPV4, "filter", "mgmt"));
    let blocked: Vec<Vec<u8>> = (0..1000)
        .map(|_| (0xc000_0000 | rng.next_u32() >> 2).to_be_bytes().to_vec())
        .collect();
    rs.sets.push(set(IPV4, "filter", "blocklist", blocked));
    let (drop, accept) = (|| verdict(0, None), || verdict(1, None));
    let r: Vec<Vec<Expr>> = vec![
        vec![
            payload(1, 12, 4),
            lookup("blocklist", false),
            counter(),
            drop(),
        ],
        [proto(6), dport(22), vec![verdict(-3, Some("mgmt"))]].concat(),
        [proto(6), dport(80), vec![accept()]].concat(),
        [proto(6), dport(443), vec![accept()]].concat(),
        [proto(17), dport(53), vec![accept()]].concat(),
        [
            proto(17),
            dport(123),
            prefix(12, [10, 1, 0, 0], 16),
            vec![accept()],
        ]
        .concat(),
        [
            proto(17),
            vec![
                payload(2, 2, 2),
                range(0, &6000u16.to_be_bytes(), &6999u16.to_be_bytes()),
            ],
            vec![reject(0, 10)],
        ]
        .concat(),
        [proto(17), dport(5555), vec![reject(0, 13)]].concat(),
        [proto(6), dport(23), vec![reject(1, 0)]].concat(),
        [
            proto(1),
            vec![payload(2, 0, 1), cmp(0, &[8])],
            vec![accept()],
        ]
        .concat(),
        [
            proto(1),
            vec![payload(2, 0, 1), cmp(0, &[13])],
            vec![drop()],
        ]
        .concat(),
        vec![payload(1, 8, 1), cmp(2, &[2]), drop()],
        vec![payload(1, 1, 1), bitwise(&[0xfc]), cmp(0, &[0xb8]), drop()],
        vec![
            payload(1, 2, 2),
            cmp(4, &1400u16.to_be_bytes()),
            payload(1, 9, 1),
            cmp(0, &[17]),
            drop(),
        ],
        [
            vec![meta(6), cmp(0, b"eth1\0\0\0\0\0\0\0\0\0\0\0\0")],
            prefix(12, [10, 1, 0, 0], 16),
            vec![drop()],
        ]
        .concat(),
        [prefix(16, [192, 168, 0, 0], 16), vec![drop()]].concat(),
        [prefix(12, [172, 16, 0, 0], 12), vec![drop()]].concat(),
        [
            proto(6),
            dport(3306),
            vec![
                payload(1, 12, 4),
                bitwise(&[255, 0, 0, 0]),
                cmp(1, &[10, 0, 0, 0]),
            ],
            vec![drop()],
        ]
        .concat(),
        [
            proto(17),
            vec![payload(2, 0, 2), cmp(0, &19u16.to_be_bytes())],
            vec![drop()],
        ]
        .concat(),
        [proto(47), vec![drop()]].concat(),
    ];
    assert_eq!(r.len(), 20);
    for (i, e) in r.into_iter().enumerate() {
        rs.rules
            .push(rule(IPV4, "filter", "forward", i as u64 + 1, e));
    }
    rs.rules.push(rule(
        IPV4,
        "filter",
        "mgmt",
        30,
        [prefix(12, [10, 1, 0, 0], 16), vec![verdict(1, None)]].concat(),
    ));
    rs.rules
        .push(rule(IPV4, "filter", "mgmt", 31, vec![verdict(0, None)]));
    let ports = [
        Iface {
            name: "eth0".into(),
            ifindex: 10,
        },
        Iface {
            name: "eth1".into(),
            ifindex: 11,
        },
    ];
    let r = compile(&rs, &ports);
    assert!(
        r.active(Hook::Forward) && r.kernel_hooks == 0,
        "{:?}",
        r.kernel_reasons
    );
    r.with_counters(1, &[])
}
