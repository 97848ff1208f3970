//! `wanrt generate`: one prompt → one video, or a prompts file → a folder of
//! videos plus `prompts.json` ready for `wanrt eval clipscore`.

use crate::engine::EngineArgs;
use crate::{model_path, progress::Bars, sysinfo};
use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;
use wanrt_media::{Mp4Options, Video};
use wanrt_nn::{HostTensor, Module};
use wanrt_wan::model::WanModel;
use wanrt_wan::pipeline::{GenerateOutput, GenerateParams};
use wanrt_wan::scheduler::SchedulerKind;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum SchedulerArg {
    Unipc,
    Euler,
}

#[derive(Args, Debug)]
#[command(after_help = "Defaults come from wanrt.json beside the model, else diffusers' WanPipeline \
(480×832, 81 frames, 50 steps, guidance 5.0, max_sequence_length 512, the model's scheduler and shift).\n\
Examples:\n  wanrt generate --prompt \"a green square moves right\" -o out.mp4\n  \
wanrt generate --model DIR --prompt \"…\" --noise noise.npy --save-npy frames.npy\n  \
wanrt generate --prompts prompts.txt --videos-per-prompt 2 -o videos/")]
pub struct GenerateArgs {
    /// Model folder (diffusers or original Wan release layout); default: the bundled demo model.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Text prompt.
    #[arg(long, required_unless_present = "prompts", conflicts_with = "prompts")]
    pub prompt: Option<String>,
    /// File of prompts: one per line, or a JSON list of strings (batch mode; needs -o OUT_DIR/).
    #[arg(long)]
    pub prompts: Option<PathBuf>,
    /// Videos per prompt in batch mode; video k uses seed + k.
    #[arg(long, default_value_t = 1)]
    pub videos_per_prompt: usize,
    /// Negative prompt for classifier-free guidance.
    #[arg(long)]
    pub negative_prompt: Option<String>,
    /// Number of frames (4k+1; others are rounded down with a warning).
    #[arg(long)]
    pub frames: Option<usize>,
    /// Height in pixels (multiple of 16).
    #[arg(long)]
    pub height: Option<usize>,
    /// Width in pixels (multiple of 16).
    #[arg(long)]
    pub width: Option<usize>,
    /// Denoising steps.
    #[arg(long)]
    pub steps: Option<usize>,
    /// Classifier-free guidance scale; ≤ 1 (negative values included) disables CFG (one
    /// transformer pass per step).
    #[arg(long, allow_negative_numbers = true)]
    pub guidance: Option<f64>,
    /// Flow shift, a positive number (default: the model's configured shift).
    #[arg(long, allow_negative_numbers = true)]
    pub shift: Option<f64>,
    /// Sampler (default: the model's scheduler config).
    #[arg(long, value_enum)]
    pub scheduler: Option<SchedulerArg>,
    /// Seed of wanrt's own RNG (not torch's: use --noise to reproduce a diffusers run).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Initial latents: float32 .npy of shape (1, z_dim, T', H', W'); sizes are inferred from it.
    #[arg(long)]
    pub noise: Option<PathBuf>,
    /// Text length the prompt is padded/truncated to.
    #[arg(long)]
    pub max_sequence_length: Option<usize>,
    /// Step cache (TeaCache-style): skip the transformer blocks while the first block's modulated
    /// input changed by less than T (accumulated relative L1) since the last full step; 0 = off
    /// (default: the model's wanrt.json, else 0). Typical: 0.05–0.3.
    #[arg(long, allow_negative_numbers = true)]
    pub cache_threshold: Option<f64>,
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Output: OUT.mp4, OUT.gif, or OUT_DIR/ for PNG frames (default wanrt-<timestamp>.mp4).
    #[arg(short = 'o', long)]
    pub output: Option<PathBuf>,
    /// Also write the decoded frames as float32 (F, H, W, 3) in [0, 1].
    #[arg(long)]
    pub save_npy: Option<PathBuf>,
    /// Frames per second of MP4/GIF output (default: the model's, else 16).
    #[arg(long)]
    pub fps: Option<f64>,
    /// Print one JSON object on stdout instead of a table.
    #[arg(long)]
    pub json: bool,
}

fn read_noise(path: &Path) -> Result<HostTensor> {
    let arr = wanrt_io::read_npy(path)?;
    if arr.dtype() != wanrt_io::NpyDType::F32 {
        bail!("{}: noise must be float32, found {:?}", path.display(), arr.dtype());
    }
    if arr.shape().len() != 5 || arr.shape()[0] != 1 {
        bail!("{}: noise must have shape (1, z_dim, T, H, W), found {:?}", path.display(), arr.shape());
    }
    Ok(HostTensor::new(arr.shape().to_vec(), arr.to_f32_vec())?)
}

fn read_prompts(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read prompts", path.display()))?;
    let prompts: Vec<String> = if text.trim_start().starts_with('[') {
        serde_json::from_str(&text).with_context(|| format!("{}: expected a JSON list of strings", path.display()))?
    } else {
        text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect()
    };
    if prompts.is_empty() {
        bail!("{}: no prompts found", path.display());
    }
    Ok(prompts)
}

fn video_of(out: &GenerateOutput) -> Result<Video> {
    let &[f, h, w, _] = out.video.shape() else { bail!("internal: video shape {:?}", out.video.shape()) };
    Ok(Video::from_f32(f, h, w, out.video.data())?)
}

pub fn run(args: GenerateArgs) -> Result<()> {
    let opts = args.engine.load_options()?;
    if args.videos_per_prompt == 0 {
        bail!("--videos-per-prompt must be at least 1");
    }
    let batch_prompts = args.prompts.as_deref().map(read_prompts).transpose()?;
    if batch_prompts.is_some() {
        match &args.output {
            Some(o) if !o.extension().is_some_and(|e| e == "mp4" || e == "gif") => {}
            _ => bail!("--prompts needs -o OUT_DIR/ (a folder for <i>_<k>.mp4 and prompts.json)"),
        }
        if args.noise.is_some() || args.save_npy.is_some() {
            bail!("--noise and --save-npy apply to a single --prompt, not to --prompts");
        }
    }
    let noise = args.noise.as_deref().map(read_noise).transpose()?;

    let dir = model_path::resolve(args.model.as_deref())?;
    let t_load = Instant::now();
    if let Some(t) = args.cache_threshold {
        if !(t.is_finite() && t >= 0.0) {
            bail!("--cache-threshold must be a non-negative number, got {t}");
        }
    }
    let mut bars = Bars::new("wanrt", args.json);
    let model = WanModel::load_with(&dir, opts, |stage| {
        if !args.json {
            eprintln!("wanrt loading {stage}…");
        }
    })
    .with_context(|| format!("loading model {}", dir.display()))?;
    let load_secs = t_load.elapsed().as_secs_f64();
    if !args.json {
        model.loras.iter().for_each(|l| eprintln!("wanrt {l}"));
    }
    let fps = args.fps.or(model.defaults.fps).unwrap_or(16.0);
    if fps.is_nan() || fps <= 0.0 {
        bail!("--fps must be positive");
    }
    let mp4 = Mp4Options { fps };

    let base = GenerateParams {
        prompt: String::new(),
        negative_prompt: args.negative_prompt.clone(),
        height: args.height,
        width: args.width,
        num_frames: args.frames,
        steps: args.steps,
        guidance: args.guidance,
        shift: args.shift,
        scheduler: args.scheduler.map(|s| match s {
            SchedulerArg::Unipc => SchedulerKind::UniPc,
            SchedulerArg::Euler => SchedulerKind::Euler,
        }),
        max_sequence_length: args.max_sequence_length,
        noise,
        seed: args.seed,
        cache_threshold: args.cache_threshold,
    };

    let mut runs = Vec::new();
    match &batch_prompts {
        None => {
            let prompt = args.prompt.clone().expect("clap requires --prompt without --prompts");
            let out_path = args.output.clone().unwrap_or_else(default_output);
            runs.push((GenerateParams { prompt, ..base.clone() }, out_path));
        }
        Some(prompts) => {
            let out_dir = args.output.clone().expect("checked above");
            std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
            for (i, p) in prompts.iter().enumerate() {
                for k in 0..args.videos_per_prompt {
                    let params = GenerateParams { prompt: p.clone(), seed: args.seed + k as u64, ..base.clone() };
                    runs.push((params, out_dir.join(format!("{i}_{k}.mp4"))));
                }
            }
        }
    }

    let mut reports = Vec::new();
    let mut captions = BTreeMap::new();
    for (n, (params, out_path)) in runs.iter().enumerate() {
        if runs.len() > 1 && !args.json {
            eprintln!("wanrt video {}/{}: {}", n + 1, runs.len(), out_path.display());
        }
        let out = model.generate(params, &mut bars)?;
        bars.finish();
        for w in &out.settings.warnings {
            eprintln!("warning: {w}");
        }
        let t_write = Instant::now();
        let video = video_of(&out)?;
        wanrt_media::write_video(out_path, &video, &mp4)?;
        if let Some(npy) = &args.save_npy {
            let s = out.video.shape();
            wanrt_media::write_npy_f32(npy, [s[0], s[1], s[2], s[3]], out.video.data())?;
        }
        let write_secs = t_write.elapsed().as_secs_f64();
        let mut timings: BTreeMap<String, f64> = out.timings.iter().cloned().collect();
        timings.insert("write".into(), write_secs);
        if let Some(name) = out_path.file_name() {
            captions.insert(name.to_string_lossy().to_string(), params.prompt.clone());
        }
        reports.push(serde_json::json!({
            "output": out_path,
            "npy": args.save_npy,
            "prompt": params.prompt,
            "settings": out.settings,
            "timings_s": timings,
            "transformer_evals": out.transformer_evals,
            "steps_skipped": out.steps_skipped,
        }));
    }
    if let (Some(_), Some(out_dir)) = (&batch_prompts, &args.output) {
        let json = serde_json::to_vec_pretty(&captions)?;
        wanrt_io::write_atomic(out_dir.join("prompts.json"), |w| {
            w.write_all(&json).map_err(|e| wanrt_io::Error::io(out_dir.join("prompts.json"), e))
        })?;
    }
    let peak = sysinfo::peak_rss_bytes();
    let summary = serde_json::json!({
        "model": dir,
        "layout": format!("{:?}", model.layout).to_lowercase(),
        "load_s": load_secs,
        "optimized": model.artifact.is_some(),
        "engine": args.engine.describe(),
        "transformer_weight_bytes": model.transformer.weight_bytes(),
        "loras": model.loras.iter().map(|l| l.to_string()).collect::<Vec<_>>(),
        "text_encoder_weight_bytes": model.text_encoder.weight_bytes(),
        "videos": reports,
        "peak_rss_bytes": peak,
    });
    if args.json {
        println!("{summary}");
    } else {
        print_table(&summary, load_secs, peak);
    }
    Ok(())
}

fn default_output() -> PathBuf {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    PathBuf::from(format!("wanrt-{secs}.mp4"))
}

fn print_table(summary: &serde_json::Value, load_secs: f64, peak: Option<u64>) {
    println!("{:<14} {:>10}", "stage", "seconds");
    println!("{:<14} {:>10.2}", "load", load_secs);
    for v in summary["videos"].as_array().into_iter().flatten() {
        if let Some(t) = v["timings_s"].as_object() {
            for key in ["text_encoder", "denoising", "vae_decode", "write"] {
                if let Some(s) = t.get(key).and_then(|x| x.as_f64()) {
                    println!("{key:<14} {s:>10.2}");
                }
            }
        }
        if let Some(skipped) = v["steps_skipped"].as_u64().filter(|&n| n > 0) {
            println!("step cache: {skipped} of {} steps reused the cached residual", v["settings"]["steps"]);
        }
        let s = &v["settings"];
        println!(
            "wrote {} ({} frames {}×{}, {} steps, guidance {}, {} shift {})",
            v["output"].as_str().unwrap_or("?"),
            s["num_frames"],
            s["height"],
            s["width"],
            s["steps"],
            s["guidance"],
            s["scheduler"].as_str().unwrap_or("?"),
            s["shift"]
        );
    }
    if let Some(p) = peak {
        println!("peak memory {}", sysinfo::format_bytes(p));
    }
}
