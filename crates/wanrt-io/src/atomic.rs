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

/// [`create_dir_atomic`] for a `fill` with its own error type: its error comes back as it was
/// (it names the file it is about; wrapping it in the temporary folder's path would only add a
/// `.wanrt-tmp-…` name to the message), the folder's own failures through `from_io`.
pub fn create_dir_atomic_with<E: std::fmt::Display>(
    path: impl AsRef<Path>,
    fill: impl FnOnce(&Path) -> std::result::Result<(), E>,
    from_io: impl FnOnce(Error) -> E,
) -> std::result::Result<(), E> {
    let mut failure = None;
    let written = create_dir_atomic(path, |tmp| {
        fill(tmp).map_err(|e| {
            let msg = e.to_string();
            failure = Some(e);
            Error::Invalid { path: tmp.to_path_buf(), msg }
        })
    });
    match (written, failure) {
        (Ok(()), _) => Ok(()),
        (Err(_), Some(e)) => Err(e),
        (Err(e), None) => Err(from_io(e)),
    }
}

/// Copies the folder tree `src` into `dst` (created), hard-linking files where the filesystem
/// allows: model weights copied unchanged are large and never modified in place.
///
/// Symlinks are followed (a Hugging Face cache snapshot is a tree of relative links into
/// `blobs/`; linking the link itself would leave it dangling in its new place), and a link back
/// to a folder being copied is an error instead of endless recursion.
pub fn copy_tree(src: &Path, dst: &Path) -> Result<()> {
    let mut active = Vec::new();
    copy_tree_inner(src, dst, &mut active)
}

fn copy_tree_inner(src: &Path, dst: &Path, active: &mut Vec<std::path::PathBuf>) -> Result<()> {
    let real = src.canonicalize().map_err(|e| Error::io(src, e))?;
    if active.contains(&real) {
        return Err(Error::Invalid {
            path: src.to_path_buf(),
            msg: "links back to a folder that contains it (a symlink loop)".into(),
        });
    }
    active.push(real);
    std::fs::create_dir_all(dst).map_err(|e| Error::io(dst, e))?;
    for entry in std::fs::read_dir(src).map_err(|e| Error::io(src, e))? {
        let entry = entry.map_err(|e| Error::io(src, e))?;
        let (from, to) = (entry.path(), dst.join(entry.file_name()));
        if from.is_dir() {
            copy_tree_inner(&from, &to, active)?;
        } else {
            let target = from.canonicalize().map_err(|e| Error::io(&from, e))?;
            if std::fs::hard_link(&target, &to).is_err() {
                std::fs::copy(&target, &to).map_err(|e| Error::io(&from, e))?;
            }
        }
    }
    active.pop();
    Ok(())
}

/// Checks, before any work starts, that [`write_atomic`] can later create `path`: the parent
/// folder exists and takes a new file (a temporary one is created and removed), and `path` is
/// not an existing folder. A long job then fails in its first second, not after hours.
pub fn check_output_file(path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    if path.is_dir() {
        return Err(Error::Invalid { path: path.to_path_buf(), msg: "is a folder, expected a file name".into() });
    }
    probe_parent(path)
}

/// Like [`check_output_file`] for a folder [`create_dir_atomic`] will create: it must not
/// exist or be an empty folder, and its parent must take a new entry.
pub fn check_output_dir(path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    if path.exists() {
        if !path.is_dir() {
            return Err(Error::Invalid { path: path.to_path_buf(), msg: "exists and is not a folder".into() });
        }
        let mut entries = std::fs::read_dir(path).map_err(|e| Error::io(path, e))?;
        if entries.next().is_some() {
            return Err(Error::Invalid {
                path: path.to_path_buf(),
                msg: "output folder exists and is not empty (refusing to overwrite)".into(),
            });
        }
    }
    probe_parent(path)
}

fn probe_parent(path: &Path) -> Result<()> {
    let dir = parent_dir(path);
    if !dir.is_dir() {
        let msg = if dir.exists() { "is not a folder" } else { "does not exist" };
        return Err(Error::Invalid { path: dir.to_path_buf(), msg: format!("output folder {msg}") });
    }
    // Creating a file is the only reliable writability test (permissions, ACLs, read-only
    // mounts, quotas all show up here).
    builder(0o600).tempfile_in(dir).map(drop).map_err(|e| Error::Invalid {
        path: dir.to_path_buf(),
        msg: format!("cannot create files in the output folder: {e}"),
    })
}

/// Whether `path` (existing or not) lies inside the folder `dir` (or is `dir`), comparing
/// real paths: symlinks and `..` cannot hide it. A missing `dir` contains nothing.
pub fn is_inside(path: &Path, dir: &Path) -> bool {
    let Ok(dir) = dir.canonicalize() else { return false };
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        match std::env::current_dir() {
            Ok(cwd) => cwd.join(path),
            Err(_) => return false,
        }
    };
    // Resolve component by component: existing prefixes through the file system (symlinks
    // followed), the rest lexically (`..` pops).
    let mut real = std::path::PathBuf::new();
    for c in abs.components() {
        match c {
            std::path::Component::Normal(name) => {
                real.push(name);
                if let Ok(r) = real.canonicalize() {
                    real = r;
                }
            }
            std::path::Component::ParentDir => {
                real.pop();
            }
            std::path::Component::CurDir => {}
            other => real.push(other.as_os_str()),
        }
    }
    real.starts_with(&dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_are_checked_before_the_work() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        assert!(check_output_file(t.join("a.mp4")).is_ok());
        let e = check_output_file(t.join("missing/a.mp4")).unwrap_err().to_string();
        assert!(e.contains("missing") && e.contains("does not exist"), "{e}");
        assert!(check_output_file(t).unwrap_err().to_string().contains("is a folder"));
        std::fs::write(t.join("f"), b"x").unwrap();
        assert!(check_output_file(t.join("f/a.mp4")).unwrap_err().to_string().contains("not a folder"));
        assert!(check_output_dir(t.join("new")).is_ok());
        assert!(check_output_dir(t).unwrap_err().to_string().contains("not empty"));
        // No probe file is left behind.
        let left: Vec<_> = std::fs::read_dir(t).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, vec![std::ffi::OsString::from("f")]);
    }

    #[test]
    fn inside_compares_real_paths() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("model");
        std::fs::create_dir_all(src.join("vae")).unwrap();
        assert!(is_inside(&src.join("vae/new/out"), &src));
        assert!(is_inside(&src.join("x/../out"), &src));
        assert!(is_inside(&src, &src));
        assert!(!is_inside(&tmp.path().join("out"), &src));
        assert!(!is_inside(&tmp.path().join("model2"), &src));
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(&src, tmp.path().join("link")).unwrap();
            assert!(is_inside(&tmp.path().join("link/out"), &src));
        }
    }

    #[cfg(unix)]
    #[test]
    fn copy_tree_follows_links_and_refuses_loops() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        std::fs::create_dir_all(t.join("blobs")).unwrap();
        std::fs::create_dir_all(t.join("snap/vae")).unwrap();
        std::fs::write(t.join("blobs/abc"), b"weights").unwrap();
        std::os::unix::fs::symlink("../../blobs/abc", t.join("snap/vae/w.safetensors")).unwrap();
        copy_tree(&t.join("snap"), &t.join("copy")).unwrap();
        assert_eq!(std::fs::read(t.join("copy/vae/w.safetensors")).unwrap(), b"weights");
        std::os::unix::fs::symlink("..", t.join("snap/vae/loop")).unwrap();
        let e = copy_tree(&t.join("snap"), &t.join("copy2")).unwrap_err().to_string();
        assert!(e.contains("symlink loop"), "{e}");
    }

    #[cfg(unix)]
    #[test]
    fn written_files_follow_the_umask() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("a.bin");
        write_atomic(&p, |w| w.write_all(b"x").map_err(|e| Error::io(&p, e))).unwrap();
        let plain = tmp.path().join("plain");
        std::fs::write(&plain, b"x").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&p), mode(&plain), "atomic writes get the mode of a plain create");
    }
}
