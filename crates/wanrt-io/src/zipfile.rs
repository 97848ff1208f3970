//! A memory-mapped zip archive: stored entries are borrowed from the map without a
//! copy, compressed entries are inflated with a size bound. Shared by `pth` and `npz`.

use std::fs::File;
use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;
use zip::{CompressionMethod, ZipArchive};

use crate::error::{Error, Result};

/// Deflate cannot expand data by more than ~1032:1; anything claiming more is corrupt.
const MAX_DEFLATE_RATIO: u64 = 1100;

/// The bytes of one entry: a window on the map, or an inflated copy.
#[derive(Clone, Debug)]
pub(crate) enum Bytes {
    Mapped { map: Arc<Mmap>, start: usize, len: usize },
    Owned(Arc<Vec<u8>>),
}

impl Bytes {
    pub(crate) fn as_slice(&self) -> &[u8] {
        match self {
            Bytes::Mapped { map, start, len } => &map[*start..*start + *len],
            Bytes::Owned(v) => v,
        }
    }
}

struct MapBuf(Arc<Mmap>);

impl AsRef<[u8]> for MapBuf {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// One entry of the central directory.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    pub name: String,
    index: usize,
    stored: bool,
    encrypted: bool,
    data_start: u64,
    size: u64,
    compressed_size: u64,
}

/// A zip file opened for reading.
pub(crate) struct MappedZip {
    path: PathBuf,
    format: &'static str,
    map: Arc<Mmap>,
    archive: ZipArchive<Cursor<MapBuf>>,
    entries: Vec<Entry>,
}

impl MappedZip {
    /// Maps `path` and reads its central directory. `format` names the expected file
    /// kind in errors ("PyTorch .pth", "npz").
    pub(crate) fn open(path: &Path, format: &'static str) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: the map is read-only; as with every mmap-based loader (safetensors),
        // the file must not be truncated by another process while it is open.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        Self::from_map(path, format, Arc::new(map))
    }

    fn from_map(path: &Path, format: &'static str, map: Arc<Mmap>) -> Result<Self> {
        let mut archive = ZipArchive::new(Cursor::new(MapBuf(map.clone())))
            .map_err(|e| Error::format(path, format, format!("bad zip container: {e}")))?;
        let mut entries = Vec::with_capacity(archive.len().min(1 << 16));
        for index in 0..archive.len() {
            let f = archive
                .by_index_raw(index)
                .map_err(|e| Error::format(path, format, format!("bad zip entry #{index}: {e}")))?;
            entries.push(Entry {
                name: f.name().to_string(),
                index,
                stored: f.compression() == CompressionMethod::Stored,
                encrypted: f.encrypted(),
                data_start: f.data_start(),
                size: f.size(),
                compressed_size: f.compressed_size(),
            });
        }
        Ok(MappedZip { path: path.to_path_buf(), format, map, archive, entries })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn entries(&self) -> &[Entry] {
        &self.entries
    }

    pub(crate) fn find(&self, name: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.name == name)
    }

    fn bad(&self, msg: String) -> Error {
        Error::format(&self.path, self.format, msg)
    }

    /// The bytes of `entry`: zero-copy when it is stored, else inflated (bounded by the
    /// declared size, which is itself bounded by the compressed size).
    pub(crate) fn bytes(&mut self, entry: &Entry) -> Result<Bytes> {
        if entry.encrypted {
            return Err(self.bad(format!("entry `{}` is encrypted", entry.name)));
        }
        if entry.stored {
            let end = entry.data_start.checked_add(entry.size);
            if entry.size != entry.compressed_size || end.is_none_or(|end| end > self.map.len() as u64) {
                return Err(self.bad(format!(
                    "entry `{}` ({} bytes at offset {}) runs past the end of the file ({} bytes): truncated?",
                    entry.name,
                    entry.size,
                    entry.data_start,
                    self.map.len()
                )));
            }
            return Ok(Bytes::Mapped {
                map: self.map.clone(),
                start: entry.data_start as usize,
                len: entry.size as usize,
            });
        }
        let max = entry.compressed_size.saturating_mul(MAX_DEFLATE_RATIO);
        let budget = crate::limits::decode_budget(self.map.len() as u64);
        if entry.size > budget {
            return Err(self.bad(format!(
                "entry `{}` inflates to {} bytes, over the decode budget of {} for this file ({})",
                entry.name,
                entry.size,
                crate::limits::format_size(budget),
                crate::limits::budget_hint()
            )));
        }
        if entry.size > max {
            return Err(self.bad(format!(
                "entry `{}` claims {} bytes from {} compressed bytes",
                entry.name, entry.size, entry.compressed_size
            )));
        }
        let name = entry.name.clone();
        let path = self.path.clone();
        let format = self.format;
        let f = self
            .archive
            .by_index(entry.index)
            .map_err(|e| Error::format(&path, format, format!("entry `{name}`: {e}")))?;
        let mut out = Vec::new();
        f.take(entry.size.saturating_add(1))
            .read_to_end(&mut out)
            .map_err(|e| Error::format(&path, format, format!("entry `{name}`: {e}")))?;
        if out.len() as u64 != entry.size {
            return Err(Error::format(
                &path,
                format,
                format!("entry `{name}` inflates to {} bytes, the directory says {}", out.len(), entry.size),
            ));
        }
        Ok(Bytes::Owned(Arc::new(out)))
    }
}
