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
//! - **P·V in f32** (the f32 GEMM), as SageAttention v1 keeps P·V in 16-bit: P is the error-
//!   sensitive operand and f32 costs nothing in accuracy.
//!
//! The exponential is a degree-6 polynomial of 2^f on [−½, ½] (relative error < 3·10⁻⁷, far below
//! the int8 score error), in plain f32 code shared by every path.

use super::activation::exp2_clamped;
use super::matmul::{gemm_general, Layout};
use super::{has_avx2, SyncPtr};
use crate::error::{Error, Result};
use crate::quant::int8::{PackedInt8, QuantizedActs, QuantizedMatrix, QMAX};
use crate::quant::kernels::{self, Tile, NR};
use crate::quant::{round_half_even, Isa};
use crate::Tensor;
use rayon::prelude::*;

/// Query rows per parallel task (and the largest scale block). 128 rows amortize the f32 P·V
/// GEMM's packing of each V tile better than 64 (measured ≈5% faster at 4096 tokens).
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
pub fn attention_quant(q: &Tensor, k: &Tensor, v: &Tensor, scale: f32) -> Result<Tensor> {
    attention_quant_opts(q, k, v, scale, &AttnQuantOptions::default())
}

/// 8-bit attention on a chosen instruction set (tests run every available one and compare bits).
pub fn attention_quant_with(isa: Isa, q: &Tensor, k: &Tensor, v: &Tensor, scale: f32) -> Result<Tensor> {
    attention_quant_opts(q, k, v, scale, &AttnQuantOptions { isa, ..AttnQuantOptions::default() })
}

/// `2^x` for `x ≤ 0` (inputs below −125 give ≈ 2⁻¹²⁵, i.e. nothing next to the row's 1).
#[inline(always)]
fn exp2_neg(x: f32) -> f32 {
    exp2_clamped(x.max(-125.0))
}

/// Lanes of the explicit reductions in [`row_step`]: a fixed summation order, so the result
/// does not depend on how wide the compiler's vectors are.
const LANES: usize = 8;

/// One query row of one key tile: dequantizes the integer scores into `p` (base-2 units:
/// `acc · row_c · sk`, minus the VNNI offset `comp`), takes the running max `m_new` and replaces
/// `p` by `2^(s − m_new)`. Returns `(m_new, Σ p)`. Written as flat loops with [`LANES`]-wide
/// accumulators so it vectorizes; every instruction set gets the same bits.
#[inline(always)]
fn row_step_impl(acc: &[i32], comp: Option<&[i32]>, sk: &[f32], row_c: f32, m_old: f32, p: &mut [f32]) -> (f32, f32) {
    match comp {
        Some(cm) => {
            p.iter_mut().zip(acc).zip(sk).zip(cm).for_each(|(((s, &a), &k), &c)| *s = (a - c) as f32 * row_c * k)
        }
        None => p.iter_mut().zip(acc).zip(sk).for_each(|((s, &a), &k)| *s = a as f32 * row_c * k),
    }
    let max2 = |a: f32, b: f32| if b > a { b } else { a };
    let mut mx = [f32::NEG_INFINITY; LANES];
    let mut chunks = p.chunks_exact(LANES);
    for ch in &mut chunks {
        mx.iter_mut().zip(ch).for_each(|(m, &x)| *m = max2(*m, x));
    }
    let m_new = chunks.remainder().iter().chain(&mx).fold(m_old, |a, &x| max2(a, x));
    p.iter_mut().for_each(|s| *s = exp2_neg(*s - m_new));
    let mut sums = [0.0f32; LANES];
    let mut chunks = p.chunks_exact(LANES);
    for ch in &mut chunks {
        sums.iter_mut().zip(ch).for_each(|(a, &x)| *a += x);
    }
    let sum = sums.iter().chain(chunks.remainder()).fold(0.0f32, |a, &x| a + x);
    (m_new, sum)
}

/// [`row_step_impl`] compiled for AVX2 when `wide` (the CPU has it), else for the baseline.
fn row_step(
    wide: bool,
    acc: &[i32],
    comp: Option<&[i32]>,
    sk: &[f32],
    row_c: f32,
    m_old: f32,
    p: &mut [f32],
) -> (f32, f32) {
    // Same IEEE operations either way, in 8-wide registers (no FMA: Rust never fuses).
    super::vectorized_if(wide, || row_step_impl(acc, comp, sk, row_c, m_old, p))
}

/// Quantizes a `[L, d]` slab with one scale per `blk` rows into `dst: [L, kp]`, `scales: [L]`.
fn quantize_blocks(src: &[f32], d: usize, kp: usize, blk: usize, dst: &mut [i8], scales: &mut [f32]) {
    for ((s, dblk), sblk) in scales.chunks_mut(blk).zip(dst.chunks_mut(blk * kp)).zip(src.chunks(blk * d)) {
        let amax = sblk.iter().fold(0.0f32, |m, &x| m.max(x.abs()));
        let (scale, inv) = if amax > 0.0 { (amax / QMAX, QMAX / amax) } else { (0.0, 0.0) };
        s.fill(scale);
        for (drow, srow) in dblk.chunks_mut(kp).zip(sblk.chunks(d)) {
            for (o, &x) in drow.iter_mut().zip(srow) {
                *o = round_half_even(x * inv).clamp(-QMAX, QMAX) as i8;
            }
        }
    }
}

/// 8-bit attention with explicit options.
pub fn attention_quant_opts(q: &Tensor, k: &Tensor, v: &Tensor, scale: f32, opts: &AttnQuantOptions) -> Result<Tensor> {
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
        return Tensor::new([b, lq, h, d], vec![0.0; b * lq * h * d]);
    }
    // Head-major copies make every (batch, head) slab contiguous.
    let qh = q.permute(&[0, 2, 1, 3])?;
    let kh = k.permute(&[0, 2, 1, 3])?;
    let vh = v.permute(&[0, 2, 1, 3])?;
    let kp = d.div_ceil(4) * 4;

    // Keys: subtract the per-head mean, quantize per block, pack once per head.
    let packed: Vec<PackedInt8> = (0..b * h)
        .into_par_iter()
        .map(|bh| {
            let slab = &kh.data()[bh * lk * d..(bh + 1) * lk * d];
            let mut mean = vec![0.0f32; d];
            slab.chunks_exact(d).for_each(|r| mean.iter_mut().zip(r).for_each(|(m, &x)| *m += x));
            mean.iter_mut().for_each(|m| *m /= lk as f32);
            if !opts.smooth_k {
                mean.fill(0.0);
            }
            let centered: Vec<f32> = slab.iter().enumerate().map(|(i, &x)| x - mean[i % d]).collect();
            let mut codes = vec![0i8; lk * d];
            let mut scales = vec![0.0f32; lk];
            quantize_blocks(&centered, d, d, blk, &mut codes, &mut scales);
            PackedInt8::from_quantized(&QuantizedMatrix { rows: lk, cols: d, data: codes, scales })
        })
        .collect();

    let c = scale * std::f32::consts::LOG2_E;
    let mut out = vec![0.0f32; b * h * lq * d];
    let blocks_per_head = lq.div_ceil(QK_BLOCK);
    let out_ptr = SyncPtr(out.as_mut_ptr());
    let offset = isa.offsets_activations();
    let wide = has_avx2();
    let init = || (vec![0i32; QK_BLOCK * KEY_TILE], vec![0.0f32; QK_BLOCK * KEY_TILE]);
    (0..b * h * blocks_per_head).into_par_iter().for_each_init(init, |(acc, p), task| {
        let (bh, qb) = (task / blocks_per_head, task % blocks_per_head);
        let q0 = qb * QK_BLOCK;
        let rows = QK_BLOCK.min(lq - q0);
        let w = &packed[bh];
        let v_slab = &vh.data()[bh * lk * d..(bh + 1) * lk * d];
        // This task's queries (scale blocks align with the task since `blk` divides QK_BLOCK).
        let mut codes = vec![0i8; rows * kp];
        let mut sq = vec![0.0f32; rows];
        quantize_blocks(&qh.data()[(bh * lq + q0) * d..(bh * lq + q0 + rows) * d], d, kp, blk, &mut codes, &mut sq);
        let qa = QuantizedActs::from_codes(isa, rows, kp, codes, sq);

        let mut o = vec![0.0f32; rows * d];
        let mut m_run = vec![f32::NEG_INFINITY; rows];
        let mut l_run = vec![0.0f32; rows];
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
                acc: acc.as_mut_ptr(),
                acc_rs,
            };
            // SAFETY: `rows` query rows of kp codes, `panels` packed panels from j0, an acc buffer of
            // QK_BLOCK × KEY_TILE ≥ rows × acc_rs; availability checked above.
            unsafe { kernels::run(isa, &tile) };
            let sk = &w.scales[j0..j0 + kt];
            let comp = &w.comp[j0..j0 + kt];
            for r in 0..rows {
                let row_c = qa.scales[r] * c;
                let a_row = &acc[r * acc_rs..r * acc_rs + kt];
                let p_row = &mut p[r * kt..(r + 1) * kt];
                let cm = if offset { Some(comp) } else { None };
                let (m_new, sum) = row_step(wide, a_row, cm, sk, row_c, m_run[r], p_row);
                let alpha = exp2_neg(m_run[r] - m_new);
                l_run[r] = l_run[r] * alpha + sum;
                m_run[r] = m_new;
                if alpha != 1.0 {
                    o[r * d..(r + 1) * d].iter_mut().for_each(|x| *x *= alpha);
                }
            }
            // o += P[rows, kt] · V[j0..j0+kt, :]
            let v_tile = &v_slab[j0 * d..(j0 + kt) * d];
            gemm_general(
                &mut o,
                d,
                &p[..rows * kt],
                Layout::row_major(kt),
                v_tile,
                Layout::row_major(d),
                rows,
                d,
                kt,
                true,
                true,
            );
            j0 += kt;
        }
        // SAFETY: each task writes a disjoint `rows × d` block of `out`.
        let dst = unsafe { std::slice::from_raw_parts_mut(out_ptr.get().add((bh * lq + q0) * d), rows * d) };
        for r in 0..rows {
            let inv = 1.0 / l_run[r];
            dst[r * d..(r + 1) * d].iter_mut().zip(&o[r * d..(r + 1) * d]).for_each(|(y, &x)| *y = x * inv);
        }
    });
    Tensor::new([b, h, lq, d], out)?.permute(&[0, 2, 1, 3])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::attention::{attention, AttentionBias};
    use crate::quant::int8::tests::randn;

    fn qkv(b: usize, lq: usize, lk: usize, h: usize, d: usize, outliers: bool) -> (Tensor, Tensor, Tensor) {
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
        let t = |l, x| Tensor::new([b, l, h, d], x).unwrap();
        (t(lq, q), t(lk, k), t(lk, v))
    }

    fn rel_l2(got: &Tensor, want: &Tensor) -> f64 {
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
            let (mut a, mut b) = (vec![0.0; n], vec![0.0; n]);
            let ra = row_step(false, &acc, cm, &sk, 0.37, -1.5, &mut a);
            let rb = row_step(has_avx2(), &acc, cm, &sk, 0.37, -1.5, &mut b);
            assert_eq!((ra.0.to_bits(), ra.1.to_bits()), (rb.0.to_bits(), rb.1.to_bits()));
            assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()));
            assert!(a.iter().all(|&x| x > 0.0 && x <= 1.0));
        }
    }

    #[test]
    fn close_to_f32_attention_with_outlier_channels() {
        let d = 64;
        let (q, k, v) = qkv(1, 200, 300, 2, d, true);
        let scale = 1.0 / (d as f32).sqrt();
        let want = attention(&q, &k, &v, scale, AttentionBias::default()).unwrap();
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
        let want2 = attention(&q2, &k2, &v2, 0.2, AttentionBias::default()).unwrap();
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
                let f32_ref = attention(&q, &k, &v, 0.3, AttentionBias::default()).unwrap();
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
