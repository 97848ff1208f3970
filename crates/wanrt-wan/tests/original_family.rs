//! The original Wan-Video release layouts of the Wan family — Wan2.1 I2V and FLF2V (open-clip CLIP
//! `.pth`, image embedder under `img_emb.*`, `cross_attn.k_img`…), Wan2.2 TI2V-5B
//! (`Wan2.2_VAE.pth`) and A14B (`high_noise_model/` + `low_noise_model/`) — generate diffusers' video, and `wanrt convert` turns them into
//! diffusers folders that generate the same bits. Fixtures: the committed diffusers fixtures
//! rewritten by `tools/fixtures/make_wan_original_fixtures.py` (which also loads the files into
//! Wan's own modules); `source.json` names the diffusers fixture whose references apply.
// Tests read values to compare them; the lint forbids it in model code only.
#![allow(clippy::disallowed_methods)]

mod common;
use common::{assert_close, copy_dir, fixture_in, host, Reference};
use std::path::{Path, PathBuf};
use wanrt_wan::image::RgbImage;
use wanrt_wan::model::{Layout, WanModel};
use wanrt_wan::pipeline::GenerateParams;

fn read_png(path: &Path) -> RgbImage {
    let img = image::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).into_rgb8();
    RgbImage::new(img.height() as usize, img.width() as usize, img.into_raw()).unwrap()
}

/// The original-layout folder and the diffusers fixture it was written from.
fn case(name: &str) -> (PathBuf, PathBuf) {
    let dir = fixture_in("wan_original", name);
    let source: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("source.json")).unwrap()).unwrap();
    let src = dir.join("../..").join(source["diffusers_fixture"].as_str().unwrap());
    (dir, src)
}

/// Wan2.1 I2V / FLF2V: the diffusers fixture's images, size and frame count.
fn i2v_params(src: &Path, r: &Reference) -> GenerateParams {
    let mut p = r.generate_params();
    let images: Vec<RgbImage> =
        r.meta["images"].as_array().unwrap().iter().map(|f| read_png(&src.join(f.as_str().unwrap()))).collect();
    p.image = images.first().cloned();
    p.last_image = images.get(1).cloned();
    p.height = Some(r.meta["height"].as_u64().unwrap() as usize);
    p.width = Some(r.meta["width"].as_u64().unwrap() as usize);
    p.num_frames = Some(r.meta["num_frames"].as_u64().unwrap() as usize);
    p
}

/// Loads the original folder, checks the image encoder against diffusers' CLIP states, generates,
/// and checks the frames; then the converted folder must give the same bits.
fn check_i2v(name: &str, first_last: bool) {
    let (dir, src) = case(name);
    let r = Reference::load_dir(&src);
    let model = WanModel::load(&dir, |_| {}).unwrap();
    assert_eq!(model.layout, Layout::Original);
    assert_eq!(model.transformer.config.pos_embed_seq_len.is_some(), first_last);
    let p = i2v_params(&src, &r);

    let encoder = model.image_encoder.as_ref().expect("an image encoder from the CLIP .pth");
    let states = model.encode_images(p.image.as_ref().unwrap(), p.last_image.as_ref()).unwrap();
    let got = host(&**encoder.clip.backend(), &states);
    assert_close(&format!("{name} image encoder"), &got, &r.get("clip.image_embeds"), 1e-5, 1e-10);

    let out = model.generate(&p, &mut ()).unwrap();
    assert_close(&format!("{name} video"), &out.video, &r.get("video"), 1e-4, 1e-9);
    check_converted(name, &dir, &p, &out.video);
}

/// `wanrt convert` of the folder generates the very same frames in the diffusers layout.
fn check_converted(name: &str, dir: &Path, p: &GenerateParams, video: &wanrt_nn::HostTensor) {
    let tmp = std::env::temp_dir().join(format!("wanrt-orig-{name}-{}", std::process::id()));
    let converted = tmp.with_extension("diffusers");
    std::fs::remove_dir_all(&tmp).ok();
    std::fs::remove_dir_all(&converted).ok();
    copy_dir(dir, &tmp);
    let mut stages = Vec::new();
    wanrt_wan::convert::original_to_diffusers(&tmp, &converted, |s| stages.push(s.to_string())).unwrap();
    let conv = WanModel::load(&converted, |_| {}).unwrap();
    assert_eq!(conv.layout, Layout::Diffusers);
    let again = conv.generate(p, &mut ()).unwrap();
    assert_eq!(again.video.data(), video.data(), "{name}: the converted folder generates other frames");
    let index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(converted.join("model_index.json")).unwrap()).unwrap();
    if conv.image_encoder.is_some() {
        assert_eq!(stages, ["text encoder", "transformer", "image encoder", "vae"]);
    }
    let class = if conv.required_images() > 0 { "WanImageToVideoPipeline" } else { "WanPipeline" };
    assert_eq!(index["_class_name"], class);
    assert_eq!(index["boundary_ratio"].as_f64(), conv.boundary_ratio, "{name}");
    assert_eq!(conv.transformer_2.is_some(), stages.contains(&"transformer_2".to_string()));
    assert_eq!(index["expand_timesteps"].as_bool().unwrap_or(false), conv.expand_timesteps);
    std::fs::remove_dir_all(&tmp).ok();
    std::fs::remove_dir_all(&converted).ok();
}

#[test]
fn wan21_i2v_release_layout() {
    check_i2v("i2v_b", false);
}

#[test]
fn wan21_flf2v_release_layout() {
    check_i2v("flf2v_c", true);
}

/// Wan2.2 TI2V-5B: `model_type` "ti2v" turns on per-token timesteps, `Wan2.2_VAE.pth` is the
/// residual VAE; text-to-video and image-to-video both give diffusers' frames.
#[test]
fn wan22_ti2v_release_layout() {
    let (dir, src) = case("ti2v_a");
    let r = Reference::load_dir(&src);
    let model = WanModel::load(&dir, |_| {}).unwrap();
    assert!(model.expand_timesteps && model.vae.config.is_residual && model.image_encoder.is_none());
    let m = &r.meta;
    let mut outputs = Vec::new();
    for mode in ["t2v", "i2v"] {
        let mut p = GenerateParams::new(m["prompt"].as_str().unwrap());
        p.negative_prompt = m["negative_prompt"].as_str().map(String::from);
        p.steps = Some(m["num_inference_steps"].as_u64().unwrap() as usize);
        p.guidance = Some(m["guidance_scale"].as_f64().unwrap());
        p.max_sequence_length = Some(m["max_sequence_length"].as_u64().unwrap() as usize);
        p.noise = Some(r.get(&format!("{mode}.noise")));
        if mode == "i2v" {
            p.image = Some(read_png(&src.join(m["image"].as_str().unwrap())));
        }
        let out = model.generate(&p, &mut ()).unwrap();
        assert_close(&format!("ti2v_a {mode} video"), &out.video, &r.get(&format!("{mode}.video")), 1e-4, 1e-9);
        outputs.push((p, out.video));
    }
    let (p, video) = outputs.pop().unwrap();
    check_converted("ti2v_a", &dir, &p, &video);
}

/// Wan2.2 A14B: `high_noise_model/` and `low_noise_model/` are the two experts, switched at Wan's
/// boundary for the model type (the release files do not state it); text- and image-to-video.
#[test]
fn wan22_a14b_release_layout() {
    for (name, boundary) in [("a14b_t2v", 0.875), ("a14b_i2v", 0.9)] {
        let (dir, src) = case(name);
        let r = Reference::load_dir(&src);
        let model = WanModel::load(&dir, |_| {}).unwrap();
        assert!(model.transformer_2.is_some(), "{name}: two experts");
        assert_eq!(model.boundary_ratio, Some(boundary), "{name}");
        assert_eq!(r.meta["boundary_ratio"].as_f64(), Some(boundary), "{name}: the fixture's own boundary");
        let mut p = r.generate_params();
        p.guidance_2 = r.meta["guidance_scale_2"].as_f64();
        if let Some(f) = r.meta["images"].as_array().unwrap().first() {
            p.image = Some(read_png(&src.join(f.as_str().unwrap())));
        }
        let out = model.generate(&p, &mut ()).unwrap();
        assert_close(&format!("{name} video"), &out.video, &r.get("video"), 1e-4, 1e-9);
        check_converted(name, &dir, &p, &out.video);
    }
}

/// The release's latent statistics stand in when `wanrt.json` gives none: Wan2.2's 48 values.
#[test]
fn wan22_vae_takes_the_release_latent_statistics() {
    let (dir, _) = case("ti2v_a");
    let tmp = std::env::temp_dir().join(format!("wanrt-orig-stats-{}", std::process::id()));
    copy_dir(&dir, &tmp);
    let mut defaults: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tmp.join("wanrt.json")).unwrap()).unwrap();
    defaults.as_object_mut().unwrap().retain(|k, _| !k.starts_with("vae_latents"));
    std::fs::write(tmp.join("wanrt.json"), defaults.to_string()).unwrap();
    let model = WanModel::load(&tmp, |_| {}).unwrap();
    assert_eq!(model.vae.config.latents_mean, wanrt_wan::vae::WAN22_LATENTS_MEAN.to_vec());
    assert_eq!(model.vae.config.latents_std, wanrt_wan::vae::WAN22_LATENTS_STD.to_vec());
    std::fs::remove_dir_all(&tmp).ok();
}

/// Refusals, each one line naming what is wrong: a CLIP file with a tensor the open-clip tower
/// does not have, a missing CLIP file, a width whose head count is unknown, a `model_type` the
/// tensors contradict.
#[test]
fn bad_release_folders_are_refused() {
    let (dir, _) = case("i2v_b");
    let load_err = |edit: &dyn Fn(&Path)| -> String {
        let tmp = std::env::temp_dir().join(format!("wanrt-orig-bad-{}", std::process::id()));
        std::fs::remove_dir_all(&tmp).ok();
        copy_dir(&dir, &tmp);
        edit(&tmp);
        let err = WanModel::load(&tmp, |_| {}).err().expect("a bad folder loads").to_string();
        std::fs::remove_dir_all(&tmp).ok();
        assert!(!err.contains('\n'), "not one line: {err}");
        err
    };
    let clip = "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth";

    let err = load_err(&|d| std::fs::remove_file(d.join(clip)).unwrap());
    assert!(err.contains(clip) && err.contains("missing"), "{err}");

    let err = load_err(&|d| {
        let json = std::fs::read_to_string(d.join("wanrt.json")).unwrap();
        let mut v: serde_json::Value = serde_json::from_str(&json).unwrap();
        v.as_object_mut().unwrap().remove("image_encoder_heads");
        std::fs::write(d.join("wanrt.json"), v.to_string()).unwrap();
    });
    assert!(err.contains("image_encoder_heads"), "{err}");

    let err = load_err(&|d| {
        let json = std::fs::read_to_string(d.join("config.json")).unwrap();
        std::fs::write(d.join("config.json"), json.replace("\"i2v\"", "\"t2v\"")).unwrap();
    });
    assert!(err.contains("image embedder"), "{err}");

    let err = load_err(&|d| {
        let json = std::fs::read_to_string(d.join("config.json")).unwrap();
        std::fs::write(d.join("config.json"), json.replace("\"i2v\"", "\"s2v\"")).unwrap();
    });
    assert!(err.contains("\"s2v\"") && err.contains("not supported"), "{err}");

    let err = load_err(&|d| std::fs::write(d.join("wanrt.json"), r#"{"boundary_ratio": 1.5}"#).unwrap());
    assert!(err.contains("boundary_ratio") && err.contains("1.5"), "{err}");
}
