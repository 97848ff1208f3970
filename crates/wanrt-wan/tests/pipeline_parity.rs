//! End to end: prompt + reference initial noise → final frames, against
//! diffusers' `WanPipeline(output_type="np")` — the 1e-4 bar —
//! for diffusers folders and for the original release layout.
// Tests read values to compare them; the lint forbids it in model code only.
#![allow(clippy::disallowed_methods)]

mod common;
use common::{assert_close, copy_dir, fixture, host, Reference};
use wanrt_wan::model::{Layout, WanModel};

fn check_case(case: &str) {
    let r = Reference::load(case);
    let model = WanModel::load(&fixture(case), |_| {}).unwrap();
    assert_eq!(model.layout, Layout::Diffusers);
    let out = model.generate(&r.generate_params(), &mut ()).unwrap();
    let m = &r.meta;
    assert_eq!(out.settings.num_frames as u64, m["num_frames"].as_u64().unwrap());
    assert_eq!(out.settings.height as u64, m["height"].as_u64().unwrap());
    assert_eq!(out.settings.width as u64, m["width"].as_u64().unwrap());
    let last = r.steps() - 1;
    let latents = host(&**model.transformer.backend(), &out.latents);
    assert_close(&format!("{case} final latents"), &latents, &r.get(&format!("step{last}.latent_out")), 1e-4, 1e-9);
    assert_close(&format!("{case} video"), &out.video, &r.get("video"), 1e-4, 1e-9);
}

#[test]
fn pipeline_case_a_unipc_cfg() {
    check_case("a");
}

#[test]
fn pipeline_case_b_euler_no_cfg() {
    check_case("b");
}

#[test]
fn pipeline_case_c_held_out() {
    check_case("c");
}

/// `--no-prepack`: the f32 checkpoint's weights streamed (packed block by block inside each
/// product, from the mapped file) give the packed weights' video bit for bit.
#[test]
fn streamed_weights_give_the_packed_bits() {
    use wanrt_nn::backend::{CpuOptions, Prepack};
    use wanrt_wan::model::LoadOptions;
    let r = Reference::load("a");
    let opts = LoadOptions::cpu_with(CpuOptions { prepack: Prepack::Never, ..Default::default() });
    let streamed =
        WanModel::load_with(&fixture("a"), opts, |_| {}).unwrap().generate(&r.generate_params(), &mut ()).unwrap();
    let packed = WanModel::load(&fixture("a"), |_| {}).unwrap().generate(&r.generate_params(), &mut ()).unwrap();
    assert_eq!(streamed.video.data(), packed.video.data());
}

/// The original release layout of case a (renamed DiT safetensors, VAE and T5
/// `.pth` files, no scheduler config) gives case a's video with `--shift 3`.
/// Its VAE has z_dim 4, for which the release defines no latent statistics:
/// they come from a `wanrt.json` beside a copy of the folder.
#[test]
fn pipeline_original_layout() {
    let src = fixture("a_original");
    let tmp = std::env::temp_dir().join(format!("wanrt-orig-{}", std::process::id()));
    copy_dir(&src, &tmp);
    let vae_cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("a").join("vae/config.json")).unwrap()).unwrap();
    let wanrt = serde_json::json!({
        "vae_latents_mean": vae_cfg["latents_mean"],
        "vae_latents_std": vae_cfg["latents_std"],
    });
    std::fs::write(tmp.join("wanrt.json"), wanrt.to_string()).unwrap();
    let model = WanModel::load(&tmp, |_| {}).unwrap();
    assert_eq!(model.layout, Layout::Original);
    let r = Reference::load("a");
    let mut p = r.generate_params();
    p.shift = Some(3.0);
    let out = model.generate(&p, &mut ()).unwrap();
    assert_close("a_original video", &out.video, &r.get("video"), 1e-4, 1e-9);

    // `wanrt convert`: the diffusers-layout copy generates the very same frames.
    let converted = tmp.with_extension("diffusers");
    let mut stages = Vec::new();
    wanrt_wan::convert::original_to_diffusers(&tmp, &converted, |s| stages.push(s.to_string())).unwrap();
    assert_eq!(stages, ["text encoder", "transformer", "vae"]);
    let conv = WanModel::load(&converted, |_| {}).unwrap();
    assert_eq!(conv.layout, Layout::Diffusers);
    let out_conv = conv.generate(&p, &mut ()).unwrap();
    assert_eq!(out_conv.video.data(), out.video.data(), "converted folder generates other frames");
    // The release's text_len became the folder's default context length.
    let text_len =
        serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(tmp.join("config.json")).unwrap()).unwrap()
            ["text_len"]
            .as_u64();
    assert_eq!(conv.defaults.max_sequence_length.map(|x| x as u64), text_len);
    // Refusals: a non-empty output, a source that is already diffusers-layout.
    let again = wanrt_wan::convert::original_to_diffusers(&tmp, &converted, |_| {}).unwrap_err().to_string();
    assert!(again.contains("not empty"), "{again}");
    let other = converted.with_extension("again");
    let not_original =
        wanrt_wan::convert::original_to_diffusers(&fixture("a"), &other, |_| {}).unwrap_err().to_string();
    assert!(not_original.contains("not in the original release layout"), "{not_original}");
    assert!(!other.exists());
    std::fs::remove_dir_all(&tmp).ok();
    std::fs::remove_dir_all(&converted).ok();
}

/// Case b's transformer is stored in bf16: streamed (kept in half precision, widened inside each
/// product: the default) or widened into packed f32 at load, the video is the same bits.
#[test]
fn half_weight_storage_is_exact() {
    use wanrt_nn::backend::Prepack;
    use wanrt_wan::model::LoadOptions;
    let r = Reference::load("b");
    let full =
        WanModel::load_with(&fixture("b"), LoadOptions::cpu(wanrt_nn::DType::F32, Prepack::Always), |_| {}).unwrap();
    let half = WanModel::load(&fixture("b"), |_| {}).unwrap();
    let a = full.generate(&r.generate_params(), &mut ()).unwrap();
    let b = half.generate(&r.generate_params(), &mut ()).unwrap();
    assert_eq!(a.video.data(), b.video.data());
}
