//! Issue 18 through the binary: bad flags fail before any work, in one line, with no output
//! left behind; negative numbers are values; files honour the umask; help texts exist;
//! a closed stdout is not a panic.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn wanrt() -> Command {
    Command::new(env!("CARGO_BIN_EXE_wanrt"))
}

fn fixture(case: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/wan").join(case)
}

/// Runs `generate` on `model`; returns (exit code, last stderr line, stderr).
fn generate(model: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = wanrt().args(["generate", "--model"]).arg(model).args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let last = stderr.lines().last().unwrap_or("").to_string();
    (out.status.code(), last, stderr)
}

fn assert_fails(model: &Path, args: &[&str], needle: &str) {
    let (code, last, stderr) = generate(model, args);
    assert_eq!(code, Some(1), "{args:?}: {stderr}");
    assert!(last.starts_with("error: ") && last.contains(needle), "{args:?}: `{last}` lacks `{needle}`");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn numeric_flags_and_outputs_fail_before_the_work() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.mp4");
    let o = out.to_str().unwrap();
    let c = fixture("c");
    // Non-finite values are refused, never silently turned into "no CFG".
    assert_fails(&c, &["--prompt", "x", "--guidance", "nan", "-o", o], "--guidance must be a finite number");
    assert_fails(&c, &["--prompt", "x", "--shift", "inf", "-o", o], "--shift must be a positive number");
    assert_fails(&c, &["--prompt", "x", "--fps", "0", "-o", o], "--fps must be a positive number");
    assert_fails(&c, &["--prompt", "x", "--frames", "0", "-o", o], "--frames must be at least 1");
    // A negative number is a value, not an unknown flag (it then fails on the size, later).
    assert_fails(&c, &["--prompt", "x", "--guidance", "-5", "--height", "20", "-o", o], "multiples of 16");
    // Output paths: checked before the model is read (a missing model would be reported
    // otherwise), the same file twice refused, unknown formats named.
    let nowhere = dir.path().join("missing/dir/out.mp4");
    let gone = Path::new("/nonexistent/model");
    let (code, last, _) = generate(gone, &["--prompt", "x", "-o", nowhere.to_str().unwrap()]);
    assert_eq!(code, Some(1));
    assert!(last.contains("missing") && !last.contains("model folder not found"), "{last}");
    assert_fails(&c, &["--prompt", "x", "-o", dir.path().join("v.xyz").to_str().unwrap()], "unknown output type");
    assert_fails(&c, &["--prompt", "x", "-o", o, "--save-npy", o], "--save-npy");
    assert_fails(&c, &["--prompts", dir.path().join("p.txt").to_str().unwrap(), "-o", o], "--prompts");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "nothing written");
}

#[test]
fn unbounded_work_is_refused_up_front() {
    let dir = tempfile::tempdir().unwrap();
    let o = dir.path().join("out.mp4");
    let o = o.to_str().unwrap();
    let c = fixture("c");
    assert_fails(&c, &["--prompt", "x", "--max-sequence-length", "1000000", "-o", o], "text length limit");
    assert_fails(&c, &["--prompt", "x", "--frames", "4001", "--max-memory", "64M", "-o", o], "memory");
    assert_fails(&c, &["--prompt", "x", "--steps", "100000", "-o", o], "steps");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "nothing written");
}

#[cfg(unix)]
#[test]
fn converted_models_honour_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("converted");
    let cmd = format!(
        "umask 022; exec '{}' convert --model '{}' -o '{}'",
        env!("CARGO_BIN_EXE_wanrt"),
        fixture("a_original").display(),
        out.display()
    );
    let run = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    for f in ["transformer/diffusion_pytorch_model.safetensors", "vae/config.json", "model_index.json"] {
        let mode = std::fs::metadata(out.join(f)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644, "{f}: {mode:o}");
    }
}

#[test]
fn help_texts_name_every_flag() {
    let help = |args: &[&str]| String::from_utf8(wanrt().args(args).arg("--help").output().unwrap().stdout).unwrap();
    let kid = help(&["eval", "kid"]);
    assert!(kid.contains("--subsets") && kid.contains("--subset-size"), "{kid}");
    let fvd = help(&["eval", "fvd"]);
    assert!(fvd.contains("--i3d"), "{fvd}");
    let clip = help(&["eval", "clipscore"]);
    assert!(!clip.contains("--videos <FILE>"), "a folder is not FILE: {clip}");
}

#[test]
fn a_closed_stdout_is_not_a_panic() {
    let mut child = wanrt().arg("--help").stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    drop(child.stdout.take()); // the reader goes away, as with `| head -0`
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// A prompt longer than --max-sequence-length is cut with a warning; --videos-per-prompt with
/// --prompt makes a batch; step progress reaches a stderr that is not a terminal.
#[test]
fn small_things_a_new_user_tripped_on() {
    let dir = tempfile::tempdir().unwrap();
    let tiny = ["--steps", "2", "--frames", "5", "--height", "16", "--width", "16"];
    let long = "a red fox runs through deep snow under a pale winter sky, cinematic";
    let out = dir.path().join("one.mp4");
    let mut args = vec!["--prompt", long, "--max-sequence-length", "4", "-o", out.to_str().unwrap()];
    args.extend(tiny);
    let (code, _, stderr) = generate(&fixture("c"), &args);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.lines().any(|l| l.starts_with("warning: ") && l.contains("--max-sequence-length")), "{stderr}");
    assert!(stderr.contains("step 1/2") && stderr.contains("step 2/2"), "plain progress lines: {stderr}");

    let batch = dir.path().join("batch");
    let mut args = vec!["--prompt", "a fox", "--videos-per-prompt", "2", "-o", batch.to_str().unwrap()];
    args.extend(tiny);
    let (code, _, stderr) = generate(&fixture("c"), &args);
    assert_eq!(code, Some(0), "{stderr}");
    for f in ["0_0.mp4", "0_1.mp4", "prompts.json"] {
        assert!(batch.join(f).is_file(), "{f}: {stderr}");
    }
}
