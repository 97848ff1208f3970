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

/// `loras_2` (`--lora-2`, diffusers' `load_into_transformer_2=True`) lands on the low-noise
/// expert only: the video equals that of a copy whose `transformer_2` holds `W + scale · B·A`
/// (computed here in f64, apart from wanrt's merge) and differs from the LoRA-free one; a
/// one-expert model refuses it, naming the file.
#[test]
fn loras_2_merge_into_the_low_noise_expert() {
    use wanrt_nn::weights::{write_safetensors, RawTensor};
    use wanrt_nn::{HostTensor, WeightStore};
    use wanrt_wan::lora::LoraSpec;
    use wanrt_wan::model::LoadOptions;

    let dir = fixture_in("wan_moe", "t2v_a");
    let tmp = tempfile::tempdir().unwrap();
    let (rank, scale) = (2usize, 0.5f32);
    let t2 = dir.join("transformer_2/diffusion_pytorch_model.safetensors");
    let store = WeightStore::from_safetensors_files(std::slice::from_ref(&t2)).unwrap();
    let mut lora = vec![];
    let mut merged: Vec<(String, RawTensor)> =
        store.names().map(|n| (n.to_string(), RawTensor::from_f32(&store.get(n).unwrap()))).collect();
    for (i, layer) in ["blocks.0.attn1.to_q", "blocks.1.ffn.net.0.proj"].into_iter().enumerate() {
        let w = store.get(&format!("{layer}.weight")).unwrap();
        let &[n, k] = w.shape() else { panic!("2-D weight") };
        let val = |j: usize, s: f32| (j as f32 * 0.61 + s + i as f32).sin() * 0.3;
        let a: Vec<f32> = (0..rank * k).map(|j| val(j, 1.0)).collect();
        let b: Vec<f32> = (0..n * rank).map(|j| val(j, 2.0)).collect();
        let sum: Vec<f32> = (0..n * k)
            .map(|e| {
                let (r, c) = (e / k, e % k);
                let d: f64 = (0..rank).map(|q| b[r * rank + q] as f64 * a[q * k + c] as f64).sum();
                (w.data()[e] as f64 + scale as f64 * d) as f32
            })
            .collect();
        let name = format!("{layer}.weight");
        merged.retain(|(m, _)| *m != name);
        merged.push((name, RawTensor::from_f32(&HostTensor::new([n, k], sum).unwrap())));
        lora.push((format!("transformer.{layer}.lora_A.weight"), HostTensor::new([rank, k], a).unwrap()));
        lora.push((format!("transformer.{layer}.lora_B.weight"), HostTensor::new([n, rank], b).unwrap()));
    }
    let lora_file = tmp.path().join("low_noise.safetensors");
    let lora: Vec<(String, RawTensor)> = lora.iter().map(|(k, t)| (k.clone(), RawTensor::from_f32(t))).collect();
    write_safetensors(&lora_file, lora.iter().map(|(k, t)| (k.as_str(), t))).unwrap();
    let merged_dir = tmp.path().join("merged");
    common::copy_dir(&dir, &merged_dir);
    let merged_file = merged_dir.join("transformer_2/diffusion_pytorch_model.safetensors");
    write_safetensors(&merged_file, merged.iter().map(|(k, t)| (k.as_str(), t))).unwrap();

    let spec = LoraSpec { path: lora_file.clone(), scale };
    let opts = || LoadOptions { loras_2: vec![spec.clone()], ..Default::default() };
    let with_lora = WanModel::load_with(&dir, opts(), |_| {}).unwrap();
    assert_eq!((with_lora.loras.len(), with_lora.loras_2.len()), (0, 1));
    assert_eq!(with_lora.loras_2[0].layers, 2);
    let (plain, _, p) = load("t2v_a");
    let video = |m: &WanModel| m.generate(&p, &mut ()).unwrap().video;
    let got = video(&with_lora);
    let want = video(&WanModel::load(&merged_dir, |_| {}).unwrap());
    let err = got.max_abs_diff(&want).unwrap();
    assert!(err <= 1e-5, "--lora-2 vs transformer_2 merged here: max|Δ| {err:e}");
    let effect = got.max_abs_diff(&video(&plain)).unwrap();
    assert!(effect > 1e-3, "the LoRA changes the video (max|Δ| {effect:e})");

    let msg = WanModel::load_with(&common::fixture("a"), opts(), |_| {}).err().expect("refused").to_string();
    assert!(msg.contains("low_noise.safetensors") && msg.contains("transformer_2"), "{msg}");
}
