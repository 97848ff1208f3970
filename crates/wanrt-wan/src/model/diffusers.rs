//! The diffusers folder layout: one folder per component with its own config, single or sharded
//! safetensors; an optimized artifact is such a folder plus its manifest.

use super::{read_json, LoadOptions, ModelDefaults, WanModel};
use crate::artifact::Manifest;
use crate::model::Layout;
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
    super::index::check(dir)?;
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
    stage("vae");
    let (vae_cfg, vae_store) = component::<VaeConfig>(dir, "vae", "diffusion_pytorch_model")?;
    let vae = WanVae::load(&vae_store, vae_cfg, opts.vae_backend.clone(), opts.vae_encoder)?;
    let scheduler = SchedulerConfig { json: read_json(&dir.join("scheduler/scheduler_config.json"))? };
    scheduler.validate().map_err(|e| crate::Error::file(dir.join("scheduler/scheduler_config.json"), e.to_string()))?;
    Ok(WanModel {
        dir: dir.to_path_buf(),
        layout: Layout::Diffusers,
        tokenizer,
        text_encoder,
        transformer,
        vae,
        scheduler,
        defaults,
        text_len: None,
        artifact,
    })
}

/// The config and weights of the component folder `dir/name` (weights `<stem>.safetensors`, or
/// sharded with an index).
fn component<C: serde::de::DeserializeOwned>(dir: &Path, name: &str, stem: &str) -> Result<(C, WeightStore)> {
    let path = dir.join(name);
    Ok((read_json(&path.join("config.json"))?, WeightStore::from_diffusers_dir(&path, stem)?))
}
