//! Where and how the models compute: the flags `generate` and `bench` share (`--backend`,
//! `--dtype`, `--threads`, `--prepack`, …) and the backends they select.

use crate::sysinfo;
use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use std::path::PathBuf;
use wanrt_nn::backend::{CpuOptions, Prepack};
use wanrt_nn::lora::MergeMode;
use wanrt_nn::ops::packed::FloatIsa;
use wanrt_nn::DType;
use wanrt_wan::lora::{LoraSpec, Unmatched};
use wanrt_wan::model::LoadOptions;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BackendKind {
    Cpu,
    Cuda,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DTypeArg {
    F32,
    Bf16,
    F16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PrepackArg {
    /// wanrt's choice: today every checkpoint weight streamed (as fast as packed, measured).
    Auto,
    /// Every checkpoint weight packed into f32 panels at load (fastest products).
    Always,
    /// Every checkpoint weight streamed from the file (nothing done or held at load).
    Never,
}

impl From<PrepackArg> for Prepack {
    fn from(p: PrepackArg) -> Prepack {
        match p {
            PrepackArg::Auto => Prepack::Auto,
            PrepackArg::Always => Prepack::Always,
            PrepackArg::Never => Prepack::Never,
        }
    }
}

impl From<DTypeArg> for DType {
    fn from(d: DTypeArg) -> DType {
        match d {
            DTypeArg::F32 => DType::F32,
            DTypeArg::Bf16 => DType::BF16,
            DTypeArg::F16 => DType::F16,
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct EngineArgs {
    /// Compute backend. `cuda` needs an NVIDIA GPU and driver (loaded at run time).
    #[arg(long, value_enum, default_value = "cpu")]
    pub backend: BackendKind,
    /// Activation precision of the text encoder and transformer: f32 is the exact reference;
    /// bf16 holds weights and activations in bf16 with f32 accumulation (a GPU's numerics,
    /// about half the memory). The VAE stays f32, as in diffusers' Wan pipelines. On the CPU the
    /// bf16 products run `vdpbf16ps` where the CPU has AVX-512 BF16 (about twice the f32 rate);
    /// elsewhere they compute the same bits by widening, slower than f32.
    #[arg(long, value_enum, default_value = "f32")]
    pub dtype: DTypeArg,
    /// CPU threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Under f32, where the products find the checkpoint's weights (the output is the same bits
    /// either way). `never`: streamed, left where they are stored (the mapped file) and packed
    /// inside each product while the other threads multiply (nothing done or held at load).
    /// `always`: packed into the GEMM's panels at load (one pass over the model at load, held in
    /// f32). `auto`: wanrt's choice, today streamed (measured as fast per step). int8 artifacts
    /// and --dtype bf16 always pack.
    #[arg(long, value_enum, default_value = "auto")]
    pub prepack: PrepackArg,
    /// Same as --prepack never (short runs: nothing packed at load).
    #[arg(long, conflicts_with = "prepack")]
    pub no_prepack: bool,
    /// Same as --prepack never (nothing beside the mapped checkpoint is held: its pages stay
    /// reclaimable).
    #[arg(long, conflicts_with = "prepack")]
    pub low_memory: bool,
    /// Transformer weights from this GGUF file (ComfyUI-GGUF / stable-diffusion.cpp; original or
    /// diffusers tensor names, F32/F16/BF16/Q8_0/Q4_0/Q4_1/Q5_0/Q5_1/Q2_K–Q6_K) instead of the
    /// model folder's; the config stays the folder's.
    #[arg(long, value_name = "FILE.gguf")]
    pub transformer: Option<PathBuf>,
    /// Run a GGUF transformer's Q8_0 weights directly on the int8 kernels, as ggml's CPU backend
    /// does (activations rounded to 8 bits per block of 32 values, each block's exact integer
    /// sum scaled into f32) instead of decoding them into the exact f32 product: not bit-exact;
    /// measured 1.07–1.34× per layer and 1.18× per transformer pass on an AVX2 CPU without VNNI
    /// (bench/results/q8_0-direct-zen3.md). Other GGUF types are decoded as usual.
    #[arg(long)]
    pub gguf_int8: bool,
    /// LoRA applied to the transformer at SCALE (default 1; repeatable): diffusers/PEFT,
    /// ComfyUI/Kohya (lora_down/lora_up/alpha, lora_unet_…) or original Wan key names, diff/diff_b
    /// deltas included. Merged into float weights; quantized weights run it as a low-rank side path.
    #[arg(long, value_name = "FILE[:SCALE]", value_parser = LoraSpec::parse)]
    pub lora: Vec<LoraSpec>,
    /// LoRA applied to transformer_2, Wan2.2 A14B's low-noise expert, at SCALE (repeatable; the
    /// same formats as --lora, which applies to the high-noise expert): diffusers'
    /// `load_lora_weights(…, load_into_transformer_2=True)`, the low-noise file of a LoRA pair.
    #[arg(long = "lora-2", value_name = "FILE[:SCALE]", value_parser = LoraSpec::parse)]
    pub lora_2: Vec<LoraSpec>,
    /// Run LoRAs as a low-rank side path on float weights too (the path quantized weights take)
    /// instead of merging them.
    #[arg(long)]
    pub lora_unmerged: bool,
    /// LoRA keys that match no transformer layer: `error` refuses the file naming them; `warn`
    /// skips them and prints one line with their count and first names.
    #[arg(long, value_name = "error|warn", default_value = "error", value_parser = Unmatched::parse)]
    pub lora_unmatched: Unmatched,
}

impl EngineArgs {
    /// Applies `--threads` and opens the backends; fails in one line when `--backend cuda` has no
    /// GPU to run on.
    pub fn load_options(&self) -> Result<LoadOptions> {
        sysinfo::set_threads(self.threads).context("--threads")?;
        let mut opts = match self.backend {
            BackendKind::Cpu => {
                if self.dtype == DTypeArg::Bf16 && !FloatIsa::Avx512Bf16.is_available() {
                    eprintln!(
                        "note: this CPU has no AVX-512 BF16: --dtype bf16 computes its bf16 products by widening, \
                         slower than --dtype f32 (which is also exact)"
                    );
                }
                let prepack = if self.no_prepack || self.low_memory { Prepack::Never } else { self.prepack.into() };
                LoadOptions::cpu_with(CpuOptions { dtype: self.dtype.into(), prepack, gguf_int8: self.gguf_int8 })
            }
            BackendKind::Cuda => {
                anyhow::ensure!(!self.gguf_int8, "--gguf-int8 applies to --backend cpu only");
                // The VAE stays f32 as in diffusers' pipelines (and as on the CPU path).
                let (backend, vae_backend) = wanrt_nn::backend::cuda::open_pipeline(self.dtype.into())?;
                LoadOptions {
                    backend,
                    vae_backend,
                    vae_encoder: false,
                    transformer_file: None,
                    loras: vec![],
                    loras_2: vec![],
                    lora_mode: Default::default(),
                    lora_unmatched: Default::default(),
                }
            }
        };
        opts.transformer_file = self.transformer.clone();
        opts.loras = self.lora.clone();
        opts.loras_2 = self.lora_2.clone();
        opts.lora_unmatched = self.lora_unmatched;
        opts.lora_mode = if self.lora_unmerged { MergeMode::SidePath } else { MergeMode::Merge };
        Ok(opts)
    }

    /// For reports: `cpu/f32`.
    pub fn describe(&self) -> String {
        format!("{:?}/{:?}", self.backend, self.dtype).to_lowercase()
    }
}
