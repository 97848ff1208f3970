//! `wanrt bench --ladder` through the binary: on the bundled demo model with every metric network
//! (random-weight fixtures), on another model with its own sizes, the artifact cache, and bad
//! input refused before any work.

use std::path::{Path, PathBuf};
use std::process::Command;

fn wanrt() -> Command {
    Command::new(env!("CARGO_BIN_EXE_wanrt"))
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn eval_fixture(rel: &str) -> PathBuf {
    repo().join("fixtures/eval").join(rel)
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// Width and height of a PNG from its IHDR chunk (after checking the signature).
fn png_size(path: &Path) -> (u32, u32) {
    let b = std::fs::read(path).unwrap();
    assert_eq!(&b[..8], b"\x89PNG\r\n\x1a\n", "{} is not a PNG", path.display());
    assert_eq!(&b[12..16], b"IHDR");
    let be = |i: usize| u32::from_be_bytes(b[i..i + 4].try_into().unwrap());
    (be(16), be(20))
}

fn run(args: &[&str], extra: &[&Path]) -> std::process::Output {
    let mut c = wanrt();
    c.arg("bench").arg("--ladder").args(args).env_remove("WANRT_INCEPTION").env_remove("WANRT_LPIPS");
    for p in extra {
        c.arg(p);
    }
    c.output().unwrap()
}

#[test]
fn demo_ladder_writes_report_json_plots_videos_and_a_review_study() {
    let tmp = tempfile::tempdir().unwrap();
    let (report, cache) = (tmp.path().join("ladder"), tmp.path().join("cache"));
    let mut c = wanrt();
    c.args(["bench", "--ladder", "--videos", "3", "--rungs", "int8-weight,step-cache", "--repeat", "2"])
        .args(["--frames-per-video", "1", "--cache-threshold", "0.2", "--threads", "2"])
        .arg("--report")
        .arg(&report)
        .arg("--artifact-cache")
        .arg(&cache)
        .arg("--inception")
        .arg(eval_fixture("fid/pt_inception-random.pth"))
        .arg("--lpips")
        .arg(eval_fixture("lpips/lpips_alex_random.pth"))
        .arg("--clip")
        .arg(eval_fixture("clip/tiny-clip"))
        .arg("--i3d")
        .arg(eval_fixture("fvd/i3d_random_400.pt"));
    let out = c.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);

    let j = json(&report.join("ladder.json"));
    let rungs = j["rungs"].as_array().unwrap();
    let names: Vec<&str> = rungs.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["baseline", "int8-weight", "step-cache"]);
    let (base, w8, cache_rung) = (&rungs[0], &rungs[1], &rungs[2]);
    for r in rungs {
        for key in ["step_seconds", "end_to_end_seconds", "denoise_seconds_per_step"] {
            assert!(r[key].as_f64().unwrap() > 0.0, "{key}: {r}");
        }
        assert!(r["peak_memory_bytes"].as_u64().unwrap() > 1 << 20);
        assert!(r["ops_per_step"].as_u64().unwrap() > 10, "{r}");
        assert!((0.0..=1.0).contains(&r["prompt_accuracy"].as_f64().unwrap()));
        assert!(r["clip_score"].as_f64().is_some() && r["fid_vs_real"].as_f64().is_some(), "{r}");
        assert!(r["domain_fd_vs_real"].as_f64().unwrap() > 0.0);
    }
    // Against itself the baseline has no per-video or set distance; the others do.
    assert!(base["psnr"].is_null() && base["fid_vs_baseline"].is_null());
    assert_eq!(base["speedup"], 1.0);
    for r in [w8, cache_rung] {
        assert!(r["psnr"].as_f64().unwrap() > 15.0, "{r}");
        assert!(r["ssim"].as_f64().unwrap() > 0.3);
        assert!(r["lpips"].as_f64().unwrap() >= 0.0);
        assert!(r["fid_vs_baseline"].as_f64().unwrap() >= 0.0 && r["fvd_vs_baseline"].as_f64().unwrap() >= 0.0);
        assert_eq!(r["videos"].as_array().unwrap().len(), 3);
        assert_eq!(r["psnr_n"], 3);
        let [lo, hi] = [0, 1].map(|i| r["psnr_ci95"][i].as_f64().unwrap());
        assert!(lo <= r["psnr"].as_f64().unwrap() && r["psnr"].as_f64().unwrap() <= hi);
    }
    assert!(w8["weight_bytes"].as_u64() < base["weight_bytes"].as_u64(), "int8 weights are smaller");
    assert!(w8["artifact"].is_string() && w8["artifact_cached"] == false);
    assert!(base["transformer_evals_per_video"] == 20.0);
    assert!(cache_rung["transformer_evals_per_video"].as_f64().unwrap() < 20.0, "the step cache skips passes");

    let md = std::fs::read_to_string(report.join("ladder.md")).unwrap();
    for needle in [
        "| int8-weight | int8-weight (W8A16) |",
        "| step-cache |",
        "FID here is computed from 3 frames",
        "## Blind review",
    ] {
        assert!(md.contains(needle), "ladder.md lacks {needle:?}:\n{md}");
    }
    assert_eq!(png_size(&report.join("latency.png")).0, 960);
    assert_eq!(png_size(&report.join("quality_speed.png")), (960, 560));
    for rung in names {
        assert!(report.join("videos").join(rung).join("2_0.mp4").is_file(), "{rung} videos");
    }
    let captions = json(&report.join("videos/baseline/prompts.json"));
    assert_eq!(captions["0_0.mp4"], "a red circle moves left on a black background");
    assert!(!report.join("frames").exists(), "raw frames are removed without --keep-frames");
    let review =
        format!("--variants baseline={0}/videos/baseline int8-weight={0}/videos/int8-weight", report.display());
    assert!(stdout.contains(&review), "{stdout}");

    // Again with the same cache: the artifact is reused, not rebuilt.
    let out = wanrt()
        .args(["bench", "--ladder", "--videos", "1", "--rungs", "int8-weight", "--repeat", "1", "--report"])
        .arg(tmp.path().join("again"))
        .arg("--artifact-cache")
        .arg(&cache)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let j = json(&tmp.path().join("again/ladder.json"));
    assert_eq!(j["rungs"][1]["artifact_cached"], true);
    assert_eq!(j["rungs"][1]["artifact"], w8["artifact"]);
}

#[test]
fn ladder_on_another_model_takes_its_sizes_and_skips_the_demo_evaluator() {
    let tmp = tempfile::tempdir().unwrap();
    let report = tmp.path().join("r");
    let out = wanrt()
        .args(["bench", "--ladder", "--model"])
        .arg(repo().join("fixtures/wan/a"))
        .args(["--frames", "5", "--height", "32", "--width", "48", "--steps", "2", "--videos", "3", "--rungs", "int8"])
        .args(["--calib-prompts", "1", "--calib-steps", "1", "--repeat", "1", "--keep-frames", "--json"])
        .arg("--report")
        .arg(&report)
        .arg("--artifact-cache")
        .arg(tmp.path().join("cache"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).expect("--json prints ladder.json");
    assert_eq!((j["header"]["frames"].as_u64(), j["header"]["width"].as_u64()), (Some(5), Some(48)));
    assert_eq!(j["header"]["videos"], 3);
    let int8 = &j["rungs"][1];
    assert!(int8["prompt_accuracy"].is_null() && int8["fid_vs_baseline"].is_null(), "{int8}");
    assert!(int8["psnr"].as_f64().unwrap() > 5.0);
    // Three built-in prompts, one seed each: the raw frames kept with --keep-frames.
    for k in 0..3 {
        assert!(report.join(format!("frames/int8/{k}_0.npy")).is_file());
    }
}

#[test]
fn bad_ladder_input_fails_in_one_line_before_any_work() {
    let tmp = tempfile::tempdir().unwrap();
    let report = tmp.path().join("r");
    let not_lpips = eval_fixture("fid/real_features.npy");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec![], "--ladder needs --report DIR"),
        (vec!["--report", report.to_str().unwrap(), "--rungs", "int4"], "unknown rung `int4`"),
        (vec!["--report", report.to_str().unwrap(), "--rungs", "streams"], "does not have yet"),
        (
            vec!["--report", report.to_str().unwrap(), "--rungs", "graph"],
            "`graph` replays CUDA graphs: it needs --backend cuda",
        ),
        (vec!["--report", report.to_str().unwrap(), "--videos", "0"], "--videos must be at least 1"),
        (
            vec!["--report", report.to_str().unwrap(), "--inception", "/nonexistent/x.pth"],
            "--inception /nonexistent/x.pth: no such file",
        ),
        (vec!["--report", report.to_str().unwrap(), "--cache-threshold", "-1"], "--cache-threshold"),
        (vec!["--report", report.to_str().unwrap(), "--lpips", not_lpips.to_str().unwrap()], "real_features.npy"),
    ];
    for (args, want) in cases {
        let out = run(&args, &[]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(err.contains(want), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: one line expected: {err}");
        assert!(!report.join("ladder.json").exists(), "{args:?} wrote a report");
    }
    std::fs::create_dir_all(&report).unwrap();
    std::fs::write(report.join("keep.txt"), "mine").unwrap();
    let out = run(&["--report", report.to_str().unwrap()], &[]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("not empty"));
    assert_eq!(std::fs::read_to_string(report.join("keep.txt")).unwrap(), "mine");
    // Ladder flags without --ladder are refused by the parser.
    let out = wanrt().args(["bench", "--report", "x"]).output().unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("--ladder"));
}

/// An image-to-video model's ladder: every video from its prompt's image (a `--prompts` JSON
/// entry's, else `--image`), the rungs' artifacts calibrated on images; without an image the
/// ladder stops in one line before any work.
#[test]
fn image_to_video_ladder_generates_from_images() {
    let tmp = tempfile::tempdir().unwrap();
    let model = repo().join("fixtures/wan_i2v/i2v_a");
    std::fs::copy(repo().join("fixtures/wan_i2v/i2v_b/image.png"), tmp.path().join("other.png")).unwrap();
    let prompts = tmp.path().join("prompts.json");
    std::fs::write(&prompts, serde_json::json!([{"prompt": "a fox", "image": "other.png"}, "a hare"]).to_string())
        .unwrap();
    let report = tmp.path().join("r");
    let ladder = |report: &Path, image: Option<&Path>| {
        let mut c = wanrt();
        c.args(["bench", "--ladder", "--model"]).arg(&model).arg("--prompts").arg(&prompts);
        if let Some(i) = image {
            c.arg("--image").arg(i);
        }
        c.args(["--frames", "5", "--height", "32", "--width", "48", "--steps", "2", "--rungs", "int8"])
            .args(["--calib-prompts", "1", "--calib-steps", "1", "--repeat", "1", "--keep-frames", "--json"])
            .arg("--report")
            .arg(report)
            .arg("--artifact-cache")
            .arg(tmp.path().join("cache"))
            .output()
            .unwrap()
    };
    let out = ladder(&report, Some(&model.join("image.png")));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).expect("--json prints ladder.json");
    assert!(j["rungs"][1]["psnr"].as_f64().unwrap() > 5.0, "{}", j["rungs"][1]);
    // The children's prompt list names each video's image.
    let list = json(&report.join("prompts.json"));
    assert!(list[0]["image"].as_str().unwrap().ends_with("other.png"), "{list}");
    assert!(list[1]["image"].as_str().unwrap().ends_with("image.png"), "{list}");
    // The two videos start from different images.
    let frames = |k: usize| wanrt_io::read_npy(report.join(format!("frames/baseline/{k}_0.npy"))).unwrap().to_f32_vec();
    assert_ne!(frames(0), frames(1));

    let bare = tmp.path().join("bare");
    std::fs::write(&prompts, r#"["a fox"]"#).unwrap();
    let out = ladder(&bare, None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("needs a first frame") && err.trim().lines().count() == 1, "{err}");
    assert!(!bare.join("ladder.json").exists());
}
