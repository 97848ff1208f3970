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
    generate_model(dir, dir, out, images, noise)
}

/// [`generate_from`] with the weights of `model` (the fixture `dir` in another layout).
fn generate_model(model: &Path, dir: &Path, out: &Path, images: &[&str], noise: &str) -> std::process::Output {
    let m: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("meta.json")).unwrap()).unwrap();
    let mut cmd = wanrt();
    cmd.args(["generate", "--model"]).arg(model);
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

/// The original Wan-Video release layouts (the open-clip `.pth`, `Wan2.2_VAE.pth`, A14B's two
/// expert folders) of fixtures:
/// the command on the release folder gives the diffusers fixture's frames.
#[test]
fn original_release_layouts_reproduce_diffusers_frames() {
    for (release, group, case, images, noise, key) in [
        ("flf2v_c", "wan_i2v", "flf2v_c", &["image.png", "last_image.png"][..], "noise.npy", "video"),
        ("ti2v_a", "wan_ti2v", "ti2v_a", &["image.png"][..], "noise_i2v.npy", "i2v.video"),
        ("a14b_t2v", "wan_moe", "t2v_a", &[][..], "noise.npy", "video"),
    ] {
        let dir = fixture(group, case);
        let tmp = tempfile::tempdir().unwrap();
        let out = generate_model(&fixture("wan_original", release), &dir, tmp.path(), images, noise);
        assert_frames(&out, &dir, tmp.path(), key, &format!("wan_original/{release}"));
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

/// An image of another size than the video's is resized as diffusers' `VideoProcessor` does
/// (Pillow Lanczos, no crop): Wan2.2 TI2V (no CLIP, so the VAE side alone sees the image) gives
/// the same frames from a 29×71 picture as from Pillow's own 32×64 resize of it, with a warning.
#[test]
fn an_image_of_another_size_is_resized_as_diffusers() {
    let dir = fixture("wan_ti2v", "ti2v_a");
    let resize = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/image_resize");
    let mut frames = Vec::new();
    for image in ["wide.png", "wide_32x64.png"] {
        let tmp = tempfile::tempdir().unwrap();
        let path = resize.join(image);
        let out = generate_from(&dir, tmp.path(), &[path.to_str().unwrap()], "noise_i2v.npy");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{image}: {stderr}");
        assert_eq!(stderr.contains("--image is 29×71 (height×width): resized"), image == "wide.png", "{stderr}");
        frames.push(wanrt_io::read_npy(tmp.path().join("frames.npy")).unwrap().to_f32_vec());
    }
    assert!(frames[0] == frames[1], "the resized image's frames differ from Pillow's resize's");
}

/// `wanrt generate` with the flags given, `--steps 1`, frames saved to `npy`.
fn run_one_step(model: &Path, args: &[&str], paths: &[(&str, &Path)], out: &Path) -> std::process::Output {
    let mut cmd = wanrt();
    cmd.args(["generate", "--steps", "1", "--height", "32", "--width", "48", "--model"]).arg(model).args(args);
    for (flag, path) in paths {
        cmd.arg(flag).arg(path);
    }
    cmd.arg("-o").arg(out).output().unwrap()
}

fn frames_of(path: &Path) -> Vec<f32> {
    wanrt_io::read_npy(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).to_f32_vec()
}

/// A prompts file's JSON list mixes prompts and objects with their own image (relative to the
/// file's folder), seed and negative prompt; each video is the one the same flags give alone,
/// and prompts.json stays {file: caption}.
#[test]
fn prompts_file_entries_carry_their_images() {
    let i2v = fixture("wan_i2v", "i2v_a");
    let tmp = tempfile::tempdir().unwrap();
    let list = tmp.path().join("list");
    std::fs::create_dir_all(list.join("pics")).unwrap();
    let odd = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/image_resize/odd.png");
    std::fs::copy(&odd, list.join("pics/first.png")).unwrap();
    let entries = serde_json::json!([
        {"prompt": "a fox in the snow", "image": "pics/first.png", "seed": 7, "negative_prompt": "blur"},
        "a plain prompt",
    ]);
    std::fs::write(list.join("p.json"), entries.to_string()).unwrap();
    let (videos, npys) = (tmp.path().join("videos"), tmp.path().join("npy"));
    let (global, file) = (i2v.join("image.png"), list.join("p.json"));
    let batch = [("--prompts", file.as_path()), ("--image", &global), ("--save-npy", &npys)];
    let out = run_one_step(&i2v, &[], &batch, &videos);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let captions: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(videos.join("prompts.json")).unwrap()).unwrap();
    assert_eq!(captions, serde_json::json!({"0_0.mp4": "a fox in the snow", "1_0.mp4": "a plain prompt"}));

    let alone = |args: &[&str], image: &Path, name: &str| {
        let npy = tmp.path().join(name);
        let flags = [("--image", image), ("--save-npy", npy.as_path())];
        let out = run_one_step(&i2v, args, &flags, &tmp.path().join(format!("{name}.mp4")));
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        frames_of(&npy)
    };
    let first = alone(&["--prompt", "a fox in the snow", "--seed", "7", "--negative-prompt", "blur"], &odd, "a.npy");
    assert!(frames_of(&npys.join("0_0.npy")) == first, "entry 0 differs from the same run alone");
    let plain = alone(&["--prompt", "a plain prompt"], &global, "b.npy");
    assert!(frames_of(&npys.join("1_0.npy")) == plain, "entry 1 differs from the same run alone");
    assert!(first != plain);
}

/// A bad entry fails in one line naming the entry and the field, before any model is looked at
/// (the model path here does not exist).
#[test]
fn bad_prompts_file_entries_fail_in_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let cases: [(serde_json::Value, &str); 6] = [
        (serde_json::json!(["x", {"prompt": "y", "image": "missing.png"}]), "entry 1: \"image\""),
        (serde_json::json!([{"prompt": "y", "imgae": "a.png"}]), "entry 0: unknown field \"imgae\""),
        (serde_json::json!([{"image": "a.png"}]), "entry 0: \"prompt\" is missing"),
        (
            serde_json::json!(["x", "y", {"prompt": "y", "seed": -1}]),
            "entry 2: \"seed\" must be a non-negative integer",
        ),
        (serde_json::json!([3]), "entry 0: expected a prompt (string) or an object"),
        (serde_json::json!([{"prompt": "y", "last_image": "b.png"}]), "entry 0: \"last_image\" needs \"image\""),
    ];
    for (entries, needle) in cases {
        let file = tmp.path().join("p.json");
        std::fs::write(&file, entries.to_string()).unwrap();
        let out_dir = tmp.path().join("out");
        let out = wanrt()
            .args(["generate", "--model"])
            .arg(tmp.path().join("no-such-model"))
            .arg("--prompts")
            .arg(&file)
            .arg("-o")
            .arg(&out_dir)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{entries}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{entries}: {stderr}");
        assert!(stderr.starts_with("error: --prompts ") && stderr.contains(needle), "`{stderr}` lacks `{needle}`");
        assert!(!out_dir.exists(), "{entries}: wrote output");
    }
}

/// `wanrt bench` on image models: the step is timed on the model's real input (image-latent
/// channels, image tokens; TI2V's first frame at t = 0), from a test card unless given an image.
#[test]
fn bench_times_image_models_on_their_inputs() {
    for (group, case, image, images, channels) in [
        ("wan_i2v", "i2v_a", false, 1, 12),
        ("wan_i2v", "flf2v_a", false, 2, 16),
        ("wan_ti2v", "ti2v_a", true, 1, 48),
        ("wan_ti2v", "ti2v_a", false, 0, 48),
    ] {
        let dir = fixture(group, case);
        let mut cmd = wanrt();
        cmd.args(["bench", "--model"]).arg(&dir);
        cmd.args(["--frames", "5", "--height", "32", "--width", "64", "--repeat", "1", "--json"]);
        if image {
            cmd.arg("--image").arg(dir.join("image.png"));
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{case}: {}", String::from_utf8_lossy(&out.stderr));
        let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(j["images"], images, "{case}: {j}");
        assert_eq!(j["test_card"], images > 0 && !image, "{case}");
        assert_eq!(j["shape"]["latent"][1], channels, "{case}: transformer input channels");
        assert_eq!(j["image_conditioning_s"].is_number(), images > 0, "{case}");
        assert!(j["transformer_step_s"].as_f64().unwrap() > 0.0);
    }
}
