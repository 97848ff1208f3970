//! The shared PostgreSQL queue against a real server: an HTTP front and two `--worker-only`
//! processes share one queue and one outputs folder. Both workers take jobs; a worker
//! killed with SIGKILL mid-job loses its lease and the other one re-runs that job, which
//! completes exactly once; a cancel made at the front stops a job running in a worker.
//!
//! Needs WANRT_TEST_POSTGRES (a postgres:// URL of a server where it may create databases);
//! `.ci/run` starts one with `tools/ci/postgres.sh`. Without it the test is skipped, except
//! under CI (CI set), where that is an error.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

/// A fresh database on the test server; dropped by [`Db::drop_now`].
struct Db {
    admin: String,
    name: String,
    url: String,
}

fn server_url() -> Option<String> {
    match std::env::var("WANRT_TEST_POSTGRES") {
        Ok(u) if !u.is_empty() => Some(u),
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "WANRT_TEST_POSTGRES is not set: .ci/run starts PostgreSQL with tools/ci/postgres.sh"
            );
            eprintln!("skipped: set WANRT_TEST_POSTGRES=postgres://… (see tools/ci/postgres.sh) to run this test");
            None
        }
    }
}

impl Db {
    fn create(admin: &str) -> Db {
        let name = format!("wanrt_test_{}_{}", std::process::id(), rand::random::<u32>());
        let mut c = postgres::Client::connect(admin, postgres::NoTls).expect("connect to WANRT_TEST_POSTGRES");
        c.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
        let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap();
        Db { admin: admin.to_string(), url: format!("{base}/{name}"), name }
    }

    fn query(&self, sql: &str) -> Vec<postgres::Row> {
        let mut c = postgres::Client::connect(&self.url, postgres::NoTls).unwrap();
        c.query(sql, &[]).unwrap()
    }

    fn drop_now(&self) {
        let mut c = postgres::Client::connect(&self.admin, postgres::NoTls).unwrap();
        c.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)).unwrap();
    }
}

/// Runs blocking database work off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_share_one_queue_and_survive_a_kill() {
    let Some(admin) = server_url() else { return };
    let db = std::sync::Arc::new(blocking(move || Db::create(&admin)).await);
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("videos");
    let url = db.url.clone();
    let front =
        spawn(&["--queue", &url, "--workers", "0", "--bind", "127.0.0.1:0", "--outputs", out.to_str().unwrap()]);
    let worker_flags =
        ["--queue", &url, "--worker-only", "--outputs", out.to_str().unwrap(), "--lease", "3", "--batch", "1"];
    let w1 = spawn(&worker_flags);
    let w2 = spawn(&worker_flags);
    let c = front.client();
    let (st, h) = c.get("/healthz").await;
    assert_eq!((st, h["queue"].as_str(), h["workers"].as_u64()), (200, Some("postgres"), Some(0)));

    // 1. Both workers take jobs; every job completes once.
    let mut ids = Vec::new();
    for i in 0..16 {
        ids.push(c.submit(json!({"prompt": format!("shared {i}"), "num_inference_steps": 30, "seed": i})).await);
    }
    for id in &ids {
        let v = c.wait_done(id).await;
        assert_eq!((v["status"].as_str(), v["attempts"].as_i64()), (Some("completed"), Some(1)), "{v}");
    }
    let d = db.clone();
    let per_worker = blocking(move || d.query("SELECT worker, COUNT(*) FROM wanrt_jobs GROUP BY worker")).await;
    let pid_of = |row: &postgres::Row| row.get::<_, String>(0);
    assert_eq!(per_worker.len(), 2, "both workers ran jobs: {:?}", per_worker.iter().map(pid_of).collect::<Vec<_>>());

    // 2. Kill whichever worker is in the middle of a job: the other one re-runs that job,
    //    once, after the lease ran out.
    let mut workers = [Some(w1), Some(w2)];
    let tags: Vec<String> = workers.iter().map(|w| format!("-{}-", w.as_ref().unwrap().child.id())).collect();
    let long: Vec<String> = {
        let mut v = Vec::new();
        for i in 0..4 {
            v.push(c.submit(json!({"prompt": format!("long {i}"), "num_inference_steps": 300, "seed": i})).await);
        }
        v
    };
    let t0 = Instant::now();
    let (victim, holder) = loop {
        let d = db.clone();
        let rows = blocking(move || {
            d.query("SELECT id, worker FROM wanrt_jobs WHERE status = 'in_progress' AND progress > 6 ORDER BY seq")
        })
        .await;
        if let Some(r) = rows.first() {
            let worker: String = r.get(1);
            let k = tags.iter().position(|t| worker.contains(t.as_str())).expect("a known worker");
            break (r.get::<_, String>(0), k);
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "no long job started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    workers[holder].as_mut().unwrap().kill9();
    let v = c.wait_done(&victim).await;
    assert_eq!((v["status"].as_str(), v["attempts"].as_i64()), (Some("completed"), Some(2)), "{v}");
    let d = db.clone();
    let vid = victim.clone();
    let finisher: String =
        blocking(move || d.query(&format!("SELECT worker FROM wanrt_jobs WHERE id = '{vid}'"))[0].get(0)).await;
    assert!(finisher.contains(&tags[1 - holder]), "finished by the surviving worker, not {finisher}");
    for id in &long {
        assert_eq!(c.wait_done(id).await["status"], "completed");
    }

    // 3. A cancel at the front stops a job running in the other process within a heartbeat or two.
    let id = c.submit(json!({"prompt": "cancel across machines", "num_inference_steps": 1000})).await;
    c.wait_for(&id, 60, |v| v["status"] == "in_progress" && v["progress"].as_u64().unwrap() > 6).await;
    let (st, _) = c.post(&format!("/v1/videos/{id}/cancel"), &json!({})).await;
    assert_eq!(st, 200);
    let t0 = Instant::now();
    let v = c.wait_done(&id).await;
    assert_eq!(v["status"], "cancelled", "{v}");
    assert!(t0.elapsed() < Duration::from_secs(5), "stopped {:?} after the cancel", t0.elapsed());
    assert!(v["progress"].as_u64().unwrap() < 90, "{v}");

    // One whole video per completed job in the shared folder; nothing for the cancelled one.
    let (mp4s, _) = outputs(&out);
    let mut expected: Vec<String> = ids.iter().chain(&long).map(|i| format!("{i}.mp4")).collect();
    expected.sort();
    assert_eq!(mp4s, expected);
    for f in &mp4s {
        let v = wanrt_media::read_mp4(out.join(f)).unwrap();
        assert_eq!(v.frames(), 17, "{f}");
    }
    drop(workers);
    drop(front);
    blocking(move || db.drop_now()).await;
}
