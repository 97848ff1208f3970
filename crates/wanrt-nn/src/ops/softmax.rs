//! Numerically stable softmax over the last dimension.

use crate::Tensor;
use rayon::prelude::*;

pub fn softmax_row(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        // A fully masked row: PyTorch yields NaN; we yield zeros so masked
        // queries contribute nothing instead of poisoning the output.
        row.iter_mut().for_each(|x| *x = 0.0);
        return;
    }
    let mut sum = 0.0f32;
    for x in row.iter_mut() {
        *x = (*x - max).exp();
        sum += *x;
    }
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
