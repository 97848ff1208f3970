//! FVD as common_metrics_on_video_quality's VideoGPT-style code computes it
//! (`fvd/videogpt/fvd.py`): each video `(T, H, W, 3)` uint8 → float [0,1] → `×255` and
//! `astype(uint8)` (a truncating cast, kept here) → `/255` → shorter side resized to 224
//! (`F.interpolate` bilinear, `align_corners=False`, other side `ceil(n·224/min)`) →
//! center crop 224×224 → `(x − 0.5)·2`; the [`I3d`] logits are the embeddings, and FVD is
//! the Fréchet distance of their Gaussians ([`crate::frechet`], float64; the reference
//! computes it in float32 through SVDs, which for fewer videos than 400 is dominated by
//! round-off — compare with it in float64).

use std::path::Path;

use indicatif::ProgressBar;
use serde::Serialize;
use wanrt_nn::ops::resize::resize_bilinear;
use wanrt_nn::HostTensor;

use crate::error::{EvalError, Result};
use crate::fid::SideInfo;
use crate::frechet::frechet_distance_stats;
use crate::i3d::I3d;
use crate::items::{frames_of, open_items, Frame};
use crate::stats::FeatureStats;

const RES: usize = 224;

/// The `fvd` JSON object of the CLI contract.
#[derive(Clone, Debug, Serialize)]
pub struct FvdReport {
    pub fvd: f64,
    pub real: SideInfo,
    pub fake: SideInfo,
}

/// One video's frames → `[1, 3, T, 224, 224]` as the VideoGPT preprocessing makes it.
pub fn preprocess(frames: &[Frame]) -> Result<HostTensor> {
    let Some(first) = frames.first() else {
        return Err(EvalError::Msg("FVD: a video without frames".into()));
    };
    let (h, w) = (first.height, first.width);
    if frames.iter().any(|f| (f.height, f.width) != (h, w)) {
        return Err(EvalError::Msg("FVD: frames of one video differ in size".into()));
    }
    let t = frames.len();
    // [T, 3, H, W]: float [0,1] → ×255 → truncating uint8 cast → /255
    let mut data = vec![0.0f32; t * 3 * h * w];
    for (ti, f) in frames.iter().enumerate() {
        for (p, px) in f.data.chunks_exact(3).enumerate() {
            for c in 0..3 {
                let x = px[c] as f32 / 255.0;
                let q = (x * 255.0) as u8; // numpy astype(uint8) truncates
                data[(ti * 3 + c) * h * w + p] = q as f32 / 255.0;
            }
        }
    }
    let x = HostTensor::new([t, 3, h, w], data)?;
    let scale = RES as f64 / h.min(w) as f64;
    let (th, tw) =
        if h < w { (RES, (w as f64 * scale).ceil() as usize) } else { ((h as f64 * scale).ceil() as usize, RES) };
    let y = resize_bilinear(&x, th, tw)?;
    let (hs, ws) = ((th - RES) / 2, (tw - RES) / 2);
    // center crop, [C, T, H, W], (x − 0.5)·2
    let mut out = vec![0.0f32; 3 * t * RES * RES];
    for ti in 0..t {
        for c in 0..3 {
            for i in 0..RES {
                let src = &y.data()[((ti * 3 + c) * th + hs + i) * tw + ws..][..RES];
                let dst = &mut out[((c * t + ti) * RES + i) * RES..][..RES];
                for (d, &s) in dst.iter_mut().zip(src) {
                    *d = (s - 0.5) * 2.0;
                }
            }
        }
    }
    Ok(HostTensor::new([1, 3, t, RES, RES], out)?)
}

/// I3D logits of every video under `path`, `[videos, classes]`; up to `batch` videos of
/// equal length per network call (logits do not depend on it).
pub fn video_logits(
    net: &I3d,
    path: &Path,
    frames_per_video: Option<usize>,
    batch: usize,
    progress: &ProgressBar,
) -> Result<(Vec<f32>, SideInfo)> {
    let set = open_items(path, frames_per_video)?;
    progress.set_length(set.len() as u64);
    let mut out = Vec::new();
    let mut frames = 0u64;
    // preprocessed videos waiting for the network, with their keys
    let mut pending: Vec<(String, HostTensor)> = Vec::new();
    let mut run = |pending: &mut Vec<(String, HostTensor)>| -> Result<()> {
        let refs: Vec<&HostTensor> = pending.iter().map(|(_, t)| t).collect();
        let x = HostTensor::cat(&refs, 0)?;
        let keys = || pending.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>().join(", ");
        out.extend(net.forward_batch(&x).map_err(|e| EvalError::Msg(format!("{}: {e}", keys())))?);
        pending.clear();
        Ok(())
    };
    for item in set.iter() {
        let item = item?;
        let f = frames_of(&item);
        frames += f.len() as u64;
        let x = preprocess(&f).map_err(|e| EvalError::Msg(format!("{}: {e}", item.key)))?;
        if pending.first().is_some_and(|(_, p)| p.shape() != x.shape()) {
            run(&mut pending)?;
        }
        pending.push((item.key.clone(), x));
        if pending.len() >= batch.max(1) {
            run(&mut pending)?;
        }
        progress.inc(1);
    }
    if !pending.is_empty() {
        run(&mut pending)?;
    }
    Ok((out, SideInfo { items: Some(set.len()), frames: Some(frames), source: "path".into() }))
}

/// `wanrt eval fvd`; `batch` videos per network call.
pub fn fvd_from_paths(
    i3d: &Path,
    real: &Path,
    fake: &Path,
    frames_per_video: Option<usize>,
    batch: usize,
    progress: &ProgressBar,
) -> Result<FvdReport> {
    let net = I3d::load(i3d)?;
    let (a, ia) = video_logits(&net, real, frames_per_video, batch, progress)?;
    progress.reset();
    let (b, ib) = video_logits(&net, fake, frames_per_video, batch, progress)?;
    let d = a.len() / ia.items.unwrap_or(1).max(1);
    let sa = FeatureStats::from_features(&a, d)
        .map_err(|e| EvalError::Msg(format!("FVD statistics of {}: {e}", real.display())))?;
    let sb = FeatureStats::from_features(&b, d)
        .map_err(|e| EvalError::Msg(format!("FVD statistics of {}: {e}", fake.display())))?;
    Ok(FvdReport { fvd: frechet_distance_stats(&sa, &sb)?, real: ia, fake: ib })
}
