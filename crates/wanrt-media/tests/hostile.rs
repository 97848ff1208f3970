//! Small files that declare huge outputs: each is a one-line error naming the file and the
//! budget, found before anything of the declared size is allocated (the default budget is at
//! least 256 MiB; these declare gigabytes).

mod common;

use common::{pattern, png_header, tiny_gif};
use wanrt_media::{read_gif, read_image, read_mp4, read_video, write_mp4, ItemSet, Mp4Options};

#[test]
fn a_huge_gif_screen_is_refused_before_the_canvas() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("screen.gif");
    std::fs::write(&p, tiny_gif(65535, 65535, 1)).unwrap();
    let e = read_gif(&p).unwrap_err().to_string();
    assert!(e.contains("screen.gif") && e.contains("65535×65535") && e.contains("decode budget"), "{e}");
    assert!(!e.contains('\n'));
}

#[test]
fn many_tiny_gif_frames_are_bounded_by_the_budget() {
    // 10 000 frames of 19 bytes each on a 3000×2000 screen: 190 KB that would decode to 180 GB.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("frames.gif");
    std::fs::write(&p, tiny_gif(3000, 2000, 10_000)).unwrap();
    let e = read_gif(&p).unwrap_err().to_string();
    assert!(e.contains("frames of 3000×2000 decode to") && e.contains("decode budget of 256.0 MiB"), "{e}");
}

#[test]
fn a_huge_png_header_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("huge.png");
    std::fs::write(&p, png_header(30000, 30000)).unwrap();
    let e = read_image(&p).unwrap_err().to_string();
    assert!(e.contains("huge.png") && e.contains("decode budget"), "{e}");
}

#[test]
fn an_mp4_box_larger_than_the_file_is_refused_before_the_demuxer() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("v.mp4");
    write_mp4(&p, &pattern(2, 16, 16), &Mp4Options::default()).unwrap();
    let mut bytes = std::fs::read(&p).unwrap();
    // The sample-size table claims 4 GB (the demuxer would reserve for a billion entries).
    let at = bytes.windows(4).position(|w| w == b"stsz").unwrap() - 4;
    bytes[at..at + 4].copy_from_slice(&u32::MAX.to_be_bytes());
    std::fs::write(&p, &bytes).unwrap();
    let e = read_mp4(&p).unwrap_err().to_string();
    assert!(e.contains("box `stsz`") && e.contains("declares 4294967295 bytes"), "{e}");
    std::fs::write(&p, b"").unwrap();
    assert!(read_mp4(&p).unwrap_err().to_string().contains("empty"));
}

#[test]
fn frames_per_video_beyond_the_clip_and_empty_arrays_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("clip.mp4");
    write_mp4(&p, &pattern(3, 16, 16), &Mp4Options::default()).unwrap();
    let set = ItemSet::open(&p, Some(1000)).unwrap();
    let e = set.load(0).unwrap_err().to_string();
    assert!(e.contains("clip.mp4") && e.contains("--frames-per-video 1000") && e.contains("3 frames"), "{e}");
    assert_eq!(ItemSet::open(&p, Some(3)).unwrap().load(0).unwrap().video.frames(), 3);
    for shape in [[0usize, 4, 4, 3], [2, 0, 4, 3], [2, 4, 0, 3]] {
        let q = dir.path().join("empty.npy");
        let a = wanrt_io::NpyArray::new(shape.to_vec(), Vec::<u8>::new()).unwrap();
        wanrt_io::write_npy(&q, &a).unwrap();
        let e = read_video(&q).unwrap_err().to_string();
        assert!(e.contains("holds no pixels"), "{shape:?}: {e}");
    }
}
