//! CLIPScore parity with torchmetrics 1.9.0 on a tiny random CLIP (transformers 5.24 folder).
//! Fixtures: `tools/fixtures/make_eval_fixtures.py clip` (`clip_fixtures()`): frames at the
//! crop size, and frames of other sizes and aspect ratios (the processor's shortest-side
//! bicubic resize, up and down, and center crop).

mod common;

use common::{fixtures, json};
use indicatif::ProgressBar;
use wanrt_eval::clipscore::{clipscore, ClipScorer};

#[test]
fn clipscore_matches_torchmetrics() {
    let dir = fixtures().join("clip");
    let refj = json(&dir.join("reference.json"));
    let scorer = ClipScorer::load(&dir.join("tiny-clip")).unwrap();
    let r =
        clipscore(&scorer, &dir.join("videos"), &dir.join("prompts.json"), None, 1, &ProgressBar::hidden()).unwrap();
    let want: Vec<&serde_json::Value> = refj["items"].as_array().unwrap().iter().collect();
    assert_eq!(r.items.len(), want.len());
    // --batch 3 (across items, uneven last batch) gives the same scores bit for bit
    let r3 =
        clipscore(&scorer, &dir.join("videos"), &dir.join("prompts.json"), None, 3, &ProgressBar::hidden()).unwrap();
    for (a, b) in r.items.iter().zip(&r3.items) {
        assert_eq!(a.file, b.file);
        assert!(a.per_frame.iter().zip(&b.per_frame).all(|(x, y)| x.to_bits() == y.to_bits()), "{}", a.file);
    }
    assert_eq!(r.clip_score.to_bits(), r3.clip_score.to_bits());
    for w in &want {
        let key = w["file"].as_str().unwrap();
        let got = r.items.iter().find(|i| i.file == key).unwrap_or_else(|| panic!("no item {key}"));
        let ids: Vec<u32> = w["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        assert_eq!(scorer.token_ids(&got.caption).unwrap(), ids, "{key}: token ids");
        let ws: Vec<f64> = w["pair_scores"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        assert_eq!(got.per_frame.len(), ws.len(), "{key}");
        for (g, e) in got.per_frame.iter().zip(&ws) {
            println!("{key}: {g} want {e} diff {:e}", (g - e).abs());
            assert!((g - e).abs() <= 1e-3, "{key}: {g} vs {e}");
        }
    }
    let want_total = refj["clip_score"].as_f64().unwrap();
    assert!((r.clip_score - want_total).abs() <= 1e-3, "{} vs {want_total}", r.clip_score);
}
