//! The Fréchet distance between two Gaussians, as pytorch-fid 0.3.0's
//! `calculate_frechet_distance` (`pytorch_fid/fid_score.py`):
//! `‖μ₁−μ₂‖² + tr Σ₁ + tr Σ₂ − 2 tr √(Σ₁Σ₂)`.
//!
//! pytorch-fid takes `scipy.linalg.sqrtm(Σ₁Σ₂)` and keeps its trace. The trace of the
//! principal square root is the sum of the square roots of the eigenvalues of Σ₁Σ₂, which
//! are those of the symmetric `Aᵀ Σ₂ A` with `A Aᵀ = Σ₁` (`A = U √Λ` from Σ₁'s symmetric
//! eigendecomposition). Two symmetric eigensolves (faer, float64) give the same trace
//! stably even when the product is singular (fewer samples than dimensions). Eigenvalues
//! that round below zero contribute nothing, as their purely imaginary roots are dropped
//! by pytorch-fid's `covmean.real`. When the result is not finite pytorch-fid retries with
//! `eps·I` added to both covariances; so does this.

use faer::{Mat, Side};

use crate::error::{EvalError, Result};
use crate::stats::FeatureStats;

/// pytorch-fid's default offset for the near-singular retry.
pub const EPS: f64 = 1e-6;

fn eig_err(e: faer::linalg::evd::EvdError) -> EvalError {
    EvalError::Numeric(format!("eigendecomposition failed: {e:?}"))
}

/// `tr √(Σ₁Σ₂)` for symmetric positive semi-definite `[d, d]` row-major matrices.
pub fn trace_sqrt_product(s1: &[f64], s2: &[f64], d: usize) -> Result<f64> {
    if s1.len() != d * d || s2.len() != d * d {
        return Err(EvalError::mismatch("covariance size", d * d, format!("{} and {}", s1.len(), s2.len())));
    }
    // symmetrize: round-off may leave the inputs a hair off
    let a = Mat::from_fn(d, d, |i, j| 0.5 * (s1[i * d + j] + s1[j * d + i]));
    let b = Mat::from_fn(d, d, |i, j| 0.5 * (s2[i * d + j] + s2[j * d + i]));
    let e = a.self_adjoint_eigen(Side::Lower).map_err(eig_err)?;
    let lam = e.S().column_vector();
    let mut half = e.U().to_owned();
    for j in 0..d {
        let w = lam[j].max(0.0).sqrt();
        for i in 0..d {
            half[(i, j)] *= w;
        }
    }
    let bm = &b * &half;
    let m = half.transpose() * &bm;
    let m = Mat::from_fn(d, d, |i, j| 0.5 * (m[(i, j)] + m[(j, i)]));
    let ev = m.self_adjoint_eigenvalues(Side::Lower).map_err(eig_err)?;
    Ok(ev.iter().map(|&v| v.max(0.0).sqrt()).sum())
}

/// pytorch-fid's `calculate_frechet_distance(mu1, sigma1, mu2, sigma2, eps=1e-6)`.
pub fn frechet_distance(mu1: &[f64], sigma1: &[f64], mu2: &[f64], sigma2: &[f64]) -> Result<f64> {
    let d = mu1.len();
    if mu2.len() != d {
        return Err(EvalError::mismatch("mean vector lengths (feature dimensions) of the two sets", d, mu2.len()));
    }
    if sigma1.len() != d * d || sigma2.len() != d * d {
        return Err(EvalError::mismatch(
            "covariance dimensions of the two sets",
            format!("{d}x{d}"),
            format!("{} and {} elements", sigma1.len(), sigma2.len()),
        ));
    }
    if mu1.iter().chain(mu2).chain(sigma1).chain(sigma2).any(|v| !v.is_finite()) {
        return Err(EvalError::Numeric("statistics contain NaN or infinity".into()));
    }
    let diff: f64 = mu1.iter().zip(mu2).map(|(a, b)| (a - b) * (a - b)).sum();
    let tr1: f64 = (0..d).map(|i| sigma1[i * d + i]).sum();
    let tr2: f64 = (0..d).map(|i| sigma2[i * d + i]).sum();
    let mut tr_covmean = trace_sqrt_product(sigma1, sigma2, d)?;
    if !tr_covmean.is_finite() {
        eprintln!("fid calculation produces singular product; adding {EPS} to diagonal of cov estimates");
        let off = |s: &[f64]| {
            let mut s = s.to_vec();
            (0..d).for_each(|i| s[i * d + i] += EPS);
            s
        };
        tr_covmean = trace_sqrt_product(&off(sigma1), &off(sigma2), d)?;
        if !tr_covmean.is_finite() {
            return Err(EvalError::Numeric("matrix square root of the covariance product is not finite".into()));
        }
    }
    Ok(diff + tr1 + tr2 - 2.0 * tr_covmean)
}

/// Fréchet distance between two [`FeatureStats`].
pub fn frechet_distance_stats(a: &FeatureStats, b: &FeatureStats) -> Result<f64> {
    if a.dim != b.dim {
        return Err(EvalError::mismatch("feature dimensions of the two sets", a.dim, b.dim));
    }
    frechet_distance(&a.mu, &a.sigma, &b.mu, &b.sigma)
}
