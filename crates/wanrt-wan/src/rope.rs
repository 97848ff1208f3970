//! 3D rotary position embedding of Wan: the head dimension is split into
//! time/height/width parts, each rotated by its own 1D position.
//!
//! Mirrors diffusers 0.42.1 `WanRotaryPosEmbed` (transformer_wan.py) with
//! `get_1d_rotary_pos_embed(use_real=True, repeat_interleave_real=True)`;
//! angles are computed in f64 and rounded to f32 as diffusers does.

/// Per-token `cos`/`sin` tables, `[L, head_dim/2]` (one value per rotated pair).
pub struct RopeTables {
    pub cos: Vec<f32>,
    pub sin: Vec<f32>,
}

/// Sizes of the (t, h, w) parts of a head: `h = w = 2·(d/6)`, `t` the rest.
pub fn split_dims(head_dim: usize) -> [usize; 3] {
    let hw = 2 * (head_dim / 6);
    [head_dim - 2 * hw, hw, hw]
}

/// Tables for a `frames × height × width` token grid (after patching).
pub fn rope_tables(head_dim: usize, grid: [usize; 3], theta: f64) -> RopeTables {
    let dims = split_dims(head_dim);
    // Per axis: angle[pos][i] = pos / theta^(2i/dim).
    let axis_freqs: Vec<Vec<f64>> =
        dims.iter().map(|&d| (0..d / 2).map(|i| 1.0 / theta.powf((2 * i) as f64 / d as f64)).collect()).collect();
    let half = head_dim / 2;
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
    RopeTables { cos, sin }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_matches_diffusers() {
        assert_eq!(split_dims(128), [44, 42, 42]);
        assert_eq!(split_dims(12), [4, 4, 4]);
        assert_eq!(split_dims(18), [6, 6, 6]);
    }

    #[test]
    fn tables_cover_every_pair() {
        let t = rope_tables(12, [2, 3, 4], 10000.0);
        assert_eq!(t.cos.len(), 24 * 6);
        // Token (0,0,0) has angle 0 everywhere.
        assert!(t.cos[..6].iter().all(|&c| c == 1.0));
    }
}
