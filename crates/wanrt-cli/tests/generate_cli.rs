//! `wanrt generate` end to end through the binary: the diffusers parity
//! criterion of the engine issue (`--noise` + `--save-npy` reproduce
//! `output_type="np"` within 1e-4), output formats, and bad input.

use std::path::{Path, PathBuf};
use std::process::Command;

fn wanrt() -> Command {
    Command::new(env!("CARGO_BIN_EXE_wanrt"))
}

fn fixture(case: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/wan").join(case)
}

fn reference_video(case: &str) -> (Vec<usize>, Vec<f32>) {
    let ws = wanrt_nn::WeightStore::from_safetensors_files(&[fixture(case).join("ref.safetensors")]).unwrap();
    let t = ws.get("video").unwrap();
    (t.shape().to_vec(), t.into_data())
}

fn meta(case: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixture(case).join("meta.json")).unwrap()).unwrap()
}

/// Runs generate for a fixture case with its reference settings and noise.
fn generate_case(case: &str, out_dir: &Path, extra: &[&str]) -> std::process::Output {
    let m = meta(case);
    let mut cmd = wanrt();
    cmd.args(["generate", "--model"]).arg(fixture(case));
    cmd.args(["--prompt", m["prompt"].as_str().unwrap()]);
    if let Some(n) = m["negative_prompt"].as_str() {
        cmd.args(["--negative-prompt", n]);
    }
    cmd.args(["--steps", &m["num_inference_steps"].to_string()]);
    cmd.args(["--guidance", &m["guidance_scale"].to_string()]);
    cmd.args(["--max-sequence-length", &m["max_sequence_length"].to_string()]);
    cmd.arg("--noise").arg(fixture(case).join("noise.npy"));
    cmd.arg("--save-npy").arg(out_dir.join("frames.npy"));
    cmd.arg("-o").arg(out_dir.join("video.mp4"));
    cmd.args(extra);
    cmd.output().unwrap()
}

#[test]
fn noise_and_save_npy_reproduce_diffusers_frames() {
    for case in ["a", "b", "c"] {
        let dir = tempfile::tempdir().unwrap();
        let out = generate_case(case, dir.path(), &["--json"]);
        assert!(out.status.success(), "{case}: {}", String::from_utf8_lossy(&out.stderr));
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("--json prints one JSON object");
        assert_eq!(report["videos"][0]["settings"]["num_frames"], meta(case)["num_frames"]);
        let got = wanrt_io::read_npy(dir.path().join("frames.npy")).unwrap();
        let (shape, want) = reference_video(case);
        assert_eq!(got.shape(), &shape[..], "{case}: frames shape");
        let err = got.to_f32_vec().iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        println!("{case}: max|Δ| = {err:.3e}");
        assert!(err <= 1e-4, "{case}: max|Δ| = {err}");
        let mp4 = std::fs::read(dir.path().join("video.mp4")).unwrap();
        assert_eq!(&mp4[4..8], b"ftyp", "{case}: MP4 header");
        let decoded = wanrt_media::read_mp4(dir.path().join("video.mp4")).unwrap();
        assert_eq!(decoded.frames(), shape[0]);
    }
}

#[test]
fn gif_and_png_folder_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let gif = dir.path().join("v.gif");
    let frames = dir.path().join("frames/");
    for out in [gif.clone(), frames.clone()] {
        let status = wanrt()
            .args(["generate", "--model"])
            .arg(fixture("c"))
            .args(["--prompt", "a cat", "--steps", "2", "--frames", "5", "--height", "16", "--width", "32", "-o"])
            .arg(&out)
            .output()
            .unwrap();
        assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    }
    assert_eq!(wanrt_media::read_gif(&gif).unwrap().frames(), 5);
    assert!(frames.join("frame_0004.png").is_file());
}

#[test]
fn same_seed_same_video_other_seed_other_video() {
    let dir = tempfile::tempdir().unwrap();
    let run = |seed: &str, name: &str| {
        let npy = dir.path().join(name);
        let out = wanrt()
            .args(["generate", "--model"])
            .arg(fixture("c"))
            .args(["--prompt", "a cat", "--steps", "2", "--frames", "5", "--height", "16", "--width", "32"])
            .args(["--seed", seed, "-o"])
            .arg(dir.path().join(format!("{name}.mp4")))
            .arg("--save-npy")
            .arg(&npy)
            .output()
            .unwrap();
        assert!(out.status.success());
        wanrt_io::read_npy(npy).unwrap().to_f32_vec()
    };
    let a = run("7", "a.npy");
    assert_eq!(a, run("7", "b.npy"));
    assert_ne!(a, run("8", "c.npy"));
}

#[test]
fn batch_prompts_write_videos_and_captions() {
    let dir = tempfile::tempdir().unwrap();
    let prompts = dir.path().join("prompts.txt");
    std::fs::write(&prompts, "a red fox\n\na blue bird\n").unwrap();
    let (out_dir, npy_dir) = (dir.path().join("out"), dir.path().join("frames"));
    let out = wanrt()
        .args(["generate", "--model"])
        .arg(fixture("c"))
        .arg("--prompts")
        .arg(&prompts)
        .args(["--videos-per-prompt", "2", "--steps", "1", "--frames", "5", "--height", "16", "--width", "16", "-o"])
        .arg(&out_dir)
        .arg("--save-npy")
        .arg(&npy_dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // The raw frames of each video beside its name; seeds differ, so the two of a prompt do too.
    let frames = |f: &str| std::fs::read(npy_dir.join(f)).unwrap();
    assert_eq!(frames("0_0.npy").len(), frames("1_1.npy").len());
    assert_ne!(frames("0_0.npy"), frames("0_1.npy"));
    // A batch's frames need their own folder.
    let same = wanrt()
        .args(["generate", "--model"])
        .arg(fixture("c"))
        .arg("--prompts")
        .arg(&prompts)
        .arg("-o")
        .arg(&out_dir)
        .arg("--save-npy")
        .arg(&out_dir)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&same.stderr).contains("are the same folder"));
    let captions: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("prompts.json")).unwrap()).unwrap();
    assert_eq!(captions["0_1.mp4"], "a red fox");
    assert_eq!(captions["1_0.mp4"], "a blue bird");
    for f in ["0_0.mp4", "0_1.mp4", "1_0.mp4", "1_1.mp4"] {
        assert!(out_dir.join(f).is_file(), "{f}");
    }
}

/// Every failure: exit status 1, one line on stderr naming the problem, no output file.
fn assert_clean_failure(args: &[&str], model: &Path, needle: &str) {
    let dir = tempfile::tempdir().unwrap();
    let out_file = dir.path().join("out.mp4");
    let out = wanrt().args(["generate", "--model"]).arg(model).args(args).arg("-o").arg(&out_file).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().last().unwrap_or("");
    assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
    assert!(last.starts_with("error: ") && last.contains(needle), "{args:?}: `{last}` lacks `{needle}`");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "{args:?}: left files behind");
}

fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dst.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
        }
    }
}

#[test]
fn bad_input_is_one_clear_line() {
    let c = fixture("c");
    assert_clean_failure(&["--prompt", "x", "--height", "20"], &c, "multiples of 16");
    assert_clean_failure(&["--prompt", "x"], Path::new("/nonexistent/model"), "model folder not found");
    let bad_noise = tempfile::tempdir().unwrap();
    let npy = bad_noise.path().join("n.npy");
    wanrt_io::write_npy(&npy, &wanrt_io::NpyArray::new(vec![1, 8, 2, 2], vec![0f32; 32]).unwrap()).unwrap();
    assert_clean_failure(&["--prompt", "x", "--noise", npy.to_str().unwrap()], &c, "(1, z_dim, T, H, W)");
    let npy5 = bad_noise.path().join("n5.npy");
    wanrt_io::write_npy(&npy5, &wanrt_io::NpyArray::new(vec![1, 8, 2, 2, 4], vec![0f32; 128]).unwrap()).unwrap();
    assert_clean_failure(&["--prompt", "x", "--noise", npy5.to_str().unwrap(), "--frames", "9"], &c, "conflicts");

    // Corrupt and truncated weights, a missing tensor, a wrong shape.
    let broken = tempfile::tempdir().unwrap();
    let m = broken.path().join("m");
    copy_dir(&c, &m);
    let st = m.join("transformer/diffusion_pytorch_model.safetensors");
    let good = std::fs::read(&st).unwrap();
    std::fs::write(&st, &good[..good.len() / 2]).unwrap();
    assert_clean_failure(&["--prompt", "x"], &m, "not a valid safetensors file");
    std::fs::write(&st, b"garbage").unwrap();
    assert_clean_failure(&["--prompt", "x"], &m, "not a valid safetensors file");

    let ws =
        wanrt_nn::WeightStore::from_safetensors_files(&[c.join("transformer/diffusion_pytorch_model.safetensors")])
            .unwrap();
    let write_without = |skip: &str, reshape: Option<&str>| {
        let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
        for name in ws.names() {
            if name == skip {
                continue;
            }
            let t = ws.get(name).unwrap();
            let mut shape = t.shape().to_vec();
            if Some(name) == reshape {
                shape = vec![t.numel()];
            }
            tensors.push((name.to_string(), shape, t.data().iter().flat_map(|v| v.to_le_bytes()).collect()));
        }
        let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
            .iter()
            .map(|(n, s, b)| {
                (n.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b).unwrap())
            })
            .collect();
        safetensors::serialize_to_file(views, None, &st).unwrap();
    };
    write_without("blocks.0.ffn.net.2.weight", None);
    assert_clean_failure(&["--prompt", "x"], &m, "missing tensor `blocks.0.ffn.net.2.weight`");
    write_without("", Some("blocks.0.attn1.to_q.weight"));
    assert_clean_failure(&["--prompt", "x"], &m, "blocks.0.attn1.to_q.weight");
}

/// `--dtype bf16` runs the text encoder and transformer in bf16 (a GPU's numerics) and reports it;
/// its frames stay close to diffusers' f32 ones (the fidelity test in wanrt-wan bounds them).
#[test]
fn dtype_bf16_generates_and_reports_its_engine() {
    let dir = tempfile::tempdir().unwrap();
    let out = generate_case("a", dir.path(), &["--dtype", "bf16", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["engine"], "cpu/bf16");
    let got = wanrt_io::read_npy(dir.path().join("frames.npy")).unwrap().to_f32_vec();
    let (_, want) = reference_video("a");
    let err = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    // bf16 lands 1e-2–1.3e-1 from f32 on the fixtures (bench/results/dtype-fidelity.md); a broken
    // product or a path that silently ran f32 falls outside.
    assert!(err > 1e-4 && err < 0.2, "bf16 frames: max|Δ| = {err} (f32 is within 1e-5, bf16 ~1e-2–1.3e-1)");
}

/// `--prepack`: packed at load, streamed from the file, or the default split (case b's transformer
/// is stored in bf16, so `auto` streams it) all give the same frames bit for bit.
#[test]
fn prepack_modes_give_the_same_frames() {
    let frames = |extra: &[&str]| {
        let dir = tempfile::tempdir().unwrap();
        let out = generate_case("b", dir.path(), extra);
        assert!(out.status.success(), "{extra:?}: {}", String::from_utf8_lossy(&out.stderr));
        wanrt_io::read_npy(dir.path().join("frames.npy")).unwrap().to_f32_vec()
    };
    let auto = frames(&[]);
    assert_eq!(auto, frames(&["--prepack", "always"]), "--prepack always");
    assert_eq!(auto, frames(&["--no-prepack"]), "--no-prepack");
    let both = generate_case("b", tempfile::tempdir().unwrap().path(), &["--prepack", "always", "--no-prepack"]);
    assert!(!both.status.success(), "--prepack with --no-prepack must be refused");
}

/// `--backend cuda` on a machine without a CUDA driver (CI) fails before loading anything, in one
/// line, and writes nothing.
#[test]
fn cuda_backend_without_a_driver_fails_in_one_line() {
    if wanrt_nn::backend::cuda::driver_present() {
        return; // a GPU machine: the CUDA backend's own tests cover it
    }
    let dir = tempfile::tempdir().unwrap();
    let out = wanrt()
        .args(["generate", "--backend", "cuda", "--prompt", "a red fox", "-o"])
        .arg(dir.path().join("x.mp4"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("error: --backend cuda: no CUDA driver found"), "{stderr}");
    assert!(!dir.path().join("x.mp4").exists());
    let bench = wanrt().args(["bench", "--backend", "cuda"]).output().unwrap();
    assert!(String::from_utf8_lossy(&bench.stderr).contains("no CUDA driver found"));
    // CUDA graphs on the CPU backend: refused before loading anything.
    let graph = wanrt().args(["bench", "--cuda-graph"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&graph.stderr);
    assert_eq!((graph.status.code(), stderr.trim_end().lines().count()), (Some(1), 1), "{stderr}");
    assert!(stderr.contains("--cuda-graph needs --backend cuda"), "{stderr}");
    let out = dir.path().join("g.mp4");
    let graph = wanrt().args(["generate", "--prompt", "x", "--cuda-graph", "-o"]).arg(&out).output().unwrap();
    let stderr = String::from_utf8_lossy(&graph.stderr);
    assert_eq!((graph.status.code(), stderr.trim_end().lines().count()), (Some(1), 1), "{stderr}");
    assert!(stderr.contains("--cuda-graph needs --backend cuda") && !out.exists(), "{stderr}");
}

/// `wanrt bench --op-times` says where a transformer step's time goes: a table of ops by time
/// (text) and `transformer_op_seconds_by_kind` (JSON) whose ops are the step's ops and whose sum
/// lies within the step's wall time.
#[test]
fn bench_reports_the_time_of_each_op() {
    let bench = |extra: &[&str]| {
        let out = wanrt()
            .args(["bench", "--model"])
            .arg(fixture("a"))
            .args(["--frames", "5", "--height", "32", "--width", "32", "--repeat", "2", "--skip-vae"])
            .args(extra)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let table = bench(&["--op-times"]);
    let rows: Vec<&str> = table.lines().skip_while(|l| !l.trim_start().starts_with("op ")).collect();
    assert!(rows.len() > 5, "{table}");
    for op in ["linear", "attention", "layer_norm_modulate", "(between ops)"] {
        assert!(rows.iter().any(|r| r.trim_start().starts_with(op)), "no `{op}` row:\n{table}");
    }
    assert!(!bench(&[]).contains("(between ops)"), "the table is printed only with --op-times");

    let j: serde_json::Value = serde_json::from_str(&bench(&["--json"])).unwrap();
    let times = j["transformer_op_seconds_by_kind"].as_object().unwrap();
    let kinds = j["transformer_ops_by_kind"].as_object().unwrap();
    assert!(times.keys().all(|op| kinds.contains_key(op)), "{times:?} vs {kinds:?}");
    assert!(times["linear"].as_f64().unwrap() > 0.0);
    // Host memory is reported as the process's RSS; a device allocator's only on a device.
    assert!(j["device_memory"].is_null() && j["peak_rss_bytes"].as_u64().unwrap() > 0, "{j}");
    let steps: Vec<f64> = j["transformer_step_all_s"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    let mean_step = steps.iter().sum::<f64>() / steps.len() as f64;
    let in_ops: f64 = times.values().map(|v| v.as_f64().unwrap()).sum();
    assert!(in_ops > 0.0 && in_ops <= mean_step * 1.0001, "ops {in_ops} s in a {mean_step} s step");
}

/// A step-distilled model's preset: `wanrt.json` beside the model sets steps, guidance (1: no
/// CFG), shift and the sampler, so the run needs no flags for them; the frames are diffusers'
/// with the same recipe (FlowMatchEuler shift 5, 4 steps, guidance 1; fixture made by
/// tools/fixtures/make_wan_distill_fixtures.py on fixtures/wan/a's weights).
/// Runs fixtures/wan/a with the `wanrt.json` of `fixtures/<preset>` beside it and only a prompt,
/// against diffusers' frames of that recipe; returns the model folder and the settings reported.
fn distilled_preset_run(preset: &str, tmp: &Path) -> (PathBuf, serde_json::Value) {
    let preset = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures").join(preset);
    let model = tmp.join("model");
    copy_dir(&fixture("a"), &model);
    std::fs::copy(preset.join("wanrt.json"), model.join("wanrt.json")).unwrap();
    let m = meta("a");
    let out = wanrt()
        .args(["generate", "--json", "--model"])
        .arg(&model)
        .args(["--prompt", m["prompt"].as_str().unwrap()])
        .args(["--max-sequence-length", &m["max_sequence_length"].to_string()])
        .arg("--noise")
        .arg(fixture("a").join("noise.npy"))
        .arg("--save-npy")
        .arg(tmp.join("frames.npy"))
        .arg("-o")
        .arg(tmp.join("video.mp4"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let video = &report["videos"][0];
    let s = &video["settings"];
    assert_eq!((s["steps"].as_u64(), s["guidance"].as_f64()), (Some(4), Some(1.0)), "{s}");
    assert_eq!((s["shift"].as_f64(), s["scheduler"].as_str()), (Some(5.0), Some("euler")), "{s}");
    // No CFG: one transformer pass per step.
    assert_eq!(video["transformer_evals"].as_u64(), Some(4));
    let got = wanrt_io::read_npy(tmp.join("frames.npy")).unwrap();
    let ws = wanrt_nn::WeightStore::from_safetensors_files(&[preset.join("ref.safetensors")]).unwrap();
    let want = ws.get("video").unwrap();
    assert_eq!(got.shape(), want.shape());
    let err = got.to_f32_vec().iter().zip(want.into_data()).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    println!("distilled preset {}: max|Δ| = {err:.3e}", preset.display());
    assert!(err <= 1e-4, "max|Δ| = {err} against diffusers' distilled recipe");
    (model, s.clone())
}

#[test]
fn step_distilled_preset_runs_as_diffusers_with_that_recipe() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, _) = distilled_preset_run("wan_distill", tmp.path());
    // A misspelt sampler in the preset fails at load, naming the file.
    std::fs::write(model.join("wanrt.json"), r#"{"scheduler": "eular"}"#).unwrap();
    assert_clean_failure(&["--prompt", "x"], &model, "unknown scheduler `eular`");
}

#[test]
fn step_distilled_explicit_sigmas_run_as_diffusers() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, settings) = distilled_preset_run("wan_distill_sigmas", tmp.path());
    assert_eq!(settings["sigmas"], serde_json::json!([1.0, 0.75, 0.5, 0.25]), "{settings}");
    // The schedule fixes the steps and the sampler.
    assert_clean_failure(&["--prompt", "x", "--steps", "3"], &model, "--steps 3 conflicts with the model's wanrt.json");
    assert_clean_failure(&["--prompt", "x", "--scheduler", "unipc"], &model, "needs the euler scheduler");
    // A malformed schedule fails at load, naming the file and the value.
    for (sigmas, needle) in [("[]", "is empty"), ("[1.0, 1.5]", "holds 1.5"), ("[0.5, 0.75]", "decrease strictly")] {
        let preset = format!(r#"{{"scheduler": "euler", "guidance_scale": 1.0, "sigmas": {sigmas}}}"#);
        std::fs::write(model.join("wanrt.json"), preset).unwrap();
        assert_clean_failure(&["--prompt", "x"], &model, needle);
    }
}
