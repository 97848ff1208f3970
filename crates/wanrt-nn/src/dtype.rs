//! Storage dtypes of parameters. Compute is always f32.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F16,
    BF16,
    F64,
    I64,
    I32,
    I8,
    U8,
    F8E4M3,
}

impl DType {
    pub fn size_in_bytes(self) -> usize {
        match self {
            DType::F64 | DType::I64 => 8,
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::I8 | DType::U8 | DType::F8E4M3 => 1,
        }
    }

    /// Whether values of this dtype convert to f32 without loss of meaning
    /// (floats and small integers); quantized formats need their scales.
    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F16 | DType::BF16 | DType::F64)
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
            DType::I8 => "i8",
            DType::U8 => "u8",
            DType::F8E4M3 => "f8_e4m3",
        };
        f.write_str(s)
    }
}

/// Widens little-endian raw bytes of `dtype` to f32 values.
pub fn bytes_to_f32(bytes: &[u8], dtype: DType) -> Option<Vec<f32>> {
    let n = bytes.len() / dtype.size_in_bytes();
    let chunks = |k: usize| bytes.chunks_exact(k);
    Some(match dtype {
        DType::F32 => chunks(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        DType::F16 => chunks(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        DType::BF16 => chunks(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        DType::F64 => chunks(8).map(|c| f64::from_le_bytes(c.try_into().expect("chunk of 8")) as f32).collect(),
        DType::I64 => chunks(8).map(|c| i64::from_le_bytes(c.try_into().expect("chunk of 8")) as f32).collect(),
        DType::I32 => chunks(4).map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f32).collect(),
        DType::I8 => bytes.iter().map(|&b| b as i8 as f32).collect(),
        DType::U8 => bytes.iter().map(|&b| b as f32).collect(),
        DType::F8E4M3 => return None,
    })
    .filter(|v: &Vec<f32>| v.len() == n)
}
