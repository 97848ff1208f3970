//! 3D/2D convolution as a sum of shifted GEMMs ("implicit GEMM").
//!
//! For every kernel offset, `W[:, :, dt, dh, dw] · X_shifted` is accumulated
//! into the output. Over a zero-padded input, output positions `h·Wp + w`
//! address the input linearly, so each shifted operand is a plain strided
//! matrix: no im2col buffer (which would be `C_in·k³ × positions`, gigabytes
//! for the Wan VAE at 480p). The few columns `w ≥ W_out` are computed and
//! dropped.

use super::matmul::{gemm_general, Layout};
use crate::error::{Error, Result};
use crate::HostTensor;

/// Zero padding of a 3D convolution; time may be padded asymmetrically
/// (Wan's causal convolutions pad only the front).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Padding3d {
    pub t_front: usize,
    pub t_back: usize,
    pub h: usize,
    pub w: usize,
}

/// Like [`Padding3d`] but spatial padding may differ per side (ZeroPad2d(0,1,0,1)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PaddingFull {
    pub t: (usize, usize),
    pub h: (usize, usize),
    pub w: (usize, usize),
}

impl From<Padding3d> for PaddingFull {
    fn from(p: Padding3d) -> Self {
        PaddingFull { t: (p.t_front, p.t_back), h: (p.h, p.h), w: (p.w, p.w) }
    }
}

/// `x: [N, C_in, T, H, W]`, `weight: [C_out, C_in, kt, kh, kw]` → `[N, C_out, T', H', W']`.
pub fn conv3d(
    x: &HostTensor,
    weight: &HostTensor,
    bias: Option<&[f32]>,
    stride: (usize, usize, usize),
    padding: impl Into<PaddingFull>,
) -> Result<HostTensor> {
    let pad = padding.into();
    let &[n, cin, t, h, w] = x.shape() else {
        return Err(Error::shape("conv3d input", "[N, C, T, H, W]", x.shape()));
    };
    let &[cout, wcin, kt, kh, kw] = weight.shape() else {
        return Err(Error::shape("conv3d weight", "[C_out, C_in, kt, kh, kw]", weight.shape()));
    };
    if wcin != cin {
        return Err(Error::shape("conv3d channels", wcin, cin));
    }
    if let Some(b) = bias {
        if b.len() != cout {
            return Err(Error::shape("conv3d bias", cout, b.len()));
        }
    }
    let (st, sh, sw) = stride;
    if st == 0 || sh == 0 || sw == 0 {
        return Err(Error::Msg("conv3d: stride must be positive".into()));
    }
    let (tp, hp, wp) = (t + pad.t.0 + pad.t.1, h + pad.h.0 + pad.h.1, w + pad.w.0 + pad.w.1);
    if tp < kt || hp < kh || wp < kw {
        return Err(Error::shape("conv3d padded input vs kernel", [kt, kh, kw], [tp, hp, wp]));
    }
    let (to, ho, wo) = ((tp - kt) / st + 1, (hp - kh) / sh + 1, (wp - kw) / sw + 1);
    let k3 = kt * kh * kw;
    let frame = hp * wp;
    let mut out = vec![0.0f32; n * cout * to * ho * wo];
    // Linear addressing of (h, w) output positions needs equal spatial strides.
    let linear = sh == sw;
    let cols = if linear { (ho - 1) * wp + wo } else { wo };
    let mut acc = vec![0.0f32; cout * cols];
    for ni in 0..n {
        let xp = pad_input(&x.data()[ni * cin * t * h * w..(ni + 1) * cin * t * h * w], cin, t, h, w, pad);
        for ot in 0..to {
            let rows_per_gemm = if linear { 1 } else { ho };
            for row_block in 0..rows_per_gemm {
                let mut first = true;
                for dt in 0..kt {
                    // Frames of pure (causal) zero padding contribute nothing.
                    let it = ot * st + dt;
                    if it < pad.t.0 || it >= pad.t.0 + t {
                        continue;
                    }
                    for dh in 0..kh {
                        for dw in 0..kw {
                            let ih = if linear { dh } else { row_block * sh + dh };
                            let base = it * frame + ih * wp + dw;
                            let off = (dt * kh + dh) * kw + dw;
                            gemm_general(
                                &mut acc,
                                cols,
                                &weight.data()[off..],
                                Layout { rs: cin * k3, cs: k3 },
                                &xp[base..],
                                Layout { rs: tp * frame, cs: sw },
                                cout,
                                cols,
                                cin,
                                !first,
                                false,
                            );
                            first = false;
                        }
                    }
                }
                if first {
                    acc.fill(0.0);
                }
                let dst = &mut out[ni * cout * to * ho * wo..];
                for co in 0..cout {
                    let b = bias.map_or(0.0, |b| b[co]);
                    let src = &acc[co * cols..(co + 1) * cols];
                    let plane = &mut dst[(co * to + ot) * ho * wo..(co * to + ot + 1) * ho * wo];
                    if linear {
                        for oh in 0..ho {
                            let s = &src[oh * wp..oh * wp + wo];
                            plane[oh * wo..(oh + 1) * wo].iter_mut().zip(s).for_each(|(d, &v)| *d = v + b);
                        }
                    } else {
                        plane[row_block * wo..(row_block + 1) * wo].iter_mut().zip(src).for_each(|(d, &v)| *d = v + b);
                    }
                }
            }
        }
    }
    HostTensor::new([n, cout, to, ho, wo], out)
}

/// `x: [N, C_in, H, W]`, `weight: [C_out, C_in, kh, kw]` → `[N, C_out, H', W']`.
pub fn conv2d(
    x: &HostTensor,
    weight: &HostTensor,
    bias: Option<&[f32]>,
    stride: (usize, usize),
    padding: ((usize, usize), (usize, usize)),
) -> Result<HostTensor> {
    let &[n, c, h, w] = x.shape() else {
        return Err(Error::shape("conv2d input", "[N, C, H, W]", x.shape()));
    };
    let &[co, ci, kh, kw] = weight.shape() else {
        return Err(Error::shape("conv2d weight", "[C_out, C_in, kh, kw]", weight.shape()));
    };
    let x5 = x.clone().reshape([n, c, 1, h, w])?;
    let w5 = weight.clone().reshape([co, ci, 1, kh, kw])?;
    let pad = PaddingFull { t: (0, 0), h: padding.0, w: padding.1 };
    let y = conv3d(&x5, &w5, bias, (1, stride.0, stride.1), pad)?;
    let (ho, wo) = (y.dim(3), y.dim(4));
    y.reshape([n, co, ho, wo])
}

fn pad_input(x: &[f32], c: usize, t: usize, h: usize, w: usize, pad: PaddingFull) -> Vec<f32> {
    let (tp, hp, wp) = (t + pad.t.0 + pad.t.1, h + pad.h.0 + pad.h.1, w + pad.w.0 + pad.w.1);
    if (tp, hp, wp) == (t, h, w) {
        return x.to_vec();
    }
    let mut out = vec![0.0f32; c * tp * hp * wp];
    for ci in 0..c {
        for ti in 0..t {
            for hi in 0..h {
                let src = &x[((ci * t + ti) * h + hi) * w..][..w];
                let dst = ((ci * tp + ti + pad.t.0) * hp + hi + pad.h.0) * wp + pad.w.0;
                out[dst..dst + w].copy_from_slice(src);
            }
        }
    }
    out
}

#[cfg(test)]
// Naive references index like the math they transcribe.
#[allow(clippy::needless_range_loop, clippy::type_complexity)]
mod tests {
    use super::*;

    #[allow(clippy::too_many_arguments)]
    fn naive(x: &HostTensor, wt: &HostTensor, bias: &[f32], s: (usize, usize, usize), pad: PaddingFull) -> HostTensor {
        let [n, ci, t, h, w] = x.shape().try_into().unwrap();
        let [co, _, kt, kh, kw] = wt.shape().try_into().unwrap();
        let (tp, hp, wp) = (t + pad.t.0 + pad.t.1, h + pad.h.0 + pad.h.1, w + pad.w.0 + pad.w.1);
        let (to, ho, wo) = ((tp - kt) / s.0 + 1, (hp - kh) / s.1 + 1, (wp - kw) / s.2 + 1);
        let mut out = HostTensor::zeros([n, co, to, ho, wo]);
        let at = |ni: usize, c: usize, tt: isize, hh: isize, ww: isize| -> f32 {
            if tt < 0 || hh < 0 || ww < 0 || tt >= t as isize || hh >= h as isize || ww >= w as isize {
                return 0.0;
            }
            x.data()[(((ni * ci + c) * t + tt as usize) * h + hh as usize) * w + ww as usize]
        };
        for ni in 0..n {
            for o in 0..co {
                for a in 0..to {
                    for b in 0..ho {
                        for cc in 0..wo {
                            let mut acc = bias[o];
                            for c in 0..ci {
                                for dt in 0..kt {
                                    for dh in 0..kh {
                                        for dw in 0..kw {
                                            let tt = (a * s.0 + dt) as isize - pad.t.0 as isize;
                                            let hh = (b * s.1 + dh) as isize - pad.h.0 as isize;
                                            let ww = (cc * s.2 + dw) as isize - pad.w.0 as isize;
                                            acc += at(ni, c, tt, hh, ww)
                                                * wt.data()[(((o * ci + c) * kt + dt) * kh + dh) * kw + dw];
                                        }
                                    }
                                }
                            }
                            out.data_mut()[(((ni * co + o) * to + a) * ho + b) * wo + cc] = acc;
                        }
                    }
                }
            }
        }
        out
    }

    fn gen(shape: &[usize], seed: usize) -> HostTensor {
        let n: usize = shape.iter().product();
        HostTensor::new(shape, (0..n).map(|i| (((i * 2654435761 + seed * 97) % 1000) as f32 / 500.0) - 1.0).collect())
            .unwrap()
    }

    #[test]
    fn conv3d_matches_naive_for_vae_like_cases() {
        let cases: &[(&[usize], &[usize], (usize, usize, usize), PaddingFull)] = &[
            (&[1, 3, 4, 6, 7], &[5, 3, 3, 3, 3], (1, 1, 1), PaddingFull { t: (2, 0), h: (1, 1), w: (1, 1) }),
            (&[2, 4, 3, 5, 5], &[6, 4, 1, 1, 1], (1, 1, 1), PaddingFull::default()),
            (&[1, 2, 5, 8, 9], &[3, 2, 3, 1, 1], (2, 1, 1), PaddingFull::default()),
            (&[1, 3, 1, 8, 9], &[4, 3, 1, 3, 3], (1, 2, 2), PaddingFull { t: (0, 0), h: (0, 1), w: (0, 1) }),
            (&[1, 2, 2, 7, 9], &[3, 2, 1, 3, 2], (1, 2, 1), PaddingFull { t: (0, 0), h: (1, 1), w: (0, 2) }),
        ];
        for (i, (xs, ws, s, p)) in cases.iter().enumerate() {
            let x = gen(xs, i);
            let wt = gen(ws, i + 10);
            let bias: Vec<f32> = (0..ws[0]).map(|j| j as f32 * 0.1).collect();
            let got = conv3d(&x, &wt, Some(&bias), *s, *p).unwrap();
            let want = naive(&x, &wt, &bias, *s, *p);
            assert_eq!(got.shape(), want.shape(), "case {i}");
            let err = got.max_abs_diff(&want).unwrap();
            assert!(err < 1e-4, "case {i}: max err {err}");
        }
    }
}
