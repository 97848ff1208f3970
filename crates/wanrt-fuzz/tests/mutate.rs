//! The mutation harness in CI: every format for a share of `WANRT_FUZZ_SECONDS` (default
//! 40 s in all), seeds from `fixtures/fuzz/<format>/`, regressions from
//! `fixtures/fuzz/regress/<format>/`. Each case: no panic, no abort, allocations within the
//! case's budget (the counting allocator below), `Ok` or a clean one-line error.
//!
//! Longer local runs: `WANRT_FUZZ_SECONDS=600 WANRT_FUZZ_SEED=$RANDOM cargo test --release
//! -p wanrt-fuzz --test mutate -- --nocapture`. A failing input is saved (path printed);
//! after the fix, commit it under `fixtures/fuzz/regress/<format>/` (config inputs named
//! `<seed file name>~<anything>`).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use wanrt_fuzz::alloc::Counting;
use wanrt_fuzz::harness::{capture_panics, read_dir, run_format, start_watchdog};
use wanrt_fuzz::targets::Ctx;
use wanrt_fuzz::Format;

#[global_allocator]
static ALLOC: Counting = Counting;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

#[test]
fn mutants_of_every_format_fail_cleanly() {
    // The readers run on wanrt's main thread (8 MiB of stack), not a 2 MiB test thread.
    let t = std::thread::Builder::new().stack_size(8 << 20).spawn(run_all).unwrap();
    if let Err(p) = t.join() {
        std::panic::resume_unwind(p);
    }
}

fn run_all() {
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures");
    // Readers size their work against this budget; the allocator cap follows it.
    std::env::set_var(wanrt_io::limits::BUDGET_ENV, "64M");
    let seconds = env_u64("WANRT_FUZZ_SECONDS", 40);
    let seed = env_u64("WANRT_FUZZ_SEED", 18);
    let ctx = Ctx::new(&fixtures.join("wan/a"), &fixtures.join("fuzz/spiece/config")).expect("scratch folder");
    eprintln!("wanrt-fuzz: seed {seed}, {seconds} s; current case files in {}", ctx.root().display());
    let save = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("fuzz-failures");
    capture_panics();
    start_watchdog();
    let share = Duration::from_secs_f64(seconds as f64 / Format::ALL.len() as f64);
    let mut failures = Vec::new();
    for format in Format::ALL {
        let seeds = read_dir(&fixtures.join("fuzz").join(format.name())).unwrap();
        let regress = read_dir(&fixtures.join("fuzz/regress").join(format.name())).unwrap();
        let t0 = Instant::now();
        let r = run_format(&ctx, format, &seeds, &regress, seed, t0 + share, &save);
        eprintln!(
            "wanrt-fuzz: {:<11} {} seeds, {} regressions, {} mutants ({} errors) in {:.1} s, peak {:.1} MiB",
            format.name(),
            seeds.len(),
            regress.len(),
            r.cases,
            r.errors,
            t0.elapsed().as_secs_f64(),
            r.max_peak as f64 / (1 << 20) as f64
        );
        for f in &r.failures {
            eprintln!("wanrt-fuzz: FAILED {f}");
        }
        failures.extend(r.failures);
    }
    let _ = std::panic::take_hook();
    assert!(failures.is_empty(), "{} failing inputs:\n{}", failures.len(), failures.join("\n"));
}
