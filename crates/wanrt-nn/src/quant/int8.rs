//! INT8 weights (per output channel) and the two products that use them:
//! - W8A8 ([`gemm_w8a8`]): activations quantized to int8 on the fly (per token, per tensor, or a
//!   static calibrated scale; SmoothQuant's per-channel divisor fused into the same pass), exact
//!   `i32` accumulation on the fastest [`Isa`], then `out = acc · sx[i] · sw[j] (+ bias)`.
//! - W8A16 ([`gemm_w8a16`]): weights widened to f32 panel by panel inside an f32 GEMM; halves
//!   memory traffic vs f32 weights at f32 accuracy of the activations.
//!
//! Mirrors the per-channel symmetric weight / per-token dynamic activation scheme of
//! SmoothQuant (Xiao et al. 2023) and TensorRT's INT8 `IQuantizeLayer` semantics (scale = amax/127).

use super::kernels::{self, Sink, Tile, MAX_K, NR};
use super::{gemm_decoded, ActQuant, Isa};
use crate::ops::{lane_max, round_to_int, SyncPtr};
use rayon::prelude::*;

/// Activation rows per parallel task (a multiple of every micro-kernel's row count: 4, 6, 8).
const MC: usize = 96;
/// Weight panels (16 output columns each) per parallel task.
const NC_PANELS: usize = 16;
/// Reduction bytes per cache block: a 16 × 1024 B weight panel slice stays in L1 while every
/// row of the task's activation block streams past it.
const KC: usize = 1024;

/// Largest magnitude an int8 code takes (−128 is never produced; see `kernels`).
pub const QMAX: f32 = 127.0;

/// Symmetric per-output-row int8 quantization of a `[rows, cols]` (PyTorch `[out, in]`) weight.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizedMatrix {
    pub rows: usize,
    pub cols: usize,
    /// Row-major `[rows, cols]` codes in −127..=127.
    pub data: Vec<i8>,
    /// `w[r, c] ≈ data[r, c] · scales[r]`; 0 for an all-zero row.
    pub scales: Vec<f32>,
}

/// Quantizes one row with `x · inv` clamped to ±127 and rounded half to even (a loop that
/// vectorizes: see [`round_to_int`]).
#[inline(always)]
pub(super) fn quantize_into(src: &[f32], inv: f32, dst: &mut [i8]) {
    for (d, &v) in dst.iter_mut().zip(src) {
        *d = round_to_int((v * inv).clamp(-QMAX, QMAX)) as i8;
    }
}

#[inline(always)]
pub(super) fn absmax(v: &[f32]) -> f32 {
    lane_max(v, 0.0, f32::abs)
}

/// `(scale, inv)` for a symmetric range of `absmax`: scale = absmax/127, inv = 127/absmax
/// (inv = 0 for an all-zero range, so everything quantizes to 0 and dequantizes to 0).
pub(super) fn scale_for(amax: f32) -> (f32, f32) {
    if amax > 0.0 {
        (amax / QMAX, QMAX / amax)
    } else {
        (0.0, 0.0)
    }
}

impl QuantizedMatrix {
    /// Per-row symmetric quantization: `scale[r] = absmax(w[r, :]) / 127`,
    /// `q = clamp(round_half_even(w · 127/absmax), ±127)`. The row's largest value maps to ±127
    /// and the round trip error is at most `scale/2` per element. Inputs must be finite.
    pub fn quantize_per_row_symmetric(w: &[f32], rows: usize, cols: usize) -> QuantizedMatrix {
        assert_eq!(w.len(), rows * cols, "weight: expected rows·cols = {rows}·{cols} values");
        let mut data = vec![0i8; rows * cols];
        let mut scales = vec![0.0f32; rows];
        if cols > 0 {
            data.par_chunks_mut(cols).zip(w.par_chunks(cols)).zip(scales.par_iter_mut()).for_each(|((d, r), s)| {
                let (scale, inv) = scale_for(absmax(r));
                *s = scale;
                quantize_into(r, inv, d);
            });
        }
        QuantizedMatrix { rows, cols, data, scales }
    }

    /// `data · scale` back in f32, row-major `[rows, cols]`.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = Vec::new();
        self.dequantize_rows(0, self.rows, &mut out);
        out
    }

    /// Bytes held (codes + scales).
    pub fn bytes(&self) -> usize {
        self.data.len() + 4 * self.scales.len()
    }
}

/// Weights that can widen a block of output rows to f32 (the W8A16 product's weight source).
pub trait DequantRows: Sync {
    /// `[rows, cols]` of the weight.
    fn shape(&self) -> [usize; 2];
    /// Writes rows `start..start+len` as f32, row-major `[len, cols]`, replacing `out`'s contents.
    fn dequantize_rows(&self, start: usize, len: usize, out: &mut Vec<f32>);
}

impl DequantRows for QuantizedMatrix {
    fn shape(&self) -> [usize; 2] {
        [self.rows, self.cols]
    }
    fn dequantize_rows(&self, start: usize, len: usize, out: &mut Vec<f32>) {
        let k = self.cols;
        out.clear();
        for r in start..start + len {
            let s = self.scales[r];
            out.extend(self.data[r * k..(r + 1) * k].iter().map(|&q| q as f32 * s));
        }
    }
}

/// An int8 weight packed once at load for [`gemm_w8a8`] (layout in `kernels`: 16-column panels,
/// 4-deep groups, one 64-byte line per step). Also carries what every path needs at run time:
/// the per-row scales and `128·Σ_k w[j, k]` for the VNNI paths' unsigned-activation offset.
#[derive(Debug, Clone)]
pub struct PackedInt8 {
    /// Output features `n` (rows of the `[out, in]` weight).
    pub rows: usize,
    /// Input features `k`.
    pub cols: usize,
    /// `k` rounded up to a multiple of 4 (zero padded).
    pub(crate) kp: usize,
    pub(crate) panels: usize,
    pub(crate) data: Vec<i8>,
    pub(crate) scales: Vec<f32>,
    /// `128 · Σ_k w[j, k]` per output column, padded to `16·panels`.
    pub(crate) comp: Vec<i32>,
}

impl PackedInt8 {
    /// Packs a quantized weight. Panics if a code is −128 (the AVX2 path's exactness needs ±127)
    /// or if `k` is too large for exact i32 accumulation (> 66 000).
    pub fn from_quantized(q: &QuantizedMatrix) -> PackedInt8 {
        let (n, k) = (q.rows, q.cols);
        assert!(q.data.len() == n * k && q.scales.len() == n, "QuantizedMatrix fields do not match {n}×{k}");
        PackedInt8::pack(|j| &q.data[j * k..(j + 1) * k], n, k, q.scales.clone())
    }

    /// Packs the `rows × cols` codes whose row `j` is `row(j)` (wherever it lives: a mapped
    /// checkpoint needs no intermediate copy), with one scale per row. Panics as
    /// [`PackedInt8::from_quantized`] does.
    pub fn pack<'a>(row: impl Fn(usize) -> &'a [i8] + Sync, n: usize, k: usize, scales: Vec<f32>) -> PackedInt8 {
        assert_eq!(scales.len(), n, "expected one scale per row ({n})");
        let codes = |j: usize| {
            let codes = row(j);
            assert_eq!(codes.len(), k, "row {j} has {} codes, expected {k}", codes.len());
            assert!(codes.iter().all(|&v| v != i8::MIN), "int8 weight codes must lie in -127..=127");
            codes
        };
        let (kp, panels, data) = pack_panels(n, k, |j, dst| dst.copy_from_slice(codes(j)));
        let mut comp = vec![0i32; panels * NR];
        comp[..n]
            .par_iter_mut()
            .enumerate()
            .for_each(|(j, c)| *c = 128 * row(j).iter().map(|&v| v as i32).sum::<i32>());
        PackedInt8 { rows: n, cols: k, kp, panels, data, scales, comp }
    }

    /// Quantizes (per row, symmetric) and packs an f32 `[rows, cols]` weight.
    pub fn quantize(w: &[f32], rows: usize, cols: usize) -> PackedInt8 {
        PackedInt8::from_quantized(&QuantizedMatrix::quantize_per_row_symmetric(w, rows, cols))
    }

    /// Per-output-row scales.
    pub fn scales(&self) -> &[f32] {
        &self.scales
    }

    /// Bytes held (codes with padding, scales, compensation).
    pub fn bytes(&self) -> usize {
        self.data.len() + 4 * (self.scales.len() + self.comp.len())
    }

    /// Code of `w[j, kk]` in the packed layout.
    fn code(&self, j: usize, kk: usize) -> i8 {
        self.data[(j / NR) * NR * self.kp + (kk / 4) * 64 + (j % NR) * 4 + kk % 4]
    }
}

impl DequantRows for PackedInt8 {
    fn shape(&self) -> [usize; 2] {
        [self.rows, self.cols]
    }
    fn dequantize_rows(&self, start: usize, len: usize, out: &mut Vec<f32>) {
        out.clear();
        for j in start..start + len {
            out.extend((0..self.cols).map(|kk| self.code(j, kk) as f32 * self.scales[j]));
        }
    }
}

/// `(kp, panels, data)`: the `n × k` codes whose row `j` `codes(j, dst)` writes (`k` values) in
/// the kernels' panel layout (16-column panels, 4-deep groups, `k` zero padded to `kp`).
/// Panics if `kp` is too large for exact i32 accumulation (> 66 000).
pub(crate) fn pack_panels(n: usize, k: usize, codes: impl Fn(usize, &mut [i8]) + Sync) -> (usize, usize, Vec<i8>) {
    let kp = k.div_ceil(4) * 4;
    assert!(kp <= MAX_K, "k = {k} too large for exact int32 accumulation (max {MAX_K})");
    let panels = n.div_ceil(NR);
    let mut data = vec![0i8; panels * NR * kp];
    if kp > 0 {
        data.par_chunks_mut(NR * kp).enumerate().for_each_init(Vec::new, |row, (p, panel)| {
            for c in 0..NR.min(n - p * NR) {
                row.clear();
                row.resize(k, 0i8);
                codes(p * NR + c, row);
                for (g, quad) in row.chunks(4).enumerate() {
                    panel[g * 64 + c * 4..][..quad.len()].copy_from_slice(quad);
                }
            }
        });
    }
    (kp, panels, data)
}

/// Activations quantized for one path: `data` row-major `[m, kp]` i8, `aux` the path's second
/// operand form (see `kernels`), `scales` per row (per block of a row for [`super::q8_0`]).
pub(crate) struct QuantizedActs {
    pub m: usize,
    pub kp: usize,
    pub data: Vec<i8>,
    pub aux: Vec<u8>,
    pub scales: Vec<f32>,
}

impl QuantizedActs {
    /// Wraps already-quantized rows (`data` is `[m, kp]`, codes in ±127) for `isa`.
    pub fn from_codes(isa: Isa, m: usize, kp: usize, data: Vec<i8>, scales: Vec<f32>) -> QuantizedActs {
        debug_assert_eq!(data.len(), m * kp);
        let mut aux = vec![0u8; if isa == Isa::Scalar { 0 } else { data.len() }];
        aux.par_chunks_mut(1 << 16).zip(data.par_chunks(1 << 16)).for_each(|(a, d)| fill_aux(isa, d, a));
        QuantizedActs { m, kp, data, aux, scales }
    }

    /// `m` zero rows of `kp` codes for `isa`, with `scales` zero scales.
    pub fn zeroed(isa: Isa, m: usize, kp: usize, scales: usize) -> QuantizedActs {
        let aux = vec![0u8; if isa == Isa::Scalar { 0 } else { m * kp }];
        QuantizedActs { m, kp, data: vec![0i8; m * kp], aux, scales: vec![0.0f32; scales] }
    }

    /// Quantizes `x[m, k]` into rows of `kp ≥ k` codes (zero padded), with the path's auxiliary
    /// bytes written in the same parallel pass.
    pub fn quantize(
        isa: Isa,
        x: &[f32],
        m: usize,
        k: usize,
        kp: usize,
        act: ActQuant,
        inv_smooth: Option<&[f32]>,
    ) -> QuantizedActs {
        assert_eq!(x.len(), m * k, "x: expected m·k = {m}·{k} values");
        if let Some(s) = inv_smooth {
            assert_eq!(s.len(), k, "inv_smooth: expected k = {k} values");
        }
        let QuantizedActs { mut data, mut aux, mut scales, .. } = QuantizedActs::zeroed(isa, m, kp, m);
        if k > 0 {
            let smooth_absmax = |row: &[f32]| match inv_smooth {
                Some(s) => {
                    crate::ops::vectorized(|| row.iter().zip(s).fold(0.0f32, |a, (&x, &s)| a.max((x * s).abs())))
                }
                None => crate::ops::vectorized(|| absmax(row)),
            };
            let tensor_scale = match act {
                ActQuant::PerToken => None,
                ActQuant::PerTensor => Some(scale_for(x.par_chunks(k).map(smooth_absmax).reduce(|| 0.0, f32::max))),
                ActQuant::Static(s) => {
                    assert!(s > 0.0 && s.is_finite(), "static activation scale must be positive, got {s}");
                    Some((s, 1.0 / s))
                }
            };
            // Scalar has no auxiliary bytes: hand it empty chunks (one per row) instead.
            let aux_chunk = if aux.is_empty() { 1 } else { kp };
            let mut empty = vec![0u8; if aux.is_empty() { m } else { 0 }];
            let aux_rows = if aux.is_empty() { &mut empty[..] } else { &mut aux[..] };
            data.par_chunks_mut(kp)
                .zip(aux_rows.par_chunks_mut(aux_chunk))
                .zip(x.par_chunks(k))
                .zip(scales.par_iter_mut())
                .for_each_init(Vec::new, |tmp, (((d, a), row), s)| {
                    let (scale, inv) = tensor_scale.unwrap_or_else(|| scale_for(smooth_absmax(row)));
                    *s = scale;
                    // Plain f32 and integer loops: the AVX2 build gives the baseline's bits.
                    crate::ops::vectorized(|| {
                        let src = match inv_smooth {
                            Some(sm) => {
                                tmp.clear();
                                tmp.extend(row.iter().zip(sm).map(|(&x, &s)| x * s));
                                &tmp[..]
                            }
                            None => row,
                        };
                        quantize_into(src, inv, &mut d[..k]);
                        fill_aux(isa, d, a);
                    })
                });
        }
        QuantizedActs { m, kp, data, aux, scales }
    }
}

/// The path's second operand form of `codes` (see `kernels`): |a| for AVX2, a + 128 for VNNI.
#[inline(always)]
pub(super) fn fill_aux(isa: Isa, codes: &[i8], aux: &mut [u8]) {
    match isa {
        Isa::Scalar => {}
        Isa::Avx2 => aux.iter_mut().zip(codes).for_each(|(a, &v)| *a = v.unsigned_abs()),
        Isa::AvxVnni | Isa::Avx512Vnni => aux.iter_mut().zip(codes).for_each(|(a, &v)| *a = (v as u8) ^ 0x80),
    }
}

/// The weight operand of [`tiled`]: panel-layout codes (see `kernels`) of `rows` output columns.
pub(crate) struct PanelCodes<'a> {
    pub data: &'a [i8],
    pub rows: usize,
    pub kp: usize,
    pub panels: usize,
}

/// `A[m, kp] · Wᵀ` on `isa` over tasks of `MC` rows × `16·NC_PANELS` columns, `KC` reduction
/// bytes at a time. `sink(acc, i0, p0, k0, acc_rs)` says where the task's chunk from `k0` goes,
/// given the task's zeroed accumulator (`rows × acc_rs`, first row `i0`, first panel `p0`);
/// `emit(i0, j0, rows, acc, acc_rs)` receives each finished task.
pub(crate) fn tiled<T: Copy + Default + Send>(
    isa: Isa,
    a: &QuantizedActs,
    w: &PanelCodes,
    sink: impl Fn(*mut T, usize, usize, usize, usize) -> Sink + Sync,
    emit: impl Fn(usize, usize, usize, &mut [T], usize) + Sync,
) {
    assert!(isa.is_available(), "instruction set {} not available on this CPU", isa.name());
    assert_eq!(a.kp, w.kp, "activation rows are not padded like the weight");
    assert_eq!(w.data.len(), w.panels * NR * w.kp, "packed codes do not match their panels");
    let m = a.m;
    if m == 0 || w.rows == 0 {
        return;
    }
    let row_blocks = m.div_ceil(MC);
    let col_blocks = w.panels.div_ceil(NC_PANELS);
    (0..row_blocks * col_blocks).into_par_iter().for_each_init(Vec::new, |acc: &mut Vec<T>, t| {
        let (cb, rb) = (t / row_blocks, t % row_blocks);
        let i0 = rb * MC;
        let rows = MC.min(m - i0);
        let p0 = cb * NC_PANELS;
        let panels = NC_PANELS.min(w.panels - p0);
        let acc_rs = panels * NR;
        acc.clear();
        acc.resize(rows * acc_rs, T::default());
        let mut k0 = 0;
        while k0 < w.kp {
            let kc = KC.min(w.kp - k0);
            let tile = Tile {
                // SAFETY (all offsets): rows i0..i0+rows < m, columns k0..k0+kc ≤ kp of the
                // activations; panels p0..p0+panels < w.panels with groups k0/4..(k0+kc)/4.
                a: unsafe { a.data.as_ptr().add(i0 * a.kp + k0) },
                aux: if a.aux.is_empty() { std::ptr::null() } else { unsafe { a.aux.as_ptr().add(i0 * a.kp + k0) } },
                a_rs: a.kp,
                rows,
                w: unsafe { w.data.as_ptr().add(p0 * NR * w.kp + k0 * NR) },
                w_ps: NR * w.kp,
                panels,
                groups: kc / 4,
                sink: sink(acc.as_mut_ptr(), i0, p0, k0, acc_rs),
            };
            // SAFETY: the tile addresses the extents above; availability asserted.
            unsafe { kernels::run(isa, &tile) };
            k0 += kc;
        }
        emit(i0, p0 * NR, rows, acc, acc_rs);
    });
}

/// Exact integer product `A[m, kp] · Wᵀ` over the tasks of [`tiled`]. For each finished block,
/// calls `emit(i0, j0, rows, cols, acc, acc_rs)` with the true `Σ a·w` (compensation already
/// applied); `cols` excludes padding columns.
pub(crate) fn int_gemm(
    isa: Isa,
    a: &QuantizedActs,
    w: &PackedInt8,
    emit: impl Fn(usize, usize, usize, usize, &[i32], usize) + Sync,
) {
    let codes = PanelCodes { data: &w.data, rows: w.rows, kp: w.kp, panels: w.panels };
    let offset = isa.offsets_activations();
    let sink = |acc: *mut i32, _, _, _, acc_rs| Sink::Int { acc, acc_rs };
    tiled(isa, a, &codes, sink, |i0, j0, rows, acc, acc_rs| {
        let cols = acc_rs.min(w.rows - j0);
        if offset {
            for row in acc.chunks_exact_mut(acc_rs) {
                row.iter_mut().zip(&w.comp[j0..j0 + acc_rs]).for_each(|(v, &c)| *v -= c);
            }
        }
        emit(i0, j0, rows, cols, acc, acc_rs);
    });
}

/// [`gemm_w8a8_with`] on the fastest path of this CPU ([`Isa::detect`]).
#[allow(clippy::too_many_arguments)]
pub fn gemm_w8a8(
    x: &[f32],
    m: usize,
    k: usize,
    w: &PackedInt8,
    act: ActQuant,
    inv_smooth: Option<&[f32]>,
    bias: Option<&[f32]>,
    out: &mut [f32],
) {
    gemm_w8a8_with(Isa::detect(), x, m, k, w, act, inv_smooth, bias, out)
}

/// `out[m, n] = Q(x / smooth) · Wᵀ` dequantized: activations quantized per `act` (with
/// `x[:, j] · inv_smooth[j]` fused into the pass), exact i32 accumulation on `isa`, then
/// `out[i, j] = (acc as f32) · sx[i] · sw[j] (+ bias[j])` evaluated left to right in f32 —
/// the same operations on every path, hence bit-identical results. Panics on size mismatches
/// or an unavailable `isa`.
#[allow(clippy::too_many_arguments)]
pub fn gemm_w8a8_with(
    isa: Isa,
    x: &[f32],
    m: usize,
    k: usize,
    w: &PackedInt8,
    act: ActQuant,
    inv_smooth: Option<&[f32]>,
    bias: Option<&[f32]>,
    out: &mut [f32],
) {
    gemm_w8a8_then(isa, x, m, k, w, act, inv_smooth, bias, |y| y, out)
}

/// [`gemm_w8a8_with`] with `post` applied to every output value inside the output pass (an
/// activation fused into the GEMM epilogue: the values are still in cache). `post` runs in
/// the same AVX2-compiled loop a standalone pass would use, so the bits are those of
/// `gemm_w8a8_with` followed by `post` over the output.
#[allow(clippy::too_many_arguments)]
pub fn gemm_w8a8_then(
    isa: Isa,
    x: &[f32],
    m: usize,
    k: usize,
    w: &PackedInt8,
    act: ActQuant,
    inv_smooth: Option<&[f32]>,
    bias: Option<&[f32]>,
    post: impl Fn(f32) -> f32 + Sync + Copy,
    out: &mut [f32],
) {
    let n = w.rows;
    super::check_product([m, k], [n, w.cols], bias, out);
    let a = QuantizedActs::quantize(isa, x, m, k, w.kp, act, inv_smooth);
    let out_ptr = SyncPtr(out.as_mut_ptr());
    int_gemm(isa, &a, w, |i0, j0, rows, cols, acc, acc_rs| {
        // Separate multiplies (Rust never fuses them): the AVX2 build gives the baseline's bits.
        crate::ops::vectorized(|| {
            for r in 0..rows {
                let sx = a.scales[i0 + r];
                // SAFETY: blocks of int_gemm are disjoint; row i0+r, columns j0..j0+cols < n.
                let dst = unsafe { std::slice::from_raw_parts_mut(out_ptr.get().add((i0 + r) * n + j0), cols) };
                let src = &acc[r * acc_rs..r * acc_rs + cols];
                let sw = &w.scales[j0..j0 + cols];
                match bias {
                    Some(b) => {
                        dst.iter_mut().zip(src).zip(sw).zip(&b[j0..j0 + cols]).for_each(|(((o, &v), &s), &b)| {
                            *o = v as f32 * sx * s + b;
                        })
                    }
                    None => dst.iter_mut().zip(src).zip(sw).for_each(|((o, &v), &s)| *o = v as f32 * sx * s),
                }
                dst.iter_mut().for_each(|y| *y = post(*y));
            }
        })
    });
}

/// W8A16: `out[m, n] = x · dequant(W)ᵀ (+ bias)` in f32, widening blocks of 256 output rows at a
/// time inside the product (`crate::ops::matmul::gemm_general`). Equal to an f32 GEMM on
/// [`QuantizedMatrix::dequantize`] up to f32 summation order.
pub fn gemm_w8a16<W: DequantRows>(x: &[f32], m: usize, k: usize, w: &W, bias: Option<&[f32]>, out: &mut [f32]) {
    let [n, wk] = w.shape();
    assert_eq!(k, wk, "x has {k} features, the weight expects {wk}");
    gemm_decoded(x, m, k, n, |s, l, buf| w.dequantize_rows(s, l, buf), bias, out);
}

#[cfg(test)]
// Naive references index like the math they transcribe.
#[allow(clippy::needless_range_loop)]
pub(crate) mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    pub(crate) fn randn(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        // Sum of uniforms: cheap, roughly normal, deterministic.
        (0..n).map(|_| (0..4).map(|_| rng.random::<f32>() - 0.5).sum::<f32>() * 1.7).collect()
    }

    fn naive_i64(a: &[i8], b: &[i8], m: usize, n: usize, k: usize) -> Vec<i64> {
        let mut out = vec![0i64; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k).map(|kk| a[i * k + kk] as i64 * b[j * k + kk] as i64).sum();
            }
        }
        out
    }

    fn f32_ref(x: &[f32], w: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
        let mut out = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k).map(|kk| x[i * k + kk] as f64 * w[j * k + kk] as f64).sum::<f64>() as f32;
            }
        }
        out
    }

    fn rel_err(got: &[f32], want: &[f32]) -> f64 {
        let num: f64 = got.iter().zip(want).map(|(a, b)| ((a - b) as f64).powi(2)).sum();
        let den: f64 = want.iter().map(|b| (*b as f64).powi(2)).sum();
        (num / den.max(1e-30)).sqrt()
    }

    const SHAPES: [(usize, usize, usize); 7] =
        [(1, 1, 1), (1, 5, 17), (3, 1, 7), (13, 37, 45), (97, 20, 33), (7, 1031, 16), (100, 1100, 300)];

    #[test]
    fn weight_round_trip_is_within_half_a_step() {
        let (rows, cols) = (37, 53);
        let mut w = randn(rows * cols, 1);
        w[5 * cols..6 * cols].fill(0.0); // an all-zero row
        w[7 * cols + 3] = 40.0; // an outlier
        let q = QuantizedMatrix::quantize_per_row_symmetric(&w, rows, cols);
        assert_eq!(q.scales[5], 0.0);
        assert!(q.data[5 * cols..6 * cols].iter().all(|&v| v == 0));
        assert!(q.data.iter().all(|&v| v != i8::MIN));
        let d = q.dequantize();
        for r in 0..rows {
            let row = &w[r * cols..(r + 1) * cols];
            let amax = row.iter().fold(0.0f32, |a, &x| a.max(x.abs()));
            assert_eq!(
                q.data[r * cols..(r + 1) * cols].iter().map(|v| v.unsigned_abs()).max(),
                Some(if amax > 0.0 { 127 } else { 0 })
            );
            for c in 0..cols {
                let err = (d[r * cols + c] - row[c]).abs();
                assert!(
                    err <= q.scales[r] * 0.5 * (1.0 + 1e-5) + 1e-12,
                    "row {r} col {c}: err {err} step {}",
                    q.scales[r]
                );
            }
        }
        // Ties go to even: 0.5 and 1.5 steps (scale 1 since absmax 127).
        let t = vec![0.5f32, 1.5, 2.5, -0.5, -2.5, 127.0];
        let qt = QuantizedMatrix::quantize_per_row_symmetric(&t, 1, 6);
        assert_eq!(qt.data, [0, 2, 2, 0, -2, 127]);
        // Packed rows dequantize like the plain ones.
        let p = PackedInt8::from_quantized(&q);
        let mut pd = Vec::new();
        p.dequantize_rows(0, rows, &mut pd);
        assert_eq!(pd, d);
    }

    #[test]
    fn int_gemm_is_exact_on_every_path() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for &(m, k, n) in &SHAPES {
            let mut a: Vec<i8> = (0..m * k).map(|_| rng.random_range(-127..=127)).collect();
            let mut b: Vec<i8> = (0..n * k).map(|_| rng.random_range(-127..=127)).collect();
            // Extremes (an all −127 activation row against all ±127 weight rows) stress the
            // saturation-free argument of the AVX2 path and the offset of the VNNI ones.
            a[..k].fill(-127);
            b[..k].fill(127);
            if n > 1 {
                b[k..2 * k].fill(-127);
            }
            let want = naive_i64(&a, &b, m, n, k);
            let q = QuantizedMatrix { rows: n, cols: k, data: b.clone(), scales: vec![1.0; n] };
            let w = PackedInt8::from_quantized(&q);
            for isa in Isa::available() {
                let mut data = vec![0i8; m * w.kp];
                for i in 0..m {
                    data[i * w.kp..i * w.kp + k].copy_from_slice(&a[i * k..(i + 1) * k]);
                }
                let acts = QuantizedActs::from_codes(isa, m, w.kp, data, vec![1.0; m]);
                let got = std::sync::Mutex::new(vec![i64::MIN; m * n]);
                int_gemm(isa, &acts, &w, |i0, j0, rows, cols, acc, acc_rs| {
                    let mut g = got.lock().unwrap();
                    for r in 0..rows {
                        for c in 0..cols {
                            g[(i0 + r) * n + j0 + c] = acc[r * acc_rs + c] as i64;
                        }
                    }
                });
                assert_eq!(got.into_inner().unwrap(), want, "{} m={m} k={k} n={n}", isa.name());
            }
        }
    }

    #[test]
    fn w8a8_is_bit_identical_across_paths_and_close_to_f32() {
        for (si, &(m, k, n)) in SHAPES.iter().enumerate() {
            let x = randn(m * k, 10 + si as u64);
            let wf = randn(n * k, 20 + si as u64);
            let bias = randn(n, 30);
            let w = PackedInt8::quantize(&wf, n, k);
            for act in [ActQuant::PerToken, ActQuant::PerTensor, ActQuant::Static(0.02)] {
                let mut reference = vec![0.0; m * n];
                gemm_w8a8_with(Isa::Scalar, &x, m, k, &w, act, None, Some(&bias), &mut reference);
                for isa in Isa::available() {
                    let mut got = vec![f32::NAN; m * n];
                    gemm_w8a8_with(isa, &x, m, k, &w, act, None, Some(&bias), &mut got);
                    let same = got.iter().zip(&reference).all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "{} differs from scalar at m={m} k={k} n={n} {act:?}", isa.name());
                }
                if act == ActQuant::PerToken && k >= 16 {
                    let mut want = f32_ref(&x, &wf, m, n, k);
                    want.iter_mut().enumerate().for_each(|(i, v)| *v += bias[i % n]);
                    let e = rel_err(&reference, &want);
                    assert!(e < 0.02, "W8A8 relative error {e} at m={m} k={k} n={n}");
                }
            }
        }
    }

    #[test]
    fn w8a8_dequant_formula_is_exact() {
        // out = acc · sx · sw (+ b), with acc from the naive integer product.
        let (m, k, n) = (5, 70, 19);
        let x = randn(m * k, 3);
        let wf = randn(n * k, 4);
        let q = QuantizedMatrix::quantize_per_row_symmetric(&wf, n, k);
        let w = PackedInt8::from_quantized(&q);
        let acts = QuantizedActs::quantize(Isa::Scalar, &x, m, k, k, ActQuant::PerToken, None);
        let acc = naive_i64(&acts.data, &q.data, m, n, k);
        let mut got = vec![0.0; m * n];
        gemm_w8a8(&x, m, k, &w, ActQuant::PerToken, None, None, &mut got);
        for i in 0..m {
            for j in 0..n {
                let want = acc[i * n + j] as i32 as f32 * acts.scales[i] * q.scales[j];
                assert_eq!(got[i * n + j].to_bits(), want.to_bits(), "({i},{j})");
            }
        }
    }

    #[test]
    fn smoothing_is_fused_and_static_scales_saturate() {
        let (m, k, n) = (9, 40, 21);
        let mut x = randn(m * k, 5);
        x[3] = 60.0; // outlier channel 3 in row 0
        let wf = randn(n * k, 6);
        let w = PackedInt8::quantize(&wf, n, k);
        let inv: Vec<f32> = (0..k).map(|j| 1.0 / (1.0 + (j % 5) as f32)).collect();
        let pre: Vec<f32> = x.iter().enumerate().map(|(i, &v)| v * inv[i % k]).collect();
        for isa in Isa::available() {
            let (mut a, mut b) = (vec![0.0; m * n], vec![0.0; m * n]);
            gemm_w8a8_with(isa, &x, m, k, &w, ActQuant::PerToken, Some(&inv), None, &mut a);
            gemm_w8a8_with(isa, &pre, m, k, &w, ActQuant::PerToken, None, None, &mut b);
            assert_eq!(a, b, "{}", isa.name());
        }
        // A static scale of 0.01 clips at 1.27: every |x| ≥ 1.27 becomes ±127.
        let acts = QuantizedActs::quantize(Isa::Scalar, &x, m, k, k, ActQuant::Static(0.01), None);
        for (q, &v) in acts.data.iter().zip(&x) {
            if v.abs() >= 1.27 {
                assert_eq!(q.unsigned_abs(), 127);
            }
        }
        // A zero activation row gets scale 0 and a zero output.
        let z = vec![0.0; k];
        let mut o = vec![1.0; n];
        gemm_w8a8(&z, 1, k, &w, ActQuant::PerToken, None, None, &mut o);
        assert!(o.iter().all(|&v| v == 0.0));
    }

    #[test]
    fn w8a16_matches_f32_on_dequantized_weights() {
        for &(m, k, n) in &[(1, 1, 1), (13, 37, 300), (64, 129, 513), (2050, 3, 5)] {
            let x = randn(m * k, 8);
            let wf = randn(n * k, 9);
            let bias = randn(n, 10);
            let q = QuantizedMatrix::quantize_per_row_symmetric(&wf, n, k);
            let mut want = f32_ref(&x, &q.dequantize(), m, n, k);
            want.iter_mut().enumerate().for_each(|(i, v)| *v += bias[i % n]);
            let mut got = vec![0.0; m * n];
            gemm_w8a16(&x, m, k, &q, Some(&bias), &mut got);
            let mut got_packed = vec![0.0; m * n];
            gemm_w8a16(&x, m, k, &PackedInt8::from_quantized(&q), Some(&bias), &mut got_packed);
            assert_eq!(got, got_packed);
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() <= 1e-4 * (1.0 + w.abs()), "{g} vs {w}");
            }
        }
    }
}
