//! W8A8 linear layers on the GPU (`wanrt optimize --quant int8|fp8` artifacts): the activations
//! are quantized per token by `quantize_rows` (SmoothQuant's factors folded in), multiplied with
//! the stored 8-bit weight codes by cuBLASLt (int8 IMMA with exact i32 sums, or FP8 E4M3 tensor
//! cores with f32 sums), and `dequantize_acc` applies both scales, the bias and the layer's
//! activation in one pass. The codes, scales and (for int8) outputs are the CPU backend's bits;
//! the FP8 product differs from the CPU's emulation only in its summation order.
//!
//! cuBLASLt's 8-bit kernels want rows of 16-byte multiples, so the weight is stored padded to
//! `[np, kp]` (multiples of 16, zero codes) and the activations' codes use the same `kp`: zero
//! codes add nothing to the sums, and the epilogue reads only the `n` real columns.
//!
//! The scale arithmetic and padding below are host logic, unit-tested without a GPU; the kernels'
//! numerics run on the CPU in tests/cuda_emulation.rs; cuBLASLt itself only on a GPU.

use super::backend::{linear_shape, CudaBackend, KernelArg};
use super::gemm::{Epilogue, GemmKey};
use super::launch;
use crate::backend::{Activation, Backend, PreparedWeight};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::linear::LinearWeight;
use crate::quant::ActQuant;
use crate::{Linear, Tensor};
use cudarc::driver::CudaSlice;
use std::any::Any;

/// Row lengths cuBLASLt's 8-bit kernels take (bytes, i.e. codes).
pub const ALIGN: usize = 16;

/// The codes' 8-bit format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codes {
    Int8,
    Fp8,
}

impl Codes {
    /// `FMT_*` in quant.cu.
    pub fn kernel_code(self) -> i32 {
        match self {
            Codes::Int8 => 0,
            Codes::Fp8 => 1,
        }
    }

    /// The GEMM's operand dtype.
    pub fn dtype(self) -> DType {
        match self {
            Codes::Int8 => DType::I8,
            Codes::Fp8 => DType::F8E4M3,
        }
    }

    /// Whether the GEMM's sums are i32 (else f32).
    pub fn integer_sums(self) -> bool {
        self == Codes::Int8
    }
}

/// How `quantize_rows` scales a layer's activations: the arguments the kernels take for an
/// [`ActQuant`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ActScaling {
    /// A calibrated scale (> 0), or 0 when the scale comes from the activations.
    pub static_scale: f32,
    /// One scale for the whole input (`row_absmax` + `tensor_absmax` first), else one per token.
    pub per_tensor: bool,
}

impl ActScaling {
    pub fn new(act: ActQuant) -> Result<ActScaling> {
        Ok(match act {
            ActQuant::PerToken => ActScaling { static_scale: 0.0, per_tensor: false },
            ActQuant::PerTensor => ActScaling { static_scale: 0.0, per_tensor: true },
            ActQuant::Static(s) if s > 0.0 && s.is_finite() => ActScaling { static_scale: s, per_tensor: false },
            ActQuant::Static(s) => {
                return Err(Error::Msg(format!("static activation scale {s}: expected a finite number above 0")))
            }
        })
    }
}

/// `x` rounded up to a multiple of [`ALIGN`].
pub fn padded(x: usize) -> usize {
    x.next_multiple_of(ALIGN)
}

/// The weight's codes `[n, k]` (parts stacked) laid out as `[padded(n), padded(k)]` with zero
/// codes in the padding.
pub fn padded_codes(parts: &[&[u8]], n: usize, k: usize) -> Result<Vec<u8>> {
    let stored: usize = parts.iter().map(|p| p.len()).sum();
    if stored != n * k {
        return Err(Error::Msg(format!("8-bit weight: {stored} codes for [{n}, {k}]")));
    }
    let kp = padded(k);
    let mut out = vec![0u8; padded(n) * kp];
    if k > 0 {
        for (r, row) in parts.iter().flat_map(|p| p.chunks_exact(k)).enumerate() {
            out[r * kp..r * kp + k].copy_from_slice(row);
        }
    }
    Ok(out)
}

/// A W8A8 layer on the device.
pub struct CudaQuantLinear {
    /// `[padded(n), padded(k)]` codes.
    codes: CudaSlice<u8>,
    /// `[n]` f32 per-output-channel weight scales.
    scales: CudaSlice<u8>,
    /// `[k]` f32 `1/s` of SmoothQuant's factors, folded into the activations' quantization.
    inv_smooth: Option<CudaSlice<u8>>,
    /// `[n]` f32.
    bias: Option<CudaSlice<u8>>,
    n: usize,
    k: usize,
    format: Codes,
    scaling: ActScaling,
}

impl std::fmt::Debug for CudaQuantLinear {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CudaQuantLinear({:?} [{}, {}], {:?})", self.format, self.n, self.k, self.scaling)
    }
}

impl PreparedWeight for CudaQuantLinear {
    fn backend(&self) -> &'static str {
        "cuda"
    }
    fn bytes(&self) -> usize {
        padded(self.n) * padded(self.k)
            + 4 * (self.n + self.inv_smooth.as_ref().map_or(0, |_| self.k) + self.bias.as_ref().map_or(0, |_| self.n))
    }
    fn format(&self) -> &'static str {
        match self.format {
            Codes::Int8 => "int8",
            Codes::Fp8 => "fp8",
        }
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// Uploads a W8A8 layer (`None` for any other format).
pub(super) fn prepare(be: &CudaBackend, layer: &Linear) -> Result<Option<CudaQuantLinear>> {
    let (codes, scales, act, smooth, format) = match &layer.weight {
        LinearWeight::Int8 { codes, scales, act: Some(act), smooth } => (codes, scales, *act, smooth, Codes::Int8),
        LinearWeight::Fp8 { codes, scales, act: Some(act) } => (codes, scales, *act, &None, Codes::Fp8),
        _ => return Ok(None),
    };
    let (n, k) = (layer.out_dim(), layer.in_dim());
    let scaling = ActScaling::new(act).map_err(|e| Error::Msg(format!("{}: {e}", layer.name)))?;
    let bytes: Vec<_> = codes.iter().map(|c| c.bytes()).collect();
    let padded = padded_codes(&bytes.iter().map(|b| &b[..]).collect::<Vec<_>>(), n, k)?;
    let f32s = |v: &[f32]| be.upload_f32(v, DType::F32).and_then(|s| s.into_buf());
    // As the CPU backend computes them: 1/s once at load.
    let inv_smooth: Option<Vec<f32>> = smooth.as_ref().map(|s| s.iter().map(|v| 1.0 / v).collect());
    Ok(Some(CudaQuantLinear {
        codes: be.upload_bytes(DType::U8, padded.len(), &padded)?.into_buf()?,
        scales: f32s(scales)?,
        inv_smooth: inv_smooth.as_deref().map(f32s).transpose()?,
        bias: layer.bias.as_deref().map(f32s).transpose()?,
        n,
        k,
        format,
        scaling,
    }))
}

/// `act(x · Wᵀ + bias)` for a W8A8 layer: quantize, 8-bit GEMM, dequantize (+ bias, activation).
pub(super) fn forward(
    be: &CudaBackend,
    name: &str,
    w: &CudaQuantLinear,
    x: &Tensor,
    act: Option<Activation>,
) -> Result<Tensor> {
    let (m, shape) = linear_shape(name, x, w.k, w.n)?;
    let k = w.k;
    let y = be.empty(&shape, be.dtype())?;
    if m == 0 {
        return Ok(y);
    }
    let (kp, np) = (padded(k), padded(w.n));
    let opt = |s: &Option<CudaSlice<u8>>| s.as_ref().map_or(0, |s| be.slice_ptr(s));
    let (px, dtx, smooth) = (be.ptr(x)?, be.code(x)?, opt(&w.inv_smooth));
    let rows = launch::per_row(m)?;
    let (k64, kp64) = (k as i64, kp as i64);
    // Per tensor: the rows' maxima, then their maximum, into a device scalar (no host round trip).
    let tensor_amax = if w.scaling.per_tensor {
        let row_max = be.alloc(DType::F32, m)?;
        let amax = be.alloc(DType::F32, 1)?;
        let (pr, pa) = (be.addr_of(&row_max), be.addr_of(&amax));
        be.launch("row_absmax", rows, &[&px, &dtx, &smooth, &pr, &k64])?;
        be.launch("tensor_absmax", launch::reduction(m), &[&pr, &pa, &(m as i64)])?;
        Some((row_max, amax))
    } else {
        None
    };
    let pamax = tensor_amax.as_ref().map_or(0, |(_, a)| be.addr_of(a));
    let codes = be.alloc(DType::U8, m * kp)?;
    let scales = be.alloc(DType::F32, m)?;
    let (pc, ps) = (be.addr_of(&codes), be.addr_of(&scales));
    let fmt = w.format.kernel_code();
    let args: [&dyn KernelArg; 10] = [&px, &dtx, &smooth, &fmt, &pamax, &w.scaling.static_scale, &pc, &ps, &k64, &kp64];
    be.launch("quantize_rows", rows, &args)?;
    let acc = be.alloc(if w.format.integer_sums() { DType::I32 } else { DType::F32 }, m * np)?;
    let pacc = be.addr_of(&acc);
    let key = GemmKey { m, n: np, k: kp, dtype: w.format.dtype(), epilogue: Epilogue::None };
    be.gemm(key, pc, be.slice_ptr(&w.codes), 0, pacc)?;
    let act_code = act.map_or(-1, launch::activation_code);
    let (acc_int, np64, n64, total) = (w.format.integer_sums() as i32, np as i64, w.n as i64, (m * w.n) as i64);
    let (pw, pb, py, dty) = (be.slice_ptr(&w.scales), opt(&w.bias), be.ptr(&y)?, launch::dtype_code(be.dtype())?);
    let args: [&dyn KernelArg; 11] = [&pacc, &acc_int, &np64, &ps, &pw, &pb, &act_code, &py, &dty, &n64, &total];
    be.launch("dequantize_acc", launch::elementwise(m * w.n), &args)?;
    Ok(y)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activation_scaling_arguments() {
        assert_eq!(ActScaling::new(ActQuant::PerToken).unwrap(), ActScaling { static_scale: 0.0, per_tensor: false });
        assert_eq!(ActScaling::new(ActQuant::PerTensor).unwrap(), ActScaling { static_scale: 0.0, per_tensor: true });
        assert_eq!(ActScaling::new(ActQuant::Static(0.02)).unwrap().static_scale, 0.02);
        for bad in [0.0, -1.0, f32::NAN, f32::INFINITY] {
            let e = ActScaling::new(ActQuant::Static(bad)).unwrap_err().to_string();
            assert!(e.contains("above 0"), "{e}");
        }
        assert_eq!((Codes::Int8.kernel_code(), Codes::Fp8.kernel_code()), (0, 1));
        assert!(Codes::Int8.integer_sums() && !Codes::Fp8.integer_sums());
    }

    #[test]
    fn weights_are_padded_to_aligned_rows_with_zero_codes() {
        assert_eq!((padded(96), padded(130), padded(1536), padded(1)), (96, 144, 1536, 16));
        // Two stacked parts of a [3, 5] weight (a fused layer): rows keep their order.
        let (a, b): (Vec<u8>, Vec<u8>) = ((1..=10).collect(), (11..=15).collect());
        let out = padded_codes(&[&a, &b], 3, 5).unwrap();
        assert_eq!(out.len(), 16 * 16);
        for r in 0..16 {
            let row = &out[r * 16..(r + 1) * 16];
            let want: Vec<u8> = if r < 3 { (1 + 5 * r as u8..=5 + 5 * r as u8).collect() } else { vec![] };
            assert_eq!(&row[..want.len()], &want[..], "row {r}");
            assert!(row[want.len()..].iter().all(|&c| c == 0), "row {r} padding");
        }
        assert!(padded_codes(&[&a], 3, 5).unwrap_err().to_string().contains("10 codes for [3, 5]"));
    }
}
