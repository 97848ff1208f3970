//! GIF, PNG folder and NPY round trips, and `write_video`'s dispatch.

mod common;

use common::{pattern, psnr};
use wanrt_media::{
    read_gif, read_image, read_npy_video, read_video, write_gif, write_npy_f32, write_npy_video, write_png_dir,
    write_video, Mp4Options, Video,
};

#[test]
fn gif_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("v.gif");
    let v = pattern(5, 24, 32);
    write_gif(&p, &v, 16.0).unwrap();
    let back = read_gif(&p).unwrap();
    assert_eq!(back.shape(), v.shape());
    for f in 0..v.frames() {
        let db = psnr(v.frame(f), back.frame(f));
        // One 256-colour palette for a smooth 3-channel gradient: ~23 dB is expected.
        assert!(db > 20.0, "frame {f}: PSNR {db:.2} dB");
    }
    // A video with few colours comes back (almost) exactly.
    let colours = [[255u8, 0, 0], [0, 255, 0], [0, 0, 255], [40, 80, 120], [250, 250, 250]];
    let data: Vec<u8> = (0..3 * 16 * 16).flat_map(|i| colours[(i / 7) % 5]).collect();
    let v = Video::new(3, 16, 16, data).unwrap();
    write_gif(&p, &v, 10.0).unwrap();
    let back = read_gif(&p).unwrap();
    let max = v.data().iter().zip(back.data()).map(|(&a, &b)| a.abs_diff(b)).max().unwrap();
    assert!(max <= 8, "max abs error {max}");
}

#[test]
fn png_dir_round_trip_is_exact_and_atomic() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("frames");
    let v = pattern(3, 8, 10);
    write_png_dir(&out, &v).unwrap();
    let mut names: Vec<String> =
        std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert_eq!(names, ["frame_0000.png", "frame_0001.png", "frame_0002.png"]);
    for i in 0..3 {
        let f = read_image(out.join(format!("frame_{i:04}.png"))).unwrap();
        assert_eq!(f.data(), v.frame(i));
    }
    // A non-empty target is refused and left alone; no temp folder remains.
    let e = write_png_dir(&out, &v).unwrap_err().to_string();
    assert!(e.contains("not empty"), "{e}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn npy_round_trip_and_float_rule() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("v.npy");
    let v = pattern(2, 4, 6);
    write_npy_video(&p, &v).unwrap();
    assert_eq!(read_npy_video(&p).unwrap(), v);

    // Floats go through round(clip(x,0,1)*255) with half to even.
    let x = [0.5f32 / 255.0, 1.5 / 255.0, -1.0, 2.0, 0.5, 0.25];
    write_npy_f32(&p, [1, 1, 2, 3], &x).unwrap();
    assert_eq!(read_npy_video(&p).unwrap().data(), &[0, 2, 0, 255, 128, 64]);

    // Wrong shapes are clear errors.
    wanrt_io::write_npy(&p, &wanrt_io::NpyArray::new(vec![2, 2], vec![0u8; 4]).unwrap()).unwrap();
    let e = read_npy_video(&p).unwrap_err().to_string();
    assert!(e.contains("(F, H, W, 3)") && e.contains("v.npy"), "{e}");
}

#[test]
fn write_video_dispatches_on_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let v = pattern(2, 16, 16);
    let opts = Mp4Options::default();
    for name in ["a.mp4", "a.gif", "a.npy"] {
        write_video(dir.path().join(name), &v, &opts).unwrap();
        let back = read_video(dir.path().join(name)).unwrap();
        assert_eq!(back.shape(), v.shape(), "{name}");
    }
    let folder = format!("{}/frames/", dir.path().display());
    write_video(&folder, &v, &opts).unwrap();
    assert!(dir.path().join("frames/frame_0001.png").exists());
    let e = write_video(dir.path().join("a.avi"), &v, &opts).unwrap_err().to_string();
    assert!(e.contains("a.avi"), "{e}");
}

#[test]
fn bad_images_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.png");
    std::fs::write(&p, b"\x89PNG\r\n\x1a\n garbage").unwrap();
    let e = read_image(&p).unwrap_err().to_string();
    assert!(e.contains("x.png"), "{e}");
    let g = dir.path().join("x.gif");
    std::fs::write(&g, b"GIF89a\x01").unwrap();
    assert!(read_gif(&g).is_err());
    let v = Video::new(1, 2, 2, vec![0; 12]).unwrap();
    write_gif(&g, &v, 16.0).unwrap();
    let bytes = std::fs::read(&g).unwrap();
    for cut in 0..bytes.len() {
        std::fs::write(&g, &bytes[..cut]).unwrap();
        let _ = read_gif(&g);
    }
}
