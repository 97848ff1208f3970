//! Shared helpers of the parity tests (fixtures from tools/fixtures/make_eval_fixtures.py).
#![allow(dead_code)]

use std::path::PathBuf;

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/eval")
}

pub fn json(path: &std::path::Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e} (run tools/fixtures/make_eval_fixtures.py)", path.display()));
    serde_json::from_str(&text).unwrap()
}

pub fn rel_err(got: f64, want: f64) -> f64 {
    (got - want).abs() / want.abs().max(1e-300)
}

/// Mean and ddof=1 covariance of f64 rows, as numpy computes them.
pub fn mean_cov(rows: &[Vec<f64>]) -> (Vec<f64>, Vec<f64>) {
    let n = rows.len() as f64;
    let d = rows[0].len();
    let mu: Vec<f64> = (0..d).map(|j| rows.iter().map(|r| r[j]).sum::<f64>() / n).collect();
    let mut cov = vec![0.0; d * d];
    for i in 0..d {
        for j in 0..d {
            cov[i * d + j] = rows.iter().map(|r| (r[i] - mu[i]) * (r[j] - mu[j])).sum::<f64>() / (n - 1.0);
        }
    }
    (mu, cov)
}
