//! Micro-kernels over [`super::packed`] panels, continuing each output's chain over the tile's
//! slice of reduction units:
//! - f32: `acc[r, c] = fma(a[r, kk], w[c, kk], acc[r, c])` for each `kk` in order;
//! - bf16 pairs: `acc = ftz(fma(a_hi, w_hi, acc))`, then `acc = ftz(fma(a_lo, w_lo, acc))` per
//!   pair, the semantics of `vdpbf16ps` (the odd element first; each bf16 × bf16 product is exact
//!   in f32, so the fma rounds once, like the instruction's add; `ftz` flushes a subnormal result
//!   to signed zero, as the instruction does regardless of MXCSR).
//!
//! Each micro-kernel loads its accumulator block, runs the chain over the slice with the block
//! in registers (activations broadcast from their rows in place, weights streamed from the
//! panel), and stores it back, so slices continue one chain. One per [`FloatIsa`]; the SIMD
//! ones vectorize across output columns only, never across the reduction, hence identical bits.

use super::packed::{FloatIsa, NR};

/// One block of work: `rows` activation rows × `panels` weight panels over a `kc`-unit slice
/// (`U`: an f32, or a bf16 pair as `u32`, low half the even element).
pub(crate) struct Tile<U> {
    /// First activation row at the slice start: `a[r·a_rs + kk]`.
    pub a: *const U,
    pub a_rs: usize,
    pub rows: usize,
    /// First panel, advanced to the slice start; panels are `w_ps` units apart.
    pub w: *const U,
    pub w_ps: usize,
    pub panels: usize,
    pub kc: usize,
    /// `acc[r·acc_rs + NR·p + c]`, continued (callers zero it before the first slice).
    pub acc: *mut f32,
    pub acc_rs: usize,
}

/// Runs an f32 `tile` on `isa`.
///
/// # Safety
/// All pointers must address the extents described in [`Tile`], and `isa.is_available()`.
pub(crate) unsafe fn run_f32(isa: FloatIsa, t: &Tile<f32>) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        FloatIsa::Avx2 => x86::avx2(t),
        #[cfg(target_arch = "x86_64")]
        FloatIsa::Avx512 | FloatIsa::Avx512Bf16 => x86::avx512(t),
        _ => scalar(t),
    }
}

/// Runs a bf16-pair `tile` on `isa`.
///
/// # Safety
/// As [`run_f32`].
pub(crate) unsafe fn run_bf16(isa: FloatIsa, t: &Tile<u32>) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        FloatIsa::Avx2 => x86::avx2_bf16(t),
        #[cfg(target_arch = "x86_64")]
        FloatIsa::Avx512 => x86::avx512_bf16_widened(t),
        #[cfg(target_arch = "x86_64")]
        FloatIsa::Avx512Bf16 => x86::avx512_dpbf16(t),
        _ => scalar_bf16(t),
    }
}

/// The high (odd) element of a bf16 pair, as f32.
fn hi(u: u32) -> f32 {
    f32::from_bits(u & 0xffff_0000)
}

/// The low (even) element of a bf16 pair, as f32.
fn lo(u: u32) -> f32 {
    f32::from_bits(u << 16)
}

/// A subnormal flushed to zero of the same sign.
fn ftz(v: f32) -> f32 {
    if v.is_subnormal() {
        0.0f32.copysign(v)
    } else {
        v
    }
}

/// The bf16 reference: the pair chain in plain loops (also the non-x86 path).
unsafe fn scalar_bf16(t: &Tile<u32>) {
    for p in 0..t.panels {
        let w = std::slice::from_raw_parts(t.w.add(p * t.w_ps), t.kc * NR);
        for r in 0..t.rows {
            let a = std::slice::from_raw_parts(t.a.add(r * t.a_rs), t.kc);
            let acc = std::slice::from_raw_parts_mut(t.acc.add(r * t.acc_rs + p * NR), NR);
            for (&au, wk) in a.iter().zip(w.chunks_exact(NR)) {
                let (ah, al) = (hi(au), lo(au));
                acc.iter_mut().zip(wk).for_each(|(o, &wu)| *o = ftz(al.mul_add(lo(wu), ftz(ah.mul_add(hi(wu), *o)))));
            }
        }
    }
}

/// The f32 reference: plain `mul_add` loops (also the non-x86 path).
unsafe fn scalar(t: &Tile<f32>) {
    for p in 0..t.panels {
        let w = std::slice::from_raw_parts(t.w.add(p * t.w_ps), t.kc * NR);
        for r in 0..t.rows {
            let a = std::slice::from_raw_parts(t.a.add(r * t.a_rs), t.kc);
            let acc = std::slice::from_raw_parts_mut(t.acc.add(r * t.acc_rs + p * NR), NR);
            for (&av, wk) in a.iter().zip(w.chunks_exact(NR)) {
                acc.iter_mut().zip(wk).for_each(|(o, &wv)| *o = av.mul_add(wv, *o));
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Tile, NR};
    use std::arch::x86_64::*;

    /// Rows per AVX2 bf16 micro-kernel: 8 accumulators + 4 widened weight vectors + 2 widened
    /// broadcasts + the flush temporaries.
    const MR_AVX2_BF16: usize = 4;

    /// Rows per AVX2 micro-kernel: 6 rows × 2 ymm accumulators + 2 weight vectors + 1 broadcast
    /// use 15 of the 16 ymm registers.
    const MR_AVX2: usize = 6;
    /// Rows per AVX-512 micro-kernel, two panels at a time: 24 zmm accumulators + 2 weight
    /// vectors + 1 broadcast of the 32.
    const MR_AVX512: usize = 12;

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn avx2(t: &Tile<f32>) {
        for p in 0..t.panels {
            let w = t.w.add(p * t.w_ps);
            let mut r0 = 0;
            while r0 < t.rows {
                let rows = MR_AVX2.min(t.rows - r0);
                let a = t.a.add(r0 * t.a_rs);
                let acc = t.acc.add(r0 * t.acc_rs + p * NR);
                by_rows!(rows, avx2_mk, a, t.a_rs, w, t.kc, acc, t.acc_rs);
                r0 += rows;
            }
        }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn avx2_mk<const MR: usize>(
        a: *const f32,
        a_rs: usize,
        w: *const f32,
        kc: usize,
        acc: *mut f32,
        acc_rs: usize,
    ) {
        let mut c = [[_mm256_setzero_ps(); 2]; MR];
        for (r, cr) in c.iter_mut().enumerate() {
            cr[0] = _mm256_loadu_ps(acc.add(r * acc_rs));
            cr[1] = _mm256_loadu_ps(acc.add(r * acc_rs + 8));
        }
        for kk in 0..kc {
            let w0 = _mm256_loadu_ps(w.add(kk * NR));
            let w1 = _mm256_loadu_ps(w.add(kk * NR + 8));
            for (r, cr) in c.iter_mut().enumerate() {
                let x = _mm256_broadcast_ss(&*a.add(r * a_rs + kk));
                cr[0] = _mm256_fmadd_ps(x, w0, cr[0]);
                cr[1] = _mm256_fmadd_ps(x, w1, cr[1]);
            }
        }
        for (r, cr) in c.iter().enumerate() {
            _mm256_storeu_ps(acc.add(r * acc_rs), cr[0]);
            _mm256_storeu_ps(acc.add(r * acc_rs + 8), cr[1]);
        }
    }

    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn avx512(t: &Tile<f32>) {
        let mut p = 0;
        while p < t.panels {
            let two = p + 1 < t.panels;
            let w0 = t.w.add(p * t.w_ps);
            // A single trailing panel reads its own floats twice and discards the second result.
            let w1 = if two { t.w.add((p + 1) * t.w_ps) } else { w0 };
            let mut r0 = 0;
            while r0 < t.rows {
                let rows = MR_AVX512.min(t.rows - r0);
                let a = t.a.add(r0 * t.a_rs);
                let acc = t.acc.add(r0 * t.acc_rs + p * NR);
                by_rows!(rows, avx512_mk, a, t.a_rs, w0, w1, two, t.kc, acc, t.acc_rs);
                r0 += rows;
            }
            p += 2;
        }
    }

    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn avx512_mk<const MR: usize>(
        a: *const f32,
        a_rs: usize,
        w0: *const f32,
        w1: *const f32,
        two: bool,
        kc: usize,
        acc: *mut f32,
        acc_rs: usize,
    ) {
        let mut c = load512::<MR>(acc, acc_rs, two);
        for kk in 0..kc {
            let v0 = _mm512_loadu_ps(w0.add(kk * NR));
            let v1 = _mm512_loadu_ps(w1.add(kk * NR));
            for (r, cr) in c.iter_mut().enumerate() {
                let x = _mm512_set1_ps(*a.add(r * a_rs + kk));
                cr[0] = _mm512_fmadd_ps(x, v0, cr[0]);
                cr[1] = _mm512_fmadd_ps(x, v1, cr[1]);
            }
        }
        store512::<MR>(&c, acc, acc_rs, two);
    }

    /// The pair layout's two halves as f32 lanes: (high, low).
    #[inline(always)]
    unsafe fn split512(v: __m512i) -> (__m512, __m512) {
        let hi = _mm512_castsi512_ps(_mm512_and_si512(v, _mm512_set1_epi32(0xffff_0000u32 as i32)));
        (hi, _mm512_castsi512_ps(_mm512_slli_epi32::<16>(v)))
    }

    /// `ftz(fma(a, w, acc))` on 16 lanes: subnormal results keep only their sign bit.
    #[inline(always)]
    unsafe fn fma_ftz512(a: __m512, w: __m512, acc: __m512) -> __m512 {
        let r = _mm512_fmadd_ps(a, w, acc);
        // fpclass 0x20: denormal.
        let sub = _mm512_fpclass_ps_mask::<0x20>(r);
        _mm512_mask_and_ps(r, sub, r, _mm512_set1_ps(-0.0))
    }

    #[target_feature(enable = "avx512f,avx512dq")]
    pub(super) unsafe fn avx512_bf16_widened(t: &Tile<u32>) {
        let mut p = 0;
        while p < t.panels {
            let two = p + 1 < t.panels;
            let w0 = t.w.add(p * t.w_ps);
            let w1 = if two { t.w.add((p + 1) * t.w_ps) } else { w0 };
            let mut r0 = 0;
            while r0 < t.rows {
                let rows = MR_AVX512.min(t.rows - r0);
                let a = t.a.add(r0 * t.a_rs);
                let acc = t.acc.add(r0 * t.acc_rs + p * NR);
                by_rows!(rows, avx512_widened_mk, a, t.a_rs, w0, w1, two, t.kc, acc, t.acc_rs);
                r0 += rows;
            }
            p += 2;
        }
    }

    #[target_feature(enable = "avx512f,avx512dq")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn avx512_widened_mk<const MR: usize>(
        a: *const u32,
        a_rs: usize,
        w0: *const u32,
        w1: *const u32,
        two: bool,
        kc: usize,
        acc: *mut f32,
        acc_rs: usize,
    ) {
        let mut c = load512::<MR>(acc, acc_rs, two);
        for kk in 0..kc {
            let (h0, l0) = split512(_mm512_loadu_si512(w0.add(kk * NR) as *const _));
            let (h1, l1) = split512(_mm512_loadu_si512(w1.add(kk * NR) as *const _));
            for (r, cr) in c.iter_mut().enumerate() {
                let (ah, al) = split512(_mm512_set1_epi32(*a.add(r * a_rs + kk) as i32));
                cr[0] = fma_ftz512(al, l0, fma_ftz512(ah, h0, cr[0]));
                cr[1] = fma_ftz512(al, l1, fma_ftz512(ah, h1, cr[1]));
            }
        }
        store512::<MR>(&c, acc, acc_rs, two);
    }

    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn avx512_dpbf16(t: &Tile<u32>) {
        let mut p = 0;
        while p < t.panels {
            let two = p + 1 < t.panels;
            let w0 = t.w.add(p * t.w_ps);
            let w1 = if two { t.w.add((p + 1) * t.w_ps) } else { w0 };
            let mut r0 = 0;
            while r0 < t.rows {
                let rows = MR_AVX512.min(t.rows - r0);
                let a = t.a.add(r0 * t.a_rs);
                let acc = t.acc.add(r0 * t.acc_rs + p * NR);
                by_rows!(rows, avx512_dpbf16_mk, a, t.a_rs, w0, w1, two, t.kc, acc, t.acc_rs);
                r0 += rows;
            }
            p += 2;
        }
    }

    #[target_feature(enable = "avx512f,avx512bf16")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn avx512_dpbf16_mk<const MR: usize>(
        a: *const u32,
        a_rs: usize,
        w0: *const u32,
        w1: *const u32,
        two: bool,
        kc: usize,
        acc: *mut f32,
        acc_rs: usize,
    ) {
        let mut c = load512::<MR>(acc, acc_rs, two);
        for kk in 0..kc {
            let v0: __m512bh = std::mem::transmute(_mm512_loadu_si512(w0.add(kk * NR) as *const _));
            let v1: __m512bh = std::mem::transmute(_mm512_loadu_si512(w1.add(kk * NR) as *const _));
            for (r, cr) in c.iter_mut().enumerate() {
                let x: __m512bh = std::mem::transmute(_mm512_set1_epi32(*a.add(r * a_rs + kk) as i32));
                cr[0] = _mm512_dpbf16_ps(cr[0], x, v0);
                cr[1] = _mm512_dpbf16_ps(cr[1], x, v1);
            }
        }
        store512::<MR>(&c, acc, acc_rs, two);
    }

    #[inline(always)]
    unsafe fn load512<const MR: usize>(acc: *const f32, acc_rs: usize, two: bool) -> [[__m512; 2]; MR] {
        let mut c = [[_mm512_setzero_ps(); 2]; MR];
        for (r, cr) in c.iter_mut().enumerate() {
            cr[0] = _mm512_loadu_ps(acc.add(r * acc_rs));
            if two {
                cr[1] = _mm512_loadu_ps(acc.add(r * acc_rs + NR));
            }
        }
        c
    }

    #[inline(always)]
    unsafe fn store512<const MR: usize>(c: &[[__m512; 2]; MR], acc: *mut f32, acc_rs: usize, two: bool) {
        for (r, cr) in c.iter().enumerate() {
            _mm512_storeu_ps(acc.add(r * acc_rs), cr[0]);
            if two {
                _mm512_storeu_ps(acc.add(r * acc_rs + NR), cr[1]);
            }
        }
    }

    /// The pair layout's two halves as f32 lanes: (high, low).
    #[inline(always)]
    unsafe fn split256(v: __m256i) -> (__m256, __m256) {
        let hi = _mm256_castsi256_ps(_mm256_and_si256(v, _mm256_set1_epi32(0xffff_0000u32 as i32)));
        (hi, _mm256_castsi256_ps(_mm256_slli_epi32::<16>(v)))
    }

    /// `ftz(fma(a, w, acc))` on 8 lanes: lanes below the smallest normal keep only their sign.
    #[inline(always)]
    unsafe fn fma_ftz256(a: __m256, w: __m256, acc: __m256) -> __m256 {
        let r = _mm256_fmadd_ps(a, w, acc);
        let sign = _mm256_set1_ps(-0.0);
        let tiny = _mm256_cmp_ps::<_CMP_LT_OQ>(_mm256_andnot_ps(sign, r), _mm256_set1_ps(f32::MIN_POSITIVE));
        _mm256_blendv_ps(r, _mm256_and_ps(r, sign), tiny)
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn avx2_bf16(t: &Tile<u32>) {
        for p in 0..t.panels {
            let w = t.w.add(p * t.w_ps);
            let mut r0 = 0;
            while r0 < t.rows {
                let rows = MR_AVX2_BF16.min(t.rows - r0);
                let a = t.a.add(r0 * t.a_rs);
                let acc = t.acc.add(r0 * t.acc_rs + p * NR);
                by_rows!(rows, avx2_bf16_mk, a, t.a_rs, w, t.kc, acc, t.acc_rs);
                r0 += rows;
            }
        }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn avx2_bf16_mk<const MR: usize>(
        a: *const u32,
        a_rs: usize,
        w: *const u32,
        kc: usize,
        acc: *mut f32,
        acc_rs: usize,
    ) {
        let mut c = [[_mm256_setzero_ps(); 2]; MR];
        for (r, cr) in c.iter_mut().enumerate() {
            cr[0] = _mm256_loadu_ps(acc.add(r * acc_rs));
            cr[1] = _mm256_loadu_ps(acc.add(r * acc_rs + 8));
        }
        for kk in 0..kc {
            let (h0, l0) = split256(_mm256_loadu_si256(w.add(kk * NR) as *const __m256i));
            let (h1, l1) = split256(_mm256_loadu_si256(w.add(kk * NR + 8) as *const __m256i));
            for (r, cr) in c.iter_mut().enumerate() {
                let (ah, al) = split256(_mm256_set1_epi32(*a.add(r * a_rs + kk) as i32));
                cr[0] = fma_ftz256(al, l0, fma_ftz256(ah, h0, cr[0]));
                cr[1] = fma_ftz256(al, l1, fma_ftz256(ah, h1, cr[1]));
            }
        }
        for (r, cr) in c.iter().enumerate() {
            _mm256_storeu_ps(acc.add(r * acc_rs), cr[0]);
            _mm256_storeu_ps(acc.add(r * acc_rs + 8), cr[1]);
        }
    }
}
