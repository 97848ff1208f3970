//! The CPU backend's form of a linear layer's weights, and the products on it.
//!
//! Prepared once from the layer's stored format ([`crate::LinearWeight`]):
//! - f32/bf16/f16 in a checkpoint: streamed by default ([`super::Prepack`]), left where it is
//!   stored and packed inside each product ([`gemm_streamed`]: same bits, nothing done or
//!   allocated at load); or, under `--prepack always`, packed into the f32 GEMM's panels
//!   ([`PackedF32`]) straight from the mapped bytes, in parallel, so no product repacks the weight
//!   and a half-precision checkpoint is widened once, in the packing pass (the file pages are
//!   then dropped: the model is held once);
//!   a half-precision backend (`--dtype bf16`) rounds every float weight to its dtype, as a GPU
//!   holds them;
//! - f32/bf16/f16 already in process memory (a LoRA-merged weight) and embedding tables: used
//!   where they lie the same way (a merged weight is not held twice; a lookup reads a few rows);
//! - int8 codes: per-row codes for the W8A16 product, or packed into the integer micro-kernel's
//!   panels for W8A8;
//! - E4M3 codes with their scales (emulated exactly: the fidelity of the format, not its speed);
//! - GGUF parts (ggml block-quantized rows): used in place from the mapped file and decoded block
//!   of rows by block of rows inside each product, like streamed weights (the weight is held
//!   once, at its quantized size); or, for Q8_0 under `gguf_int8`, packed for the block-scaled
//!   int8 kernels ([`crate::quant::q8_0`]), the file's pages then released.

use super::CpuOptions;
use crate::backend::{Activation, PreparedWeight};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::linear::{Linear, LinearWeight};
use crate::ops::activation::apply_inplace;
use crate::ops::packed::{gemm_bf16, gemm_packed, gemm_streamed, FloatIsa, PackedBf16, PackedF32};
use crate::quant::int8::{gemm_w8a8_then, DequantRows};
use crate::quant::{
    gemm_fp8, gemm_q8_0_then, gemm_w8a16, gemm_w8a8, ActQuant, Fp8Matrix, Isa, PackedInt8, PackedQ8_0, QuantizedMatrix,
};
use crate::weights::RawTensor;
use crate::HostTensor;
use std::any::Any;

#[derive(Debug)]
enum CpuWeight {
    /// `[out, in]` in the packed GEMM's panels.
    Packed(PackedF32),
    /// `[out, in]` as bf16 pairs for the bf16 product (`--dtype bf16`).
    PackedBf16(PackedBf16),
    /// `[out, in]` as raw bf16/f16 bits.
    Half { dtype: DType, bits: Vec<u16> },
    /// W8A16: int8 codes with per-output-channel scales, f32 compute.
    Int8Weight(QuantizedMatrix),
    /// W8A8: int8 weights packed for the integer GEMM, activations quantized per `act`.
    Int8 {
        w: PackedInt8,
        act: ActQuant,
        /// `1/s` of SmoothQuant, applied to the activations inside the quantization pass.
        inv_smooth: Option<Vec<f32>>,
    },
    /// FP8 E4M3 weights; with `act`, activations are rounded through E4M3 too.
    Fp8 { w: Fp8Matrix, act: Option<ActQuant> },
    /// GGUF Q8_0 blocks packed for the block-scaled int8 product.
    Q8_0(PackedQ8_0),
    /// Parts decoded and packed block of rows by block of rows inside each product
    /// ([`gemm_streamed`]), read where they are stored: GGUF blocks or f32/bf16/f16 in the mapped
    /// file (streamed weights), or a LoRA-merged weight in process memory (held once).
    Stored(StoredRows),
}

/// The parts of a layer stacked along the output dimension, each decoding its own dtype.
#[derive(Debug)]
pub(crate) struct StoredRows {
    parts: Vec<RawTensor>,
    starts: PartStarts,
    shape: [usize; 2],
}

/// Where each of a layer's parts starts along the output dimension.
#[derive(Debug)]
struct PartStarts(Vec<usize>);

impl PartStarts {
    fn of(parts: &[RawTensor]) -> Self {
        PartStarts(parts.iter().scan(0, |s, p| Some(std::mem::replace(s, *s + p.shape[0]))).collect())
    }

    /// `(part, row within it)` of output row `j`.
    fn locate(&self, j: usize) -> (usize, usize) {
        let p = self.0.partition_point(|&s| s <= j) - 1;
        (p, j - self.0[p])
    }
}

impl StoredRows {
    fn new(parts: &[RawTensor], n: usize, k: usize) -> Result<Self> {
        let starts = PartStarts::of(parts);
        if let Some(p) = parts.iter().find(|p| !p.dtype.is_block_quantized() && widen_bytes(p.dtype).is_none()) {
            return Err(Error::UnsupportedDType { name: format!("{p:?}"), dtype: p.dtype.to_string() });
        }
        // Every row decode borrows its part's bytes: a part that can only be copied out (a
        // strided pickle tensor) is made contiguous once, here.
        let parts = parts
            .iter()
            .map(|p| match p.bytes() {
                std::borrow::Cow::Borrowed(_) => Ok(p.clone()),
                std::borrow::Cow::Owned(b) => RawTensor::from_bytes(p.dtype, p.shape.clone(), b),
            })
            .collect::<Result<_>>()?;
        Ok(StoredRows { parts, starts, shape: [n, k] })
    }

    /// Writes row `j` as f32 into `dst` (`k` values).
    fn decode_row(&self, j: usize, dst: &mut [f32]) {
        let (p, local) = self.starts.locate(j);
        let part = &self.parts[p];
        let row_bytes = part.dtype.storage_bytes(self.shape[1]).expect("checked by Linear::new");
        let bytes = &part.bytes()[local * row_bytes..(local + 1) * row_bytes];
        if part.dtype.is_block_quantized() {
            crate::quant::ggml::dequantize(part.dtype, bytes, dst);
        } else {
            widen_into(part.dtype, bytes, dst);
        }
    }
}

/// The stored bytes of `[·, k]` parts stacked along the output dimension, read by row in place.
struct StackedBytes<'a> {
    parts: &'a [RawTensor],
    bytes: Vec<std::borrow::Cow<'a, [u8]>>,
    starts: PartStarts,
    k: usize,
}

impl<'a> StackedBytes<'a> {
    fn new(parts: &'a [RawTensor], k: usize) -> Self {
        StackedBytes { parts, bytes: parts.iter().map(|p| p.bytes()).collect(), starts: PartStarts::of(parts), k }
    }

    /// The dtype and stored bytes of output row `j`.
    fn row(&self, j: usize) -> (DType, &[u8]) {
        let (p, local) = self.starts.locate(j);
        let dtype = self.parts[p].dtype;
        let row_bytes = dtype.storage_bytes(self.k).expect("checked by Linear::new");
        (dtype, &self.bytes[p][local * row_bytes..(local + 1) * row_bytes])
    }
}

#[derive(Debug)]
pub(crate) struct CpuLinear {
    weight: CpuWeight,
    bias: Option<Vec<f32>>,
    /// `[out, in]`.
    shape: [usize; 2],
}

impl PreparedWeight for CpuLinear {
    fn backend(&self) -> &'static str {
        "cpu"
    }

    fn bytes(&self) -> usize {
        match &self.weight {
            CpuWeight::Packed(w) => w.bytes(),
            CpuWeight::PackedBf16(w) => w.bytes(),
            CpuWeight::Half { bits, .. } => bits.len() * 2,
            CpuWeight::Int8Weight(q) => q.bytes(),
            CpuWeight::Int8 { w, inv_smooth, .. } => w.bytes() + inv_smooth.as_ref().map_or(0, |s| s.len() * 4),
            CpuWeight::Fp8 { w, .. } => w.bytes(),
            CpuWeight::Q8_0(w) => w.bytes(),
            CpuWeight::Stored(g) => g.parts.iter().map(|p| p.bytes().len()).sum(),
        }
    }

    fn format(&self) -> &'static str {
        match &self.weight {
            CpuWeight::Packed(_) => "f32",
            CpuWeight::Half { dtype: DType::F16, .. } => "f16",
            CpuWeight::PackedBf16(_) => "bf16",
            CpuWeight::Half { .. } => "bf16",
            CpuWeight::Int8Weight(_) => "int8-weight",
            CpuWeight::Int8 { .. } => "int8",
            CpuWeight::Fp8 { act: Some(_), .. } => "fp8",
            CpuWeight::Fp8 { act: None, .. } => "fp8-weight",
            CpuWeight::Q8_0(_) => "q8_0-int8",
            CpuWeight::Stored(g) => match g.parts.iter().find(|p| p.dtype.is_block_quantized()) {
                Some(p) => p.dtype.name(),
                None => g.parts[0].dtype.name(),
            },
        }
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

fn widen_half(dtype: DType) -> fn(u16) -> f32 {
    match dtype {
        DType::F16 => |b| half::f16::from_bits(b).to_f32(),
        _ => |b| half::bf16::from_bits(b).to_f32(),
    }
}

/// Row `j` of a `[·, k]` weight held as `dtype` half bits, widened into `dst` (`k` values).
fn half_row(dtype: DType, bits: &[u16], k: usize) -> impl Fn(usize, &mut [f32]) + Sync + '_ {
    let widen = widen_half(dtype);
    move |j, dst| dst.iter_mut().zip(&bits[j * k..(j + 1) * k]).for_each(|(d, &b)| *d = widen(b))
}

/// Appends `k` values written by `write` to `out`.
fn push_with(out: &mut Vec<f32>, k: usize, write: impl FnOnce(&mut [f32])) {
    let start = out.len();
    out.resize(start + k, 0.0);
    write(&mut out[start..]);
}

/// f32 → half bits of `dtype` (round to nearest even).
pub(crate) fn narrow_half(dtype: DType) -> fn(f32) -> u16 {
    match dtype {
        DType::F16 => |v| half::f16::from_f32(v).to_bits(),
        _ => |v| half::bf16::from_f32(v).to_bits(),
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

fn concat_bytes(parts: &[RawTensor]) -> Vec<u8> {
    let mut v = Vec::with_capacity(parts.iter().map(|p| p.bytes().len()).sum());
    parts.iter().for_each(|p| v.extend_from_slice(&p.bytes()));
    v
}

/// Float parts rounded to `half` bits, converted straight from the stored bytes in parallel
/// (a checkpoint is gigabytes).
fn rounded_bits(parts: &[RawTensor], half: DType) -> Result<Vec<u16>> {
    use rayon::prelude::*;
    const CHUNK: usize = 1 << 16;
    let to = narrow_half(half);
    let mut bits = Vec::new();
    for p in parts {
        let size = p.dtype.size_in_bytes();
        let bytes = p.bytes();
        let start = bits.len();
        bits.resize(start + bytes.len() / size, 0u16);
        let widen = widen_bytes(p.dtype)
            .ok_or_else(|| Error::UnsupportedDType { name: format!("{p:?}"), dtype: p.dtype.to_string() })?;
        bits[start..].par_chunks_mut(CHUNK).zip(bytes.par_chunks(CHUNK * size)).for_each(|(o, b)| {
            o.iter_mut().zip(b.chunks_exact(size)).for_each(|(o, c)| *o = to(widen(c)));
        });
    }
    Ok(bits)
}

/// The little-endian f32/bf16/f16 value of one element's bytes.
fn widen_bytes(dtype: DType) -> Option<fn(&[u8]) -> f32> {
    Some(match dtype {
        DType::F32 => |c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]),
        DType::BF16 => |c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32(),
        DType::F16 => |c| half::f16::from_le_bytes([c[0], c[1]]).to_f32(),
        _ => return None,
    })
}

/// Float parts stacked along the output dimension: row `j` decoded from the stored bytes (read
/// once, in place) by `decode(dtype, bytes, dst)`, after checking every part's dtype decodes.
fn float_rows<'a, T>(
    parts: &'a [RawTensor],
    k: usize,
    decode: impl Fn(DType, &[u8], &mut [T]) + Sync + 'a,
) -> Result<impl Fn(usize, &mut [T]) + Sync + 'a> {
    if let Some(p) = parts.iter().find(|p| widen_bytes(p.dtype).is_none()) {
        return Err(Error::UnsupportedDType { name: format!("{p:?}"), dtype: p.dtype.to_string() });
    }
    let rows = StackedBytes::new(parts, k);
    Ok(move |j: usize, dst: &mut [T]| {
        let (dtype, bytes) = rows.row(j);
        decode(dtype, bytes, dst);
    })
}

/// Little-endian f32/bf16/f16 bytes widened into `dst` (one loop per dtype: the packing pass
/// of a checkpoint runs at memory speed).
fn widen_into(dtype: DType, src: &[u8], dst: &mut [f32]) {
    let pairs = dst.iter_mut();
    match dtype {
        DType::F32 => {
            pairs.zip(src.chunks_exact(4)).for_each(|(d, c)| *d = f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        }
        DType::BF16 => pairs
            .zip(src.chunks_exact(2))
            .for_each(|(d, c)| *d = f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16)),
        _ => pairs.zip(src.chunks_exact(2)).for_each(|(d, c)| *d = half::f16::from_le_bytes([c[0], c[1]]).to_f32()),
    }
}

/// Little-endian f32/bf16/f16 bytes as bf16 bits in `dst` (f32 and f16 rounded to nearest even).
fn bf16_into(dtype: DType, src: &[u8], dst: &mut [u16]) {
    let pairs = dst.iter_mut();
    match dtype {
        DType::BF16 => pairs.zip(src.chunks_exact(2)).for_each(|(d, c)| *d = u16::from_le_bytes([c[0], c[1]])),
        DType::F32 => pairs
            .zip(src.chunks_exact(4))
            .for_each(|(d, c)| *d = half::bf16::from_f32(f32::from_le_bytes([c[0], c[1], c[2], c[3]])).to_bits()),
        _ => pairs
            .zip(src.chunks_exact(2))
            .for_each(|(d, c)| *d = half::bf16::from_f32(half::f16::from_le_bytes([c[0], c[1]]).to_f32()).to_bits()),
    }
}

fn half_bits(parts: &[RawTensor]) -> Vec<u16> {
    concat_bytes(parts).chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect()
}

impl CpuLinear {
    /// Prepares `layer` for products, or with `lookup` for row lookups (an embedding table:
    /// kept addressable by row, never packed).
    pub(crate) fn prepare(layer: &Linear, opts: &CpuOptions, lookup: bool) -> Result<Self> {
        let (n, k) = (layer.out_dim(), layer.in_dim());
        let weight = match &layer.weight {
            LinearWeight::Float(parts) => {
                let stored = parts[0].dtype;
                match opts.dtype {
                    // The bf16 backend multiplies bf16 by bf16 (vdpbf16ps where the CPU has it).
                    DType::BF16 if !lookup => {
                        CpuWeight::PackedBf16(PackedBf16::pack(float_rows(parts, k, bf16_into)?, n, k))
                    }
                    // A half-precision backend holds every float weight in its dtype.
                    half @ (DType::BF16 | DType::F16) => {
                        let bits = if stored == half { half_bits(parts) } else { rounded_bits(parts, half)? };
                        CpuWeight::Half { dtype: half, bits }
                    }
                    // Used where they are stored: a table (lookups read a few rows), a weight in
                    // process memory (a LoRA-merged one: packing it would hold it twice), and
                    // streamed checkpoint weights.
                    _ if lookup || parts.iter().any(RawTensor::is_in_memory) || !opts.prepack.packs() => {
                        CpuWeight::Stored(StoredRows::new(parts, n, k)?)
                    }
                    _ => CpuWeight::Packed(PackedF32::pack(float_rows(parts, k, widen_into)?, n, k)),
                }
            }
            LinearWeight::Int8 { codes, scales, act: None, .. } => {
                let data = concat_bytes(codes).into_iter().map(|b| b as i8).collect();
                CpuWeight::Int8Weight(QuantizedMatrix { rows: n, cols: k, data, scales: scales.clone() })
            }
            LinearWeight::Int8 { codes, scales, act: Some(act), smooth } => {
                // Packed straight from the stored codes (mapped files: no intermediate copy).
                let rows = StackedBytes::new(codes, k);
                CpuWeight::Int8 {
                    w: PackedInt8::pack(|j| bytemuck::cast_slice(rows.row(j).1), n, k, scales.clone()),
                    act: *act,
                    inv_smooth: smooth.as_ref().map(|s| s.iter().map(|v| 1.0 / v).collect()),
                }
            }
            LinearWeight::Fp8 { codes, scales, act } => CpuWeight::Fp8 {
                w: Fp8Matrix { rows: n, cols: k, data: concat_bytes(codes), scales: scales.clone() },
                act: *act,
            },
            LinearWeight::Ggml(parts) if opts.gguf_int8 && !lookup && parts.iter().all(|p| p.dtype == DType::Q8_0) => {
                let rows = StackedBytes::new(parts, k);
                match PackedQ8_0::from_blocks(|j| rows.row(j).1, n, k) {
                    Some(w) => CpuWeight::Q8_0(w),
                    // A code of −128 (never written by ggml): decoded like the other GGUF types.
                    None => CpuWeight::Stored(StoredRows::new(parts, n, k)?),
                }
            }
            LinearWeight::Ggml(parts) => CpuWeight::Stored(StoredRows::new(parts, n, k)?),
        };
        if !matches!(weight, CpuWeight::Stored(_)) {
            // The backend holds its own copy: the mapped file pages need not stay resident.
            layer.weight.parts().iter().for_each(RawTensor::release_pages);
        }
        Ok(CpuLinear { weight, bias: layer.bias.clone(), shape: [n, k] })
    }

    /// Appends row `r` as f32 to `out` (embedding lookups).
    pub(crate) fn push_row(&self, r: usize, out: &mut Vec<f32>) {
        let k = self.shape[1];
        let mut tmp = Vec::new();
        let dequant = |rows: &dyn DequantRows, tmp: &mut Vec<f32>| rows.dequantize_rows(r, 1, tmp);
        match &self.weight {
            CpuWeight::Packed(w) => w.push_row(r, out),
            CpuWeight::PackedBf16(w) => w.push_row(r, out),
            CpuWeight::Half { dtype, bits } => push_with(out, k, |dst| half_row(*dtype, bits, k)(r, dst)),
            CpuWeight::Int8Weight(q) => dequant(q, &mut tmp),
            CpuWeight::Int8 { w, .. } => dequant(w, &mut tmp),
            CpuWeight::Fp8 { w, .. } => dequant(&Fp8Rows(w), &mut tmp),
            CpuWeight::Q8_0(_) => unreachable!("tables are never packed for products"),
            CpuWeight::Stored(g) => push_with(out, k, |dst| g.decode_row(r, dst)),
        }
        out.extend_from_slice(&tmp);
    }

    /// `[vocab, dim]` of a table.
    pub(crate) fn shape(&self) -> [usize; 2] {
        self.shape
    }

    pub(crate) fn forward(&self, x: &HostTensor, act: Option<Activation>) -> Result<HostTensor> {
        match act {
            None => self.forward_then::<fn(f32) -> f32>(x, None),
            Some(act) => with_activation!(act, f => self.forward_then(x, Some(f))),
        }
    }

    /// `post(x · Wᵀ + b)`. With W8A8 weights `post` runs inside the GEMM's output pass (the values
    /// are still in cache); otherwise as a pass after it. Same bits either way.
    fn forward_then<F: Fn(f32) -> f32 + Sync + Copy>(&self, x: &HostTensor, post: Option<F>) -> Result<HostTensor> {
        let [n, k] = self.shape;
        if x.shape().last() != Some(&k) {
            return Err(Error::shape("linear", format!("[.., {k}]"), x.shape()));
        }
        let m = x.numel() / k.max(1);
        let mut shape = x.shape().to_vec();
        *shape.last_mut().expect("rank >= 1") = n;
        if m == 0 {
            return HostTensor::new(shape, Vec::new());
        }
        let bias = self.bias.as_deref();
        let out = || vec![0.0f32; m * n];
        let streamed = |row: &(dyn Fn(usize, &mut [f32]) + Sync)| {
            let mut o = out();
            match post {
                Some(f) => gemm_streamed(FloatIsa::detect(), x.data(), m, [n, k], row, bias, f, &mut o),
                None => gemm_streamed(FloatIsa::detect(), x.data(), m, [n, k], row, bias, |v| v, &mut o),
            }
            o
        };
        let mut data = match &self.weight {
            CpuWeight::Packed(w) => {
                let mut o = out();
                match post {
                    Some(f) => gemm_packed(x.data(), m, w, bias, f, &mut o),
                    None => gemm_packed(x.data(), m, w, bias, |v| v, &mut o),
                }
                return HostTensor::new(shape, o);
            }
            CpuWeight::PackedBf16(w) => {
                let mut o = out();
                match post {
                    Some(f) => gemm_bf16(FloatIsa::detect(), x.data(), m, w, bias, f, &mut o),
                    None => gemm_bf16(FloatIsa::detect(), x.data(), m, w, bias, |v| v, &mut o),
                }
                return HostTensor::new(shape, o);
            }
            CpuWeight::Half { dtype, bits } => return HostTensor::new(shape, streamed(&half_row(*dtype, bits, k))),
            CpuWeight::Int8Weight(q) => {
                let mut o = out();
                gemm_w8a16(x.data(), m, k, q, bias, &mut o);
                o
            }
            CpuWeight::Int8 { w, act, inv_smooth } => {
                let mut o = out();
                let smooth = inv_smooth.as_deref();
                match post {
                    Some(f) => gemm_w8a8_then(Isa::detect(), x.data(), m, k, w, *act, smooth, bias, f, &mut o),
                    None => gemm_w8a8(x.data(), m, k, w, *act, smooth, bias, &mut o),
                }
                return HostTensor::new(shape, o);
            }
            CpuWeight::Q8_0(w) => {
                let mut o = out();
                match post {
                    Some(f) => gemm_q8_0_then(Isa::detect(), x.data(), m, k, w, bias, f, &mut o),
                    None => gemm_q8_0_then(Isa::detect(), x.data(), m, k, w, bias, |v| v, &mut o),
                }
                return HostTensor::new(shape, o);
            }
            CpuWeight::Fp8 { w, act: Some(act) } => {
                let mut o = out();
                gemm_fp8(x.data(), m, k, w, *act, bias, &mut o);
                o
            }
            CpuWeight::Fp8 { w, act: None } => {
                let mut o = out();
                gemm_w8a16(x.data(), m, k, &Fp8Rows(w), bias, &mut o);
                o
            }
            // Decoded to f32 block by block into the f32 GEMM: a GGUF model computes exactly what
            // its dequantized f32 twin (`wanrt convert --transformer`) computes, and a streamed
            // weight what its packed form computes.
            CpuWeight::Stored(g) => return HostTensor::new(shape, streamed(&|j, dst| g.decode_row(j, dst))),
        };
        if let Some(f) = post {
            apply_inplace(&mut data, f);
        }
        HostTensor::new(shape, data)
    }
}
