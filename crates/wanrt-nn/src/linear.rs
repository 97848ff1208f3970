//! Fully connected layer `y = x·Wᵀ + b` (PyTorch `nn.Linear` layout).
//!
//! Weights are kept in f32, or — when the checkpoint stores bf16/f16 and the
//! store asks for it — in that half precision and widened to f32 block by
//! block inside the product. Both give the same numbers (compute is f32);
//! half storage halves the resident model at a small widening cost.

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::ops::matmul::{gemm_general, matmul_nt, Layout};
use crate::weights::WeightStore;
use crate::Tensor;
use rayon::prelude::*;

/// Output rows of a half-precision weight widened per GEMM call.
const WIDEN_BLOCK: usize = 512;

#[derive(Debug, Clone)]
pub enum LinearWeight {
    /// `[out, in]` in f32.
    F32(Tensor),
    /// `[out, in]` as raw bf16/f16 bits.
    Half { dtype: DType, bits: Vec<u16>, out_dim: usize, in_dim: usize },
}

impl LinearWeight {
    pub fn shape(&self) -> [usize; 2] {
        match self {
            LinearWeight::F32(t) => [t.dim(0), t.dim(1)],
            LinearWeight::Half { out_dim, in_dim, .. } => [*out_dim, *in_dim],
        }
    }

    pub fn numel(&self) -> usize {
        let [o, i] = self.shape();
        o * i
    }

    /// Bytes held by the weight.
    pub fn bytes(&self) -> usize {
        match self {
            LinearWeight::F32(t) => t.numel() * 4,
            LinearWeight::Half { bits, .. } => bits.len() * 2,
        }
    }

    /// Rows `start..start+len` widened to f32.
    fn rows_f32(&self, start: usize, len: usize, out: &mut Vec<f32>) {
        let [_, k] = self.shape();
        out.clear();
        match self {
            LinearWeight::F32(t) => out.extend_from_slice(&t.data()[start * k..(start + len) * k]),
            LinearWeight::Half { dtype, bits, .. } => {
                out.resize(len * k, 0.0);
                let src = &bits[start * k..(start + len) * k];
                let widen: fn(u16) -> f32 = match dtype {
                    DType::F16 => |b| half::f16::from_bits(b).to_f32(),
                    _ => |b| half::bf16::from_bits(b).to_f32(),
                };
                out.par_chunks_mut(k).zip(src.par_chunks(k)).for_each(|(o, s)| {
                    o.iter_mut().zip(s).for_each(|(o, &b)| *o = widen(b));
                });
            }
        }
    }

    /// The whole weight in f32.
    pub fn to_f32(&self) -> Tensor {
        let [o, i] = self.shape();
        let mut v = Vec::new();
        self.rows_f32(0, o, &mut v);
        Tensor::new([o, i], v).expect("shape matches")
    }

    /// Stacks weights along the output dimension (fused projections).
    pub fn concat(parts: &[&LinearWeight]) -> Result<LinearWeight> {
        let in_dim = parts.first().map(|p| p.shape()[1]).ok_or_else(|| Error::Msg("concat of no weights".into()))?;
        if parts.iter().any(|p| p.shape()[1] != in_dim) {
            return Err(Error::shape("fused linear", in_dim, parts.iter().map(|p| p.shape()[1]).collect::<Vec<_>>()));
        }
        let same_half = match parts[0] {
            LinearWeight::Half { dtype, .. } => {
                parts.iter().all(|p| matches!(p, LinearWeight::Half { dtype: d, .. } if d == dtype)).then_some(*dtype)
            }
            LinearWeight::F32(_) => None,
        };
        let out_dim = parts.iter().map(|p| p.shape()[0]).sum();
        Ok(match same_half {
            Some(dtype) => {
                let mut bits = Vec::with_capacity(out_dim * in_dim);
                for p in parts {
                    if let LinearWeight::Half { bits: b, .. } = p {
                        bits.extend_from_slice(b);
                    }
                }
                LinearWeight::Half { dtype, bits, out_dim, in_dim }
            }
            None => {
                let full: Vec<Tensor> = parts.iter().map(|p| p.to_f32()).collect();
                LinearWeight::F32(Tensor::cat(&full.iter().collect::<Vec<_>>(), 0)?)
            }
        })
    }
}

#[derive(Debug, Clone)]
pub struct Linear {
    pub weight: LinearWeight,
    pub bias: Option<Vec<f32>>,
}

impl Linear {
    pub fn from_f32(weight: Tensor, bias: Option<Vec<f32>>) -> Self {
        Linear { weight: LinearWeight::F32(weight), bias }
    }

    /// Loads `{prefix}.weight` (and `{prefix}.bias` when `bias`) checking `[out, in]`.
    pub fn load(ws: &WeightStore, prefix: &str, in_dim: usize, out_dim: usize, bias: bool) -> Result<Self> {
        let name = format!("{prefix}.weight");
        let raw = ws.raw(&name)?;
        if raw.shape != [out_dim, in_dim] {
            return Err(Error::TensorShape { name, expected: vec![out_dim, in_dim], found: raw.shape.clone() });
        }
        let weight = match raw.dtype {
            DType::BF16 | DType::F16 if ws.keeps_half() => {
                let bits = raw.bytes().chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
                LinearWeight::Half { dtype: raw.dtype, bits, out_dim, in_dim }
            }
            _ => LinearWeight::F32(ws.get(&name)?),
        };
        let bias = if bias { Some(ws.get_shaped(&format!("{prefix}.bias"), &[out_dim])?.into_data()) } else { None };
        Ok(Linear { weight, bias })
    }

    /// Stacks layers that read the same input into one (one GEMM instead of several).
    pub fn fuse(parts: &[Linear]) -> Result<Linear> {
        let weight = LinearWeight::concat(&parts.iter().map(|l| &l.weight).collect::<Vec<_>>())?;
        let bias = parts.iter().map(|l| l.bias.clone()).collect::<Option<Vec<_>>>().map(|b| b.concat());
        Ok(Linear { weight, bias })
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
        let [n, k] = self.weight.shape();
        if x.shape().last() != Some(&k) {
            return Err(Error::shape("linear", format!("[.., {k}]"), x.shape()));
        }
        let m = x.numel() / k.max(1);
        let mut shape = x.shape().to_vec();
        *shape.last_mut().expect("rank >= 1") = n;
        let mut y = match &self.weight {
            LinearWeight::F32(w) => matmul_nt(x, w)?,
            LinearWeight::Half { .. } => {
                let mut out = vec![0.0f32; m * n];
                let mut block = Vec::new();
                for start in (0..n).step_by(WIDEN_BLOCK) {
                    let len = WIDEN_BLOCK.min(n - start);
                    self.weight.rows_f32(start, len, &mut block);
                    let w_layout = Layout { rs: 1, cs: k };
                    gemm_general(
                        &mut out[start..],
                        n,
                        x.data(),
                        Layout::row_major(k),
                        &block,
                        w_layout,
                        m,
                        len,
                        k,
                        false,
                        false,
                    );
                }
                Tensor::new(shape, out)?
            }
        };
        if let Some(b) = &self.bias {
            y.add_row(b)?;
        }
        Ok(y)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Half storage widened block by block gives exactly the f32 result.
    #[test]
    fn half_storage_matches_f32_exactly() {
        let (n, k, m) = (1100, 37, 5);
        let bits: Vec<u16> =
            (0..n * k).map(|i| half::bf16::from_f32(((i % 17) as f32 - 8.0) / 9.0).to_bits()).collect();
        let half =
            Linear { weight: LinearWeight::Half { dtype: DType::BF16, bits, out_dim: n, in_dim: k }, bias: None };
        let full = Linear::from_f32(half.weight.to_f32(), None);
        let x = Tensor::new([m, k], (0..m * k).map(|i| (i as f32).sin()).collect()).unwrap();
        assert_eq!(half.forward(&x).unwrap().data(), full.forward(&x).unwrap().data());
        let fused = Linear::fuse(&[half.clone(), half]).unwrap();
        assert!(matches!(fused.weight, LinearWeight::Half { out_dim: 2200, .. }));
    }
}
