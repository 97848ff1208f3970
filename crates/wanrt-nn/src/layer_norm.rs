//! `nn.LayerNorm` with its affine parameters (CLIP's norms, Wan's image embedder).

use crate::backend::Backend;
use crate::{Result, Tensor, VarBuilder};

#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f32,
}

impl LayerNorm {
    /// `weight` and `bias` of `[n]` at `vb`'s path.
    pub fn load(vb: &VarBuilder, n: usize, eps: f32) -> Result<Self> {
        Ok(LayerNorm { weight: vb.tensor("weight", &[n])?, bias: vb.tensor("bias", &[n])?, eps })
    }

    /// Over the last dimension of `x`.
    pub fn forward(&self, be: &dyn Backend, x: Tensor) -> Result<Tensor> {
        be.layer_norm(x, self.eps, Some(&self.weight), Some(&self.bias))
    }

    pub fn tensors(&self) -> [&Tensor; 2] {
        [&self.weight, &self.bias]
    }
}
