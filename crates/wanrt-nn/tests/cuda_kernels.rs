//! Every CUDA kernel family compiled by NVRTC to cubins for Hopper (sm_90a), Ada (sm_89: RTX 40,
//! L4) and Ampere (sm_80: A100; its cubins also run on sm_86/87), on any machine: no GPU or driver
//! needed, only libnvrtc (CI installs the pinned PyPI wheel `nvidia-cuda-nvrtc`, see `.ci/run`).
//! ptxas' resource report (`--ptxas-options=-v`) is checked per entry point: no register spills,
//! registers × block threads within one SM's register file, static shared memory ≤ 48 KiB.
//!
//! Without libnvrtc the test prints "skipped" and passes, unless `WANRT_REQUIRE_NVRTC=1` (CI sets
//! it: a missing compiler there must fail, not pass silently). `WANRT_KERNEL_REPORT=FILE` writes
//! the resource table as JSON (bench/results/cuda-kernels-sm_90a.json is one).
//!
//! At run time the backend compiles for the GPU it finds (`nvrtc::arch_for`); these are the
//! architectures checked here.

use wanrt_nn::backend::cuda::{kernels, nvrtc};

const ARCH: &str = "sm_90a";
const OTHER_ARCHS: [&str; 2] = ["sm_89", "sm_80"];

#[test]
fn every_kernel_compiles_for_sm90a_within_budget() {
    if !nvrtc::available() {
        let required = std::env::var("WANRT_REQUIRE_NVRTC").is_ok_and(|v| v == "1");
        assert!(!required, "WANRT_REQUIRE_NVRTC=1 but libnvrtc.so.13 is not loadable (LD_LIBRARY_PATH?)");
        println!("skipped: libnvrtc.so.13 not loadable; the CUDA kernels were not compiled");
        return;
    }
    let (major, minor) = nvrtc::version().unwrap();
    let mut rows = Vec::new();
    let mut problems = Vec::new();
    for family in kernels::FAMILIES {
        let started = std::time::Instant::now();
        let compiled = nvrtc::compile(family, ARCH).unwrap_or_else(|e| panic!("{e}"));
        let seconds = started.elapsed().as_secs_f64();
        assert!(compiled.cubin.starts_with(b"\x7fELF"), "{}: not a cubin", family.name);
        let resources = nvrtc::parse_resources(&compiled.log);
        for entry in family.entries {
            let Some(r) = resources.iter().find(|r| r.entry == *entry) else {
                problems.push(format!("{entry}: no ptxas report in the log:\n{}", compiled.log));
                continue;
            };
            let threads = kernels::block_threads(entry);
            if let Some(p) = nvrtc::over_budget(r, threads) {
                problems.push(p);
            }
            println!(
                "{:<12} {:<24} {:>3} regs  {:>6} B smem  {:>3} B stack  spills {}/{}  ({threads} threads)",
                family.name, r.entry, r.registers, r.shared_bytes, r.stack_frame, r.spill_stores, r.spill_loads
            );
            rows.push(serde_json::json!({
                "family": family.name, "entry": r.entry, "registers": r.registers, "shared_bytes": r.shared_bytes,
                "stack_frame": r.stack_frame, "spill_stores": r.spill_stores, "spill_loads": r.spill_loads,
                "block_threads": threads, "compile_seconds": seconds,
            }));
        }
    }
    // The Ampere/Ada builds: same budgets (their register files and 48 KiB static shared memory
    // are the same), reported in the JSON as one row per arch.
    let mut others = Vec::new();
    for arch in OTHER_ARCHS {
        for family in kernels::FAMILIES {
            let compiled = nvrtc::compile(family, arch).unwrap_or_else(|e| panic!("{e}"));
            for r in nvrtc::parse_resources(&compiled.log) {
                if let Some(p) = nvrtc::over_budget(&r, kernels::block_threads(&r.entry)) {
                    problems.push(format!("{arch} {p}"));
                }
                others.push(serde_json::json!({ "arch": arch, "entry": r.entry, "registers": r.registers,
                    "shared_bytes": r.shared_bytes, "spill_stores": r.spill_stores, "spill_loads": r.spill_loads }));
            }
        }
    }
    println!("{} entry points also within budget for {OTHER_ARCHS:?}", others.len() / OTHER_ARCHS.len());
    if let Ok(path) = std::env::var("WANRT_KERNEL_REPORT") {
        let report = serde_json::json!({
            "arch": ARCH, "nvrtc": format!("{major}.{minor}"), "kernels": rows, "other_archs": others,
        });
        std::fs::write(&path, serde_json::to_string_pretty(&report).unwrap() + "\n").unwrap();
    }
    assert!(problems.is_empty(), "kernels over budget:\n{}", problems.join("\n"));
}

/// A compile error is reported with NVRTC's log, naming the family.
#[test]
fn compile_errors_name_the_family() {
    if !nvrtc::available() {
        println!("skipped: libnvrtc.so.13 not loadable");
        return;
    }
    let broken = kernels::Family {
        name: "broken",
        source: "extern \"C\" __global__ void f() { undefined(); }",
        entries: &["f"],
    };
    let err = nvrtc::compile(&broken, ARCH).unwrap_err().to_string();
    assert!(err.contains("broken.cu") && err.contains("undefined"), "{err}");
}
