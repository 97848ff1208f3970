//! Matrix products through the `gemm` crate (runtime ISA dispatch, packed panels).

use crate::error::{Error, Result};
use crate::HostTensor;
use gemm::Parallelism;

fn parallelism(m: usize, n: usize, k: usize) -> Parallelism {
    let threads = super::num_threads();
    if threads > 1 && m * n * k >= 1 << 18 {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    }
}

/// Operand addressing: element (row, col) lives at `data[row * rs + col * cs]`.
#[derive(Clone, Copy)]
pub struct Layout {
    pub rs: usize,
    pub cs: usize,
}

impl Layout {
    pub const fn row_major(cols: usize) -> Self {
        Layout { rs: cols, cs: 1 }
    }
    fn last(self, rows: usize, cols: usize) -> usize {
        (rows - 1) * self.rs + (cols - 1) * self.cs
    }
}

/// `dst[m,n] (+)= a[m,k] · b[k,n]` with arbitrary operand strides; `dst` is
/// row-major with row stride `dst_rs`. With `accumulate`, adds to `dst`.
#[allow(clippy::too_many_arguments)]
pub fn gemm_general(
    dst: &mut [f32],
    dst_rs: usize,
    a: &[f32],
    a_layout: Layout,
    b: &[f32],
    b_layout: Layout,
    m: usize,
    n: usize,
    k: usize,
    accumulate: bool,
    single_thread: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!((m - 1) * dst_rs + n <= dst.len(), "gemm dst out of bounds");
    if k == 0 {
        if !accumulate {
            dst.chunks_mut(dst_rs).take(m).for_each(|r| r[..n].fill(0.0));
        }
        return;
    }
    assert!(a_layout.last(m, k) < a.len(), "gemm lhs out of bounds");
    assert!(b_layout.last(k, n) < b.len(), "gemm rhs out of bounds");
    let par = if single_thread { Parallelism::None } else { parallelism(m, n, k) };
    // SAFETY: the extents of all three operands are checked above.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            accumulate,
            a.as_ptr(),
            a_layout.cs as isize,
            a_layout.rs as isize,
            b.as_ptr(),
            b_layout.cs as isize,
            b_layout.rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            par,
        )
    }
}

/// `[.., K] · B → [.., N]` for a right operand addressed by `b_layout`.
fn product(op: &'static str, a: &HostTensor, b: &[f32], k: usize, n: usize, b_layout: Layout) -> Result<HostTensor> {
    if a.shape().last() != Some(&k) {
        return Err(Error::shape(op, format!("[.., {k}]"), a.shape()));
    }
    let m = a.numel() / k.max(1);
    let mut shape = a.shape().to_vec();
    *shape.last_mut().expect("rank >= 1") = n;
    let mut out = vec![0.0; m * n];
    gemm_general(&mut out, n, a.data(), Layout::row_major(k), b, b_layout, m, n, k, false, false);
    HostTensor::new(shape, out)
}

/// `[.., M, K] · [K, N] → [.., M, N]` (the right operand is shared).
pub fn matmul(a: &HostTensor, b: &HostTensor) -> Result<HostTensor> {
    let &[k, n] = b.shape() else {
        return Err(Error::shape("matmul rhs", "[K, N]", b.shape()));
    };
    product("matmul", a, b.data(), k, n, Layout::row_major(n))
}

/// `[.., K] · w[N, K]ᵀ → [.., N]` (PyTorch Linear weight layout).
pub fn matmul_nt(a: &HostTensor, w: &HostTensor) -> Result<HostTensor> {
    let &[n, k] = w.shape() else {
        return Err(Error::shape("matmul_nt rhs", "[N, K]", w.shape()));
    };
    product("matmul_nt", a, w.data(), k, n, Layout { rs: 1, cs: k })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        let mut out = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k).map(|kk| a[i * k + kk] * b[kk * n + j]).sum();
            }
        }
        out
    }

    #[test]
    fn matmul_matches_naive() {
        let (m, k, n) = (37, 53, 29);
        let a: Vec<f32> = (0..m * k).map(|i| ((i * 7 % 13) as f32 - 6.0) / 7.0).collect();
        let b: Vec<f32> = (0..k * n).map(|i| ((i * 5 % 11) as f32 - 5.0) / 5.0).collect();
        let want = naive(&a, &b, m, k, n);
        let t = |shape: [usize; 2], v: &[f32]| HostTensor::new(shape, v.to_vec()).unwrap();
        let got = matmul(&t([m, k], &a), &t([k, n], &b)).unwrap().into_data();
        for (x, y) in got.iter().zip(&want) {
            assert!((x - y).abs() < 1e-4, "{x} vs {y}");
        }
        // Same product with the right operand stored transposed.
        let mut bt = vec![0.0; k * n];
        for kk in 0..k {
            for j in 0..n {
                bt[j * k + kk] = b[kk * n + j];
            }
        }
        let got_nt = matmul_nt(&t([m, k], &a), &t([n, k], &bt)).unwrap().into_data();
        for (x, y) in got_nt.iter().zip(&want) {
            assert!((x - y).abs() < 1e-4);
        }
    }
}
