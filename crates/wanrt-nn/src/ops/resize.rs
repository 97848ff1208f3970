//! Bilinear resize as `F.interpolate(x, size=…, mode="bilinear", align_corners=False,
//! antialias=False)` computes it on CPU (torch 2.15, `aten/src/ATen/native/UpSample.h`:
//! `area_pixel_compute_scale` / `area_pixel_compute_source_index`, f32 arithmetic).

use crate::error::{Error, Result};
use crate::HostTensor;
use rayon::prelude::*;

/// Nearest ×2 upsampling of the last two dimensions (`nearest` / `nearest-exact`
/// agree at an integer scale).
pub fn upsample_nearest2x(x: &HostTensor) -> Result<HostTensor> {
    if x.rank() < 2 {
        return Err(Error::shape("upsample_nearest2x", "[…, H, W]", x.shape()));
    }
    let r = x.rank();
    let (h, w) = (x.dim(r - 2), x.dim(r - 1));
    let mut shape = x.shape().to_vec();
    shape[r - 2] *= 2;
    shape[r - 1] *= 2;
    let mut out = vec![0f32; x.numel() * 4];
    out.par_chunks_mut(4 * h * w).zip(x.data().par_chunks(h * w)).for_each(|(o, plane)| {
        for (hi, orow) in o.chunks_exact_mut(2 * w).enumerate() {
            let row = &plane[(hi / 2) * w..(hi / 2 + 1) * w];
            orow.chunks_exact_mut(2).zip(row).for_each(|(pair, &v)| pair.fill(v));
        }
    });
    HostTensor::new(shape, out)
}

/// Per output index: (i0, i1, λ0, λ1) with source index clamped at 0 (torch's rule).
fn taps(input: usize, output: usize) -> Vec<(usize, usize, f32, f32)> {
    let scale = input as f32 / output as f32;
    (0..output)
        .map(|d| {
            let src = (scale * (d as f32 + 0.5) - 0.5).max(0.0);
            let i0 = (src as usize).min(input - 1);
            let i1 = if i0 < input - 1 { i0 + 1 } else { i0 };
            let l1 = src - i0 as f32;
            (i0, i1, 1.0 - l1, l1)
        })
        .collect()
}

/// `x: [N, C, H, W]` → `[N, C, out_h, out_w]`, bilinear, `align_corners=False`.
pub fn resize_bilinear(x: &HostTensor, out_h: usize, out_w: usize) -> Result<HostTensor> {
    let &[n, c, h, w] = x.shape() else {
        return Err(Error::shape("resize_bilinear", "[N, C, H, W]", x.shape()));
    };
    if h == 0 || w == 0 || out_h == 0 || out_w == 0 {
        return Err(Error::Msg(format!("resize_bilinear: cannot resize {h}x{w} to {out_h}x{out_w}")));
    }
    let th = taps(h, out_h);
    let tw = taps(w, out_w);
    let mut out = vec![0.0f32; n * c * out_h * out_w];
    let src = x.data();
    out.par_chunks_mut(out_h * out_w).enumerate().for_each(|(p, dst)| {
        let xs = &src[p * h * w..(p + 1) * h * w];
        for (oy, &(y0, y1, a0, a1)) in th.iter().enumerate() {
            let r0 = &xs[y0 * w..(y0 + 1) * w];
            let r1 = &xs[y1 * w..(y1 + 1) * w];
            for (ox, &(x0, x1, b0, b1)) in tw.iter().enumerate() {
                dst[oy * out_w + ox] = a0 * (b0 * r0[x0] + b1 * r0[x1]) + a1 * (b0 * r1[x0] + b1 * r1[x1]);
            }
        }
    });
    HostTensor::new([n, c, out_h, out_w], out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_and_upsample_match_torch() {
        let x = HostTensor::new([1, 1, 2, 2], vec![0.0, 1.0, 2.0, 3.0]).unwrap();
        assert_eq!(resize_bilinear(&x, 2, 2).unwrap().data(), x.data());
        // torch: F.interpolate(x, size=(4, 4), mode="bilinear", align_corners=False)[0,0,0]
        let y = resize_bilinear(&x, 4, 4).unwrap();
        assert_eq!(&y.data()[..4], &[0.0, 0.25, 0.75, 1.0]);
    }
}
