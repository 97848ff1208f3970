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
use wanrt_wan::image::RgbImage;
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
wanrt generate --model I2V_DIR --image first.png --prompt \"…\" -o out.mp4\n  \
wanrt generate --model DIR --prompt \"…\" --noise noise.npy --save-npy frames.npy\n  \
wanrt generate --prompts prompts.txt --videos-per-prompt 2 -o videos/")]
pub struct GenerateArgs {
    /// Model folder (diffusers or original Wan release layout); default: the bundled demo model.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Text prompt.
    #[arg(long, required_unless_present = "prompts", conflicts_with = "prompts")]
    pub prompt: Option<String>,
    /// File of prompts: one per line, or a JSON list of prompts and/or objects {"prompt", "image",
    /// "last_image", "negative_prompt", "seed"} (images relative to the file's folder; an entry's
    /// seed replaces --seed). Batch mode; needs -o OUT_DIR/.
    #[arg(long)]
    pub prompts: Option<PathBuf>,
    /// Videos per prompt; video k uses seed + k. With more than one (or with --prompts), -o is
    /// a folder that gets <i>_<k>.mp4 and prompts.json.
    #[arg(long, default_value_t = 1)]
    pub videos_per_prompt: usize,
    /// Negative prompt for classifier-free guidance.
    #[arg(long)]
    pub negative_prompt: Option<String>,
    /// Number of frames (4k+1; others are rounded as diffusers does, to (N / 4)·4 + 1, with a
    /// warning).
    #[arg(long)]
    pub frames: Option<usize>,
    /// Height in pixels (multiple of 16).
    #[arg(long)]
    pub height: Option<usize>,
    /// Width in pixels (multiple of 16).
    #[arg(long)]
    pub width: Option<usize>,
    /// Denoising steps (1 to the scheduler's num_train_timesteps, 1000 for Wan).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Classifier-free guidance scale; ≤ 1 (negative values included) disables CFG (one
    /// transformer pass per step).
    #[arg(long, allow_negative_numbers = true)]
    pub guidance: Option<f64>,
    /// Two-expert models (Wan2.2 A14B): guidance scale of the low-noise expert (default: --guidance).
    #[arg(long = "guidance-2", allow_negative_numbers = true)]
    pub guidance_2: Option<f64>,
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
    /// First frame, for image-to-video models: a PNG/JPEG (without --height/--width the video
    /// takes the image's size; another size is resized to the video's as diffusers does:
    /// Lanczos, no crop).
    #[arg(long)]
    pub image: Option<PathBuf>,
    /// Last frame, for first-last-frame models: a PNG/JPEG (resized to the video's size likewise).
    #[arg(long, requires = "image")]
    pub last_image: Option<PathBuf>,
    /// Text length the prompt is padded/truncated to (at most the model's limit: its tokenizer's
    /// model_max_length or its config's text_len, 512 for Wan2.1); a longer prompt is cut, with a
    /// warning.
    #[arg(long)]
    pub max_sequence_length: Option<usize>,
    /// Step cache (TeaCache-style): skip the transformer blocks while the first block's modulated
    /// input changed by less than T (accumulated relative L1) since the last full step; 0 = off
    /// (default: the model's wanrt.json, else 0). Typical: 0.05–0.3.
    #[arg(long, allow_negative_numbers = true)]
    pub cache_threshold: Option<f64>,
    /// With --backend cuda: capture each expert's transformer pass as one CUDA graph over a
    /// planned arena at its first step and replay it every step (one launch per pass instead of
    /// hundreds). Not with the step cache.
    #[arg(long)]
    pub cuda_graph: bool,
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Output: OUT.mp4, OUT.gif, or OUT_DIR/ for PNG frames (default wanrt-<timestamp>.mp4).
    #[arg(short = 'o', long)]
    pub output: Option<PathBuf>,
    /// Also write the decoded frames as float32 (F, H, W, 3) in [0, 1] (written before the
    /// video, so it survives a failed video write). In batch mode a folder that gets
    /// <i>_<k>.npy beside each <i>_<k>.mp4.
    #[arg(long, value_name = "FILE.npy|DIR/")]
    pub save_npy: Option<PathBuf>,
    /// Frames per second of MP4/GIF output (default: the model's, else 16; MP4 takes up to 90000).
    #[arg(long)]
    pub fps: Option<f64>,
    /// Refuse sizes whose estimated working memory (beyond the weights) exceeds SIZE (e.g. 16G,
    /// 512M). Default: the memory available once the model is loaded. Checked before denoising.
    #[arg(long, value_name = "SIZE", value_parser = parse_size_arg)]
    pub max_memory: Option<u64>,
    /// Print one JSON object on stdout instead of a table.
    #[arg(long)]
    pub json: bool,
}

fn parse_size_arg(s: &str) -> std::result::Result<u64, String> {
    wanrt_io::parse_size(s)
}

/// Prompt files larger than this are refused before reading (a prompt list, not a corpus).
const MAX_PROMPTS_FILE: u64 = 64 << 20;

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

/// A PNG/JPEG as an 8-bit RGB picture.
fn read_rgb(path: &Path) -> Result<RgbImage> {
    let video = wanrt_media::read_image(path)?;
    Ok(RgbImage::new(video.height(), video.width(), video.into_data())?)
}

/// An input image: the file (child runs are given it again) and its pixels.
#[derive(Debug, Clone)]
pub(crate) struct InputImage {
    pub path: PathBuf,
    pub rgb: RgbImage,
}

impl InputImage {
    pub fn read(path: &Path) -> Result<Self> {
        Ok(InputImage { path: path.to_path_buf(), rgb: read_rgb(path)? })
    }
}

/// One entry of a prompts file: the prompt and what a JSON object may set beside it (images
/// relative to the prompts file's folder, already read; `None` takes the command line's).
#[derive(Debug, Clone, Default)]
pub(crate) struct PromptEntry {
    pub prompt: String,
    pub image: Option<InputImage>,
    pub last_image: Option<InputImage>,
    pub negative_prompt: Option<String>,
    pub seed: Option<u64>,
}

impl PromptEntry {
    /// A prompt alone.
    pub fn text(prompt: impl Into<String>) -> Self {
        PromptEntry { prompt: prompt.into(), ..PromptEntry::default() }
    }
}

/// Gives every entry without its own first frame `image` / `last_image` (read here; a pair
/// belongs together, as an entry's own image replaces `--image` in `generate --prompts`).
pub(crate) fn fill_images(entries: &mut [PromptEntry], image: Option<&Path>, last_image: Option<&Path>) -> Result<()> {
    let image = image.map(InputImage::read).transpose().context("--image")?;
    let last_image = last_image.map(InputImage::read).transpose().context("--last-image")?;
    for e in entries.iter_mut().filter(|e| e.image.is_none()) {
        e.image = image.clone();
        e.last_image = last_image.clone();
    }
    Ok(())
}

/// The keys a prompts file's object entry takes.
const ENTRY_KEYS: [&str; 5] = ["prompt", "image", "last_image", "negative_prompt", "seed"];

/// A prompts file (given as `flag`, which errors name): one prompt per line, or a JSON list whose items are prompts or objects
/// `{"prompt", "image", "last_image", "negative_prompt", "seed"}` (only "prompt" required). Every
/// image is read here, so a bad entry fails before any model loads.
pub(crate) fn read_prompt_entries(path: &Path, flag: &str) -> Result<Vec<PromptEntry>> {
    let len = std::fs::metadata(path).with_context(|| format!("{flag} {}", path.display()))?.len();
    if len > MAX_PROMPTS_FILE {
        bail!("{flag} {}: {len} bytes is more than a prompt list (at most 64 MiB)", path.display());
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("{flag} {}: cannot read", path.display()))?;
    let entries: Vec<PromptEntry> = if text.trim_start().starts_with('[') {
        let items: Vec<serde_json::Value> = serde_json::from_str(&text).with_context(|| {
            format!("{flag} {}: expected a JSON list of prompts or {{\"prompt\": …}} objects", path.display())
        })?;
        let folder = path.parent().unwrap_or(Path::new(""));
        items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                prompt_entry(item, folder).with_context(|| format!("{flag} {}: entry {i}", path.display()))
            })
            .collect::<Result<_>>()?
    } else {
        let lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
        lines.map(PromptEntry::text).collect()
    };
    if entries.is_empty() {
        bail!("{flag} {}: no prompts found", path.display());
    }
    Ok(entries)
}

/// One JSON item of a prompts file; image paths are relative to `folder`.
fn prompt_entry(item: &serde_json::Value, folder: &Path) -> Result<PromptEntry> {
    use serde_json::Value;
    let obj = match item {
        Value::String(p) => return Ok(PromptEntry::text(p.clone())),
        Value::Object(obj) => obj,
        other => bail!("expected a prompt (string) or an object with \"prompt\", found {}", json_kind(other)),
    };
    if let Some(k) = obj.keys().find(|k| !ENTRY_KEYS.contains(&k.as_str())) {
        bail!("unknown field \"{k}\" (expected {})", ENTRY_KEYS.map(|k| format!("\"{k}\"")).join(", "));
    }
    let text = |key: &str| -> Result<Option<&str>> {
        match obj.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => bail!("\"{key}\" must be a string, found {}", json_kind(other)),
        }
    };
    let Some(prompt) = text("prompt")? else { bail!("\"prompt\" is missing") };
    let image = |key: &str| -> Result<Option<InputImage>> {
        let Some(file) = text(key)? else { return Ok(None) };
        let path = folder.join(file);
        // The reader's message names the file; flattened so its cause is not printed twice.
        InputImage::read(&path).map(Some).map_err(|e| anyhow::anyhow!("\"{key}\": {e}"))
    };
    let seed = match obj.get("seed") {
        None => None,
        Some(v) => Some(v.as_u64().with_context(|| format!("\"seed\" must be a non-negative integer, found {v}"))?),
    };
    if obj.contains_key("last_image") && !obj.contains_key("image") {
        bail!("\"last_image\" needs \"image\" (the first frame) too");
    }
    let (image, last_image) = (image("image")?, image("last_image")?);
    let negative_prompt = text("negative_prompt")?.map(String::from);
    Ok(PromptEntry { prompt: prompt.to_string(), image, last_image, negative_prompt, seed })
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "a list",
        serde_json::Value::Object(_) => "an object",
    }
}

fn video_of(out: &GenerateOutput) -> Result<Video> {
    let &[f, h, w, _] = out.video.shape() else { bail!("internal: video shape {:?}", out.video.shape()) };
    Ok(Video::from_f32(f, h, w, out.video.data())?)
}

/// Checks the numeric flags that need no model, so `--guidance nan` or `--fps 0` fail before
/// anything is loaded (the model's defaults are checked again in `resolve`).
fn check_flags(args: &GenerateArgs) -> Result<()> {
    let finite = |name: &str, v: Option<f64>, ok: fn(f64) -> bool, want: &str| -> Result<()> {
        match v {
            Some(x) if !(x.is_finite() && ok(x)) => bail!("--{name} must be {want}, got {x}"),
            _ => Ok(()),
        }
    };
    finite("guidance", args.guidance, |_| true, "a finite number")?;
    finite("shift", args.shift, |x| x > 0.0, "a positive number")?;
    finite("cache-threshold", args.cache_threshold, |x| x >= 0.0, "a non-negative number")?;
    if args.cuda_graph && args.engine.backend != crate::engine::BackendKind::Cuda {
        bail!("--cuda-graph needs --backend cuda (the CPU backend launches nothing to capture)");
    }
    if args.cuda_graph && args.cache_threshold.is_some_and(|t| t > 0.0) {
        bail!("--cuda-graph replays every step's whole pass: it does not combine with --cache-threshold > 0");
    }
    finite("fps", args.fps, |x| x > 0.0, "a positive number")?;
    for (name, v) in [("frames", args.frames), ("height", args.height), ("width", args.width), ("steps", args.steps)] {
        if v == Some(0) {
            bail!("--{name} must be at least 1");
        }
    }
    if args.max_sequence_length == Some(0) {
        bail!("--max-sequence-length must be at least 1");
    }
    if args.videos_per_prompt == 0 {
        bail!("--videos-per-prompt must be at least 1");
    }
    Ok(())
}

/// One video: its settings, its output file and, with `--save-npy`, its raw frames' file.
struct Run {
    params: GenerateParams,
    output: PathBuf,
    npy: Option<PathBuf>,
}

/// What to generate: one run per video, and the folder of a batch.
struct Plan {
    runs: Vec<Run>,
    /// Batch mode (`--prompts`, or `--videos-per-prompt` > 1): the folder that gets prompts.json.
    batch_dir: Option<PathBuf>,
}

/// Reads the prompts and noise and checks every output path: all before the model loads.
fn plan(args: &GenerateArgs) -> Result<Plan> {
    let prompts = match (&args.prompts, &args.prompt) {
        (Some(file), _) => read_prompt_entries(file, "--prompts")?,
        (None, Some(p)) => vec![PromptEntry::text(p.clone())],
        (None, None) => bail!("--prompt or --prompts is required"),
    };
    let batch = args.prompts.is_some() || args.videos_per_prompt > 1;
    if batch && args.noise.is_some() {
        bail!("--noise applies to one video (--prompt without --videos-per-prompt), not to a batch");
    }
    let noise = args.noise.as_deref().map(read_noise).transpose()?;
    let image = args.image.as_deref().map(read_rgb).transpose()?;
    let last_image = args.last_image.as_deref().map(read_rgb).transpose()?;

    let base = GenerateParams {
        prompt: String::new(),
        negative_prompt: args.negative_prompt.clone(),
        height: args.height,
        width: args.width,
        num_frames: args.frames,
        steps: args.steps,
        guidance: args.guidance,
        guidance_2: args.guidance_2,
        shift: args.shift,
        scheduler: args.scheduler.map(|s| match s {
            SchedulerArg::Unipc => SchedulerKind::UniPc,
            SchedulerArg::Euler => SchedulerKind::Euler,
        }),
        max_sequence_length: args.max_sequence_length,
        noise,
        seed: args.seed,
        cache_threshold: args.cache_threshold,
        cuda_graph: args.cuda_graph,
        image,
        last_image,
    };
    if !batch {
        let out = args.output.clone().unwrap_or_else(default_output);
        wanrt_media::check_output_path(&out)?;
        if let Some(fps) = args.fps {
            // The container's fps limits, before the sizes are known (checked again with them).
            wanrt_media::check_output_video(&out, 1, 16, 16, fps)?;
        }
        if let Some(npy) = &args.save_npy {
            check_npy_output(npy, &out)?;
        }
        let run = Run {
            params: GenerateParams { prompt: prompts[0].prompt.clone(), ..base },
            output: out,
            npy: args.save_npy.clone(),
        };
        return Ok(Plan { runs: vec![run], batch_dir: None });
    }
    let out_dir = match &args.output {
        Some(o) if !o.extension().is_some_and(|e| e == "mp4" || e == "gif" || e == "npy") => o.clone(),
        _ => bail!(
            "{} needs -o OUT_DIR/ (a folder for <i>_<k>.mp4 and prompts.json)",
            if args.prompts.is_some() { "--prompts" } else { "--videos-per-prompt above 1" }
        ),
    };
    if out_dir.exists() && !out_dir.is_dir() {
        bail!("-o {}: exists and is not a folder", out_dir.display());
    }
    wanrt_io::check_output_file(out_dir.join("prompts.json")).or_else(|e| {
        // The folder may not exist yet: then its parent must take it.
        if out_dir.exists() {
            Err(e)
        } else {
            wanrt_io::check_output_dir(&out_dir)
        }
    })?;
    let npy_dir = args.save_npy.as_deref().map(|d| check_npy_dir(d, &out_dir)).transpose()?;
    let mut runs = Vec::new();
    for (i, entry) in prompts.iter().enumerate() {
        // An entry's own image replaces --image (and its last frame with it: a pair belongs together).
        let (image, last_image) = match &entry.image {
            Some(first) => (Some(first.rgb.clone()), entry.last_image.as_ref().map(|i| i.rgb.clone())),
            None => (base.image.clone(), base.last_image.clone()),
        };
        let negative_prompt = entry.negative_prompt.clone().or_else(|| base.negative_prompt.clone());
        let seed = entry.seed.unwrap_or(args.seed);
        for k in 0..args.videos_per_prompt {
            let params = GenerateParams {
                prompt: entry.prompt.clone(),
                seed: seed.wrapping_add(k as u64),
                image: image.clone(),
                last_image: last_image.clone(),
                negative_prompt: negative_prompt.clone(),
                ..base.clone()
            };
            let npy = npy_dir.map(|d| d.join(format!("{i}_{k}.npy")));
            runs.push(Run { params, output: out_dir.join(format!("{i}_{k}.mp4")), npy });
        }
    }
    Ok(Plan { runs, batch_dir: Some(out_dir) })
}

/// Batch mode's `--save-npy DIR/`: a folder (existing, or creatable) that is not the videos' one
/// (its `<i>_<k>.npy` would otherwise sit among the files `wanrt review` pairs).
fn check_npy_dir<'a>(dir: &'a Path, out_dir: &Path) -> Result<&'a Path> {
    if dir.extension().is_some_and(|e| e.eq_ignore_ascii_case("npy")) || (dir.exists() && !dir.is_dir()) {
        bail!("--save-npy {}: a batch needs a folder for <i>_<k>.npy, not a file", dir.display());
    }
    let same = dir == out_dir || matches!((dir.canonicalize(), out_dir.canonicalize()), (Ok(a), Ok(b)) if a == b);
    if same {
        bail!(
            "--save-npy {} and -o {} are the same folder; give the frames their own",
            dir.display(),
            out_dir.display()
        );
    }
    if dir.exists() {
        wanrt_io::check_output_file(dir.join("0_0.npy"))?
    } else {
        wanrt_io::check_output_dir(dir)?
    }
    Ok(dir)
}

fn check_npy_output(npy: &Path, video: &Path) -> Result<()> {
    if !npy.extension().is_some_and(|e| e.eq_ignore_ascii_case("npy")) {
        bail!("--save-npy {}: expected a FILE.npy", npy.display());
    }
    wanrt_io::check_output_file(npy)?;
    if wanrt_io::is_inside(npy, video) || wanrt_io::is_inside(video, npy) {
        bail!("--save-npy {} and -o {} name the same file", npy.display(), video.display());
    }
    Ok(())
}

/// Resolves every run's settings (defaults, rounding, text length) and checks them against the
/// memory budget and the output format, before the first denoising step; prints the warnings.
fn check_runs(model: &WanModel, plan: &Plan, fps: f64, max_memory: Option<u64>) -> Result<()> {
    let mut printed = std::collections::BTreeSet::new();
    for Run { params, output: out_path, .. } in &plan.runs {
        let s = model.resolve(params)?;
        let need = model.working_memory(s.num_frames, s.height, s.width, s.guidance > 1.0);
        if let Some(limit) = max_memory {
            if need > limit {
                bail!(
                    "{} frames of {}×{} need an estimated {} of working memory, more than --max-memory {} \
                     (default: the memory available); lower --frames/--height/--width, or raise --max-memory",
                    s.num_frames,
                    s.height,
                    s.width,
                    wanrt_io::format_size(need),
                    wanrt_io::format_size(limit)
                );
            }
        }
        wanrt_media::check_output_video(out_path, s.num_frames, s.height, s.width, fps)?;
        // Once each (a batch repeats them), on stderr also under --json.
        for w in &s.warnings {
            if printed.insert(w.clone()) {
                eprintln!("warning: {w}");
            }
        }
    }
    Ok(())
}

pub fn run(args: GenerateArgs) -> Result<()> {
    check_flags(&args)?;
    let plan = plan(&args)?;
    let opts = args.engine.load_options()?;
    let dir = model_path::resolve(args.model.as_deref())?;
    let t_load = Instant::now();
    let mut bars = Bars::new("wanrt", args.json);
    let model = WanModel::load_with(&dir, opts, |stage| {
        if !args.json {
            eprintln!("wanrt loading {stage}…");
        }
    })
    .context("loading the model")?;
    let load_secs = t_load.elapsed().as_secs_f64();
    // Skipped LoRA keys are said even under --json (stderr; the JSON lists the summaries).
    let loras_2 = model.loras_2.iter();
    model.loras.iter().chain(loras_2.clone()).filter_map(|l| l.warning()).for_each(|w| eprintln!("warning: {w}"));
    if !args.json {
        model.loras.iter().for_each(|l| eprintln!("wanrt {l}"));
        loras_2.for_each(|l| eprintln!("wanrt transformer_2: {l}"));
    }
    let fps = args.fps.or(model.defaults.fps).unwrap_or(16.0);
    if !(fps.is_finite() && fps > 0.0) {
        bail!("wanrt.json: fps must be a positive number, got {fps}");
    }
    let max_memory = args.max_memory.or_else(wanrt_wan::memory::available_bytes);
    check_runs(&model, &plan, fps, max_memory)?;
    let mp4 = Mp4Options { fps };
    if let Some(d) = &plan.batch_dir {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }

    let mut reports = Vec::new();
    let mut captions = BTreeMap::new();
    let runs = &plan.runs;
    if let Some(d) = plan.runs.first().and_then(|r| r.npy.as_ref()).and_then(|n| n.parent()) {
        if plan.batch_dir.is_some() {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
    }
    for (n, Run { params, output: out_path, npy }) in runs.iter().enumerate() {
        if runs.len() > 1 && !args.json {
            eprintln!("wanrt video {}/{}: {}", n + 1, runs.len(), out_path.display());
        }
        let out = model.generate(params, &mut bars)?;
        bars.finish();
        let t_write = Instant::now();
        // The raw frames first: a failed video write (disk full, …) does not lose them.
        if let Some(npy) = npy {
            let s = out.video.shape();
            wanrt_media::write_npy_f32(npy, [s[0], s[1], s[2], s[3]], out.video.data())?;
        }
        let video = video_of(&out)?;
        wanrt_media::write_video(out_path, &video, &mp4).map_err(|e| match npy {
            Some(npy) => anyhow::anyhow!("{e} (the frames were saved to {})", npy.display()),
            None => e.into(),
        })?;
        let write_secs = t_write.elapsed().as_secs_f64();
        let mut timings: BTreeMap<String, f64> = out.timings.iter().cloned().collect();
        timings.insert("write".into(), write_secs);
        if let Some(name) = out_path.file_name() {
            captions.insert(name.to_string_lossy().to_string(), params.prompt.clone());
        }
        reports.push(serde_json::json!({
            "output": out_path,
            "npy": npy,
            "prompt": params.prompt,
            "settings": out.settings,
            "timings_s": timings,
            "transformer_evals": out.transformer_evals,
            "steps_skipped": out.steps_skipped,
        }));
    }
    if let Some(out_dir) = &plan.batch_dir {
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
        "transformer_weight_bytes": model.transformer.weight_bytes()
            + model.transformer_2.as_ref().map_or(0, |t| t.weight_bytes()),
        "loras": model.loras.iter().map(|l| l.to_string()).collect::<Vec<_>>(),
        "loras_2": model.loras_2.iter().map(|l| l.to_string()).collect::<Vec<_>>(),
        "text_encoder_weight_bytes": model.text_encoder.weight_bytes(),
        "videos": reports,
        "peak_rss_bytes": peak,
    });
    if args.json {
        crate::outcome::print(&format!("{summary}\n"))
    } else {
        crate::outcome::print(&table(&summary, load_secs, peak))
    }
}

fn default_output() -> PathBuf {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    PathBuf::from(format!("wanrt-{secs}.mp4"))
}

fn table(summary: &serde_json::Value, load_secs: f64, peak: Option<u64>) -> String {
    use std::fmt::Write as _;
    let mut t = String::new();
    let _ = writeln!(t, "{:<14} {:>10}", "stage", "seconds");
    let _ = writeln!(t, "{:<14} {:>10.2}", "load", load_secs);
    for v in summary["videos"].as_array().into_iter().flatten() {
        if let Some(times) = v["timings_s"].as_object() {
            for key in ["text_encoder", "image_encoder", "denoising", "vae_decode", "write"] {
                if let Some(s) = times.get(key).and_then(|x| x.as_f64()) {
                    let _ = writeln!(t, "{key:<14} {s:>10.2}");
                }
            }
        }
        if let Some(skipped) = v["steps_skipped"].as_u64().filter(|&n| n > 0) {
            let _ = writeln!(t, "step cache: {skipped} of {} steps reused the cached residual", v["settings"]["steps"]);
        }
        let s = &v["settings"];
        let _ = writeln!(
            t,
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
        let _ = writeln!(t, "peak memory {}", sysinfo::format_bytes(p));
    }
    t
}
