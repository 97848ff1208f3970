//! NumPy `.npy` arrays (format versions 1.0, 2.0 and 3.0), C order, little-endian.
//!
//! Mirrors `numpy/lib/format.py` (numpy 2.4): magic `\x93NUMPY`, version, header length,
//! a Python-literal dict `{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }`
//! padded so the data starts at a multiple of 64 bytes. The header is parsed by a tiny
//! literal parser (never `eval`), its size is bounded, and the shape is checked against
//! the file's length before any data buffer is allocated. Fortran order, big-endian and
//! structured dtypes are rejected with a clear error. Writes are atomic.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::atomic::write_atomic;
use crate::error::{Error, Result};

const MAGIC: &[u8; 6] = b"\x93NUMPY";
const FORMAT: &str = "npy";
/// numpy itself refuses headers over 10 000 bytes unless told otherwise; allow more.
const MAX_HEADER: usize = 1 << 20;

/// Element types supported in .npy files.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NpyDType {
    F16,
    F32,
    F64,
    I8,
    I32,
    I64,
    U8,
    Bool,
}

impl NpyDType {
    pub fn size_in_bytes(self) -> usize {
        match self {
            NpyDType::F64 | NpyDType::I64 => 8,
            NpyDType::F32 | NpyDType::I32 => 4,
            NpyDType::F16 => 2,
            NpyDType::I8 | NpyDType::U8 | NpyDType::Bool => 1,
        }
    }

    /// The numpy `descr` string written for it (`<f4`, `|u1`, …).
    pub fn descr(self) -> &'static str {
        match self {
            NpyDType::F16 => "<f2",
            NpyDType::F32 => "<f4",
            NpyDType::F64 => "<f8",
            NpyDType::I8 => "|i1",
            NpyDType::I32 => "<i4",
            NpyDType::I64 => "<i8",
            NpyDType::U8 => "|u1",
            NpyDType::Bool => "|b1",
        }
    }

    fn from_descr(d: &str) -> std::result::Result<Self, String> {
        let (order, code) = match d.as_bytes().first() {
            Some(b'<' | b'|' | b'=') => (&d[..1], &d[1..]),
            Some(b'>') => {
                return Err(format!("big-endian dtype `{d}` (convert with `a.astype(a.dtype.newbyteorder('<'))`)"))
            }
            _ => ("", d),
        };
        let _ = order;
        Ok(match code {
            "f2" | "e" => NpyDType::F16,
            "f4" | "f" => NpyDType::F32,
            "f8" | "d" => NpyDType::F64,
            "i1" | "b" => NpyDType::I8,
            "i4" => NpyDType::I32,
            "i8" => NpyDType::I64,
            "u1" | "B" => NpyDType::U8,
            "b1" | "?" => NpyDType::Bool,
            _ => return Err(format!("dtype `{d}`")),
        })
    }
}

impl std::fmt::Display for NpyDType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.descr())
    }
}

/// A Rust element type that maps to one [`NpyDType`].
pub trait NpyElement: Copy {
    const DTYPE: NpyDType;
    /// Appends the little-endian bytes of `self`.
    fn put(self, out: &mut Vec<u8>);
    /// Reads one element from exactly `size_in_bytes` little-endian bytes.
    fn get(b: &[u8]) -> Self;
}

macro_rules! element {
    ($t:ty, $d:expr, $n:expr) => {
        impl NpyElement for $t {
            const DTYPE: NpyDType = $d;
            fn put(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            fn get(b: &[u8]) -> Self {
                let mut a = [0u8; $n];
                a.copy_from_slice(&b[..$n]);
                <$t>::from_le_bytes(a)
            }
        }
    };
}
element!(f32, NpyDType::F32, 4);
element!(f64, NpyDType::F64, 8);
element!(half::f16, NpyDType::F16, 2);
element!(i8, NpyDType::I8, 1);
element!(i32, NpyDType::I32, 4);
element!(i64, NpyDType::I64, 8);
element!(u8, NpyDType::U8, 1);

impl NpyElement for bool {
    const DTYPE: NpyDType = NpyDType::Bool;
    fn put(self, out: &mut Vec<u8>) {
        out.push(self as u8);
    }
    fn get(b: &[u8]) -> Self {
        b[0] != 0
    }
}

/// An n-dimensional array in C order, stored as little-endian bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct NpyArray {
    dtype: NpyDType,
    shape: Vec<usize>,
    data: Vec<u8>,
}

fn in_memory(msg: String) -> Error {
    Error::Invalid { path: PathBuf::from("<array>"), msg }
}

/// Number of elements of `shape`, or `None` on overflow.
fn checked_numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |a, &n| a.checked_mul(n))
}

impl NpyArray {
    /// An array of `shape` holding `data` (row-major). The length must match the shape.
    pub fn new<T: NpyElement>(shape: Vec<usize>, data: Vec<T>) -> Result<Self> {
        let n = checked_numel(&shape).ok_or_else(|| in_memory(format!("shape {shape:?} overflows")))?;
        if n != data.len() {
            return Err(in_memory(format!("shape {shape:?} needs {n} elements, got {}", data.len())));
        }
        let mut bytes = Vec::with_capacity(n * T::DTYPE.size_in_bytes());
        for x in data {
            x.put(&mut bytes);
        }
        Ok(NpyArray { dtype: T::DTYPE, shape, data: bytes })
    }

    /// An array from raw little-endian bytes; the length must match shape and dtype.
    pub fn from_bytes(dtype: NpyDType, shape: Vec<usize>, data: Vec<u8>) -> Result<Self> {
        let n = checked_numel(&shape)
            .and_then(|n| n.checked_mul(dtype.size_in_bytes()))
            .ok_or_else(|| in_memory(format!("shape {shape:?} overflows")))?;
        if n != data.len() {
            return Err(in_memory(format!("shape {shape:?} of {dtype} needs {n} bytes, got {}", data.len())));
        }
        Ok(NpyArray { dtype, shape, data })
    }

    pub fn dtype(&self) -> NpyDType {
        self.dtype
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn numel(&self) -> usize {
        self.data.len() / self.dtype.size_in_bytes()
    }

    /// The little-endian element bytes, row-major.
    pub fn as_bytes(&self) -> &[u8] {
        &self.data
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.data
    }

    /// The elements as `T`; the dtype must be exactly `T`'s.
    pub fn to_vec<T: NpyElement>(&self) -> Result<Vec<T>> {
        if self.dtype != T::DTYPE {
            return Err(in_memory(format!("array has dtype {}, expected {}", self.dtype, T::DTYPE)));
        }
        Ok(self.data.chunks_exact(self.dtype.size_in_bytes()).map(T::get).collect())
    }

    /// The elements converted to f64 from any dtype.
    pub fn to_f64_vec(&self) -> Vec<f64> {
        let es = self.dtype.size_in_bytes();
        let c = self.data.chunks_exact(es);
        match self.dtype {
            NpyDType::F16 => c.map(|b| half::f16::get(b).to_f64()).collect(),
            NpyDType::F32 => c.map(|b| f32::get(b) as f64).collect(),
            NpyDType::F64 => c.map(f64::get).collect(),
            NpyDType::I8 => c.map(|b| i8::get(b) as f64).collect(),
            NpyDType::I32 => c.map(|b| i32::get(b) as f64).collect(),
            NpyDType::I64 => c.map(|b| i64::get(b) as f64).collect(),
            NpyDType::U8 => c.map(|b| b[0] as f64).collect(),
            NpyDType::Bool => c.map(|b| (b[0] != 0) as u8 as f64).collect(),
        }
    }

    /// The elements converted to f32 from any dtype (f64 and i64 are rounded).
    pub fn to_f32_vec(&self) -> Vec<f32> {
        match self.dtype {
            NpyDType::F32 => self.data.chunks_exact(4).map(f32::get).collect(),
            NpyDType::U8 => self.data.iter().map(|&b| b as f32).collect(),
            _ => self.to_f64_vec().into_iter().map(|x| x as f32).collect(),
        }
    }
}

/// The parsed header of a .npy file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NpyHeader {
    pub dtype: NpyDType,
    pub shape: Vec<usize>,
    /// Byte offset of the data from the start of the file.
    pub data_offset: usize,
    /// Bytes of data the shape implies.
    pub data_len: usize,
}

/// Reads only the header of a .npy file (shape and dtype), checked against the file size.
pub fn read_npy_header(path: impl AsRef<Path>) -> Result<NpyHeader> {
    let path = path.as_ref();
    let mut f = File::open(path).map_err(|e| Error::io(path, e))?;
    let len = f.metadata().map_err(|e| Error::io(path, e))?.len();
    let h = read_header(&mut f, path)?;
    check_len(path, &h, len)?;
    Ok(h)
}

/// Reads a whole .npy file.
pub fn read_npy(path: impl AsRef<Path>) -> Result<NpyArray> {
    let path = path.as_ref();
    let mut f = File::open(path).map_err(|e| Error::io(path, e))?;
    let len = f.metadata().map_err(|e| Error::io(path, e))?.len();
    let h = read_header(&mut f, path)?;
    check_len(path, &h, len)?;
    let mut data = Vec::new();
    data.try_reserve_exact(h.data_len)
        .map_err(|_| Error::format(path, FORMAT, format!("cannot allocate {} bytes", h.data_len)))?;
    (&mut f).take(h.data_len as u64).read_to_end(&mut data).map_err(|e| Error::io(path, e))?;
    if data.len() != h.data_len {
        return Err(Error::format(path, FORMAT, "file shrank while reading"));
    }
    Ok(NpyArray { dtype: h.dtype, shape: h.shape, data })
}

/// Parses a .npy image held in memory (an npz entry); `path` names it in errors.
pub fn parse_npy(bytes: &[u8], path: &Path) -> Result<NpyArray> {
    let mut r = bytes;
    let h = read_header(&mut r, path)?;
    check_len(path, &h, bytes.len() as u64)?;
    let data = bytes[h.data_offset..h.data_offset + h.data_len].to_vec();
    Ok(NpyArray { dtype: h.dtype, shape: h.shape, data })
}

fn check_len(path: &Path, h: &NpyHeader, file_len: u64) -> Result<()> {
    let want = (h.data_offset as u64).checked_add(h.data_len as u64);
    if want != Some(file_len) {
        return Err(Error::format(
            path,
            FORMAT,
            format!(
                "shape {:?} of {} needs {} data bytes after a {}-byte header, but the file has {} bytes",
                h.shape, h.dtype, h.data_len, h.data_offset, file_len
            ),
        ));
    }
    Ok(())
}

fn read_header(r: &mut impl Read, path: &Path) -> Result<NpyHeader> {
    let bad = |m: String| Error::format(path, FORMAT, m);
    let mut pre = [0u8; 8];
    r.read_exact(&mut pre).map_err(|_| bad("shorter than the 8-byte preamble".into()))?;
    if &pre[..6] != MAGIC {
        return Err(bad("missing the `\\x93NUMPY` magic".into()));
    }
    let major = pre[6];
    let (hlen, prelen) = match major {
        1 => {
            let mut b = [0u8; 2];
            r.read_exact(&mut b).map_err(|_| bad("truncated header length".into()))?;
            (u16::from_le_bytes(b) as usize, 10)
        }
        2 | 3 => {
            let mut b = [0u8; 4];
            r.read_exact(&mut b).map_err(|_| bad("truncated header length".into()))?;
            (u32::from_le_bytes(b) as usize, 12)
        }
        v => {
            return Err(Error::Unsupported {
                path: path.to_path_buf(),
                what: "npy format version",
                found: format!("{v}.{}", pre[7]),
                expected: "1.0, 2.0 or 3.0".into(),
            })
        }
    };
    if hlen > MAX_HEADER {
        return Err(bad(format!("header of {hlen} bytes (at most {MAX_HEADER})")));
    }
    let mut hb = vec![0u8; hlen];
    r.read_exact(&mut hb).map_err(|_| bad(format!("truncated header ({hlen} bytes expected)")))?;
    let text = if major == 3 {
        std::str::from_utf8(&hb).map_err(|_| bad("header is not UTF-8".into()))?
    } else {
        if !hb.is_ascii() {
            return Err(bad("header is not ASCII".into()));
        }
        std::str::from_utf8(&hb).map_err(|_| bad("header is not ASCII".into()))?
    };
    let dict = literal::parse_dict(text).map_err(|m| bad(format!("header `{}`: {m}", text.trim())))?;
    let mut descr = None;
    let mut fortran = None;
    let mut shape = None;
    for (k, v) in dict {
        match (k.as_str(), v) {
            ("descr", literal::Lit::Str(s)) => descr = Some(s),
            ("descr", _) => {
                return Err(Error::Unsupported {
                    path: path.to_path_buf(),
                    what: "dtype",
                    found: "a structured dtype".into(),
                    expected: "a plain numeric dtype".into(),
                })
            }
            ("fortran_order", literal::Lit::Bool(b)) => fortran = Some(b),
            ("shape", literal::Lit::Tuple(t)) => shape = Some(t),
            (k, _) => return Err(bad(format!("header key `{k}` has an unexpected value"))),
        }
    }
    let (Some(descr), Some(fortran), Some(shape)) = (descr, fortran, shape) else {
        return Err(bad("header lacks one of `descr`, `fortran_order`, `shape`".into()));
    };
    if fortran {
        return Err(Error::Unsupported {
            path: path.to_path_buf(),
            what: "memory order",
            found: "Fortran order".into(),
            expected: "C order (save `np.ascontiguousarray(a)`)".into(),
        });
    }
    let dtype = NpyDType::from_descr(&descr).map_err(|found| Error::Unsupported {
        path: path.to_path_buf(),
        what: "dtype",
        found,
        expected: "one of <f2 <f4 <f8 |i1 <i4 <i8 |u1 |b1".into(),
    })?;
    let shape: Vec<usize> = shape
        .into_iter()
        .map(usize::try_from)
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| bad("shape does not fit in memory".into()))?;
    let data_len = checked_numel(&shape)
        .and_then(|n| n.checked_mul(dtype.size_in_bytes()))
        .ok_or_else(|| bad(format!("shape {shape:?} overflows")))?;
    Ok(NpyHeader { dtype, shape, data_offset: prelen + hlen, data_len })
}

/// Encodes the header for `dtype` and `shape` (version 1.0, or 2.0 if it is too long),
/// padded so the data starts at a multiple of 64 bytes, as numpy does.
pub fn encode_header(dtype: NpyDType, shape: &[usize]) -> Vec<u8> {
    let shape_s = match shape.len() {
        0 => "()".to_string(),
        1 => format!("({},)", shape[0]),
        _ => format!("({})", shape.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(", ")),
    };
    let mut dict = format!("{{'descr': '{}', 'fortran_order': False, 'shape': {}, }}", dtype.descr(), shape_s);
    let (major, prelen) = if dict.len() + 11 < 65536 { (1u8, 10) } else { (2u8, 12) };
    let total = (prelen + dict.len() + 1).div_ceil(64) * 64;
    while prelen + dict.len() + 1 < total {
        dict.push(' ');
    }
    dict.push('\n');
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(MAGIC);
    out.push(major);
    out.push(0);
    if major == 1 {
        out.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    } else {
        out.extend_from_slice(&(dict.len() as u32).to_le_bytes());
    }
    out.extend_from_slice(dict.as_bytes());
    out
}

/// Writes `a` as .npy to any writer.
pub fn write_npy_to(w: &mut impl Write, a: &NpyArray) -> std::io::Result<()> {
    w.write_all(&encode_header(a.dtype, &a.shape))?;
    w.write_all(&a.data)
}

/// Writes `a` to `path` atomically (temp file + rename).
pub fn write_npy(path: impl AsRef<Path>, a: &NpyArray) -> Result<()> {
    let path = path.as_ref();
    write_atomic(path, |w| write_npy_to(w, a).map_err(|e| Error::io(path, e)))
}

/// Writes raw little-endian `data` of `dtype` and `shape` to `path` atomically, without
/// building an [`NpyArray`] (for large outputs). The length must match the shape.
pub fn write_npy_raw(path: impl AsRef<Path>, dtype: NpyDType, shape: &[usize], data: &[u8]) -> Result<()> {
    let path = path.as_ref();
    let n = checked_numel(shape).and_then(|n| n.checked_mul(dtype.size_in_bytes()));
    if n != Some(data.len()) {
        return Err(Error::Invalid {
            path: path.to_path_buf(),
            msg: format!("shape {shape:?} of {dtype} does not match {} data bytes", data.len()),
        });
    }
    write_atomic(path, |w| {
        w.write_all(&encode_header(dtype, shape)).and_then(|_| w.write_all(data)).map_err(|e| Error::io(path, e))
    })
}

/// A parser for the Python literal dict of an npy header.
mod literal {
    #[derive(Debug)]
    pub enum Lit {
        Str(String),
        Bool(bool),
        Tuple(Vec<u64>),
        Other,
    }

    struct P<'a> {
        s: &'a [u8],
        i: usize,
    }

    impl P<'_> {
        fn ws(&mut self) {
            while self.i < self.s.len() && (self.s[self.i] as char).is_ascii_whitespace() {
                self.i += 1;
            }
        }
        fn peek(&mut self) -> Option<u8> {
            self.ws();
            self.s.get(self.i).copied()
        }
        fn eat(&mut self, c: u8) -> Result<(), String> {
            if self.peek() == Some(c) {
                self.i += 1;
                Ok(())
            } else {
                Err(format!("expected `{}` at byte {}", c as char, self.i))
            }
        }
        fn string(&mut self) -> Result<String, String> {
            let q = self.peek().ok_or("unexpected end")?;
            if q != b'\'' && q != b'"' {
                return Err(format!("expected a string at byte {}", self.i));
            }
            self.i += 1;
            let start = self.i;
            while self.i < self.s.len() && self.s[self.i] != q {
                if self.s[self.i] == b'\\' {
                    return Err("escapes in header strings are not supported".into());
                }
                self.i += 1;
            }
            if self.i >= self.s.len() {
                return Err("unterminated string".into());
            }
            let out = String::from_utf8_lossy(&self.s[start..self.i]).into_owned();
            self.i += 1;
            Ok(out)
        }
        fn int(&mut self) -> Result<u64, String> {
            self.ws();
            let start = self.i;
            while self.i < self.s.len() && self.s[self.i].is_ascii_digit() {
                self.i += 1;
            }
            if start == self.i {
                return Err(format!("expected a non-negative integer at byte {start}"));
            }
            let txt = std::str::from_utf8(&self.s[start..self.i]).map_err(|e| e.to_string())?;
            let v = txt.parse::<u64>().map_err(|_| format!("integer {txt} is too large"))?;
            if self.i < self.s.len() && self.s[self.i] == b'L' {
                self.i += 1;
            }
            Ok(v)
        }
        fn value(&mut self) -> Result<Lit, String> {
            match self.peek() {
                Some(b'\'' | b'"') => Ok(Lit::Str(self.string()?)),
                Some(b'(') => {
                    self.i += 1;
                    let mut v = Vec::new();
                    loop {
                        if self.peek() == Some(b')') {
                            self.i += 1;
                            return Ok(Lit::Tuple(v));
                        }
                        v.push(self.int()?);
                        if v.len() > 64 {
                            return Err("more than 64 dimensions".into());
                        }
                        match self.peek() {
                            Some(b',') => self.i += 1,
                            Some(b')') => {}
                            _ => return Err(format!("expected `,` or `)` at byte {}", self.i)),
                        }
                    }
                }
                Some(b'T') if self.s[self.i..].starts_with(b"True") => {
                    self.i += 4;
                    Ok(Lit::Bool(true))
                }
                Some(b'F') if self.s[self.i..].starts_with(b"False") => {
                    self.i += 5;
                    Ok(Lit::Bool(false))
                }
                Some(b'[') => {
                    // A structured dtype list: skip to the matching bracket.
                    let mut depth = 0usize;
                    while self.i < self.s.len() {
                        match self.s[self.i] {
                            b'[' => depth += 1,
                            b']' => {
                                depth -= 1;
                                if depth == 0 {
                                    self.i += 1;
                                    return Ok(Lit::Other);
                                }
                            }
                            _ => {}
                        }
                        self.i += 1;
                    }
                    Err("unterminated list".into())
                }
                _ => Err(format!("unexpected value at byte {}", self.i)),
            }
        }
    }

    pub fn parse_dict(text: &str) -> Result<Vec<(String, Lit)>, String> {
        let mut p = P { s: text.as_bytes(), i: 0 };
        p.eat(b'{')?;
        let mut out = Vec::new();
        loop {
            if p.peek() == Some(b'}') {
                p.i += 1;
                break;
            }
            let k = p.string()?;
            p.eat(b':')?;
            let v = p.value()?;
            out.push((k, v));
            match p.peek() {
                Some(b',') => p.i += 1,
                Some(b'}') => {}
                _ => return Err(format!("expected `,` or `}}` at byte {}", p.i)),
            }
        }
        if p.peek().is_some() {
            return Err("trailing characters after the dict".into());
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_64_aligned_and_parses() {
        for shape in [vec![], vec![3], vec![2, 3, 4]] {
            let h = encode_header(NpyDType::F32, &shape);
            assert_eq!(h.len() % 64, 0);
            assert_eq!(*h.last().unwrap(), b'\n');
            let mut r = &h[..];
            let p = read_header(&mut r, Path::new("x")).unwrap();
            assert_eq!(p.shape, shape);
            assert_eq!(p.data_offset, h.len());
        }
    }

    #[test]
    fn literal_rejects_garbage() {
        for t in ["", "{", "{'descr': }", "{'shape': (1,2,}", "{'a': 'b'} x", "{'shape': (-1,)}"] {
            assert!(literal::parse_dict(t).is_err(), "{t}");
        }
    }
}
