//! Videos as .npy arrays (through `wanrt-io`).
//!
//! Reading accepts `(F, H, W, 3)` (also `(H, W, 3)` as one frame and `(1, F, H, W, 3)`),
//! float in [0, 1] (f16/f32/f64, converted by DESIGN.md's rule) or uint8. Writing produces
//! float32 `(F, H, W, 3)` in [0, 1], diffusers' `output_type="np"` layout.

use std::path::Path;

use wanrt_io::{NpyDType, NpyElement};

use crate::error::{Error, Result};
use crate::video::Video;

/// Reads a video stored as .npy.
pub fn read_npy_video(path: impl AsRef<Path>) -> Result<Video> {
    let path = path.as_ref();
    let a = wanrt_io::read_npy(path)?;
    let s = a.shape();
    let (f, h, w) = match *s {
        [f, h, w, 3] => (f, h, w),
        [h, w, 3] => (1, h, w),
        [1, f, h, w, 3] => (f, h, w),
        _ => return Err(Error::invalid(path, format!("expected an array of shape (F, H, W, 3), found {s:?}"))),
    };
    if f == 0 || h == 0 || w == 0 {
        return Err(Error::invalid(path, format!("array of shape {s:?} holds no pixels (a video needs F, H, W ≥ 1)")));
    }
    let bytes = a.as_bytes();
    match a.dtype() {
        NpyDType::U8 => Video::new(f, h, w, bytes.to_vec()),
        NpyDType::F32 => {
            let v: Vec<u8> = bytes.chunks_exact(4).map(|c| crate::video::f32_to_u8(f32::get(c))).collect();
            Video::new(f, h, w, v)
        }
        NpyDType::F64 => {
            let v: Vec<u8> = bytes.chunks_exact(8).map(|c| crate::video::f64_to_u8(f64::get(c))).collect();
            Video::new(f, h, w, v)
        }
        NpyDType::F16 => {
            let v: Vec<u8> =
                bytes.chunks_exact(2).map(|c| crate::video::f32_to_u8(half::f16::get(c).to_f32())).collect();
            Video::new(f, h, w, v)
        }
        other => Err(Error::invalid(path, format!("expected float in [0, 1] or uint8 frames, found dtype {other}"))),
    }
}

/// Writes `video` as float32 `(F, H, W, 3)` in [0, 1] (`x / 255`), atomically.
pub fn write_npy_video(path: impl AsRef<Path>, video: &Video) -> Result<()> {
    let mut bytes = Vec::with_capacity(video.data().len() * 4);
    for &b in video.data() {
        bytes.extend_from_slice(&(b as f32 / 255.0).to_le_bytes());
    }
    wanrt_io::npy::write_npy_raw(path, NpyDType::F32, &video.shape(), &bytes)?;
    Ok(())
}

/// Writes float frames `(F, H, W, 3)` as float32 .npy unchanged (e.g. a pipeline's
/// decoded output before quantization), atomically.
pub fn write_npy_f32(path: impl AsRef<Path>, shape: [usize; 4], data: &[f32]) -> Result<()> {
    let path = path.as_ref();
    if shape[3] != 3 {
        return Err(Error::invalid(path, format!("expected (F, H, W, 3), got {shape:?}")));
    }
    let mut bytes = Vec::with_capacity(data.len() * 4);
    for &x in data {
        bytes.extend_from_slice(&x.to_le_bytes());
    }
    wanrt_io::npy::write_npy_raw(path, NpyDType::F32, &shape, &bytes)?;
    Ok(())
}
