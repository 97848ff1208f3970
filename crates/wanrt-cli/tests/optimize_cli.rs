//! `wanrt optimize` through the binary: artifact + report, the artifact runs
//! with `wanrt generate` (with the step cache too), and bad input fails cleanly.

use std::path::PathBuf;
use std::process::Command;

fn wanrt() -> Command {
    Command::new(env!("CARGO_BIN_EXE_wanrt"))
}

fn fixture(case: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/wan").join(case)
}

const SMALL: &[&str] = &[
    "--calib-prompts",
    "2",
    "--calib-steps",
    "2",
    "--samples",
    "2",
    "--frames",
    "5",
    "--height",
    "32",
    "--width",
    "32",
];

#[test]
fn optimize_writes_artifact_and_report_that_generate_uses() {
    let tmp = tempfile::tempdir().unwrap();
    let art = tmp.path().join("int8");
    let out = wanrt()
        .args(["optimize", "--model"])
        .arg(fixture("a"))
        .args([
            "--quant",
            "int8",
            "--attn-quant",
            "int8",
            "--report-steps",
            "3",
            "--report-videos",
            "2",
            "--json",
            "-o",
        ])
        .arg(&art)
        .args(SMALL)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    let variants = report["variants"].as_array().unwrap();
    assert_eq!(variants.len(), 2);
    let opt = &variants[1];
    assert!(opt["psnr_db"].as_f64().unwrap() > 10.0, "{opt}");
    assert!(opt["ssim"].as_f64().unwrap() > 0.0);
    assert!(opt["transformer_weight_bytes"].as_u64() < variants[0]["transformer_weight_bytes"].as_u64());
    assert_eq!(opt["videos"], 2);
    let items = opt["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["per_frame"].as_array().unwrap().len(), 5);
    let md = std::fs::read_to_string(art.join("optimize-report.md")).unwrap();
    assert!(md.contains("| optimized |"), "{md}");
    assert!(art.join("optimize-report.json").is_file() && art.join("wanrt-artifact.json").is_file());

    // The artifact is a model folder for generate, step cache included.
    let out = wanrt()
        .args(["generate", "--model"])
        .arg(&art)
        .args(["--prompt", "a fox", "--steps", "6", "--frames", "5", "--height", "32", "--width", "32"])
        .args(["--cache-threshold", "1e9", "--json", "-o"])
        .arg(tmp.path().join("v.gif"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let g: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(g["optimized"], true);
    assert_eq!(g["videos"][0]["steps_skipped"], 4);
    assert_eq!(g["videos"][0]["transformer_evals"], 2);
}

#[test]
fn bad_optimize_input_is_one_clear_line() {
    let tmp = tempfile::tempdir().unwrap();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec!["--prune-ffn".into(), "1.5".into()], "--prune-ffn must be in [0, 1)"),
        (vec!["--max-error=0".into()], "--max-error must be a positive number"),
        (vec!["--keep-precision".into(), "blocks.[".into()], "--keep-precision"),
        (vec!["--calib".into(), tmp.path().join("none.txt").display().to_string()], "cannot read prompts"),
        (vec!["--prune-heads".into(), "2".into()], "every head"),
    ];
    for (i, (args, want)) in cases.iter().enumerate() {
        let out_dir = tmp.path().join(format!("o{i}"));
        let out = wanrt()
            .args(["optimize", "--model"])
            .arg(fixture("a"))
            .args(args)
            .args(SMALL)
            .arg("--no-report")
            .arg("-o")
            .arg(&out_dir)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        let last = err.lines().last().unwrap_or("");
        assert!(last.starts_with("error: ") && last.contains(want), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(!out_dir.exists(), "{args:?}: partial output");
    }
    let out = wanrt()
        .args(["generate", "--model"])
        .arg(fixture("a"))
        .args(["--prompt", "x", "--cache-threshold=-1"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("--cache-threshold must be"));
}

fn family(group: &str, case: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures").join(group).join(case)
}

/// Image-to-video models calibrate on images: a `--calib` JSON list whose entries carry their own
/// frames (relative to the file) beside `--image` for the rest; the report's child generations
/// get the same images; the artifact then generates from an image. Without an image the run
/// stops in one line before any artifact exists.
#[test]
fn image_to_video_models_optimize_with_their_images() {
    let tmp = tempfile::tempdir().unwrap();
    let src = family("wan_i2v", "flf2v_a");
    for f in ["image.png", "last_image.png"] {
        std::fs::copy(src.join(f), tmp.path().join(f)).unwrap();
    }
    let calib = tmp.path().join("calib.json");
    let entries = serde_json::json!([
        {"prompt": "a blue bird over the sea", "image": "last_image.png", "last_image": "image.png"},
        "a lighthouse at dusk"
    ]);
    std::fs::write(&calib, entries.to_string()).unwrap();
    let out_dir = tmp.path().join("artifact");
    let size = ["--frames", "5", "--height", "48", "--width", "32", "--report-steps", "2", "--report-videos", "2"];
    let out = wanrt()
        .args(["optimize", "--model"])
        .arg(&src)
        .arg("--calib")
        .arg(&calib)
        .arg("--image")
        .arg(src.join("image.png"))
        .arg("--last-image")
        .arg(src.join("last_image.png"))
        .args(["--calib-prompts", "2", "--calib-steps", "2", "--samples", "2"])
        .args(size)
        .arg("-o")
        .arg(&out_dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("optimize-report.json")).unwrap()).unwrap();
    let optimized = &report["variants"][1];
    let psnr = optimized["psnr_db"].as_f64().unwrap_or_else(|| panic!("no PSNR in {optimized}"));
    assert!(psnr > 20.0, "{optimized}");
    let error = report["summary"]["transformer_error"].as_f64().unwrap();
    assert!(error > 0.0 && error < 0.2, "{error}");
    let video = tmp.path().join("v.mp4");
    let gen = wanrt()
        .args(["generate", "--model"])
        .arg(&out_dir)
        .args(["--prompt", "a bird", "--steps", "2", "--frames", "5"])
        .arg("--image")
        .arg(src.join("image.png"))
        .arg("--last-image")
        .arg(src.join("last_image.png"))
        .arg("-o")
        .arg(&video)
        .output()
        .unwrap();
    assert!(gen.status.success(), "{}", String::from_utf8_lossy(&gen.stderr));

    let none = tmp.path().join("none");
    let out = wanrt()
        .args(["optimize", "--model"])
        .arg(family("wan_i2v", "i2v_a"))
        .args(SMALL)
        .arg("--no-report")
        .arg("-o")
        .arg(&none)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.lines().last().unwrap_or("").contains("needs --image"), "{err}");
    assert!(!none.exists(), "partial output");
}
