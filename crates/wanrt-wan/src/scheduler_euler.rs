//! Flow-matching Euler sampler.
//!
//! Mirrors diffusers 0.42.1 `FlowMatchEulerDiscreteScheduler`
//! (schedulers/scheduling_flow_match_euler_discrete.py) with static shift:
//! the shift is applied to the training sigmas (f32) whose ends bound the
//! inference grid, and again to that grid (f64) — both as diffusers does.

use crate::scheduler::{linspace, Scheduler};
use crate::Result;
use wanrt_nn::{Backend, Tensor};

pub struct FlowMatchEuler {
    timesteps: Vec<f32>,
    sigmas: Vec<f32>,
    step_index: usize,
}

impl FlowMatchEuler {
    pub fn new(steps: usize, shift: f64, train_steps: usize) -> Self {
        let shift32 = shift as f32;
        let n = train_steps as f32;
        // Training sigmas in f32: t/n for t = n..1, shifted.
        let train_shift = |t: f32| {
            let s = t / n;
            shift32 * s / (1.0 + (shift32 - 1.0) * s)
        };
        let sigma_max = train_shift(n) as f64;
        let sigma_min = train_shift(1.0) as f64;
        let (t0, t1) = (sigma_max * train_steps as f64, sigma_min * train_steps as f64);
        let mut sigmas: Vec<f32> = linspace(t0, t1, steps)
            .into_iter()
            .map(|t| {
                let s = t / train_steps as f64;
                (shift * s / (1.0 + (shift - 1.0) * s)) as f32
            })
            .collect();
        let timesteps = sigmas.iter().map(|&s| s * n).collect();
        sigmas.push(0.0);
        FlowMatchEuler { timesteps, sigmas, step_index: 0 }
    }

    /// An explicit schedule, diffusers' `set_timesteps(sigmas=…)`: the given (unshifted) sigmas
    /// in f32, shifted in f32 arithmetic as numpy does on an f32 array, timesteps `σ·n`. A
    /// distilled model's step list (lightx2v's `denoising_step_list` `[1000, 750, 500, 250]`)
    /// is the sigmas `t / 1000`.
    pub fn with_sigmas(sigmas: &[f64], shift: f64, train_steps: usize) -> Self {
        let (shift32, shift_minus_one) = (shift as f32, (shift - 1.0) as f32);
        let mut sigmas: Vec<f32> = sigmas
            .iter()
            .map(|&s| {
                let s = s as f32;
                shift32 * s / (1.0 + shift_minus_one * s)
            })
            .collect();
        let timesteps = sigmas.iter().map(|&s| s * train_steps as f32).collect();
        sigmas.push(0.0);
        FlowMatchEuler { timesteps, sigmas, step_index: 0 }
    }
}

impl Scheduler for FlowMatchEuler {
    fn timesteps(&self) -> &[f32] {
        &self.timesteps
    }

    fn sigmas(&self) -> &[f32] {
        &self.sigmas
    }

    fn step(&mut self, be: &dyn Backend, model_output: &Tensor, sample: &Tensor) -> Result<Tensor> {
        let i = self.step_index;
        let dt = self.sigmas[i + 1] - self.sigmas[i];
        self.step_index += 1;
        Ok(be.lincomb(&[(1.0, sample), (dt, model_output)])?)
    }
}
