//! Fused adaptive-norm kernels of DiT blocks: one pass over the activations
//! instead of norm → mul → add (three round trips through memory).

use crate::error::{Error, Result};
use crate::HostTensor;
use rayon::prelude::*;

fn batch_dims(op: &'static str, x: &HostTensor, per_batch: &[&[f32]]) -> Result<(usize, usize, usize)> {
    let &[b, l, c] = x.shape() else {
        return Err(Error::shape(op, "[B, L, C]", x.shape()));
    };
    for p in per_batch {
        if p.len() != b * c {
            return Err(Error::shape(op, [b, c], p.len()));
        }
    }
    Ok((b, l, c))
}

/// `LayerNorm(x) · (1 + scale) + shift` with per-batch `scale, shift: [B, C]`
/// (no affine parameters: Wan's `FP32LayerNorm(elementwise_affine=False)`).
pub fn layer_norm_modulate(x: &HostTensor, eps: f32, scale: &[f32], shift: &[f32]) -> Result<HostTensor> {
    let (_, l, c) = batch_dims("layer_norm_modulate", x, &[scale, shift])?;
    let mut out = HostTensor::zeros(x.shape().to_vec());
    out.data_mut().par_chunks_mut(c).zip(x.data().par_chunks(c)).enumerate().for_each(|(row, (o, xr))| {
        let bi = row / l;
        let (sc, sh) = (&scale[bi * c..(bi + 1) * c], &shift[bi * c..(bi + 1) * c]);
        let mean = xr.iter().map(|&v| v as f64).sum::<f64>() / c as f64;
        let var = xr.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / c as f64;
        let (mean, inv) = (mean as f32, (1.0 / (var + eps as f64).sqrt()) as f32);
        for i in 0..c {
            o[i] = (xr[i] - mean) * inv * (1.0 + sc[i]) + sh[i];
        }
    });
    Ok(out)
}

/// `x += y · gate` with per-batch `gate: [B, C]` (gated residual).
pub fn add_gated(x: &mut HostTensor, y: &HostTensor, gate: &[f32]) -> Result<()> {
    let (_, l, c) = batch_dims("add_gated", x, &[gate])?;
    if x.shape() != y.shape() {
        return Err(Error::shape("add_gated", x.shape(), y.shape()));
    }
    x.data_mut().par_chunks_mut(c).zip(y.data().par_chunks(c)).enumerate().for_each(|(row, (xr, yr))| {
        let g = &gate[(row / l) * c..(row / l + 1) * c];
        for i in 0..c {
            xr[i] += yr[i] * g[i];
        }
    });
    Ok(())
}
