//! `nn.LayerNorm` with its affine parameters (CLIP's norms, Wan's image embedder).

use crate::backend::Backend;
use crate::{param_path, ParamMut, Result, Tensor, VarBuilder};

#[derive(Debug, Clone)]
pub struct LayerNorm {
    /// Module path (`condition_embedder.image_embedder.norm1`), naming the tensors in `visit_mut`.
    path: String,
    weight: Tensor,
    bias: Tensor,
    eps: f32,
}

impl LayerNorm {
    /// `weight` and `bias` of `[n]` at `vb`'s path.
    pub fn load(vb: &VarBuilder, n: usize, eps: f32) -> Result<Self> {
        Ok(LayerNorm {
            path: vb.prefix().to_string(),
            weight: vb.tensor("weight", &[n])?,
            bias: vb.tensor("bias", &[n])?,
            eps,
        })
    }

    /// Over the last dimension of `x`.
    pub fn forward(&self, be: &dyn Backend, x: Tensor) -> Result<Tensor> {
        be.layer_norm(x, self.eps, Some(&self.weight), Some(&self.bias))
    }

    pub fn tensors(&self) -> [&Tensor; 2] {
        [&self.weight, &self.bias]
    }

    /// `weight` and `bias` as [`ParamMut::Tensor`]s under their store names.
    pub fn visit_mut(&mut self, f: &mut dyn FnMut(ParamMut<'_>)) {
        f(ParamMut::Tensor { name: &param_path(&self.path, "weight"), tensor: &mut self.weight });
        f(ParamMut::Tensor { name: &param_path(&self.path, "bias"), tensor: &mut self.bias });
    }
}
