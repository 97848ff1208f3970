//! CLIPScore as torchmetrics 1.9.0 (`torchmetrics/functional/multimodal/clip_score.py`):
//! each (frame, caption) pair scores `100·cos(image_embeds, text_embeds)`; the reported
//! value is `max(mean over pairs, 0)` (`CLIPScore.compute`). Overall = over all frames of
//! all items; per item = over that item's frames (each clamped after averaging).
//!
//! Text: the CLIP tokenizer (`tokenizer.json`) with special tokens, no padding needed
//! (causal attention), and torchmetrics' truncation: ids beyond 77 are cut off, the end
//! token included (the pooling rule in [`crate::clip`] then decides what is pooled).
//! Images: transformers 5.24's `CLIPImageProcessor` (torchvision backend): shortest side
//! resized to `size.shortest_edge` (`int(s·long/short)` on the other side; torchvision's
//! bicubic with antialias on uint8, i.e. torch's fixed-point separable a = −0.5 kernel,
//! reproduced pixel for pixel; checked against the processor on upscaled and downscaled
//! frames of both orientations), center crop at `int((H − h)/2)` (zero padding first where the
//! frame is smaller than the crop), `(x − 255·mean) / (255·std)`.
//!
//! Note: torchmetrics 1.9.0 with transformers 5.x fails as installed (`get_image_features`
//! now returns a ModelOutput); the fixtures use a shim that hands it `pooler_output`, the
//! projected embeddings it was written for.

use std::collections::HashMap;
use std::path::Path;

use indicatif::ProgressBar;
use serde::Serialize;
use serde_json::Value;
use wanrt_nn::HostTensor;

use crate::clip::Clip;
use crate::error::{EvalError, Result};
use crate::items::{frames_of, open_items, Frame};
use wanrt_wan::image::{ClipImageProcessor, RgbImage};

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
    processor: ClipImageProcessor,
}

impl ClipScorer {
    pub fn load(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(EvalError::input(dir, "not a folder (expected a Hugging Face CLIP folder)"));
        }
        let clip = Clip::load(dir)?;
        let tpath = dir.join("tokenizer.json");
        let bytes = wanrt_io::tokenizer_json::read_checked(&tpath)
            .map_err(|e| EvalError::Msg(format!("cannot load the CLIP tokenizer: {e}")))?;
        let tokenizer = tokenizers::Tokenizer::from_bytes(&bytes)
            .map_err(|e| EvalError::input(&tpath, format!("cannot load the CLIP tokenizer: {e}")))?;
        let processor = ClipImageProcessor::load(dir, clip.image_size)?;
        Ok(ClipScorer { clip, tokenizer, processor })
    }

    /// Token ids as torchmetrics feeds them (special tokens, cut at 77).
    pub fn token_ids(&self, caption: &str) -> Result<Vec<u32>> {
        // `tokenizers` panics on some inconsistent files; a panic here becomes an error.
        let enc = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.tokenizer.encode(caption, true)))
            .map_err(|_| {
                EvalError::Msg("tokenizing: the CLIP tokenizer file is inconsistent (tokenizers panicked)".into())
            })?
            .map_err(|e| EvalError::Msg(format!("tokenizing: {e}")))?;
        let mut ids = enc.get_ids().to_vec();
        ids.truncate(77);
        Ok(ids)
    }

    /// Unclamped `100·cos` of one (frame, caption) pair, given the caption's embedding.
    pub fn pair_score(&self, frame: &Frame, text: &[f32]) -> Result<f64> {
        Ok(self.pair_scores(std::slice::from_ref(frame), &[text])?[0])
    }

    /// Unclamped `100·cos` of (frame, caption embedding) pairs, the frames run as one
    /// batch through the image tower (scores do not depend on the batch).
    pub fn pair_scores(&self, frames: &[Frame], texts: &[&[f32]]) -> Result<Vec<f64>> {
        if frames.is_empty() {
            return Ok(Vec::new());
        }
        let px = frames
            .iter()
            .map(|f| Ok(self.processor.pixels(&RgbImage::new(f.height, f.width, f.data.clone())?)?))
            .collect::<Result<Vec<_>>>()?;
        let refs: Vec<&HostTensor> = px.iter().collect();
        let imgs = self.clip.image_features_batch(&HostTensor::cat(&refs, 0)?)?;
        let n = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
        Ok(imgs
            .iter()
            .zip(texts)
            .map(|(img, text)| {
                let (ni, nt) = (n(img), n(text));
                let dot: f32 = img.iter().zip(*text).map(|(a, b)| (a / ni) * (b / nt)).sum();
                100.0 * dot as f64
            })
            .collect())
    }
}

/// `wanrt eval clipscore`; `batch` frames per image-tower call (across items).
pub fn clipscore(
    scorer: &ClipScorer,
    videos: &Path,
    prompts: &Path,
    frames_per_video: Option<usize>,
    batch: usize,
    progress: &ProgressBar,
) -> Result<ClipScoreReport> {
    let captions = read_prompts(prompts)?;
    let set = open_items(videos, frames_per_video)?;
    progress.set_length(set.len() as u64);
    let batch = batch.max(1);
    let mut items: Vec<ClipItem> = Vec::new();
    let mut texts: Vec<Vec<f32>> = Vec::new();
    // frames waiting for the image tower, with the index of their item
    let mut pending: Vec<(usize, Frame)> = Vec::with_capacity(batch);
    let run = |pending: &mut Vec<(usize, Frame)>, items: &mut Vec<ClipItem>, texts: &[Vec<f32>]| -> Result<()> {
        let frames: Vec<Frame> = pending.iter().map(|(_, f)| f.clone()).collect();
        let t: Vec<&[f32]> = pending.iter().map(|(i, _)| texts[*i].as_slice()).collect();
        let scores = scorer.pair_scores(&frames, &t)?;
        for ((i, _), s) in pending.iter().zip(scores) {
            items[*i].per_frame.push(s);
        }
        pending.clear();
        Ok(())
    };
    for item in set.iter() {
        let item = item?;
        let caption = captions
            .get(&item.key)
            .or_else(|| captions.get(item.key.trim_end_matches('/')))
            .ok_or_else(|| EvalError::input(prompts, format!("no caption for item `{}`", item.key)))?;
        texts.push(scorer.clip.text_features(&scorer.token_ids(caption)?)?);
        let frames = frames_of(&item);
        let idx = items.len();
        items.push(ClipItem {
            file: item.key.clone(),
            caption: caption.clone(),
            frames: frames.len(),
            clip_score: 0.0,
            per_frame: Vec::with_capacity(frames.len()),
        });
        for f in frames {
            pending.push((idx, f));
            if pending.len() == batch {
                run(&mut pending, &mut items, &texts)?;
            }
        }
        progress.inc(1);
    }
    if !pending.is_empty() {
        run(&mut pending, &mut items, &texts)?;
    }
    let (mut total, mut count) = (0.0f64, 0usize);
    for it in &mut items {
        let s: f64 = it.per_frame.iter().sum();
        total += s;
        count += it.per_frame.len();
        it.clip_score = (s / it.per_frame.len().max(1) as f64).max(0.0);
    }
    Ok(ClipScoreReport { clip_score: (total / count.max(1) as f64).max(0.0), items })
}
