//! The models a process serves, loaded once at start and shared by the HTTP front
//! (defaults, validation, admission) and the workers. A model's name is its folder's name.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use wanrt_wan::model::WanModel;

use crate::adapters::LoraDir;
use crate::{Error, Result};

pub struct ServedModel {
    pub name: String,
    pub dir: PathBuf,
    pub model: WanModel,
    /// Frames per second of its videos (`fps` in wanrt.json, else 16).
    pub fps: f64,
}

#[derive(Clone)]
pub struct Models {
    list: Vec<Arc<ServedModel>>,
    /// `--lora-dir`: the folder per-request adapters are taken from.
    lora_dir: Option<LoraDir>,
}

/// The name a model folder is served under.
pub fn model_name(dir: &Path) -> String {
    let canonical = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    canonical.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "model".into())
}

impl Models {
    /// Loads every folder; `log` hears `name: component` as each one is read.
    pub fn load(dirs: &[PathBuf], mut log: impl FnMut(&str)) -> Result<Models> {
        let mut list: Vec<Arc<ServedModel>> = Vec::new();
        for dir in dirs {
            let name = model_name(dir);
            if list.iter().any(|m| m.name == name) {
                return Err(Error::Input(format!(
                    "--model {}: two models named '{name}' (models are served under their folder names)",
                    dir.display()
                )));
            }
            let model = WanModel::load(dir, |stage| log(&format!("{name}: {stage}")))
                .map_err(|e| Error::Input(format!("--model {}: {e}", dir.display())))?;
            let fps = model.defaults.fps.filter(|f| f.is_finite() && *f > 0.0).unwrap_or(16.0);
            list.push(Arc::new(ServedModel { name, dir: dir.clone(), model, fps }));
        }
        if list.is_empty() {
            return Err(Error::Input("no model to serve (--model DIR)".into()));
        }
        Ok(Models { list, lora_dir: None })
    }

    /// Allows per-request adapters from `dir` (which must be a folder).
    pub fn with_lora_dir(mut self, dir: Option<LoraDir>) -> Result<Models> {
        if let Some(d) = &dir {
            if !d.dir.is_dir() {
                return Err(Error::Input(format!("--lora-dir {}: not a folder", d.dir.display())));
            }
        }
        self.lora_dir = dir;
        Ok(self)
    }

    pub fn lora_dir(&self) -> Option<&LoraDir> {
        self.lora_dir.as_ref()
    }

    /// The named model, or the first one when `name` is None.
    pub fn find(&self, name: Option<&str>) -> Option<&Arc<ServedModel>> {
        match name {
            None => self.list.first(),
            Some(n) => self.list.iter().find(|m| m.name == n),
        }
    }

    pub fn names(&self) -> Vec<String> {
        self.list.iter().map(|m| m.name.clone()).collect()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<ServedModel>> {
        self.list.iter()
    }
}
