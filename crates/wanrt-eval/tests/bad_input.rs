//! Bad input gives clear errors, never panics.

mod common;

use common::fixtures;
use indicatif::ProgressBar;
use wanrt_eval::fid::{fid_from_paths, FeatureOptions};
use wanrt_eval::frechet::frechet_distance;
use wanrt_eval::inception::FidInception;
use wanrt_eval::stats::{merge_stats, FeatureStats, FeatureSums};
use wanrt_eval::EvalError;

#[test]
fn missing_weights_names_the_usual_file() {
    let dir = fixtures().join("fid");
    let e =
        fid_from_paths(None, &dir.join("real"), &dir.join("fake"), &FeatureOptions::default(), &ProgressBar::hidden())
            .unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("pt_inception-2015-12-05-6726825d.pth"), "{msg}");
    assert!(msg.contains("WANRT_INCEPTION"), "{msg}");
}

#[test]
fn empty_folder_and_missing_path_are_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let pth = fixtures().join("fid/pt_inception-random.pth");
    let pb = ProgressBar::hidden();
    let e = fid_from_paths(Some(&pth), tmp.path(), tmp.path(), &FeatureOptions::default(), &pb).unwrap_err();
    println!("{e}");
    let e =
        fid_from_paths(Some(&pth), &tmp.path().join("nope"), tmp.path(), &FeatureOptions::default(), &pb).unwrap_err();
    println!("{e}");
}

#[test]
fn corrupt_files_are_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad.pth");
    std::fs::write(&bad, b"PK\x03\x04 definitely not a torch file").unwrap();
    assert!(FidInception::load(&bad).is_err());
    let not_inception = tmp.path().join("x.pth");
    std::fs::write(&not_inception, b"").unwrap();
    assert!(FidInception::load(&not_inception).is_err());
    // a corrupt image in an item folder
    let imgs = tmp.path().join("imgs");
    std::fs::create_dir(&imgs).unwrap();
    std::fs::write(imgs.join("a.png"), b"\x89PNG\r\n\x1a\n garbage").unwrap();
    std::fs::write(imgs.join("b.png"), b"garbage").unwrap();
    let pth = fixtures().join("fid/pt_inception-random.pth");
    let e = fid_from_paths(Some(&pth), &imgs, &imgs, &FeatureOptions::default(), &ProgressBar::hidden()).unwrap_err();
    println!("{e}");
    // corrupt npz
    let npz = tmp.path().join("s.npz");
    std::fs::write(&npz, b"PK\x03\x04 nope").unwrap();
    assert!(FeatureStats::read_npz(&npz).is_err());
}

#[test]
fn too_few_samples_and_mismatched_dims() {
    let mut s = FeatureSums::new(4);
    s.add(&[1.0, 2.0, 3.0, 4.0]).unwrap();
    assert!(matches!(s.stats(), Err(EvalError::TooFew { need: 2, found: 1, .. })));
    assert!(s.add(&[1.0, 2.0]).is_err());
    assert!(s.add(&[f32::NAN, 0.0, 0.0, 0.0]).is_err());
    let e = frechet_distance(&[0.0; 2], &[1.0, 0.0, 0.0, 1.0], &[0.0; 3], &[0.0; 9]).unwrap_err();
    assert!(e.to_string().contains("expected 2, found 3"), "{e}");
    // merging a pytorch-fid npz (mu/sigma only) is refused; mismatched dims are refused
    let tmp = tempfile::tempdir().unwrap();
    let a = FeatureStats::from_features(&[0.0, 1.0, 1.0, 0.0, 2.0, 2.0], 2).unwrap();
    let b = FeatureStats::from_features(&[0.0, 1.0, 1.0, 1.0, 0.0, 2.0, 2.0, 2.0, 3.0], 3).unwrap();
    let (pa, pb, pc) = (tmp.path().join("a.npz"), tmp.path().join("b.npz"), tmp.path().join("c.npz"));
    a.write_npz(&pa).unwrap();
    b.write_npz(&pb).unwrap();
    let plain = FeatureStats { sums: None, n: None, ..a.clone() };
    plain.write_npz(&pc).unwrap();
    let e = merge_stats(&[&pa, &pc]).unwrap_err();
    assert!(e.to_string().contains("pytorch-fid"), "{e}");
    assert!(merge_stats(&[&pa, &pb]).is_err());
    assert!(merge_stats(&[]).is_err());
    // but a pytorch-fid npz is fine as FID input
    let back = FeatureStats::read_npz(&pc).unwrap();
    assert!(back.sums.is_none());
    assert!(wanrt_eval::frechet::frechet_distance_stats(&back, &b).is_err());
}
