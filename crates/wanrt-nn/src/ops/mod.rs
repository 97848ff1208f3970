//! CPU reference kernels. Each works on dense row-major f32 data; the
//! [`crate::HostTensor`]-level wrappers check shapes and name the op in errors.

pub mod activation;
pub mod attention;
pub mod attention_quant;
pub mod conv;
pub mod conv_winograd;
pub mod layout;
pub mod matmul;
pub mod modulate;
pub mod norm;
pub mod packed;
mod packed_kernels;
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

/// 1.5·2²³: adding it to any `|y| < 2²²` leaves `y` rounded half to even in the low mantissa
/// bits (default IEEE rounding), with nothing but an f32 add.
pub(crate) const ROUND_MAGIC: f32 = 12_582_912.0;

/// `y` rounded half to even, as an integer, for `|y| < 2²²`. Unlike a saturating float-to-int
/// cast this is an add and an integer subtract, so loops of it vectorize; same bits everywhere.
#[inline(always)]
pub(crate) fn round_to_int(y: f32) -> i32 {
    (y + ROUND_MAGIC).to_bits() as i32 - ROUND_MAGIC.to_bits() as i32
}

/// Lanes of the kernels' explicit reductions: a fixed order, whatever the vector width.
pub(crate) const LANES: usize = 8;

/// The largest of `init` and `f(x)` over `v` (`b > a` comparisons), in [`LANES`] accumulators so
/// it vectorizes; the order is fixed, so even NaN handling is the same on every path.
#[inline(always)]
pub(crate) fn lane_max(v: &[f32], init: f32, f: impl Fn(f32) -> f32) -> f32 {
    let max2 = |a: f32, b: f32| if b > a { b } else { a };
    let mut m = [init; LANES];
    let mut chunks = v.chunks_exact(LANES);
    for ch in &mut chunks {
        m.iter_mut().zip(ch).for_each(|(m, &x)| *m = max2(*m, f(x)));
    }
    chunks.remainder().iter().map(|&x| f(x)).chain(m).fold(init, max2)
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
