//! Which of the two supported folder layouts a model folder is.

use crate::{Error, Result};
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `model_index.json`, `text_encoder/`, `tokenizer/`, `transformer/`, `vae/`, `scheduler/`.
    Diffusers,
    /// The Wan-Video release: `config.json`, `diffusion_pytorch_model*.safetensors`,
    /// `Wan2.1_VAE.pth`, `models_t5_umt5-xxl-enc-bf16.pth`, `google/umt5-xxl/`.
    Original,
}

impl Layout {
    pub fn detect(dir: &Path) -> Result<Layout> {
        if !dir.is_dir() {
            return Err(Error::file(dir, "model folder not found"));
        }
        if dir.join("model_index.json").is_file() || dir.join("transformer").is_dir() {
            return Ok(Layout::Diffusers);
        }
        if dir.join("Wan2.1_VAE.pth").is_file()
            || dir.join("Wan2.2_VAE.pth").is_file()
            || dir.join("config.json").is_file()
        {
            return Ok(Layout::Original);
        }
        Err(Error::file(
            dir,
            "not a Wan model folder: expected a diffusers folder (model_index.json, transformer/, vae/ …) \
             or the original release layout (config.json, Wan2.1_VAE.pth, models_t5_umt5-xxl-enc-bf16.pth)",
        ))
    }
}
