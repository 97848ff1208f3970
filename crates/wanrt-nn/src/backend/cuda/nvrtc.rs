//! Kernel compilation: a family's CUDA C through NVRTC to a **cubin** for one GPU architecture
//! (cubins, not PTX: PTX newer than the installed driver fails to JIT), with ptxas' resource
//! report (`--ptxas-options=-v`: registers, spills, shared memory) parsed per entry point.
//! Compiled cubins are cached on disk by hash(source, options, arch, NVRTC version).
//!
//! NVRTC is loaded at run time (cudarc's `dynamic-loading`): [`available`] probes for it before
//! any call, since calling into a missing library panics.

use super::kernels::Family;
use crate::error::{Error, Result};
use cudarc::nvrtc::sys;
use sha2::{Digest, Sha256};
use std::ffi::{CStr, CString};
use std::path::PathBuf;

/// Options every family is compiled with (besides the architecture).
pub const OPTIONS: &[&str] = &["--std=c++17", "--ptxas-options=-v"];

/// Whether libnvrtc can be loaded (its directory on `LD_LIBRARY_PATH` or the loader's path).
pub fn available() -> bool {
    // SAFETY: only tries to dlopen the library; nothing is called through it.
    unsafe { sys::is_culib_present() }
}

fn check(op: &str, r: sys::nvrtcResult) -> Result<()> {
    if r == sys::nvrtcResult::NVRTC_SUCCESS {
        Ok(())
    } else {
        Err(Error::Msg(format!("nvrtc {op}: {r:?}")))
    }
}

/// `(major, minor)` of the loaded NVRTC.
pub fn version() -> Result<(i32, i32)> {
    if !available() {
        return Err(Error::Msg(missing()));
    }
    let (mut major, mut minor) = (0, 0);
    // SAFETY: the library is present (checked above); out-pointers are valid.
    check("version", unsafe { sys::nvrtcVersion(&mut major, &mut minor) })?;
    Ok((major, minor))
}

fn missing() -> String {
    "libnvrtc.so.13 is not loadable (install the CUDA 13 NVRTC library, e.g. PyPI's nvidia-cuda-nvrtc, and put \
     its lib directory on LD_LIBRARY_PATH)"
        .into()
}

/// ptxas' resources for one entry point.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Resources {
    pub entry: String,
    pub registers: u32,
    pub spill_stores: u32,
    pub spill_loads: u32,
    pub stack_frame: u32,
    pub shared_bytes: u32,
}

/// A compiled family.
#[derive(Debug, Clone)]
pub struct Compiled {
    pub cubin: Vec<u8>,
    /// NVRTC's program log (ptxas' `-v` lines).
    pub log: String,
}

/// The architecture name NVRTC targets for a GPU of compute capability `(major, minor)`: the
/// arch-specific `sm_90a` on Hopper (wgmma/TMA live there), plain `sm_XY` elsewhere.
pub fn arch_for(major: i32, minor: i32) -> String {
    if (major, minor) == (9, 0) {
        "sm_90a".into()
    } else {
        format!("sm_{major}{minor}")
    }
}

/// Compiles `family` to a cubin for `arch` (e.g. `sm_90a`).
pub fn compile(family: &Family, arch: &str) -> Result<Compiled> {
    if !available() {
        return Err(Error::Msg(missing()));
    }
    let src = CString::new(family.translation_unit()).map_err(|_| Error::Msg("kernel source has a NUL byte".into()))?;
    let name = CString::new(format!("{}.cu", family.name)).expect("no NUL in names");
    let mut options: Vec<CString> = OPTIONS.iter().map(|o| CString::new(*o).expect("no NUL")).collect();
    options.push(CString::new(format!("--gpu-architecture={arch}")).expect("no NUL"));
    let option_ptrs: Vec<*const std::ffi::c_char> = options.iter().map(|o| o.as_ptr()).collect();
    let mut prog: sys::nvrtcProgram = std::ptr::null_mut();
    // SAFETY: the library is present; the strings outlive the program, which is destroyed below
    // on every path.
    unsafe {
        check(
            "create program",
            sys::nvrtcCreateProgram(&mut prog, src.as_ptr(), name.as_ptr(), 0, std::ptr::null(), std::ptr::null()),
        )?;
        let compiled = sys::nvrtcCompileProgram(prog, option_ptrs.len() as i32, option_ptrs.as_ptr());
        let log = program_log(prog);
        let result = if compiled != sys::nvrtcResult::NVRTC_SUCCESS {
            Err(Error::Msg(format!("nvrtc: {}.cu does not compile for {arch} ({compiled:?}):\n{log}", family.name)))
        } else {
            let mut size = 0usize;
            check("cubin size", sys::nvrtcGetCUBINSize(prog, &mut size)).and_then(|()| {
                let mut cubin = vec![0u8; size];
                check("cubin", sys::nvrtcGetCUBIN(prog, cubin.as_mut_ptr().cast())).map(|()| Compiled { cubin, log })
            })
        };
        sys::nvrtcDestroyProgram(&mut prog);
        result
    }
}

/// SAFETY: `prog` is a live program.
unsafe fn program_log(prog: sys::nvrtcProgram) -> String {
    let mut size = 0usize;
    if unsafe { sys::nvrtcGetProgramLogSize(prog, &mut size) } != sys::nvrtcResult::NVRTC_SUCCESS || size == 0 {
        return String::new();
    }
    let mut buf = vec![0u8; size];
    if unsafe { sys::nvrtcGetProgramLog(prog, buf.as_mut_ptr().cast()) } != sys::nvrtcResult::NVRTC_SUCCESS {
        return String::new();
    }
    CStr::from_bytes_until_nul(&buf).map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
}

/// The entry points' resources from ptxas' `-v` lines:
/// ```text
/// ptxas info    : Compiling entry function 'rms_norm' for 'sm_90a'
/// ptxas info    : Function properties for rms_norm
///     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
/// ptxas info    : Used 20 registers, used 1 barriers, 128 bytes smem, 400 bytes cmem[0]
/// ```
pub fn parse_resources(log: &str) -> Vec<Resources> {
    let mut out: Vec<Resources> = Vec::new();
    let number_before = |line: &str, unit: &str| -> Option<u32> {
        let at = line.find(unit)?;
        line[..at].split(|c: char| !c.is_ascii_digit()).rfind(|s| !s.is_empty())?.parse().ok()
    };
    for line in log.lines() {
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            let entry = rest.split('\'').next().unwrap_or_default().to_string();
            out.push(Resources { entry, ..Default::default() });
            continue;
        }
        let Some(cur) = out.last_mut() else { continue };
        if line.contains("bytes stack frame") {
            cur.stack_frame = number_before(line, "bytes stack frame").unwrap_or(0);
            cur.spill_stores = number_before(line, "bytes spill stores").unwrap_or(0);
            cur.spill_loads = number_before(line, "bytes spill loads").unwrap_or(0);
        }
        if line.contains("Used ") && line.contains(" registers") {
            cur.registers = number_before(line, " registers").unwrap_or(0);
            cur.shared_bytes = number_before(line, " bytes smem").unwrap_or(0);
        }
    }
    out
}

/// Static shared memory one block may use without opting in to more (48 KiB).
pub const SHARED_BUDGET: u32 = 48 * 1024;
/// Registers of one SM's register file (every launch's block must fit it).
pub const REGISTER_FILE: u32 = 65_536;

/// What is wrong with an entry point's resources for blocks of `threads` threads (None: fine).
pub fn over_budget(r: &Resources, threads: u32) -> Option<String> {
    let mut problems = Vec::new();
    if r.spill_stores > 0 || r.spill_loads > 0 {
        problems.push(format!("spills ({} B stores, {} B loads)", r.spill_stores, r.spill_loads));
    }
    if r.registers > 255 || r.registers * threads > REGISTER_FILE {
        problems.push(format!("{} registers × {threads} threads exceed the register file", r.registers));
    }
    if r.shared_bytes > SHARED_BUDGET {
        problems.push(format!("{} B static shared memory > {SHARED_BUDGET}", r.shared_bytes));
    }
    (!problems.is_empty()).then(|| format!("{}: {}", r.entry, problems.join(", ")))
}

/// The disk cache's key for a family compiled for `arch` by NVRTC `version`.
pub fn cache_key(family: &Family, arch: &str, version: (i32, i32)) -> String {
    let mut h = Sha256::new();
    h.update(family.translation_unit().as_bytes());
    for o in OPTIONS {
        h.update(b"\0");
        h.update(o.as_bytes());
    }
    h.update(format!("\0{arch}\0nvrtc {}.{}", version.0, version.1).as_bytes());
    let digest = h.finalize();
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("{}-{arch}-{hex}.cubin", family.name)
}

/// Where compiled cubins are kept: `$WANRT_KERNEL_CACHE`, else `$XDG_CACHE_HOME/wanrt/kernels`,
/// else `~/.cache/wanrt/kernels` (None: no cache, compile every run).
pub fn cache_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("WANRT_KERNEL_CACHE") {
        return Some(PathBuf::from(d));
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("wanrt").join("kernels"))
}

/// The family's cubin for `arch`: from the disk cache when present, else compiled and stored.
/// A cache that cannot be written is not an error (the next run compiles again).
pub fn cubin(family: &Family, arch: &str) -> Result<Vec<u8>> {
    let key = cache_key(family, arch, version()?);
    let path = cache_dir().map(|d| d.join(&key));
    if let Some(bytes) = path.as_ref().and_then(|p| std::fs::read(p).ok()) {
        return Ok(bytes);
    }
    let compiled = compile(family, arch)?;
    if let Some(p) = path {
        // Written beside and renamed: a concurrent reader never sees half a cubin.
        let tmp = p.with_extension(format!("tmp{}", std::process::id()));
        let _ = std::fs::create_dir_all(p.parent().unwrap_or(&p))
            .and_then(|()| std::fs::write(&tmp, &compiled.cubin))
            .and_then(|()| std::fs::rename(&tmp, &p));
    }
    Ok(compiled.cubin)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function 'attention_d128' for 'sm_90a'
ptxas info    : Function properties for attention_d128
    8 bytes stack frame, 4 bytes spill stores, 12 bytes spill loads
ptxas info    : Used 168 registers, used 1 barriers, 41088 bytes smem, 432 bytes cmem[0]
ptxas info    : Compiling entry function 'rms_norm' for 'sm_90a'
ptxas info    : Function properties for rms_norm
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 20 registers, used 1 barriers, 128 bytes smem, 400 bytes cmem[0]
";

    #[test]
    fn parses_ptxas_verbose_lines() {
        let r = parse_resources(LOG);
        assert_eq!(r.len(), 2);
        assert_eq!(
            r[0],
            Resources {
                entry: "attention_d128".into(),
                registers: 168,
                spill_stores: 4,
                spill_loads: 12,
                stack_frame: 8,
                shared_bytes: 41088
            }
        );
        assert_eq!((r[1].registers, r[1].shared_bytes, r[1].spill_loads), (20, 128, 0));
        assert!(over_budget(&r[0], 128).unwrap().contains("spills"));
        assert_eq!(over_budget(&r[1], 256), None);
        // 168 registers fit 128 threads, not 512.
        let no_spill = Resources { spill_stores: 0, spill_loads: 0, ..r[0].clone() };
        assert_eq!(over_budget(&no_spill, 128), None);
        assert!(over_budget(&no_spill, 512).unwrap().contains("register file"));
    }

    #[test]
    fn cache_key_changes_with_arch_and_compiler() {
        let f = &super::super::kernels::FAMILIES[0];
        let a = cache_key(f, "sm_90a", (13, 5));
        assert_eq!(a, cache_key(f, "sm_90a", (13, 5)));
        assert_ne!(a, cache_key(f, "sm_89", (13, 5)));
        assert_ne!(a, cache_key(f, "sm_90a", (13, 0)));
        assert_ne!(a, cache_key(&super::super::kernels::FAMILIES[1], "sm_90a", (13, 5)));
        assert!(a.starts_with("elementwise-sm_90a-") && a.ends_with(".cubin"));
    }

    #[test]
    fn arch_names() {
        assert_eq!(arch_for(9, 0), "sm_90a");
        assert_eq!(arch_for(8, 9), "sm_89");
        assert_eq!(arch_for(12, 0), "sm_120");
    }
}
