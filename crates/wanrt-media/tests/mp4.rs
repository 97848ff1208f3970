//! MP4 write → read round trips.

mod common;

use common::{pattern, psnr, top_level_boxes};
use wanrt_media::{read_mp4, write_mp4, Mp4Options, Video};

#[test]
fn mp4_round_trip_is_close_and_fast_start() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("v.mp4");
    let v = pattern(12, 48, 64);
    write_mp4(&p, &v, &Mp4Options::default()).unwrap();
    let bytes = std::fs::read(&p).unwrap();
    let boxes = top_level_boxes(&bytes);
    let moov = boxes.iter().position(|b| b == "moov").expect("moov");
    let mdat = boxes.iter().position(|b| b == "mdat").expect("mdat");
    assert!(moov < mdat, "not fast-start: {boxes:?}");

    let back = read_mp4(&p).unwrap();
    assert_eq!(back.shape(), v.shape());
    for f in 0..v.frames() {
        let db = psnr(v.frame(f), back.frame(f));
        assert!(db > 30.0, "frame {f}: PSNR {db:.2} dB");
    }
    // Only the output file is left in the folder.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn odd_sizes_and_empty_videos_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("odd.mp4");
    let v = Video::new(1, 17, 16, vec![0; 17 * 16 * 3]).unwrap();
    let e = write_mp4(&p, &v, &Mp4Options::default()).unwrap_err().to_string();
    assert!(e.contains("even") && e.contains("odd.mp4"), "{e}");
    let v = Video::new(0, 4, 4, vec![]).unwrap();
    assert!(write_mp4(&p, &v, &Mp4Options::default()).is_err());
    assert!(!p.exists());
}

#[test]
fn corrupt_mp4_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("v.mp4");
    write_mp4(&p, &pattern(3, 16, 16), &Mp4Options::default()).unwrap();
    let bytes = std::fs::read(&p).unwrap();
    let q = dir.path().join("bad.mp4");
    for cut in [0, 7, 8, 40, bytes.len() / 3, bytes.len() / 2, bytes.len() - 1] {
        std::fs::write(&q, &bytes[..cut]).unwrap();
        let _ = read_mp4(&q);
    }
    let mut seed = 7u64;
    for _ in 0..60 {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let mut b = bytes.clone();
        let i = (seed >> 33) as usize % b.len();
        b[i] ^= 0xff;
        std::fs::write(&q, &b).unwrap();
        let _ = read_mp4(&q);
    }
    std::fs::write(&q, b"not an mp4 at all").unwrap();
    assert!(read_mp4(&q).is_err());
}

/// An MP4 made by ffmpeg/libx264 (High profile, B-frames; `make_media_fixtures.sh`)
/// decodes in display order to ffmpeg's own frames, up to the YUV→RGB rounding: the
/// H.264 decode is bit-exact, and our exact-formula BT.601 conversion differs from
/// swscale's fixed-point tables by a few levels at most.
#[test]
fn reads_x264_high_profile_with_b_frames_like_ffmpeg() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let ours = read_mp4(dir.join("x264_bframes.mp4")).unwrap();
    let theirs = wanrt_io::read_npy(dir.join("x264_bframes_ffmpeg.npy")).unwrap();
    assert_eq!(&ours.shape()[..], theirs.shape());
    let t = theirs.as_bytes();
    let diffs: Vec<u8> = ours.data().iter().zip(t).map(|(&a, &b)| a.abs_diff(b)).collect();
    let max = *diffs.iter().max().unwrap();
    let mean = diffs.iter().map(|&d| d as f64).sum::<f64>() / diffs.len() as f64;
    assert!(max <= 4 && mean < 1.5, "max {max}, mean {mean:.3}");
}
