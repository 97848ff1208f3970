//! One transformer pass per denoising step against diffusers' outputs given
//! the same inputs (`step{i}.noise_pred_cond/_uncond` in ref.safetensors).
// Tests read values to compare them; the lint forbids it in model code only.
#![allow(clippy::disallowed_methods)]

mod common;
use common::{assert_close, cpu, fixture, host, Reference};
use wanrt_nn::WeightStore;
use wanrt_wan::transformer::{TransformerConfig, WanTransformer};

fn check_case(case: &str) {
    let dir = fixture(case).join("transformer");
    let cfg: TransformerConfig =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let ws = WeightStore::from_diffusers_dir(&dir, "diffusion_pytorch_model").unwrap();
    let be = cpu();
    let model = WanTransformer::load(&ws, cfg, be.clone()).unwrap();
    let r = Reference::load(case);
    let up = |t: &wanrt_nn::HostTensor| be.upload(t).unwrap();
    for i in 0..r.steps() {
        let latent = up(&r.get(&format!("step{i}.latent_in")));
        let t = r.get(&format!("step{i}.timestep")).data().to_vec();
        let text = model.prepare_text(&up(&r.get("text.prompt_embeds"))).unwrap();
        let cond = host(&*be, &model.forward_prepared(&latent, &t, &text).unwrap());
        // The split a CUDA graph captures (time conditioning and rotary tables as inputs) is the
        // same computation, bit for bit.
        let [_, _, f, h, w] = latent.shape().try_into().unwrap();
        let rope = model.rope(model.grid(f, h, w).unwrap()).unwrap();
        let (temb, proj) = model.time_conditioning(&t).unwrap();
        let split = host(&*be, &model.forward_conditioned(&latent, &temb, &proj, &rope, &text).unwrap());
        assert!(
            split.data().iter().zip(cond.data()).all(|(a, b)| a.to_bits() == b.to_bits()),
            "{case} step{i}: split differs"
        );
        assert_close(
            &format!("{case} step{i}.noise_pred_cond"),
            &cond,
            &r.get(&format!("step{i}.noise_pred_cond")),
            1e-4,
            1e-9,
        );
        if r.has(&format!("step{i}.noise_pred_uncond")) {
            let uncond = model.forward(&latent, &t, &up(&r.get("text.negative_prompt_embeds"))).unwrap();
            let uncond = host(&*be, &uncond);
            let want = r.get(&format!("step{i}.noise_pred_uncond"));
            assert_close(&format!("{case} step{i}.noise_pred_uncond"), &uncond, &want, 1e-4, 1e-9);
        }
    }
}

#[test]
fn transformer_case_a() {
    check_case("a");
}

#[test]
fn transformer_case_b_bf16_sharded() {
    check_case("b");
}

#[test]
fn transformer_case_c_held_out() {
    check_case("c");
}
