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
    // the npz layout: pytorch-fid's mu/sigma (f64) + exact sums, no redundant float copy
    let mut z = wanrt_io::NpzReader::open(&all).unwrap();
    let mut names = z.names();
    names.sort();
    assert_eq!(names, ["fixed_point_bits", "mu", "n", "sigma", "sum", "sum_outer"]);
    assert_eq!(z.read("sigma").unwrap().dtype(), wanrt_io::NpyDType::F64);
    assert_eq!(z.read("sigma").unwrap().shape(), [d, d]);
    assert_eq!(z.read("sum_outer").unwrap().shape(), [d * (d + 1) / 2, 2]);
    assert_eq!(z.read("sum").unwrap().shape(), [d, 2]);
    let size = std::fs::metadata(&all).unwrap().len();
    assert!(size < 68_000_000, "stats npz of {size} bytes");
    // files of the earlier layout (f64 sum/sum_outer + sum_fixed/sum_outer_fixed) still merge
    let old = tmp.path().join("old.npz");
    let arrays: Vec<(String, wanrt_io::NpyArray)> = wanrt_io::read_npz(&b).unwrap();
    let mut renamed: Vec<(&str, wanrt_io::NpyArray)> = Vec::new();
    for (k, v) in arrays {
        match k.as_str() {
            "sum" => renamed.push(("sum_fixed", v)),
            "sum_outer" => renamed.push(("sum_outer_fixed", v)),
            "fixed_point_bits" => {}
            "mu" => renamed.push(("mu", v)),
            "sigma" => renamed.push(("sigma", v)),
            "n" => renamed.push(("n", v)),
            _ => unreachable!(),
        }
    }
    renamed.push(("sum", wanrt_io::NpyArray::new(vec![d], vec![0.0f64; d]).unwrap()));
    let refs: Vec<(&str, &wanrt_io::NpyArray)> = renamed.iter().map(|(k, v)| (*k, v)).collect();
    wanrt_io::write_npz(&old, &refs).unwrap();
    let merged_old = wanrt_eval::stats::merge_stats(&[a.as_path(), old.as_path()]).unwrap();
    assert!(merged_old.sigma.iter().zip(&one.sigma).all(|(x, y)| x.to_bits() == y.to_bits()));
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
    // A writable output: output paths are checked before the weights are looked for.
    let out = std::env::temp_dir().join(format!("wanrt-eval-missing-{}.npz", std::process::id()));
    let e = run(cmd(&["stats", s(&f.join("real")), "-o", s(&out)])).unwrap_err();
    assert!(!out.exists());
    assert!(e.to_string().contains("pt_inception-2015-12-05-6726825d.pth"), "{e}");
    let e = run(cmd(&["fvd", "--real", "a", "--fake", "b"])).unwrap_err();
    assert!(e.to_string().contains("i3d_pretrained_400.pt"), "{e}");
    let e = run(cmd(&["clipscore", "--videos", "a", "--prompts", "p.json"])).unwrap_err();
    assert!(e.to_string().contains("--clip"), "{e}");
}

#[test]
fn domain_command_runs_with_json() {
    let d = fixtures().join("../domain");
    let ev = fixtures().join("../../models/demo-evaluator");
    let videos = d.join("videos");
    run(cmd(&[
        "domain",
        "--evaluator",
        s(&ev),
        "--videos",
        s(&videos),
        "--prompts",
        s(&videos.join("prompts.json")),
        "--real",
        s(&d.join("real")),
        "--batch",
        "8",
        "--json",
    ]))
    .unwrap();
    // human output, no prompts, no real
    run(cmd(&["domain", "--evaluator", s(&ev), "--videos", s(&d.join("real"))])).unwrap();
    // a folder that is no evaluator
    let e = run(cmd(&["domain", "--evaluator", s(&d), "--videos", s(&videos)])).unwrap_err();
    assert!(e.to_string().contains("config.json"), "{e}");
}
