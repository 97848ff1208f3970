//! `wanrt generate --lora` against diffusers (`load_lora_weights` + `set_adapters` weights,
//! `fixtures/lora/`, made by tools/fixtures/make_lora_fixtures.py): each key format alone and all
//! three together, merged and unmerged, on f32 weights (≤ 1e-4), on an int8 artifact (within the
//! artifact's own fidelity) and on a GGUF transformer; unmatched keys and bad specs refused.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

fn lora_meta() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join("lora/meta.json")).unwrap()).unwrap()
}

/// `--lora FILE:SCALE` arguments of one fixture run.
fn lora_args(run: &str) -> Vec<String> {
    let meta = lora_meta();
    let mut args = vec![];
    for a in meta["runs"][run].as_array().unwrap() {
        let file = fixtures().join("lora").join(a["file"].as_str().unwrap());
        args.push("--lora".to_string());
        args.push(format!("{}:{}", file.display(), a["scale"]));
    }
    args
}

/// fixtures/wan/a's case (settings, noise) on `model`, frames saved to `out/frames.npy`.
fn generate(model: &Path, out: &Path, extra: &[String]) -> Output {
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("wan/a/meta.json")).unwrap()).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wanrt"));
    cmd.args(["generate", "--model"]).arg(model);
    cmd.args(["--prompt", m["prompt"].as_str().unwrap()]);
    cmd.args(["--negative-prompt", m["negative_prompt"].as_str().unwrap()]);
    cmd.args(["--steps", &m["num_inference_steps"].to_string()]);
    cmd.args(["--guidance", &m["guidance_scale"].to_string()]);
    cmd.args(["--max-sequence-length", &m["max_sequence_length"].to_string()]);
    cmd.arg("--noise").arg(fixtures().join("wan/a/noise.npy"));
    cmd.arg("--save-npy").arg(out.join("frames.npy"));
    cmd.arg("-o").arg(out.join("video.gif"));
    cmd.args(extra);
    cmd.output().unwrap()
}

fn frames(out: &Path) -> Vec<f32> {
    wanrt_io::read_npy(out.join("frames.npy")).unwrap().to_f32_vec()
}

fn reference(key: &str) -> Vec<f32> {
    let file =
        if key == "none" { fixtures().join("wan/a/ref.safetensors") } else { fixtures().join("lora/ref.safetensors") };
    let ws = wanrt_nn::WeightStore::from_safetensors_files(&[file]).unwrap();
    ws.get(if key == "none" { "video" } else { key }).unwrap().into_data()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn run_ok(model: &Path, extra: &[String]) -> Vec<f32> {
    let dir = tempfile::tempdir().unwrap();
    let out = generate(model, dir.path(), extra);
    assert!(out.status.success(), "{extra:?}: {}", String::from_utf8_lossy(&out.stderr));
    frames(dir.path())
}

#[test]
fn every_key_format_matches_diffusers_merged_and_unmerged() {
    let model = fixtures().join("wan/a");
    for run in ["peft", "kohya", "original", "all"] {
        let want = reference(run);
        let merged = run_ok(&model, &lora_args(run));
        let err = max_diff(&merged, &want);
        println!("{run}: merged max|Δ| = {err:.3e}");
        assert!(err <= 1e-4, "{run}: merged max|Δ| = {err}");
        let mut args = lora_args(run);
        args.push("--lora-unmerged".into());
        let side = run_ok(&model, &args);
        let (err, between) = (max_diff(&side, &want), max_diff(&side, &merged));
        println!("{run}: unmerged max|Δ| = {err:.3e}, merged vs unmerged {between:.3e}");
        assert!(err <= 1e-4, "{run}: unmerged max|Δ| = {err}");
        assert!(between <= 2e-5, "{run}: merged vs unmerged {between}");
    }
}

#[test]
fn lora_on_an_int8_artifact_keeps_the_artifact_fidelity() {
    let tmp = tempfile::tempdir().unwrap();
    let art = tmp.path().join("int8");
    let out = Command::new(env!("CARGO_BIN_EXE_wanrt"))
        .args(["optimize", "--model"])
        .arg(fixtures().join("wan/a"))
        .args(["--quant", "int8", "--no-report", "-o"])
        .arg(&art)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // The artifact's own fidelity: its frames vs diffusers' f32 frames, no LoRA.
    let base = max_diff(&run_ok(&art, &[]), &reference("none"));
    let with = max_diff(&run_ok(&art, &lora_args("all")), &reference("all"));
    println!("int8 artifact: max|Δ| {base:.3e} without LoRA, {with:.3e} with the three LoRAs (side path)");
    assert!(with <= (2.0 * base).max(1e-3), "int8 + LoRA max|Δ| {with} vs artifact fidelity {base}");
}

#[test]
fn unmatched_keys_and_bad_specs_are_refused_in_one_line() {
    use wanrt_nn::weights::{write_safetensors, RawTensor};
    let tmp = tempfile::tempdir().unwrap();
    let t = |shape: Vec<usize>| {
        RawTensor::from_f32(&wanrt_nn::HostTensor::new(shape.clone(), vec![0.1; shape.iter().product()]).unwrap())
    };
    let (down, up, alpha) = (t(vec![2, 24]), t(vec![24, 2]), t(vec![]));
    let stray = tmp.path().join("stray.safetensors");
    write_safetensors(
        &stray,
        [
            ("transformer.blocks.0.attn1.to_q.lora_A.weight", &down),
            ("transformer.blocks.0.attn1.to_q.lora_B.weight", &up),
            ("transformer.blocks.7.attn1.to_q.lora_A.weight", &down),
            ("transformer.blocks.7.attn1.to_q.lora_B.weight", &up),
            ("text_encoder.encoder.block.0.layer.0.SelfAttention.q.lora_A.weight", &down),
        ],
    )
    .unwrap();
    let half = tmp.path().join("half.safetensors");
    write_safetensors(
        &half,
        [
            ("diffusion_model.blocks.0.self_attn.q.lora_down.weight", &down),
            ("diffusion_model.blocks.0.self_attn.q.alpha", &alpha),
        ],
    )
    .unwrap();
    let wrong = tmp.path().join("wrong.safetensors");
    write_safetensors(
        &wrong,
        [("lora_unet_blocks_0_ffn_2.lora_down.weight", &down), ("lora_unet_blocks_0_ffn_2.lora_up.weight", &up)],
    )
    .unwrap();
    let not_st = fixtures().join("gguf/reader.gguf");
    let cases: [(String, &str); 5] = [
        (stray.display().to_string(), "3 LoRA key(s) match no transformer layer: text_encoder.encoder.block.0"),
        (half.display().to_string(), "its LoRA down/up partner is missing"),
        (wrong.display().to_string(), "blocks.0.ffn.net.2.weight: parameter of shape [24, 48] cannot take a LoRA"),
        (not_st.display().to_string(), "safetensors"),
        (format!("{}:inf", stray.display()), "not a finite number"),
    ];
    let model = fixtures().join("wan/a");
    for (spec, want) in cases {
        let out = generate(&model, tmp.path(), &["--lora".into(), spec.clone()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{spec}");
        let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error")).collect();
        assert_eq!(errors.len(), 1, "{spec}: {err}");
        assert!(errors[0].contains(want), "{spec}: expected `{want}` in: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn lora_on_a_gguf_transformer_runs_as_a_side_path() {
    // The GGUF model's transformer differs from fixtures/wan/a's; a LoRA made for its shapes:
    // rank 2 on two quantized layers (q8_0, q4_0) of block 0.
    use wanrt_nn::weights::{write_safetensors, RawTensor};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("model");
    let a = fixtures().join("wan/a");
    for sub in ["text_encoder", "tokenizer", "vae", "scheduler"] {
        wanrt_io::copy_tree(&a.join(sub), &dir.join(sub)).unwrap();
    }
    std::fs::copy(a.join("model_index.json"), dir.join("model_index.json")).unwrap();
    std::fs::create_dir_all(dir.join("transformer")).unwrap();
    std::fs::copy(fixtures().join("gguf/wan/transformer/config.json"), dir.join("transformer/config.json")).unwrap();
    let gguf = fixtures().join("gguf/wan/wan-original.gguf");
    let t = |shape: [usize; 2], seed: usize| {
        let v = (0..shape[0] * shape[1]).map(|i| (((i * 7919 + seed) % 101) as f32 - 50.0) / 500.0).collect();
        RawTensor::from_f32(&wanrt_nn::HostTensor::new(shape, v).unwrap())
    };
    let lora = tmp.path().join("l.safetensors");
    let (d1, u1, d2, u2) = (t([2, 64], 1), t([64, 2], 2), t([2, 64], 3), t([64, 2], 4));
    write_safetensors(
        &lora,
        [
            ("diffusion_model.blocks.0.self_attn.q.lora_down.weight", &d1),
            ("diffusion_model.blocks.0.self_attn.q.lora_up.weight", &u1),
            ("diffusion_model.blocks.0.self_attn.v.lora_down.weight", &d2),
            ("diffusion_model.blocks.0.self_attn.v.lora_up.weight", &u2),
        ],
    )
    .unwrap();
    let base = ["--transformer".to_string(), gguf.display().to_string()];
    let plain = run_ok(&dir, &base);
    let mut with = base.to_vec();
    with.extend(["--lora".into(), lora.display().to_string()]);
    let adapted = run_ok(&dir, &with);
    let change = max_diff(&plain, &adapted);
    println!("GGUF + LoRA changes the frames by max|Δ| {change:.3e}");
    assert!(change > 1e-4 && adapted.iter().all(|v| v.is_finite()), "{change}");
}
