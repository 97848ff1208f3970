//! ggml's block-quantized weight formats (what GGUF checkpoints store), dequantized exactly as
//! ggml does.
//!
//! Each format is a block of 32 values (`Q4_0`, `Q4_1`, `Q5_0`, `Q5_1`, `Q8_0`) or a 256-value
//! super-block (the K-quants `Q2_K` … `Q6_K`) carrying its own f16 scales. The layouts and the
//! arithmetic mirror ggml's `dequantize_row_*` (ggml-quants.c) and gguf-py 0.19's numpy
//! `dequantize_blocks` (gguf/quants.py): the same f32 operations in the same order (no fused
//! multiply-add), so the values are bit-identical to the reference's — tested on random blocks
//! against fixtures made by gguf-py (`tools/fixtures/make_gguf_fixtures.py`).
//!
//! Block layouts (bytes, in order; `d`, `m`, `dmin` are f16):
//! - Q4_0: d, qs[16] — value `j` is the low nibble of qs[j] (j < 16) or the high nibble of
//!   qs[j−16], minus 8, times d;
//! - Q4_1: d, m, qs[16] — `d·q + m`;
//! - Q5_0: d, qh[4] (u32, bit j = fifth bit of value j), qs[16] — `(q | h<<4) − 16`, times d;
//! - Q5_1: d, m, qh[4], qs[16] — `d·q + m`;
//! - Q8_0: d, qs[32] (i8) — `q·d`;
//! - Q2_K: scales[16] (4-bit scale | 4-bit min per 16 values), qs[64], d, dmin;
//! - Q3_K: hmask[32], qs[64], scales[12] (sixteen 6-bit scales), d;
//! - Q4_K: d, dmin, scales[12] (eight 6-bit scales and mins), qs[128];
//! - Q5_K: d, dmin, scales[12], qh[32], qs[128];
//! - Q6_K: ql[128], qh[64], scales[16] (i8), d.

use crate::dtype::DType;
use half::f16;

/// Values per K-quant super-block.
pub const QK_K: usize = 256;

#[inline(always)]
fn f16_at(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// Decodes whole blocks of `dtype` from `bytes` into `out` (`out.len()` = blocks × block size).
/// Panics if the lengths do not describe whole blocks of a block-quantized type.
pub fn dequantize(dtype: DType, bytes: &[u8], out: &mut [f32]) {
    let (n, size) = (dtype.block_size(), dtype.size_in_bytes());
    assert!(n > 1, "{dtype} is not a block-quantized type");
    assert!(
        bytes.len().is_multiple_of(size) && bytes.len() / size * n == out.len(),
        "{dtype}: {} bytes do not decode into {} values",
        bytes.len(),
        out.len()
    );
    let block: fn(&[u8], &mut [f32]) = match dtype {
        DType::Q4_0 => q4_0,
        DType::Q4_1 => q4_1,
        DType::Q5_0 => q5_0,
        DType::Q5_1 => q5_1,
        DType::Q8_0 => q8_0,
        DType::Q2K => q2_k,
        DType::Q3K => q3_k,
        DType::Q4K => q4_k,
        DType::Q5K => q5_k,
        DType::Q6K => q6_k,
        other => unreachable!("{other} has blocks of one element"),
    };
    bytes.chunks_exact(size).zip(out.chunks_exact_mut(n)).for_each(|(b, o)| block(b, o));
}

/// The 4-bit value `j` of a 32-value block: low nibbles first, then high nibbles.
#[inline(always)]
fn nibble(qs: &[u8], j: usize) -> u8 {
    if j < 16 {
        qs[j] & 0x0f
    } else {
        qs[j - 16] >> 4
    }
}

fn q4_0(b: &[u8], out: &mut [f32]) {
    let d = f16_at(b, 0);
    for (j, o) in out.iter_mut().enumerate() {
        *o = d * (nibble(&b[2..], j) as i8 - 8) as f32;
    }
}

fn q4_1(b: &[u8], out: &mut [f32]) {
    let (d, m) = (f16_at(b, 0), f16_at(b, 2));
    for (j, o) in out.iter_mut().enumerate() {
        *o = d * nibble(&b[4..], j) as f32 + m;
    }
}

/// The 5-bit value `j`: its nibble plus bit `j` of the little-endian u32 `qh`.
#[inline(always)]
fn five_bits(qh: u32, qs: &[u8], j: usize) -> u8 {
    nibble(qs, j) | ((((qh >> j) & 1) as u8) << 4)
}

fn q5_0(b: &[u8], out: &mut [f32]) {
    let d = f16_at(b, 0);
    let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
    for (j, o) in out.iter_mut().enumerate() {
        *o = d * (five_bits(qh, &b[6..], j) as i8 - 16) as f32;
    }
}

fn q5_1(b: &[u8], out: &mut [f32]) {
    let (d, m) = (f16_at(b, 0), f16_at(b, 2));
    let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    for (j, o) in out.iter_mut().enumerate() {
        *o = d * five_bits(qh, &b[8..], j) as f32 + m;
    }
}

fn q8_0(b: &[u8], out: &mut [f32]) {
    let d = f16_at(b, 0);
    for (o, &q) in out.iter_mut().zip(&b[2..34]) {
        *o = q as i8 as f32 * d;
    }
}

fn q2_k(b: &[u8], out: &mut [f32]) {
    let (scales, qs) = (&b[..16], &b[16..80]);
    let (d, dmin) = (f16_at(b, 80), f16_at(b, 82));
    for (i, o) in out.iter_mut().enumerate() {
        // Two halves of 128 values; in each, 32 bytes give four 2-bit planes.
        let (half, plane, l) = (i / 128, (i % 128) / 32, i % 32);
        let sc = scales[i / 16];
        let dl = d * (sc & 0x0f) as f32;
        let ml = dmin * (sc >> 4) as f32;
        let q = (qs[half * 32 + l] >> (2 * plane)) & 3;
        *o = dl * q as f32 - ml;
    }
}

/// The sixteen 6-bit scales of a Q3_K block (stored biased by 32), as ggml's `kmask` unpacking.
fn q3_k_scales(s: &[u8]) -> [i8; 16] {
    std::array::from_fn(|k| {
        let low = if k < 8 { s[k] & 0x0f } else { s[k - 8] >> 4 };
        let high = (s[8 + k % 4] >> (2 * (k / 4))) & 3;
        (low | (high << 4)) as i8 - 32
    })
}

fn q3_k(b: &[u8], out: &mut [f32]) {
    let (hmask, qs) = (&b[..32], &b[32..96]);
    let scales = q3_k_scales(&b[96..108]);
    let d = f16_at(b, 108);
    for (i, o) in out.iter_mut().enumerate() {
        let (half, plane, l) = (i / 128, (i % 128) / 32, i % 32);
        let dl = d * scales[i / 16] as f32;
        let low = ((qs[half * 32 + l] >> (2 * plane)) & 3) as i8;
        // The high bit is stored inverted: a clear bit subtracts 4.
        let high = if hmask[l] & (1 << (half * 4 + plane)) != 0 { 0 } else { 4 };
        *o = dl * (low - high) as f32;
    }
}

/// Scale and min of sub-block `j` (0..8) of a Q4_K/Q5_K block (ggml's `get_scale_min_k4`).
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        ((q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
    }
}

/// Q4_K and Q5_K: eight sub-blocks of 32 with their own scale and min; `qh` adds a fifth bit.
fn k4_k5(b: &[u8], qh: Option<&[u8]>, qs: &[u8], out: &mut [f32]) {
    let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
    let scales = &b[4..16];
    for (s, chunk) in out.chunks_exact_mut(32).enumerate() {
        let (sc, m) = scale_min_k4(s, scales);
        let (d1, m1) = (d * sc as f32, dmin * m as f32);
        // Sub-blocks 2j and 2j+1 are the low and high nibbles of bytes 32j..32j+32.
        let bytes = &qs[(s / 2) * 32..(s / 2) * 32 + 32];
        for (l, o) in chunk.iter_mut().enumerate() {
            let mut q = if s % 2 == 0 { bytes[l] & 0x0f } else { bytes[l] >> 4 };
            if let Some(qh) = qh {
                q |= ((qh[l] >> s) & 1) << 4;
            }
            *o = d1 * q as f32 - m1;
        }
    }
}

fn q4_k(b: &[u8], out: &mut [f32]) {
    k4_k5(b, None, &b[16..144], out);
}

fn q5_k(b: &[u8], out: &mut [f32]) {
    k4_k5(b, Some(&b[16..48]), &b[48..176], out);
}

fn q6_k(b: &[u8], out: &mut [f32]) {
    let (ql, qh, scales) = (&b[..128], &b[128..192], &b[192..208]);
    let d = f16_at(b, 208);
    for (i, o) in out.iter_mut().enumerate() {
        // Per half of 128 values, four planes r of 32: low nibbles of ql[0..32], of ql[32..64],
        // then their high nibbles; two bits of qh each.
        let (half, r, l) = (i / 128, (i % 128) / 32, i % 32);
        let low = (ql[half * 64 + (r % 2) * 32 + l] >> (4 * (r / 2))) & 0x0f;
        let high = (qh[half * 32 + l] >> (2 * r)) & 3;
        let q = (low | (high << 4)) as i8 - 32;
        *o = d * scales[i / 16] as i8 as f32 * q as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hand-built blocks with known values (the fixture test covers random ones).
    #[test]
    fn known_blocks() {
        let mut b = vec![0u8; 34];
        b[..2].copy_from_slice(&f16::from_f32(0.5).to_le_bytes());
        b[2] = 0x7f;
        b[3] = 0x81; // -127
        let mut out = [0f32; 32];
        dequantize(DType::Q8_0, &b, &mut out);
        assert_eq!(&out[..3], &[63.5, -63.5, 0.0]);

        let mut b = vec![0u8; 18];
        b[..2].copy_from_slice(&f16::from_f32(2.0).to_le_bytes());
        b[2] = 0xf0; // value 0: low nibble 0 → -8; value 16: high nibble 15 → 7
        dequantize(DType::Q4_0, &b, &mut out);
        assert_eq!((out[0], out[16], out[1]), (-16.0, 14.0, -16.0));

        let mut b = vec![0u8; 22];
        b[..2].copy_from_slice(&f16::from_f32(1.0).to_le_bytes());
        b[2..6].copy_from_slice(&(1u32 << 31).to_le_bytes()); // fifth bit of value 31
        dequantize(DType::Q5_0, &b, &mut out);
        assert_eq!((out[0], out[31]), (-16.0, 0.0));
    }

    #[test]
    #[should_panic(expected = "do not decode")]
    fn partial_blocks_are_refused() {
        dequantize(DType::Q4K, &[0u8; 100], &mut [0f32; 256]);
    }
}
