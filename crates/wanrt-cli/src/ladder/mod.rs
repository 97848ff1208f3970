//! `wanrt bench --ladder`: the case study's optimize-then-evaluate workflow as one command. Each
//! rung (an artifact built by `optimize`, cached, and generation settings) generates the same
//! prompts × seeds as the baseline; per rung the transformer step is timed, the generations'
//! stages, memory and weights recorded, and quality measured against the baseline (and real
//! videos); the report, JSON, plots and a blind review study land in `--report DIR`.

mod artifacts;
mod children;
mod plot;
mod quality;
mod reference;
mod report;
mod rungs;
mod stats;

use crate::bench::BenchArgs;
use crate::engine::BackendKind;
use crate::generate::{fill_images, InputImage, PromptEntry};
use crate::{model_path, sysinfo};
use anyhow::{bail, Context, Result};
use artifacts::ArtifactCache;
use children::{count_files, run_json, Args as ChildArgs};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use quality::{Networks, Quality, QualitySettings};
use report::{LadderHeader, RungRow};
use rungs::Rung;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The ladder's flags (with `wanrt bench --ladder`).
#[derive(Args, Debug, Clone)]
pub struct LadderArgs {
    /// Run the optimization ladder: every rung generates the same videos; speed, memory and
    /// quality per rung into --report DIR (ladder.md, ladder.json, plots, videos, a review study).
    #[arg(long)]
    pub ladder: bool,
    /// Report folder (must not exist or be empty).
    #[arg(long, value_name = "DIR", requires = "ladder")]
    pub report: Option<PathBuf>,
    /// Rungs to run, comma-separated (the baseline always runs first). Known: baseline,
    /// int8-weight, int8, int8-attn8, int8-attn8-prune20, fp8, step-cache, all.
    #[arg(long, value_delimiter = ',', value_name = "LIST", requires = "ladder")]
    pub rungs: Option<Vec<String>>,
    /// Prompts, one per line or generate's JSON list (objects may carry "image" / "last_image" for
    /// image-to-video models; `--image` serves the rest) (default: the demo domain's 50 held-out
    /// captions on the bundled model, else 8 built-in prompts).
    #[arg(long, value_name = "FILE", requires = "ladder")]
    pub prompts: Option<PathBuf>,
    /// Videos per rung (default: one per prompt). Above the prompt count, every prompt gets
    /// ⌈N/prompts⌉ seeds.
    #[arg(long, value_name = "N", requires = "ladder")]
    pub videos: Option<usize>,
    /// Denoising steps (default: the model's wanrt.json, else 20).
    #[arg(long, requires = "ladder")]
    pub steps: Option<usize>,
    /// Seed of the first video of each prompt (the k-th uses seed + k).
    #[arg(long, default_value_t = 0, requires = "ladder")]
    pub seed: u64,
    /// Step cache threshold of the step-cache rungs.
    #[arg(long, default_value_t = 0.1, allow_negative_numbers = true, requires = "ladder")]
    pub cache_threshold: f64,
    /// Real videos (a folder of clips) for FID/FVD/domain FD against data (default on the bundled
    /// demo model: the domain's real clips of the held-out captions).
    #[arg(long, value_name = "DIR", requires = "ladder")]
    pub real: Option<PathBuf>,
    /// pytorch-fid Inception weights: FID against the baseline (and --real).
    #[arg(long, value_name = "FILE.pth", env = "WANRT_INCEPTION", requires = "ladder")]
    pub inception: Option<PathBuf>,
    /// CLIP model folder (transformers layout): CLIPScore per rung.
    #[arg(long, value_name = "DIR", env = "WANRT_CLIP", requires = "ladder")]
    pub clip: Option<PathBuf>,
    /// I3D weights: FVD against the baseline (and --real).
    #[arg(long, value_name = "FILE.pt", env = "WANRT_I3D", requires = "ladder")]
    pub i3d: Option<PathBuf>,
    /// LPIPS weights (lpips.LPIPS state_dict): per-video LPIPS against the baseline.
    #[arg(long, value_name = "FILE.pth", env = "WANRT_LPIPS", requires = "ladder")]
    pub lpips: Option<PathBuf>,
    /// LPIPS backbone of --lpips.
    #[arg(long, value_name = "alex|vgg", default_value = "alex", requires = "ladder")]
    pub lpips_net: String,
    /// Domain evaluator folder: prompt accuracy and domain FD (default: the bundled one on the
    /// bundled demo model).
    #[arg(long, value_name = "DIR", requires = "ladder")]
    pub evaluator: Option<PathBuf>,
    /// Frames per video that FID and CLIPScore read (default: all).
    #[arg(long, value_name = "K", requires = "ladder")]
    pub frames_per_video: Option<usize>,
    /// Bootstrap resamples of the 95 % intervals.
    #[arg(long, default_value_t = 1000, requires = "ladder")]
    pub bootstrap: usize,
    /// Where built artifacts are cached (default: ~/.cache/wanrt/ladder).
    #[arg(long, value_name = "DIR", requires = "ladder")]
    pub artifact_cache: Option<PathBuf>,
    /// Calibration prompts and steps of the artifacts (`optimize --calib-prompts/--calib-steps`).
    #[arg(long, value_name = "N", requires = "ladder")]
    pub calib_prompts: Option<usize>,
    #[arg(long, value_name = "N", requires = "ladder")]
    pub calib_steps: Option<usize>,
    /// A Python with torch + diffusers: a diffusers reference row measured in this run.
    #[arg(long, value_name = "PATH", requires = "ladder")]
    pub reference_python: Option<PathBuf>,
    /// Videos the reference stacks generate (the ladder's first ones).
    #[arg(long, default_value_t = 2, value_name = "N", requires = "ladder")]
    pub reference_videos: usize,
    /// stable-diffusion.cpp's `sd` binary: a reference row measured in this run (its model files
    /// through --sdcpp-arg).
    #[arg(long, value_name = "BIN", requires = "ladder")]
    pub sdcpp: Option<PathBuf>,
    /// An argument for --sdcpp, repeatable (e.g. `--sdcpp-arg=--diffusion-model --sdcpp-arg=wan.gguf`).
    #[arg(long, value_name = "ARG", allow_hyphen_values = true, requires = "sdcpp")]
    pub sdcpp_arg: Vec<String>,
    /// Timing rounds: each times every rung's step (`--repeat` passes), forward then backward
    /// through the rungs, so load changes during the run fall on all of them alike.
    #[arg(long, default_value_t = 2, value_name = "N", requires = "ladder")]
    pub rounds: usize,
    /// Keep every rung's raw frames (`frames/<rung>/*.npy`, f32) in the report.
    #[arg(long, requires = "ladder")]
    pub keep_frames: bool,
}

/// Everything checked and resolved before the first artifact is built.
struct Plan {
    report: PathBuf,
    src: PathBuf,
    rungs: Vec<Rung>,
    size: crate::optimize::ReportSize,
    /// (prompt, seed) of each video, in generate's `<i>_<k>` order.
    videos: Vec<(String, u64)>,
    prompts: Vec<String>,
    /// Image-to-video models: each prompt's first (and last) frame.
    images: Vec<(Option<InputImage>, Option<InputImage>)>,
    seeds: usize,
    real: Option<PathBuf>,
    /// `real` is the demo domain's bundled set: clip `<i>_<j>` shows prompt `i`.
    real_by_prompt: bool,
    evaluator: Option<PathBuf>,
    dtype: &'static str,
    repeat: usize,
    rounds: usize,
}

fn resolve(args: &BenchArgs) -> Result<Plan> {
    let l = &args.ladder;
    let report = l
        .report
        .clone()
        .context("--ladder needs --report DIR (the folder for ladder.md, ladder.json, plots and videos)")?;
    wanrt_io::check_output_dir(&report)?;
    let demo = args.model.is_none();
    let src = model_path::resolve(args.model.as_deref())?;
    if !src.join("model_index.json").is_file() {
        bail!(
            "--model {}: not a diffusers model folder (no model_index.json); `wanrt convert` rewrites a release",
            src.display()
        );
    }
    for (flag, v) in [
        ("--frames", args.frames),
        ("--height", args.height),
        ("--width", args.width),
        ("--steps", l.steps),
        ("--videos", l.videos),
        ("--repeat", args.repeat),
        ("--rounds", Some(l.rounds)),
        ("--frames-per-video", l.frames_per_video),
        ("--calib-prompts", l.calib_prompts),
        ("--calib-steps", l.calib_steps),
    ] {
        if v == Some(0) {
            bail!("{flag} must be at least 1");
        }
    }
    if !(l.cache_threshold.is_finite() && l.cache_threshold >= 0.0) {
        bail!("--cache-threshold must be a non-negative number, got {}", l.cache_threshold);
    }
    if l.reference_videos == 0 {
        bail!("--reference-videos must be at least 1");
    }
    let size = crate::optimize::measurement_size(&src, args.frames, args.height, args.width, l.steps)?;
    let rungs = rungs::plan(l.rungs.as_deref(), args.engine.backend, l.cache_threshold)?;
    let evaluator = match (&l.evaluator, demo) {
        (Some(e), _) => Some(e.clone()),
        (None, true) => wanrt_eval::domain::resolve_evaluator(None).ok(),
        (None, false) => None,
    };
    let heldout = evaluator.as_ref().map(|e| e.join("heldout")).filter(|_| demo);
    let entries: Vec<PromptEntry> = match (&l.prompts, &heldout) {
        (Some(p), _) => crate::generate::read_prompt_entries(p, "--prompts")?,
        (None, Some(h)) if h.join("captions.txt").is_file() => {
            crate::generate::read_prompt_entries(&h.join("captions.txt"), "--prompts")?
        }
        _ => wanrt_opt::calibrate::default_prompts().into_iter().map(PromptEntry::text).collect(),
    };
    let entries = with_images(entries, args, &src)?;
    if entries.iter().any(|e| e.image.is_some()) {
        if let Some(flag) = [("--reference-python", &l.reference_python), ("--sdcpp", &l.sdcpp)]
            .iter()
            .find_map(|(f, v)| v.as_ref().map(|_| f))
        {
            bail!("{flag} compares text-to-video runs only; this ladder generates from images");
        }
    }
    let prompts: Vec<String> = entries.iter().map(|e| e.prompt.clone()).collect();
    let bundled_real = heldout.map(|h| h.join("real")).filter(|r| r.is_dir() && l.prompts.is_none());
    let real_by_prompt = l.real.is_none() && bundled_real.is_some();
    let real = l.real.clone().or(bundled_real);
    for (flag, path) in [("--real", &real), ("--evaluator", &l.evaluator), ("--clip", &l.clip)] {
        if let Some(p) = path {
            if !p.is_dir() {
                bail!("{flag} {}: not a folder", p.display());
            }
        }
    }
    for (flag, path) in [
        ("--inception", &l.inception),
        ("--i3d", &l.i3d),
        ("--lpips", &l.lpips),
        ("--reference-python", &l.reference_python),
        ("--sdcpp", &l.sdcpp),
    ] {
        if let Some(p) = path {
            if !p.is_file() {
                bail!("{flag} {}: no such file", p.display());
            }
        }
    }
    let n = l.videos.unwrap_or(prompts.len());
    let (used, seeds) = if n <= prompts.len() { (n, 1) } else { (prompts.len(), n.div_ceil(prompts.len())) };
    let prompts: Vec<String> = prompts.into_iter().take(used).collect();
    let images = entries.into_iter().take(used).map(|e| (e.image, e.last_image)).collect();
    let videos = prompts
        .iter()
        .flat_map(|p| (0..seeds).map(move |k| (p.clone(), k as u64)))
        .map(|(p, k)| (p, l.seed + k))
        .collect();
    let dtype = match args.engine.backend {
        BackendKind::Cpu => match args.engine.dtype {
            crate::engine::DTypeArg::F32 => "f32",
            crate::engine::DTypeArg::Bf16 => "bf16",
            crate::engine::DTypeArg::F16 => "f16",
        },
        // The GPU baseline is bf16, as people run it there.
        BackendKind::Cuda => "bf16",
    };
    Ok(Plan {
        report,
        src,
        rungs,
        size,
        videos,
        prompts,
        images,
        seeds,
        real,
        real_by_prompt,
        evaluator,
        dtype,
        repeat: args.repeat.unwrap_or(3),
        rounds: l.rounds,
    })
}

/// Loads the metric networks given (before any generation: a bad weight file fails first).
fn networks(l: &LadderArgs, plan: &Plan) -> Result<Networks> {
    let lpips = match &l.lpips {
        Some(p) => Some(wanrt_eval::lpips::Lpips::load(l.lpips_net.parse()?, p, None)?),
        None => None,
    };
    let mut inception = l.inception.clone().map(|p| wanrt_eval::fid::LazyInception::new(Some(p)));
    if let Some(net) = inception.as_mut() {
        net.get()?; // loaded now: a bad weight file fails before the ladder's work
    }
    let i3d = l.i3d.as_deref().map(wanrt_eval::i3d::I3d::load).transpose()?;
    let clip = l.clip.as_deref().map(wanrt_eval::clipscore::ClipScorer::load).transpose()?;
    let domain = match &plan.evaluator {
        Some(dir) => {
            let ev = wanrt_eval::domain::DomainEvaluator::load(dir)?;
            let s = plan.size;
            if ev.input_size() == (s.frames, s.height, s.width) {
                Some(ev)
            } else if l.evaluator.is_some() {
                bail!(
                    "--evaluator {} takes {:?} clips (frames, height, width); the ladder generates {}×{}×{}",
                    dir.display(),
                    ev.input_size(),
                    s.frames,
                    s.height,
                    s.width
                );
            } else {
                eprintln!(
                    "note: the bundled domain evaluator takes {:?} clips; not used at this size",
                    ev.input_size()
                );
                None
            }
        }
        None => None,
    };
    Ok(Networks { lpips, inception, i3d, clip, domain })
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    wanrt_io::write_atomic(path, |w| w.write_all(bytes).map_err(|e| wanrt_io::Error::io(path, e)))?;
    Ok(())
}

pub fn run(args: &BenchArgs) -> Result<()> {
    let t0 = Instant::now();
    let l = &args.ladder;
    crate::sysinfo::set_threads(args.engine.threads).context("--threads")?;
    let plan = resolve(args)?;
    let mut nets = networks(l, &plan)?;
    let exe = std::env::current_exe().context("locating the wanrt executable")?;
    let report = &plan.report;
    std::fs::create_dir_all(report).with_context(|| format!("creating {}", report.display()))?;
    let load_before = sysinfo::load_average();

    // The videos' prompt list (generate's batch input) and the frames' captions (metrics' input).
    let prompts_file = report.join("prompts.json");
    write_file(&prompts_file, serde_json::to_string_pretty(&prompts_json(&plan.prompts, &plan.images)?)?.as_bytes())?;
    let frames_root = report.join("frames");
    for d in [&frames_root, &report.join("videos")] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let captions: BTreeMap<String, &str> = plan
        .prompts
        .iter()
        .enumerate()
        .flat_map(|(i, p)| (0..plan.seeds).map(move |k| (format!("{i}_{k}.npy"), p.as_str())))
        .collect();
    let captions_file = frames_root.join("captions.json");
    write_file(&captions_file, serde_json::to_string_pretty(&captions)?.as_bytes())?;

    eprintln!("wanrt ladder: hashing the source model (artifact cache key)…");
    let cache =
        ArtifactCache::open(l.artifact_cache.clone().unwrap_or_else(|| artifacts::default_dir(report)), &plan.src)?;
    // In the cache key: what the artifact is made from. Threads are not (the same artifact results).
    let mut calibration: Vec<String> = [("--calib-prompts", l.calib_prompts), ("--calib-steps", l.calib_steps)]
        .iter()
        .filter_map(|(f, v)| v.map(|v| [f.to_string(), v.to_string()]))
        .flatten()
        .collect();
    // Image models calibrate on the first video's images (the built-in prompts have none).
    calibration.extend(image_flags(&plan));
    let threads: Vec<String> = args.engine.threads.map(|t| vec!["--threads".into(), t.to_string()]).unwrap_or_default();

    let per_rung = plan.videos.len() as u64 + 2;
    let bar = ProgressBar::new(plan.rungs.len() as u64 * (per_rung + plan.rounds as u64));
    bar.set_style(
        ProgressStyle::with_template("wanrt ladder {msg:40} [{bar:30}] {pos}/{len} {elapsed_precise} eta {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    let real = match (&plan.real, plan.real_by_prompt) {
        (Some(all), true) => Some(real_of_prompts(all, plan.prompts.len(), &report.join("real"))?),
        (real, _) => real.clone(),
    };
    let settings = QualitySettings {
        captions: captions_file.clone(),
        real,
        frames_per_video: l.frames_per_video,
        resamples: l.bootstrap,
        seed: l.seed,
    };
    let mut quality = Quality::new(&mut nets, &settings);
    if plan.real.is_some() {
        bar.set_message("real videos: features");
        quality.load_real(&ProgressBar::hidden())?;
    }
    // Without a terminal the bar is hidden: a line per stage keeps a logged run from going silent.
    let log = !std::io::IsTerminal::is_terminal(&std::io::stderr()) && !args.json;
    let stage = |msg: String| {
        if log {
            eprintln!("wanrt ladder [{:.0} s] {msg}", t0.elapsed().as_secs_f64());
        }
        bar.set_message(msg);
    };
    // Phase 1, per rung: its artifact, its videos, their quality.
    let mut measured = Vec::new();
    for (ri, rung) in plan.rungs.iter().enumerate() {
        let base = ri as u64 * per_rung;
        let n = format!("rung {}/{} {}", ri + 1, plan.rungs.len(), rung.name);
        bar.set_position(base);
        stage(format!("{n}: artifact"));
        let (model, cached) = match &rung.optimize {
            None => (plan.src.clone(), None),
            Some(flags) => {
                let (dir, built) = cache.get(&exe, &plan.src, flags, &calibration, &threads)?;
                (dir, Some(!built))
            }
        };
        bar.set_position(base + 1);
        stage(format!("{n}: generating {} videos", plan.videos.len()));
        let gen = generate(&exe, args, &plan, rung, &model, || {
            bar.set_position(base + 1 + count_files(&frames_root.join(&rung.name), "npy") as u64);
        })?;
        stage(format!("{n}: quality"));
        let q = quality.measure(&frames_root.join(&rung.name), &ProgressBar::hidden())?;
        measured.push((model, cached, gen, q));
        bar.set_position(base + per_rung);
    }
    // Phase 2: the transformer step of every rung, in interleaved rounds (forward, then backward,
    // …) so a change of the machine's load during the run falls on every rung alike.
    let mut benches: Vec<Option<serde_json::Value>> = vec![None; plan.rungs.len()];
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); plan.rungs.len()];
    for round in 0..plan.rounds {
        let order: Vec<usize> =
            if round % 2 == 0 { (0..plan.rungs.len()).collect() } else { (0..plan.rungs.len()).rev().collect() };
        for i in order {
            stage(format!("timing round {}/{}: {}", round + 1, plan.rounds, plan.rungs[i].name));
            let b = bench_step(&exe, args, &plan, &plan.rungs[i], &measured[i].0)?;
            times[i].extend(b["transformer_step_all_s"].as_array().into_iter().flatten().filter_map(|v| v.as_f64()));
            benches[i].get_or_insert(b);
            bar.inc(1);
        }
    }
    let mut rows = Vec::new();
    for (i, (rung, (model, cached, gen, q))) in plan.rungs.iter().zip(measured).enumerate() {
        let mut bench = benches[i].take().unwrap_or_default();
        bench["transformer_step_all_s"] = serde_json::json!(times[i]);
        let mut r = row(rung, &model, &plan, &gen, &bench, q);
        r.artifact_cached = cached;
        rows.push(r);
    }
    bar.finish_and_clear();
    let base_step = rows.first().and_then(|r| r.step_seconds);
    let base_denoise = rows.first().and_then(|r| r.denoise_seconds_per_step);
    for r in &mut rows {
        r.speedup = base_step.zip(r.step_seconds).map(|(b, s)| b / s);
        r.denoise_speedup = base_denoise.zip(r.denoise_seconds_per_step).map(|(b, s)| b / s);
    }

    let references = references(l, args, &plan)?;
    let review_command = review_command(&plan);
    let header = LadderHeader {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        model: plan.src.display().to_string(),
        model_sha256: cache.source_sha256.clone(),
        backend: format!("{:?}/{}", args.engine.backend, plan.dtype).to_lowercase(),
        threads: rayon::current_num_threads(),
        machine: sysinfo::machine(),
        load_before,
        load_after: sysinfo::load_average(),
        videos: plan.videos.len(),
        prompts: plan.prompts.len(),
        seeds: plan.seeds,
        frames: plan.size.frames,
        height: plan.size.height,
        width: plan.size.width,
        steps: plan.size.steps,
        seed: l.seed,
        bench_repeats: plan.repeat * plan.rounds,
        bootstrap_resamples: l.bootstrap,
        metrics: metric_names(l, &plan),
        review_command: review_command.clone(),
        wall_seconds: t0.elapsed().as_secs_f64(),
    };
    let json = report::to_json(&header, &rows, &references);
    let md = report::to_markdown(&header, &rows, &references);
    write_file(&report.join("ladder.json"), serde_json::to_string_pretty(&json)?.as_bytes())?;
    write_file(&report.join("ladder.md"), md.as_bytes())?;
    write_file(&report.join("latency.png"), &plot::latency_memory(&rows)?)?;
    write_file(&report.join("quality_speed.png"), &plot::quality_speed(&rows)?)?;
    if !l.keep_frames {
        std::fs::remove_dir_all(&frames_root).ok();
    }
    if args.json {
        crate::outcome::print(&format!("{json}\n"))
    } else {
        crate::outcome::print(&format!(
            "{md}\nReport: {}/ladder.md (and ladder.json, latency.png, quality_speed.png)\nBlind review: {review_command}\n",
            report.display()
        ))
    }
}

/// The bundled real clips of the prompts used (`<i>_<j>.*` for `i < prompts`), copied into
/// `into`: the real side of a Fréchet distance must show the same captions as the videos.
fn real_of_prompts(all: &Path, prompts: usize, into: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(into).with_context(|| format!("creating {}", into.display()))?;
    let entries = std::fs::read_dir(all).with_context(|| format!("listing {}", all.display()))?;
    for e in entries.filter_map(|e| e.ok()) {
        let name = e.file_name().to_string_lossy().to_string();
        let prompt = name.split('_').next().and_then(|i| i.parse::<usize>().ok());
        if prompt.is_some_and(|i| i < prompts) {
            std::fs::copy(e.path(), into.join(&name)).with_context(|| format!("copying {}", e.path().display()))?;
        }
    }
    Ok(into.to_path_buf())
}

fn metric_names(l: &LadderArgs, plan: &Plan) -> Vec<String> {
    let mut m = vec!["psnr".to_string(), "ssim".to_string()];
    for (name, on) in [
        ("lpips", l.lpips.is_some()),
        ("fid", l.inception.is_some()),
        ("fvd", l.i3d.is_some()),
        ("clip_score", l.clip.is_some()),
        ("prompt_accuracy", plan.evaluator.is_some()),
        ("domain_fd", plan.evaluator.is_some()),
    ] {
        if on {
            m.push(name.to_string());
        }
    }
    m
}

/// Engine flags every child shares.
fn engine_flags(args: &BenchArgs, plan: &Plan) -> ChildArgs {
    let backend = match args.engine.backend {
        BackendKind::Cpu => "cpu",
        BackendKind::Cuda => "cuda",
    };
    let c = ChildArgs::default().flag("--backend", backend).flag("--dtype", plan.dtype);
    match args.engine.threads {
        Some(t) => c.flag("--threads", t),
        None => c,
    }
}

/// The prompt entries with their images: an entry's own, else `--image` / `--last-image`. A model
/// that needs images (checked from its configs, before any work) must have them for every prompt.
fn with_images(mut entries: Vec<PromptEntry>, args: &BenchArgs, src: &Path) -> Result<Vec<PromptEntry>> {
    fill_images(&mut entries, args.image.as_deref(), args.last_image.as_deref())?;
    let needed = wanrt_wan::model::required_images(src)?;
    if let Some(i) =
        entries.iter().position(|e| usize::from(e.image.is_some()) + usize::from(e.last_image.is_some()) < needed)
    {
        let what = if needed == 2 { "a first and a last frame" } else { "a first frame" };
        bail!(
            "prompt {i}: this image-to-video model needs {what} for every video: give --image{} (used for every \
             prompt without its own) or a --prompts JSON list with \"image\" entries",
            if needed == 2 { " and --last-image" } else { "" }
        );
    }
    Ok(entries)
}

/// generate's `--prompts` list for the children: plain prompts, or objects naming each prompt's
/// images by absolute path (the file lives in the report folder, not beside the images).
fn prompts_json(prompts: &[String], images: &[(Option<InputImage>, Option<InputImage>)]) -> Result<serde_json::Value> {
    if images.iter().all(|(first, _)| first.is_none()) {
        return Ok(serde_json::json!(prompts));
    }
    let path = |i: &InputImage| -> Result<String> {
        Ok(std::path::absolute(&i.path).with_context(|| format!("{}", i.path.display()))?.display().to_string())
    };
    let items = prompts
        .iter()
        .zip(images)
        .map(|(prompt, (first, last))| {
            let mut item = serde_json::json!({"prompt": prompt});
            if let Some(f) = first {
                item["image"] = path(f)?.into();
            }
            if let Some(l) = last {
                item["last_image"] = path(l)?.into();
            }
            Ok(item)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(serde_json::Value::Array(items))
}

/// `--image` / `--last-image` of the first video (the rungs' calibration and step timing).
fn image_flags(plan: &Plan) -> Vec<String> {
    let Some((first, last)) = plan.images.first() else { return Vec::new() };
    [("--image", first), ("--last-image", last)]
        .into_iter()
        .filter_map(|(flag, image)| image.as_ref().map(|i| [flag.to_string(), i.path.display().to_string()]))
        .flatten()
        .collect()
}

fn size_flags(c: ChildArgs, plan: &Plan) -> ChildArgs {
    c.flag("--frames", plan.size.frames).flag("--height", plan.size.height).flag("--width", plan.size.width)
}

/// One child `wanrt generate` for all of a rung's videos (the model loads once).
fn generate(
    exe: &Path,
    args: &BenchArgs,
    plan: &Plan,
    rung: &Rung,
    model: &Path,
    poll: impl FnMut(),
) -> Result<serde_json::Value> {
    let report = &plan.report;
    let c = ChildArgs::default()
        .arg("generate")
        .path("--model", model)
        .path("--prompts", &report.join("prompts.json"))
        .flag("--videos-per-prompt", plan.seeds)
        .flag("--seed", args.ladder.seed)
        .flag("--steps", plan.size.steps)
        // Explicit: a model's wanrt.json may set a cache threshold the other rungs must not take.
        .flag("--cache-threshold", rung.cache_threshold.unwrap_or(0.0))
        .path("-o", &report.join("videos").join(&rung.name))
        .path("--save-npy", &report.join("frames").join(&rung.name))
        .arg("--json")
        .extend(rung.cuda_graph.then_some("--cuda-graph"))
        .extend(engine_flags(args, plan).0);
    run_json(exe, &size_flags(c, plan), &format!("rung {}: generate", rung.name), poll)
}

/// One child `wanrt bench` timing the rung's transformer step (a graph rung's: its replays).
fn bench_step(exe: &Path, args: &BenchArgs, plan: &Plan, rung: &Rung, model: &Path) -> Result<serde_json::Value> {
    let c = ChildArgs::default()
        .arg("bench")
        .path("--model", model)
        .flag("--repeat", plan.repeat)
        .arg("--skip-vae")
        .arg("--json")
        .extend(rung.cuda_graph.then_some("--cuda-graph"))
        .extend(image_flags(plan))
        .extend(engine_flags(args, plan).0);
    let mut b = run_json(exe, &size_flags(c, plan), "bench", || {})?;
    if rung.cuda_graph {
        b["transformer_step_all_s"] = b["cuda_graph"]["graph_step_all_s"].clone();
    }
    Ok(b)
}

fn row(
    rung: &Rung,
    model: &Path,
    plan: &Plan,
    gen: &serde_json::Value,
    bench: &serde_json::Value,
    q: quality::RungQuality,
) -> RungRow {
    let videos: Vec<&serde_json::Value> = gen["videos"].as_array().map(|v| v.iter().collect()).unwrap_or_default();
    let mean = |f: &dyn Fn(&serde_json::Value) -> Option<f64>| -> Option<f64> {
        let v: Vec<f64> = videos.iter().filter_map(|v| f(v)).collect();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    };
    let mut stages = BTreeMap::new();
    for key in ["text_encoder", "denoising", "vae_decode", "write"] {
        if let Some(m) = mean(&|v| v["timings_s"][key].as_f64()) {
            stages.insert(key.to_string(), m);
        }
    }
    if let Some(load) = gen["load_s"].as_f64() {
        stages.insert("load".into(), load);
    }
    let step_all: Vec<f64> =
        bench["transformer_step_all_s"].as_array().into_iter().flatten().filter_map(|v| v.as_f64()).collect();
    let spread = stats::spread(&step_all);
    let weights =
        gen["transformer_weight_bytes"].as_u64().zip(gen["text_encoder_weight_bytes"].as_u64()).map(|(a, b)| a + b);
    RungRow {
        name: rung.name.clone(),
        label: rung.label.clone(),
        artifact: rung.optimize.as_ref().map(|_| model.display().to_string()),
        artifact_cached: None,
        optimize_flags: rung.optimize.clone().unwrap_or_default(),
        cache_threshold: rung.cache_threshold,
        step_seconds: spread.map(|s| s.median),
        step_spread: spread,
        speedup: None,
        denoise_speedup: None,
        denoise_seconds_per_step: mean(&|v| v["timings_s"]["denoising"].as_f64()).map(|d| d / plan.size.steps as f64),
        transformer_evals_per_video: mean(&|v| v["transformer_evals"].as_f64()),
        end_to_end_seconds: ["text_encoder", "denoising", "vae_decode", "write"]
            .iter()
            .map(|k| stages.get(*k).copied())
            .sum::<Option<f64>>(),
        stages_seconds: stages,
        peak_memory_bytes: gen["peak_rss_bytes"].as_u64(),
        weight_bytes: weights,
        transformer_weight_bytes: gen["transformer_weight_bytes"].as_u64(),
        ops_per_step: bench["transformer_ops_per_step"].as_u64(),
        ops_by_kind: bench["transformer_ops_by_kind"]
            .as_object()
            .map(|o| o.iter().filter_map(|(k, v)| Some((k.clone(), v.as_u64()?))).collect())
            .unwrap_or_default(),
        quality: q,
    }
}

fn references(l: &LadderArgs, args: &BenchArgs, plan: &Plan) -> Result<Vec<reference::ReferenceRow>> {
    let n = l.reference_videos.min(plan.videos.len());
    let job = reference::ReferenceJob {
        model: &plan.src,
        videos: &plan.videos[..n],
        size: [plan.size.frames, plan.size.height, plan.size.width],
        steps: plan.size.steps,
        threads: args.engine.threads,
        cuda: args.engine.backend == BackendKind::Cuda,
    };
    let scratch = tempfile::tempdir().context("creating a temporary folder")?;
    let mut rows = Vec::new();
    if let Some(py) = &l.reference_python {
        eprintln!("wanrt ladder: diffusers reference ({n} videos)…");
        rows.push(reference::diffusers(py, &job, scratch.path())?);
    }
    if let Some(bin) = &l.sdcpp {
        eprintln!("wanrt ladder: stable-diffusion.cpp reference ({n} videos)…");
        rows.push(reference::sdcpp(bin, &l.sdcpp_arg, &job, scratch.path())?);
    }
    Ok(rows)
}

/// The `wanrt review serve` command of a blind study: every rung's videos against the baseline's.
fn review_command(plan: &Plan) -> String {
    let quote = |p: &Path| {
        let s = p.display().to_string();
        if s.chars().all(|c| c.is_ascii_alphanumeric() || "/._-+=:".contains(c)) {
            s
        } else {
            format!("'{}'", s.replace('\'', "'\\''"))
        }
    };
    let videos = plan.report.join("videos");
    let variants: Vec<String> = plan
        .rungs
        .iter()
        .map(|r| quote(&PathBuf::from(format!("{}={}", r.name, videos.join(&r.name).display()))))
        .collect();
    format!(
        "wanrt review serve --study ladder --variants {} --prompts {} --db {}",
        variants.join(" "),
        quote(&videos.join("baseline").join("prompts.json")),
        quote(&plan.report.join("review.sqlite"))
    )
}
