//! The f32 GEMM of linear layers, on weights packed once at load.
//!
//! A general GEMM (the `gemm` crate, [`super::matmul`]) packs both operands into its
//! micro-kernel's panel layout on every call; for a weight that never changes that repacking is
//! pure overhead (a full read and write of the weight per product, and the cache it evicts).
//! [`PackedF32`] holds the weight `[n, k]` already in panels of [`NR`] output columns, built in
//! parallel straight from the checkpoint's stored bytes (f32, bf16 or f16, mapped: no f32 copy of
//! the checkpoint is ever made), and [`gemm_packed`] runs register-blocked micro-kernels
//! ([`super::packed_kernels`]) over it, reading the activations in place.
//!
//! Every output is one fused-multiply-add chain `acc = fma(x[i, kk], w[j, kk], acc)` over
//! `kk = 0..k` in order, starting from zero, then `+ bias[j]`, then the fused activation: the
//! blocking (rows, columns, `k` slices) never changes the chain, so every instruction-set path
//! ([`FloatIsa`]) and every thread count returns the same bits as the portable loop (tested).
//!
//! [`PackedBf16`] is the bf16 compute path (`--dtype bf16`): weights and activations as bf16
//! pairs, the chain advancing one pair at a time exactly as AVX-512 BF16's `vdpbf16ps` does it
//! (`acc = fma(x[2u+1], w[2u+1], acc)`, then `fma(x[2u], w[2u], acc)`, subnormal inputs and
//! results flushed to zero): twice the f32 rate where the instruction exists, and the same bits
//! from the widening kernels everywhere else (tested against the instruction on machines that
//! have it).

use super::packed_kernels::{self as kernels, Tile};
use super::SyncPtr;
use rayon::prelude::*;

/// Output columns per weight panel (one zmm, two ymm).
pub const NR: usize = 16;
/// Activation rows per task: the `MC × KC` slice of `x` stays in L2 while every panel of the
/// task streams past it.
const MC: usize = 48;
/// Reduction slice: the AVX-512 kernel's two panels are `KC × 2·NR` floats (64 KiB), read from L2
/// by every row chunk of the task (256 measured no faster on a Zen 4 core, AVX2 or AVX-512).
const KC: usize = 512;
/// Panels per task (128 output columns): enough tasks to balance threads on short products.
const NC_PANELS: usize = 8;
/// Output rows [`gemm_streamed`] packs at a time: two tasks' columns, so a block (1.5 MiB at
/// `k` = 1536) is packed and multiplied while it is still in L2/L3.
const STREAM_ROWS: usize = 2 * NC_PANELS * NR;

/// A path of the packed f32 kernels. All paths compute the same FMA chains; only speed differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FloatIsa {
    /// Portable `f32::mul_add` loops: the reference, and the path on non-x86 targets.
    Scalar,
    /// AVX2 + FMA, 256-bit: 6 rows × 16 columns per micro-kernel.
    Avx2,
    /// AVX-512F: 12 rows × 32 columns per micro-kernel.
    Avx512,
    /// AVX-512 BF16 (Cooper Lake, Sapphire Rapids+, Zen 4+): `vdpbf16ps` for the bf16 path; the
    /// f32 path is [`FloatIsa::Avx512`]'s.
    Avx512Bf16,
}

impl FloatIsa {
    /// Every path, slowest first.
    pub const ALL: [FloatIsa; 4] = [FloatIsa::Scalar, FloatIsa::Avx2, FloatIsa::Avx512, FloatIsa::Avx512Bf16];

    /// Whether this CPU (and this build's target) can run the path.
    pub fn is_available(self) -> bool {
        match self {
            FloatIsa::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            FloatIsa::Avx2 => std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma"),
            #[cfg(target_arch = "x86_64")]
            FloatIsa::Avx512 => std::arch::is_x86_feature_detected!("avx512f"),
            #[cfg(target_arch = "x86_64")]
            FloatIsa::Avx512Bf16 => {
                std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512bf16")
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// The paths this machine can run, slowest first (tests iterate over it).
    pub fn available() -> Vec<FloatIsa> {
        FloatIsa::ALL.into_iter().filter(|i| i.is_available()).collect()
    }

    /// The fastest available path. `WANRT_ISA=scalar|avx2|avx512` (the variable that also forces
    /// the integer kernels' path) caps it, so a benchmark can compare paths on one machine;
    /// other values leave detection alone.
    pub fn detect() -> FloatIsa {
        let best = FloatIsa::ALL.into_iter().rev().find(|i| i.is_available()).unwrap_or(FloatIsa::Scalar);
        let cap =
            std::env::var("WANRT_ISA").ok().and_then(|s| FloatIsa::ALL.into_iter().find(|i| i.name() == s.trim()));
        match cap {
            Some(cap) if cap.is_available() => cap,
            _ => best,
        }
    }

    /// Short lowercase name (bench ids, logs).
    pub fn name(self) -> &'static str {
        match self {
            FloatIsa::Scalar => "scalar",
            FloatIsa::Avx2 => "avx2",
            FloatIsa::Avx512 => "avx512",
            FloatIsa::Avx512Bf16 => "avx512bf16",
        }
    }
}

/// A weight `[n, ·]` in panels of [`NR`] output columns over `units` reduction units (an f32, or
/// a bf16 pair): unit `p·(NR·units) + u·NR + c` is unit `u` of row `NR·p + c` (rows past `n`
/// are zero), so the micro-kernel reads each panel front to back.
#[derive(Debug, Clone, Default)]
struct Panels<U> {
    rows: usize,
    units: usize,
    panels: usize,
    data: Vec<U>,
}

impl<U: Copy + Default + Send + Sync> Panels<U> {
    /// In parallel over panels; `row(j, dst)` writes row `j`'s `units` units.
    fn pack(row: impl Fn(usize, &mut [U]) + Sync, n: usize, units: usize) -> Self {
        let mut panels = Panels::default();
        panels.repack(row, n, units);
        panels
    }

    /// [`Self::pack`] into this buffer, reusing its allocation.
    fn repack(&mut self, row: impl Fn(usize, &mut [U]) + Sync, n: usize, units: usize) {
        self.resize(n, units);
        if units > 0 {
            self.data
                .par_chunks_mut(NR * units)
                .enumerate()
                .for_each_init(Vec::new, |buf, (p, panel)| pack_panel(&row, n, units, p, panel, buf));
        }
    }

    /// [`Self::repack`] on the calling thread: for a task that packs the panels it multiplies.
    fn repack_here(&mut self, row: impl Fn(usize, &mut [U]), n: usize, units: usize, buf: &mut Vec<U>) {
        self.resize(n, units);
        if units > 0 {
            for (p, panel) in self.data.chunks_exact_mut(NR * units).enumerate() {
                pack_panel(&row, n, units, p, panel, buf);
            }
        }
    }

    fn resize(&mut self, n: usize, units: usize) {
        let panels = n.div_ceil(NR);
        self.data.clear();
        self.data.resize(panels * NR * units, U::default());
        (self.rows, self.units, self.panels) = (n, units, panels);
    }

    fn row(&self, j: usize) -> impl Iterator<Item = U> + '_ {
        let (p, c) = (j / NR, j % NR);
        self.data[p * NR * self.units..(p + 1) * NR * self.units][c..].iter().copied().step_by(NR).take(self.units)
    }

    fn bytes(&self) -> usize {
        self.data.len() * std::mem::size_of::<U>()
    }
}

/// Panel `p` of an `n`-row weight: its rows are decoded side by side into `buf`, then
/// interleaved in one sequential pass over the panel (16 read streams, one write stream).
fn pack_panel<U: Copy + Default>(
    row: &impl Fn(usize, &mut [U]),
    n: usize,
    units: usize,
    p: usize,
    panel: &mut [U],
    buf: &mut Vec<U>,
) {
    let cols = NR.min(n - p * NR);
    buf.resize(NR * units, U::default());
    for (c, dst) in buf.chunks_exact_mut(units).take(cols).enumerate() {
        row(p * NR + c, dst);
    }
    for (kk, line) in panel.chunks_exact_mut(NR).enumerate() {
        line.iter_mut().take(cols).enumerate().for_each(|(c, d)| *d = buf[c * units + kk]);
    }
}

/// An f32 weight `[n, k]` packed for [`gemm_packed`].
#[derive(Debug, Clone)]
pub struct PackedF32 {
    /// Output features `n` (rows of the `[out, in]` weight).
    pub rows: usize,
    /// Input features `k`.
    pub cols: usize,
    panels: Panels<f32>,
}

impl PackedF32 {
    /// Packs the `n × k` weight whose row `j` `row(j, dst)` writes into `dst` (`k` values),
    /// in parallel over panels: the source is read once, wherever it lives and in whatever
    /// format `row` decodes.
    pub fn pack(row: impl Fn(usize, &mut [f32]) + Sync, n: usize, k: usize) -> PackedF32 {
        PackedF32 { rows: n, cols: k, panels: Panels::pack(row, n, k) }
    }

    /// Packs a row-major f32 `[n, k]` weight.
    pub fn from_rows(w: &[f32], n: usize, k: usize) -> PackedF32 {
        assert_eq!(w.len(), n * k, "weight: expected n·k = {n}·{k} values");
        PackedF32::pack(|j, dst| dst.copy_from_slice(&w[j * k..(j + 1) * k]), n, k)
    }

    /// Bytes held (padding columns included).
    pub fn bytes(&self) -> usize {
        self.panels.bytes()
    }

    /// Appends row `j` of the weight (embedding lookups, reports).
    pub fn push_row(&self, j: usize, out: &mut Vec<f32>) {
        out.extend(self.panels.row(j));
    }
}

/// bf16 bits with a subnormal flushed to (signed) zero, as `vdpbf16ps` reads its inputs.
fn daz(b: u16) -> u16 {
    if b & 0x7f80 == 0 {
        b & 0x8000
    } else {
        b
    }
}

/// `k` bf16 values as pairs: unit `u` holds element `2u` in its low and `2u + 1` in its high
/// half (zero past `k`), the lane layout of `vdpbf16ps`.
fn pairs(bits: impl Iterator<Item = u16>, dst: &mut [u32]) {
    dst.fill(0);
    for (i, b) in bits.enumerate() {
        dst[i / 2] |= (daz(b) as u32) << (16 * (i % 2));
    }
}

/// A weight `[n, k]` in bf16, packed for [`gemm_bf16`].
#[derive(Debug, Clone)]
pub struct PackedBf16 {
    /// Output features `n`.
    pub rows: usize,
    /// Input features `k`.
    pub cols: usize,
    panels: Panels<u32>,
}

impl PackedBf16 {
    /// Packs the `n × k` weight whose row `j` `row(j, dst)` writes as bf16 bits into `dst`
    /// (`k` values), in parallel over panels.
    pub fn pack(row: impl Fn(usize, &mut [u16]) + Sync, n: usize, k: usize) -> PackedBf16 {
        let units = k.div_ceil(2);
        let pair_row = |j: usize, dst: &mut [u32]| {
            let mut bits = vec![0u16; k];
            row(j, &mut bits);
            pairs(bits.into_iter(), dst);
        };
        PackedBf16 { rows: n, cols: k, panels: Panels::pack(pair_row, n, units) }
    }

    /// Rounds (to nearest even) and packs a row-major f32 `[n, k]` weight.
    pub fn from_rows(w: &[f32], n: usize, k: usize) -> PackedBf16 {
        assert_eq!(w.len(), n * k, "weight: expected n·k = {n}·{k} values");
        let row = |j: usize, dst: &mut [u16]| {
            dst.iter_mut().zip(&w[j * k..(j + 1) * k]).for_each(|(d, &v)| *d = half::bf16::from_f32(v).to_bits())
        };
        PackedBf16::pack(row, n, k)
    }

    /// Bytes held (padding included).
    pub fn bytes(&self) -> usize {
        self.panels.bytes()
    }

    /// Appends row `j` widened to f32 (subnormals flushed).
    pub fn push_row(&self, j: usize, out: &mut Vec<f32>) {
        let widen = |b: u32| f32::from_bits(b << 16);
        out.extend(self.panels.row(j).flat_map(|u| [widen(u & 0xffff), widen(u >> 16)]).take(self.cols));
    }
}

/// `out[m, n] = post(x · Wᵀ + bias)` in the bf16 pair arithmetic of the module docs: `x` rounded
/// to bf16 (to nearest even), f32 accumulation. Panics on size mismatches or an unavailable
/// `isa`.
pub fn gemm_bf16(
    isa: FloatIsa,
    x: &[f32],
    m: usize,
    w: &PackedBf16,
    bias: Option<&[f32]>,
    post: impl Fn(f32) -> f32 + Sync + Copy,
    out: &mut [f32],
) {
    assert!(isa.is_available(), "instruction set {} not available on this CPU", isa.name());
    let (k, units) = (w.cols, w.panels.units);
    assert_eq!(x.len(), m * k, "x: expected m·k = {m}·{k} values");
    let mut a = vec![0u32; m * units];
    if units > 0 {
        a.par_chunks_mut(units).zip(x.par_chunks(k)).for_each(|(dst, row)| {
            pairs(row.iter().map(|&v| half::bf16::from_f32(v).to_bits()), dst);
        });
    }
    // SAFETY (kernel): tiles come from `gemm_panels`, which checks the extents; availability
    // asserted above.
    gemm_panels(&a, m, &w.panels, bias, post, out, w.rows, |t| unsafe { kernels::run_bf16(isa, t) });
}

/// [`gemm_packed_with`] on the fastest path of this CPU ([`FloatIsa::detect`]).
pub fn gemm_packed(
    x: &[f32],
    m: usize,
    w: &PackedF32,
    bias: Option<&[f32]>,
    post: impl Fn(f32) -> f32 + Sync + Copy,
    out: &mut [f32],
) {
    gemm_packed_with(FloatIsa::detect(), x, m, w, bias, post, out)
}

/// `out[m, n] = post(x[m, k] · Wᵀ + bias)`, each output the FMA chain described in the module
/// docs. Tasks of [`MC`] rows × [`NC_PANELS`] panels run in parallel; each accumulates its
/// tile over `k` slices in a private buffer and writes it once (bias and `post` fused into that
/// pass, while the tile is in cache). Panics on size mismatches or an unavailable `isa`.
pub fn gemm_packed_with(
    isa: FloatIsa,
    x: &[f32],
    m: usize,
    w: &PackedF32,
    bias: Option<&[f32]>,
    post: impl Fn(f32) -> f32 + Sync + Copy,
    out: &mut [f32],
) {
    gemm_packed_strided(isa, x, m, w, bias, post, out, w.rows)
}

/// [`gemm_packed_with`] writing output row `i` at `out[i·out_rs..]` (`out_rs ≥ n`): the weight
/// may be one block of a wider layer's output columns.
#[allow(clippy::too_many_arguments)]
pub fn gemm_packed_strided(
    isa: FloatIsa,
    x: &[f32],
    m: usize,
    w: &PackedF32,
    bias: Option<&[f32]>,
    post: impl Fn(f32) -> f32 + Sync + Copy,
    out: &mut [f32],
    out_rs: usize,
) {
    assert!(isa.is_available(), "instruction set {} not available on this CPU", isa.name());
    assert_eq!(x.len(), m * w.cols, "x: expected m·k = {m}·{} values", w.cols);
    // SAFETY (kernel): tiles come from `gemm_panels`, which checks the extents; availability
    // asserted above.
    gemm_panels(x, m, &w.panels, bias, post, out, out_rs, |t| unsafe { kernels::run_f32(isa, t) });
}

/// `out[m, n] = post(x[m, k] · Wᵀ + bias)` for a weight that is not held packed: row `j` of the
/// `[n, k]` weight is decoded by `row(j, dst)` from wherever it lies (a mapped checkpoint in
/// f32/bf16/f16, GGUF blocks, half bits in memory) and packed inside the product, each block of
/// output columns once, into a reused buffer, and multiplied while it is still in cache. The chains
/// are those of [`gemm_packed_with`] on the packed weight (same bits); the cost is one pass over
/// the weight per product, against none of its memory held twice and nothing done at load.
#[allow(clippy::too_many_arguments)]
pub fn gemm_streamed(
    isa: FloatIsa,
    x: &[f32],
    m: usize,
    [n, k]: [usize; 2],
    row: impl Fn(usize, &mut [f32]) + Sync,
    bias: Option<&[f32]>,
    post: impl Fn(f32) -> f32 + Sync + Copy,
    out: &mut [f32],
) {
    assert!(isa.is_available(), "instruction set {} not available on this CPU", isa.name());
    assert_eq!(x.len(), m * k, "x: expected m·k = {m}·{k} values");
    assert_eq!(out.len(), m * n, "out: expected m·n = {m}·{n} values");
    if let Some(b) = bias {
        assert_eq!(b.len(), n, "bias: expected n = {n} values");
    }
    if m == 0 {
        return;
    }
    // SAFETY (kernel): tiles come from `block_product`, which checks the extents; availability
    // asserted above.
    let kernel = |t: &Tile<f32>| unsafe { kernels::run_f32(isa, t) };
    match Streaming::for_columns(n) {
        Streaming::ByColumns => {
            let out_ptr = SyncPtr(out.as_mut_ptr());
            let width = NC_PANELS * NR;
            let task = |(panels, buf, acc): &mut (Panels<f32>, Vec<f32>, Vec<f32>), cb: usize| {
                let j0 = cb * width;
                let cols = width.min(n - j0);
                panels.repack_here(|j, dst| row(j0 + j, dst), cols, k, buf);
                for i0 in (0..m).step_by(MC) {
                    // SAFETY: task `cb` alone writes columns j0..j0+cols ≤ n, of rows < m.
                    unsafe {
                        block_product(
                            x,
                            k,
                            (i0, MC.min(m - i0)),
                            &panels.data,
                            (j0, cols),
                            bias,
                            post,
                            out_ptr,
                            n,
                            acc,
                            &kernel,
                        )
                    };
                }
            };
            (0..n.div_ceil(width)).into_par_iter().for_each_init(Default::default, task);
        }
        Streaming::ByBlocks => {
            let mut block = Panels::default();
            for start in (0..n).step_by(STREAM_ROWS) {
                let len = STREAM_ROWS.min(n - start);
                block.repack(|j, dst| row(start + j, dst), len, k);
                let b = bias.map(|b| &b[start..start + len]);
                gemm_panels(x, m, &block, b, post, &mut out[start..], n, kernel);
            }
        }
    }
}

/// How [`gemm_streamed`] splits the work between packing and multiplying.
#[derive(Clone, Copy, Debug)]
enum Streaming {
    /// Every task packs its own [`NC_PANELS`] panels and multiplies them with all rows of `x`:
    /// packing overlaps the other threads' products and no thread waits between the two. Needs
    /// enough column blocks to keep every thread busy.
    ByColumns,
    /// [`STREAM_ROWS`] output rows packed by all threads, then multiplied by all threads (split
    /// over rows too): for narrow weights.
    ByBlocks,
}

impl Streaming {
    /// By columns when an `n`-column weight gives every thread of the pool a few tasks.
    fn for_columns(n: usize) -> Streaming {
        if n.div_ceil(NC_PANELS * NR) >= 2 * super::num_threads() {
            Streaming::ByColumns
        } else {
            Streaming::ByBlocks
        }
    }
}

/// The product over panels: tasks of [`MC`] rows × [`NC_PANELS`] panels in parallel (see
/// [`block_product`]).
#[allow(clippy::too_many_arguments)]
fn gemm_panels<U: Copy + Send + Sync>(
    x: &[U],
    m: usize,
    w: &Panels<U>,
    bias: Option<&[f32]>,
    post: impl Fn(f32) -> f32 + Sync + Copy,
    out: &mut [f32],
    out_rs: usize,
    kernel: impl Fn(&Tile<U>) + Sync,
) {
    let (n, k) = (w.rows, w.units);
    assert_eq!(x.len(), m * k, "x: expected m·units = {m}·{k} units");
    assert!(
        out_rs >= n && (m == 0 || out.len() >= (m - 1) * out_rs + n),
        "out: expected {m} rows of {n} values, {out_rs} apart"
    );
    if let Some(b) = bias {
        assert_eq!(b.len(), n, "bias: expected n = {n} values");
    }
    if m == 0 || n == 0 {
        return;
    }
    let row_blocks = m.div_ceil(MC);
    let col_blocks = w.panels.div_ceil(NC_PANELS);
    let out_ptr = SyncPtr(out.as_mut_ptr());
    let task = |acc: &mut Vec<f32>, t: usize| {
        // Column-block major: consecutive tasks share the weight slice they stream.
        let (cb, rb) = (t / row_blocks, t % row_blocks);
        let (i0, j0) = (rb * MC, cb * NC_PANELS * NR);
        let cols = (NC_PANELS * NR).min(n - j0);
        // SAFETY: tasks are disjoint blocks of rows < m, columns < n, `out_rs` apart (asserted).
        unsafe {
            block_product(
                x,
                k,
                (i0, MC.min(m - i0)),
                &w.data[j0 * k..],
                (j0, cols),
                bias,
                post,
                out_ptr,
                out_rs,
                acc,
                &kernel,
            )
        };
    };
    let tasks = row_blocks * col_blocks;
    if tasks == 1 || super::num_threads() == 1 {
        let mut acc = Vec::new();
        (0..tasks).for_each(|t| task(&mut acc, t));
    } else {
        (0..tasks).into_par_iter().for_each_init(Vec::new, task);
    }
}

/// Rows `i0..i0 + rows` of `x` times the weight panels at the front of `w` (`k` units each),
/// which hold output columns `j0..j0 + cols`: each output's chain accumulated over [`KC`]-unit
/// slices in `acc` (`kernel` continues the chains), then written once, bias and `post` fused into
/// that pass while the tile is in cache.
///
/// # Safety
/// `out` must address `i0 + rows` rows of at least `j0 + cols` values, `out_rs` apart, and no other
/// thread may access the block written here.
#[allow(clippy::too_many_arguments)]
unsafe fn block_product<U: Copy>(
    x: &[U],
    k: usize,
    (i0, rows): (usize, usize),
    w: &[U],
    (j0, cols): (usize, usize),
    bias: Option<&[f32]>,
    post: impl Fn(f32) -> f32,
    out: SyncPtr,
    out_rs: usize,
    acc: &mut Vec<f32>,
    kernel: &impl Fn(&Tile<U>),
) {
    let panels = cols.div_ceil(NR);
    assert!(w.len() >= panels * NR * k, "block outside the weight's panels");
    assert!((i0 + rows) * k <= x.len(), "block outside x");
    let acc_rs = panels * NR;
    acc.clear();
    acc.resize(rows * acc_rs, 0.0);
    let mut k0 = 0;
    while k0 < k {
        let kc = KC.min(k - k0);
        // SAFETY (all offsets): rows i0..i0+rows and units k0..k0+kc ≤ k of `x`; the first
        // `panels` panels of `w`, units k0·NR.. of each (asserted above).
        kernel(&Tile {
            a: unsafe { x.as_ptr().add(i0 * k + k0) },
            a_rs: k,
            rows,
            w: unsafe { w.as_ptr().add(k0 * NR) },
            w_ps: NR * k,
            panels,
            kc,
            acc: acc.as_mut_ptr(),
            acc_rs,
        });
        k0 += kc;
    }
    super::vectorized(|| {
        for r in 0..rows {
            // SAFETY: the caller's contract: row i0+r, columns j0..j0+cols are this call's.
            let dst = unsafe { std::slice::from_raw_parts_mut(out.get().add((i0 + r) * out_rs + j0), cols) };
            let src = &acc[r * acc_rs..r * acc_rs + cols];
            match bias {
                Some(b) => dst.iter_mut().zip(src).zip(&b[j0..j0 + cols]).for_each(|((o, &v), &b)| *o = post(v + b)),
                None => dst.iter_mut().zip(src).for_each(|(o, &v)| *o = post(v)),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn randn(n: usize, seed: u64) -> Vec<f32> {
        crate::quant::int8::tests::randn(n, seed)
    }

    /// The documented chain, written out.
    fn reference(x: &[f32], w: &[f32], m: usize, n: usize, k: usize, bias: Option<&[f32]>) -> Vec<f32> {
        let mut out = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut acc = 0.0f32;
                for kk in 0..k {
                    acc = x[i * k + kk].mul_add(w[j * k + kk], acc);
                }
                out[i * n + j] = acc + bias.map_or(0.0, |b| b[j]);
            }
        }
        out
    }

    #[test]
    fn every_path_returns_the_reference_chain_bit_for_bit() {
        // Ragged everywhere: rows past a micro-kernel and a task, a partial panel, k past KC.
        for &(m, n, k) in &[(1, 1, 1), (7, 17, 5), (13, 35, 200), (100, 130, 385), (97, 48, 192)] {
            let x = randn(m * k, 1);
            let w = randn(n * k, 2);
            let b = randn(n, 3);
            let want = reference(&x, &w, m, n, k, Some(&b));
            let packed = PackedF32::from_rows(&w, n, k);
            for isa in FloatIsa::available() {
                let mut out = vec![f32::NAN; m * n];
                gemm_packed_with(isa, &x, m, &packed, Some(&b), |v| v, &mut out);
                let same = out.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{} differs from the reference chain at {m}×{n}×{k}", isa.name());
            }
        }
    }

    #[test]
    fn streamed_products_return_the_packed_bits() {
        // n past one streamed block and one task's columns, ragged; m past MC; k past KC.
        let (m, n, k) = (53, 2 * STREAM_ROWS + 37, 600);
        let x = randn(m * k, 6);
        let w = randn(n * k, 7);
        let b = randn(n, 8);
        let packed = PackedF32::from_rows(&w, n, k);
        let relu = |v: f32| v.max(0.0);
        for isa in FloatIsa::available() {
            let mut want = vec![0.0; m * n];
            gemm_packed_with(isa, &x, m, &packed, Some(&b), relu, &mut want);
            // One thread streams by columns (5 column tasks), sixteen by blocks.
            for threads in [1, 16] {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                let streaming = pool.install(|| Streaming::for_columns(n));
                assert!(matches!((threads, streaming), (1, Streaming::ByColumns) | (16, Streaming::ByBlocks)));
                let mut out = vec![f32::NAN; m * n];
                let row = |j: usize, dst: &mut [f32]| dst.copy_from_slice(&w[j * k..(j + 1) * k]);
                pool.install(|| gemm_streamed(isa, &x, m, [n, k], row, Some(&b), relu, &mut out));
                assert!(out.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "{} {streaming:?}", isa.name());
            }
        }
        gemm_streamed(FloatIsa::Scalar, &[], 0, [n, k], |_, _| unreachable!(), None, |v| v, &mut []);
    }

    #[test]
    fn post_and_missing_bias_and_empty_shapes() {
        let (m, n, k) = (5, 20, 9);
        let x = randn(m * k, 4);
        let w = randn(n * k, 5);
        let packed = PackedF32::from_rows(&w, n, k);
        let mut out = vec![0.0; m * n];
        gemm_packed(&x, m, &packed, None, |v| v.max(0.0), &mut out);
        let want: Vec<f32> = reference(&x, &w, m, n, k, None).into_iter().map(|v| v.max(0.0)).collect();
        assert_eq!(out, want);
        // k = 0: every output is the bias; m = 0: nothing to do.
        let empty = PackedF32::from_rows(&[], 3, 0);
        let mut out = vec![9.0; 6];
        gemm_packed(&[], 2, &empty, Some(&[1.0, 2.0, 3.0]), |v| v, &mut out);
        assert_eq!(out, [1.0, 2.0, 3.0, 1.0, 2.0, 3.0]);
        gemm_packed(&[], 0, &packed, None, |v| v, &mut []);
    }

    /// The bf16 pair chain of the module docs, written out on the bf16-rounded values.
    fn reference_bf16(x: &[f32], w: &[f32], m: usize, n: usize, k: usize, bias: Option<&[f32]>) -> Vec<f32> {
        let bf = |v: f32| {
            let b = daz(half::bf16::from_f32(v).to_bits());
            f32::from_bits((b as u32) << 16)
        };
        let ftz = |v: f32| if v.is_subnormal() { 0.0f32.copysign(v) } else { v };
        let mut out = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut acc = 0.0f32;
                for u in 0..k.div_ceil(2) {
                    let (e, o) = (2 * u, 2 * u + 1);
                    if o < k {
                        acc = ftz(bf(x[i * k + o]).mul_add(bf(w[j * k + o]), acc));
                    }
                    acc = ftz(bf(x[i * k + e]).mul_add(bf(w[j * k + e]), acc));
                }
                out[i * n + j] = acc + bias.map_or(0.0, |b| b[j]);
            }
        }
        out
    }

    #[test]
    fn bf16_paths_return_the_pair_chain_bit_for_bit() {
        for &(m, n, k) in &[(1, 1, 1), (7, 17, 5), (13, 35, 200), (100, 130, 1025), (97, 48, 192)] {
            let x = randn(m * k, 7);
            let w = randn(n * k, 8);
            let b = randn(n, 9);
            let want = reference_bf16(&x, &w, m, n, k, Some(&b));
            let packed = PackedBf16::from_rows(&w, n, k);
            for isa in FloatIsa::available() {
                let mut out = vec![f32::NAN; m * n];
                gemm_bf16(isa, &x, m, &packed, Some(&b), |v| v, &mut out);
                let same = out.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{} differs from the pair chain at {m}×{n}×{k}", isa.name());
            }
        }
    }

    #[test]
    fn bf16_flushes_subnormals_like_the_instruction() {
        // Products near the bottom of the f32 range: sums fall into the subnormals and are
        // flushed (the instruction's semantics), inputs that are bf16 subnormals read as zero.
        let (m, n, k) = (3, 32, 8);
        let x: Vec<f32> = (0..m * k).map(|i| [1.5e-20, -2.5e-19, 3.0e-39, 7.0e-21][i % 4]).collect();
        let w: Vec<f32> = (0..n * k).map(|i| [2.0e-19, 1.25e-20, -9.0e-20, 4.0e-39][i % 4]).collect();
        let want = reference_bf16(&x, &w, m, n, k, None);
        let packed = PackedBf16::from_rows(&w, n, k);
        for isa in FloatIsa::available() {
            let mut out = vec![f32::NAN; m * n];
            gemm_bf16(isa, &x, m, &packed, None, |v| v, &mut out);
            assert!(out.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "{}", isa.name());
        }
        assert!(want.iter().all(|v| !v.is_subnormal()));
    }

    #[test]
    fn bf16_is_close_to_f32() {
        let (m, n, k) = (16, 40, 300);
        let x = randn(m * k, 10);
        let w = randn(n * k, 11);
        let f32_out = reference(&x, &w, m, n, k, None);
        let mut out = vec![0.0; m * n];
        gemm_bf16(FloatIsa::detect(), &x, m, &PackedBf16::from_rows(&w, n, k), None, |v| v, &mut out);
        let (num, den) = out
            .iter()
            .zip(&f32_out)
            .fold((0.0f64, 0.0f64), |(a, b), (&o, &r)| (a + ((o - r) as f64).powi(2), b + (r as f64).powi(2)));
        // Two bf16 roundings (8-bit mantissas): relative error around 2⁻⁸.
        assert!((num / den).sqrt() < 1e-2, "relative error {}", (num / den).sqrt());
        let mut row = Vec::new();
        PackedBf16::from_rows(&w, n, k).push_row(3, &mut row);
        assert!(row.iter().zip(&w[3 * k..4 * k]).all(|(a, b)| (a - b).abs() <= b.abs() / 128.0));
    }

    #[test]
    fn rows_come_back_unchanged() {
        let (n, k) = (21, 11);
        let w = randn(n * k, 6);
        let packed = PackedF32::from_rows(&w, n, k);
        for j in [0, 15, 16, 20] {
            let mut row = Vec::new();
            packed.push_row(j, &mut row);
            assert_eq!(row, &w[j * k..(j + 1) * k]);
        }
        assert_eq!(packed.bytes(), 32 * k * 4);
    }
}
