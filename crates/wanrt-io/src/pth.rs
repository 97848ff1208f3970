//! A safe reader of PyTorch `torch.save` files (the zip format of torch ≥ 1.6).
//!
//! Mirrors what `torch.load(path, weights_only=True)` accepts for a state_dict
//! (`torch/serialization.py::_load`, torch 2.15): `<prefix>/data.pkl` is run by the
//! restricted pickle VM of [`crate::pickle`] (no code runs, only allow-listed globals),
//! and each tensor's storage is the zip entry `<prefix>/data/<key>`, borrowed from a
//! memory map when it is stored uncompressed (torch always stores it so).
//!
//! Every tensor view is checked against its storage with checked arithmetic before it
//! is returned, so [`PthTensor::to_contiguous_bytes`] cannot read out of bounds. Nested
//! dicts (`{"state_dict": {...}}`) are flattened with dotted names; pick a sub-tree with
//! [`PthFile::with_prefix`]. Non-tensor values (ints, strings, `_metadata`) are skipped.
//! The legacy non-zip format (torch < 1.6) is rejected with a clear error.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use crate::error::{list_names, Error, Result};
use crate::pickle::{self, key_name, PickleError, TensorRef, Value};
use crate::zipfile::{Bytes, MappedZip};

const FORMAT: &str = "PyTorch .pth";
/// Most dims a tensor may have (torch's own limit is 64).
const MAX_DIMS: usize = 64;
/// Deepest dict/list nesting walked when flattening names.
const MAX_DEPTH: usize = 64;
/// Most values visited when flattening (guards against shared-subtree explosions).
const MAX_VISITS: usize = 10_000_000;
/// A view may hold more elements than its storage (stride 0, overlaps) only up to this
/// size in bytes, so a tiny file cannot demand a huge contiguous copy.
const MAX_EXPANDED_BYTES: u64 = 64 << 20;

/// Element types of the tensors a state_dict holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TorchDType {
    F32,
    F16,
    BF16,
    F64,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl TorchDType {
    /// Bytes per element.
    pub fn size_in_bytes(self) -> usize {
        match self {
            TorchDType::F64 | TorchDType::I64 => 8,
            TorchDType::F32 | TorchDType::I32 => 4,
            TorchDType::F16 | TorchDType::BF16 | TorchDType::I16 => 2,
            TorchDType::I8 | TorchDType::U8 | TorchDType::Bool => 1,
        }
    }

    /// torch's name for it (`float32`, `bfloat16`, …).
    pub fn name(self) -> &'static str {
        match self {
            TorchDType::F32 => "float32",
            TorchDType::F16 => "float16",
            TorchDType::BF16 => "bfloat16",
            TorchDType::F64 => "float64",
            TorchDType::I64 => "int64",
            TorchDType::I32 => "int32",
            TorchDType::I16 => "int16",
            TorchDType::I8 => "int8",
            TorchDType::U8 => "uint8",
            TorchDType::Bool => "bool",
        }
    }
}

impl std::fmt::Display for TorchDType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One tensor of a .pth file: a strided view on a storage (little-endian elements).
///
/// The view is validated on load: every element it addresses lies inside the storage.
#[derive(Clone, Debug)]
pub struct PthTensor {
    dtype: TorchDType,
    shape: Vec<usize>,
    strides: Vec<usize>,
    storage_offset: usize,
    storage: Bytes,
}

impl PthTensor {
    pub fn dtype(&self) -> TorchDType {
        self.dtype
    }

    /// Size of each dimension (empty for a scalar).
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Strides in elements, as torch reports them.
    pub fn strides(&self) -> &[usize] {
        &self.strides
    }

    /// Offset of the first element in the storage, in elements.
    pub fn storage_offset(&self) -> usize {
        self.storage_offset
    }

    /// Number of elements (1 for a scalar).
    pub fn numel(&self) -> usize {
        // Validated on load not to overflow.
        self.shape.iter().product()
    }

    /// The whole underlying storage (possibly shared with other tensors).
    pub fn storage_bytes(&self) -> &[u8] {
        self.storage.as_slice()
    }

    /// Rows `start..start + len` of the first dimension, as a view on the same storage (a fused
    /// projection split into its parts without a copy); `None` when they are out of range.
    pub fn narrow_rows(&self, start: usize, len: usize) -> Option<PthTensor> {
        let rows = *self.shape.first()?;
        if start.checked_add(len)? > rows {
            return None;
        }
        let mut shape = self.shape.clone();
        shape[0] = len;
        Some(PthTensor { shape, storage_offset: self.storage_offset + start * self.strides[0], ..self.clone() })
    }

    /// Whether the view is row-major contiguous (dims of size 1 may have any stride).
    pub fn is_contiguous(&self) -> bool {
        let mut expected = 1usize;
        for (&n, &s) in self.shape.iter().zip(&self.strides).rev() {
            if n != 1 && s != expected {
                return false;
            }
            expected = expected.saturating_mul(n);
        }
        true
    }

    /// The elements in row-major order as little-endian bytes: borrowed from the file
    /// when the view is contiguous, gathered into a new buffer otherwise.
    pub fn to_contiguous_bytes(&self) -> Cow<'_, [u8]> {
        let es = self.dtype.size_in_bytes();
        let n = self.numel();
        let data = self.storage.as_slice();
        if n == 0 {
            return Cow::Borrowed(&[]);
        }
        if self.is_contiguous() {
            let start = self.storage_offset * es;
            return Cow::Borrowed(&data[start..start + n * es]);
        }
        let mut out = Vec::with_capacity(n * es);
        let nd = self.shape.len();
        // Copy runs along the last dim; odometer over the others.
        let (last_n, last_s) = (self.shape[nd - 1], self.strides[nd - 1]);
        let mut idx = vec![0usize; nd - 1];
        loop {
            let base: usize = self.storage_offset + idx.iter().zip(&self.strides).map(|(&i, &s)| i * s).sum::<usize>();
            if last_s == 1 {
                out.extend_from_slice(&data[base * es..(base + last_n) * es]);
            } else {
                for j in 0..last_n {
                    let e = (base + j * last_s) * es;
                    out.extend_from_slice(&data[e..e + es]);
                }
            }
            // Advance the odometer over dims 0..nd-1.
            let mut d = nd - 1;
            loop {
                if d == 0 {
                    return Cow::Owned(out);
                }
                d -= 1;
                idx[d] += 1;
                if idx[d] < self.shape[d] {
                    break;
                }
                idx[d] = 0;
            }
        }
    }

    /// The elements in row-major order converted to f32 (integers and bools by value;
    /// i64 beyond 2^24 loses precision).
    pub fn to_f32_vec(&self) -> Vec<f32> {
        let b = self.to_contiguous_bytes();
        let es = self.dtype.size_in_bytes();
        let chunks = b.chunks_exact(es);
        match self.dtype {
            TorchDType::F32 => chunks.map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
            TorchDType::F16 => chunks.map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            TorchDType::BF16 => chunks.map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            TorchDType::F64 => chunks.map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f32).collect(),
            TorchDType::I64 => chunks.map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f32).collect(),
            TorchDType::I32 => chunks.map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f32).collect(),
            TorchDType::I16 => chunks.map(|c| i16::from_le_bytes([c[0], c[1]]) as f32).collect(),
            TorchDType::I8 => chunks.map(|c| c[0] as i8 as f32).collect(),
            TorchDType::U8 => chunks.map(|c| c[0] as f32).collect(),
            TorchDType::Bool => chunks.map(|c| (c[0] != 0) as u8 as f32).collect(),
        }
    }
}

/// The tensors of a .pth file, in pickle order, with dotted names.
#[derive(Clone, Debug)]
pub struct PthFile {
    path: PathBuf,
    tensors: Vec<(String, PthTensor)>,
}

/// Reads all tensors of a `torch.save` file (see [`PthFile::open`]).
pub fn read_pth(path: impl AsRef<Path>) -> Result<Vec<(String, PthTensor)>> {
    Ok(PthFile::open(path)?.into_tensors())
}

impl PthFile {
    /// Opens and validates a `torch.save` zip file. No code in it is run.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        check_magic(path)?;
        let mut zip = MappedZip::open(path, FORMAT)?;
        let pkl = zip
            .entries()
            .iter()
            .find(|e| e.name.ends_with("/data.pkl") && e.name.matches('/').count() == 1 || e.name == "data.pkl")
            .cloned()
            .ok_or_else(|| Error::format(path, FORMAT, "zip has no `<name>/data.pkl` entry (not a torch.save file)"))?;
        let prefix = pkl.name[..pkl.name.len() - "data.pkl".len()].to_string();
        if let Some(bo) = zip.find(&format!("{prefix}byteorder")).cloned() {
            let b = zip.bytes(&bo)?;
            if b.as_slice() != b"little" {
                return Err(Error::Unsupported {
                    path: path.to_path_buf(),
                    what: "byte order",
                    found: String::from_utf8_lossy(b.as_slice()).into_owned(),
                    expected: "little".into(),
                });
            }
        }
        let pkl_bytes = zip.bytes(&pkl)?;
        let root = pickle::unpickle(pkl_bytes.as_slice()).map_err(|e| match e {
            PickleError::Forbidden { module, name } => {
                Error::ForbiddenGlobal { path: path.to_path_buf(), module, name }
            }
            PickleError::Malformed(msg) => Error::format(path, FORMAT, msg),
        })?;
        let mut views = Vec::new();
        flatten(path, &root, String::new(), 0, &mut 0, &mut views)?;
        drop(root);
        let mut storages: HashMap<String, Bytes> = HashMap::new();
        let mut seen = HashSet::new();
        let mut tensors = Vec::with_capacity(views.len());
        for (name, view) in views {
            if !seen.insert(name.clone()) {
                return Err(Error::format(path, FORMAT, format!("tensor name `{name}` occurs twice")));
            }
            let key = &view.storage.key;
            let bytes = match storages.get(key) {
                Some(b) => b.clone(),
                None => {
                    let entry_name = format!("{prefix}data/{key}");
                    let entry = zip.find(&entry_name).cloned().ok_or_else(|| {
                        Error::format(path, FORMAT, format!("tensor `{name}`: storage entry `{entry_name}` is missing"))
                    })?;
                    let b = zip.bytes(&entry)?;
                    storages.insert(key.clone(), b.clone());
                    b
                }
            };
            let t = make_tensor(&view, bytes).map_err(|msg| Error::HostTensor {
                path: path.to_path_buf(),
                name: name.clone(),
                msg,
            })?;
            tensors.push((name, t));
        }
        drop(zip);
        Ok(PthFile { path: path.to_path_buf(), tensors })
    }

    /// The file this was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// All tensors, in file order.
    pub fn tensors(&self) -> &[(String, PthTensor)] {
        &self.tensors
    }

    pub fn into_tensors(self) -> Vec<(String, PthTensor)> {
        self.tensors
    }

    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.iter().map(|(n, _)| n.as_str())
    }

    pub fn get(&self, name: &str) -> Option<&PthTensor> {
        self.tensors.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }

    /// Like [`get`](Self::get), but a missing tensor is an error naming the file.
    pub fn require(&self, name: &str) -> Result<&PthTensor> {
        self.get(name).ok_or_else(|| Error::Missing {
            path: self.path.clone(),
            what: "tensor",
            name: name.to_string(),
            available: list_names(self.names(), 8),
        })
    }

    /// Keeps the tensors under `prefix.` with that prefix removed (e.g. `"state_dict"`
    /// or `"model"` of a wrapped checkpoint). No tensor under it is an error.
    pub fn with_prefix(self, prefix: &str) -> Result<Self> {
        let p = format!("{}.", prefix.trim_end_matches('.'));
        let tensors: Vec<_> =
            self.tensors.iter().filter_map(|(n, t)| n.strip_prefix(&p).map(|s| (s.to_string(), t.clone()))).collect();
        if tensors.is_empty() {
            return Err(Error::Missing {
                path: self.path,
                what: "tensor group",
                name: prefix.to_string(),
                available: list_names(self.tensors.iter().map(|(n, _)| n.as_str()), 8),
            });
        }
        Ok(PthFile { path: self.path, tensors })
    }
}

fn check_magic(path: &Path) -> Result<()> {
    use std::io::Read;
    let mut head = [0u8; 4];
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let n = f.read(&mut head).map_err(|e| Error::io(path, e))?;
    if n >= 2 && head[0] == 0x80 && head[1] <= 5 {
        return Err(Error::Unsupported {
            path: path.to_path_buf(),
            what: "file format",
            found: "the legacy (torch < 1.6) non-zip torch.save format".into(),
            expected: "the zip format; re-save with `torch.save(torch.load(f), f2)` in torch ≥ 1.6".into(),
        });
    }
    if n < 4 || &head[..2] != b"PK" {
        return Err(Error::format(path, FORMAT, "does not start with a zip header (`PK`)"));
    }
    Ok(())
}

fn join(prefix: &str, k: &str) -> String {
    if prefix.is_empty() {
        k.to_string()
    } else {
        format!("{prefix}.{k}")
    }
}

fn flatten(
    path: &Path,
    v: &Value,
    name: String,
    depth: usize,
    visits: &mut usize,
    out: &mut Vec<(String, Rc<TensorRef>)>,
) -> Result<()> {
    *visits += 1;
    if depth > MAX_DEPTH || *visits > MAX_VISITS {
        return Err(Error::format(
            path,
            FORMAT,
            format!("pickle nests deeper than {MAX_DEPTH} levels or is too large"),
        ));
    }
    match v {
        Value::HostTensor(t) => out.push((name, t.clone())),
        Value::Dict(d) => {
            let d = d.borrow();
            for (k, v) in &d.entries {
                // `_metadata` and other non-tensor entries are skipped; non-string keys too.
                if let Some(k) = key_name(k) {
                    flatten(path, v, join(&name, &k), depth + 1, visits, out)?;
                }
            }
        }
        Value::List(l) => {
            for (i, v) in l.borrow().0.iter().enumerate() {
                flatten(path, v, join(&name, &i.to_string()), depth + 1, visits, out)?;
            }
        }
        Value::Tuple(t) => {
            for (i, v) in t.0.iter().enumerate() {
                flatten(path, v, join(&name, &i.to_string()), depth + 1, visits, out)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Checks a view against its storage and builds the tensor.
fn make_tensor(view: &TensorRef, storage: Bytes) -> std::result::Result<PthTensor, String> {
    let dtype = view.storage.dtype;
    let es = dtype.size_in_bytes() as u64;
    let avail_bytes = storage.as_slice().len() as u64;
    let declared = view.storage.numel.checked_mul(es).ok_or("storage size overflows")?;
    if declared > avail_bytes {
        return Err(format!(
            "storage `{}` should hold {} {} elements ({declared} bytes) but its entry has {avail_bytes} bytes (truncated?)",
            view.storage.key, view.storage.numel, dtype
        ));
    }
    let storage_numel = avail_bytes / es;
    if view.shape.len() > MAX_DIMS {
        return Err(format!("{} dims (at most {MAX_DIMS})", view.shape.len()));
    }
    let too_big = || format!("shape {:?} is too large", view.shape);
    let mut numel: u64 = 1;
    for &n in &view.shape {
        numel = numel.checked_mul(n).ok_or_else(too_big)?;
    }
    let nbytes = numel.checked_mul(es).ok_or_else(too_big)?;
    if usize::try_from(nbytes).is_err() {
        return Err(too_big());
    }
    if numel > 0 {
        let mut last = view.offset;
        for (&n, &s) in view.shape.iter().zip(&view.strides) {
            let step = (n - 1).checked_mul(s).ok_or_else(too_big)?;
            last = last.checked_add(step).ok_or_else(too_big)?;
        }
        if last >= storage_numel {
            return Err(format!(
                "view (offset {}, shape {:?}, strides {:?}) reaches element {last} of a storage of {storage_numel} {dtype} elements",
                view.offset, view.shape, view.strides
            ));
        }
        if numel > storage_numel && nbytes > MAX_EXPANDED_BYTES {
            return Err(format!(
                "view of shape {:?} has more elements than its storage ({storage_numel}); such expanded views are limited to {MAX_EXPANDED_BYTES} bytes",
                view.shape
            ));
        }
    } else if view.offset > storage_numel {
        return Err(format!("storage offset {} is past the storage's {storage_numel} elements", view.offset));
    }
    Ok(PthTensor {
        dtype,
        shape: view.shape.iter().map(|&n| n as usize).collect(),
        strides: view.strides.iter().map(|&s| s as usize).collect(),
        storage_offset: view.offset as usize,
        storage,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pickle::StorageRef;
    use std::sync::Arc;

    fn view(numel: u64, offset: u64, shape: &[u64], strides: &[u64]) -> TensorRef {
        TensorRef {
            storage: Rc::new(StorageRef { key: "0".into(), dtype: TorchDType::F32, numel }),
            offset,
            shape: shape.to_vec(),
            strides: strides.to_vec(),
        }
    }

    fn bytes(n: usize) -> Bytes {
        Bytes::Owned(Arc::new((0..n as u32 * 4).map(|b| b as u8).collect()))
    }

    #[test]
    fn views_are_checked_against_storage() {
        // In bounds: a transposed 2×3 over 6 elements.
        assert!(make_tensor(&view(6, 0, &[3, 2], &[1, 3]), bytes(6)).is_ok());
        // One past the end.
        let e = make_tensor(&view(6, 1, &[2, 3], &[3, 1]), bytes(6)).unwrap_err();
        assert!(e.contains("reaches element 6"), "{e}");
        // Storage entry shorter than declared.
        assert!(make_tensor(&view(6, 0, &[6], &[1]), bytes(5)).is_err());
        // Overflowing shape and stride products.
        assert!(make_tensor(&view(6, 0, &[u64::MAX, 2], &[1, 1]), bytes(6)).is_err());
        assert!(make_tensor(&view(6, 0, &[2], &[u64::MAX]), bytes(6)).is_err());
        // A broadcast view (stride 0) may not demand a huge copy.
        assert!(make_tensor(&view(1, 0, &[4, 4], &[0, 0]), bytes(1)).is_ok());
        assert!(make_tensor(&view(1, 0, &[1 << 20, 1 << 10], &[0, 0]), bytes(1)).is_err());
        // Empty tensors only need a sane offset.
        assert!(make_tensor(&view(6, 6, &[0, 3], &[3, 1]), bytes(6)).is_ok());
        assert!(make_tensor(&view(6, 7, &[0], &[1]), bytes(6)).is_err());
    }

    #[test]
    fn gathers_strided_views() {
        // storage 0..6 as f32; transposed view of the 2×3 matrix → [0,3,1,4,2,5].
        let data: Vec<u8> = (0..6u32).flat_map(|i| (i as f32).to_le_bytes()).collect();
        let t = make_tensor(&view(6, 0, &[3, 2], &[1, 3]), Bytes::Owned(Arc::new(data))).unwrap();
        assert_eq!(t.to_f32_vec(), vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
    }
}
