//! Atomic output: write into a temporary file (or folder) beside the target, then rename.
//!
//! On any error the temporary is removed and the target is left untouched, so a failed
//! write never leaves a partial output file.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use crate::error::{Error, Result};

/// Temp names start with this; the final file gets the mode a plain create would give
/// (0o666 for files, 0o777 for folders, minus the umask), not tempfile's private 0o600.
fn builder(mode: u32) -> tempfile::Builder<'static, 'static> {
    let mut b = tempfile::Builder::new();
    b.prefix(".wanrt-tmp-");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        b.permissions(std::fs::Permissions::from_mode(mode));
    }
    #[cfg(not(unix))]
    let _ = mode;
    b
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Writes `path` atomically: `write` fills a buffered temporary file in the same folder,
/// which is flushed, synced and renamed over `path` only if `write` succeeds.
pub fn write_atomic<F>(path: impl AsRef<Path>, write: F) -> Result<()>
where
    F: FnOnce(&mut BufWriter<&mut File>) -> Result<()>,
{
    let path = path.as_ref();
    let dir = parent_dir(path);
    let mut tmp = builder(0o666).tempfile_in(dir).map_err(|e| Error::io(dir, e))?;
    {
        let mut w = BufWriter::new(tmp.as_file_mut());
        write(&mut w)?;
        w.flush().map_err(|e| Error::io(path, e))?;
    }
    tmp.as_file().sync_all().map_err(|e| Error::io(path, e))?;
    tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
    Ok(())
}

/// Creates the folder `path` atomically: `fill` writes into a temporary folder beside it,
/// which is renamed to `path` only if `fill` succeeds. `path` must not exist, or be an
/// empty folder (it is replaced); a non-empty folder is an error, never overwritten.
pub fn create_dir_atomic<F>(path: impl AsRef<Path>, fill: F) -> Result<()>
where
    F: FnOnce(&Path) -> Result<()>,
{
    let path = path.as_ref();
    if path.exists() {
        let mut entries = std::fs::read_dir(path).map_err(|e| Error::io(path, e))?;
        if entries.next().is_some() {
            return Err(Error::Invalid {
                path: path.to_path_buf(),
                msg: "output folder exists and is not empty (refusing to overwrite)".into(),
            });
        }
    }
    let dir = parent_dir(path);
    let tmp = builder(0o777).tempdir_in(dir).map_err(|e| Error::io(dir, e))?;
    fill(tmp.path())?;
    if path.exists() {
        std::fs::remove_dir(path).map_err(|e| Error::io(path, e))?;
    }
    let tmp_path = tmp.keep();
    if let Err(e) = std::fs::rename(&tmp_path, path) {
        let _ = std::fs::remove_dir_all(&tmp_path);
        return Err(Error::io(path, e));
    }
    Ok(())
}

/// Copies the folder tree `src` into `dst` (created), hard-linking files where the filesystem
/// allows: model weights copied unchanged are large and never modified in place.
pub fn copy_tree(src: &Path, dst: &Path) -> Result<()> {
    std::fs::create_dir_all(dst).map_err(|e| Error::io(dst, e))?;
    for entry in std::fs::read_dir(src).map_err(|e| Error::io(src, e))? {
        let entry = entry.map_err(|e| Error::io(src, e))?;
        let (from, to) = (entry.path(), dst.join(entry.file_name()));
        if from.is_dir() {
            copy_tree(&from, &to)?;
        } else if std::fs::hard_link(&from, &to).is_err() {
            std::fs::copy(&from, &to).map_err(|e| Error::io(&from, e))?;
        }
    }
    Ok(())
}
