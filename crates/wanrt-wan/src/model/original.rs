//! The original Wan-Video release layout: tensors renamed to diffusers names by
//! [`crate::names`], configs inferred from the tensors and `config.json` (shared by loading and
//! `crate::convert`).

use super::{read_json, LoadOptions, ModelDefaults, WanModel};
use crate::model::{gguf, Layout};
use crate::names;
use crate::scheduler::SchedulerConfig;
use crate::text::PromptTokenizer;
use crate::transformer::{TransformerConfig, WanTransformer};
use crate::umt5::{Umt5Config, Umt5Encoder};
use crate::vae::{VaeConfig, WanVae, WAN21_LATENTS_MEAN, WAN21_LATENTS_STD};
use crate::{Error, Result};
use std::path::{Path, PathBuf};
use wanrt_nn::WeightStore;

pub(crate) fn load(
    dir: &Path,
    defaults: ModelDefaults,
    opts: &LoadOptions,
    stage: &mut dyn FnMut(&str),
) -> Result<WanModel> {
    stage("text encoder");
    let (t5, te_cfg) = text_encoder(dir)?;
    let text_encoder = Umt5Encoder::load(&t5, te_cfg, opts.backend.clone())?;
    drop(t5);
    let tokenizer = PromptTokenizer::from_dir(&tokenizer_dir(dir))?;
    stage("transformer");
    let (mut dit, tr_cfg, text_len) = transformer(dir, opts.transformer_file.as_deref())?;
    let loras = crate::lora::apply(&mut dit, &opts.loras, opts.lora_mode, opts.lora_unmatched)?;
    let transformer = WanTransformer::load(&dit, tr_cfg, opts.backend.clone())?;
    drop(dit);
    stage("vae");
    let (vae_ws, vae_cfg) = vae(dir, &defaults)?;
    let vae = WanVae::load(&vae_ws, vae_cfg, opts.vae_backend.clone(), opts.vae_encoder)?;
    Ok(WanModel {
        dir: dir.to_path_buf(),
        layout: Layout::Original,
        tokenizer,
        text_encoder,
        transformer,
        transformer_2: None,
        boundary_ratio: None,
        expand_timesteps: false,
        vae,
        image_encoder: None,
        scheduler: SchedulerConfig::original_release_default(),
        defaults,
        text_len,
        artifact: None,
        loras,
    })
}

pub(crate) fn text_encoder(dir: &Path) -> Result<(WeightStore, Umt5Config)> {
    let t5_path = dir.join("models_t5_umt5-xxl-enc-bf16.pth");
    let mut t5 = WeightStore::new(t5_path.display().to_string());
    t5.add_pth(&require_file(&t5_path)?)?;
    let t5 = rename_all(t5, names::t5, "T5")?;
    let cfg = infer_t5_config(&t5)?;
    Ok((t5, cfg))
}

pub(crate) fn tokenizer_dir(dir: &Path) -> PathBuf {
    dir.join("google/umt5-xxl")
}

/// The DiT, its config and the release's context length (`text_len`): weights from `file` (GGUF)
/// when given, else the folder's safetensors, else the one `*.gguf` file in the folder.
pub(crate) fn transformer(dir: &Path, file: Option<&Path>) -> Result<(WeightStore, TransformerConfig, Option<usize>)> {
    let found = match file {
        Some(f) => Some(f.to_path_buf()),
        None if has_dit_safetensors(dir) => None,
        None => gguf::find_in(dir)?,
    };
    let dit = match found {
        Some(f) => gguf::transformer(&f)?,
        None => rename_all(WeightStore::from_safetensors_files(&original_dit_files(dir)?)?, names::transformer, "DiT")?,
    };
    let raw: serde_json::Value = read_json(&dir.join("config.json"))?;
    let (cfg, text_len) = original_transformer_config(&raw, &dit)?;
    Ok((dit, cfg, text_len))
}

pub(crate) fn vae(dir: &Path, defaults: &ModelDefaults) -> Result<(WeightStore, VaeConfig)> {
    let vae_path = dir.join("Wan2.1_VAE.pth");
    let mut vae_ws = WeightStore::new(vae_path.display().to_string());
    vae_ws.add_pth(&require_file(&vae_path)?)?;
    let mut cfg = infer_vae_config(&vae_ws)?;
    let r = cfg.num_res_blocks;
    let vae_ws = rename_all(vae_ws, |n| names::vae(n, r), "VAE")?;
    match (&defaults.vae_latents_mean, &defaults.vae_latents_std) {
        (Some(m), Some(s)) => {
            cfg.latents_mean = m.clone();
            cfg.latents_std = s.clone();
        }
        _ if cfg.z_dim == 16 => {
            cfg.latents_mean = WAN21_LATENTS_MEAN.to_vec();
            cfg.latents_std = WAN21_LATENTS_STD.to_vec();
        }
        _ => {}
    }
    Ok((vae_ws, cfg))
}

fn require_file(path: &Path) -> Result<PathBuf> {
    if path.is_file() {
        Ok(path.to_path_buf())
    } else {
        Err(Error::file(path, "missing file of the original Wan release layout"))
    }
}

/// Renames every tensor; an unknown name is an error naming it.
fn rename_all(ws: WeightStore, map: impl Fn(&str) -> Option<String>, what: &str) -> Result<WeightStore> {
    if let Some(unknown) = ws.names().find(|n| map(n).is_none()) {
        return Err(Error::file(
            ws.origin(),
            format!("unexpected {what} tensor `{unknown}` for the original Wan layout"),
        ));
    }
    Ok(ws.renamed(map))
}

fn has_dit_safetensors(dir: &Path) -> bool {
    original_dit_files(dir).is_ok()
}

fn original_dit_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let single = dir.join("diffusion_pytorch_model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let mut shards: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::file(dir, format!("cannot list: {e}")))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.starts_with("diffusion_pytorch_model") && name.ends_with(".safetensors")
        })
        .collect();
    shards.sort();
    if shards.is_empty() {
        return Err(Error::file(dir, "no diffusion_pytorch_model*.safetensors (the DiT weights) found"));
    }
    Ok(shards)
}

fn original_transformer_config(
    raw: &serde_json::Value,
    dit: &WeightStore,
) -> Result<(TransformerConfig, Option<usize>)> {
    let get = |k: &str| -> Result<usize> {
        raw.get(k)
            .and_then(|v| v.as_u64())
            .map(|v| v as usize)
            .ok_or_else(|| Error::Config(format!("original config.json lacks integer `{k}`")))
    };
    if let Some(t) = raw.get("model_type").and_then(|v| v.as_str()) {
        if t != "t2v" {
            return Err(Error::Config(format!("original model_type {t:?} is not supported; expected \"t2v\"")));
        }
    }
    let dim = get("dim")?;
    let heads = get("num_heads")?;
    if heads == 0 || dim % heads != 0 {
        return Err(Error::Config(format!("dim {dim} is not divisible by num_heads {heads}")));
    }
    // Release configs omit text_dim; the text embedding's shape states it.
    let text_dim = dit.shape_of("condition_embedder.text_embedder.linear_1.weight")?[1];
    let patch_size =
        raw.get("patch_size").and_then(|v| serde_json::from_value::<[usize; 3]>(v.clone()).ok()).unwrap_or([1, 2, 2]);
    let cfg = TransformerConfig {
        patch_size,
        num_attention_heads: heads,
        attention_head_dim: dim / heads,
        in_channels: get("in_dim")?,
        out_channels: Some(get("out_dim")?),
        text_dim,
        freq_dim: get("freq_dim").unwrap_or(256),
        ffn_dim: get("ffn_dim")?,
        num_layers: get("num_layers")?,
        cross_attn_norm: raw.get("cross_attn_norm").and_then(|v| v.as_bool()).unwrap_or(true),
        eps: raw.get("eps").and_then(|v| v.as_f64()).unwrap_or(1e-6) as f32,
        image_dim: None,
        added_kv_proj_dim: None,
        pos_embed_seq_len: None,
        rope_max_seq_len: 1024,
        self_attn_heads: None,
    };
    Ok((cfg, get("text_len").ok()))
}

fn infer_t5_config(ws: &WeightStore) -> Result<Umt5Config> {
    let emb = ws.shape_of("shared.weight")?;
    let (vocab, d_model) = (emb[0], emb[1]);
    let bias = ws.shape_of("encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight")?;
    let (buckets, heads) = (bias[0], bias[1]);
    let inner = ws.shape_of("encoder.block.0.layer.0.SelfAttention.q.weight")?[0];
    let d_ff = ws.shape_of("encoder.block.0.layer.1.DenseReluDense.wi_1.weight")?[0];
    let layers = (0..).take_while(|i| ws.contains(&format!("encoder.block.{i}.layer.0.layer_norm.weight"))).count();
    if heads == 0 || inner % heads != 0 {
        return Err(Error::Config(format!("T5: inner dim {inner} not divisible by {heads} heads")));
    }
    Ok(Umt5Config {
        vocab_size: vocab,
        d_model,
        d_kv: inner / heads,
        d_ff,
        num_layers: layers,
        num_heads: heads,
        relative_attention_num_buckets: buckets,
        relative_attention_max_distance: 128,
        layer_norm_epsilon: 1e-6,
        feed_forward_proj: "gated-gelu".into(),
    })
}

/// The original VAE file has no config: sizes follow from its tensors
/// (names still original here).
fn infer_vae_config(ws: &WeightStore) -> Result<VaeConfig> {
    let base_dim = ws.shape_of("encoder.conv1.weight")?[0];
    let z_dim = ws.shape_of("conv2.weight")?[0];
    let mut res_channels = Vec::new(); // output channels of each residual block, per stage
    let mut stage: Vec<usize> = Vec::new();
    let mut temporal = Vec::new();
    let mut num_res = None;
    for k in 0.. {
        let p = format!("encoder.downsamples.{k}.");
        if ws.contains(&format!("{p}resample.1.weight")) {
            temporal.push(ws.contains(&format!("{p}time_conv.weight")));
            num_res.get_or_insert(stage.len());
            res_channels.push(std::mem::take(&mut stage));
        } else if ws.contains(&format!("{p}residual.2.weight")) {
            stage.push(ws.shape_of(&format!("{p}residual.2.weight"))?[0]);
        } else {
            break;
        }
    }
    let num_res_blocks = num_res.unwrap_or(stage.len());
    res_channels.push(stage);
    let dim_mult = res_channels
        .iter()
        .map(|s| s.last().map(|c| c / base_dim).ok_or_else(|| Error::Config("VAE: empty encoder stage".into())))
        .collect::<Result<Vec<_>>>()?;
    let mut cfg = VaeConfig::wan2_1();
    cfg.base_dim = base_dim;
    cfg.z_dim = z_dim;
    cfg.dim_mult = dim_mult;
    cfg.num_res_blocks = num_res_blocks;
    cfg.temperal_downsample = temporal;
    cfg.latents_mean.clear();
    cfg.latents_std.clear();
    Ok(cfg)
}
