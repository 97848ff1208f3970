//! `wanrt eval …`: the CLI contract of DESIGN.md ("eval"), as a clap [`EvalCommand`] the
//! `wanrt` binary dispatches to [`run`]. `--json` prints one JSON object on stdout; humans
//! get a short table; progress bars go to stderr; errors are returned (one line).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::compare::compare;
use crate::error::EvalError;
use crate::fid::{compute_features, compute_stats, fid_from_paths, kid_from_paths, FeatureOptions};
use crate::inception::{FidInception, INCEPTION_FILE};
use crate::kid::{KidOptions, DEFAULT_SUBSETS, DEFAULT_SUBSET_SIZE};
use crate::lpips::{Lpips, LpipsNet};
use crate::stats::merge_stats;

/// Options shared by the commands that read items.
#[derive(Args, Debug, Clone)]
pub struct InputArgs {
    /// Keep K frames per video, `round(i·(F−1)/(K−1))` (all frames when omitted).
    #[arg(long, value_name = "K")]
    pub frames_per_video: Option<usize>,
    /// Frames (videos for fvd and domain) per network call: bounds memory; results do
    /// not depend on it.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub batch: usize,
    /// Worker threads (default: all cores).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Print one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug, Clone)]
pub enum EvalCommand {
    /// FID as pytorch-fid: Inception pool_3 features, float64 statistics, Fréchet distance.
    Fid {
        /// pytorch-fid's weights (pt_inception-2015-12-05-6726825d.pth).
        #[arg(long, env = "WANRT_INCEPTION", value_name = "FILE.pth")]
        inception: Option<PathBuf>,
        /// Folder, file, or .npz statistics.
        #[arg(long, value_name = "PATH")]
        real: PathBuf,
        /// Folder, file, or .npz statistics.
        #[arg(long, value_name = "PATH")]
        fake: PathBuf,
        #[command(flatten)]
        input: InputArgs,
    },
    /// KID with torchmetrics' formula on Inception features (or 2-D feature .npy files).
    Kid {
        #[arg(long, env = "WANRT_INCEPTION", value_name = "FILE.pth")]
        inception: Option<PathBuf>,
        #[arg(long, value_name = "PATH")]
        real: PathBuf,
        #[arg(long, value_name = "PATH")]
        fake: PathBuf,
        #[arg(long, default_value_t = DEFAULT_SUBSETS)]
        subsets: usize,
        #[arg(long, default_value_t = DEFAULT_SUBSET_SIZE)]
        subset_size: usize,
        /// Seed of the subset sampler.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[command(flatten)]
        input: InputArgs,
    },
    /// Writes pytorch-fid-compatible statistics (npz), or merges such files exactly.
    Stats {
        #[arg(long, env = "WANRT_INCEPTION", value_name = "FILE.pth")]
        inception: Option<PathBuf>,
        /// Folder or file of items.
        #[arg(value_name = "PATH", required_unless_present = "merge")]
        path: Option<PathBuf>,
        /// Merge statistics written by `wanrt eval stats`.
        #[arg(long, num_args = 1.., value_name = "A.npz", conflicts_with = "path")]
        merge: Vec<PathBuf>,
        /// Output .npz.
        #[arg(short = 'o', long = "output", value_name = "FILE.npz")]
        output: PathBuf,
        /// Also write the raw features, float32 (n, 2048).
        #[arg(long, value_name = "FILE.npy")]
        features: Option<PathBuf>,
        #[command(flatten)]
        input: InputArgs,
    },
    /// FVD (I3D features of videos).
    Fvd {
        #[arg(long, env = "WANRT_I3D", value_name = "FILE.pt")]
        i3d: Option<PathBuf>,
        #[arg(long, value_name = "PATH")]
        real: PathBuf,
        #[arg(long, value_name = "PATH")]
        fake: PathBuf,
        #[command(flatten)]
        input: InputArgs,
    },
    /// CLIPScore as torchmetrics (mean over frames of 100·cos, clamped at 0).
    Clipscore {
        #[arg(long, env = "WANRT_CLIP", value_name = "DIR")]
        clip: Option<PathBuf>,
        #[arg(long, value_name = "PATH")]
        videos: PathBuf,
        /// JSON {key: caption} or CSV `file,caption`.
        #[arg(long, value_name = "FILE")]
        prompts: PathBuf,
        #[command(flatten)]
        input: InputArgs,
    },
    /// PSNR / SSIM (and LPIPS with weights) of candidate items against reference items.
    Compare {
        #[arg(long, value_name = "PATH")]
        reference: PathBuf,
        #[arg(long, value_name = "PATH")]
        candidate: PathBuf,
        /// LPIPS weights (state_dict of lpips.LPIPS: backbone + linear heads).
        #[arg(long, env = "WANRT_LPIPS", value_name = "FILE.pth")]
        lpips: Option<PathBuf>,
        #[arg(long, value_name = "alex|vgg", default_value = "alex")]
        lpips_net: String,
        /// torchvision backbone weights, when --lpips holds only the linear heads
        /// (the lpips package's weights/v0.1/alex.pth).
        #[arg(long, value_name = "FILE.pth")]
        lpips_backbone: Option<PathBuf>,
        #[command(flatten)]
        input: InputArgs,
    },
    /// Domain evaluator of the bundled demo model: predicted attributes (shape, colour,
    /// direction, background), per-attribute and prompt accuracy against the captions,
    /// and the domain Fréchet distance of its 128-d features.
    ///
    /// Clips must have the evaluator's input size (17×32×32 for models/demo-evaluator;
    /// `--frames-per-video` picks frames). Prompt accuracy = fraction of items whose every
    /// predicted attribute equals the one the caption names (captions follow the
    /// evaluator's `caption_template`, e.g. "a red circle moves left on a blue
    /// background"). `--json` prints
    /// {"prompt_accuracy": x|null, "attributes": {"shape": acc, …}|null, "fd": y|null,
    /// "videos": {"items", "frames", "source"}, "real": {…}|null,
    /// "items": [{"file", "caption", "predicted": {"shape": …, …}, "correct": bool|null}]}
    /// (null where --prompts / --real are not given).
    Domain {
        /// Evaluator folder (config.json + model.safetensors); default: the bundled
        /// models/demo-evaluator, found near the executable or in the current directory.
        #[arg(long, env = "WANRT_DOMAIN_EVALUATOR", value_name = "DIR")]
        evaluator: Option<PathBuf>,
        /// Folder or file of generated clips.
        #[arg(long, value_name = "PATH")]
        videos: PathBuf,
        /// Captions, JSON {key: caption} or CSV `file,caption` (as for clipscore).
        #[arg(long, value_name = "FILE")]
        prompts: Option<PathBuf>,
        /// Reference clips (e.g. the dataset's) for the domain Fréchet distance.
        #[arg(long, value_name = "PATH")]
        real: Option<PathBuf>,
        #[command(flatten)]
        input: InputArgs,
    },
}

fn progress(label: &str) -> ProgressBar {
    let pb = ProgressBar::new(0);
    if let Ok(style) = ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} items ({elapsed}, eta {eta})") {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_message(label.to_string());
    pb
}

fn set_threads(n: Option<usize>) {
    if let Some(n) = n {
        // Fails only if a pool exists already; then the existing one is used.
        let _ = rayon::ThreadPoolBuilder::new().num_threads(n).build_global();
    }
}

fn emit<T: Serialize>(json: bool, value: &T, human: impl FnOnce() -> String) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(value)?);
    } else {
        println!("{}", human());
    }
    Ok(())
}

fn fmt_opt<T: std::fmt::Display>(v: &Option<T>) -> String {
    v.as_ref().map_or("-".into(), |v| v.to_string())
}

fn inception_or_err(p: &Option<PathBuf>) -> Result<&Path, EvalError> {
    p.as_deref().ok_or(EvalError::MissingWeights {
        what: "Inception (pytorch-fid)",
        flag: "--inception",
        env: "WANRT_INCEPTION",
        usual: INCEPTION_FILE,
    })
}

/// Runs one `wanrt eval` command.
pub fn run(cmd: EvalCommand) -> anyhow::Result<()> {
    match cmd {
        EvalCommand::Fid { inception, real, fake, input } => {
            set_threads(input.threads);
            let opts = FeatureOptions { frames_per_video: input.frames_per_video, batch: input.batch.max(1) };
            let pb = progress("fid");
            let r = fid_from_paths(inception.as_deref(), &real, &fake, &opts, &pb)?;
            pb.finish_and_clear();
            emit(input.json, &r, || {
                format!(
                    "FID {:.6}\n  real: {} items, {} frames ({})\n  fake: {} items, {} frames ({})",
                    r.fid,
                    fmt_opt(&r.real.items),
                    fmt_opt(&r.real.frames),
                    r.real.source,
                    fmt_opt(&r.fake.items),
                    fmt_opt(&r.fake.frames),
                    r.fake.source
                )
            })
        }
        EvalCommand::Kid { inception, real, fake, subsets, subset_size, seed, input } => {
            set_threads(input.threads);
            let opts = FeatureOptions { frames_per_video: input.frames_per_video, batch: input.batch.max(1) };
            let kopts = KidOptions { subsets, subset_size, seed, ..KidOptions::default() };
            let pb = progress("kid");
            let r = kid_from_paths(inception.as_deref(), &real, &fake, &opts, &kopts, &pb)?;
            pb.finish_and_clear();
            emit(input.json, &r, || {
                format!("KID {:.6} ± {:.6} ({} subsets of {})", r.kid_mean, r.kid_std, r.subsets, r.subset_size)
            })
        }
        EvalCommand::Stats { inception, path, merge, output, features, input } => {
            set_threads(input.threads);
            #[derive(Serialize)]
            struct Out {
                output: String,
                items: Option<usize>,
                frames: Option<u64>,
                dim: usize,
                merged: usize,
            }
            let out = if !merge.is_empty() {
                if features.is_some() {
                    bail!("--features cannot be combined with --merge");
                }
                let refs: Vec<&Path> = merge.iter().map(PathBuf::as_path).collect();
                let s = merge_stats(&refs)?;
                s.write_npz(&output)?;
                Out { output: output.display().to_string(), items: None, frames: s.n, dim: s.dim, merged: merge.len() }
            } else {
                let path = path.context("stats needs a PATH (or --merge A.npz B.npz …)")?;
                let net = FidInception::load(inception_or_err(&inception)?)?;
                let opts = FeatureOptions { frames_per_video: input.frames_per_video, batch: input.batch.max(1) };
                let pb = progress("stats");
                let (s, info) = if let Some(fpath) = &features {
                    let f = compute_features(&net, &path, &opts, &pb)?;
                    let arr = wanrt_io::NpyArray::new(vec![f.frames, f.dim], f.features.clone())?;
                    wanrt_io::write_npy(fpath, &arr)?;
                    let s = crate::stats::FeatureStats::from_features(&f.features, f.dim)?;
                    let info = crate::fid::SideInfo {
                        items: Some(f.items),
                        frames: Some(f.frames as u64),
                        source: "path".into(),
                    };
                    (s, info)
                } else {
                    compute_stats(&net, &path, &opts, &pb)?
                };
                pb.finish_and_clear();
                s.write_npz(&output)?;
                Out {
                    output: output.display().to_string(),
                    items: info.items,
                    frames: info.frames,
                    dim: s.dim,
                    merged: 0,
                }
            };
            emit(input.json, &out, || {
                format!("wrote {} ({} frames, dim {})", out.output, fmt_opt(&out.frames), out.dim)
            })
        }
        EvalCommand::Fvd { i3d, real, fake, input } => {
            set_threads(input.threads);
            let Some(i3d) = i3d else {
                return Err(EvalError::MissingWeights {
                    what: "I3D (Kinetics-400)",
                    flag: "--i3d",
                    env: "WANRT_I3D",
                    usual: crate::i3d::I3D_FILE,
                }
                .into());
            };
            let pb = progress("fvd");
            let r = crate::fvd::fvd_from_paths(&i3d, &real, &fake, input.frames_per_video, input.batch, &pb)?;
            pb.finish_and_clear();
            emit(input.json, &r, || {
                format!(
                    "FVD {:.6}\n  real: {} videos, {} frames\n  fake: {} videos, {} frames",
                    r.fvd,
                    fmt_opt(&r.real.items),
                    fmt_opt(&r.real.frames),
                    fmt_opt(&r.fake.items),
                    fmt_opt(&r.fake.frames)
                )
            })
        }
        EvalCommand::Clipscore { clip, videos, prompts, input } => {
            set_threads(input.threads);
            let Some(clip) = clip else {
                return Err(EvalError::MissingWeights {
                    what: "CLIP",
                    flag: "--clip",
                    env: "WANRT_CLIP",
                    usual: "a Hugging Face CLIP folder such as openai/clip-vit-base-patch16",
                }
                .into());
            };
            let scorer = crate::clipscore::ClipScorer::load(&clip)?;
            let pb = progress("clipscore");
            let r = crate::clipscore::clipscore(&scorer, &videos, &prompts, input.frames_per_video, input.batch, &pb)?;
            pb.finish_and_clear();
            emit(input.json, &r, || {
                let mut s = format!("CLIPScore {:.4}", r.clip_score);
                for i in &r.items {
                    s.push_str(&format!(
                        "\n  {:<24} {:>3} frames  {:.4}  {}",
                        i.file, i.frames, i.clip_score, i.caption
                    ));
                }
                s
            })
        }
        EvalCommand::Domain { evaluator, videos, prompts, real, input } => {
            set_threads(input.threads);
            let dir = crate::domain::resolve_evaluator(evaluator.as_deref())?;
            let ev = crate::domain::DomainEvaluator::load(&dir)?;
            let pb = progress("domain");
            let r = crate::domain::domain_eval(
                &ev,
                &videos,
                prompts.as_deref(),
                real.as_deref(),
                input.frames_per_video,
                input.batch.max(1),
                &pb,
            )?;
            pb.finish_and_clear();
            emit(input.json, &r, || {
                let mut s = String::new();
                match (&r.prompt_accuracy, &r.attributes) {
                    (Some(p), Some(a)) => {
                        let n = r.items.len();
                        let ok = r.items.iter().filter(|i| i.correct == Some(true)).count();
                        s.push_str(&format!("prompt accuracy {p:.4} ({ok}/{n} items with every attribute right)"));
                        for (k, v) in &a.0 {
                            s.push_str(&format!("\n  {k:<12} {v:.4}"));
                        }
                    }
                    _ => s.push_str(&format!("{} items (no --prompts: no accuracy)", r.items.len())),
                }
                if let Some(fd) = r.fd {
                    s.push_str(&format!(
                        "\ndomain FD {fd:.4} (vs {} real items)",
                        fmt_opt(&r.real.as_ref().and_then(|x| x.items))
                    ));
                }
                for i in r.items.iter().filter(|i| i.correct != Some(true)) {
                    let pred: Vec<&str> = i.predicted.0.iter().map(|(_, v)| v.as_str()).collect();
                    s.push_str(&format!(
                        "\n  {:<24} predicted [{}]  {}",
                        i.file,
                        pred.join(", "),
                        i.caption.as_deref().unwrap_or("")
                    ));
                }
                s
            })
        }
        EvalCommand::Compare { reference, candidate, lpips, lpips_net, lpips_backbone, input } => {
            set_threads(input.threads);
            let model = match &lpips {
                Some(p) => Some(Lpips::load(lpips_net.parse::<LpipsNet>()?, p, lpips_backbone.as_deref())?),
                None => None,
            };
            let pb = progress("compare");
            let metric = model.as_ref().map(|m| m as &dyn crate::compare::FrameMetric);
            let r = compare(&reference, &candidate, input.frames_per_video, metric, &pb)?;
            pb.finish_and_clear();
            emit(input.json, &r, || {
                let mut s = format!("PSNR {:.4} dB  SSIM {:.5}", r.psnr, r.ssim);
                if let Some(l) = r.lpips {
                    s.push_str(&format!("  LPIPS {l:.5}"));
                }
                for i in &r.items {
                    s.push_str(&format!(
                        "\n  {:<24} {:>3} frames  PSNR {:.4}  SSIM {:.5}",
                        i.file, i.frames, i.psnr, i.ssim
                    ));
                }
                s
            })
        }
    }
}
