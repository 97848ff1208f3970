//! Errors of wanrt-eval: each names the file or option and what was expected.

use std::path::PathBuf;

/// Result alias of this crate.
pub type Result<T, E = EvalError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// A weight file was not given (flag or environment variable). `flag` includes its value's
    /// form (`--inception FILE.pth`, `--clip DIR`).
    #[error(
        "no {what} weights given: pass {flag} or set {env} (usually `{usual}`; \
         nothing is downloaded)"
    )]
    MissingWeights { what: &'static str, flag: &'static str, env: &'static str, usual: &'static str },
    /// A path does not exist or cannot be read.
    #[error("{}: {msg}", path.display())]
    Input { path: PathBuf, msg: String },
    /// Not enough items/frames for the statistic.
    #[error("{what}: need at least {need}, found {found}")]
    TooFew { what: String, need: usize, found: usize },
    /// Two inputs that must agree in shape do not.
    #[error("{what}: expected {expected}, found {found}")]
    Mismatch { what: String, expected: String, found: String },
    /// A weight file lacks a tensor or has the wrong shape.
    #[error("{}: {msg}", path.display())]
    Weights { path: PathBuf, msg: String },
    /// A numerical failure (e.g. pytorch-fid's "Imaginary component").
    #[error("{0}")]
    Numeric(String),
    #[error(transparent)]
    Io(#[from] wanrt_io::Error),
    #[error(transparent)]
    Nn(#[from] wanrt_nn::Error),
    #[error(transparent)]
    Media(#[from] wanrt_media::Error),
    #[error(transparent)]
    Model(#[from] wanrt_wan::Error),
    #[error("{0}")]
    Msg(String),
}

impl EvalError {
    pub fn input(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        EvalError::Input { path: path.into(), msg: msg.into() }
    }
    pub fn mismatch(what: impl Into<String>, expected: impl std::fmt::Display, found: impl std::fmt::Display) -> Self {
        EvalError::Mismatch { what: what.into(), expected: expected.to_string(), found: found.to_string() }
    }
}
