//! The crate's error type (queue, model and file errors; one line each).

/// Errors of the service's library parts. HTTP handlers turn them into
/// [`crate::api_error::ApiError`]s.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Input(String),
    #[error("sqlite queue: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("postgres queue: {0}")]
    Postgres(#[from] postgres::Error),
    #[error(transparent)]
    Model(#[from] wanrt_wan::Error),
    #[error(transparent)]
    Nn(#[from] wanrt_nn::Error),
    #[error(transparent)]
    Media(#[from] wanrt_media::Error),
    #[error(transparent)]
    File(#[from] wanrt_io::Error),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("stored job {id}: {msg}")]
    Corrupt { id: String, msg: String },
}

impl Error {
    pub fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        Error::Io { path: path.as_ref().display().to_string(), source }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
