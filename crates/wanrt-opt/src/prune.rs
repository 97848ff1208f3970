//! Structured pruning: remove whole FFN hidden channels and self-attention
//! heads, giving smaller matrices (not zeroed weights).
//!
//! Importance score (first-order output contribution, measured on the
//! calibration run): a unit's expected input magnitude to the projection
//! that reads it, times the norm of that projection's weights for it —
//! - FFN channel `j` of block `i`: `mean|h_j| · ‖W_down[:, j]‖₂`, with `h`
//!   the GELU output entering `ffn.net.2`;
//! - head `h`: `sqrt(Σ_{c ∈ h} E[o_c²]) · ‖W_out[:, c ∈ h]‖_F`, with `o` the
//!   attention output entering `attn1.to_out.0`.
//!
//! The lowest-scoring units of each block are removed; every block keeps the
//! same number so the config stays uniform. Wan's QK RMSNorm normalizes over
//! all heads together: removing heads changes that mean for the heads that
//! remain, an error the optimizer measures rather than assumes away.

use crate::{Error, Result};
use std::collections::BTreeMap;
use wanrt_nn::probe::ProbeStats;
use wanrt_nn::{HostTensor, WeightStore};
use wanrt_wan::transformer::TransformerConfig;

#[derive(Debug, Clone, Default)]
pub struct PrunePlan {
    /// Per block, FFN channels kept (ascending).
    pub ffn_kept: Option<Vec<Vec<usize>>>,
    /// Per block, self-attention heads kept (ascending).
    pub heads_kept: Option<Vec<Vec<usize>>>,
}

pub const SCORE_DOC: &str =
    "first-order contribution: mean input magnitude on the calibration run × weight norm of the \
                             consuming projection (FFN: mean|gelu out_j|·‖W_down[:,j]‖₂; heads: RMS of the head's \
                             attention output·‖W_out[:,head]‖_F)";

fn stats_of<'a>(stats: &'a BTreeMap<String, ProbeStats>, name: &str) -> Result<&'a ProbeStats> {
    stats.get(name).ok_or_else(|| Error::Msg(format!("no calibration statistics for layer {name}")))
}

/// ‖w[:, j]‖₂ for every column of `w: [rows, cols]`.
fn column_norms(w: &HostTensor) -> Vec<f32> {
    let cols = w.dim(1);
    let mut sq = vec![0.0f64; cols];
    for row in w.data().chunks_exact(cols) {
        for (s, &v) in sq.iter_mut().zip(row) {
            *s += (v as f64) * (v as f64);
        }
    }
    sq.into_iter().map(|s| s.sqrt() as f32).collect()
}

/// Indices of the `keep` highest scores, ascending (ties keep the lower index).
fn top_indices(scores: &[f32], keep: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    let mut kept = order[..keep.min(scores.len())].to_vec();
    kept.sort_unstable();
    kept
}

/// FFN channels kept per block for removing `ratio` of them: the kept count
/// is rounded to a multiple of 8 (GEMM-friendly) when the layer is large enough.
pub fn ffn_keep_count(ffn_dim: usize, ratio: f64) -> usize {
    let keep = ((ffn_dim as f64) * (1.0 - ratio)).round() as usize;
    let keep = if ffn_dim >= 64 { (keep / 8).max(1) * 8 } else { keep };
    keep.clamp(1, ffn_dim)
}

pub fn plan(
    ws: &WeightStore,
    cfg: &TransformerConfig,
    stats: &BTreeMap<String, ProbeStats>,
    prune_ffn: f64,
    prune_heads: usize,
) -> Result<PrunePlan> {
    let mut out = PrunePlan::default();
    if prune_ffn > 0.0 {
        let keep = ffn_keep_count(cfg.ffn_dim, prune_ffn);
        let kept = (0..cfg.num_layers)
            .map(|i| {
                let s = stats_of(stats, &format!("blocks.{i}.ffn.net.2"))?;
                let norms = column_norms(&ws.get(&format!("blocks.{i}.ffn.net.2.weight"))?);
                let scores: Vec<f32> = s.channel_absmean().iter().zip(&norms).map(|(a, n)| a * n).collect();
                Ok(top_indices(&scores, keep))
            })
            .collect::<Result<Vec<_>>>()?;
        out.ffn_kept = Some(kept);
    }
    if prune_heads > 0 {
        let hd = cfg.attention_head_dim;
        let kept = (0..cfg.num_layers)
            .map(|i| {
                let heads = cfg.block_self_attn_heads(i);
                if prune_heads >= heads {
                    return Err(Error::Msg(format!(
                        "--prune-heads {prune_heads} would remove every head of block {i} ({heads} heads)"
                    )));
                }
                let s = stats_of(stats, &format!("blocks.{i}.attn1.to_out.0"))?;
                let norms = column_norms(&ws.get(&format!("blocks.{i}.attn1.to_out.0.weight"))?);
                let n = s.tokens.max(1) as f64;
                let scores: Vec<f32> = (0..heads)
                    .map(|h| {
                        let cols = h * hd..(h + 1) * hd;
                        let rms = (cols.clone().map(|c| s.channel_sqsum[c] / n).sum::<f64>()).sqrt() as f32;
                        let norm = cols.map(|c| norms[c] * norms[c]).sum::<f32>().sqrt();
                        rms * norm
                    })
                    .collect();
                Ok(top_indices(&scores, heads - prune_heads))
            })
            .collect::<Result<Vec<_>>>()?;
        out.heads_kept = Some(kept);
    }
    Ok(out)
}

fn select_rows(t: &HostTensor, rows: &[usize]) -> Result<HostTensor> {
    let cols = t.numel() / t.dim(0).max(1);
    let data = rows.iter().flat_map(|&r| t.data()[r * cols..(r + 1) * cols].iter().copied()).collect();
    let mut shape = t.shape().to_vec();
    shape[0] = rows.len();
    Ok(HostTensor::new(shape, data)?)
}

fn select_cols(t: &HostTensor, cols: &[usize]) -> Result<HostTensor> {
    let n = t.dim(1);
    let data = t.data().chunks_exact(n).flat_map(|r| cols.iter().map(move |&c| r[c])).collect();
    Ok(HostTensor::new([t.dim(0), cols.len()], data)?)
}

/// The replaced tensors of the pruned transformer and its new config.
pub fn apply(
    ws: &WeightStore,
    cfg: &TransformerConfig,
    plan: &PrunePlan,
) -> Result<(Vec<(String, HostTensor)>, TransformerConfig)> {
    let mut out = Vec::new();
    let mut new_cfg = cfg.clone();
    if let Some(kept) = &plan.ffn_kept {
        for (i, k) in kept.iter().enumerate() {
            let p = |s: &str| format!("blocks.{i}.ffn.net.{s}");
            out.push((p("0.proj.weight"), select_rows(&ws.get(&p("0.proj.weight"))?, k)?));
            out.push((p("0.proj.bias"), select_rows(&ws.get(&p("0.proj.bias"))?, k)?));
            out.push((p("2.weight"), select_cols(&ws.get(&p("2.weight"))?, k)?));
        }
        new_cfg.ffn_dim = kept.first().map_or(cfg.ffn_dim, Vec::len);
        if kept.iter().any(|k| k.len() != new_cfg.ffn_dim) {
            return Err(Error::Msg("FFN pruning must keep the same number of channels in every block".into()));
        }
    }
    if let Some(kept) = &plan.heads_kept {
        let hd = cfg.attention_head_dim;
        for (i, heads) in kept.iter().enumerate() {
            let chans: Vec<usize> = heads.iter().flat_map(|&h| h * hd..(h + 1) * hd).collect();
            let p = |s: &str| format!("blocks.{i}.attn1.{s}");
            for proj in ["to_q", "to_k", "to_v"] {
                for t in ["weight", "bias"] {
                    let name = p(&format!("{proj}.{t}"));
                    out.push((name.clone(), select_rows(&ws.get(&name)?, &chans)?));
                }
            }
            for norm in ["norm_q.weight", "norm_k.weight"] {
                out.push((p(norm), select_rows(&ws.get(&p(norm))?, &chans)?));
            }
            out.push((p("to_out.0.weight"), select_cols(&ws.get(&p("to_out.0.weight"))?, &chans)?));
        }
        new_cfg.self_attn_heads = Some(kept.iter().map(Vec::len).collect());
    }
    Ok((out, new_cfg))
}

/// Input statistics of the pruned layers restricted to the channels that remain.
pub fn pruned_stats(
    stats: &BTreeMap<String, ProbeStats>,
    cfg: &TransformerConfig,
    plan: &PrunePlan,
) -> BTreeMap<String, ProbeStats> {
    let mut out = stats.clone();
    if let Some(kept) = &plan.ffn_kept {
        for (i, k) in kept.iter().enumerate() {
            let name = format!("blocks.{i}.ffn.net.2");
            if let Some(s) = stats.get(&name) {
                out.insert(name, s.select_channels(k));
            }
        }
    }
    if let Some(kept) = &plan.heads_kept {
        let hd = cfg.attention_head_dim;
        for (i, heads) in kept.iter().enumerate() {
            let chans: Vec<usize> = heads.iter().flat_map(|&h| h * hd..(h + 1) * hd).collect();
            let name = format!("blocks.{i}.attn1.to_out.0");
            if let Some(s) = stats.get(&name) {
                out.insert(name, s.select_channels(&chans));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranking_and_selection() {
        assert_eq!(top_indices(&[0.5, 3.0, 0.1, 2.0], 2), vec![1, 3]);
        assert_eq!(top_indices(&[1.0, 1.0, 1.0], 2), vec![0, 1]);
        assert_eq!(ffn_keep_count(8960, 0.2), 7168);
        assert_eq!(ffn_keep_count(512, 0.25), 384);
        assert_eq!(ffn_keep_count(10, 0.5), 5);
        let t = HostTensor::new([3, 2], vec![1., 2., 3., 4., 5., 6.]).unwrap();
        assert_eq!(select_rows(&t, &[0, 2]).unwrap().data(), &[1., 2., 5., 6.]);
        assert_eq!(select_cols(&t, &[1]).unwrap().data(), &[2., 4., 6.]);
        assert_eq!(column_norms(&t), vec![(35.0f32).sqrt(), (56.0f32).sqrt()]);
    }
}
