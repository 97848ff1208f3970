//! The ladder's work runs in child `wanrt` processes (and the reference stacks' own): each gets
//! a fresh process, so its peak memory and load time are its own, as a user's run would be.

use anyhow::{bail, Context, Result};
use std::ffi::OsString;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// `program args…`, its stdout parsed as the one JSON object `--json` prints; while it runs,
/// `poll` is called every 200 ms (progress from the files it writes). Fails in one line with the
/// child's last error line.
pub fn run_json(program: &Path, args: &Args, what: &str, mut poll: impl FnMut()) -> Result<serde_json::Value> {
    let stdout = run(program, args, what, |_| poll())?;
    let text = String::from_utf8_lossy(&stdout);
    let line = text.lines().rev().find(|l| l.trim_start().starts_with('{')).unwrap_or("");
    serde_json::from_str(line).with_context(|| format!("{what}: no JSON object on its output"))
}

/// Runs `program args…` to completion and returns its stdout; while it runs, `poll` gets the
/// child's process id every 200 ms. Fails in one line with the child's last error line.
pub fn run(program: &Path, args: &Args, what: &str, mut poll: impl FnMut(u32)) -> Result<Vec<u8>> {
    let mut child = Command::new(program)
        .args(&args.0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("{what}: cannot start {}", program.display()))?;
    // Drained on threads: a child that fills a pipe while we wait would block forever.
    let drain = |mut r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            buf
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("piped")));
    let err = drain(Box::new(child.stderr.take().expect("piped")));
    let status = loop {
        if let Some(s) = child.try_wait().with_context(|| format!("{what}: waiting for the child"))? {
            break s;
        }
        poll(child.id());
        std::thread::sleep(Duration::from_millis(200));
    };
    let (stdout, stderr) = (out.join().unwrap_or_default(), err.join().unwrap_or_default());
    if !status.success() {
        let stderr = String::from_utf8_lossy(&stderr);
        let last = stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("no error output").trim();
        bail!("{what} failed ({status}): {last}");
    }
    Ok(stdout)
}

/// Files ending in `.ext` directly in `dir` (0 when it does not exist yet).
pub fn count_files(dir: &Path, ext: &str) -> usize {
    std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok()).filter(|e| e.path().extension().is_some_and(|x| x == ext)).count())
        .unwrap_or(0)
}

/// A child's argument list, built from flags, paths and numbers.
#[derive(Default, Clone)]
pub struct Args(pub Vec<OsString>);

impl Args {
    pub fn arg(mut self, a: impl AsRef<std::ffi::OsStr>) -> Self {
        self.0.push(a.as_ref().to_os_string());
        self
    }
    pub fn flag(self, name: &str, value: impl ToString) -> Self {
        self.arg(name).arg(value.to_string())
    }
    pub fn path(self, name: &str, value: &Path) -> Self {
        self.arg(name).arg(value)
    }
    pub fn extend<S: AsRef<std::ffi::OsStr>>(mut self, more: impl IntoIterator<Item = S>) -> Self {
        self.0.extend(more.into_iter().map(|a| a.as_ref().to_os_string()));
        self
    }
}
