//! Still images: PNG frame folders out, PNG/JPEG in (`image` 0.25, png + jpeg only).
//!
//! A frame folder holds `frame_0000.png`, `frame_0001.png`, … (at least four digits);
//! it is written into a temporary folder beside the target and renamed into place.

use std::path::Path;

use crate::error::{Error, Result};
use crate::video::Video;

/// Extensions read as images (lower case).
pub const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg"];

/// The name of frame `i` in a frame folder.
pub fn frame_name(i: usize) -> String {
    format!("frame_{i:04}.png")
}

/// Writes each frame of `video` as `path/frame_NNNN.png`; `path` must not exist or be
/// an empty folder. Atomic: on error no folder is left.
pub fn write_png_dir(path: impl AsRef<Path>, video: &Video) -> Result<()> {
    let path = path.as_ref();
    let (w, h) = (video.width(), video.height());
    if video.frames() == 0 || w == 0 || h == 0 {
        return Err(Error::invalid(path, "cannot write an empty video"));
    }
    let (Ok(w32), Ok(h32)) = (u32::try_from(w), u32::try_from(h)) else {
        return Err(Error::invalid(path, format!("{w}×{h} is too large for PNG")));
    };
    wanrt_io::create_dir_atomic(path, |tmp| {
        for i in 0..video.frames() {
            let p = tmp.join(frame_name(i));
            image::save_buffer_with_format(
                &p,
                video.frame(i),
                w32,
                h32,
                image::ExtendedColorType::Rgb8,
                image::ImageFormat::Png,
            )
            .map_err(|e| wanrt_io::Error::Invalid {
                path: path.join(frame_name(i)),
                msg: format!("PNG encoder: {e}"),
            })?;
        }
        Ok(())
    })?;
    Ok(())
}

/// Writes one RGB image (`h·w·3` bytes) as PNG at `path`, atomically.
pub fn write_png(path: impl AsRef<Path>, rgb: &[u8], width: usize, height: usize) -> Result<()> {
    let path = path.as_ref();
    let v = Video::new(1, height, width, rgb.to_vec())
        .map_err(|_| Error::invalid(path, format!("{} bytes are not a {width}×{height} RGB image", rgb.len())))?;
    let (w32, h32) = (v.width() as u32, v.height() as u32);
    wanrt_io::write_atomic(path, |out| {
        image::codecs::png::PngEncoder::new(out)
            .write_image_rgb(v.data(), w32, h32)
            .map_err(|e| wanrt_io::Error::Invalid { path: path.to_path_buf(), msg: format!("PNG encoder: {e}") })
    })?;
    Ok(())
}

trait WriteRgb {
    fn write_image_rgb(self, buf: &[u8], w: u32, h: u32) -> image::ImageResult<()>;
}

impl<W: std::io::Write> WriteRgb for image::codecs::png::PngEncoder<W> {
    fn write_image_rgb(self, buf: &[u8], w: u32, h: u32) -> image::ImageResult<()> {
        use image::ImageEncoder;
        self.write_image(buf, w, h, image::ExtendedColorType::Rgb8)
    }
}

/// Reads a PNG or JPEG image as a one-frame video (grey and alpha are converted to RGB;
/// alpha is dropped). The decoder may allocate at most the decode budget of the file's length
/// (`wanrt_io::limits`): a small PNG of zeros can declare 16384×16384 pixels.
pub fn read_image(path: impl AsRef<Path>) -> Result<Video> {
    let path = path.as_ref();
    let file_len = std::fs::metadata(path).map_err(|e| Error::io(path, e))?.len();
    let reader = image::ImageReader::open(path)
        .map_err(|e| Error::io(path, e))?
        .with_guessed_format()
        .map_err(|e| Error::io(path, e))?;
    decode(reader, path, file_len, None)
}

/// [`read_image`] of an image held in memory (an upload); `name` is what errors call it.
/// An image whose header declares a side longer than `max_side` pixels is refused before its
/// pixels are decoded.
pub fn decode_image(bytes: &[u8], name: impl AsRef<Path>, max_side: usize) -> Result<Video> {
    let name = name.as_ref();
    let reader =
        || image::ImageReader::new(std::io::Cursor::new(bytes)).with_guessed_format().map_err(|e| Error::io(name, e));
    // The header alone first, so that the refusal can say how large the image is.
    let (w, h) = reader()?.into_dimensions().map_err(|e| Error::format(name, "PNG/JPEG image", e))?;
    if w as usize > max_side || h as usize > max_side {
        return Err(Error::invalid(name, format!("image is {w}×{h} pixels, more than {max_side} on a side")));
    }
    decode(reader()?, name, bytes.len() as u64, Some(max_side))
}

fn decode<R: std::io::BufRead + std::io::Seek>(
    mut reader: image::ImageReader<R>,
    path: &Path,
    input_len: u64,
    max_side: Option<usize>,
) -> Result<Video> {
    let budget = wanrt_io::decode_budget(input_len);
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(budget);
    if let Some(side) = max_side {
        let side = u32::try_from(side).unwrap_or(u32::MAX);
        (limits.max_image_width, limits.max_image_height) = (Some(side), Some(side));
    }
    reader.limits(limits);
    let img = reader
        .decode()
        .map_err(|e| match e {
            image::ImageError::Limits(l) if matches!(l.kind(), image::error::LimitErrorKind::DimensionError) => {
                Error::invalid(path, format!("image is more than {} pixels on a side", max_side.unwrap_or(0)))
            }
            image::ImageError::Limits(l) => Error::invalid(
                path,
                format!(
                    "image needs more than the decode budget of {} for this file ({l}; {})",
                    wanrt_io::format_size(budget),
                    wanrt_io::limits::budget_hint()
                ),
            ),
            e => Error::format(path, "PNG/JPEG image", e),
        })?
        .into_rgb8();
    let (w, h) = (img.width() as usize, img.height() as usize);
    if w == 0 || h == 0 {
        return Err(Error::format(path, "PNG/JPEG image", format!("image is {w}×{h}")));
    }
    Video::new(1, h, w, img.into_raw())
}
