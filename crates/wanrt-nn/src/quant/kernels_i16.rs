//! 16-bit integer micro-kernels: `acc[r, c] += Σ_k a[r, k] · w[k, c]` in exact `i32`, for the
//! 8-bit attention's P·V product (`a` = probability codes, `w` = value codes).
//!
//! Packed layout of `w` (built by [`pack_columns`]): columns in panels of [`NR`] = 16, the
//! reduction dimension in pairs (zero padded to even length). Element `p·w_ps + g·32 + c·2 + t`
//! holds `w[2g + t, 16p + c]`: one 64-byte line per (panel, pair), i.e. two `vpmaddwd` ymm
//! operands or one `vpdpwssd` zmm operand.
//!
//! Exactness: callers bound `|a| ≤ A` and `|w| ≤ W` with `k · A · W ≤ i32::MAX` per call (the
//! attention flushes to f32 after every key tile), so no path can overflow and every path
//! returns the bits of [`Isa::Scalar`]. Without VNNI, `vpmaddwd` does 16 multiply-adds per µop,
//! twice the 8 of an f32 FMA.

use super::Isa;

/// Output columns per packed panel.
pub(crate) const NR: usize = 16;

/// One block of work: `rows` rows of `a` times `panels` panels over `pairs` reduction pairs.
pub(crate) struct Tile16 {
    /// `a[r·a_rs + kk]`, `kk < 2·pairs` (rows zero padded to even length).
    pub a: *const i16,
    pub a_rs: usize,
    pub rows: usize,
    /// First panel, already advanced to the first pair; panels are `w_ps` elements apart.
    pub w: *const i16,
    pub w_ps: usize,
    pub panels: usize,
    pub pairs: usize,
    /// `acc[r·acc_rs + 16·p + c]`, added to (callers zero it first).
    pub acc: *mut i32,
    pub acc_rs: usize,
}

/// Packs a row-major `[k, n]` matrix of codes into the panel layout, with `k` zero padded to
/// even and `n` to a multiple of [`NR`].
pub(crate) fn pack_columns(src: &[i16], k: usize, n: usize) -> Vec<i16> {
    assert_eq!(src.len(), k * n, "pack_columns: expected k·n = {k}·{n} codes");
    let kp = k.div_ceil(2) * 2;
    let panels = n.div_ceil(NR);
    let mut out = vec![0i16; panels * NR * kp];
    for (p, panel) in out.chunks_exact_mut(NR * kp).enumerate() {
        let cols = NR.min(n - p * NR);
        for (kk, row) in src.chunks_exact(n).enumerate() {
            let line = &mut panel[(kk / 2) * 2 * NR..][..2 * NR];
            for (c, &x) in row[p * NR..p * NR + cols].iter().enumerate() {
                line[c * 2 + kk % 2] = x;
            }
        }
    }
    out
}

/// Runs `tile` on `isa` (the AVX2 kernel also serves AVX-VNNI CPUs, which all have AVX2).
///
/// # Safety
/// All pointers must address the extents described in [`Tile16`], and `isa.is_available()`.
pub(crate) unsafe fn run(isa: Isa, t: &Tile16) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::AvxVnni => x86::avx2(t),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni => x86::avx512vnni(t),
        _ => scalar(t),
    }
}

/// The reference: plain integer loops (also the non-x86 path).
unsafe fn scalar(t: &Tile16) {
    for p in 0..t.panels {
        let w = std::slice::from_raw_parts(t.w.add(p * t.w_ps), t.pairs * 2 * NR);
        for r in 0..t.rows {
            let a = std::slice::from_raw_parts(t.a.add(r * t.a_rs), t.pairs * 2);
            let mut sums = [0i32; NR];
            for (wg, ag) in w.chunks_exact(2 * NR).zip(a.chunks_exact(2)) {
                for (s, wc) in sums.iter_mut().zip(wg.chunks_exact(2)) {
                    *s += ag[0] as i32 * wc[0] as i32 + ag[1] as i32 * wc[1] as i32;
                }
            }
            let acc = std::slice::from_raw_parts_mut(t.acc.add(r * t.acc_rs + p * NR), NR);
            acc.iter_mut().zip(sums).for_each(|(o, s)| *o += s);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Tile16, NR};
    use std::arch::x86_64::*;

    /// Rows per AVX2 micro-kernel: 6 rows × 2 accumulators + 2 value vectors + a broadcast and a
    /// product temporary fill the 16 ymm registers.
    const MR_AVX2: usize = 6;
    /// Rows per AVX-512 micro-kernel (one zmm accumulator per row holds a whole panel).
    const MR_AVX512: usize = 12;

    /// The pair `a[2g], a[2g+1]` as one 32-bit lane value.
    #[inline(always)]
    unsafe fn pair(p: *const i16) -> i32 {
        std::ptr::read_unaligned(p as *const i32)
    }

    /// Splits `t` into micro-kernel calls of at most `mr` rows per panel.
    #[inline(always)]
    unsafe fn for_blocks(t: &Tile16, mr: usize, mut f: impl FnMut(usize, *const i16, *const i16, *mut i32)) {
        for p in 0..t.panels {
            let w = t.w.add(p * t.w_ps);
            let mut r0 = 0;
            while r0 < t.rows {
                let rows = mr.min(t.rows - r0);
                f(rows, t.a.add(r0 * t.a_rs), w, t.acc.add(r0 * t.acc_rs + p * NR));
                r0 += rows;
            }
        }
    }

    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn avx2(t: &Tile16) {
        for_blocks(t, MR_AVX2, |rows, a, w, acc| by_rows!(rows, avx2_mk, a, t.a_rs, w, t.pairs, acc, t.acc_rs));
    }

    #[target_feature(enable = "avx2")]
    unsafe fn avx2_mk<const MR: usize>(
        a: *const i16,
        a_rs: usize,
        w: *const i16,
        pairs: usize,
        acc: *mut i32,
        acc_rs: usize,
    ) {
        let mut c = [[_mm256_setzero_si256(); 2]; MR];
        for g in 0..pairs {
            let w0 = _mm256_loadu_si256(w.add(g * 2 * NR) as *const __m256i);
            let w1 = _mm256_loadu_si256(w.add(g * 2 * NR + NR) as *const __m256i);
            for (r, cr) in c.iter_mut().enumerate() {
                let s = _mm256_set1_epi32(pair(a.add(r * a_rs + 2 * g)));
                cr[0] = _mm256_add_epi32(cr[0], _mm256_madd_epi16(s, w0));
                cr[1] = _mm256_add_epi32(cr[1], _mm256_madd_epi16(s, w1));
            }
        }
        for (r, cr) in c.iter().enumerate() {
            for (v, &cv) in cr.iter().enumerate() {
                let dst = acc.add(r * acc_rs + 8 * v) as *mut __m256i;
                _mm256_storeu_si256(dst, _mm256_add_epi32(_mm256_loadu_si256(dst), cv));
            }
        }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn avx512vnni(t: &Tile16) {
        for_blocks(t, MR_AVX512, |rows, a, w, acc| by_rows!(rows, avx512_mk, a, t.a_rs, w, t.pairs, acc, t.acc_rs));
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn avx512_mk<const MR: usize>(
        a: *const i16,
        a_rs: usize,
        w: *const i16,
        pairs: usize,
        acc: *mut i32,
        acc_rs: usize,
    ) {
        let mut c = [_mm512_setzero_si512(); MR];
        for g in 0..pairs {
            let wv = _mm512_loadu_si512(w.add(g * 2 * NR) as *const _);
            for (r, cr) in c.iter_mut().enumerate() {
                *cr = _mm512_dpwssd_epi32(*cr, _mm512_set1_epi32(pair(a.add(r * a_rs + 2 * g))), wv);
            }
        }
        for (r, &cv) in c.iter().enumerate() {
            let dst = acc.add(r * acc_rs);
            _mm512_storeu_si512(dst as *mut _, _mm512_add_epi32(_mm512_loadu_si512(dst as *const _), cv));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_path_matches_the_plain_product() {
        // Odd k (padding pair), n not a multiple of 16, rows beyond one micro-kernel.
        let (m, k, n): (usize, usize, usize) = (29, 37, 40);
        let a: Vec<i16> = (0..m * k).map(|i| ((i * 7919) % 32767) as i16 / 2).collect();
        let wv: Vec<i16> = (0..k * n).map(|i| ((i * 104_729) % 1023) as i16 - 511).collect();
        let kp = k.div_ceil(2) * 2;
        let mut ap = vec![0i16; m * kp];
        for r in 0..m {
            ap[r * kp..r * kp + k].copy_from_slice(&a[r * k..(r + 1) * k]);
        }
        let packed = pack_columns(&wv, k, n);
        let panels = n.div_ceil(NR);
        let want: Vec<i64> =
            (0..m * n).map(|i| (0..k).map(|kk| a[(i / n) * k + kk] as i64 * wv[kk * n + i % n] as i64).sum()).collect();
        for isa in Isa::available() {
            let mut acc = vec![0i32; m * panels * NR];
            let t = Tile16 {
                a: ap.as_ptr(),
                a_rs: kp,
                rows: m,
                w: packed.as_ptr(),
                w_ps: NR * kp,
                panels,
                pairs: kp / 2,
                acc: acc.as_mut_ptr(),
                acc_rs: panels * NR,
            };
            // SAFETY: buffers sized as the tile describes; the path is available.
            unsafe { run(isa, &t) };
            for i in 0..m * n {
                assert_eq!(acc[(i / n) * panels * NR + i % n] as i64, want[i], "{} at {i}", isa.name());
            }
        }
    }
}
