//! ggml's Q8_0 weights (GGUF checkpoints) run directly by the int8 kernels, as ggml's CPU backend
//! runs them: activations are quantized to int8 in blocks of 32 values along `k`, each block
//! with its own scale (`absmax / 127`), the integer kernels sum every 32-value block exactly in
//! `i32`, and each block sum enters an f32 accumulator scaled by the weight block's scale times
//! the activation block's: `out[i, j] = Σ_b Σ_{k∈b} a·w · (d_w[j, b] · d_x[i, b])`.
//!
//! Unlike ggml, activation scales stay f32 (ggml rounds them to f16), and every path sums the
//! blocks in the same order with the same f32 operations, so every [`Isa`] returns the bits of
//! [`Isa::Scalar`]. The weight is packed once from the file's blocks (codes in the kernels' panel
//! layout, scales widened to f32); the file's pages are then released.
//!
//! This is not the exact dequantized product (the activations are rounded to 8 bits); it is the
//! `--gguf-int8` choice of `wanrt generate`, and `bench/results/q8_0-direct-*.md` records where
//! it pays against decoding the blocks into the f32 product.

use super::int8::{absmax, fill_aux, pack_panels, quantize_into, scale_for, tiled, PanelCodes, QuantizedActs};
use super::kernels::{BlockSink, Sink, BLOCK, NR};
use super::Isa;
use crate::ops::SyncPtr;
use rayon::prelude::*;

/// Bytes of one Q8_0 block: an f16 scale, then 32 int8 codes.
const BLOCK_BYTES: usize = 34;

/// The 32 codes of one Q8_0 block's bytes.
fn block_codes(b: &[u8]) -> &[i8] {
    bytemuck::cast_slice(&b[2..BLOCK_BYTES])
}

/// A Q8_0 `[rows, cols]` weight packed for [`gemm_q8_0`].
#[derive(Debug, Clone)]
pub struct PackedQ8_0 {
    /// Output features `n`.
    pub rows: usize,
    /// Input features `k`, a multiple of 32.
    pub cols: usize,
    panels: usize,
    data: Vec<i8>,
    /// `d[j, b]` at `p·(16·blocks) + 16·b + c` for column `j = 16·p + c` (0 in padding columns):
    /// one vector per (panel, block), as the kernels' block sink reads it.
    scales: Vec<f32>,
    /// `128 · Σ_{k∈b} w[j, k]` in the layout of `scales`, for the VNNI paths' unsigned activations;
    /// built only where this CPU has such a path.
    comp: Option<Vec<i32>>,
}

impl PackedQ8_0 {
    /// Packs `n` rows of `k` values whose Q8_0 blocks row `j` returns (`k/32 · 34` bytes each).
    /// `None` when a code is −128: ggml's quantizer never writes it, and the AVX2 kernel's sign
    /// trick needs codes within ±127 (such a weight is run by decoding it instead).
    pub fn from_blocks<'a>(row: impl Fn(usize) -> &'a [u8] + Sync, n: usize, k: usize) -> Option<PackedQ8_0> {
        assert!(k.is_multiple_of(BLOCK), "Q8_0 rows hold whole blocks of {BLOCK}, got k = {k}");
        let blocks = k / BLOCK;
        let rows_ok = (0..n).into_par_iter().all(|j| {
            let bytes = row(j);
            bytes.len() == blocks * BLOCK_BYTES
                && bytes.chunks_exact(BLOCK_BYTES).all(|b| block_codes(b).iter().all(|&q| q != i8::MIN))
        });
        if !rows_ok {
            return None;
        }
        let (_, panels, data) = pack_panels(n, k, |j, dst| {
            for (d, b) in dst.chunks_exact_mut(BLOCK).zip(row(j).chunks_exact(BLOCK_BYTES)) {
                d.copy_from_slice(block_codes(b));
            }
        });
        // Per (panel, block): the 16 columns' values of `per_block(block bytes)`.
        let per_column_block = |value: &(dyn Fn(&[u8]) -> f32 + Sync)| {
            let mut out = vec![0.0f32; panels * blocks * NR];
            out.par_chunks_mut(blocks * NR).enumerate().for_each(|(p, panel)| {
                for c in 0..NR.min(n - p * NR) {
                    for (b, bytes) in row(p * NR + c).chunks_exact(BLOCK_BYTES).enumerate() {
                        panel[b * NR + c] = value(bytes);
                    }
                }
            });
            out
        };
        let scales = per_column_block(&|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32());
        let offsets = Isa::available().into_iter().any(Isa::offsets_activations);
        let comp = offsets.then(|| {
            // Block sums are at most 32·127 in magnitude: exact in f32, and 128× them in i32.
            let sums = per_column_block(&|b| block_codes(b).iter().map(|&q| q as f32).sum());
            sums.into_iter().map(|s| 128 * s as i32).collect()
        });
        Some(PackedQ8_0 { rows: n, cols: k, panels, data, scales, comp })
    }

    /// Bytes held (codes with padding columns, scales, compensation).
    pub fn bytes(&self) -> usize {
        self.data.len() + 4 * (self.scales.len() + self.comp.as_ref().map_or(0, Vec::len))
    }
}

/// Quantizes `x[m, k]` in blocks of 32 values along `k`: one scale per block (`absmax / 127`,
/// rounded half to even like every quantizer here), `scales` row-major `[m, k/32]`.
fn quantize_blocks(isa: Isa, x: &[f32], m: usize, k: usize) -> QuantizedActs {
    assert_eq!(x.len(), m * k, "x: expected m·k = {m}·{k} values");
    let blocks = k / BLOCK;
    let mut acts = QuantizedActs::zeroed(isa, m, k, m * blocks);
    if k > 0 {
        let aux_chunk = if acts.aux.is_empty() { 1 } else { k };
        let mut empty = vec![0u8; if acts.aux.is_empty() { m } else { 0 }];
        let aux_rows = if acts.aux.is_empty() { &mut empty[..] } else { &mut acts.aux[..] };
        acts.data
            .par_chunks_mut(k)
            .zip(aux_rows.par_chunks_mut(aux_chunk))
            .zip(x.par_chunks(k))
            .zip(acts.scales.par_chunks_mut(blocks))
            .for_each(|(((d, a), row), s)| {
                crate::ops::vectorized(|| {
                    for ((db, xb), s) in d.chunks_exact_mut(BLOCK).zip(row.chunks_exact(BLOCK)).zip(s.iter_mut()) {
                        let (scale, inv) = scale_for(absmax(xb));
                        *s = scale;
                        quantize_into(xb, inv, db);
                    }
                    fill_aux(isa, d, a);
                })
            });
    }
    acts
}

/// [`gemm_q8_0_then`] on the fastest path of this CPU, without an output function.
pub fn gemm_q8_0(x: &[f32], m: usize, k: usize, w: &PackedQ8_0, bias: Option<&[f32]>, out: &mut [f32]) {
    gemm_q8_0_then(Isa::detect(), x, m, k, w, bias, |v| v, out)
}

/// `out[m, n] = post(Σ_b (Q_b(x) · W_bᵀ) · d_w · d_x (+ bias))`: activations quantized per
/// 32-value block, each block's exact integer sum scaled into an f32 accumulator (module docs),
/// bias and `post` applied in the output pass. Panics on size mismatches or an unavailable `isa`.
#[allow(clippy::too_many_arguments)]
pub fn gemm_q8_0_then(
    isa: Isa,
    x: &[f32],
    m: usize,
    k: usize,
    w: &PackedQ8_0,
    bias: Option<&[f32]>,
    post: impl Fn(f32) -> f32 + Sync + Copy,
    out: &mut [f32],
) {
    let n = w.rows;
    super::check_product([m, k], [n, w.cols], bias, out);
    let comp = match (&w.comp, isa.offsets_activations()) {
        (Some(c), true) => Some(&c[..]),
        (None, true) => panic!("the weight was packed without the compensation {} needs", isa.name()),
        (_, false) => None,
    };
    let blocks = k / BLOCK;
    let a = quantize_blocks(isa, x, m, k);
    let codes = PanelCodes { data: &w.data, rows: n, kp: k, panels: w.panels };
    let sink = |acc: *mut f32, i0: usize, p0: usize, k0: usize, acc_rs: usize| {
        // The task's first row and panel, at the chunk's first block.
        let at = p0 * blocks * NR + (k0 / BLOCK) * NR;
        Sink::Blocks(BlockSink {
            acc,
            acc_rs,
            sx: a.scales[i0 * blocks + k0 / BLOCK..].as_ptr(),
            sx_rs: blocks,
            sw: w.scales[at..].as_ptr(),
            comp: comp.map_or(std::ptr::null(), |c| c[at..].as_ptr()),
            sw_ps: blocks * NR,
        })
    };
    let out_ptr = SyncPtr(out.as_mut_ptr());
    tiled(isa, &a, &codes, sink, |i0, j0, rows, acc: &mut [f32], acc_rs| {
        let cols = acc_rs.min(n - j0);
        crate::ops::vectorized(|| {
            for (r, src) in acc.chunks_exact(acc_rs).take(rows).enumerate() {
                // SAFETY: blocks of `tiled` are disjoint; row i0+r, columns j0..j0+cols < n.
                let dst = unsafe { std::slice::from_raw_parts_mut(out_ptr.get().add((i0 + r) * n + j0), cols) };
                match bias {
                    Some(b) => {
                        dst.iter_mut().zip(src).zip(&b[j0..j0 + cols]).for_each(|((o, &v), &b)| *o = post(v + b))
                    }
                    None => dst.iter_mut().zip(src).for_each(|(o, &v)| *o = post(v)),
                }
            }
        })
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::int8::tests::randn;
    use rand::{Rng, SeedableRng};

    /// Q8_0 blocks of a `[n, k]` weight as ggml's reference quantizer writes them (f16 scale
    /// `absmax/127`, codes `round(x / d)`), with an all-zero row and an outlier.
    fn q8_0_weight(n: usize, k: usize, seed: u64) -> Vec<u8> {
        let mut w = randn(n * k, seed);
        if n > 2 {
            w[k..2 * k].fill(0.0);
            w[2 * k + 1] = 30.0;
        }
        let mut out = Vec::new();
        for b in w.chunks_exact(BLOCK) {
            let amax = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let d = amax / 127.0;
            let id = if d > 0.0 { 1.0 / d } else { 0.0 };
            out.extend(half::f16::from_f32(d).to_le_bytes());
            out.extend(b.iter().map(|&v| (v * id).round().clamp(-127.0, 127.0) as i8 as u8));
        }
        out
    }

    fn pack(bytes: &[u8], n: usize, k: usize) -> Option<PackedQ8_0> {
        let rb = k / BLOCK * BLOCK_BYTES;
        PackedQ8_0::from_blocks(|j| &bytes[j * rb..(j + 1) * rb], n, k)
    }

    /// The module docs' formula, in f64 from the quantized operands.
    fn reference(x: &[f32], m: usize, k: usize, bytes: &[u8], n: usize) -> Vec<f64> {
        let acts = quantize_blocks(Isa::Scalar, x, m, k);
        let mut w = vec![0.0f32; n * k];
        crate::quant::ggml::dequantize(crate::DType::Q8_0, bytes, &mut w);
        let blocks = k / BLOCK;
        let mut out = vec![0.0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k)
                    .map(|kk| {
                        acts.data[i * k + kk] as f64
                            * acts.scales[i * blocks + kk / BLOCK] as f64
                            * w[j * k + kk] as f64
                    })
                    .sum();
            }
        }
        out
    }

    const SHAPES: [(usize, usize, usize); 6] =
        [(1, 32, 1), (3, 64, 17), (13, 96, 45), (97, 1056, 33), (7, 2048, 300), (100, 320, 70)];

    #[test]
    fn every_path_gives_the_scalar_bits_and_the_block_formula() {
        for (si, &(m, k, n)) in SHAPES.iter().enumerate() {
            let bytes = q8_0_weight(n, k, 40 + si as u64);
            let w = pack(&bytes, n, k).expect("no −128 codes");
            let mut x = randn(m * k, 50 + si as u64);
            x[..BLOCK.min(k)].fill(0.0); // a zero activation block: scale 0
            let bias = randn(n, 60);
            let mut want = vec![0.0; m * n];
            gemm_q8_0_then(Isa::Scalar, &x, m, k, &w, Some(&bias), |v| v, &mut want);
            for isa in Isa::available() {
                let mut got = vec![f32::NAN; m * n];
                gemm_q8_0_then(isa, &x, m, k, &w, Some(&bias), |v| v, &mut got);
                let same = got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{} differs from scalar at m={m} k={k} n={n}", isa.name());
            }
            for (i, (&g, r)) in want.iter().zip(reference(&x, m, k, &bytes, n)).enumerate() {
                let r = r + bias[i % n] as f64;
                assert!((g as f64 - r).abs() <= 1e-5 * (1.0 + r.abs()), "({i}) {g} vs {r} at m={m} k={k} n={n}");
            }
        }
    }

    #[test]
    fn close_to_the_dequantized_product() {
        let (m, k, n) = (33, 512, 40);
        let bytes = q8_0_weight(n, k, 3);
        let x = randn(m * k, 4);
        let mut w = vec![0.0f32; n * k];
        crate::quant::ggml::dequantize(crate::DType::Q8_0, &bytes, &mut w);
        let mut got = vec![0.0; m * n];
        gemm_q8_0(&x, m, k, &pack(&bytes, n, k).unwrap(), None, &mut got);
        let (mut num, mut den) = (0.0f64, 0.0f64);
        for i in 0..m {
            for j in 0..n {
                let want: f64 = (0..k).map(|kk| x[i * k + kk] as f64 * w[j * k + kk] as f64).sum();
                num += (got[i * n + j] as f64 - want).powi(2);
                den += want * want;
            }
        }
        let rel = (num / den).sqrt();
        assert!(rel < 0.01, "relative error {rel} of the 8-bit activations");
    }

    #[test]
    fn codes_of_minus_128_are_left_to_the_decoding_path() {
        let (n, k) = (3, 64);
        let mut bytes = q8_0_weight(n, k, 5);
        assert!(pack(&bytes, n, k).is_some());
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        let at = 2 * (k / BLOCK * BLOCK_BYTES) + BLOCK_BYTES + 2 + rng.random_range(0..BLOCK);
        bytes[at] = 0x80;
        assert!(pack(&bytes, n, k).is_none());
    }
}
