//! Wan2.2 TI2V-5B-style models against diffusers: the residual, patched VAE (z_dim 48, 16×
//! spatial) alone, one transformer pass with per-token timesteps (`expand_timesteps`), and whole
//! text-to-video (`WanPipeline`) and image-to-video (`WanImageToVideoPipeline`, the image latent
//! in place of the first latent frame) runs to the final frames.
//! Fixtures: `tools/fixtures/make_wan_ti2v_fixtures.py` (`ti2v_b` is held out: other widths,
//! heads, frames, decoder width and scheduler, not looked at while developing).
// Tests read values to compare them; the lint forbids it in model code only.
#![allow(clippy::disallowed_methods)]

mod common;
use common::{assert_close, copy_dir, cpu, fixture_in, host, Reference};
use wanrt_nn::WeightStore;
use wanrt_wan::image::RgbImage;
use wanrt_wan::model::WanModel;
use wanrt_wan::pipeline::GenerateParams;
use wanrt_wan::vae::{VaeConfig, WanVae};

fn read_png(path: &std::path::Path) -> RgbImage {
    let img = image::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).into_rgb8();
    RgbImage::new(img.height() as usize, img.width() as usize, img.into_raw()).unwrap()
}

fn check_vae(case: &str) {
    let dir = fixture_in("wan_ti2v", case);
    let vae_dir = dir.join("vae");
    let cfg: VaeConfig = serde_json::from_str(&std::fs::read_to_string(vae_dir.join("config.json")).unwrap()).unwrap();
    assert!(cfg.is_residual && cfg.patch_size == Some(2) && cfg.z_dim == 48);
    assert_eq!((cfg.temporal_factor(), cfg.spatial_factor()), (4, 16));
    let ws = WeightStore::from_diffusers_dir(&vae_dir, "diffusion_pytorch_model").unwrap();
    let be = cpu();
    let vae = WanVae::load(&ws, cfg, be.clone(), true).unwrap();
    let r = Reference::load_dir(&dir);
    let latent = host(&*be, &vae.encode_mean(&be.upload(&r.get("vae.video")).unwrap()).unwrap());
    assert_close(&format!("{case} vae encode"), &latent, &r.get("vae.latent"), 1e-4, 1e-9);
    let decoded = host(&*be, &vae.decode(&be.upload(&r.get("vae.latent")).unwrap(), |_, _| {}).unwrap());
    assert_close(&format!("{case} vae decode"), &decoded, &r.get("vae.decoded"), 1e-4, 1e-9);
}

#[test]
fn residual_vae_encode_decode() {
    check_vae("ti2v_a");
}

#[test]
fn residual_vae_held_out() {
    check_vae("ti2v_b");
}

struct Case {
    model: WanModel,
    r: Reference,
    dir: std::path::PathBuf,
}

fn load(case: &str) -> Case {
    let dir = fixture_in("wan_ti2v", case);
    let r = Reference::load_dir(&dir);
    let model = WanModel::load(&dir, |_| {}).unwrap();
    Case { model, r, dir }
}

/// The run recorded under `mode` ("t2v" or "i2v").
fn params(c: &Case, mode: &str) -> GenerateParams {
    let m = &c.r.meta;
    let mut p = GenerateParams::new(m["prompt"].as_str().unwrap());
    p.negative_prompt = m["negative_prompt"].as_str().map(String::from);
    p.steps = Some(m["num_inference_steps"].as_u64().unwrap() as usize);
    p.guidance = Some(m["guidance_scale"].as_f64().unwrap());
    p.max_sequence_length = Some(m["max_sequence_length"].as_u64().unwrap() as usize);
    p.noise = Some(c.r.get(&format!("{mode}.noise")));
    if mode == "i2v" {
        p.image = Some(read_png(&c.dir.join(m["image"].as_str().unwrap())));
    }
    p
}

/// One transformer pass from the reference's inputs with diffusers' per-token timesteps.
fn check_transformer(case: &str, mode: &str) {
    let c = load(case);
    let be = &**c.model.transformer.backend();
    let context =
        c.model.transformer.prepare_text(&be.upload(&c.r.get(&format!("{mode}.text.prompt_embeds"))).unwrap()).unwrap();
    let latents = be.upload(&c.r.get(&format!("{mode}.step0.latent_in"))).unwrap();
    // [B, tokens] per token; constant over each latent frame's tokens.
    let per_token = c.r.get(&format!("{mode}.step0.timestep"));
    let frames = latents.dim(2);
    let per_frame = per_token.shape()[1] / frames;
    let ts: Vec<f32> = (0..frames).map(|f| per_token.data()[f * per_frame]).collect();
    assert!(per_token.data().chunks(per_frame).zip(&ts).all(|(run, t)| run.iter().all(|v| v == t)));
    let pred = c.model.transformer.forward_prepared(&latents, &ts, &context).unwrap();
    let want = c.r.get(&format!("{mode}.step0.noise_pred_cond"));
    assert_close(&format!("{case} {mode} transformer"), &host(be, &pred), &want, 1e-5, 1e-10);
    if mode == "i2v" {
        // The first frame's timestep 0 is what sets image-to-video apart: one timestep for the
        // whole video (Wan2.1's way) moves the prediction far beyond the tolerance.
        let one = c.model.transformer.forward_prepared(&latents, &[ts[1]], &context).unwrap();
        let moved = host(be, &one).max_abs_diff(&want).unwrap();
        assert!(moved > 1e-2, "{case}: per-frame timesteps changed the prediction by only {moved}");
    }
}

fn check_pipeline(case: &str, mode: &str) {
    let c = load(case);
    let p = params(&c, mode);
    let out = c.model.generate(&p, &mut ()).unwrap();
    // The VAE's input: for image-to-video, the image latent back in the first frame.
    let z = host(&**c.model.vae.backend(), &c.model.vae.denormalize(&out.latents).unwrap());
    assert_close(&format!("{case} {mode} final latents"), &z, &c.r.get(&format!("{mode}.vae.latents_in")), 1e-4, 1e-9);
    assert_close(&format!("{case} {mode} video"), &out.video, &c.r.get(&format!("{mode}.video")), 1e-4, 1e-9);
}

#[test]
fn t2v_transformer_per_token_timesteps() {
    check_transformer("ti2v_a", "t2v");
}

#[test]
fn i2v_transformer_first_frame_at_zero() {
    check_transformer("ti2v_a", "i2v");
}

#[test]
fn t2v_pipeline() {
    check_pipeline("ti2v_a", "t2v");
}

#[test]
fn i2v_pipeline() {
    check_pipeline("ti2v_a", "i2v");
}

#[test]
fn t2v_held_out() {
    check_pipeline("ti2v_b", "t2v");
}

#[test]
fn i2v_held_out() {
    check_pipeline("ti2v_b", "i2v");
}

#[test]
fn images_a_ti2v_model_cannot_take_are_refused() {
    let c = load("ti2v_a");
    let p = params(&c, "i2v");
    let refused = |p: &GenerateParams| c.model.resolve(p).map(|_| ()).unwrap_err().to_string();
    let mut last = p.clone();
    last.last_image = p.image.clone();
    assert!(refused(&last).contains("no --last-image"), "{}", refused(&last));
    let mut small = p.clone();
    let im = p.image.as_ref().unwrap();
    small.image = Some(RgbImage::new(im.height / 2, im.width, im.data[..im.data.len() / 2].to_vec()).unwrap());
    // Another size than the video's is resized (tests/image_resize.rs), with a warning.
    let s = c.model.resolve(&small).unwrap();
    assert!(s.warnings.iter().any(|w| w.contains("resized to the video's")), "{:?}", s.warnings);
    // Text-to-video needs no image.
    assert!(c.model.resolve(&params(&c, "t2v")).is_ok());
}

#[test]
fn hostile_wan22_vae_configs_are_refused() {
    let base: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture_in("wan_ti2v", "ti2v_a").join("vae/config.json")).unwrap(),
    )
    .unwrap();
    let cases = [
        ("patch_size", serde_json::json!(0), "patch_size 0"),
        ("patch_size", serde_json::json!(usize::MAX), "must be 1 to"),
        ("patch_size", serde_json::json!(4), "in_channels 12 must be 48"),
        ("in_channels", serde_json::json!(3), "in_channels 3 must be 12"),
        ("scale_factor_spatial", serde_json::json!(8), "scale_factor_spatial 8 disagrees"),
        ("z_dim", serde_json::json!(usize::MAX), "z_dim"),
        (
            "dim_mult",
            serde_json::json!([
                1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
                1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1
            ]),
            "stages",
        ),
    ];
    for (key, value, want) in cases {
        let mut cfg = base.clone();
        cfg[key] = value;
        let cfg: VaeConfig = serde_json::from_value(cfg).unwrap();
        let msg = cfg.validate().unwrap_err().to_string();
        assert!(msg.contains(want) && !msg.contains('\n'), "{key}: {msg}");
    }
    // A residual stage whose shortcut cannot fold its channels (as diffusers asserts).
    for (mult, want) in [("[1, 2, 2, 3]", "8 × 1 divisible by 12"), ("[3, 2, 2, 2]", "divisible")] {
        let mut cfg = base.clone();
        cfg["dim_mult"] = serde_json::from_str(mult).unwrap();
        let msg = serde_json::from_value::<VaeConfig>(cfg).unwrap().validate().unwrap_err().to_string();
        assert!(msg.contains(want), "{mult}: {msg}");
    }
}

/// `expand_timesteps` on a model that cannot take per-token timesteps (a Wan2.1 I2V transformer:
/// mask + image latent channels, an image embedder) is refused at load in one line.
#[test]
fn expand_timesteps_on_a_wan21_i2v_model_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&fixture_in("wan_i2v", "i2v_a"), tmp.path());
    let index = tmp.path().join("model_index.json");
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&index).unwrap()).unwrap();
    v["expand_timesteps"] = serde_json::json!(true);
    std::fs::write(&index, v.to_string()).unwrap();
    let msg = WanModel::load(tmp.path(), |_| {}).err().unwrap().to_string();
    assert!(msg.contains("expand_timesteps (Wan2.2 TI2V) needs") && !msg.contains('\n'), "{msg}");
}

/// A video the Wan2.2 VAE cannot fold (odd size) is an error, not a panic.
#[test]
fn unfoldable_sizes_are_refused_by_the_residual_vae() {
    let vae_dir = fixture_in("wan_ti2v", "ti2v_a").join("vae");
    let cfg: VaeConfig = serde_json::from_str(&std::fs::read_to_string(vae_dir.join("config.json")).unwrap()).unwrap();
    let ws = WeightStore::from_diffusers_dir(&vae_dir, "diffusion_pytorch_model").unwrap();
    let be = cpu();
    let vae = WanVae::load(&ws, cfg, be.clone(), true).unwrap();
    for (h, w, want) in [(33, 32, "divisible by patch_size 2"), (36, 32, "cannot be halved")] {
        let x = be.upload(&wanrt_nn::HostTensor::new([1, 3, 1, h, w], vec![0.0; 3 * h * w]).unwrap()).unwrap();
        let msg = vae.encode_mean(&x).err().unwrap().to_string();
        assert!(msg.contains(want), "{h}×{w}: {msg}");
    }
}
