//! Scaled dot-product attention, tiled over query blocks so the score matrix
//! never exceeds `SCORE_BUDGET` floats (or `MIN_QUERY_BLOCK × Lk`) per worker: memory-bounded at
//! 32k tokens.

use super::matmul::{gemm_general, Layout};
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

/// `softmax(q·kᵀ·scale + bias)·v` for `q: [B, Lq, H, D]`, `k, v: [B, Lk, H, D]`.
pub fn attention(q: &HostTensor, k: &HostTensor, v: &HostTensor, scale: f32, bias: ScoreBias) -> Result<HostTensor> {
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
        // scores[i, j] = q[i, :] · k[j, :]: K read transposed as b[kk, j].
        let (q_layout, k_layout) = (Layout { rs: hd, cs: 1 }, Layout { rs: 1, cs: hd });
        gemm_general(scores, lk, q_blk, q_layout, k_head, k_layout, rows, lk, d, false, true);
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
        gemm_general(o, d, scores, Layout::row_major(lk), v_head, Layout { rs: hd, cs: 1 }, rows, d, lk, false, true);
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
}
