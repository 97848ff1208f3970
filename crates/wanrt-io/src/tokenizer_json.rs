//! Reading a `tokenizer.json` (the `tokenizers` format) for untrusted use.
//!
//! The `tokenizers` crate builds a Unigram vocabulary into a trie with one node per
//! character and drops it recursively: a single 50 000-character vocabulary piece overflows
//! the main thread's stack and aborts the process (found by the mutation harness). Real
//! vocabularies have pieces of a few dozen characters, so pieces (and merges, added tokens)
//! longer than [`MAX_PIECE_CHARS`] are refused before the file reaches the crate.

use std::path::Path;

use crate::{Error, Result};

/// Longest string accepted in a tokenizer's `model` or `added_tokens`.
pub const MAX_PIECE_CHARS: usize = 1024;
/// Largest tokenizer.json read (UMT5-XXL's is 16 MiB).
pub const MAX_FILE_BYTES: u64 = 256 << 20;

/// The bytes of `path` after checking its size and the length of every vocabulary string.
pub fn read_checked(path: &Path) -> Result<Vec<u8>> {
    let len = std::fs::metadata(path).map_err(|e| Error::io(path, e))?.len();
    if len > MAX_FILE_BYTES {
        return Err(Error::format(path, "tokenizer.json", format!("{len} bytes, more than {MAX_FILE_BYTES}")));
    }
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let v: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| Error::format(path, "tokenizer.json", e.to_string()))?;
    for key in ["model", "added_tokens"] {
        if let Some(at) = v.get(key).and_then(|m| long_string(m, key.to_string())) {
            return Err(Error::format(
                path,
                "tokenizer.json",
                format!("{at} is longer than {MAX_PIECE_CHARS} characters (not a real vocabulary entry)"),
            ));
        }
    }
    Ok(bytes)
}

/// JSON path of the first string (or object key) longer than [`MAX_PIECE_CHARS`].
fn long_string(v: &serde_json::Value, at: String) -> Option<String> {
    use serde_json::Value;
    let long = |s: &str| s.len() > MAX_PIECE_CHARS && s.chars().count() > MAX_PIECE_CHARS;
    match v {
        Value::String(s) if long(s) => Some(at),
        Value::Array(a) => a.iter().enumerate().find_map(|(i, x)| long_string(x, format!("{at}[{i}]"))),
        Value::Object(o) => o.iter().find_map(|(k, x)| {
            if long(k) {
                Some(format!("a key of {at}"))
            } else {
                long_string(x, format!("{at}.{k}"))
            }
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn long_pieces_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tokenizer.json");
        let piece = "x".repeat(50_000);
        std::fs::write(&p, format!(r#"{{"model": {{"type": "Unigram", "vocab": [["a", 0.0], ["{piece}", -1.0]]}}}}"#))
            .unwrap();
        let e = super::read_checked(&p).unwrap_err().to_string();
        assert!(e.contains("model.vocab[1][0] is longer than 1024"), "{e}");
        std::fs::write(&p, r#"{"model": {"type": "Unigram", "vocab": [["a", 0.0]]}}"#).unwrap();
        assert!(super::read_checked(&p).is_ok());
    }
}
