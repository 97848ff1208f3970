//! The serving engine against the reference pipeline (`WanModel::generate`) on the demo
//! model: a batch of one is the same computation bit for bit; a batched job matches its
//! solo run to float rounding; a job stopped between steps leaves the others unchanged.
//! Image jobs on the fixture models (I2V, first-last-frame, Wan2.2 TI2V, two experts), parsed
//! and stored as `POST /v1/videos` does, against `wanrt generate --image` likewise.

mod common;

use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use wanrt_serve::engine::{self, Next};
use wanrt_serve::inputs::{self, Images};
use wanrt_serve::job::JobParams;
use wanrt_serve::models::Models;
use wanrt_serve::request::{self, Form, Limits, Submission};
use wanrt_wan::image::RgbImage;
use wanrt_wan::model::WanModel;
use wanrt_wan::pipeline::GenerateParams;

fn params(prompt: &str, seed: u64, guidance: f64) -> JobParams {
    JobParams {
        model: "demo".into(),
        prompt: prompt.into(),
        negative_prompt: "blurry".into(),
        width: 32,
        height: 32,
        num_frames: 17,
        num_inference_steps: 6,
        guidance_scale: guidance,
        seed,
        fps: 8.0,
        warnings: vec![],
        loras: vec![],
        image: None,
        last_image: None,
    }
}

/// Frames `[F, H, W, 3]` of each job run through the engine as one batch.
fn run_batch(model: &WanModel, jobs: &[JobParams], stop: Option<(usize, usize)>) -> Vec<Option<Vec<f32>>> {
    let encoded = jobs.iter().map(|p| engine::encode(model, p, Images::default()).unwrap()).collect();
    let latents = engine::denoise(model, encoded, |step, _, k| match stop {
        Some((job, at)) if job == k && step >= at => Next::Stop,
        _ => Next::Continue,
    })
    .unwrap();
    latents.into_iter().map(|l| l.map(|l| engine::decode(model, &l, |_, _| {}).unwrap().data().to_vec())).collect()
}

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn batches_match_the_reference_pipeline() {
    let model = WanModel::load(&common::demo_model(), |_| {}).unwrap();
    let jobs = [params("a red ball", 1, 4.0), params("a blue cube spins", 2, 6.0), params("waves", 3, 4.0)];
    let reference: Vec<Vec<f32>> = jobs
        .iter()
        .map(|p| model.generate(&engine::generate_params(p, Images::default()), &mut ()).unwrap().video.data().to_vec())
        .collect();

    // Alone: the very same arithmetic as `generate`.
    let solo = run_batch(&model, &jobs[..1], None);
    assert_eq!(solo[0].as_ref().unwrap(), &reference[0], "a batch of one is bit-identical to generate");

    // Together: each job's video matches its own run (GEMMs over more rows may round differently).
    let batched = run_batch(&model, &jobs, None);
    for (k, (b, r)) in batched.iter().zip(&reference).enumerate() {
        let err = max_abs(b.as_ref().unwrap(), r);
        eprintln!("job {k}: max |batched - solo| = {err:e}");
        assert!(err < 5e-5, "job {k}: batched video differs from its solo run by {err}");
    }

    // Job 1 stopped after step 2: it yields nothing, the others are unaffected.
    let stopped = run_batch(&model, &jobs, Some((1, 2)));
    assert!(stopped[1].is_none());
    for k in [0, 2] {
        let err = max_abs(stopped[k].as_ref().unwrap(), &reference[k]);
        assert!(err < 5e-5, "job {k} after another job left the batch: {err}");
    }
}

#[test]
fn guidance_off_batches_too() {
    let model = WanModel::load(&common::demo_model(), |_| {}).unwrap();
    let jobs = [params("a red ball", 1, 1.0), params("a green tree", 9, 1.0)];
    let batched = run_batch(&model, &jobs, None);
    for (k, p) in jobs.iter().enumerate() {
        let r = model.generate(&engine::generate_params(p, Images::default()), &mut ()).unwrap();
        let err = max_abs(batched[k].as_ref().unwrap(), r.video.data());
        assert!(err < 5e-5, "job {k}: {err}");
    }
}

#[test]
fn a_step_distilled_preset_runs_its_own_sampler() {
    // The demo model with a distilled recipe beside it: Euler on an explicit schedule, where the
    // folder's scheduler config names UniPC.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo-distilled");
    std::fs::create_dir(&dir).unwrap();
    for e in std::fs::read_dir(common::demo_model()).unwrap() {
        let e = e.unwrap();
        if e.file_name() != "wanrt.json" {
            std::os::unix::fs::symlink(e.path(), dir.join(e.file_name())).unwrap();
        }
    }
    let mut preset: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(common::demo_model().join("wanrt.json")).unwrap()).unwrap();
    for (key, value) in [
        ("scheduler", serde_json::json!("euler")),
        ("shift", serde_json::json!(5.0)),
        ("guidance_scale", serde_json::json!(1.0)),
        ("sigmas", serde_json::json!([1.0, 0.75, 0.5, 0.25])),
    ] {
        preset[key] = value;
    }
    std::fs::write(dir.join("wanrt.json"), preset.to_string()).unwrap();
    let model = WanModel::load(&dir, |_| {}).unwrap();
    let job = JobParams { num_inference_steps: 4, ..params("a red ball", 1, 1.0) };
    let reference = model.generate(&engine::generate_params(&job, Images::default()), &mut ()).unwrap();
    assert_eq!((reference.settings.scheduler.as_str(), reference.settings.steps), ("euler", 4));
    let solo = run_batch(&model, &[job], None);
    assert_eq!(solo[0].as_ref().unwrap(), reference.video.data(), "the served video is generate's, bit for bit");
}

// ---------------------------------------------------------------- image inputs

/// A fixture model folder (`fixtures/…`).
fn fixture(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures").join(path)
}

/// A request on a fixture model as its meta.json describes it, with its images uploaded, parsed as
/// `POST /v1/videos` parses it; the images are stored and read back as the job's worker reads them.
struct ImageJob {
    params: JobParams,
    images: Images,
    /// The image files, for `wanrt generate --image` (and `--last-image`).
    files: Vec<PathBuf>,
}

fn image_job(models: &Models, dir: &Path, seed: u64, with_images: bool) -> ImageJob {
    let meta: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("meta.json")).unwrap()).unwrap();
    let names: Vec<&str> = match (&meta["images"], &meta["image"]) {
        (Value::Array(a), _) => a.iter().map(|v| v.as_str().unwrap()).collect(),
        (_, Value::String(one)) => vec![one.as_str()],
        _ => vec![],
    };
    let files: Vec<PathBuf> = if with_images { names.iter().map(|n| dir.join(n)).collect() } else { vec![] };
    let mut form = Form::default();
    for key in ["prompt", "negative_prompt", "num_frames", "num_inference_steps", "guidance_scale"] {
        if !meta[key].is_null() {
            form.fields.insert(key.into(), meta[key].clone());
        }
    }
    if !with_images {
        // Without an image the size is the fixture's, not the model's default.
        form.fields.insert("size".into(), json!(format!("{}x{}", meta["width"], meta["height"])));
    }
    form.fields.insert("model".into(), json!(models.names()[0]));
    form.fields.insert("seed".into(), json!(seed));
    for (field, file) in ["input_reference", "last_image"].iter().zip(&files) {
        form.files.insert(field.to_string(), std::fs::read(file).unwrap());
    }
    let Submission { params, uploads } = request::parse(&form, models, &Limits::default()).unwrap();
    let outputs = tempfile::tempdir().unwrap();
    inputs::save(outputs.path(), "video_000000000000000000000001", &uploads).unwrap();
    let images = inputs::load(outputs.path(), "video_000000000000000000000001", &params).unwrap();
    ImageJob { params, images, files }
}

/// What `wanrt generate --image FIRST [--last-image LAST] --seed … --frames … --steps … --guidance …`
/// makes of `job`: no size given (the image's), images read from their files.
fn generate_cli(model: &WanModel, job: &ImageJob) -> Vec<f32> {
    let read = |p: &PathBuf| {
        let v = wanrt_media::read_image(p).unwrap();
        RgbImage::new(v.height(), v.width(), v.into_data()).unwrap()
    };
    let p = &job.params;
    let gp = GenerateParams {
        height: job.files.is_empty().then_some(p.height),
        width: job.files.is_empty().then_some(p.width),
        num_frames: Some(p.num_frames),
        steps: Some(p.num_inference_steps),
        guidance: Some(p.guidance_scale),
        seed: p.seed,
        image: job.files.first().map(read),
        last_image: job.files.get(1).map(read),
        ..GenerateParams::new(p.prompt.clone())
    };
    let gp = GenerateParams { negative_prompt: Some(p.negative_prompt.clone()), ..gp };
    model.generate(&gp, &mut ()).unwrap().video.data().to_vec()
}

fn run_image_batch(model: &WanModel, jobs: &[&ImageJob]) -> Vec<Vec<f32>> {
    let encoded = jobs.iter().map(|j| engine::encode(model, &j.params, j.images.clone()).unwrap()).collect();
    let latents = engine::denoise(model, encoded, |_, _, _| Next::Continue).unwrap();
    latents.into_iter().map(|l| engine::decode(model, &l.unwrap(), |_, _| {}).unwrap().data().to_vec()).collect()
}

/// Served alone, an image job is `wanrt generate --image`'s video bit for bit; batched with
/// `other` (another seed, or a text-only job of the same model), each matches its solo run.
fn check_image_model(path: &str, other_has_images: bool) {
    let dir = fixture(path);
    let models = Models::load(std::slice::from_ref(&dir), |_| {}).unwrap();
    let model = &models.find(None).unwrap().model;
    let job = image_job(&models, &dir, 7, true);
    assert!(job.params.image.is_some(), "{path}: the job records its image");
    let reference = generate_cli(model, &job);
    let solo = run_image_batch(model, &[&job]);
    assert_eq!(solo[0], reference, "{path}: the served video is generate --image's, bit for bit");

    let other = image_job(&models, &dir, 8, other_has_images);
    let other_solo = run_image_batch(model, &[&other]).remove(0);
    let batched = run_image_batch(model, &[&job, &other]);
    for (k, (b, r)) in batched.iter().zip([&reference, &other_solo]).enumerate() {
        let err = max_abs(b, r);
        eprintln!("{path} job {k}: max |batched - solo| = {err:e}");
        assert!(err < 5e-5, "{path} job {k}: batched video differs from its solo run by {err}");
    }
}

#[test]
fn an_image_to_video_job_is_generate_image_bit_for_bit() {
    check_image_model("wan_i2v/i2v_a", true);
}

#[test]
fn a_first_last_frame_job_is_generate_bit_for_bit() {
    check_image_model("wan_i2v/flf2v_a", true);
}

#[test]
fn a_ti2v_job_with_an_image_batches_with_a_text_only_one() {
    // Wan2.2 TI2V: the image's job has timestep 0 on its first latent frame, the other not.
    check_image_model("wan_ti2v/ti2v_a", false);
}

#[test]
fn a_two_expert_image_to_video_job_is_generate_bit_for_bit() {
    // Wan2.2 I2V A14B's shape: the image in the latent only (no CLIP), two experts.
    check_image_model("wan_moe/i2v_a", true);
}

#[test]
fn a_two_expert_text_to_video_job_switches_experts_as_generate() {
    let dir = fixture("wan_moe/t2v_a");
    let models = Models::load(std::slice::from_ref(&dir), |_| {}).unwrap();
    let model = &models.find(None).unwrap().model;
    let job = image_job(&models, &dir, 3, false);
    let solo = run_image_batch(model, &[&job]);
    assert_eq!(solo[0], generate_cli(model, &job), "served two-expert video is generate's, bit for bit");
}
