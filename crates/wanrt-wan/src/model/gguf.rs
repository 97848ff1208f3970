//! GGUF transformer checkpoints (ComfyUI-GGUF, stable-diffusion.cpp): the DiT's weights from one
//! `.gguf` file, in the original Wan names (`blocks.0.self_attn.q.weight`, optionally under
//! `model.diffusion_model.`) or the diffusers names (`blocks.0.attn1.to_q.weight`), block-quantized
//! tensors kept as stored in the memory map and decoded inside each product.
//!
//! A GGUF file carries no Wan config: the config comes from the model folder it is used with
//! (`transformer/config.json`, or the original `config.json`), and every tensor's shape is
//! checked against it when the transformer loads.

use crate::names;
use crate::{Error, Result};
use std::path::{Path, PathBuf};
use wanrt_nn::WeightStore;

/// Prefix of the DiT's tensors in ComfyUI checkpoints.
const COMFY_PREFIX: &str = "model.diffusion_model.";

/// Whether `path` names a GGUF file (by its magic, not its extension).
pub fn is_gguf(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut magic)).is_ok() && magic == *b"GGUF"
}

/// The single `*.gguf` file in `dir`, if there is exactly one; an error when there are several.
pub fn find_in(dir: &Path) -> Result<Option<PathBuf>> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Ok(None) };
    let mut found: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf")))
        .collect();
    found.sort();
    match found.len() {
        0 | 1 => Ok(found.pop()),
        n => Err(Error::file(dir, format!("{n} .gguf files: keep one transformer checkpoint per folder"))),
    }
}

/// The transformer tensors of a GGUF file under diffusers names.
pub fn transformer(path: &Path) -> Result<WeightStore> {
    if !is_gguf(path) {
        return Err(Error::file(path, "not a GGUF file (no `GGUF` magic)"));
    }
    let ws = WeightStore::from_gguf(path)?;
    let stripped = |n: &str| n.strip_prefix(COMFY_PREFIX).unwrap_or(n).to_string();
    let diffusers_style = ws.names().any(|n| {
        let n = stripped(n);
        n.starts_with("condition_embedder.") || n == "scale_shift_table" || n.starts_with("proj_out.")
    });
    if diffusers_style {
        return Ok(ws.renamed(|n| Some(stripped(n))));
    }
    if let Some(unknown) = ws.names().find(|n| names::transformer(n).is_none()) {
        return Err(Error::file(
            path,
            format!("tensor `{unknown}` is neither an original Wan nor a diffusers transformer name"),
        ));
    }
    Ok(ws.renamed(names::transformer))
}
