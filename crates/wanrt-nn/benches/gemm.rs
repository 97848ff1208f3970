//! The f32 products of linear layers on Wan2.1-1.3B shapes (1000 tokens: a CFG pair of a
//! 17×160×160 video): the general GEMM (`gemm` crate, repacks the weight every call) against the
//! GEMM on weights packed at load (`ops::packed`) on every available path, the same GEMM on
//! weights streamed from where they are stored (`--no-prepack`: packed block by block inside each
//! product, from f32 or bf16 rows), and the bf16 pair product of `--dtype bf16` (`vdpbf16ps`
//! where the CPU has AVX-512 BF16, widening elsewhere).
//!
//! `cargo bench -p wanrt-nn --bench gemm` (about a minute; flat sampling, 10 samples). Ratios are
//! only meaningful within one run; `GEMM_BENCH_THREADS` sets the rayon pool (default 2).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput};
use std::hint::black_box;
use std::time::Duration;
use wanrt_nn::ops::matmul::{gemm_general, Layout};
use wanrt_nn::ops::packed::{gemm_bf16, gemm_packed_with, gemm_streamed, FloatIsa, PackedBf16, PackedF32};

fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        })
        .collect()
}

fn products(c: &mut Criterion) {
    let threads = std::env::var("GEMM_BENCH_THREADS").ok().and_then(|s| s.parse().ok()).unwrap_or(2);
    let _ = rayon::ThreadPoolBuilder::new().num_threads(threads).build_global();
    let m = 1000;
    for (name, k, n) in [
        ("qkv_1000x1536x4608", 1536, 4608),
        ("ffn_up_1000x1536x8960", 1536, 8960),
        ("ffn_down_1000x8960x1536", 8960, 1536),
    ] {
        let x = values(m * k, 1);
        let w = values(n * k, 2);
        let bias = values(n, 3);
        let packed = PackedF32::from_rows(&w, n, k);
        let packed_bf16 = PackedBf16::from_rows(&w, n, k);
        let mut out = vec![0.0f32; m * n];
        let mut g = c.benchmark_group(name);
        g.sampling_mode(SamplingMode::Flat).sample_size(10).warm_up_time(Duration::from_secs(1));
        g.measurement_time(Duration::from_secs(4));
        g.throughput(Throughput::Elements((2 * m * n * k) as u64));
        g.bench_function("gemm_crate", |bch| {
            bch.iter(|| {
                gemm_general(&mut out, n, &x, Layout::row_major(k), &w, Layout { rs: 1, cs: k }, m, n, k, false, false);
                black_box(&out);
            })
        });
        let simd = FloatIsa::available().into_iter().filter(|&i| i != FloatIsa::Scalar);
        // The f32 kernels of Avx512Bf16 are Avx512's.
        for isa in simd.clone().filter(|&i| i != FloatIsa::Avx512Bf16) {
            g.bench_function(BenchmarkId::new("packed", isa.name()), |bch| {
                bch.iter(|| {
                    gemm_packed_with(isa, &x, m, &packed, Some(&bias), |v| v, &mut out);
                    black_box(&out);
                })
            });
        }
        let w_bf16: Vec<u16> = w.iter().map(|&v| half::bf16::from_f32(v).to_bits()).collect();
        let f32_row = |j: usize, dst: &mut [f32]| dst.copy_from_slice(&w[j * k..(j + 1) * k]);
        let bf16_row = |j: usize, dst: &mut [f32]| {
            dst.iter_mut().zip(&w_bf16[j * k..(j + 1) * k]).for_each(|(d, &b)| *d = f32::from_bits((b as u32) << 16))
        };
        let isa = FloatIsa::detect();
        g.bench_function(BenchmarkId::new("streamed_from_f32", isa.name()), |bch| {
            bch.iter(|| {
                gemm_streamed(isa, &x, m, [n, k], f32_row, Some(&bias), |v| v, &mut out);
                black_box(&out);
            })
        });
        g.bench_function(BenchmarkId::new("streamed_from_bf16", isa.name()), |bch| {
            bch.iter(|| {
                gemm_streamed(isa, &x, m, [n, k], bf16_row, Some(&bias), |v| v, &mut out);
                black_box(&out);
            })
        });
        for isa in simd {
            g.bench_function(BenchmarkId::new("bf16", isa.name()), |bch| {
                bch.iter(|| {
                    gemm_bf16(isa, &x, m, &packed_bf16, Some(&bias), |v| v, &mut out);
                    black_box(&out);
                })
            });
        }
        g.finish();
    }
}

criterion_group!(benches, products);
criterion_main!(benches);
