//! Dense row-major f32 tensor.
//!
//! Storage is a plain `Vec<f32>` on the host. Model code only uses the methods
//! and the functions in [`crate::ops`], so a device backend can change what a
//! tensor holds without touching the models.

use crate::error::{Error, Result};

#[derive(Clone, PartialEq)]
pub struct Tensor {
    shape: Vec<usize>,
    data: Vec<f32>,
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor{:?}", self.shape)
    }
}

pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// Row-major strides of a contiguous tensor of this shape.
pub fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * shape[i + 1];
    }
    strides
}

impl Tensor {
    pub fn new(shape: impl Into<Vec<usize>>, data: Vec<f32>) -> Result<Self> {
        let shape = shape.into();
        if numel(&shape) != data.len() {
            return Err(Error::shape("Tensor::new", numel(&shape), data.len()));
        }
        Ok(Tensor { shape, data })
    }

    pub fn zeros(shape: impl Into<Vec<usize>>) -> Self {
        let shape = shape.into();
        let n = numel(&shape);
        Tensor { shape, data: vec![0.0; n] }
    }

    pub fn full(shape: impl Into<Vec<usize>>, value: f32) -> Self {
        let shape = shape.into();
        let n = numel(&shape);
        Tensor { shape, data: vec![value; n] }
    }

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
        self.data.len()
    }

    pub fn data(&self) -> &[f32] {
        &self.data
    }

    pub fn data_mut(&mut self) -> &mut [f32] {
        &mut self.data
    }

    pub fn into_data(self) -> Vec<f32> {
        self.data
    }

    /// Shape check helper for model code: errors name the op.
    pub fn expect_shape(&self, op: &'static str, expected: &[usize]) -> Result<()> {
        if self.shape != expected {
            return Err(Error::shape(op, expected, &self.shape));
        }
        Ok(())
    }

    pub fn expect_rank(&self, op: &'static str, rank: usize) -> Result<()> {
        if self.shape.len() != rank {
            return Err(Error::shape(op, format!("rank {rank}"), &self.shape));
        }
        Ok(())
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
        let rank = self.rank();
        let mut seen = vec![false; rank];
        if perm.len() != rank || perm.iter().any(|&p| p >= rank || std::mem::replace(&mut seen[p], true)) {
            return Err(Error::shape("permute", format!("a permutation of 0..{rank}"), perm));
        }
        let in_strides = contiguous_strides(&self.shape);
        let out_shape: Vec<usize> = perm.iter().map(|&p| self.shape[p]).collect();
        let strides: Vec<usize> = perm.iter().map(|&p| in_strides[p]).collect();
        let mut out = Vec::with_capacity(self.numel());
        gather_strided(&self.data, &out_shape, &strides, 0, &mut out);
        Ok(Tensor { shape: out_shape, data: out })
    }

    /// Copies the slice `start..start+len` of dimension `dim`.
    pub fn narrow(&self, dim: usize, start: usize, len: usize) -> Result<Self> {
        if dim >= self.rank() || start + len > self.shape[dim] {
            return Err(Error::shape("narrow", format!("dim {dim} range {start}..{}", start + len), &self.shape));
        }
        let outer: usize = self.shape[..dim].iter().product();
        let inner: usize = self.shape[dim + 1..].iter().product();
        let d = self.shape[dim];
        let mut out = Vec::with_capacity(outer * len * inner);
        for o in 0..outer {
            let base = (o * d + start) * inner;
            out.extend_from_slice(&self.data[base..base + len * inner]);
        }
        let mut shape = self.shape.clone();
        shape[dim] = len;
        Ok(Tensor { shape, data: out })
    }

    /// Concatenates along `dim`; all other dims must match.
    pub fn cat(tensors: &[&Tensor], dim: usize) -> Result<Self> {
        let first = tensors.first().ok_or_else(|| Error::Msg("cat of no tensors".into()))?;
        let rank = first.rank();
        for t in tensors {
            let same = t.rank() == rank
                && dim < rank
                && t.shape.iter().zip(&first.shape).enumerate().all(|(i, (a, b))| i == dim || a == b);
            if !same {
                return Err(Error::shape("cat", &first.shape, &t.shape));
            }
        }
        let outer: usize = first.shape[..dim].iter().product();
        let inner: usize = first.shape[dim + 1..].iter().product();
        let total: usize = tensors.iter().map(|t| t.shape[dim]).sum();
        let mut out = Vec::with_capacity(outer * total * inner);
        for o in 0..outer {
            for t in tensors {
                let chunk = t.shape[dim] * inner;
                out.extend_from_slice(&t.data[o * chunk..(o + 1) * chunk]);
            }
        }
        let mut shape = first.shape.clone();
        shape[dim] = total;
        Ok(Tensor { shape, data: out })
    }

    pub fn map(&self, f: impl Fn(f32) -> f32 + Sync) -> Self {
        Tensor { shape: self.shape.clone(), data: self.data.iter().map(|&x| f(x)).collect() }
    }

    pub fn map_inplace(&mut self, f: impl Fn(f32) -> f32 + Sync) {
        self.data.iter_mut().for_each(|x| *x = f(*x));
    }

    /// Elementwise `f(self, other)` for tensors of equal shape.
    pub fn zip_map(&self, other: &Tensor, op: &'static str, f: impl Fn(f32, f32) -> f32) -> Result<Self> {
        if self.shape != other.shape {
            return Err(Error::shape(op, &self.shape, &other.shape));
        }
        let data = self.data.iter().zip(&other.data).map(|(&a, &b)| f(a, b)).collect();
        Ok(Tensor { shape: self.shape.clone(), data })
    }

    pub fn add(&self, other: &Tensor) -> Result<Self> {
        self.zip_map(other, "add", |a, b| a + b)
    }

    pub fn sub(&self, other: &Tensor) -> Result<Self> {
        self.zip_map(other, "sub", |a, b| a - b)
    }

    pub fn mul(&self, other: &Tensor) -> Result<Self> {
        self.zip_map(other, "mul", |a, b| a * b)
    }

    pub fn add_assign(&mut self, other: &Tensor) -> Result<()> {
        if self.shape != other.shape {
            return Err(Error::shape("add_assign", &self.shape, &other.shape));
        }
        self.data.iter_mut().zip(&other.data).for_each(|(a, &b)| *a += b);
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
        self.data.chunks_exact_mut(c).for_each(|r| r.iter_mut().zip(row).for_each(|(a, &b)| *a += b));
        Ok(())
    }

    pub fn max_abs_diff(&self, other: &Tensor) -> Result<f32> {
        if self.shape != other.shape {
            return Err(Error::shape("max_abs_diff", &self.shape, &other.shape));
        }
        Ok(self.data.iter().zip(&other.data).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max))
    }

    /// Normalized mean squared error `mse(self, reference) / mse(reference, 0)`.
    pub fn nmse(&self, reference: &Tensor) -> Result<f64> {
        if self.shape != reference.shape {
            return Err(Error::shape("nmse", &reference.shape, &self.shape));
        }
        let (mut err, mut norm) = (0f64, 0f64);
        for (&a, &b) in self.data.iter().zip(&reference.data) {
            err += ((a - b) as f64).powi(2);
            norm += (b as f64).powi(2);
        }
        Ok(if norm == 0.0 { err } else { err / norm })
    }
}

fn gather_strided(src: &[f32], shape: &[usize], strides: &[usize], base: usize, out: &mut Vec<f32>) {
    match shape.len() {
        0 => out.push(src[base]),
        1 => {
            let s = strides[0];
            if s == 1 {
                out.extend_from_slice(&src[base..base + shape[0]]);
            } else {
                out.extend((0..shape[0]).map(|i| src[base + i * s]));
            }
        }
        _ => {
            for i in 0..shape[0] {
                gather_strided(src, &shape[1..], &strides[1..], base + i * strides[0], out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permute_matches_index_math() {
        let t = Tensor::new([2, 3, 4], (0..24).map(|x| x as f32).collect()).unwrap();
        let p = t.permute(&[2, 0, 1]).unwrap();
        assert_eq!(p.shape(), &[4, 2, 3]);
        // p[k, i, j] = t[i, j, k] = 12 i + 4 j + k
        assert_eq!(p.data()[(3 * 2 + 1) * 3 + 2], (12 + 4 * 2 + 3) as f32);
    }

    #[test]
    fn narrow_and_cat_round_trip() {
        let t = Tensor::new([2, 5, 3], (0..30).map(|x| x as f32).collect()).unwrap();
        let a = t.narrow(1, 0, 2).unwrap();
        let b = t.narrow(1, 2, 3).unwrap();
        assert_eq!(Tensor::cat(&[&a, &b], 1).unwrap(), t);
    }

    #[test]
    fn bad_shapes_are_errors() {
        assert!(Tensor::new([2, 2], vec![0.0; 3]).is_err());
        let t = Tensor::zeros([2, 2]);
        assert!(t.permute(&[0, 0]).is_err());
        assert!(t.narrow(1, 1, 2).is_err());
    }
}
