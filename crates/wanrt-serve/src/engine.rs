//! Generation, split into the stages the scheduler overlaps: text encoding, a batched
//! denoising loop, VAE decoding. Built only on wanrt-wan's public pipeline API
//! (`WanModel::resolve`, `encode_text`, `transformer.prepare_text` / `forward_cached`,
//! `initial_latents`, the scheduler, `vae.denormalize` / `decode`, `to_frames`).
//!
//! The denoising loop is diffusers' `WanPipeline.__call__` loop (as in
//! `wanrt_wan::pipeline::WanModel::denoise`), run for several jobs at once: the jobs of a
//! batch share every transformer call (their `[cond; uncond]` latents and text contexts
//! are stacked along the batch axis), then each job takes its own CFG combination and
//! scheduler step. Image-conditioned jobs (`WanImageToVideoPipeline`) bring their image
//! encoder states beside the text and their image latent (or, for Wan2.2 TI2V, their first
//! latent frame and its timestep 0) into each call, built by the pipeline's own functions; a
//! two-expert model switches to its low-noise expert at the boundary as the pipeline does.
//! A batch of one performs exactly the operations of `WanModel::generate` (tested bit for
//! bit). The loop asks its caller between steps whether each job goes on, which is how a
//! cancelled job stops at the next step.

use wanrt_media::Video;
use wanrt_nn::{HostTensor, Tensor};
use wanrt_wan::model::WanModel;
use wanrt_wan::pipeline::{
    check_finite, check_finite_frames, to_frames, GenerateParams, ImageInputs, ResolvedSettings,
};
use wanrt_wan::scheduler::Scheduler;
use wanrt_wan::step_cache::StepCache;
use wanrt_wan::transformer::{CrossAttentionContext, WanTransformer};

use crate::inputs::Images;
use crate::job::JobParams;
use crate::Result;

/// The pipeline parameters of a job (all explicit: nothing left to defaults) with its images.
pub fn generate_params(p: &JobParams, images: Images) -> GenerateParams {
    GenerateParams {
        negative_prompt: Some(p.negative_prompt.clone()),
        height: Some(p.height),
        width: Some(p.width),
        num_frames: Some(p.num_frames),
        steps: Some(p.num_inference_steps),
        guidance: Some(p.guidance_scale),
        seed: p.seed,
        image: images.first,
        last_image: images.last,
        ..GenerateParams::new(p.prompt.clone())
    }
}

/// A job after text (and image) encoding, ready to denoise.
pub struct Encoded {
    pub settings: ResolvedSettings,
    /// UMT5 embeddings `[1 or 2, L, d]` (`[cond; uncond]` under CFG).
    pub embeddings: Tensor,
    /// What its images give the loop (nothing for a text-to-video job).
    pub images: ImageInputs,
    pub latents: Tensor,
}

/// Stage 1: resolve, encode the prompt (and negative prompt) and the images, draw the initial
/// noise.
pub fn encode(model: &WanModel, p: &JobParams, images: Images) -> Result<Encoded> {
    let gp = generate_params(p, images);
    let settings = model.resolve(&gp)?;
    let embeddings = model.encode_text(&settings, &p.prompt)?;
    check_finite(&**model.text_encoder.backend(), &embeddings, "the text encoder")?;
    let images = model.image_inputs(&settings, &gp, embeddings.dim(0))?;
    let latents = model.initial_latents(&settings, &gp)?;
    Ok(Encoded { settings, embeddings, images, latents })
}

/// One job in the denoising loop.
struct Member {
    settings: ResolvedSettings,
    embeddings: Tensor,
    images: ImageInputs,
    latents: Tensor,
    sched: Box<dyn Scheduler>,
    alive: bool,
}

/// The cross-attention context of the jobs `alive` for one expert: their text (and image)
/// states stacked in job order, as their latents are.
fn stacked_context(
    be: &dyn wanrt_nn::Backend,
    expert: &WanTransformer,
    members: &[Member],
    alive: &[usize],
) -> Result<CrossAttentionContext> {
    let stack = |parts: Vec<&Tensor>| -> Result<Tensor> {
        Ok(if parts.len() == 1 { parts[0].clone() } else { be.cat(&parts, 0)? })
    };
    let text = stack(alive.iter().map(|&k| &members[k].embeddings).collect())?;
    let states: Vec<&Tensor> = alive.iter().filter_map(|&k| members[k].images.states.as_ref()).collect();
    let images = match states.len() {
        0 => None,
        n if n == alive.len() => Some(stack(states)?),
        _ => return Err(crate::Error::Input("internal: jobs of one batch differ in image conditioning".into())),
    };
    Ok(expert.prepare_context(&text, images.as_ref())?)
}

/// What the caller says about a job between steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Continue,
    Stop,
}

/// Stage 2: the denoising loop for jobs with the same batch key (same size, frames, steps,
/// CFG on/off). After each step `between(step, total, k)` is asked for every job k still
/// running; the final latents come back for the jobs that ran to the end (None for the
/// stopped ones).
pub fn denoise(
    model: &WanModel,
    jobs: Vec<Encoded>,
    between: impl FnMut(usize, usize, usize) -> Next,
) -> Result<Vec<Option<Tensor>>> {
    denoise_with(model, &model.transformer, jobs, between)
}

/// [`denoise`] on `transformer`: the model's own, or a copy adapted to the jobs' LoRAs.
pub fn denoise_with(
    model: &WanModel,
    transformer: &WanTransformer,
    jobs: Vec<Encoded>,
    mut between: impl FnMut(usize, usize, usize) -> Next,
) -> Result<Vec<Option<Tensor>>> {
    let Some(first) = jobs.first() else {
        return Ok(Vec::new());
    };
    let (steps, cfg) = (first.settings.steps, first.settings.guidance > 1.0);
    if let Some(bad) = jobs.iter().find(|j| {
        j.settings.steps != steps || (j.settings.guidance > 1.0) != cfg || j.latents.shape() != first.latents.shape()
    }) {
        return Err(crate::Error::Input(format!(
            "internal: jobs of one batch differ ({} vs {} steps, latents {:?} vs {:?})",
            bad.settings.steps,
            steps,
            bad.latents.shape(),
            first.latents.shape()
        )));
    }
    let mut members = Vec::with_capacity(jobs.len());
    for j in jobs {
        // The job's own sampler (a step-distilled preset's euler and schedule included).
        let sched = model.scheduler_for(&j.settings, None)?;
        members.push(Member {
            settings: j.settings,
            embeddings: j.embeddings,
            images: j.images,
            latents: j.latents,
            sched,
            alive: true,
        });
    }
    let timesteps = members[0].sched.timesteps().to_vec();
    let be = &**transformer.backend();
    // The step cache decides per batch: only a lone job may use it.
    let threshold = members[0].settings.cache_threshold;
    let mut cache =
        if members.len() == 1 && threshold > 0.0 { Some(StepCache::new(threshold, timesteps.len())?) } else { None };
    let mut low_noise = false;
    // The context of the jobs still running, for the expert of the stage it was made in.
    let mut context: Option<(Vec<usize>, bool, CrossAttentionContext)> = None;
    for (i, &t) in timesteps.iter().enumerate() {
        let alive: Vec<usize> = (0..members.len()).filter(|&k| members[k].alive).collect();
        if alive.is_empty() {
            break;
        }
        // Two-expert models, as the pipeline; `transformer_2` is the model's own (per-request
        // adapters adapt the first expert, as `generate --lora` does).
        let second = model.low_noise_expert_at(t);
        if second.is_some() && !low_noise {
            low_noise = true;
            // The cached residual belongs to the other expert.
            cache = cache.map(|_| StepCache::new(threshold, timesteps.len() - i)).transpose()?;
        }
        let expert = second.unwrap_or(transformer);
        if context.as_ref().is_none_or(|(ids, low, _)| *ids != alive || *low != low_noise) {
            context = Some((alive.clone(), low_noise, stacked_context(be, expert, &members, &alive)?));
        }
        let (_, _, ctx) = context.as_ref().expect("set above");
        let per = if cfg { 2 } else { 1 };
        let mut parts = Vec::with_capacity(alive.len() * per);
        let mut ts = Vec::new();
        for &k in &alive {
            let m = &members[k];
            let input = m.images.transformer_input(be, &m.latents)?;
            ts.extend(model.step_timesteps(t, per, m.latents.dim(2), m.images.first_frame.is_some()));
            if cfg {
                parts.push(input.clone());
            }
            parts.push(input);
        }
        let batch = if parts.len() == 1 { parts[0].clone() } else { be.cat(&parts.iter().collect::<Vec<_>>(), 0)? };
        let (out, _) = expert.forward_cached(&batch, &ts, ctx, cache.as_mut())?;
        for (slot, &k) in alive.iter().enumerate() {
            let m = &mut members[k];
            let g = m.settings.guidance_at(low_noise) as f32;
            let noise_pred = match (cfg, alive.len()) {
                (true, 1) => be.cfg_combine(&out, g)?,
                (true, _) => be.cfg_combine(&be.narrow(&out, 0, slot * per, 2)?, g)?,
                (false, 1) => out.clone(),
                (false, _) => be.narrow(&out, 0, slot, 1)?,
            };
            m.latents = m.sched.step(be, &noise_pred, &m.latents)?;
        }
        for &k in &alive {
            if between(i + 1, timesteps.len(), k) == Next::Stop {
                members[k].alive = false;
            }
        }
    }
    let mut done = Vec::with_capacity(members.len());
    for m in members {
        done.push(if m.alive { Some(m.images.result(be, m.latents)?) } else { None });
    }
    for latents in done.iter().flatten() {
        check_finite(be, latents, "denoising (transformer and scheduler)")?;
    }
    Ok(done)
}

/// Stage 3: de-normalise and decode one job's latents to frames `[F, H, W, 3]` in [0, 1],
/// downloaded to the host.
pub fn decode(model: &WanModel, latents: &Tensor, on_frame: impl FnMut(usize, usize)) -> Result<HostTensor> {
    let z = model.vae.denormalize(latents)?;
    let decoded = model.vae.decode(&z, on_frame)?;
    let frames = to_frames(&**model.vae.backend(), decoded)?;
    check_finite_frames(&frames)?;
    Ok(frames)
}

/// The only place that reads the decoded video array (`[F, H, W, 3]` f32 in [0, 1]).
pub fn video_of(frames: &HostTensor) -> Result<Video> {
    let &[f, h, w, _] = frames.shape() else {
        return Err(crate::Error::Input(format!("internal: video shape {:?}", frames.shape())));
    };
    Ok(Video::from_f32(f, h, w, frames.data())?)
}
