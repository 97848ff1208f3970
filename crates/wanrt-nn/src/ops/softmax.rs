//! Numerically stable softmax over the last dimension.

use super::activation::exp_approx;
use crate::Tensor;
use rayon::prelude::*;

/// Lanes of the explicit max/sum reductions: a fixed summation order on every instruction set.
const LANES: usize = 8;

/// `softmax(row)` in place. The exponential is [`exp_approx`] (vectorized; libm's scalar `expf`
/// made the softmax cost more than the Q·Kᵀ GEMM of long-sequence attention).
pub fn softmax_row(row: &mut [f32]) {
    super::vectorized(|| softmax_row_impl(row))
}

#[inline(always)]
fn softmax_row_impl(row: &mut [f32]) {
    let max2 = |a: f32, b: f32| if b > a { b } else { a };
    let mut mx = [f32::NEG_INFINITY; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for ch in &mut chunks {
        mx.iter_mut().zip(ch).for_each(|(m, &x)| *m = max2(*m, x));
    }
    let max = chunks.remainder().iter().chain(&mx).fold(f32::NEG_INFINITY, |a, &x| max2(a, x));
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

pub fn softmax_last_dim(mut t: Tensor) -> Tensor {
    let c = *t.shape().last().unwrap_or(&1);
    if c > 0 {
        t.data_mut().par_chunks_mut(c).for_each(softmax_row);
    }
    t
}
