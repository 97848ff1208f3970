//! Kernel Inception Distance as torchmetrics 1.9.0 computes it
//! (`torchmetrics/image/kid.py`: `poly_kernel`, `maximum_mean_discrepancy`,
//! `KernelInceptionDistance.compute`): cubic polynomial kernel
//! `k(x, y) = (γ·xᵀy + 1)³` with γ = 1/d, the unbiased MMD² estimate per subset, subsets
//! of `subset_size` drawn without replacement from each set, and the mean and population
//! standard deviation (`std(unbiased=False)`) over subsets. Computed in float64.
//!
//! torchmetrics draws subsets with `torch.randperm`; this uses its own seeded generator,
//! so with several random subsets the values differ from a torch run by sampling noise.
//! With one subset of the full size (`--subsets 1 --subset-size n`, both sets of size n)
//! the result is deterministic and equal to torchmetrics (MMD does not depend on order).

use faer::Mat;
use serde::Serialize;

use crate::error::{EvalError, Result};

/// Defaults of torchmetrics' `KernelInceptionDistance`.
pub const DEFAULT_SUBSETS: usize = 100;
pub const DEFAULT_SUBSET_SIZE: usize = 1000;

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct KidResult {
    pub kid_mean: f64,
    pub kid_std: f64,
    pub subsets: usize,
    pub subset_size: usize,
    pub seed: u64,
}

/// Options of [`kid`].
#[derive(Clone, Copy, Debug)]
pub struct KidOptions {
    pub subsets: usize,
    pub subset_size: usize,
    pub degree: i32,
    /// `None` = 1/d.
    pub gamma: Option<f64>,
    pub coef: f64,
    pub seed: u64,
}

impl Default for KidOptions {
    fn default() -> Self {
        KidOptions {
            subsets: DEFAULT_SUBSETS,
            subset_size: DEFAULT_SUBSET_SIZE,
            degree: 3,
            gamma: None,
            coef: 1.0,
            seed: 0,
        }
    }
}

/// splitmix64: a small, well-known generator for the subset permutations.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (((self.next() >> 11) as f64 / (1u64 << 53) as f64) * n as f64) as usize
    }
    /// The first `k` entries of a uniform random permutation of `0..n`.
    fn subset(&mut self, n: usize, k: usize) -> Vec<usize> {
        let mut p: Vec<usize> = (0..n).collect();
        for i in 0..k.min(n) {
            let j = i + self.below(n - i);
            p.swap(i, j);
        }
        p.truncate(k);
        p
    }
}

/// Σ of `(γ·AᵢᵀBⱼ + c)^degree` over all (i, j), minus the diagonal when `skip_diag`.
fn kernel_sum(a: &Mat<f64>, b: &Mat<f64>, gamma: f64, coef: f64, degree: i32, skip_diag: bool) -> f64 {
    let g = a * b.transpose();
    let mut s = 0.0;
    for j in 0..g.ncols() {
        for i in 0..g.nrows() {
            if !(skip_diag && i == j) {
                s += (g[(i, j)] * gamma + coef).powi(degree);
            }
        }
    }
    s
}

/// torchmetrics' `poly_mmd` on two `[m, d]` row sets of equal size m ≥ 2.
pub fn poly_mmd(x: &[&[f64]], y: &[&[f64]], degree: i32, gamma: Option<f64>, coef: f64) -> f64 {
    let m = x.len();
    let d = x.first().map_or(1, |r| r.len());
    let gamma = gamma.unwrap_or(1.0 / d as f64);
    let a = Mat::from_fn(m, d, |i, j| x[i][j]);
    let b = Mat::from_fn(m, d, |i, j| y[i][j]);
    let kxx = kernel_sum(&a, &a, gamma, coef, degree, true);
    let kyy = kernel_sum(&b, &b, gamma, coef, degree, true);
    let kxy = kernel_sum(&a, &b, gamma, coef, degree, false);
    let m = m as f64;
    (kxx + kyy) / (m * (m - 1.0)) - 2.0 * kxy / (m * m)
}

/// KID between two feature sets given as `[n, d]` row-major matrices.
pub fn kid(real: &[f64], fake: &[f64], dim: usize, opts: &KidOptions) -> Result<KidResult> {
    if dim == 0 || real.len() % dim != 0 || fake.len() % dim != 0 {
        return Err(EvalError::mismatch(
            "feature matrices",
            format!("rows of {dim} values"),
            format!("{} and {} values", real.len(), fake.len()),
        ));
    }
    let (nr, nf) = (real.len() / dim, fake.len() / dim);
    if opts.subset_size < 2 {
        return Err(EvalError::TooFew { what: "KID subset size".into(), need: 2, found: opts.subset_size });
    }
    for (what, n) in [("real", nr), ("fake", nf)] {
        if n < opts.subset_size {
            return Err(EvalError::TooFew {
                what: format!("{what} samples for KID subsets of {} (lower --subset-size)", opts.subset_size),
                need: opts.subset_size,
                found: n,
            });
        }
    }
    if opts.subsets == 0 {
        return Err(EvalError::TooFew { what: "KID subsets".into(), need: 1, found: 0 });
    }
    let rows_r: Vec<&[f64]> = real.chunks_exact(dim).collect();
    let rows_f: Vec<&[f64]> = fake.chunks_exact(dim).collect();
    let mut rng = SplitMix(opts.seed);
    let mut scores = Vec::with_capacity(opts.subsets);
    for _ in 0..opts.subsets {
        let pr = rng.subset(nr, opts.subset_size);
        let pf = rng.subset(nf, opts.subset_size);
        let x: Vec<&[f64]> = pr.iter().map(|&i| rows_r[i]).collect();
        let y: Vec<&[f64]> = pf.iter().map(|&i| rows_f[i]).collect();
        scores.push(poly_mmd(&x, &y, opts.degree, opts.gamma, opts.coef));
    }
    let n = scores.len() as f64;
    let mean = scores.iter().sum::<f64>() / n;
    let var = scores.iter().map(|s| (s - mean) * (s - mean)).sum::<f64>() / n;
    Ok(KidResult {
        kid_mean: mean,
        kid_std: var.sqrt(),
        subsets: opts.subsets,
        subset_size: opts.subset_size,
        seed: opts.seed,
    })
}
