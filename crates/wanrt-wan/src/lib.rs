//! wanrt-wan: the Wan2.1 model family: text-to-video, image-to-video, first-last-frame.
//!
//! One file per component, each mirroring its reference module:
//! UMT5 text encoder (transformers), diffusion transformer (blocks, attentions), causal 3D VAE
//! (blocks, causal convolution), flow-matching schedulers and the pipeline (diffusers).
//!
//! Model code here computes only through `wanrt_nn::Backend` and never reads a tensor's values:
//! it runs unchanged on any backend. The pipeline uploads the token ids and the initial noise and
//! downloads the final frames (`pipeline::to_frames`); `clippy.toml` makes any other host-data
//! access a lint error.

pub mod artifact;
pub mod attention;
pub mod causal_conv3d;
pub mod clip;
pub mod convert;
pub mod convert_gguf;
pub mod error;
pub mod image;
pub mod image_conditioning;
pub mod image_embedding;
pub mod lora;
pub mod lora_adapter;
pub mod memory;
pub mod model;
pub mod names;
pub mod pipeline;
pub mod rope;
pub mod scheduler;
pub mod scheduler_euler;
pub mod scheduler_unipc;
mod spiece;
pub mod step_cache;
pub mod text;
pub mod transformer;
pub mod transformer_block;
pub mod umt5;
pub mod vae;
pub mod vae_blocks;
pub mod vae_residual;

pub use error::{Error, Result};
