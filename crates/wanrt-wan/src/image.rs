//! Input images: decoded RGB pictures, and what the image-conditioned pipelines make of them —
//! the CLIP image processor's pixels and the VAE's `[-1, 1]` frames.
//!
//! The CLIP side is transformers 5.24's `CLIPImageProcessor` (torchvision backend): shortest side
//! resized to `size.shortest_edge` (`int(s·long/short)` on the other side; torchvision's bicubic
//! with antialias on uint8, i.e. torch's fixed-point separable a = −0.5 kernel, reproduced pixel
//! for pixel; checked against the processor on upscaled and downscaled frames of both
//! orientations), center crop at `int((H − h)/2)` (zero padding first where the frame is smaller
//! than the crop), `(x − 255·mean) / (255·std)`. The VAE side is diffusers' `VideoProcessor`:
//! the image resized to the video's size with Pillow's Lanczos ([`RgbImage::resized`]), then
//! `x / 255 · 2 − 1`.

use crate::{Error, Result};
use serde_json::Value;
use std::path::Path;
use wanrt_nn::HostTensor;

/// An 8-bit RGB picture, rows top to bottom, `[height, width, 3]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage {
    pub height: usize,
    pub width: usize,
    pub data: Vec<u8>,
}

impl RgbImage {
    pub fn new(height: usize, width: usize, data: Vec<u8>) -> Result<Self> {
        if height == 0 || width == 0 || height.checked_mul(width).and_then(|n| n.checked_mul(3)) != Some(data.len()) {
            return Err(Error::Shape(format!(
                "an RGB image of {height}×{width} needs {} bytes, found {}",
                height.saturating_mul(width).saturating_mul(3),
                data.len()
            )));
        }
        Ok(RgbImage { height, width, data })
    }

    /// `[1, 3, H, W]` in [-1, 1]: diffusers' `VideoProcessor.preprocess` of an image already of
    /// the requested size (`/ 255`, then `2x − 1`).
    pub fn to_vae_frame(&self) -> Result<HostTensor> {
        Ok(HostTensor::new([1, 3, self.height, self.width], self.vae_planes())?)
    }

    /// The three `[H, W]` planes of [`Self::to_vae_frame`], one after the other.
    pub fn vae_planes(&self) -> Vec<f32> {
        let plane = self.height * self.width;
        let mut out = vec![0f32; 3 * plane];
        for (i, px) in self.data.chunks_exact(3).enumerate() {
            for c in 0..3 {
                out[c * plane + i] = 2.0 * (px[c] as f32 / 255.0) - 1.0;
            }
        }
        out
    }

    /// This image at `height`×`width` (itself when already that size): diffusers'
    /// `VaeImageProcessor.resize` with its default `resize_mode="default"` and `resample="lanczos"`,
    /// i.e. Pillow's `Image.resize((width, height), LANCZOS)` — a plain resize to the video's
    /// size that stretches a different aspect ratio, no crop (what the Wan I2V pipelines' VAE
    /// input gets; the CLIP encoder sees the original image).
    pub fn resized(&self, height: usize, width: usize) -> Result<RgbImage> {
        if (height, width) == (self.height, self.width) {
            return Ok(self.clone());
        }
        let data = resize_aa(&self.data, (self.height, self.width), (height, width), LANCZOS_PILLOW);
        RgbImage::new(height, width, data)
    }
}

/// CLIPImageProcessor settings.
#[derive(Debug, Clone)]
pub struct ClipImageProcessor {
    shortest_edge: usize,
    crop: (usize, usize),
    mean: [f32; 3],
    std: [f32; 3],
}

impl ClipImageProcessor {
    /// transformers' `CLIPImageProcessor()` defaults for a tower of `image_size` (OpenAI CLIP's
    /// and laion ViT-H/14's settings): shortest edge and center crop at `image_size`.
    #[allow(clippy::excessive_precision)] // OpenAI's constants, as written in their configs
    pub fn openai(image_size: usize) -> Self {
        ClipImageProcessor {
            shortest_edge: image_size,
            crop: (image_size, image_size),
            mean: [0.481_454_66, 0.457_827_5, 0.408_210_73],
            std: [0.268_629_54, 0.261_302_58, 0.275_777_11],
        }
    }

    /// `preprocessor_config.json` in the diffusers layout (transformers' defaults when absent),
    /// with every key transformers' `CLIPImageProcessor` reads here.
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "image_processor_type": "CLIPImageProcessor",
            "do_resize": true,
            "size": {"shortest_edge": self.shortest_edge},
            "resample": 3,
            "do_center_crop": true,
            "crop_size": {"height": self.crop.0, "width": self.crop.1},
            "do_rescale": true,
            "rescale_factor": 1.0 / 255.0,
            "do_normalize": true,
            "image_mean": self.mean,
            "image_std": self.std,
            "do_convert_rgb": true,
        })
    }

    /// From `preprocessor_config.json` (OpenAI CLIP defaults when absent).
    pub fn load(dir: &Path, image_size: usize) -> Result<Self> {
        let mut p = ClipImageProcessor::openai(image_size);
        let path = dir.join("preprocessor_config.json");
        if let Ok(text) = std::fs::read_to_string(&path) {
            let v: Value = serde_json::from_str(&text).map_err(|e| Error::file(&path, format!("invalid JSON: {e}")))?;
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

    /// An image → `pixel_values: [1, 3, crop_h, crop_w]`.
    pub fn pixels(&self, f: &RgbImage) -> Result<HostTensor> {
        let (h, w) = (f.height, f.width);
        let s = self.shortest_edge;
        let (nh, nw) = if w <= h {
            ((s as f64 * h as f64 / w as f64) as usize, s)
        } else {
            (s, (s as f64 * w as f64 / h as f64) as usize)
        };
        let img = if (nh, nw) == (h, w) { f.data.clone() } else { resize_aa(&f.data, (h, w), (nh, nw), BICUBIC_TORCH) };
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

/// A separable resampling filter: its kernel, its support at scale 1, and how its float weights
/// become fixed point.
#[derive(Clone, Copy)]
struct Filter {
    kernel: fn(f64) -> f64,
    support: f64,
    precision: Precision,
}

#[derive(Clone, Copy)]
enum Precision {
    /// torch's uint8 kernel (`_compute_index_ranges_int16_weights`,
    /// aten/src/ATen/native/cpu/UpSampleKernel.cpp): the largest precision (≤ 22 bits) that keeps
    /// the largest weight below 2¹⁵ (int16 weights).
    Torch,
    /// Pillow's `normalize_coeffs_8bpc` (libImaging/Resample.c): always `PRECISION_BITS` = 22.
    Pillow,
}

/// torchvision's antialiased bicubic (a = −0.5), what the CLIP image processor runs.
const BICUBIC_TORCH: Filter = Filter { kernel: cubic, support: 2.0, precision: Precision::Torch };
/// Pillow's `Image.LANCZOS` (a = 3), what diffusers' `VaeImageProcessor.resize` runs.
const LANCZOS_PILLOW: Filter = Filter { kernel: lanczos, support: 3.0, precision: Precision::Pillow };

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

fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        1.0
    } else {
        let x = x * std::f64::consts::PI;
        x.sin() / x
    }
}

/// Pillow's `lanczos_filter`: the sinc windowed by a 3× wider sinc, on [−3, 3).
fn lanczos(x: f64) -> f64 {
    if (-3.0..3.0).contains(&x) {
        sinc(x) * sinc(x / 3.0)
    } else {
        0.0
    }
}

/// Antialiased weights (Pillow's `precompute_coeffs`, which torch's antialiased kernels copy),
/// then in fixed point per the filter's [`Precision`]. Per output index: the first input index
/// and the weights; plus the precision.
fn aa_coeffs(inp: usize, out: usize, filter: Filter) -> (Vec<(usize, Vec<i32>)>, u32) {
    let scale = inp as f64 / out as f64;
    let fs = scale.max(1.0);
    let support = filter.support * fs;
    // Both Pillow and torch scale the kernel's argument by the reciprocal (not a division).
    let inv = 1.0 / fs;
    let float: Vec<(usize, Vec<f64>)> = (0..out)
        .map(|i| {
            let center = (i as f64 + 0.5) * scale;
            let xmin = ((center - support + 0.5).floor().max(0.0)) as usize;
            let xmax = ((center + support + 0.5).floor() as usize).min(inp);
            let mut w: Vec<f64> = (xmin..xmax).map(|x| (filter.kernel)((x as f64 - center + 0.5) * inv)).collect();
            let s: f64 = w.iter().sum();
            if s != 0.0 {
                w.iter_mut().for_each(|v| *v /= s);
            }
            (xmin, w)
        })
        .collect();
    let prec = match filter.precision {
        Precision::Pillow => 22,
        Precision::Torch => {
            let wmax = float.iter().flat_map(|(_, w)| w.iter().copied()).fold(0.0f64, f64::max);
            let mut prec = 0u32;
            while prec < 22 && ((0.5 + wmax * (1u64 << (prec + 1)) as f64) as i64) < (1 << 15) {
                prec += 1;
            }
            prec
        }
    };
    let one = (1u64 << prec) as f64;
    let ints = float
        .into_iter()
        .map(|(x0, w)| {
            (x0, w.iter().map(|&v| if v < 0.0 { (-0.5 + v * one) as i32 } else { (0.5 + v * one) as i32 }).collect())
        })
        .collect();
    (ints, prec)
}

/// `[H, W, 3]` uint8 → `[nh, nw, 3]` with a fixed-point separable filter, as Pillow's
/// `ImagingResample` and torch's uint8 antialiased kernel (Pillow-SIMD's) both run it: the
/// horizontal pass then the vertical one, each skipped where that side keeps its size, each
/// accumulating in integers from `1 << (precision − 1)`, shifting and saturating to uint8.
/// (Pillow 13 runs the vertical pass first for some shapes, mostly a height shrinking much more
/// than the width; those can differ by a few levels and are a known gap.)
fn resize_aa(src: &[u8], (h, w): (usize, usize), (nh, nw): (usize, usize), filter: Filter) -> Vec<u8> {
    let sat = |acc: i64, p: u32| (acc >> p).clamp(0, 255) as u8;
    let horizontal = if nw == w {
        src.to_vec()
    } else {
        let (cw, pw) = aa_coeffs(w, nw, filter);
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
        tmp
    };
    if nh == h {
        return horizontal;
    }
    let (chh, ph) = aa_coeffs(h, nh, filter);
    let mut out = vec![0u8; nh * nw * 3];
    for (y, (y0, wts)) in chh.iter().enumerate() {
        for x in 0..nw {
            for c in 0..3 {
                let mut acc: i64 = 1 << (ph.max(1) - 1);
                for (k, &wt) in wts.iter().enumerate() {
                    acc += wt as i64 * horizontal[((y0 + k) * nw + x) * 3 + c] as i64;
                }
                out[(y * nw + x) * 3 + c] = sat(acc, ph);
            }
        }
    }
    out
}
