//! Low-precision kernels against their f32 baselines on Wan2.1-1.3B shapes:
//! - the FFN's two linear layers at 1000 tokens (1536 → 8960 and 8960 → 1536): f32 GEMM (as
//!   `Linear` runs it), W8A8 on every available instruction set, W8A16, emulated FP8;
//! - self-attention at 1 × 4096 tokens × 12 heads × 128: f32 attention vs 8-bit attention;
//! - a GGUF Q8_0 weight on the same FFN shapes and the attention projection (1536 → 1536):
//!   decoded into the streamed f32 product (how `Linear` runs GGUF by default), run directly by
//!   the block-scaled int8 kernels (`--gguf-int8`) on every available path, and the f32 packed
//!   product for scale.
//!
//! `cargo bench -p wanrt-nn --bench quant` (a few minutes; flat sampling, 10 samples). Ratios are
//! only meaningful within one run; results are recorded in `bench/results/quant-kernels.md`.
//! `QUANT_BENCH_ATTN_L=1024` shortens the attention case on slow machines.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode};
use std::hint::black_box;
use std::time::Duration;
use wanrt_nn::ops::attention::{attention, ScoreBias};
use wanrt_nn::ops::attention_quant::attention_quant_with;
use wanrt_nn::ops::matmul::{gemm_general, Layout};
use wanrt_nn::ops::packed::{gemm_packed, gemm_streamed, FloatIsa, PackedF32};
use wanrt_nn::quant::{
    gemm_fp8, gemm_q8_0_then, gemm_w8a16, gemm_w8a8_with, ActQuant, Fp8Matrix, Isa, PackedInt8, PackedQ8_0,
    QuantizedMatrix,
};
use wanrt_nn::HostTensor;

/// Deterministic pseudo-normal values (no RNG dependency in the timing loop).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            let mut acc = 0.0f32;
            for _ in 0..3 {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                acc += ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5;
            }
            acc * 2.0
        })
        .collect()
}

/// The non-scalar paths this machine has (the scalar reference is far too slow to time here).
fn simd_paths() -> Vec<Isa> {
    Isa::available().into_iter().filter(|&i| i != Isa::Scalar).collect()
}

fn configure<'a>(c: &'a mut Criterion, name: &str) -> criterion::BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let mut g = c.benchmark_group(name);
    g.sampling_mode(SamplingMode::Flat).sample_size(10).warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(4));
    g
}

fn linear(c: &mut Criterion) {
    let m = 1000;
    for (name, k, n) in [("ffn_up_1000x1536x8960", 1536, 8960), ("ffn_down_1000x8960x1536", 8960, 1536)] {
        let x = values(m * k, 1);
        let w = values(n * k, 2);
        let bias = values(n, 3);
        let q = QuantizedMatrix::quantize_per_row_symmetric(&w, n, k);
        let packed = PackedInt8::from_quantized(&q);
        let fp8 = Fp8Matrix::quantize_per_channel(&w, n, k);
        let mut out = vec![0.0f32; m * n];
        let mut g = configure(c, name);
        g.bench_function("f32", |bch| {
            bch.iter(|| {
                gemm_general(&mut out, n, &x, Layout::row_major(k), &w, Layout { rs: 1, cs: k }, m, n, k, false, false);
                black_box(&out);
            })
        });
        for isa in simd_paths() {
            g.bench_function(BenchmarkId::new("w8a8", isa.name()), |bch| {
                bch.iter(|| {
                    gemm_w8a8_with(isa, &x, m, k, &packed, ActQuant::PerToken, None, Some(&bias), &mut out);
                    black_box(&out);
                })
            });
        }
        g.bench_function("w8a16", |bch| {
            bch.iter(|| {
                gemm_w8a16(&x, m, k, &q, Some(&bias), &mut out);
                black_box(&out);
            })
        });
        g.bench_function("fp8_emulated", |bch| {
            bch.iter(|| {
                gemm_fp8(&x, m, k, &fp8, ActQuant::PerToken, Some(&bias), &mut out);
                black_box(&out);
            })
        });
        g.finish();
    }
}

fn attn(c: &mut Criterion) {
    let l: usize = std::env::var("QUANT_BENCH_ATTN_L").ok().and_then(|s| s.parse().ok()).unwrap_or(4096);
    let (b, h, d) = (1, 12, 128);
    let t = |seed| HostTensor::new([b, l, h, d], values(b * l * h * d, seed)).unwrap();
    let (q, k, v) = (t(4), t(5), t(6));
    let scale = 1.0 / (d as f32).sqrt();
    let mut g = configure(c, &format!("attention_1x{l}x12x128"));
    g.bench_function("f32", |bch| bch.iter(|| black_box(attention(&q, &k, &v, scale, ScoreBias::default()).unwrap())));
    for isa in simd_paths() {
        g.bench_function(BenchmarkId::new("int8", isa.name()), |bch| {
            bch.iter(|| black_box(attention_quant_with(isa, &q, &k, &v, scale).unwrap()))
        });
    }
    g.finish();
}

/// `[n, k]` in Q8_0 blocks (f16 `absmax/127`, then 32 codes), as ggml's quantizer writes them.
fn q8_0_blocks(w: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(w.len() / 32 * 34);
    for b in w.chunks_exact(32) {
        let d = b.iter().fold(0.0f32, |m, v| m.max(v.abs())) / 127.0;
        let id = if d > 0.0 { 1.0 / d } else { 0.0 };
        out.extend(half::f16::from_f32(d).to_le_bytes());
        out.extend(b.iter().map(|&v| (v * id).round() as i8 as u8));
    }
    out
}

fn q8_0(c: &mut Criterion) {
    let m = 1000;
    let shapes = [
        ("qkv_1000x1536x1536", 1536, 1536),
        ("ffn_up_1000x1536x8960", 1536, 8960),
        ("ffn_down_1000x8960x1536", 8960, 1536),
    ];
    for (name, k, n) in shapes {
        let x = values(m * k, 1);
        let w = values(n * k, 2);
        let bias = values(n, 3);
        let blocks = q8_0_blocks(&w);
        let row_bytes = k / 32 * 34;
        let row = |j: usize| &blocks[j * row_bytes..(j + 1) * row_bytes];
        let packed = PackedQ8_0::from_blocks(row, n, k).expect("ggml never writes -128");
        let decode = |j: usize, dst: &mut [f32]| wanrt_nn::quant::ggml::dequantize(wanrt_nn::DType::Q8_0, row(j), dst);
        let f32_packed = PackedF32::pack(decode, n, k);
        let mut out = vec![0.0f32; m * n];
        let mut g = configure(c, &format!("q8_0_{name}"));
        g.bench_function("f32_packed", |bch| {
            bch.iter(|| {
                gemm_packed(&x, m, &f32_packed, Some(&bias), |v| v, &mut out);
                black_box(&out);
            })
        });
        g.bench_function("decoded_streamed", |bch| {
            bch.iter(|| {
                gemm_streamed(FloatIsa::detect(), &x, m, [n, k], decode, Some(&bias), |v| v, &mut out);
                black_box(&out);
            })
        });
        for isa in simd_paths() {
            g.bench_function(BenchmarkId::new("int8_blocks", isa.name()), |bch| {
                bch.iter(|| {
                    gemm_q8_0_then(isa, &x, m, k, &packed, Some(&bias), |v| v, &mut out);
                    black_box(&out);
                })
            });
        }
        g.finish();
    }
}

criterion_group!(benches, linear, attn, q8_0);
criterion_main!(benches);
