//! `wanrt eval compare`: fidelity of a candidate against a reference, item by item
//! (items are matched by key, DESIGN.md's item rules): per-frame PSNR ([`crate::psnr`]),
//! SSIM ([`crate::ssim`]) and, when weights are given, LPIPS; per item the mean over its
//! frames; overall the mean over items.

use std::path::Path;

use indicatif::ProgressBar;
use serde::Serialize;

use crate::error::{EvalError, Result};
use crate::items::{frames_of, open_items};
use crate::psnr::psnr;
use crate::ssim::ssim;

/// Metrics of one frame pair.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct FrameScores {
    pub psnr: f64,
    pub ssim: f64,
    pub lpips: Option<f64>,
}

/// One matched item.
#[derive(Clone, Debug, Serialize)]
pub struct ItemScores {
    pub file: String,
    pub frames: usize,
    pub psnr: f64,
    pub ssim: f64,
    pub lpips: Option<f64>,
    pub per_frame: Vec<FrameScores>,
}

/// The `compare` JSON object of the CLI contract.
#[derive(Clone, Debug, Serialize)]
pub struct CompareReport {
    pub psnr: f64,
    pub ssim: f64,
    pub lpips: Option<f64>,
    pub items: Vec<ItemScores>,
}

/// A perceptual metric on frame pairs (LPIPS); `None` in [`compare`] skips it.
pub trait FrameMetric {
    fn score(&self, reference: &crate::items::Frame, candidate: &crate::items::Frame) -> Result<f64>;
}

fn mean(v: impl Iterator<Item = f64>) -> f64 {
    let (s, n) = v.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    s / n.max(1) as f64
}

/// Compares every item of `candidate` with the item of the same key in `reference`.
pub fn compare(
    reference: &Path,
    candidate: &Path,
    frames_per_video: Option<usize>,
    lpips: Option<&dyn FrameMetric>,
    progress: &ProgressBar,
) -> Result<CompareReport> {
    let refs = open_items(reference, frames_per_video)?;
    let cands = open_items(candidate, frames_per_video)?;
    let single = reference.is_file() && candidate.is_file();
    let ref_keys: Vec<String> = refs.keys().map(str::to_string).collect();
    progress.set_length(cands.len() as u64);
    let mut items = Vec::new();
    for ci in 0..cands.len() {
        let cand = cands.load(ci)?;
        let key = cand.key.clone();
        let ri = if single { Some(0) } else { ref_keys.iter().position(|k| *k == key) };
        let Some(ri) = ri else {
            return Err(EvalError::input(
                reference,
                format!("has no item `{key}` to compare with {}", candidate.display()),
            ));
        };
        let rf = frames_of(&refs.load(ri)?);
        let cf = frames_of(&cand);
        if rf.len() != cf.len() {
            return Err(EvalError::mismatch(format!("frame count of item `{key}`"), rf.len(), cf.len()));
        }
        let mut per_frame = Vec::with_capacity(cf.len());
        for (a, b) in rf.iter().zip(&cf) {
            let ctx = |e: EvalError| EvalError::Msg(format!("item `{key}`: {e}"));
            per_frame.push(FrameScores {
                psnr: psnr(a, b).map_err(ctx)?,
                ssim: ssim(a, b).map_err(ctx)?,
                lpips: lpips.map(|m| m.score(a, b)).transpose().map_err(ctx)?,
            });
        }
        items.push(ItemScores {
            file: key,
            frames: per_frame.len(),
            psnr: mean(per_frame.iter().map(|f| f.psnr)),
            ssim: mean(per_frame.iter().map(|f| f.ssim)),
            lpips: lpips.map(|_| mean(per_frame.iter().filter_map(|f| f.lpips))),
            per_frame,
        });
        progress.inc(1);
    }
    Ok(CompareReport {
        psnr: mean(items.iter().map(|i| i.psnr)),
        ssim: mean(items.iter().map(|i| i.ssim)),
        lpips: lpips.map(|_| mean(items.iter().filter_map(|i| i.lpips))),
        items,
    })
}
