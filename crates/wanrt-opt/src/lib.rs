//! wanrt-opt: turns a Wan2.1 model into an optimized artifact.
//!
//! The steps, one module each: run the pipeline on calibration prompts and
//! record per-layer activation statistics ([`calibrate`]); rank and remove
//! FFN channels and attention heads ([`prune`]); quantize layers to INT8 /
//! FP8 with SmoothQuant-style migration of activation outliers
//! ([`quantize`]); measure how much each layer's quantization moves the
//! transformer's output and keep the sensitive ones in full precision
//! ([`sensitivity`]); optionally quantize the text encoder's weights
//! ([`text_encoder`]); write the self-contained artifact folder ([`artifact`]).
//! [`optimize()`] chains them.

pub mod artifact;
pub mod calibrate;
pub mod error;
pub mod optimize;
pub mod plan;
pub mod prune;
pub mod quantize;
pub mod sensitivity;
pub mod text_encoder;

pub use error::{Error, Result};
pub use optimize::{optimize, OptimizeSummary};
pub use plan::{ActivationChoice, OptimizeOptions, QuantMode};
