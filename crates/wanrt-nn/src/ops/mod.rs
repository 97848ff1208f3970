//! CPU reference kernels. Each works on dense row-major f32 data; the
//! [`crate::Tensor`]-level wrappers check shapes and name the op in errors.

pub mod activation;
pub mod attention;
pub mod attention_quant;
pub mod conv;
pub mod conv_winograd;
pub mod matmul;
pub mod modulate;
pub mod norm;
pub mod pool;
pub mod resize;
pub mod rope;
pub mod softmax;

pub use conv::{conv2d, conv3d, Padding3d, PaddingFull};
pub use conv_winograd::WinogradConv3d;

pub use activation::{gelu_tanh, silu};
pub use attention::attention;
pub use matmul::{matmul, matmul_nt};
pub use modulate::{add_gated, layer_norm_modulate};
pub use norm::{layer_norm, rms_norm};
pub use softmax::softmax_last_dim;

/// Number of threads kernels may use (rayon's pool size).
pub fn num_threads() -> usize {
    rayon::current_num_threads()
}

/// Work below this many elements stays on one thread: spawning costs more.
pub(crate) const PAR_MIN: usize = 1 << 15;

/// Whether the CPU has AVX2 (cached by the standard library's feature detection).
pub(crate) fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    return std::arch::is_x86_feature_detected!("avx2");
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Runs `f` compiled for AVX2 when the CPU has it (`f` is inlined into a function with the
/// feature enabled, so its loops get 256-bit vectors), else as is. Kernels written as plain loops
/// with explicit, fixed-width reductions give the same bits either way.
#[inline(always)]
pub(crate) fn vectorized<R>(f: impl FnOnce() -> R) -> R {
    vectorized_if(has_avx2(), f)
}

/// [`vectorized`] with the choice made by the caller: `wide` must only be true when
/// [`has_avx2`] is (tests pass `false` to compare with the baseline build).
#[inline(always)]
pub(crate) fn vectorized_if<R>(wide: bool, f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    if wide {
        #[target_feature(enable = "avx2")]
        unsafe fn avx2<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        // SAFETY: callers pass `wide` only when the CPU has AVX2.
        return unsafe { avx2(f) };
    }
    let _ = wide;
    f()
}

/// A raw pointer handed to rayon tasks that each write a disjoint range of
/// one output buffer (the callers' SAFETY comments state the disjointness).
#[derive(Clone, Copy)]
pub(crate) struct SyncPtr(pub(crate) *mut f32);
// SAFETY: only used to hand disjoint ranges of one buffer to rayon tasks.
unsafe impl Send for SyncPtr {}
unsafe impl Sync for SyncPtr {}
impl SyncPtr {
    pub(crate) fn get(self) -> *mut f32 {
        self.0
    }
}
