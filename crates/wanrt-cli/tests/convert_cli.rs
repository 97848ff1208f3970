//! `wanrt convert` through the binary: a release folder becomes a diffusers folder; bad input
//! is one clear line and leaves nothing behind. (Frame equality is tested in wanrt-wan.)

use std::path::PathBuf;
use std::process::Command;

fn fixture(case: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/wan").join(case)
}

fn convert(model: &std::path::Path, out: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_wanrt"))
        .args(["convert", "--model"])
        .arg(model)
        .arg("-o")
        .arg(out)
        .output()
        .unwrap()
}

#[test]
fn release_folder_becomes_a_diffusers_folder() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("converted");
    let run = convert(&fixture("a_original"), &out);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    for file in [
        "model_index.json",
        "text_encoder/config.json",
        "text_encoder/model.safetensors",
        "tokenizer/tokenizer.json",
        "transformer/config.json",
        "transformer/diffusion_pytorch_model.safetensors",
        "vae/config.json",
        "vae/diffusion_pytorch_model.safetensors",
        "scheduler/scheduler_config.json",
        "wanrt.json",
    ] {
        assert!(out.join(file).is_file(), "missing {file}");
    }
    let tr: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("transformer/config.json")).unwrap()).unwrap();
    assert_eq!(tr["_class_name"], "WanTransformer3DModel");
    assert_eq!(tr["num_layers"], 2);
}

#[test]
fn bad_input_is_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    for (model, needle) in [
        (fixture("a"), "not in the original release layout"),
        (PathBuf::from("/nonexistent/model"), "model folder not found"),
    ] {
        let run = convert(&model, &dir.path().join("out"));
        let stderr = String::from_utf8_lossy(&run.stderr);
        let last = stderr.lines().last().unwrap_or("");
        assert_eq!(run.status.code(), Some(1), "{stderr}");
        assert!(last.starts_with("error: ") && last.contains(needle), "`{last}` lacks `{needle}`");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "left files behind");
    }
}
