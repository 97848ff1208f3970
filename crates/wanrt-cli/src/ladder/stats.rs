//! The ladder's statistics: medians and spreads of timings, percentile-bootstrap intervals of
//! means and of set-level metrics (Fréchet distances), deterministic for a given seed.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

/// Median and spread of repeated timings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    /// Median absolute deviation (robust to the odd slow repeat on a busy machine).
    pub mad: f64,
    pub n: usize,
}

/// Median of the values (mean of the middle two for an even count); `None` when empty or when
/// a value is not finite.
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() || values.iter().any(|v| !v.is_finite()) {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 { v[m] } else { (v[m - 1] + v[m]) / 2.0 })
}

pub fn spread(values: &[f64]) -> Option<Spread> {
    let med = median(values)?;
    let dev: Vec<f64> = values.iter().map(|v| (v - med).abs()).collect();
    Some(Spread {
        median: med,
        min: values.iter().cloned().fold(f64::INFINITY, f64::min),
        max: values.iter().cloned().fold(f64::NEG_INFINITY, f64::max),
        mad: median(&dev)?,
        n: values.len(),
    })
}

/// A point estimate with its 95 % percentile-bootstrap interval (`None` bounds when the sample
/// is too small to resample: fewer than [`MIN_BOOTSTRAP_SAMPLE`] items).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Estimate {
    pub value: f64,
    pub ci95: Option<[f64; 2]>,
    pub n: usize,
}

/// Items below which no interval is given: a resample of 2 items says nothing.
pub const MIN_BOOTSTRAP_SAMPLE: usize = 3;

/// The 2.5th and 97.5th percentiles (linear interpolation, as numpy's default).
fn percentile_interval(mut stats: Vec<f64>) -> Option<[f64; 2]> {
    stats.retain(|v| v.is_finite());
    if stats.is_empty() {
        return None;
    }
    stats.sort_by(f64::total_cmp);
    let at = |q: f64| {
        let pos = q * (stats.len() - 1) as f64;
        let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
        stats[lo] + (stats[hi] - stats[lo]) * (pos - lo as f64)
    };
    Some([at(0.025), at(0.975)])
}

/// `statistic` of the `n` items and its bootstrap interval: `resamples` draws of `n` indices
/// with replacement, each passed to `statistic`.
pub fn bootstrap(n: usize, resamples: usize, seed: u64, mut statistic: impl FnMut(&[usize]) -> f64) -> Estimate {
    let all: Vec<usize> = (0..n).collect();
    let value = statistic(&all);
    if n < MIN_BOOTSTRAP_SAMPLE || resamples == 0 {
        return Estimate { value, ci95: None, n };
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let mut idx = vec![0usize; n];
    let stats = (0..resamples)
        .map(|_| {
            idx.iter_mut().for_each(|i| *i = rng.random_range(0..n));
            statistic(&idx)
        })
        .collect();
    Estimate { value, ci95: percentile_interval(stats), n }
}

/// Mean of `values` with its bootstrap interval.
pub fn mean_estimate(values: &[f64], resamples: usize, seed: u64) -> Estimate {
    bootstrap(values.len(), resamples, seed, |idx| idx.iter().map(|&i| values[i]).sum::<f64>() / idx.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_spreads() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[1.0, f64::NAN]), None);
        let s = spread(&[1.0, 1.1, 0.9, 5.0]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.n), (1.05, 0.9, 5.0, 4));
        assert!((s.mad - 0.1).abs() < 1e-12, "{}", s.mad);
    }

    #[test]
    fn bootstrap_interval_brackets_the_mean_and_narrows_with_more_data() {
        // A deterministic pseudo-sample: values 0..n scaled, mean (n−1)/2.
        let small: Vec<f64> = (0..10).map(f64::from).collect();
        let large: Vec<f64> = (0..1000).map(|i| f64::from(i % 10)).collect();
        let a = mean_estimate(&small, 2000, 7);
        let b = mean_estimate(&large, 2000, 7);
        assert_eq!(a.value, 4.5);
        let [lo, hi] = a.ci95.unwrap();
        assert!(lo < 4.5 && 4.5 < hi && lo > 2.0 && hi < 7.0, "{lo} {hi}");
        let [blo, bhi] = b.ci95.unwrap();
        assert!(bhi - blo < (hi - lo) / 5.0, "{blo} {bhi} vs {lo} {hi}");
        // The standard error of the mean of 0..9 is 2.87/√10 = 0.91: the 95 % width is near 3.6.
        assert!((hi - lo - 3.6).abs() < 0.6, "{}", hi - lo);
        assert_eq!(mean_estimate(&small, 2000, 7), a, "same seed, same interval");
    }

    #[test]
    fn no_interval_from_too_few_items() {
        let e = mean_estimate(&[1.0, 2.0], 1000, 0);
        assert_eq!((e.value, e.ci95, e.n), (1.5, None, 2));
        let constant = mean_estimate(&[2.0; 5], 100, 0);
        assert_eq!(constant.ci95, Some([2.0, 2.0]));
    }

    #[test]
    fn set_statistics_resample_items() {
        // The statistic sees indices: a max over the resampled items never exceeds the full max.
        let v = [1.0, 5.0, 3.0, 2.0];
        let e = bootstrap(v.len(), 500, 1, |idx| idx.iter().map(|&i| v[i]).fold(f64::MIN, f64::max));
        assert_eq!(e.value, 5.0);
        let [lo, hi] = e.ci95.unwrap();
        assert!(lo >= 1.0 && hi <= 5.0 && lo < hi);
    }
}
