//! The Internet checksum of an IPv4 header and of a full-size packet;
//! batched header verification against one header at a time; the vector
//! sum of long buffers against the scalar one.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use std::time::Duration;
use xdpip::wire::checksum::{checksum, fast_sum, fold, sum, verify_headers};

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

/// 64 headers, the worker's receive batch, one in eight with a bad checksum.
fn header_batch(c: &mut Criterion) {
    let mut store = Vec::new();
    for i in 0..64u32 {
        let mut h: Vec<u8> = (0..20u32).map(|j| (i * 31 + j * 7) as u8).collect();
        h[0] = 0x45;
        h[10] = 0;
        h[11] = 0;
        let c = checksum(&h);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        if i % 8 == 0 {
            h[8] ^= 1;
        }
        // Frames sit at 14 bytes into their buffers: the IP header is not
        // aligned.
        let mut frame = vec![0u8; 14];
        frame.extend_from_slice(&h);
        store.push(frame);
    }
    let headers: Vec<&[u8]> = store.iter().map(|f| &f[14..]).collect();
    let mut out = [false; 64];
    let mut g = c.benchmark_group("header_checksum_64");
    g.throughput(Throughput::Elements(64));
    g.bench_function("one_at_a_time", |b| {
        b.iter(|| {
            for (h, o) in black_box(&headers).iter().zip(out.iter_mut()) {
                *o = checksum(h) == 0;
            }
            black_box(&out);
        })
    });
    g.bench_function("batched", |b| {
        b.iter(|| {
            verify_headers(black_box(&headers), &mut out);
            black_box(&out);
        })
    });
    g.finish();
}

fn long_sum(c: &mut Criterion) {
    let mut g = c.benchmark_group("sum");
    for len in [64usize, 1472, 9000, 65507] {
        let data: Vec<u8> = (0..len + 1).map(|i| (i * 13 + 5) as u8).collect();
        // Odd start: a UDP payload after 14 + 20 + 8 bytes is 2-aligned at
        // best; this is worse.
        let d = &data[1..];
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_function(format!("scalar_{len}"), |b| {
            b.iter(|| fold(sum(0, black_box(d))))
        });
        g.bench_function(format!("simd_{len}"), |b| {
            b.iter(|| fold(fast_sum(0, black_box(d))))
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = checksums, header_batch, long_sum
}
criterion_main!(benches);
