//! Integer micro-kernels: `acc[r, c] += Σ_k a[r, k] · w[c, k]` in exact `i32`, one per [`Isa`].
//!
//! Packed weight layout (shared by every path, built once by `PackedInt8`): output columns are
//! grouped in panels of [`NR`] = 16, the reduction dimension in groups of 4 (`k` zero-padded to
//! `kp`, a multiple of 4). Byte `p·(16·kp) + g·64 + c·4 + t` holds `w[16p + c, 4g + t]`: one
//! 64-byte line per (panel, group), exactly one `vpdpbusd` zmm operand or two ymm ones.
//!
//! Activations are row-major `[m, kp]` i8 plus an auxiliary byte array per path:
//! - AVX2 (no VNNI): `aux = |a|` as u8. `vpmaddubsw(|a|, sign(w, a))` multiplies u8 by i8 and
//!   adds adjacent pairs into i16 with saturation; with |a| ≤ 127 and |w| ≤ 127 a pair sum is at
//!   most 2·127·127 = 32 258 < 32 767, so it never saturates and `|a|·sign(w,a) = a·w` exactly.
//!   (This is why quantizers clamp to ±127 and never emit −128.) `vpmaddwd` by 1 widens to i32.
//! - VNNI (AVX-VNNI, AVX-512 VNNI): `aux = a + 128` as u8 (`a ^ 0x80`); `vpdpbusd` sums four
//!   u8·i8 products into i32 without saturation, giving `Σ a·w + 128·Σ w`; the caller subtracts
//!   `128·colsum(w)` (kept in `PackedInt8`). Bounds: |Σ| ≤ kp·255·127, so `kp ≤ 66 000` (asserted
//!   by `PackedInt8`).
//! - Scalar: `aux` unused.
//!
//! Where the sums go is the tile's [`Sink`]: exact `i32` totals over the whole tile, or, for
//! weights with one scale per block of [`BLOCK`] values (ggml's Q8_0), block sums scaled into
//! f32 at the end of every block (the ggml `Q8_0 × Q8_0` product, with f32 scales). The block
//! sink's arithmetic is the same sequence of f32 operations on every path (`acc + s · (sw · sx)`,
//! never fused), so it keeps the bit identity.

use super::Isa;

/// Output columns per weight panel.
pub(crate) const NR: usize = 16;

/// Largest padded reduction length for which the offset (u8) accumulation cannot overflow i32.
pub(crate) const MAX_K: usize = (i32::MAX as usize) / (255 * 127);

/// Values per scale block of a [`Sink::Blocks`] product (ggml's `QK8_0`).
pub(crate) const BLOCK: usize = 32;
/// 4-deep groups per scale block.
const BLOCK_GROUPS: usize = BLOCK / 4;

/// Where a tile's sums go.
#[derive(Clone, Copy)]
pub(crate) enum Sink {
    /// Exact totals added to `acc[r·acc_rs + 16·p + c]` (callers zero it first).
    Int { acc: *mut i32, acc_rs: usize },
    /// Block-scaled sums accumulated in f32 (see [`BlockSink`]).
    Blocks(BlockSink),
}

/// After every block `b` of [`BLOCK`] reduction values, for row `r` and column `16·p + c`:
/// `acc[r·acc_rs + 16·p + c] += (Σ − comp) as f32 · (sw[p·sw_ps + 16·b + c] · sx[r·sx_rs + b])`,
/// where `Σ` is the block's integer sum and `comp` (same layout as `sw`) the VNNI paths'
/// `128·Σ_block w` (null on the other paths).
#[derive(Clone, Copy)]
pub(crate) struct BlockSink {
    pub acc: *mut f32,
    pub acc_rs: usize,
    pub sx: *const f32,
    pub sx_rs: usize,
    pub sw: *const f32,
    pub comp: *const i32,
    pub sw_ps: usize,
}

impl Sink {
    /// The sink of the micro-kernel starting at row `r` and panel `p` of the tile.
    ///
    /// # Safety
    /// `r` and `p` must lie inside the tile the sink describes.
    unsafe fn at(self, r: usize, p: usize) -> Sink {
        match self {
            Sink::Int { acc, acc_rs } => Sink::Int { acc: acc.add(r * acc_rs + p * NR), acc_rs },
            Sink::Blocks(b) => Sink::Blocks(BlockSink {
                acc: b.acc.add(r * b.acc_rs + p * NR),
                sx: b.sx.add(r * b.sx_rs),
                sw: b.sw.add(p * b.sw_ps),
                comp: if b.comp.is_null() { b.comp } else { b.comp.add(p * b.sw_ps) },
                ..b
            }),
        }
    }

    /// Groups summed before each flush of the micro-kernel's registers.
    fn groups_per_flush(&self, groups: usize) -> usize {
        match self {
            // At least one, so an empty tile still steps through its (empty) group range.
            Sink::Int { .. } => groups.max(1),
            Sink::Blocks(_) => BLOCK_GROUPS,
        }
    }
}

/// One block of work: `rows` activation rows times `panels` weight panels over `groups` 4-groups.
pub(crate) struct Tile {
    /// First activation row: `a[r·a_rs + kk]` (i8) and `aux[r·a_rs + kk]` (path-dependent u8).
    pub a: *const i8,
    // Only the SIMD paths read it (the scalar path multiplies the i8 codes).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub aux: *const u8,
    pub a_rs: usize,
    pub rows: usize,
    /// First panel, already advanced to the first group; panels are `w_ps` bytes apart.
    pub w: *const i8,
    pub w_ps: usize,
    pub panels: usize,
    pub groups: usize,
    /// Where the sums go; with [`Sink::Blocks`], `groups` is a multiple of the block's groups.
    pub sink: Sink,
}

/// Runs `tile` on `isa`.
///
/// # Safety
/// All pointers must address the extents described in [`Tile`], and `isa.is_available()`.
pub(crate) unsafe fn run(isa: Isa, t: &Tile) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => x86::avx2(t),
        #[cfg(target_arch = "x86_64")]
        Isa::AvxVnni => x86::avxvnni(t),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni => x86::avx512vnni(t),
        _ => scalar(t),
    }
}

/// The reference: plain integer loops (also the non-x86 path).
unsafe fn scalar(t: &Tile) {
    let per = t.sink.groups_per_flush(t.groups);
    for p in 0..t.panels {
        let w = std::slice::from_raw_parts(t.w.add(p * t.w_ps), t.groups * 64);
        for r in 0..t.rows {
            let a = std::slice::from_raw_parts(t.a.add(r * t.a_rs), t.groups * 4);
            let sink = t.sink.at(r, p);
            for (b, wb) in w.chunks(per * 64).enumerate() {
                let mut sums = [0i32; NR];
                for (g, wg) in wb.chunks_exact(64).enumerate() {
                    let ag = &a[4 * (b * per + g)..][..4];
                    for (c, wc) in wg.chunks_exact(4).enumerate() {
                        sums[c] += ag.iter().zip(wc).map(|(&x, &y)| x as i32 * y as i32).sum::<i32>();
                    }
                }
                match sink {
                    Sink::Int { acc, .. } => {
                        let acc = std::slice::from_raw_parts_mut(acc, NR);
                        acc.iter_mut().zip(sums).for_each(|(o, s)| *o += s);
                    }
                    Sink::Blocks(s) => {
                        // The scalar codes are signed: no offset to take back.
                        let acc = std::slice::from_raw_parts_mut(s.acc, NR);
                        let sw = std::slice::from_raw_parts(s.sw.add(b * NR), NR);
                        let sx = *s.sx.add(b);
                        for ((o, v), &w) in acc.iter_mut().zip(sums).zip(sw) {
                            *o += v as f32 * (w * sx);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Sink, Tile, NR};
    use std::arch::x86_64::*;

    /// Rows per AVX2 micro-kernel: 4 rows × 2 ymm accumulators + 2 weight vectors + 2
    /// broadcasts + the constant and temporaries fit the 16 ymm registers.
    const MR_AVX2: usize = 4;
    /// Rows per AVX-VNNI micro-kernel (12 accumulators, no temporaries needed).
    const MR_AVXVNNI: usize = 6;
    /// Rows per AVX-512 micro-kernel, two panels at a time (16 of the 32 zmm accumulate).
    const MR_AVX512: usize = 8;

    #[inline(always)]
    unsafe fn bcast4(p: *const u8) -> i32 {
        std::ptr::read_unaligned(p as *const i32)
    }

    /// Group `g`'s 64-byte weight line of a panel, as two ymm halves.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn line_256(w: *const i8, g: usize) -> [__m256i; 2] {
        [_mm256_loadu_si256(w.add(g * 64) as *const __m256i), _mm256_loadu_si256(w.add(g * 64 + 32) as *const __m256i)]
    }

    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn avx2(t: &Tile) {
        for p in 0..t.panels {
            let w = t.w.add(p * t.w_ps);
            let mut r0 = 0;
            while r0 < t.rows {
                let rows = MR_AVX2.min(t.rows - r0);
                let a = t.a.add(r0 * t.a_rs);
                let aux = t.aux.add(r0 * t.a_rs);
                by_rows!(rows, avx2_mk, a, aux, t.a_rs, w, t.groups, t.sink.at(r0, p));
                r0 += rows;
            }
        }
    }

    #[target_feature(enable = "avx2")]
    unsafe fn avx2_mk<const MR: usize>(
        a: *const i8,
        aabs: *const u8,
        a_rs: usize,
        w: *const i8,
        groups: usize,
        sink: Sink,
    ) {
        let ones = _mm256_set1_epi16(1);
        by_blocks_256::<MR>(w, groups, sink, |c, [w0, w1], g| {
            for (r, cr) in c.iter_mut().enumerate() {
                let s = _mm256_set1_epi32(bcast4(a.add(r * a_rs + 4 * g) as *const u8));
                let u = _mm256_set1_epi32(bcast4(aabs.add(r * a_rs + 4 * g)));
                let p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(u, _mm256_sign_epi8(w0, s)), ones);
                let p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(u, _mm256_sign_epi8(w1, s)), ones);
                cr[0] = _mm256_add_epi32(cr[0], p0);
                cr[1] = _mm256_add_epi32(cr[1], p1);
            }
        });
    }

    /// The 256-bit micro-kernels' loop: `step(acc, line, g)` adds group `g` (its weight line
    /// given) to the registers, which are flushed to the sink after each block of groups.
    #[inline(always)]
    unsafe fn by_blocks_256<const MR: usize>(
        w: *const i8,
        groups: usize,
        sink: Sink,
        mut step: impl FnMut(&mut [[__m256i; 2]; MR], [__m256i; 2], usize),
    ) {
        let per = sink.groups_per_flush(groups);
        for (b, g0) in (0..groups).step_by(per).enumerate() {
            let mut c = [[_mm256_setzero_si256(); 2]; MR];
            for g in g0..g0 + per {
                step(&mut c, line_256(w, g), g);
            }
            flush_256::<MR>(&c, sink, b);
        }
    }

    /// Adds a 256-bit micro-kernel's registers to its sink (block `b` for a block sink).
    /// Inlined: a call would spill the accumulators once per 32-value block.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn flush_256<const MR: usize>(c: &[[__m256i; 2]; MR], sink: Sink, b: usize) {
        match sink {
            Sink::Int { acc, acc_rs } => {
                for (r, cr) in c.iter().enumerate() {
                    for (v, &cv) in cr.iter().enumerate() {
                        let dst = acc.add(r * acc_rs + 8 * v) as *mut __m256i;
                        _mm256_storeu_si256(dst, _mm256_add_epi32(_mm256_loadu_si256(dst), cv));
                    }
                }
            }
            Sink::Blocks(s) => {
                for (r, cr) in c.iter().enumerate() {
                    let sx = _mm256_set1_ps(*s.sx.add(r * s.sx_rs + b));
                    for (v, &cv) in cr.iter().enumerate() {
                        let at = b * NR + 8 * v;
                        let sum = if s.comp.is_null() {
                            cv
                        } else {
                            _mm256_sub_epi32(cv, _mm256_loadu_si256(s.comp.add(at) as *const __m256i))
                        };
                        let scale = _mm256_mul_ps(_mm256_loadu_ps(s.sw.add(at)), sx);
                        let dst = s.acc.add(r * s.acc_rs + 8 * v);
                        let term = _mm256_mul_ps(_mm256_cvtepi32_ps(sum), scale);
                        _mm256_storeu_ps(dst, _mm256_add_ps(_mm256_loadu_ps(dst), term));
                    }
                }
            }
        }
    }

    #[target_feature(enable = "avx2,avxvnni")]
    pub(super) unsafe fn avxvnni(t: &Tile) {
        for p in 0..t.panels {
            let w = t.w.add(p * t.w_ps);
            let mut r0 = 0;
            while r0 < t.rows {
                let rows = MR_AVXVNNI.min(t.rows - r0);
                let aux = t.aux.add(r0 * t.a_rs);
                by_rows!(rows, avxvnni_mk, aux, t.a_rs, w, t.groups, t.sink.at(r0, p));
                r0 += rows;
            }
        }
    }

    #[target_feature(enable = "avx2,avxvnni")]
    unsafe fn avxvnni_mk<const MR: usize>(au: *const u8, a_rs: usize, w: *const i8, groups: usize, sink: Sink) {
        by_blocks_256::<MR>(w, groups, sink, |c, [w0, w1], g| {
            for (r, cr) in c.iter_mut().enumerate() {
                let u = _mm256_set1_epi32(bcast4(au.add(r * a_rs + 4 * g)));
                cr[0] = _mm256_dpbusd_avx_epi32(cr[0], u, w0);
                cr[1] = _mm256_dpbusd_avx_epi32(cr[1], u, w1);
            }
        });
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn avx512vnni(t: &Tile) {
        let mut p = 0;
        while p < t.panels {
            let two = p + 1 < t.panels;
            let w0 = t.w.add(p * t.w_ps);
            // A single trailing panel reads its own line twice and discards the second result.
            let w1 = if two { t.w.add((p + 1) * t.w_ps) } else { w0 };
            let mut r0 = 0;
            while r0 < t.rows {
                let rows = MR_AVX512.min(t.rows - r0);
                let aux = t.aux.add(r0 * t.a_rs);
                by_rows!(rows, avx512_mk, aux, t.a_rs, w0, w1, two, t.groups, t.sink.at(r0, p));
                r0 += rows;
            }
            p += 2;
        }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn avx512_mk<const MR: usize>(
        au: *const u8,
        a_rs: usize,
        w0: *const i8,
        w1: *const i8,
        two: bool,
        groups: usize,
        sink: Sink,
    ) {
        let per = sink.groups_per_flush(groups);
        for (b, g0) in (0..groups).step_by(per).enumerate() {
            let mut c = [[_mm512_setzero_si512(); 2]; MR];
            for g in g0..g0 + per {
                let v0 = _mm512_loadu_si512(w0.add(g * 64) as *const _);
                let v1 = _mm512_loadu_si512(w1.add(g * 64) as *const _);
                for (r, cr) in c.iter_mut().enumerate() {
                    let u = _mm512_set1_epi32(bcast4(au.add(r * a_rs + 4 * g)));
                    cr[0] = _mm512_dpbusd_epi32(cr[0], u, v0);
                    cr[1] = _mm512_dpbusd_epi32(cr[1], u, v1);
                }
            }
            flush_512::<MR>(&c, sink, b, if two { 2 } else { 1 });
        }
    }

    /// Adds the AVX-512 micro-kernel's registers (`panels` of its two panels) to its sink.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn flush_512<const MR: usize>(c: &[[__m512i; 2]; MR], sink: Sink, b: usize, panels: usize) {
        match sink {
            Sink::Int { acc, acc_rs } => {
                for (r, cr) in c.iter().enumerate() {
                    for (v, &cv) in cr.iter().enumerate().take(panels) {
                        let dst = acc.add(r * acc_rs + NR * v);
                        _mm512_storeu_si512(dst as *mut _, _mm512_add_epi32(_mm512_loadu_si512(dst as *const _), cv));
                    }
                }
            }
            Sink::Blocks(s) => {
                for (r, cr) in c.iter().enumerate() {
                    let sx = _mm512_set1_ps(*s.sx.add(r * s.sx_rs + b));
                    for (v, &cv) in cr.iter().enumerate().take(panels) {
                        // Panel v of the pair: its scales are one panel stride further.
                        let at = v * s.sw_ps + b * NR;
                        let sum = if s.comp.is_null() {
                            cv
                        } else {
                            _mm512_sub_epi32(cv, _mm512_loadu_si512(s.comp.add(at) as *const _))
                        };
                        let scale = _mm512_mul_ps(_mm512_loadu_ps(s.sw.add(at)), sx);
                        let dst = s.acc.add(r * s.acc_rs + NR * v);
                        let term = _mm512_mul_ps(_mm512_cvtepi32_ps(sum), scale);
                        _mm512_storeu_ps(dst, _mm512_add_ps(_mm512_loadu_ps(dst), term));
                    }
                }
            }
        }
    }
}
