//! 3D rotary position embedding of Wan: the head dimension is split into time/height/width parts,
//! each rotated by its own 1D position.
//!
//! Mirrors diffusers 0.42.1 `WanRotaryPosEmbed` (transformer_wan.py) with
//! `get_1d_rotary_pos_embed(use_real=True, repeat_interleave_real=True)`; the tables are built by
//! the backend ([`wanrt_nn::Backend::rope_tables`]) from this split.

/// Sizes of the (t, h, w) parts of a head: `h = w = 2·(d/6)`, `t` the rest.
pub fn split_dims(head_dim: usize) -> [usize; 3] {
    let hw = 2 * (head_dim / 6);
    [head_dim - 2 * hw, hw, hw]
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
}
