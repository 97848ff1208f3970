//! `wanrt optimize`: calibrate, prune and quantize a model into an artifact
//! folder, then measure it against the source model — the report table
//! (Markdown + JSON) composed here from wanrt-opt and wanrt-eval.

use crate::generate::{fill_images, read_prompt_entries, PromptEntry};
use crate::{model_path, sysinfo};
use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;
use wanrt_opt::calibrate::{default_prompts, parse_prompts, CalibPrompt, CalibSettings};
use wanrt_opt::optimize::OptimizeProgress;
use wanrt_opt::{ActivationChoice, OptimizeOptions, OptimizeSummary, QuantMode};
use wanrt_wan::lora::{LoraSpec, Unmatched};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum QuantArg {
    None,
    Int8,
    #[value(name = "int8-weight")]
    Int8Weight,
    Fp8,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum AttnQuantArg {
    Int8,
    None,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum TextEncoderArg {
    None,
    Int8Weight,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ActivationArg {
    Dynamic,
    Static,
}

#[derive(Args, Debug)]
#[command(after_help = "Quantization modes: int8-weight = W8A16 (int8 weights, f32 compute); int8 = W8A8 \
(int8 weights and per-token int8 activations, SmoothQuant α=0.5, exact int32 GEMM); fp8 = E4M3 weights and \
activations (per-channel weight scales; emulated on CPU). --attn-quant int8 runs self-attention with \
SageAttention-style int8 Q·Kᵀ and 16-bit integer P·V. A release-layout --model is converted first. \
Pruning removes FFN channels / heads ranked by calibration importance.\n\
The report (ARTIFACT/optimize-report.md and .json) generates the same video with the source model and \
the artifact in child processes and compares them: latency, weight bytes, peak memory, PSNR/SSIM.\n\
Examples:\n  wanrt optimize --quant int8 -o demo-int8/\n  \
wanrt optimize --model DIR --quant int8 --attn-quant int8 --prune-ffn 0.2 --max-error 0.05 -o out/")]
pub struct OptimizeArgs {
    /// Source model folder (diffusers or original release layout; a release is converted first,
    /// into a staging folder beside the output); default: the bundled demo model.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Quantization of the transformer's block linears.
    #[arg(long, value_enum, default_value = "int8")]
    pub quant: QuantArg,
    /// 8-bit self-attention (SageAttention-style).
    #[arg(long, value_enum, default_value = "none")]
    pub attn_quant: AttnQuantArg,
    /// Text encoder weights: int8-weight stores its linear layers as per-channel int8 codes
    /// (W8A16: a quarter of f32, half of bf16; UMT5-XXL is most of Wan2.1-1.3B's memory).
    #[arg(long, value_enum, default_value = "none")]
    pub text_encoder: TextEncoderArg,
    /// Activation scales of int8/fp8 layers: per token at run time, or calibrated per layer.
    #[arg(long, value_enum, default_value = "dynamic")]
    pub activations: ActivationArg,
    /// SmoothQuant migration strength α for int8 (0 disables smoothing).
    #[arg(long, default_value_t = 0.5)]
    pub smooth_alpha: f32,
    /// Fraction of FFN hidden channels removed per block (0 ≤ R < 1).
    #[arg(long, default_value_t = 0.0)]
    pub prune_ffn: f64,
    /// Self-attention heads removed per block.
    #[arg(long, default_value_t = 0)]
    pub prune_heads: usize,
    /// Keep layers whose tensor names match these globs in full precision (`blocks.0.*`, `*.attn2.*`).
    #[arg(long, num_args = 1..)]
    pub keep_precision: Vec<String>,
    /// Keep the most sensitive layers in full precision until the transformer's relative output
    /// error on the calibration inputs is at most E (measures every layer's sensitivity).
    #[arg(long)]
    pub max_error: Option<f64>,
    /// Measure and report every layer's sensitivity (implied by --max-error).
    #[arg(long)]
    pub sensitivity: bool,
    /// Calibration prompts: one per line (`#` starts a comment), or a JSON list of prompts and/or
    /// objects {"prompt", "image", "last_image", "seed"} as `generate --prompts` takes them (images
    /// relative to the file's folder) — how an image-to-video model is calibrated on its kind of
    /// input. Default: 8 built-in prompts.
    #[arg(long)]
    pub calib: Option<PathBuf>,
    /// First frame for every calibration prompt and report video without its own (image-to-video
    /// models; PNG/JPEG).
    #[arg(long)]
    pub image: Option<PathBuf>,
    /// Last frame beside --image (first-last-frame models).
    #[arg(long, requires = "image")]
    pub last_image: Option<PathBuf>,
    /// Use at most N calibration prompts.
    #[arg(long, default_value_t = 8)]
    pub calib_prompts: usize,
    /// Denoising steps per calibration prompt.
    #[arg(long, default_value_t = 10)]
    pub calib_steps: usize,
    /// Calibration and report video size; default: the model's wanrt.json, else 17×160×160 (the
    /// report's child generations get these sizes explicitly, never diffusers' 81×480×832).
    #[arg(long)]
    pub frames: Option<usize>,
    #[arg(long)]
    pub height: Option<usize>,
    #[arg(long)]
    pub width: Option<usize>,
    /// Transformer inputs kept to measure output error.
    #[arg(long, default_value_t = 8)]
    pub samples: usize,
    /// Skip the fidelity/latency report.
    #[arg(long)]
    pub no_report: bool,
    /// Denoising steps of the report videos (default: the model's wanrt.json, else 20 — not
    /// diffusers' 50: the report runs every variant).
    #[arg(long)]
    pub report_steps: Option<usize>,
    /// Report videos per variant (calibration prompts in turn, seeds seed, seed+1, …); fidelity
    /// is averaged over them — one video of a small model can flip on a tiny perturbation.
    #[arg(long, default_value_t = 1)]
    pub report_videos: usize,
    /// Seed of the report videos and calibration noise.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// CPU threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Print one JSON object on stdout instead of a table.
    #[arg(long)]
    pub json: bool,
    /// LoRA baked into the artifact at SCALE (default 1; repeatable): merged into the transformer's
    /// float weights before calibration, so quantized layers include it; recorded in the manifest
    /// (file, size, SHA-256, scale, rank, alpha). The report's source runs with the same --lora.
    #[arg(long, value_name = "FILE[:SCALE]", value_parser = LoraSpec::parse)]
    pub lora: Vec<LoraSpec>,
    /// LoRA baked into transformer_2, Wan2.2 A14B's low-noise expert (repeatable; see
    /// `generate --lora-2`); recorded in the manifest as `loras_2`.
    #[arg(long = "lora-2", value_name = "FILE[:SCALE]", value_parser = LoraSpec::parse)]
    pub lora_2: Vec<LoraSpec>,
    /// LoRA keys that match no transformer layer: `error` refuses the file naming them; `warn`
    /// skips them and prints one line with their count and first names.
    #[arg(long, value_name = "error|warn", default_value = "error", value_parser = Unmatched::parse)]
    pub lora_unmatched: Unmatched,
    /// Artifact folder to create (must not exist or be empty).
    #[arg(short = 'o', long)]
    pub output: PathBuf,
}

struct Bar {
    bar: Option<ProgressBar>,
    quiet: bool,
}

impl OptimizeProgress for Bar {
    fn stage(&mut self, name: &str) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
        if !self.quiet {
            eprintln!("wanrt optimize: {name}…");
        }
    }
    fn progress(&mut self, done: usize, total: usize) {
        if self.quiet {
            return;
        }
        let bar = self.bar.get_or_insert_with(|| {
            let b = ProgressBar::new(total as u64);
            b.set_style(ProgressStyle::with_template("  {bar:40} {pos}/{len} [{elapsed} < {eta}]").expect("valid"));
            b
        });
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    }
}

/// Report videos' steps when neither --report-steps nor wanrt.json give them.
const REPORT_STEPS: usize = 20;
/// Report (and calibration) size when neither the flags nor wanrt.json give it.
const REPORT_SIZE: [usize; 3] = [17, 160, 160];

/// The size and steps of measurement generations (optimize's report, the bench ladder): always
/// explicit in the child `generate`, so a model without wanrt.json is never measured at
/// diffusers' 81×480×832 and 50 steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportSize {
    pub frames: usize,
    pub height: usize,
    pub width: usize,
    pub steps: usize,
}

/// The flags' values, else the model's wanrt.json, else 17×160×160 and 20 steps.
pub fn measurement_size(
    src: &Path,
    frames: Option<usize>,
    height: Option<usize>,
    width: Option<usize>,
    steps: Option<usize>,
) -> Result<ReportSize> {
    let d = wanrt_wan::model::ModelDefaults::read(src)?;
    Ok(ReportSize {
        frames: frames.or(d.num_frames).unwrap_or(REPORT_SIZE[0]),
        height: height.or(d.height).unwrap_or(REPORT_SIZE[1]),
        width: width.or(d.width).unwrap_or(REPORT_SIZE[2]),
        steps: steps.or(d.num_inference_steps).unwrap_or(REPORT_STEPS),
    })
}

fn report_size(args: &OptimizeArgs, src: &Path) -> Result<ReportSize> {
    measurement_size(src, args.frames, args.height, args.width, args.report_steps)
}

pub fn run(args: OptimizeArgs) -> Result<()> {
    sysinfo::set_threads(args.threads).context("--threads")?;
    let src = model_path::resolve(args.model.as_deref())?;
    // Before any work: the artifact folder and the sizes (the quantization options are checked
    // by `OptimizeOptions::validate`, also before anything loads).
    wanrt_opt::optimize::check_output(&src, &args.output)?;
    for (flag, v) in [
        ("--frames", args.frames),
        ("--height", args.height),
        ("--width", args.width),
        ("--report-steps", args.report_steps),
    ] {
        if v == Some(0) {
            bail!("{flag} must be at least 1");
        }
    }
    let prompts = calibration_inputs(&args)?;
    if args.calib_prompts == 0 || args.calib_steps == 0 || args.samples == 0 || args.report_videos == 0 {
        bail!("--calib-prompts, --calib-steps, --samples and --report-videos must be at least 1");
    }
    let size = report_size(&args, &src)?;
    let opts = OptimizeOptions {
        quant: match args.quant {
            QuantArg::None => QuantMode::None,
            QuantArg::Int8 => QuantMode::Int8,
            QuantArg::Int8Weight => QuantMode::Int8Weight,
            QuantArg::Fp8 => QuantMode::Fp8,
        },
        activation: match args.activations {
            ActivationArg::Dynamic => ActivationChoice::Dynamic,
            ActivationArg::Static => ActivationChoice::Static,
        },
        smooth_alpha: (args.smooth_alpha > 0.0).then_some(args.smooth_alpha),
        attn_quant: matches!(args.attn_quant, AttnQuantArg::Int8),
        prune_ffn: args.prune_ffn,
        prune_heads: args.prune_heads,
        keep_precision: args.keep_precision.clone(),
        max_error: args.max_error,
        sensitivity: args.sensitivity,
        text_encoder_int8: matches!(args.text_encoder, TextEncoderArg::Int8Weight),
        loras: args.lora.clone(),
        loras_2: args.lora_2.clone(),
        lora_unmatched: args.lora_unmatched,
    };
    let prompts: Vec<PromptEntry> = prompts.into_iter().take(args.calib_prompts).collect();
    let calib = CalibSettings {
        prompts: prompts
            .iter()
            .map(|e| CalibPrompt {
                prompt: e.prompt.clone(),
                image: e.image.as_ref().map(|i| i.rgb.clone()),
                last_image: e.last_image.as_ref().map(|i| i.rgb.clone()),
            })
            .collect(),
        frames: args.frames,
        height: args.height,
        width: args.width,
        steps: args.calib_steps,
        seed: args.seed,
        max_samples: args.samples,
    };
    let mut bar = Bar { bar: None, quiet: args.json };
    let summary = wanrt_opt::optimize(&src, &args.output, &opts, &calib, &mut bar).context("optimizing the model")?;
    bar.stage("artifact written");
    summary.lora_warnings.iter().for_each(|w| eprintln!("warning: {w}"));
    if !args.json {
        summary.loras.iter().for_each(|l| eprintln!("wanrt optimize: baked {l}"));
        summary.loras_2.iter().for_each(|l| eprintln!("wanrt optimize: baked into transformer_2 {l}"));
    }

    let variants = if args.no_report {
        Vec::new()
    } else {
        bar.stage("report: generating with the source model and the artifact");
        let videos: Vec<(PromptEntry, u64)> = (0..args.report_videos)
            .map(|i| {
                let entry = &prompts[i % prompts.len()];
                (entry.clone(), entry.seed.unwrap_or(args.seed + i as u64))
            })
            .collect();
        let work = tempfile::tempdir().context("creating a temporary folder")?;
        let source = if args.lora.is_empty() { "source (f32)" } else { "source (f32) + --lora" };
        let base = measure_variant(source, &src, &videos, &args, size, &work.path().join("source"))?;
        let opt = measure_variant("optimized", &args.output, &videos, &args, size, &work.path().join("optimized"))?;
        let reference = base.dir.clone();
        vec![finish_variant(base, None, 0.0)?, finish_variant(opt, Some(&reference), summary.transformer_error)?]
    };
    let report = serde_json::json!({
        "artifact": args.output,
        "source": src,
        "summary": summary,
        "variants": variants,
    });
    let markdown = render_markdown(&summary, &variants);
    if !args.no_report {
        write_file(&args.output.join("optimize-report.json"), serde_json::to_string_pretty(&report)?.as_bytes())?;
        write_file(&args.output.join("optimize-report.md"), markdown.as_bytes())?;
    }
    if args.json {
        crate::outcome::print(&format!("{report}\n"))
    } else {
        crate::outcome::print(&markdown)
    }
}

/// The calibration prompts (`--calib`, else the built-in ones), each with its images: an entry's
/// own, else `--image` / `--last-image` (a pair belongs together, as in `generate --prompts`).
/// Every image is read here, before the model loads.
fn calibration_inputs(args: &OptimizeArgs) -> Result<Vec<PromptEntry>> {
    let mut entries = match &args.calib {
        Some(p) => {
            let text = std::fs::read_to_string(p).with_context(|| format!("{}: cannot read prompts", p.display()))?;
            if text.trim_start().starts_with('[') {
                read_prompt_entries(p, "--calib")?
            } else {
                parse_prompts(&text).into_iter().map(PromptEntry::text).collect()
            }
        }
        None => default_prompts().into_iter().map(PromptEntry::text).collect(),
    };
    if entries.is_empty() {
        bail!("--calib: no prompts found (one prompt per line, or a JSON list, expected)");
    }
    fill_images(&mut entries, args.image.as_deref(), args.last_image.as_deref())?;
    Ok(entries)
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    wanrt_io::write_atomic(path, |w| w.write_all(bytes).map_err(|e| wanrt_io::Error::io(path, e)))?;
    Ok(())
}

/// The report runs of one variant.
struct Measured {
    name: String,
    /// Holds `<i>.npy`, the decoded frames of video `i`.
    dir: PathBuf,
    /// Per video: generate's JSON and the child's wall time.
    runs: Vec<(serde_json::Value, f64)>,
}

/// Generates the report videos with `model`, each in a child `wanrt generate`
/// (a fresh process, so its peak memory is its own).
fn measure_variant(
    name: &str,
    model: &Path,
    videos: &[(PromptEntry, u64)],
    args: &OptimizeArgs,
    size: ReportSize,
    dir: &Path,
) -> Result<Measured> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let is_artifact = model == args.output;
    let exe = std::env::current_exe().context("locating the wanrt executable")?;
    let mut runs = Vec::new();
    for (i, (entry, seed)) in videos.iter().enumerate() {
        let mut cmd = Command::new(&exe);
        cmd.arg("generate").arg("--model").arg(model).arg("--prompt").arg(&entry.prompt);
        cmd.arg("--seed").arg(seed.to_string());
        for (flag, image) in [("--image", &entry.image), ("--last-image", &entry.last_image)] {
            if let Some(image) = image {
                cmd.arg(flag).arg(&image.path);
            }
        }
        cmd.arg("-o").arg(dir.join(format!("{i}.mp4"))).arg("--save-npy").arg(dir.join(format!("{i}.npy")));
        cmd.arg("--json");
        // Always explicit: a model without wanrt.json must not fall back to diffusers' defaults.
        for (flag, v) in
            [("--frames", size.frames), ("--height", size.height), ("--width", size.width), ("--steps", size.steps)]
        {
            cmd.arg(flag).arg(v.to_string());
        }
        if let Some(t) = args.threads {
            cmd.arg("--threads").arg(t.to_string());
        }
        // The source runs with the adapters the artifact has baked in (an artifact takes none).
        if !is_artifact {
            for (flag, specs) in [("--lora", &args.lora), ("--lora-2", &args.lora_2)] {
                for l in specs {
                    cmd.arg(flag).arg(format!("{}:{}", l.path.display(), l.scale));
                }
            }
            cmd.arg("--lora-unmatched").arg(if args.lora_unmatched == Unmatched::Warn { "warn" } else { "error" });
        }
        let t0 = Instant::now();
        let out = cmd.output().context("running wanrt generate for the report")?;
        let wall_s = t0.elapsed().as_secs_f64();
        if !out.status.success() {
            bail!(
                "report: generating with {} failed: {}",
                model.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).context("report: reading generate's JSON")?;
        std::fs::remove_file(dir.join(format!("{i}.mp4"))).ok();
        runs.push((json, wall_s));
    }
    Ok(Measured { name: name.to_string(), dir: dir.to_path_buf(), runs })
}

fn mean(v: impl Iterator<Item = f64>) -> f64 {
    let (s, n) = v.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    s / n.max(1) as f64
}

fn finish_variant(m: Measured, reference: Option<&Path>, rel_err: f64) -> Result<serde_json::Value> {
    let step_s = mean(m.runs.iter().map(|(j, _)| {
        let v = &j["videos"][0];
        v["timings_s"]["denoising"].as_f64().unwrap_or(f64::NAN) / v["settings"]["steps"].as_f64().unwrap_or(1.0)
    }));
    let (psnr, ssim, items) = match reference {
        Some(r) => {
            let rep = wanrt_eval::compare::compare(r, &m.dir, None, None, &ProgressBar::hidden())
                .context("report: comparing the videos")?;
            (Some(rep.psnr), Some(rep.ssim), Some(serde_json::to_value(&rep.items)?))
        }
        None => (None, None, None),
    };
    let first = &m.runs[0].0;
    Ok(serde_json::json!({
        "variant": m.name,
        "videos": m.runs.len(),
        "transformer_step_s": step_s,
        "end_to_end_s": mean(m.runs.iter().map(|r| r.1)),
        "load_s": mean(m.runs.iter().map(|(j, _)| j["load_s"].as_f64().unwrap_or(f64::NAN))),
        "transformer_weight_bytes": first["transformer_weight_bytes"],
        "text_encoder_weight_bytes": first["text_encoder_weight_bytes"],
        "peak_rss_bytes": m.runs.iter().filter_map(|(j, _)| j["peak_rss_bytes"].as_u64()).max(),
        "psnr_db": psnr,
        "ssim": ssim,
        "items": items,
        "transformer_rel_error": rel_err,
        "steps": first["videos"][0]["settings"]["steps"],
    }))
}

fn fmt_opt(v: &serde_json::Value, f: impl Fn(f64) -> String) -> String {
    v.as_f64().map_or_else(|| "—".to_string(), f)
}

fn render_markdown(s: &OptimizeSummary, variants: &[serde_json::Value]) -> String {
    let mut md = String::from("# wanrt optimize report\n\n");
    let settings = &s.manifest.settings;
    md += &format!("Settings: `{settings}`\n\n");
    let count = |f: wanrt_wan::artifact::LayerFormat| s.manifest.layers.iter().filter(|l| l.format == f).count();
    use wanrt_wan::artifact::LayerFormat as F;
    md += &format!(
        "Layers: {} int8 (W8A8), {} int8-weight, {} fp8, {} full precision; 8-bit self-attention in {} blocks.\n",
        count(F::Int8),
        count(F::Int8Weight),
        count(F::Fp8),
        count(F::F32),
        s.manifest.int8_attention_blocks.len()
    );
    md += &format!(
        "Transformer: {} → {} parameters, {} → {} of weights; relative output error on the calibration inputs {:.3e} \
         (pruning alone {:.3e}). Calibration {:.1} s, optimize total {:.1} s.\n\n",
        s.params_before,
        s.params_after,
        sysinfo::format_bytes(s.weight_bytes_before as u64),
        sysinfo::format_bytes(s.weight_bytes_after as u64),
        s.transformer_error,
        s.pruning_error,
        s.calibration_s,
        s.total_s
    );
    if let (Some(e), Some(second)) = (s.transformer_2_error, &s.manifest.transformer_2) {
        let quantized = second.layers.iter().filter(|l| l.format != F::F32).count();
        md += &format!(
            "Second expert (transformer_2, calibrated on the steps below the boundary): {quantized} of {} layers \
             quantized; relative output error on its calibration inputs {e:.3e}.\n\n",
            second.layers.len()
        );
    }
    for l in &s.loras {
        md += &format!("Baked in: {l}.\n\n");
    }
    for l in &s.loras_2 {
        md += &format!("Baked into transformer_2: {l}.\n\n");
    }
    if let Some(t) = &s.text_encoder {
        md += &format!(
            "Text encoder (int8-weight): {} → {} of weights; relative error of the prompt embeddings on the \
             calibration prompts {:.3e}.\n\n",
            sysinfo::format_bytes(t.weight_bytes_before as u64),
            sysinfo::format_bytes(t.weight_bytes_after as u64),
            t.embedding_error
        );
    }
    if !variants.is_empty() {
        md += "| variant | transformer step (s) | end-to-end (s) | transformer weights | text encoder weights | peak memory | PSNR (dB) | SSIM | transformer rel. error |\n";
        md += "|---|---|---|---|---|---|---|---|---|\n";
        for v in variants {
            let bytes = |x: &serde_json::Value| fmt_opt(x, |b| sysinfo::format_bytes(b as u64));
            md += &format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                v["variant"].as_str().unwrap_or("?"),
                fmt_opt(&v["transformer_step_s"], |x| format!("{x:.3}")),
                fmt_opt(&v["end_to_end_s"], |x| format!("{x:.2}")),
                bytes(&v["transformer_weight_bytes"]),
                bytes(&v["text_encoder_weight_bytes"]),
                bytes(&v["peak_rss_bytes"]),
                fmt_opt(&v["psnr_db"], |x| format!("{x:.2}")),
                fmt_opt(&v["ssim"], |x| format!("{x:.4}")),
                fmt_opt(&v["transformer_rel_error"], |x| format!("{x:.2e}")),
            );
        }
        md += &format!(
            "\nPSNR/SSIM: final frames of the same prompts, seeds and initial noise, optimized vs source, mean over \
             {} video(s) (`wanrt eval compare` semantics: uint8 frames, data range 1); times are means.\n",
            variants[0]["videos"]
        );
    }
    if !s.sensitivity.is_empty() {
        md +=
            "\n## Sensitivity (relative output error with only this layer quantized)\n\n| layer | error |\n|---|---|\n";
        let mut sens = s.sensitivity.clone();
        sens.sort_by(|a, b| b.1.total_cmp(&a.1));
        for (n, e) in sens {
            md += &format!("| {n} | {e:.3e} |\n");
        }
    }
    md
}

#[cfg(test)]
mod report_size_tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: OptimizeArgs,
    }

    fn size(dir: &Path, flags: &[&str]) -> ReportSize {
        let cli = Cli::try_parse_from(["optimize", "-o", "out"].iter().chain(flags)).unwrap();
        report_size(&cli.args, dir).unwrap()
    }

    /// Issue 18: a model without wanrt.json is reported at 17×160×160 and 20 steps, not at
    /// diffusers' 81×480×832 and 50 (which made `optimize` run for hours).
    #[test]
    fn the_report_runs_at_its_documented_size() {
        let dir = tempfile::tempdir().unwrap();
        let want = ReportSize { frames: 17, height: 160, width: 160, steps: 20 };
        assert_eq!(size(dir.path(), &[]), want);
        std::fs::write(
            dir.path().join("wanrt.json"),
            r#"{"num_frames": 9, "height": 64, "width": 96, "num_inference_steps": 4}"#,
        )
        .unwrap();
        assert_eq!(size(dir.path(), &[]), ReportSize { frames: 9, height: 64, width: 96, steps: 4 });
        assert_eq!(size(dir.path(), &["--frames", "5", "--report-steps", "2"]).frames, 5);
    }
}
