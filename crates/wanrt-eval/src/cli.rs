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
    /// Keep K frames per video, `round(i·(F−1)/(K−1))` (all frames when omitted; a video with
    /// fewer than K frames is an error).
    #[arg(long, value_name = "K", value_parser = at_least_one)]
    pub frames_per_video: Option<usize>,
    /// Frames (videos for fvd and domain) per network call, 1–4096: bounds memory; results do
    /// not depend on it.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = batch_size)]
    pub batch: usize,
    /// Worker threads (default: all cores).
    #[arg(long, value_name = "N", value_parser = at_least_one)]
    pub threads: Option<usize>,
    /// Print one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Largest `--batch`: items of a batch are decoded and held at once.
const MAX_BATCH: usize = 4096;

fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("expected a whole number of at least 1, got `{s}`")),
    }
}

fn batch_size(s: &str) -> Result<usize, String> {
    match at_least_one(s)? {
        n if n <= MAX_BATCH => Ok(n),
        n => Err(format!("{n} is more than {MAX_BATCH} items per network call")),
    }
}

#[derive(Subcommand, Debug, Clone)]
pub enum EvalCommand {
    /// FID as pytorch-fid: Inception pool_3 features, float64 statistics, Fréchet distance.
    Fid {
        /// pytorch-fid's weights (pt_inception-2015-12-05-6726825d.pth); not needed when both
        /// sides are .npz statistics.
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
        /// pytorch-fid's weights (pt_inception-2015-12-05-6726825d.pth); not needed when both
        /// sides are feature .npy files.
        #[arg(long, env = "WANRT_INCEPTION", value_name = "FILE.pth")]
        inception: Option<PathBuf>,
        /// Folder or file of items, or a 2-D float feature .npy (n, d).
        #[arg(long, value_name = "PATH")]
        real: PathBuf,
        /// Folder or file of items, or a 2-D float feature .npy (n, d).
        #[arg(long, value_name = "PATH")]
        fake: PathBuf,
        /// Number of random subsets the KID is averaged over.
        #[arg(long, value_name = "N", default_value_t = DEFAULT_SUBSETS, value_parser = at_least_one)]
        subsets: usize,
        /// Samples per subset, drawn without replacement from each side (at least 2, at most the
        /// smaller side's count; torchmetrics' default 1000).
        #[arg(long, value_name = "M", default_value_t = DEFAULT_SUBSET_SIZE)]
        subset_size: usize,
        /// Seed of the subset sampler.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[command(flatten)]
        input: InputArgs,
    },
    /// Writes pytorch-fid-compatible statistics (npz), or merges such files exactly.
    Stats {
        /// pytorch-fid's weights (pt_inception-2015-12-05-6726825d.pth).
        #[arg(long, env = "WANRT_INCEPTION", value_name = "FILE.pth")]
        inception: Option<PathBuf>,
        /// Folder or file of items.
        #[arg(value_name = "PATH", required_unless_present = "merge")]
        path: Option<PathBuf>,
        /// Merge statistics written by `wanrt eval stats`.
        #[arg(long, num_args = 1.., value_name = "A.npz", conflicts_with = "path")]
        merge: Vec<PathBuf>,
        /// Output .npz (checked before any work).
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
        /// I3D (Kinetics-400) weights as a PyTorch state_dict (the usual `i3d_torchscript.pt`
        /// converted, see the README).
        #[arg(long, env = "WANRT_I3D", value_name = "FILE.pt")]
        i3d: Option<PathBuf>,
        /// Folder or file of reference videos.
        #[arg(long, value_name = "PATH")]
        real: PathBuf,
        /// Folder or file of generated videos.
        #[arg(long, value_name = "PATH")]
        fake: PathBuf,
        #[command(flatten)]
        input: InputArgs,
    },
    /// CLIPScore as torchmetrics (mean over frames of 100·cos, clamped at 0).
    Clipscore {
        /// A Hugging Face CLIP folder (config.json, model.safetensors, vocab.json, merges.txt),
        /// e.g. openai/clip-vit-base-patch16 as torchmetrics uses.
        #[arg(long, env = "WANRT_CLIP", value_name = "DIR")]
        clip: Option<PathBuf>,
        /// Folder or file of videos/images to score.
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
        /// Folder or file of reference items.
        #[arg(long, value_name = "PATH")]
        reference: PathBuf,
        /// Folder or file of candidate items (the same keys as the reference).
        #[arg(long, value_name = "PATH")]
        candidate: PathBuf,
        /// LPIPS weights (state_dict of lpips.LPIPS: backbone + linear heads).
        #[arg(long, env = "WANRT_LPIPS", value_name = "FILE.pth")]
        lpips: Option<PathBuf>,
        /// LPIPS backbone of the --lpips weights.
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
    /// evaluator's `caption_template`, e.g. "a red circle moves left on a gray
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

/// Prints the result on stdout. A write error (a reader that closed the pipe: `| head -c1`) is
/// returned as the `std::io::Error` it is, never a `println!` panic; the binary ends quietly on it.
fn emit<T: Serialize>(json: bool, value: &T, human: impl FnOnce() -> String) -> anyhow::Result<()> {
    use std::io::Write;
    let text = if json { serde_json::to_string(value)? } else { human() };
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}")?;
    out.flush()?;
    Ok(())
}

fn fmt_opt<T: std::fmt::Display>(v: &Option<T>) -> String {
    v.as_ref().map_or("-".into(), |v| v.to_string())
}

fn inception_or_err(p: &Option<PathBuf>) -> Result<&Path, EvalError> {
    p.as_deref().ok_or(EvalError::MissingWeights {
        what: "Inception (pytorch-fid)",
        flag: "--inception FILE.pth",
        env: "WANRT_INCEPTION",
        usual: INCEPTION_FILE,
    })
}

/// The files `stats` writes, checked before any network loads: known extensions, writable
/// folders, two different files.
fn check_stats_outputs(output: &Path, features: Option<&Path>) -> anyhow::Result<()> {
    let ext = |p: &Path, want: &str| p.extension().is_some_and(|e| e.eq_ignore_ascii_case(want));
    if !ext(output, "npz") {
        bail!("-o {}: expected a FILE.npz (pytorch-fid reads mu and sigma from it)", output.display());
    }
    wanrt_io::check_output_file(output)?;
    if let Some(f) = features {
        if !ext(f, "npy") {
            bail!("--features {}: expected a FILE.npy", f.display());
        }
        wanrt_io::check_output_file(f)?;
    }
    Ok(())
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
            check_stats_outputs(&output, features.as_deref())?;
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
                    flag: "--i3d FILE.pt",
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
                    flag: "--clip DIR",
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
