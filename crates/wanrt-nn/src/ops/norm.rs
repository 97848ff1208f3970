//! LayerNorm and RMSNorm over the last dimension, accumulated in f64 for the
//! mean/variance so long rows (d = 5120) don't drift from PyTorch's f32 result.

use super::SyncPtr;
use crate::error::{Error, Result};
use crate::HostTensor;
use rayon::prelude::*;

fn check_affine(op: &'static str, c: usize, p: Option<&[f32]>) -> Result<()> {
    match p {
        Some(p) if p.len() != c => Err(Error::shape(op, c, p.len())),
        _ => Ok(()),
    }
}

/// `(x - mean) / sqrt(var + eps) * weight + bias`, biased variance as PyTorch.
pub fn layer_norm(mut x: HostTensor, eps: f32, weight: Option<&[f32]>, bias: Option<&[f32]>) -> Result<HostTensor> {
    let c = *x.shape().last().ok_or_else(|| Error::shape("layer_norm", "rank >= 1", x.shape()))?;
    check_affine("layer_norm weight", c, weight)?;
    check_affine("layer_norm bias", c, bias)?;
    x.data_mut().par_chunks_mut(c).for_each(|row| {
        let mean = row.iter().map(|&v| v as f64).sum::<f64>() / c as f64;
        let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / c as f64;
        let inv = 1.0 / (var + eps as f64).sqrt();
        let (mean, inv) = (mean as f32, inv as f32);
        for (i, v) in row.iter_mut().enumerate() {
            let mut y = (*v - mean) * inv;
            if let Some(w) = weight {
                y *= w[i];
            }
            if let Some(b) = bias {
                y += b[i];
            }
            *v = y;
        }
    });
    Ok(x)
}

/// `x / sqrt(mean(x²) + eps) * weight` (T5 LayerNorm, Wan's QK norm).
pub fn rms_norm(mut x: HostTensor, eps: f32, weight: Option<&[f32]>) -> Result<HostTensor> {
    let c = *x.shape().last().ok_or_else(|| Error::shape("rms_norm", "rank >= 1", x.shape()))?;
    check_affine("rms_norm weight", c, weight)?;
    x.data_mut().par_chunks_mut(c).for_each(|row| {
        let ms = row.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>() / c as f64;
        let inv = (1.0 / (ms + eps as f64).sqrt()) as f32;
        match weight {
            Some(w) => row.iter_mut().zip(w).for_each(|(v, &w)| *v = *v * inv * w),
            None => row.iter_mut().for_each(|v| *v *= inv),
        }
    });
    Ok(x)
}

/// `F.normalize(x, dim=1) · √C · γ` over the channels of `[B, C, …]`
/// (Wan VAE's `RMS_norm`: an L2 normalisation, eps 1e-12 on the norm).
pub fn l2_norm_channels(x: &HostTensor, gamma: &[f32]) -> Result<HostTensor> {
    l2_norm_channels_then(x, gamma, |v| v)
}

/// `silu(l2_norm_channels(x, γ))` in one pass (the Wan VAE's `norm → SiLU`), same values.
pub fn l2_norm_channels_silu(x: &HostTensor, gamma: &[f32]) -> Result<HostTensor> {
    l2_norm_channels_then(x, gamma, super::activation::silu_scalar)
}

fn l2_norm_channels_then(x: &HostTensor, gamma: &[f32], act: impl Fn(f32) -> f32 + Sync) -> Result<HostTensor> {
    if x.rank() < 2 || gamma.len() != x.dim(1) {
        return Err(Error::shape("l2_norm_channels", format!("[B, {}, …]", gamma.len()), x.shape()));
    }
    let (b, c) = (x.dim(0), x.dim(1));
    let spatial = x.numel() / (b * c).max(1);
    let scale = (c as f32).sqrt();
    let mut out = HostTensor::zeros(x.shape().to_vec());
    // Column blocks of positions: each task owns its positions in every channel.
    const BLOCK: usize = 4096;
    let src = x.data();
    let dst = SyncPtr(out.data_mut().as_mut_ptr());
    let tasks: Vec<(usize, usize)> =
        (0..b).flat_map(|bi| (0..spatial).step_by(BLOCK).map(move |p0| (bi, p0))).collect();
    tasks.par_iter().for_each(|&(bi, p0)| {
        let len = BLOCK.min(spatial - p0);
        let base = bi * c * spatial + p0;
        let mut inv = vec![0f32; len];
        for ci in 0..c {
            let row = &src[base + ci * spatial..base + ci * spatial + len];
            inv.iter_mut().zip(row).for_each(|(n, &v)| *n += v * v);
        }
        inv.iter_mut().for_each(|n| *n = 1.0 / n.sqrt().max(1e-12));
        for (ci, &g) in gamma.iter().enumerate() {
            let g = g * scale;
            let off = base + ci * spatial;
            // SAFETY: tasks cover disjoint (batch, position-block) ranges in every channel.
            let row = unsafe { std::slice::from_raw_parts_mut(dst.get().add(off), len) };
            row.iter_mut().zip(&src[off..off + len]).zip(&inv).for_each(|((o, &v), &i)| *o = act(v * i * g));
        }
    });
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_norm_zero_mean_unit_var() {
        let x = HostTensor::new([2, 4], vec![1.0, 2.0, 3.0, 4.0, -1.0, 0.0, 1.0, 10.0]).unwrap();
        let y = layer_norm(x, 1e-6, None, None).unwrap();
        for row in y.data().chunks(4) {
            let mean: f32 = row.iter().sum::<f32>() / 4.0;
            let var: f32 = row.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / 4.0;
            assert!(mean.abs() < 1e-6 && (var - 1.0).abs() < 1e-4);
        }
    }

    #[test]
    fn l2_norm_channels_unit_norm_per_position() {
        let x = HostTensor::new([1, 2, 3], vec![3.0, 0.0, 1.0, 4.0, 0.0, 1.0]).unwrap();
        let y = l2_norm_channels(&x, &[1.0, 1.0]).unwrap();
        let s = 2f32.sqrt();
        assert!((y.data()[0] - 0.6 * s).abs() < 1e-6 && (y.data()[3] - 0.8 * s).abs() < 1e-6);
        assert_eq!(y.data()[1], 0.0);
    }

    #[test]
    fn l2_norm_channels_silu_is_norm_then_silu() {
        let x = HostTensor::new([2, 3, 5], (0..30).map(|i| (i as f32 * 0.37).sin() * 3.0).collect()).unwrap();
        let g = [0.5, -1.0, 2.0];
        let want = crate::ops::silu(l2_norm_channels(&x, &g).unwrap());
        assert_eq!(l2_norm_channels_silu(&x, &g).unwrap().data(), want.data());
    }

    #[test]
    fn rms_norm_unit_rms() {
        let x = HostTensor::new([1, 3], vec![3.0, 4.0, 0.0]).unwrap();
        let y = rms_norm(x, 0.0, Some(&[1.0, 2.0, 1.0])).unwrap();
        let r = (25.0f32 / 3.0).sqrt();
        assert!((y.data()[1] - 8.0 / r).abs() < 1e-6);
    }
}
