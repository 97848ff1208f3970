//! LPIPS parity with the lpips package 0.1.4 (AlexNet and VGG16 backbones, shipped v0.1
//! heads). Fixtures: `tools/fixtures/make_eval_fixtures.py lpips lpips_vgg`
//! (`lpips_fixtures()`, `lpips_vgg_fixtures()`).

mod common;

use common::{fixtures, json};
use indicatif::ProgressBar;
use wanrt_eval::compare::compare;
use wanrt_eval::lpips::{Lpips, LpipsNet};

#[test]
fn lpips_matches_the_lpips_package() {
    let dir = fixtures().join("lpips");
    let refj = json(&dir.join("reference.json"));
    let model = Lpips::load(LpipsNet::Alex, &dir.join("lpips_alex_random.pth"), None).unwrap();
    let r = compare(&dir.join("ref"), &dir.join("cand"), None, Some(&model), &ProgressBar::hidden()).unwrap();
    for (got, want) in r.items.iter().zip(refj["items"].as_array().unwrap()) {
        assert_eq!(got.file, want["file"].as_str().unwrap());
        let (g, w) = (got.lpips.unwrap(), want["lpips"].as_f64().unwrap());
        println!("{}: lpips {g} want {w} rel {:e}", got.file, (g - w).abs() / w);
        assert!((g - w).abs() <= 1e-3 * w.abs().max(1e-3), "{}: {g} vs {w}", got.file);
    }
    assert!(r.lpips.is_some());
    // a lin-only file without the backbone is a clear error
    assert!(Lpips::load(LpipsNet::Vgg, &dir.join("lpips_alex_random.pth"), None).is_err());
}

#[test]
fn lpips_vgg_matches_the_lpips_package() {
    let dir = fixtures().join("lpips");
    let refj = json(&dir.join("reference_vgg.json"));
    let model = Lpips::load(LpipsNet::Vgg, &dir.join("lpips_vgg_random.pth"), None).unwrap();
    let r = compare(&dir.join("ref"), &dir.join("cand"), None, Some(&model), &ProgressBar::hidden()).unwrap();
    let want = refj["items"].as_array().unwrap();
    assert_eq!(r.items.len(), want.len());
    for (got, want) in r.items.iter().zip(want) {
        assert_eq!(got.file, want["file"].as_str().unwrap());
        let (g, w) = (got.lpips.unwrap(), want["lpips"].as_f64().unwrap());
        println!("vgg {}: lpips {g} want {w} rel {:e}", got.file, (g - w).abs() / w);
        assert!((g - w).abs() <= 1e-3 * w.abs().max(1e-3), "{}: {g} vs {w}", got.file);
    }
    // the AlexNet file is not a VGG one: a clear error
    assert!(Lpips::load(LpipsNet::Alex, &dir.join("lpips_vgg_random.pth"), None).is_err());
}
