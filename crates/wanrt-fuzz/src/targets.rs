//! What each format's mutants are fed to: wanrt's own readers, through the same path-based
//! entry points the commands use, down to the decoded values (so lazy paths are exercised).

use std::path::{Path, PathBuf};

use wanrt_nn::weights::WeightStore;
use wanrt_nn::DType;
use wanrt_wan::model::{LoadOptions, WanModel};
use wanrt_wan::text::PromptTokenizer;

use crate::Format;

/// Scratch folders for the cases (a model folder for configs, a tokenizer folder).
pub struct Ctx {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    model: PathBuf,
    tokenizer: PathBuf,
    spiece: PathBuf,
}

impl Ctx {
    /// `model` is a small diffusers model folder whose JSON files the config cases replace;
    /// `spiece_config` holds the tokenizer configs a sentencepiece model is loaded with.
    pub fn new(model: &Path, spiece_config: &Path) -> std::io::Result<Ctx> {
        let tmp = tempfile::Builder::new().prefix("wanrt-fuzz-").tempdir()?;
        let root = tmp.path().to_path_buf();
        let copy = root.join("model");
        link_tree(model, &copy)?;
        let tokenizer = root.join("tokenizer");
        std::fs::create_dir(&tokenizer)?;
        std::fs::write(tokenizer.join("tokenizer_config.json"), br#"{"model_max_length": 512}"#)?;
        let spiece = root.join("spiece");
        link_tree(spiece_config, &spiece)?;
        Ok(Ctx { _tmp: tmp, root, model: copy, tokenizer, spiece })
    }

    /// Where a case of `format` is written (printed at start: after an abort, it holds the input).
    pub fn case_path(&self, format: Format, seed_name: &str) -> PathBuf {
        match format {
            Format::Tokenizer => self.tokenizer.join("tokenizer.json"),
            Format::Spiece => self.spiece.join("spiece.model"),
            Format::Config => self.model.join(config_place(seed_name)),
            f => self.root.join(format!("case.{}", f.name())),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Puts the model folder's file back after a config case.
    pub fn restore(&self, format: Format, seed_name: &str, original: &[u8]) -> std::io::Result<()> {
        if format == Format::Config {
            std::fs::write(self.model.join(config_place(seed_name)), original)?;
        }
        Ok(())
    }

    /// Runs the reader of `format` on the case at `path`.
    pub fn run(&self, format: Format, path: &Path) -> Result<(), String> {
        let s = |e: &dyn std::fmt::Display| e.to_string();
        match format {
            Format::Safetensors => {
                let mut ws = WeightStore::new("fuzz");
                ws.add_safetensors(path).map_err(|e| s(&e))?;
                let names: Vec<String> = ws.names().map(str::to_string).collect();
                for n in names {
                    ws.get(&n).map_err(|e| s(&e))?;
                }
            }
            Format::Pth => {
                for (_, t) in wanrt_io::read_pth(path).map_err(|e| s(&e))? {
                    let _ = t.to_f32_vec();
                }
            }
            Format::Npy => {
                let a = wanrt_io::read_npy(path).map_err(|e| s(&e))?;
                let _ = a.to_f64_vec();
                // As `eval` would take it: a (F, H, W, 3) array is a video.
                if a.shape().len() == 4 && a.shape()[3] == 3 {
                    wanrt_media::read_npy_video(path).map_err(|e| s(&e))?;
                }
            }
            Format::Npz => {
                for (_, a) in wanrt_io::read_npz(path).map_err(|e| s(&e))? {
                    let _ = a.to_f64_vec();
                }
            }
            Format::Gif => drop(wanrt_media::read_gif(path).map_err(|e| s(&e))?),
            Format::Png => drop(wanrt_media::read_image(path).map_err(|e| s(&e))?),
            Format::Mp4 => drop(wanrt_media::read_mp4(path).map_err(|e| s(&e))?),
            Format::Tokenizer | Format::Spiece => {
                let dir = if format == Format::Spiece { &self.spiece } else { &self.tokenizer };
                let t = PromptTokenizer::from_dir(dir).map_err(|e| s(&e))?;
                let prompt = "A red fox runs through deep snow, cinematic lighting, 4k".to_string();
                t.count_tokens(&prompt).map_err(|e| s(&e))?;
                t.encode(&[prompt, String::new()], 32).map_err(|e| s(&e))?;
            }
            Format::Gguf => {
                // Every tensor dequantized, as a GGUF transformer's layers read them.
                let ws = WeightStore::from_gguf(path).map_err(|e| s(&e))?;
                let names: Vec<String> = ws.names().map(str::to_string).collect();
                for n in names {
                    ws.get(&n).map_err(|e| s(&e))?;
                }
            }
            Format::Config => {
                let opts = LoadOptions::cpu(DType::F32, wanrt_nn::backend::Prepack::Auto);
                drop(WanModel::load_with(&self.model, opts, |_| {}).map_err(|e| s(&e))?);
            }
        }
        Ok(())
    }
}

/// A config seed's place in the model folder: `transformer.config.json` →
/// `transformer/config.json`, `model_index.json` → `model_index.json`.
fn config_place(seed_name: &str) -> PathBuf {
    match seed_name.split_once('.') {
        Some((dir, rest)) if rest.contains('.') => Path::new(dir).join(rest),
        _ => PathBuf::from(seed_name),
    }
}

/// Copies the JSON files of `from` and links everything else (weights stay shared).
fn link_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let (src, dst) = (e.path(), to.join(e.file_name()));
        if e.file_type()?.is_dir() {
            link_tree(&src, &dst)?;
        } else if src.extension().is_some_and(|x| x == "json") {
            std::fs::copy(&src, &dst)?;
        } else {
            #[cfg(unix)]
            std::os::unix::fs::symlink(src.canonicalize()?, &dst)?;
            #[cfg(not(unix))]
            std::fs::copy(&src, &dst)?;
        }
    }
    Ok(())
}
