//! `wanrt generate` on the Wan family beyond text-to-video, through the binary: image-to-video,
//! first-last-frame, two-expert (Wan2.2 A14B-style) and Wan2.2 TI2V (text- and image-to-video)
//! fixtures given their reference noise and images reproduce diffusers' `output_type="np"` frames
//! within 1e-4; images a model cannot take fail in one line before any output.

use std::path::{Path, PathBuf};
use std::process::Command;

fn wanrt() -> Command {
    Command::new(env!("CARGO_BIN_EXE_wanrt"))
}

fn fixture(group: &str, case: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures").join(group).join(case)
}

/// The command: `--noise`, the images, `--guidance-2` where the fixture sets one.
fn generate(dir: &Path, out: &Path) -> std::process::Output {
    let m: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("meta.json")).unwrap()).unwrap();
    let images: Vec<&str> = m["images"].as_array().unwrap().iter().map(|i| i.as_str().unwrap()).collect();
    generate_from(dir, out, &images, "noise.npy")
}

/// [`generate`] from the fixture's `images` and initial `noise` file.
fn generate_from(dir: &Path, out: &Path, images: &[&str], noise: &str) -> std::process::Output {
    let m: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("meta.json")).unwrap()).unwrap();
    let mut cmd = wanrt();
    cmd.args(["generate", "--model"]).arg(dir);
    cmd.args(["--prompt", m["prompt"].as_str().unwrap()]);
    if let Some(n) = m["negative_prompt"].as_str() {
        cmd.args(["--negative-prompt", n]);
    }
    cmd.args(["--steps", &m["num_inference_steps"].to_string()]);
    cmd.args(["--guidance", &m["guidance_scale"].to_string()]);
    if let Some(g) = m["guidance_scale_2"].as_f64() {
        cmd.args(["--guidance-2", &g.to_string()]);
    }
    cmd.args(["--max-sequence-length", &m["max_sequence_length"].to_string()]);
    for (flag, image) in ["--image", "--last-image"].iter().zip(images) {
        cmd.arg(flag).arg(dir.join(image));
    }
    cmd.arg("--noise").arg(dir.join(noise));
    cmd.arg("--save-npy").arg(out.join("frames.npy"));
    cmd.arg("-o").arg(out.join("video.mp4"));
    cmd.output().unwrap()
}

#[test]
fn family_members_reproduce_diffusers_frames() {
    for (group, case) in [("wan_i2v", "i2v_a"), ("wan_i2v", "flf2v_b"), ("wan_moe", "t2v_a"), ("wan_moe", "i2v_a")] {
        let dir = fixture(group, case);
        let tmp = tempfile::tempdir().unwrap();
        let out = generate(&dir, tmp.path());
        assert_frames(&out, &dir, tmp.path(), "video", &format!("{group}/{case}"));
    }
}

/// The run succeeded and its `--save-npy` frames are the reference's `key` within 1e-4.
fn assert_frames(out: &std::process::Output, dir: &Path, tmp: &Path, key: &str, what: &str) {
    assert!(out.status.success(), "{what}: {}", String::from_utf8_lossy(&out.stderr));
    let got = wanrt_io::read_npy(tmp.join("frames.npy")).unwrap();
    let ws = wanrt_nn::WeightStore::from_safetensors_files(&[dir.join("ref.safetensors")]).unwrap();
    let want = ws.get(key).unwrap();
    assert_eq!(got.shape(), want.shape(), "{what}: frames shape");
    let err = got.to_f32_vec().iter().zip(want.into_data()).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    println!("{what}: max|Δ| = {err:.3e}");
    assert!(err <= 1e-4, "{what}: max|Δ| = {err}");
}

/// Wan2.2 TI2V: one model folder, text-to-video without --image and image-to-video with it.
#[test]
fn ti2v_text_and_image_to_video_reproduce_diffusers_frames() {
    for case in ["ti2v_a", "ti2v_b"] {
        let dir = fixture("wan_ti2v", case);
        for (mode, images, noise) in [("t2v", &[][..], "noise.npy"), ("i2v", &["image.png"][..], "noise_i2v.npy")] {
            let tmp = tempfile::tempdir().unwrap();
            let out = generate_from(&dir, tmp.path(), images, noise);
            assert_frames(&out, &dir, tmp.path(), &format!("{mode}.video"), &format!("wan_ti2v/{case} {mode}"));
        }
    }
    let ti2v = fixture("wan_ti2v", "ti2v_a");
    let image = ti2v.join("image.png");
    let both = [("--image", image.clone()), ("--last-image", image)];
    assert_clean_failure(&ti2v, &[], &both, "no --last-image");
}

fn assert_clean_failure(model: &Path, args: &[&str], images: &[(&str, PathBuf)], needle: &str) {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = wanrt();
    cmd.args(["generate", "--model"]).arg(model).args(["--prompt", "x", "--steps", "1"]).args(args);
    for (flag, path) in images {
        cmd.arg(flag).arg(path);
    }
    let out = cmd.arg("-o").arg(dir.path().join("out.mp4")).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().last().unwrap_or("");
    assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
    assert!(last.starts_with("error: ") && last.contains(needle), "`{last}` lacks `{needle}`");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "left files behind");
}

#[test]
fn images_a_model_cannot_take_fail_in_one_line() {
    let i2v = fixture("wan_i2v", "i2v_a");
    let flf = fixture("wan_i2v", "flf2v_a");
    let t2v = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/wan/a");
    let image = i2v.join("image.png");
    assert_clean_failure(&t2v, &[], &[("--image", image.clone())], "text-to-video model");
    assert_clean_failure(&i2v, &[], &[], "needs --image");
    assert_clean_failure(&flf, &[], &[("--image", flf.join("image.png"))], "needs --last-image");
    assert_clean_failure(&i2v, &[], &[("--image", i2v.join("meta.json"))], "meta.json");
    assert_clean_failure(&i2v, &["--guidance-2", "3"], &[("--image", image)], "two-expert");
}
