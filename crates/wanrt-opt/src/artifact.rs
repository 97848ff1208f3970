//! Writes an optimized artifact: a complete diffusers-layout model folder
//! (`wanrt generate --model ARTIFACT` needs nothing else) whose transformer
//! (and optionally text encoder) safetensors hold the quantized/pruned tensors, plus the
//! `wanrt-artifact.json` manifest. The folder appears whole or not at all.

use crate::{Error, Result};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use wanrt_nn::weights::RawTensor;
use wanrt_wan::artifact::{Manifest, MANIFEST_FILE};

const TRANSFORMER_FILE: &str = "diffusion_pytorch_model.safetensors";
const TEXT_ENCODER_FILE: &str = "model.safetensors";

/// SHA-256 of a component's weight files (sorted by name), hex.
pub fn weights_sha256(dir: &Path) -> Result<String> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| Error::Msg(format!("{}: cannot list: {e}", dir.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    files.sort();
    files_sha256(&files)
}

/// SHA-256 of the files' bytes one after the other, hex.
pub fn files_sha256(files: &[std::path::PathBuf]) -> Result<String> {
    let mut h = Sha256::new();
    for f in files {
        hash_file(&mut h, f)?;
    }
    Ok(hex(h))
}

/// SHA-256 of a whole model folder: every regular file below it (symlinks followed), each as its
/// path relative to `dir` then its contents, in sorted order — equal for two copies of a model,
/// different when any config, tokenizer or weight byte differs.
pub fn tree_sha256(dir: &Path) -> Result<String> {
    fn walk(dir: &Path, rel: &Path, out: &mut Vec<(String, std::path::PathBuf)>) -> Result<()> {
        let entries = std::fs::read_dir(dir).map_err(|e| Error::Msg(format!("{}: cannot list: {e}", dir.display())))?;
        for e in entries {
            let e = e.map_err(|e| Error::Msg(format!("{}: cannot list: {e}", dir.display())))?;
            let (path, rel) = (e.path(), rel.join(e.file_name()));
            if path.is_dir() {
                walk(&path, &rel, out)?;
            } else if path.is_file() {
                out.push((rel.to_string_lossy().replace('\\', "/"), path));
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    walk(dir, Path::new(""), &mut files)?;
    files.sort();
    let mut h = Sha256::new();
    for (rel, path) in files {
        h.update((rel.len() as u64).to_le_bytes());
        h.update(rel.as_bytes());
        let len = std::fs::metadata(&path).map_err(|e| Error::Msg(format!("{}: {e}", path.display())))?.len();
        h.update(len.to_le_bytes());
        hash_file(&mut h, &path)?;
    }
    Ok(hex(h))
}

fn hash_file(h: &mut Sha256, path: &Path) -> Result<()> {
    let mut file =
        std::fs::File::open(path).map_err(|e| Error::Msg(format!("{}: cannot open: {e}", path.display())))?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(|e| Error::Msg(format!("{}: cannot read: {e}", path.display())))?;
        if n == 0 {
            return Ok(());
        }
        h.update(&buf[..n]);
    }
}

fn hex(h: Sha256) -> String {
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|e| Error::Msg(e.to_string()))?;
    std::fs::write(path, text + "\n").map_err(|e| Error::Msg(format!("{}: {e}", path.display())))
}

fn write_safetensors(path: &Path, tensors: &BTreeMap<String, RawTensor>) -> Result<()> {
    wanrt_nn::weights::write_safetensors(path, tensors.iter().map(|(n, t)| (n.as_str(), t)))
        .map_err(|e| Error::Msg(e.to_string()))
}

/// Writes `out` from the source model folder `src` with each listed transformer component
/// (`transformer`, and a two-expert model's `transformer_2`) replaced by its tensors and config,
/// the text encoder's weights by `text_encoder` when given, plus the manifest.
pub fn write(
    src: &Path,
    out: &Path,
    transformers: &[(&str, &BTreeMap<String, RawTensor>, &serde_json::Value)],
    text_encoder: Option<&BTreeMap<String, RawTensor>>,
    manifest: &Manifest,
) -> Result<()> {
    let fill = |tmp: &Path| -> Result<()> {
        for entry in std::fs::read_dir(src).map_err(|e| Error::Msg(format!("{}: {e}", src.display())))? {
            let entry = entry.map_err(|e| Error::Msg(e.to_string()))?;
            let name = entry.file_name();
            let written = transformers.iter().any(|(component, ..)| name == *component);
            if written || name == MANIFEST_FILE || (name == "text_encoder" && text_encoder.is_some()) {
                continue;
            }
            let (from, to) = (entry.path(), tmp.join(&name));
            if from.is_dir() {
                wanrt_io::copy_tree(&from, &to).map_err(|e| Error::Msg(e.to_string()))?;
            } else {
                std::fs::copy(&from, &to).map_err(|e| Error::Msg(format!("{}: {e}", from.display())))?;
            }
        }
        for (component, tensors, config) in transformers {
            let tr = tmp.join(component);
            std::fs::create_dir_all(&tr).map_err(|e| Error::Msg(format!("{}: {e}", tr.display())))?;
            write_json(&tr.join("config.json"), config)?;
            write_safetensors(&tr.join(TRANSFORMER_FILE), tensors)?;
        }
        if let Some(te) = text_encoder {
            // Configs and other small files as in the source; the weights (single or sharded) replaced.
            let (te_src, te_out) = (src.join("text_encoder"), tmp.join("text_encoder"));
            std::fs::create_dir_all(&te_out).map_err(|e| Error::Msg(format!("{}: {e}", te_out.display())))?;
            for entry in std::fs::read_dir(&te_src).map_err(|e| Error::Msg(format!("{}: {e}", te_src.display())))? {
                let from = entry.map_err(|e| Error::Msg(e.to_string()))?.path();
                let name = from.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                if from.is_file() && !name.ends_with(".safetensors") && !name.ends_with(".safetensors.index.json") {
                    std::fs::copy(&from, te_out.join(&name))
                        .map_err(|e| Error::Msg(format!("{}: {e}", from.display())))?;
                }
            }
            write_safetensors(&te_out.join(TEXT_ENCODER_FILE), te)?;
        }
        write_json(&tmp.join(MANIFEST_FILE), manifest)
    };
    wanrt_io::create_dir_atomic_with(out, fill, |e| Error::Msg(e.to_string()))
}
