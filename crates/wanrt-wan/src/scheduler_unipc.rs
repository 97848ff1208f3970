//! UniPC multistep sampler (predictor UniP + corrector UniC, B(h) = expm1)
//! on flow-matching sigmas — diffusers' default sampler for Wan2.1.
//!
//! Mirrors diffusers 0.42.1 `UniPCMultistepScheduler`
//! (schedulers/scheduling_unipc_multistep.py) with `use_flow_sigmas=True`,
//! `prediction_type="flow_prediction"`, `predict_x0=True`, `solver_type="bh2"`,
//! `lower_order_final=True`. Scalar coefficients are computed in f32 in the
//! same order as torch does on 0-d f32 tensors; the small linear systems of
//! orders ≥ 3 are solved in f64.

use crate::scheduler::{linspace, Scheduler};
use crate::{Error, Result};
use wanrt_nn::backend::BinaryOp;
use wanrt_nn::{Backend, Tensor};

pub struct UniPc {
    timesteps: Vec<f32>,
    sigmas: Vec<f32>,
    order: usize,
    disable_corrector: Vec<usize>,
    /// Converted model outputs (x0 predictions) of the last `order` steps, oldest first.
    model_outputs: Vec<Option<Tensor>>,
    last_sample: Option<Tensor>,
    lower_order_nums: usize,
    this_order: usize,
    step_index: usize,
}

fn lambda(sigma: f32) -> f32 {
    // Flow sigmas: alpha = 1 - sigma.
    (1.0 - sigma).ln() - sigma.ln()
}

/// Solves `R·x = b` (Gaussian elimination with partial pivoting, f64).
fn solve(mut r: Vec<Vec<f64>>, mut b: Vec<f64>) -> Result<Vec<f64>> {
    let n = b.len();
    for col in 0..n {
        let piv = (col..n)
            .max_by(|&i, &j| r[i][col].abs().total_cmp(&r[j][col].abs()))
            .ok_or_else(|| Error::Msg("UniPC: empty system".into()))?;
        if r[piv][col] == 0.0 {
            return Err(Error::Msg("UniPC: singular coefficient system".into()));
        }
        r.swap(col, piv);
        b.swap(col, piv);
        let pivot_row = r[col].clone();
        for row in col + 1..n {
            let f = r[row][col] / pivot_row[col];
            r[row].iter_mut().zip(&pivot_row).skip(col).for_each(|(x, &p)| *x -= f * p);
            b[row] -= f * b[col];
        }
    }
    let mut x = vec![0.0; n];
    for row in (0..n).rev() {
        let s: f64 = (row + 1..n).map(|k| r[row][k] * x[k]).sum();
        x[row] = (b[row] - s) / r[row][row];
    }
    Ok(x)
}

/// Coefficients shared by the predictor and corrector.
struct Coeffs {
    /// `h·φ₁(h) = expm1(-h)`.
    h_phi_1: f32,
    b_h: f32,
    /// `b[i]` of the order conditions, i = 1..=order.
    b: Vec<f32>,
}

fn coeffs(h: f32, order: usize) -> Coeffs {
    let hh = -h;
    let h_phi_1 = hh.exp_m1();
    let mut h_phi_k = h_phi_1 / hh - 1.0;
    let mut factorial_i = 1.0f32;
    let b_h = hh.exp_m1();
    let mut b = Vec::with_capacity(order);
    for i in 1..=order {
        b.push(h_phi_k * factorial_i / b_h);
        factorial_i *= (i + 1) as f32;
        h_phi_k = h_phi_k / hh - 1.0 / factorial_i;
    }
    Coeffs { h_phi_1, b_h, b }
}

impl UniPc {
    pub fn new(
        steps: usize,
        shift: f64,
        train_steps: usize,
        order: usize,
        final_sigma_zero: bool,
        disable_corrector: Vec<usize>,
    ) -> Result<Self> {
        if order == 0 {
            return Err(Error::Config("UniPC solver_order must be at least 1".into()));
        }
        let mut sig: Vec<f64> = linspace(1.0, 1.0 / train_steps as f64, steps + 1);
        sig.truncate(steps);
        let mut sig: Vec<f64> = sig.into_iter().map(|s| shift * s / (1.0 + (shift - 1.0) * s)).collect();
        if (sig[0] - 1.0).abs() < 1e-6 {
            sig[0] -= 1e-6;
        }
        // Timesteps come from the f64 sigmas, truncated to integers (int64 cast).
        let timesteps = sig.iter().map(|&s| (s * train_steps as f64).trunc() as f32).collect();
        let last = if final_sigma_zero { 0.0 } else { sig[steps - 1] };
        let mut sigmas: Vec<f32> = sig.iter().map(|&s| s as f32).collect();
        sigmas.push(last as f32);
        Ok(UniPc {
            timesteps,
            sigmas,
            order,
            disable_corrector,
            model_outputs: vec![None; order],
            last_sample: None,
            lower_order_nums: 0,
            this_order: 0,
            step_index: 0,
        })
    }

    fn output(&self, back: usize) -> Result<&Tensor> {
        self.model_outputs[self.order - 1 - back].as_ref().ok_or_else(|| Error::Msg("UniPC: missing history".into()))
    }

    /// Differences `D1_k = (m_k − m0)/r_k` and ratios `r_k` for history steps.
    fn history(
        &self,
        be: &dyn Backend,
        s0_index: usize,
        order: usize,
        lambda_s0: f32,
        h: f32,
        offset: usize,
    ) -> Result<(Vec<f32>, Vec<Tensor>)> {
        let m0 = self.output(0)?;
        let mut rks = Vec::new();
        let mut d1s = Vec::new();
        for i in 1..order {
            let si = s0_index - i - offset;
            let rk = (lambda(self.sigmas[si]) - lambda_s0) / h;
            let mi = self.output(i)?;
            // `(m_k − m_0) / r_k`, in diffusers' order of operations.
            d1s.push(be.scalar(BinaryOp::Div, &be.lincomb(&[(1.0, mi), (-1.0, m0)])?, rk)?);
            rks.push(rk);
        }
        rks.push(1.0);
        Ok((rks, d1s))
    }

    fn predictor(&self, be: &dyn Backend, sample: &Tensor, order: usize) -> Result<Tensor> {
        let i = self.step_index;
        let (sigma_t, sigma_s0) = (self.sigmas[i + 1], self.sigmas[i]);
        let alpha_t = 1.0 - sigma_t;
        let lambda_s0 = lambda(sigma_s0);
        let h = lambda(sigma_t) - lambda_s0;
        let (rks, d1s) = self.history(be, i, order, lambda_s0, h, 0)?;
        let c = coeffs(h, order);
        let rhos: Vec<f32> = match order {
            1 => vec![],
            2 => vec![0.5],
            _ => {
                let r =
                    (0..order - 1).map(|p| (0..order - 1).map(|k| (rks[k] as f64).powi(p as i32)).collect()).collect();
                solve(r, c.b[..order - 1].iter().map(|&v| v as f64).collect())?.iter().map(|&v| v as f32).collect()
            }
        };
        let m0 = self.output(0)?;
        let (a, bcoef, ccoef) = (sigma_t / sigma_s0, alpha_t * c.h_phi_1, alpha_t * c.b_h);
        if d1s.is_empty() {
            return Ok(be.lincomb(&[(a, sample), (-bcoef, m0)])?);
        }
        let pred_res = weighted_sum(be, &rhos, &d1s)?;
        Ok(be.lincomb(&[(a, sample), (-bcoef, m0), (-ccoef, &pred_res)])?)
    }

    fn corrector(&self, be: &dyn Backend, model_t: &Tensor, last_sample: &Tensor, order: usize) -> Result<Tensor> {
        let i = self.step_index;
        let (sigma_t, sigma_s0) = (self.sigmas[i], self.sigmas[i - 1]);
        let alpha_t = 1.0 - sigma_t;
        let lambda_s0 = lambda(sigma_s0);
        let h = lambda(sigma_t) - lambda_s0;
        let (rks, d1s) = self.history(be, i, order, lambda_s0, h, 1)?;
        let c = coeffs(h, order);
        let rhos: Vec<f32> = if order == 1 {
            vec![0.5]
        } else {
            let r = (0..order).map(|p| (0..order).map(|k| (rks[k] as f64).powi(p as i32)).collect()).collect();
            solve(r, c.b.iter().map(|&v| v as f64).collect())?.iter().map(|&v| v as f32).collect()
        };
        let m0 = self.output(0)?;
        let (a, bcoef, ccoef) = (sigma_t / sigma_s0, alpha_t * c.h_phi_1, alpha_t * c.b_h);
        let x_t_ = be.lincomb(&[(a, last_sample), (-bcoef, m0)])?;
        let rho_last = *rhos.last().expect("order >= 1");
        let d1_t = be.lincomb(&[(1.0, model_t), (-1.0, m0)])?;
        let inner = if d1s.is_empty() {
            be.lincomb(&[(rho_last, &d1_t)])?
        } else {
            let corr = weighted_sum(be, &rhos[..rhos.len() - 1], &d1s)?;
            be.lincomb(&[(1.0, &corr), (rho_last, &d1_t)])?
        };
        Ok(be.lincomb(&[(1.0, &x_t_), (-ccoef, &inner)])?)
    }
}

/// `Σ_k w[k]·t[k]` (torch.einsum("k,bkc...->bc...")).
fn weighted_sum(be: &dyn Backend, w: &[f32], ts: &[Tensor]) -> Result<Tensor> {
    let terms: Vec<(f32, &Tensor)> = w.iter().copied().zip(ts).collect();
    Ok(be.lincomb(&terms)?)
}

impl Scheduler for UniPc {
    fn timesteps(&self) -> &[f32] {
        &self.timesteps
    }

    fn sigmas(&self) -> &[f32] {
        &self.sigmas
    }

    fn step(&mut self, be: &dyn Backend, model_output: &Tensor, sample: &Tensor) -> Result<Tensor> {
        let i = self.step_index;
        if i >= self.timesteps.len() {
            return Err(Error::Msg("UniPC: stepped past the last timestep".into()));
        }
        let sigma = self.sigmas[i];
        // Flow prediction → x0 prediction.
        let converted = be.lincomb(&[(1.0, sample), (-sigma, model_output)])?;
        let use_corrector = i > 0 && !self.disable_corrector.contains(&(i - 1)) && self.last_sample.is_some();
        let sample = match (&self.last_sample, use_corrector) {
            (Some(last), true) => self.corrector(be, &converted, last, self.this_order)?,
            _ => sample.clone(),
        };
        self.model_outputs.rotate_left(1);
        self.model_outputs[self.order - 1] = Some(converted);
        let this_order = self.order.min(self.timesteps.len() - i);
        self.this_order = this_order.min(self.lower_order_nums + 1);
        let prev = self.predictor(be, &sample, self.this_order)?;
        self.last_sample = Some(sample);
        if self.lower_order_nums < self.order {
            self.lower_order_nums += 1;
        }
        self.step_index += 1;
        Ok(prev)
    }
}
