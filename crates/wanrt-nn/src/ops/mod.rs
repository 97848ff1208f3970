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
