//! 2D/3D max and average pooling, mirroring `torch.nn.functional.{max,avg}_pool{2,3}d`
//! (torch 2.15, `ceil_mode=False`): max pooling pads with −∞; average pooling divides by
//! the window size (`count_include_pad=True`) or by the number of unpadded elements
//! (`count_include_pad=False`, TensorFlow's convention that pytorch-fid's FID Inception
//! and I3D's "same" pooling rely on).

use crate::error::{Error, Result};
use crate::HostTensor;
use rayon::prelude::*;

/// Pooling window: kernel, stride and symmetric zero/−∞ padding per spatial axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool3d {
    pub kernel: (usize, usize, usize),
    pub stride: (usize, usize, usize),
    /// (front, back) padding per axis.
    pub pad: ((usize, usize), (usize, usize), (usize, usize)),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Max,
    Avg { count_include_pad: bool },
}

fn out_len(n: usize, k: usize, s: usize, p: (usize, usize)) -> Option<usize> {
    let np = n + p.0 + p.1;
    if k == 0 || s == 0 || np < k {
        return None;
    }
    Some((np - k) / s + 1)
}

fn pool3d_impl(x: &HostTensor, p: Pool3d, kind: Kind, op: &'static str) -> Result<HostTensor> {
    let &[n, c, t, h, w] = x.shape() else {
        return Err(Error::shape(op, "[N, C, T, H, W]", x.shape()));
    };
    let (kt, kh, kw) = p.kernel;
    let (st, sh, sw) = p.stride;
    let (Some(to), Some(ho), Some(wo)) =
        (out_len(t, kt, st, p.pad.0), out_len(h, kh, sh, p.pad.1), out_len(w, kw, sw, p.pad.2))
    else {
        return Err(Error::Msg(format!(
            "{op}: window {:?} stride {:?} does not fit input {:?} padded by {:?}",
            p.kernel,
            p.stride,
            [t, h, w],
            p.pad
        )));
    };
    let plane_in = t * h * w;
    let plane_out = to * ho * wo;
    let mut out = vec![0.0f32; n * c * plane_out];
    let src = x.data();
    out.par_chunks_mut(plane_out).enumerate().for_each(|(nc, dst)| {
        let xs = &src[nc * plane_in..(nc + 1) * plane_in];
        for ot in 0..to {
            let t0 = (ot * st) as isize - p.pad.0 .0 as isize;
            let (ta, tb) = (t0.max(0) as usize, ((t0 + kt as isize).min(t as isize)) as usize);
            for oh in 0..ho {
                let h0 = (oh * sh) as isize - p.pad.1 .0 as isize;
                let (ha, hb) = (h0.max(0) as usize, ((h0 + kh as isize).min(h as isize)) as usize);
                for ow in 0..wo {
                    let w0 = (ow * sw) as isize - p.pad.2 .0 as isize;
                    let (wa, wb) = (w0.max(0) as usize, ((w0 + kw as isize).min(w as isize)) as usize);
                    let v = match kind {
                        Kind::Max => {
                            let mut m = f32::NEG_INFINITY;
                            for tt in ta..tb {
                                for hh in ha..hb {
                                    for &v in &xs[(tt * h + hh) * w + wa..(tt * h + hh) * w + wb] {
                                        // NaN propagates, as torch's max pooling does
                                        if v > m || v.is_nan() {
                                            m = v;
                                        }
                                    }
                                }
                            }
                            m
                        }
                        Kind::Avg { count_include_pad } => {
                            let mut s = 0.0f32;
                            for tt in ta..tb {
                                for hh in ha..hb {
                                    for &v in &xs[(tt * h + hh) * w + wa..(tt * h + hh) * w + wb] {
                                        s += v;
                                    }
                                }
                            }
                            let count = if count_include_pad {
                                // torch counts the window clipped to the padded input
                                let te = (t0 + kt as isize).min((t + p.pad.0 .1) as isize);
                                let he = (h0 + kh as isize).min((h + p.pad.1 .1) as isize);
                                let we = (w0 + kw as isize).min((w + p.pad.2 .1) as isize);
                                ((te - t0) * (he - h0) * (we - w0)) as usize
                            } else {
                                (tb - ta) * (hb - ha) * (wb - wa)
                            };
                            s / count.max(1) as f32
                        }
                    };
                    dst[(ot * ho + oh) * wo + ow] = v;
                }
            }
        }
    });
    HostTensor::new([n, c, to, ho, wo], out)
}

/// `x: [N, C, T, H, W]` → max over each window (padding never wins).
pub fn max_pool3d(x: &HostTensor, p: Pool3d) -> Result<HostTensor> {
    pool3d_impl(x, p, Kind::Max, "max_pool3d")
}

/// `x: [N, C, T, H, W]` → mean over each window.
pub fn avg_pool3d(x: &HostTensor, p: Pool3d, count_include_pad: bool) -> Result<HostTensor> {
    pool3d_impl(x, p, Kind::Avg { count_include_pad }, "avg_pool3d")
}

fn as3d(x: &HostTensor, op: &'static str) -> Result<HostTensor> {
    let &[n, c, h, w] = x.shape() else {
        return Err(Error::shape(op, "[N, C, H, W]", x.shape()));
    };
    x.clone().reshape([n, c, 1, h, w])
}

fn pool2d(kernel: usize, stride: usize, pad: usize) -> Pool3d {
    Pool3d { kernel: (1, kernel, kernel), stride: (1, stride, stride), pad: ((0, 0), (pad, pad), (pad, pad)) }
}

fn squeeze_t(y: HostTensor) -> Result<HostTensor> {
    let s = y.shape().to_vec();
    y.reshape([s[0], s[1], s[3], s[4]])
}

/// `F.max_pool2d(x, kernel, stride, padding)` for `x: [N, C, H, W]`.
pub fn max_pool2d(x: &HostTensor, kernel: usize, stride: usize, padding: usize) -> Result<HostTensor> {
    squeeze_t(max_pool3d(&as3d(x, "max_pool2d")?, pool2d(kernel, stride, padding))?)
}

/// `F.avg_pool2d(x, kernel, stride, padding, count_include_pad=…)` for `x: [N, C, H, W]`.
pub fn avg_pool2d(
    x: &HostTensor,
    kernel: usize,
    stride: usize,
    padding: usize,
    count_include_pad: bool,
) -> Result<HostTensor> {
    squeeze_t(avg_pool3d(&as3d(x, "avg_pool2d")?, pool2d(kernel, stride, padding), count_include_pad)?)
}

/// Global average over every axis after the first two: `[N, C, …]` → `[N, C]`
/// (`adaptive_avg_pool{2,3}d(x, 1)` flattened). Accumulates in f64.
pub fn global_avg_pool(x: &HostTensor) -> Result<HostTensor> {
    if x.rank() < 3 {
        return Err(Error::shape("global_avg_pool", "[N, C, ...]", x.shape()));
    }
    let (n, c) = (x.dim(0), x.dim(1));
    let plane = x.numel() / (n * c).max(1);
    let out = x
        .data()
        .chunks(plane.max(1))
        .map(|p| (p.iter().map(|&v| v as f64).sum::<f64>() / plane as f64) as f32)
        .collect();
    HostTensor::new([n, c], out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn avg_pool_excludes_padding_when_asked() {
        let x = HostTensor::new([1, 1, 2, 2], vec![1.0, 2.0, 3.0, 4.0]).unwrap();
        let y = avg_pool2d(&x, 3, 1, 1, false).unwrap();
        assert_eq!(y.data(), &[2.5, 2.5, 2.5, 2.5]);
        let y = avg_pool2d(&x, 3, 1, 1, true).unwrap();
        assert!((y.data()[0] - 10.0 / 9.0).abs() < 1e-6);
        let m = max_pool2d(&x, 3, 1, 1).unwrap();
        assert_eq!(m.data(), &[4.0, 4.0, 4.0, 4.0]);
        let m = max_pool2d(&x, 2, 2, 0).unwrap();
        assert_eq!(m.data(), &[4.0]);
    }
}
