//! MP4 (H.264) out and in.
//!
//! Writing: each RGB frame → I420 (BT.601 limited range, [`crate::color`]) → Cisco
//! OpenH264 (bundled source, via `openh264` 0.9; Constrained Baseline, rate control off
//! = constant QP, every frame kept; ≈44 dB PSNR on a smooth 832×480 pattern at
//! ≈0.6 Mbit/s) → `muxide` 0.5, which lays the file out
//! fast-start (`moov` before `mdat`). The SPS carries VUI colour info (SMPTE 170M,
//! limited range), so players convert back with the same matrix. Width and height must
//! be even (4:2:0); anything else is a clear error, not a silent pad.
//!
//! Reading: `mp4` 0.14 demuxes the first H.264 (`avc1`) track, its length-prefixed
//! samples are turned into Annex B with the `avcC` parameter sets in front, OpenH264
//! decodes them and [`crate::color::i420_to_rgb`] converts back. Third-party parsers
//! run under `catch_unwind`, so a malformed file is an error, never a crash; before they run,
//! every box is checked to lie inside the file and every SPS's frame size against the decode
//! budget ([`crate::mp4_check`], `wanrt_io::limits`), so nothing is allocated from a size the
//! file only declares.

use std::fs::File;
use std::io::Cursor;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use openh264::decoder::{Decoder, DecoderConfig, Flush};
use openh264::encoder::{Encoder, EncoderConfig, FrameRate, FrameType, RateControlMode, VuiConfig};
use openh264::formats::{YUVBuffer, YUVSource};
use openh264::OpenH264API;

use crate::color::{i420_to_rgb, rgb_to_i420};
use crate::error::{Error, Result};
use crate::video::Video;

const FORMAT: &str = "MP4";
/// Largest frame accepted from a file (pixels).
const MAX_FRAME_PIXELS: u64 = 8192 * 8192;

/// MP4 writer settings.
#[derive(Clone, Debug)]
pub struct Mp4Options {
    /// Frames per second (DESIGN.md's default: 16).
    pub fps: f64,
}

impl Default for Mp4Options {
    fn default() -> Self {
        Mp4Options { fps: 16.0 }
    }
}

fn panic_msg(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "internal decoder panic".into())
}

/// The muxer's timescale: timestamps are in 1/90000 s and each frame lasts a whole number of
/// ticks; per-frame and total durations are 32-bit.
const MP4_TIMESCALE: f64 = 90_000.0;

/// Checks what [`write_mp4`] needs of a video, before the video exists: at least one frame,
/// even sizes from 16 to 65535 (OpenH264's 4:2:0), and an fps whose frame duration and total
/// duration fit the container's 90 kHz 32-bit timestamps (fps ≤ 90000, length ≤ 13.2 hours).
pub fn check_mp4_output(frames: usize, height: usize, width: usize, fps: f64) -> std::result::Result<(), String> {
    let (w, h) = (width, height);
    if frames == 0 {
        return Err("cannot write an MP4 with no frames".into());
    }
    if w % 2 != 0 || h % 2 != 0 || w == 0 || h == 0 {
        return Err(format!("H.264 4:2:0 needs an even, non-zero width and height, got {w}×{h}"));
    }
    if w < 16 || h < 16 {
        return Err(format!("OpenH264 needs frames of at least 16×16, got {w}×{h}"));
    }
    if w > u16::MAX as usize || h > u16::MAX as usize {
        return Err(format!("{w}×{h} is too large for MP4"));
    }
    if !(fps.is_finite() && fps > 0.0) {
        return Err(format!("fps must be a positive number, got {fps}"));
    }
    if fps > MP4_TIMESCALE {
        return Err(format!(
            "fps {fps} is above MP4's {MP4_TIMESCALE} ticks per second (frames need distinct timestamps)"
        ));
    }
    let total_ticks = frames as f64 * (MP4_TIMESCALE / fps).round().max(1.0);
    if total_ticks > u32::MAX as f64 {
        return Err(format!(
            "{frames} frames at {fps} fps last {:.0} s; MP4 timestamps hold at most {:.0} s (raise --fps)",
            frames as f64 / fps,
            u32::MAX as f64 / MP4_TIMESCALE
        ));
    }
    Ok(())
}

/// Writes `video` as an H.264 MP4 at `path`, atomically.
pub fn write_mp4(path: impl AsRef<Path>, video: &Video, opts: &Mp4Options) -> Result<()> {
    let path = path.as_ref();
    let (w, h) = (video.width(), video.height());
    check_mp4_output(video.frames(), h, w, opts.fps).map_err(|m| Error::invalid(path, m))?;
    let enc_err = |e: openh264::Error| Error::invalid(path, format!("H.264 encoder: {e}"));
    let cfg = EncoderConfig::new()
        .max_frame_rate(FrameRate::from_hz(opts.fps as f32))
        .rate_control_mode(RateControlMode::Off)
        .skip_frames(false)
        .vui(VuiConfig::bt601());
    let mut encoder = Encoder::with_api_config(OpenH264API::from_source(), cfg).map_err(enc_err)?;

    wanrt_io::write_atomic(path, |out| {
        let mux_err = |e: muxide::api::MuxerError| wanrt_io::Error::Invalid {
            path: path.to_path_buf(),
            msg: format!("MP4 muxer: {e}"),
        };
        let mut muxer = muxide::api::MuxerBuilder::new(out)
            .video(muxide::api::VideoCodec::H264, w as u32, h as u32, opts.fps)
            .with_fast_start(true)
            .build()
            .map_err(mux_err)?;
        for i in 0..video.frames() {
            let yuv = YUVBuffer::from_vec(rgb_to_i420(video.frame(i), w, h), w, h);
            let bs = encoder.encode(&yuv).map_err(|e| wanrt_io::Error::Invalid {
                path: path.to_path_buf(),
                msg: format!("H.264 encoder, frame {i}: {e}"),
            })?;
            let key = matches!(bs.frame_type(), FrameType::IDR | FrameType::I);
            let data = bs.to_vec();
            muxer.write_video(i as f64 / opts.fps, &data, key).map_err(mux_err)?;
        }
        muxer.finish().map_err(mux_err)?;
        Ok(())
    })?;
    Ok(())
}

/// Reads the first H.264 track of an MP4 file into RGB frames.
pub fn read_mp4(path: impl AsRef<Path>) -> Result<Video> {
    let path = path.as_ref();
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let size = file.metadata().map_err(|e| Error::io(path, e))?.len();
    if size == 0 {
        return Err(Error::format(path, FORMAT, "the file is empty"));
    }
    // SAFETY: a read-only map; as with every mmap-based reader, the file must not be truncated
    // by another process while it is read.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
    crate::mp4_check::check_boxes(&map).map_err(|m| Error::format(path, FORMAT, m))?;
    match catch_unwind(AssertUnwindSafe(|| read_mp4_inner(path, &map, size))) {
        Ok(r) => r,
        Err(p) => Err(Error::format(path, FORMAT, format!("demuxer/decoder failed: {}", panic_msg(p)))),
    }
}

/// Appends `nal` to `out` with an Annex B start code.
fn push_nal(out: &mut Vec<u8>, nal: &[u8]) {
    out.extend_from_slice(&[0, 0, 0, 1]);
    out.extend_from_slice(nal);
}

struct Frames {
    width: usize,
    height: usize,
    data: Vec<u8>,
    count: usize,
    /// Decode budget of the file (bytes).
    budget: u64,
}

impl Frames {
    fn over_budget(&self, path: &Path, what: String) -> Error {
        Error::invalid(
            path,
            format!(
                "{what}, over the decode budget of {} for this file ({})",
                wanrt_io::format_size(self.budget),
                wanrt_io::limits::budget_hint()
            ),
        )
    }

    /// Refuses a parameter set whose frames (decoder buffers for the reference frames, one
    /// output frame and the RGB frames so far) would not fit in the budget.
    fn check_sps(&self, path: &Path, nal: &[u8]) -> Result<()> {
        let Some(sps) = crate::mp4_check::sps_frame_size(nal) else { return Ok(()) };
        let pixels = sps.width.saturating_mul(sps.height);
        if pixels > MAX_FRAME_PIXELS {
            return Err(Error::format(
                path,
                FORMAT,
                format!("SPS frame size {}×{} is out of range", sps.width, sps.height),
            ));
        }
        let decoder = pixels * 3 / 2 * (sps.max_ref_frames.min(16) + 2);
        let need = decoder + pixels * 3 + self.data.len() as u64;
        if need > self.budget {
            return Err(self.over_budget(
                path,
                format!(
                    "an H.264 stream of {}×{} frames needs {} to decode",
                    sps.width,
                    sps.height,
                    wanrt_io::format_size(need)
                ),
            ));
        }
        Ok(())
    }

    fn push(&mut self, path: &Path, yuv: &impl YUVSource) -> Result<()> {
        let (w, h) = yuv.dimensions();
        if self.count == 0 {
            if w == 0 || h == 0 || (w as u64).saturating_mul(h as u64) > MAX_FRAME_PIXELS {
                return Err(Error::format(path, FORMAT, format!("frame size {w}×{h} is out of range")));
            }
            self.width = w;
            self.height = h;
        } else if (w, h) != (self.width, self.height) {
            return Err(Error::format(
                path,
                FORMAT,
                format!("frame {} is {w}×{h}, earlier frames {}×{}", self.count, self.width, self.height),
            ));
        }
        let frame = w * h * 3;
        let total = self.data.len() as u64 + frame as u64;
        if total > self.budget {
            return Err(self.over_budget(
                path,
                format!("{} frames of {w}×{h} decode to {}", self.count + 1, wanrt_io::format_size(total)),
            ));
        }
        wanrt_io::limits::reserve_within(&mut self.data, frame, self.budget)
            .map_err(|_| Error::invalid(path, format!("out of memory after {} decoded frames", self.count)))?;
        let (sy, su, sv) = yuv.strides();
        let (yb, ub, vb) = (yuv.y(), yuv.u(), yuv.v());
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        let ok = sy >= w
            && su >= cw
            && su == sv
            && yb.len() >= sy * (h - 1) + w
            && ub.len() >= su * (ch - 1) + cw
            && vb.len() >= sv * (ch - 1) + cw;
        if !ok {
            return Err(Error::format(path, FORMAT, "decoder returned inconsistent planes"));
        }
        i420_to_rgb(yb, ub, vb, w, h, sy, su, &mut self.data);
        self.count += 1;
        Ok(())
    }
}

fn read_mp4_inner(path: &Path, map: &[u8], size: u64) -> Result<Video> {
    let bad = |m: String| Error::format(path, FORMAT, m);
    let mut mp4 = mp4::Mp4Reader::read_header(Cursor::new(map), size).map_err(|e| bad(e.to_string()))?;
    let track = mp4
        .tracks()
        .values()
        .filter(|t| t.trak.mdia.minf.stbl.stsd.avc1.is_some())
        .min_by_key(|t| t.track_id())
        .ok_or_else(|| bad("no H.264 (avc1) video track".into()))?;
    let track_id = track.track_id();
    let Some(avc1) = track.trak.mdia.minf.stbl.stsd.avc1.as_ref() else {
        return Err(bad("no H.264 (avc1) video track".into()));
    };
    // Sample sizes come from the header: check them against the file before the demuxer
    // allocates a buffer for any sample.
    let stsz = &track.trak.mdia.minf.stbl.stsz;
    let total: u64 = if stsz.sample_size != 0 {
        (stsz.sample_size as u64).saturating_mul(stsz.sample_count as u64)
    } else {
        stsz.sample_sizes.iter().map(|&s| s as u64).sum()
    };
    if total > size {
        return Err(bad(format!("sample table claims {total} bytes of samples in a {size}-byte file")));
    }
    let len_size = avc1.avcc.length_size_minus_one as usize + 1;
    if ![1, 2, 4].contains(&len_size) {
        return Err(bad(format!("avcC NAL length size {len_size}")));
    }
    let mut frames = Frames { width: 0, height: 0, data: Vec::new(), count: 0, budget: wanrt_io::decode_budget(size) };
    let mut params = Vec::new();
    for nal in avc1.avcc.sequence_parameter_sets.iter().chain(&avc1.avcc.picture_parameter_sets) {
        frames.check_sps(path, &nal.bytes)?;
        push_nal(&mut params, &nal.bytes);
    }
    let count = mp4.sample_count(track_id).map_err(|e| bad(e.to_string()))?;
    // No flush after each packet: streams with B-frames need the reorder buffer
    // (flushing early breaks them); the remaining frames are flushed at the end.
    let cfg = DecoderConfig::new().flush_after_decode(Flush::NoFlush);
    let mut decoder =
        Decoder::with_api_config(OpenH264API::from_source(), cfg).map_err(|e| bad(format!("H.264 decoder: {e}")))?;
    let mut annexb = Vec::new();
    for id in 1..=count {
        let Some(sample) = mp4.read_sample(track_id, id).map_err(|e| bad(format!("sample {id}: {e}")))? else {
            continue;
        };
        annexb.clear();
        if id == 1 {
            annexb.extend_from_slice(&params);
        }
        let mut b: &[u8] = &sample.bytes;
        while !b.is_empty() {
            if b.len() < len_size {
                return Err(bad(format!("sample {id}: truncated NAL length")));
            }
            let n = b[..len_size].iter().fold(0usize, |a, &x| (a << 8) | x as usize);
            b = &b[len_size..];
            if n > b.len() {
                return Err(bad(format!("sample {id}: NAL of {n} bytes overruns the sample")));
            }
            // An in-band SPS may change the frame size: check it before the decoder sees it.
            frames.check_sps(path, &b[..n])?;
            push_nal(&mut annexb, &b[..n]);
            b = &b[n..];
        }
        match decoder.decode(&annexb) {
            Ok(Some(yuv)) => frames.push(path, &yuv)?,
            Ok(None) => {}
            Err(e) => return Err(bad(format!("H.264 sample {id}: {e}"))),
        }
    }
    let rest = decoder.flush_remaining().map_err(|e| bad(format!("H.264 flush: {e}")))?;
    for yuv in &rest {
        frames.push(path, yuv)?;
    }
    if frames.count == 0 {
        return Err(bad("the video track decoded to no frames".into()));
    }
    Video::new(frames.count, frames.height, frames.width, frames.data)
}
