//! `wanrt convert`: an original Wan-Video release folder rewritten in the diffusers layout.

use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
#[command(after_help = "The original release layout is config.json, diffusion_pytorch_model*.safetensors, \
Wan2.1_VAE.pth, models_t5_umt5-xxl-enc-bf16.pth and google/umt5-xxl/. The output is a diffusers folder \
(model_index.json, text_encoder/, tokenizer/, transformer/, vae/, scheduler/) with the same tensors renamed, \
dtypes unchanged: it generates the same frames. `wanrt optimize` converts on its own when given a release folder.\n\
Example:\n  wanrt convert --model Wan2.1-T2V-1.3B -o Wan2.1-T2V-1.3B-diffusers")]
pub struct ConvertArgs {
    /// Original release folder.
    #[arg(long)]
    pub model: PathBuf,
    /// Output folder (must not exist, or be empty); written whole or not at all.
    #[arg(short, long)]
    pub output: PathBuf,
}

pub fn run(args: ConvertArgs) -> Result<()> {
    wanrt_wan::convert::original_to_diffusers(&args.model, &args.output, |stage| {
        eprintln!("wanrt convert: {stage}…");
    })
    .context("converting the release folder")?;
    eprintln!("wanrt convert: wrote {}", args.output.display());
    Ok(())
}
