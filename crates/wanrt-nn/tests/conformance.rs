//! The conformance battery on the CPU backends: f32 (which must equal the reference: it is the
//! same kernels), bf16 and f16 (the reference's kernels on half-precision tensors and weights, the
//! numerics of a GPU). `cargo test -p wanrt-nn --test conformance -- --nocapture` prints every
//! measured error; the tolerances of `Tolerance::for_dtype` are set from them.

use wanrt_nn::backend::{CpuBackend, CpuOptions};
use wanrt_nn::DType;

fn cpu(dtype: DType) -> CpuBackend {
    CpuBackend::new(CpuOptions { dtype, ..Default::default() })
}

wanrt_nn::backend_conformance!(cpu_f32, super::cpu(wanrt_nn::DType::F32));
wanrt_nn::backend_conformance!(cpu_bf16, super::cpu(wanrt_nn::DType::BF16));
wanrt_nn::backend_conformance!(cpu_f16, super::cpu(wanrt_nn::DType::F16));

/// The f32 CPU backend is the reference itself: every op agrees to the bit.
#[test]
fn cpu_f32_is_exact() {
    let backend = cpu(DType::F32);
    let battery = wanrt_nn::backend::conformance::Battery::new(&backend);
    for op in wanrt_nn::backend::conformance::OPS {
        battery.run(op).unwrap();
    }
    for m in battery.measurements() {
        assert_eq!((m.nmse, m.max_rel), (0.0, 0.0), "{} ({})", m.op, m.case);
    }
}

/// The comparisons have bite: the bf16 backend's rounding fails the f32 bounds.
#[test]
fn bf16_rounding_fails_the_f32_bounds() {
    let backend = cpu(DType::BF16);
    let battery = wanrt_nn::backend::conformance::Battery::new(&backend);
    let f32_bounds = wanrt_nn::backend::conformance::Tolerance::for_dtype(DType::F32);
    let err = battery.check("linear", f32_bounds).unwrap_err().to_string();
    assert!(err.contains("NMSE"), "{err}");
}
