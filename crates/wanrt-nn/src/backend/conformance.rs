//! The conformance battery: every [`Backend`] op run on a backend under test and on the CPU f32
//! reference, on the same random inputs of Wan's shapes (odd token counts, head dims 64 and
//! 128, CFG batch 2, text lengths that are not multiples of anything), compared by NMSE
//! (`mse(a, b) / mse(b, 0)`, ggml's test-backend-ops measure) and by the largest difference
//! relative to the reference's largest value.
//!
//! Inputs reach both backends with the same values (rounded to the tested backend's activation
//! dtype first), so a comparison measures the op, not its inputs' rounding; layer weights are
//! given in f32 and each backend holds them its own way (a bf16 backend rounds them), as it would
//! a checkpoint.
//!
//! A backend registers once with [`backend_conformance!`] and gets one test per op; every future
//! backend (CUDA next) must pass it. Tolerances are per activation dtype ([`Tolerance::for_dtype`]),
//! set from the errors measured on the CPU bf16/f16 backends (`tests/conformance.rs` prints them).

use super::{
    Activation, AttentionBias, AttentionPrecision, Backend, BinaryOp, CpuBackend, CpuOptions, RelativeBuckets,
};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::host::HostTensor;
use crate::linear::{Linear, LinearWeight};
use crate::ops::PaddingFull;
use crate::quant::{ActQuant, QuantizedMatrix};
use crate::weights::RawTensor;
use crate::{Conv3d, Embedding, Tensor};

/// How close a backend's result must be to the reference.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tolerance {
    /// Bound on `mse(got, want) / mse(want, 0)`.
    pub nmse: f64,
    /// Bound on `max|got − want| / max|want|`.
    pub max_rel: f64,
}

impl Tolerance {
    /// The bounds for a backend computing in `dtype`: about 4× the largest error the CPU
    /// backend of that dtype measures over the battery (`tests/conformance.rs`, 2026-12: bf16
    /// NMSE ≤ 5.9e-6, max rel ≤ 4.0e-3 — one bf16 rounding of an op's output is ≈ 2.8e-6; f16
    /// ≤ 9.1e-8 and ≤ 5.1e-4). An op that accumulated in half precision instead of f32, or lost a
    /// term, lands far outside. f32 backends must agree to f32 rounding (a GPU sums in another
    /// order).
    pub fn for_dtype(dtype: DType) -> Tolerance {
        match dtype {
            DType::F32 => Tolerance { nmse: 1e-10, max_rel: 1e-4 },
            DType::F16 => Tolerance { nmse: 4e-7, max_rel: 2e-3 },
            _ => Tolerance { nmse: 2.5e-5, max_rel: 1.6e-2 },
        }
    }
}

/// One comparison of the battery.
#[derive(Debug, Clone)]
pub struct Measurement {
    pub op: &'static str,
    pub case: String,
    pub nmse: f64,
    pub max_rel: f64,
}

/// The reference and the backend under test, with the inputs' generator.
pub struct Battery<'a> {
    reference: CpuBackend,
    under_test: &'a dyn Backend,
    rng: std::cell::Cell<u64>,
    measurements: std::cell::RefCell<Vec<Measurement>>,
}

/// Every op of the battery, by name (what [`backend_conformance!`] makes one test of each).
pub const OPS: &[&str] = &[
    "transfers",
    "layout",
    "binary",
    "lincomb",
    "cfg_combine",
    "activation",
    "affine_clamp",
    "mask_rows",
    "relative_l1",
    "linear",
    "linear_quantized",
    "linear_activation",
    "embedding",
    "conv3d",
    "norms",
    "layer_norm_modulate",
    "channel_rms_norm",
    "add",
    "attention",
    "attention_int8",
    "upsample",
    "timestep_embedding",
    "rope",
    "relative_position_bias",
];

impl<'a> Battery<'a> {
    pub fn new(under_test: &'a dyn Backend) -> Self {
        Battery {
            reference: CpuBackend::new(CpuOptions::default()),
            under_test,
            rng: std::cell::Cell::new(0x9e37_79b9_7f4a_7c15),
            measurements: Default::default(),
        }
    }

    /// The comparisons made so far.
    pub fn measurements(&self) -> Vec<Measurement> {
        self.measurements.borrow().clone()
    }

    /// Runs op `name` (one of [`OPS`]) and checks every comparison against `tol`.
    pub fn check(&self, name: &str, tol: Tolerance) -> Result<()> {
        let before = self.measurements.borrow().len();
        self.run(name)?;
        for m in &self.measurements.borrow()[before..] {
            if !(m.nmse <= tol.nmse && m.max_rel <= tol.max_rel) {
                return Err(Error::Msg(format!(
                    "{} ({}) on {}: NMSE {:.3e} (≤ {:.1e}), max rel {:.3e} (≤ {:.1e})",
                    m.op,
                    m.case,
                    self.under_test.name(),
                    m.nmse,
                    tol.nmse,
                    m.max_rel,
                    tol.max_rel
                )));
            }
        }
        Ok(())
    }

    /// Runs op `name`, recording its comparisons.
    pub fn run(&self, name: &str) -> Result<()> {
        match name {
            "transfers" => self.transfers(),
            "layout" => self.layout(),
            "binary" => self.binary(),
            "lincomb" => self.lincomb(),
            "cfg_combine" => self.cfg_combine(),
            "activation" => self.activation(),
            "affine_clamp" => self.affine_clamp(),
            "mask_rows" => self.mask_rows(),
            "relative_l1" => self.relative_l1(),
            "linear" => self.linear(),
            "linear_quantized" => self.linear_quantized(),
            "linear_activation" => self.linear_activation(),
            "embedding" => self.embedding(),
            "conv3d" => self.conv3d(),
            "norms" => self.norms(),
            "layer_norm_modulate" => self.layer_norm_modulate(),
            "channel_rms_norm" => self.channel_rms_norm(),
            "add" => self.add(),
            "attention" => self.attention(),
            "attention_int8" => self.attention_int8(),
            "upsample" => self.upsample(),
            "timestep_embedding" => self.timestep_embedding(),
            "rope" => self.rope(),
            "relative_position_bias" => self.relative_position_bias(),
            other => Err(Error::Msg(format!("no conformance op `{other}`"))),
        }
    }

    // ---- inputs ----

    fn next(&self) -> f32 {
        // splitmix64: deterministic, no dependency.
        let mut z = self.rng.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
        self.rng.set(z);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }

    /// Uniform values in `[-scale, scale)`.
    fn random(&self, shape: &[usize], scale: f32) -> HostTensor {
        let n = shape.iter().product();
        HostTensor::new(shape.to_vec(), (0..n).map(|_| self.next() * scale).collect()).expect("sizes match")
    }

    /// The same values on both backends: `h` rounded to the tested backend's activation dtype
    /// (the form its ops meet activations in), and exactly those values, in f32, on the reference.
    /// The comparison then measures the op alone, not the rounding of its inputs.
    fn both(&self, h: &HostTensor) -> Result<(Tensor, Tensor)> {
        let tested = self.under_test.to_dtype(&self.under_test.upload(h)?, self.under_test.dtype())?;
        let values = self.under_test.to_host(&tested)?;
        Ok((self.reference.upload(&values)?, tested))
    }

    /// Records `got` (under test) against `want` (reference).
    fn compare(&self, op: &'static str, case: impl Into<String>, want: &Tensor, got: &Tensor) -> Result<()> {
        if want.shape() != got.shape() {
            return Err(Error::shape(op, want.shape(), got.shape()));
        }
        let (w, g) = (self.reference.to_host(want)?, self.under_test.to_host(got)?);
        self.compare_host(op, case, &w, &g);
        Ok(())
    }

    fn compare_host(&self, op: &'static str, case: impl Into<String>, want: &HostTensor, got: &HostTensor) {
        let (mut err, mut norm, mut max_d, mut max_w) = (0f64, 0f64, 0f64, 0f64);
        for (&g, &w) in got.data().iter().zip(want.data()) {
            let d = if g == w { 0.0 } else { (g as f64 - w as f64).abs() };
            err += d * d;
            norm += (w as f64) * (w as f64);
            max_d = max_d.max(if d.is_nan() { f64::INFINITY } else { d });
            max_w = max_w.max((w as f64).abs());
        }
        let nmse = if norm > 0.0 { err / norm } else { err };
        let max_rel = if max_w > 0.0 { max_d / max_w } else { max_d };
        self.measurements.borrow_mut().push(Measurement { op, case: case.into(), nmse, max_rel });
    }

    /// A layer prepared for each backend.
    fn linear_pair(&self, layer: &Linear) -> Result<(Linear, Linear)> {
        let (mut a, mut b) = (layer.clone(), layer.clone());
        a.prepare(&self.reference)?;
        b.prepare(self.under_test)?;
        Ok((a, b))
    }

    // ---- ops ----

    fn transfers(&self) -> Result<()> {
        let h = self.random(&[2, 7, 33], 3.0);
        let before = self.under_test.transfers();
        let t = self.under_test.upload(&h)?;
        let back = self.under_test.to_host(&t)?;
        let ids = self.under_test.upload_ids(&[2, 3], &[1, 2, 3, 4, 5, 6])?;
        let done = self.under_test.transfers() - before;
        if (done.uploads, done.downloads) != (2, 1) || ids.dtype() != DType::U32 || t.dtype() != DType::F32 {
            return Err(Error::Msg(format!("transfers not counted as made: {done:?}")));
        }
        self.compare_host("transfers", "upload/to_host round trip", &h, &back);
        let z = self.under_test.zeros(&[3, 5], self.under_test.dtype())?;
        let zr = self.reference.zeros(&[3, 5], DType::F32)?;
        self.compare("transfers", "zeros", &zr, &z)
    }

    fn layout(&self) -> Result<()> {
        let dt = self.under_test.dtype();
        let (r, t) = self.both(&self.random(&[2, 5, 3, 7], 2.0))?;
        if t.dtype() != dt {
            return Err(Error::Msg(format!("to_dtype gave {}, asked {dt}", t.dtype())));
        }
        let (rn, tn) = (self.reference.narrow(&r, 1, 1, 3)?, self.under_test.narrow(&t, 1, 1, 3)?);
        self.compare("layout", "narrow dim 1", &rn, &tn)?;
        let (rc, tc) = (self.reference.cat(&[&rn, &r], 1)?, self.under_test.cat(&[&tn, &t], 1)?);
        self.compare("layout", "cat dim 1", &rc, &tc)?;
        let perm = [0, 3, 1, 2];
        let (rp, tp) = (self.reference.permute(&r, &perm)?, self.under_test.permute(&t, &perm)?);
        self.compare("layout", "permute [0,3,1,2]", &rp, &tp)?;
        // A reshape is a view: the same values under another shape.
        let (rv, tv) = (rp.clone().reshape([2, 7, 15])?, tp.clone().reshape([2, 7, 15])?);
        self.compare("layout", "reshape view", &rv, &tv)
    }

    fn binary(&self) -> Result<()> {
        let shapes: [(&[usize], &[usize]); 3] =
            [(&[2, 5, 7], &[2, 5, 7]), (&[1, 6, 9], &[2, 1, 9]), (&[1, 16, 3, 4, 5], &[1, 16, 1, 1, 1])];
        for (sa, sb) in shapes {
            let (ra, ta) = self.both(&self.random(sa, 2.0))?;
            let mut hb = self.random(sb, 2.0);
            hb.data_mut().iter_mut().for_each(|v| *v += 3.0); // away from 0: Div
            let (rb, tb) = self.both(&hb)?;
            for op in [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div] {
                let (w, g) = (self.reference.binary(op, &ra, &rb)?, self.under_test.binary(op, &ta, &tb)?);
                self.compare("binary", format!("{op:?} {sa:?} {sb:?}"), &w, &g)?;
                let (w, g) = (self.reference.scalar(op, &ra, -1.7)?, self.under_test.scalar(op, &ta, -1.7)?);
                if g.dtype() != ta.dtype() {
                    return Err(Error::Msg(format!("scalar {op:?} changed the dtype to {}", g.dtype())));
                }
                self.compare("binary", format!("{op:?} {sa:?} by a scalar"), &w, &g)?;
            }
        }
        Ok(())
    }

    fn lincomb(&self) -> Result<()> {
        let shape = [1, 16, 3, 5, 7];
        let hs: Vec<HostTensor> = (0..3).map(|_| self.random(&shape, 2.0)).collect();
        let pairs = hs.iter().map(|h| self.both(h)).collect::<Result<Vec<_>>>()?;
        let coefs = [0.9f32, -0.37, 1.3];
        let w = self.reference.lincomb(&coefs.iter().zip(&pairs).map(|(&c, p)| (c, &p.0)).collect::<Vec<_>>())?;
        let g = self.under_test.lincomb(&coefs.iter().zip(&pairs).map(|(&c, p)| (c, &p.1)).collect::<Vec<_>>())?;
        if g.dtype() != DType::F32 {
            return Err(Error::Msg(format!("lincomb must give f32 latents, gave {}", g.dtype())));
        }
        self.compare("lincomb", "3 terms", &w, &g)
    }

    fn cfg_combine(&self) -> Result<()> {
        let (r, t) = self.both(&self.random(&[2, 16, 3, 5, 7], 2.0))?;
        let (w, g) = (self.reference.cfg_combine(&r, 5.0)?, self.under_test.cfg_combine(&t, 5.0)?);
        self.compare("cfg_combine", "guidance 5", &w, &g)
    }

    fn activation(&self) -> Result<()> {
        for act in Activation::ALL {
            let (r, t) = self.both(&self.random(&[2, 75, 97], 6.0))?;
            let (w, g) = (self.reference.activation(r, act)?, self.under_test.activation(t, act)?);
            self.compare("activation", format!("{act:?}"), &w, &g)?;
        }
        Ok(())
    }

    fn affine_clamp(&self) -> Result<()> {
        let (mut r, mut t) = self.both(&self.random(&[1, 3, 5, 9, 11], 1.5))?;
        self.reference.affine_clamp(&mut r, 0.5, 0.5, 0.0, 1.0)?;
        self.under_test.affine_clamp(&mut t, 0.5, 0.5, 0.0, 1.0)?;
        self.compare("affine_clamp", "frames", &r, &t)
    }

    fn mask_rows(&self) -> Result<()> {
        let (mut r, mut t) = self.both(&self.random(&[2, 13, 33], 1.0))?;
        self.reference.mask_rows(&mut r, &[5, 13])?;
        self.under_test.mask_rows(&mut t, &[5, 13])?;
        self.compare("mask_rows", "lengths [5, 13]", &r, &t)
    }

    fn relative_l1(&self) -> Result<()> {
        let (ha, hb) = (self.random(&[1, 75, 96], 1.0), self.random(&[1, 75, 96], 1.0));
        let ((ra, ta), (rb, tb)) = (self.both(&ha)?, self.both(&hb)?);
        let before = self.under_test.transfers().scalar_reads;
        let (w, g) = (self.reference.relative_l1(&ra, &rb)?, self.under_test.relative_l1(&ta, &tb)?);
        if self.under_test.transfers().scalar_reads != before + 1 {
            return Err(Error::Msg("relative_l1 must count one scalar read".into()));
        }
        let to = |v: f64| HostTensor::new([1], vec![v as f32]);
        self.compare_host("relative_l1", "one scalar", &to(w)?, &to(g)?);
        // The finiteness check: true for these values, false once one is NaN or infinite.
        let mut bad = hb.clone();
        for (i, v) in [f32::NAN, f32::INFINITY].into_iter().enumerate() {
            bad.data_mut()[1000 * i + 7] = v;
            let t = self.under_test.upload(&bad)?;
            if !self.under_test.all_finite(&tb)? || self.under_test.all_finite(&t)? {
                return Err(Error::Msg(format!("all_finite missed a {v}")));
            }
        }
        Ok(())
    }

    fn float_layer(&self, name: &str, rows: &[usize], k: usize, dtype: DType, bias: bool) -> Result<Linear> {
        let mut raws = Vec::new();
        let mut parts = Vec::new();
        for (i, &r) in rows.iter().enumerate() {
            let w = self.random(&[r, k], 1.0 / (k as f32).sqrt());
            let raw = RawTensor::from_f32(&w);
            let raw = match dtype {
                DType::F32 => raw,
                half => {
                    let to = super::cpu::narrow_half_bits(half);
                    let bytes = w.data().iter().flat_map(|&v| to(v).to_le_bytes()).collect();
                    RawTensor::from_bytes(half, vec![r, k], bytes)?
                }
            };
            raws.push(raw);
            parts.push((format!("{name}.{i}"), r));
        }
        let out: usize = rows.iter().sum();
        let bias = bias.then(|| self.random(&[out], 0.5).into_data());
        Linear::new(name, parts, k, LinearWeight::Float(raws), bias)
    }

    fn run_linear(&self, case: &str, layer: &Linear, x: &HostTensor, act: Option<Activation>) -> Result<()> {
        let (lr, lt) = self.linear_pair(layer)?;
        let (xr, xt) = self.both(x)?;
        let (w, g) = match act {
            None => (self.reference.linear(&lr, &xr)?, self.under_test.linear(&lt, &xt)?),
            Some(a) => {
                (self.reference.linear_activation(&lr, &xr, a)?, self.under_test.linear_activation(&lt, &xt, a)?)
            }
        };
        self.compare(if act.is_some() { "linear_activation" } else { "linear" }, case, &w, &g)
    }

    fn linear(&self) -> Result<()> {
        // The 1.3B block's shapes scaled down: fused QKV (3 parts), an FFN-like widening, odd sizes.
        let x = self.random(&[2, 75, 96], 2.0);
        self.run_linear("fused qkv f32", &self.float_layer("qkv", &[96, 96, 96], 96, DType::F32, true)?, &x, None)?;
        self.run_linear("ffn in bf16 weights", &self.float_layer("ffn", &[333], 96, DType::BF16, true)?, &x, None)?;
        self.run_linear("f16 weights, no bias", &self.float_layer("o", &[97], 96, DType::F16, false)?, &x, None)
    }

    fn quantized_layer(&self, act: Option<ActQuant>, fp8: bool) -> Result<Linear> {
        let (n, k) = (130, 96);
        let w = self.random(&[n, k], 0.2);
        let weight = if fp8 {
            let q = crate::quant::Fp8Matrix::quantize_per_channel(w.data(), n, k);
            LinearWeight::Fp8 {
                codes: vec![RawTensor::from_bytes(DType::F8E4M3, vec![n, k], q.data)?],
                scales: q.scales,
                act,
            }
        } else {
            let q = QuantizedMatrix::quantize_per_row_symmetric(w.data(), n, k);
            let codes = q.data.iter().map(|&c| c as u8).collect();
            LinearWeight::Int8 {
                codes: vec![RawTensor::from_bytes(DType::I8, vec![n, k], codes)?],
                scales: q.scales,
                act,
                smooth: None,
            }
        };
        Linear::new("q", vec![("q".into(), n)], k, weight, Some(self.random(&[n], 0.1).into_data()))
    }

    fn linear_quantized(&self) -> Result<()> {
        let x = self.random(&[2, 75, 96], 2.0);
        self.run_linear("int8 weight-only", &self.quantized_layer(None, false)?, &x, None)?;
        self.run_linear("int8 W8A8 per token", &self.quantized_layer(Some(ActQuant::PerToken), false)?, &x, None)?;
        self.run_linear("fp8 weight-only", &self.quantized_layer(None, true)?, &x, None)?;
        self.run_linear("fp8 W8A8 per token", &self.quantized_layer(Some(ActQuant::PerToken), true)?, &x, None)
    }

    fn linear_activation(&self) -> Result<()> {
        let x = self.random(&[2, 75, 96], 2.0);
        let layer = self.float_layer("ffn", &[200], 96, DType::F32, true)?;
        self.run_linear("gelu-tanh f32", &layer, &x, Some(Activation::GeluTanh))?;
        self.run_linear("quick-gelu f32", &layer, &x, Some(Activation::QuickGelu))?;
        let int8 = self.quantized_layer(Some(ActQuant::PerToken), false)?;
        self.run_linear("silu W8A8", &int8, &x, Some(Activation::Silu))
    }

    fn embedding(&self) -> Result<()> {
        let table = self.random(&[37, 64], 1.0);
        let e = Embedding::from_f32("shared", &table)?;
        let (mut er, mut et) = (e.clone(), e);
        er.prepare(&self.reference)?;
        et.prepare(self.under_test)?;
        let ids: Vec<u32> = (0..26).map(|i| (i * 7 % 37) as u32).collect();
        let (ir, it) = (self.reference.upload_ids(&[2, 13], &ids)?, self.under_test.upload_ids(&[2, 13], &ids)?);
        let (w, g) = (self.reference.embedding(&er, &ir)?, self.under_test.embedding(&et, &it)?);
        self.compare("embedding", "ids [2, 13]", &w, &g)?;
        let bad = self.under_test.upload_ids(&[1], &[37])?;
        if self.under_test.embedding(&et, &bad).is_ok() {
            return Err(Error::Msg("embedding accepted an id outside the table".into()));
        }
        Ok(())
    }

    fn conv3d(&self) -> Result<()> {
        type Stride = (usize, usize, usize);
        let cases: [([usize; 5], Stride, PaddingFull, bool); 4] = [
            ([24, 16, 3, 3, 3], (1, 1, 1), PaddingFull { t: (1, 0), h: (1, 1), w: (1, 1) }, true),
            ([16, 16, 1, 3, 3], (1, 2, 2), PaddingFull { t: (0, 0), h: (0, 1), w: (0, 1) }, false),
            ([32, 16, 3, 1, 1], (1, 1, 1), PaddingFull { t: (2, 0), h: (0, 0), w: (0, 0) }, true),
            ([8, 16, 1, 1, 1], (1, 1, 1), PaddingFull::default(), false),
        ];
        for (shape, stride, pad, with_history) in cases {
            let k = (shape[1] * shape[2] * shape[3] * shape[4]) as f32;
            let w = self.random(&shape, 1.0 / k.sqrt());
            let conv =
                Conv3d::new("conv", RawTensor::from_f32(&w), Some(self.random(&[shape[0]], 0.1).into_data()), stride)?;
            let (mut cr, mut ct) = (conv.clone(), conv);
            cr.prepare(&self.reference)?;
            ct.prepare(self.under_test)?;
            let (xr, xt) = self.both(&self.random(&[1, 16, 3, 10, 12], 1.0))?;
            let hist = if with_history { Some(self.both(&self.random(&[1, 16, 1, 10, 12], 1.0))?) } else { None };
            let w = self.reference.conv3d(&cr, &xr, hist.as_ref().map(|h| &h.0), pad)?;
            let g = self.under_test.conv3d(&ct, &xt, hist.as_ref().map(|h| &h.1), pad)?;
            self.compare("conv3d", format!("{shape:?} stride {stride:?} history {with_history}"), &w, &g)?;
        }
        Ok(())
    }

    fn norms(&self) -> Result<()> {
        let h = self.random(&[2, 75, 96], 3.0);
        let wt = self.random(&[96], 1.0);
        let bs = self.random(&[96], 0.5);
        let (xr, xt) = self.both(&h)?;
        let (wr, wu) = (self.reference.weight_tensor(wt.clone())?, self.under_test.weight_tensor(wt)?);
        let (br, bu) = (self.reference.weight_tensor(bs.clone())?, self.under_test.weight_tensor(bs)?);
        let w = self.reference.rms_norm(xr.clone(), 1e-6, Some(&wr))?;
        let g = self.under_test.rms_norm(xt.clone(), 1e-6, Some(&wu))?;
        self.compare("norms", "rms_norm", &w, &g)?;
        let w = self.reference.layer_norm(xr.clone(), 1e-6, Some(&wr), Some(&br))?;
        let g = self.under_test.layer_norm(xt.clone(), 1e-6, Some(&wu), Some(&bu))?;
        self.compare("norms", "layer_norm affine", &w, &g)?;
        let w = self.reference.layer_norm(xr, 1e-6, None, None)?;
        let g = self.under_test.layer_norm(xt, 1e-6, None, None)?;
        self.compare("norms", "layer_norm plain", &w, &g)
    }

    fn layer_norm_modulate(&self) -> Result<()> {
        let (xr, xt) = self.both(&self.random(&[2, 75, 96], 3.0))?;
        let (sr, st) = self.both(&self.random(&[2, 1, 96], 0.5))?;
        let (hr, ht) = self.both(&self.random(&[2, 1, 96], 0.5))?;
        let w = self.reference.layer_norm_modulate(&xr, 1e-6, &sr, &hr)?;
        let g = self.under_test.layer_norm_modulate(&xt, 1e-6, &st, &ht)?;
        self.compare("layer_norm_modulate", "CFG batch 2", &w, &g)
    }

    fn channel_rms_norm(&self) -> Result<()> {
        let (xr, xt) = self.both(&self.random(&[1, 24, 3, 10, 12], 2.0))?;
        let gamma = self.random(&[24], 1.0);
        let (gr, gt) = (self.reference.weight_tensor(gamma.clone())?, self.under_test.weight_tensor(gamma)?);
        for silu in [false, true] {
            let w = self.reference.channel_rms_norm(&xr, &gr, silu)?;
            let g = self.under_test.channel_rms_norm(&xt, &gt, silu)?;
            self.compare("channel_rms_norm", format!("silu {silu}"), &w, &g)?;
        }
        Ok(())
    }

    fn add(&self) -> Result<()> {
        let (mut xr, mut xt) = self.both(&self.random(&[2, 75, 96], 2.0))?;
        let (yr, yt) = self.both(&self.random(&[2, 75, 96], 2.0))?;
        let (gr, gt) = self.both(&self.random(&[2, 1, 96], 1.0))?;
        self.reference.add_gated(&mut xr, &yr, &gr)?;
        self.under_test.add_gated(&mut xt, &yt, &gt)?;
        self.compare("add", "add_gated", &xr, &xt)?;
        self.reference.add_assign(&mut xr, &yr)?;
        self.under_test.add_assign(&mut xt, &yt)?;
        self.compare("add", "add_assign", &xr, &xt)
    }

    /// `[b, lq/lk, h, d]` attention, with T5's bias and padded keys when `biased`.
    fn attention_case(&self, case: &str, [b, lq, lk, h, d]: [usize; 5], biased: bool) -> Result<()> {
        let (qr, qt) = self.both(&self.random(&[b, lq, h, d], 2.0))?;
        let (kr, kt) = self.both(&self.random(&[b, lk, h, d], 2.0))?;
        let (vr, vt) = self.both(&self.random(&[b, lk, h, d], 1.0))?;
        let bias = if biased { Some(self.both(&self.random(&[h, lq, lk], 1.0))?) } else { None };
        let lengths: Vec<usize> = (0..b).map(|i| lk - i * (lk / 3)).collect();
        let (br, bt) = match &bias {
            Some((r, t)) => (
                AttentionBias { per_head: Some(r), key_lengths: Some(&lengths) },
                AttentionBias { per_head: Some(t), key_lengths: Some(&lengths) },
            ),
            None => (AttentionBias::default(), AttentionBias::default()),
        };
        let scale = 1.0 / (d as f32).sqrt();
        let w = self.reference.attention(&qr, &kr, &vr, scale, br, AttentionPrecision::Full)?;
        let g = self.under_test.attention(&qt, &kt, &vt, scale, bt, AttentionPrecision::Full)?;
        self.compare("attention", case, &w, &g)
    }

    fn attention(&self) -> Result<()> {
        self.attention_case("self, head dim 128, 75 tokens, CFG batch 2", [2, 75, 75, 3, 128], false)?;
        self.attention_case("self, head dim 64", [2, 75, 75, 5, 64], false)?;
        self.attention_case("cross to 13 text tokens", [2, 75, 13, 3, 128], false)?;
        self.attention_case("T5: position bias + padded keys", [2, 13, 13, 4, 64], true)
    }

    fn attention_int8(&self) -> Result<()> {
        // The 8-bit attention against the f32 reference: its own error is the int8 error, so this
        // compares the backend's 8-bit attention with the reference's 8-bit attention.
        let (qr, qt) = self.both(&self.random(&[2, 75, 3, 128], 2.0))?;
        let (kr, kt) = self.both(&self.random(&[2, 75, 3, 128], 2.0))?;
        let (vr, vt) = self.both(&self.random(&[2, 75, 3, 128], 1.0))?;
        let none = AttentionBias::default();
        let w = self.reference.attention(&qr, &kr, &vr, 0.088, none, AttentionPrecision::Int8)?;
        let g = self.under_test.attention(&qt, &kt, &vt, 0.088, none, AttentionPrecision::Int8)?;
        self.compare("attention_int8", "self, head dim 128", &w, &g)
    }

    fn upsample(&self) -> Result<()> {
        let (r, t) = self.both(&self.random(&[3, 16, 5, 7], 1.0))?;
        let (w, g) = (self.reference.upsample_nearest2x(&r)?, self.under_test.upsample_nearest2x(&t)?);
        self.compare("upsample", "nearest 2x", &w, &g)
    }

    fn timestep_embedding(&self) -> Result<()> {
        let ts = [999.0, 500.5, 3.0];
        let w = self.reference.timestep_embedding(&ts, 256, true, 0.0)?;
        let g = self.under_test.timestep_embedding(&ts, 256, true, 0.0)?;
        self.compare("timestep_embedding", "flip, dim 256", &w, &g)?;
        let w = self.reference.timestep_embedding(&ts, 33, false, 1.0)?;
        let g = self.under_test.timestep_embedding(&ts, 33, false, 1.0)?;
        self.compare("timestep_embedding", "odd dim 33, shift 1", &w, &g)
    }

    fn rope(&self) -> Result<()> {
        let (grid, dims) = ([3, 5, 5], [44, 42, 42]);
        let (cr, sr) = self.reference.rope_tables(grid, dims, 10000.0)?;
        let (ct, st) = self.under_test.rope_tables(grid, dims, 10000.0)?;
        self.compare("rope", "cos table", &cr, &ct)?;
        self.compare("rope", "sin table", &sr, &st)?;
        let (mut xr, mut xt) = self.both(&self.random(&[2, 75, 3, 128], 2.0))?;
        self.reference.rope_interleaved(&mut xr, &cr, &sr)?;
        self.under_test.rope_interleaved(&mut xt, &ct, &st)?;
        self.compare("rope", "interleaved, head dim 128", &xr, &xt)
    }

    fn relative_position_bias(&self) -> Result<()> {
        let table = self.random(&[32, 4], 1.0);
        let (tr, tt) = (self.reference.weight_tensor(table.clone())?, self.under_test.weight_tensor(table)?);
        let b = RelativeBuckets { num_buckets: 32, max_distance: 128, bidirectional: true };
        let (w, g) =
            (self.reference.relative_position_bias(&tr, 150, b)?, self.under_test.relative_position_bias(&tt, 150, b)?);
        self.compare("relative_position_bias", "150 tokens, 32 buckets", &w, &g)
    }
}

/// One `#[test]` per conformance op for the backend `$make` builds, each checked against
/// [`Tolerance::for_dtype`] of that backend's dtype. Used by every backend's test suite:
/// `wanrt_nn::backend_conformance!(cpu_bf16, CpuBackend::new(CpuOptions { dtype: DType::BF16, .. }));`
///
/// Attributes after the backend go on every test: a device backend's suite is
/// `backend_conformance!(cuda_bf16, open(), #[ignore = "needs a GPU"])`, run on a GPU machine with
/// `--ignored`, and reported as ignored (not passed) elsewhere.
#[macro_export]
macro_rules! backend_conformance {
    ($module:ident, $make:expr $(, #[$attr:meta])*) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;
            fn check(op: &str) {
                let backend = $make;
                let battery = $crate::backend::conformance::Battery::new(&backend);
                let tol = $crate::backend::conformance::Tolerance::for_dtype($crate::Backend::dtype(&backend));
                if let Err(e) = battery.check(op, tol) {
                    panic!("{e}");
                }
                for m in battery.measurements() {
                    println!("{:<24} {:<48} NMSE {:.3e}  max rel {:.3e}", m.op, m.case, m.nmse, m.max_rel);
                }
            }
            $crate::backend_conformance!(@tests check [$(#[$attr])*]; transfers layout binary lincomb cfg_combine
                activation affine_clamp mask_rows relative_l1 linear linear_quantized linear_activation embedding
                conv3d norms layer_norm_modulate channel_rms_norm add attention attention_int8 upsample
                timestep_embedding rope relative_position_bias);
        }
    };
    (@tests $check:ident $attrs:tt; $($op:ident)*) => {
        $( $crate::backend_conformance!(@test $check $attrs $op); )*
    };
    (@test $check:ident [$(#[$attr:meta])*] $op:ident) => {
        #[test]
        $(#[$attr])*
        fn $op() {
            $check(stringify!($op));
        }
    };
}
