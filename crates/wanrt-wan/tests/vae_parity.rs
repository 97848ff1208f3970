//! VAE decode (one latent frame at a time with the causal cache) and encode
//! against diffusers' AutoencoderKLWan.
// Tests read values to compare them; the lint forbids it in model code only.
#![allow(clippy::disallowed_methods)]

mod common;
use common::{assert_close, cpu, fixture, host, Reference};
use wanrt_nn::WeightStore;
use wanrt_wan::vae::{VaeConfig, WanVae};

fn check_case(case: &str) {
    let dir = fixture(case).join("vae");
    let cfg: VaeConfig = serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let ws = WeightStore::from_diffusers_dir(&dir, "diffusion_pytorch_model").unwrap();
    let be = cpu();
    let vae = WanVae::load(&ws, cfg, be.clone(), true).unwrap();
    let r = Reference::load(case);
    let up = |name: &str| be.upload(&r.get(name)).unwrap();
    let last = r.steps() - 1;
    let z = host(&*be, &vae.denormalize(&up(&format!("step{last}.latent_out"))).unwrap());
    assert_close(&format!("{case} vae.latents_in"), &z, &r.get("vae.latents_in"), 1e-5, 1e-12);
    let decoded = host(&*be, &vae.decode(&up("vae.latents_in"), |_, _| {}).unwrap());
    assert_close(&format!("{case} vae.decoded"), &decoded, &r.get("vae.decoded"), 1e-4, 1e-9);
    let mean = host(&*be, &vae.encode_mean(&up("vae_enc.input")).unwrap());
    assert_close(&format!("{case} vae_enc.mean"), &mean, &r.get("vae_enc.mean"), 1e-4, 1e-9);
}

#[test]
fn vae_case_a() {
    check_case("a");
}

#[test]
fn vae_case_b() {
    check_case("b");
}

#[test]
fn vae_case_c() {
    check_case("c");
}
