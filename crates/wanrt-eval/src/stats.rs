//! Feature statistics for FID: mean and covariance in float64 with NumPy's semantics
//! (`np.mean(act, axis=0)`, `np.cov(act, rowvar=False)`, ddof = 1), as pytorch-fid 0.3.0's
//! `calculate_activation_statistics` computes them, plus mergeable sums.
//!
//! Sums are accumulated *exactly*: every product of two f32 features is exact in f64 and
//! is rounded onto a fixed grid of 2⁻⁶⁴ held in an i128, so addition is associative and a
//! set processed in shards and merged gives bit-identical statistics to one pass.
//!
//! The npz (numpy and pytorch-fid read it):
//!
//! | key | dtype, shape | what |
//! |---|---|---|
//! | `mu` | f64 `[d]` | mean (pytorch-fid reads it) |
//! | `sigma` | f64 `[d, d]` | covariance, ddof 1 (pytorch-fid reads it) |
//! | `n` | i64 `[]` | number of feature vectors |
//! | `sum` | i64 `[d, 2]` | Σx, exact: the i128 `hi·2⁶⁴ + lo` (lo as unsigned) times 2⁻⁶⁴ |
//! | `sum_outer` | i64 `[d(d+1)/2, 2]` | Σxxᵀ, exact like `sum`, upper triangle row by row |
//! | `fixed_point_bits` | i64 `[]` | 64: the grid 2⁻⁶⁴ of `sum` / `sum_outer` |
//!
//! Why the size (67 MB for d = 2048): pytorch-fid needs the full
//! f64 `sigma` (d² · 8 B = 33.5 MB), and exact merging needs the exact sums, which no f64
//! matrix holds (a sum of n products needs more than 53 bits); the upper triangle of i128
//! accumulators is d(d+1)/2 · 16 B = 33.6 MB. A float `sum_outer` would be redundant
//! (derivable from the exact one) and was dropped; `sigma` cannot be derived by
//! pytorch-fid, so it stays. Files written by earlier versions (f64 `sum` / `sum_outer`
//! plus `sum_fixed` / `sum_outer_fixed`) are still read and merged.

use std::path::Path;

use wanrt_io::{NpyArray, NpzReader};

use crate::error::{EvalError, Result};

const SCALE: f64 = 18446744073709551616.0; // 2^64

fn to_fixed(x: f64) -> i128 {
    (x * SCALE).round() as i128
}

fn from_fixed(v: i128) -> f64 {
    // exact split so that values beyond 2^53 ulps still round once
    let hi = (v >> 64) as f64;
    let lo = (v as u64) as f64 / SCALE;
    hi + lo
}

/// Running sums of features: count, Σx and Σxxᵀ (upper triangle), exactly.
#[derive(Clone, Debug, PartialEq)]
pub struct FeatureSums {
    dim: usize,
    n: u64,
    sum: Vec<i128>,
    outer: Vec<i128>,
}

impl FeatureSums {
    pub fn new(dim: usize) -> Self {
        FeatureSums { dim, n: 0, sum: vec![0; dim], outer: vec![0; dim * (dim + 1) / 2] }
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn count(&self) -> u64 {
        self.n
    }

    /// Adds one feature vector (must have `dim` finite values).
    pub fn add(&mut self, x: &[f32]) -> Result<()> {
        if x.len() != self.dim {
            return Err(EvalError::mismatch("feature dimension", self.dim, x.len()));
        }
        if let Some(i) = x.iter().position(|v| !v.is_finite()) {
            return Err(EvalError::Numeric(format!(
                "feature {i} is not finite ({}); the network produced NaN/inf",
                x[i]
            )));
        }
        let d = self.dim;
        for (s, &v) in self.sum.iter_mut().zip(x) {
            *s += to_fixed(v as f64);
        }
        let mut k = 0;
        for i in 0..d {
            let xi = x[i] as f64;
            let row = &mut self.outer[k..k + d - i];
            for (o, &xj) in row.iter_mut().zip(&x[i..]) {
                *o += to_fixed(xi * xj as f64);
            }
            k += d - i;
        }
        self.n += 1;
        Ok(())
    }

    /// Adds every row of a `[n, dim]` feature matrix.
    pub fn add_rows(&mut self, feats: &[f32]) -> Result<()> {
        if self.dim == 0 || feats.len() % self.dim != 0 {
            return Err(EvalError::mismatch(
                "feature matrix length",
                format!("a multiple of {}", self.dim),
                feats.len(),
            ));
        }
        feats.chunks_exact(self.dim).try_for_each(|r| self.add(r))
    }

    /// Exact merge: `self += other`.
    pub fn merge(&mut self, other: &FeatureSums) -> Result<()> {
        if other.dim != self.dim {
            return Err(EvalError::mismatch("feature dimension of merged statistics", self.dim, other.dim));
        }
        self.n += other.n;
        self.sum.iter_mut().zip(&other.sum).for_each(|(a, b)| *a += b);
        self.outer.iter_mut().zip(&other.outer).for_each(|(a, b)| *a += b);
        Ok(())
    }

    /// Σx as f64.
    pub fn sum_f64(&self) -> Vec<f64> {
        self.sum.iter().map(|&v| from_fixed(v)).collect()
    }

    /// Σxxᵀ as a full symmetric f64 matrix, row-major.
    pub fn sum_outer_f64(&self) -> Vec<f64> {
        let d = self.dim;
        let mut m = vec![0.0; d * d];
        let mut k = 0;
        for i in 0..d {
            for j in i..d {
                let v = from_fixed(self.outer[k]);
                m[i * d + j] = v;
                m[j * d + i] = v;
                k += 1;
            }
        }
        m
    }

    /// Mean and covariance (ddof = 1). Needs at least two samples.
    pub fn stats(&self) -> Result<FeatureStats> {
        if self.n < 2 {
            return Err(EvalError::TooFew {
                what: "feature statistics (covariance) samples".into(),
                need: 2,
                found: self.n as usize,
            });
        }
        let n = self.n as f64;
        let d = self.dim;
        let sum = self.sum_f64();
        let mu: Vec<f64> = sum.iter().map(|s| s / n).collect();
        let mut sigma = self.sum_outer_f64();
        for i in 0..d {
            for j in 0..d {
                sigma[i * d + j] = (sigma[i * d + j] - sum[i] * sum[j] / n) / (n - 1.0);
            }
        }
        Ok(FeatureStats { dim: d, n: Some(self.n), mu, sigma, sums: Some(self.clone()) })
    }

    fn fixed_pairs(v: &[i128]) -> Vec<i64> {
        v.iter().flat_map(|&x| [(x >> 64) as i64, x as u64 as i64]).collect()
    }

    fn from_pairs(p: &[i64]) -> Vec<i128> {
        p.chunks_exact(2).map(|c| ((c[0] as i128) << 64) | (c[1] as u64 as i128)).collect()
    }
}

/// Mean/covariance of a feature set, with the exact sums when known.
#[derive(Clone, Debug)]
pub struct FeatureStats {
    pub dim: usize,
    /// Number of samples (unknown for pytorch-fid-made npz files).
    pub n: Option<u64>,
    pub mu: Vec<f64>,
    /// `[dim, dim]` row-major.
    pub sigma: Vec<f64>,
    pub sums: Option<FeatureSums>,
}

impl FeatureStats {
    /// Statistics of a `[n, dim]` feature matrix.
    pub fn from_features(feats: &[f32], dim: usize) -> Result<Self> {
        let mut s = FeatureSums::new(dim);
        s.add_rows(feats)?;
        s.stats()
    }

    /// Writes the npz (atomically): `mu`, `sigma`, and when known `n`, `sum`,
    /// `sum_outer`, `fixed_point_bits` (see the module doc).
    pub fn write_npz(&self, path: &Path) -> Result<()> {
        let d = self.dim;
        let mu = NpyArray::new(vec![d], self.mu.clone())?;
        let sigma = NpyArray::new(vec![d, d], self.sigma.clone())?;
        let mut arrays: Vec<(&str, NpyArray)> = vec![("mu", mu), ("sigma", sigma)];
        if let Some(s) = &self.sums {
            arrays.push(("n", NpyArray::new(vec![], vec![s.n as i64])?));
            arrays.push(("sum", NpyArray::new(vec![d, 2], FeatureSums::fixed_pairs(&s.sum))?));
            arrays.push(("sum_outer", NpyArray::new(vec![s.outer.len(), 2], FeatureSums::fixed_pairs(&s.outer))?));
            arrays.push(("fixed_point_bits", NpyArray::new(vec![], vec![64i64])?));
        }
        let refs: Vec<(&str, &NpyArray)> = arrays.iter().map(|(k, a)| (*k, a)).collect();
        wanrt_io::write_npz(path, &refs)?;
        Ok(())
    }

    /// Reads an npz written by [`write_npz`](Self::write_npz) or by pytorch-fid
    /// (`mu`, `sigma` only: usable for FID, not mergeable).
    pub fn read_npz(path: &Path) -> Result<Self> {
        let mut r = NpzReader::open(path)?;
        let mu = r.read("mu")?;
        let sigma = r.read("sigma")?;
        let d = match mu.shape() {
            [d] => *d,
            s => return Err(EvalError::input(path, format!("`mu` must be 1-D, found shape {s:?}"))),
        };
        if sigma.shape() != [d, d] {
            return Err(EvalError::input(
                path,
                format!("`sigma` must be [{d}, {d}] to match `mu`, found {:?}", sigma.shape()),
            ));
        }
        let mut out = FeatureStats { dim: d, n: None, mu: mu.to_f64_vec(), sigma: sigma.to_f64_vec(), sums: None };
        if r.contains("n") {
            let n = r.read("n")?.to_f64_vec();
            out.n = n.first().map(|&v| v as u64);
        }
        // exact sums: `sum` / `sum_outer` as int64 pairs, or (older files) `sum_fixed` /
        // `sum_outer_fixed` beside float copies
        let keys = if r.contains("sum_outer_fixed") { ("sum_fixed", "sum_outer_fixed") } else { ("sum", "sum_outer") };
        if r.contains(keys.0) && r.contains(keys.1) {
            let sf = r.read(keys.0)?;
            let so = r.read(keys.1)?;
            let exact = sf.dtype() == wanrt_io::NpyDType::I64 && so.dtype() == wanrt_io::NpyDType::I64;
            if exact {
                if sf.shape() != [d, 2] || so.shape() != [d * (d + 1) / 2, 2] {
                    return Err(EvalError::input(
                        path,
                        format!("`{}`/`{}` do not match the feature dimension {d}", keys.0, keys.1),
                    ));
                }
                if r.contains("fixed_point_bits") {
                    let bits = r.read("fixed_point_bits")?.to_f64_vec();
                    if bits.first() != Some(&64.0) {
                        return Err(EvalError::input(path, format!("`fixed_point_bits` {bits:?}: only 64 is known")));
                    }
                }
                out.sums = Some(FeatureSums {
                    dim: d,
                    n: out.n.ok_or_else(|| EvalError::input(path, "has sums but no `n`"))?,
                    sum: FeatureSums::from_pairs(&sf.to_vec::<i64>()?),
                    outer: FeatureSums::from_pairs(&so.to_vec::<i64>()?),
                });
            }
        }
        Ok(out)
    }
}

/// `wanrt eval stats --merge`: exact merge of npz statistics made by `wanrt eval stats`.
pub fn merge_stats(paths: &[&Path]) -> Result<FeatureStats> {
    let Some(first) = paths.first() else {
        return Err(EvalError::TooFew { what: "statistics files to merge".into(), need: 1, found: 0 });
    };
    let mut acc: Option<FeatureSums> = None;
    for p in paths {
        let s = FeatureStats::read_npz(p)?;
        let Some(sums) = s.sums else {
            return Err(EvalError::input(
                p,
                "has no `n`/`sum`/`sum_outer` (made by pytorch-fid?): only statistics \
                 written by `wanrt eval stats` can be merged",
            ));
        };
        match &mut acc {
            None => acc = Some(sums),
            Some(a) => a.merge(&sums).map_err(|e| EvalError::input(p, e.to_string()))?,
        }
    }
    acc.ok_or_else(|| EvalError::input(first, "nothing to merge"))?.stats()
}
