//! PSNR / SSIM parity with scikit-image 0.26.
//! Fixtures: `tools/fixtures/make_eval_fixtures.py compare` (`compare_fixtures()`).

mod common;

use common::{fixtures, json};
use indicatif::ProgressBar;
use wanrt_eval::compare::compare;

#[test]
fn psnr_ssim_match_skimage() {
    let dir = fixtures().join("compare");
    let refj = json(&dir.join("reference.json"));
    let r = compare(&dir.join("ref"), &dir.join("cand"), None, None, &ProgressBar::hidden()).unwrap();
    let want_items = refj["items"].as_array().unwrap();
    assert_eq!(r.items.len(), want_items.len());
    let mut worst = (0.0f64, 0.0f64);
    for (got, want) in r.items.iter().zip(want_items) {
        assert_eq!(got.file, want["file"].as_str().unwrap());
        let wf = want["per_frame"].as_array().unwrap();
        assert_eq!(got.per_frame.len(), wf.len(), "{}", got.file);
        for (g, w) in got.per_frame.iter().zip(wf) {
            let dp = (g.psnr - w["psnr"].as_f64().unwrap()).abs();
            let ds = (g.ssim - w["ssim"].as_f64().unwrap()).abs();
            worst = (worst.0.max(dp), worst.1.max(ds));
            assert!(dp <= 1e-4 && ds <= 1e-4, "{}: psnr diff {dp:e}, ssim diff {ds:e}", got.file);
        }
        assert!((got.psnr - want["psnr"].as_f64().unwrap()).abs() <= 1e-4);
        assert!((got.ssim - want["ssim"].as_f64().unwrap()).abs() <= 1e-4);
    }
    println!("max |Δpsnr| {:e}, max |Δssim| {:e}", worst.0, worst.1);
}
