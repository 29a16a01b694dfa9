//! The Internet checksum of an IPv4 header and of a full-size packet.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use std::time::Duration;
use xdpip::wire::checksum::checksum;

fn checksums(c: &mut Criterion) {
    let mut g = c.benchmark_group("checksum");
    for len in [20usize, 1500] {
        let data: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_function(format!("{len}_bytes"), |b| {
            b.iter(|| checksum(black_box(&data)))
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = checksums
}
criterion_main!(benches);
