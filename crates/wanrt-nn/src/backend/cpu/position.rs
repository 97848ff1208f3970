//! Position encodings computed by the CPU backend: sinusoidal timestep features, Wan's 3D RoPE
//! tables, T5's relative position bias. Model code passes their parameters (scalars); nothing here
//! reads a tensor's values but the bias table.

use crate::backend::RelativeBuckets;
use crate::error::{Error, Result};
use crate::HostTensor;

/// diffusers' `get_timestep_embedding` in f32: `exponent = −ln(10000)·i / (half − shift)`,
/// `emb = t·exp(exponent)`, `[sin, cos]` (`[cos, sin]` when flipped), zero-padded to odd `dim`.
pub(crate) fn timestep_embedding(
    timesteps: &[f32],
    dim: usize,
    flip_sin_to_cos: bool,
    shift: f32,
) -> Result<HostTensor> {
    let half = dim / 2;
    if half == 0 || half as f32 - shift <= 0.0 {
        return Err(Error::Msg(format!("timestep embedding: dim {dim} with shift {shift} has no frequencies")));
    }
    let freqs: Vec<f32> = (0..half).map(|i| (-(10000f32.ln()) * i as f32 / (half as f32 - shift)).exp()).collect();
    type Wave = fn(f32) -> f32;
    let (first, second): (Wave, Wave) = if flip_sin_to_cos { (f32::cos, f32::sin) } else { (f32::sin, f32::cos) };
    let mut out = Vec::with_capacity(timesteps.len() * dim);
    for &t in timesteps {
        out.extend(freqs.iter().map(|&f| first(t * f)));
        out.extend(freqs.iter().map(|&f| second(t * f)));
        out.extend(std::iter::repeat_n(0.0, dim - 2 * half));
    }
    HostTensor::new([timesteps.len(), dim], out)
}

/// `cos, sin: [L, Σdims/2]` for a `grid` of tokens in (t, h, w) order, one head-dim part per axis;
/// `angle = pos / theta^(2i/dim)` in f64, rounded to f32 (diffusers' `get_1d_rotary_pos_embed`
/// with `use_real`, `repeat_interleave_real`).
pub(crate) fn rope_tables(grid: [usize; 3], dims: [usize; 3], theta: f64) -> Result<(HostTensor, HostTensor)> {
    if dims.iter().any(|d| d % 2 != 0) {
        return Err(Error::Msg(format!("rope: every axis needs an even number of dims, got {dims:?}")));
    }
    let axis_freqs: Vec<Vec<f64>> =
        dims.iter().map(|&d| (0..d / 2).map(|i| 1.0 / theta.powf((2 * i) as f64 / d as f64)).collect()).collect();
    let half: usize = dims.iter().sum::<usize>() / 2;
    let n = grid.iter().product::<usize>();
    let mut cos = Vec::with_capacity(n * half);
    let mut sin = Vec::with_capacity(n * half);
    for f in 0..grid[0] {
        for h in 0..grid[1] {
            for w in 0..grid[2] {
                for (axis, pos) in [f, h, w].into_iter().enumerate() {
                    for &freq in &axis_freqs[axis] {
                        let angle = pos as f64 * freq;
                        cos.push(angle.cos() as f32);
                        sin.push(angle.sin() as f32);
                    }
                }
            }
        }
    }
    Ok((HostTensor::new([n, half], cos)?, HostTensor::new([n, half], sin)?))
}

/// T5's relative-position bucket of `key − query` (f32 log as torch).
pub(crate) fn bucket(relative: i64, b: RelativeBuckets) -> usize {
    let (mut num_buckets, mut bucket) = (b.num_buckets, 0);
    let mut rel = relative;
    if b.bidirectional {
        num_buckets /= 2;
        if rel > 0 {
            bucket += num_buckets;
        }
        rel = rel.abs();
    } else {
        rel = (-rel).max(0);
    }
    let rel = rel as usize;
    let max_exact = num_buckets / 2;
    if rel < max_exact {
        bucket + rel
    } else {
        let ratio = (rel as f32 / max_exact as f32).ln() / ((b.max_distance as f64 / max_exact as f64).ln() as f32);
        let large = max_exact + (ratio * (num_buckets - max_exact) as f32) as usize;
        bucket + large.min(num_buckets - 1)
    }
}

/// `[H, L, L]` from `table: [buckets, H]`.
pub(crate) fn relative_position_bias(table: &HostTensor, len: usize, b: RelativeBuckets) -> Result<HostTensor> {
    let &[nb, h] = table.shape() else {
        return Err(Error::shape("relative position bias table", "[buckets, heads]", table.shape()));
    };
    if nb != b.num_buckets || nb < 4 || b.max_distance < 2 {
        return Err(Error::shape(
            "relative position bias table",
            format!("[{} buckets, H]", b.num_buckets),
            table.shape(),
        ));
    }
    let buckets: Vec<usize> = (0..len * len).map(|idx| bucket((idx % len) as i64 - (idx / len) as i64, b)).collect();
    let t = table.data();
    let mut out = vec![0.0; h * len * len];
    for hi in 0..h {
        for (idx, &bk) in buckets.iter().enumerate() {
            out[hi * len * len + idx] = t[bk * h + hi];
        }
    }
    HostTensor::new([h, len, len], out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_follow_t5() {
        let b = RelativeBuckets { num_buckets: 32, max_distance: 128, bidirectional: true };
        // Exact buckets for small distances, keys after the query in the upper half.
        assert_eq!(bucket(0, b), 0);
        assert_eq!(bucket(-3, b), 3);
        assert_eq!(bucket(3, b), 19);
        // Log-spaced beyond max_exact = 8, capped at the last bucket.
        assert_eq!(bucket(-1000, b), 15);
        assert_eq!(bucket(1000, b), 31);
    }

    #[test]
    fn rope_table_starts_at_zero_angle() {
        let (cos, sin) = rope_tables([2, 3, 4], [4, 4, 4], 10000.0).unwrap();
        assert_eq!(cos.shape(), &[24, 6]);
        assert!(cos.data()[..6].iter().all(|&c| c == 1.0) && sin.data()[..6].iter().all(|&s| s == 0.0));
    }
}
