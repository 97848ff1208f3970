//! SSIM as scikit-image 0.26's `skimage.metrics.structural_similarity(im1, im2,
//! gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0,
//! channel_axis=-1)` (`skimage/metrics/_structural_similarity.py`):
//!
//! - per channel, local statistics through `scipy.ndimage.gaussian_filter(sigma=1.5,
//!   truncate=3.5, mode="reflect")`: an 11-tap separable kernel (radius
//!   `int(3.5·1.5 + 0.5) = 5`), normalized to sum 1, half-sample symmetric borders;
//! - `S = (2μxμy + C1)(2σxy + C2) / ((μx² + μy² + C1)(σx² + σy² + C2))`, K1 = 0.01,
//!   K2 = 0.03, population covariances;
//! - the mean of `S` after cropping `(win_size − 1)/2 = 5` pixels from every border,
//!   then the mean over channels. Frames smaller than 11 pixels on a side are an error
//!   (skimage: "win_size exceeds image extent").

use crate::error::{EvalError, Result};
use crate::items::Frame;

const SIGMA: f64 = 1.5;
const TRUNCATE: f64 = 3.5;
const K1: f64 = 0.01;
const K2: f64 = 0.03;

fn radius() -> usize {
    (TRUNCATE * SIGMA + 0.5) as usize
}

fn gaussian_taps() -> Vec<f64> {
    let r = radius() as i64;
    let w: Vec<f64> = (-r..=r).map(|x| (-0.5 * (x * x) as f64 / (SIGMA * SIGMA)).exp()).collect();
    let s: f64 = w.iter().sum();
    w.into_iter().map(|v| v / s).collect()
}

/// scipy.ndimage's "reflect" (half-sample symmetric) index, for any offset.
fn reflect(i: i64, n: usize) -> usize {
    let n = n as i64;
    let p = 2 * n;
    let mut m = i.rem_euclid(p);
    if m >= n {
        m = p - 1 - m;
    }
    m as usize
}

/// `gaussian_filter` of a `[h, w]` plane: axis 0 then axis 1.
fn filter(x: &[f64], h: usize, w: usize, taps: &[f64]) -> Vec<f64> {
    let r = (taps.len() / 2) as i64;
    let mut tmp = vec![0.0; h * w];
    for i in 0..h {
        for j in 0..w {
            let mut s = 0.0;
            for (k, &t) in taps.iter().enumerate() {
                s += t * x[reflect(i as i64 + k as i64 - r, h) * w + j];
            }
            tmp[i * w + j] = s;
        }
    }
    let mut out = vec![0.0; h * w];
    for i in 0..h {
        for j in 0..w {
            let mut s = 0.0;
            for (k, &t) in taps.iter().enumerate() {
                s += t * tmp[i * w + reflect(j as i64 + k as i64 - r, w)];
            }
            out[i * w + j] = s;
        }
    }
    out
}

/// SSIM of one channel plane pair (values in [0, 1]).
fn ssim_plane(a: &[f64], b: &[f64], h: usize, w: usize) -> f64 {
    let taps = gaussian_taps();
    let prod = |p: &[f64], q: &[f64]| p.iter().zip(q).map(|(x, y)| x * y).collect::<Vec<_>>();
    let ux = filter(a, h, w, &taps);
    let uy = filter(b, h, w, &taps);
    let uxx = filter(&prod(a, a), h, w, &taps);
    let uyy = filter(&prod(b, b), h, w, &taps);
    let uxy = filter(&prod(a, b), h, w, &taps);
    let c1 = (K1 * 1.0f64).powi(2);
    let c2 = (K2 * 1.0f64).powi(2);
    let pad = (2 * radius() + 1 - 1) / 2;
    let mut sum = 0.0;
    let mut n = 0usize;
    for i in pad..h - pad {
        for j in pad..w - pad {
            let k = i * w + j;
            let vx = uxx[k] - ux[k] * ux[k];
            let vy = uyy[k] - uy[k] * uy[k];
            let vxy = uxy[k] - ux[k] * uy[k];
            let a1 = 2.0 * ux[k] * uy[k] + c1;
            let a2 = 2.0 * vxy + c2;
            let b1 = ux[k] * ux[k] + uy[k] * uy[k] + c1;
            let b2 = vx + vy + c2;
            sum += (a1 * a2) / (b1 * b2);
            n += 1;
        }
    }
    sum / n as f64
}

/// Mean SSIM of two equally sized RGB frames (scaled `x / 255`), mean over channels.
pub fn ssim(reference: &Frame, candidate: &Frame) -> Result<f64> {
    let (h, w) = (reference.height, reference.width);
    if (h, w) != (candidate.height, candidate.width) {
        return Err(EvalError::mismatch(
            "frame size",
            format!("{h}x{w}"),
            format!("{}x{}", candidate.height, candidate.width),
        ));
    }
    let win = 2 * radius() + 1;
    if h < win || w < win {
        return Err(EvalError::mismatch(
            "frame size for SSIM (win_size exceeds image extent)",
            format!("at least {win}x{win}"),
            format!("{h}x{w}"),
        ));
    }
    let plane = |f: &Frame, c: usize| -> Vec<f64> { f.data.chunks_exact(3).map(|p| p[c] as f64 / 255.0).collect() };
    let total: f64 = (0..3).map(|c| ssim_plane(&plane(reference, c), &plane(candidate, c), h, w)).sum();
    Ok(total / 3.0)
}
