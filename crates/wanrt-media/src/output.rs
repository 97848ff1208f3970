//! Output paths: the format a path asks for (`-o`'s contract) and the checks that run before a
//! long job, so a bad `-o` fails in the first second instead of after the video is made.

use std::path::Path;

use crate::error::{Error, Result};

/// What an output path asks for, by its form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputKind {
    Mp4,
    Gif,
    Npy,
    /// A folder of `frame_NNNN.png` (the path ends with `/` or names an existing folder).
    PngDir,
}

/// The kind `path` asks for; an unknown extension is an error naming the forms accepted.
pub fn output_kind(path: &Path) -> Result<OutputKind> {
    if path.to_string_lossy().ends_with('/') || path.is_dir() {
        return Ok(OutputKind::PngDir);
    }
    match path.extension().map(|e| e.to_string_lossy().to_ascii_lowercase()).as_deref() {
        Some("mp4") => Ok(OutputKind::Mp4),
        Some("gif") => Ok(OutputKind::Gif),
        Some("npy") => Ok(OutputKind::Npy),
        _ => Err(Error::invalid(path, "unknown output type: expected OUT.mp4, OUT.gif, OUT.npy or a folder OUT_DIR/")),
    }
}

/// Checks before any work that a video can later be written at `path`: a known form, and a
/// parent folder that takes new files (a frame folder must also not exist or be empty).
pub fn check_output_path(path: &Path) -> Result<OutputKind> {
    let kind = output_kind(path)?;
    match kind {
        OutputKind::PngDir => wanrt_io::check_output_dir(path)?,
        _ => wanrt_io::check_output_file(path)?,
    }
    Ok(kind)
}

/// Checks the format's limits for a video of `frames` × `height` × `width` at `fps` (MP4 sizes
/// and timestamps, GIF sizes), once the sizes are known and before the video is made.
pub fn check_output_video(path: &Path, frames: usize, height: usize, width: usize, fps: f64) -> Result<()> {
    let checked = match output_kind(path)? {
        OutputKind::Mp4 => crate::mp4::check_mp4_output(frames, height, width, fps),
        OutputKind::Gif => crate::gif::check_gif_output(frames, height, width, fps),
        OutputKind::Npy | OutputKind::PngDir if frames == 0 || height == 0 || width == 0 => {
            Err("cannot write an empty video".into())
        }
        OutputKind::Npy | OutputKind::PngDir => Ok(()),
    };
    checked.map_err(|m| Error::invalid(path, m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_limits() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        assert_eq!(check_output_path(&t.join("a.MP4")).unwrap(), OutputKind::Mp4);
        assert_eq!(check_output_path(&t.join("frames/")).unwrap(), OutputKind::PngDir);
        assert!(check_output_path(&t.join("a.avi")).unwrap_err().to_string().contains("unknown output type"));
        assert!(check_output_path(&t.join("no/a.gif")).unwrap_err().to_string().contains("does not exist"));
        let mp4 = t.join("a.mp4");
        assert!(check_output_video(&mp4, 81, 480, 832, 16.0).is_ok());
        for (f, h, w, fps, want) in [
            (81, 480, 832, 1e6, "ticks per second"),
            (81, 480, 832, 1e-6, "timestamps hold at most"),
            (81, 480, 832, f64::NAN, "positive"),
            (81, 8, 8, 16.0, "at least 16×16"),
            (81, 17, 32, 16.0, "even"),
            (0, 32, 32, 16.0, "no frames"),
        ] {
            let e = check_output_video(&mp4, f, h, w, fps).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        }
        assert!(check_output_video(&t.join("a.gif"), 1, 70000, 16, 8.0).is_err());
    }
}
