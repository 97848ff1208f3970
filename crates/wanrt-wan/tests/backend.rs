//! The models run every computation through `wanrt_nn::Backend`: a backend that wraps the CPU one
//! and records each call sees the whole pipeline (text encoder, transformer, VAE) go through it,
//! and the video still matches diffusers. (`clippy.toml` of this crate forbids direct kernel calls.)

mod common;
use common::{assert_close, fixture, Reference};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use wanrt_nn::backend::{Activation, AttentionPrecision, Backend, CpuBackend};
use wanrt_nn::ops::attention::AttentionBias;
use wanrt_nn::ops::PaddingFull;
use wanrt_nn::{Conv3d, Embedding, Linear, Result, Tensor};
use wanrt_wan::model::WanModel;

#[derive(Debug, Default)]
struct Recording {
    inner: CpuBackend,
    calls: Mutex<BTreeMap<&'static str, usize>>,
}

impl Recording {
    fn note(&self, op: &'static str) {
        *self.calls.lock().unwrap().entry(op).or_default() += 1;
    }
}

impl Backend for Recording {
    fn name(&self) -> &'static str {
        "recording"
    }
    fn linear(&self, layer: &Linear, x: &Tensor) -> Result<Tensor> {
        self.note("linear");
        self.inner.linear(layer, x)
    }
    fn embedding(&self, table: &Embedding, ids: &[u32]) -> Result<Tensor> {
        self.note("embedding");
        self.inner.embedding(table, ids)
    }
    fn conv3d(&self, layer: &Conv3d, x: &Tensor, history: Option<&Tensor>, pad: PaddingFull) -> Result<Tensor> {
        self.note("conv3d");
        self.inner.conv3d(layer, x, history, pad)
    }
    fn rms_norm(&self, x: Tensor, eps: f32, weight: Option<&[f32]>) -> Result<Tensor> {
        self.note("rms_norm");
        self.inner.rms_norm(x, eps, weight)
    }
    fn layer_norm(&self, x: Tensor, eps: f32, weight: Option<&[f32]>, bias: Option<&[f32]>) -> Result<Tensor> {
        self.note("layer_norm");
        self.inner.layer_norm(x, eps, weight, bias)
    }
    fn layer_norm_modulate(&self, x: &Tensor, eps: f32, scale: &[f32], shift: &[f32]) -> Result<Tensor> {
        self.note("layer_norm_modulate");
        self.inner.layer_norm_modulate(x, eps, scale, shift)
    }
    fn channel_rms_norm(&self, x: &Tensor, gamma: &[f32], silu: bool) -> Result<Tensor> {
        self.note("channel_rms_norm");
        self.inner.channel_rms_norm(x, gamma, silu)
    }
    fn add_gated(&self, x: &mut Tensor, y: &Tensor, gate: &[f32]) -> Result<()> {
        self.note("add_gated");
        self.inner.add_gated(x, y, gate)
    }
    fn add_assign(&self, x: &mut Tensor, y: &Tensor) -> Result<()> {
        self.note("add_assign");
        self.inner.add_assign(x, y)
    }
    fn mul(&self, x: &Tensor, y: &Tensor) -> Result<Tensor> {
        self.note("mul");
        self.inner.mul(x, y)
    }
    fn activation(&self, x: Tensor, act: Activation) -> Result<Tensor> {
        self.note("activation");
        self.inner.activation(x, act)
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
        self.note("attention");
        self.inner.attention(q, k, v, scale, bias, precision)
    }
    fn rope_interleaved(&self, x: &mut Tensor, cos: &[f32], sin: &[f32]) -> Result<()> {
        self.note("rope_interleaved");
        self.inner.rope_interleaved(x, cos, sin)
    }
    fn upsample_nearest2x(&self, x: &Tensor) -> Result<Tensor> {
        self.note("upsample_nearest2x");
        self.inner.upsample_nearest2x(x)
    }
    fn affine_clamp(&self, x: &mut Tensor, mul: f32, add: f32, lo: f32, hi: f32) -> Result<()> {
        self.note("affine_clamp");
        self.inner.affine_clamp(x, mul, add, lo, hi)
    }
}

#[test]
fn whole_pipeline_runs_through_the_backend() {
    let r = Reference::load("a");
    let mut model = WanModel::load(&fixture("a"), |_| {}).unwrap();
    let backend = Arc::new(Recording::default());
    model.set_backend(backend.clone());

    let out = model.generate(&r.generate_params(), &mut ()).unwrap();
    assert_close("video through the recording backend", &out.video, &r.get("video"), 1e-4, 1e-9);

    let calls = backend.calls.lock().unwrap();
    println!("backend calls: {calls:?}");
    // Every op the three models need, from the token embedding to the VAE's output clamp.
    for op in [
        "embedding",
        "linear",
        "rms_norm",
        "mul",
        "layer_norm_modulate",
        "add_gated",
        "add_assign",
        "activation",
        "attention",
        "rope_interleaved",
        "conv3d",
        "channel_rms_norm",
        "upsample_nearest2x",
        "affine_clamp",
    ] {
        assert!(calls.get(op).copied().unwrap_or(0) > 0, "{op} never reached the backend: {calls:?}");
    }
    // One CFG pair per step: each transformer evaluation embeds the patches with one linear call.
    let steps = r.steps();
    assert!(calls["linear"] > steps * 2, "{} linear calls for {steps} steps", calls["linear"]);
}
