//! wanrt-media: video in and out.
//!
//! - [`Video`]: RGB u8 frames `(F, H, W, 3)`, and DESIGN.md's float → u8 rule
//!   ([`f32_to_u8`]: `round(clip(x, 0, 1)·255)`, half to even like numpy).
//! - Writers, all atomic (temp file/folder + rename, nothing left on error):
//!   [`write_mp4`] (H.264, yuv420p BT.601 limited range, fast-start, 16 fps default),
//!   [`write_gif`], [`write_png_dir`], [`write_npy_video`]; [`write_video`] picks one
//!   from the output path's form.
//! - Readers for evaluation: [`read_mp4`], [`read_gif`], [`read_image`] ([`decode_image`] in memory),
//!   [`read_npy_video`], and [`read_video`] by extension.
//! - [`ItemSet`] / [`collect_items`]: DESIGN.md's eval input contract, decoded lazily.

pub mod collect;
pub mod color;
pub mod error;
pub mod gif;
pub mod image_dir;
pub mod mp4;
mod mp4_check;
pub mod npy_video;
pub mod output;
pub mod video;

use std::path::Path;

pub use collect::{collect_items, read_video, Item, ItemSet, ItemSource, Source};
pub use error::{Error, Result};
pub use gif::{read_gif, write_gif};
pub use image_dir::{decode_image, read_image, write_png, write_png_dir};
pub use mp4::{check_mp4_output, read_mp4, write_mp4, Mp4Options};
pub use npy_video::{read_npy_video, write_npy_f32, write_npy_video};
pub use output::{check_output_path, check_output_video, output_kind, OutputKind};
pub use video::{f32_to_u8, f64_to_u8, pick_frames, Video};

/// Writes `video` in the format the path asks for, as DESIGN.md's `-o` does: `.mp4`,
/// `.gif`, `.npy`, or a folder of `frame_NNNN.png` when the path ends with `/` or names
/// an existing folder. `opts.fps` applies to MP4 and GIF.
pub fn write_video(path: impl AsRef<Path>, video: &Video, opts: &Mp4Options) -> Result<()> {
    let path = path.as_ref();
    match output_kind(path)? {
        OutputKind::PngDir => write_png_dir(path, video),
        OutputKind::Mp4 => write_mp4(path, video, opts),
        OutputKind::Gif => write_gif(path, video, opts.fps),
        OutputKind::Npy => write_npy_video(path, video),
    }
}
