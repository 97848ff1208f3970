//! Crash test: the server runs as its own process; raters vote concurrently; the process
//! is killed with SIGKILL mid-load; after a restart on the same database every vote that
//! got a success response must be there (and nothing is counted twice).

mod common;

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// The server process, killed when the test ends, also on a failed assertion (a server left
/// running would hold the test's output pipe open and hang `cargo test`).
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_server(s: &StudyDirs) -> (Server, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wanrt-review-server"));
    cmd.arg("serve")
        .args(["--study", "crash", "--variants"])
        .args(s.variants.iter().map(|(n, d)| format!("{n}={}", d.display())))
        .arg("--prompts")
        .arg(&s.prompts)
        .arg("--db")
        .arg(&s.db)
        .args(["--bind", "127.0.0.1:0", "--admin-token", ADMIN])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = cmd.spawn().expect("start wanrt-review-server");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let addr = loop {
        let line = lines.next().expect("server exited before listening").unwrap();
        if let Some(a) = line.strip_prefix("listening on http://") {
            break a.trim().to_string();
        }
    };
    // Keep draining stdout so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (Server(child), format!("http://{addr}"))
}

/// Votes until the server goes away; returns nothing, records acknowledged submissions.
async fn rater_loop(base: String, i: usize, acked: Arc<Mutex<Vec<String>>>) {
    let mut r = Rater::new(&base);
    r.join(&format!("crash-{i}")).await;
    for k in 0.. {
        let res = match r.http.get(format!("{base}/api/next")).header("cookie", r.cookie_header()).send().await {
            Ok(res) => res,
            Err(_) => return,
        };
        let Ok(n) = res.json::<Value>().await else {
            return;
        };
        if n["done"] == true {
            return;
        }
        let sid = format!("crash-{i}-{k}-{}", unique_sid());
        let overall = ["left", "right", "tie"][(i + k) % 3];
        let body = json!({
            "submission_id": sid,
            "assignment": n["assignment"],
            "overall": overall,
        });
        let res = r
            .http
            .post(format!("{base}/api/vote"))
            .header("cookie", r.cookie_header())
            .header("x-csrf-token", &r.csrf)
            .json(&body)
            .send()
            .await;
        match res {
            Ok(res) if res.status() == 200 => {
                // Acknowledged only once the full success body has arrived.
                if let Ok(v) = res.json::<Value>().await {
                    if v["ok"] == true {
                        acked.lock().unwrap().push(sid);
                    }
                }
            }
            _ => return,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_mid_load_loses_no_acknowledged_vote() {
    let tmp = tempfile::tempdir().unwrap();
    let s = make_study(tmp.path(), &["base", "opt"], 60);
    let (mut child, base) = spawn_server(&s);

    let acked = Arc::new(Mutex::new(Vec::new()));
    let tasks: Vec<_> = (0..24).map(|i| tokio::spawn(rater_loop(base.clone(), i, acked.clone()))).collect();
    // Kill once a good number of votes are in, while requests are in flight.
    let t0 = Instant::now();
    while acked.lock().unwrap().len() < 300 && t0.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.0.kill().unwrap(); // SIGKILL
    let status = child.0.wait().unwrap();
    assert!(!status.success());
    for t in tasks {
        t.await.unwrap();
    }
    let acked: Vec<String> = acked.lock().unwrap().clone();
    eprintln!("crash: killed after {} acknowledged votes", acked.len());
    assert!(acked.len() >= 300, "load too slow: {}", acked.len());

    // Restart on the same database.
    let (child, base) = spawn_server(&s);
    let raw: Value = admin_get(&base, "/api/admin/export?format=json&raw=1").await.json().await.unwrap();
    let stored: HashSet<String> =
        raw.as_array().unwrap().iter().map(|v| v["submission_id"].as_str().unwrap().to_string()).collect();
    let lost: Vec<&String> = acked.iter().filter(|s| !stored.contains(*s)).collect();
    assert!(lost.is_empty(), "{} acknowledged votes lost, e.g. {:?}", lost.len(), lost.first());
    assert_eq!(stored.len(), raw.as_array().unwrap().len(), "no duplicates");
    // At most the requests in flight at the kill were committed without an answer.
    assert!(stored.len() <= acked.len() + 24, "{} stored vs {} acked", stored.len(), acked.len());

    // The restarted server keeps working: a new rater joins and votes.
    let mut r = Rater::new(&base);
    r.join("after-crash").await;
    let n = r.next().await;
    assert_eq!(n["done"], false);
    assert_eq!(r.vote(n["assignment"].as_str().unwrap(), &unique_sid(), "left").await.status(), 200);
    drop(child);

    let conn = rusqlite::Connection::open(&s.db).unwrap();
    let ok: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(ok, "ok");
    // Every vote closed its assignment in the same transaction.
    let mismatched: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM assignments a WHERE a.done != EXISTS (SELECT 1 FROM votes v WHERE v.assignment_id = a.id)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(mismatched, 0);
}
