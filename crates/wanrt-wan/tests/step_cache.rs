//! The step cache through the whole pipeline on a tiny random model.
// Tests read values to compare them; the lint forbids it in model code only.
#![allow(clippy::disallowed_methods)]

mod common;

use common::fixture;
use wanrt_wan::model::WanModel;
use wanrt_wan::pipeline::GenerateParams;

fn params(threshold: Option<f64>) -> GenerateParams {
    let mut p = GenerateParams::new("a small red fox runs through the snow");
    p.steps = Some(8);
    p.num_frames = Some(5);
    p.height = Some(32);
    p.width = Some(32);
    p.seed = 3;
    p.cache_threshold = threshold;
    p
}

#[test]
fn cache_skips_steps_and_threshold_zero_is_exact() {
    let model = WanModel::load(&fixture("a"), |_| {}).unwrap();
    let plain = model.generate(&params(None), &mut ()).unwrap();
    assert_eq!((plain.transformer_evals, plain.steps_skipped), (8, 0));
    let zero = model.generate(&params(Some(0.0)), &mut ()).unwrap();
    assert_eq!(zero.video.data(), plain.video.data(), "threshold 0 must not change the result");

    // A huge threshold reuses every step but the first and the last.
    let all = model.generate(&params(Some(1e9)), &mut ()).unwrap();
    assert_eq!((all.transformer_evals, all.steps_skipped), (2, 6));
    assert!(all.video.data().iter().all(|v| v.is_finite()));
    assert!(all.video.max_abs_diff(&plain.video).unwrap() > 0.0);

    // In between, more skipping never means more evaluations.
    let mut last_evals = usize::MAX;
    for t in [0.05, 0.2, 1.0] {
        let out = model.generate(&params(Some(t)), &mut ()).unwrap();
        assert_eq!(out.transformer_evals + out.steps_skipped, 8);
        assert!(out.transformer_evals <= last_evals, "threshold {t}");
        last_evals = out.transformer_evals;
    }
}

/// CUDA graph replays are refused, before any work, on a backend that cannot capture and with
/// the step cache (whose skip decision a graph does not hold).
#[test]
fn cuda_graphs_are_refused_where_they_cannot_run() {
    let model = WanModel::load(&fixture("a"), |_| {}).unwrap();
    let p = GenerateParams { cuda_graph: true, ..params(None) };
    let e = model.resolve(&p).unwrap_err().to_string();
    assert!(e.contains("need the cuda backend") && e.contains("runs on cpu"), "{e}");
    assert!(model.generate(&p, &mut ()).is_err());
    assert!(!model.resolve(&params(None)).unwrap().cuda_graph);
}
