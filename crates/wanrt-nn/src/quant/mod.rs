//! Low-precision CPU kernels for `wanrt optimize`: INT8 weights × INT8 activations (W8A8), INT8
//! weights with f32 compute (W8A16), emulated FP8 E4M3 products, and the integer micro-kernels
//! they share with [`crate::ops::attention_quant`]; and the dequantization of ggml's
//! block-quantized formats ([`ggml`], GGUF checkpoints), whose weights run through the same
//! decode-in-the-GEMM product as W8A16.
//!
//! Each format is plain data (a struct with its scales) plus a scalar reference; the SIMD kernels
//! in `kernels` accumulate in exact `i32`, so every instruction-set path returns the same bits
//! as the portable one (tests force each path available on the machine through [`Isa`]).
//!
//! Use: pack once at load (`PackedInt8::quantize(w, out, in)`), then per call
//! `gemm_w8a8(x, m, k, &packed, ActQuant::PerToken, smooth, bias, out)`. Speed and error against
//! the f32 paths on the 1.3B shapes are recorded in `bench/results/quant-kernels.md`
//! (`cargo bench -p wanrt-nn --bench quant`).
//!
//! Conventions shared by every quantizer here (stated once, tested in each file):
//! - symmetric scales `scale = absmax / qmax` (127 for int8, 448 for E4M3), a zero row gets
//!   scale 0 and quantizes to zeros (no division by zero);
//! - int8 rounding is round-half-to-even of `x · (qmax / absmax)`, then clamped to ±127 (−128 is
//!   never produced: the AVX2 kernel's sign trick needs it, see `kernels`).

pub mod fp8;
pub mod ggml;
pub mod int8;
pub mod isa;
pub(crate) mod kernels;
pub(crate) mod kernels_i16;
pub mod q8_0;

pub use fp8::{e4m3_to_f32, gemm_fp8, Fp8Matrix};
pub use int8::{gemm_w8a16, gemm_w8a8, gemm_w8a8_then, gemm_w8a8_with, PackedInt8, QuantizedMatrix};
pub use isa::Isa;
pub use q8_0::{gemm_q8_0, gemm_q8_0_then, PackedQ8_0};

use crate::ops::matmul::{gemm_general, Layout};
use crate::ops::SyncPtr;
use rayon::prelude::*;

/// How activations get their scale at run time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ActQuant {
    /// One scale per token (row of `x`), from that row's absmax: dynamic, the most accurate, and
    /// free on CPU since the quantization pass reads the row anyway.
    PerToken,
    /// One scale for the whole `x`, from its absmax at run time.
    PerTensor,
    /// A calibrated per-tensor scale (`wanrt optimize --calib`): values beyond `127·scale`
    /// (int8) or `448·scale` (fp8) saturate.
    Static(f32),
}

/// Round half to even with plain f32 adds (exact IEEE behaviour under the default rounding mode,
/// see [`crate::ops::ROUND_MAGIC`]), so it vectorizes on baseline SSE2 and is identical on every
/// path; `|y| ≥ 2²²` is already an integer and returned as is.
#[inline(always)]
pub(crate) fn round_half_even(y: f32) -> f32 {
    use crate::ops::ROUND_MAGIC;
    if y.abs() >= 4_194_304.0 {
        return y;
    }
    (y + ROUND_MAGIC) - ROUND_MAGIC
}

/// Panics unless `x[m, k] · Wᵀ` with `W[n, cols]` fits: `k == cols`, `bias` of `n` values, `out`
/// of `m·n`.
pub(crate) fn check_product([m, k]: [usize; 2], [n, cols]: [usize; 2], bias: Option<&[f32]>, out: &[f32]) {
    assert_eq!(k, cols, "x has {k} features, the weight expects {cols}");
    assert_eq!(out.len(), m * n, "out: expected m·n = {m}·{n} values");
    if let Some(b) = bias {
        assert_eq!(b.len(), n, "bias: expected n = {n} values");
    }
}

/// Output columns widened to f32 per task in [`gemm_decoded`].
const DECODE_BLOCK: usize = 256;
/// Activation rows per product in [`gemm_decoded`] (bounds its scratch at 2 MB per thread).
const DECODE_ROWS: usize = 2048;

/// `out[m, n] = x[m, k] · Wᵀ (+ bias)` where `W[n, k]` is only available through `decode`, which
/// writes rows `start..start+len` of W in f32 (row-major `[len, k]`) into its buffer. Column
/// blocks of [`DECODE_BLOCK`] rows of W are decoded and multiplied in parallel, so the f32 copy
/// of the weight never exceeds `threads × DECODE_BLOCK × k` floats.
pub(crate) fn gemm_decoded(
    x: &[f32],
    m: usize,
    k: usize,
    n: usize,
    decode: impl Fn(usize, usize, &mut Vec<f32>) + Sync,
    bias: Option<&[f32]>,
    out: &mut [f32],
) {
    assert_eq!(x.len(), m * k, "x: expected m·k = {m}·{k} values");
    assert_eq!(out.len(), m * n, "out: expected m·n = {m}·{n} values");
    if let Some(b) = bias {
        assert_eq!(b.len(), n, "bias: expected n = {n} values");
    }
    let blocks = n.div_ceil(DECODE_BLOCK);
    let out_ptr = SyncPtr(out.as_mut_ptr());
    // Fewer blocks than threads (small n): let each product use the pool instead.
    let single_thread = blocks >= crate::ops::num_threads();
    let init = || (Vec::new(), Vec::new());
    (0..blocks).into_par_iter().for_each_init(init, |(panel, tile): &mut (Vec<f32>, Vec<f32>), blk| {
        let j0 = blk * DECODE_BLOCK;
        let nb = DECODE_BLOCK.min(n - j0);
        decode(j0, nb, panel);
        // Row chunks bound the scratch tile to DECODE_ROWS × DECODE_BLOCK floats.
        for i0 in (0..m).step_by(DECODE_ROWS) {
            let mr = DECODE_ROWS.min(m - i0);
            tile.clear();
            tile.resize(mr * nb, 0.0);
            // tile[i, j] = Σ x[i0 + i, kk] · panel[j, kk]: the panel read transposed as b[kk, j].
            let xs = &x[i0 * k..(i0 + mr) * k];
            gemm_general(
                tile,
                nb,
                xs,
                Layout::row_major(k),
                panel,
                Layout { rs: 1, cs: k },
                mr,
                nb,
                k,
                false,
                single_thread,
            );
            for (i, row) in tile.chunks_exact(nb).enumerate() {
                // SAFETY: each task writes only its own columns j0..j0+nb of each row of `out`.
                let dst = unsafe { std::slice::from_raw_parts_mut(out_ptr.get().add((i0 + i) * n + j0), nb) };
                match bias {
                    Some(b) => dst.iter_mut().zip(row).zip(&b[j0..j0 + nb]).for_each(|((o, &t), &b)| *o = t + b),
                    None => dst.copy_from_slice(row),
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_half_even_matches_std() {
        for &y in &[0.5f32, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5, -126.5, 127.49, 0.49999997, 3.0, -7.0, 1e7] {
            assert_eq!(round_half_even(y), y.round_ties_even(), "{y}");
        }
    }
}
