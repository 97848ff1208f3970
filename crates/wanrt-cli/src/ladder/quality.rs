//! Quality of each rung against the baseline (same prompts, seeds and initial noise) and against
//! real videos: per-video PSNR/SSIM/LPIPS of the raw frames, set-level Fréchet distances (FID on
//! Inception frame features, FVD on I3D clip logits, the demo domain's FD), CLIPScore and the
//! domain evaluator's prompt accuracy — each metric only when its network's weights are given.

use super::stats::{bootstrap, mean_estimate, Estimate};
use anyhow::{Context, Result};
use indicatif::ProgressBar;
use serde::Serialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use wanrt_eval::clipscore::ClipScorer;
use wanrt_eval::compare::FrameMetric;
use wanrt_eval::domain::{DomainEvaluator, PathOutput};
use wanrt_eval::fid::{FeatureOptions, LazyInception};
use wanrt_eval::frechet::frechet_distance_stats;
use wanrt_eval::i3d::I3d;
use wanrt_eval::lpips::Lpips;
use wanrt_eval::stats::FeatureStats;

/// Resamples of the Fréchet-distance intervals (each one an eigendecomposition).
const FD_RESAMPLES: usize = 200;

/// The networks given, loaded once for every rung.
pub struct Networks {
    pub lpips: Option<Lpips>,
    pub inception: Option<LazyInception>,
    pub i3d: Option<I3d>,
    pub clip: Option<ClipScorer>,
    pub domain: Option<DomainEvaluator>,
}

/// What the metrics read: the videos' captions, the real set, sampling and bootstrap settings.
pub struct QualitySettings {
    /// `{npy file name: prompt}` of the frames folders.
    pub captions: PathBuf,
    pub real: Option<PathBuf>,
    pub frames_per_video: Option<usize>,
    pub resamples: usize,
    pub seed: u64,
}

/// Features of one set of videos: rows `[n, dim]`.
#[derive(Clone)]
struct Features {
    rows: Vec<f32>,
    dim: usize,
}

impl Features {
    fn n(&self) -> usize {
        self.rows.len() / self.dim.max(1)
    }
    fn stats(&self) -> Option<FeatureStats> {
        FeatureStats::from_features(&self.rows, self.dim).ok()
    }
    fn subset(&self, idx: &[usize]) -> Features {
        let rows = idx.iter().flat_map(|&i| &self.rows[i * self.dim..(i + 1) * self.dim]).copied().collect();
        Features { rows, dim: self.dim }
    }
}

/// Per-set features kept for the comparisons with later rungs.
#[derive(Default)]
struct SetFeatures {
    inception: Option<Features>,
    i3d: Option<Features>,
    /// The domain evaluator's run: features and the heads' logits (prompt accuracy).
    domain_run: Option<PathOutput>,
    domain: Option<Features>,
}

/// One video's scores against its baseline twin.
#[derive(Debug, Clone, Serialize)]
pub struct VideoScores {
    pub file: String,
    pub psnr: f64,
    pub ssim: f64,
    pub lpips: Option<f64>,
    pub clip_score: Option<f64>,
    pub prompt_correct: Option<bool>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct RungQuality {
    pub psnr: Option<Estimate>,
    pub ssim: Option<Estimate>,
    pub lpips: Option<Estimate>,
    pub fid_vs_baseline: Option<f64>,
    pub fid_vs_real: Option<f64>,
    pub fvd_vs_baseline: Option<f64>,
    pub fvd_vs_real: Option<f64>,
    pub clip_score: Option<Estimate>,
    pub prompt_accuracy: Option<Estimate>,
    pub domain_fd_vs_baseline: Option<Estimate>,
    pub domain_fd_vs_real: Option<Estimate>,
    /// Frames that went into each FID side (its small-sample bias depends on it).
    pub fid_frames: Option<usize>,
    pub videos: Vec<VideoScores>,
}

pub struct Quality<'a> {
    nets: &'a mut Networks,
    settings: &'a QualitySettings,
    baseline_dir: Option<PathBuf>,
    baseline: SetFeatures,
    real: SetFeatures,
}

/// Fréchet distance of two feature sets; `None` when either has too few rows for statistics.
fn frechet(a: &Features, b: &FeatureStats) -> Option<f64> {
    frechet_distance_stats(&a.stats()?, b).ok()
}

impl<'a> Quality<'a> {
    pub fn new(nets: &'a mut Networks, settings: &'a QualitySettings) -> Self {
        Quality { nets, settings, baseline_dir: None, baseline: SetFeatures::default(), real: SetFeatures::default() }
    }

    /// Features of the real set (once), when `--real` (or the demo's bundled set) is there.
    pub fn load_real(&mut self, bar: &ProgressBar) -> Result<()> {
        if let Some(real) = self.settings.real.clone() {
            self.real = self.features(&real, bar).with_context(|| format!("--real {}", real.display()))?;
        }
        Ok(())
    }

    fn features(&mut self, dir: &Path, bar: &ProgressBar) -> Result<SetFeatures> {
        let fpv = self.settings.frames_per_video;
        let mut out = SetFeatures::default();
        if let Some(net) = self.nets.inception.as_mut() {
            let opts = FeatureOptions { frames_per_video: fpv, batch: 8 };
            let f = wanrt_eval::fid::compute_features(net.get()?, dir, &opts, bar)?;
            out.inception = Some(Features { rows: f.features, dim: f.dim });
        }
        if let Some(net) = &self.nets.i3d {
            // Whole clips: I3D needs the frames in time (--frames-per-video thins FID and CLIPScore).
            let (rows, info) = wanrt_eval::fvd::video_logits(net, dir, None, 4, bar)?;
            let dim = rows.len() / info.items.unwrap_or(1).max(1);
            out.i3d = Some(Features { rows, dim });
        }
        if let Some(ev) = &self.nets.domain {
            let v = wanrt_eval::domain::evaluate_path(ev, dir, None, 16, bar)?;
            out.domain = Some(Features { rows: v.output.features.clone(), dim: ev.feature_dim() });
            out.domain_run = Some(v);
        }
        Ok(out)
    }

    /// Scores the rung whose raw frames are in `frames` (the first rung measured is the baseline).
    pub fn measure(&mut self, frames: &Path, bar: &ProgressBar) -> Result<RungQuality> {
        let s = self.settings;
        let mut q = RungQuality::default();
        let is_baseline = self.baseline_dir.is_none();
        let mut videos: Vec<VideoScores> = match &self.baseline_dir {
            Some(base) => {
                let metric = self.nets.lpips.as_ref().map(|m| m as &dyn FrameMetric);
                let r = wanrt_eval::compare::compare(base, frames, None, metric, bar)?;
                r.items
                    .into_iter()
                    .map(|i| VideoScores {
                        file: i.file,
                        psnr: i.psnr,
                        ssim: i.ssim,
                        lpips: i.lpips,
                        clip_score: None,
                        prompt_correct: None,
                    })
                    .collect()
            }
            None => Vec::new(),
        };
        let feats = self.features(frames, bar)?;
        if let Some(scorer) = &self.nets.clip {
            let r = wanrt_eval::clipscore::clipscore(scorer, frames, &s.captions, s.frames_per_video, 16, bar)?;
            let scores: HashMap<String, f64> = r.items.iter().map(|i| (i.file.clone(), i.clip_score)).collect();
            fill(&mut videos, |f| scores.get(f).copied(), |v, x| v.clip_score = Some(x));
            q.clip_score =
                Some(mean_estimate(&r.items.iter().map(|i| i.clip_score).collect::<Vec<_>>(), s.resamples, s.seed));
        }
        if let (Some(ev), Some(v)) = (&self.nets.domain, &feats.domain_run) {
            let captions = wanrt_eval::clipscore::read_prompts(&s.captions)?;
            // Ordered by file: the bootstrap's resamples must not depend on a hash map's order.
            let mut correct = std::collections::BTreeMap::new();
            for (i, key) in v.keys.iter().enumerate() {
                if let Some(want) = captions.get(key).and_then(|c| ev.parse_caption(c)) {
                    correct.insert(key.clone(), ev.predict(&v.output, i) == want);
                }
            }
            fill(&mut videos, |f| correct.get(f).copied(), |v, ok| v.prompt_correct = Some(ok));
            if !correct.is_empty() {
                let hits: Vec<f64> = correct.values().map(|&ok| f64::from(u8::from(ok))).collect();
                q.prompt_accuracy = Some(mean_estimate(&hits, s.resamples, s.seed));
            }
        }
        // An interval only when the set has more videos than feature dimensions: below that the
        // covariance is singular and a resample's duplicated rows, not the data, move the distance.
        let fd_interval = |a: &Features, b: &Features, seed: u64| -> Option<Estimate> {
            let reference = b.stats()?;
            let resamples = if a.n() > a.dim { FD_RESAMPLES.min(s.resamples) } else { 0 };
            let e = bootstrap(a.n(), resamples, seed, |idx| frechet(&a.subset(idx), &reference).unwrap_or(f64::NAN));
            e.value.is_finite().then_some(e)
        };
        let point =
            |a: &Option<Features>, b: &Option<Features>| -> Option<f64> { frechet(a.as_ref()?, &b.as_ref()?.stats()?) };
        if !is_baseline {
            q.fid_vs_baseline = point(&feats.inception, &self.baseline.inception);
            q.fvd_vs_baseline = point(&feats.i3d, &self.baseline.i3d);
            if let (Some(a), Some(b)) = (&feats.domain, &self.baseline.domain) {
                q.domain_fd_vs_baseline = fd_interval(a, b, s.seed);
            }
            let mean_of = |f: fn(&VideoScores) -> Option<f64>| -> Option<Estimate> {
                let v: Option<Vec<f64>> = videos.iter().map(f).collect();
                v.filter(|v| !v.is_empty()).map(|v| mean_estimate(&v, s.resamples, s.seed))
            };
            q.psnr = mean_of(|v| Some(v.psnr));
            q.ssim = mean_of(|v| Some(v.ssim));
            q.lpips = mean_of(|v| v.lpips);
        }
        q.fid_vs_real = point(&feats.inception, &self.real.inception);
        q.fvd_vs_real = point(&feats.i3d, &self.real.i3d);
        if let (Some(a), Some(b)) = (&feats.domain, &self.real.domain) {
            q.domain_fd_vs_real = fd_interval(a, b, s.seed.wrapping_add(1));
        }
        q.fid_frames = feats.inception.as_ref().map(Features::n);
        q.videos = videos;
        if is_baseline {
            self.baseline_dir = Some(frames.to_path_buf());
            self.baseline = feats;
        }
        Ok(q)
    }
}

/// Sets a per-video field from a lookup by file name.
fn fill<T>(videos: &mut [VideoScores], by_file: impl Fn(&str) -> Option<T>, set: impl Fn(&mut VideoScores, T)) {
    for v in videos.iter_mut() {
        if let Some(x) = by_file(&v.file) {
            set(v, x);
        }
    }
}
