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
use super::packed::FloatIsa;
use super::SyncPtr;
use crate::error::{Error, Result};
use crate::HostTensor;
use rayon::prelude::*;
use std::cell::RefCell;

/// Target tiles per strip: the GEMMs' N; big enough to amortise the weight reads.
const STRIP_TILES: usize = 256;
/// Output channels per weight panel (rows of the GEMM micro-kernel).
const MR: usize = 6;

/// Conv3d weights `[C_out, C_in, kt, 3, 3]` in the Winograd domain, transformed once.
pub struct WinogradConv3d {
    cout: usize,
    cin: usize,
    kt: usize,
    /// Per Winograd point `e`, the `C_out × K` matrix (`K = kt·C_in`, `k = dt·C_in + ci`)
    /// in panels of [`MR`] output channels (zero-padded): element `(co, k)` at
    /// `((e·P + co / MR)·K + k)·MR + co % MR`, `P = ⌈C_out / MR⌉`.
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
    pub fn new(weight: &HostTensor) -> Result<Self> {
        let &[cout, cin, kt, 3, 3] = weight.shape() else {
            return Err(Error::shape("winograd conv3d weight", "[C_out, C_in, kt, 3, 3]", weight.shape()));
        };
        const G: [[f64; 3]; 4] = [[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]];
        let k = kt * cin;
        let np = cout.div_ceil(MR);
        let mut u = vec![0f32; 16 * np * k * MR];
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
                            u[(((r * 4 + c) * np + co / MR) * k + dt * cin + ci) * MR + co % MR] = v as f32;
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

    /// Bytes of the transformed weights.
    pub fn bytes(&self) -> usize {
        self.u.len() * 4
    }

    /// `x: [N, C_in, T, H, W]` → `[N, C_out, T', H', W']`, stride 1, zero padding `pad`.
    pub fn forward(&self, x: &HostTensor, bias: Option<&[f32]>, pad: PaddingFull) -> Result<HostTensor> {
        self.forward_with_history(None, x, bias, pad)
    }

    /// As [`Self::forward`] on `cat([hist, x], dim 2)` without building the concatenation
    /// (`hist`: a causal conv's cached frames, `[N, C_in, T_h, H, W]`).
    pub fn forward_with_history(
        &self,
        hist: Option<&HostTensor>,
        x: &HostTensor,
        bias: Option<&[f32]>,
        pad: PaddingFull,
    ) -> Result<HostTensor> {
        self.forward_isa(Isa::detect(), hist, x, bias, pad)
    }

    /// [`Self::forward_with_history`] with the kernels of `isa` (which the CPU must support).
    fn forward_isa(
        &self,
        isa: Isa,
        hist: Option<&HostTensor>,
        x: &HostTensor,
        bias: Option<&[f32]>,
        pad: PaddingFull,
    ) -> Result<HostTensor> {
        let &[n, cin, tx, h, w] = x.shape() else {
            return Err(Error::shape("conv3d input", "[N, C, T, H, W]", x.shape()));
        };
        let th = match hist {
            Some(p) if p.rank() == 5 && (p.dim(0), p.dim(1), p.dim(3), p.dim(4)) == (n, cin, h, w) => p.dim(2),
            Some(p) => return Err(Error::shape("conv3d history", format!("[{n}, {cin}, T, {h}, {w}]"), p.shape())),
            None => 0,
        };
        let t = th + tx;
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
        let (tiles_h, tw) = (ho.div_ceil(2), wo.div_ceil(2));
        let cout = self.cout;
        let mut out = vec![0f32; n * cout * to * ho * wo];

        let strip_rows = (STRIP_TILES / tw).clamp(1, tiles_h);
        let strips = tiles_h.div_ceil(strip_rows);
        let threads = super::num_threads();
        // Output-channel blocks (multiples of 16) only when strips alone can't feed the threads.
        let mut co_splits = 1;
        while n * strips * co_splits < 2 * threads && cout / (2 * co_splits) >= 32 {
            co_splits *= 2;
        }
        let co_blk = cout.div_ceil(co_splits).div_ceil(MR) * MR;
        let co_splits = cout.div_ceil(co_blk);
        let geo = Geometry { t, h, w, pad, to, ho, wo, tw };
        let dst = SyncPtr(out.as_mut_ptr());
        let tasks: Vec<(usize, usize, usize)> =
            (0..n).flat_map(|ni| (0..strips).flat_map(move |s| (0..co_splits).map(move |c| (ni, s, c)))).collect();
        let (xd, hd) = (x.data(), hist.map_or(&[][..], |p| p.data()));
        let hw = h * w;
        let run = |&(ni, s, c): &(usize, usize, usize)| {
            let rows = (s * strip_rows, ((s + 1) * strip_rows).min(tiles_h));
            let cos = (c * co_blk, ((c + 1) * co_blk).min(cout));
            let xs = Frames {
                hist: &hd[ni * cin * th * hw..(ni + 1) * cin * th * hw],
                th,
                x: &xd[ni * cin * tx * hw..(ni + 1) * cin * tx * hw],
                tx,
            };
            // SAFETY: each task writes only its own (image, tile rows, channel block) outputs.
            unsafe { self.strip(isa, xs, bias, &geo, rows, cos, dst.get().add(ni * cout * to * ho * wo)) };
        };
        if tasks.len() > 1 && threads > 1 {
            tasks.par_iter().for_each(run);
        } else {
            tasks.iter().for_each(run);
        }
        HostTensor::new([n, cout, to, ho, wo], out)
    }

    /// One strip of tile rows `rows` and output channels `cos` of one image.
    ///
    /// # Safety
    /// `out` is the image's `[C_out, T', H', W']` output; no other thread writes the
    /// strip's rows of channels `cos`; `isa` is supported by the CPU.
    #[allow(clippy::too_many_arguments)]
    unsafe fn strip(
        &self,
        isa: Isa,
        x: Frames,
        bias: Option<&[f32]>,
        g: &Geometry,
        rows: (usize, usize),
        cos: (usize, usize),
        out: *mut f32,
    ) {
        let (cin, kt) = (self.cin, self.kt);
        let k_all = kt * cin;
        let np = self.cout.div_ceil(MR);
        // Rows of V and M are padded to whole vectors; padded columns are never read back.
        let ns = ((rows.1 - rows.0) * g.tw).div_ceil(16) * 16;
        let (p0, p1) = (cos.0 / MR, cos.1.div_ceil(MR));
        let cbp = (p1 - p0) * MR;
        SCRATCH.with(|s| {
            let (v, m) = &mut *s.borrow_mut();
            grow(v, 16 * g.t * cin * ns);
            grow(m, 16 * cbp * ns);
            input_transform(isa, x, cin, g, rows, ns, &mut v[..16 * g.t * cin * ns]);
            let frame_len = cin * ns;
            for ot in 0..g.to {
                // Time taps over real frames only: causal zero padding contributes nothing.
                let dt0 = g.pad.t.0.saturating_sub(ot);
                let dt1 = kt.min((g.pad.t.0 + g.t).saturating_sub(ot));
                if dt0 < dt1 {
                    let f0 = ot + dt0 - g.pad.t.0;
                    let kk = (dt1 - dt0) * cin;
                    for e in 0..16 {
                        let rhs = v.as_ptr().add(e * g.t * frame_len + f0 * frame_len);
                        for p in p0..p1 {
                            let lhs = self.u.as_ptr().add(((e * np + p) * k_all + dt0 * cin) * MR);
                            let dst = m.as_mut_ptr().add((e * cbp + (p - p0) * MR) * ns);
                            panel_gemm(isa, kk, lhs, rhs, ns, dst);
                        }
                    }
                } else {
                    m[..16 * cbp * ns].fill(0.0);
                }
                output_transform(isa, &m[..16 * cbp * ns], bias, g, rows, cos, ns, ot, out);
            }
        });
    }
}

/// Micro-kernel instruction set, chosen at run time.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Isa {
    Scalar,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

impl Isa {
    /// The panel kernel of a packed-GEMM path: one detection (and one `WANRT_ISA` cap) for every
    /// f32 kernel of the crate.
    fn of(f: FloatIsa) -> Self {
        match f {
            FloatIsa::Scalar => Isa::Scalar,
            #[cfg(target_arch = "x86_64")]
            FloatIsa::Avx2 => Isa::Avx2,
            #[cfg(target_arch = "x86_64")]
            FloatIsa::Avx512 | FloatIsa::Avx512Bf16 => Isa::Avx512,
            #[allow(unreachable_patterns)]
            _ => Isa::Scalar,
        }
    }

    fn detect() -> Self {
        Isa::of(FloatIsa::detect())
    }

    #[cfg(test)]
    fn available() -> Vec<Self> {
        let mut v: Vec<Isa> = FloatIsa::available().into_iter().map(Isa::of).collect();
        v.dedup();
        v
    }
}

/// `dst[MR × ns] = lhs · rhs` for one weight panel: `lhs` is `k × MR` (row `kk` at
/// `lhs + kk·MR`), `rhs` is `k × ns` with row stride `ns` (a multiple of 16), `dst`
/// has row stride `ns`.
///
/// # Safety
/// All three ranges are in bounds; `isa` is supported by the CPU.
unsafe fn panel_gemm(isa: Isa, k: usize, lhs: *const f32, rhs: *const f32, ns: usize, dst: *mut f32) {
    match isa {
        Isa::Scalar => panel_gemm_scalar(k, lhs, rhs, ns, dst),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => x86::panel_avx2(k, lhs, rhs, ns, dst),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => x86::panel_avx512(k, lhs, rhs, ns, dst),
    }
}

/// Reference micro-kernel (any CPU), blocks of 16 columns.
unsafe fn panel_gemm_scalar(k: usize, lhs: *const f32, rhs: *const f32, ns: usize, dst: *mut f32) {
    for n0 in (0..ns).step_by(16) {
        let mut acc = [[0f32; 16]; MR];
        for kk in 0..k {
            let b = std::slice::from_raw_parts(rhs.add(kk * ns + n0), 16);
            let a = std::slice::from_raw_parts(lhs.add(kk * MR), MR);
            for (row, &av) in acc.iter_mut().zip(a) {
                row.iter_mut().zip(b).for_each(|(c, &bv)| *c += av * bv);
            }
        }
        for (r, row) in acc.iter().enumerate() {
            std::ptr::copy_nonoverlapping(row.as_ptr(), dst.add(r * ns + n0), 16);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{input_transform_body, output_transform_body, Frames, Geometry, MR};
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn input_transform_avx512(
        x: Frames,
        cin: usize,
        g: &Geometry,
        rows: (usize, usize),
        ns: usize,
        v: &mut [f32],
    ) {
        input_transform_body(x, cin, g, rows, ns, v)
    }

    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn input_transform_avx2(
        x: Frames,
        cin: usize,
        g: &Geometry,
        rows: (usize, usize),
        ns: usize,
        v: &mut [f32],
    ) {
        input_transform_body(x, cin, g, rows, ns, v)
    }

    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn output_transform_avx512(
        m: &[f32],
        bias: Option<&[f32]>,
        g: &Geometry,
        rows: (usize, usize),
        cos: (usize, usize),
        ns: usize,
        ot: usize,
        out: *mut f32,
    ) {
        output_transform_body(m, bias, g, rows, cos, ns, ot, out)
    }

    #[target_feature(enable = "avx2")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn output_transform_avx2(
        m: &[f32],
        bias: Option<&[f32]>,
        g: &Geometry,
        rows: (usize, usize),
        cos: (usize, usize),
        ns: usize,
        ot: usize,
        out: *mut f32,
    ) {
        output_transform_body(m, bias, g, rows, cos, ns, ot, out)
    }

    /// `MR × 16·NV` block, zmm accumulators: per k, NV loads of `rhs`, MR broadcasts, MR·NV FMAs.
    #[inline(always)]
    unsafe fn block512<const NV: usize>(k: usize, lhs: *const f32, rhs: *const f32, ns: usize, dst: *mut f32) {
        let mut acc = [[_mm512_setzero_ps(); NV]; MR];
        for kk in 0..k {
            let b = rhs.add(kk * ns);
            let mut x = [_mm512_setzero_ps(); NV];
            for (j, xj) in x.iter_mut().enumerate() {
                *xj = _mm512_loadu_ps(b.add(16 * j));
            }
            let a = lhs.add(kk * MR);
            for (r, row) in acc.iter_mut().enumerate() {
                let av = _mm512_set1_ps(*a.add(r));
                for (c, &xj) in row.iter_mut().zip(&x) {
                    *c = _mm512_fmadd_ps(av, xj, *c);
                }
            }
        }
        for (r, row) in acc.iter().enumerate() {
            for (j, &c) in row.iter().enumerate() {
                _mm512_storeu_ps(dst.add(r * ns + 16 * j), c);
            }
        }
    }

    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn panel_avx512(k: usize, lhs: *const f32, rhs: *const f32, ns: usize, dst: *mut f32) {
        let mut n0 = 0;
        while n0 + 64 <= ns {
            block512::<4>(k, lhs, rhs.add(n0), ns, dst.add(n0));
            n0 += 64;
        }
        match (ns - n0) / 16 {
            3 => block512::<3>(k, lhs, rhs.add(n0), ns, dst.add(n0)),
            2 => block512::<2>(k, lhs, rhs.add(n0), ns, dst.add(n0)),
            1 => block512::<1>(k, lhs, rhs.add(n0), ns, dst.add(n0)),
            _ => {}
        }
    }

    /// `MR × 16` block, ymm accumulators (12 of the 16 registers).
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn panel_avx2(k: usize, lhs: *const f32, rhs: *const f32, ns: usize, dst: *mut f32) {
        for n0 in (0..ns).step_by(16) {
            let mut acc = [[_mm256_setzero_ps(); 2]; MR];
            for kk in 0..k {
                let b = rhs.add(kk * ns + n0);
                let x = [_mm256_loadu_ps(b), _mm256_loadu_ps(b.add(8))];
                let a = lhs.add(kk * MR);
                for (r, row) in acc.iter_mut().enumerate() {
                    let av = _mm256_set1_ps(*a.add(r));
                    for (c, &xj) in row.iter_mut().zip(&x) {
                        *c = _mm256_fmadd_ps(av, xj, *c);
                    }
                }
            }
            for (r, row) in acc.iter().enumerate() {
                for (j, &c) in row.iter().enumerate() {
                    _mm256_storeu_ps(dst.add(r * ns + n0 + 8 * j), c);
                }
            }
        }
    }
}

/// The input frames of one image: cached history frames, then the new ones.
#[derive(Clone, Copy)]
struct Frames<'a> {
    hist: &'a [f32],
    th: usize,
    x: &'a [f32],
    tx: usize,
}

impl<'a> Frames<'a> {
    /// Channel `ci`, frame `f` (history first) as an `H·W` plane.
    fn plane(&self, ci: usize, f: usize, hw: usize) -> &'a [f32] {
        if f < self.th {
            &self.hist[(ci * self.th + f) * hw..][..hw]
        } else {
            &self.x[(ci * self.tx + f - self.th) * hw..][..hw]
        }
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
fn input_transform(isa: Isa, x: Frames, cin: usize, g: &Geometry, rows: (usize, usize), ns: usize, v: &mut [f32]) {
    match isa {
        Isa::Scalar => input_transform_body(x, cin, g, rows, ns, v),
        // SAFETY: `isa` was detected on this CPU.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { x86::input_transform_avx2(x, cin, g, rows, ns, v) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { x86::input_transform_avx512(x, cin, g, rows, ns, v) },
    }
}

/// Each zero-padded input row is split into its even and odd columns, so both
/// transform passes are contiguous element-wise loops that vectorise:
/// column `2j + q` of tile `j` is `E[j]`, `O[j]`, `E[j+1]`, `O[j+1]` for `q = 0‥3`.
#[inline(always)]
fn input_transform_body(x: Frames, cin: usize, g: &Geometry, rows: (usize, usize), ns: usize, v: &mut [f32]) {
    let e_stride = g.t * cin * ns;
    let tw = g.tw;
    let hl = tw + 1; // even (odd) columns of a padded row of 2·tw + 2
                     // Padded rows 2·rows.0 … 2·rows.1 + 1 of one (frame, channel), each as [even | odd].
    let nrows = 2 * (rows.1 - rows.0) + 2;
    let mut eo = vec![0f32; nrows * 2 * hl];
    let mut s = vec![0f32; 8 * hl];
    let (pw, q) = (g.pad.w.0 & 1, g.pad.w.0 >> 1);
    for f in 0..g.t {
        for ci in 0..cin {
            let plane = x.plane(ci, f, g.h * g.w);
            let base = (f * cin + ci) * ns;
            for (r, row) in eo.chunks_exact_mut(2 * hl).enumerate() {
                let (ev, od) = row.split_at_mut(hl);
                let ph = 2 * rows.0 + r;
                if ph < g.pad.h.0 || ph - g.pad.h.0 >= g.h {
                    ev.fill(0.0);
                    od.fill(0.0);
                    continue;
                }
                let src = &plane[(ph - g.pad.h.0) * g.w..][..g.w];
                // Source column c sits at padded column c + pad_w; split by its parity.
                ev.fill(0.0);
                od.fill(0.0);
                let (first, second) = if pw == 0 { (&mut *ev, &mut *od) } else { (&mut *od, &mut *ev) };
                let sh = q + pw; // index shift of the second of each source pair
                let pairs = src.chunks_exact(2);
                let tail = pairs.remainder();
                for (k, pr) in pairs.enumerate() {
                    first[k + q] = pr[0];
                    second[k + sh] = pr[1];
                }
                if let Some(&last) = tail.first() {
                    first[g.w / 2 + q] = last;
                }
            }
            for i in rows.0..rows.1 {
                let d = |a: usize| {
                    let r = 2 * (i - rows.0) + a;
                    &eo[r * 2 * hl..(r + 1) * 2 * hl]
                };
                // s = Bᵀ d over rows: s0 = d0 − d2, s1 = d1 + d2, s2 = d2 − d1, s3 = d1 − d3.
                {
                    let (d0, d1, d2, d3) = (d(0), d(1), d(2), d(3));
                    let (s0, rest) = s.split_at_mut(2 * hl);
                    let (s1, rest) = rest.split_at_mut(2 * hl);
                    let (s2, s3) = rest.split_at_mut(2 * hl);
                    for c in 0..2 * hl {
                        s0[c] = d0[c] - d2[c];
                        s1[c] = d1[c] + d2[c];
                        s2[c] = d2[c] - d1[c];
                        s3[c] = d1[c] - d3[c];
                    }
                }
                // v = s B over columns: v0 = E[j] − E[j+1], v1 = O[j] + E[j+1],
                // v2 = E[j+1] − O[j], v3 = O[j] − O[j+1].
                let o = base + (i - rows.0) * tw;
                for r in 0..4 {
                    let (ev, od) = s[2 * r * hl..(2 * r + 2) * hl].split_at(hl);
                    let e = 4 * r;
                    let (v0, rest) = v[e * e_stride + o..].split_at_mut(e_stride);
                    let (v1, rest) = rest.split_at_mut(e_stride);
                    let (v2, v3) = rest.split_at_mut(e_stride);
                    for j in 0..tw {
                        v0[j] = ev[j] - ev[j + 1];
                        v1[j] = od[j] + ev[j + 1];
                        v2[j] = ev[j + 1] - od[j];
                        v3[j] = od[j] - od[j + 1];
                    }
                }
            }
        }
    }
}

/// `out[co][ot]` tiles of the strip = `Aᵀ m A` + bias, clipped to the output size.
///
/// # Safety
/// As [`WinogradConv3d::strip`]; `isa` is supported by the CPU.
#[allow(clippy::too_many_arguments)]
unsafe fn output_transform(
    isa: Isa,
    m: &[f32],
    bias: Option<&[f32]>,
    g: &Geometry,
    rows: (usize, usize),
    cos: (usize, usize),
    ns: usize,
    ot: usize,
    out: *mut f32,
) {
    match isa {
        Isa::Scalar => output_transform_body(m, bias, g, rows, cos, ns, ot, out),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => x86::output_transform_avx2(m, bias, g, rows, cos, ns, ot, out),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => x86::output_transform_avx512(m, bias, g, rows, cos, ns, ot, out),
    }
}

/// `t = Aᵀ m` then `y = t A`, element-wise over a row of tiles; the 2×2 outputs are
/// interleaved into the two output rows at the end.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn output_transform_body(
    m: &[f32],
    bias: Option<&[f32]>,
    g: &Geometry,
    rows: (usize, usize),
    cos: (usize, usize),
    ns: usize,
    ot: usize,
    out: *mut f32,
) {
    let e_stride = m.len() / 16;
    let tw = g.tw;
    let mut y = vec![0f32; 4 * tw];
    for co in cos.0..cos.1 {
        let b = bias.map_or(0.0, |b| b[co]);
        let plane = out.add((co * g.to + ot) * g.ho * g.wo);
        for i in rows.0..rows.1 {
            let n0 = (co - cos.0) * ns + (i - rows.0) * tw;
            let p = |e: usize| &m[e * e_stride + n0..][..tw];
            let (y00, rest) = y.split_at_mut(tw);
            let (y01, rest) = rest.split_at_mut(tw);
            let (y10, y11) = rest.split_at_mut(tw);
            let (m0, m1, m2, m3) = (p(0), p(1), p(2), p(3));
            let (m4, m5, m6, m7) = (p(4), p(5), p(6), p(7));
            let (m8, m9, m10, m11) = (p(8), p(9), p(10), p(11));
            let (m12, m13, m14, m15) = (p(12), p(13), p(14), p(15));
            for j in 0..tw {
                let t00 = m0[j] + m4[j] + m8[j];
                let t01 = m1[j] + m5[j] + m9[j];
                let t02 = m2[j] + m6[j] + m10[j];
                let t03 = m3[j] + m7[j] + m11[j];
                let t10 = m4[j] - m8[j] - m12[j];
                let t11 = m5[j] - m9[j] - m13[j];
                let t12 = m6[j] - m10[j] - m14[j];
                let t13 = m7[j] - m11[j] - m15[j];
                y00[j] = t00 + t01 + t02 + b;
                y01[j] = t01 - t02 - t03 + b;
                y10[j] = t10 + t11 + t12 + b;
                y11[j] = t11 - t12 - t13 + b;
            }
            for (a, (ya, yb)) in [(&*y00, &*y01), (&*y10, &*y11)].into_iter().enumerate() {
                let oh = 2 * i + a;
                if oh >= g.ho {
                    break;
                }
                let row = std::slice::from_raw_parts_mut(plane.add(oh * g.wo), g.wo);
                let (pairs, tail) = row.split_at_mut(g.wo & !1);
                for ((pr, &u), &w) in pairs.chunks_exact_mut(2).zip(ya).zip(yb) {
                    pr[0] = u;
                    pr[1] = w;
                }
                if let Some(last) = tail.first_mut() {
                    *last = ya[g.wo / 2];
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::conv3d;

    fn gen(shape: &[usize], seed: usize) -> HostTensor {
        let n: usize = shape.iter().product();
        HostTensor::new(shape, (0..n).map(|i| (((i * 2654435761 + seed * 97) % 1000) as f32 / 500.0) - 1.0).collect())
            .unwrap()
    }

    /// Direct definition, independent of both fast paths.
    fn naive(x: &HostTensor, wt: &HostTensor, bias: &[f32], pad: PaddingFull) -> HostTensor {
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
        HostTensor::new([n, co, to, ho, wo], out).unwrap()
    }

    #[test]
    fn panel_kernels_match_reference() {
        let k = 37;
        let lhs: Vec<f32> = (0..k * MR).map(|i| ((i * 7 % 13) as f32 - 6.0) / 7.0).collect();
        // Column counts exercising every block width of the AVX-512 kernel (16·1 … 16·4, 64 + 48).
        for ns in [16, 32, 48, 64, 112] {
            let rhs: Vec<f32> = (0..k * ns).map(|i| ((i * 5 % 11) as f32 - 5.0) / 5.0).collect();
            for isa in Isa::available() {
                let mut got = vec![f32::NAN; MR * ns];
                // SAFETY: sizes as allocated; `isa` is available.
                unsafe { panel_gemm(isa, k, lhs.as_ptr(), rhs.as_ptr(), ns, got.as_mut_ptr()) };
                for r in 0..MR {
                    for n in 0..ns {
                        let want: f32 = (0..k).map(|kk| lhs[kk * MR + r] * rhs[kk * ns + n]).sum();
                        let g = got[r * ns + n];
                        assert!((g - want).abs() < 1e-4, "{isa:?} ns {ns} ({r}, {n}): {g} vs {want}");
                    }
                }
            }
        }
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
            // Every kernel set this CPU has (scalar, AVX2, AVX-512) agrees.
            for isa in Isa::available() {
                let y = wc.forward_isa(isa, None, &x, Some(&bias), pad).unwrap();
                let err = y.max_abs_diff(&want).unwrap();
                assert!(err < 2e-4, "case {i} {isa:?}: max err {err}");
            }
            // The first frames given as cached history: same result, bit for bit.
            if xs[2] > 1 {
                let hist = x.narrow(2, 0, 1).unwrap();
                let rest = x.narrow(2, 1, xs[2] - 1).unwrap();
                let split = wc.forward_with_history(Some(&hist), &rest, Some(&bias), pad).unwrap();
                assert_eq!(split.data(), got.data(), "case {i} with history");
            }
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
