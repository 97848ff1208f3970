//! Scaled dot-product attention, tiled over query blocks so the score matrix
//! never exceeds `SCORE_BUDGET` floats (or `MIN_QUERY_BLOCK × Lk`) per worker: memory-bounded at
//! 32k tokens.
//!
//! [`attention_bf16`] is the bf16 backend's: both products in the bf16 pair arithmetic of
//! [`super::packed`] (`vdpbf16ps` on AVX-512 BF16), Q and the softmax weights rounded to bf16 as
//! a GPU's flash attention does, scores, softmax and accumulation in f32.

use super::matmul::{gemm_general, Layout};
use super::packed::{gemm_bf16, FloatIsa, PackedBf16};
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

/// Additive terms applied to the scores before softmax.
#[derive(Default, Clone, Copy)]
pub struct ScoreBias<'a> {
    /// `[H, Lq, Lk]`, shared across the batch (T5 relative position bias).
    pub per_head: Option<&'a [f32]>,
    /// `[B, Lk]`, added to every query row (padding mask as 0 / -inf-like).
    pub per_key: Option<&'a [f32]>,
}

/// How a task multiplies: f32 GEMMs on the tensors in place, or bf16 pair products on K and Vᵀ
/// packed once per (batch, head).
enum Products {
    F32,
    Bf16 { isa: FloatIsa, heads: Vec<(PackedBf16, PackedBf16)> },
}

/// `softmax(q·kᵀ·scale + bias)·v` for `q: [B, Lq, H, D]`, `k, v: [B, Lk, H, D]`.
pub fn attention(q: &HostTensor, k: &HostTensor, v: &HostTensor, scale: f32, bias: ScoreBias) -> Result<HostTensor> {
    attention_with(q, k, v, scale, bias, None)
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
    attention_with(q, k, v, scale, bias, Some(isa))
}

fn attention_with(
    q: &HostTensor,
    k: &HostTensor,
    v: &HostTensor,
    scale: f32,
    bias: ScoreBias,
    bf16: Option<FloatIsa>,
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
    // The GEMMs read each head straight out of `[B, L, H, D]` (row stride H·D): no head-major
    // copies, which cost as much as the softmax at a few thousand tokens.
    let hd = h * d;
    let products = match bf16 {
        None => Products::F32,
        Some(isa) => {
            let bits = |x: f32| half::bf16::from_f32(x).to_bits();
            let heads = (0..b * h)
                .into_par_iter()
                .map(|bh| {
                    let base = (bh / h) * lk * hd + (bh % h) * d;
                    let (kd, vd) = (&k.data()[base..], &v.data()[base..]);
                    let k_rows = |j: usize, dst: &mut [u16]| {
                        dst.iter_mut().zip(&kd[j * hd..j * hd + d]).for_each(|(o, &x)| *o = bits(x))
                    };
                    let v_cols = |e: usize, dst: &mut [u16]| {
                        dst.iter_mut().enumerate().for_each(|(j, o)| *o = bits(vd[j * hd + e]))
                    };
                    (PackedBf16::pack(k_rows, lk, d), PackedBf16::pack(v_cols, d, lk))
                })
                .collect();
            Products::Bf16 { isa, heads }
        }
    };
    let mut out = vec![0.0f32; b * lq * hd];
    let query_block = (SCORE_BUDGET / lk.max(1)).clamp(MIN_QUERY_BLOCK, lq.max(MIN_QUERY_BLOCK));
    let blocks_per_head = lq.div_ceil(query_block);
    let tasks: Vec<(usize, usize)> = (0..b * h).flat_map(|bh| (0..blocks_per_head).map(move |blk| (bh, blk))).collect();
    let out_ptr = SyncPtr(out.as_mut_ptr());
    let init = || (Vec::new(), vec![0.0f32; query_block * d]);
    tasks.par_iter().for_each_init(init, |(scores, o): &mut (Vec<f32>, Vec<f32>), &(bh, blk)| {
        let (bi, hi) = (bh / h, bh % h);
        let q0 = blk * query_block;
        let rows = query_block.min(lq - q0);
        let q_blk = &q.data()[(bi * lq + q0) * hd + hi * d..];
        let k_head = &k.data()[bi * lk * hd + hi * d..];
        let v_head = &v.data()[bi * lk * hd + hi * d..];
        scores.clear();
        scores.resize(rows * lk, 0.0);
        match &products {
            // scores[i, j] = q[i, :] · k[j, :]: K read transposed as b[kk, j].
            Products::F32 => {
                let (q_layout, k_layout) = (Layout { rs: hd, cs: 1 }, Layout { rs: 1, cs: hd });
                gemm_general(scores, lk, q_blk, q_layout, k_head, k_layout, rows, lk, d, false, true);
            }
            Products::Bf16 { isa, heads } => {
                let q_rows: Vec<f32> = (0..rows).flat_map(|r| &q_blk[r * hd..r * hd + d]).copied().collect();
                gemm_bf16(*isa, &q_rows, rows, &heads[bh].0, None, |x| x, scores);
            }
        }
        for (r, row) in scores.chunks_exact_mut(lk).enumerate() {
            row.iter_mut().for_each(|s| *s *= scale);
            if let Some(pb) = bias.per_head {
                let off = (hi * lq + q0 + r) * lk;
                row.iter_mut().zip(&pb[off..off + lk]).for_each(|(s, &b)| *s += b);
            }
            if let Some(pk) = bias.per_key {
                row.iter_mut().zip(&pk[bi * lk..(bi + 1) * lk]).for_each(|(s, &b)| *s += b);
            }
            softmax_row(row);
        }
        match &products {
            Products::F32 => {
                let v_layout = Layout { rs: hd, cs: 1 };
                gemm_general(o, d, scores, Layout::row_major(lk), v_head, v_layout, rows, d, lk, false, true);
            }
            Products::Bf16 { isa, heads } => {
                gemm_bf16(*isa, scores, rows, &heads[bh].1, None, |x| x, &mut o[..rows * d])
            }
        }
        for (r, o_row) in o.chunks_exact(d).take(rows).enumerate() {
            // SAFETY: each (batch, query, head) row of `out` is written by exactly one task.
            let dst = unsafe { std::slice::from_raw_parts_mut(out_ptr.get().add((bi * lq + q0 + r) * hd + hi * d), d) };
            dst.copy_from_slice(o_row);
        }
    });
    HostTensor::new([b, lq, h, d], out)
}

#[cfg(test)]
// Naive references index like the math they transcribe.
#[allow(clippy::needless_range_loop, clippy::type_complexity)]
mod tests {
    use super::*;

    fn reference(q: &HostTensor, k: &HostTensor, v: &HostTensor, scale: f32) -> Vec<f32> {
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
                            qi.iter().zip(kj).map(|(a, b)| a * b).sum::<f32>() * scale
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
        let want = reference(&q, &k, &v, 0.35);
        let err = got.data().iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
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
