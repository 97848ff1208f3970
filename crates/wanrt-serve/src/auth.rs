//! API keys (`--api-keys FILE`): one key per line, optionally followed by `read` for a key
//! that may only read (list, get, content, events, metrics); `#` starts a comment. A
//! request carries its key as `Authorization: Bearer KEY`. No key or an unknown key is
//! 401; a read-only key asking to write, or a key touching another key's video, is 403.
//! Jobs remember their key by a digest (the key itself is never stored).

use std::path::Path;

use axum::http::{header, HeaderMap};
use sha2::{Digest, Sha256};

use crate::api_error::ApiError;
use crate::{Error, Result};

struct Key {
    secret: String,
    owner: String,
    read_only: bool,
}

pub struct ApiKeys {
    keys: Vec<Key>,
}

/// Who is calling.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The key's digest (None when the server has no keys: everyone is the same caller).
    pub owner: Option<String>,
    pub read_only: bool,
}

impl Caller {
    pub fn anonymous() -> Caller {
        Caller { owner: None, read_only: false }
    }

    /// Whether this caller may see a job owned by `owner`.
    pub fn may_see(&self, owner: Option<&str>) -> bool {
        self.owner.is_none() || self.owner.as_deref() == owner
    }
}

/// Constant-time string equality.
fn ct_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn digest(key: &str) -> String {
    let d = Sha256::digest(key.as_bytes());
    d.iter().take(12).map(|b| format!("{b:02x}")).collect()
}

impl ApiKeys {
    pub fn load(path: &Path) -> Result<ApiKeys> {
        let text =
            std::fs::read_to_string(path).map_err(|e| Error::Input(format!("--api-keys {}: {e}", path.display())))?;
        let mut keys = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let mut parts = line.split_whitespace();
            let secret = parts.next().unwrap_or_default().to_string();
            let read_only = match parts.next() {
                None => false,
                Some("read") => true,
                Some(other) => {
                    return Err(Error::Input(format!(
                        "--api-keys {}:{}: expected `KEY` or `KEY read`, found '{other}' after the key",
                        path.display(),
                        i + 1
                    )))
                }
            };
            if secret.len() < 16 || !secret.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(Error::Input(format!(
                    "--api-keys {}:{}: a key must be at least 16 printable characters",
                    path.display(),
                    i + 1
                )));
            }
            keys.push(Key { owner: digest(&secret), secret, read_only });
        }
        if keys.is_empty() {
            return Err(Error::Input(format!("--api-keys {}: no keys in the file", path.display())));
        }
        Ok(ApiKeys { keys })
    }

    /// The caller of a request, or 401.
    pub fn caller(&self, headers: &HeaderMap) -> std::result::Result<Caller, ApiError> {
        let auth = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or("");
        // The scheme name is case-insensitive (RFC 9110 §11.1): `bearer KEY` is a Bearer key.
        let given = auth.trim_start().split_once(' ').filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"));
        let Some(given) = given.map(|(_, k)| k.trim()).filter(|k| !k.is_empty()) else {
            return Err(ApiError::unauthorized("missing API key: send `Authorization: Bearer KEY`"));
        };
        match self.keys.iter().find(|k| ct_eq(&k.secret, given)) {
            Some(k) => Ok(Caller { owner: Some(k.owner.clone()), read_only: k.read_only }),
            None => Err(ApiError::unauthorized("invalid API key")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_keys_and_refuses_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("keys");
        std::fs::write(&p, "# team keys\nsk-aaaaaaaaaaaaaaaa\nsk-bbbbbbbbbbbbbbbb read # viewer\n\n").unwrap();
        let keys = ApiKeys::load(&p).unwrap();
        let mut h = HeaderMap::new();
        assert_eq!(keys.caller(&h).unwrap_err().status, 401);
        h.insert(header::AUTHORIZATION, "Bearer sk-bbbbbbbbbbbbbbbb".parse().unwrap());
        let c = keys.caller(&h).unwrap();
        assert!(c.read_only);
        for scheme in ["bearer", "BEARER", "BeArEr"] {
            h.insert(header::AUTHORIZATION, format!("{scheme} sk-bbbbbbbbbbbbbbbb").parse().unwrap());
            assert!(keys.caller(&h).unwrap().read_only, "{scheme}");
        }
        for bad in ["Basic sk-bbbbbbbbbbbbbbbb", "Bearersk-bbbbbbbbbbbbbbbb", "Bearer "] {
            h.insert(header::AUTHORIZATION, bad.parse().unwrap());
            assert_eq!(keys.caller(&h).unwrap_err().status, 401, "{bad}");
        }
        h.insert(header::AUTHORIZATION, "Bearer sk-cccccccccccccccc".parse().unwrap());
        assert_eq!(keys.caller(&h).unwrap_err().status, 401);
        std::fs::write(&p, "short\n").unwrap();
        assert!(ApiKeys::load(&p).err().unwrap().to_string().contains(":1: a key must be"));
        std::fs::write(&p, "sk-aaaaaaaaaaaaaaaa write\n").unwrap();
        assert!(ApiKeys::load(&p).is_err());
    }
}
