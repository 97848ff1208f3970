//! Opening a study video at request time, confined to its variant folder.
//!
//! The folders are scanned at start-up, but the files can change while the server runs: a
//! video replaced by a symlink to `~/.ssh/id_rsa`, a variant folder renamed and another put
//! in its place, a FIFO that would block a worker forever. So every request re-resolves
//! `folder/file` and serves it only if it still is a regular file inside the folder the
//! study was started with (canonical path). On Linux the check is made on the opened file
//! itself (`/proc/self/fd`), which closes the window between the check and the open.

use std::fs::File;
use std::path::{Component, Path, PathBuf};

/// A video opened for serving: the open file and a path that names exactly that file.
pub struct Confined {
    /// Kept open so that `path` (a `/proc/self/fd` link on Linux) stays valid.
    _file: File,
    pub path: PathBuf,
}

/// Why a video is not served (the server answers 404 either way; the reason goes to stderr
/// for the person running the study).
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    Missing,
    Outside(PathBuf),
    NotAFile,
}

/// Opens `dir/file` if it resolves to a regular file inside `dir` (`dir` canonical).
pub fn open_confined(dir: &Path, file: &str) -> Result<Confined, Refused> {
    // `file` comes from a directory listing; refuse anything but one plain name anyway.
    let mut parts = Path::new(file).components();
    if !matches!((parts.next(), parts.next()), (Some(Component::Normal(_)), None)) {
        return Err(Refused::Outside(PathBuf::from(file)));
    }
    let real = dir.join(file).canonicalize().map_err(|_| Refused::Missing)?;
    if !real.starts_with(dir) {
        return Err(Refused::Outside(real));
    }
    let f = open_no_block(&real).map_err(|_| Refused::Missing)?;
    let meta = f.metadata().map_err(|_| Refused::Missing)?;
    if !meta.is_file() {
        return Err(Refused::NotAFile);
    }
    confirm(f, dir, real)
}

/// Opens without following a final symlink and without blocking on a FIFO (a FIFO would
/// hold a blocking thread until some writer appeared).
#[cfg(unix)]
fn open_no_block(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(path)
}

#[cfg(not(unix))]
fn open_no_block(path: &Path) -> std::io::Result<File> {
    File::open(path)
}

/// Linux: the opened file's own path must still be inside `dir` (a folder on the way may
/// have been swapped for a symlink after `canonicalize`); the file is then served through
/// its `/proc/self/fd` link, so the checked file is the one sent.
#[cfg(target_os = "linux")]
fn confirm(f: File, dir: &Path, _real: PathBuf) -> Result<Confined, Refused> {
    use std::os::fd::AsRawFd;
    let link = PathBuf::from(format!("/proc/self/fd/{}", f.as_raw_fd()));
    match std::fs::read_link(&link) {
        Ok(target) if target.starts_with(dir) => Ok(Confined { _file: f, path: link }),
        Ok(target) => Err(Refused::Outside(target)),
        Err(_) => Err(Refused::Missing),
    }
}

#[cfg(not(target_os = "linux"))]
fn confirm(f: File, _dir: &Path, real: PathBuf) -> Result<Confined, Refused> {
    Ok(Confined { _file: f, path: real })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_inside_the_folder() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        let dir = root.join("v");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("a.gif"), b"GIF89a").unwrap();
        std::fs::write(root.join("secret.gif"), b"secret").unwrap();
        let c = open_confined(&dir, "a.gif").ok().unwrap();
        assert_eq!(std::fs::read(&c.path).unwrap(), b"GIF89a");
        assert_eq!(open_confined(&dir, "b.gif").err(), Some(Refused::Missing));
        assert!(matches!(open_confined(&dir, "../secret.gif"), Err(Refused::Outside(_))));
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(root.join("secret.gif"), dir.join("s.gif")).unwrap();
            assert!(matches!(open_confined(&dir, "s.gif"), Err(Refused::Outside(_))));
            std::os::unix::fs::symlink("a.gif", dir.join("inside.gif")).unwrap();
            assert!(open_confined(&dir, "inside.gif").is_ok(), "a link within the folder is fine");
            let fifo = dir.join("f.gif");
            let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
            // SAFETY: a valid NUL-terminated path.
            assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
            assert_eq!(open_confined(&dir, "f.gif").err(), Some(Refused::NotAFile));
        }
    }
}
