//! Scheduler selection: a diffusers `scheduler_config.json` (or the default
//! for the original release layout) plus the user's overrides.

use crate::scheduler_euler::FlowMatchEuler;
use crate::scheduler_unipc::UniPc;
use crate::{Error, Result};
use serde_json::Value;
use wanrt_nn::{Backend, Tensor};

/// A denoising schedule driven one model evaluation at a time.
pub trait Scheduler: Send {
    /// Timesteps given to the transformer, one per step.
    fn timesteps(&self) -> &[f32];
    /// Noise levels, one per step plus the final one.
    fn sigmas(&self) -> &[f32];
    /// Advances `sample` by one step given the model's flow prediction; the per-step scalars are
    /// computed here, the latent arithmetic runs on `be` ([`Backend::lincomb`], f32).
    fn step(&mut self, be: &dyn Backend, model_output: &Tensor, sample: &Tensor) -> Result<Tensor>;
}

/// An explicit sigma schedule: at least one value, each in (0, 1], strictly decreasing (the
/// sampler appends the final 0).
pub fn check_sigmas(sigmas: &[f64]) -> Result<()> {
    if sigmas.is_empty() {
        return Err(Error::Config("`sigmas` is empty: expected one value per step".into()));
    }
    if let Some(bad) = sigmas.iter().find(|s| !(s.is_finite() && **s > 0.0 && **s <= 1.0)) {
        return Err(Error::Config(format!("`sigmas` holds {bad}: expected values in (0, 1]")));
    }
    if let Some(w) = sigmas.windows(2).find(|w| w[1] >= w[0]) {
        return Err(Error::Config(format!("`sigmas` must decrease strictly, found {} then {}", w[0], w[1])));
    }
    Ok(())
}

/// `numpy.linspace(start, stop, num)` bit for bit: `i·step + start`, last = stop.
pub fn linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    if num == 1 {
        return vec![start];
    }
    let step = (stop - start) / (num - 1) as f64;
    let mut v: Vec<f64> = (0..num).map(|i| i as f64 * step + start).collect();
    v[num - 1] = stop;
    v
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchedulerKind {
    UniPc,
    Euler,
}

impl std::str::FromStr for SchedulerKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "unipc" => Ok(SchedulerKind::UniPc),
            "euler" => Ok(SchedulerKind::Euler),
            _ => Err(format!("unknown scheduler `{s}`: expected unipc or euler")),
        }
    }
}

/// The model's scheduler config as saved by diffusers (`_class_name` + fields).
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    pub json: Value,
}

impl SchedulerConfig {
    /// diffusers' UniPCMultistepScheduler defaults with flow sigmas, the setting
    /// DESIGN.md prescribes for the original release layout (shift 5.0).
    pub fn original_release_default() -> Self {
        SchedulerConfig {
            json: serde_json::json!({
                "_class_name": "UniPCMultistepScheduler",
                "prediction_type": "flow_prediction",
                "use_flow_sigmas": true,
                "flow_shift": 5.0
            }),
        }
    }

    /// Checks the numbers a scheduler is built from, at load: a garbage config (zero or 1e30
    /// train timesteps, a negative shift, a solver order of a million) is an error naming the
    /// key, not a NaN schedule or an allocation of that size later.
    pub fn validate(&self) -> Result<()> {
        self.kind()?;
        let number = |key: &str| -> Result<Option<f64>> {
            match self.json.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => v
                    .as_f64()
                    .map(Some)
                    .ok_or_else(|| Error::Config(format!("scheduler `{key}` must be a number, found {v}"))),
            }
        };
        if let Some(n) = number("num_train_timesteps")? {
            if !(n.fract() == 0.0 && (1.0..=100_000.0).contains(&n)) {
                return Err(Error::Config(format!(
                    "scheduler `num_train_timesteps` {n}: expected an integer 1–100000"
                )));
            }
        }
        if let Some(n) = number("solver_order")? {
            if !(n.fract() == 0.0 && (1.0..=3.0).contains(&n)) {
                return Err(Error::Config(format!("scheduler `solver_order` {n}: expected 1, 2 or 3")));
            }
        }
        for key in ["flow_shift", "shift"] {
            if let Some(v) = number(key)? {
                if !(v.is_finite() && v > 0.0) {
                    return Err(Error::Config(format!("scheduler `{key}` {v}: expected a positive number")));
                }
            }
        }
        Ok(())
    }

    /// The most denoising steps a generation may ask for (the schedulers' training grid: more
    /// steps than train timesteps only repeat timesteps).
    pub fn max_steps(&self) -> usize {
        self.get_f64("num_train_timesteps", 1000.0).clamp(1.0, 100_000.0) as usize
    }

    pub fn kind(&self) -> Result<SchedulerKind> {
        match self.json.get("_class_name").and_then(Value::as_str) {
            Some("UniPCMultistepScheduler") => Ok(SchedulerKind::UniPc),
            Some("FlowMatchEulerDiscreteScheduler") => Ok(SchedulerKind::Euler),
            other => Err(Error::Config(format!(
                "scheduler `_class_name` {other:?}: expected UniPCMultistepScheduler or FlowMatchEulerDiscreteScheduler"
            ))),
        }
    }

    /// The configured shift: `flow_shift` for UniPC configs, `shift` for Euler configs.
    pub fn shift(&self) -> f64 {
        let key = match self.kind() {
            Ok(SchedulerKind::Euler) => "shift",
            _ => "flow_shift",
        };
        self.json.get(key).and_then(Value::as_f64).unwrap_or(1.0)
    }

    pub fn get_f64(&self, key: &str, default: f64) -> f64 {
        self.json.get(key).and_then(Value::as_f64).unwrap_or(default)
    }

    pub fn get_bool(&self, key: &str, default: bool) -> bool {
        self.json.get(key).and_then(Value::as_bool).unwrap_or(default)
    }

    pub fn get_str<'a>(&'a self, key: &str, default: &'a str) -> &'a str {
        self.json.get(key).and_then(Value::as_str).unwrap_or(default)
    }

    /// Builds the scheduler for `steps`; `kind`/`shift` override the config.
    /// Switching algorithm keeps the model's shift (DESIGN.md).
    pub fn build(&self, steps: usize, kind: Option<SchedulerKind>, shift: Option<f64>) -> Result<Box<dyn Scheduler>> {
        self.build_with(steps, kind, shift, None)
    }

    /// [`Self::build`], on an explicit list of `sigmas` (unshifted, one per step: a
    /// step-distilled recipe) when given; only the Euler sampler takes one.
    pub fn build_with(
        &self,
        steps: usize,
        kind: Option<SchedulerKind>,
        shift: Option<f64>,
        sigmas: Option<&[f64]>,
    ) -> Result<Box<dyn Scheduler>> {
        if steps == 0 {
            return Err(Error::Config("number of inference steps must be at least 1".into()));
        }
        let kind = match kind {
            Some(k) => k,
            None => self.kind()?,
        };
        let shift = shift.unwrap_or_else(|| self.shift());
        if !(shift.is_finite() && shift > 0.0) {
            return Err(Error::Config(format!("shift must be a positive finite number, found {shift}")));
        }
        let train_steps = self.get_f64("num_train_timesteps", 1000.0) as usize;
        let same_kind = self.kind().ok() == Some(kind);
        Ok(match kind {
            SchedulerKind::UniPc if sigmas.is_some() => {
                return Err(Error::Config("an explicit list of sigmas needs the euler scheduler, not unipc".into()))
            }
            SchedulerKind::UniPc => {
                let (order, final_zero, disable_corrector) =
                    if same_kind { self.unipc_options()? } else { (2, true, Vec::new()) };
                Box::new(UniPc::new(steps, shift, train_steps, order, final_zero, disable_corrector)?)
            }
            SchedulerKind::Euler => match sigmas {
                Some(list) => {
                    check_sigmas(list)?;
                    if list.len() != steps {
                        return Err(Error::Config(format!(
                            "{steps} steps with a schedule of {} sigmas: expected as many steps as sigmas",
                            list.len()
                        )));
                    }
                    Box::new(FlowMatchEuler::with_sigmas(list, shift, train_steps))
                }
                None => Box::new(FlowMatchEuler::new(steps, shift, train_steps)),
            },
        })
    }

    fn unipc_options(&self) -> Result<(usize, bool, Vec<usize>)> {
        for (key, supported) in [("prediction_type", "flow_prediction"), ("solver_type", "bh2")] {
            let v = self.get_str(key, supported);
            if v != supported {
                return Err(Error::Config(format!("UniPC `{key}` = {v:?} is not supported; expected {supported:?}")));
            }
        }
        if !self.get_bool("use_flow_sigmas", false) {
            return Err(Error::Config("UniPC without `use_flow_sigmas` is not a Wan scheduler; expected true".into()));
        }
        for key in
            ["use_dynamic_shifting", "thresholding", "use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas"]
        {
            if self.get_bool(key, false) {
                return Err(Error::Config(format!("UniPC `{key}` = true is not supported")));
            }
        }
        if !self.get_bool("predict_x0", true) || !self.get_bool("lower_order_final", true) {
            return Err(Error::Config("UniPC needs predict_x0 = true and lower_order_final = true".into()));
        }
        let order = self.get_f64("solver_order", 2.0) as usize;
        let final_zero = match self.get_str("final_sigmas_type", "zero") {
            "zero" => true,
            "sigma_min" => false,
            other => {
                return Err(Error::Config(format!("UniPC final_sigmas_type {other:?}: expected zero or sigma_min")))
            }
        };
        let disable = self
            .json
            .get("disable_corrector")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_u64).map(|v| v as usize).collect())
            .unwrap_or_default();
        Ok((order, final_zero, disable))
    }
}
