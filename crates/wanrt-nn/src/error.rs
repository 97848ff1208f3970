//! Errors of the tensor layer: each names what was expected and what was found.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    #[error("shape mismatch in {op}: expected {expected}, found {found}")]
    Shape { op: &'static str, expected: String, found: String },

    #[error("missing tensor `{name}` in {source_desc}")]
    MissingTensor { name: String, source_desc: String },

    #[error("tensor `{name}`: expected shape {expected:?}, found {found:?}")]
    TensorShape { name: String, expected: Vec<usize>, found: Vec<usize> },

    #[error("tensor `{name}`: unsupported dtype {dtype}")]
    UnsupportedDType { name: String, dtype: String },

    #[error("{path}: {message}")]
    File { path: String, message: String },

    #[error(transparent)]
    Io(#[from] wanrt_io::Error),

    #[error("{0}")]
    Msg(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn shape(op: &'static str, expected: impl std::fmt::Debug, found: impl std::fmt::Debug) -> Self {
        Error::Shape { op, expected: format!("{expected:?}"), found: format!("{found:?}") }
    }
    pub fn file(path: impl AsRef<std::path::Path>, message: impl Into<String>) -> Self {
        Error::File { path: path.as_ref().display().to_string(), message: wanrt_io::one_line(&message.into()) }
    }
}
