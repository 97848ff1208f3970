//! wanrt-nn: the tensor layer under every wanrt model.
//!
//! Activations are dense row-major `f32` tensors; parameters may be stored in
//! bf16/f16 (widened on use) or in quantized formats owned by higher crates.
//! Every op has a plain CPU implementation that is the numerical reference
//! (f32 accumulate); models reach them only through [`backend::Backend`], which a GPU
//! backend implements too.

pub mod backend;
pub mod conv3d;
pub mod dtype;
pub mod embedding;
pub mod error;
pub mod linear;
pub mod ops;
pub mod probe;
pub mod quant;
pub mod tensor;
pub mod weights;

pub use backend::{Backend, BackendRef};
pub use conv3d::Conv3d;
pub use dtype::DType;
pub use embedding::Embedding;
pub use error::{Error, Result};
pub use linear::{Linear, LinearWeight};
pub use tensor::Tensor;
pub use weights::WeightStore;
