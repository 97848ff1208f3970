//! Crash test: the server runs as its own process and is killed with SIGKILL while it
//! generates and while clients submit. Restarted on the same database, every job that
//! was acknowledged completes, exactly once (jobs completed before the kill are not run
//! again: same completion time, one attempt; jobs the killed process held run once more),
//! and no partial MP4 is ever visible under a video's name.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_run_then_every_acknowledged_job_completes_once() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("jobs.sqlite");
    let out = tmp.path().join("videos");
    let flags =
        ["--bind", "127.0.0.1:0", "--db", db.to_str().unwrap(), "--outputs", out.to_str().unwrap(), "--batch", "2"];
    let mut p = spawn(&flags);
    let c = p.client();

    // Clients keep submitting until the server goes away; only a full 202 answer counts.
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let submitter = {
        let (c, acked) = (p.client(), acked.clone());
        tokio::spawn(async move {
            for i in 0.. {
                let body = json!({"prompt": format!("crash test {i}"), "num_inference_steps": 25, "seed": i});
                let Ok(r) = c.http.post(format!("{}/v1/videos", c.base)).json(&body).send().await else { return };
                if r.status() != 202 {
                    return;
                }
                let Ok(v) = r.json::<Value>().await else { return };
                acked.lock().unwrap().push(v["id"].as_str().unwrap().to_string());
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
        })
    };
    // Kill once some jobs are done and another one is being generated.
    let t0 = Instant::now();
    loop {
        let (_, list) = c.get("/v1/videos?limit=100").await;
        let jobs = list["data"].as_array().cloned().unwrap_or_default();
        let done = jobs.iter().filter(|j| j["status"] == "completed").count();
        let running = jobs.iter().any(|j| j["status"] == "in_progress" && j["stage"] == "denoising");
        if done >= 4 && running {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "no progress: {list}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    p.kill9();
    // The state at the kill, read from the database the dead process left.
    let before = rows(&db);
    submitter.await.unwrap();
    let acked: Vec<String> = acked.lock().unwrap().clone();
    eprintln!("crash: killed after {} acknowledged jobs, {} stored", acked.len(), before.len());

    // No partial video under a final name: every *.mp4 present decodes completely.
    let (mp4s, _) = outputs(&out);
    for f in &mp4s {
        let v = wanrt_media::read_mp4(out.join(f)).unwrap_or_else(|e| panic!("{f} is not a whole MP4: {e}"));
        assert_eq!((v.frames(), v.height(), v.width()), (17, 32, 32), "{f}");
    }

    let mut p = spawn(&flags);
    let c = p.client();
    for id in &acked {
        let v = c.wait_done(id).await;
        assert_eq!(v["status"], "completed", "{v}");
    }
    // Jobs committed but never acknowledged (in flight at the kill) may exist; at most one.
    let (_, list) = c.get("/v1/videos?limit=100").await;
    let all: Vec<&str> = list["data"].as_array().unwrap().iter().map(|j| j["id"].as_str().unwrap()).collect();
    assert!(all.len() <= acked.len() + 1, "{} jobs stored, {} acknowledged", all.len(), acked.len());
    for id in &all {
        c.wait_done(id).await;
    }
    // Exactly one video per job, nothing else (no temporary files left over).
    let (mp4s, other) = outputs(&out);
    let mut expected: Vec<String> = all.iter().map(|id| format!("{id}.mp4")).collect();
    expected.sort();
    assert_eq!(mp4s, expected);
    assert!(other.is_empty(), "stray files in --outputs: {other:?}");
    for id in &acked {
        let (st, ct, bytes) = c.get_bytes(&format!("/v1/videos/{id}/content")).await;
        assert_eq!((st, ct.as_str()), (200, "video/mp4"));
        assert_eq!(mp4_shape(&bytes, tmp.path()), (17, 32, 32));
    }
    p.kill9();
    let conn = rusqlite::Connection::open(&db).unwrap();
    let ok: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(ok, "ok");

    // Exactly once: jobs completed before the kill were not run again; jobs held by the
    // killed process ran once more; the others once.
    let after = rows(&db);
    let mut interrupted = 0;
    for id in &acked {
        let (was, now) = (&before[id], &after[id]);
        assert_eq!(now.status, "completed", "{id}");
        match was.status.as_str() {
            "completed" => {
                assert_eq!((now.completed_at, now.attempts), (was.completed_at, 1), "{id} completed twice")
            }
            "in_progress" => {
                interrupted += 1;
                assert_eq!(now.attempts, 2, "{id} re-run once after the crash");
            }
            _ => assert_eq!(now.attempts, 1, "{id}"),
        }
    }
    assert!(interrupted >= 1, "the kill interrupted a job");
}

struct Row {
    status: String,
    completed_at: Option<f64>,
    attempts: i64,
}

fn rows(db: &std::path::Path) -> HashMap<String, Row> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn.prepare("SELECT id, status, completed_at, attempts FROM jobs").unwrap();
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, Row { status: r.get(1)?, completed_at: r.get(2)?, attempts: r.get(3)? })))
        .unwrap();
    rows.map(|r| r.unwrap()).collect()
}

/// An image-to-video job that kill -9 interrupts runs again after the restart from the image
/// stored with it, and makes `wanrt generate --image`'s video; then its image is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_an_image_job_then_it_completes_from_its_stored_image() {
    use base64::Engine as _;
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("jobs.sqlite");
    let out = tmp.path().join("videos");
    let i2v = fixture("wan_i2v/i2v_a");
    let flags = [
        "--bind",
        "127.0.0.1:0",
        "--db",
        db.to_str().unwrap(),
        "--outputs",
        out.to_str().unwrap(),
        "--model",
        i2v.to_str().unwrap(),
    ];
    let mut p = spawn(&flags);
    let image = std::fs::read(i2v.join("image.png")).unwrap();
    let url = format!("data:image/png;base64,{}", base64::engine::general_purpose::STANDARD.encode(&image));
    let body = json!({"prompt": "a fox", "model": "i2v_a", "num_frames": 9, "num_inference_steps": 200, "seed": 5,
                      "input_reference": url});
    let id = p.client().submit(body).await;
    p.client().wait_for(&id, 60, |v| v["stage"] == "denoising").await;
    p.kill9();
    assert_eq!(rows(&db)[&id].status, "in_progress");

    let mut p = spawn(&flags);
    let c = p.client();
    let v = c.wait_done(&id).await;
    assert_eq!((v["status"].as_str(), v["attempts"].as_i64()), (Some("completed"), Some(2)), "{v}");
    let (_, _, served) = c.get_bytes(&format!("/v1/videos/{id}/content")).await;
    p.kill9();
    let (mp4s, other) = outputs(&out);
    assert_eq!((mp4s, other), (vec![format!("{id}.mp4")], vec![]), "the video only: its image is gone");
    let gp = wanrt_wan::pipeline::GenerateParams {
        num_frames: Some(9),
        steps: Some(200),
        seed: 5,
        image: Some(read_rgb(&i2v.join("image.png"))),
        ..wanrt_wan::pipeline::GenerateParams::new("a fox")
    };
    assert!(served == generate_mp4(&i2v, &gp, tmp.path()), "the re-run job's video is generate's");
}
