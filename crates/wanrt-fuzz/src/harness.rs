//! The loop: seeds first (each must load), then the committed regressions, then mutants
//! until the format's deadline. Each case runs under the allocator cap, inside
//! `catch_unwind`, and its outcome is checked.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use arbitrary::Unstructured;
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

use crate::targets::Ctx;
use crate::{alloc, mutate, Format};

/// Longest error message accepted (a message that echoes a whole hostile input is not clean).
pub const MAX_ERROR_LEN: usize = 600;

/// A named input file.
pub struct Input {
    pub name: String,
    pub bytes: Vec<u8>,
}

/// Reads every file of `dir` (sorted by name; none when the folder is missing).
pub fn read_dir(dir: &Path) -> std::io::Result<Vec<Input>> {
    let mut out = Vec::new();
    if !dir.is_dir() {
        return Ok(out);
    }
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if p.is_file() && !name.starts_with('.') && name != "README.md" {
            out.push(Input { name, bytes: std::fs::read(&p)? });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// What one format's run found.
pub struct Report {
    pub format: Format,
    pub cases: usize,
    pub errors: usize,
    pub max_peak: usize,
    pub failures: Vec<String>,
}

/// Per-case memory: the decode budget the harness sets, plus room for the reader's own
/// bookkeeping and the (small) model a config case loads.
pub fn case_budget(input_len: usize) -> usize {
    wanrt_io::decode_budget(input_len as u64) as usize + (64 << 20) + 16 * input_len
}

static PANIC: Mutex<Option<String>> = Mutex::new(None);

/// A case running longer than this is a hang: the watchdog names its input and aborts (a
/// hung reader cannot be stopped from inside the process, and CI must not wait forever).
pub const CASE_TIMEOUT: Duration = Duration::from_secs(20);

/// (start, message) of the running case, for the watchdog.
static RUNNING: Mutex<Option<(Instant, String)>> = Mutex::new(None);

/// Starts the watchdog thread (once).
pub fn start_watchdog() {
    static STARTED: std::sync::Once = std::sync::Once::new();
    STARTED.call_once(|| {
        std::thread::spawn(|| loop {
            std::thread::sleep(Duration::from_millis(250));
            if let Ok(r) = RUNNING.lock() {
                if let Some((t0, msg)) = r.as_ref().filter(|(t0, _)| t0.elapsed() > CASE_TIMEOUT) {
                    eprintln!(
                        "wanrt-fuzz: {msg} still running after {:.0} s (a hang); aborting",
                        t0.elapsed().as_secs_f64()
                    );
                    std::process::abort();
                }
            }
        });
    });
}

/// Installs a panic hook that keeps the message for the report instead of printing it.
pub fn capture_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if RUNNING.lock().map(|r| r.is_none()).unwrap_or(true) {
            return default(info); // not in a case: the harness's own failure
        }
        let loc = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        if let Ok(mut p) = PANIC.lock() {
            p.get_or_insert(format!("{msg}{loc}"));
        }
    }));
}

/// Runs one case; Err describes what was wrong with the outcome.
fn case(ctx: &Ctx, format: Format, seed_name: &str, bytes: &[u8], must_load: bool) -> Result<(bool, usize), String> {
    let path = ctx.case_path(format, seed_name);
    std::fs::write(&path, bytes).map_err(|e| format!("cannot write the case file: {e}"))?;
    if let Ok(mut p) = PANIC.lock() {
        *p = None;
    }
    // Built before the cap is set: the watchdog must not need to allocate.
    let msg = format!("{} case on {} (input: {})", format.name(), seed_name, path.display());
    if let Ok(mut r) = RUNNING.lock() {
        *r = Some((Instant::now(), msg));
    }
    let base = alloc::begin_case(case_budget(bytes.len()));
    let out = catch_unwind(AssertUnwindSafe(|| ctx.run(format, &path)));
    let peak = alloc::end_case(base);
    if let Ok(mut r) = RUNNING.lock() {
        *r = None;
    }
    match out {
        Err(_) => {
            let msg = PANIC.lock().ok().and_then(|p| p.clone()).unwrap_or_default();
            Err(format!("panic: {msg}"))
        }
        Ok(Ok(())) => Ok((false, peak)),
        Ok(Err(e)) if must_load => Err(format!("a valid seed did not load: {e}")),
        Ok(Err(e)) => {
            // One line, bounded, and naming the input file at most once (issue 18: messages
            // that repeat the same path twice).
            let p = path.display().to_string();
            let clean =
                !e.trim().is_empty() && !e.contains('\n') && e.len() <= MAX_ERROR_LEN && e.matches(&p).count() <= 1;
            if clean {
                Ok((true, peak))
            } else {
                let head: String = e.chars().take(300).collect();
                Err(format!("unclean error ({} bytes, {} lines): {head:?}", e.len(), e.lines().count()))
            }
        }
    }
}

/// Runs `format` until `deadline`: seeds, regressions, then mutants from `rng_seed`.
/// Failing inputs are written to `save_dir`.
pub fn run_format(
    ctx: &Ctx,
    format: Format,
    seeds: &[Input],
    regressions: &[Input],
    rng_seed: u64,
    deadline: Instant,
    save_dir: &Path,
) -> Report {
    let mut r = Report { format, cases: 0, errors: 0, max_peak: 0, failures: Vec::new() };
    let record = |r: &mut Report, label: String, bytes: &[u8], res: Result<(bool, usize), String>| match res {
        Ok((err, peak)) => {
            r.errors += err as usize;
            r.max_peak = r.max_peak.max(peak);
        }
        Err(what) if r.failures.len() < 5 => {
            let saved = save(save_dir, format, &label, bytes);
            r.failures.push(format!("{}: {label}: {what} (input: {})", format.name(), saved.display()));
        }
        Err(_) => {}
    };
    for s in seeds {
        let res = case(ctx, format, &s.name, &s.bytes, true);
        record(&mut r, format!("seed {}", s.name), &s.bytes, res);
        let _ = ctx.restore(format, &s.name, &s.bytes);
    }
    for g in regressions {
        // A regression input names the seed it came from (`<seed>~<anything>`) for configs.
        let seed_name = g.name.split('~').next().unwrap_or(&g.name);
        let res = case(ctx, format, seed_name, &g.bytes, false);
        record(&mut r, format!("regression {}", g.name), &g.bytes, res);
        if let Some(s) = seeds.iter().find(|s| s.name == seed_name) {
            let _ = ctx.restore(format, &s.name, &s.bytes);
        }
    }
    if seeds.is_empty() {
        r.failures.push(format!("{}: no seeds", format.name()));
        return r;
    }
    let mut rng = StdRng::seed_from_u64(rng_seed ^ (format as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut raw = vec![0u8; 4096];
    while Instant::now() < deadline && r.failures.is_empty() {
        rng.fill_bytes(&mut raw);
        let mut u = Unstructured::new(&raw);
        let i = u.choose_index(seeds.len()).unwrap_or(0);
        let j = u.choose_index(seeds.len()).unwrap_or(0);
        let bytes = mutate::mutate(format, &seeds[i].bytes, &seeds[j].bytes, &mut u);
        let res = case(ctx, format, &seeds[i].name, &bytes, false);
        let label = format!("case {} (seed {}, WANRT_FUZZ_SEED={rng_seed})", r.cases, seeds[i].name);
        record(&mut r, label, &bytes, res);
        let _ = ctx.restore(format, &seeds[i].name, &seeds[i].bytes);
        r.cases += 1;
    }
    r
}

fn save(dir: &Path, format: Format, label: &str, bytes: &[u8]) -> PathBuf {
    let tag: String = label.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).take(60).collect();
    let p = dir.join(format!("{}-{tag}", format.name()));
    let _ = std::fs::create_dir_all(dir).and_then(|_| std::fs::write(&p, bytes));
    p
}
