//! The `wanrt eval` CLI contract through clap: flags parse, commands run, errors are
//! errors (the binary prints them as one line and exits non-zero).

mod common;

use clap::Parser;
use common::fixtures;
use wanrt_eval::cli::{run, EvalCommand};
use wanrt_eval::stats::FeatureStats;

#[derive(Parser)]
struct Wrapper {
    #[command(subcommand)]
    cmd: EvalCommand,
}

fn cmd(args: &[&str]) -> EvalCommand {
    let mut v = vec!["wanrt-eval"];
    v.extend_from_slice(args);
    Wrapper::try_parse_from(v).unwrap_or_else(|e| panic!("{e}")).cmd
}

fn s(p: &std::path::Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn compare_with_lpips_and_stats_merge_and_fid_from_npz() {
    let c = fixtures().join("lpips");
    run(cmd(&[
        "compare",
        "--reference",
        s(&c.join("ref")),
        "--candidate",
        s(&c.join("cand")),
        "--lpips",
        s(&c.join("lpips_alex_random.pth")),
        "--lpips-net",
        "alex",
        "--json",
    ]))
    .unwrap();

    // stats from feature files is the library path; here: merge + fid on npz files
    let tmp = tempfile::tempdir().unwrap();
    let feats = wanrt_eval::fid::read_features_npy(&fixtures().join("fid/real_features.npy")).unwrap();
    let d = feats.dim;
    let (a, b) = (tmp.path().join("a.npz"), tmp.path().join("b.npz"));
    FeatureStats::from_features(&feats.features[..3 * d], d).unwrap().write_npz(&a).unwrap();
    FeatureStats::from_features(&feats.features[3 * d..], d).unwrap().write_npz(&b).unwrap();
    let all = tmp.path().join("all.npz");
    run(cmd(&["stats", "--merge", s(&a), s(&b), "-o", s(&all), "--json"])).unwrap();
    if let Ok(dump) = std::env::var("WANRT_EVAL_DUMP_NPZ") {
        // for checking by hand that numpy / pytorch-fid load it
        std::fs::copy(&all, dump).unwrap();
    }
    let merged = FeatureStats::read_npz(&all).unwrap();
    let one = FeatureStats::from_features(&feats.features, d).unwrap();
    assert_eq!(merged.n, Some(7));
    assert!(merged.sigma.iter().zip(&one.sigma).all(|(x, y)| x.to_bits() == y.to_bits()));
    run(cmd(&["fid", "--real", s(&all), "--fake", s(&a), "--json"])).unwrap();
    // kid on feature files
    let ff = fixtures().join("fid/fake_features.npy");
    let rf = fixtures().join("fid/real_features.npy");
    run(cmd(&["kid", "--real", s(&rf), "--fake", s(&ff), "--subsets", "3", "--subset-size", "5", "--json"])).unwrap();
    // too large a subset is a clear error
    let e = run(cmd(&["kid", "--real", s(&rf), "--fake", s(&ff), "--json"])).unwrap_err();
    assert!(e.to_string().contains("subset"), "{e}");
}

#[test]
fn missing_weights_are_errors_naming_the_usual_file() {
    let f = fixtures().join("fid");
    let e = run(cmd(&["stats", s(&f.join("real")), "-o", "/nonexistent/x.npz"])).unwrap_err();
    assert!(e.to_string().contains("pt_inception-2015-12-05-6726825d.pth"), "{e}");
    let e = run(cmd(&["fvd", "--real", "a", "--fake", "b"])).unwrap_err();
    assert!(e.to_string().contains("i3d_pretrained_400.pt"), "{e}");
    let e = run(cmd(&["clipscore", "--videos", "a", "--prompts", "p.json"])).unwrap_err();
    assert!(e.to_string().contains("--clip"), "{e}");
}
