//! GIF out and in (`gif` 0.14).
//!
//! Writing uses one global 256-colour palette learned by NeuQuant (`color_quant`) from
//! pixels sampled across all frames, so colours do not flicker between frames; the
//! delay is `round(100 / fps)` centiseconds and the GIF loops forever.
//! Reading composites frames onto the logical screen as browsers do (frame offsets,
//! transparency, disposal methods); transparent pixels that were never painted are black.

use std::fs::File;
use std::io::BufReader;
use std::num::NonZeroU64;
use std::path::Path;

use gif::{ColorOutput, DecodeOptions, DisposalMethod, Encoder, Frame, MemoryLimit, Repeat};
use wanrt_io::limits::{budget_hint, decode_budget, format_size};

use crate::error::{Error, Result};
use crate::video::Video;

const FORMAT: &str = "GIF";
/// Pixels fed to NeuQuant to learn the palette.
const PALETTE_SAMPLES: usize = 1 << 20;

/// Checks what [`write_gif`] needs of a video before it exists: at least one frame, sizes
/// from 1 to 65535, a positive fps (delays are whole centiseconds, clamped to 1–65535).
pub fn check_gif_output(frames: usize, height: usize, width: usize, fps: f64) -> std::result::Result<(), String> {
    if frames == 0 || width == 0 || height == 0 {
        return Err("cannot write an empty GIF".into());
    }
    if width > u16::MAX as usize || height > u16::MAX as usize {
        return Err(format!("{width}×{height} is too large for GIF"));
    }
    if !(fps.is_finite() && fps > 0.0) {
        return Err(format!("fps must be a positive number, got {fps}"));
    }
    Ok(())
}

/// Writes `video` as a looping GIF at `path`, atomically.
pub fn write_gif(path: impl AsRef<Path>, video: &Video, fps: f64) -> Result<()> {
    let path = path.as_ref();
    let (w, h) = (video.width(), video.height());
    check_gif_output(video.frames(), h, w, fps).map_err(|m| Error::invalid(path, m))?;
    let delay = (100.0 / fps).round().clamp(1.0, u16::MAX as f64) as u16;

    // Learn one palette from an even sample of all pixels.
    let pixels = video.data().len() / 3;
    let step = pixels.div_ceil(PALETTE_SAMPLES).max(1);
    let mut sample = Vec::with_capacity(4 * pixels.div_ceil(step));
    for px in video.data().chunks_exact(3).step_by(step) {
        sample.extend_from_slice(&[px[0], px[1], px[2], 255]);
    }
    let nq = color_quant::NeuQuant::new(10, 256, &sample);
    let palette = nq.color_map_rgb();

    let gif_err =
        |e: gif::EncodingError| wanrt_io::Error::Invalid { path: path.to_path_buf(), msg: format!("GIF encoder: {e}") };
    wanrt_io::write_atomic(path, |out| {
        let mut enc = Encoder::new(out, w as u16, h as u16, &palette).map_err(gif_err)?;
        enc.set_repeat(Repeat::Infinite).map_err(gif_err)?;
        let mut indices = vec![0u8; w * h];
        for f in 0..video.frames() {
            for (i, px) in video.frame(f).chunks_exact(3).enumerate() {
                indices[i] = nq.index_of(&[px[0], px[1], px[2], 255]) as u8;
            }
            let frame = Frame {
                width: w as u16,
                height: h as u16,
                delay,
                buffer: std::borrow::Cow::Borrowed(&indices),
                ..Frame::default()
            };
            enc.write_frame(&frame).map_err(gif_err)?;
        }
        Ok(())
    })?;
    Ok(())
}

/// Reads all frames of a GIF as RGB.
///
/// The logical screen and every frame's decoded pixels are checked against the decode budget of
/// the file's length (`wanrt_io::limits`) before they are allocated: a 100-byte GIF may declare
/// a 65535×65535 screen, or a million 1×1 frames that each repeat the whole screen.
pub fn read_gif(path: impl AsRef<Path>) -> Result<Video> {
    let path = path.as_ref();
    let bad = |e: String| Error::format(path, FORMAT, e);
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let file_len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let budget = decode_budget(file_len);
    let over = |what: String| {
        Error::invalid(
            path,
            format!("{what}, over the decode budget of {} for this file ({})", format_size(budget), budget_hint()),
        )
    };
    let mut opts = DecodeOptions::new();
    opts.set_color_output(ColorOutput::RGBA);
    opts.set_memory_limit(MemoryLimit::Bytes(NonZeroU64::new(budget).unwrap_or(NonZeroU64::MIN)));
    let mut dec = opts.read_info(BufReader::new(file)).map_err(|e| bad(e.to_string()))?;
    let (sw, sh) = (dec.width() as usize, dec.height() as usize);
    if sw == 0 || sh == 0 {
        return Err(bad(format!("logical screen is {sw}×{sh}")));
    }
    // u16 × u16 × 4 fits in u64 (and in usize on 64-bit targets).
    let canvas_bytes = (sw as u64) * (sh as u64) * 4;
    let frame_bytes = (sw as u64) * (sh as u64) * 3;
    // The canvas, its saved copy (disposal "previous") and the first frame's pixels.
    if 2 * canvas_bytes + frame_bytes > budget {
        return Err(over(format!("logical screen {sw}×{sh} needs {} to decode", format_size(2 * canvas_bytes))));
    }
    let mut canvas = wanrt_io::limits::try_zeroed(canvas_bytes as usize)
        .map_err(|_| Error::invalid(path, format!("out of memory for a {sw}×{sh} canvas")))?;
    let mut data: Vec<u8> = Vec::new();
    let mut count = 0usize;
    while let Some(fr) = dec.read_next_frame().map_err(|e| bad(e.to_string()))? {
        let (fl, ft, fw, fh) = (fr.left as usize, fr.top as usize, fr.width as usize, fr.height as usize);
        if fr.buffer.len() != fw * fh * 4 {
            return Err(bad(format!("frame {count} has a short pixel buffer")));
        }
        let decoded = (data.len() as u64).saturating_add(frame_bytes);
        if decoded.saturating_add(2 * canvas_bytes) > budget {
            return Err(over(format!("{} frames of {sw}×{sh} decode to {}", count + 1, format_size(decoded))));
        }
        wanrt_io::limits::reserve_within(&mut data, frame_bytes as usize, budget)
            .map_err(|_| Error::invalid(path, format!("out of memory after {count} frames")))?;
        let saved = (fr.dispose == DisposalMethod::Previous).then(|| canvas.clone());
        // Paint the frame, clipped to the screen, skipping transparent pixels.
        for y in 0..fh {
            let cy = ft + y;
            if cy >= sh {
                break;
            }
            for x in 0..fw {
                let cx = fl + x;
                if cx >= sw {
                    break;
                }
                let s = &fr.buffer[(y * fw + x) * 4..(y * fw + x) * 4 + 4];
                if s[3] != 0 {
                    canvas[(cy * sw + cx) * 4..(cy * sw + cx) * 4 + 4].copy_from_slice(s);
                }
            }
        }
        data.extend(canvas.chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]]));
        count += 1;
        match fr.dispose {
            DisposalMethod::Background => {
                for y in ft..(ft + fh).min(sh) {
                    for x in fl..(fl + fw).min(sw) {
                        canvas[(y * sw + x) * 4..(y * sw + x) * 4 + 4].fill(0);
                    }
                }
            }
            DisposalMethod::Previous => {
                if let Some(s) = saved {
                    canvas = s;
                }
            }
            _ => {}
        }
    }
    if count == 0 {
        return Err(bad("no frames".into()));
    }
    Video::new(count, sh, sw, data)
}
