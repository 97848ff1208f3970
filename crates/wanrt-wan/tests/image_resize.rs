//! An input image of another size than the video's, resized as diffusers' Wan image-to-video
//! pipelines resize it for the VAE (`VideoProcessor.preprocess`: Pillow's Lanczos, no crop), to
//! sizes smaller, larger and of the other orientation. Fixture:
//! `tools/fixtures/make_image_resize_fixtures.py`.
#![allow(clippy::disallowed_methods)] // reads the host tensors it compares

use std::path::PathBuf;
use wanrt_wan::image::RgbImage;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/image_resize")
}

#[test]
fn resized_images_match_diffusers_video_processor() {
    let img = image::open(dir().join("odd.png")).unwrap().into_rgb8();
    let odd = RgbImage::new(img.height() as usize, img.width() as usize, img.into_raw()).unwrap();
    assert_eq!((odd.height, odd.width), (37, 53));
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir().join("meta.json")).unwrap()).unwrap();
    let sizes = meta["sizes"].as_array().unwrap();
    assert_eq!(sizes.len(), 3);
    for size in sizes {
        let size = size.as_str().unwrap();
        let (h, w) = size.split_once('x').unwrap();
        let (h, w): (usize, usize) = (h.parse().unwrap(), w.parse().unwrap());
        let want = wanrt_io::read_npy(dir().join(format!("{size}.npy"))).unwrap();
        let got = odd.resized(h, w).unwrap().to_vae_frame().unwrap();
        assert_eq!(got.shape(), want.shape(), "{size}");
        let err = got.data().iter().zip(want.to_f32_vec()).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        println!("{size}: max|Δ| = {err:.3e}");
        // One uint8 level is 2/255 in [-1, 1]: this asks for the same pixels (float rounding only).
        assert!(err <= 1e-6, "{size}: max|Δ| = {err} against diffusers");
    }
    // Its own size: the image itself.
    assert_eq!(odd.resized(37, 53).unwrap(), odd);
}
