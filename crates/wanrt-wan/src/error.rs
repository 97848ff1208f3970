//! Errors of the Wan model family.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    #[error(transparent)]
    Nn(#[from] wanrt_nn::Error),
    // Messages that may quote a hostile file are made one clean line (`one_line`).
    #[error("invalid config: {}", wanrt_io::one_line(.0))]
    Config(String),
    #[error("shape: {0}")]
    Shape(String),
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("tokenizer: {}", wanrt_io::one_line(.0))]
    Tokenizer(String),
    #[error("{}", wanrt_io::one_line(.0))]
    Msg(String),
}

impl Error {
    pub fn file(path: impl AsRef<std::path::Path>, message: impl Into<String>) -> Self {
        Error::File { path: path.as_ref().display().to_string(), message: wanrt_io::one_line(&message.into()) }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
