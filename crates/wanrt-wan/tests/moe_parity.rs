//! Two-expert (Wan2.2 A14B-style) pipelines against diffusers: the high-noise `transformer` until
//! the boundary timestep, then `transformer_2` with `guidance_scale_2`; text-to-video and
//! image-to-video (image latent, no CLIP). Fixtures: `tools/fixtures/make_wan_moe_fixtures.py`.
#![allow(clippy::disallowed_methods)]

mod common;
use common::{assert_close, fixture_in, host, Reference};
use wanrt_wan::image::RgbImage;
use wanrt_wan::model::WanModel;
use wanrt_wan::pipeline::GenerateParams;

fn load(case: &str) -> (WanModel, Reference, GenerateParams) {
    let dir = fixture_in("wan_moe", case);
    let r = Reference::load_dir(&dir);
    let model = WanModel::load(&dir, |_| {}).unwrap();
    let mut p = r.generate_params();
    p.guidance_2 = r.meta["guidance_scale_2"].as_f64();
    if let Some(f) = r.meta["images"].as_array().unwrap().first() {
        let img = image::open(dir.join(f.as_str().unwrap())).unwrap().into_rgb8();
        p.image = Some(RgbImage::new(img.height() as usize, img.width() as usize, img.into_raw()).unwrap());
    }
    (model, r, p)
}

fn check(case: &str) {
    let (model, r, p) = load(case);
    assert!(model.transformer_2.is_some() && model.boundary_ratio.is_some());
    let out = model.generate(&p, &mut ()).unwrap();
    let last = r.steps_recorded() - 1;
    let latents = host(&**model.transformer.backend(), &out.latents);
    assert_close(&format!("{case} final latents"), &latents, &r.get(&format!("step{last}.latent_out")), 1e-4, 1e-9);
    assert_close(&format!("{case} video"), &out.video, &r.get("video"), 1e-4, 1e-9);
}

#[test]
fn two_experts_t2v() {
    check("t2v_a");
}

#[test]
fn two_experts_i2v_without_image_encoder() {
    check("i2v_a");
}

#[test]
fn two_experts_held_out() {
    check("t2v_b");
}

/// The low-noise expert matters: running every step on the high-noise expert (no boundary)
/// lands far from diffusers' video, so the parity above does exercise the switch.
#[test]
fn every_step_on_one_expert_differs() {
    let (mut model, r, p) = load("t2v_a");
    let switch = r.get("expert").data().iter().position(|&e| e == 2.0).unwrap();
    assert!(switch > 0 && switch < r.steps_recorded(), "the fixture switches experts mid-run");
    model.boundary_ratio = None;
    let out = model.generate(&p, &mut ()).unwrap();
    let err = out.video.max_abs_diff(&r.get("video")).unwrap();
    assert!(err > 1e-2, "one expert only gave max|Δ| {err:e}");
}

#[test]
fn guidance_2_needs_two_experts() {
    let dir = common::fixture("a");
    let model = WanModel::load(&dir, |_| {}).unwrap();
    let mut p = Reference::load("a").generate_params();
    p.guidance_2 = Some(2.0);
    let msg = model.resolve(&p).expect_err("refused").to_string();
    assert!(msg.contains("--guidance-2"), "{msg}");
    let (model, _, mut p) = load("t2v_a");
    p.guidance_2 = Some(f64::NAN);
    assert!(model.resolve(&p).is_err());
}
