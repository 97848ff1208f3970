//! The serving engine against the reference pipeline (`WanModel::generate`) on the demo
//! model: a batch of one is the same computation bit for bit; a batched job matches its
//! solo run to float rounding; a job stopped between steps leaves the others unchanged.

mod common;

use wanrt_serve::engine::{self, Next};
use wanrt_serve::job::JobParams;
use wanrt_wan::model::WanModel;

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
    }
}

/// Frames `[F, H, W, 3]` of each job run through the engine as one batch.
fn run_batch(model: &WanModel, jobs: &[JobParams], stop: Option<(usize, usize)>) -> Vec<Option<Vec<f32>>> {
    let encoded = jobs.iter().map(|p| engine::encode(model, p).unwrap()).collect();
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
        .map(|p| model.generate(&engine::generate_params(p), &mut ()).unwrap().video.data().to_vec())
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
        let r = model.generate(&engine::generate_params(p), &mut ()).unwrap();
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
    let reference = model.generate(&engine::generate_params(&job), &mut ()).unwrap();
    assert_eq!((reference.settings.scheduler.as_str(), reference.settings.steps), ("euler", 4));
    let solo = run_batch(&model, &[job], None);
    assert_eq!(solo[0].as_ref().unwrap(), reference.video.data(), "the served video is generate's, bit for bit");
}
