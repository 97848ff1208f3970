//! Rung artifacts, built by `wanrt optimize` and cached by what they are made from: the source
//! model's bytes, the rung's optimize flags, the calibration settings and wanrt's version. A
//! second ladder on the same model reuses them; a changed byte or flag builds a new one.

use super::children::{run_json, Args};
use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// The cache folder: one artifact folder per key, written under a temporary name and renamed
/// whole, so an interrupted build is never taken for a finished one.
pub struct ArtifactCache {
    pub dir: PathBuf,
    /// SHA-256 of every file of the source model.
    pub source_sha256: String,
}

/// What an artifact is built from, hashed into its cache key.
pub fn cache_key(source_sha256: &str, optimize_flags: &[String], calibration: &[String]) -> String {
    let what = serde_json::json!({
        "source": source_sha256,
        "optimize": optimize_flags,
        "calibration": calibration,
        "wanrt": env!("CARGO_PKG_VERSION"),
    });
    let digest = Sha256::digest(what.to_string().as_bytes());
    digest.iter().take(12).map(|b| format!("{b:02x}")).collect()
}

/// The default cache: `$XDG_CACHE_HOME/wanrt/ladder`, else `~/.cache/wanrt/ladder`, else
/// `REPORT/artifacts`.
pub fn default_dir(report: &Path) -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").filter(|v| !v.is_empty()).map(|h| PathBuf::from(h).join(".cache")));
    match base {
        Some(b) => b.join("wanrt").join("ladder"),
        None => report.join("artifacts"),
    }
}

impl ArtifactCache {
    pub fn open(dir: PathBuf, source: &Path) -> Result<ArtifactCache> {
        std::fs::create_dir_all(&dir).with_context(|| format!("--artifact-cache {}: cannot create", dir.display()))?;
        let source_sha256 = wanrt_opt::artifact::tree_sha256(source).context("hashing the source model")?;
        Ok(ArtifactCache { dir, source_sha256 })
    }

    /// The artifact of `flags`: from the cache, or built now (`true` when built); `runtime` flags
    /// (threads) are passed to `optimize` but are not part of the key.
    pub fn get(
        &self,
        exe: &Path,
        source: &Path,
        flags: &[String],
        calibration: &[String],
        runtime: &[String],
    ) -> Result<(PathBuf, bool)> {
        let key = cache_key(&self.source_sha256, flags, calibration);
        let dir = self.dir.join(&key);
        if dir.join(wanrt_wan::artifact::MANIFEST_FILE).is_file() {
            return Ok((dir, false));
        }
        let staging = self.dir.join(format!(".{key}.partial-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&staging);
        let args = Args::default()
            .arg("optimize")
            .path("--model", source)
            .extend(flags)
            .extend(calibration)
            .extend(runtime)
            .arg("--no-report")
            .arg("--json")
            .path("-o", &staging);
        let built = run_json(exe, &args, &format!("optimize {}", flags.join(" ")), || {});
        if let Err(e) = built {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
        match std::fs::rename(&staging, &dir) {
            Ok(()) => Ok((dir, true)),
            // Another ladder finished the same artifact first: theirs is as good.
            Err(_) if dir.join(wanrt_wan::artifact::MANIFEST_FILE).is_file() => {
                let _ = std::fs::remove_dir_all(&staging);
                Ok((dir, false))
            }
            Err(e) => Err(e).with_context(|| format!("moving the artifact into {}", dir.display())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_changes_with_each_input() {
        let flags = |s: &str| s.split(' ').map(String::from).collect::<Vec<_>>();
        let k = cache_key("aa", &flags("--quant int8"), &flags("--calib-steps 2"));
        assert_eq!(k.len(), 24);
        assert_eq!(k, cache_key("aa", &flags("--quant int8"), &flags("--calib-steps 2")));
        assert_ne!(k, cache_key("ab", &flags("--quant int8"), &flags("--calib-steps 2")));
        assert_ne!(k, cache_key("aa", &flags("--quant fp8"), &flags("--calib-steps 2")));
        assert_ne!(k, cache_key("aa", &flags("--quant int8"), &flags("--calib-steps 3")));
    }

    #[test]
    fn the_source_hash_sees_every_file_and_name() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("vae")).unwrap();
        std::fs::write(d.path().join("model_index.json"), "{}").unwrap();
        std::fs::write(d.path().join("vae/config.json"), "{\"z_dim\": 16}").unwrap();
        let h = || wanrt_opt::artifact::tree_sha256(d.path()).unwrap();
        let first = h();
        assert_eq!(first, h());
        std::fs::write(d.path().join("vae/config.json"), "{\"z_dim\": 17}").unwrap();
        let changed = h();
        assert_ne!(first, changed);
        std::fs::rename(d.path().join("vae"), d.path().join("vae2")).unwrap();
        assert_ne!(changed, h(), "a renamed file is another model");
    }
}
