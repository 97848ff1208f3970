//! 8-bit attention on the GPU (`--attn-quant int8` artifacts, `kernels/attention_int8.cu`):
//! the mean key per (batch, head), Q and K rounded to int8 per (token, head), then the
//! flash-attention kernel with exact int8 `Q·Kᵀ`. The same scheme as the CPU's
//! [`crate::ops::attention_quant`] except P·V, which stays f32 here (the CPU rounds P and V to 14
//! and 10 bits for its integer product). Its numerics run on the CPU in tests/cuda_emulation.rs.

use super::backend::CudaBackend;
use super::launch;
use crate::backend::Backend;
use crate::dtype::DType;
use crate::error::Result;
use crate::Tensor;

/// `softmax(q·kᵀ·scale)·v` with int8 `Q·Kᵀ`, for `q: [B, Lq, H, D]`, `k, v: [B, Lk, H, D]`.
pub(super) fn attention_int8(be: &CudaBackend, q: &Tensor, k: &Tensor, v: &Tensor, scale: f32) -> Result<Tensor> {
    let [b, lq, lk, h, d] = be.attention_shape(q, k, v)?;
    let entry = launch::attention_entry(d, true)?;
    let (q, k, v) = (be.to_dtype(q, be.dtype())?, be.to_dtype(k, be.dtype())?, be.to_dtype(v, be.dtype())?);
    let dt = launch::dtype_code(be.dtype())?;
    let (d_i, h_i, lq_i, lk_i) = (d as i32, h as i32, lq as i32, lk as i32);
    let mean = be.alloc(DType::F32, b * h * d)?;
    let pmean = be.addr_of(&mean);
    be.launch("key_mean", launch::per_head(b, h)?, &[&be.ptr(&k)?, &dt, &pmean, &lk_i, &h_i, &d_i])?;
    // Codes and scales of Q (as is) and K (minus its mean).
    let quantized = |x: &Tensor, len: usize, tokens: i32, mean: u64| -> Result<_> {
        let rows = b * len * h;
        let (codes, scales) = (be.alloc(DType::U8, rows * d)?, be.alloc(DType::F32, rows)?);
        let (pc, ps, rows_i) = (be.addr_of(&codes), be.addr_of(&scales), rows as i64);
        let args: [&dyn super::backend::KernelArg; 9] =
            [&be.ptr(x)?, &dt, &mean, &pc, &ps, &rows_i, &tokens, &h_i, &d_i];
        be.launch("quantize_heads", launch::warp_per_row(rows), &args)?;
        Ok((codes, scales))
    };
    let (qc, qs) = quantized(&q, lq, lq_i, 0)?;
    let (kc, ks) = quantized(&k, lk, lk_i, pmean)?;
    let out = be.empty(q.shape(), be.dtype())?;
    let (pqc, pqs, pkc, pks) = (be.addr_of(&qc), be.addr_of(&qs), be.addr_of(&kc), be.addr_of(&ks));
    let (pv, po) = (be.ptr(&v)?, be.ptr(&out)?);
    let args: [&dyn super::backend::KernelArg; 11] =
        [&pqc, &pqs, &pkc, &pks, &pv, &po, &dt, &scale, &lq_i, &lk_i, &h_i];
    be.launch(entry, launch::attention(b, lq, h)?, &args)?;
    Ok(out)
}
