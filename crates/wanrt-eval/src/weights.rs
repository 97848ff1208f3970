//! Weight files of the evaluation networks, by name: PyTorch `.pth`/`.pt` state_dicts
//! (read with wanrt-io's restricted pickle reader; nothing in them runs) and safetensors.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use wanrt_io::{PthFile, TorchDType};
use wanrt_nn::HostTensor;

use crate::error::{EvalError, Result};

/// A loaded state_dict: f32 tensors by name, with the file for error messages.
pub struct StateDict {
    path: PathBuf,
    tensors: HashMap<String, (Vec<usize>, Vec<f32>)>,
}

impl StateDict {
    /// Reads a `.pth`/`.pt` (torch.save zip) or a `.safetensors` file. Float tensors are
    /// widened to f32; integer buffers (`num_batches_tracked`) are skipped.
    pub fn open(path: &Path) -> Result<Self> {
        if !path.is_file() {
            return Err(EvalError::input(path, "weight file not found"));
        }
        let is_st = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("safetensors"));
        let mut tensors = HashMap::new();
        if is_st {
            let store = wanrt_nn::weights::WeightStore::from_safetensors_files(&[path.into()])?;
            let names: Vec<String> = store.names().map(str::to_string).collect();
            for n in names {
                if let Ok(t) = store.get(&n) {
                    let shape = t.shape().to_vec();
                    tensors.insert(n, (shape, t.into_data()));
                }
            }
        } else {
            let f = PthFile::open(path)?;
            for (name, t) in f.into_tensors() {
                if matches!(t.dtype(), TorchDType::F32 | TorchDType::F16 | TorchDType::BF16 | TorchDType::F64) {
                    tensors.insert(name, (t.shape().to_vec(), t.to_f32_vec()));
                }
            }
        }
        Ok(StateDict { path: path.to_path_buf(), tensors })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// The tensor `name`, which must have `shape` (`None` = any).
    pub fn get(&self, name: &str, shape: Option<&[usize]>) -> Result<HostTensor> {
        let (s, d) = self
            .tensors
            .get(name)
            .ok_or_else(|| EvalError::Weights { path: self.path.clone(), msg: format!("missing tensor `{name}`") })?;
        if let Some(want) = shape {
            if s.as_slice() != want {
                return Err(EvalError::Weights {
                    path: self.path.clone(),
                    msg: format!("tensor `{name}`: expected shape {want:?}, found {s:?}"),
                });
            }
        }
        Ok(HostTensor::new(s.clone(), d.clone())?)
    }

    /// A 1-D tensor of length `n` as a plain vector.
    pub fn vec(&self, name: &str, n: usize) -> Result<Vec<f32>> {
        Ok(self.get(name, Some(&[n]))?.into_data())
    }
}
