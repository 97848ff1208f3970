//! Element types: of stored parameters (checkpoint dtypes, quantized codes, ggml's
//! block-quantized formats of GGUF files) and of tensors a backend holds (activations in f32,
//! bf16 or f16; token ids in u32).

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F16,
    BF16,
    F64,
    I64,
    I32,
    U32,
    I8,
    U8,
    F8E4M3,
    // ggml's block-quantized formats (GGUF): blocks of `block_size()` values with their own
    // scales, decoded by `crate::quant::ggml`.
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q2K,
    Q3K,
    Q4K,
    Q5K,
    Q6K,
}

impl DType {
    /// The ggml block-quantized types, in ggml's id order.
    pub const GGML_BLOCKS: [DType; 10] = [
        DType::Q4_0,
        DType::Q4_1,
        DType::Q5_0,
        DType::Q5_1,
        DType::Q8_0,
        DType::Q2K,
        DType::Q3K,
        DType::Q4K,
        DType::Q5K,
        DType::Q6K,
    ];

    /// Bytes of one element, or of one block of [`DType::block_size`] values for the
    /// block-quantized types.
    pub fn size_in_bytes(self) -> usize {
        match self {
            DType::F64 | DType::I64 => 8,
            DType::F32 | DType::I32 | DType::U32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::I8 | DType::U8 | DType::F8E4M3 => 1,
            DType::Q4_0 => 18,
            DType::Q4_1 => 20,
            DType::Q5_0 => 22,
            DType::Q5_1 => 24,
            DType::Q8_0 => 34,
            DType::Q2K => 84,
            DType::Q3K => 110,
            DType::Q4K => 144,
            DType::Q5K => 176,
            DType::Q6K => 210,
        }
    }

    /// Values per storage unit: 1, or the block size of a block-quantized type.
    pub fn block_size(self) -> usize {
        match self {
            DType::Q4_0 | DType::Q4_1 | DType::Q5_0 | DType::Q5_1 | DType::Q8_0 => 32,
            DType::Q2K | DType::Q3K | DType::Q4K | DType::Q5K | DType::Q6K => crate::quant::ggml::QK_K,
            _ => 1,
        }
    }

    /// Whether values are stored in blocks with their own scales (ggml's formats).
    pub fn is_block_quantized(self) -> bool {
        self.block_size() > 1
    }

    /// Bytes that `numel` values take; `None` when they are not whole blocks (or overflow).
    pub fn storage_bytes(self, numel: usize) -> Option<usize> {
        if !numel.is_multiple_of(self.block_size()) {
            return None;
        }
        (numel / self.block_size()).checked_mul(self.size_in_bytes())
    }

    /// Whether values of this dtype convert to f32 without loss of meaning
    /// (floats and small integers); quantized formats need their scales.
    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F16 | DType::BF16 | DType::F64)
    }

    /// The activation precisions a backend computes in (`--dtype`).
    pub fn parse_activation(s: &str) -> Option<DType> {
        match s {
            "f32" => Some(DType::F32),
            "bf16" => Some(DType::BF16),
            "f16" => Some(DType::F16),
            _ => None,
        }
    }

    /// Short lowercase name (`f32`, `bf16`, `q4_k`).
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::F64 => "f64",
            DType::I64 => "i64",
            DType::I32 => "i32",
            DType::U32 => "u32",
            DType::I8 => "i8",
            DType::U8 => "u8",
            DType::F8E4M3 => "f8_e4m3",
            DType::Q4_0 => "q4_0",
            DType::Q4_1 => "q4_1",
            DType::Q5_0 => "q5_0",
            DType::Q5_1 => "q5_1",
            DType::Q8_0 => "q8_0",
            DType::Q2K => "q2_k",
            DType::Q3K => "q3_k",
            DType::Q4K => "q4_k",
            DType::Q5K => "q5_k",
            DType::Q6K => "q6_k",
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `values` stored as little-endian `dtype` (f32, bf16 or f16, rounded to nearest even); None
/// for other dtypes.
pub fn f32_to_bytes(values: &[f32], dtype: DType) -> Option<Vec<u8>> {
    Some(match dtype {
        DType::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        DType::BF16 => values.iter().flat_map(|v| half::bf16::from_f32(*v).to_le_bytes()).collect(),
        DType::F16 => values.iter().flat_map(|v| half::f16::from_f32(*v).to_le_bytes()).collect(),
        _ => return None,
    })
}

/// Widens little-endian raw bytes of `dtype` to f32 values (in parallel:
/// loading converts gigabytes of checkpoint data); block-quantized bytes are dequantized as ggml
/// does. `None` for E4M3 codes (they need their scales) and for bytes that are not whole
/// elements or blocks.
pub fn bytes_to_f32(bytes: &[u8], dtype: DType) -> Option<Vec<f32>> {
    use rayon::prelude::*;
    let size = dtype.size_in_bytes();
    if !bytes.len().is_multiple_of(size) {
        return None;
    }
    if dtype.is_block_quantized() {
        let n = dtype.block_size();
        let mut out = vec![0f32; bytes.len() / size * n];
        const BLOCKS: usize = 256;
        out.par_chunks_mut(BLOCKS * n).zip(bytes.par_chunks(BLOCKS * size)).for_each(|(o, b)| {
            crate::quant::ggml::dequantize(dtype, b, o);
        });
        return Some(out);
    }
    let convert: fn(&[u8]) -> f32 = match dtype {
        DType::F32 => |c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]),
        DType::F16 => |c| half::f16::from_le_bytes([c[0], c[1]]).to_f32(),
        DType::BF16 => |c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32(),
        DType::F64 => |c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32,
        DType::I64 => |c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32,
        DType::I32 => |c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f32,
        DType::U32 => |c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f32,
        DType::I8 => |c| c[0] as i8 as f32,
        DType::U8 => |c| c[0] as f32,
        DType::F8E4M3 => return None,
        _ => unreachable!("block-quantized types are decoded above"),
    };
    let mut out = vec![0f32; bytes.len() / size];
    const CHUNK: usize = 1 << 16;
    out.par_chunks_mut(CHUNK).zip(bytes.par_chunks(CHUNK * size)).for_each(|(o, b)| {
        o.iter_mut().zip(b.chunks_exact(size)).for_each(|(o, c)| *o = convert(c));
    });
    Some(out)
}
