//! Winograd F(2×2, 3×3) for stride-1 conv3d with 3×3 spatial taps (Lavin & Gray 2016,
//! "Fast Algorithms for Convolutional Neural Networks").
//!
//! Every 2×2 block of outputs ("tile") is `Aᵀ [Σ U ⊙ V] A` with `U = G g Gᵀ` the 4×4
//! transformed 3×3 kernel and `V = Bᵀ d B` the transformed 4×4 input patch: 16
//! multiplies per tile and input channel instead of 36. Summed over input channels
//! and time taps, each of the 16 Winograd points is one GEMM
//! `[C_out × kt·C_in] · [kt·C_in × tiles]`; time taps are consecutive frames of the
//! transformed input, so one frame's transform serves every output frame that reads it.
//! The transforms use only ±1 and ½ (exact in f32); results differ from the direct
//! convolution by rounding only (relative ~1e-6 for the VAE's shapes).
//!
//! Work is split into strips of tile rows (and output-channel blocks when a frame has
//! few strips), each strip transformed, multiplied and transformed back by one thread
//! in reused per-thread scratch, so the working set stays cache-sized.

use super::conv::PaddingFull;
use super::SyncPtr;
use crate::error::{Error, Result};
use crate::Tensor;
use gemm::Parallelism;
use rayon::prelude::*;
use std::cell::RefCell;

/// Target tiles per strip: the GEMMs' N; big enough to amortise the weight reads.
const STRIP_TILES: usize = 256;

/// Conv3d weights `[C_out, C_in, kt, 3, 3]` in the Winograd domain, transformed once.
pub struct WinogradConv3d {
    cout: usize,
    cin: usize,
    kt: usize,
    /// Per Winograd point `e`: a column-major `C_out × (kt·C_in)` matrix,
    /// element `(co, dt·C_in + ci)` at `e·K·C_out + (dt·C_in + ci)·C_out + co`.
    u: Vec<f32>,
}

thread_local! {
    static SCRATCH: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

fn grow(buf: &mut Vec<f32>, len: usize) {
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
}

impl WinogradConv3d {
    /// Whether a conv with this weight shape and stride can run here.
    pub fn supports(weight_shape: &[usize], stride: (usize, usize, usize)) -> bool {
        matches!(weight_shape, &[_, _, _, 3, 3]) && stride == (1, 1, 1)
    }

    /// Transforms `weight: [C_out, C_in, kt, 3, 3]` (`U = G g Gᵀ`, in f64, rounded once).
    pub fn new(weight: &Tensor) -> Result<Self> {
        let &[cout, cin, kt, 3, 3] = weight.shape() else {
            return Err(Error::shape("winograd conv3d weight", "[C_out, C_in, kt, 3, 3]", weight.shape()));
        };
        const G: [[f64; 3]; 4] = [[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]];
        let k = kt * cin;
        let mut u = vec![0f32; 16 * k * cout];
        let w = weight.data();
        for co in 0..cout {
            for ci in 0..cin {
                for dt in 0..kt {
                    let g = &w[((co * cin + ci) * kt + dt) * 9..][..9];
                    // t = G g (4×3), then t Gᵀ (4×4).
                    let mut t = [[0f64; 3]; 4];
                    for (r, gr) in G.iter().enumerate() {
                        for c in 0..3 {
                            t[r][c] = (0..3).map(|j| gr[j] * g[j * 3 + c] as f64).sum();
                        }
                    }
                    for r in 0..4 {
                        for (c, gc) in G.iter().enumerate() {
                            let v: f64 = (0..3).map(|j| t[r][j] * gc[j]).sum();
                            u[(r * 4 + c) * k * cout + (dt * cin + ci) * cout + co] = v as f32;
                        }
                    }
                }
            }
        }
        Ok(WinogradConv3d { cout, cin, kt, u })
    }

    pub fn out_channels(&self) -> usize {
        self.cout
    }

    /// `x: [N, C_in, T, H, W]` → `[N, C_out, T', H', W']`, stride 1, zero padding `pad`.
    pub fn forward(&self, x: &Tensor, bias: Option<&[f32]>, pad: PaddingFull) -> Result<Tensor> {
        let &[n, cin, t, h, w] = x.shape() else {
            return Err(Error::shape("conv3d input", "[N, C, T, H, W]", x.shape()));
        };
        if cin != self.cin {
            return Err(Error::shape("conv3d channels", self.cin, cin));
        }
        if let Some(b) = bias {
            if b.len() != self.cout {
                return Err(Error::shape("conv3d bias", self.cout, b.len()));
            }
        }
        let (tp, hp, wp) = (t + pad.t.0 + pad.t.1, h + pad.h.0 + pad.h.1, w + pad.w.0 + pad.w.1);
        if tp < self.kt || hp < 3 || wp < 3 {
            return Err(Error::shape("conv3d padded input vs kernel", [self.kt, 3, 3], [tp, hp, wp]));
        }
        let (to, ho, wo) = (tp - self.kt + 1, hp - 2, wp - 2);
        let (th, tw) = (ho.div_ceil(2), wo.div_ceil(2));
        let cout = self.cout;
        let mut out = vec![0f32; n * cout * to * ho * wo];

        let strip_rows = (STRIP_TILES / tw).clamp(1, th);
        let strips = th.div_ceil(strip_rows);
        let threads = super::num_threads();
        // Output-channel blocks (multiples of 16) only when strips alone can't feed the threads.
        let mut co_splits = 1;
        while n * strips * co_splits < 2 * threads && cout / (2 * co_splits) >= 32 {
            co_splits *= 2;
        }
        let co_blk = cout.div_ceil(co_splits).div_ceil(16) * 16;
        let co_splits = cout.div_ceil(co_blk);
        let geo = Geometry { t, h, w, pad, to, ho, wo, tw };
        let dst = SyncPtr(out.as_mut_ptr());
        let tasks: Vec<(usize, usize, usize)> =
            (0..n).flat_map(|ni| (0..strips).flat_map(move |s| (0..co_splits).map(move |c| (ni, s, c)))).collect();
        let xd = x.data();
        let run = |&(ni, s, c): &(usize, usize, usize)| {
            let rows = (s * strip_rows, ((s + 1) * strip_rows).min(th));
            let cos = (c * co_blk, ((c + 1) * co_blk).min(cout));
            let xs = &xd[ni * cin * t * h * w..(ni + 1) * cin * t * h * w];
            // SAFETY: each task writes only its own (image, tile rows, channel block) outputs.
            unsafe { self.strip(xs, bias, &geo, rows, cos, dst.get().add(ni * cout * to * ho * wo)) };
        };
        if tasks.len() > 1 && threads > 1 {
            tasks.par_iter().for_each(run);
        } else {
            tasks.iter().for_each(run);
        }
        Tensor::new([n, cout, to, ho, wo], out)
    }

    /// One strip of tile rows `rows` and output channels `cos` of one image.
    ///
    /// # Safety
    /// `out` is the image's `[C_out, T', H', W']` output; no other thread writes the
    /// strip's rows of channels `cos`.
    unsafe fn strip(
        &self,
        x: &[f32],
        bias: Option<&[f32]>,
        g: &Geometry,
        rows: (usize, usize),
        cos: (usize, usize),
        out: *mut f32,
    ) {
        let (cin, cout, kt) = (self.cin, self.cout, self.kt);
        let k_all = kt * cin;
        let nt = (rows.1 - rows.0) * g.tw;
        let cb = cos.1 - cos.0;
        SCRATCH.with(|s| {
            let (v, m) = &mut *s.borrow_mut();
            grow(v, 16 * g.t * cin * nt);
            grow(m, 16 * cb * nt);
            input_transform(x, cin, g, rows, &mut v[..16 * g.t * cin * nt]);
            let frame_len = cin * nt;
            for ot in 0..g.to {
                // Time taps over real frames only: causal zero padding contributes nothing.
                let dt0 = g.pad.t.0.saturating_sub(ot);
                let dt1 = kt.min((g.pad.t.0 + g.t).saturating_sub(ot));
                if dt0 < dt1 {
                    let f0 = ot + dt0 - g.pad.t.0;
                    let kk = (dt1 - dt0) * cin;
                    for e in 0..16 {
                        let lhs = self.u.as_ptr().add(e * k_all * cout + dt0 * cin * cout + cos.0);
                        let rhs = v.as_ptr().add(e * g.t * frame_len + f0 * frame_len);
                        gemm::gemm(
                            cb,
                            nt,
                            kk,
                            m.as_mut_ptr().add(e * cb * nt),
                            1,
                            nt as isize,
                            false,
                            lhs,
                            cout as isize,
                            1,
                            rhs,
                            1,
                            nt as isize,
                            0.0,
                            1.0,
                            false,
                            false,
                            false,
                            Parallelism::None,
                        );
                    }
                } else {
                    m[..16 * cb * nt].fill(0.0);
                }
                output_transform(&m[..16 * cb * nt], bias, g, rows, cos, ot, out);
            }
        });
    }
}

struct Geometry {
    t: usize,
    h: usize,
    w: usize,
    pad: PaddingFull,
    to: usize,
    ho: usize,
    wo: usize,
    tw: usize,
}

/// `v[e][frame][ci][tile]` = `Bᵀ d B` of every 4×4 input patch of the strip.
#[allow(clippy::needless_range_loop)] // indexes like the transform's matrices
fn input_transform(x: &[f32], cin: usize, g: &Geometry, rows: (usize, usize), v: &mut [f32]) {
    let nt = (rows.1 - rows.0) * g.tw;
    let e_stride = g.t * cin * nt;
    let blen = 2 * g.tw + 2;
    let mut buf = vec![0f32; 4 * blen];
    for f in 0..g.t {
        for ci in 0..cin {
            let plane = &x[(ci * g.t + f) * g.h * g.w..][..g.h * g.w];
            let base = (f * cin + ci) * nt;
            for i in rows.0..rows.1 {
                // Zero-padded input rows 2i..2i+4 of this tile row.
                for a in 0..4 {
                    let row = &mut buf[a * blen..(a + 1) * blen];
                    row.fill(0.0);
                    let ph = 2 * i + a;
                    if ph >= g.pad.h.0 && ph - g.pad.h.0 < g.h {
                        let src = &plane[(ph - g.pad.h.0) * g.w..][..g.w];
                        let len = g.w.min(blen.saturating_sub(g.pad.w.0));
                        row[g.pad.w.0..g.pad.w.0 + len].copy_from_slice(&src[..len]);
                    }
                }
                let (r0, rest) = buf.split_at(blen);
                let (r1, rest) = rest.split_at(blen);
                let (r2, r3) = rest.split_at(blen);
                let o = base + (i - rows.0) * g.tw;
                for j in 0..g.tw {
                    let c = 2 * j;
                    let d = |r: &[f32]| [r[c], r[c + 1], r[c + 2], r[c + 3]];
                    let (d0, d1, d2, d3) = (d(r0), d(r1), d(r2), d(r3));
                    // s = Bᵀ d (rows), then v = s B (columns).
                    let mut s = [[0f32; 4]; 4];
                    for q in 0..4 {
                        s[0][q] = d0[q] - d2[q];
                        s[1][q] = d1[q] + d2[q];
                        s[2][q] = d2[q] - d1[q];
                        s[3][q] = d1[q] - d3[q];
                    }
                    for (r, sr) in s.iter().enumerate() {
                        let e = r * 4;
                        v[e * e_stride + o + j] = sr[0] - sr[2];
                        v[(e + 1) * e_stride + o + j] = sr[1] + sr[2];
                        v[(e + 2) * e_stride + o + j] = sr[2] - sr[1];
                        v[(e + 3) * e_stride + o + j] = sr[1] - sr[3];
                    }
                }
            }
        }
    }
}

/// `out[co][ot]` tiles of the strip = `Aᵀ m A` + bias, clipped to the output size.
///
/// # Safety
/// As [`WinogradConv3d::strip`].
#[allow(clippy::needless_range_loop)] // indexes like the transform's matrices
unsafe fn output_transform(
    m: &[f32],
    bias: Option<&[f32]>,
    g: &Geometry,
    rows: (usize, usize),
    cos: (usize, usize),
    ot: usize,
    out: *mut f32,
) {
    let nt = (rows.1 - rows.0) * g.tw;
    let cb = cos.1 - cos.0;
    let e_stride = cb * nt;
    for co in cos.0..cos.1 {
        let b = bias.map_or(0.0, |b| b[co]);
        let plane = out.add((co * g.to + ot) * g.ho * g.wo);
        let mrow = (co - cos.0) * nt;
        for i in rows.0..rows.1 {
            for j in 0..g.tw {
                let n = mrow + (i - rows.0) * g.tw + j;
                let p = |e: usize| m[e * e_stride + n];
                // t = Aᵀ m (2×4), y = t A (2×2).
                let mut t = [[0f32; 4]; 2];
                for q in 0..4 {
                    t[0][q] = p(q) + p(4 + q) + p(8 + q);
                    t[1][q] = p(4 + q) - p(8 + q) - p(12 + q);
                }
                for (a, ta) in t.iter().enumerate() {
                    let oh = 2 * i + a;
                    if oh >= g.ho {
                        break;
                    }
                    let y = [ta[0] + ta[1] + ta[2], ta[1] - ta[2] - ta[3]];
                    for (bb, &yv) in y.iter().enumerate() {
                        let ow = 2 * j + bb;
                        if ow < g.wo {
                            *plane.add(oh * g.wo + ow) = yv + b;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::conv3d;

    fn gen(shape: &[usize], seed: usize) -> Tensor {
        let n: usize = shape.iter().product();
        Tensor::new(shape, (0..n).map(|i| (((i * 2654435761 + seed * 97) % 1000) as f32 / 500.0) - 1.0).collect())
            .unwrap()
    }

    /// Direct definition, independent of both fast paths.
    fn naive(x: &Tensor, wt: &Tensor, bias: &[f32], pad: PaddingFull) -> Tensor {
        let [n, ci, t, h, w]: [usize; 5] = x.shape().try_into().unwrap();
        let [co, _, kt, kh, kw]: [usize; 5] = wt.shape().try_into().unwrap();
        let (to, ho, wo) =
            (t + pad.t.0 + pad.t.1 - kt + 1, h + pad.h.0 + pad.h.1 - kh + 1, w + pad.w.0 + pad.w.1 - kw + 1);
        let mut out = vec![0f32; n * co * to * ho * wo];
        for ni in 0..n {
            for o in 0..co {
                for a in 0..to {
                    for b in 0..ho {
                        for c in 0..wo {
                            let mut acc = bias[o] as f64;
                            for cc in 0..ci {
                                for dt in 0..kt {
                                    for dh in 0..kh {
                                        for dw in 0..kw {
                                            let (tt, hh, ww) = (a + dt, b + dh, c + dw);
                                            if tt < pad.t.0 || hh < pad.h.0 || ww < pad.w.0 {
                                                continue;
                                            }
                                            let (tt, hh, ww) = (tt - pad.t.0, hh - pad.h.0, ww - pad.w.0);
                                            if tt >= t || hh >= h || ww >= w {
                                                continue;
                                            }
                                            let xv = x.data()[(((ni * ci + cc) * t + tt) * h + hh) * w + ww];
                                            let wv = wt.data()[(((o * ci + cc) * kt + dt) * kh + dh) * kw + dw];
                                            acc += xv as f64 * wv as f64;
                                        }
                                    }
                                }
                            }
                            out[(((ni * co + o) * to + a) * ho + b) * wo + c] = acc as f32;
                        }
                    }
                }
            }
        }
        Tensor::new([n, co, to, ho, wo], out).unwrap()
    }

    #[test]
    fn winograd_matches_naive_on_odd_shapes() {
        let p = |t: (usize, usize), h: (usize, usize), w: (usize, usize)| PaddingFull { t, h, w };
        let cases: &[(&[usize], usize, usize, PaddingFull)] = &[
            // (x shape, C_out, kt, padding)
            (&[1, 3, 4, 6, 7], 5, 3, p((2, 0), (1, 1), (1, 1))),
            (&[2, 5, 2, 9, 5], 17, 3, p((2, 0), (1, 1), (1, 1))),
            (&[1, 4, 1, 7, 8], 33, 3, p((2, 0), (1, 1), (1, 1))),
            (&[1, 6, 3, 5, 11], 7, 1, p((0, 0), (0, 1), (2, 0))),
            (&[1, 2, 5, 4, 4], 3, 2, p((1, 1), (0, 0), (0, 0))),
            (&[1, 19, 2, 13, 3], 40, 3, p((1, 0), (1, 2), (1, 1))),
        ];
        for (i, &(xs, co, kt, pad)) in cases.iter().enumerate() {
            let x = gen(xs, i);
            let wt = gen(&[co, xs[1], kt, 3, 3], i + 10);
            let bias: Vec<f32> = (0..co).map(|j| j as f32 * 0.1 - 0.3).collect();
            let wc = WinogradConv3d::new(&wt).unwrap();
            let got = wc.forward(&x, Some(&bias), pad).unwrap();
            let want = naive(&x, &wt, &bias, pad);
            assert_eq!(got.shape(), want.shape(), "case {i}");
            let err = got.max_abs_diff(&want).unwrap();
            assert!(err < 2e-4, "case {i}: max err {err}");
            let direct = conv3d(&x, &wt, Some(&bias), (1, 1, 1), pad).unwrap();
            assert!(got.max_abs_diff(&direct).unwrap() < 2e-4, "case {i} vs conv3d");
        }
    }

    /// Process CPU seconds (user + system) from /proc/self/stat: robust to other load.
    fn cpu_s() -> f64 {
        let s = std::fs::read_to_string("/proc/self/stat").unwrap();
        let f: Vec<&str> = s[s.rfind(')').unwrap() + 2..].split(' ').collect();
        (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / 100.0
    }

    fn timed<T>(f: impl Fn() -> T) -> (T, f64, f64) {
        let _ = f();
        let (w, c) = (std::time::Instant::now(), cpu_s());
        let mut v = f();
        for _ in 0..2 {
            v = f();
        }
        (v, w.elapsed().as_secs_f64() / 3.0, (cpu_s() - c) / 3.0)
    }

    /// Timing of the Wan VAE decoder's conv shapes, direct vs Winograd (wall and CPU seconds):
    /// `cargo test -p wanrt-nn --release vae_conv_timing -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn vae_conv_timing() {
        let shapes: &[(usize, usize, usize, usize, usize)] = &[
            (96, 96, 6, 160, 160),
            (192, 192, 6, 80, 80),
            (384, 384, 4, 40, 40),
            (384, 384, 3, 20, 20),
            (384, 192, 4, 80, 80),
        ];
        let only_wino = std::env::var("WINO_ONLY").is_ok();
        for &(ci, co, t, h, w) in shapes {
            let kt = if t == 4 && ci != co { 1 } else { 3 };
            let x = gen(&[1, ci, t, h, w], 1);
            let wt = gen(&[co, ci, kt, 3, 3], 2);
            let pad = PaddingFull { t: (0, 0), h: (1, 1), w: (1, 1) };
            let gf = 2.0 * (co * ci * kt * 9 * h * w * (t - kt + 1)) as f64 / 1e9;
            let wc = WinogradConv3d::new(&wt).unwrap();
            let (b, wall, cpu) = timed(|| wc.forward(&x, None, pad).unwrap());
            print!("{ci}->{co} k{kt}x3x3 x[{t},{h},{w}] {gf:.1} GF: winograd {wall:.3}s wall {cpu:.3}s cpu ({:.0} GF/cpu-s eq)", gf / cpu);
            if !only_wino {
                let (a, wall, cpu) = timed(|| conv3d(&x, &wt, None, (1, 1, 1), pad).unwrap());
                print!(
                    " | direct {wall:.3}s wall {cpu:.3}s cpu ({:.0} GF/cpu-s), diff {:.1e}",
                    gf / cpu,
                    a.max_abs_diff(&b).unwrap()
                );
            }
            println!();
        }
    }
}
