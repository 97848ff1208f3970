//! Load test on loopback: 50 concurrent raters × 40 votes each (with retried duplicate
//! submissions mixed in) must store exactly 2000 votes, balanced over the pairs.

mod common;

use std::time::Instant;

use common::*;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_raters_forty_votes_each() {
    let tmp = tempfile::tempdir().unwrap();
    let s = make_study(tmp.path(), &["base", "opt"], 48);
    let server = wanrt_review::start(&serve_args(&s, "load")).await.unwrap();
    let base = format!("http://{}", server.addr);
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..50 {
        let base = base.clone();
        tasks.push(tokio::spawn(async move {
            let mut r = Rater::new(&base);
            r.join(&format!("rater-{i:02}")).await;
            let mut acked = 0;
            for k in 0..40 {
                let n = r.next().await;
                assert_eq!(n["done"], false, "rater {i} ran out of pairs at {k}");
                let a = n["assignment"].as_str().unwrap().to_string();
                let sid = unique_sid();
                let res = r.vote(&a, &sid, ["left", "right", "tie"][(i + k) % 3]).await;
                assert_eq!(res.status(), 200, "rater {i} vote {k}");
                let v: Value = res.json().await.unwrap();
                assert_eq!(v["duplicate"], false);
                acked += 1;
                if k % 10 == 3 {
                    // A retry of the same submission is acknowledged, never counted.
                    let v: Value = r.vote(&a, &sid, "left").await.json().await.unwrap();
                    assert_eq!(v["duplicate"], true);
                }
            }
            acked
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    let elapsed = t0.elapsed();
    eprintln!("load: 2000 votes from 50 concurrent raters in {elapsed:.2?}");
    assert_eq!(total, 2000);
    server.shutdown().await.unwrap();

    // Count in the database itself.
    let conn = rusqlite::Connection::open(&s.db).unwrap();
    let n: i64 = conn.query_row("SELECT COUNT(*) FROM votes", [], |r| r.get(0)).unwrap();
    assert_eq!(n, 2000);
    let per_rater: Vec<i64> = conn
        .prepare("SELECT COUNT(*) FROM votes GROUP BY rater_id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(per_rater.len(), 50);
    assert!(per_rater.iter().all(|&c| c == 40));
    // No rater rated a pair twice.
    let dup: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM (SELECT rater_id, pair_id FROM votes GROUP BY 1, 2 HAVING COUNT(*) > 1)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(dup, 0);
    // Balanced: 2000 votes over 48 pairs ≈ 41.7 each.
    let per_pair: Vec<i64> = conn
        .prepare("SELECT (SELECT COUNT(*) FROM votes v WHERE v.pair_id = p.id) FROM pairs p")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let (min, max) = (*per_pair.iter().min().unwrap(), *per_pair.iter().max().unwrap());
    eprintln!("load: votes per pair {min}..{max}");
    assert!(max - min <= 3, "unbalanced: {min}..{max}");
    let ok: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(ok, "ok");
    drop(conn);

    // The exporter reads the same database.
    let out = tmp.path().join("results.json");
    let plot = tmp.path().join("results.png");
    wanrt_review::export(&wanrt_review::cli::ExportArgs {
        db: s.db.clone(),
        study: "load".into(),
        format: wanrt_review::cli::ExportFormat::Json,
        json: false,
        output: Some(out.clone()),
        raw: false,
        plot: Some(plot.clone()),
        bootstrap: 200,
        seed: 3,
    })
    .unwrap();
    let r: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(r["n_votes"], 2000);
    assert_eq!(r["n_raters"], 50);
    assert!(std::fs::read(&plot).unwrap().starts_with(b"\x89PNG"));
}
