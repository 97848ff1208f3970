//! Calibration: run the pipeline on a few prompts across the denoising
//! schedule and record, per transformer layer, statistics of its input
//! (streaming into fixed-size accumulators, see [`wanrt_nn::probe`]), plus a
//! few transformer inputs to measure output error on later.

use crate::Result;
use std::collections::BTreeMap;
use std::sync::Arc;
use wanrt_nn::probe::{ActivationProbe, ProbeStats};
use wanrt_nn::{LinearObserver, Module, ParamMut, Tensor};
use wanrt_wan::image::RgbImage;
use wanrt_wan::model::WanModel;
use wanrt_wan::pipeline::{GenerateParams, Progress};
use wanrt_wan::transformer::WanTransformer;

/// Prompts used when the user gives none (`--calib`): the scene vocabulary
/// of text-to-video prompts — subjects, motion, backgrounds, camera.
pub const DEFAULT_PROMPTS: &str = include_str!("calib_prompts.txt");

pub fn default_prompts() -> Vec<String> {
    parse_prompts(DEFAULT_PROMPTS)
}

/// One prompt per non-empty line; `#` starts a comment line.
pub fn parse_prompts(text: &str) -> Vec<String> {
    text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(String::from).collect()
}

/// One calibration input: a prompt and, for image-to-video models, its first (and last) frame.
#[derive(Debug, Clone)]
pub struct CalibPrompt {
    pub prompt: String,
    pub image: Option<RgbImage>,
    pub last_image: Option<RgbImage>,
}

impl CalibPrompt {
    /// A text-only input.
    pub fn text(prompt: impl Into<String>) -> Self {
        CalibPrompt { prompt: prompt.into(), image: None, last_image: None }
    }
}

#[derive(Debug, Clone)]
pub struct CalibSettings {
    pub prompts: Vec<CalibPrompt>,
    /// Video size; `None` takes the model's defaults (wanrt.json) or 17×160×160.
    pub frames: Option<usize>,
    pub height: Option<usize>,
    pub width: Option<usize>,
    /// Denoising steps per prompt: the schedule is spanned, just coarser.
    pub steps: usize,
    pub seed: u64,
    /// Transformer inputs kept for error measurements.
    pub max_samples: usize,
}

impl Default for CalibSettings {
    fn default() -> Self {
        CalibSettings {
            prompts: default_prompts().into_iter().map(CalibPrompt::text).collect(),
            frames: None,
            height: None,
            width: None,
            steps: 10,
            seed: 1000,
            max_samples: 8,
        }
    }
}

/// A transformer input seen during calibration (batched `[cond; uncond]` under CFG).
#[derive(Clone)]
pub struct CalibSample {
    /// In the transformer's backend memory: the latents with an image model's condition
    /// channels or first frame, as the transformer took them.
    pub latents: Tensor,
    /// One per video, or per latent frame (`expand_timesteps`).
    pub timesteps: Vec<f32>,
    /// UMT5 embeddings of the batch.
    pub text: Tensor,
    /// Image-conditioned models: the image encoder's states of the batch's images (the context
    /// is prepared again for every transformer variant measured: its keys and values come from
    /// the blocks' own layers).
    pub image: Option<Tensor>,
}

pub struct Calibration {
    /// Input statistics per block layer (by its module path, [`wanrt_nn::Linear::name`]).
    pub stats: BTreeMap<String, ProbeStats>,
    pub samples: Vec<CalibSample>,
    /// Two-expert models: the same for `transformer_2`, from the steps below the boundary (empty
    /// for one transformer).
    pub stats_2: BTreeMap<String, ProbeStats>,
    pub samples_2: Vec<CalibSample>,
    pub summary: serde_json::Value,
}

/// Records the transformer inputs of chosen steps: `steps` of the first transformer, `steps_2`
/// of a two-expert model's `transformer_2`.
struct SampleRecorder<'a> {
    steps: Vec<usize>,
    steps_2: Vec<usize>,
    text: Tensor,
    image: Option<Tensor>,
    samples: &'a mut Vec<CalibSample>,
    samples_2: &'a mut Vec<CalibSample>,
    progress: &'a mut dyn FnMut(usize, usize),
    done_before: usize,
    total: usize,
}

impl Progress for SampleRecorder<'_> {
    fn step(&mut self, done: usize, _total: usize) {
        (self.progress)(self.done_before + done, self.total);
    }
    fn transformer_input(&mut self, step: usize, input: &Tensor, timesteps: &[f32]) {
        let samples = match (self.steps.contains(&step), self.steps_2.contains(&step)) {
            (true, _) => &mut *self.samples,
            (_, true) => &mut *self.samples_2,
            _ => return,
        };
        samples.push(CalibSample {
            latents: input.clone(),
            timesteps: timesteps.to_vec(),
            text: self.text.clone(),
            image: self.image.clone(),
        });
    }
}

/// `k` indices spread evenly over `0..n` (both ends included).
fn spread(k: usize, n: usize) -> Vec<usize> {
    // More samples than steps: every step once (one step of calibration took 8 samples from 1).
    let k = k.min(n);
    match k {
        0 => Vec::new(),
        1 => vec![n / 2],
        _ => (0..k).map(|i| (i * (n - 1) + (k - 1) / 2) / (k - 1)).collect(),
    }
}

/// Runs the calibration prompts through `model` (text encoder + denoising;
/// no VAE) with probes on every block linear; `progress(done, total)` counts
/// denoising steps.
pub fn calibrate(
    model: &mut WanModel,
    settings: &CalibSettings,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Calibration> {
    if settings.prompts.is_empty() {
        return Err(crate::Error::Msg("calibration needs at least one prompt".into()));
    }
    // Observers on the block linears: each layer hands its input over before the backend runs it.
    let probes = attach_probes(&mut model.transformer);
    let probes_2 = model.transformer_2.as_mut().map(attach_probes).unwrap_or_default();
    let run = run_prompts(model, settings, progress);
    detach_probes(&mut model.transformer);
    if let Some(t2) = model.transformer_2.as_mut() {
        detach_probes(t2);
    }
    let (samples, samples_2, resolved) = run?;
    let snapshot = |probes: Vec<(String, Arc<ActivationProbe>)>| -> BTreeMap<String, ProbeStats> {
        probes.into_iter().map(|(n, p)| (n, p.snapshot())).collect()
    };
    let (stats, stats_2) = (snapshot(probes), snapshot(probes_2));
    let summary = serde_json::json!({
        "prompts": settings.prompts.len(),
        "steps_per_prompt": settings.steps,
        "size": resolved,
        "samples": samples.len(),
        "samples_transformer_2": samples_2.len(),
        "tokens_per_layer": stats.values().next().map_or(0, |s| s.tokens),
        "layers": stats.iter().map(|(n, s)| (n.clone(), serde_json::json!({
            "absmax": s.absmax(),
            "p99_9": s.abs_percentile(0.999),
        }))).collect::<serde_json::Map<_, _>>(),
    });
    Ok(Calibration { stats, samples, stats_2, samples_2, summary })
}

fn attach_probes(tr: &mut WanTransformer) -> Vec<(String, Arc<ActivationProbe>)> {
    let mut probes = Vec::new();
    tr.visit_mut(&mut |p| {
        if let ParamMut::Linear(l) = p {
            if l.name.starts_with("blocks.") {
                let probe = Arc::new(ActivationProbe::new(l.in_dim()));
                l.observer = Some(probe.clone() as Arc<dyn LinearObserver>);
                probes.push((l.name.clone(), probe));
            }
        }
    });
    probes
}

fn detach_probes(tr: &mut WanTransformer) {
    tr.visit_mut(&mut |p| {
        if let ParamMut::Linear(l) = p {
            l.observer = None;
        }
    });
}

/// The calibration runs: the sampled transformer inputs of the first transformer and of a second
/// expert, and the resolved video size.
type Runs = (Vec<CalibSample>, Vec<CalibSample>, [usize; 3]);

fn run_prompts(model: &WanModel, settings: &CalibSettings, progress: &mut dyn FnMut(usize, usize)) -> Result<Runs> {
    let per_prompt = settings.max_samples.div_ceil(settings.prompts.len());
    let total = settings.steps * settings.prompts.len();
    let mut samples = Vec::new();
    let mut samples_2 = Vec::new();
    let mut size = [0; 3];
    for (i, input) in settings.prompts.iter().enumerate() {
        let mut p = GenerateParams::new(input.prompt.clone());
        p.image = input.image.clone();
        p.last_image = input.last_image.clone();
        p.steps = Some(settings.steps);
        p.seed = settings.seed + i as u64;
        let d = &model.defaults;
        p.num_frames = settings.frames.or(d.num_frames).or(Some(17));
        p.height = settings.height.or(d.height).or(Some(160));
        p.width = settings.width.or(d.width).or(Some(160));
        let s = model.resolve(&p)?;
        size = [s.num_frames, s.height, s.width];
        let text = model.encode_text(&s, &input.prompt)?;
        let conditioning = model.condition(&s, &p, &text)?;
        let latents = model.initial_latents(&s, &p)?;
        // Each expert's own steps spread its samples (the first expert's are only the first few).
        let timesteps = model.scheduler_for(&s, None)?.timesteps().to_vec();
        let (first, second): (Vec<usize>, Vec<usize>) =
            (0..timesteps.len()).partition(|&i| model.low_noise_expert_at(timesteps[i]).is_none());
        let pick = |of: &[usize], have: usize| -> Vec<usize> {
            let room = settings.max_samples.saturating_sub(have);
            spread(per_prompt.min(room), of.len()).into_iter().map(|k| of[k]).collect()
        };
        let mut rec = SampleRecorder {
            steps: pick(&first, samples.len()),
            steps_2: pick(&second, samples_2.len()),
            text,
            image: conditioning.images.states.clone(),
            samples: &mut samples,
            samples_2: &mut samples_2,
            progress,
            done_before: i * settings.steps,
            total,
        };
        model.denoise(&s, None, latents, &conditioning, &mut rec)?;
    }
    Ok((samples, samples_2, size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_covers_both_ends() {
        assert_eq!(spread(3, 10), vec![0, 5, 9]);
        assert_eq!(spread(1, 10), vec![5]);
        assert_eq!(spread(20, 4), vec![0, 1, 2, 3]);
        assert_eq!(spread(8, 1), vec![0], "one calibration step, many samples");
        assert!(spread(0, 4).is_empty());
    }

    #[test]
    fn default_prompts_are_bounded() {
        let p = default_prompts();
        assert!((2..=8).contains(&p.len()), "{}", p.len());
        assert_eq!(parse_prompts("# c\n a \n\nb\n"), vec!["a", "b"]);
    }
}
