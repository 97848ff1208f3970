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

/// Resident bytes of this process's mappings of `file` (`/proc/self/smaps`).
#[cfg(target_os = "linux")]
fn resident_kib(file: &std::path::Path) -> u64 {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let name = file.display().to_string();
    let mut total = 0;
    let mut inside = false;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        // A mapping's header line: "start-end perms offset dev inode [path]".
        if first.contains('-') && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            inside = line.ends_with(&name);
        } else if let Some(kib) = line.strip_prefix("Rss:").filter(|_| inside) {
            total += kib.trim().trim_end_matches("kB").trim().parse::<u64>().unwrap();
        }
    }
    total
}

/// After the switch to the low-noise expert, the high-noise expert's streamed weights leave the
/// process: its checkpoint's mapped pages are no longer resident (the second's are).
#[cfg(target_os = "linux")]
#[test]
fn the_first_expert_is_released_after_the_boundary() {
    let dir = std::env::temp_dir().join(format!("wanrt-moe-release-{}", std::process::id()));
    common::copy_dir(&fixture_in("wan_moe", "t2v_a"), &dir);
    let [first, second] =
        ["transformer", "transformer_2"].map(|c| dir.join(c).join("diffusion_pytorch_model.safetensors"));
    let r = Reference::load_dir(&fixture_in("wan_moe", "t2v_a"));
    let model = WanModel::load(&dir, |_| {}).unwrap();
    let mut p = r.generate_params();
    p.guidance_2 = r.meta["guidance_scale_2"].as_f64();
    model.generate(&p, &mut ()).unwrap();
    let size_kib = std::fs::metadata(&first).unwrap().len() / 1024;
    let (a, b) = (resident_kib(&first), resident_kib(&second));
    println!("resident after generate: first expert {a} KiB, second {b} KiB (files {size_kib} KiB)");
    assert!(b >= size_kib / 2, "the second expert's weights should be resident: {b} KiB");
    assert!(a <= 8, "the first expert's pages are still resident: {a} KiB");
    drop(model);
    std::fs::remove_dir_all(&dir).ok();
}
