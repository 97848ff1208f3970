//! Text → video, as diffusers 0.42.1 `WanPipeline.__call__`
//! (pipelines/wan/pipeline_wan.py): encode prompt (and negative prompt under
//! CFG), denoise with the scheduler — cond and uncond passes batched into one
//! transformer call — de-normalise, decode with the VAE, map to [0, 1].
//! Image-conditioned models run `WanImageToVideoPipeline.__call__` (pipeline_wan_i2v.py): the
//! same loop, with the image encoder's states beside the text and the mask + image latent
//! ([`crate::image_conditioning`]) concatenated to the latents at every step.
//! Wan2.2 TI2V models (`expand_timesteps`) run either pipeline with one timestep per latent frame
//! (diffusers' per-token timesteps); given an image, its latent replaces the first latent frame
//! before each transformer call and in the result, and that frame's timestep is 0.
//!
//! Everything between the token ids and the final frames stays in the backends' memory: the
//! pipeline uploads the ids and the initial noise, reads back one scalar after the text encoder and
//! one after denoising (are the values finite?), one per step when the step cache is on, and
//! downloads the frames once at the end.

use crate::image::RgbImage;
use crate::model::WanModel;
use crate::scheduler::{Scheduler, SchedulerKind};
use crate::step_cache::StepCache;
use crate::text::encode_prompts;
use crate::transformer::{CrossAttentionContext, WanTransformer};
use crate::{Error, Result};
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};
use std::time::Instant;
use wanrt_nn::{HostTensor, Module, Tensor};

/// Everything one generation needs; `None` fields take the model's defaults.
#[derive(Debug, Clone)]
pub struct GenerateParams {
    pub prompt: String,
    pub negative_prompt: Option<String>,
    pub height: Option<usize>,
    pub width: Option<usize>,
    pub num_frames: Option<usize>,
    pub steps: Option<usize>,
    pub guidance: Option<f64>,
    /// Two-expert models: the low-noise expert's guidance scale (default: `guidance`).
    pub guidance_2: Option<f64>,
    pub shift: Option<f64>,
    pub scheduler: Option<SchedulerKind>,
    pub max_sequence_length: Option<usize>,
    /// Initial latents `[1, z, T', H', W']`; overrides the seed.
    pub noise: Option<HostTensor>,
    pub seed: u64,
    /// Step-cache threshold (see [`crate::step_cache`]); 0 disables it.
    pub cache_threshold: Option<f64>,
    /// Replay each expert's transformer pass from a CUDA graph captured at its first step
    /// (`Backend::capture`; CUDA only, without the step cache).
    pub cuda_graph: bool,
    /// The first frame (image-to-video models); resized to the video's size when it differs.
    pub image: Option<RgbImage>,
    /// The last frame (first-last-frame models); resized likewise.
    pub last_image: Option<RgbImage>,
}

impl GenerateParams {
    pub fn new(prompt: impl Into<String>) -> Self {
        GenerateParams {
            prompt: prompt.into(),
            negative_prompt: None,
            height: None,
            width: None,
            num_frames: None,
            steps: None,
            guidance: None,
            guidance_2: None,
            shift: None,
            scheduler: None,
            max_sequence_length: None,
            noise: None,
            seed: 0,
            cache_threshold: None,
            cuda_graph: false,
            image: None,
            last_image: None,
        }
    }
}

/// The settings actually used, after defaults and rounding.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ResolvedSettings {
    pub height: usize,
    pub width: usize,
    pub num_frames: usize,
    pub steps: usize,
    pub guidance: f64,
    /// Two-expert models: the low-noise expert's guidance scale.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guidance_2: Option<f64>,
    pub shift: f64,
    pub scheduler: String,
    /// The explicit schedule of the model's `wanrt.json` (unshifted sigmas, one per step).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sigmas: Option<Vec<f64>>,
    pub max_sequence_length: usize,
    pub negative_prompt: String,
    pub seed: Option<u64>,
    pub cache_threshold: f64,
    /// Transformer passes replayed from CUDA graphs.
    pub cuda_graph: bool,
    pub warnings: Vec<String>,
}

impl ResolvedSettings {
    /// The guidance scale of a step: `guidance_2` (default `guidance`) once a two-expert model's
    /// low-noise expert runs, as diffusers' `guidance_scale_2`.
    pub fn guidance_at(&self, low_noise: bool) -> f64 {
        if low_noise {
            self.guidance_2.unwrap_or(self.guidance)
        } else {
            self.guidance
        }
    }
}

/// Progress events of a generation.
pub trait Progress {
    fn stage(&mut self, _name: &str) {}
    fn step(&mut self, _done: usize, _total: usize) {}
    fn decode_frame(&mut self, _done: usize, _total: usize) {}
    /// The input (batched `[cond; uncond]` under CFG, with an image model's condition channels
    /// or first frame) and timesteps (one per video, or per latent frame with
    /// `expand_timesteps`) given to the transformer at denoising step `step` (calibration records
    /// them).
    fn transformer_input(&mut self, _step: usize, _input: &Tensor, _timesteps: &[f32]) {}
}

impl Progress for () {}

pub struct GenerateOutput {
    /// `[F, H, W, 3]` in [0, 1] (diffusers `output_type="np"`).
    pub video: HostTensor,
    /// Final latents before de-normalisation, `[1, z, T', H', W']`, in the backend's memory.
    pub latents: Tensor,
    pub settings: ResolvedSettings,
    /// Seconds per stage, in order.
    pub timings: Vec<(String, f64)>,
    /// Denoising steps whose transformer blocks ran / were served by the step cache.
    pub transformer_evals: usize,
    pub steps_skipped: usize,
}

/// What the denoising loop is conditioned on, fixed across steps.
pub struct Conditioning {
    /// The cross-attentions' keys and values (text, and image for image-conditioned models).
    pub context: CrossAttentionContext,
    /// The same for the low-noise expert of a two-expert model.
    pub context_2: Option<CrossAttentionContext>,
    /// What the images give the loop besides the contexts (nothing for a text-to-video run).
    pub images: ImageInputs,
}

/// A video's image conditioning before any cross-attention is prepared ([`WanModel::image_inputs`]).
pub struct ImageInputs {
    /// The image encoder's states of the video's images, repeated for each prompt of its batch
    /// (`[batch·n, tokens, hidden]`), what
    /// [`crate::transformer::WanTransformer::prepare_context`] takes; None without an image
    /// encoder or an image.
    pub states: Option<Tensor>,
    /// Image-conditioned models: mask + image latent `[1, temporal_factor + z, T', H', W']`,
    /// concatenated to the latents along the channels before each transformer call.
    pub image_latent: Option<Tensor>,
    /// Wan2.2 TI2V given an image: its normalised latent `[1, z, 1, H', W']`, the first latent
    /// frame of every transformer input and of the result.
    pub first_frame: Option<Tensor>,
}

impl ImageInputs {
    /// One video's transformer input at a step: its latents, with the mask + image latent
    /// concatenated along the channels (image-to-video) or with the image's latent as the first
    /// latent frame (Wan2.2 TI2V given an image).
    pub fn transformer_input(&self, be: &dyn wanrt_nn::Backend, latents: &Tensor) -> Result<Tensor> {
        match (&self.image_latent, &self.first_frame) {
            (Some(image_latent), _) => Ok(be.cat(&[latents, image_latent], 1)?),
            (None, Some(first)) => with_first_frame(be, first, latents),
            (None, None) => Ok(latents.clone()),
        }
    }

    /// The denoised latents as the pipeline returns them: a TI2V image's latent is the result's
    /// first frame too.
    pub fn result(&self, be: &dyn wanrt_nn::Backend, latents: Tensor) -> Result<Tensor> {
        match &self.first_frame {
            Some(first) => with_first_frame(be, first, &latents),
            None => Ok(latents),
        }
    }
}

/// The result of the denoising loop.
pub struct Denoised {
    /// Final latents before de-normalisation, `[1, z, T', H', W']`.
    pub latents: Tensor,
    pub transformer_evals: usize,
    pub steps_skipped: usize,
}

impl WanModel {
    /// Applies the model's defaults (wanrt.json, then diffusers' WanPipeline defaults),
    /// the noise's shape, and diffusers' frame/size rules.
    pub fn resolve(&self, p: &GenerateParams) -> Result<ResolvedSettings> {
        let d = &self.defaults;
        let (tf, sf) = (self.vae.config.temporal_factor(), self.vae.config.spatial_factor());
        let mut warnings = Vec::new();
        self.check_images(p)?;
        // An image-to-video run is as large as its image unless told otherwise.
        let image_hw = p.image.as_ref().map(|im| (im.height, im.width));
        let (mut height, mut width, mut frames) = (
            p.height.or(image_hw.map(|s| s.0)).or(d.height).unwrap_or(480),
            p.width.or(image_hw.map(|s| s.1)).or(d.width).unwrap_or(832),
            p.num_frames.or(d.num_frames).unwrap_or(81),
        );
        if let Some(noise) = &p.noise {
            let &[1, z, t @ 1..=usize::MAX, h @ 1..=usize::MAX, w @ 1..=usize::MAX] = noise.shape() else {
                return Err(Error::Shape(format!(
                    "noise must be [1, z, T, H, W] with T, H, W ≥ 1, found {:?}",
                    noise.shape()
                )));
            };
            if !noise.all_finite() {
                return Err(Error::Config("the noise holds NaN or infinite values".into()));
            }
            if z != self.vae.config.z_dim {
                return Err(Error::Shape(format!(
                    "noise has {z} channels, the model's z_dim is {}",
                    self.vae.config.z_dim
                )));
            }
            let implied = ((t - 1) * tf + 1, h * sf, w * sf);
            for (name, given, want) in
                [("frames", p.num_frames, implied.0), ("height", p.height, implied.1), ("width", p.width, implied.2)]
            {
                if let Some(g) = given {
                    if g != want {
                        return Err(Error::Shape(format!(
                            "--{name} {g} conflicts with the noise, which implies {want}"
                        )));
                    }
                }
            }
            (frames, height, width) = implied;
        }
        let multiple = sf * self.transformer.config.patch_size[1].max(self.transformer.config.patch_size[2]);
        if height % multiple != 0 || width % multiple != 0 || height == 0 || width == 0 {
            return Err(Error::Shape(format!(
                "height and width must be positive multiples of {multiple}, got {height}×{width}"
            )));
        }
        if frames == 0 {
            return Err(Error::Shape("frames must be at least 1".into()));
        }
        // An image of another size is resized to the video's by the VAE side
        // (`RgbImage::resized`, diffusers' `VideoProcessor.preprocess`); said once, as a warning.
        for (flag, image) in [("--image", &p.image), ("--last-image", &p.last_image)] {
            if let Some(im) = image.as_ref().filter(|im| (im.height, im.width) != (height, width)) {
                warnings.push(format!(
                    "{flag} is {}×{} (height×width): resized to the video's {height}×{width} (Lanczos, as diffusers)",
                    im.height, im.width
                ));
            }
        }
        if (frames - 1) % tf != 0 {
            let rounded = (frames / tf) * tf + 1;
            warnings.push(format!("num_frames - 1 must be divisible by {tf}: rounding {frames} to {rounded}"));
            frames = rounded;
        }
        // --scheduler, else the preset's (a step-distilled model's recipe), else the model's config.
        let scheduler = match (p.scheduler, &d.scheduler) {
            (Some(kind), _) => kind,
            (None, Some(name)) => name.parse().map_err(|e| Error::Config(format!("wanrt.json: {e}")))?,
            (None, None) => self.scheduler.kind()?,
        };
        let shift = p.shift.or(d.shift).unwrap_or_else(|| self.scheduler.shift());
        let guidance = p.guidance.or(d.guidance_scale).unwrap_or(5.0);
        let cache_threshold = p.cache_threshold.or(d.cache_threshold).unwrap_or(0.0);
        // A NaN would compare false everywhere: NaN guidance would silently disable CFG.
        if !guidance.is_finite() {
            return Err(Error::Config(format!("guidance must be a finite number, got {guidance}")));
        }
        let guidance_2 = match (&self.transformer_2, p.guidance_2) {
            (None, Some(_)) => {
                return Err(Error::Config(
                    "--guidance-2 applies to two-expert models (Wan2.2 A14B: transformer_2 + boundary_ratio) only"
                        .into(),
                ))
            }
            (None, None) => None,
            (Some(_), g) => Some(g.unwrap_or(guidance)),
        };
        if let Some(g) = guidance_2.filter(|g| !g.is_finite()) {
            return Err(Error::Config(format!("guidance 2 must be a finite number, got {g}")));
        }
        if !(shift.is_finite() && shift > 0.0) {
            return Err(Error::Config(format!("shift must be a positive finite number, got {shift}")));
        }
        if !(cache_threshold.is_finite() && cache_threshold >= 0.0) {
            return Err(Error::Config(format!("cache threshold must be a non-negative number, got {cache_threshold}")));
        }
        if p.cuda_graph {
            let backend = self.transformer.backend().name();
            if backend != "cuda" {
                return Err(Error::Config(format!(
                    "CUDA graphs need the cuda backend (the transformer runs on {backend}): use --backend cuda"
                )));
            }
            if cache_threshold > 0.0 {
                return Err(Error::Config(
                    "CUDA graphs replay every step's whole pass; the step cache's skip decision is not captured: \
                     use a cache threshold of 0 or no CUDA graph"
                        .into(),
                ));
            }
        }
        // A preset's explicit schedule fixes the sampler and the number of steps.
        if let Some(list) = &d.sigmas {
            if scheduler != SchedulerKind::Euler {
                return Err(Error::Config(format!(
                    "the model's wanrt.json sets a schedule of {} sigmas, which needs the euler scheduler",
                    list.len()
                )));
            }
            if let Some(n) = p.steps.filter(|&n| n != list.len()) {
                return Err(Error::Config(format!(
                    "--steps {n} conflicts with the model's wanrt.json, whose schedule has {} sigmas",
                    list.len()
                )));
            }
        }
        let steps = p.steps.or(d.sigmas.as_ref().map(Vec::len)).or(d.num_inference_steps).unwrap_or(50);
        let max_steps = self.scheduler.max_steps();
        if steps == 0 || steps > max_steps {
            return Err(Error::Msg(format!(
                "steps must be 1 to {max_steps} (the scheduler's num_train_timesteps), got {steps}"
            )));
        }
        self.check_size(frames, height, width)?;
        let max_sequence_length = self.resolve_text_len(p, &mut warnings)?;
        let negative_prompt = p.negative_prompt.clone().or_else(|| d.negative_prompt.clone()).unwrap_or_default();
        let mut texts = vec![("prompt", p.prompt.as_str())];
        if guidance > 1.0 {
            texts.push(("negative prompt", negative_prompt.as_str()));
        }
        for (what, text) in texts {
            let n = self.tokenizer.count_tokens(text)?;
            if n > max_sequence_length {
                warnings.push(format!(
                    "the {what} is {n} tokens (with </s>); only the first {max_sequence_length} are used \
                     (--max-sequence-length)"
                ));
            }
        }
        Ok(ResolvedSettings {
            height,
            width,
            num_frames: frames,
            steps,
            guidance,
            guidance_2,
            shift,
            scheduler: match scheduler {
                SchedulerKind::UniPc => "unipc".into(),
                SchedulerKind::Euler => "euler".into(),
            },
            sigmas: d.sigmas.clone(),
            max_sequence_length,
            negative_prompt,
            seed: if p.noise.is_some() { None } else { Some(p.seed) },
            cache_threshold,
            cuda_graph: p.cuda_graph,
            warnings,
        })
    }

    /// Whether the model's transformer takes the mask + image latent beside the noisy latents
    /// (image-to-video models: `in_channels` = 2·z + temporal factor).
    pub fn takes_image_latent(&self) -> bool {
        self.transformer.config.in_channels != self.vae.config.z_dim
    }

    /// The images a model is conditioned on: none for text-to-video; a first frame for
    /// image-to-video, plus a last frame for first-last-frame models (whose image embedder has a
    /// position embedding over two images); a model without image embedder (Wan2.2's
    /// image-to-video) takes the last frame in its latent alone, if given.
    pub fn check_images(&self, p: &GenerateParams) -> Result<()> {
        if self.expand_timesteps {
            // Wan2.2 TI2V: text-to-video, or image-to-video from the first frame.
            return match &p.last_image {
                None => Ok(()),
                Some(_) => Err(Error::Config(
                    "this Wan2.2 TI2V model takes --image (the first frame) but no --last-image".into(),
                )),
            };
        }
        let embedded = self.transformer.images_per_video();
        match (self.takes_image_latent(), &p.image, &p.last_image) {
            (false, None, None) => Ok(()),
            (false, ..) => Err(Error::Config(
                "this is a text-to-video model: it takes no --image/--last-image (use an image-to-video model)".into(),
            )),
            (true, None, _) => Err(Error::Config("this image-to-video model needs --image (the first frame)".into())),
            (true, Some(_), None) if embedded == 2 => {
                Err(Error::Config("this first-last-frame model needs --last-image as well as --image".into()))
            }
            (true, Some(_), Some(_)) if embedded == 1 => Err(Error::Config(
                "this image-to-video model takes no --last-image (first-last-frame models set pos_embed_seq_len)"
                    .into(),
            )),
            (true, Some(_), _) => Ok(()),
        }
    }

    /// The longest text context this model takes: its config's `text_len` and its tokenizer's
    /// `model_max_length` where stated (the smaller), else [`crate::text::MAX_TEXT_LEN`].
    pub fn text_len_limit(&self) -> usize {
        [self.text_len, self.tokenizer.model_max_length]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(crate::text::MAX_TEXT_LEN)
    }

    /// `--max-sequence-length`, else the model's default, else diffusers' 512, checked against
    /// [`Self::text_len_limit`]: an explicit value beyond it is an error, a default beyond it is
    /// lowered with a warning.
    fn resolve_text_len(&self, p: &GenerateParams, warnings: &mut Vec<String>) -> Result<usize> {
        let limit = self.text_len_limit();
        if let Some(n) = p.max_sequence_length {
            if n == 0 || n > limit {
                return Err(Error::Msg(format!(
                    "max_sequence_length must be 1 to {limit} (the model's text length limit), got {n}"
                )));
            }
            return Ok(n);
        }
        let n = self.defaults.max_sequence_length.or(self.text_len).unwrap_or(512);
        if n == 0 {
            return Err(Error::Config("wanrt.json: max_sequence_length must be at least 1".into()));
        }
        if n > limit {
            warnings.push(format!("max_sequence_length {n} is beyond the model's text length limit; using {limit}"));
            return Ok(limit);
        }
        Ok(n)
    }

    /// Refuses sizes whose latents or transformer tokens cannot even be counted (a hostile
    /// `--frames`/`--height`/`--width` or wanrt.json); the memory a size needs is checked by the
    /// caller against its budget ([`Self::working_memory`]).
    fn check_size(&self, frames: usize, height: usize, width: usize) -> Result<()> {
        let [_, z, t, h, w] = self.latent_shape_of(frames, height, width);
        let numel = [z, t, h, w].iter().try_fold(1usize, |a, &n| a.checked_mul(n));
        match numel {
            Some(n) if n <= 1 << 40 => Ok(()),
            _ => Err(Error::Shape(format!("{frames} frames of {height}×{width} is far too large a video"))),
        }
    }

    fn latent_shape_of(&self, frames: usize, height: usize, width: usize) -> [usize; 5] {
        let (tf, sf) = (self.vae.config.temporal_factor(), self.vae.config.spatial_factor());
        [1, self.vae.config.z_dim, frames.saturating_sub(1) / tf + 1, height / sf, width / sf]
    }

    /// Latent shape `[1, z, T', H', W']` for the resolved settings.
    pub fn latent_shape(&self, s: &ResolvedSettings) -> [usize; 5] {
        self.latent_shape_of(s.num_frames, s.height, s.width)
    }

    pub fn generate(&self, p: &GenerateParams, progress: &mut dyn Progress) -> Result<GenerateOutput> {
        let s = self.resolve(p)?;
        let mut timings = Vec::new();

        progress.stage("text encoder");
        let mut t0 = Instant::now();
        let embeddings = self.encode_text(&s, &p.prompt)?;
        check_finite(&**self.text_encoder.backend(), &embeddings, "the text encoder")?;
        if p.image.is_some() {
            timings.push(("text_encoder".to_string(), t0.elapsed().as_secs_f64()));
            progress.stage("image encoder");
            t0 = Instant::now();
        }
        let conditioning = self.condition(&s, p, &embeddings)?;
        drop(embeddings);
        let stage = if p.image.is_some() { "image_encoder" } else { "text_encoder" };
        timings.push((stage.to_string(), t0.elapsed().as_secs_f64()));

        progress.stage("denoising");
        let t0 = Instant::now();
        let latents = self.initial_latents(&s, p)?;
        let den = self.denoise(&s, p.scheduler, latents, &conditioning, progress)?;
        check_finite(&**self.transformer.backend(), &den.latents, "denoising (transformer and scheduler)")?;
        timings.push(("denoising".to_string(), t0.elapsed().as_secs_f64()));

        progress.stage("vae decode");
        let t0 = Instant::now();
        let z = self.vae.denormalize(&den.latents)?;
        let decoded = self.vae.decode(&z, |i, n| progress.decode_frame(i, n))?;
        let video = to_frames(&**self.vae.backend(), decoded)?;
        check_finite_frames(&video)?;
        timings.push(("vae_decode".to_string(), t0.elapsed().as_secs_f64()));
        Ok(GenerateOutput {
            video,
            latents: den.latents,
            settings: s,
            timings,
            transformer_evals: den.transformer_evals,
            steps_skipped: den.steps_skipped,
        })
    }

    /// UMT5 embeddings `[B, L, d]` of the prompt, plus the negative prompt
    /// under classifier-free guidance (batched as `[cond; uncond]`).
    pub fn encode_text(&self, s: &ResolvedSettings, prompt: &str) -> Result<Tensor> {
        let mut prompts = vec![prompt.to_string()];
        if s.guidance > 1.0 {
            prompts.push(s.negative_prompt.clone());
        }
        encode_prompts(&self.tokenizer, &self.text_encoder, &prompts, s.max_sequence_length)
    }

    /// The cross-attention context of the text embeddings (`[cond; uncond]` under CFG) and, for
    /// image-conditioned models, of `p`'s images, plus the image latent.
    pub fn condition(&self, s: &ResolvedSettings, p: &GenerateParams, embeddings: &Tensor) -> Result<Conditioning> {
        let images = self.image_inputs(s, p, embeddings.dim(0))?;
        let context = self.transformer.prepare_context(embeddings, images.states.as_ref())?;
        let context_2 =
            self.transformer_2.as_ref().map(|t| t.prepare_context(embeddings, images.states.as_ref())).transpose()?;
        Ok(Conditioning { context, context_2, images })
    }

    /// What `p`'s images give a video before any cross-attention is prepared (nothing for a
    /// text-to-video run): apart from [`Self::condition`], a batching caller (`wanrt serve`)
    /// stacks several videos' states before preparing one context for them all. `batch` is the
    /// number of prompts of the video (2 under CFG), each of which sees the same images.
    pub fn image_inputs(&self, s: &ResolvedSettings, p: &GenerateParams, batch: usize) -> Result<ImageInputs> {
        self.check_images(p)?;
        let be = &**self.transformer.backend();
        let states = match (&p.image, &self.image_encoder) {
            (Some(first), Some(_)) => {
                let states = self.encode_images(first, p.last_image.as_ref())?;
                Some(if batch == 1 { states } else { be.cat(&vec![&states; batch], 0)? })
            }
            _ => None,
        };
        let (mut image_latent, mut first_frame) = (None, None);
        if let Some(first) = &p.image {
            let latent = if self.expand_timesteps {
                first_frame.insert(self.first_frame_latent(s, first)?)
            } else {
                image_latent.insert(self.image_latent(s, first, p.last_image.as_ref())?)
            };
            check_finite(be, latent, "the VAE encode of the image")?;
        }
        Ok(ImageInputs { states, image_latent, first_frame })
    }

    /// The transformer's timesteps at `t` for a batch of `batch` videos of `latent_frames`: one
    /// per video, or with `expand_timesteps` one per latent frame — diffusers'
    /// `first_frame_mask · t` per token, 0 on a given first frame.
    pub fn step_timesteps(&self, t: f32, batch: usize, latent_frames: usize, first_frame: bool) -> Vec<f32> {
        if !self.expand_timesteps {
            return vec![t; batch];
        }
        let per_video = (0..latent_frames).map(|f| if f == 0 && first_frame { 0.0 * t } else { t });
        per_video.cycle().take(batch * latent_frames).collect()
    }

    /// The timestep below which a two-expert model's low-noise expert runs.
    pub fn boundary_timestep(&self) -> Option<f32> {
        let train = self.scheduler.get_f64("num_train_timesteps", 1000.0);
        self.boundary_ratio.filter(|_| self.transformer_2.is_some()).map(|r| (r * train) as f32)
    }

    /// The low-noise expert when it runs at timestep `t`: diffusers' `transformer` while
    /// `t ≥ boundary`, then `transformer_2` (None: the first transformer runs).
    pub fn low_noise_expert_at(&self, t: f32) -> Option<&WanTransformer> {
        self.boundary_timestep().filter(|&b| t < b).and(self.transformer_2.as_ref())
    }

    /// The given noise, or Gaussian noise from the seed (drawn on the host, so every backend
    /// starts from the same values), uploaded to the transformer's backend.
    pub fn initial_latents(&self, s: &ResolvedSettings, p: &GenerateParams) -> Result<Tensor> {
        let shape = self.latent_shape(s);
        let noise = match &p.noise {
            Some(n) => n.clone(),
            None => {
                let mut rng = rand::rngs::StdRng::seed_from_u64(p.seed);
                let n: usize = shape.iter().product();
                HostTensor::new(shape, (0..n).map(|_| StandardNormal.sample(&mut rng)).collect())?
            }
        };
        Ok(self.transformer.backend().upload(&noise)?)
    }

    /// The sampler of resolved settings `s` (its algorithm, shift and schedule); `kind`
    /// overrides the algorithm.
    pub fn scheduler_for(&self, s: &ResolvedSettings, kind: Option<SchedulerKind>) -> Result<Box<dyn Scheduler>> {
        let resolved: SchedulerKind = s.scheduler.parse().map_err(Error::Config)?;
        self.scheduler.build_with(s.steps, Some(kind.unwrap_or(resolved)), Some(s.shift), s.sigmas.as_deref())
    }

    /// The scheduler loop from `latents` (with the step cache when the
    /// resolved threshold is positive).
    pub fn denoise(
        &self,
        s: &ResolvedSettings,
        scheduler: Option<SchedulerKind>,
        mut latents: Tensor,
        conditioning: &Conditioning,
        progress: &mut dyn Progress,
    ) -> Result<Denoised> {
        let cfg = s.guidance > 1.0;
        let mut sched = self.scheduler_for(s, scheduler)?;
        let timesteps = sched.timesteps().to_vec();
        let mut cache =
            if s.cache_threshold > 0.0 { Some(StepCache::new(s.cache_threshold, timesteps.len())?) } else { None };
        let be = &**self.transformer.backend();
        let mut low_noise_stage = false;
        let (mut evals, mut skipped_before) = (0, 0);
        let mut graphs: Vec<ExpertGraph> = Vec::new();
        for (i, &t) in timesteps.iter().enumerate() {
            let (transformer, context, guidance) = match (self.low_noise_expert_at(t), &conditioning.context_2) {
                (Some(t2), Some(ctx2)) => {
                    if !low_noise_stage {
                        // The high-noise expert is done for this video: its streamed weights'
                        // pages leave the process instead of doubling its resident memory.
                        self.transformer.release_weight_pages();
                        // The cached residual belongs to the other expert.
                        low_noise_stage = true;
                        skipped_before += cache.as_ref().map_or(0, |c| c.skipped);
                        cache = cache.map(|_| StepCache::new(s.cache_threshold, timesteps.len() - i)).transpose()?;
                    }
                    (t2, ctx2, s.guidance_at(true))
                }
                _ => (&self.transformer, &conditioning.context, s.guidance_at(false)),
            };
            let images = &conditioning.images;
            let input = images.transformer_input(be, &latents)?;
            let batch = if cfg { be.cat(&[&input, &input], 0)? } else { input };
            let ts = self.step_timesteps(t, batch.dim(0), latents.dim(2), images.first_frame.is_some());
            progress.transformer_input(i, &batch, &ts);
            let (noise_pred, computed) = if s.cuda_graph {
                (graph_step(transformer, &batch, &ts, context, &mut graphs)?, true)
            } else {
                transformer.forward_cached(&batch, &ts, context, cache.as_mut())?
            };
            evals += usize::from(computed);
            let noise_pred = if cfg { be.cfg_combine(&noise_pred, guidance as f32)? } else { noise_pred };
            latents = sched.step(be, &noise_pred, &latents)?;
            progress.step(i + 1, timesteps.len());
        }
        let latents = conditioning.images.result(be, latents)?;
        let skipped = skipped_before + cache.map_or(0, |c| c.skipped);
        Ok(Denoised { latents, transformer_evals: evals, steps_skipped: skipped })
    }
}

/// One expert's captured transformer pass and the rotary tables its graph reads.
struct ExpertGraph<'a> {
    expert: &'a WanTransformer,
    _rope: crate::attention::RotaryEmbedding,
    step: Box<dyn wanrt_nn::backend::CapturedStep + 'a>,
}

/// The transformer pass of `expert` replayed from its graph, captured at its first step: the
/// time conditioning is computed eagerly and enters as device tensors, so the graph serves every
/// timestep; the text context and rotary tables are the same every step.
fn graph_step<'a>(
    expert: &'a WanTransformer,
    batch: &Tensor,
    timesteps: &[f32],
    context: &CrossAttentionContext,
    graphs: &mut Vec<ExpertGraph<'a>>,
) -> Result<Tensor> {
    let (temb, proj) = expert.time_conditioning(timesteps)?;
    let inputs = [batch, &temb, &proj];
    let at = match graphs.iter().position(|g| std::ptr::eq(g.expert, expert)) {
        Some(at) => at,
        None => {
            let &[_, _, f, h, w] = batch.shape() else {
                return Err(Error::Shape(format!(
                    "transformer input must be [B, C, F, H, W], found {:?}",
                    batch.shape()
                )));
            };
            let rope = expert.rope(expert.grid(f, h, w)?)?;
            let step = expert.backend().capture(&inputs, &expert.captured_pass(&rope, context))?;
            graphs.push(ExpertGraph { expert, _rope: rope, step });
            graphs.len() - 1
        }
    };
    Ok(graphs[at].step.replay(&inputs)?)
}

impl WanModel {
    /// How many images a generation must be given: 2 for first-last-frame models, 1 for
    /// image-to-video, 0 for text-to-video (and Wan2.2 TI2V, whose image is optional).
    pub fn required_images(&self) -> usize {
        let c = &self.transformer.config;
        required_images(self.expand_timesteps, c.in_channels, self.vae.config.z_dim, c.pos_embed_seq_len.is_some())
    }
}

/// The images a model must be given, from what its configs say: image-to-video models take more
/// input channels than the VAE's latents (the mask and image latent), first-last-frame ones embed
/// two images' positions; Wan2.2 TI2V (`expand_timesteps`) takes an image or none.
pub fn required_images(expand_timesteps: bool, in_channels: usize, z_dim: usize, first_last: bool) -> usize {
    match (expand_timesteps, in_channels != z_dim) {
        (false, true) => 1 + usize::from(first_last),
        _ => 0,
    }
}

/// `latents` with its first latent frame replaced by `first`: diffusers'
/// `(1 − first_frame_mask)·condition + first_frame_mask·latents`, whose mask is 0 on the first
/// latent frame and 1 elsewhere (the same values, without the arithmetic).
fn with_first_frame(be: &dyn wanrt_nn::Backend, first: &Tensor, latents: &Tensor) -> Result<Tensor> {
    let frames = latents.dim(2);
    if first.shape()[..2] != latents.shape()[..2] || first.shape()[3..] != latents.shape()[3..] || first.dim(2) != 1 {
        return Err(Error::Shape(format!(
            "the image latent {:?} does not fit the latents {:?}",
            first.shape(),
            latents.shape()
        )));
    }
    if frames == 1 {
        return Ok(first.clone());
    }
    Ok(be.cat(&[first, &be.narrow(latents, 2, 1, frames - 1)?], 2)?)
}

fn non_finite(stage: &str) -> Error {
    Error::Msg(format!("{stage} produced NaN or infinite values (broken or mismatched weights?); no video written"))
}

/// Stops the run when a stage's output holds NaN or ±∞ (one scalar read back), naming the stage:
/// such values would otherwise become a black or noise video with exit status 0.
pub fn check_finite(be: &dyn wanrt_nn::Backend, x: &Tensor, stage: &str) -> Result<()> {
    if be.all_finite(x)? {
        Ok(())
    } else {
        Err(non_finite(stage))
    }
}

/// [`check_finite`] for the downloaded frames.
pub fn check_finite_frames(video: &HostTensor) -> Result<()> {
    if video.all_finite() {
        Ok(())
    } else {
        Err(non_finite("the VAE decode"))
    }
}

/// `[1, 3, F, H, W]` in [-1, 1] → `[F, H, W, 3]` as `clamp(x/2 + 0.5, 0, 1)`, downloaded: the
/// pipeline's one read of tensor data.
pub fn to_frames(be: &dyn wanrt_nn::Backend, decoded: Tensor) -> Result<HostTensor> {
    let &[1, c, f, h, w] = decoded.shape() else {
        return Err(Error::Shape(format!("decoded video must be [1, C, F, H, W], found {:?}", decoded.shape())));
    };
    let mut frames = be.permute(&decoded.reshape([c, f, h, w])?, &[1, 2, 3, 0])?;
    be.affine_clamp(&mut frames, 0.5, 0.5, 0.0, 1.0)?;
    #[allow(clippy::disallowed_methods)] // the final frames: the transfer the pipeline exists for
    let video = be.to_host(&frames)?;
    Ok(video)
}
