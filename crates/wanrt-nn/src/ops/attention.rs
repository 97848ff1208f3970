//! Scaled dot-product attention, tiled over query blocks so the score matrix
//! never exceeds `SCORE_BUDGET` floats (or `MIN_QUERY_BLOCK × Lk`) per worker: memory-bounded at
//! 32k tokens.
//!
//! Both products run on the packed GEMMs of [`super::packed`], with K and Vᵀ packed once per
//! (batch, head) for all of its query blocks (a general GEMM would repack them for every block:
//! at 32k tokens that is as much work as the product). Heads are taken a group at a time, so only
//! a group's packed copies are held. [`attention`] computes in f32; [`attention_bf16`] is the
//! bf16 backend's: both products in the bf16 pair arithmetic (`vdpbf16ps` on AVX-512 BF16), Q
//! and the softmax weights rounded to bf16 as a GPU's flash attention does, scores, softmax and
//! accumulation in f32.

use super::packed::{gemm_bf16, gemm_packed_with, FloatIsa, PackedBf16, PackedF32};
use super::softmax::softmax_row;
use super::SyncPtr;
use crate::error::{Error, Result};
use crate::HostTensor;
use rayon::prelude::*;

/// Scores a worker may hold: short sequences take many query rows per task, so each packing of
/// K and V by the GEMMs serves more rows.
const SCORE_BUDGET: usize = 1 << 17;
/// Fewest query rows per task (long sequences).
const MIN_QUERY_BLOCK: usize = 64;
/// Query-block tasks per thread in a group of heads: enough to balance the threads.
const TASKS_PER_THREAD: usize = 4;

/// Additive terms applied to the scores before softmax.
#[derive(Default, Clone, Copy)]
pub struct ScoreBias<'a> {
    /// `[H, Lq, Lk]`, shared across the batch (T5 relative position bias).
    pub per_head: Option<&'a [f32]>,
    /// `[B, Lk]`, added to every query row (padding mask as 0 / -inf-like).
    pub per_key: Option<&'a [f32]>,
}

/// The arithmetic of both products.
#[derive(Clone, Copy)]
enum Arithmetic {
    F32,
    Bf16,
}

/// K and Vᵀ of one (batch, head), packed for the arithmetic's products.
enum PackedHead {
    F32(PackedF32, PackedF32),
    Bf16(PackedBf16, PackedBf16),
}

impl PackedHead {
    /// Packs head `hi` of batch `bi` of `k, v: [B, Lk, H, D]`.
    fn pack(arithmetic: Arithmetic, k: &HostTensor, v: &HostTensor, bi: usize, hi: usize) -> PackedHead {
        let [_, lk, h, d] = k.shape().try_into().expect("checked [B, Lk, H, D]");
        let hd = h * d;
        let base = bi * lk * hd + hi * d;
        let (kd, vd) = (&k.data()[base..], &v.data()[base..]);
        let k_row = |j: usize| &kd[j * hd..j * hd + d];
        let v_col = |e: usize| (0..lk).map(move |j| vd[j * hd + e]);
        match arithmetic {
            Arithmetic::F32 => PackedHead::F32(
                PackedF32::pack(|j, dst| dst.copy_from_slice(k_row(j)), lk, d),
                PackedF32::pack(|e, dst| dst.iter_mut().zip(v_col(e)).for_each(|(o, x)| *o = x), d, lk),
            ),
            Arithmetic::Bf16 => {
                let bits = |x: f32| half::bf16::from_f32(x).to_bits();
                PackedHead::Bf16(
                    PackedBf16::pack(|j, dst| dst.iter_mut().zip(k_row(j)).for_each(|(o, &x)| *o = bits(x)), lk, d),
                    PackedBf16::pack(|e, dst| dst.iter_mut().zip(v_col(e)).for_each(|(o, x)| *o = bits(x)), d, lk),
                )
            }
        }
    }

    /// `scores[rows, Lk] = scale · q_rows[rows, D] · Kᵀ`.
    fn scores(&self, isa: FloatIsa, q_rows: &[f32], rows: usize, scale: f32, scores: &mut [f32]) {
        match self {
            PackedHead::F32(k, _) => gemm_packed_with(isa, q_rows, rows, k, None, |s| s * scale, scores),
            PackedHead::Bf16(k, _) => gemm_bf16(isa, q_rows, rows, k, None, |s| s * scale, scores),
        }
    }

    /// `o[rows, D] = p[rows, Lk] · V`.
    fn weighted(&self, isa: FloatIsa, p: &[f32], rows: usize, o: &mut [f32]) {
        match self {
            PackedHead::F32(_, vt) => gemm_packed_with(isa, p, rows, vt, None, |x| x, o),
            PackedHead::Bf16(_, vt) => gemm_bf16(isa, p, rows, vt, None, |x| x, o),
        }
    }
}

/// `softmax(q·kᵀ·scale + bias)·v` for `q: [B, Lq, H, D]`, `k, v: [B, Lk, H, D]`, in f32 (the
/// same bits on every instruction set).
pub fn attention(q: &HostTensor, k: &HostTensor, v: &HostTensor, scale: f32, bias: ScoreBias) -> Result<HostTensor> {
    attention_with(Arithmetic::F32, FloatIsa::detect(), q, k, v, scale, bias)
}

/// [`attention`] with both products in bf16 on `isa` (f32 scores, softmax and accumulation):
/// every path returns the same bits.
pub fn attention_bf16(
    isa: FloatIsa,
    q: &HostTensor,
    k: &HostTensor,
    v: &HostTensor,
    scale: f32,
    bias: ScoreBias,
) -> Result<HostTensor> {
    attention_with(Arithmetic::Bf16, isa, q, k, v, scale, bias)
}

fn attention_with(
    arithmetic: Arithmetic,
    isa: FloatIsa,
    q: &HostTensor,
    k: &HostTensor,
    v: &HostTensor,
    scale: f32,
    bias: ScoreBias,
) -> Result<HostTensor> {
    let (b, lq, h, d) = match q.shape() {
        &[b, l, h, d] => (b, l, h, d),
        s => return Err(Error::shape("attention q", "[B, Lq, H, D]", s)),
    };
    let lk = k.shape().get(1).copied().unwrap_or(0);
    k.expect_shape("attention k", &[b, lk, h, d])?;
    v.expect_shape("attention v", &[b, lk, h, d])?;
    if let Some(pb) = bias.per_head {
        if pb.len() != h * lq * lk {
            return Err(Error::shape("attention per-head bias", [h, lq, lk], pb.len()));
        }
    }
    if let Some(pk) = bias.per_key {
        if pk.len() != b * lk {
            return Err(Error::shape("attention per-key bias", [b, lk], pk.len()));
        }
    }
    if !isa.is_available() {
        return Err(Error::Msg(format!("instruction set {} not available on this CPU", isa.name())));
    }
    // Heads are read straight out of `[B, L, H, D]` (row stride H·D): no head-major copies,
    // which cost as much as the softmax at a few thousand tokens.
    let hd = h * d;
    let mut out = vec![0.0f32; b * lq * hd];
    let query_block = (SCORE_BUDGET / lk.max(1)).clamp(MIN_QUERY_BLOCK, lq.max(MIN_QUERY_BLOCK));
    let blocks_per_head = lq.div_ceil(query_block);
    let group_size = (TASKS_PER_THREAD * super::num_threads()).div_ceil(blocks_per_head).max(1);
    let out_ptr = SyncPtr(out.as_mut_ptr());
    for first in (0..b * h).step_by(group_size) {
        let group = first..(first + group_size).min(b * h);
        let packed: Vec<PackedHead> =
            group.clone().into_par_iter().map(|bh| PackedHead::pack(arithmetic, k, v, bh / h, bh % h)).collect();
        let tasks: Vec<(usize, usize)> =
            (0..group.len()).flat_map(|g| (0..blocks_per_head).map(move |blk| (g, blk))).collect();
        let init = || (Vec::new(), Vec::new(), vec![0.0f32; query_block * d]);
        tasks.par_iter().for_each_init(init, |(q_rows, scores, o): &mut (Vec<f32>, Vec<f32>, Vec<f32>), &(g, blk)| {
            let bh = first + g;
            let (bi, hi) = (bh / h, bh % h);
            let q0 = blk * query_block;
            let rows = query_block.min(lq - q0);
            q_rows.clear();
            q_rows.extend((0..rows).flat_map(|r| &q.data()[(bi * lq + q0 + r) * hd + hi * d..][..d]));
            scores.clear();
            scores.resize(rows * lk, 0.0);
            packed[g].scores(isa, q_rows, rows, scale, scores);
            for (r, row) in scores.chunks_exact_mut(lk).enumerate() {
                if let Some(pb) = bias.per_head {
                    let off = (hi * lq + q0 + r) * lk;
                    row.iter_mut().zip(&pb[off..off + lk]).for_each(|(s, &b)| *s += b);
                }
                if let Some(pk) = bias.per_key {
                    row.iter_mut().zip(&pk[bi * lk..(bi + 1) * lk]).for_each(|(s, &b)| *s += b);
                }
                softmax_row(row);
            }
            packed[g].weighted(isa, scores, rows, &mut o[..rows * d]);
            for (r, o_row) in o.chunks_exact(d).take(rows).enumerate() {
                // SAFETY: each (batch, query, head) row of `out` is written by exactly one task.
                let dst =
                    unsafe { std::slice::from_raw_parts_mut(out_ptr.get().add((bi * lq + q0 + r) * hd + hi * d), d) };
                dst.copy_from_slice(o_row);
            }
        });
    }
    HostTensor::new([b, lq, h, d], out)
}

#[cfg(test)]
// Naive references index like the math they transcribe.
#[allow(clippy::needless_range_loop, clippy::type_complexity)]
mod tests {
    use super::*;

    fn reference(q: &HostTensor, k: &HostTensor, v: &HostTensor, scale: f32, bias: ScoreBias) -> Vec<f32> {
        let [b, lq, h, d] = q.shape().try_into().unwrap();
        let lk = k.dim(1);
        let mut out = vec![0.0; b * lq * h * d];
        for bi in 0..b {
            for hi in 0..h {
                for i in 0..lq {
                    let qi = &q.data()[((bi * lq + i) * h + hi) * d..][..d];
                    let mut s: Vec<f32> = (0..lk)
                        .map(|j| {
                            let kj = &k.data()[((bi * lk + j) * h + hi) * d..][..d];
                            let s = qi.iter().zip(kj).map(|(a, b)| a * b).sum::<f32>() * scale;
                            s + bias.per_head.map_or(0.0, |pb| pb[(hi * lq + i) * lk + j])
                                + bias.per_key.map_or(0.0, |pk| pk[bi * lk + j])
                        })
                        .collect();
                    softmax_row(&mut s);
                    for j in 0..lk {
                        let vj = &v.data()[((bi * lk + j) * h + hi) * d..][..d];
                        for e in 0..d {
                            out[((bi * lq + i) * h + hi) * d + e] += s[j] * vj[e];
                        }
                    }
                }
            }
        }
        out
    }

    #[test]
    fn tiled_attention_matches_naive() {
        let (b, lq, lk, h, d) = (2, 130, 70, 3, 8);
        let gen = |n: usize, seed: usize| -> Vec<f32> {
            (0..n).map(|i| (((i * 2654435761 + seed) % 1000) as f32 / 500.0) - 1.0).collect()
        };
        let q = HostTensor::new([b, lq, h, d], gen(b * lq * h * d, 1)).unwrap();
        let k = HostTensor::new([b, lk, h, d], gen(b * lk * h * d, 2)).unwrap();
        let v = HostTensor::new([b, lk, h, d], gen(b * lk * h * d, 3)).unwrap();
        let got = attention(&q, &k, &v, 0.35, ScoreBias::default()).unwrap();
        let want = reference(&q, &k, &v, 0.35, ScoreBias::default());
        let err = got.data().iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        assert!(err < 1e-5, "max err {err}");
    }

    #[test]
    fn f32_attention_is_the_same_on_every_path_with_biases() {
        // Several head groups (a group spans at least one head) and ragged query blocks.
        let (b, lq, lk, h, d) = (2, 300, 530, 5, 12);
        let gen = |n: usize, seed: u64| crate::quant::int8::tests::randn(n, seed);
        let q = HostTensor::new([b, lq, h, d], gen(b * lq * h * d, 4)).unwrap();
        let k = HostTensor::new([b, lk, h, d], gen(b * lk * h * d, 5)).unwrap();
        let v = HostTensor::new([b, lk, h, d], gen(b * lk * h * d, 6)).unwrap();
        let per_head = gen(h * lq * lk, 7);
        let per_key: Vec<f32> = (0..b * lk).map(|i| if i % lk >= 400 + i / lk { -1e9 } else { 0.0 }).collect();
        let bias = ScoreBias { per_head: Some(&per_head), per_key: Some(&per_key) };
        let paths = FloatIsa::available();
        let first = attention_with(Arithmetic::F32, paths[0], &q, &k, &v, 0.3, bias).unwrap();
        for isa in &paths[1..] {
            let got = attention_with(Arithmetic::F32, *isa, &q, &k, &v, 0.3, bias).unwrap();
            assert!(got.data().iter().zip(first.data()).all(|(a, b)| a.to_bits() == b.to_bits()), "{}", isa.name());
        }
        let want = reference(&q, &k, &v, 0.3, bias);
        let err = first.data().iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        assert!(err < 1e-5, "max err {err}");
    }

    #[test]
    fn bf16_attention_is_close_to_f32_and_the_same_on_every_path() {
        let (b, lq, lk, h, d) = (2, 70, 45, 3, 10);
        let gen = |n: usize, seed: u64| crate::quant::int8::tests::randn(n, seed);
        let q = HostTensor::new([b, lq, h, d], gen(b * lq * h * d, 1)).unwrap();
        let k = HostTensor::new([b, lk, h, d], gen(b * lk * h * d, 2)).unwrap();
        let v = HostTensor::new([b, lk, h, d], gen(b * lk * h * d, 3)).unwrap();
        let lens = [45.0f32, 30.0];
        let per_key: Vec<f32> =
            (0..b * lk).map(|i| if (i % lk) as f32 >= lens[i / lk] { f32::NEG_INFINITY } else { 0.0 }).collect();
        let bias = ScoreBias { per_head: None, per_key: Some(&per_key) };
        let want = attention(&q, &k, &v, 0.3, bias).unwrap();
        let paths = FloatIsa::available();
        let first = attention_bf16(paths[0], &q, &k, &v, 0.3, bias).unwrap();
        let err = first.data().iter().zip(want.data()).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        // Inputs and softmax weights rounded to 8-bit mantissas: errors of a few 2⁻⁸.
        assert!(err > 0.0 && err < 3e-2, "max err {err}");
        for isa in &paths[1..] {
            let got = attention_bf16(*isa, &q, &k, &v, 0.3, bias).unwrap();
            assert!(got.data().iter().zip(first.data()).all(|(a, b)| a.to_bits() == b.to_bits()), "{}", isa.name());
        }
    }
}
