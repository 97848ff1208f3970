//! PSNR as scikit-image 0.26's `skimage.metrics.peak_signal_noise_ratio(image_true,
//! image_test, data_range=1.0)`: `10·log10(R² / mse)` over all pixels and channels in
//! float64. Identical frames give +∞ (serialized as `null` in JSON).

use crate::error::{EvalError, Result};
use crate::items::Frame;

/// PSNR of two equally sized frames, both scaled to [0, 1] (`x / 255`).
pub fn psnr(reference: &Frame, candidate: &Frame) -> Result<f64> {
    if (reference.height, reference.width) != (candidate.height, candidate.width) {
        return Err(EvalError::mismatch(
            "frame size",
            format!("{}x{}", reference.height, reference.width),
            format!("{}x{}", candidate.height, candidate.width),
        ));
    }
    let mse = reference
        .data
        .iter()
        .zip(&candidate.data)
        .map(|(&a, &b)| {
            let d = a as f64 / 255.0 - b as f64 / 255.0;
            d * d
        })
        .sum::<f64>()
        / reference.data.len() as f64;
    Ok(10.0 * (1.0 / mse).log10())
}
