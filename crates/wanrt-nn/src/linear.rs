//! Fully connected layer `y = x·Wᵀ + b` (PyTorch `nn.Linear` layout).

use crate::error::Result;
use crate::ops::matmul_nt;
use crate::weights::WeightStore;
use crate::Tensor;

#[derive(Debug, Clone)]
pub struct Linear {
    /// `[out, in]`.
    pub weight: Tensor,
    pub bias: Option<Vec<f32>>,
}

impl Linear {
    /// Loads `{prefix}.weight` (and `{prefix}.bias` when `bias`) checking `[out, in]`.
    pub fn load(ws: &WeightStore, prefix: &str, in_dim: usize, out_dim: usize, bias: bool) -> Result<Self> {
        let weight = ws.get_shaped(&format!("{prefix}.weight"), &[out_dim, in_dim])?;
        let bias = if bias { Some(ws.get_shaped(&format!("{prefix}.bias"), &[out_dim])?.into_data()) } else { None };
        Ok(Linear { weight, bias })
    }

    pub fn in_dim(&self) -> usize {
        self.weight.dim(1)
    }

    pub fn out_dim(&self) -> usize {
        self.weight.dim(0)
    }

    /// `x: [.., in]` → `[.., out]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut y = matmul_nt(x, &self.weight)?;
        if let Some(b) = &self.bias {
            y.add_row(b)?;
        }
        Ok(y)
    }
}
