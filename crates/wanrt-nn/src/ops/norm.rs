//! LayerNorm and RMSNorm over the last dimension, accumulated in f64 for the
//! mean/variance so long rows (d = 5120) don't drift from PyTorch's f32 result.

use crate::error::{Error, Result};
use crate::Tensor;
use rayon::prelude::*;

fn check_affine(op: &'static str, c: usize, p: Option<&[f32]>) -> Result<()> {
    match p {
        Some(p) if p.len() != c => Err(Error::shape(op, c, p.len())),
        _ => Ok(()),
    }
}

/// `(x - mean) / sqrt(var + eps) * weight + bias`, biased variance as PyTorch.
pub fn layer_norm(mut x: Tensor, eps: f32, weight: Option<&[f32]>, bias: Option<&[f32]>) -> Result<Tensor> {
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
pub fn rms_norm(mut x: Tensor, eps: f32, weight: Option<&[f32]>) -> Result<Tensor> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_norm_zero_mean_unit_var() {
        let x = Tensor::new([2, 4], vec![1.0, 2.0, 3.0, 4.0, -1.0, 0.0, 1.0, 10.0]).unwrap();
        let y = layer_norm(x, 1e-6, None, None).unwrap();
        for row in y.data().chunks(4) {
            let mean: f32 = row.iter().sum::<f32>() / 4.0;
            let var: f32 = row.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / 4.0;
            assert!(mean.abs() < 1e-6 && (var - 1.0).abs() < 1e-4);
        }
    }

    #[test]
    fn rms_norm_unit_rms() {
        let x = Tensor::new([1, 3], vec![3.0, 4.0, 0.0]).unwrap();
        let y = rms_norm(x, 0.0, Some(&[1.0, 2.0, 1.0])).unwrap();
        let r = (25.0f32 / 3.0).sqrt();
        assert!((y.data()[1] - 8.0 / r).abs() < 1e-6);
    }
}
