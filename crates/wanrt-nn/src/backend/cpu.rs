//! The CPU backend: every [`Backend`] op on the kernels of [`crate::ops`].

use super::{Activation, AttentionPrecision, Backend};
use crate::ops::attention::{attention, AttentionBias};
use crate::ops::attention_quant::attention_quant;
use crate::ops::{self, activation, norm, PaddingFull};
use crate::{Conv3d, Embedding, Error, Linear, Result, Tensor};

#[derive(Debug, Clone, Copy, Default)]
pub struct CpuBackend;

impl Backend for CpuBackend {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn linear(&self, layer: &Linear, x: &Tensor) -> Result<Tensor> {
        layer.forward(x)
    }

    fn linear_activation(&self, layer: &Linear, x: &Tensor, act: Activation) -> Result<Tensor> {
        layer.forward_activation(x, act)
    }

    fn embedding(&self, table: &Embedding, ids: &[u32]) -> Result<Tensor> {
        table.lookup(ids)
    }

    fn conv3d(&self, layer: &Conv3d, x: &Tensor, history: Option<&Tensor>, pad: PaddingFull) -> Result<Tensor> {
        layer.forward(x, history, pad)
    }

    fn rms_norm(&self, x: Tensor, eps: f32, weight: Option<&[f32]>) -> Result<Tensor> {
        norm::rms_norm(x, eps, weight)
    }

    fn layer_norm(&self, x: Tensor, eps: f32, weight: Option<&[f32]>, bias: Option<&[f32]>) -> Result<Tensor> {
        norm::layer_norm(x, eps, weight, bias)
    }

    fn layer_norm_modulate(&self, x: &Tensor, eps: f32, scale: &[f32], shift: &[f32]) -> Result<Tensor> {
        ops::modulate::layer_norm_modulate(x, eps, scale, shift)
    }

    fn channel_rms_norm(&self, x: &Tensor, gamma: &[f32], silu: bool) -> Result<Tensor> {
        if silu {
            norm::l2_norm_channels_silu(x, gamma)
        } else {
            norm::l2_norm_channels(x, gamma)
        }
    }

    fn add_gated(&self, x: &mut Tensor, y: &Tensor, gate: &[f32]) -> Result<()> {
        ops::modulate::add_gated(x, y, gate)
    }

    fn add_assign(&self, x: &mut Tensor, y: &Tensor) -> Result<()> {
        x.add_assign(y)
    }

    fn mul(&self, x: &Tensor, y: &Tensor) -> Result<Tensor> {
        x.mul(y)
    }

    fn activation(&self, x: Tensor, act: Activation) -> Result<Tensor> {
        Ok(match act {
            Activation::GeluTanh => activation::gelu_tanh(x),
            Activation::Silu => activation::silu(x),
        })
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
        match precision {
            AttentionPrecision::Full => attention(q, k, v, scale, bias),
            AttentionPrecision::Int8 if bias.per_head.is_none() && bias.per_key.is_none() => {
                attention_quant(q, k, v, scale)
            }
            AttentionPrecision::Int8 => Err(Error::Msg("int8 attention takes no score bias".into())),
        }
    }

    fn rope_interleaved(&self, x: &mut Tensor, cos: &[f32], sin: &[f32]) -> Result<()> {
        ops::rope::apply_rope_interleaved(x, cos, sin)
    }

    fn upsample_nearest2x(&self, x: &Tensor) -> Result<Tensor> {
        ops::resize::upsample_nearest2x(x)
    }

    fn affine_clamp(&self, x: &mut Tensor, mul: f32, add: f32, lo: f32, hi: f32) -> Result<()> {
        activation::apply_inplace(x.data_mut(), |v| (v * mul + add).clamp(lo, hi));
        Ok(())
    }
}
