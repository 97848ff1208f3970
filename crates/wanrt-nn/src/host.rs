//! Dense row-major f32 array in host memory: what a transfer from or to a backend carries
//! (`Backend::upload` / `Backend::to_host`), and what the CPU reference kernels of
//! [`crate::ops`] compute on.
//!
//! The values sit behind an `Arc` and are copied on write: the CPU backend hands its f32
//! storage to the kernels without a copy, and a kernel that writes into a shared array
//! writes into its own copy.

use crate::error::{Error, Result};
use crate::ops::layout;
use std::sync::Arc;

#[derive(Clone, PartialEq)]
pub struct HostTensor {
    shape: Vec<usize>,
    data: Arc<Vec<f32>>,
}

impl std::fmt::Debug for HostTensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HostTensor{:?}", self.shape)
    }
}

/// Elements of `shape`; a shape whose product overflows (only a hostile header declares one)
/// counts as `usize::MAX`, which no buffer matches.
pub fn numel(shape: &[usize]) -> usize {
    if shape.contains(&0) {
        return 0;
    }
    shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).unwrap_or(usize::MAX)
}

/// The shape queries host and backend tensors share (`shape`, `rank`, `dim`, `numel`, and the
/// checks model code uses, whose errors name the op); the type has a `shape: Vec<usize>` field.
#[macro_export]
#[doc(hidden)]
macro_rules! shape_accessors {
    () => {
        pub fn shape(&self) -> &[usize] {
            &self.shape
        }

        pub fn rank(&self) -> usize {
            self.shape.len()
        }

        pub fn dim(&self, i: usize) -> usize {
            self.shape[i]
        }

        pub fn numel(&self) -> usize {
            $crate::host::numel(&self.shape)
        }

        pub fn expect_shape(&self, op: &'static str, expected: &[usize]) -> $crate::Result<()> {
            if self.shape != expected {
                return Err($crate::Error::shape(op, expected, &self.shape));
            }
            Ok(())
        }

        pub fn expect_rank(&self, op: &'static str, rank: usize) -> $crate::Result<()> {
            if self.shape.len() != rank {
                return Err($crate::Error::shape(op, format!("rank {rank}"), &self.shape));
            }
            Ok(())
        }
    };
}

/// Row-major strides of a contiguous tensor of this shape.
pub fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * shape[i + 1];
    }
    strides
}

impl HostTensor {
    pub fn new(shape: impl Into<Vec<usize>>, data: Vec<f32>) -> Result<Self> {
        let shape = shape.into();
        if numel(&shape) != data.len() {
            return Err(Error::shape("HostTensor::new", numel(&shape), data.len()));
        }
        Ok(HostTensor { shape, data: Arc::new(data) })
    }

    /// A tensor over values another holder may share (no copy until written).
    pub(crate) fn from_shared(shape: Vec<usize>, data: Arc<Vec<f32>>) -> Result<Self> {
        if numel(&shape) != data.len() {
            return Err(Error::shape("HostTensor::from_shared", numel(&shape), data.len()));
        }
        Ok(HostTensor { shape, data })
    }

    /// The shared values (the CPU backend's storage).
    pub(crate) fn into_shared(self) -> Arc<Vec<f32>> {
        self.data
    }

    pub fn zeros(shape: impl Into<Vec<usize>>) -> Self {
        let shape = shape.into();
        let n = numel(&shape);
        HostTensor { shape, data: Arc::new(vec![0.0; n]) }
    }

    pub fn full(shape: impl Into<Vec<usize>>, value: f32) -> Self {
        let shape = shape.into();
        let n = numel(&shape);
        HostTensor { shape, data: Arc::new(vec![value; n]) }
    }

    crate::shape_accessors!();

    pub fn data(&self) -> &[f32] {
        &self.data
    }

    /// The values for writing (copied first when another holder shares them).
    pub fn data_mut(&mut self) -> &mut [f32] {
        Arc::make_mut(&mut self.data).as_mut_slice()
    }

    pub fn into_data(self) -> Vec<f32> {
        Arc::try_unwrap(self.data).unwrap_or_else(|shared| (*shared).clone())
    }

    pub fn reshape(mut self, shape: impl Into<Vec<usize>>) -> Result<Self> {
        let shape = shape.into();
        if numel(&shape) != self.data.len() {
            return Err(Error::shape("reshape", &self.shape, shape));
        }
        self.shape = shape;
        Ok(self)
    }

    /// Copies into a new layout with dims reordered (`out.dim(i) = self.dim(perm[i])`).
    pub fn permute(&self, perm: &[usize]) -> Result<Self> {
        let (data, shape) = layout::permute(&self.data, &self.shape, perm)?;
        Ok(HostTensor { shape, data: Arc::new(data) })
    }

    /// Copies the slice `start..start+len` of dimension `dim`.
    pub fn narrow(&self, dim: usize, start: usize, len: usize) -> Result<Self> {
        let data = layout::narrow(&self.data, &self.shape, dim, start, len)?;
        let mut shape = self.shape.clone();
        shape[dim] = len;
        Ok(HostTensor { shape, data: Arc::new(data) })
    }

    /// Concatenates along `dim`; all other dims must match.
    pub fn cat(tensors: &[&HostTensor], dim: usize) -> Result<Self> {
        let parts: Vec<&[f32]> = tensors.iter().map(|t| t.data()).collect();
        let shapes: Vec<&[usize]> = tensors.iter().map(|t| t.shape()).collect();
        let (data, shape) = layout::cat(&parts, &shapes, dim)?;
        Ok(HostTensor { shape, data: Arc::new(data) })
    }

    pub fn map(&self, f: impl Fn(f32) -> f32 + Sync) -> Self {
        HostTensor { shape: self.shape.clone(), data: Arc::new(self.data.iter().map(|&x| f(x)).collect()) }
    }

    pub fn map_inplace(&mut self, f: impl Fn(f32) -> f32 + Sync) {
        self.data_mut().iter_mut().for_each(|x| *x = f(*x));
    }

    /// Elementwise `f(self, other)` for tensors of equal shape.
    pub fn zip_map(&self, other: &HostTensor, op: &'static str, f: impl Fn(f32, f32) -> f32) -> Result<Self> {
        if self.shape != other.shape {
            return Err(Error::shape(op, &self.shape, &other.shape));
        }
        let data = self.data.iter().zip(other.data.iter()).map(|(&a, &b)| f(a, b)).collect();
        Ok(HostTensor { shape: self.shape.clone(), data: Arc::new(data) })
    }

    pub fn add(&self, other: &HostTensor) -> Result<Self> {
        self.zip_map(other, "add", |a, b| a + b)
    }

    pub fn sub(&self, other: &HostTensor) -> Result<Self> {
        self.zip_map(other, "sub", |a, b| a - b)
    }

    pub fn mul(&self, other: &HostTensor) -> Result<Self> {
        self.zip_map(other, "mul", |a, b| a * b)
    }

    pub fn add_assign(&mut self, other: &HostTensor) -> Result<()> {
        if self.shape != other.shape {
            return Err(Error::shape("add_assign", &self.shape, &other.shape));
        }
        let other = other.data.clone();
        self.data_mut().iter_mut().zip(other.iter()).for_each(|(a, &b)| *a += b);
        Ok(())
    }

    pub fn scale(&self, s: f32) -> Self {
        self.map(|x| x * s)
    }

    /// Adds `row` (shape [C]) to every row of a [.., C] tensor.
    pub fn add_row(&mut self, row: &[f32]) -> Result<()> {
        let c = *self.shape.last().unwrap_or(&0);
        if row.len() != c {
            return Err(Error::shape("add_row", c, row.len()));
        }
        self.data_mut().chunks_exact_mut(c).for_each(|r| r.iter_mut().zip(row).for_each(|(a, &b)| *a += b));
        Ok(())
    }

    /// Whether every value is finite (no NaN or ±∞).
    pub fn all_finite(&self) -> bool {
        use rayon::prelude::*;
        self.data.par_iter().all(|v| v.is_finite())
    }

    pub fn max_abs_diff(&self, other: &HostTensor) -> Result<f32> {
        if self.shape != other.shape {
            return Err(Error::shape("max_abs_diff", &self.shape, &other.shape));
        }
        Ok(self.data.iter().zip(other.data.iter()).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max))
    }

    /// Normalized mean squared error `mse(self, reference) / mse(reference, 0)`.
    pub fn nmse(&self, reference: &HostTensor) -> Result<f64> {
        if self.shape != reference.shape {
            return Err(Error::shape("nmse", &reference.shape, &self.shape));
        }
        let (mut err, mut norm) = (0f64, 0f64);
        for (&a, &b) in self.data.iter().zip(reference.data.iter()) {
            err += ((a - b) as f64).powi(2);
            norm += (b as f64).powi(2);
        }
        Ok(if norm == 0.0 { err } else { err / norm })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permute_matches_index_math() {
        let t = HostTensor::new([2, 3, 4], (0..24).map(|x| x as f32).collect()).unwrap();
        let p = t.permute(&[2, 0, 1]).unwrap();
        assert_eq!(p.shape(), &[4, 2, 3]);
        // p[k, i, j] = t[i, j, k] = 12 i + 4 j + k
        assert_eq!(p.data()[(3 * 2 + 1) * 3 + 2], (12 + 4 * 2 + 3) as f32);
    }

    #[test]
    fn narrow_and_cat_round_trip() {
        let t = HostTensor::new([2, 5, 3], (0..30).map(|x| x as f32).collect()).unwrap();
        let a = t.narrow(1, 0, 2).unwrap();
        let b = t.narrow(1, 2, 3).unwrap();
        assert_eq!(HostTensor::cat(&[&a, &b], 1).unwrap(), t);
    }

    #[test]
    fn bad_shapes_are_errors() {
        assert!(HostTensor::new([2, 2], vec![0.0; 3]).is_err());
        let t = HostTensor::zeros([2, 2]);
        assert!(t.permute(&[0, 0]).is_err());
        assert!(t.narrow(1, 1, 2).is_err());
    }
}
