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
    pub fn pixels(&self, f: &Frame) -> Result<HostTensor> {
        let (h, w) = (f.height, f.width);
        let s = self.shortest_edge;
        let (nh, nw) = if w <= h {
            ((s as f64 * h as f64 / w as f64) as usize, s)
        } else {
            (s, (s as f64 * w as f64 / h as f64) as usize)
        };
        let img = if (nh, nw) == (h, w) { f.data.clone() } else { resize_bicubic_aa(&f.data, h, w, nh, nw) };
        // center crop as transformers' TorchvisionBackend.center_crop: zero-pad a side that
        // is smaller than the crop ((c − n) // 2 before), then offset int((n − c) / 2)
        let (ch, cw) = self.crop;
        let top = if nh >= ch { ((nh - ch) / 2) as isize } else { -(((ch - nh) / 2) as isize) };
        let left = if nw >= cw { ((nw - cw) / 2) as isize } else { -(((cw - nw) / 2) as isize) };
        let mut out = vec![0.0f32; 3 * ch * cw];
        for c in 0..3 {
            let m = (self.mean[c] as f64 * 255.0) as f32;
            let sd = (self.std[c] as f64 * 255.0) as f32;
            for y in 0..ch {
                let sy = top + y as isize;
                for x in 0..cw {
                    let sx = left + x as isize;
                    let inside = sy >= 0 && sx >= 0 && (sy as usize) < nh && (sx as usize) < nw;
                    let v = if inside { img[(sy as usize * nw + sx as usize) * 3 + c] as f32 } else { 0.0 };
                    out[(c * ch + y) * cw + x] = (v - m) / sd;
                }
            }
        }
        Ok(HostTensor::new([1, 3, ch, cw], out)?)
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

/// Antialiased bicubic weights (PIL's `precompute_coeffs`), then as torch's uint8 kernel
/// (`_compute_index_ranges_int16_weights`, aten/src/ATen/native/cpu/UpSampleKernel.cpp)
/// turned into int16 fixed point with the largest precision (≤ 22 bits) that keeps the
/// largest weight below 2¹⁵. Per output index: the first input index and the weights;
/// plus the precision.
fn aa_coeffs(inp: usize, out: usize) -> (Vec<(usize, Vec<i32>)>, u32) {
    let scale = inp as f64 / out as f64;
    let fs = scale.max(1.0);
    let support = 2.0 * fs;
    let float: Vec<(usize, Vec<f64>)> = (0..out)
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
        .collect();
    let wmax = float.iter().flat_map(|(_, w)| w.iter().copied()).fold(0.0f64, f64::max);
    let mut prec = 0u32;
    while prec < 22 && ((0.5 + wmax * (1u64 << (prec + 1)) as f64) as i64) < (1 << 15) {
        prec += 1;
    }
    let one = (1u64 << prec) as f64;
    let ints = float
        .into_iter()
        .map(|(x0, w)| {
            (x0, w.iter().map(|&v| if v < 0.0 { (-0.5 + v * one) as i32 } else { (0.5 + v * one) as i32 }).collect())
        })
        .collect();
    (ints, prec)
}

/// `[H, W, 3]` uint8 → `[nh, nw, 3]`: torch's antialiased bicubic on uint8
/// (`F.interpolate(..., mode="bicubic", antialias=True)`, what torchvision's `resize` runs;
/// Pillow-SIMD's fixed-point kernel): horizontal pass then vertical, each accumulating in
/// integers from `1 << (precision − 1)`, shifting and saturating to uint8.
fn resize_bicubic_aa(src: &[u8], h: usize, w: usize, nh: usize, nw: usize) -> Vec<u8> {
    let (cw, pw) = aa_coeffs(w, nw);
    let (chh, ph) = aa_coeffs(h, nh);
    let sat = |acc: i64, p: u32| (acc >> p).clamp(0, 255) as u8;
    let mut tmp = vec![0u8; h * nw * 3];
    for y in 0..h {
        for (x, (x0, wts)) in cw.iter().enumerate() {
            for c in 0..3 {
                let mut acc: i64 = 1 << (pw.max(1) - 1);
                for (k, &wt) in wts.iter().enumerate() {
                    acc += wt as i64 * src[(y * w + x0 + k) * 3 + c] as i64;
                }
                tmp[(y * nw + x) * 3 + c] = sat(acc, pw);
            }
        }
    }
    let mut out = vec![0u8; nh * nw * 3];
    for (y, (y0, wts)) in chh.iter().enumerate() {
        for x in 0..nw {
            for c in 0..3 {
                let mut acc: i64 = 1 << (ph.max(1) - 1);
                for (k, &wt) in wts.iter().enumerate() {
                    acc += wt as i64 * tmp[((y0 + k) * nw + x) * 3 + c] as i64;
                }
                out[(y * nw + x) * 3 + c] = sat(acc, ph);
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
        let bytes = wanrt_io::tokenizer_json::read_checked(&tpath)
            .map_err(|e| EvalError::Msg(format!("cannot load the CLIP tokenizer: {e}")))?;
        let tokenizer = tokenizers::Tokenizer::from_bytes(&bytes)
            .map_err(|e| EvalError::input(&tpath, format!("cannot load the CLIP tokenizer: {e}")))?;
        let processor = ImageProcessor::load(dir, clip.image_size)?;
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
        let px = frames.iter().map(|f| self.processor.pixels(f)).collect::<Result<Vec<_>>>()?;
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
