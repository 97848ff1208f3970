//! FVD parity with common_metrics_on_video_quality's VideoGPT-style FVD (I3D logits,
//! its preprocessing, Fréchet distance). Fixtures: `tools/fixtures/make_eval_fixtures.py fvd`
//! (`fvd_fixtures()`: a random-weight I3D in `i3d_pretrained_400.pt` layout, 3+3 NPY videos).

mod common;

use common::{fixtures, json, rel_err};
use indicatif::ProgressBar;
use wanrt_eval::fid::read_features_npy;
use wanrt_eval::fvd::{fvd_from_paths, video_logits};
use wanrt_eval::i3d::I3d;

#[test]
fn fvd_matches_videogpt_fvd() {
    let dir = fixtures().join("fvd");
    let refj = json(&dir.join("reference.json"));
    let pt = dir.join("i3d_random_400.pt");
    let net = I3d::load(&pt).unwrap();
    let pb = ProgressBar::hidden();
    let (got, info) = video_logits(&net, &dir.join("real"), None, 1, &pb).unwrap();
    assert_eq!((info.items, info.frames), (Some(3), Some(30)));
    let want = read_features_npy(&dir.join("real_logits.npy")).unwrap();
    let max_abs = got.iter().zip(&want.features).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    let scale = want.features.iter().map(|v| v.abs()).fold(0.0f32, f32::max);
    println!("I3D logits max-abs diff {max_abs:e} (max |logit| {scale})");
    assert!(max_abs <= 1e-4 * scale.max(1.0), "max-abs {max_abs}");
    // --batch: two videos per network call (then one) give the same logits bit for bit
    let (got2, _) = video_logits(&net, &dir.join("real"), None, 2, &pb).unwrap();
    assert!(got.iter().zip(&got2).all(|(a, b)| a.to_bits() == b.to_bits()), "batch 2 differs from batch 1");
    let r = fvd_from_paths(&pt, &dir.join("real"), &dir.join("fake"), None, 3, &pb).unwrap();
    let want = refj["fvd_f64"].as_f64().unwrap();
    println!("FVD {} want {want} (f32 reference {}) rel {:e}", r.fvd, refj["fvd_f32"], rel_err(r.fvd, want));
    assert!(rel_err(r.fvd, want) <= 1e-3);
}
