//! Input images of image-to-video jobs: decoded and checked when the request is made, kept
//! beside the job's video in `--outputs` until the job ends, read again by the worker that runs
//! it.
//!
//! The bytes live in files, not in the queue row: a job's row is read by every listing, claim and
//! status poll, and an upload of megabytes would ride along each time; the outputs folder is
//! already what every process of a shared queue has in common (`<id>.mp4`). Each file is written
//! (temp + rename) before the job is queued, so a job that a crash gives back to the queue still
//! finds it; the row keeps the file's SHA-256, which the worker checks before using it.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use wanrt_wan::image::RgbImage;

use crate::api_error::{ApiError, ApiResult};
use crate::job::JobParams;
use crate::{Error, Result};

/// Which frame an image gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The first frame: OpenAI's `input_reference` (also accepted as `image`).
    First,
    /// The last frame, for first-last-frame models.
    Last,
}

impl Role {
    pub const ALL: [Role; 2] = [Role::First, Role::Last];

    /// The API's name of the image, which also names its file.
    pub fn field(self) -> &'static str {
        match self {
            Role::First => "input_reference",
            Role::Last => "last_image",
        }
    }
}

/// An input image as its job records it (the file itself is [`path`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredImage {
    pub width: usize,
    pub height: usize,
    /// Of the file's bytes, as uploaded.
    pub sha256: String,
}

/// An uploaded image: its bytes as sent (what is stored) and its pixels.
#[derive(Debug, Clone)]
pub struct Upload {
    pub role: Role,
    pub bytes: Vec<u8>,
    pub image: RgbImage,
}

impl Upload {
    pub fn stored(&self) -> StoredImage {
        StoredImage { width: self.image.width, height: self.image.height, sha256: sha256_hex(&self.bytes) }
    }
}

/// A job's images, decoded.
#[derive(Debug, Clone, Default)]
pub struct Images {
    pub first: Option<RgbImage>,
    pub last: Option<RgbImage>,
}

/// Bounds on an uploaded image: checked before its pixels are decoded.
#[derive(Debug, Clone, Copy)]
pub struct ImageLimits {
    pub max_bytes: usize,
    pub max_side: usize,
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Refuses more than `limits.max_bytes` bytes for `field`.
pub fn check_bytes(field: &str, len: usize, limits: &ImageLimits) -> ApiResult<()> {
    if len > limits.max_bytes {
        return Err(ApiError::invalid(
            Some(field),
            format!("{field} is larger than the {} bytes an image may have (--max-image-bytes)", limits.max_bytes),
        ));
    }
    Ok(())
}

/// A JSON or form-text image: a `data:image/…;base64,` URL or plain base64.
pub fn from_text(field: &str, text: &str, limits: &ImageLimits) -> ApiResult<Vec<u8>> {
    let invalid = |msg: String| ApiError::invalid(Some(field), msg);
    let t = text.trim();
    if t.starts_with("http://") || t.starts_with("https://") {
        return Err(invalid(format!(
            "{field}: URLs are not fetched; upload the file (multipart/form-data) or send a data: URL or base64"
        )));
    }
    let b64 = match t.strip_prefix("data:") {
        Some(rest) => rest.split_once(";base64,").map(|(_, b)| b).ok_or_else(|| {
            invalid(format!("{field} must be a base64 data: URL (data:image/png;base64,…) or plain base64"))
        })?,
        None => t,
    };
    // Three bytes per four characters: refused on its length, before anything is decoded.
    check_bytes(field, b64.len() / 4 * 3, limits)?;
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| invalid(format!("{field} is not valid base64 ({e}); send a PNG/JPEG file, data: URL or base64")))
}

/// Decodes an uploaded PNG/JPEG, refusing one over the limits before its pixels are decoded.
pub fn decode(field: &str, bytes: &[u8], limits: &ImageLimits) -> ApiResult<RgbImage> {
    check_bytes(field, bytes.len(), limits)?;
    let video = wanrt_media::decode_image(bytes, field, limits.max_side)
        .map_err(|e| ApiError::invalid(Some(field), e.to_string()))?;
    RgbImage::new(video.height(), video.width(), video.into_data())
        .map_err(|e| ApiError::invalid(Some(field), e.to_string()))
}

/// Where a job's image is kept: `<outputs>/<id>.<field>` (the id is validated, never request text).
pub fn path(outputs: &Path, id: &str, role: Role) -> PathBuf {
    outputs.join(format!("{id}.{}", role.field()))
}

/// Writes a job's images (each atomically); on error none is left. A failure is the server's
/// (its disk), not the request's.
pub fn save(outputs: &Path, id: &str, uploads: &[Upload]) -> Result<()> {
    for u in uploads {
        let p = path(outputs, id, u.role);
        let written = wanrt_io::write_atomic(&p, |w| {
            std::io::Write::write_all(w, &u.bytes).map_err(|e| wanrt_io::Error::io(&p, e))
        });
        if let Err(e) = written {
            remove(outputs, id);
            return Err(e.into());
        }
    }
    Ok(())
}

/// Reads back and decodes the images a job was submitted with, checking each against its record.
pub fn load(outputs: &Path, id: &str, params: &JobParams) -> Result<Images> {
    let read = |role: Role, stored: &Option<StoredImage>| -> Result<Option<RgbImage>> {
        let Some(stored) = stored else { return Ok(None) };
        let p = path(outputs, id, role);
        let bytes = std::fs::read(&p).map_err(|e| Error::io(&p, e))?;
        if sha256_hex(&bytes) != stored.sha256 {
            return Err(Error::Input(format!("{}: not the image the job was submitted with", p.display())));
        }
        // Checked at submission; decoded here without a side limit of its own.
        let video = wanrt_media::decode_image(&bytes, &p, usize::MAX)?;
        Ok(Some(RgbImage::new(video.height(), video.width(), video.into_data())?))
    };
    Ok(Images { first: read(Role::First, &params.image)?, last: read(Role::Last, &params.last_image)? })
}

/// Removes a job's images (those it has; missing ones are fine).
pub fn remove(outputs: &Path, id: &str) {
    for role in Role::ALL {
        let p = path(outputs, id, role);
        if let Err(e) = std::fs::remove_file(&p) {
            if e.kind() != std::io::ErrorKind::NotFound {
                eprintln!("error: deleting {}: {e}", p.display());
            }
        }
    }
}

/// The job id of an input image's file name (`<id>.input_reference`), if it is one.
pub fn owner_of(file_name: &str) -> Option<&str> {
    let (id, field) = file_name.split_once('.')?;
    (crate::job::is_valid_id(id) && Role::ALL.iter().any(|r| r.field() == field)).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: ImageLimits = ImageLimits { max_bytes: 64, max_side: 16 };

    #[test]
    fn text_forms() {
        assert_eq!(from_text("f", "data:image/png;base64,AAEC", &LIMITS).unwrap(), vec![0, 1, 2]);
        assert_eq!(from_text("f", "AAEC", &LIMITS).unwrap(), vec![0, 1, 2]);
        for bad in ["data:image/png,AAEC", "not base64!", "https://example.com/a.png"] {
            let e = from_text("f", bad, &LIMITS).unwrap_err();
            assert_eq!(e.param.as_deref(), Some("f"), "{bad}");
        }
        let e = from_text("f", &"A".repeat(200), &LIMITS).unwrap_err();
        assert!(e.message.contains("64 bytes"), "{}", e.message);
    }

    #[test]
    fn file_names() {
        let id = crate::job::new_id();
        let p = path(Path::new("out"), &id, Role::Last);
        assert_eq!(owner_of(p.file_name().unwrap().to_str().unwrap()), Some(id.as_str()));
        assert_eq!(owner_of(&format!("{id}.mp4")), None);
        assert_eq!(owner_of("video_x.input_reference"), None);
    }
}
