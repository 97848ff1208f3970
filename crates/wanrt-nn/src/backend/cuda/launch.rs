//! Host-side launch logic of the CUDA backend: grid sizes, kernel argument structs, broadcast and
//! permutation strides, copy plans for narrow/cat, conv output sizes. Pure functions, unit-tested
//! on the CPU (no driver needed); the kernels in `kernels/*.cu` read exactly these layouts.

use crate::backend::Activation;
use crate::dtype::DType;
use crate::error::{Error, Result};

/// Threads per block of the grid-stride elementwise kernels.
pub const ELEMENTWISE_THREADS: u32 = 256;
/// Threads per block of the one-block-per-row norms.
pub const ROW_THREADS: u32 = 256;
/// Threads per block of the scalar reductions.
pub const REDUCE_THREADS: u32 = 256;
/// Attention: 4 warps × 4 query rows per block (`WARPS`, `ROWS` in attention.cu).
pub const ATTENTION_THREADS: u32 = 128;
pub const ATTENTION_ROWS_PER_BLOCK: usize = 16;
/// Grid-stride kernels need no more blocks than this (a few waves on any GPU); larger tensors
/// loop inside the kernel.
pub const MAX_BLOCKS: u64 = 65_535;
/// Rank limit of the `Dims` kernel argument (`MAX_DIMS` in common.cuh).
pub const MAX_DIMS: usize = 8;
/// Batch items a by-value `Lengths`/`KeyLengths`/`Steps` argument holds.
pub const MAX_BATCH_ARGS: usize = 16;

/// The dtype code kernels read (`DT_*` in common.cuh).
pub fn dtype_code(dtype: DType) -> Result<i32> {
    Ok(match dtype {
        DType::F32 => 0,
        DType::BF16 => 1,
        DType::F16 => 2,
        DType::U32 => 3,
        other => return Err(Error::Msg(format!("cuda backend: no {other} tensors"))),
    })
}

/// `(grid, block)` of a launch, in CUDA's x/y/z order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Launch {
    pub grid: (u32, u32, u32),
    pub block: (u32, u32, u32),
}

/// A grid-stride kernel over `n` elements.
pub fn elementwise(n: usize) -> Launch {
    let blocks = (n as u64).div_ceil(ELEMENTWISE_THREADS as u64).clamp(1, MAX_BLOCKS);
    Launch { grid: (blocks as u32, 1, 1), block: (ELEMENTWISE_THREADS, 1, 1) }
}

/// One block per row of a `[rows, C]` tensor.
pub fn per_row(rows: usize) -> Result<Launch> {
    if rows == 0 || rows > i32::MAX as usize {
        return Err(Error::Msg(format!("cuda backend: {rows} rows do not fit one launch")));
    }
    Ok(Launch { grid: (rows as u32, 1, 1), block: (ROW_THREADS, 1, 1) })
}

/// A reduction over `n` elements: few enough blocks that the f64 atomics stay cheap.
pub fn reduction(n: usize) -> Launch {
    let blocks = (n as u64).div_ceil(REDUCE_THREADS as u64 * 8).clamp(1, 1024);
    Launch { grid: (blocks as u32, 1, 1), block: (REDUCE_THREADS, 1, 1) }
}

/// Attention over `[b, lq, h, d]` queries: `(query tiles, heads, batch)`.
pub fn attention(b: usize, lq: usize, h: usize) -> Result<Launch> {
    if b > MAX_BATCH_ARGS || h > 65_535 || lq == 0 {
        return Err(Error::Msg(format!("cuda attention: batch {b} (≤ {MAX_BATCH_ARGS}), {h} heads, {lq} queries")));
    }
    let tiles = lq.div_ceil(ATTENTION_ROWS_PER_BLOCK);
    Ok(Launch { grid: (tiles as u32, h as u32, b as u32), block: (ATTENTION_THREADS, 1, 1) })
}

/// The `act` argument of the kernels that apply an activation (`activate` in common.cuh): its
/// index in [`Activation::ALL`].
pub fn activation_code(act: Activation) -> i32 {
    Activation::ALL.iter().position(|&a| a == act).expect("every activation is listed") as i32
}

/// The attention kernel of head dim `d`: `attention_d{d}`, or `attention_int8_d{d}` for 8-bit
/// `Q·Kᵀ` (entries exist for 16, 32, 64 and 128).
pub fn attention_entry(d: usize, int8: bool) -> Result<&'static str> {
    const FULL: [&str; 4] = ["attention_d16", "attention_d32", "attention_d64", "attention_d128"];
    const INT8: [&str; 4] = ["attention_int8_d16", "attention_int8_d32", "attention_int8_d64", "attention_int8_d128"];
    let at = [16, 32, 64, 128].iter().position(|&x| x == d).ok_or_else(|| {
        let what = if int8 { "8-bit attention" } else { "attention" };
        Error::Msg(format!("cuda {what}: head dim {d} (kernels exist for 16, 32, 64, 128)"))
    })?;
    Ok(if int8 { INT8[at] } else { FULL[at] })
}

/// `quantize_heads`: one warp per (token, head) row, eight warps a block, rows grid-strided.
pub fn warp_per_row(rows: usize) -> Launch {
    let blocks = (rows as u64).div_ceil(ELEMENTWISE_THREADS as u64 / 32).clamp(1, MAX_BLOCKS);
    Launch { grid: (blocks as u32, 1, 1), block: (ELEMENTWISE_THREADS, 1, 1) }
}

/// `key_mean`: one block per (head, batch item), threads over the head dims.
pub fn per_head(b: usize, h: usize) -> Result<Launch> {
    if b == 0 || h == 0 || b > 65_535 || h > i32::MAX as usize {
        return Err(Error::Msg(format!("cuda attention: {b} batch items × {h} heads do not fit one launch")));
    }
    Ok(Launch { grid: (h as u32, b as u32, 1), block: (128, 1, 1) })
}

/// The `Dims` argument of common.cuh (sizes and two stride sets, row-major, up to 8 dims).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dims {
    pub size: [i64; MAX_DIMS],
    pub stride_a: [i64; MAX_DIMS],
    pub stride_b: [i64; MAX_DIMS],
    pub rank: i32,
}

impl Dims {
    fn new(size: &[usize], a: &[usize], b: &[usize]) -> Result<Dims> {
        if size.len() > MAX_DIMS {
            return Err(Error::Msg(format!("cuda backend: rank {} above {MAX_DIMS}", size.len())));
        }
        let mut d =
            Dims { size: [1; MAX_DIMS], stride_a: [0; MAX_DIMS], stride_b: [0; MAX_DIMS], rank: size.len() as i32 };
        for i in 0..size.len() {
            d.size[i] = size[i] as i64;
            d.stride_a[i] = a[i] as i64;
            d.stride_b[i] = b[i] as i64;
        }
        Ok(d)
    }
}

/// Row-major strides of `shape`.
pub fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    crate::host::contiguous_strides(shape)
}

/// NumPy broadcasting of two shapes.
pub fn broadcast_shape(a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let rank = a.len().max(b.len());
    let dim = |s: &[usize], i: usize| if i + s.len() < rank { 1 } else { s[i + s.len() - rank] };
    (0..rank)
        .map(|i| match (dim(a, i), dim(b, i)) {
            (x, y) if x == y || y == 1 => Ok(x),
            (1, y) => Ok(y),
            _ => Err(Error::shape("broadcast", a, b)),
        })
        .collect()
}

/// Strides of `shape` read as `out` (0 on broadcast and missing leading dims).
fn broadcast_strides(shape: &[usize], out: &[usize]) -> Vec<usize> {
    let strides = contiguous_strides(shape);
    let skip = out.len() - shape.len();
    (0..out.len()).map(|i| if i < skip || shape[i - skip] == 1 { 0 } else { strides[i - skip] }).collect()
}

/// The output shape and `Dims` of `a op b` with broadcasting.
pub fn broadcast_dims(a: &[usize], b: &[usize]) -> Result<(Vec<usize>, Dims)> {
    let out = broadcast_shape(a, b)?;
    let dims = Dims::new(&out, &broadcast_strides(a, &out), &broadcast_strides(b, &out))?;
    Ok((out, dims))
}

/// The output shape and `Dims` of a permutation: output dim i walks input dim `perm[i]`.
pub fn permute_dims(shape: &[usize], perm: &[usize]) -> Result<(Vec<usize>, Dims)> {
    let out = crate::ops::layout::permuted_shape(shape, perm)?;
    let strides = contiguous_strides(shape);
    let src: Vec<usize> = perm.iter().map(|&p| strides[p]).collect();
    let dims = Dims::new(&out, &src, &vec![0; out.len()])?;
    Ok((out, dims))
}

/// A narrow/cat piece as one `copy_block` launch: `outer` rows of `len` elements, from offset
/// `src_off` in rows of `src_row` to offset `dst_off` in rows of `dst_row`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockCopy {
    pub outer: usize,
    pub len: usize,
    pub src_row: usize,
    pub src_off: usize,
    pub dst_row: usize,
    pub dst_off: usize,
}

/// `narrow(x, dim, start, len)` as a block copy.
pub fn narrow_plan(shape: &[usize], dim: usize, start: usize, len: usize) -> Result<(Vec<usize>, BlockCopy)> {
    if dim >= shape.len() || start + len > shape[dim] {
        return Err(Error::shape("narrow", format!("dim {dim}: {start}..{}", start + len), shape));
    }
    let inner: usize = shape[dim + 1..].iter().product();
    let outer: usize = shape[..dim].iter().product();
    let mut out = shape.to_vec();
    out[dim] = len;
    let copy = BlockCopy {
        outer,
        len: len * inner,
        src_row: shape[dim] * inner,
        src_off: start * inner,
        dst_row: len * inner,
        dst_off: 0,
    };
    Ok((out, copy))
}

/// `cat(xs, dim)` as one block copy per input.
pub fn cat_plan(shapes: &[&[usize]], dim: usize) -> Result<(Vec<usize>, Vec<BlockCopy>)> {
    let first = shapes.first().ok_or_else(|| Error::Msg("cat of no tensors".into()))?;
    if dim >= first.len() {
        return Err(Error::shape("cat", format!("dim {dim} < rank"), *first));
    }
    for s in shapes {
        let same =
            s.len() == first.len() && s.iter().zip(first.iter()).enumerate().all(|(i, (a, b))| i == dim || a == b);
        if !same {
            return Err(Error::shape("cat", *first, *s));
        }
    }
    let inner: usize = first[dim + 1..].iter().product();
    let outer: usize = first[..dim].iter().product();
    let total: usize = shapes.iter().map(|s| s[dim]).sum();
    let mut out = first.to_vec();
    out[dim] = total;
    let mut at = 0;
    let copies = shapes
        .iter()
        .map(|s| {
            let c = BlockCopy {
                outer,
                len: s[dim] * inner,
                src_row: s[dim] * inner,
                src_off: 0,
                dst_row: total * inner,
                dst_off: at * inner,
            };
            at += s[dim];
            c
        })
        .collect();
    Ok((out, copies))
}

/// The `Conv` argument of layout.cu's im2col (one batch item).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvArgs {
    pub c: i64,
    pub t: i64,
    pub h: i64,
    pub w: i64,
    pub kt: i64,
    pub kh: i64,
    pub kw: i64,
    pub st: i64,
    pub sh: i64,
    pub sw: i64,
    pub pt: i64,
    pub ph: i64,
    pub pw: i64,
    pub ot: i64,
    pub oh: i64,
    pub ow: i64,
}

impl ConvArgs {
    /// Output positions of one batch item.
    pub fn positions(&self) -> usize {
        (self.ot * self.oh * self.ow) as usize
    }
    /// The GEMM's inner dimension `C·kt·kh·kw`.
    pub fn k(&self) -> usize {
        (self.c * self.kt * self.kh * self.kw) as usize
    }
}

/// im2col arguments of a conv3d on an input `[C, T, H, W]` (history already in front) with
/// weight `[C_out, C, kt, kh, kw]`, stride and padding `(front, back)` per axis.
pub fn conv_args(
    input: [usize; 4],
    kernel: [usize; 3],
    stride: (usize, usize, usize),
    pad: [(usize, usize); 3],
) -> Result<ConvArgs> {
    let out = |size: usize, k: usize, s: usize, (p0, p1): (usize, usize)| {
        let padded = size + p0 + p1;
        if padded < k || s == 0 {
            return Err(Error::shape("conv3d", format!("padded size ≥ kernel {k}"), padded));
        }
        Ok((padded - k) / s + 1)
    };
    let [c, t, h, w] = input;
    let [kt, kh, kw] = kernel;
    Ok(ConvArgs {
        c: c as i64,
        t: t as i64,
        h: h as i64,
        w: w as i64,
        kt: kt as i64,
        kh: kh as i64,
        kw: kw as i64,
        st: stride.0 as i64,
        sh: stride.1 as i64,
        sw: stride.2 as i64,
        pt: pad[0].0 as i64,
        ph: pad[1].0 as i64,
        pw: pad[2].0 as i64,
        ot: out(t, kt, stride.0, pad[0])? as i64,
        oh: out(h, kh, stride.1, pad[1])? as i64,
        ow: out(w, kw, stride.2, pad[2])? as i64,
    })
}

/// Up to 16 per-batch integers by value (`Lengths`, `KeyLengths`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchInts {
    pub n: [i32; MAX_BATCH_ARGS],
}

impl BatchInts {
    pub fn new(op: &str, values: &[usize]) -> Result<BatchInts> {
        if values.len() > MAX_BATCH_ARGS || values.iter().any(|&v| v > i32::MAX as usize) {
            return Err(Error::Msg(format!("cuda {op}: {} batch items (at most {MAX_BATCH_ARGS})", values.len())));
        }
        let mut n = [i32::MAX; MAX_BATCH_ARGS];
        for (d, &v) in n.iter_mut().zip(values) {
            *d = v as i32;
        }
        Ok(BatchInts { n })
    }
}

/// Up to 16 timesteps by value (`Steps`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchFloats {
    pub t: [f32; MAX_BATCH_ARGS],
}

/// Up to 8 terms of a linear combination (`Terms` in elementwise.cu).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Terms {
    pub ptr: [u64; 8],
    pub dt: [i32; 8],
    pub coef: [f32; 8],
    pub count: i32,
}

/// Splits a linear combination into launches of at most 8 terms; every launch after the first
/// takes the running sum (coefficient 1) as its first term. Returns the term indices per launch.
pub fn lincomb_launches(terms: usize) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    if terms == 0 {
        return out;
    }
    out.push(0..terms.min(8));
    let mut at = terms.min(8);
    while at < terms {
        let end = (at + 7).min(terms);
        out.push(at..end);
        at = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elementwise_grid_covers_and_caps() {
        assert_eq!(elementwise(1).grid.0, 1);
        assert_eq!(elementwise(256).grid.0, 1);
        assert_eq!(elementwise(257).grid.0, 2);
        // 1.3B latents at 832×480×81 with CFG: 2·16·21·60·104 values; the grid stays capped.
        assert_eq!(elementwise(2 * 16 * 21 * 60 * 104).grid.0, 16_380);
        assert_eq!(elementwise(1 << 30).grid.0, MAX_BLOCKS as u32);
    }

    #[test]
    fn attention_grid_tiles_queries() {
        let l = attention(2, 32_760, 12).unwrap();
        assert_eq!(l.grid, (2048, 12, 2));
        assert_eq!(l.block.0 as usize / 32 * 4, ATTENTION_ROWS_PER_BLOCK);
        assert!(attention(17, 10, 1).is_err());
    }

    #[test]
    fn attention_entries_by_head_dim() {
        assert_eq!(attention_entry(128, false).unwrap(), "attention_d128");
        assert_eq!(attention_entry(16, true).unwrap(), "attention_int8_d16");
        let e = attention_entry(96, true).unwrap_err().to_string();
        assert!(e.contains("8-bit attention: head dim 96"), "{e}");
        assert_eq!(activation_code(Activation::ALL[3]), 3);
    }

    #[test]
    fn eight_bit_attention_launches() {
        // A warp per row, 8 a block; the 1.3B self-attention at 832×480×81 (2 · 32,760 · 12 rows
        // of 128 codes) is capped and grid-strided.
        assert_eq!(warp_per_row(4096 * 12).grid.0 as usize, 4096 * 12 / 8);
        assert_eq!(warp_per_row(4096 * 12 + 1).grid.0 as usize, 4096 * 12 / 8 + 1);
        assert_eq!(warp_per_row(2 * 32_760 * 12).grid.0, MAX_BLOCKS as u32);
        assert_eq!(warp_per_row(1).grid.0, 1);
        assert_eq!(warp_per_row(1 << 30).grid.0, MAX_BLOCKS as u32);
        assert_eq!(per_head(2, 12).unwrap().grid, (12, 2, 1));
        assert!(per_head(0, 12).is_err() && per_head(70_000, 12).is_err());
    }

    #[test]
    fn broadcast_dims_match_numpy() {
        let (out, d) = broadcast_dims(&[1, 6, 9], &[2, 1, 9]).unwrap();
        assert_eq!(out, [2, 6, 9]);
        assert_eq!(&d.stride_a[..3], &[0, 9, 1]);
        assert_eq!(&d.stride_b[..3], &[9, 0, 1]);
        let (out, d) = broadcast_dims(&[1, 16, 3, 4, 5], &[16, 1, 1, 1]).unwrap();
        assert_eq!(out, [1, 16, 3, 4, 5]);
        assert_eq!(&d.stride_b[..5], &[0, 1, 0, 0, 0]);
        assert!(broadcast_dims(&[2, 3], &[4, 3]).is_err());
        assert!(broadcast_dims(&[1; 9], &[1; 9]).is_err());
    }

    /// The index arithmetic of the kernels, replayed on the host, gives the CPU's values.
    #[test]
    fn permute_dims_gather_like_the_cpu() {
        let shape = [2, 5, 3, 7];
        let x: Vec<f32> = (0..210).map(|i| i as f32).collect();
        let perm = [0, 3, 1, 2];
        let (out, d) = permute_dims(&shape, &perm).unwrap();
        let got: Vec<f32> = (0..210i64)
            .map(|i| {
                let (mut rest, mut s) = (i, 0);
                for k in (0..d.rank as usize).rev() {
                    s += (rest % d.size[k]) * d.stride_a[k];
                    rest /= d.size[k];
                }
                x[s as usize]
            })
            .collect();
        let (want, want_shape) = crate::ops::layout::permute(&x, &shape, &perm).unwrap();
        assert_eq!(out, want_shape);
        assert_eq!(got, want);
    }

    fn run_copy(c: &BlockCopy, src: &[f32], dst: &mut [f32]) {
        for o in 0..c.outer {
            for j in 0..c.len {
                dst[o * c.dst_row + c.dst_off + j] = src[o * c.src_row + c.src_off + j];
            }
        }
    }

    #[test]
    fn narrow_and_cat_plans_copy_like_the_cpu() {
        let shape = [2, 5, 3, 7];
        let x: Vec<f32> = (0..210).map(|i| i as f32).collect();
        let (out, c) = narrow_plan(&shape, 1, 1, 3).unwrap();
        let mut got = vec![0.0; out.iter().product()];
        run_copy(&c, &x, &mut got);
        assert_eq!(got, crate::ops::layout::narrow(&x, &shape, 1, 1, 3).unwrap());
        let shapes: [&[usize]; 2] = [&out, &shape];
        let (cat_shape, copies) = cat_plan(&shapes, 1).unwrap();
        assert_eq!(cat_shape, [2, 8, 3, 7]);
        let mut cat = vec![0.0; cat_shape.iter().product()];
        run_copy(&copies[0], &got, &mut cat);
        run_copy(&copies[1], &x, &mut cat);
        let (want, _) = crate::ops::layout::cat(&[&got, &x], &shapes, 1).unwrap();
        assert_eq!(cat, want);
        assert!(narrow_plan(&shape, 1, 3, 3).is_err());
        assert!(cat_plan(&[&[2, 3], &[3, 3]], 1).is_err());
    }

    #[test]
    fn conv_args_output_sizes() {
        // Wan VAE's causal 3×3×3 conv: time padded 2 in front only, spatial 1 both sides.
        let a = conv_args([16, 3, 10, 12], [3, 3, 3], (1, 1, 1), [(2, 0), (1, 1), (1, 1)]).unwrap();
        assert_eq!((a.ot, a.oh, a.ow), (3, 10, 12));
        assert_eq!(a.k(), 16 * 27);
        // The downsampling conv: stride 2, padding (0, 1).
        let a = conv_args([16, 3, 10, 12], [1, 3, 3], (1, 2, 2), [(0, 0), (0, 1), (0, 1)]).unwrap();
        assert_eq!((a.ot, a.oh, a.ow), (3, 5, 6));
        assert!(conv_args([1, 1, 1, 1], [3, 3, 3], (1, 1, 1), [(0, 0); 3]).is_err());
        // The struct is the 16 i64s im2col3d reads.
        assert_eq!(std::mem::size_of::<ConvArgs>(), 16 * 8);
    }

    #[test]
    fn argument_structs_have_the_c_layout() {
        assert_eq!(std::mem::size_of::<Dims>(), 3 * 8 * 8 + 8); // 3 arrays + rank + padding
        assert_eq!(std::mem::size_of::<BatchInts>(), 64);
        assert_eq!(std::mem::size_of::<Terms>(), 8 * 8 + 8 * 4 + 8 * 4 + 8);
        assert_eq!(BatchInts::new("mask", &[5, 13]).unwrap().n[..3], [5, 13, i32::MAX]);
        assert!(BatchInts::new("mask", &[1; 17]).is_err());
    }

    #[test]
    fn lincomb_chains_launches_of_eight() {
        assert_eq!(lincomb_launches(3), vec![0..3]);
        assert_eq!(lincomb_launches(8), vec![0..8]);
        // 8 first, then the running sum + 7 more per launch.
        assert_eq!(lincomb_launches(20), vec![0..8, 8..15, 15..20]);
        assert!(lincomb_launches(0).is_empty());
    }

    #[test]
    fn dtype_codes_match_common_cuh() {
        let src = super::super::kernels::COMMON;
        for (dt, name) in
            [(DType::F32, "DT_F32"), (DType::BF16, "DT_BF16"), (DType::F16, "DT_F16"), (DType::U32, "DT_U32")]
        {
            assert!(src.contains(&format!("#define {name} {}", dtype_code(dt).unwrap())), "{name}");
        }
        assert!(dtype_code(DType::I8).is_err());
    }
}
