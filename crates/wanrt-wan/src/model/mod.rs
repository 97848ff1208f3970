//! A complete Wan2.1 model folder: tokenizer, UMT5, transformer, VAE, scheduler config and, for
//! image-to-video models, the CLIP image encoder,
//! from either supported layout ([`layout`]): diffusers folders ([`diffusers`]) or the original
//! Wan-Video release ([`original`]).
//!
//! An optional `wanrt.json` beside the model gives its generate defaults. The backends the
//! components run on are chosen at load ([`LoadOptions`]): every layer is prepared for its backend
//! there, once.

pub mod diffusers;
pub mod gguf;
pub mod index;
pub mod layout;
pub mod original;

pub use layout::Layout;

use crate::artifact::Manifest;
use crate::image_conditioning::ImageEncoder;
use crate::lora::{LoraSpec, LoraSummary, Unmatched};
use crate::scheduler::SchedulerConfig;
use crate::text::PromptTokenizer;
use crate::transformer::WanTransformer;
use crate::umt5::Umt5Encoder;
use crate::vae::WanVae;
use crate::{Error, Result};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use wanrt_nn::backend::{self, CpuBackend, CpuOptions, Prepack};
use wanrt_nn::lora::MergeMode;
use wanrt_nn::{BackendRef, DType};

/// `wanrt.json`: the model's own generate defaults (all optional).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ModelDefaults {
    pub height: Option<usize>,
    pub width: Option<usize>,
    pub num_frames: Option<usize>,
    pub num_inference_steps: Option<usize>,
    pub guidance_scale: Option<f64>,
    pub max_sequence_length: Option<usize>,
    pub negative_prompt: Option<String>,
    pub fps: Option<f64>,
    pub shift: Option<f64>,
    pub cache_threshold: Option<f64>,
    /// Sampler, `"unipc"` or `"euler"` (default: the scheduler config's): step-distilled models
    /// are sampled with flow-matching Euler whatever scheduler their folder ships.
    pub scheduler: Option<String>,
    /// An explicit schedule of unshifted sigmas, one per step (diffusers'
    /// `set_timesteps(sigmas=…)`): a step-distilled recipe's step list, e.g. lightx2v's
    /// `denoising_step_list` `[1000, 750, 500, 250]` as `[1.0, 0.75, 0.5, 0.25]`. Euler only;
    /// it fixes the number of steps.
    pub sigmas: Option<Vec<f64>>,
    /// Where an original-layout two-expert release (Wan2.2 A14B) switches to its low-noise
    /// expert, as a fraction of the training timesteps (default: Wan's 0.875 for text-to-video,
    /// 0.9 for image-to-video).
    pub boundary_ratio: Option<f64>,
    /// Attention heads of an original-layout CLIP image encoder (the open-clip file does not
    /// state them; Wan's ViT-H/14 has heads of width 80, assumed when this is absent).
    pub image_encoder_heads: Option<usize>,
    /// Latent statistics for an original-layout VAE whose z_dim is not 16 or 48.
    pub vae_latents_mean: Option<Vec<f32>>,
    pub vae_latents_std: Option<Vec<f32>>,
}

impl ModelDefaults {
    /// The folder's `wanrt.json`, or no defaults when there is none.
    pub fn read(dir: &Path) -> Result<ModelDefaults> {
        let path = dir.join(DEFAULTS_FILE);
        if path.is_file() {
            let d: ModelDefaults = read_json(&path)?;
            // A misspelt sampler would otherwise surface only at the first generation.
            if let Some(name) = &d.scheduler {
                name.parse::<crate::scheduler::SchedulerKind>().map_err(|e| Error::file(&path, e))?;
            }
            if let Some(r) = d.boundary_ratio.filter(|r| !(r.is_finite() && *r > 0.0 && *r < 1.0)) {
                return Err(Error::file(&path, format!("\"boundary_ratio\" must be between 0 and 1, found {r}")));
            }
            if let Some(sigmas) = &d.sigmas {
                crate::scheduler::check_sigmas(sigmas).map_err(|e| Error::file(&path, e.to_string()))?;
            }
            Ok(d)
        } else {
            Ok(ModelDefaults::default())
        }
    }
}

/// The file of [`ModelDefaults`] in a model folder.
pub const DEFAULTS_FILE: &str = "wanrt.json";

/// The backends the model's components run on.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Text encoder and transformer.
    pub backend: BackendRef,
    /// VAE (diffusers' Wan examples keep it in f32 under a bf16 pipeline).
    pub vae_backend: BackendRef,
    /// Load the VAE's encoder too (text-to-video only decodes).
    pub vae_encoder: bool,
    /// The transformer's weights from this GGUF file instead of the folder's own (its config
    /// still comes from the folder).
    pub transformer_file: Option<PathBuf>,
    /// LoRA files applied to the transformer at load ([`crate::lora`]).
    pub loras: Vec<LoraSpec>,
    /// LoRA files applied to `transformer_2` (Wan2.2 A14B's low-noise expert), as diffusers'
    /// `load_lora_weights(…, load_into_transformer_2=True)`; an error on a one-expert model.
    pub loras_2: Vec<LoraSpec>,
    /// Merge LoRAs into float weights (default) or run them all as side paths.
    pub lora_mode: MergeMode,
    /// LoRA keys that match no transformer parameter: an error (default) or skipped.
    pub lora_unmatched: Unmatched,
}

impl Default for LoadOptions {
    fn default() -> Self {
        let cpu = backend::cpu();
        LoadOptions {
            backend: cpu.clone(),
            vae_backend: cpu,
            vae_encoder: false,
            transformer_file: None,
            loras: vec![],
            loras_2: vec![],
            lora_mode: MergeMode::Merge,
            lora_unmatched: Unmatched::Error,
        }
    }
}

impl LoadOptions {
    /// The CPU backend computing the text encoder and transformer in `dtype` (the VAE in f32),
    /// checkpoint weights packed or streamed per `prepack`.
    pub fn cpu(dtype: DType, prepack: Prepack) -> Self {
        LoadOptions::cpu_with(CpuOptions { dtype, prepack, ..Default::default() })
    }

    /// [`LoadOptions::cpu`] with every CPU option (`options.dtype` for the text encoder and
    /// transformer; the VAE computes in f32 with the same weight handling).
    pub fn cpu_with(options: CpuOptions) -> Self {
        let dtype = options.dtype;
        let f32 = CpuBackend::new(CpuOptions { dtype: DType::F32, ..options });
        let main = f32.with_dtype(dtype);
        LoadOptions {
            backend: std::sync::Arc::new(main),
            vae_backend: std::sync::Arc::new(f32),
            vae_encoder: false,
            transformer_file: None,
            loras: vec![],
            loras_2: vec![],
            lora_mode: MergeMode::Merge,
            lora_unmatched: Unmatched::Error,
        }
    }
}

pub struct WanModel {
    pub dir: PathBuf,
    pub layout: Layout,
    pub tokenizer: PromptTokenizer,
    pub text_encoder: Umt5Encoder,
    pub transformer: WanTransformer,
    /// Two-expert models (Wan2.2 A14B): the low-noise expert, run once the timestep falls below
    /// `boundary_ratio · num_train_timesteps`.
    pub transformer_2: Option<WanTransformer>,
    pub boundary_ratio: Option<f64>,
    /// Wan2.2 TI2V-5B (`expand_timesteps` in model_index.json): one timestep per latent frame,
    /// text-to-video, or image-to-video with the image's latent as the first latent frame.
    pub expand_timesteps: bool,
    pub vae: WanVae,
    /// Image-conditioned models (I2V, first-last-frame) only.
    pub image_encoder: Option<ImageEncoder>,
    pub scheduler: SchedulerConfig,
    pub defaults: ModelDefaults,
    /// The model's context length when its config states one (original `text_len`).
    pub text_len: Option<usize>,
    /// Present when the folder is an optimized artifact (`wanrt optimize`).
    pub artifact: Option<Manifest>,
    /// The LoRA files applied at load.
    pub loras: Vec<LoraSummary>,
    /// The LoRA files applied to `transformer_2` at load.
    pub loras_2: Vec<LoraSummary>,
}

/// `--lora-2` needs a second transformer: refused, before anything loads, on a one-expert model.
fn check_loras_2(opts: &LoadOptions, has_transformer_2: bool, dir: &Path) -> Result<()> {
    match opts.loras_2.first() {
        Some(spec) if !has_transformer_2 => Err(Error::file(
            &spec.path,
            format!(
                "a LoRA for transformer_2, but {} has one transformer (only Wan2.2 A14B has a second expert)",
                dir.display()
            ),
        )),
        _ => Ok(()),
    }
}

pub(crate) fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
    serde_json::from_str(&text).map_err(|e| Error::file(path, format!("invalid config: {e}")))
}

/// How many images a generation with the model in `dir` must be given
/// ([`WanModel::required_images`]), from its configs alone — nothing loads, so a command can
/// refuse a missing image before its work.
pub fn required_images(dir: &Path) -> Result<usize> {
    match Layout::detect(dir)? {
        Layout::Diffusers => {
            let tr: crate::transformer::TransformerConfig = read_json(&dir.join("transformer/config.json"))?;
            let vae: crate::vae::VaeConfig = read_json(&dir.join("vae/config.json"))?;
            let expand = index::read(dir)?.expand_timesteps;
            Ok(crate::pipeline::required_images(expand, tr.in_channels, vae.z_dim, tr.pos_embed_seq_len.is_some()))
        }
        Layout::Original => original::required_images(dir),
    }
}

impl WanModel {
    /// Loads the model on the CPU backend (f32); `stage` is told which component is being read.
    pub fn load(dir: &Path, stage: impl FnMut(&str)) -> Result<Self> {
        Self::load_with(dir, LoadOptions::default(), stage)
    }

    pub fn load_with(dir: &Path, opts: LoadOptions, mut stage: impl FnMut(&str)) -> Result<Self> {
        let layout = Layout::detect(dir)?;
        let defaults = ModelDefaults::read(dir)?;
        let model = match layout {
            Layout::Diffusers => diffusers::load(dir, defaults, &opts, &mut stage)?,
            Layout::Original => original::load(dir, defaults, &opts, &mut stage)?,
        };
        model.check_compatible()?;
        Ok(model)
    }

    fn check_compatible(&self) -> Result<()> {
        self.check_transformer(&self.transformer.config)?;
        if let Some(t2) = &self.transformer_2 {
            let (a, b) = (&self.transformer.config, &t2.config);
            if (a.in_channels, a.out_channels(), a.patch_size, a.image_dim)
                != (b.in_channels, b.out_channels(), b.patch_size, b.image_dim)
            {
                return Err(Error::Config(
                    "transformer_2 differs from transformer in channels, patch size or image conditioning".into(),
                ));
            }
            self.check_transformer(b)?;
        }
        Ok(())
    }

    fn check_transformer(&self, t: &crate::transformer::TransformerConfig) -> Result<()> {
        let (z, d) = (self.vae.config.z_dim, self.text_encoder.config.d_model);
        if self.expand_timesteps {
            // diffusers' per-token timesteps take every second latent row and column of the
            // first-frame mask (hard-coded `[:, ::2, ::2]`): one per token only for this patch.
            if t.patch_size != [1, 2, 2] || t.in_channels != z || t.is_image_conditioned() {
                return Err(Error::Config(format!(
                    "expand_timesteps (Wan2.2 TI2V) needs a transformer with patch_size [1, 2, 2], z_dim {z} input \
                     channels and no image embedder; found patch_size {:?}, {} input channels",
                    t.patch_size, t.in_channels
                )));
            }
        }
        // Image-to-video models also take the frame mask and the image latent.
        let with_image = 2 * z + self.vae.config.temporal_factor();
        if (t.in_channels != z && t.in_channels != with_image) || t.out_channels() != z {
            return Err(Error::Config(format!(
                "transformer has {} input / {} output channels but the VAE's z_dim {z} needs {z} (text-to-video) \
                 or {with_image} (image-to-video) / {z}",
                t.in_channels,
                t.out_channels()
            )));
        }
        if t.is_image_conditioned() && t.in_channels == z {
            return Err(Error::Config(format!(
                "transformer has an image embedder (image_dim) but {z} input channels: an image-to-video model \
                 takes {with_image}"
            )));
        }
        if let (Some(encoder), Some(image_dim)) = (&self.image_encoder, t.image_dim) {
            if encoder.clip.config.hidden_size != image_dim {
                return Err(Error::Config(format!(
                    "image encoder hidden_size {} ≠ transformer image_dim {image_dim}",
                    encoder.clip.config.hidden_size
                )));
            }
            let c = &encoder.clip.config;
            let tokens = (c.image_size / c.patch_size).pow(2) + 1;
            if let Some(n) = t.pos_embed_seq_len.filter(|&n| n != 2 * tokens) {
                return Err(Error::Config(format!(
                    "transformer pos_embed_seq_len {n} ≠ two images of {tokens} image-encoder tokens"
                )));
            }
        }
        if t.text_dim != d {
            return Err(Error::Config(format!("transformer text_dim {} ≠ text encoder d_model {d}", t.text_dim)));
        }
        Ok(())
    }
}
