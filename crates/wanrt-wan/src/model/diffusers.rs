//! The diffusers folder layout: one folder per component with its own config, single or sharded
//! safetensors; an optimized artifact is such a folder plus its manifest.

use super::{read_json, LoadOptions, ModelDefaults, WanModel};
use crate::artifact::Manifest;
use crate::image_conditioning::ImageEncoder;
use crate::model::{gguf, Layout};
use crate::scheduler::SchedulerConfig;
use crate::text::PromptTokenizer;
use crate::transformer::{TransformerConfig, WanTransformer};
use crate::umt5::{Umt5Config, Umt5Encoder};
use crate::vae::{VaeConfig, WanVae};
use crate::Result;
use std::path::Path;
use wanrt_nn::WeightStore;

pub(crate) fn load(
    dir: &Path,
    defaults: ModelDefaults,
    opts: &LoadOptions,
    stage: &mut dyn FnMut(&str),
) -> Result<WanModel> {
    let index = super::index::read(dir)?;
    super::check_loras_2(opts, index.has_transformer_2, dir)?;
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
    let (tr_cfg, mut tr_store) = transformer(dir, opts)?;
    if let Some(m) = &artifact {
        if let Some(f) = &opts.transformer_file {
            return Err(crate::Error::file(f, "an optimized artifact's transformer cannot be replaced by a GGUF file"));
        }
        m.apply(&mut tr_store)?;
    }
    let loras = crate::lora::apply(&mut tr_store, &opts.loras, opts.lora_mode, opts.lora_unmatched)?;
    let transformer = WanTransformer::load(&tr_store, tr_cfg, opts.backend.clone())?;
    drop(tr_store);
    let mut loras_2 = vec![];
    let transformer_2 = if index.has_transformer_2 {
        stage("transformer_2");
        let (cfg, mut store) = component::<TransformerConfig>(dir, "transformer_2", "diffusion_pytorch_model")?;
        if let Some(m) = &artifact {
            m.apply_transformer_2(&mut store)?;
        }
        loras_2 = crate::lora::apply(&mut store, &opts.loras_2, opts.lora_mode, opts.lora_unmatched)?;
        Some(WanTransformer::load(&store, cfg, opts.backend.clone())?)
    } else {
        None
    };
    // Image-to-video transformers take the VAE-encoded image beside the latents, TI2V models in
    // place of the first latent frame.
    let encodes_images = transformer.config.in_channels != transformer.config.out_channels() || index.expand_timesteps;
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
    scheduler.validate().map_err(|e| crate::Error::file(dir.join("scheduler/scheduler_config.json"), e.to_string()))?;
    Ok(WanModel {
        dir: dir.to_path_buf(),
        layout: Layout::Diffusers,
        tokenizer,
        text_encoder,
        transformer,
        transformer_2,
        boundary_ratio: index.boundary_ratio,
        expand_timesteps: index.expand_timesteps,
        vae,
        image_encoder,
        scheduler,
        defaults,
        text_len: None,
        artifact,
        loras,
        loras_2,
    })
}

/// The transformer's config and weights: `opts.transformer_file` (GGUF) when given, else the
/// folder's safetensors, else the one `*.gguf` file in `transformer/`.
fn transformer(dir: &Path, opts: &LoadOptions) -> Result<(TransformerConfig, WeightStore)> {
    let path = dir.join("transformer");
    let cfg = read_json(&path.join("config.json"))?;
    let stem = "diffusion_pytorch_model";
    let has_safetensors = path.join(format!("{stem}.safetensors")).is_file()
        || path.join(format!("{stem}.safetensors.index.json")).is_file();
    let ws = match (&opts.transformer_file, has_safetensors) {
        (Some(f), _) => gguf::transformer(f)?,
        (None, true) => WeightStore::from_diffusers_dir(&path, stem)?,
        (None, false) => match gguf::find_in(&path)? {
            Some(f) => gguf::transformer(&f)?,
            None => WeightStore::from_diffusers_dir(&path, stem)?,
        },
    };
    Ok((cfg, ws))
}

/// The config and weights of the component folder `dir/name` (weights `<stem>.safetensors`, or
/// sharded with an index).
pub(crate) fn component<C: serde::de::DeserializeOwned>(
    dir: &Path,
    name: &str,
    stem: &str,
) -> Result<(C, WeightStore)> {
    let path = dir.join(name);
    Ok((read_json(&path.join("config.json"))?, WeightStore::from_diffusers_dir(&path, stem)?))
}
