//! MP4 and GIF items through `wanrt eval` (DESIGN.md's item rules): videos written with
//! wanrt-media, read back by compare / clipscore / fid. Both codecs are lossy (H.264,
//! GIF's 256-colour palette), so the tests check decode consistency (the metrics on an MP4
//! equal the metrics on its decoded frames), item/frame counts, and closeness to the
//! source frames, not exact pixels.

mod common;

use common::fixtures;
use indicatif::ProgressBar;
use wanrt_eval::clipscore::{clipscore, ClipScorer};
use wanrt_eval::compare::compare;
use wanrt_eval::fid::{compute_features, FeatureOptions};
use wanrt_eval::inception::FidInception;
use wanrt_eval::items::{frames_of, open_items};
use wanrt_media::{read_gif, read_mp4, write_gif, write_mp4, write_npy_video, Mp4Options, Video};

/// A smooth moving pattern, `frames` × 48 × 64 (H.264 wants even sizes).
fn source_video(frames: usize, seed: u32) -> Video {
    let (h, w) = (48usize, 64usize);
    let mut data = Vec::with_capacity(frames * h * w * 3);
    for f in 0..frames {
        for y in 0..h {
            for x in 0..w {
                let t = f as f32 * 0.4 + seed as f32;
                let r = 128.0 + 100.0 * ((x as f32 + 3.0 * t) / 9.0).sin();
                let g = 128.0 + 100.0 * ((y as f32 - 2.0 * t) / 7.0).cos();
                let b = 60.0 + 2.0 * (x + y) as f32;
                data.extend([r, g, b].map(|v| v.round().clamp(0.0, 255.0) as u8));
            }
        }
    }
    Video::new(frames, h, w, data).unwrap()
}

#[test]
fn compare_reads_mp4_and_gif_consistently() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let src = source_video(5, 0);
    write_mp4(d.join("clip.mp4"), &src, &Mp4Options::default()).unwrap();
    write_gif(d.join("anim.gif"), &src, 8.0).unwrap();
    write_npy_video(d.join("src.npy"), &src).unwrap();
    let pb = ProgressBar::hidden();
    for (name, decoded) in
        [("clip.mp4", read_mp4(d.join("clip.mp4")).unwrap()), ("anim.gif", read_gif(d.join("anim.gif")).unwrap())]
    {
        assert_eq!(decoded.shape(), src.shape(), "{name}: decoded shape");
        // the same file read twice decodes the same way
        let again = if name.ends_with("mp4") { read_mp4(d.join(name)) } else { read_gif(d.join(name)) }.unwrap();
        assert_eq!(again.data(), decoded.data(), "{name}: decoding is not deterministic");
        // eval reads the item exactly as the decoder does: identical to its decoded frames
        let dec = d.join(format!("{name}.decoded.npy"));
        write_npy_video(&dec, &decoded).unwrap();
        let r = compare(&d.join(name), &dec, None, None, &pb).unwrap();
        assert_eq!(r.items.len(), 1);
        assert_eq!(r.items[0].frames, 5);
        assert!(
            r.items[0].per_frame.iter().all(|f| f.psnr == f64::INFINITY && f.ssim == 1.0),
            "{name}: {:?}",
            r.items[0]
        );
        // and close to the source (lossy codecs)
        let r = compare(&d.join("src.npy"), &d.join(name), None, None, &pb).unwrap();
        println!("{name} vs source: PSNR {:.2} dB, SSIM {:.4}", r.psnr, r.ssim);
        assert_eq!(r.items[0].frames, 5);
        // measured: MP4 34.5 dB / 0.91, GIF (256-colour NeuQuant palette) 27.1 dB / 0.75
        let (psnr_min, ssim_min) = if name.ends_with("mp4") { (30.0, 0.85) } else { (24.0, 0.65) };
        assert!(r.psnr > psnr_min && r.ssim > ssim_min, "{name}: PSNR {} SSIM {}", r.psnr, r.ssim);
        // --frames-per-video picks round(i·(F−1)/(K−1)) of the decoded frames
        let r = compare(&d.join(name), &dec, Some(3), None, &pb).unwrap();
        assert_eq!(r.items[0].frames, 3);
        let set = open_items(&d.join(name), Some(3)).unwrap();
        let fr = frames_of(&set.load(0).unwrap());
        for (k, i) in [0usize, 2, 4].iter().enumerate() {
            assert_eq!(fr[k].data, decoded.frame(*i), "{name}: frame {k} is source frame {i}");
        }
    }
    // folders mixing MP4, GIF and NPY items: keys and counts
    let (a, b) = (d.join("a"), d.join("b"));
    for dir in [&a, &b] {
        std::fs::create_dir(dir).unwrap();
        write_mp4(dir.join("x.mp4"), &src, &Mp4Options::default()).unwrap();
        write_gif(dir.join("y.gif"), &source_video(3, 1), 8.0).unwrap();
        write_npy_video(dir.join("z.npy"), &source_video(2, 2)).unwrap();
    }
    let r = compare(&a, &b, None, None, &pb).unwrap();
    let got: Vec<(&str, usize)> = r.items.iter().map(|i| (i.file.as_str(), i.frames)).collect();
    assert_eq!(got, [("x.mp4", 5), ("y.gif", 3), ("z.npy", 2)]);
    // a deterministic encoder: the same video gives the same file, so identical items
    assert!(r.items.iter().all(|i| i.ssim == 1.0));
    // an unreadable video is a clear error naming it
    std::fs::write(a.join("bad.mp4"), b"not an mp4").unwrap();
    std::fs::write(b.join("bad.mp4"), b"not an mp4").unwrap();
    let e = compare(&a, &b, None, None, &pb).unwrap_err();
    assert!(e.to_string().contains("bad.mp4"), "{e}");
}

#[test]
fn clipscore_and_fid_read_mp4_and_gif_items() {
    let tmp = tempfile::tempdir().unwrap();
    let (vids, dec) = (tmp.path().join("videos"), tmp.path().join("decoded"));
    std::fs::create_dir(&vids).unwrap();
    std::fs::create_dir(&dec).unwrap();
    write_mp4(vids.join("a.mp4"), &source_video(5, 3), &Mp4Options::default()).unwrap();
    write_gif(vids.join("b.gif"), &source_video(4, 4), 8.0).unwrap();
    // the decoded frames as NPY items of the same keys' captions
    write_npy_video(dec.join("a.npy"), &read_mp4(vids.join("a.mp4")).unwrap()).unwrap();
    write_npy_video(dec.join("b.npy"), &read_gif(vids.join("b.gif")).unwrap()).unwrap();
    let prompts = tmp.path().join("prompts.json");
    std::fs::write(
        &prompts,
        r#"{"a.mp4": "the cat and the dog", "b.gif": "a thing on the ring",
            "a.npy": "the cat and the dog", "b.npy": "a thing on the ring"}"#,
    )
    .unwrap();
    let scorer = ClipScorer::load(&fixtures().join("clip/tiny-clip")).unwrap();
    let pb = ProgressBar::hidden();
    let r = clipscore(&scorer, &vids, &prompts, None, 4, &pb).unwrap();
    let counts: Vec<(&str, usize)> = r.items.iter().map(|i| (i.file.as_str(), i.frames)).collect();
    assert_eq!(counts, [("a.mp4", 5), ("b.gif", 4)]);
    let rd = clipscore(&scorer, &dec, &prompts, None, 1, &pb).unwrap();
    for (v, n) in r.items.iter().zip(&rd.items) {
        assert_eq!(v.per_frame, n.per_frame, "{}: scores differ from its decoded frames", v.file);
    }
    let r2 = clipscore(&scorer, &vids, &prompts, Some(2), 1, &pb).unwrap();
    assert!(r2.items.iter().all(|i| i.frames == 2));

    // FID Inception features: one frame per video (the network is large)
    let net = FidInception::load(&fixtures().join("fid/pt_inception-random.pth")).unwrap();
    let opts = FeatureOptions { frames_per_video: Some(1), batch: 2 };
    let f = compute_features(&net, &vids, &opts, &pb).unwrap();
    assert_eq!((f.items, f.frames, f.dim), (2, 2, 2048));
    let fd = compute_features(&net, &dec, &opts, &pb).unwrap();
    assert!(f.features.iter().zip(&fd.features).all(|(a, b)| a.to_bits() == b.to_bits()));
}
