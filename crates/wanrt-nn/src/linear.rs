//! Fully connected layer `y = x·Wᵀ + b` (PyTorch `nn.Linear` layout), described by its stored
//! format and prepared once by a backend.
//!
//! A [`Linear`] says what its weights are — f32/bf16/f16 as stored (read in place from the
//! mapped checkpoint), or the quantized formats `wanrt optimize` writes: int8 codes with
//! per-output-channel scales, computed in float (W8A16) or with int8 activations (W8A8, optional
//! SmoothQuant factors), FP8 E4M3 codes + scales, or ggml's block-quantized formats of a GGUF
//! checkpoint (blocks with their own scales, decoded as ggml does) — and holds the backend's
//! prepared form of them ([`crate::backend::PreparedWeight`]: packed panels on the CPU, a device
//! buffer on a GPU).
//!
//! Quantized checkpoint layout, per layer prefix `p`: `p.weight` as I8 or F8_E4M3 codes
//! `[out, in]`, `p.weight_scale` f32 `[out]`, optionally `p.smooth` f32 `[in]` (SmoothQuant:
//! the stored weight is `W·diag(s)`, the activations are divided by `s`). Whether activations are
//! quantized, and how, is the store's [`WeightStore::activation_quant`] of `p`.
//!
//! Calibration watches a layer's inputs through an [`LinearObserver`] attached to it: the layer
//! reads its input back from the backend and hands it over before the backend computes, so the
//! hook works on every backend and sits outside every kernel.

use crate::backend::{Activation, Backend, PreparedWeight};
use crate::dtype::{bytes_to_f32, DType};
use crate::error::{Error, Result};
use crate::host::HostTensor;
use crate::lora::SidePath;
use crate::quant::{e4m3_to_f32, ActQuant};
use crate::weights::{RawTensor, WeightStore};
use crate::Tensor;
use rayon::prelude::*;
use std::sync::Arc;

/// A layer's weights as stored: the format a backend prepares from.
#[derive(Debug, Clone)]
pub enum LinearWeight {
    /// f32, bf16 or f16 values; parts (fused layers) stacked along the output dimension.
    Float(Vec<RawTensor>),
    /// Symmetric int8 codes with one f32 scale per output row (`scales: [out]`).
    Int8 {
        codes: Vec<RawTensor>,
        scales: Vec<f32>,
        /// W8A8: activations quantized this way at run time (None: W8A16, float compute).
        act: Option<ActQuant>,
        /// SmoothQuant factors `s: [in]` folded into the stored weight.
        smooth: Option<Vec<f32>>,
    },
    /// FP8 E4M3 codes with one f32 scale per output row; with `act`, activations are rounded
    /// through E4M3 too.
    Fp8 { codes: Vec<RawTensor>, scales: Vec<f32>, act: Option<ActQuant> },
    /// GGUF parts: ggml block-quantized rows (whole blocks per row), possibly mixed with plain
    /// f32/bf16/f16 parts; each part decodes on its own.
    Ggml(Vec<RawTensor>),
}

impl LinearWeight {
    /// The stored tensors, one per fused part.
    pub fn parts(&self) -> &[RawTensor] {
        match self {
            LinearWeight::Float(p) | LinearWeight::Ggml(p) => p,
            LinearWeight::Int8 { codes, .. } | LinearWeight::Fp8 { codes, .. } => codes,
        }
    }

    /// The weight of stored parts `[rows, in_dim]` whose values decode on their own: `Float` when
    /// they share one float dtype, `Ggml` when any is block-quantized or their float dtypes
    /// differ (GGUF files mix them). Block-quantized rows that are not whole blocks (a tensor a
    /// converter reshaped) are dequantized to f32 here.
    pub fn decodable(mut raws: Vec<RawTensor>, in_dim: usize) -> Result<LinearWeight> {
        for raw in &mut raws {
            if raw.dtype.is_block_quantized() && !in_dim.is_multiple_of(raw.dtype.block_size()) {
                *raw = RawTensor::from_f32(&HostTensor::new(raw.shape.clone(), raw.to_f32()?)?);
            }
        }
        let float = |d: DType| matches!(d, DType::F32 | DType::BF16 | DType::F16);
        if let Some(bad) = raws.iter().find(|r| !(float(r.dtype) || r.dtype.is_block_quantized())) {
            return Err(Error::UnsupportedDType { name: format!("{bad:?}"), dtype: bad.dtype.to_string() });
        }
        let one_float = raws.iter().all(|r| r.dtype == raws[0].dtype && float(r.dtype));
        Ok(if one_float { LinearWeight::Float(raws) } else { LinearWeight::Ggml(raws) })
    }

    /// Element type of the stored values.
    pub fn dtype(&self) -> DType {
        self.parts()[0].dtype
    }

    /// Short name of the stored format (reports, manifests).
    pub fn format(&self) -> &'static str {
        match self {
            LinearWeight::Ggml(p) => p.iter().find(|r| r.dtype.is_block_quantized()).map_or("gguf", |r| r.dtype.name()),
            LinearWeight::Float(p) => match p[0].dtype {
                DType::BF16 => "bf16",
                DType::F16 => "f16",
                _ => "f32",
            },
            LinearWeight::Int8 { act: None, .. } => "int8-weight",
            LinearWeight::Int8 { .. } => "int8",
            LinearWeight::Fp8 { act: Some(_), .. } => "fp8",
            LinearWeight::Fp8 { act: None, .. } => "fp8-weight",
        }
    }

    /// Bytes as stored (codes, scales and smoothing factors included).
    pub fn stored_bytes(&self) -> usize {
        let values: usize = self.parts().iter().map(|p| p.bytes().len()).sum();
        values
            + match self {
                LinearWeight::Float(_) | LinearWeight::Ggml(_) => 0,
                LinearWeight::Int8 { scales, smooth, .. } => (scales.len() + smooth.as_ref().map_or(0, Vec::len)) * 4,
                LinearWeight::Fp8 { scales, .. } => scales.len() * 4,
            }
    }
}

/// Sees the inputs of the layers it is attached to (calibration statistics).
pub trait LinearObserver: Send + Sync + std::fmt::Debug {
    /// `x: [.., in]` as given to the layer named `layer`.
    fn observe(&self, layer: &str, x: &HostTensor);
}

#[derive(Debug, Clone)]
pub struct Linear {
    /// Module path (`blocks.3.attn1.to_qkv`): what reports, plans and observers call the layer.
    pub name: String,
    /// Checkpoint prefixes fused into the layer (`blocks.3.attn1.to_q` …) and their output rows.
    pub parts: Vec<(String, usize)>,
    pub weight: LinearWeight,
    /// `[out]`.
    pub bias: Option<Vec<f32>>,
    in_dim: usize,
    out_dim: usize,
    /// Sees every input while attached.
    pub observer: Option<Arc<dyn LinearObserver>>,
    prepared: Option<Arc<dyn PreparedWeight>>,
    /// LoRA deltas kept unmerged (quantized weights): `y += up(down(x))`.
    pub side: Option<Box<SideLayers>>,
}

/// A low-rank side path as two f32 layers, prepared with the main one.
#[derive(Debug, Clone)]
pub struct SideLayers {
    pub down: Linear,
    pub up: Linear,
}

impl SideLayers {
    fn new(name: &str, path: &SidePath) -> Result<Self> {
        Ok(SideLayers {
            down: Linear::from_f32(format!("{name}.lora_down"), &path.down, None)?,
            up: Linear::from_f32(format!("{name}.lora_up"), &path.up, None)?,
        })
    }
}

/// The side paths of fused parts as one: downs stacked along the rank, ups block-diagonal.
fn fused_side_path<'a>(
    side_path: impl Fn(&str) -> Option<&'a SidePath>,
    prefixes: &[&str],
    out_dims: &[usize],
    in_dim: usize,
) -> Result<Option<SidePath>> {
    let paths: Vec<Option<&SidePath>> = prefixes.iter().map(|p| side_path(p)).collect();
    if paths.iter().all(Option::is_none) {
        return Ok(None);
    }
    let rank: usize = paths.iter().flatten().map(|p| p.down.shape()[0]).sum();
    let out: usize = out_dims.iter().sum();
    let (mut down, mut up) = (Vec::with_capacity(rank * in_dim), vec![0f32; out * rank]);
    let (mut row0, mut col0) = (0, 0);
    for (path, &rows) in paths.iter().zip(out_dims) {
        if let Some(p) = path {
            let r = p.down.shape()[0];
            if p.down.shape() != [r, in_dim] || p.up.shape() != [rows, r] {
                return Err(Error::Msg(format!(
                    "LoRA side path of shape {:?} / {:?} does not fit",
                    p.down.shape(),
                    p.up.shape()
                )));
            }
            down.extend_from_slice(p.down.data());
            for o in 0..rows {
                up[(row0 + o) * rank + col0..(row0 + o) * rank + col0 + r]
                    .copy_from_slice(&p.up.data()[o * r..(o + 1) * r]);
            }
            col0 += r;
        }
        row0 += rows;
    }
    Ok(Some(SidePath { down: HostTensor::new([rank, in_dim], down)?, up: HostTensor::new([out, rank], up)? }))
}

fn check_part(name: &str, raw: &RawTensor, rows: usize, in_dim: usize) -> Result<()> {
    if raw.shape != [rows, in_dim] {
        return Err(Error::TensorShape { name: name.into(), expected: vec![rows, in_dim], found: raw.shape.clone() });
    }
    Ok(())
}

/// Concatenated f32 tensors `{p}.{suffix}` of every part, each checked to `[len]`.
fn load_f32_parts(ws: &WeightStore, prefixes: &[&str], suffix: &str, lens: &[usize]) -> Result<Vec<f32>> {
    let mut out = Vec::with_capacity(lens.iter().sum());
    for (p, &len) in prefixes.iter().zip(lens) {
        out.extend(ws.get_shaped(&format!("{p}.{suffix}"), &[len])?.into_data());
    }
    Ok(out)
}

/// The optional `{p}.smooth` vector, which fused parts (one shared input) must agree on.
fn load_smooth(ws: &WeightStore, prefixes: &[&str], in_dim: usize) -> Result<Option<Vec<f32>>> {
    let read = |p: &str| -> Result<Option<Vec<f32>>> {
        let name = format!("{p}.smooth");
        Ok(if ws.contains(&name) { Some(ws.get_shaped(&name, &[in_dim])?.into_data()) } else { None })
    };
    let first = read(prefixes[0])?;
    for p in &prefixes[1..] {
        if read(p)? != first {
            return Err(Error::Msg(format!(
                "fused layers {} and {p} read one input but have different smoothing factors",
                prefixes[0]
            )));
        }
    }
    if let Some(s) = &first {
        if let Some(bad) = s.iter().find(|v| !(v.is_finite() && **v > 0.0)) {
            return Err(Error::Msg(format!("{}.smooth: smoothing factor {bad} is not a positive number", prefixes[0])));
        }
    }
    Ok(first)
}

fn check_scales(prefix: &str, scales: &[f32]) -> Result<()> {
    match scales.par_iter().find_any(|s| !(s.is_finite() && **s >= 0.0)) {
        Some(bad) => Err(Error::Msg(format!("{prefix}.weight_scale: scale {bad} is not a finite non-negative number"))),
        None => Ok(()),
    }
}

impl Linear {
    /// A layer over stored weights `[Σ parts' rows, in_dim]`, checked against `parts`.
    pub fn new(
        name: impl Into<String>,
        parts: Vec<(String, usize)>,
        in_dim: usize,
        weight: LinearWeight,
        bias: Option<Vec<f32>>,
    ) -> Result<Self> {
        let name = name.into();
        let stored = weight.parts();
        if stored.len() != parts.len() || parts.is_empty() {
            return Err(Error::Msg(format!("{name}: {} stored parts for {} named parts", stored.len(), parts.len())));
        }
        for ((pname, rows), raw) in parts.iter().zip(stored) {
            check_part(&format!("{pname}.weight"), raw, *rows, in_dim)?;
        }
        let out_dim = parts.iter().map(|p| p.1).sum();
        if let Some(b) = &bias {
            if b.len() != out_dim {
                return Err(Error::shape("linear bias", out_dim, b.len()));
            }
        }
        match &weight {
            LinearWeight::Float(p) => {
                if !p[0].dtype.is_float() || p[0].dtype == DType::F64 {
                    return Err(Error::UnsupportedDType {
                        name: format!("{name}.weight"),
                        dtype: p[0].dtype.to_string(),
                    });
                }
            }
            LinearWeight::Ggml(p) => {
                if let Some(bad) = p.iter().find(|r| !in_dim.is_multiple_of(r.dtype.block_size())) {
                    return Err(Error::Msg(format!(
                        "{name}: rows of {in_dim} values are not whole {} blocks of {}",
                        bad.dtype,
                        bad.dtype.block_size()
                    )));
                }
            }
            LinearWeight::Int8 { codes, scales, .. } | LinearWeight::Fp8 { codes, scales, .. } => {
                let want = if matches!(weight, LinearWeight::Int8 { .. }) { DType::I8 } else { DType::F8E4M3 };
                if codes.iter().any(|c| c.dtype != want) || scales.len() != out_dim {
                    return Err(Error::Msg(format!(
                        "{name}: expected {want} codes with {out_dim} scales, found {} codes with {} scales",
                        codes[0].dtype,
                        scales.len()
                    )));
                }
                check_scales(&name, scales)?;
            }
        }
        if !matches!(weight, LinearWeight::Ggml(_)) && stored.iter().any(|p| p.dtype != stored[0].dtype) {
            return Err(Error::Msg(format!("{name}: fused parts are stored in different formats")));
        }
        if let LinearWeight::Int8 { codes, smooth, act, .. } = &weight {
            for (bytes, (pname, _)) in codes.iter().map(|c| c.bytes()).zip(&parts) {
                if bytes.contains(&0x80) {
                    return Err(Error::Msg(format!(
                        "{pname}.weight: int8 code -128 found, codes must lie in -127..=127"
                    )));
                }
            }
            if smooth.as_ref().is_some_and(|s| s.len() != in_dim) {
                return Err(Error::shape("linear smoothing factors", in_dim, smooth.as_ref().map_or(0, Vec::len)));
            }
            if smooth.is_some() && act.is_none() {
                return Err(Error::Msg(format!(
                    "{name}: smoothing factors given for a layer whose activations are not quantized"
                )));
            }
        }
        Ok(Linear { name, parts, weight, bias, in_dim, out_dim, observer: None, prepared: None, side: None })
    }

    /// A single-part f32 layer `w: [out, in]` (tests, pruning, patch embedding).
    pub fn from_f32(name: impl Into<String>, w: &HostTensor, bias: Option<Vec<f32>>) -> Result<Self> {
        let name = name.into();
        let &[out, inp] = w.shape() else {
            return Err(Error::shape("linear weight", "[out, in]", w.shape()));
        };
        let raw = RawTensor::from_f32(w);
        Linear::new(name.clone(), vec![(name, out)], inp, LinearWeight::Float(vec![raw]), bias)
    }

    /// Loads layers that read the same input stacked along the output dimension (one GEMM
    /// instead of several): part `i` is `{prefixes[i]}.weight` of shape `[out_dims[i], in_dim]`
    /// (plus `weight_scale`/`smooth` for quantized parts). All parts share one storage format.
    pub fn load_fused(
        ws: &WeightStore,
        name: &str,
        prefixes: &[&str],
        in_dim: usize,
        out_dims: &[usize],
        bias: bool,
    ) -> Result<Self> {
        if prefixes.is_empty() || prefixes.len() != out_dims.len() {
            return Err(Error::Msg(format!("{name}: one output size per fused part")));
        }
        let mut raws = Vec::with_capacity(prefixes.len());
        for (p, &out) in prefixes.iter().zip(out_dims) {
            let wname = format!("{p}.weight");
            let raw = ws.raw(&wname)?;
            check_part(&wname, raw, out, in_dim)?;
            let decodable = |d: DType| d.is_float() || d.is_block_quantized();
            if let Some(first) = raws.first().filter(|first: &&RawTensor| {
                first.dtype != raw.dtype && !(decodable(first.dtype) && decodable(raw.dtype))
            }) {
                return Err(Error::Msg(format!(
                    "fused layers {} and {p} are stored in different formats ({} vs {})",
                    prefixes[0], first.dtype, raw.dtype
                )));
            }
            raws.push(raw.clone());
        }
        let act = ws.activation_quant(prefixes[0]);
        if prefixes.iter().any(|p| ws.activation_quant(p) != act) {
            return Err(Error::Msg(format!("fused layers {prefixes:?} quantize their activations differently")));
        }
        let weight = match raws[0].dtype {
            DType::I8 => LinearWeight::Int8 {
                scales: load_f32_parts(ws, prefixes, "weight_scale", out_dims)?,
                smooth: load_smooth(ws, prefixes, in_dim)?,
                codes: raws,
                act,
            },
            DType::F8E4M3 => {
                LinearWeight::Fp8 { scales: load_f32_parts(ws, prefixes, "weight_scale", out_dims)?, codes: raws, act }
            }
            dtype if act.is_some() => {
                return Err(Error::Msg(format!(
                    "{}.weight is {dtype} but the layer is marked as quantized (expected i8 or f8_e4m3 codes)",
                    prefixes[0]
                )));
            }
            _ => LinearWeight::decodable(raws, in_dim)?,
        };
        let bias = if bias { Some(load_f32_parts(ws, prefixes, "bias", out_dims)?) } else { None };
        let parts = prefixes.iter().zip(out_dims).map(|(p, &o)| (p.to_string(), o)).collect();
        let mut layer = Linear::new(name, parts, in_dim, weight, bias)?;
        if let Some(path) = fused_side_path(|p| ws.side_path(p), prefixes, out_dims, in_dim)? {
            layer.side = Some(Box::new(SideLayers::new(name, &path)?));
        }
        Ok(layer)
    }

    /// A copy of this prepared layer with the low-rank side paths `side_path(part)` of its parts
    /// attached and `bias_delta(part)` added as the side path's bias (prepared for `backend`);
    /// None when neither names any of its parts. The main weights and bias are shared with
    /// `self`, never changed or prepared again: this is how a per-request adapter runs beside
    /// other requests on one loaded model.
    pub fn with_adapter<'a>(
        &self,
        side_path: impl Fn(&str) -> Option<&'a SidePath>,
        bias_delta: impl Fn(&str) -> Option<&'a [f32]>,
        backend: &dyn Backend,
    ) -> Result<Option<Linear>> {
        let prefixes: Vec<&str> = self.parts.iter().map(|p| p.0.as_str()).collect();
        let out_dims: Vec<usize> = self.parts.iter().map(|p| p.1).collect();
        let side = fused_side_path(side_path, &prefixes, &out_dims, self.in_dim)?;
        let biased = prefixes.iter().any(|p| bias_delta(p).is_some());
        if side.is_none() && !biased {
            return Ok(None);
        }
        if self.side.is_some() {
            return Err(Error::Msg(format!("{}: already runs a LoRA side path", self.name)));
        }
        // A bias delta alone rides on a rank-1 side path of zeros.
        let path = match side {
            Some(p) => p,
            None => SidePath {
                down: HostTensor::new([1, self.in_dim], vec![0.0; self.in_dim])?,
                up: HostTensor::new([self.out_dim, 1], vec![0.0; self.out_dim])?,
            },
        };
        let mut bias = None;
        if biased {
            let mut b = Vec::with_capacity(self.out_dim);
            for (p, &rows) in prefixes.iter().zip(&out_dims) {
                match bias_delta(p) {
                    Some(d) if d.len() != rows => {
                        return Err(Error::Msg(format!("{p}.bias: a delta of {} values for {rows} rows", d.len())))
                    }
                    Some(d) => b.extend_from_slice(d),
                    None => b.resize(b.len() + rows, 0.0),
                }
            }
            bias = Some(b);
        }
        let mut s = SideLayers {
            down: Linear::from_f32(format!("{}.lora_down", self.name), &path.down, None)?,
            up: Linear::from_f32(format!("{}.lora_up", self.name), &path.up, bias)?,
        };
        s.down.prepare(backend)?;
        s.up.prepare(backend)?;
        let mut layer = self.clone();
        layer.side = Some(Box::new(s));
        Ok(Some(layer))
    }

    pub fn in_dim(&self) -> usize {
        self.in_dim
    }

    pub fn out_dim(&self) -> usize {
        self.out_dim
    }

    pub fn num_params(&self) -> usize {
        self.in_dim * self.out_dim + self.bias.as_ref().map_or(0, Vec::len)
    }

    /// Bytes held: the prepared form when prepared (what the backend keeps), else as stored.
    pub fn bytes(&self) -> usize {
        let side = self.side.as_ref().map_or(0, |s| s.down.bytes() + s.up.bytes());
        let bias = side + self.bias.as_ref().map_or(0, |b| b.len() * 4);
        bias + self.prepared.as_ref().map_or_else(|| self.weight.stored_bytes(), |p| p.bytes())
    }

    /// Storage format name (the prepared form's when prepared).
    pub fn format(&self) -> &'static str {
        self.prepared.as_ref().map_or_else(|| self.weight.format(), |p| p.format())
    }

    /// Has `backend` make its form of the weights (replacing any earlier one).
    pub fn prepare(&mut self, backend: &dyn Backend) -> Result<()> {
        self.prepared = Some(backend.prepare_linear(self)?);
        if let Some(side) = &mut self.side {
            side.down.prepare(backend)?;
            side.up.prepare(backend)?;
        }
        Ok(())
    }

    /// Has `backend` make its row-lookup form of the weights (an embedding table).
    pub fn prepare_table(&mut self, backend: &dyn Backend) -> Result<()> {
        self.prepared = Some(backend.prepare_table(self)?);
        Ok(())
    }

    /// The backend's form of the weights; an error names the layer when it was never prepared.
    pub fn prepared(&self) -> Result<&dyn PreparedWeight> {
        self.prepared
            .as_deref()
            .ok_or_else(|| Error::Msg(format!("layer {} was not prepared for a backend", self.name)))
    }

    fn observe(&self, be: &dyn Backend, x: &Tensor) -> Result<()> {
        if let Some(obs) = &self.observer {
            obs.observe(&self.name, &be.to_host(x)?);
        }
        Ok(())
    }

    /// `x: [.., in]` → `[.., out]` on `be`.
    pub fn forward(&self, be: &dyn Backend, x: &Tensor) -> Result<Tensor> {
        self.observe(be, x)?;
        let mut y = be.linear(self, x)?;
        if let Some(side) = &self.side {
            let low = side.up.forward(be, &side.down.forward(be, x)?)?;
            be.add_assign(&mut y, &low)?;
        }
        Ok(y)
    }

    /// `act(x · Wᵀ + b)` on `be` (fused where the backend can; after the side path when there
    /// is one).
    pub fn forward_activation(&self, be: &dyn Backend, x: &Tensor, act: Activation) -> Result<Tensor> {
        if self.side.is_some() {
            return be.activation(self.forward(be, x)?, act);
        }
        self.observe(be, x)?;
        be.linear_activation(self, x, act)
    }

    /// Row `r` of the weight as f32 (dequantized, SmoothQuant folded back out), appended to `out`.
    pub fn push_row(&self, r: usize, out: &mut Vec<f32>) -> Result<()> {
        let k = self.in_dim;
        let (mut part, mut local) = (0, r);
        while part < self.parts.len() && local >= self.parts[part].1 {
            local -= self.parts[part].1;
            part += 1;
        }
        if part == self.parts.len() {
            return Err(Error::Msg(format!("{}: row {r} outside {} rows", self.name, self.out_dim)));
        }
        let raw = &self.weight.parts()[part];
        let bytes = raw.bytes();
        let row_bytes = raw.dtype.storage_bytes(k).expect("checked at construction");
        let row = &bytes[local * row_bytes..(local + 1) * row_bytes];
        let start = out.len();
        match &self.weight {
            LinearWeight::Float(_) | LinearWeight::Ggml(_) => {
                out.extend(bytes_to_f32(row, raw.dtype).ok_or_else(|| Error::Msg("unsupported weight dtype".into()))?)
            }
            LinearWeight::Int8 { scales, smooth, .. } => {
                let s = scales[r];
                out.extend(row.iter().map(|&c| c as i8 as f32 * s));
                if let Some(sm) = smooth {
                    out[start..].iter_mut().zip(sm).for_each(|(v, s)| *v /= s);
                }
            }
            LinearWeight::Fp8 { scales, .. } => {
                let s = scales[r];
                out.extend(row.iter().map(|&c| e4m3_to_f32(c) * s));
            }
        }
        Ok(())
    }

    /// The weight `[out, in]` in f32 (dequantized for quantized formats).
    pub fn to_f32(&self) -> Result<HostTensor> {
        let mut data = Vec::with_capacity(self.out_dim * self.in_dim);
        if let LinearWeight::Float(parts) | LinearWeight::Ggml(parts) = &self.weight {
            for p in parts {
                data.extend(bytes_to_f32(&p.bytes(), p.dtype).ok_or_else(|| Error::Msg("unsupported dtype".into()))?);
            }
        } else {
            for r in 0..self.out_dim {
                self.push_row(r, &mut data)?;
            }
        }
        HostTensor::new([self.out_dim, self.in_dim], data)
    }
}
