//! 8-bit attention in the manner of SageAttention (Zhang et al., ICLR 2025, "SageAttention:
//! accurate 8-bit attention for plug-and-play inference acceleration"), on CPU.
//!
//! `softmax(q·kᵀ·scale)·v` for `q: [B, Lq, H, D]`, `k, v: [B, Lk, H, D]`, as
//! [`crate::ops::attention::attention`] without bias, with:
//! - **K smoothing**: each (batch, head)'s mean key over tokens is subtracted first. That adds
//!   the same `q·mean` to every score of a query row, to which softmax is invariant, and removes
//!   the channel-wise offsets that make K hard to quantize (Wan's keys have them).
//! - **int8 Q and K** with one symmetric scale per block of `scale_block` tokens per head
//!   ([`AttnQuantOptions`]; SageAttention uses 64-token blocks to keep GPU dequantization cheap,
//!   on CPU each score is dequantized anyway, so the default is per token, which halves the error:
//!   measured 0.019 vs 0.037 relative L2 in `close_to_f32_attention_with_outlier_channels`),
//!   `Q·Kᵀ` accumulated exactly in i32 by the W8A8 micro-kernels (any [`Isa`] gives the same
//!   bits), dequantized as `acc · (sq · scale · log2 e) · sk`.
//! - **online softmax** (FlashAttention style, base 2) over key tiles of [`KEY_TILE`], so a worker
//!   holds `QK_BLOCK × KEY_TILE` scores, never a full row: memory-bounded at 32k tokens.
//! - **P·V in 16-bit integers**: each query row's probabilities in a key tile become 14-bit codes
//!   relative to the tile's largest one (SageAttention2 likewise scales P per block), V gets 10-bit
//!   codes per channel, and the product accumulates exactly in i32 (`vpmaddwd`: 16 multiply-adds
//!   per µop, twice an f32 FMA; `vpdpwssd` with AVX-512 VNNI) before one f32 scaling per tile.
//!   The softmax denominator sums the same codes, so every output row is an exact convex
//!   combination of the quantized values. Error: 0.019 relative L2 on the outlier test, as with
//!   f32 P·V (the int8 Q·Kᵀ error dominates); an earlier, discarded 8-bit P·V measured 0.028.
//! - Q, K and V are read straight from `[B, L, H, D]` and the output written back in that layout:
//!   no head-major copies.
//!
//! The exponential is a degree-6 polynomial of 2^f on [−½, ½] (relative error < 3·10⁻⁷, far below
//! the int8 score error), in plain f32 code shared by every path.

use super::activation::exp2_clamped;
use super::{has_avx2, lane_max, round_to_int, SyncPtr};
use crate::error::{Error, Result};
use crate::quant::int8::{PackedInt8, QuantizedActs, QuantizedMatrix, QMAX};
use crate::quant::kernels::{self, Sink, Tile, NR};
use crate::quant::kernels_i16::{self, Tile16};
use crate::quant::{round_half_even, Isa};
use crate::HostTensor;
use rayon::prelude::*;

/// Query rows per parallel task (and the largest scale block): each packed key and value tile
/// is reused by 128 rows (measured ≈5% faster than 64 at 4096 tokens).
pub const QK_BLOCK: usize = 128;
/// Keys per online-softmax step (a multiple of 16, the weight panel width). With 128 query rows
/// a worker's i32 and f32 score tiles take 256 KB, within a small (256 KB–1 MB) L2.
pub const KEY_TILE: usize = 256;

/// Knobs of the 8-bit attention; `Default` is the recommended setting.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttnQuantOptions {
    /// Integer path ([`Isa::detect`] by default); results are bit-identical on every path.
    pub isa: Isa,
    /// Tokens per Q/K quantization scale, a divisor of [`QK_BLOCK`]: 1 = per token (default),
    /// 64 = SageAttention's per-block scales.
    pub scale_block: usize,
    /// Subtract the mean key per (batch, head) before quantizing (default on).
    pub smooth_k: bool,
}

impl Default for AttnQuantOptions {
    fn default() -> Self {
        AttnQuantOptions { isa: Isa::detect(), scale_block: 1, smooth_k: true }
    }
}

/// 8-bit attention with the default [`AttnQuantOptions`].
pub fn attention_quant(q: &HostTensor, k: &HostTensor, v: &HostTensor, scale: f32) -> Result<HostTensor> {
    attention_quant_opts(q, k, v, scale, &AttnQuantOptions::default())
}

/// 8-bit attention on a chosen instruction set (tests run every available one and compare bits).
pub fn attention_quant_with(
    isa: Isa,
    q: &HostTensor,
    k: &HostTensor,
    v: &HostTensor,
    scale: f32,
) -> Result<HostTensor> {
    attention_quant_opts(q, k, v, scale, &AttnQuantOptions { isa, ..AttnQuantOptions::default() })
}

/// `2^x` for `x ≤ 0` (inputs below −125 give ≈ 2⁻¹²⁵, i.e. nothing next to the row's 1).
#[inline(always)]
fn exp2_neg(x: f32) -> f32 {
    exp2_clamped(x.max(-125.0))
}

/// Largest probability code: P is quantized per (query row, key tile) relative to the tile's
/// largest probability, to 14 bits.
const P_MAX: f32 = 16383.0;
/// Largest value code: V is quantized per (batch, head, channel) to 10 bits.
const V_MAX: f32 = 511.0;
// Exactness of the i16 P·V product: one key tile's sum of |p|·|v| codes fits in i32.
const _: () = assert!(KEY_TILE as u64 * P_MAX as u64 * V_MAX as u64 <= i32::MAX as u64);

/// A key tile whose best score is this far (base 2) below the row's running max adds less than
/// 2⁻¹⁰⁰ of the row's weight: its P·V is skipped.
const NEGLIGIBLE: f32 = -100.0;

/// One query row's share of a key tile, from [`row_step`].
struct RowStep {
    /// The row's running max after this tile (base-2 score units).
    m_new: f32,
    /// What one probability code is worth (0 when the tile is negligible).
    code_scale: f32,
    /// Σ codes: the tile's probability mass in code units.
    code_sum: i32,
}

/// One query row of one key tile: dequantizes the integer scores into `s` (base-2 units:
/// `acc · row_c · sk`, minus the VNNI offset `comp`), takes the running max `m_new`, and writes
/// the probabilities `2^(s − m_new)` as 14-bit codes relative to the tile's largest one. Written
/// as flat loops (the max through [`lane_max`]) so it vectorizes; every instruction set gets the
/// same bits.
#[inline(always)]
fn row_step_impl(
    acc: &[i32],
    comp: Option<&[i32]>,
    sk: &[f32],
    row_c: f32,
    m_old: f32,
    s: &mut [f32],
    codes: &mut [i16],
) -> RowStep {
    match comp {
        Some(cm) => {
            s.iter_mut().zip(acc).zip(sk).zip(cm).for_each(|(((s, &a), &k), &c)| *s = (a - c) as f32 * row_c * k)
        }
        None => s.iter_mut().zip(acc).zip(sk).for_each(|((s, &a), &k)| *s = a as f32 * row_c * k),
    }
    let tile_max = lane_max(s, f32::NEG_INFINITY, |x| x);
    let m_new = if tile_max > m_old { tile_max } else { m_old };
    if tile_max - m_new < NEGLIGIBLE {
        codes.fill(0);
        return RowStep { m_new, code_scale: 0.0, code_sum: 0 };
    }
    let p_max = exp2_neg(tile_max - m_new);
    let inv = P_MAX / p_max;
    s.iter_mut().for_each(|x| *x = exp2_neg(*x - m_new) * inv);
    codes.iter_mut().zip(s.iter()).for_each(|(c, &y)| *c = round_to_int(y.min(P_MAX)) as i16);
    // An integer sum: exact in any order.
    let code_sum = codes.iter().map(|&x| x as i32).sum();
    RowStep { m_new, code_scale: p_max / P_MAX, code_sum }
}

/// [`row_step_impl`] compiled for AVX2 when `wide` (the CPU has it), else for the baseline.
#[allow(clippy::too_many_arguments)]
fn row_step(
    wide: bool,
    acc: &[i32],
    comp: Option<&[i32]>,
    sk: &[f32],
    row_c: f32,
    m_old: f32,
    s: &mut [f32],
    codes: &mut [i16],
) -> RowStep {
    // Same IEEE operations either way, in 8-wide registers (no FMA: Rust never fuses).
    super::vectorized_if(wide, || row_step_impl(acc, comp, sk, row_c, m_old, s, codes))
}

/// Values of one (batch, head), quantized per channel and packed for the i16 P·V kernel.
struct PackedValues {
    /// `[panels][Lk/2 pairs][16][2]` codes (see `kernels_i16`).
    data: Vec<i16>,
    /// Per channel: `absmax / V_MAX` (0 for an all-zero channel).
    scales: Vec<f32>,
}

impl PackedValues {
    /// `row(token)` is the head's `d` values of one token, wherever they live.
    fn quantize<'a>(row: impl Fn(usize) -> &'a [f32], lk: usize, d: usize) -> PackedValues {
        let mut amax = vec![0.0f32; d];
        for t in 0..lk {
            amax.iter_mut().zip(row(t)).for_each(|(m, &x)| *m = m.max(x.abs()));
        }
        let inv: Vec<f32> = amax.iter().map(|&m| if m > 0.0 { V_MAX / m } else { 0.0 }).collect();
        let mut codes = vec![0i16; lk * d];
        for (t, dst) in codes.chunks_exact_mut(d).enumerate() {
            dst.iter_mut().zip(row(t)).zip(&inv).for_each(|((c, &x), &i)| {
                *c = round_half_even(x * i).clamp(-V_MAX, V_MAX) as i16;
            });
        }
        PackedValues {
            data: kernels_i16::pack_columns(&codes, lk, d),
            scales: amax.iter().map(|&m| m / V_MAX).collect(),
        }
    }
}

/// Quantizes `n` rows of `d` values (`row(i)`, minus `mean` when given) with one scale per
/// `blk` rows into `dst: [n, kp]`, `scales: [n]`.
#[allow(clippy::too_many_arguments)]
fn quantize_blocks<'a>(
    row: impl Fn(usize) -> &'a [f32],
    n: usize,
    kp: usize,
    blk: usize,
    mean: Option<&[f32]>,
    dst: &mut [i8],
    scales: &mut [f32],
) {
    let centered = |x: f32, c: usize| match mean {
        Some(m) => x - m[c],
        None => x,
    };
    for (b0, (s, dblk)) in (0..n).step_by(blk).zip(scales.chunks_mut(blk).zip(dst.chunks_mut(blk * kp))) {
        let rows = b0..b0 + s.len();
        let amax = rows
            .clone()
            .fold(0.0f32, |m, i| row(i).iter().enumerate().fold(m, |m, (c, &x)| m.max(centered(x, c).abs())));
        let (scale, inv) = if amax > 0.0 { (amax / QMAX, QMAX / amax) } else { (0.0, 0.0) };
        s.fill(scale);
        for (drow, i) in dblk.chunks_mut(kp).zip(rows) {
            for (c, (o, &x)) in drow.iter_mut().zip(row(i)).enumerate() {
                *o = round_half_even(centered(x, c) * inv).clamp(-QMAX, QMAX) as i8;
            }
        }
    }
}

/// 8-bit attention with explicit options.
pub fn attention_quant_opts<'a>(
    q: &'a HostTensor,
    k: &'a HostTensor,
    v: &'a HostTensor,
    scale: f32,
    opts: &AttnQuantOptions,
) -> Result<HostTensor> {
    let isa = opts.isa;
    let blk = opts.scale_block;
    if blk == 0 || !QK_BLOCK.is_multiple_of(blk) {
        return Err(Error::Msg(format!("attention_quant: scale_block {blk} must divide {QK_BLOCK}")));
    }
    let (b, lq, h, d) = match q.shape() {
        &[b, l, h, d] => (b, l, h, d),
        s => return Err(Error::shape("attention_quant q", "[B, Lq, H, D]", s)),
    };
    let lk = k.shape().get(1).copied().unwrap_or(0);
    k.expect_shape("attention_quant k", &[b, lk, h, d])?;
    v.expect_shape("attention_quant v", &[b, lk, h, d])?;
    if !isa.is_available() {
        return Err(Error::Msg(format!("attention_quant: instruction set {} not available", isa.name())));
    }
    if lk == 0 || d == 0 || lq == 0 {
        return HostTensor::new([b, lq, h, d], vec![0.0; b * lq * h * d]);
    }
    let kp = d.div_ceil(4) * 4;
    // Token `t` of head `hi` in batch `bi` of a `[B, L, H, D]` tensor.
    let head_row = |x: &'a HostTensor, l: usize, bh: usize, t: usize| -> &'a [f32] {
        let (bi, hi) = (bh / h, bh % h);
        &x.data()[((bi * l + t) * h + hi) * d..][..d]
    };

    // Keys: subtract the per-head mean, quantize per block, pack once per head. Values: quantize
    // per channel and pack once per head.
    let packed: Vec<(PackedInt8, PackedValues)> = (0..b * h)
        .into_par_iter()
        .map(|bh| {
            let mut mean = vec![0.0f32; d];
            if opts.smooth_k {
                (0..lk).for_each(|t| mean.iter_mut().zip(head_row(k, lk, bh, t)).for_each(|(m, &x)| *m += x));
                mean.iter_mut().for_each(|m| *m /= lk as f32);
            }
            let mut codes = vec![0i8; lk * d];
            let mut scales = vec![0.0f32; lk];
            quantize_blocks(|t| head_row(k, lk, bh, t), lk, d, blk, Some(&mean), &mut codes, &mut scales);
            let keys = PackedInt8::from_quantized(&QuantizedMatrix { rows: lk, cols: d, data: codes, scales });
            (keys, PackedValues::quantize(|t| head_row(v, lk, bh, t), lk, d))
        })
        .collect();

    let c = scale * std::f32::consts::LOG2_E;
    let mut out = vec![0.0f32; b * h * lq * d];
    let blocks_per_head = lq.div_ceil(QK_BLOCK);
    let out_ptr = SyncPtr(out.as_mut_ptr());
    let offset = isa.offsets_activations();
    let wide = has_avx2();
    let v_panels = d.div_ceil(kernels_i16::NR);
    let pv_rs = v_panels * kernels_i16::NR;
    let lk_pairs = lk.div_ceil(2);
    let init = || {
        let scores = (vec![0i32; QK_BLOCK * KEY_TILE], vec![0.0f32; QK_BLOCK * KEY_TILE]);
        (scores, vec![0i16; QK_BLOCK * KEY_TILE], vec![0i32; QK_BLOCK * pv_rs])
    };
    (0..b * h * blocks_per_head).into_par_iter().for_each_init(init, |((acc, s), p_codes, pv), task| {
        let (bh, qb) = (task / blocks_per_head, task % blocks_per_head);
        let q0 = qb * QK_BLOCK;
        let rows = QK_BLOCK.min(lq - q0);
        let (w, vals) = &packed[bh];
        // This task's queries (scale blocks align with the task since `blk` divides QK_BLOCK).
        let mut codes = vec![0i8; rows * kp];
        let mut sq = vec![0.0f32; rows];
        quantize_blocks(|i| head_row(q, lq, bh, q0 + i), rows, kp, blk, None, &mut codes, &mut sq);
        let qa = QuantizedActs::from_codes(isa, rows, kp, codes, sq);

        let mut o = vec![0.0f32; rows * d];
        let mut m_run = vec![f32::NEG_INFINITY; rows];
        let mut l_run = vec![0.0f32; rows];
        let mut code_scale = vec![0.0f32; rows];
        let mut j0 = 0;
        while j0 < lk {
            let kt = KEY_TILE.min(lk - j0);
            let panels = kt.div_ceil(NR);
            let acc_rs = panels * NR;
            acc[..rows * acc_rs].fill(0);
            let tile = Tile {
                a: qa.data.as_ptr(),
                aux: if qa.aux.is_empty() { std::ptr::null() } else { qa.aux.as_ptr() },
                a_rs: kp,
                rows,
                // SAFETY: j0 is a multiple of 16 (KEY_TILE is), so this is panel j0/16 < w.panels.
                w: unsafe { w.data.as_ptr().add((j0 / NR) * NR * kp) },
                w_ps: NR * kp,
                panels,
                groups: kp / 4,
                sink: Sink::Int { acc: acc.as_mut_ptr(), acc_rs },
            };
            // SAFETY: `rows` query rows of kp codes, `panels` packed panels from j0, an acc buffer of
            // QK_BLOCK × KEY_TILE ≥ rows × acc_rs; availability checked above.
            unsafe { kernels::run(isa, &tile) };
            let sk = &w.scales[j0..j0 + kt];
            let comp = &w.comp[j0..j0 + kt];
            // P codes rows are padded to an even length (the i16 kernel reads key pairs).
            let kt2 = kt.div_ceil(2) * 2;
            for r in 0..rows {
                let row_c = qa.scales[r] * c;
                let cm = if offset { Some(comp) } else { None };
                let codes_row = &mut p_codes[r * kt2..(r + 1) * kt2];
                codes_row[kt..].fill(0);
                let step = row_step(
                    wide,
                    &acc[r * acc_rs..r * acc_rs + kt],
                    cm,
                    sk,
                    row_c,
                    m_run[r],
                    &mut s[r * kt..(r + 1) * kt],
                    &mut codes_row[..kt],
                );
                let alpha = exp2_neg(m_run[r] - step.m_new);
                l_run[r] = l_run[r] * alpha + step.code_sum as f32 * step.code_scale;
                m_run[r] = step.m_new;
                code_scale[r] = step.code_scale;
                if alpha != 1.0 {
                    o[r * d..(r + 1) * d].iter_mut().for_each(|x| *x *= alpha);
                }
            }
            // o += P[rows, kt] · V[j0..j0+kt, :], exactly in i32 per tile, then scaled into f32.
            pv[..rows * pv_rs].fill(0);
            let pv_tile = Tile16 {
                a: p_codes.as_ptr(),
                a_rs: kt2,
                rows,
                // SAFETY: j0 is even (a multiple of KEY_TILE), so this is pair j0/2 of every panel.
                w: unsafe { vals.data.as_ptr().add(j0 * kernels_i16::NR) },
                w_ps: lk_pairs * 2 * kernels_i16::NR,
                panels: v_panels,
                pairs: kt2 / 2,
                acc: pv.as_mut_ptr(),
                acc_rs: pv_rs,
            };
            // SAFETY: `rows` code rows of kt2, v_panels panels of lk_pairs pairs from pair j0/2,
            // an acc buffer of QK_BLOCK × pv_rs; availability checked above.
            unsafe { kernels_i16::run(isa, &pv_tile) };
            for r in 0..rows {
                let cs = code_scale[r];
                let o_row = &mut o[r * d..(r + 1) * d];
                let a_row = &pv[r * pv_rs..r * pv_rs + d];
                o_row.iter_mut().zip(a_row).zip(&vals.scales).for_each(|((o, &a), &vs)| *o += a as f32 * cs * vs);
            }
            j0 += kt;
        }
        let (bi, hi) = (bh / h, bh % h);
        for r in 0..rows {
            // SAFETY: each (batch, head, query) row of `out` is written by exactly one task.
            let dst =
                unsafe { std::slice::from_raw_parts_mut(out_ptr.get().add(((bi * lq + q0 + r) * h + hi) * d), d) };
            let inv = 1.0 / l_run[r];
            dst.iter_mut().zip(&o[r * d..(r + 1) * d]).for_each(|(y, &x)| *y = x * inv);
        }
    });
    HostTensor::new([b, lq, h, d], out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::attention::{attention, ScoreBias};
    use crate::quant::int8::tests::randn;

    fn qkv(b: usize, lq: usize, lk: usize, h: usize, d: usize, outliers: bool) -> (HostTensor, HostTensor, HostTensor) {
        let mut q = randn(b * lq * h * d, 1);
        let mut k = randn(b * lk * h * d, 2);
        let v = randn(b * lk * h * d, 3);
        if outliers {
            // A few channels with large offsets and scales, as Wan's (and most DiTs') keys have.
            for (i, x) in k.iter_mut().enumerate() {
                match i % d {
                    3 => *x = *x * 4.0 + 12.0,
                    7 => *x -= 6.0,
                    _ => {}
                }
            }
            for (i, x) in q.iter_mut().enumerate() {
                if i % d == 5 {
                    *x *= 5.0;
                }
            }
        }
        let t = |l, x| HostTensor::new([b, l, h, d], x).unwrap();
        (t(lq, q), t(lk, k), t(lk, v))
    }

    fn rel_l2(got: &HostTensor, want: &HostTensor) -> f64 {
        got.nmse(want).unwrap().sqrt()
    }

    #[test]
    fn exp2_is_accurate() {
        for i in 0..=20_000 {
            let x = -(i as f32) * 0.005;
            let (got, want) = (exp2_neg(x), (x as f64).exp2());
            assert!(((got as f64) - want).abs() <= 3e-7 * want, "2^{x}: {got} vs {want}");
        }
        assert!(exp2_neg(f32::NEG_INFINITY) < 1e-37);
        assert_eq!(exp2_neg(0.0), 1.0);
    }

    #[test]
    fn softmax_step_is_identical_in_baseline_and_avx2_builds() {
        let n = 203; // not a multiple of the lane count
        let acc: Vec<i32> = (0..n as i32).map(|i| (i * 7919 % 4001) - 2000).collect();
        let comp: Vec<i32> = (0..n as i32).map(|i| i % 13 - 6).collect();
        let sk: Vec<f32> = (0..n).map(|i| 0.01 + (i % 7) as f32 * 0.003).collect();
        for cm in [None, Some(&comp[..])] {
            let (mut sa, mut sb) = (vec![0.0; n], vec![0.0; n]);
            let (mut ca, mut cb) = (vec![0i16; n], vec![0i16; n]);
            let ra = row_step(false, &acc, cm, &sk, 0.37, -1.5, &mut sa, &mut ca);
            let rb = row_step(has_avx2(), &acc, cm, &sk, 0.37, -1.5, &mut sb, &mut cb);
            assert_eq!(
                (ra.m_new.to_bits(), ra.code_scale.to_bits(), ra.code_sum),
                (rb.m_new.to_bits(), rb.code_scale.to_bits(), rb.code_sum)
            );
            assert_eq!(ca, cb);
            assert!(ca.iter().all(|&x| (0..=P_MAX as i16).contains(&x)));
            assert_eq!(
                ca.iter().copied().max(),
                Some(P_MAX as i16),
                "the tile's largest probability gets the top code"
            );
            assert_eq!(ra.code_sum, ca.iter().map(|&x| x as i32).sum::<i32>());
            // The codes are the probabilities 2^(s − m_new) in units of code_scale, rounded.
            for (i, &code) in ca.iter().enumerate() {
                let score = (acc[i] - cm.map_or(0, |c| c[i])) as f32 * 0.37 * sk[i];
                let p = ((score - ra.m_new) as f64).exp2();
                assert!((code as f64 * ra.code_scale as f64 - p).abs() <= 0.51 * ra.code_scale as f64 + 1e-6 * p);
                assert_eq!(code as f32, sa[i].round_ties_even());
            }
        }
        // A tile far below the running max contributes nothing.
        let (mut s, mut c) = (vec![0.0; n], vec![1i16; n]);
        let far = row_step(false, &acc, None, &sk, 0.37, 1000.0, &mut s, &mut c);
        assert_eq!((far.code_scale, far.code_sum), (0.0, 0));
        assert!(c.iter().all(|&x| x == 0));
    }

    #[test]
    fn close_to_f32_attention_with_outlier_channels() {
        let d = 64;
        let (q, k, v) = qkv(1, 200, 300, 2, d, true);
        let scale = 1.0 / (d as f32).sqrt();
        let want = attention(&q, &k, &v, scale, ScoreBias::default()).unwrap();
        let err = |scale_block, smooth_k| {
            let opts = AttnQuantOptions { scale_block, smooth_k, ..AttnQuantOptions::default() };
            rel_l2(&attention_quant_opts(&q, &k, &v, scale, &opts).unwrap(), &want)
        };
        // Measured: per token 0.019, per 64-token block 0.037, per block without K smoothing 0.065.
        let (per_token, per_block, unsmoothed) = (err(1, true), err(64, true), err(64, false));
        assert!(per_token < 0.025, "relative L2 error per token {per_token}");
        assert!(per_block < 0.045, "relative L2 error per block {per_block}");
        assert!(unsmoothed > 1.3 * per_block, "K smoothing should help: {unsmoothed} vs {per_block}");
        let (q2, k2, v2) = qkv(1, 130, 90, 3, 32, false);
        let want2 = attention(&q2, &k2, &v2, 0.2, ScoreBias::default()).unwrap();
        let e2 = rel_l2(&attention_quant(&q2, &k2, &v2, 0.2).unwrap(), &want2);
        assert!(e2 < 0.015, "relative L2 error without outliers {e2}");
        assert!(attention_quant_opts(&q2, &k2, &v2, 0.2, &AttnQuantOptions { scale_block: 3, ..Default::default() })
            .is_err());
    }

    #[test]
    fn identical_bits_on_every_isa_and_odd_shapes() {
        for &(b, lq, lk, h, d) in &[(1, 1, 1, 1, 1), (2, 70, 37, 3, 5), (1, 65, 300, 2, 16), (1, 129, 513, 1, 8)] {
            let (q, k, v) = qkv(b, lq, lk, h, d, true);
            for scale_block in [1, 64] {
                let opts = AttnQuantOptions { isa: Isa::Scalar, scale_block, smooth_k: true };
                let reference = attention_quant_opts(&q, &k, &v, 0.3, &opts).unwrap();
                let f32_ref = attention(&q, &k, &v, 0.3, ScoreBias::default()).unwrap();
                let e = rel_l2(&reference, &f32_ref);
                assert!(e < 0.06, "shape {:?} block {scale_block}: relative L2 error {e}", q.shape());
                for isa in Isa::available() {
                    let got = attention_quant_opts(&q, &k, &v, 0.3, &AttnQuantOptions { isa, ..opts }).unwrap();
                    let same = got.data().iter().zip(reference.data()).all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "{} differs from scalar for q {:?}, k {:?}", isa.name(), q.shape(), k.shape());
                }
            }
        }
    }
}
