//! Errors of the optimizer: each names the input that was wrong.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    #[error(transparent)]
    Wan(#[from] wanrt_wan::Error),
    #[error(transparent)]
    Nn(#[from] wanrt_nn::Error),
    #[error(transparent)]
    Io(#[from] wanrt_io::Error),
    #[error("{0}")]
    Msg(String),
}

pub type Result<T> = std::result::Result<T, Error>;
