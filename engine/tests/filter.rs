//! The packet filter's compiler against the kernel's own encoding: rules
//! are loaded with `nft -f` (and iptables) into a namespace, read back
//! over netlink and compiled, and packets are judged. The wire-level
//! comparison with the kernel is `filter_differential.rs`.
//!
//! Needs root: `cargo xtask test`.

use std::net::Ipv4Addr;
use testbed::{in_ns, require_root, Netns};
use xdpip::control::filter as watch;
use xdpip::filter::compile::Iface;
use xdpip::filter::{Hook, Meta, Reject, Ruleset, Verdict, NO_IFACE};

/// A namespace with eth0 and eth1 (veth pairs to p0 and p1, all inside).
fn ns() -> Netns {
    let n = Netns::new("filter").unwrap();
    for (a, b) in [("eth0", "p0"), ("eth1", "p1")] {
        n.ip(&["link", "add", a, "type", "veth", "peer", "name", b])
            .unwrap();
        n.ip(&["link", "set", a, "up"]).unwrap();
    }
    n
}

fn load(n: &Netns, rules: &str) {
    let path = std::env::temp_dir().join(format!("xdpip-filter-{}.nft", std::process::id()));
    std::fs::write(&path, rules).unwrap();
    let r = n.exec(&["nft", "-f", path.to_str().unwrap()]);
    let _ = std::fs::remove_file(&path);
    r.unwrap();
}

fn compiled(n: &Netns) -> std::sync::Arc<Ruleset> {
    in_ns(n.name(), || {
        let ifaces: Vec<Iface> = ["eth0", "eth1"]
            .iter()
            .map(|name| {
                let c = std::ffi::CString::new(*name).unwrap();
                // SAFETY: a valid C string.
                let ifindex = unsafe { libc::if_nametoindex(c.as_ptr()) };
                Iface {
                    name: name.to_string(),
                    ifindex,
                }
            })
            .collect();
        // With the counters of one worker.
        watch::Shared::new(watch::read(&ifaces).expect("ruleset read"), 1).current()
    })
}

/// A UDP packet from `src` to `dst`, ports `sport` → `dport`, eth0 → eth1.
fn udp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Meta {
    Meta {
        iif: 0,
        oif: 1,
        src: u32::from(Ipv4Addr::from(src)),
        dst: u32::from(Ipv4Addr::from(dst)),
        proto: 17,
        tos: 0,
        ttl: 63,
        len: 60,
        l4: Some((sport as u32) << 16 | dport as u32),
    }
}

fn with(mut m: Meta, f: impl FnOnce(&mut Meta)) -> Meta {
    f(&mut m);
    m
}

const RULES: &str = r#"
table ip t {
  set blocked { type ipv4_addr; flags interval; elements = { 10.9.0.0/16, 192.0.2.1, 198.51.100.1-198.51.100.9 } }
  set ports { type inet_service; elements = { 53, 123 } }
  chain fw {
    type filter hook forward priority 0; policy accept;
    iifname "eth0" ip saddr @blocked counter drop
    iif "eth0" tcp dport { 22, 80-90 } reject with tcp reset
    udp dport @ports reject with icmp type host-prohibited
    ip daddr 10.2.0.0/24 udp dport 5555 reject with icmp type admin-prohibited
    udp dport != 1000-2000 jump sub
    icmp type echo-request icmp code 0 accept
    ip ttl < 5 ip length > 100 drop
    ip dscp cs1 drop
    oifname "eth1" udp dport 1500 drop
  }
  chain sub {
    ip saddr { 1.2.3.4, 5.6.7.0/24 } return
    udp sport 7 goto sub2
  }
  chain sub2 {
    reject with icmp type admin-prohibited
  }
}
table inet t2 {
  chain early {
    type filter hook forward priority -10; policy accept;
    udp dport 4444 drop
    meta nfproto ipv6 drop
  }
}
"#;

#[test]
fn compiled_rules_judge_as_nft_reads() {
    require_root();
    let n = ns();
    load(&n, RULES);
    let r = compiled(&n);
    assert_eq!(r.kernel_hooks, 0, "{:?}", r.kernel_reasons);
    assert!(r.active(Hook::Forward));
    assert!(!r.active(Hook::Input) && !r.active(Hook::Prerouting));
    let j = |m: Meta| r.judge(Hook::Forward, &m, 0);
    let plain = udp([10, 1, 0, 1], [10, 2, 0, 2], 40000, 9);
    assert_eq!(j(plain), Verdict::Accept);
    // Named interval set, by input interface name.
    for src in [[10, 9, 1, 1], [192, 0, 2, 1], [198, 51, 100, 5]] {
        assert_eq!(
            j(with(plain, |m| m.src = u32::from(Ipv4Addr::from(src)))),
            Verdict::Drop
        );
        assert_eq!(
            j(with(plain, |m| {
                m.src = u32::from(Ipv4Addr::from(src));
                m.iif = 1;
                m.oif = 0;
            })),
            Verdict::Accept,
            "{src:?} from eth1"
        );
    }
    assert_eq!(
        j(with(plain, |m| m.src =
            u32::from(Ipv4Addr::new(198, 51, 100, 10)))),
        Verdict::Accept
    );
    // Anonymous set with a range, TCP only, by input interface index.
    let tcp = with(plain, |m| m.proto = 6);
    for (port, v) in [
        (22, Verdict::Reject(Reject::TcpReset)),
        (85, Verdict::Reject(Reject::TcpReset)),
        (91, Verdict::Accept),
        (53, Verdict::Accept),
    ] {
        assert_eq!(
            j(with(tcp, |m| m.l4 = Some(40000 << 16 | port))),
            v,
            "tcp {port}"
        );
    }
    // Named set of ports.
    assert_eq!(
        j(with(plain, |m| m.l4 = Some(40000 << 16 | 53))),
        Verdict::Reject(Reject::Icmp(10))
    );
    assert_eq!(
        j(with(plain, |m| m.l4 = Some(40000 << 16 | 5555))),
        Verdict::Reject(Reject::Icmp(13))
    );
    assert_eq!(
        j(with(plain, |m| {
            m.l4 = Some(40000 << 16 | 5555);
            m.dst = u32::from(Ipv4Addr::new(10, 3, 0, 1));
        })),
        Verdict::Accept
    );
    // jump, return, goto.
    assert_eq!(
        j(with(plain, |m| m.l4 = Some(7 << 16 | 9))),
        Verdict::Reject(Reject::Icmp(13))
    );
    assert_eq!(
        j(with(plain, |m| {
            m.l4 = Some(7 << 16 | 9);
            m.src = u32::from(Ipv4Addr::new(5, 6, 7, 8));
        })),
        Verdict::Accept
    );
    // `udp dport != 1000-2000`: not for a fragment without ports.
    assert_eq!(j(with(plain, |m| m.l4 = None)), Verdict::Accept);
    // `ip ttl < 5 ip length > 100`, which nft 1.0.6 lists wrongly.
    let t = with(tcp, |m| m.l4 = Some(40000 << 16 | 9999));
    assert_eq!(
        j(with(t, |m| {
            m.ttl = 3;
            m.len = 200;
        })),
        Verdict::Drop
    );
    assert_eq!(
        j(with(t, |m| {
            m.ttl = 10;
            m.len = 200;
        })),
        Verdict::Accept
    );
    assert_eq!(
        j(with(t, |m| {
            m.ttl = 3;
            m.len = 100;
        })),
        Verdict::Accept
    );
    // DSCP on the TOS byte, ECN bits aside.
    assert_eq!(j(with(t, |m| m.tos = 0x20)), Verdict::Drop);
    assert_eq!(j(with(t, |m| m.tos = 0x23)), Verdict::Drop);
    assert_eq!(j(with(t, |m| m.tos = 0x24)), Verdict::Accept);
    // Output interface name; a base chain of higher priority runs first.
    assert_eq!(
        j(with(plain, |m| m.l4 = Some(40000 << 16 | 1500))),
        Verdict::Drop
    );
    assert_eq!(
        j(with(plain, |m| {
            m.l4 = Some(40000 << 16 | 1500);
            m.oif = NO_IFACE;
        })),
        Verdict::Accept
    );
    assert_eq!(
        j(with(plain, |m| m.l4 = Some(40000 << 16 | 4444))),
        Verdict::Drop
    );
    // ICMP type and code.
    let echo = with(plain, |m| {
        m.proto = 1;
        m.l4 = Some(0x0800_0000);
    });
    assert_eq!(j(echo), Verdict::Accept);
    // Counters: the first rule counted the three blocked packets.
    let totals = r.totals();
    let first = r.rules.iter().position(|i| i.chain == "fw").unwrap();
    assert_eq!(totals[first], (3, 180));
}

#[test]
fn what_the_engine_cannot_compile_goes_to_the_kernel_with_the_reason() {
    require_root();
    let n = ns();
    load(
        &n,
        r#"
table inet f {
  chain in {
    type filter hook input priority 0; policy accept;
    ct state established,related accept
    udp dport 53 accept
  }
  chain out {
    type filter hook output priority 0; policy accept;
    meta mark 7 drop
  }
  chain fw {
    type filter hook forward priority 0; policy drop;
    udp dport 9 accept
  }
  set dyn { type ipv4_addr; flags dynamic,timeout; timeout 1m; }
  chain pre {
    type filter hook prerouting priority 0; policy accept;
    ip saddr @dyn drop
  }
}
table ip nat {
  chain post {
    type nat hook postrouting priority 100; policy accept;
    oifname "eth1" masquerade
  }
}
"#,
    );
    let r = compiled(&n);
    let want =
        Hook::Input.bit() | Hook::Output.bit() | Hook::Prerouting.bit() | Hook::Postrouting.bit();
    assert_eq!(r.kernel_hooks, want, "{:#?}", r.kernel_reasons);
    let all = r.kernel_reasons.join("\n");
    assert!(
        all.contains("input: inet f in handle") && all.contains("ct (connection tracking)"),
        "{all}"
    );
    assert!(all.contains("meta mark"), "{all}");
    assert!(all.contains("updated from the packet path"), "{all}");
    assert!(
        all.contains("postrouting: ip nat post: a nat chain"),
        "{all}"
    );
    // Forward is compiled: policy drop, one accept.
    assert!(!r.kernel(Hook::Forward));
    let m = udp([10, 1, 0, 1], [10, 2, 0, 2], 1, 9);
    assert_eq!(r.judge(Hook::Forward, &m, 0), Verdict::Accept);
    assert_eq!(
        r.judge(Hook::Forward, &with(m, |m| m.l4 = Some(1 << 16 | 10)), 0),
        Verdict::Drop
    );
}

#[test]
fn iptables_nft_rules_compile_and_legacy_rules_go_to_the_kernel() {
    require_root();
    let n = ns();
    n.exec(&[
        "iptables-nft",
        "-A",
        "FORWARD",
        "-p",
        "udp",
        "--dport",
        "7777",
        "-j",
        "DROP",
    ])
    .unwrap();
    n.exec(&[
        "iptables-nft",
        "-A",
        "FORWARD",
        "-s",
        "10.5.0.0/16",
        "-j",
        "DROP",
    ])
    .unwrap();
    let r = compiled(&n);
    assert_eq!(r.kernel_hooks, 0, "{:?}", r.kernel_reasons);
    let m = udp([10, 1, 0, 1], [10, 2, 0, 2], 1, 7777);
    assert_eq!(r.judge(Hook::Forward, &m, 0), Verdict::Drop);
    assert_eq!(
        r.judge(Hook::Forward, &with(m, |m| m.l4 = Some(1 << 16 | 7778)), 0),
        Verdict::Accept
    );
    assert_eq!(
        r.judge(
            Hook::Forward,
            &with(m, |m| {
                m.l4 = Some(1 << 16 | 7778);
                m.src = u32::from(Ipv4Addr::new(10, 5, 3, 3));
            }),
            0
        ),
        Verdict::Drop
    );
    // REJECT is an xt target: the kernel's.
    n.exec(&["iptables-nft", "-A", "INPUT", "-p", "udp", "-j", "REJECT"])
        .unwrap();
    let r = compiled(&n);
    assert_eq!(r.kernel_hooks, Hook::Input.bit(), "{:?}", r.kernel_reasons);
    assert!(
        r.kernel_reasons[0].contains("iptables (xt) extension"),
        "{:?}",
        r.kernel_reasons
    );

    // Legacy: an empty table changes nothing; a rule or a DROP policy does.
    let n = ns();
    n.exec(&["iptables-legacy", "-L", "-n"]).unwrap();
    assert_eq!(compiled(&n).kernel_hooks, 0);
    n.exec(&[
        "iptables-legacy",
        "-A",
        "FORWARD",
        "-p",
        "udp",
        "--dport",
        "9",
        "-j",
        "DROP",
    ])
    .unwrap();
    n.exec(&["iptables-legacy", "-P", "INPUT", "DROP"]).unwrap();
    let r = compiled(&n);
    assert_eq!(
        r.kernel_hooks,
        Hook::Forward.bit() | Hook::Input.bit(),
        "{:?}",
        r.kernel_reasons
    );
    assert!(
        r.kernel_reasons
            .iter()
            .any(|w| w == "forward: legacy iptables table filter: rules"),
        "{:?}",
        r.kernel_reasons
    );
    assert!(
        r.kernel_reasons
            .iter()
            .any(|w| w == "input: legacy iptables table filter: policy DROP"),
        "{:?}",
        r.kernel_reasons
    );
}
