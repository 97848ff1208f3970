//! Every CUDA kernel family compiled by NVRTC to an sm_90a cubin, on any machine: no GPU or driver
//! needed, only libnvrtc (CI installs the pinned PyPI wheel `nvidia-cuda-nvrtc`, see `.ci/run`).
//! ptxas' resource report (`--ptxas-options=-v`) is checked per entry point: no register spills,
//! registers × block threads within one SM's register file, static shared memory ≤ 48 KiB.
//!
//! Without libnvrtc the test prints "skipped" and passes, unless `WANRT_REQUIRE_NVRTC=1` (CI sets
//! it: a missing compiler there must fail, not pass silently). `WANRT_KERNEL_REPORT=FILE` writes
//! the resource table as JSON (bench/results/cuda-kernels-sm_90a.json is one).

use wanrt_nn::backend::cuda::{kernels, nvrtc};

const ARCH: &str = "sm_90a";

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
    if let Ok(path) = std::env::var("WANRT_KERNEL_REPORT") {
        let report = serde_json::json!({ "arch": ARCH, "nvrtc": format!("{major}.{minor}"), "kernels": rows });
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
