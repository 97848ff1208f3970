//! The CPU backend: every [`Backend`] op on the kernels of [`crate::ops`], the numerical
//! reference (f32 accumulation everywhere).
//!
//! Its tensors live in host vectors of f32, bf16, f16 or u32. With `dtype: f32` (the default)
//! an op hands its inputs' vectors to the f32 kernels without a copy and keeps their results; with
//! `dtype: bf16` (or f16) every op widens its inputs, runs the same f32 kernels and rounds what it
//! produces to bf16, and layers hold their weights rounded to bf16: the numerics of a GPU running
//! the model in bf16 (bf16 tensors between ops, f32 accumulation inside them), known before a GPU
//! run. One difference remains: a GPU's flash attention rounds the softmax probabilities to bf16
//! before `P·V`, this backend keeps them in f32.

/// `$body` with `$f` bound to the scalar function of activation `$act`: one arm per activation,
/// so every kernel taking it is monomorphized for (and vectorizes) that function.
macro_rules! with_activation {
    ($act:expr, $f:ident => $body:expr) => {{
        use $crate::ops::activation as a;
        match $act {
            Activation::GeluTanh => {
                let $f = a::gelu_tanh_scalar;
                $body
            }
            Activation::GeluErf => {
                let $f = a::gelu_erf_scalar;
                $body
            }
            Activation::QuickGelu => {
                let $f = a::quick_gelu_scalar;
                $body
            }
            Activation::Silu => {
                let $f = a::silu_scalar;
                $body
            }
            Activation::Relu => {
                let $f = a::relu_scalar;
                $body
            }
        }
    }};
}

mod conv;
mod linear;
pub(crate) mod position;

use self::conv::CpuConv;
pub(crate) use self::linear::narrow_half as narrow_half_bits;
use self::linear::CpuLinear;
use super::{
    Activation, AttentionBias, AttentionPrecision, Backend, BinaryOp, PreparedWeight, RelativeBuckets, TransferCounter,
    Transfers,
};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::host::HostTensor;
use crate::ops::attention::{attention, attention_bf16, ScoreBias};
use crate::ops::attention_quant::attention_quant;
use crate::ops::packed::FloatIsa;
use crate::ops::{self, activation, layout, norm, PaddingFull};
use crate::tensor::{CpuStorage, Storage};
use crate::{Conv3d, Embedding, Linear, Tensor};
use half::{bf16, f16};
use rayon::prelude::*;
use std::sync::Arc;

/// How the CPU backend computes and holds weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuOptions {
    /// Activation dtype: f32 (the reference), or bf16/f16 (GPU numerics, half the memory).
    pub dtype: DType,
    /// Under f32, whether checkpoint weights are packed at load or streamed (same results).
    pub prepack: Prepack,
    /// GGUF Q8_0 weights run directly by the block-scaled int8 kernels
    /// ([`crate::quant::q8_0`]: activations rounded to 8 bits per 32-value block, as ggml's CPU
    /// backend runs them) instead of decoded into the exact f32 product.
    pub gguf_int8: bool,
}

impl Default for CpuOptions {
    fn default() -> Self {
        CpuOptions { dtype: DType::F32, prepack: Prepack::Auto, gguf_int8: false }
    }
}

/// Where the f32 products find checkpoint weights (f32, bf16, f16). Either way every product
/// returns the same bits; only load time, memory and product speed differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Prepack {
    /// Packed at load into the f32 GEMM's panels: no product repacks them (the load makes one
    /// pass over the model and holds it in f32, in memory written for it).
    Always,
    /// Streamed: left where they are stored (the mapped file) and packed inside each product, a
    /// block of output columns per task, while the other threads multiply: nothing done or held
    /// at load, one pass over the weights per product.
    Never,
    /// wanrt's choice, today streamed for every stored dtype: the streamed product measured as
    /// fast as packed weights in whole steps (`bench/results/prepack-zen3.md`), and packing at load
    /// writes the whole model to fresh memory (seconds to tens of seconds).
    #[default]
    Auto,
}

impl Prepack {
    /// Whether checkpoint weights are packed at load.
    pub fn packs(self) -> bool {
        match self {
            Prepack::Always => true,
            Prepack::Never | Prepack::Auto => false,
        }
    }
}

#[derive(Debug)]
pub struct CpuBackend {
    options: CpuOptions,
    counter: Arc<TransferCounter>,
}

/// `f32 → dtype → f32`: the value a half-precision tensor holds.
pub(crate) fn round_through(dtype: DType) -> fn(f32) -> f32 {
    match dtype {
        DType::BF16 => |v| bf16::from_f32(v).to_f32(),
        DType::F16 => |v| f16::from_f32(v).to_f32(),
        _ => |v| v,
    }
}

/// Conversions of large buffers run in parallel chunks of this many values.
const CONVERT_CHUNK: usize = 1 << 15;

fn convert<A: Copy + Sync, B: Copy + Send + Default>(src: &[A], f: impl Fn(A) -> B + Sync) -> Vec<B> {
    let mut out = vec![B::default(); src.len()];
    out.par_chunks_mut(CONVERT_CHUNK)
        .zip(src.par_chunks(CONVERT_CHUNK))
        .for_each(|(o, s)| o.iter_mut().zip(s).for_each(|(o, &v)| *o = f(v)));
    out
}

/// f32 values of a float storage: shared for f32, widened for bf16/f16.
fn widen(s: &CpuStorage) -> Result<Arc<Vec<f32>>> {
    Ok(match s {
        CpuStorage::F32(v) => v.clone(),
        CpuStorage::BF16(v) => Arc::new(convert(v, |x: bf16| x.to_f32())),
        CpuStorage::F16(v) => Arc::new(convert(v, |x: f16| x.to_f32())),
        CpuStorage::U32(_) => return Err(Error::Msg("expected a float tensor, found u32 ids".into())),
    })
}

/// f32 values stored as `dtype`.
fn narrow_to(values: Arc<Vec<f32>>, dtype: DType) -> Result<CpuStorage> {
    Ok(match dtype {
        DType::F32 => CpuStorage::F32(values),
        DType::BF16 => CpuStorage::BF16(Arc::new(convert(&values, bf16::from_f32))),
        DType::F16 => CpuStorage::F16(Arc::new(convert(&values, f16::from_f32))),
        other => return Err(Error::Msg(format!("cannot hold activations as {other}"))),
    })
}

fn storage(t: &Tensor) -> Result<&CpuStorage> {
    t.cpu_storage().ok_or_else(|| {
        Error::Msg(format!("the cpu backend was given a tensor held by the {} backend", t.storage().backend()))
    })
}

/// `t`'s values as an f32 host tensor (no copy for f32 tensors).
fn host(t: &Tensor) -> Result<HostTensor> {
    HostTensor::from_shared(t.shape().to_vec(), widen(storage(t)?)?)
}

/// A layout op applied to whichever element type `s` holds.
macro_rules! per_dtype {
    ($s:expr, $v:ident => $body:expr) => {
        match $s {
            CpuStorage::F32($v) => CpuStorage::F32(Arc::new($body)),
            CpuStorage::BF16($v) => CpuStorage::BF16(Arc::new($body)),
            CpuStorage::F16($v) => CpuStorage::F16(Arc::new($body)),
            CpuStorage::U32($v) => CpuStorage::U32(Arc::new($body)),
        }
    };
}

impl CpuBackend {
    pub fn new(options: CpuOptions) -> Self {
        CpuBackend { options, counter: Arc::default() }
    }

    /// The same device computing in `dtype` (transfers counted together).
    pub fn with_dtype(&self, dtype: DType) -> Self {
        CpuBackend { options: CpuOptions { dtype, ..self.options }, counter: self.counter.clone() }
    }

    pub fn options(&self) -> CpuOptions {
        self.options
    }

    /// An f32 kernel's result as a tensor of the backend's dtype.
    fn wrap(&self, h: HostTensor) -> Result<Tensor> {
        self.wrap_as(h, self.options.dtype)
    }

    fn wrap_as(&self, h: HostTensor, dtype: DType) -> Result<Tensor> {
        let shape = h.shape().to_vec();
        Tensor::from_storage(shape, Storage::Cpu(narrow_to(h.into_shared(), dtype)?))
    }

    /// Runs an in-place f32 kernel on `x` (keeping `x`'s dtype): moves the values out, so an
    /// unshared f32 tensor is written without a copy.
    fn in_place(&self, x: &mut Tensor, f: impl FnOnce(&mut HostTensor) -> Result<()>) -> Result<()> {
        let dtype = x.dtype();
        let (shape, s) = std::mem::replace(x, Tensor::placeholder()).into_parts();
        let values = match s {
            Storage::Cpu(s) => widen(&s)?,
            Storage::Device(d) => return Err(Error::Msg(format!("tensor held by the {} backend", d.backend()))),
        };
        let mut h = HostTensor::from_shared(shape, values)?;
        let result = f(&mut h);
        *x = self.wrap_as(h, dtype)?;
        result
    }

    fn prepared<'a, T: 'static>(&self, w: &'a dyn PreparedWeight, name: &str) -> Result<&'a T> {
        w.as_any().downcast_ref::<T>().ok_or_else(|| {
            Error::Msg(format!("layer {name} was prepared by the {} backend, not the cpu backend", w.backend()))
        })
    }
}

/// Per-element offsets of `shape` broadcast to `out` (NumPy rules), as strides over `out`'s dims.
fn broadcast_strides(shape: &[usize], out: &[usize]) -> Vec<usize> {
    let strides = crate::host::contiguous_strides(shape);
    let skip = out.len() - shape.len();
    (0..out.len()).map(|i| if i < skip || shape[i - skip] == 1 { 0 } else { strides[i - skip] }).collect()
}

fn broadcast_shape(a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let rank = a.len().max(b.len());
    let dim = |s: &[usize], i: usize| if i + s.len() < rank { 1 } else { s[i + s.len() - rank] };
    (0..rank)
        .map(|i| match (dim(a, i), dim(b, i)) {
            (x, y) if x == y || y == 1 => Ok(x),
            (1, y) => Ok(y),
            _ => Err(Error::shape("broadcast", a, b)),
        })
        .collect()
}

fn binary_fn(op: BinaryOp) -> fn(f32, f32) -> f32 {
    match op {
        BinaryOp::Add => |a, b| a + b,
        BinaryOp::Sub => |a, b| a - b,
        BinaryOp::Mul => |a, b| a * b,
        BinaryOp::Div => |a, b| a / b,
    }
}

/// `f(a, b)` elementwise with broadcasting; rows of the output's last dim are filled in parallel.
fn broadcast_binary(a: &HostTensor, b: &HostTensor, f: fn(f32, f32) -> f32) -> Result<HostTensor> {
    let shape = broadcast_shape(a.shape(), b.shape())?;
    let n = crate::host::numel(&shape);
    let mut out = vec![0f32; n];
    if a.shape() == b.shape() {
        out.par_chunks_mut(CONVERT_CHUNK)
            .zip(a.data().par_chunks(CONVERT_CHUNK).zip(b.data().par_chunks(CONVERT_CHUNK)))
            .for_each(|(o, (x, y))| o.iter_mut().zip(x.iter().zip(y)).for_each(|(o, (&x, &y))| *o = f(x, y)));
        return HostTensor::new(shape, out);
    }
    let (sa, sb) = (broadcast_strides(a.shape(), &shape), broadcast_strides(b.shape(), &shape));
    let last = *shape.last().unwrap_or(&1);
    let (la, lb) = (*sa.last().unwrap_or(&0), *sb.last().unwrap_or(&0));
    let rank = shape.len();
    out.par_chunks_mut(last.max(1)).enumerate().for_each(|(row, o)| {
        // Offsets of this row's first element in `a` and `b`.
        let (mut oa, mut ob, mut rest) = (0, 0, row);
        for i in (0..rank.saturating_sub(1)).rev() {
            let idx = rest % shape[i];
            rest /= shape[i];
            oa += idx * sa[i];
            ob += idx * sb[i];
        }
        for (j, o) in o.iter_mut().enumerate() {
            *o = f(a.data()[oa + j * la], b.data()[ob + j * lb]);
        }
    });
    HostTensor::new(shape, out)
}

impl Backend for CpuBackend {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn dtype(&self) -> DType {
        self.options.dtype
    }

    fn transfers(&self) -> Transfers {
        self.counter.snapshot()
    }

    fn upload(&self, t: &HostTensor) -> Result<Tensor> {
        self.counter.upload(t.numel() * 4);
        Tensor::from_storage(t.shape().to_vec(), Storage::Cpu(CpuStorage::F32(t.clone().into_shared())))
    }

    fn upload_ids(&self, shape: &[usize], ids: &[u32]) -> Result<Tensor> {
        self.counter.upload(ids.len() * 4);
        Tensor::from_storage(shape.to_vec(), Storage::Cpu(CpuStorage::U32(Arc::new(ids.to_vec()))))
    }

    fn to_host(&self, t: &Tensor) -> Result<HostTensor> {
        let h = host(t)?;
        self.counter.download(t.bytes());
        Ok(h)
    }

    fn prepare_linear(&self, layer: &Linear) -> Result<Arc<dyn PreparedWeight>> {
        Ok(Arc::new(CpuLinear::prepare(layer, &self.options, false)?))
    }

    fn prepare_table(&self, table: &Linear) -> Result<Arc<dyn PreparedWeight>> {
        Ok(Arc::new(CpuLinear::prepare(table, &self.options, true)?))
    }

    fn prepare_conv3d(&self, layer: &Conv3d) -> Result<Arc<dyn PreparedWeight>> {
        Ok(Arc::new(CpuConv::prepare(layer, &self.options)?))
    }

    fn weight_tensor(&self, t: HostTensor) -> Result<Tensor> {
        self.wrap_as(t, DType::F32)
    }

    fn zeros(&self, shape: &[usize], dtype: DType) -> Result<Tensor> {
        let n = crate::host::numel(shape);
        let s = match dtype {
            DType::F32 => CpuStorage::F32(Arc::new(vec![0.0; n])),
            DType::BF16 => CpuStorage::BF16(Arc::new(vec![bf16::ZERO; n])),
            DType::F16 => CpuStorage::F16(Arc::new(vec![f16::ZERO; n])),
            DType::U32 => CpuStorage::U32(Arc::new(vec![0; n])),
            other => return Err(Error::Msg(format!("cannot make a {other} tensor"))),
        };
        Tensor::from_storage(shape.to_vec(), Storage::Cpu(s))
    }

    fn narrow(&self, x: &Tensor, dim: usize, start: usize, len: usize) -> Result<Tensor> {
        let shape = x.shape();
        let s = per_dtype!(storage(x)?, v => layout::narrow(v, shape, dim, start, len)?);
        let mut out = shape.to_vec();
        out[dim] = len;
        Tensor::from_storage(out, Storage::Cpu(s))
    }

    fn cat(&self, xs: &[&Tensor], dim: usize) -> Result<Tensor> {
        let first = xs.first().ok_or_else(|| Error::Msg("cat of no tensors".into()))?;
        let shapes: Vec<&[usize]> = xs.iter().map(|t| t.shape()).collect();
        let stores = xs.iter().map(|t| storage(t)).collect::<Result<Vec<_>>>()?;
        if let Some(t) = xs.iter().find(|t| t.dtype() != first.dtype()) {
            return Err(Error::Msg(format!("cat of {} and {} tensors", first.dtype(), t.dtype())));
        }
        macro_rules! cat_as {
            ($variant:ident) => {{
                let parts: Vec<&[_]> = stores
                    .iter()
                    .map(|s| match s {
                        CpuStorage::$variant(v) => v.as_slice(),
                        _ => unreachable!("dtypes checked above"),
                    })
                    .collect();
                let (v, shape) = layout::cat(&parts, &shapes, dim)?;
                (CpuStorage::$variant(Arc::new(v)), shape)
            }};
        }
        let (s, shape) = match stores[0] {
            CpuStorage::F32(_) => cat_as!(F32),
            CpuStorage::BF16(_) => cat_as!(BF16),
            CpuStorage::F16(_) => cat_as!(F16),
            CpuStorage::U32(_) => cat_as!(U32),
        };
        Tensor::from_storage(shape, Storage::Cpu(s))
    }

    fn permute(&self, x: &Tensor, perm: &[usize]) -> Result<Tensor> {
        let shape = layout::permuted_shape(x.shape(), perm)?;
        let s = per_dtype!(storage(x)?, v => layout::permute(v, x.shape(), perm)?.0);
        Tensor::from_storage(shape, Storage::Cpu(s))
    }

    fn to_dtype(&self, x: &Tensor, dtype: DType) -> Result<Tensor> {
        if x.dtype() == dtype {
            return Ok(x.clone());
        }
        self.wrap_as(host(x)?, dtype)
    }

    fn binary(&self, op: BinaryOp, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        self.wrap(broadcast_binary(&host(a)?, &host(b)?, binary_fn(op))?)
    }

    fn scalar(&self, op: BinaryOp, x: &Tensor, s: f32) -> Result<Tensor> {
        let f = binary_fn(op);
        let mut h = host(x)?;
        h.data_mut().par_iter_mut().for_each(|v| *v = f(*v, s));
        self.wrap_as(h, x.dtype())
    }

    fn add_assign(&self, x: &mut Tensor, y: &Tensor) -> Result<()> {
        let y = host(y)?;
        self.in_place(x, |x| x.add_assign(&y))
    }

    fn lincomb(&self, terms: &[(f32, &Tensor)]) -> Result<Tensor> {
        let (&(c0, t0), rest) = terms.split_first().ok_or_else(|| Error::Msg("lincomb of no terms".into()))?;
        let mut acc = host(t0)?;
        if c0 != 1.0 {
            acc.data_mut().par_iter_mut().for_each(|v| *v *= c0);
        }
        for &(c, t) in rest {
            let t = host(t)?;
            if t.shape() != acc.shape() {
                return Err(Error::shape("lincomb", acc.shape(), t.shape()));
            }
            let src = t.data();
            acc.data_mut().par_iter_mut().zip(src.par_iter()).for_each(|(a, &v)| *a += c * v);
        }
        self.wrap_as(acc, DType::F32)
    }

    fn cfg_combine(&self, pair: &Tensor, guidance: f32) -> Result<Tensor> {
        if pair.rank() == 0 || pair.dim(0) != 2 {
            return Err(Error::shape("cfg_combine", "[2, ..]", pair.shape()));
        }
        let h = host(pair)?;
        let half = h.numel() / 2;
        let (cond, uncond) = h.data().split_at(half);
        let out: Vec<f32> = cond.par_iter().zip(uncond.par_iter()).map(|(&c, &u)| u + guidance * (c - u)).collect();
        let mut shape = pair.shape().to_vec();
        shape[0] = 1;
        self.wrap(HostTensor::new(shape, out)?)
    }

    fn activation(&self, x: Tensor, act: Activation) -> Result<Tensor> {
        let h = host(&x)?;
        drop(x);
        self.wrap(with_activation!(act, f => activation::map(h, f)))
    }

    fn affine_clamp(&self, x: &mut Tensor, mul: f32, add: f32, lo: f32, hi: f32) -> Result<()> {
        self.in_place(x, |x| {
            activation::apply_inplace(x.data_mut(), |v| (v * mul + add).clamp(lo, hi));
            Ok(())
        })
    }

    fn mask_rows(&self, x: &mut Tensor, lengths: &[usize]) -> Result<()> {
        if x.rank() < 2 || lengths.len() != x.dim(0) || lengths.iter().any(|&n| n > x.dim(1)) {
            return Err(Error::shape(
                "mask_rows",
                format!("[{}, ≥ lengths {lengths:?}, ..]", lengths.len()),
                x.shape(),
            ));
        }
        let (l, row) = (x.dim(1), x.numel() / (x.dim(0) * x.dim(1)).max(1));
        self.in_place(x, |x| {
            for (b, &n) in lengths.iter().enumerate() {
                x.data_mut()[(b * l + n) * row..(b + 1) * l * row].fill(0.0);
            }
            Ok(())
        })
    }

    fn relative_l1(&self, a: &Tensor, b: &Tensor) -> Result<f64> {
        if a.shape() != b.shape() {
            return Err(Error::shape("relative_l1", b.shape(), a.shape()));
        }
        let (a, b) = (host(a)?, host(b)?);
        let (num, den) = a
            .data()
            .par_iter()
            .zip(b.data().par_iter())
            .map(|(&x, &y)| ((x - y).abs() as f64, y.abs() as f64))
            .reduce(|| (0.0, 0.0), |p, q| (p.0 + q.0, p.1 + q.1));
        self.counter.scalar_read();
        Ok(if den > 0.0 {
            num / den
        } else if num == 0.0 {
            0.0
        } else {
            f64::INFINITY
        })
    }

    fn all_finite(&self, x: &Tensor) -> Result<bool> {
        let finite = host(x)?.all_finite();
        self.counter.scalar_read();
        Ok(finite)
    }

    fn linear(&self, layer: &Linear, x: &Tensor) -> Result<Tensor> {
        let w: &CpuLinear = self.prepared(layer.prepared()?, &layer.name)?;
        self.wrap(w.forward(&host(x)?, None)?)
    }

    fn linear_activation(&self, layer: &Linear, x: &Tensor, act: Activation) -> Result<Tensor> {
        let w: &CpuLinear = self.prepared(layer.prepared()?, &layer.name)?;
        self.wrap(w.forward(&host(x)?, Some(act))?)
    }

    fn embedding(&self, table: &Embedding, ids: &Tensor) -> Result<Tensor> {
        let w: &CpuLinear = self.prepared(table.table.prepared()?, &table.table.name)?;
        let CpuStorage::U32(ids_v) = storage(ids)? else {
            return Err(Error::Msg(format!("embedding ids must be u32, found {}", ids.dtype())));
        };
        let [vocab, dim] = w.shape();
        let mut out = Vec::with_capacity(ids_v.len() * dim);
        for &id in ids_v.iter() {
            let row = id as usize;
            if row >= vocab {
                return Err(Error::Msg(format!("embedding: id {row} outside a table of {vocab} rows")));
            }
            w.push_row(row, &mut out);
        }
        let mut shape = ids.shape().to_vec();
        shape.push(dim);
        self.wrap(HostTensor::new(shape, out)?)
    }

    fn conv3d(&self, layer: &Conv3d, x: &Tensor, history: Option<&Tensor>, pad: PaddingFull) -> Result<Tensor> {
        let w: &CpuConv = self.prepared(layer.prepared()?, &layer.name)?;
        let history = history.map(host).transpose()?;
        self.wrap(w.forward(&host(x)?, history.as_ref(), pad)?)
    }

    fn rms_norm(&self, x: Tensor, eps: f32, weight: Option<&Tensor>) -> Result<Tensor> {
        let weight = weight.map(host).transpose()?;
        let h = host(&x)?;
        drop(x);
        self.wrap(norm::rms_norm(h, eps, weight.as_ref().map(|w| w.data()))?)
    }

    fn layer_norm(&self, x: Tensor, eps: f32, weight: Option<&Tensor>, bias: Option<&Tensor>) -> Result<Tensor> {
        let (weight, bias) = (weight.map(host).transpose()?, bias.map(host).transpose()?);
        let h = host(&x)?;
        drop(x);
        self.wrap(norm::layer_norm(h, eps, weight.as_ref().map(|w| w.data()), bias.as_ref().map(|b| b.data()))?)
    }

    fn layer_norm_modulate(&self, x: &Tensor, eps: f32, scale: &Tensor, shift: &Tensor) -> Result<Tensor> {
        let (scale, shift) = (host(scale)?, host(shift)?);
        self.wrap(ops::modulate::layer_norm_modulate(&host(x)?, eps, scale.data(), shift.data())?)
    }

    fn channel_rms_norm(&self, x: &Tensor, gamma: &Tensor, silu: bool) -> Result<Tensor> {
        let (x, gamma) = (host(x)?, host(gamma)?);
        self.wrap(if silu {
            norm::l2_norm_channels_silu(&x, gamma.data())?
        } else {
            norm::l2_norm_channels(&x, gamma.data())?
        })
    }

    fn add_gated(&self, x: &mut Tensor, y: &Tensor, gate: &Tensor) -> Result<()> {
        let (y, gate) = (host(y)?, host(gate)?);
        self.in_place(x, |x| ops::modulate::add_gated(x, &y, gate.data()))
    }

    fn attention(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        scale: f32,
        bias: AttentionBias,
        precision: AttentionPrecision,
    ) -> Result<Tensor> {
        let (q, k, v) = (host(q)?, host(k)?, host(v)?);
        let out = match precision {
            AttentionPrecision::Full => {
                let per_head = bias.per_head.map(host).transpose()?;
                let per_key = match bias.key_lengths {
                    Some(lens) => {
                        let (b, lk) = (k.dim(0), k.dim(1));
                        if lens.len() != b || lens.iter().any(|&n| n > lk) {
                            return Err(Error::shape("attention key lengths", format!("{b} lengths ≤ {lk}"), lens));
                        }
                        Some(
                            (0..b * lk)
                                .map(|i| if i % lk < lens[i / lk] { 0.0 } else { f32::NEG_INFINITY })
                                .collect::<Vec<f32>>(),
                        )
                    }
                    None => None,
                };
                let bias = ScoreBias { per_head: per_head.as_ref().map(|t| t.data()), per_key: per_key.as_deref() };
                match self.options.dtype {
                    // The bf16 backend's products take bf16 operands, as its linear layers do.
                    DType::BF16 => attention_bf16(FloatIsa::detect(), &q, &k, &v, scale, bias)?,
                    _ => attention(&q, &k, &v, scale, bias)?,
                }
            }
            AttentionPrecision::Int8 if bias.is_none() => attention_quant(&q, &k, &v, scale)?,
            AttentionPrecision::Int8 => return Err(Error::Msg("int8 attention takes no score bias".into())),
        };
        self.wrap(out)
    }

    fn upsample_nearest2x(&self, x: &Tensor) -> Result<Tensor> {
        self.wrap(ops::resize::upsample_nearest2x(&host(x)?)?)
    }

    fn timestep_embedding(&self, timesteps: &[f32], dim: usize, flip_sin_to_cos: bool, shift: f32) -> Result<Tensor> {
        self.wrap(position::timestep_embedding(timesteps, dim, flip_sin_to_cos, shift)?)
    }

    fn rope_tables(&self, grid: [usize; 3], dims: [usize; 3], theta: f64) -> Result<(Tensor, Tensor)> {
        let (cos, sin) = position::rope_tables(grid, dims, theta)?;
        Ok((self.wrap_as(cos, DType::F32)?, self.wrap_as(sin, DType::F32)?))
    }

    fn rope_interleaved(&self, x: &mut Tensor, cos: &Tensor, sin: &Tensor) -> Result<()> {
        let (cos, sin) = (host(cos)?, host(sin)?);
        self.in_place(x, |x| ops::rope::apply_rope_interleaved(x, cos.data(), sin.data()))
    }

    fn relative_position_bias(&self, table: &Tensor, len: usize, buckets: RelativeBuckets) -> Result<Tensor> {
        self.wrap(position::relative_position_bias(&host(table)?, len, buckets)?)
    }
}
