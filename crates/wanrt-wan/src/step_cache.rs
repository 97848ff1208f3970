//! Training-free step caching (TeaCache, Liu et al. 2024, "Timestep Embedding
//! Tells: It's Time to Cache for Video Diffusion Model").
//!
//! Consecutive denoising steps feed the blocks nearly the same input late in
//! the schedule. The first block's timestep-modulated input is a cheap
//! indicator of how much the blocks' output will change: while its relative
//! L1 change, accumulated since the last full evaluation, stays below a
//! threshold, the blocks are skipped and the residual they added last time
//! (output − input of the block stack) is added again.
//!
//! The indicator and the residual stay in the backend's memory; the relative change is a backend
//! reduction that returns one scalar per step.
//!
//! Deviations from the published cache, on purpose: no model-specific
//! polynomial rescaling of the relative change (its coefficients are fitted
//! per checkpoint; the raw change is model-independent and the threshold
//! absorbs the scale), and the first and last steps always run in full.

use crate::{Error, Result};
use wanrt_nn::{Backend, Tensor};

#[derive(Debug, Clone)]
pub struct StepCache {
    threshold: f64,
    total_steps: usize,
    step: usize,
    accumulated: f64,
    previous_indicator: Option<Tensor>,
    residual: Option<Tensor>,
    /// Steps whose blocks were skipped.
    pub skipped: usize,
}

impl StepCache {
    /// A cache for a run of `total_steps` transformer calls. `threshold` ≤ 0
    /// never skips (every step is evaluated, bit-identical to no cache).
    pub fn new(threshold: f64, total_steps: usize) -> Result<Self> {
        if !threshold.is_finite() {
            return Err(Error::Config(format!("cache threshold must be a finite number, got {threshold}")));
        }
        Ok(StepCache {
            threshold,
            total_steps,
            step: 0,
            accumulated: 0.0,
            previous_indicator: None,
            residual: None,
            skipped: 0,
        })
    }

    /// Decides the current step from its indicator: `Some(residual)` to skip
    /// the blocks and add the cached residual, `None` to evaluate them (then
    /// [`Self::store_residual`] must be called).
    pub fn decide(&mut self, be: &dyn Backend, indicator: &Tensor) -> Result<Option<&Tensor>> {
        let step = self.step;
        self.step += 1;
        let change = match &self.previous_indicator {
            Some(prev) if prev.shape() == indicator.shape() => be.relative_l1(indicator, prev)?,
            _ => f64::INFINITY,
        };
        self.previous_indicator = Some(indicator.clone());
        let last = step + 1 >= self.total_steps;
        self.accumulated += change;
        let reuse = self.threshold > 0.0 && !last && self.accumulated < self.threshold && self.residual.is_some();
        if reuse {
            self.skipped += 1;
            Ok(self.residual.as_ref())
        } else {
            self.accumulated = 0.0;
            self.residual = None;
            Ok(None)
        }
    }

    pub fn store_residual(&mut self, residual: Tensor) {
        self.residual = Some(residual);
    }

    /// Steps decided so far.
    pub fn steps(&self) -> usize {
        self.step
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // the test reads the cached residual back
mod tests {
    use super::*;
    use wanrt_nn::HostTensor;

    fn t(be: &dyn Backend, v: &[f32]) -> Tensor {
        be.upload(&HostTensor::new([v.len()], v.to_vec()).unwrap()).unwrap()
    }

    #[test]
    fn skips_while_accumulated_change_is_small() {
        let be = &*wanrt_nn::backend::cpu();
        let mut c = StepCache::new(0.25, 6).unwrap();
        // Step 0: nothing cached → evaluate.
        assert!(c.decide(be, &t(be, &[1.0, 1.0])).unwrap().is_none());
        c.store_residual(t(be, &[0.5, 0.5]));
        // Step 1: change 0.1 → skip, reuse the residual.
        let reused = c.decide(be, &t(be, &[1.1, 1.1])).unwrap().unwrap().clone();
        assert_eq!(be.to_host(&reused).unwrap().data(), &[0.5, 0.5]);
        // Step 2: accumulated 0.1 + 0.0909… < 0.25 → skip.
        assert!(c.decide(be, &t(be, &[1.2, 1.2])).unwrap().is_some());
        // Step 3: accumulated exceeds 0.25 → evaluate, reset.
        assert!(c.decide(be, &t(be, &[1.5, 1.5])).unwrap().is_none());
        c.store_residual(t(be, &[0.0, 0.0]));
        assert!(c.decide(be, &t(be, &[1.5, 1.5])).unwrap().is_some());
        // The last step always runs.
        assert!(c.decide(be, &t(be, &[1.5, 1.5])).unwrap().is_none());
        assert_eq!(c.skipped, 3);
        assert_eq!(c.steps(), 6);
        // One scalar read back per decision with a previous indicator.
        assert_eq!(be.transfers().scalar_reads, 5);
    }

    #[test]
    fn zero_threshold_never_skips() {
        let be = &*wanrt_nn::backend::cpu();
        let mut c = StepCache::new(0.0, 3).unwrap();
        for _ in 0..3 {
            assert!(c.decide(be, &t(be, &[1.0])).unwrap().is_none());
            c.store_residual(t(be, &[1.0]));
        }
        assert_eq!(c.skipped, 0);
        assert!(StepCache::new(f64::NAN, 3).is_err());
    }
}
