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

/// A LoRA with 2 keys on a layer of fixtures/wan/a and 3 that match none (a block it lacks, the
/// text encoder).
fn write_stray(dir: &Path) -> PathBuf {
    use wanrt_nn::weights::{write_safetensors, RawTensor};
    let t = |shape: [usize; 2]| {
        RawTensor::from_f32(&wanrt_nn::HostTensor::new(shape, vec![0.1; shape[0] * shape[1]]).unwrap())
    };
    let (down, up) = (t([2, 24]), t([24, 2]));
    let stray = dir.join("stray.safetensors");
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
    stray
}

#[test]
fn unmatched_keys_and_bad_specs_are_refused_in_one_line() {
    use wanrt_nn::weights::{write_safetensors, RawTensor};
    let tmp = tempfile::tempdir().unwrap();
    let t = |shape: Vec<usize>| {
        RawTensor::from_f32(&wanrt_nn::HostTensor::new(shape.clone(), vec![0.1; shape.iter().product()]).unwrap())
    };
    let (down, up, alpha) = (t(vec![2, 24]), t(vec![24, 2]), t(vec![]));
    let stray = write_stray(tmp.path());
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

/// `wanrt optimize` with `--lora` and the given flags into `out`.
fn optimize(out: &Path, flags: &[String]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wanrt"))
        .args(["optimize", "--model"])
        .arg(fixtures().join("wan/a"))
        .args(["--no-report", "--calib-prompts", "2", "--calib-steps", "3", "-o"])
        .arg(out)
        .args(flags)
        .output()
        .unwrap()
}

fn manifest_loras(art: &Path) -> Vec<serde_json::Value> {
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(art.join("wanrt-artifact.json")).unwrap()).unwrap();
    m["settings"]["loras"].as_array().cloned().unwrap_or_default()
}

/// `optimize --lora` bakes the adapters: `--quant none` equals generate with the LoRAs merged (f32
/// rounding), an int8 bake is within the int8 artifact's own fidelity of diffusers' LoRA frames
/// (and plainly not the un-adapted artifact), and the manifest records each adapter.
#[test]
fn optimize_bakes_loras_into_the_artifact() {
    let tmp = tempfile::tempdir().unwrap();
    let loras = lora_args("all");
    let quant = |q: &str| ["--quant".to_string(), q.to_string()];

    let none = tmp.path().join("none");
    let out = optimize(&none, &[quant("none").to_vec(), loras.clone()].concat());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let merged = run_ok(&fixtures().join("wan/a"), &loras);
    let baked = run_ok(&none, &[]);
    let err = max_diff(&baked, &merged);
    println!("--quant none bake vs merged generate: max|Δ| {err:.3e}");
    assert!(err <= 2e-5, "--quant none bake vs generate --lora: {err}");
    let recorded = manifest_loras(&none);
    let meta = lora_meta();
    assert_eq!(recorded.len(), 3, "{recorded:?}");
    for (r, want) in recorded.iter().zip(meta["runs"]["all"].as_array().unwrap()) {
        let file = want["file"].as_str().unwrap();
        assert_eq!(r["file"], file);
        assert_eq!(r["scale"].as_f64().unwrap() as f32, want["scale"].as_f64().unwrap() as f32);
        assert_eq!(r["bytes"].as_u64().unwrap(), std::fs::metadata(fixtures().join("lora").join(file)).unwrap().len());
        assert_eq!(r["sha256"].as_str().unwrap().len(), 64);
        assert!(r["rank"][0].as_u64().unwrap() >= 1 && r["alpha"][0].as_f64().is_some(), "{r}");
    }

    let int8 = tmp.path().join("int8");
    let plain8 = tmp.path().join("int8-plain");
    let out = optimize(&int8, &[quant("int8").to_vec(), loras.clone()].concat());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = optimize(&plain8, &quant("int8"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let fidelity = max_diff(&run_ok(&plain8, &[]), &reference("none"));
    let baked8 = run_ok(&int8, &[]);
    let with = max_diff(&baked8, &reference("all"));
    let unadapted = max_diff(&baked8, &run_ok(&plain8, &[]));
    println!("int8: max|Δ| {fidelity:.3e} without LoRA, {with:.3e} baked vs diffusers' LoRA frames, {unadapted:.3e} vs the plain int8 artifact");
    assert!(with <= (2.0 * fidelity).max(1e-3), "int8 bake max|Δ| {with} vs artifact fidelity {fidelity}");
    assert!(unadapted > 10.0 * with, "the bake changes the artifact ({unadapted} vs {with})");
}

/// `--lora-unmatched warn` skips keys that match no layer with one warning line (count and first
/// names), on generate and optimize; the default refuses them, optimize writing nothing.
#[test]
fn unmatched_keys_warn_or_refuse() {
    let tmp = tempfile::tempdir().unwrap();
    let stray = write_stray(tmp.path());
    let model = fixtures().join("wan/a");
    let spec = stray.display().to_string();
    let warn = ["--lora".to_string(), spec.clone(), "--lora-unmatched".into(), "warn".into()];
    let out = generate(&model, tmp.path(), &warn);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let warnings: Vec<&str> = err.lines().filter(|l| l.contains("match no transformer layer")).collect();
    assert_eq!(warnings.len(), 1, "{err}");
    assert!(warnings[0].starts_with("warning:") && warnings[0].contains("3 LoRA key(s)"), "{err}");
    assert!(warnings[0].contains("blocks.7.attn1.to_q") && warnings[0].contains("skipped"), "{err}");
    // The matched layer is still applied.
    assert!(max_diff(&frames(tmp.path()), &reference("none")) > 1e-4);

    let art = tmp.path().join("art");
    let out = optimize(&art, &[warn.to_vec(), vec!["--quant".into(), "none".into()]].concat());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(err.lines().filter(|l| l.starts_with("warning:") && l.contains("3 LoRA key(s)")).count(), 1, "{err}");
    assert_eq!(manifest_loras(&art)[0]["skipped_keys"].as_array().unwrap().len(), 3);

    let refused = tmp.path().join("refused");
    let out = optimize(&refused, &["--lora".into(), spec, "--quant".into(), "none".into()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(errors.len(), 1, "{err}");
    assert!(errors[0].contains("3 LoRA key(s) match no transformer layer"), "{err}");
    assert!(!refused.exists(), "nothing written");
    let out = generate(&model, tmp.path(), &["--lora-unmatched".into(), "sometimes".into()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not one of error, warn"));
}
