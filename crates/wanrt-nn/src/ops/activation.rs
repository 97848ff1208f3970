//! Pointwise activations, parallel over large tensors.

use super::PAR_MIN;
use crate::Tensor;
use rayon::prelude::*;

pub(crate) fn apply_inplace(data: &mut [f32], f: impl Fn(f32) -> f32 + Sync) {
    if data.len() >= PAR_MIN {
        data.par_chunks_mut(PAR_MIN / 4).for_each(|c| c.iter_mut().for_each(|x| *x = f(*x)));
    } else {
        data.iter_mut().for_each(|x| *x = f(*x));
    }
}

/// GELU with the tanh approximation (PyTorch `approximate="tanh"`, HF `gelu_new`).
#[inline]
pub fn gelu_tanh_scalar(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * (x + 0.044715 * x * x * x)).tanh())
}

#[inline]
pub fn silu_scalar(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

pub fn gelu_tanh(mut t: Tensor) -> Tensor {
    apply_inplace(t.data_mut(), gelu_tanh_scalar);
    t
}

pub fn silu(mut t: Tensor) -> Tensor {
    apply_inplace(t.data_mut(), silu_scalar);
    t
}
