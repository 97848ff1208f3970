//! wanrt-wan: the Wan2.1 text-to-video model family.
//!
//! One file per component, each mirroring its reference module:
//! UMT5 text encoder (transformers), diffusion transformer, causal 3D VAE,
//! flow-matching schedulers and the pipeline (diffusers).

pub mod artifact;
pub mod convert;
pub mod error;
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
pub mod umt5;
pub mod vae;

pub use error::{Error, Result};
