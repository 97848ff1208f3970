//! Numerically stable softmax over the last dimension.

use super::activation::exp_approx;
use super::{lane_max, LANES};
use crate::HostTensor;
use rayon::prelude::*;

/// `softmax(row)` in place. The exponential is [`exp_approx`] (vectorized; libm's scalar `expf`
/// made the softmax cost more than the Q·Kᵀ GEMM of long-sequence attention).
pub fn softmax_row(row: &mut [f32]) {
    super::vectorized(|| softmax_row_impl(row))
}

#[inline(always)]
fn softmax_row_impl(row: &mut [f32]) {
    let max = lane_max(row, f32::NEG_INFINITY, |x| x);
    if max == f32::NEG_INFINITY {
        // A fully masked row: PyTorch yields NaN; we yield zeros so masked
        // queries contribute nothing instead of poisoning the output.
        row.iter_mut().for_each(|x| *x = 0.0);
        return;
    }
    // exp(−inf) must be exactly 0 (masked keys); exp_approx saturates at ≈2⁻¹²⁵ there.
    row.iter_mut().for_each(|x| *x = if *x == f32::NEG_INFINITY { 0.0 } else { exp_approx(*x - max) });
    let mut sums = [0.0f32; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for ch in &mut chunks {
        sums.iter_mut().zip(ch).for_each(|(a, &x)| *a += x);
    }
    let sum = chunks.remainder().iter().chain(&sums).fold(0.0f32, |a, &x| a + x);
    let inv = 1.0 / sum;
    row.iter_mut().for_each(|x| *x *= inv);
}

pub fn softmax_last_dim(mut t: HostTensor) -> HostTensor {
    let c = *t.shape().last().unwrap_or(&1);
    if c > 0 {
        t.data_mut().par_chunks_mut(c).for_each(softmax_row);
    }
    t
}
