//! A GGUF-quantized tiny Wan transformer (`fixtures/gguf/wan/`, every supported tensor type mixed
//! in one model) generates the video diffusers makes from its dequantized safetensors twin, from
//! a GGUF file in the original and in the diffusers name style; bad GGUF inputs are refused in
//! one line.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

fn gguf_dir() -> PathBuf {
    fixtures().join("gguf/wan")
}

/// A diffusers folder: fixtures/wan/a's text encoder, tokenizer, VAE and scheduler, with the GGUF
/// model's `transformer/config.json` and, when given, a GGUF file in `transformer/`.
fn model_folder(root: &Path, gguf_in_folder: Option<&str>) -> PathBuf {
    let dir = root.join("model");
    let a = fixtures().join("wan/a");
    for sub in ["text_encoder", "tokenizer", "vae", "scheduler"] {
        wanrt_io::copy_tree(&a.join(sub), &dir.join(sub)).unwrap();
    }
    std::fs::copy(a.join("model_index.json"), dir.join("model_index.json")).unwrap();
    std::fs::create_dir_all(dir.join("transformer")).unwrap();
    std::fs::copy(gguf_dir().join("transformer/config.json"), dir.join("transformer/config.json")).unwrap();
    if let Some(name) = gguf_in_folder {
        std::fs::copy(gguf_dir().join(name), dir.join("transformer").join(name)).unwrap();
    }
    dir
}

fn generate(model: &Path, out: &Path, extra: &[&str]) -> Output {
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(gguf_dir().join("meta.json")).unwrap()).unwrap();
    let case = &meta["case"];
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wanrt"));
    cmd.args(["generate", "--model"]).arg(model);
    cmd.args(["--prompt", case["prompt"].as_str().unwrap()]);
    cmd.args(["--negative-prompt", case["negative_prompt"].as_str().unwrap()]);
    cmd.args(["--steps", &case["num_inference_steps"].to_string()]);
    cmd.args(["--guidance", &case["guidance_scale"].to_string()]);
    cmd.args(["--max-sequence-length", &case["max_sequence_length"].to_string()]);
    cmd.arg("--noise").arg(gguf_dir().join("noise.npy"));
    cmd.arg("--save-npy").arg(out.join("frames.npy"));
    cmd.arg("-o").arg(out.join("video.gif"));
    cmd.args(extra);
    cmd.output().unwrap()
}

fn max_diff_to_reference(frames: &Path) -> f32 {
    let ws = wanrt_nn::WeightStore::from_safetensors_files(&[gguf_dir().join("ref.safetensors")]).unwrap();
    let want = ws.get("video").unwrap();
    let got = wanrt_io::read_npy(frames).unwrap();
    assert_eq!(got.shape(), want.shape(), "frames shape");
    got.to_f32_vec().iter().zip(want.data()).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max)
}

#[test]
fn gguf_transformer_matches_its_dequantized_twin() {
    let dir = tempfile::tempdir().unwrap();
    // Diffusers names, the GGUF file inside transformer/.
    let model = model_folder(dir.path(), Some("wan-diffusers.gguf"));
    let out = generate(&model, dir.path(), &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let err = max_diff_to_reference(&dir.path().join("frames.npy"));
    println!("diffusers names, in transformer/: max|Δ| = {err:.3e}");
    assert!(err <= 1e-4, "max|Δ| = {err}");

    // Original names (5D patch embedding, `.modulation`), given by --transformer.
    let dir = tempfile::tempdir().unwrap();
    let model = model_folder(dir.path(), None);
    let original = gguf_dir().join("wan-original.gguf");
    let out = generate(&model, dir.path(), &["--transformer", original.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let err = max_diff_to_reference(&dir.path().join("frames.npy"));
    println!("original names, --transformer: max|Δ| = {err:.3e}");
    assert!(err <= 1e-4, "max|Δ| = {err}");
}

/// `--gguf-int8`: the Q8_0 layers run on the int8 kernels, so the video moves away from the exact
/// one by the 8-bit activations' rounding only; other types still decode exactly.
#[test]
fn gguf_int8_runs_q8_0_layers_within_their_rounding() {
    let dir = tempfile::tempdir().unwrap();
    let model = model_folder(dir.path(), None);
    let original = gguf_dir().join("wan-original.gguf");
    let out = generate(&model, dir.path(), &["--transformer", original.to_str().unwrap(), "--gguf-int8"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let err = max_diff_to_reference(&dir.path().join("frames.npy"));
    println!("--gguf-int8: max|Δ| = {err:.3e}");
    assert!(err > 1e-4, "the Q8_0 layers did not take the int8 path (max|Δ| = {err})");
    // 8-bit activations (≈0.4 % per product) through every layer and step of the tiny model;
    // a wrong block scale or sum would move frames by their whole range (≈1).
    assert!(err <= 5e-2, "max|Δ| = {err}");
}

#[test]
fn bad_gguf_inputs_are_refused_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let model = model_folder(dir.path(), None);
    let not_gguf = fixtures().join("gguf/blocks.safetensors");
    let truncated = dir.path().join("truncated.gguf");
    let bytes = std::fs::read(gguf_dir().join("wan-original.gguf")).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    // A GGUF file of another model: tensors that are no Wan names.
    let other = fixtures().join("gguf/reader.gguf");
    for (file, want) in [
        (not_gguf.as_path(), "not a GGUF file"),
        (truncated.as_path(), "run past the end of the file"),
        (other.as_path(), "neither an original Wan nor a diffusers transformer name"),
    ] {
        let out = generate(&model, dir.path(), &["--transformer", file.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{want}");
        let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(errors.len(), 1, "{err}");
        assert!(errors[0].contains(want), "expected `{want}` in: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

/// `wanrt convert --transformer FILE.gguf`: the written folder (transformer dequantized to f32,
/// the rest copied) generates the frames `generate --transformer FILE.gguf` makes, bit for bit;
/// bf16 is half the size and close; bad inputs are refused in one line with nothing written.
#[test]
fn convert_writes_the_dequantized_gguf_as_a_diffusers_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let model = model_folder(tmp.path(), None);
    let gguf = gguf_dir().join("wan-original.gguf");
    let convert = |out: &Path, extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_wanrt"))
            .args(["convert", "--model"])
            .arg(&model)
            .arg("--transformer")
            .arg(&gguf)
            .arg("-o")
            .arg(out)
            .args(extra)
            .output()
            .unwrap()
    };
    let f32_dir = tmp.path().join("f32");
    let out = convert(&f32_dir, &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for f in ["model_index.json", "vae/config.json", "text_encoder/config.json", "transformer/config.json"] {
        assert!(f32_dir.join(f).is_file(), "{f} copied");
    }

    let run = |m: &Path, name: &str, extra: &[&str]| {
        let d = tmp.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        let out = generate(m, &d, extra);
        assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
        wanrt_io::read_npy(d.join("frames.npy")).unwrap().to_f32_vec()
    };
    let from_gguf = run(&model, "gen-gguf", &["--transformer", gguf.to_str().unwrap()]);
    let from_converted = run(&f32_dir, "gen-f32", &[]);
    let same = from_gguf.iter().zip(&from_converted).filter(|(a, b)| a.to_bits() == b.to_bits()).count();
    assert_eq!(same, from_gguf.len(), "converted f32 folder vs generate --transformer FILE.gguf: bit-identical frames");

    let bf16_dir = tmp.path().join("bf16");
    let out = convert(&bf16_dir, &["--dtype", "bf16"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let store = |d: &Path| {
        wanrt_nn::WeightStore::from_diffusers_dir(&d.join("transformer"), "diffusion_pytorch_model").unwrap()
    };
    let data = |ws: &wanrt_nn::WeightStore| ws.names().map(|n| ws.raw(n).unwrap().bytes().len()).sum::<usize>();
    let (w32, w16) = (store(&f32_dir), store(&bf16_dir));
    assert!(w32.names().all(|n| w32.raw(n).unwrap().dtype == wanrt_nn::DType::F32));
    assert!(w16.names().all(|n| w16.raw(n).unwrap().dtype == wanrt_nn::DType::BF16));
    assert_eq!(2 * data(&w16), data(&w32), "bf16 holds half the bytes");
    let from_bf16 = run(&bf16_dir, "gen-bf16", &[]);
    let err = from_gguf.iter().zip(&from_bf16).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    println!("bf16 conversion: max|Δ| {err:.3e} vs the GGUF run");
    assert!(err < 0.05, "{err}");

    // Refusals: one error line, no output folder.
    let reader = fixtures().join("gguf/reader.gguf");
    let cases: [(Vec<String>, &str); 3] = [
        (vec!["--transformer".into(), tmp.path().join("none.gguf").display().to_string()], "GGUF file not found"),
        (vec!["--transformer".into(), model.join("model_index.json").display().to_string()], "not a GGUF file"),
        (vec!["--transformer".into(), reader.display().to_string()], "neither an original Wan nor a diffusers"),
    ];
    for (i, (args, want)) in cases.iter().enumerate() {
        let out_dir = tmp.path().join(format!("bad{i}"));
        let out = Command::new(env!("CARGO_BIN_EXE_wanrt"))
            .args(["convert", "--model"])
            .arg(&model)
            .args(args)
            .arg("-o")
            .arg(&out_dir)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{want}");
        let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error")).collect();
        assert_eq!(errors.len(), 1, "{err}");
        assert!(errors[0].contains(want), "expected `{want}` in: {err}");
        assert!(!out_dir.exists(), "nothing written for `{want}`");
    }
}
