//! Rotary position embedding on interleaved pairs `(x[2i], x[2i+1])`, the layout
//! of diffusers' `apply_rotary_emb` with `repeat_interleave_real=True`.

use crate::error::{Error, Result};
use crate::HostTensor;
use rayon::prelude::*;

/// Rotates `x: [B, L, H, D]` in place with per-position tables `cos, sin: [L, D/2]`.
pub fn apply_rope_interleaved(x: &mut HostTensor, cos: &[f32], sin: &[f32]) -> Result<()> {
    let &[_, l, h, d] = x.shape() else {
        return Err(Error::shape("rope input", "[B, L, H, D]", x.shape()));
    };
    if d % 2 != 0 || cos.len() != l * d / 2 || sin.len() != cos.len() {
        return Err(Error::shape("rope tables", [l, d / 2], cos.len()));
    }
    let half = d / 2;
    x.data_mut().par_chunks_mut(h * d).enumerate().for_each(|(row, tok)| {
        let pos = row % l;
        let (c, s) = (&cos[pos * half..(pos + 1) * half], &sin[pos * half..(pos + 1) * half]);
        for head in tok.chunks_exact_mut(d) {
            for i in 0..half {
                let (x1, x2) = (head[2 * i], head[2 * i + 1]);
                head[2 * i] = x1 * c[i] - x2 * s[i];
                head[2 * i + 1] = x1 * s[i] + x2 * c[i];
            }
        }
    });
    Ok(())
}
