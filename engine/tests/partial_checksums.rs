//! The forwarding decision with partial checksums (no root needed): a
//! veth-like ingress port gets them completed and counted, a physical one
//! never does, and a packet to be fragmented is completed first.

use std::net::Ipv4Addr;
use std::sync::Arc;
use xdpip::fib::{Fib, NextHop, Route, RouteKind};
use xdpip::forward::{forward, forward_batch, Step, Verdict};
use xdpip::neigh::{nud, NeighTable, Neighbour};
use xdpip::snapshot::{Port, Snapshot};
use xdpip::stats::{Checksum, WorkerCounters};
use xdpip::wire::l4csum::pseudo_header_sum;
use xdpip::wire::{checksum, ipv4, MacAddr};

const SRC: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);
const DST: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 2);

/// eth0 (ingress, `partial` as given) and eth1 (MTU `mtu`) towards DST.
fn snapshot(partial: bool, mtu: u32) -> Snapshot {
    let mut snap = Snapshot::default();
    for (i, name) in ["eth0", "eth1"].iter().enumerate() {
        snap.ports.push(Port {
            name: name.to_string(),
            ifindex: 10 + i as u32,
            mac: MacAddr([2, 0, 0, 0, 0, i as u8]),
            mtu: if i == 1 { mtu } else { 1500 },
            partial_csum: i == 0 && partial,
            ..Port::default()
        });
    }
    let mut fib = Fib::builder();
    fib.add(Route {
        prefix: Ipv4Addr::new(10, 2, 0, 0),
        len: 24,
        kind: RouteKind::Unicast,
        metric: 0,
        nexthops: vec![NextHop {
            gateway: None,
            ifindex: 11,
            weight: 1,
        }]
        .into(),
    })
    .unwrap();
    snap.fib = Arc::new(fib.build());
    let mut neigh = NeighTable::default();
    neigh.insert(
        11,
        DST,
        Neighbour {
            mac: MacAddr([2, 0, 0, 0, 9, 9]),
            state: nud::REACHABLE,
        },
    );
    Snapshot::new(snap.fib, Arc::new(neigh), snap.ports, snap.sysctl)
}

/// A frame to eth0 carrying `l4` of `protocol`, its checksum field holding
/// the pseudo-header sum, as a sender that offloads leaves it.
fn offloaded(protocol: u8, mut l4: Vec<u8>) -> Vec<u8> {
    let at = if protocol == 17 { 6 } else { 16 };
    let p = pseudo_header_sum(SRC, DST, protocol, l4.len());
    l4[at..at + 2].copy_from_slice(&p.to_be_bytes());
    let mut f = vec![0u8; 14 + 20];
    f[..6].copy_from_slice(&[2, 0, 0, 0, 0, 0]);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    let repr = ipv4::Repr {
        src: SRC,
        dst: DST,
        protocol,
        ttl: 64,
        payload_len: l4.len(),
        ..ipv4::Repr::default()
    };
    repr.emit(&mut ipv4::Packet::new_unchecked(&mut f[14..]));
    f.extend_from_slice(&l4);
    f
}

fn udp(payload: &[u8]) -> Vec<u8> {
    let mut d = vec![0x9c, 0x40, 0x00, 0x35, 0, 0, 0, 0];
    d[4..6].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    d.extend_from_slice(payload);
    d
}

fn tcp(payload: &[u8]) -> Vec<u8> {
    let mut t = vec![0u8; 20];
    t[0..2].copy_from_slice(&40000u16.to_be_bytes());
    t[2..4].copy_from_slice(&5201u16.to_be_bytes());
    t[12] = 5 << 4;
    t[13] = 0x18;
    t.extend_from_slice(payload);
    t
}

/// The L4 checksum of the IP packet in `frame` verifies.
fn l4_ok(frame: &[u8]) -> bool {
    let ip = &frame[14..];
    let total = u16::from_be_bytes([ip[2], ip[3]]) as usize;
    let seg = &ip[20..total];
    let pseudo = u32::from(SRC) as u64 + u32::from(DST) as u64 + ip[9] as u64 + seg.len() as u64;
    checksum::fold(checksum::sum(pseudo, seg)) == 0xffff
}

/// This thread's completed count since the last call.
fn completed() -> u64 {
    let c = WorkerCounters::new(2, 0);
    c.take_tally();
    c.checksums[Checksum::PartialCompleted as usize].get()
}

#[test]
fn a_veth_ports_partial_checksums_are_completed_and_counted() {
    let snap = snapshot(true, 1500);
    completed();
    for mut f in [
        offloaded(17, udp(b"a query of a few bytes")),
        offloaded(6, tcp(&[0x5a; 1000])),
    ] {
        assert!(!l4_ok(&f));
        assert!(matches!(
            forward(&mut f, 0, &snap, 0),
            Verdict::Transmit { port: 1, .. }
        ));
        assert!(l4_ok(&f), "not completed");
    }
    assert_eq!(completed(), 2);
}

#[test]
fn the_vector_path_completes_them_too() {
    let snap = snapshot(true, 1500);
    completed();
    let mut a = offloaded(17, udp(b"a query of a few bytes"));
    let mut b = offloaded(6, tcp(&[0x5a; 1000]));
    let mut out = [Step::Slow; 2];
    let n = forward_batch(
        &mut [&mut a[..], &mut b[..]][..],
        0,
        &snap,
        &mut (),
        &mut out,
    );
    assert_eq!(n, 2, "{out:?}");
    assert!(l4_ok(&a) && l4_ok(&b), "not completed");
    assert_eq!(completed(), 2);
    // From a physical port the vector path leaves them as they are.
    let snap = snapshot(false, 1500);
    let mut c = offloaded(17, udp(b"from a wire"));
    assert_eq!(
        forward_batch(&mut [&mut c[..]][..], 0, &snap, &mut (), &mut out),
        1
    );
    assert!(!l4_ok(&c));
    assert_eq!(completed(), 0);
}

#[test]
fn a_physical_ports_frames_are_never_touched() {
    // The same bytes from a NIC: a wire never carries a partial checksum,
    // so this is a wrong one, forwarded as it is for the receiver to drop.
    let snap = snapshot(false, 1500);
    completed();
    let mut f = offloaded(17, udp(b"from a wire"));
    let before = f[14 + 20..].to_vec();
    assert!(matches!(
        forward(&mut f, 0, &snap, 0),
        Verdict::Transmit { .. }
    ));
    assert_eq!(f[14 + 20..], before[..]);
    assert!(!l4_ok(&f));
    assert_eq!(completed(), 0);
}

#[test]
fn a_packet_to_be_fragmented_is_completed_first() {
    let snap = snapshot(true, 1400);
    completed();
    let mut f = offloaded(17, udp(&[7u8; 1472]));
    assert_eq!(
        forward(&mut f, 0, &snap, 0),
        Verdict::Fragment { port: 1, mtu: 1400 }
    );
    assert!(l4_ok(&f), "fragments would carry an unfinished checksum");
    assert_eq!(completed(), 1);
}
