//! Named parameter store over memory-mapped safetensors files (single or
//! sharded with an index json), GGUF files (block-quantized tensors kept as stored) and other
//! sources converted to raw tensors.
//!
//! Tensors stay in the mapped files until a layer asks for them, so loading
//! never holds two copies of a model; conversion to f32 happens per tensor.

use crate::backend::AttentionPrecision;
use crate::dtype::{bytes_to_f32, DType};
use crate::error::{Error, Result};
use crate::lora::SidePath;
use crate::quant::ActQuant;
use crate::HostTensor;
use memmap2::Mmap;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where the bytes of one tensor live.
#[derive(Clone)]
enum Bytes {
    Mapped {
        map: Arc<Mmap>,
        start: usize,
        end: usize,
    },
    Owned(Arc<Vec<u8>>),
    /// A tensor of a PyTorch file: a view into its mapped storage.
    Pth(Arc<wanrt_io::PthTensor>),
}

impl Bytes {
    fn as_slice(&self) -> Cow<'_, [u8]> {
        match self {
            Bytes::Mapped { map, start, end } => Cow::Borrowed(&map[*start..*end]),
            Bytes::Owned(v) => Cow::Borrowed(v),
            Bytes::Pth(t) => t.to_contiguous_bytes(),
        }
    }
}

impl Bytes {
    /// Drops the mapped file pages of this tensor once it has been converted,
    /// so loading holds one copy of the model (the converted one), not two.
    /// Later reads of the same bytes fault them in again from the file.
    fn release_pages(&self) {
        #[cfg(unix)]
        if let Bytes::Mapped { map, start, end } = self {
            // SAFETY: the map is a read-only file mapping: discarded pages are
            // re-read from the file on the next access, never zero-filled.
            let _ = unsafe { map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, *start, end - start) };
        }
    }
}

fn torch_dtype(d: wanrt_io::TorchDType) -> Option<DType> {
    use wanrt_io::TorchDType as T;
    Some(match d {
        T::F32 => DType::F32,
        T::F16 => DType::F16,
        T::BF16 => DType::BF16,
        T::F64 => DType::F64,
        T::I64 => DType::I64,
        T::I32 => DType::I32,
        T::I8 => DType::I8,
        T::U8 => DType::U8,
        T::I16 | T::Bool => return None,
    })
}

/// The wanrt dtype of a GGUF tensor type; `None` for the types wanrt does not decode.
fn gguf_dtype(t: wanrt_io::GgmlType) -> Option<DType> {
    use wanrt_io::GgmlType as G;
    Some(match t {
        G::F32 => DType::F32,
        G::F16 => DType::F16,
        G::BF16 => DType::BF16,
        G::F64 => DType::F64,
        G::I8 => DType::I8,
        G::I32 => DType::I32,
        G::I64 => DType::I64,
        G::Q4_0 => DType::Q4_0,
        G::Q4_1 => DType::Q4_1,
        G::Q5_0 => DType::Q5_0,
        G::Q5_1 => DType::Q5_1,
        G::Q8_0 => DType::Q8_0,
        G::Q2_K => DType::Q2K,
        G::Q3_K => DType::Q3K,
        G::Q4_K => DType::Q4K,
        G::Q5_K => DType::Q5K,
        G::Q6_K => DType::Q6K,
        _ => return None,
    })
}

/// A shape stored as a GGUF array of non-negative integers.
fn orig_shape(v: &wanrt_io::GgufValue) -> Option<Vec<usize>> {
    match v {
        wanrt_io::GgufValue::Array(dims) if dims.len() <= 8 => {
            dims.iter().map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok())).collect()
        }
        _ => None,
    }
}

#[derive(Clone)]
pub struct RawTensor {
    pub dtype: DType,
    pub shape: Vec<usize>,
    bytes: Bytes,
}

impl std::fmt::Debug for RawTensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RawTensor({} {:?})", self.dtype, self.shape)
    }
}

impl RawTensor {
    /// A tensor from owned little-endian bytes; the length must match.
    pub fn from_bytes(dtype: DType, shape: Vec<usize>, bytes: Vec<u8>) -> Result<Self> {
        let want = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).and_then(|n| dtype.storage_bytes(n));
        if want != Some(bytes.len()) {
            return Err(Error::Msg(format!(
                "tensor of shape {shape:?} {dtype} needs {want:?} bytes, found {}",
                bytes.len()
            )));
        }
        Ok(RawTensor { dtype, shape, bytes: Bytes::Owned(Arc::new(bytes)) })
    }

    /// An f32 tensor owning a copy of the values.
    pub fn from_f32(t: &HostTensor) -> Self {
        let bytes = t.data().iter().flat_map(|v| v.to_le_bytes()).collect();
        RawTensor { dtype: DType::F32, shape: t.shape().to_vec(), bytes: Bytes::Owned(Arc::new(bytes)) }
    }

    /// The same bytes under another shape of as many elements.
    pub fn with_shape(&self, shape: Vec<usize>) -> Result<Self> {
        if shape.iter().product::<usize>() != self.shape.iter().product::<usize>() {
            return Err(Error::shape("RawTensor::with_shape", &self.shape, shape));
        }
        Ok(RawTensor { dtype: self.dtype, shape, bytes: self.bytes.clone() })
    }

    pub fn bytes(&self) -> Cow<'_, [u8]> {
        self.bytes.as_slice()
    }

    /// Rows `start..start + len` of the first dimension: one part of a fused tensor (an original
    /// checkpoint's QKV projection). A view on mapped and `.pth` storage; owned bytes are copied.
    pub fn narrow_rows(&self, start: usize, len: usize) -> Result<Self> {
        let rows = self.shape.first().copied().unwrap_or(0);
        let row_elems: usize = self.shape.iter().skip(1).product();
        let row_bytes = self.dtype.storage_bytes(row_elems).filter(|_| !self.dtype.is_block_quantized());
        let (Some(row_bytes), Some(end)) = (row_bytes, start.checked_add(len).filter(|&e| e <= rows)) else {
            return Err(Error::Msg(format!("cannot take rows {start}..{} of a {self:?}", start.saturating_add(len))));
        };
        let mut shape = self.shape.clone();
        shape[0] = len;
        let bytes = match &self.bytes {
            Bytes::Mapped { map, start: at, .. } => {
                Bytes::Mapped { map: map.clone(), start: at + start * row_bytes, end: at + end * row_bytes }
            }
            Bytes::Owned(v) => Bytes::Owned(Arc::new(v[start * row_bytes..end * row_bytes].to_vec())),
            Bytes::Pth(t) => Bytes::Pth(Arc::new(
                t.narrow_rows(start, len).ok_or_else(|| Error::Msg(format!("rows out of range in {self:?}")))?,
            )),
        };
        Ok(RawTensor { dtype: self.dtype, shape, bytes })
    }

    /// The values widened to f32.
    pub fn to_f32(&self) -> Result<Vec<f32>> {
        bytes_to_f32(&self.bytes(), self.dtype)
            .ok_or_else(|| Error::UnsupportedDType { name: format!("{self:?}"), dtype: self.dtype.to_string() })
    }

    /// Drops this tensor's mapped file pages from the process once a backend holds its own
    /// form of them (the next read faults them in again from the file).
    pub fn release_pages(&self) {
        self.bytes.release_pages();
    }

    /// Whether the bytes live in process memory (a LoRA-merged weight) rather than in a file:
    /// a backend that copies them would hold the tensor twice.
    pub fn is_in_memory(&self) -> bool {
        matches!(self.bytes, Bytes::Owned(_))
    }

    /// The values in place when this is an f32 tensor of a memory-mapped
    /// file at a 4-byte aligned offset (little-endian host): no copy, the
    /// pages are read from the file when first touched, as PyTorch's lazy
    /// mmap loading does. Shared owned bytes (a LoRA-merged weight) qualify
    /// too when aligned: a backend that keeps this tensor shares them instead
    /// of holding a second copy beside the store during load.
    pub fn mapped_f32(&self) -> Option<&[f32]> {
        if self.dtype != DType::F32 || cfg!(target_endian = "big") {
            return None;
        }
        match &self.bytes {
            Bytes::Mapped { map, start, end } => bytemuck::try_cast_slice(&map[*start..*end]).ok(),
            Bytes::Owned(v) => bytemuck::try_cast_slice(v.as_slice()).ok(),
            Bytes::Pth(_) => None,
        }
    }
}

/// All tensors of a model component, by name.
///
/// The store remembers which names were asked for, so that a loader can refuse a checkpoint
/// with tensors its model never read ([`WeightStore::check_all_read`]): blocks beyond the
/// config's layer count, another model's weights, a misnamed file.
#[derive(Clone, Default)]
pub struct WeightStore {
    tensors: BTreeMap<String, RawTensor>,
    /// Names handed out by [`WeightStore::raw`] (shared by clones: they hold the same tensors).
    read: Arc<std::sync::Mutex<std::collections::BTreeSet<String>>>,
    /// Human description of where the tensors came from, for error messages.
    origin: String,
    /// Layers (by tensor prefix) whose activations are quantized at run time
    /// (W8A8 / FP8), from an optimized artifact's manifest.
    activation_quant: BTreeMap<String, ActQuant>,
    /// Attention modules (by module path) that compute in another precision than the default,
    /// from an optimized artifact's manifest.
    attention_precision: BTreeMap<String, AttentionPrecision>,
    /// LoRA deltas kept unmerged, by linear layer prefix ([`crate::lora`]).
    side_paths: BTreeMap<String, SidePath>,
}

/// Every [`DType`] and its safetensors name: one table for reading and writing.
const SAFETENSORS_DTYPES: [(safetensors::Dtype, DType); 10] = [
    (safetensors::Dtype::F32, DType::F32),
    (safetensors::Dtype::F16, DType::F16),
    (safetensors::Dtype::BF16, DType::BF16),
    (safetensors::Dtype::F64, DType::F64),
    (safetensors::Dtype::I64, DType::I64),
    (safetensors::Dtype::I32, DType::I32),
    (safetensors::Dtype::U32, DType::U32),
    (safetensors::Dtype::I8, DType::I8),
    (safetensors::Dtype::U8, DType::U8),
    (safetensors::Dtype::F8_E4M3, DType::F8E4M3),
];

/// The dtype of a safetensors header entry; `None` for dtypes wanrt does not read.
fn st_dtype(d: safetensors::Dtype) -> Option<DType> {
    SAFETENSORS_DTYPES.iter().find(|(s, _)| *s == d).map(|&(_, t)| t)
}

/// The safetensors name of a dtype; `None` for the block-quantized (GGUF-only) types.
fn st_name(d: DType) -> Option<safetensors::Dtype> {
    SAFETENSORS_DTYPES.iter().find(|(_, t)| *t == d).map(|&(s, _)| s)
}

impl WeightStore {
    pub fn new(origin: impl Into<String>) -> Self {
        WeightStore {
            tensors: BTreeMap::new(),
            read: Default::default(),
            origin: origin.into(),
            activation_quant: BTreeMap::new(),
            attention_precision: BTreeMap::new(),
            side_paths: BTreeMap::new(),
        }
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Marks the layer `{prefix}.weight` (int8 or fp8) as quantizing its
    /// activations with `act`; unmarked quantized layers compute in f32.
    pub fn set_activation_quant(&mut self, prefix: impl Into<String>, act: ActQuant) {
        self.activation_quant.insert(prefix.into(), act);
    }

    pub fn activation_quant(&self, prefix: &str) -> Option<ActQuant> {
        self.activation_quant.get(prefix).copied()
    }

    /// Runs the attention module at `path` (`blocks.3.attn1`) in `precision`.
    pub fn set_attention_precision(&mut self, path: impl Into<String>, precision: AttentionPrecision) {
        self.attention_precision.insert(path.into(), precision);
    }

    /// The precision of the attention module at `path` (full unless set).
    pub fn attention_precision(&self, path: &str) -> AttentionPrecision {
        self.attention_precision.get(path).copied().unwrap_or_default()
    }

    /// Gives the layer `{prefix}.weight` a LoRA side path (appended to any it has).
    pub fn add_side_path(&mut self, prefix: &str, path: SidePath) {
        let path = match self.side_paths.remove(prefix) {
            None => path,
            Some(old) => old.concat(&path),
        };
        self.side_paths.insert(prefix.to_string(), path);
    }

    /// The LoRA side path of the layer `{prefix}.weight`, if any.
    pub fn side_path(&self, prefix: &str) -> Option<&SidePath> {
        self.side_paths.get(prefix)
    }

    pub fn insert(&mut self, name: impl Into<String>, t: RawTensor) {
        self.tensors.insert(name.into(), t);
    }

    /// Memory-maps one safetensors file and adds all its tensors.
    pub fn add_safetensors(&mut self, path: &Path) -> Result<()> {
        let file = std::fs::File::open(path).map_err(|e| Error::file(path, format!("cannot open: {e}")))?;
        // SAFETY: the mapping is read-only; a concurrent truncation of the file
        // by another process is outside what any loader can defend against.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::file(path, format!("cannot map: {e}")))?;
        let map = Arc::new(map);
        let (header_len, meta) = safetensors::SafeTensors::read_metadata(&map[..])
            .map_err(|e| Error::file(path, format!("not a valid safetensors file: {e}")))?;
        let data_start = 8 + header_len;
        for (name, info) in meta.tensors() {
            let dtype = st_dtype(info.dtype)
                .ok_or_else(|| Error::UnsupportedDType { name: name.clone(), dtype: format!("{:?}", info.dtype) })?;
            let (s, e) = info.data_offsets;
            let bytes = Bytes::Mapped { map: map.clone(), start: data_start + s, end: data_start + e };
            self.insert_new(path, name.clone(), RawTensor { dtype, shape: info.shape.clone(), bytes })?;
        }
        Ok(())
    }

    /// Adds the tensors of a PyTorch `torch.save` state dict (read without executing code).
    pub fn add_pth(&mut self, path: &Path) -> Result<()> {
        for (name, t) in wanrt_io::read_pth(path)? {
            let dtype = torch_dtype(t.dtype())
                .ok_or_else(|| Error::UnsupportedDType { name: name.clone(), dtype: t.dtype().to_string() })?;
            let shape = t.shape().to_vec();
            self.insert_new(path, name, RawTensor { dtype, shape, bytes: Bytes::Pth(Arc::new(t)) })?;
        }
        Ok(())
    }

    /// Adds a tensor read from `file`; a name already present (another shard holds it too) is
    /// an error rather than one silently replacing the other.
    fn insert_new(&mut self, file: &Path, name: String, t: RawTensor) -> Result<()> {
        if self.tensors.contains_key(&name) {
            return Err(Error::file(file, format!("tensor `{name}` is also in an earlier file of {}", self.origin)));
        }
        self.tensors.insert(name, t);
        Ok(())
    }

    /// Memory-maps one GGUF file and adds all its tensors as stored (ggml block-quantized types
    /// included). A tensor a converter reshaped to fit ggml's 4D limit or its blocks gets back the
    /// shape ComfyUI-GGUF records in `comfy.gguf.orig_shape.<name>`.
    pub fn add_gguf(&mut self, path: &Path) -> Result<()> {
        let file = wanrt_io::GgufFile::open(path)?;
        for t in file.tensors() {
            let dtype = gguf_dtype(t.ggml_type).ok_or_else(|| Error::UnsupportedDType {
                name: t.name.clone(),
                dtype: format!(
                    "{} in {} (supported GGUF types: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K … Q6_K)",
                    t.ggml_type,
                    path.display()
                ),
            })?;
            let shape = match file.get(&format!("comfy.gguf.orig_shape.{}", t.name)) {
                None => t.shape.clone(),
                Some(v) => orig_shape(v)
                    .filter(|s| s.iter().try_fold(1usize, |a, &d| a.checked_mul(d)) == Some(t.numel()))
                    .ok_or_else(|| {
                        Error::file(
                            path,
                            format!("comfy.gguf.orig_shape.{}: not a shape of {} values", t.name, t.numel()),
                        )
                    })?,
            };
            let (map, range) = t.mapping();
            let tensor = RawTensor { dtype, shape, bytes: Bytes::Mapped { map, start: range.start, end: range.end } };
            self.insert_new(path, t.name.clone(), tensor)?;
        }
        Ok(())
    }

    /// The tensors of one GGUF file.
    pub fn from_gguf(path: &Path) -> Result<Self> {
        let mut ws = WeightStore::new(path.display().to_string());
        ws.add_gguf(path)?;
        Ok(ws)
    }

    /// Loads a diffusers component folder: `<stem>.safetensors`, or the shards
    /// named by `<stem>.safetensors.index.json`.
    pub fn from_diffusers_dir(dir: &Path, stem: &str) -> Result<Self> {
        let mut ws = WeightStore::new(dir.display().to_string());
        let single = dir.join(format!("{stem}.safetensors"));
        let index = dir.join(format!("{stem}.safetensors.index.json"));
        if single.is_file() {
            ws.add_safetensors(&single)?;
        } else if index.is_file() {
            for shard in shard_files(&index)? {
                ws.add_safetensors(&dir.join(shard))?;
            }
        } else {
            return Err(Error::file(
                dir,
                format!("no weights: expected {stem}.safetensors or {stem}.safetensors.index.json"),
            ));
        }
        Ok(ws)
    }

    pub fn from_safetensors_files(files: &[PathBuf]) -> Result<Self> {
        let origin = files.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ");
        let mut ws = WeightStore::new(origin);
        for f in files {
            ws.add_safetensors(f)?;
        }
        Ok(ws)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    pub fn raw(&self, name: &str) -> Result<&RawTensor> {
        let t = self
            .tensors
            .get(name)
            .ok_or_else(|| Error::MissingTensor { name: name.to_string(), source_desc: self.origin.clone() })?;
        if let Ok(mut read) = self.read.lock() {
            if !read.contains(name) {
                read.insert(name.to_string());
            }
        }
        Ok(t)
    }

    /// Names no one has asked for through [`WeightStore::raw`] (or the getters built on it).
    pub fn unread(&self) -> Vec<&str> {
        let read = self.read.lock().map(|r| r.clone()).unwrap_or_default();
        self.names().filter(|n| !read.contains(*n)).collect()
    }

    /// After a model has been built from this store: every tensor must have been read, except
    /// those under `skipped` prefixes (parts the caller chose not to load). Extra tensors mean
    /// the config and the checkpoint disagree (more layers than `num_layers`, another model's
    /// weights) — an error naming a few of them, never silently ignored.
    pub fn check_all_read(&self, what: &str, skipped: &[&str]) -> Result<()> {
        let extra: Vec<&str> =
            self.unread().into_iter().filter(|n| !skipped.iter().any(|p| n.starts_with(p))).collect();
        if extra.is_empty() {
            return Ok(());
        }
        let shown: Vec<String> = extra.iter().take(4).map(|n| format!("`{n}`")).collect();
        let more = if extra.len() > 4 { format!(" and {} more", extra.len() - 4) } else { String::new() };
        Err(Error::File {
            path: self.origin.clone(),
            message: format!(
                "{} tensor(s) not used by the {what} as configured: {}{more} (does its config.json match these \
                 weights, e.g. the number of layers?)",
                extra.len(),
                shown.join(", ")
            ),
        })
    }

    pub fn shape_of(&self, name: &str) -> Result<&[usize]> {
        Ok(&self.raw(name)?.shape)
    }

    /// The tensor widened to f32.
    pub fn get(&self, name: &str) -> Result<HostTensor> {
        let raw = self.raw(name)?;
        let data = bytes_to_f32(&raw.bytes(), raw.dtype)
            .ok_or_else(|| Error::UnsupportedDType { name: name.to_string(), dtype: raw.dtype.to_string() })?;
        raw.bytes.release_pages();
        HostTensor::new(raw.shape.clone(), data)
    }

    /// The tensor widened to f32, after checking its shape.
    pub fn get_shaped(&self, name: &str, shape: &[usize]) -> Result<HostTensor> {
        let raw = self.raw(name)?;
        if raw.shape != shape {
            return Err(Error::TensorShape {
                name: name.to_string(),
                expected: shape.to_vec(),
                found: raw.shape.clone(),
            });
        }
        self.get(name)
    }

    /// A store whose names are rewritten by `rename` (None drops the tensor).
    pub fn renamed(self, mut rename: impl FnMut(&str) -> Option<String>) -> Self {
        let tensors = self.tensors.into_iter().filter_map(|(k, v)| rename(&k).map(|k| (k, v))).collect();
        WeightStore { tensors, read: Default::default(), ..self }
    }
}

/// Writes `tensors` as one safetensors file with PyTorch's `format: pt` metadata.
///
/// The layout is the `safetensors` crate's (header JSON padded to 8 bytes, tensors sorted by
/// alignment then name, so f32 data starts 4-byte aligned for zero-copy reads), written through
/// [`wanrt_io::write_atomic`]: the file appears whole or not at all, with the mode a plain create
/// gives (the crate's own writer leaves tempfile's private 0600 on the result).
pub fn write_safetensors<'a>(path: &Path, tensors: impl IntoIterator<Item = (&'a str, &'a RawTensor)>) -> Result<()> {
    let map: BTreeMap<&str, &RawTensor> = tensors.into_iter().collect();
    let list = map.iter().map(|(n, t)| (n.to_string(), t.dtype, t.shape.clone())).collect();
    write_safetensors_with(path, list, |name| Ok(map[name].bytes()))
}

/// [`write_safetensors`] of tensors made one at a time: `list` gives each name, dtype and shape
/// (the header comes first), `data(name)` its bytes when they are written, so a caller
/// converting a model (dequantizing GGUF blocks) holds one converted tensor at a time.
pub fn write_safetensors_with<'d>(
    path: &Path,
    mut list: Vec<(String, DType, Vec<usize>)>,
    mut data: impl FnMut(&str) -> Result<Cow<'d, [u8]>>,
) -> Result<()> {
    use std::io::Write;
    // Block-quantized (GGUF) tensors have no safetensors dtype: dequantize them first.
    if let Some((name, dtype, _)) = list.iter().find(|(_, d, _)| st_name(*d).is_none()) {
        return Err(Error::file(path, format!("cannot write tensor `{name}` of dtype {dtype} to safetensors")));
    }
    list.sort_by(|a, b| b.1.size_in_bytes().cmp(&a.1.size_in_bytes()).then(a.0.cmp(&b.0)));
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), serde_json::json!({"format": "pt"}));
    let mut offset = 0usize;
    let mut lens = Vec::with_capacity(list.len());
    for (name, dtype, shape) in &list {
        let st = st_name(*dtype).expect("checked above");
        let len = shape
            .iter()
            .try_fold(dtype.size_in_bytes(), |a, &n| a.checked_mul(n))
            .ok_or_else(|| Error::file(path, format!("tensor `{name}` of shape {shape:?} is too large")))?;
        let end = offset + len;
        header.insert(
            name.to_string(),
            serde_json::json!({"dtype": format!("{st:?}"), "shape": shape, "data_offsets": [offset, end]}),
        );
        offset = end;
        lens.push(len);
    }
    let mut text = serde_json::to_string(&header).map_err(|e| Error::file(path, e.to_string()))?;
    while text.len() % 8 != 0 {
        text.push(' ');
    }
    wanrt_io::write_atomic(path, |w| {
        let io = |e| wanrt_io::Error::io(path, e);
        w.write_all(&(text.len() as u64).to_le_bytes()).map_err(io)?;
        w.write_all(text.as_bytes()).map_err(io)?;
        for ((name, _, shape), len) in list.iter().zip(&lens) {
            let bytes =
                data(name).map_err(|e| wanrt_io::Error::Invalid { path: path.to_path_buf(), msg: e.to_string() })?;
            if bytes.len() != *len {
                let msg = format!("tensor `{name}` of shape {shape:?} has {} bytes", bytes.len());
                return Err(wanrt_io::Error::Invalid { path: path.to_path_buf(), msg });
            }
            w.write_all(&bytes).map_err(io)?;
        }
        Ok(())
    })?;
    Ok(())
}

impl WeightStore {
    /// Writes every tensor (as stored: dtype and bytes unchanged) to one safetensors file.
    pub fn write_safetensors(&self, path: &Path) -> Result<()> {
        write_safetensors(path, self.tensors.iter().map(|(n, t)| (n.as_str(), t)))
    }
}

fn shard_files(index: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(index).map_err(|e| Error::file(index, format!("cannot read: {e}")))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| Error::file(index, format!("invalid json: {e}")))?;
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| Error::file(index, "missing object `weight_map`"))?;
    let mut files: Vec<String> = Vec::new();
    for v in map.values() {
        let f = v.as_str().ok_or_else(|| Error::file(index, "weight_map values must be file names"))?;
        if f.contains('/') || f.contains('\\') || f.starts_with('.') {
            return Err(Error::file(index, format!("shard name `{f}` must be a plain file name")));
        }
        if !files.iter().any(|x| x == f) {
            files.push(f.to_string());
        }
    }
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every dtype is written and read back under the same safetensors name.
    #[test]
    fn every_dtype_round_trips_through_safetensors() {
        use DType::*;
        let all = [F32, F16, BF16, F64, I64, I32, U32, I8, U8, F8E4M3];
        // Exhaustive on purpose: a new DType does not compile here until it is in the table (or
        // listed as having no safetensors name).
        all.iter().for_each(|d| match d {
            F32 | F16 | BF16 | F64 | I64 | I32 | U32 | I8 | U8 | F8E4M3 => {}
            Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | Q2K | Q3K | Q4K | Q5K | Q6K => unreachable!(),
        });
        let dir = std::env::temp_dir().join(format!("wanrt-dtypes-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.safetensors");
        let mut ws = WeightStore::new("test");
        for (i, &d) in all.iter().enumerate() {
            let bytes = (0..2 * d.size_in_bytes()).map(|b| (b + i) as u8).collect();
            ws.insert(format!("t{i}"), RawTensor::from_bytes(d, vec![2], bytes).unwrap());
        }
        ws.write_safetensors(&path).unwrap();
        // The reference reader accepts the file, and sees the same tensors.
        let bytes = std::fs::read(&path).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        assert_eq!(st.len(), all.len());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let plain = dir.join("plain");
            std::fs::write(&plain, b"").unwrap();
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&path), mode(&plain), "safetensors get the umask's mode, not 0600");
        }
        let back = WeightStore::from_safetensors_files(&[path]).unwrap();
        for (i, &d) in all.iter().enumerate() {
            let (a, b) = (ws.raw(&format!("t{i}")).unwrap(), back.raw(&format!("t{i}")).unwrap());
            assert_eq!((b.dtype, &b.shape, b.bytes()), (d, &a.shape, a.bytes()));
        }
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn unread_tensors_and_duplicates_are_named() {
        let dir = std::env::temp_dir().join(format!("wanrt-unread-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let t = |v: f32| RawTensor::from_bytes(DType::F32, vec![1], v.to_le_bytes().to_vec()).unwrap();
        let mut a = WeightStore::new("a");
        a.insert("blocks.0.w", t(1.0));
        a.insert("blocks.1.w", t(2.0));
        a.insert("encoder.w", t(3.0));
        let (pa, pb) = (dir.join("a.safetensors"), dir.join("b.safetensors"));
        a.write_safetensors(&pa).unwrap();
        let ws = WeightStore::from_safetensors_files(std::slice::from_ref(&pa)).unwrap();
        ws.get("blocks.0.w").unwrap();
        let e = ws.check_all_read("transformer", &[]).unwrap_err().to_string();
        assert!(e.contains("2 tensor(s) not used by the transformer") && e.contains("`blocks.1.w`"), "{e}");
        assert!(ws.check_all_read("transformer", &["blocks.1.", "encoder."]).is_ok());
        ws.shape_of("blocks.1.w").unwrap();
        assert_eq!(ws.unread(), vec!["encoder.w"]);
        // The same name in two shards.
        let mut b = WeightStore::new("b");
        b.insert("blocks.1.w", t(9.0));
        b.write_safetensors(&pb).unwrap();
        let e = WeightStore::from_safetensors_files(&[pa, pb]).err().unwrap().to_string();
        assert!(e.contains("b.safetensors") && e.contains("`blocks.1.w` is also in an earlier file"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }

    /// A block-quantized tensor is refused by name instead of being written under a wrong dtype.
    #[test]
    fn block_quantized_tensors_are_not_written_to_safetensors() {
        let mut ws = WeightStore::new("test");
        ws.insert("q.weight", RawTensor::from_bytes(DType::Q8_0, vec![1, 32], vec![0; 34]).unwrap());
        let path = std::env::temp_dir().join(format!("wanrt-q8-{}.safetensors", std::process::id()));
        let err = ws.write_safetensors(&path).unwrap_err().to_string();
        assert!(!path.exists());
        assert!(err.contains("`q.weight` of dtype q8_0"), "{err}");
        assert!(RawTensor::from_bytes(DType::Q8_0, vec![1, 33], vec![0; 34]).is_err(), "33 values are no whole block");
    }
}
