//! `wanrt eval fid` / `stats` / `kid` on paths: Inception features of every frame of
//! every item (DESIGN.md's item rules), the statistics of pytorch-fid 0.3.0
//! (`calculate_activation_statistics`) and the Fréchet distance
//! (`calculate_frechet_distance`). Either side of `fid` may be an `.npz` of statistics.

use std::path::{Path, PathBuf};

use indicatif::ProgressBar;
use serde::Serialize;

use crate::error::{EvalError, Result};
use crate::frechet::frechet_distance_stats;
use crate::inception::{FidInception, FEATURE_DIM};
use crate::items::{frames_of, open_items, Frame};
use crate::kid::{kid, KidOptions, KidResult};
use crate::stats::{FeatureStats, FeatureSums};

/// How inputs are read and batched.
#[derive(Clone, Copy, Debug, Default)]
pub struct FeatureOptions {
    /// `--frames-per-video K` (all frames when `None`).
    pub frames_per_video: Option<usize>,
    /// Frames per network call (≥ 1; bounds memory, results do not depend on it).
    pub batch: usize,
}

/// Counts of one side of a comparison (`null` when read from an npz without `n`).
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct SideInfo {
    pub items: Option<usize>,
    pub frames: Option<u64>,
    /// `"path"` or `"npz"` (or `"features"` for a feature .npy).
    pub source: String,
}

/// The `fid` JSON object of the CLI contract.
#[derive(Clone, Debug, Serialize)]
pub struct FidReport {
    pub fid: f64,
    pub real: SideInfo,
    pub fake: SideInfo,
}

/// The `kid` JSON object of the CLI contract.
#[derive(Clone, Debug, Serialize)]
pub struct KidReport {
    pub kid_mean: f64,
    pub kid_std: f64,
    pub subsets: usize,
    pub subset_size: usize,
    pub seed: u64,
    pub real: SideInfo,
    pub fake: SideInfo,
}

/// Features of all frames under a path, row-major `[frames, 2048]`.
#[derive(Clone, Debug)]
pub struct FeatureSet {
    pub items: usize,
    pub frames: usize,
    pub dim: usize,
    pub features: Vec<f32>,
}

/// Runs the Inception on every selected frame of every item under `path`, `opts.batch`
/// frames per network call (across items), calling `sink` with each frame's 2048
/// features in order. The features do not depend on the batch size.
pub fn for_each_feature(
    net: &FidInception,
    path: &Path,
    opts: &FeatureOptions,
    progress: &ProgressBar,
    mut sink: impl FnMut(&[f32]) -> Result<()>,
) -> Result<(usize, usize)> {
    let set = open_items(path, opts.frames_per_video)?;
    progress.set_length(set.len() as u64);
    let batch = opts.batch.max(1);
    let mut frames = 0usize;
    let mut pending: Vec<Frame> = Vec::with_capacity(batch);
    let mut run = |pending: &mut Vec<Frame>| -> Result<()> {
        let feats = net.features_batch(pending)?;
        pending.clear();
        feats.chunks_exact(FEATURE_DIM).try_for_each(&mut sink)
    };
    for item in set.iter() {
        for f in frames_of(&item?) {
            pending.push(f);
            frames += 1;
            if pending.len() == batch {
                run(&mut pending)?;
            }
        }
        progress.inc(1);
    }
    if !pending.is_empty() {
        run(&mut pending)?;
    }
    Ok((set.len(), frames))
}

/// All features under a path (for KID and `stats --features`).
pub fn compute_features(
    net: &FidInception,
    path: &Path,
    opts: &FeatureOptions,
    progress: &ProgressBar,
) -> Result<FeatureSet> {
    let mut features = Vec::new();
    let (items, frames) = for_each_feature(net, path, opts, progress, |f| {
        features.extend_from_slice(f);
        Ok(())
    })?;
    Ok(FeatureSet { items, frames, dim: FEATURE_DIM, features })
}

/// Statistics of a path, with item/frame counts (`wanrt eval stats`).
pub fn compute_stats(
    net: &FidInception,
    path: &Path,
    opts: &FeatureOptions,
    progress: &ProgressBar,
) -> Result<(FeatureStats, SideInfo)> {
    let mut sums = FeatureSums::new(FEATURE_DIM);
    let (items, frames) = for_each_feature(net, path, opts, progress, |f| sums.add(f))?;
    let stats = sums.stats().map_err(|e| match e {
        EvalError::TooFew { need, found, .. } => {
            EvalError::TooFew { what: format!("frames under {} for FID statistics", path.display()), need, found }
        }
        e => e,
    })?;
    Ok((stats, SideInfo { items: Some(items), frames: Some(frames as u64), source: "path".into() }))
}

fn is_ext(p: &Path, ext: &str) -> bool {
    p.is_file() && p.extension().is_some_and(|e| e.eq_ignore_ascii_case(ext))
}

/// Loads the network only when some side needs it.
pub struct LazyInception {
    path: Option<PathBuf>,
    net: Option<FidInception>,
}

impl LazyInception {
    pub fn new(path: Option<PathBuf>) -> Self {
        LazyInception { path, net: None }
    }
    pub fn get(&mut self) -> Result<&FidInception> {
        if self.net.is_none() {
            let p = self.path.as_ref().ok_or(EvalError::MissingWeights {
                what: "Inception (pytorch-fid)",
                flag: "--inception FILE.pth",
                env: "WANRT_INCEPTION",
                usual: crate::inception::INCEPTION_FILE,
            })?;
            self.net = Some(FidInception::load(p)?);
        }
        Ok(self.net.as_ref().expect("loaded above"))
    }
}

/// Statistics of one side of `fid`: an npz, or a path run through the network.
pub fn side_stats(
    net: &mut LazyInception,
    path: &Path,
    opts: &FeatureOptions,
    progress: &ProgressBar,
) -> Result<(FeatureStats, SideInfo)> {
    if is_ext(path, "npz") {
        let s = FeatureStats::read_npz(path)?;
        let info = SideInfo { items: None, frames: s.n, source: "npz".into() };
        return Ok((s, info));
    }
    compute_stats(net.get()?, path, opts, progress)
}

/// `wanrt eval fid`: FID between two paths (folders, files or npz statistics).
pub fn fid_from_paths(
    inception: Option<&Path>,
    real: &Path,
    fake: &Path,
    opts: &FeatureOptions,
    progress: &ProgressBar,
) -> Result<FidReport> {
    let mut net = LazyInception::new(inception.map(Path::to_path_buf));
    let (a, ia) = side_stats(&mut net, real, opts, progress)?;
    progress.reset();
    let (b, ib) = side_stats(&mut net, fake, opts, progress)?;
    let fid = frechet_distance_stats(&a, &b)?;
    Ok(FidReport { fid, real: ia, fake: ib })
}

/// A 2-D float `.npy` of features `[n, d]`.
pub fn read_features_npy(path: &Path) -> Result<FeatureSet> {
    let a = wanrt_io::read_npy(path)?;
    let &[n, d] = a.shape() else {
        return Err(EvalError::input(path, format!("expected features of shape (n, d), found {:?}", a.shape())));
    };
    Ok(FeatureSet { items: n, frames: n, dim: d, features: a.to_f32_vec() })
}

fn is_feature_npy(path: &Path) -> bool {
    is_ext(path, "npy") && wanrt_io::npy::read_npy_header(path).is_ok_and(|h| h.shape.len() == 2)
}

/// Features of one side of `kid`: a 2-D feature `.npy` or a path.
pub fn side_features(
    net: &mut LazyInception,
    path: &Path,
    opts: &FeatureOptions,
    progress: &ProgressBar,
) -> Result<(FeatureSet, SideInfo)> {
    if is_feature_npy(path) {
        let f = read_features_npy(path)?;
        let info = SideInfo { items: Some(f.items), frames: Some(f.frames as u64), source: "features".into() };
        return Ok((f, info));
    }
    let f = compute_features(net.get()?, path, opts, progress)?;
    let info = SideInfo { items: Some(f.items), frames: Some(f.frames as u64), source: "path".into() };
    Ok((f, info))
}

/// KID of two feature sets (dimensions must agree).
pub fn kid_from_features(real: &FeatureSet, fake: &FeatureSet, opts: &KidOptions) -> Result<KidResult> {
    if real.dim != fake.dim {
        return Err(EvalError::mismatch("feature dimensions of the two sets", real.dim, fake.dim));
    }
    let r: Vec<f64> = real.features.iter().map(|&v| v as f64).collect();
    let f: Vec<f64> = fake.features.iter().map(|&v| v as f64).collect();
    kid(&r, &f, real.dim, opts)
}

/// `wanrt eval kid`: KID between two paths or feature files.
pub fn kid_from_paths(
    inception: Option<&Path>,
    real: &Path,
    fake: &Path,
    opts: &FeatureOptions,
    kid_opts: &KidOptions,
    progress: &ProgressBar,
) -> Result<KidReport> {
    let mut net = LazyInception::new(inception.map(Path::to_path_buf));
    let (a, ia) = side_features(&mut net, real, opts, progress)?;
    progress.reset();
    let (b, ib) = side_features(&mut net, fake, opts, progress)?;
    let k = kid_from_features(&a, &b, kid_opts)?;
    Ok(KidReport {
        kid_mean: k.kid_mean,
        kid_std: k.kid_std,
        subsets: k.subsets,
        subset_size: k.subset_size,
        seed: k.seed,
        real: ia,
        fake: ib,
    })
}
