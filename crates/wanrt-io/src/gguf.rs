//! A safe reader of GGUF files (the llama.cpp / ggml container: ComfyUI-GGUF and
//! stable-diffusion.cpp store quantized Wan checkpoints in it).
//!
//! Mirrors the layout `gguf-py`'s `GGUFReader` reads (gguf 0.19, `gguf/gguf_reader.py`), versions
//! 2 and 3, little-endian: magic `GGUF`, version, tensor and key/value counts, the key/value
//! metadata, one info record per tensor (name, dims innermost first, ggml type, data offset), then
//! the tensor data from the first multiple of `general.alignment` (default 32) after the header.
//!
//! Nothing in the header is trusted for allocation: every count and length is checked against
//! the bytes left in the file before anything is allocated, arrays nest at most
//! [`MAX_ARRAY_DEPTH`] deep and only their first [`MAX_KEPT_ARRAY`] elements are kept (tokenizer
//! vocabularies are skipped, not stored), and every tensor's byte range is checked, with checked
//! arithmetic, to lie inside the file at an aligned offset. Tensor data is borrowed from a
//! read-only memory map, never copied. Block-quantized types are described ([`GgmlType`]) but not
//! decoded here: callers get bytes, shapes and types.

use std::collections::HashSet;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;

use crate::error::{Error, Result};

const FORMAT: &str = "GGUF";
const MAGIC: &[u8; 4] = b"GGUF";
/// Alignment of the data section when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: usize = 32;
/// Largest `general.alignment` accepted (ggml writes 32).
const MAX_ALIGNMENT: usize = 1 << 16;
/// Most dims a tensor may have (ggml's own limit is 4; converters write 5D convolution kernels).
const MAX_DIMS: usize = 8;
/// Longest key or tensor name, in bytes.
const MAX_NAME_LEN: usize = 1 << 16;
/// Deepest nesting of arrays in the metadata.
pub const MAX_ARRAY_DEPTH: usize = 4;
/// Arrays longer than this are checked and skipped ([`GgufValue::Skipped`]), not stored.
pub const MAX_KEPT_ARRAY: usize = 1024;

/// Tensor element types of ggml (`enum ggml_type`, ggml.h), with their block layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
    Q8_K,
    IQ2_XXS,
    IQ2_XS,
    IQ3_XXS,
    IQ1_S,
    IQ4_NL,
    IQ3_S,
    IQ2_S,
    IQ4_XS,
    I8,
    I16,
    I32,
    I64,
    F64,
    IQ1_M,
    BF16,
    TQ1_0,
    TQ2_0,
    MXFP4,
}

/// `(type, id, name, elements per block, bytes per block)`: gguf-py's `GGML_QUANT_SIZES`.
const TYPES: [(GgmlType, u32, &str, usize, usize); 32] = [
    (GgmlType::F32, 0, "F32", 1, 4),
    (GgmlType::F16, 1, "F16", 1, 2),
    (GgmlType::Q4_0, 2, "Q4_0", 32, 18),
    (GgmlType::Q4_1, 3, "Q4_1", 32, 20),
    (GgmlType::Q5_0, 6, "Q5_0", 32, 22),
    (GgmlType::Q5_1, 7, "Q5_1", 32, 24),
    (GgmlType::Q8_0, 8, "Q8_0", 32, 34),
    (GgmlType::Q8_1, 9, "Q8_1", 32, 40),
    (GgmlType::Q2_K, 10, "Q2_K", 256, 84),
    (GgmlType::Q3_K, 11, "Q3_K", 256, 110),
    (GgmlType::Q4_K, 12, "Q4_K", 256, 144),
    (GgmlType::Q5_K, 13, "Q5_K", 256, 176),
    (GgmlType::Q6_K, 14, "Q6_K", 256, 210),
    (GgmlType::Q8_K, 15, "Q8_K", 256, 292),
    (GgmlType::IQ2_XXS, 16, "IQ2_XXS", 256, 66),
    (GgmlType::IQ2_XS, 17, "IQ2_XS", 256, 74),
    (GgmlType::IQ3_XXS, 18, "IQ3_XXS", 256, 98),
    (GgmlType::IQ1_S, 19, "IQ1_S", 256, 50),
    (GgmlType::IQ4_NL, 20, "IQ4_NL", 32, 18),
    (GgmlType::IQ3_S, 21, "IQ3_S", 256, 110),
    (GgmlType::IQ2_S, 22, "IQ2_S", 256, 82),
    (GgmlType::IQ4_XS, 23, "IQ4_XS", 256, 136),
    (GgmlType::I8, 24, "I8", 1, 1),
    (GgmlType::I16, 25, "I16", 1, 2),
    (GgmlType::I32, 26, "I32", 1, 4),
    (GgmlType::I64, 27, "I64", 1, 8),
    (GgmlType::F64, 28, "F64", 1, 8),
    (GgmlType::IQ1_M, 29, "IQ1_M", 256, 56),
    (GgmlType::BF16, 30, "BF16", 1, 2),
    (GgmlType::TQ1_0, 34, "TQ1_0", 256, 54),
    (GgmlType::TQ2_0, 35, "TQ2_0", 256, 66),
    (GgmlType::MXFP4, 39, "MXFP4", 32, 17),
];

impl GgmlType {
    fn entry(self) -> &'static (GgmlType, u32, &'static str, usize, usize) {
        TYPES.iter().find(|t| t.0 == self).expect("the table lists every GgmlType")
    }

    /// The type with ggml id `id`.
    pub fn from_id(id: u32) -> Option<GgmlType> {
        TYPES.iter().find(|t| t.1 == id).map(|t| t.0)
    }

    /// ggml's id of the type.
    pub fn id(self) -> u32 {
        self.entry().1
    }

    /// ggml's name (`Q4_K`, `BF16`).
    pub fn name(self) -> &'static str {
        self.entry().2
    }

    /// Elements per block (1 for plain element types).
    pub fn block_size(self) -> usize {
        self.entry().3
    }

    /// Bytes per block.
    pub fn type_size(self) -> usize {
        self.entry().4
    }
}

impl std::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum GgufValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(Vec<GgufValue>),
    /// An array longer than [`MAX_KEPT_ARRAY`]: checked, not kept.
    Skipped {
        len: u64,
    },
}

impl GgufValue {
    /// The value as an unsigned integer, when it is a non-negative integer of any width.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            GgufValue::U8(v) => Some(v.into()),
            GgufValue::U16(v) => Some(v.into()),
            GgufValue::U32(v) => Some(v.into()),
            GgufValue::U64(v) => Some(v),
            GgufValue::I8(v) => u64::try_from(v).ok(),
            GgufValue::I16(v) => u64::try_from(v).ok(),
            GgufValue::I32(v) => u64::try_from(v).ok(),
            GgufValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::String(s) => Some(s),
            _ => None,
        }
    }
}

/// One tensor: its name, shape (outermost dimension first, as PyTorch writes it: ggml's `ne`
/// reversed), type and bytes in the mapped file.
#[derive(Clone, Debug)]
pub struct GgufTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub ggml_type: GgmlType,
    map: Arc<Mmap>,
    range: Range<usize>,
}

impl GgufTensor {
    /// The tensor's bytes (blocks of the ggml type, rows of `shape[last]` elements).
    pub fn bytes(&self) -> &[u8] {
        &self.map[self.range.clone()]
    }

    /// The file mapping the bytes live in, and their range in it.
    pub fn mapping(&self) -> (Arc<Mmap>, Range<usize>) {
        (self.map.clone(), self.range.clone())
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// A GGUF file opened and validated.
#[derive(Debug)]
pub struct GgufFile {
    path: PathBuf,
    pub version: u32,
    pub alignment: usize,
    metadata: Vec<(String, GgufValue)>,
    tensors: Vec<GgufTensor>,
}

/// A little-endian reader over the header bytes that fails, naming what it read, at the end.
struct Cursor<'a> {
    path: &'a Path,
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn err(&self, msg: impl Into<String>) -> Error {
        Error::format(self.path, FORMAT, msg)
    }

    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(self.err(format!(
                "truncated header: {what} needs {n} bytes at offset {}, the file has {} left",
                self.pos,
                self.remaining()
            )));
        }
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        Ok(self.take(N, what)?.try_into().expect("took N bytes"))
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A count or length of items of at least `min_size` bytes each, checked against the file.
    fn count(&mut self, what: &str, min_size: usize) -> Result<usize> {
        let n = self.u64(what)?;
        match usize::try_from(n).ok().filter(|&n| n.saturating_mul(min_size) <= self.remaining()) {
            Some(n) => Ok(n),
            None => Err(self.err(format!("{what} {n} is more than the {} bytes left could hold", self.remaining()))),
        }
    }

    fn string(&mut self, what: &str, max: usize) -> Result<String> {
        let len = self.count(what, 1)?;
        if len > max {
            return Err(self.err(format!("{what} of {len} bytes is longer than the {max} allowed")));
        }
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| self.err(format!("{what} is not valid UTF-8")))
    }

    fn value(&mut self, ty: u32, key: &str, depth: usize) -> Result<GgufValue> {
        Ok(match ty {
            0 => GgufValue::U8(self.array::<1>(key)?[0]),
            1 => GgufValue::I8(self.array::<1>(key)?[0] as i8),
            2 => GgufValue::U16(u16::from_le_bytes(self.array(key)?)),
            3 => GgufValue::I16(i16::from_le_bytes(self.array(key)?)),
            4 => GgufValue::U32(self.u32(key)?),
            5 => GgufValue::I32(i32::from_le_bytes(self.array(key)?)),
            6 => GgufValue::F32(f32::from_le_bytes(self.array(key)?)),
            7 => match self.array::<1>(key)?[0] {
                0 => GgufValue::Bool(false),
                1 => GgufValue::Bool(true),
                b => return Err(self.err(format!("metadata `{key}`: boolean byte {b} is neither 0 nor 1"))),
            },
            8 => GgufValue::String(self.string(&format!("metadata `{key}` string"), usize::MAX)?),
            9 => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(self.err(format!("metadata `{key}`: arrays nested deeper than {MAX_ARRAY_DEPTH}")));
                }
                let elem = self.u32(key)?;
                let min = value_min_size(elem)
                    .ok_or_else(|| self.err(format!("metadata `{key}`: unknown array element type {elem}")))?;
                let len = self.count(&format!("metadata `{key}` array length"), min)?;
                let mut kept = Vec::with_capacity(len.min(MAX_KEPT_ARRAY));
                for i in 0..len {
                    let v = self.value(elem, key, depth + 1)?;
                    if i < MAX_KEPT_ARRAY {
                        kept.push(v);
                    }
                }
                if len > MAX_KEPT_ARRAY {
                    GgufValue::Skipped { len: len as u64 }
                } else {
                    GgufValue::Array(kept)
                }
            }
            10 => GgufValue::U64(self.u64(key)?),
            11 => GgufValue::I64(i64::from_le_bytes(self.array(key)?)),
            12 => GgufValue::F64(f64::from_le_bytes(self.array(key)?)),
            other => return Err(self.err(format!("metadata `{key}`: unknown value type {other}"))),
        })
    }
}

/// Bytes the smallest value of metadata type `ty` takes in the file.
fn value_min_size(ty: u32) -> Option<usize> {
    Some(match ty {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        8 | 10..=12 => 8,
        9 => 12,
        _ => return None,
    })
}

/// One tensor info record, before its range is known.
struct Info {
    name: String,
    shape: Vec<usize>,
    ggml_type: GgmlType,
    offset: u64,
    nbytes: usize,
}

fn read_info(c: &mut Cursor, seen: &mut HashSet<String>) -> Result<Info> {
    let name = c.string("tensor name", MAX_NAME_LEN)?;
    if !seen.insert(name.clone()) {
        return Err(c.err(format!("tensor `{name}` is listed twice")));
    }
    let n_dims = c.u32(&name)? as usize;
    if n_dims > MAX_DIMS {
        return Err(c.err(format!("tensor `{name}` has {n_dims} dims, at most {MAX_DIMS} are allowed")));
    }
    let mut ne = Vec::with_capacity(n_dims);
    for _ in 0..n_dims {
        let d = c.u64(&name)?;
        ne.push(usize::try_from(d).map_err(|_| c.err(format!("tensor `{name}`: dim {d} is too large")))?);
    }
    let id = c.u32(&name)?;
    let ggml_type = GgmlType::from_id(id).ok_or_else(|| c.err(format!("tensor `{name}`: unknown ggml type {id}")))?;
    let offset = c.u64(&name)?;
    let numel = ne.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    let (block, size) = (ggml_type.block_size(), ggml_type.type_size());
    if ne.first().is_some_and(|d| d % block != 0) {
        return Err(c.err(format!(
            "tensor `{name}`: row of {} elements is not a whole number of {ggml_type} blocks of {block}",
            ne[0]
        )));
    }
    let nbytes = numel
        .and_then(|n| (n / block).checked_mul(size))
        .ok_or_else(|| c.err(format!("tensor `{name}`: shape {ne:?} overflows")))?;
    ne.reverse();
    Ok(Info { name, shape: ne, ggml_type, offset, nbytes })
}

impl GgufFile {
    /// Opens, maps and validates a GGUF file.
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile> {
        let path = path.as_ref();
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: a read-only mapping; a concurrent truncation by another process is outside what
        // any loader can defend against.
        let map = Arc::new(unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?);
        Self::parse(path, map)
    }

    fn parse(path: &Path, map: Arc<Mmap>) -> Result<GgufFile> {
        let mut c = Cursor { path, bytes: &map[..], pos: 0 };
        if c.remaining() < 4 || &c.bytes[..4] != MAGIC {
            return Err(c.err("missing the `GGUF` magic at the start"));
        }
        c.pos = 4;
        let version = c.u32("version")?;
        if version & 0xffff == 0 && version != 0 {
            return Err(Error::Unsupported {
                path: path.into(),
                what: "GGUF byte order",
                found: "big-endian".into(),
                expected: "little-endian".into(),
            });
        }
        if !(2..=3).contains(&version) {
            return Err(Error::Unsupported {
                path: path.into(),
                what: "GGUF version",
                found: version.to_string(),
                expected: "2 or 3".into(),
            });
        }
        let n_tensors = c.count("tensor count", 24)?;
        let n_kv = c.count("metadata count", 13)?;
        let mut metadata = Vec::with_capacity(n_kv);
        let mut keys = HashSet::new();
        for _ in 0..n_kv {
            let key = c.string("metadata key", MAX_NAME_LEN)?;
            if !keys.insert(key.clone()) {
                return Err(c.err(format!("metadata key `{key}` appears twice")));
            }
            let ty = c.u32(&key)?;
            let value = c.value(ty, &key, 0)?;
            metadata.push((key, value));
        }
        let alignment = match metadata.iter().find(|(k, _)| k == "general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some((_, GgufValue::U32(a))) if a.is_power_of_two() && (*a as usize) <= MAX_ALIGNMENT => *a as usize,
            Some((_, v)) => {
                return Err(
                    c.err(format!("general.alignment must be a u32 power of two up to {MAX_ALIGNMENT}, found {v:?}"))
                )
            }
        };
        let mut seen = HashSet::new();
        let mut infos = Vec::with_capacity(n_tensors);
        for _ in 0..n_tensors {
            infos.push(read_info(&mut c, &mut seen)?);
        }
        let data_start = c.pos.div_ceil(alignment) * alignment;
        let file_len = map.len();
        let mut tensors = Vec::with_capacity(infos.len());
        for info in infos {
            let Info { name, shape, ggml_type, offset, nbytes } = info;
            if offset % alignment as u64 != 0 {
                return Err(c.err(format!("tensor `{name}`: data offset {offset} is not a multiple of {alignment}")));
            }
            let start = usize::try_from(offset).ok().and_then(|o| o.checked_add(data_start));
            let range = start.and_then(|s| Some(s..s.checked_add(nbytes)?)).filter(|r| r.end <= file_len);
            let range = range.ok_or_else(|| {
                c.err(format!(
                    "tensor `{name}`: {nbytes} bytes at data offset {offset} run past the end of the file ({file_len} bytes)"
                ))
            })?;
            tensors.push(GgufTensor { name, shape, ggml_type, map: map.clone(), range });
        }
        Ok(GgufFile { path: path.to_path_buf(), version, alignment, metadata, tensors })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The key/value metadata in file order.
    pub fn metadata(&self) -> &[(String, GgufValue)] {
        &self.metadata
    }

    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// The tensors in file order.
    pub fn tensors(&self) -> &[GgufTensor] {
        &self.tensors
    }

    pub fn into_tensors(self) -> Vec<GgufTensor> {
        self.tensors
    }
}

/// Reads the tensors and metadata of a GGUF file (see [`GgufFile::open`]).
pub fn read_gguf(path: impl AsRef<Path>) -> Result<GgufFile> {
    GgufFile::open(path)
}
