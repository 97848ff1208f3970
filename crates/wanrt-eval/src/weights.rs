//! Weight files of the evaluation networks: PyTorch `.pth`/`.pt` state_dicts (read with
//! wanrt-io's restricted pickle reader; nothing in them runs) and safetensors, opened as a
//! wanrt-nn [`WeightStore`] that the networks build their layers from (`VarBuilder`).

use std::path::Path;

use wanrt_nn::WeightStore;

use crate::error::{EvalError, Result};

/// Opens a `.pth`/`.pt` (torch.save zip) or a `.safetensors` file (by extension).
pub fn open(path: &Path) -> Result<WeightStore> {
    if !path.is_file() {
        return Err(EvalError::input(path, "weight file not found"));
    }
    let mut store = WeightStore::new(path.display().to_string());
    if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("safetensors")) {
        store.add_safetensors(path)?;
    } else {
        store.add_pth(path)?;
    }
    Ok(store)
}

/// The network `build` makes from the weight file `path` (see [`from_file`] for its errors).
pub fn load<T>(path: &Path, build: impl FnOnce(&WeightStore) -> Result<T>) -> Result<T> {
    let store = open(path)?;
    from_file(path, || build(&store))
}

/// `build`'s result, with a missing, misshapen or unreadable tensor reported against the file
/// `path` (wanrt-nn's errors name the tensor only).
pub fn from_file<T>(path: &Path, build: impl FnOnce() -> Result<T>) -> Result<T> {
    use wanrt_nn::Error as Nn;
    build().map_err(|e| match e {
        EvalError::Nn(Nn::MissingTensor { name, .. }) => {
            EvalError::Weights { path: path.to_path_buf(), msg: format!("missing tensor `{name}`") }
        }
        EvalError::Nn(e @ (Nn::TensorShape { .. } | Nn::UnsupportedDType { .. })) => {
            EvalError::Weights { path: path.to_path_buf(), msg: e.to_string() }
        }
        e => e,
    })
}
