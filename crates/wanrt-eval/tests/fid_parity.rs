//! FID / KID / stats parity with pytorch-fid 0.3.0 and torchmetrics 1.9.0.
//! Fixtures: `tools/fixtures/make_eval_fixtures.py fid` (`fid_fixtures()`), a random-weight
//! pytorch-fid Inception .pth and two folders of 7 PNGs of mixed sizes.

mod common;

use common::{fixtures, json, mean_cov, rel_err};
use indicatif::ProgressBar;
use wanrt_eval::fid::{compute_features, fid_from_paths, kid_from_features, read_features_npy, FeatureOptions};
use wanrt_eval::frechet::{frechet_distance, frechet_distance_stats};
use wanrt_eval::inception::FidInception;
use wanrt_eval::kid::{poly_mmd, KidOptions};
use wanrt_eval::stats::{merge_stats, FeatureStats};

fn one_subset(n: usize) -> KidOptions {
    KidOptions { subsets: 1, subset_size: n, ..KidOptions::default() }
}

#[test]
fn fid_kid_match_pytorch_fid_and_torchmetrics() {
    let dir = fixtures().join("fid");
    let refj = json(&dir.join("reference.json"));
    let want_fid = refj["fid"].as_f64().unwrap();
    let want_fid_paths = refj["fid_paths"].as_f64().unwrap();
    let want_kid = refj["kid_full_subset"].as_f64().unwrap();
    let pth = dir.join("pt_inception-random.pth");
    let net = FidInception::load(&pth).unwrap();
    let pb = ProgressBar::hidden();
    let opts = FeatureOptions::default();

    // 1. the network: Rust features vs pytorch-fid's get_activations
    let mut sets = Vec::new();
    for side in ["real", "fake"] {
        let got = compute_features(&net, &dir.join(side), &opts, &pb).unwrap();
        let want = read_features_npy(&dir.join(format!("{side}_features.npy"))).unwrap();
        assert_eq!((got.frames, got.dim), (want.frames, want.dim), "{side}");
        let max_abs = got.features.iter().zip(&want.features).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        let scale = want.features.iter().map(|v| v.abs()).fold(0.0f32, f32::max);
        println!("{side}: features max-abs diff {max_abs:e} (max |feature| {scale})");
        assert!(max_abs <= 1e-4 * scale.max(1.0), "{side}: max-abs {max_abs}");
        sets.push((got, want));
    }

    // --batch: the first 3 fake images, 2 per network call (then 1), give the same
    // features bit for bit as one at a time
    let tmp3 = tempfile::tempdir().unwrap();
    let mut names: Vec<_> = std::fs::read_dir(dir.join("fake")).unwrap().map(|e| e.unwrap().file_name()).collect();
    names.sort();
    for n in &names[..3] {
        std::fs::copy(dir.join("fake").join(n), tmp3.path().join(n)).unwrap();
    }
    let batched = compute_features(&net, tmp3.path(), &FeatureOptions { batch: 2, ..opts }, &pb).unwrap();
    assert_eq!(batched.frames, 3);
    assert!(
        batched.features.iter().zip(&sets[1].0.features).all(|(a, b)| a.to_bits() == b.to_bits()),
        "features with --batch 2 differ from --batch 1"
    );

    // 2. FID: Rust features + Rust statistics + Rust Fréchet vs pytorch-fid end to end
    let s_real = FeatureStats::from_features(&sets[0].0.features, 2048).unwrap();
    let s_fake = FeatureStats::from_features(&sets[1].0.features, 2048).unwrap();
    let fid = frechet_distance_stats(&s_real, &s_fake).unwrap();
    println!("FID rust {fid} pytorch-fid {want_fid} (paths {want_fid_paths}) rel {:e}", rel_err(fid, want_fid));
    assert!(rel_err(fid, want_fid) <= 1e-3);
    assert!(rel_err(fid, want_fid_paths) <= 1e-3);
    // and the Fréchet distance alone, on pytorch-fid's own features
    let r_real = FeatureStats::from_features(&sets[0].1.features, 2048).unwrap();
    let r_fake = FeatureStats::from_features(&sets[1].1.features, 2048).unwrap();
    let fid_ref_feats = frechet_distance_stats(&r_real, &r_fake).unwrap();
    println!("FID on reference features {fid_ref_feats} rel {:e}", rel_err(fid_ref_feats, want_fid));
    assert!(rel_err(fid_ref_feats, want_fid) <= 1e-3);

    // 3. KID with one full subset = torchmetrics' poly_mmd
    let kid = kid_from_features(&sets[0].0, &sets[1].0, &one_subset(7)).unwrap();
    println!("KID rust {} torchmetrics {want_kid} rel {:e}", kid.kid_mean, rel_err(kid.kid_mean, want_kid));
    assert!(rel_err(kid.kid_mean, want_kid) <= 1e-3);
    assert_eq!(kid.kid_std, 0.0);
    let kid_ref = kid_from_features(&sets[0].1, &sets[1].1, &one_subset(7)).unwrap();
    assert!(rel_err(kid_ref.kid_mean, want_kid) <= 1e-9, "{} vs {want_kid}", kid_ref.kid_mean);

    // 4. merging shards is bit-identical to one pass
    let all = &sets[0].0.features;
    let d = 2048;
    let tmp = tempfile::tempdir().unwrap();
    let mut shard_paths = Vec::new();
    for (i, (a, b)) in [(0, 2), (2, 3), (3, 7)].iter().enumerate() {
        let s = FeatureStats::from_features(&all[a * d..b * d], d);
        let p = tmp.path().join(format!("s{i}.npz"));
        match s {
            Ok(s) => s.write_npz(&p).unwrap(),
            // a one-frame shard cannot have a covariance, but its sums merge fine
            Err(_) => {
                let mut sums = wanrt_eval::stats::FeatureSums::new(d);
                sums.add_rows(&all[a * d..b * d]).unwrap();
                assert!(sums.stats().is_err());
                continue;
            }
        }
        shard_paths.push(p);
    }
    // shards 0 and 2 only (shard 1 has one frame): compare with the same rows in one pass
    let rows: Vec<f32> = [&all[0..2 * d], &all[3 * d..7 * d]].concat();
    let one = FeatureStats::from_features(&rows, d).unwrap();
    let refs: Vec<&std::path::Path> = shard_paths.iter().map(|p| p.as_path()).collect();
    let merged = merge_stats(&refs).unwrap();
    assert_eq!(merged.n, Some(6));
    assert!(merged.mu.iter().zip(&one.mu).all(|(a, b)| a.to_bits() == b.to_bits()));
    assert!(merged.sigma.iter().zip(&one.sigma).all(|(a, b)| a.to_bits() == b.to_bits()));
    // the npz round-trips and is read back as FID input
    let p = tmp.path().join("one.npz");
    one.write_npz(&p).unwrap();
    let back = FeatureStats::read_npz(&p).unwrap();
    assert_eq!(back.mu, one.mu);
    assert_eq!(back.sigma, one.sigma);
    assert_eq!(back.sums, one.sums);

    // 5. fid_from_paths with an npz on one side equals the folder result
    let real_npz = tmp.path().join("real.npz");
    s_real.write_npz(&real_npz).unwrap();
    let r = fid_from_paths(Some(&pth), &real_npz, &dir.join("fake"), &opts, &pb).unwrap();
    assert!(rel_err(r.fid, want_fid) <= 1e-3, "{} vs {want_fid}", r.fid);
    assert_eq!(r.real.source, "npz");
    assert_eq!(r.fake.items, Some(7));
    assert_eq!(r.fake.frames, Some(7));
}

#[test]
fn frechet_and_kid_match_on_small_cases() {
    let cases = json(&fixtures().join("fid/frechet_cases.json"));
    for (i, c) in cases.as_array().unwrap().iter().enumerate() {
        let rows = |k: &str| -> Vec<Vec<f64>> {
            c[k].as_array()
                .unwrap()
                .iter()
                .map(|r| r.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect())
                .collect()
        };
        let (a, b) = (rows("a"), rows("b"));
        let (m1, s1) = mean_cov(&a);
        let (m2, s2) = mean_cov(&b);
        let fid = frechet_distance(&m1, &s1, &m2, &s2).unwrap();
        let want = c["fid"].as_f64().unwrap();
        println!("case {i}: fid {fid} want {want} rel {:e}", rel_err(fid, want));
        assert!(rel_err(fid, want) <= 1e-6, "case {i}");
        let m = a.len().min(b.len());
        let x: Vec<&[f64]> = a[..m].iter().map(|r| r.as_slice()).collect();
        let y: Vec<&[f64]> = b[..m].iter().map(|r| r.as_slice()).collect();
        let kid = poly_mmd(&x, &y, 3, None, 1.0);
        let want = c["kid"].as_f64().unwrap();
        assert!(rel_err(kid, want) <= 1e-9, "case {i}: kid {kid} want {want}");
    }
}

#[test]
fn video_items_and_frame_sampling_feed_the_same_network() {
    // an NPY video of fixture frames [img_00, img_04, img_04] (both 64x64); with
    // --frames-per-video 2 the frames kept are round(i·2/1) = 0, 2 → img_00, img_04.
    let dir = fixtures().join("fid");
    let a = wanrt_media::read_image(dir.join("real/img_00.png")).unwrap();
    let b = wanrt_media::read_image(dir.join("real/img_04.png")).unwrap();
    let data = [a.data(), b.data(), b.data()].concat();
    let tmp = tempfile::tempdir().unwrap();
    let arr = wanrt_io::NpyArray::new(vec![3, 64, 64, 3], data).unwrap();
    wanrt_io::write_npy(tmp.path().join("clip.npy"), &arr).unwrap();
    let net = FidInception::load(&dir.join("pt_inception-random.pth")).unwrap();
    let opts = FeatureOptions { frames_per_video: Some(2), batch: 1 };
    let got = compute_features(&net, tmp.path(), &opts, &ProgressBar::hidden()).unwrap();
    assert_eq!((got.items, got.frames), (1, 2));
    let want = read_features_npy(&dir.join("real_features.npy")).unwrap();
    for (k, row) in [0usize, 4].iter().enumerate() {
        let g = &got.features[k * 2048..(k + 1) * 2048];
        let w = &want.features[row * 2048..(row + 1) * 2048];
        let err = g.iter().zip(w).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
        assert!(err <= 1e-3, "frame {k}: max-abs {err}");
    }
}
