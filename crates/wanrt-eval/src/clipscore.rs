//! CLIPScore as torchmetrics 1.9.0 (`torchmetrics/functional/multimodal/clip_score.py`):
//! each (frame, caption) pair scores `100·cos(image_embeds, text_embeds)`; the reported
//! value is `max(mean over pairs, 0)` (`CLIPScore.compute`). Overall = over all frames of
//! all items; per item = over that item's frames (each clamped after averaging).
//!
//! Text: the CLIP tokenizer (`tokenizer.json`) with special tokens, no padding needed
//! (causal attention), and torchmetrics' truncation: ids beyond 77 are cut off, the end
//! token included (the pooling rule in [`crate::clip`] then decides what is pooled).
//! Images: transformers 5.24's `CLIPImageProcessor` (torchvision backend): shortest side
//! resized to `size.shortest_edge` (bicubic, antialiased — here a separable a = −0.5
//! kernel with rounding to uint8 after each pass like PIL; verified only for frames that
//! need no resize), center crop (`round((H − h)/2)`), `(x − 255·mean) / (255·std)`.
//!
//! Note: torchmetrics 1.9.0 with transformers 5.x fails as installed (`get_image_features`
//! now returns a ModelOutput); the fixtures use a shim that hands it `pooler_output`, the
//! projected embeddings it was written for.

use std::collections::HashMap;
use std::path::Path;

use indicatif::ProgressBar;
use serde::Serialize;
use serde_json::Value;
use wanrt_nn::Tensor;

use crate::clip::Clip;
use crate::error::{EvalError, Result};
use crate::items::{frames_of, open_items, Frame};

/// One item of the `clipscore` JSON object.
#[derive(Clone, Debug, Serialize)]
pub struct ClipItem {
    pub file: String,
    pub caption: String,
    pub frames: usize,
    pub clip_score: f64,
    /// Unclamped `100·cos` of each frame.
    pub per_frame: Vec<f64>,
}

/// The `clipscore` JSON object of the CLI contract.
#[derive(Clone, Debug, Serialize)]
pub struct ClipScoreReport {
    pub clip_score: f64,
    pub items: Vec<ClipItem>,
}

/// CLIPImageProcessor settings.
pub struct ImageProcessor {
    shortest_edge: usize,
    crop: (usize, usize),
    mean: [f32; 3],
    std: [f32; 3],
}

impl ImageProcessor {
    #[allow(clippy::excessive_precision)] // OpenAI's constants, as written in their configs
    /// From `preprocessor_config.json` (OpenAI CLIP defaults when absent).
    pub fn load(dir: &Path, image_size: usize) -> Result<Self> {
        let mut p = ImageProcessor {
            shortest_edge: image_size,
            crop: (image_size, image_size),
            mean: [0.481_454_66, 0.457_827_5, 0.408_210_73],
            std: [0.268_629_54, 0.261_302_58, 0.275_777_11],
        };
        let path = dir.join("preprocessor_config.json");
        if let Ok(text) = std::fs::read_to_string(&path) {
            let v: Value =
                serde_json::from_str(&text).map_err(|e| EvalError::input(&path, format!("invalid JSON: {e}")))?;
            if let Some(s) = v.pointer("/size/shortest_edge").and_then(Value::as_u64) {
                p.shortest_edge = s as usize;
            }
            if let (Some(h), Some(w)) = (
                v.pointer("/crop_size/height").and_then(Value::as_u64),
                v.pointer("/crop_size/width").and_then(Value::as_u64),
            ) {
                p.crop = (h as usize, w as usize);
            }
            let arr3 = |k: &str| -> Option<[f32; 3]> {
                let a = v.get(k)?.as_array()?;
                Some([a.first()?.as_f64()? as f32, a.get(1)?.as_f64()? as f32, a.get(2)?.as_f64()? as f32])
            };
            if let Some(m) = arr3("image_mean") {
                p.mean = m;
            }
            if let Some(s) = arr3("image_std") {
                p.std = s;
            }
        }
        Ok(p)
    }

    /// A frame → `pixel_values: [1, 3, crop_h, crop_w]`.
    pub fn pixels(&self, f: &Frame) -> Result<Tensor> {
        let (h, w) = (f.height, f.width);
        let s = self.shortest_edge;
        let (nh, nw) = if w <= h {
            ((s as f64 * h as f64 / w as f64) as usize, s)
        } else {
            (s, (s as f64 * w as f64 / h as f64) as usize)
        };
        let img = if (nh, nw) == (h, w) { f.data.clone() } else { resize_bicubic_aa(&f.data, h, w, nh, nw) };
        let (ch, cw) = self.crop;
        if nh < ch || nw < cw {
            return Err(EvalError::mismatch("resized frame vs crop", format!("≥ {ch}x{cw}"), format!("{nh}x{nw}")));
        }
        let top = ((nh - ch) as f64 / 2.0).round() as usize;
        let left = ((nw - cw) as f64 / 2.0).round() as usize;
        let mut out = vec![0.0f32; 3 * ch * cw];
        for c in 0..3 {
            let m = (self.mean[c] as f64 * 255.0) as f32;
            let sd = (self.std[c] as f64 * 255.0) as f32;
            for y in 0..ch {
                for x in 0..cw {
                    let v = img[((top + y) * nw + left + x) * 3 + c] as f32;
                    out[(c * ch + y) * cw + x] = (v - m) / sd;
                }
            }
        }
        Ok(Tensor::new([1, 3, ch, cw], out)?)
    }
}

fn cubic(x: f64) -> f64 {
    let a = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * a
    } else {
        0.0
    }
}

/// Antialiased bicubic weights (PIL's `precompute_coeffs`): per output index, the first
/// input index and normalized weights.
fn aa_coeffs(inp: usize, out: usize) -> Vec<(usize, Vec<f64>)> {
    let scale = inp as f64 / out as f64;
    let fs = scale.max(1.0);
    let support = 2.0 * fs;
    (0..out)
        .map(|i| {
            let center = (i as f64 + 0.5) * scale;
            let xmin = ((center - support + 0.5).floor().max(0.0)) as usize;
            let xmax = ((center + support + 0.5).floor() as usize).min(inp);
            let mut w: Vec<f64> = (xmin..xmax).map(|x| cubic((x as f64 - center + 0.5) / fs)).collect();
            let s: f64 = w.iter().sum();
            if s != 0.0 {
                w.iter_mut().for_each(|v| *v /= s);
            }
            (xmin, w)
        })
        .collect()
}

/// `[H, W, 3]` uint8 → `[nh, nw, 3]`, horizontal pass then vertical, rounding to uint8.
fn resize_bicubic_aa(src: &[u8], h: usize, w: usize, nh: usize, nw: usize) -> Vec<u8> {
    let cw = aa_coeffs(w, nw);
    let chh = aa_coeffs(h, nh);
    let clamp = |v: f64| v.round().clamp(0.0, 255.0) as u8;
    let mut tmp = vec![0u8; h * nw * 3];
    for y in 0..h {
        for (x, (x0, wts)) in cw.iter().enumerate() {
            for c in 0..3 {
                let s: f64 = wts.iter().enumerate().map(|(k, wt)| wt * src[(y * w + x0 + k) * 3 + c] as f64).sum();
                tmp[(y * nw + x) * 3 + c] = clamp(s);
            }
        }
    }
    let mut out = vec![0u8; nh * nw * 3];
    for (y, (y0, wts)) in chh.iter().enumerate() {
        for x in 0..nw {
            for c in 0..3 {
                let s: f64 = wts.iter().enumerate().map(|(k, wt)| wt * tmp[((y0 + k) * nw + x) * 3 + c] as f64).sum();
                out[(y * nw + x) * 3 + c] = clamp(s);
            }
        }
    }
    out
}

/// Captions from JSON `{key: caption}` or CSV with columns `file,caption`.
pub fn read_prompts(path: &Path) -> Result<HashMap<String, String>> {
    let text = std::fs::read_to_string(path).map_err(|e| EvalError::input(path, e.to_string()))?;
    if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv")) {
        let mut map = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            if i == 0 && line.trim_start().starts_with("file") {
                continue;
            }
            if line.trim().is_empty() {
                continue;
            }
            let Some((k, c)) = line.split_once(',') else {
                return Err(EvalError::input(path, format!("line {}: expected `file,caption`", i + 1)));
            };
            let c = c.trim();
            let c = c
                .strip_prefix('"')
                .and_then(|c| c.strip_suffix('"'))
                .map(|c| c.replace("\"\"", "\""))
                .unwrap_or(c.to_string());
            map.insert(k.trim().to_string(), c);
        }
        return Ok(map);
    }
    let v: Value = serde_json::from_str(&text).map_err(|e| EvalError::input(path, format!("invalid JSON: {e}")))?;
    let obj = v.as_object().ok_or_else(|| EvalError::input(path, "expected a JSON object {file: caption}"))?;
    obj.iter()
        .map(|(k, v)| {
            v.as_str()
                .map(|c| (k.clone(), c.to_string()))
                .ok_or_else(|| EvalError::input(path, format!("caption of `{k}` is not a string")))
        })
        .collect()
}

/// A CLIP folder ready to score: model, tokenizer, image processor.
pub struct ClipScorer {
    pub clip: Clip,
    tokenizer: tokenizers::Tokenizer,
    processor: ImageProcessor,
}

impl ClipScorer {
    pub fn load(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(EvalError::input(dir, "not a folder (expected a Hugging Face CLIP folder)"));
        }
        let clip = Clip::load(dir)?;
        let tpath = dir.join("tokenizer.json");
        let tokenizer = tokenizers::Tokenizer::from_file(&tpath)
            .map_err(|e| EvalError::input(&tpath, format!("cannot load the CLIP tokenizer: {e}")))?;
        let processor = ImageProcessor::load(dir, clip.image_size)?;
        Ok(ClipScorer { clip, tokenizer, processor })
    }

    /// Token ids as torchmetrics feeds them (special tokens, cut at 77).
    pub fn token_ids(&self, caption: &str) -> Result<Vec<u32>> {
        let enc = self.tokenizer.encode(caption, true).map_err(|e| EvalError::Msg(format!("tokenizing: {e}")))?;
        let mut ids = enc.get_ids().to_vec();
        ids.truncate(77);
        Ok(ids)
    }

    /// Unclamped `100·cos` of one (frame, caption) pair, given the caption's embedding.
    pub fn pair_score(&self, frame: &Frame, text: &[f32]) -> Result<f64> {
        let img = self.clip.image_features(&self.processor.pixels(frame)?)?;
        let n = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
        let (ni, nt) = (n(&img), n(text));
        let dot: f32 = img.iter().zip(text).map(|(a, b)| (a / ni) * (b / nt)).sum();
        Ok(100.0 * dot as f64)
    }
}

/// `wanrt eval clipscore`.
pub fn clipscore(
    scorer: &ClipScorer,
    videos: &Path,
    prompts: &Path,
    frames_per_video: Option<usize>,
    progress: &ProgressBar,
) -> Result<ClipScoreReport> {
    let captions = read_prompts(prompts)?;
    let set = open_items(videos, frames_per_video)?;
    progress.set_length(set.len() as u64);
    let mut items = Vec::new();
    let (mut total, mut count) = (0.0f64, 0usize);
    for item in set.iter() {
        let item = item?;
        let caption = captions
            .get(&item.key)
            .or_else(|| captions.get(item.key.trim_end_matches('/')))
            .ok_or_else(|| EvalError::input(prompts, format!("no caption for item `{}`", item.key)))?;
        let text = scorer.clip.text_features(&scorer.token_ids(caption)?)?;
        let per_frame: Vec<f64> =
            frames_of(&item).iter().map(|f| scorer.pair_score(f, &text)).collect::<Result<_>>()?;
        total += per_frame.iter().sum::<f64>();
        count += per_frame.len();
        let mean = per_frame.iter().sum::<f64>() / per_frame.len().max(1) as f64;
        items.push(ClipItem {
            file: item.key.clone(),
            caption: caption.clone(),
            frames: per_frame.len(),
            clip_score: mean.max(0.0),
            per_frame,
        });
        progress.inc(1);
    }
    Ok(ClipScoreReport { clip_score: (total / count.max(1) as f64).max(0.0), items })
}
