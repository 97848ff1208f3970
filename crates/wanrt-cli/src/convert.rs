//! `wanrt convert`: an original Wan-Video release folder rewritten in the diffusers layout, or a
//! diffusers folder with its transformer replaced by a dequantized GGUF checkpoint.

use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
#[command(after_help = "The original release layout is config.json, diffusion_pytorch_model*.safetensors, \
Wan2.1_VAE.pth, models_t5_umt5-xxl-enc-bf16.pth and google/umt5-xxl/; image-to-video and first-last-frame \
releases (config.json model_type \"i2v\" / \"flf2v\") add models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth, \
Wan2.2 TI2V-5B (\"ti2v\") has Wan2.2_VAE.pth instead. The output is a diffusers folder \
(model_index.json, text_encoder/, tokenizer/, transformer/, vae/, scheduler/, and image_encoder/ + \
image_processor/ for image-to-video) with the same tensors renamed, dtypes unchanged: it generates the same frames. `wanrt optimize` converts on its own when given a release folder.\n\
With --transformer FILE.gguf, --model is a diffusers folder: the output copies it with the transformer's weights \
taken from the GGUF file, dequantized exactly as `generate --transformer FILE.gguf` decodes them (f32: the same \
frames bit for bit; bf16: half the size), one tensor at a time.\n\
Examples:\n  wanrt convert --model Wan2.1-T2V-1.3B -o Wan2.1-T2V-1.3B-diffusers\n  \
wanrt convert --model Wan2.1-T2V-14B-diffusers --transformer wan2.1-t2v-14b-Q8_0.gguf -o Wan2.1-14B-from-q8")]
pub struct ConvertArgs {
    /// Original release folder.
    #[arg(long)]
    pub model: PathBuf,
    /// Output folder (must not exist, or be empty); written whole or not at all.
    #[arg(short, long)]
    pub output: PathBuf,
    /// GGUF transformer (ComfyUI-GGUF / stable-diffusion.cpp) to dequantize into the output; --model is
    /// then the diffusers folder giving the other components and the transformer's config.
    #[arg(long, value_name = "FILE.gguf")]
    pub transformer: Option<PathBuf>,
    /// Dtype of the dequantized transformer (with --transformer).
    #[arg(long, value_enum, default_value = "f32", requires = "transformer")]
    pub dtype: ConvertDType,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ConvertDType {
    F32,
    Bf16,
}

pub fn run(args: ConvertArgs) -> Result<()> {
    if let Some(file) = &args.transformer {
        let dtype = match args.dtype {
            ConvertDType::F32 => wanrt_nn::DType::F32,
            ConvertDType::Bf16 => wanrt_nn::DType::BF16,
        };
        wanrt_wan::convert_gguf::gguf_to_diffusers(&args.model, file, &args.output, dtype, |stage| {
            eprintln!("wanrt convert: {stage}…");
        })
        .context("converting the GGUF transformer")?;
        eprintln!("wanrt convert: wrote {}", args.output.display());
        return Ok(());
    }
    wanrt_wan::convert::original_to_diffusers(&args.model, &args.output, |stage| {
        eprintln!("wanrt convert: {stage}…");
    })
    .context("converting the release folder")?;
    eprintln!("wanrt convert: wrote {}", args.output.display());
    Ok(())
}
