//! The command line: `export` outputs and one-line errors, through the real binary.

mod common;

use std::process::Command;

use common::*;
use serde_json::Value;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_wanrt-review-server"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_formats_and_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let s = make_study(tmp.path(), &["base", "opt"], 5);
    let server = wanrt_review::start(&serve_args(&s, "cli")).await.unwrap();
    let base = format!("http://{}", server.addr);
    for (i, name) in ["r1", "r2", "r3"].iter().enumerate() {
        let mut r = Rater::new(&base);
        r.join(name).await;
        for k in 0..5 {
            let n = r.next().await;
            let res =
                r.vote(n["assignment"].as_str().unwrap(), &unique_sid(), ["left", "right", "tie"][(i + k) % 3]).await;
            assert_eq!(res.status(), 200);
        }
    }
    // Export while the server is still running (WAL: readers do not block).
    let out =
        bin().args(["export", "--db"]).arg(&s.db).args(["--study", "cli", "--bootstrap", "100"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let csv = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "section,criterion,variant,opponent,wins,ties,losses,n,value,ci_low,ci_high");
    assert!(lines.iter().any(|l| l.starts_with("pair,overall,base,opt,") && l.contains(",15,")));
    assert!(lines.iter().any(|l| l.starts_with("fleiss_kappa,overall,")));
    assert!(lines.iter().any(|l| l.starts_with("likert,,base,")));
    assert!(lines.iter().all(|l| l.split(',').count() == 11));

    let json_path = tmp.path().join("out/results.json");
    std::fs::create_dir_all(json_path.parent().unwrap()).unwrap();
    let plot = tmp.path().join("out/plot.png");
    let out = bin()
        .args(["export", "--format", "json", "--db"])
        .arg(&s.db)
        .args(["--study", "cli", "--seed", "9", "-o"])
        .arg(&json_path)
        .arg("--plot")
        .arg(&plot)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stdout.is_empty());
    let r: Value = serde_json::from_slice(&std::fs::read(&json_path).unwrap()).unwrap();
    assert_eq!(r["n_votes"], 15);
    assert_eq!(r["method"]["seed"], 9);
    assert_eq!(r["criteria"].as_array().unwrap().len(), 4);
    assert!(std::fs::read(&plot).unwrap().starts_with(b"\x89PNG"));
    // Same seed, same numbers.
    let again =
        bin().args(["export", "--json", "--db"]).arg(&s.db).args(["--study", "cli", "--seed", "9"]).output().unwrap();
    let r2: Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(r["criteria"], r2["criteria"]);

    let out = bin().args(["export", "--raw", "--db"]).arg(&s.db).args(["--study", "cli"]).output().unwrap();
    let raw = String::from_utf8(out.stdout).unwrap();
    assert_eq!(raw.lines().count(), 16);
    assert!(raw.starts_with("id,submission_id,created_at,rater,file,variant_a,variant_b,left,overall"));
    server.shutdown().await.unwrap();

    // Errors: one line, non-zero exit, naming the problem.
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["export".into(), "--db".into(), s.db.display().to_string(), "--study".into(), "nope".into()],
            "no study 'nope' in the database (studies: cli)",
        ),
        (
            vec![
                "export".into(),
                "--db".into(),
                tmp.path().join("none.sqlite").display().to_string(),
                "--study".into(),
                "x".into(),
            ],
            "no such database file",
        ),
        (
            vec![
                "serve".into(),
                "--study".into(),
                "x".into(),
                "--variants".into(),
                format!("base={}", s.variants[0].1.display()),
                format!("opt={}", tmp.path().join("missing").display()),
                "--prompts".into(),
                s.prompts.display().to_string(),
                "--db".into(),
                tmp.path().join("new.sqlite").display().to_string(),
            ],
            "variant 'opt': folder",
        ),
    ];
    for (args, want) in cases {
        let out = bin().args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(err.starts_with("error: ") && err.contains(want), "{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    }
    assert!(!tmp.path().join("new.sqlite").exists());
}
