//! Activation statistics of a layer's input, collected while a model runs on
//! calibration data (quantization scales, SmoothQuant factors, pruning scores).
//!
//! Memory is bounded whatever the number of calibration tokens: per input
//! channel a max and two sums, plus one fixed log-spaced histogram of |x| for
//! percentiles.

use std::sync::Mutex;

/// Histogram bins of |x| per power of two, over 2^-40 … 2^24.
const BINS_PER_OCTAVE: usize = 8;
const MIN_EXP: i32 = -40;
const MAX_EXP: i32 = 24;
const NUM_BINS: usize = ((MAX_EXP - MIN_EXP) as usize) * BINS_PER_OCTAVE + 1;

#[derive(Debug, Clone)]
pub struct ProbeStats {
    /// Per input channel: max |x| over all tokens seen.
    pub channel_absmax: Vec<f32>,
    /// Per input channel: Σ|x| (f64: millions of tokens).
    pub channel_abssum: Vec<f64>,
    /// Per input channel: Σx².
    pub channel_sqsum: Vec<f64>,
    /// Number of tokens (rows) seen.
    pub tokens: u64,
    /// Counts of |x| per log-spaced bin (bin 0 also holds zeros and tinier values).
    histogram: Vec<u64>,
}

impl ProbeStats {
    fn new(channels: usize) -> Self {
        ProbeStats {
            channel_absmax: vec![0.0; channels],
            channel_abssum: vec![0.0; channels],
            channel_sqsum: vec![0.0; channels],
            tokens: 0,
            histogram: vec![0; NUM_BINS],
        }
    }

    pub fn channels(&self) -> usize {
        self.channel_absmax.len()
    }

    /// max |x| over every channel.
    pub fn absmax(&self) -> f32 {
        self.channel_absmax.iter().fold(0.0, |m, &v| m.max(v))
    }

    /// Per-channel mean |x|.
    pub fn channel_absmean(&self) -> Vec<f32> {
        let n = self.tokens.max(1) as f64;
        self.channel_abssum.iter().map(|&s| (s / n) as f32).collect()
    }

    /// Value below which the fraction `p` (0‥1) of all |x| lies, read from the
    /// histogram (upper edge of the bin that crosses `p`: never underestimates
    /// by more than one bin, 2^(1/8) ≈ 9%); capped by the true max.
    pub fn abs_percentile(&self, p: f64) -> f32 {
        let total: u64 = self.histogram.iter().sum();
        if total == 0 {
            return 0.0;
        }
        let target = (p.clamp(0.0, 1.0) * total as f64).ceil() as u64;
        let mut seen = 0;
        for (i, &c) in self.histogram.iter().enumerate() {
            seen += c;
            if seen >= target.max(1) {
                return bin_upper_edge(i).min(self.absmax());
            }
        }
        self.absmax()
    }

    /// Adds another probe's statistics (same layer, other inputs).
    pub fn merge(&mut self, other: &ProbeStats) {
        for (a, b) in self.channel_absmax.iter_mut().zip(&other.channel_absmax) {
            *a = a.max(*b);
        }
        for (a, b) in self.channel_abssum.iter_mut().zip(&other.channel_abssum) {
            *a += b;
        }
        for (a, b) in self.channel_sqsum.iter_mut().zip(&other.channel_sqsum) {
            *a += b;
        }
        for (a, b) in self.histogram.iter_mut().zip(&other.histogram) {
            *a += b;
        }
        self.tokens += other.tokens;
    }

    /// Keeps only the listed channels (after structured pruning of the input).
    pub fn select_channels(&self, keep: &[usize]) -> ProbeStats {
        ProbeStats {
            channel_absmax: keep.iter().map(|&i| self.channel_absmax[i]).collect(),
            channel_abssum: keep.iter().map(|&i| self.channel_abssum[i]).collect(),
            channel_sqsum: keep.iter().map(|&i| self.channel_sqsum[i]).collect(),
            tokens: self.tokens,
            histogram: self.histogram.clone(),
        }
    }
}

fn bin_of(v: f32) -> usize {
    if v <= 0.0 || !v.is_finite() {
        return if v.is_finite() { 0 } else { NUM_BINS - 1 };
    }
    let pos = (v.log2() - MIN_EXP as f32) * BINS_PER_OCTAVE as f32;
    (pos.max(0.0) as usize).min(NUM_BINS - 1)
}

fn bin_upper_edge(bin: usize) -> f32 {
    ((bin + 1) as f32 / BINS_PER_OCTAVE as f32 + MIN_EXP as f32).exp2()
}

/// A shared recorder attached to a layer during calibration.
#[derive(Debug)]
pub struct ActivationProbe {
    stats: Mutex<ProbeStats>,
}

impl ActivationProbe {
    pub fn new(channels: usize) -> Self {
        ActivationProbe { stats: Mutex::new(ProbeStats::new(channels)) }
    }

    /// Records rows of `x: [tokens, channels]` (row-major).
    pub fn record(&self, x: &[f32]) {
        let mut local = {
            let s = self.stats.lock().unwrap_or_else(|e| e.into_inner());
            ProbeStats::new(s.channels())
        };
        let c = local.channels();
        if c == 0 {
            return;
        }
        for row in x.chunks_exact(c) {
            for (j, &v) in row.iter().enumerate() {
                let a = v.abs();
                local.channel_absmax[j] = local.channel_absmax[j].max(a);
                local.channel_abssum[j] += a as f64;
                local.channel_sqsum[j] += (v as f64) * (v as f64);
                local.histogram[bin_of(a)] += 1;
            }
        }
        local.tokens = (x.len() / c) as u64;
        self.stats.lock().unwrap_or_else(|e| e.into_inner()).merge(&local);
    }

    pub fn snapshot(&self) -> ProbeStats {
        self.stats.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl crate::linear::LinearObserver for ActivationProbe {
    fn observe(&self, _layer: &str, x: &crate::HostTensor) {
        self.record(x.data());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics_of_known_rows() {
        let p = ActivationProbe::new(3);
        p.record(&[1.0, -2.0, 0.0, -3.0, 0.5, 0.0]);
        p.record(&[0.5, 0.5, 4.0]);
        let s = p.snapshot();
        assert_eq!(s.tokens, 3);
        assert_eq!(s.channel_absmax, vec![3.0, 2.0, 4.0]);
        assert_eq!(s.channel_absmean(), vec![1.5, 1.0, 4.0 / 3.0]);
        assert_eq!(s.absmax(), 4.0);
        // 9 values: the median |x| is 0.5; the 100th percentile is the max.
        let med = s.abs_percentile(0.5);
        assert!((0.5..=0.5 * 1.1).contains(&med), "{med}");
        assert_eq!(s.abs_percentile(1.0), 4.0);
        let kept = s.select_channels(&[2, 0]);
        assert_eq!(kept.channel_absmax, vec![4.0, 3.0]);
    }

    #[test]
    fn percentile_ignores_rare_outliers() {
        let p = ActivationProbe::new(1);
        let mut x: Vec<f32> = (0..999).map(|i| (i % 10) as f32 / 10.0).collect();
        x.push(1000.0);
        p.record(&x);
        let s = p.snapshot();
        assert_eq!(s.absmax(), 1000.0);
        assert!(s.abs_percentile(0.99) < 1.0);
    }
}
