//! NumPy `.npz` archives: a zip of `.npy` entries (`np.savez` / `np.savez_compressed`).
//!
//! Reading accepts stored and deflated entries (inflation is bounded, see
//! [`crate::zipfile`]); writing stores entries uncompressed, atomically. Keys are the
//! entry names without `.npy`, as `numpy.load(f)["mu"]` sees them (pytorch-fid reads
//! `mu` and `sigma` this way).

use std::io::Write;
use std::path::Path;

use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

use crate::atomic::write_atomic;
use crate::error::{list_names, Error, Result};
use crate::npy::{encode_header, parse_npy, NpyArray};
use crate::zipfile::MappedZip;

const FORMAT: &str = "npz";

/// An open .npz archive; arrays are parsed on demand.
pub struct NpzReader {
    zip: MappedZip,
}

impl NpzReader {
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Ok(NpzReader { zip: MappedZip::open(path.as_ref(), FORMAT)? })
    }

    /// Array names (entry names without the `.npy` suffix), in archive order.
    pub fn names(&self) -> Vec<String> {
        self.zip.entries().iter().filter_map(|e| e.name.strip_suffix(".npy").map(str::to_string)).collect()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.zip.find(&format!("{name}.npy")).is_some()
    }

    /// Reads the array `name`; a missing one is an error listing what is there.
    pub fn read(&mut self, name: &str) -> Result<NpyArray> {
        let Some(entry) = self.zip.find(&format!("{name}.npy")).cloned() else {
            let names = self.names();
            return Err(Error::Missing {
                path: self.zip.path().to_path_buf(),
                what: "array",
                name: name.to_string(),
                available: list_names(names.iter().map(String::as_str), 16),
            });
        };
        let bytes = self.zip.bytes(&entry)?;
        let label = self.zip.path().join(&entry.name);
        parse_npy(bytes.as_slice(), &label)
    }
}

/// Reads every array of an .npz file, in archive order.
pub fn read_npz(path: impl AsRef<Path>) -> Result<Vec<(String, NpyArray)>> {
    let mut r = NpzReader::open(path)?;
    let names = r.names();
    names
        .into_iter()
        .map(|n| {
            let a = r.read(&n)?;
            Ok((n, a))
        })
        .collect()
}

/// Writes `arrays` as an uncompressed .npz (like `np.savez`), atomically.
pub fn write_npz(path: impl AsRef<Path>, arrays: &[(&str, &NpyArray)]) -> Result<()> {
    let path = path.as_ref();
    let io = |e: std::io::Error| Error::io(path, e);
    let zerr = |e: zip::result::ZipError| Error::Invalid { path: path.to_path_buf(), msg: format!("writing zip: {e}") };
    write_atomic(path, |w| {
        let mut z = ZipWriter::new(w);
        for (name, a) in arrays {
            let header = encode_header(a.dtype(), a.shape());
            let big = (header.len() + a.as_bytes().len()) as u64 >= u32::MAX as u64;
            let opts = SimpleFileOptions::default().compression_method(CompressionMethod::Stored).large_file(big);
            z.start_file(format!("{name}.npy"), opts).map_err(zerr)?;
            z.write_all(&header).map_err(io)?;
            z.write_all(a.as_bytes()).map_err(io)?;
        }
        z.finish().map_err(zerr)?;
        Ok(())
    })
}
