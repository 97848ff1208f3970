//! The crate's error type: every variant names the file and what was expected.

use std::path::{Path, PathBuf};

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors of wanrt-media.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An operating-system error on a file or folder.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid file of the expected format (or its decoder failed).
    #[error("{}: not a valid {format} file: {msg}", path.display())]
    Format { path: PathBuf, format: &'static str, msg: String },
    /// Input that cannot be handled as asked (odd sizes for H.264, wrong array shape,
    /// unknown extension, empty folder, mismatched frame sizes…).
    #[error("{}: {msg}", path.display())]
    Invalid { path: PathBuf, msg: String },
    /// An error from the tensor-file layer (npy).
    #[error(transparent)]
    TensorFile(#[from] wanrt_io::Error),
}

impl Error {
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Error::Io { path: path.as_ref().to_path_buf(), source }
    }

    pub fn format(path: impl AsRef<Path>, format: &'static str, msg: impl ToString) -> Self {
        Error::Format { path: path.as_ref().to_path_buf(), format, msg: wanrt_io::one_line(&msg.to_string()) }
    }

    pub fn invalid(path: impl AsRef<Path>, msg: impl Into<String>) -> Self {
        Error::Invalid { path: path.as_ref().to_path_buf(), msg: msg.into() }
    }
}
