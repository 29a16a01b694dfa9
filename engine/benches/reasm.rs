//! Reassembly of datagrams of 2, 3 and 45 fragments of 1480 bytes (the
//! last shorter), in order and in reverse; time per datagram, so ns per
//! fragment is the time divided by the count.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;
use std::net::Ipv4Addr;
use std::time::Duration;
use xdpip::reasm::check::Spec;
use xdpip::reasm::{Config, Key, Outcome, Reassembler, MAX_DATA};

fn fragments(data_len: u32) -> Vec<Vec<u8>> {
    let key = Key::new(
        Ipv4Addr::new(192, 0, 2, 1),
        Ipv4Addr::new(198, 51, 100, 2),
        17,
        7,
    );
    let mut v = Vec::new();
    let mut off = 0u32;
    while off < data_len {
        let len = 1480.min(data_len - off);
        v.push(
            Spec {
                key,
                offset: off as u16,
                len: len as u16,
                more: off + len < data_len,
                dont_frag: false,
                tos: 0,
                option_words: 0,
            }
            .build(),
        );
        off += len;
    }
    v
}

fn reassembly(c: &mut Criterion) {
    let mut g = c.benchmark_group("reasm");
    let mut r = Reassembler::new(Config::linux(0x5eed));
    for (n, data_len) in [(2usize, 2960u32), (3, 4000), (45, MAX_DATA)] {
        let frags = fragments(data_len);
        assert_eq!(frags.len(), n);
        let mut rev = frags.clone();
        rev.reverse();
        g.throughput(Throughput::Elements(n as u64));
        for (order, set) in [("in_order", &frags), ("reverse", &rev)] {
            g.bench_with_input(BenchmarkId::new(order, n), set, |b, set| {
                b.iter(|| {
                    let mut len = 0;
                    for f in set.iter() {
                        if let Outcome::Ready(d) = r.insert(0, black_box(f)) {
                            len = d.len();
                        }
                    }
                    assert_eq!(len, 20 + data_len as usize);
                })
            });
        }
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = reassembly
}
criterion_main!(benches);
