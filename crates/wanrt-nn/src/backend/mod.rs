//! The seam between model code and the hardware.
//!
//! Model code (`wanrt-wan`'s UMT5, transformer and VAE) holds a [`BackendRef`] and runs every
//! computation through it: GEMMs of a [`Linear`], convolutions of a [`Conv3d`], norms,
//! modulation, activations, attention, RoPE, resampling and the output clamps. The CPU backend
//! ([`CpuBackend`]) maps each call onto the kernels of [`crate::ops`]; a CUDA backend implements
//! the same trait (its kernels, its copy of the weights) and the models run on it unchanged —
//! `wanrt-wan`'s `clippy.toml` forbids its model code from calling the CPU kernels directly, so
//! no op can bypass the trait unnoticed.
//!
//! What stays on the host by design: layout ops (`reshape`, `narrow`, `cat`, `permute` are
//! [`Tensor`] methods; a device backend gives `Tensor` a device storage behind them), the
//! conditioning vectors of a few thousand floats that parameterize an op (`scale`, `shift`,
//! `gate`, norm weights: passed as host slices, uploaded by a device backend), and the
//! schedulers' per-step arithmetic on the latents.

mod cpu;

pub use cpu::CpuBackend;

use crate::ops::attention::AttentionBias;
use crate::ops::PaddingFull;
use crate::{Conv3d, Embedding, Linear, Result, Tensor};
use std::sync::Arc;

/// A shared handle to the backend models run on.
pub type BackendRef = Arc<dyn Backend>;

/// The default backend: the CPU kernels.
pub fn cpu() -> BackendRef {
    Arc::new(CpuBackend)
}

/// Pointwise nonlinearities the models use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// GELU with the tanh approximation (PyTorch `approximate="tanh"`).
    GeluTanh,
    Silu,
}

/// How `softmax(q·kᵀ)·v` is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AttentionPrecision {
    /// f32 scores and products (the reference).
    #[default]
    Full,
    /// SageAttention-style int8 `Q·Kᵀ` with smoothed K (see [`crate::ops::attention_quant`]).
    Int8,
}

/// Every computation the Wan models perform. Shapes follow the CPU kernels' documentation;
/// errors name the op and the shapes involved.
pub trait Backend: Send + Sync + std::fmt::Debug {
    /// Short name for logs and reports ("cpu", "cuda").
    fn name(&self) -> &'static str;

    /// `x: [.., in]` → `[.., out]` with the layer's weights in whatever format they are stored.
    fn linear(&self, layer: &Linear, x: &Tensor) -> Result<Tensor>;

    /// `act(linear(x))`. Backends fuse the activation into the product where the weight format
    /// allows (the CPU's W8A8 GEMM applies it in its output pass); the result must equal the
    /// two ops in sequence.
    fn linear_activation(&self, layer: &Linear, x: &Tensor, act: Activation) -> Result<Tensor> {
        self.activation(self.linear(layer, x)?, act)
    }

    /// Rows `ids` of the table → `[ids.len(), D]`; ids must be `< V`.
    fn embedding(&self, table: &Embedding, ids: &[u32]) -> Result<Tensor>;

    /// `x: [N, C_in, T, H, W]` → `[N, C_out, T', H', W']`; `history` frames (`[N, C_in, t, H, W]`)
    /// precede `x` in time and replace that much of the front padding `pad.t.0`.
    fn conv3d(&self, layer: &Conv3d, x: &Tensor, history: Option<&Tensor>, pad: PaddingFull) -> Result<Tensor>;

    /// RMSNorm over the last dim, optionally scaled by `weight`.
    fn rms_norm(&self, x: Tensor, eps: f32, weight: Option<&[f32]>) -> Result<Tensor>;

    /// LayerNorm over the last dim with optional affine parameters.
    fn layer_norm(&self, x: Tensor, eps: f32, weight: Option<&[f32]>, bias: Option<&[f32]>) -> Result<Tensor>;

    /// `layer_norm(x) · (1 + scale) + shift` for `x: [B, L, C]`, `scale, shift: [B, C]`, fused.
    fn layer_norm_modulate(&self, x: &Tensor, eps: f32, scale: &[f32], shift: &[f32]) -> Result<Tensor>;

    /// Wan VAE's `RMS_norm` over the channels of `[N, C, ...]` (L2-normalize · √C · gamma),
    /// followed by SiLU when `silu` (fused).
    fn channel_rms_norm(&self, x: &Tensor, gamma: &[f32], silu: bool) -> Result<Tensor>;

    /// `x += y · gate` for `x, y: [B, L, C]`, `gate: [B, C]`.
    fn add_gated(&self, x: &mut Tensor, y: &Tensor, gate: &[f32]) -> Result<()>;

    /// `x += y`, equal shapes.
    fn add_assign(&self, x: &mut Tensor, y: &Tensor) -> Result<()>;

    /// `x · y` elementwise, equal shapes.
    fn mul(&self, x: &Tensor, y: &Tensor) -> Result<Tensor>;

    fn activation(&self, x: Tensor, act: Activation) -> Result<Tensor>;

    /// `softmax(q·kᵀ·scale + bias)·v` for `q: [B, Lq, H, D]`, `k, v: [B, Lk, H, D]`.
    /// [`AttentionPrecision::Int8`] takes no bias.
    fn attention(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        scale: f32,
        bias: AttentionBias,
        precision: AttentionPrecision,
    ) -> Result<Tensor>;

    /// Rotary embedding on interleaved pairs of `x: [B, L, H, D]` with per-token tables `[L, D/2]`.
    fn rope_interleaved(&self, x: &mut Tensor, cos: &[f32], sin: &[f32]) -> Result<()>;

    /// Nearest-neighbour 2× spatial upsampling of `[N, C, H, W]`.
    fn upsample_nearest2x(&self, x: &Tensor) -> Result<Tensor>;

    /// `clamp(x · mul + add, lo, hi)` in place (VAE output clamp, [-1, 1] → [0, 1] frames).
    fn affine_clamp(&self, x: &mut Tensor, mul: f32, add: f32, lo: f32, hi: f32) -> Result<()>;
}
