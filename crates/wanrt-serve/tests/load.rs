//! Loopback load test: 20 clients × 10 jobs on the demo model. Every job completes, ids
//! are unique, no answer is a 5xx, every video downloads.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const CLIENTS: usize = 20;
const JOBS: usize = 10;

async fn client(base: String, c: usize) -> (Vec<String>, Vec<u16>) {
    let http = reqwest::Client::new();
    let mut statuses = Vec::new();
    let mut ids = Vec::new();
    for j in 0..JOBS {
        let body = json!({"prompt": format!("client {c} job {j}"), "num_inference_steps": 4, "seed": c * 100 + j});
        let r = http.post(format!("{base}/v1/videos")).json(&body).send().await.unwrap();
        statuses.push(r.status().as_u16());
        let v: Value = r.json().await.unwrap();
        ids.push(v["id"].as_str().unwrap_or_else(|| panic!("{v}")).to_string());
    }
    for id in &ids {
        let t0 = Instant::now();
        loop {
            let r = http.get(format!("{base}/v1/videos/{id}")).send().await.unwrap();
            statuses.push(r.status().as_u16());
            let v: Value = r.json().await.unwrap();
            match v["status"].as_str().unwrap() {
                "completed" => break,
                "queued" | "in_progress" => {}
                other => panic!("job {id} ended {other}: {v}"),
            }
            assert!(t0.elapsed() < Duration::from_secs(300), "job {id} not done: {v}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let r = http.get(format!("{base}/v1/videos/{id}/content")).send().await.unwrap();
        statuses.push(r.status().as_u16());
        let bytes = r.bytes().await.unwrap();
        assert_eq!(&bytes[4..8], b"ftyp", "{id}: not an MP4");
    }
    (ids, statuses)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_clients_ten_jobs_each() {
    let tmp = tempfile::tempdir().unwrap();
    let s = start(&args(tmp.path())).await;
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..CLIENTS).map(|c| tokio::spawn(client(s.base.clone(), c))).collect();
    let mut ids = Vec::new();
    let mut statuses = Vec::new();
    for t in tasks {
        let (i, st) = t.await.unwrap();
        ids.extend(i);
        statuses.extend(st);
    }
    let secs = t0.elapsed().as_secs_f64();
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), CLIENTS * JOBS, "ids unique");
    let server_errors: Vec<&u16> = statuses.iter().filter(|s| **s >= 500).collect();
    assert!(server_errors.is_empty(), "5xx answers: {server_errors:?}");
    assert!(statuses.iter().all(|s| [200, 202].contains(s)), "unexpected statuses");
    let (mp4s, _) = outputs(&tmp.path().join("videos"));
    assert_eq!(mp4s.len(), CLIENTS * JOBS);
    let (_, _, m) = s.get_bytes("/metrics").await;
    let m = String::from_utf8(m).unwrap();
    assert!(m.contains(&format!("wanrt_jobs{{status=\"completed\"}} {}\n", CLIENTS * JOBS)), "{m}");
    eprintln!(
        "load: {} videos in {secs:.1} s ({:.0} videos/hour, 4 steps each)",
        CLIENTS * JOBS,
        (CLIENTS * JOBS) as f64 / secs * 3600.0
    );
    s.shutdown().await;
}
