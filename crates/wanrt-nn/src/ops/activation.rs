//! Pointwise activations, parallel over large tensors and vectorized.
//!
//! GELU(tanh) and SiLU are both `x · σ(k·x)`-shaped, so they are computed as `x / (1 + e^(−z))`
//! with a polynomial `e^z` ([`exp_approx`], relative error < 10⁻⁶ for |z| ≤ 10) that the compiler
//! vectorizes: libm's scalar `tanhf`/`expf` run one element at a time, and the FFN's GELU alone is
//! 30 blocks × tokens × 8960 channels per Wan2.1-1.3B step (the softmax of long-sequence
//! attention: one exp per score); the vectorized f32 attention is 3.1× faster at 2304 tokens
//! (bench/results/quant-kernels.md).
//! Plain mul/add (no fused multiply-add: Rust never contracts) keeps every path bit-identical.

use super::PAR_MIN;
use crate::HostTensor;
use rayon::prelude::*;

/// `e^x` for any f32 `x`: `2^(x·log2 e)` by [`exp2_clamped`]. Saturates at `2^-125` / `2^127`
/// for |x| ≳ 87 (callers add it to 1 or divide by it, where that is exact enough); for NaN,
/// callers rely on the NaN in their numerator.
#[inline(always)]
pub fn exp_approx(x: f32) -> f32 {
    exp2_clamped((x * std::f32::consts::LOG2_E).clamp(-125.0, 127.0))
}

/// `2^t` for `t ∈ [−125, 127]`: `2^n · 2^f` with `n = round(t)`, `|f| ≤ ½`, and a degree-6 Taylor
/// polynomial of `2^f = e^(f ln 2)` (remainder below 1.2·10⁻⁷), all plain f32 code that vectorizes.
#[inline(always)]
pub(crate) fn exp2_clamped(t: f32) -> f32 {
    let n = super::round_to_int(t);
    let f = t - ((t + super::ROUND_MAGIC) - super::ROUND_MAGIC);
    let p = 1.0
        + f * (std::f32::consts::LN_2
            + f * (0.240_226_5
                + f * (0.055_504_11 + f * (0.009_618_129 + f * (0.001_333_355_8 + f * 0.000_154_035_3)))));
    f32::from_bits((p.to_bits() as i32).wrapping_add(n << 23) as u32)
}

/// GELU with the tanh approximation (PyTorch `approximate="tanh"`, HF `gelu_new`):
/// `½x(1 + tanh(u)) = x / (1 + e^(−2u))`, `u = √(2/π)(x + 0.044715x³)`.
#[inline(always)]
pub fn gelu_tanh_scalar(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    x / (1.0 + exp_approx(-2.0 * SQRT_2_OVER_PI * (x + 0.044715 * x * x * x)))
}

#[inline(always)]
pub fn silu_scalar(x: f32) -> f32 {
    x / (1.0 + exp_approx(-x))
}

/// CLIP's `quick_gelu`, `x·σ(1.702·x)`: SiLU's form with a steeper sigmoid.
#[inline(always)]
pub fn quick_gelu_scalar(x: f32) -> f32 {
    x / (1.0 + exp_approx(-1.702 * x))
}

/// Exact GELU `½x(1 + erf(x/√2))` (PyTorch's default `nn.GELU()`), with [`erf`].
#[inline(always)]
pub fn gelu_erf_scalar(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x / std::f32::consts::SQRT_2))
}

#[inline(always)]
pub fn relu_scalar(x: f32) -> f32 {
    x.max(0.0)
}

/// `erf(x)` from Numerical Recipes' Chebyshev fit of `erfc` (fractional error < 1.2·10⁻⁷),
/// evaluated in f64: the standard library has no `erf`, and this is well inside f32 rounding.
pub fn erf(x: f32) -> f32 {
    let x = x as f64;
    let t = 1.0 / (1.0 + 0.5 * x.abs());
    let y = 1.0
        - t * (-x * x - 1.26551223
            + t * (1.00002368
                + t * (0.37409196
                    + t * (0.09678418
                        + t * (-0.18628806
                            + t * (0.27886807
                                + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))))
            .exp();
    (if x >= 0.0 { y } else { -y }) as f32
}

/// `f` over `data`, in parallel chunks, vectorized (same bits on every path: no FMA contraction).
pub(crate) fn apply_inplace(data: &mut [f32], f: impl Fn(f32) -> f32 + Sync + Copy) {
    if data.len() >= PAR_MIN {
        data.par_chunks_mut(PAR_MIN / 4).for_each(|c| apply_chunk(c, f));
    } else {
        apply_chunk(data, f);
    }
}

#[inline(always)]
fn apply_chunk(data: &mut [f32], f: impl Fn(f32) -> f32 + Copy) {
    super::vectorized(|| data.iter_mut().for_each(|x| *x = f(*x)));
}

/// `f` applied to every value of `t` (in place when `t` holds the only reference to them).
pub fn map(mut t: HostTensor, f: impl Fn(f32) -> f32 + Sync + Copy) -> HostTensor {
    apply_inplace(t.data_mut(), f);
    t
}

pub fn gelu_tanh(t: HostTensor) -> HostTensor {
    map(t, gelu_tanh_scalar)
}

pub fn silu(t: HostTensor) -> HostTensor {
    map(t, silu_scalar)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid() -> impl Iterator<Item = f32> {
        (-200_000..=200_000).map(|i| i as f32 * 1e-4)
    }

    #[test]
    fn exp_approx_relative_error() {
        // Near 0 the polynomial bounds the error; far out, the rounding of x·log2 e does (its ulp).
        for (scale, bound) in [(0.5f32, 1e-6), (4.3, 4e-6)] {
            let mut worst = 0f64;
            for x in grid().map(|x| x * scale) {
                let want = (x as f64).exp();
                worst = worst.max(((exp_approx(x) as f64 - want) / want).abs());
            }
            assert!(worst < bound, "|x| ≤ {}: {worst:e}", 20.0 * scale);
        }
        assert_eq!(exp_approx(0.0), 1.0);
        assert!(exp_approx(-1000.0) < 1e-37 && exp_approx(1000.0) > 1e38 && exp_approx(1000.0).is_finite());
    }

    #[test]
    fn gelu_and_silu_match_their_definitions() {
        let (mut g, mut s) = (0f64, 0f64);
        for x in grid() {
            let xd = x as f64;
            let u = (2.0 / std::f64::consts::PI).sqrt() * (xd + 0.044715 * xd.powi(3));
            g = g.max((gelu_tanh_scalar(x) as f64 - 0.5 * xd * (1.0 + u.tanh())).abs() / xd.abs().max(1.0));
            s = s.max((silu_scalar(x) as f64 - xd / (1.0 + (-xd).exp())).abs() / xd.abs().max(1.0));
        }
        assert!(g < 1e-6 && s < 1e-6, "gelu {g:e}, silu {s:e}");
        assert!(gelu_tanh_scalar(f32::NAN).is_nan() && silu_scalar(f32::NAN).is_nan());
        assert!(gelu_tanh_scalar(-30.0).abs() < 1e-30);
        assert_eq!(silu_scalar(50.0), 50.0);
    }

    #[test]
    fn quick_gelu_erf_gelu_and_relu_match_their_definitions() {
        let mut q = 0f64;
        for x in grid() {
            let xd = x as f64;
            q = q.max((quick_gelu_scalar(x) as f64 - xd / (1.0 + (-1.702 * xd).exp())).abs() / xd.abs().max(1.0));
        }
        assert!(q < 1e-6, "quick_gelu {q:e}");
        // x·Φ(x) from scipy.stats.norm.cdf (float64).
        for (x, want) in
            [(1.0f32, 0.841_344_746_068_542_9), (-1.0, -0.158_655_253_931_457_05), (2.5, 2.484_475_836_685_559_7)]
        {
            assert!((gelu_erf_scalar(x) as f64 - want).abs() < 1e-6, "gelu({x})");
        }
        // Φ(x) + Φ(−x) = 1, so gelu(x) − gelu(−x) = x; erf is odd.
        for x in grid().step_by(101) {
            assert!((gelu_erf_scalar(x) - gelu_erf_scalar(-x) - x).abs() <= 1e-6 * x.abs().max(1.0));
            assert_eq!(erf(x), -erf(-x));
        }
        assert_eq!((relu_scalar(-2.0), relu_scalar(0.0), relu_scalar(3.5)), (0.0, 0.0, 3.5));
    }

    #[test]
    fn vector_path_equals_scalar_path() {
        let data: Vec<f32> = grid().step_by(7).collect();
        let mut vectorized = data.clone();
        apply_inplace(&mut vectorized, gelu_tanh_scalar);
        let scalar: Vec<f32> = data.iter().map(|&x| gelu_tanh_scalar(x)).collect();
        assert_eq!(vectorized, scalar);
    }
}
