//! The diffusers folder layout: one folder per component with its own config, single or sharded
//! safetensors; an optimized artifact is such a folder plus its manifest.

use super::{read_json, LoadOptions, ModelDefaults, WanModel};
use crate::artifact::Manifest;
use crate::image_conditioning::ImageEncoder;
use crate::model::Layout;
use crate::scheduler::SchedulerConfig;
use crate::text::PromptTokenizer;
use crate::transformer::{TransformerConfig, WanTransformer};
use crate::umt5::{Umt5Config, Umt5Encoder};
use crate::vae::{VaeConfig, WanVae};
use crate::{Error, Result};
use std::path::Path;
use wanrt_nn::WeightStore;

pub(crate) fn load(
    dir: &Path,
    defaults: ModelDefaults,
    opts: &LoadOptions,
    stage: &mut dyn FnMut(&str),
) -> Result<WanModel> {
    let artifact = Manifest::read(dir)?;
    stage("text encoder");
    let (te_cfg, mut te_store) = component::<Umt5Config>(dir, "text_encoder", "model")?;
    if let Some(m) = &artifact {
        m.apply_text_encoder(&mut te_store)?;
    }
    let text_encoder = Umt5Encoder::load(&te_store, te_cfg, opts.backend.clone())?;
    drop(te_store);
    let tokenizer = PromptTokenizer::from_dir(&dir.join("tokenizer"))?;
    stage("transformer");
    let (tr_cfg, mut tr_store) = component::<TransformerConfig>(dir, "transformer", "diffusion_pytorch_model")?;
    if let Some(m) = &artifact {
        m.apply(&mut tr_store)?;
    }
    let transformer = WanTransformer::load(&tr_store, tr_cfg, opts.backend.clone())?;
    drop(tr_store);
    let index = PipelineIndex::read(dir)?;
    let transformer_2 = if index.has_component("transformer_2") {
        stage("transformer_2");
        let (cfg, mut store) = component::<TransformerConfig>(dir, "transformer_2", "diffusion_pytorch_model")?;
        if let Some(m) = &artifact {
            m.apply(&mut store)?;
        }
        Some(WanTransformer::load(&store, cfg, opts.backend.clone())?)
    } else {
        None
    };
    // Image-to-video transformers take the VAE-encoded image beside the latents.
    let encodes_images = transformer.config.in_channels != transformer.config.out_channels();
    // diffusers' image-to-video examples keep the image encoder in f32 beside the VAE.
    let image_encoder = if transformer.config.is_image_conditioned() {
        stage("image encoder");
        Some(ImageEncoder::load(dir, opts.vae_backend.clone())?)
    } else {
        None
    };
    stage("vae");
    let (vae_cfg, vae_store) = component::<VaeConfig>(dir, "vae", "diffusion_pytorch_model")?;
    let vae = WanVae::load(&vae_store, vae_cfg, opts.vae_backend.clone(), opts.vae_encoder || encodes_images)?;
    let scheduler = SchedulerConfig { json: read_json(&dir.join("scheduler/scheduler_config.json"))? };
    scheduler.kind()?;
    Ok(WanModel {
        dir: dir.to_path_buf(),
        layout: Layout::Diffusers,
        tokenizer,
        text_encoder,
        transformer,
        transformer_2,
        boundary_ratio: index.boundary_ratio,
        vae,
        image_encoder,
        scheduler,
        defaults,
        text_len: None,
        artifact,
    })
}

/// The pipeline-level settings of `model_index.json` wanrt reads (absent file: a Wan2.1 pipeline).
#[derive(Debug, Default, serde::Deserialize)]
struct PipelineIndex {
    /// Two-expert (Wan2.2 A14B) pipelines: `transformer` runs while `t ≥ boundary_ratio ·
    /// num_train_timesteps`, `transformer_2` after.
    #[serde(default)]
    boundary_ratio: Option<f64>,
    #[serde(default)]
    expand_timesteps: Option<bool>,
    #[serde(flatten)]
    components: std::collections::BTreeMap<String, serde_json::Value>,
}

impl PipelineIndex {
    fn read(dir: &Path) -> Result<Self> {
        let path = dir.join("model_index.json");
        let index: PipelineIndex = if path.is_file() { read_json(&path)? } else { PipelineIndex::default() };
        if index.expand_timesteps == Some(true) {
            return Err(Error::file(
                &path,
                "expand_timesteps (Wan2.2 TI2V-5B per-token timesteps) is not supported yet; expected a Wan2.1 \
                 or Wan2.2 A14B pipeline",
            ));
        }
        if let Some(r) = index.boundary_ratio.filter(|r| !(r.is_finite() && (0.0..=1.0).contains(r))) {
            return Err(Error::file(&path, format!("boundary_ratio {r} must lie in [0, 1]")));
        }
        if index.boundary_ratio.is_some() != index.has_component("transformer_2") {
            return Err(Error::file(
                &path,
                "a two-expert pipeline needs both boundary_ratio and a transformer_2 component (and a \
                 single-expert one neither)",
            ));
        }
        Ok(index)
    }

    /// Whether `name` is listed as a component (`[library, class]`, not `[null, null]`).
    fn has_component(&self, name: &str) -> bool {
        self.components.get(name).and_then(|v| v.as_array()).is_some_and(|a| a.iter().any(|x| !x.is_null()))
    }
}

/// The config and weights of the component folder `dir/name` (weights `<stem>.safetensors`, or
/// sharded with an index).
fn component<C: serde::de::DeserializeOwned>(dir: &Path, name: &str, stem: &str) -> Result<(C, WeightStore)> {
    let path = dir.join(name);
    Ok((read_json(&path.join("config.json"))?, WeightStore::from_diffusers_dir(&path, stem)?))
}
