//! The CUDA backend. Every CUDA library is loaded at run time (cudarc's `dynamic-loading`), so a
//! build without a GPU or a CUDA toolkit still starts; [`open`] probes the driver, cuBLASLt and
//! NVRTC before any call into them (a call into a missing library panics) and fails in one line
//! naming what is missing.
//!
//! Layout: `kernels/*.cu` (CUDA C, one file per kernel family) compiled by [`nvrtc`] to cubins
//! for the running GPU's architecture and cached on disk; [`launch`] holds the host-side launch
//! logic (grids, argument structs, copy plans), unit-tested without a GPU; [`gemm`] the cuBLASLt
//! plans cached per shape; [`backend`] the [`Backend`](super::Backend) implementation.
//!
//! Verified without a GPU: every family compiles to an sm_90a cubin within its resource budget
//! (tests/cuda_kernels.rs, NVRTC from PyPI); the kernels' CUDA C runs on the CPU as host C++ and
//! matches the CPU backend (tests/cuda_emulation.rs). On a GPU only: the conformance battery
//! (tests/conformance_cuda.rs, `tools/device/gpu_check.sh`), cuBLASLt, device math's rounding.

pub mod attention_int8;
pub mod backend;
pub mod gemm;
pub mod graph;
pub mod kernels;
pub mod launch;
pub mod nvrtc;
pub mod w8a8;

pub use backend::CudaBackend;

use super::BackendRef;
use crate::dtype::DType;
use crate::error::{Error, Result};
use std::sync::Arc;

/// A CUDA library the backend loads, and whether this machine has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Library {
    pub name: &'static str,
    /// The file the loader looks for (CUDA 13's soname).
    pub file: &'static str,
    pub present: bool,
}

/// The libraries the backend needs, probed without calling into any of them.
pub fn probe() -> [Library; 3] {
    // SAFETY: each probe only tries to dlopen the library (running its initializers, which have
    // no preconditions) and drops the handle; no symbol is called.
    let (driver, cublaslt, nvrtc) = unsafe {
        (
            cudarc::driver::sys::is_culib_present(),
            cudarc::cublaslt::sys::is_culib_present(),
            cudarc::nvrtc::sys::is_culib_present(),
        )
    };
    [
        Library { name: "CUDA driver", file: "libcuda.so.1", present: driver },
        Library { name: "cuBLASLt", file: "libcublasLt.so.13", present: cublaslt },
        Library { name: "NVRTC", file: "libnvrtc.so.13", present: nvrtc },
    ]
}

/// Whether the CUDA driver library can be loaded on this machine.
pub fn driver_present() -> bool {
    probe()[0].present
}

/// The one-line reason the backend cannot open here, if a library is missing.
pub fn missing_library() -> Option<String> {
    let libs = probe();
    if !libs[0].present {
        return Some(
            "--backend cuda: no CUDA driver found (libcuda.so.1 is not loadable: no NVIDIA GPU or driver on this \
             machine); use --backend cpu"
                .into(),
        );
    }
    let missing: Vec<&str> = libs.iter().filter(|l| !l.present).map(|l| l.file).collect();
    (!missing.is_empty()).then(|| {
        format!(
            "--backend cuda: the driver is present but {} not loadable (CUDA 13 libraries: install the toolkit or \
             PyPI's nvidia-cublas / nvidia-cuda-nvrtc and put their lib directories on LD_LIBRARY_PATH); use \
             --backend cpu",
            missing.join(" and ")
        )
    })
}

/// The CUDA backends of a pipeline on the first GPU: the models' in `dtype`, the VAE's in f32
/// (as diffusers' Wan pipelines keep it), sharing one stream, kernels and transfer counter.
pub fn open_pipeline(dtype: DType) -> Result<(BackendRef, BackendRef)> {
    if let Some(reason) = missing_library() {
        return Err(Error::Msg(reason));
    }
    let main = CudaBackend::new(0, dtype)?;
    let vae = main.with_dtype(DType::F32)?;
    Ok((Arc::new(main), Arc::new(vae)))
}

/// Opens the CUDA backend on the first GPU, computing in bf16 (a GPU's default).
pub fn open() -> Result<BackendRef> {
    open_with(DType::BF16)
}

/// Opens the CUDA backend on the first GPU with activation dtype `dtype` (f32 or bf16).
pub fn open_with(dtype: DType) -> Result<BackendRef> {
    if let Some(reason) = missing_library() {
        return Err(Error::Msg(reason));
    }
    Ok(Arc::new(CudaBackend::new(0, dtype)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On a machine without CUDA (CI) the backend refuses in one line naming the libraries;
    /// with them it either opens or says why not — never a panic.
    #[test]
    fn open_without_cuda_fails_in_one_line() {
        match missing_library() {
            Some(reason) => {
                let err = open().unwrap_err().to_string();
                assert_eq!(err, reason);
                assert!(!err.contains('\n') && err.contains("not loadable"), "{err}");
                // The first missing library is named (the driver's absence says it all).
                let first = probe().into_iter().find(|l| !l.present).expect("one is missing");
                assert!(err.contains(first.file), "{err}");
            }
            None => {
                if let Err(e) = open() {
                    assert!(!e.to_string().contains('\n'), "{e}");
                }
            }
        }
    }
}
