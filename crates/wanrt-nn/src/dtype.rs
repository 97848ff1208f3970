//! Element types: of stored parameters (checkpoint dtypes, quantized codes) and of tensors a
//! backend holds (activations in f32, bf16 or f16; token ids in u32).

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
}

impl DType {
    pub fn size_in_bytes(self) -> usize {
        match self {
            DType::F64 | DType::I64 => 8,
            DType::F32 | DType::I32 | DType::U32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::I8 | DType::U8 | DType::F8E4M3 => 1,
        }
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
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
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
        };
        f.write_str(s)
    }
}

/// Widens little-endian raw bytes of `dtype` to f32 values (in parallel:
/// loading converts gigabytes of checkpoint data).
pub fn bytes_to_f32(bytes: &[u8], dtype: DType) -> Option<Vec<f32>> {
    use rayon::prelude::*;
    let size = dtype.size_in_bytes();
    if !bytes.len().is_multiple_of(size) {
        return None;
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
    };
    let mut out = vec![0f32; bytes.len() / size];
    const CHUNK: usize = 1 << 16;
    out.par_chunks_mut(CHUNK).zip(bytes.par_chunks(CHUNK * size)).for_each(|(o, b)| {
        o.iter_mut().zip(b.chunks_exact(size)).for_each(|(o, c)| *o = convert(c));
    });
    Some(out)
}
