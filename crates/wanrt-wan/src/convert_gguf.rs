//! `wanrt convert --transformer FILE.gguf --model DIR -o OUT`: a diffusers folder whose
//! transformer is the GGUF checkpoint dequantized (exactly as the runtime decodes it, so the
//! folder generates what `generate --transformer FILE.gguf` does), every other component copied
//! from the diffusers folder DIR (which also gives the transformer's `config.json`).
//!
//! Tensors are dequantized and written one at a time (the GGUF stays memory-mapped and each
//! tensor's pages are dropped once written): the model is never held whole, let alone twice.
//! The folder appears whole or not at all.

use crate::artifact::Manifest;
use crate::model::{gguf, Layout};
use crate::transformer::TransformerConfig;
use crate::{Error, Result};
use std::borrow::Cow;
use std::path::Path;
use wanrt_nn::weights::write_safetensors_with;
use wanrt_nn::DType;

/// `values` as little-endian `dtype` bytes (f32, or bf16 rounded to nearest even).
fn encode(values: &[f32], dtype: DType) -> Result<Vec<u8>> {
    match dtype {
        DType::F32 | DType::BF16 => Ok(wanrt_nn::dtype::f32_to_bytes(values, dtype).unwrap_or_default()),
        other => Err(Error::Msg(format!("cannot write a converted transformer as {other} (f32 or bf16)"))),
    }
}

/// Checks the inputs before anything is written.
fn check_inputs(model: &Path, file: &Path, out: &Path) -> Result<()> {
    if Layout::detect(model)? != Layout::Diffusers {
        return Err(Error::file(
            model,
            "is an original release folder: convert it first (wanrt convert --model DIR -o OUT), then add the GGUF \
             transformer to the diffusers folder",
        ));
    }
    if Manifest::read(model)?.is_some() {
        return Err(Error::file(model, "is an optimized artifact; give the source model's folder"));
    }
    if !model.join("transformer/config.json").is_file() {
        return Err(Error::file(model, "has no transformer/config.json (the GGUF file carries no Wan config)"));
    }
    if wanrt_io::is_inside(out, model) {
        return Err(Error::file(
            out,
            format!("is inside the model folder {} (choose a folder outside it)", model.display()),
        ));
    }
    if !file.is_file() {
        return Err(Error::file(file, "GGUF file not found"));
    }
    wanrt_io::check_output_dir(out).map_err(|e| Error::Msg(e.to_string()))
}

/// Writes `out` (see the module docs) with the transformer's tensors in `dtype` (F32 or BF16).
pub fn gguf_to_diffusers(
    model: &Path,
    file: &Path,
    out: &Path,
    dtype: DType,
    mut stage: impl FnMut(&str),
) -> Result<()> {
    check_inputs(model, file, out)?;
    encode(&[], dtype)?;
    let config_path = model.join("transformer/config.json");
    let config: TransformerConfig = crate::model::read_json(&config_path)?;
    config.validate()?;
    let ws = gguf::transformer(file)?;
    let fill = |tmp: &Path| -> Result<()> {
        let entries = std::fs::read_dir(model).map_err(|e| Error::file(model, format!("cannot list: {e}")))?;
        for e in entries {
            let e = e.map_err(|e| Error::file(model, format!("cannot list: {e}")))?;
            let (src, name) = (e.path(), e.file_name());
            if name == "transformer" {
                continue;
            }
            stage(&format!("copying {}", name.to_string_lossy()));
            let dst = tmp.join(&name);
            if src.is_dir() {
                wanrt_io::copy_tree(&src, &dst).map_err(|e| Error::Msg(e.to_string()))?;
            } else {
                std::fs::copy(&src, &dst).map_err(|e| Error::file(&src, format!("cannot copy: {e}")))?;
            }
        }
        stage("transformer (dequantizing)");
        let dir = tmp.join("transformer");
        std::fs::create_dir_all(&dir).map_err(|e| Error::file(&dir, format!("cannot create: {e}")))?;
        std::fs::copy(&config_path, dir.join("config.json"))
            .map_err(|e| Error::file(&config_path, format!("cannot copy: {e}")))?;
        let list = ws.names().map(|n| Ok((n.to_string(), dtype, ws.shape_of(n)?.to_vec()))).collect::<Result<_>>()?;
        write_safetensors_with(&dir.join("diffusion_pytorch_model.safetensors"), list, |name| {
            let raw = ws.raw(name)?;
            let values = raw.to_f32()?;
            raw.release_pages();
            encode(&values, dtype).map(Cow::Owned).map_err(|e| wanrt_nn::Error::Msg(e.to_string()))
        })?;
        Ok(())
    };
    wanrt_io::create_dir_atomic_with(out, fill, |e| Error::file(out, e.to_string()))
}
