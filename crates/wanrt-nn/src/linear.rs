//! Fully connected layer `y = x·Wᵀ + b` (PyTorch `nn.Linear` layout).
//!
//! Weights are kept in f32; in bf16/f16 when the checkpoint stores them so
//! and the store asks for it (widened block by block inside the product: the
//! same numbers at half the memory); or in the quantized formats of
//! [`crate::quant`] that `wanrt optimize` writes: int8 codes with f32 compute
//! (W8A16), int8 weights × int8 activations (W8A8, exact i32 accumulation,
//! optional SmoothQuant factors) or FP8 E4M3.
//!
//! Quantized checkpoint layout, per layer prefix `p`: `p.weight` as I8 or
//! F8_E4M3 codes `[out, in]`, `p.weight_scale` f32 `[out]`, optionally
//! `p.smooth` f32 `[in]` (SmoothQuant: the stored weight is `W·diag(s)`, the
//! activations are divided by `s`). Whether activations are quantized, and
//! how, is the store's [`WeightStore::activation_quant`] of `p`.

use crate::backend::Activation;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::ops::activation::{apply_inplace, gelu_tanh_scalar, silu_scalar};
use crate::ops::matmul::{gemm_general, matmul_nt, Layout};
use crate::probe::ActivationProbe;
use crate::quant::int8::gemm_w8a8_then;
use crate::quant::int8::DequantRows;
use crate::quant::{gemm_fp8, gemm_w8a16, gemm_w8a8, ActQuant, Fp8Matrix, Isa, PackedInt8, QuantizedMatrix};
use crate::weights::{RawTensor, WeightStore};
use crate::Tensor;
use rayon::prelude::*;
use std::borrow::Cow;
use std::sync::Arc;

/// Output rows of a half-precision weight widened per GEMM call.
const WIDEN_BLOCK: usize = 512;

#[derive(Debug, Clone)]
pub enum LinearWeight {
    /// `[out, in]` in f32.
    F32(Tensor),
    /// f32 parts (fused layers: stacked along the output) read in place from
    /// memory-mapped checkpoint files: loading copies nothing.
    Mapped { parts: Vec<RawTensor>, out_dim: usize, in_dim: usize },
    /// `[out, in]` as raw bf16/f16 bits.
    Half { dtype: DType, bits: Vec<u16>, out_dim: usize, in_dim: usize },
    /// W8A16: int8 codes with per-output-channel scales, f32 compute.
    Int8Weight(QuantizedMatrix),
    /// W8A8: int8 weights packed for the integer GEMM, activations quantized per `act`.
    Int8 {
        w: PackedInt8,
        act: ActQuant,
        /// `1/s` of SmoothQuant, applied to the activations inside the quantization pass.
        inv_smooth: Option<Vec<f32>>,
    },
    /// FP8 E4M3 weights; with `act`, activations are rounded through E4M3 too
    /// (emulated on CPU: the fidelity of the format, not its speed).
    Fp8 { w: Fp8Matrix, act: Option<ActQuant> },
}

/// Half-precision bits widened row block by row block inside the product.
struct HalfRows<'a> {
    dtype: DType,
    bits: &'a [u16],
    shape: [usize; 2],
}

impl DequantRows for HalfRows<'_> {
    fn shape(&self) -> [usize; 2] {
        self.shape
    }
    fn dequantize_rows(&self, start: usize, len: usize, out: &mut Vec<f32>) {
        let k = self.shape[1];
        let widen: fn(u16) -> f32 = match self.dtype {
            DType::F16 => |b| half::f16::from_bits(b).to_f32(),
            _ => |b| half::bf16::from_bits(b).to_f32(),
        };
        out.clear();
        out.extend(self.bits[start * k..(start + len) * k].iter().map(|&b| widen(b)));
    }
}

impl LinearWeight {
    pub fn shape(&self) -> [usize; 2] {
        match self {
            LinearWeight::F32(t) => [t.dim(0), t.dim(1)],
            LinearWeight::Mapped { out_dim, in_dim, .. } => [*out_dim, *in_dim],
            LinearWeight::Half { out_dim, in_dim, .. } => [*out_dim, *in_dim],
            LinearWeight::Int8Weight(q) => [q.rows, q.cols],
            LinearWeight::Int8 { w, .. } => [w.rows, w.cols],
            LinearWeight::Fp8 { w, .. } => [w.rows, w.cols],
        }
    }

    pub fn numel(&self) -> usize {
        let [o, i] = self.shape();
        o * i
    }

    /// Bytes held by the weight (codes, scales and smoothing factors included).
    pub fn bytes(&self) -> usize {
        match self {
            LinearWeight::F32(t) => t.numel() * 4,
            LinearWeight::Mapped { out_dim, in_dim, .. } => out_dim * in_dim * 4,
            LinearWeight::Half { bits, .. } => bits.len() * 2,
            LinearWeight::Int8Weight(q) => q.bytes(),
            LinearWeight::Int8 { w, inv_smooth, .. } => w.bytes() + inv_smooth.as_ref().map_or(0, |s| s.len() * 4),
            LinearWeight::Fp8 { w, .. } => w.bytes(),
        }
    }

    /// Short name of the storage format (reports).
    pub fn format(&self) -> &'static str {
        match self {
            LinearWeight::F32(_) | LinearWeight::Mapped { .. } => "f32",
            LinearWeight::Half { dtype: DType::F16, .. } => "f16",
            LinearWeight::Half { .. } => "bf16",
            LinearWeight::Int8Weight(_) => "int8-weight",
            LinearWeight::Int8 { .. } => "int8",
            LinearWeight::Fp8 { act: Some(_), .. } => "fp8",
            LinearWeight::Fp8 { act: None, .. } => "fp8-weight",
        }
    }

    /// Appends row `r` as f32 to `out` (dequantized for quantized formats).
    pub fn push_row(&self, r: usize, out: &mut Vec<f32>) {
        let [_, k] = self.shape();
        let mut tmp = Vec::new();
        let dequant = |rows: &dyn DequantRows, tmp: &mut Vec<f32>| rows.dequantize_rows(r, 1, tmp);
        match self {
            LinearWeight::F32(t) => out.extend_from_slice(&t.data()[r * k..(r + 1) * k]),
            LinearWeight::Mapped { parts, .. } => {
                let mut r0 = r;
                for p in parts {
                    let rows = p.shape[0];
                    if r0 < rows {
                        out.extend_from_slice(&p.mapped_f32().expect("checked at load")[r0 * k..(r0 + 1) * k]);
                        return;
                    }
                    r0 -= rows;
                }
            }
            LinearWeight::Half { dtype, bits, out_dim, .. } => {
                dequant(&HalfRows { dtype: *dtype, bits, shape: [*out_dim, k] }, &mut tmp)
            }
            LinearWeight::Int8Weight(q) => dequant(q, &mut tmp),
            LinearWeight::Int8 { w, .. } => dequant(w, &mut tmp),
            LinearWeight::Fp8 { w, .. } => dequant(&Fp8Rows(w), &mut tmp),
        }
        out.extend_from_slice(&tmp);
    }

    /// The weight in f32 (dequantized for quantized formats). Packed W8A8
    /// weights keep no f32-addressable copy: this is an error for them.
    pub fn to_f32(&self) -> Result<Tensor> {
        let [o, i] = self.shape();
        let data = match self {
            LinearWeight::F32(t) => return Ok(t.clone()),
            LinearWeight::Mapped { parts, .. } => {
                parts.iter().flat_map(|p| p.mapped_f32().expect("checked at load").iter().copied()).collect()
            }
            LinearWeight::Half { dtype, bits, .. } => {
                let mut v = Vec::new();
                HalfRows { dtype: *dtype, bits, shape: [o, i] }.dequantize_rows(0, o, &mut v);
                v
            }
            LinearWeight::Int8Weight(q) => q.dequantize(),
            LinearWeight::Fp8 { w, .. } => w.dequantize(),
            LinearWeight::Int8 { .. } => {
                return Err(Error::Msg("a packed W8A8 weight cannot be read back as f32".into()));
            }
        };
        Tensor::new([o, i], data)
    }
}

#[derive(Debug, Clone)]
pub struct Linear {
    pub weight: LinearWeight,
    pub bias: Option<Vec<f32>>,
    /// Records the inputs while attached (calibration only).
    pub probe: Option<Arc<ActivationProbe>>,
}

/// Concatenated little-endian f32 tensors `{p}.{suffix}` of every part, each checked to `[len]`.
fn load_f32_parts(ws: &WeightStore, prefixes: &[&str], suffix: &str, lens: &[usize]) -> Result<Vec<f32>> {
    let mut out = Vec::with_capacity(lens.iter().sum());
    for (p, &len) in prefixes.iter().zip(lens) {
        out.extend(ws.get_shaped(&format!("{p}.{suffix}"), &[len])?.into_data());
    }
    Ok(out)
}

/// The optional `{p}.smooth` vector, which fused parts (one shared input) must agree on.
fn load_smooth(ws: &WeightStore, prefixes: &[&str], in_dim: usize) -> Result<Option<Vec<f32>>> {
    let name = |p: &str| format!("{p}.smooth");
    let first = match ws.contains(&name(prefixes[0])) {
        true => Some(ws.get_shaped(&name(prefixes[0]), &[in_dim])?.into_data()),
        false => None,
    };
    for p in &prefixes[1..] {
        let other = match ws.contains(&name(p)) {
            true => Some(ws.get_shaped(&name(p), &[in_dim])?.into_data()),
            false => None,
        };
        if other != first {
            return Err(Error::Msg(format!(
                "fused layers {} and {p} read one input but have different smoothing factors",
                prefixes[0]
            )));
        }
    }
    if let Some(s) = &first {
        if let Some(bad) = s.iter().find(|v| !(v.is_finite() && **v > 0.0)) {
            return Err(Error::Msg(format!("{}: smoothing factor {bad} is not a positive number", name(prefixes[0]))));
        }
    }
    Ok(first)
}

impl Linear {
    pub fn from_f32(weight: Tensor, bias: Option<Vec<f32>>) -> Self {
        Linear { weight: LinearWeight::F32(weight), bias, probe: None }
    }

    /// Loads `{prefix}.weight` (and `{prefix}.bias` when `bias`) checking `[out, in]`.
    pub fn load(ws: &WeightStore, prefix: &str, in_dim: usize, out_dim: usize, bias: bool) -> Result<Self> {
        Self::load_fused(ws, &[prefix], in_dim, &[out_dim], bias)
    }

    /// Loads layers that read the same input stacked along the output
    /// dimension (one GEMM instead of several): part `i` is `{prefixes[i]}.weight`
    /// of shape `[out_dims[i], in_dim]`. All parts must share one storage format.
    pub fn load_fused(
        ws: &WeightStore,
        prefixes: &[&str],
        in_dim: usize,
        out_dims: &[usize],
        bias: bool,
    ) -> Result<Self> {
        assert!(!prefixes.is_empty() && prefixes.len() == out_dims.len(), "one output size per part");
        let mut raws: Vec<&RawTensor> = Vec::with_capacity(prefixes.len());
        for (p, &out) in prefixes.iter().zip(out_dims) {
            let name = format!("{p}.weight");
            let raw = ws.raw(&name)?;
            if raw.shape != [out, in_dim] {
                return Err(Error::TensorShape { name, expected: vec![out, in_dim], found: raw.shape.clone() });
            }
            if let Some(first) = raws.first().filter(|first| first.dtype != raw.dtype) {
                return Err(Error::Msg(format!(
                    "fused layers {} and {p} are stored in different formats ({} vs {})",
                    prefixes[0], first.dtype, raw.dtype
                )));
            }
            raws.push(raw);
        }
        let out_dim: usize = out_dims.iter().sum();
        let dtype = raws[0].dtype;
        let act = ws.activation_quant(prefixes[0]);
        if prefixes.iter().any(|p| ws.activation_quant(p) != act) {
            return Err(Error::Msg(format!("fused layers {prefixes:?} quantize their activations differently")));
        }
        let codes = || {
            let mut v = Vec::with_capacity(out_dim * in_dim * dtype.size_in_bytes());
            raws.iter().for_each(|r| v.extend_from_slice(&r.bytes()));
            v
        };
        let weight = match dtype {
            DType::I8 => {
                // The codes as stored (mapped files: no copy); each part is `[out_dims[i], in_dim]`.
                let parts: Vec<Cow<[u8]>> = raws.iter().map(|r| r.bytes()).collect();
                for (bytes, prefix) in parts.iter().zip(prefixes) {
                    if bytes.contains(&0x80) {
                        return Err(Error::Msg(format!(
                            "{prefix}.weight: int8 code -128 found, codes must lie in -127..=127"
                        )));
                    }
                }
                let scales = load_f32_parts(ws, prefixes, "weight_scale", out_dims)?;
                check_scales(prefixes[0], &scales)?;
                let smooth = load_smooth(ws, prefixes, in_dim)?;
                let starts: Vec<usize> = out_dims.iter().scan(0, |s, &d| Some(std::mem::replace(s, *s + d))).collect();
                let row = |j: usize| -> &[i8] {
                    let p = starts.partition_point(|&s| s <= j) - 1;
                    let local = j - starts[p];
                    bytemuck::cast_slice(&parts[p][local * in_dim..(local + 1) * in_dim])
                };
                match act {
                    // W8A8 packs straight from the stored codes into the kernel's panel layout.
                    Some(act) => LinearWeight::Int8 {
                        w: PackedInt8::pack(row, out_dim, in_dim, scales),
                        act,
                        inv_smooth: smooth.map(|s| s.iter().map(|v| 1.0 / v).collect()),
                    },
                    None if smooth.is_some() => {
                        return Err(Error::Msg(format!(
                            "{}: smoothing factors given for a layer whose activations are not quantized",
                            prefixes[0]
                        )));
                    }
                    None => {
                        let data =
                            parts.iter().flat_map(|p| bytemuck::cast_slice::<u8, i8>(p).iter().copied()).collect();
                        LinearWeight::Int8Weight(QuantizedMatrix { rows: out_dim, cols: in_dim, data, scales })
                    }
                }
            }
            DType::F8E4M3 => {
                let scales = load_f32_parts(ws, prefixes, "weight_scale", out_dims)?;
                check_scales(prefixes[0], &scales)?;
                LinearWeight::Fp8 { w: Fp8Matrix { rows: out_dim, cols: in_dim, data: codes(), scales }, act }
            }
            DType::BF16 | DType::F16 if ws.keeps_half() => {
                let bits = codes().chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
                LinearWeight::Half { dtype, bits, out_dim, in_dim }
            }
            _ if act.is_some() => {
                return Err(Error::Msg(format!(
                    "{}.weight is {dtype} but the layer is marked as quantized (expected i8 or f8_e4m3 codes)",
                    prefixes[0]
                )));
            }
            DType::F32 if raws.iter().all(|r| r.mapped_f32().is_some()) => {
                LinearWeight::Mapped { parts: raws.iter().map(|r| (*r).clone()).collect(), out_dim, in_dim }
            }
            _ => {
                let mut data = Vec::with_capacity(out_dim * in_dim);
                for p in prefixes {
                    data.extend(ws.get(&format!("{p}.weight"))?.into_data());
                }
                LinearWeight::F32(Tensor::new([out_dim, in_dim], data)?)
            }
        };
        let bias = if bias { Some(load_f32_parts(ws, prefixes, "bias", out_dims)?) } else { None };
        Ok(Linear { weight, bias, probe: None })
    }

    pub fn in_dim(&self) -> usize {
        self.weight.shape()[1]
    }

    pub fn out_dim(&self) -> usize {
        self.weight.shape()[0]
    }

    pub fn num_params(&self) -> usize {
        self.weight.numel() + self.bias.as_ref().map_or(0, Vec::len)
    }

    /// `x: [.., in]` → `[.., out]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_then::<fn(f32) -> f32>(x, None)
    }

    /// `act(x · Wᵀ + b)`. With W8A8 weights the activation runs inside the GEMM's output pass
    /// (the values are still in cache); otherwise as a pass after it. Same bits either way.
    pub fn forward_activation(&self, x: &Tensor, act: Activation) -> Result<Tensor> {
        match act {
            Activation::GeluTanh => self.forward_then(x, Some(gelu_tanh_scalar)),
            Activation::Silu => self.forward_then(x, Some(silu_scalar)),
        }
    }

    fn forward_then<F: Fn(f32) -> f32 + Sync + Copy>(&self, x: &Tensor, post: Option<F>) -> Result<Tensor> {
        let [n, k] = self.weight.shape();
        if x.shape().last() != Some(&k) {
            return Err(Error::shape("linear", format!("[.., {k}]"), x.shape()));
        }
        let m = x.numel() / k.max(1);
        if let Some(p) = &self.probe {
            p.record(x.data());
        }
        let mut shape = x.shape().to_vec();
        *shape.last_mut().expect("rank >= 1") = n;
        if m == 0 {
            return Tensor::new(shape, Vec::new());
        }
        let bias = self.bias.as_deref();
        let out = || vec![0.0f32; m * n];
        let mut data = match &self.weight {
            LinearWeight::F32(w) => {
                let mut y = matmul_nt(x, w)?;
                if let Some(b) = bias {
                    y.add_row(b)?;
                }
                if let Some(f) = post {
                    apply_inplace(y.data_mut(), f);
                }
                return Ok(y);
            }
            LinearWeight::Mapped { parts, .. } => {
                let mut o = out();
                let mut row0 = 0;
                for p in parts {
                    let rows = p.shape[0];
                    gemm_weight_rows(&mut o, n, x.data(), m, k, row0, rows, p.mapped_f32().expect("checked at load"));
                    row0 += rows;
                }
                add_bias(&mut o, n, bias);
                o
            }
            LinearWeight::Half { dtype, bits, .. } => {
                // Widened in blocks through the same parallel GEMM as f32 weights, so
                // half storage gives bit-identical results (tested end to end).
                let rows = HalfRows { dtype: *dtype, bits, shape: [n, k] };
                let mut o = out();
                let mut block = Vec::new();
                for start in (0..n).step_by(WIDEN_BLOCK) {
                    let len = WIDEN_BLOCK.min(n - start);
                    rows.dequantize_rows(start, len, &mut block);
                    gemm_weight_rows(&mut o, n, x.data(), m, k, start, len, &block);
                }
                add_bias(&mut o, n, bias);
                o
            }
            LinearWeight::Int8Weight(q) => {
                let mut o = out();
                gemm_w8a16(x.data(), m, k, q, bias, &mut o);
                o
            }
            LinearWeight::Int8 { w, act, inv_smooth } => {
                let mut o = out();
                let smooth = inv_smooth.as_deref();
                match post {
                    Some(f) => gemm_w8a8_then(Isa::detect(), x.data(), m, k, w, *act, smooth, bias, f, &mut o),
                    None => gemm_w8a8(x.data(), m, k, w, *act, smooth, bias, &mut o),
                }
                return Tensor::new(shape, o);
            }
            LinearWeight::Fp8 { w, act: Some(act) } => {
                let mut o = out();
                gemm_fp8(x.data(), m, k, w, *act, bias, &mut o);
                o
            }
            LinearWeight::Fp8 { w, act: None } => {
                let mut o = out();
                gemm_w8a16(x.data(), m, k, &Fp8Rows(w), bias, &mut o);
                o
            }
        };
        if let Some(f) = post {
            apply_inplace(&mut data, f);
        }
        Tensor::new(shape, data)
    }
}

/// `out[:, row0..row0 + rows] = x · wᵀ`, `w` being those rows of an `[n, k]` weight
/// (row-major `[rows, k]`), through the parallel GEMM every f32 weight uses.
#[allow(clippy::too_many_arguments)]
fn gemm_weight_rows(out: &mut [f32], n: usize, x: &[f32], m: usize, k: usize, row0: usize, rows: usize, w: &[f32]) {
    let w_layout = Layout { rs: 1, cs: k };
    gemm_general(&mut out[row0..], n, x, Layout::row_major(k), w, w_layout, m, rows, k, false, false);
}

/// Adds `bias` to every row of `out` (`n` columns).
fn add_bias(out: &mut [f32], n: usize, bias: Option<&[f32]>) {
    if let Some(b) = bias {
        out.chunks_exact_mut(n).for_each(|r| r.iter_mut().zip(b).for_each(|(y, b)| *y += b));
    }
}

/// FP8 weights widened for an f32 product (weight-only FP8).
struct Fp8Rows<'a>(&'a Fp8Matrix);

impl DequantRows for Fp8Rows<'_> {
    fn shape(&self) -> [usize; 2] {
        [self.0.rows, self.0.cols]
    }
    fn dequantize_rows(&self, start: usize, len: usize, out: &mut Vec<f32>) {
        self.0.dequantize_rows(start, len, out);
    }
}

fn check_scales(prefix: &str, scales: &[f32]) -> Result<()> {
    match scales.par_iter().find_any(|s| !(s.is_finite() && **s >= 0.0)) {
        Some(bad) => Err(Error::Msg(format!("{prefix}.weight_scale: scale {bad} is not a finite non-negative number"))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32_bytes(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    /// Half storage widened block by block gives exactly the f32 result.
    #[test]
    fn half_storage_matches_f32_exactly() {
        let (n, k, m) = (1100, 37, 5);
        let bits: Vec<u16> =
            (0..n * k).map(|i| half::bf16::from_f32(((i % 17) as f32 - 8.0) / 9.0).to_bits()).collect();
        let half = Linear {
            weight: LinearWeight::Half { dtype: DType::BF16, bits, out_dim: n, in_dim: k },
            bias: None,
            probe: None,
        };
        let full = Linear::from_f32(half.weight.to_f32().unwrap(), None);
        let x = Tensor::new([m, k], (0..m * k).map(|i| (i as f32).sin()).collect()).unwrap();
        assert_eq!(half.forward(&x).unwrap().data(), full.forward(&x).unwrap().data());
    }

    /// An activation fused into the W8A8 GEMM's output pass gives the bits of the two ops in
    /// sequence (and so does the unfused path of the other formats).
    #[test]
    fn fused_activation_equals_linear_then_activation() {
        let (n, k, m) = (300, 70, 9);
        let w = Tensor::new([n, k], (0..n * k).map(|i| ((i * 37 % 101) as f32 - 50.0) / 40.0).collect()).unwrap();
        let bias: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).cos()).collect();
        let q = QuantizedMatrix::quantize_per_row_symmetric(w.data(), n, k);
        let int8 = Linear {
            weight: LinearWeight::Int8 { w: PackedInt8::from_quantized(&q), act: ActQuant::PerToken, inv_smooth: None },
            bias: Some(bias.clone()),
            probe: None,
        };
        let full = Linear::from_f32(w, Some(bias));
        let x = Tensor::new([m, k], (0..m * k).map(|i| (i as f32 * 0.71).sin() * 3.0).collect()).unwrap();
        for layer in [&int8, &full] {
            for (act, f) in
                [(Activation::GeluTanh, gelu_tanh_scalar as fn(f32) -> f32), (Activation::Silu, silu_scalar)]
            {
                let fused = layer.forward_activation(&x, act).unwrap();
                let mut two = layer.forward(&x).unwrap();
                apply_inplace(two.data_mut(), f);
                assert!(fused.data().iter().zip(two.data()).all(|(a, b)| a.to_bits() == b.to_bits()), "{act:?}");
            }
        }
    }

    /// Quantized parts load fused, with their scales, smoothing and activation mode.
    #[test]
    fn loads_fused_int8_parts_and_rejects_bad_ones() {
        let (k, outs) = (8, [3usize, 5]);
        let mut ws = WeightStore::new("test");
        for (i, &o) in outs.iter().enumerate() {
            let codes: Vec<u8> =
                (0..o * k).map(|j| ((j as i32 % 255) - 127 + i as i32).clamp(-127, 127) as i8 as u8).collect();
            ws.insert(format!("l{i}.weight"), RawTensor::from_bytes(DType::I8, vec![o, k], codes).unwrap());
            let scales: Vec<f32> = (0..o).map(|r| 0.01 * (r + 1) as f32).collect();
            ws.insert(
                format!("l{i}.weight_scale"),
                RawTensor::from_bytes(DType::F32, vec![o], f32_bytes(&scales)).unwrap(),
            );
            ws.insert(
                format!("l{i}.bias"),
                RawTensor::from_bytes(DType::F32, vec![o], f32_bytes(&vec![0.5; o])).unwrap(),
            );
        }
        let x = Tensor::new([2, k], (0..2 * k).map(|i| (i as f32 * 0.7).cos()).collect()).unwrap();
        // Weight-only: equal to the f32 product on the dequantized weight (up to summation order).
        let w8a16 = Linear::load_fused(&ws, &["l0", "l1"], k, &outs, true).unwrap();
        assert_eq!(w8a16.weight.format(), "int8-weight");
        let deq = Linear::from_f32(w8a16.weight.to_f32().unwrap(), w8a16.bias.clone());
        let diff = w8a16.forward(&x).unwrap().max_abs_diff(&deq.forward(&x).unwrap()).unwrap();
        assert!(diff < 1e-5, "{diff}");
        // W8A8 when the store marks both parts.
        ws.set_activation_quant("l0", ActQuant::PerToken);
        assert!(Linear::load_fused(&ws, &["l0", "l1"], k, &outs, true).is_err(), "parts disagree");
        ws.set_activation_quant("l1", ActQuant::PerToken);
        let w8a8 = Linear::load_fused(&ws, &["l0", "l1"], k, &outs, true).unwrap();
        assert_eq!(w8a8.weight.format(), "int8");
        let rel = w8a8.forward(&x).unwrap().nmse(&deq.forward(&x).unwrap()).unwrap();
        assert!(rel < 1e-3, "{rel}");
        // Code -128 is out of range.
        ws.insert("l0.weight", RawTensor::from_bytes(DType::I8, vec![3, k], vec![0x80; 3 * k]).unwrap());
        let err = Linear::load_fused(&ws, &["l0", "l1"], k, &outs, true).unwrap_err().to_string();
        assert!(err.contains("-128"), "{err}");
    }
}
