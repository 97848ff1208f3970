//! Per-request LoRA adapters (`wanrt serve --lora-dir DIR`, `"loras": [{"name": "style",
//! "scale": 0.8}]`).
//!
//! A request names adapters by file stem in the one allow-listed folder: no paths, no `..`, the
//! file `DIR/NAME.safetensors` must exist; anything else is one 400 error. The worker runs them
//! as low-rank side paths on a copy of the loaded transformer that shares all its weights
//! ([`wanrt_wan::lora_adapter`]) but the norms the adapters change (the copy's own, original plus
//! delta): the shared model is never written, so concurrent requests with different adapters
//! cannot interfere. Jobs batch only with jobs of the same adapter set (it is part of the batch
//! key), and the last few adapted copies are kept (a small LRU: the copy holds just the low-rank
//! matrices and changed norms, but building it reads and checks the files).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use wanrt_wan::lora::{LoraSpec, Unmatched};
use wanrt_wan::transformer::WanTransformer;

use crate::models::ServedModel;
use crate::{Error, Result};

/// Adapters one request may stack.
pub const MAX_ADAPTERS: usize = 8;
/// Adapted transformers kept for reuse.
const CACHE_SIZE: usize = 4;

/// One adapter a job runs with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdapterRef {
    pub name: String,
    /// As the request gave it (f64, so the job echoes it unchanged); applied as f32.
    pub scale: f64,
}

/// The allow-listed folder and the policy for keys that match no layer.
#[derive(Debug, Clone)]
pub struct LoraDir {
    pub dir: PathBuf,
    pub unmatched: Unmatched,
}

impl LoraDir {
    fn file(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.safetensors"))
    }
}

/// Whether `name` may name a file in the folder: a plain file stem.
fn plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | ' ' | '+'))
}

/// The request's `loras` field checked against the folder (`Err`: the message of one 400).
pub fn parse(value: &Value, dir: Option<&LoraDir>) -> std::result::Result<Vec<AdapterRef>, String> {
    let Some(dir) = dir else {
        return Err("this server takes no per-request LoRAs (start it with --lora-dir DIR)".into());
    };
    let list = value.as_array().ok_or("loras must be a list of {\"name\": …, \"scale\": …} objects")?;
    if list.len() > MAX_ADAPTERS {
        return Err(format!("loras: {} adapters, at most {MAX_ADAPTERS} allowed", list.len()));
    }
    let mut out = Vec::with_capacity(list.len());
    for item in list {
        let obj = item.as_object().ok_or("loras must be a list of {\"name\": …, \"scale\": …} objects")?;
        if let Some(k) = obj.keys().find(|k| !matches!(k.as_str(), "name" | "scale")) {
            return Err(format!("loras: unknown field '{k}' (accepted: name, scale)"));
        }
        let name = obj.get("name").and_then(Value::as_str).ok_or("loras: each adapter needs a \"name\" string")?;
        if !plain_name(name) {
            return Err(format!(
                "loras: '{}' is not an adapter name (a file stem in the LoRA folder: letters, digits, - _ . + \
                 and spaces, no path separators or leading dot)",
                name.escape_debug()
            ));
        }
        if !dir.file(name).is_file() {
            return Err(format!("loras: no adapter named '{name}' (expected {name}.safetensors in the LoRA folder)"));
        }
        let scale = match obj.get("scale") {
            None => 1.0,
            Some(v) => match v.as_f64() {
                Some(s) if s.is_finite() && s.abs() <= 1e6 => s,
                _ => return Err(format!("loras: the scale of '{name}' must be a finite number")),
            },
        };
        out.push(AdapterRef { name: name.to_string(), scale });
    }
    Ok(out)
}

/// `name:scale,…` — the adapter set's part of a batch key.
pub fn key(loras: &[AdapterRef]) -> String {
    loras.iter().map(|l| format!("{}:{}", l.name, l.scale)).collect::<Vec<_>>().join(",")
}

/// The adapted transformers built so far, most recently used last.
#[derive(Default)]
pub struct AdapterCache {
    entries: Mutex<Vec<(String, Arc<WanTransformer>)>>,
}

impl AdapterCache {
    /// The transformer a job with `loras` runs on `model`: None for the model's own.
    pub fn transformer(
        &self,
        model: &ServedModel,
        dir: Option<&LoraDir>,
        loras: &[AdapterRef],
    ) -> Result<Option<Arc<WanTransformer>>> {
        if loras.is_empty() {
            return Ok(None);
        }
        let dir = dir.ok_or_else(|| Error::Input("the job names LoRAs but this worker has no --lora-dir".into()))?;
        let key = format!("{}|{}", model.name, key(loras));
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = entries.iter().position(|(k, _)| *k == key) {
            let hit = entries.remove(i);
            let t = hit.1.clone();
            entries.push(hit);
            return Ok(Some(t));
        }
        let specs: Vec<LoraSpec> =
            loras.iter().map(|l| LoraSpec { path: dir.file(&l.name), scale: l.scale as f32 }).collect();
        let (t, _) = wanrt_wan::lora_adapter::adapted(&model.model.transformer, &specs, dir.unmatched)
            .map_err(|e| Error::Input(format!("LoRA {}: {}", key_names(loras), strip_dir(&e.to_string(), &dir.dir))))?;
        let t = Arc::new(t);
        if entries.len() >= CACHE_SIZE {
            entries.remove(0);
        }
        entries.push((key, t.clone()));
        Ok(Some(t))
    }
}

fn key_names(loras: &[AdapterRef]) -> String {
    loras.iter().map(|l| l.name.as_str()).collect::<Vec<_>>().join(", ")
}

/// Error text without the server's folder path (clients see job errors).
fn strip_dir(msg: &str, dir: &Path) -> String {
    let d = dir.display().to_string();
    msg.replace(&format!("{d}/"), "").replace(&d, "<lora-dir>")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_plain_file_stems() {
        for ok in ["style", "motion-v2", "a_b.c", "x+y"] {
            assert!(plain_name(ok), "{ok}");
        }
        for bad in ["", "..", "../x", "a/b", "a\\b", ".hidden", "a\0b", "/etc/passwd"] {
            assert!(!plain_name(bad), "{bad}");
        }
    }
}
