//! The CUDA backend's entry point. The driver is loaded at run time, so a build without a GPU or
//! a CUDA toolkit still starts; `--backend cuda` on such a machine fails in one line.
//!
//! The kernels themselves are the CUDA backend's own work (a later stage of the engine): until they
//! land, a machine with a driver gets a clear error too, never a silent fallback to the CPU.

use super::BackendRef;
use crate::error::{Error, Result};

/// Shared-library names of the CUDA driver API, most specific first.
const DRIVER_LIBRARIES: [&str; 2] = ["libcuda.so.1", "libcuda.so"];

/// Whether the CUDA driver library can be loaded on this machine.
pub fn driver_present() -> bool {
    DRIVER_LIBRARIES.iter().any(|name| {
        // SAFETY: loading the driver library runs its initializers, which have no preconditions;
        // nothing is called through the handle, which is dropped at once.
        unsafe { libloading::Library::new(name) }.is_ok()
    })
}

/// Opens the CUDA backend on the first GPU.
pub fn open() -> Result<BackendRef> {
    if !driver_present() {
        return Err(Error::Msg(
            "--backend cuda: no CUDA driver found (libcuda.so.1 is not loadable: no NVIDIA GPU or driver on this \
             machine); use --backend cpu"
                .into(),
        ));
    }
    Err(Error::Msg(
        "--backend cuda: a CUDA driver is present, but this build's CUDA backend has no kernels yet; use --backend cpu"
            .into(),
    ))
}
