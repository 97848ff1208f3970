//! wanrt-nn: the tensor layer under every wanrt model.
//!
//! A [`Tensor`] is a shape and a buffer owned by a [`Backend`]; models compute only through the
//! backend's ops and never see values, which cross between host and backend through named,
//! counted transfers ([`backend::Transfers`]). Layers ([`Linear`], [`Conv3d`], [`Embedding`]) describe
//! their weights as stored and are prepared once by the backend; [`VarBuilder`] builds them from
//! a [`WeightStore`] along the module tree. The CPU backend runs the plain kernels of [`ops`] and
//! [`quant`] on [`HostTensor`]s: it is the numerical reference (f32 accumulate) every other backend
//! is checked against ([`backend::conformance`]).

/// Calls the micro-kernel `$k::<MR>` for a run-time row count `1..=12` (const generics keep the
/// accumulators in registers); shared by the integer (`quant`) and float
/// (`ops::packed`) kernels.
#[cfg(target_arch = "x86_64")]
macro_rules! by_rows {
    ($rows:expr, $k:ident, $($arg:expr),*) => {
        match $rows {
            1 => $k::<1>($($arg),*),
            2 => $k::<2>($($arg),*),
            3 => $k::<3>($($arg),*),
            4 => $k::<4>($($arg),*),
            5 => $k::<5>($($arg),*),
            6 => $k::<6>($($arg),*),
            7 => $k::<7>($($arg),*),
            8 => $k::<8>($($arg),*),
            9 => $k::<9>($($arg),*),
            10 => $k::<10>($($arg),*),
            11 => $k::<11>($($arg),*),
            12 => $k::<12>($($arg),*),
            _ => unreachable!("micro-kernel rows"),
        }
    };
}

pub mod backend;
pub mod conv3d;
pub mod dtype;
pub mod embedding;
pub mod error;
pub mod host;
pub mod layer_norm;
pub mod linear;
pub mod lora;
pub mod module;
pub mod ops;
pub mod probe;
pub mod quant;
pub mod tensor;
pub mod var_builder;
pub mod weights;

pub use backend::{Backend, BackendRef};
pub use conv3d::Conv3d;
pub use dtype::DType;
pub use embedding::Embedding;
pub use error::{Error, Result};
pub use host::HostTensor;
pub use layer_norm::LayerNorm;
pub use linear::{Linear, LinearObserver, LinearWeight};
pub use module::{Module, Param, ParamMut};
pub use tensor::Tensor;
pub use var_builder::{param_path, VarBuilder};
pub use weights::WeightStore;
