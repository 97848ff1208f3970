//! `wanrt eval domain`: the Rust port of tools/demo/evaluator.py against the Python
//! evaluator on held-out generated clips (lossless GIFs), and its accuracy on them.
//! Fixtures: `tools/fixtures/make_domain_fixtures.py` (reads models/demo-evaluator).

mod common;

use std::path::{Path, PathBuf};

use common::json;
use indicatif::ProgressBar;
use wanrt_eval::domain::{domain_eval, evaluate_path, feature_fd, DomainEvaluator};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/domain")
}

fn evaluator_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/demo-evaluator")
}

fn fnv1a64(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    format!("{h:016x}")
}

/// The fixtures were made with the evaluator now in models/demo-evaluator.
fn check_evaluator_unchanged(refj: &serde_json::Value) {
    for name in ["config.json", "model.safetensors"] {
        let want = refj["evaluator_fnv1a64"][name].as_str().unwrap();
        assert_eq!(
            fnv1a64(&evaluator_dir().join(name)),
            want,
            "models/demo-evaluator/{name} changed since fixtures/domain was made: \
             re-run .venv/bin/python tools/fixtures/make_domain_fixtures.py"
        );
    }
}

fn npy(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let a = wanrt_io::read_npy(path).unwrap();
    (a.shape().to_vec(), a.to_f32_vec())
}

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn features_and_logits_match_the_python_evaluator() {
    let d = fixtures();
    let refj = json(&d.join("reference.json"));
    check_evaluator_unchanged(&refj);
    let ev = DomainEvaluator::load(&evaluator_dir()).unwrap();
    assert_eq!(ev.feature_dim(), 128);
    let names: Vec<&str> = ev.heads.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(names, ["shape", "colour", "direction", "background"]);
    let mut per_side = Vec::new();
    for side in ["videos", "real"] {
        // batch 7: uneven last batch
        let out = evaluate_path(&ev, &d.join(side), None, 7, &ProgressBar::hidden()).unwrap();
        let (fs, want_f) = npy(&d.join(format!("{side}_features.npy")));
        let (ls, want_l) = npy(&d.join(format!("{side}_logits.npy")));
        let n = out.keys.len();
        assert_eq!(fs, [n, 128]);
        assert_eq!(ls, [n, 16]);
        let ef = max_abs(&out.output.features, &want_f);
        // logits: the heads concatenated in config order, per sample
        let mut got_l = Vec::with_capacity(n * 16);
        for i in 0..n {
            for (h, l) in ev.heads.iter().zip(&out.output.logits) {
                let k = h.classes.len();
                got_l.extend_from_slice(&l[i * k..(i + 1) * k]);
            }
        }
        let el = max_abs(&got_l, &want_l);
        let fmax = want_f.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let lmax = want_l.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        println!("{side}: features max-abs {ef:e} (max |f| {fmax}), logits max-abs {el:e} (max |l| {lmax})");
        assert!(ef <= 1e-4, "{side}: features max-abs {ef}");
        assert!(el <= 1e-4, "{side}: logits max-abs {el}");
        // predictions equal the Python evaluator's
        for (i, item) in refj[side]["items"].as_array().unwrap().iter().enumerate() {
            assert_eq!(out.keys[i], item["file"].as_str().unwrap());
            let pred = ev.predict(&out.output, i);
            for (h, &c) in ev.heads.iter().zip(&pred) {
                assert_eq!(h.classes[c], item["predicted"][&h.name].as_str().unwrap(), "{side} {i} {}", h.name);
            }
        }
        per_side.push(out);
    }
    // the domain FD on the Rust features vs the Python reference (float64, exact trace)
    let fd = feature_fd(&per_side[0].output.features, &per_side[1].output.features, 128, (&d, &d)).unwrap();
    let want = refj["fd_videos_vs_real"].as_f64().unwrap();
    println!("fd {fd} want {want} rel {:e}", (fd - want).abs() / want);
    assert!((fd - want).abs() <= 1e-4 * want, "fd {fd} vs {want}");
}

/// Issue 7: the evaluator reaches ≥ 95% per-attribute accuracy on held-out generated
/// clips (60 clips of 60 captions, seeds never used in training).
#[test]
fn held_out_accuracy_and_report_shape() {
    let d = fixtures();
    let ev = DomainEvaluator::load(&evaluator_dir()).unwrap();
    let videos = d.join("videos");
    let r = domain_eval(
        &ev,
        &videos,
        Some(&videos.join("prompts.json")),
        Some(&d.join("real")),
        None,
        16,
        &ProgressBar::hidden(),
    )
    .unwrap();
    let attrs = r.attributes.as_ref().unwrap();
    println!("prompt accuracy {:?}, attributes {:?}, fd {:?}", r.prompt_accuracy, attrs, r.fd);
    assert_eq!(r.items.len(), 60);
    for (k, acc) in &attrs.0 {
        assert!(*acc >= 0.95, "{k}: accuracy {acc} < 0.95 on held-out clips");
    }
    assert!(r.prompt_accuracy.unwrap() >= 0.9);
    assert!(r.fd.unwrap() > 0.0);
    assert_eq!(r.videos.items, Some(60));
    assert_eq!(r.videos.frames, Some(60 * 17));
    assert_eq!(r.real.as_ref().unwrap().items, Some(30));
    // the JSON shape of the CLI contract
    let v = serde_json::to_value(&r).unwrap();
    for k in ["prompt_accuracy", "attributes", "fd", "items"] {
        assert!(v.get(k).is_some(), "missing `{k}`");
    }
    let item = &v["items"][0];
    for k in ["file", "caption", "predicted", "correct"] {
        assert!(item.get(k).is_some(), "item misses `{k}`");
    }
    assert!(item["predicted"]["shape"].is_string());
    assert_eq!(v["attributes"].as_object().unwrap().len(), 4);
    // --batch does not change anything
    let r1 =
        domain_eval(&ev, &videos, Some(&videos.join("prompts.json")), None, None, 1, &ProgressBar::hidden()).unwrap();
    let a = evaluate_path(&ev, &d.join("real"), None, 1, &ProgressBar::hidden()).unwrap();
    let b = evaluate_path(&ev, &d.join("real"), None, 30, &ProgressBar::hidden()).unwrap();
    assert!(a.output.features.iter().zip(&b.output.features).all(|(x, y)| x.to_bits() == y.to_bits()));
    assert_eq!(a.output.logits, b.output.logits);
    assert_eq!(r1.prompt_accuracy, r.prompt_accuracy);
    assert!(r1.fd.is_none() && r1.real.is_none());
}

#[test]
fn captions_and_bad_inputs() {
    let ev = DomainEvaluator::load(&evaluator_dir()).unwrap();
    let l = ev.parse_caption("a red circle moves left on a gray background").unwrap();
    let names: Vec<String> = ev.heads.iter().zip(&l).map(|(h, &c)| h.classes[c].clone()).collect();
    assert_eq!(names, ["circle", "red", "left", "gray"]);
    assert!(ev.parse_caption("a red circle moves left on a pink background").is_none());
    assert!(ev.parse_caption("a cat").is_none());

    let tmp = tempfile::tempdir().unwrap();
    // a caption outside the template: clear error naming the item
    let src = fixtures().join("videos/clip_000.gif");
    let vids = tmp.path().join("v");
    std::fs::create_dir(&vids).unwrap();
    std::fs::copy(&src, vids.join("a.gif")).unwrap();
    std::fs::copy(fixtures().join("videos/clip_001.gif"), vids.join("b.gif")).unwrap();
    let p = tmp.path().join("p.json");
    std::fs::write(&p, r#"{"a.gif": "a photo of a cat", "b.gif": "a red circle moves left on a gray background"}"#)
        .unwrap();
    let e = domain_eval(&ev, &vids, Some(&p), None, None, 1, &ProgressBar::hidden()).unwrap_err();
    assert!(e.to_string().contains("a.gif") && e.to_string().contains("template"), "{e}");
    // a missing caption
    std::fs::write(&p, r#"{"a.gif": "a red circle moves left on a gray background"}"#).unwrap();
    let e = domain_eval(&ev, &vids, Some(&p), None, None, 1, &ProgressBar::hidden()).unwrap_err();
    assert!(e.to_string().contains("b.gif"), "{e}");
    // a clip of the wrong size
    let big = tmp.path().join("big");
    std::fs::create_dir(&big).unwrap();
    let v = wanrt_media::Video::new(17, 64, 64, vec![0; 17 * 64 * 64 * 3]).unwrap();
    wanrt_media::write_npy_video(big.join("x.npy"), &v).unwrap();
    let e = domain_eval(&ev, &big, None, None, None, 1, &ProgressBar::hidden()).unwrap_err();
    assert!(e.to_string().contains("17x32x32"), "{e}");
    // a real side of one item cannot give a covariance
    let one = tmp.path().join("one");
    std::fs::create_dir(&one).unwrap();
    std::fs::copy(&src, one.join("a.gif")).unwrap();
    let e = domain_eval(&ev, &vids, None, Some(&one), None, 1, &ProgressBar::hidden()).unwrap_err();
    assert!(e.to_string().contains("need at least 2"), "{e}");
    // not an evaluator folder
    assert!(DomainEvaluator::load(tmp.path()).is_err());
}
