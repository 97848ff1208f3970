//! Layout copies on row-major buffers of any element type: the CPU backend's `narrow`, `cat` and
//! `permute` (and [`crate::HostTensor`]'s, which share them).

use crate::error::{Error, Result};
use crate::host::contiguous_strides;

/// The slice `start..start + len` of dimension `dim` of `src: shape`.
pub fn narrow<T: Copy>(src: &[T], shape: &[usize], dim: usize, start: usize, len: usize) -> Result<Vec<T>> {
    if dim >= shape.len() || start.checked_add(len).is_none_or(|end| end > shape[dim]) {
        return Err(Error::shape("narrow", format!("dim {dim} range {start}..{}", start.saturating_add(len)), shape));
    }
    let outer: usize = shape[..dim].iter().product();
    let inner: usize = shape[dim + 1..].iter().product();
    let d = shape[dim];
    let mut out = Vec::with_capacity(outer * len * inner);
    for o in 0..outer {
        let base = (o * d + start) * inner;
        out.extend_from_slice(&src[base..base + len * inner]);
    }
    Ok(out)
}

/// Shape of the concatenation of `shapes` along `dim` (all other dims equal).
pub fn cat_shape(shapes: &[&[usize]], dim: usize) -> Result<Vec<usize>> {
    let first = shapes.first().ok_or_else(|| Error::Msg("cat of no tensors".into()))?;
    for s in shapes {
        let same = s.len() == first.len()
            && dim < first.len()
            && s.iter().zip(first.iter()).enumerate().all(|(i, (a, b))| i == dim || a == b);
        if !same {
            return Err(Error::shape("cat", first, s));
        }
    }
    let mut shape = first.to_vec();
    shape[dim] = shapes.iter().map(|s| s[dim]).sum();
    Ok(shape)
}

/// Concatenation of `parts` (with `shapes`) along `dim`.
pub fn cat<T: Copy>(parts: &[&[T]], shapes: &[&[usize]], dim: usize) -> Result<(Vec<T>, Vec<usize>)> {
    let shape = cat_shape(shapes, dim)?;
    let outer: usize = shape[..dim].iter().product();
    let inner: usize = shape[dim + 1..].iter().product();
    let mut out = Vec::with_capacity(outer * shape[dim] * inner);
    for o in 0..outer {
        for (p, s) in parts.iter().zip(shapes) {
            let chunk = s[dim] * inner;
            out.extend_from_slice(&p[o * chunk..(o + 1) * chunk]);
        }
    }
    Ok((out, shape))
}

/// Checks `perm` and returns the permuted shape.
pub fn permuted_shape(shape: &[usize], perm: &[usize]) -> Result<Vec<usize>> {
    let rank = shape.len();
    let mut seen = vec![false; rank];
    if perm.len() != rank || perm.iter().any(|&p| p >= rank || std::mem::replace(&mut seen[p], true)) {
        return Err(Error::shape("permute", format!("a permutation of 0..{rank}"), perm));
    }
    Ok(perm.iter().map(|&p| shape[p]).collect())
}

/// Copy of `src: shape` with dims reordered (`out.dim(i) = shape[perm[i]]`).
pub fn permute<T: Copy>(src: &[T], shape: &[usize], perm: &[usize]) -> Result<(Vec<T>, Vec<usize>)> {
    let out_shape = permuted_shape(shape, perm)?;
    let in_strides = contiguous_strides(shape);
    let strides: Vec<usize> = perm.iter().map(|&p| in_strides[p]).collect();
    let mut out = Vec::with_capacity(src.len());
    gather_strided(src, &out_shape, &strides, 0, &mut out);
    Ok((out, out_shape))
}

fn gather_strided<T: Copy>(src: &[T], shape: &[usize], strides: &[usize], base: usize, out: &mut Vec<T>) {
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
