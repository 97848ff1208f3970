//! The crate's error type: every variant names the file and says what was expected.

use std::path::{Path, PathBuf};

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors of wanrt-io. Every variant carries the path of the file it is about.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An operating-system error while opening, reading, writing or renaming a file.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not a well-formed file of the expected format.
    #[error("{}: not a valid {format} file: {msg}", path.display())]
    Format { path: PathBuf, format: &'static str, msg: String },
    /// The file is well-formed but uses a feature this reader does not support.
    #[error("{}: unsupported {what}: found {}, expected {expected}", path.display(), one_line(found))]
    Unsupported { path: PathBuf, what: &'static str, found: String, expected: String },
    /// A pickle asked for a Python global outside the allow-list (it could run code).
    #[error(
        "{}: refusing pickle global `{module}.{name}`: only the globals of a PyTorch \
         state_dict are allowed (collections.OrderedDict, torch._utils._rebuild_tensor_v2, \
         torch._utils._rebuild_parameter, torch.*Storage); the file may try to run code",
        path.display(),
        module = one_line(module),
        name = one_line(name)
    )]
    ForbiddenGlobal { path: PathBuf, module: String, name: String },
    /// A tensor's shape, strides or offset are inconsistent with its storage.
    #[error("{}: tensor `{}`: {}", path.display(), one_line(name), one_line(msg))]
    HostTensor { path: PathBuf, name: String, msg: String },
    /// A named entry (tensor, array) is not in the file.
    #[error("{}: no {what} named `{}` (found: {})", path.display(), one_line(name), one_line(available))]
    Missing { path: PathBuf, what: &'static str, name: String, available: String },
    /// The caller passed an array whose data does not match its declared shape/dtype.
    #[error("{}: {}", path.display(), one_line(msg))]
    Invalid { path: PathBuf, msg: String },
}

impl Error {
    /// Wraps an `std::io::Error` with the path it happened on.
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Error::Io { path: path.as_ref().to_path_buf(), source }
    }

    /// A format error for `path` (the message made one clean line: see [`one_line`]).
    pub fn format(path: impl AsRef<Path>, format: &'static str, msg: impl Into<String>) -> Self {
        Error::Format { path: path.as_ref().to_path_buf(), format, msg: one_line(&msg.into()) }
    }

    /// The path this error is about.
    pub fn path(&self) -> &Path {
        match self {
            Error::Io { path, .. }
            | Error::Format { path, .. }
            | Error::Unsupported { path, .. }
            | Error::ForbiddenGlobal { path, .. }
            | Error::HostTensor { path, .. }
            | Error::Missing { path, .. }
            | Error::Invalid { path, .. } => path,
        }
    }
}

/// Joins up to `max` names for an error message, with a count of the rest.
pub(crate) fn list_names<'a>(names: impl Iterator<Item = &'a str>, max: usize) -> String {
    let all: Vec<&str> = names.collect();
    if all.is_empty() {
        return "nothing".to_string();
    }
    let mut s = all.iter().take(max).map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ");
    if all.len() > max {
        s.push_str(&format!(" and {} more", all.len() - max));
    }
    s
}

/// Longest message part kept by [`one_line`], in characters.
pub const MAX_MESSAGE_CHARS: usize = 300;

/// Makes a message that may quote a hostile file (a parser echoing a 100 KB string, a header
/// with newlines, a box name of control bytes) one readable line: control characters
/// escaped, cut at [`MAX_MESSAGE_CHARS`] with an ellipsis.
pub fn one_line(msg: &str) -> String {
    let mut out = String::new();
    for (n, c) in msg.chars().enumerate() {
        if n == MAX_MESSAGE_CHARS {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn one_line_escapes_and_cuts() {
        assert_eq!(super::one_line("a\nb\u{1}"), "a\\nb\\u{1}");
        let long = super::one_line(&"x".repeat(10_000));
        assert_eq!(long.chars().count(), super::MAX_MESSAGE_CHARS + 1);
        assert!(long.ends_with('…'));
    }

    /// Text taken from a file is shown as one line in every variant that carries some.
    #[test]
    fn file_text_in_errors_stays_one_line() {
        use super::Error;
        let path = std::path::PathBuf::from("f");
        let bad = "PK\u{1}\n\u{3}".to_string();
        let errors = [
            Error::Unsupported {
                path: path.clone(),
                what: "byte order",
                found: bad.clone(),
                expected: "little".into(),
            },
            Error::ForbiddenGlobal { path: path.clone(), module: bad.clone(), name: bad.clone() },
            Error::HostTensor { path: path.clone(), name: bad.clone(), msg: bad.clone() },
            Error::Missing { path: path.clone(), what: "tensor", name: bad.clone(), available: bad.clone() },
            Error::Invalid { path, msg: bad },
        ];
        for e in errors {
            assert_eq!(e.to_string().lines().count(), 1, "{e}");
        }
    }
}
