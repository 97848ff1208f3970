//! API tests: every route and every refusal, on an in-process server with the demo model.

mod common;

use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use serde_json::{json, Value};

async fn count_jobs(s: &TestServer) -> usize {
    let (st, v) = s.get("/v1/videos?limit=100").await;
    assert_eq!(st, 200, "{v}");
    v["data"].as_array().unwrap().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_poll_download_and_list() {
    let tmp = tempfile::tempdir().unwrap();
    let s = start(&args(tmp.path())).await;
    let (st, v) =
        s.post("/v1/videos", &json!({"prompt": "a red ball bounces", "num_inference_steps": 3, "seed": 7})).await;
    assert_eq!(st, 202, "{v}");
    assert_eq!(v["object"], "video");
    assert_eq!(v["status"], "queued");
    assert_eq!(v["model"], "demo");
    assert_eq!(v["progress"], 0);
    assert!(v["created_at"].as_i64().unwrap() > 1_600_000_000);
    // Omitted fields took the model's defaults (wanrt.json of the demo model).
    let p = &v["parameters"];
    assert_eq!((p["width"].as_u64(), p["height"].as_u64(), p["num_frames"].as_u64()), (Some(32), Some(32), Some(17)));
    assert_eq!(p["guidance_scale"], 4.0);
    assert_eq!(p["num_inference_steps"], 3);
    assert_eq!(p["seed"], 7);
    assert_eq!(v["size"], "32x32");
    let id = v["id"].as_str().unwrap().to_string();

    let done = s.wait_done(&id).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["progress"], 100);
    assert!(done["completed_at"].as_i64().unwrap() >= v["created_at"].as_i64().unwrap());
    for k in ["queue_wait", "text_encoder", "denoising", "vae_decode", "write", "total"] {
        assert!(done["timings"][k].as_f64().is_some_and(|t| t >= 0.0), "timing {k}: {done}");
    }
    let (st, ct, bytes) = s.get_bytes(&format!("/v1/videos/{id}/content")).await;
    assert_eq!(st, 200);
    assert_eq!(ct, "video/mp4");
    assert_eq!(mp4_shape(&bytes, tmp.path()), (17, 32, 32));
    // Range requests work (browsers seek with them).
    let r = s.http.get(format!("{}/v1/videos/{id}/content", s.base)).header("range", "bytes=0-7").send().await.unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.bytes().await.unwrap().len(), 8);
    let (st, _, _) = s.get_bytes(&format!("/v1/videos/{id}/content?variant=thumbnail")).await;
    assert_eq!(st, 400);

    // Same seed and parameters → the same video (what makes a re-run after a crash safe).
    let id2 = s.submit(json!({"prompt": "a red ball bounces", "num_inference_steps": 3, "seed": 7})).await;
    assert_eq!(s.wait_done(&id2).await["status"], "completed");
    let (_, _, bytes2) = s.get_bytes(&format!("/v1/videos/{id2}/content")).await;
    assert_eq!(bytes, bytes2);

    let (st, list) = s.get("/v1/videos").await;
    assert_eq!(st, 200);
    assert_eq!(list["object"], "list");
    let ids: Vec<&str> = list["data"].as_array().unwrap().iter().map(|j| j["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [id2.as_str(), id.as_str()], "newest first");
    assert_eq!(list["has_more"], false);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sizes_seconds_and_multipart() {
    let tmp = tempfile::tempdir().unwrap();
    let mut a = args(tmp.path());
    a.workers = 0; // only validation and queueing here
    let s = start(&a).await;
    let (st, v) = s.post("/v1/videos", &json!({"prompt": "p", "size": "48x16", "seconds": "2", "fps": 8})).await;
    assert_eq!(st, 202, "{v}");
    let p = &v["parameters"];
    assert_eq!((p["width"].as_u64(), p["height"].as_u64()), (Some(48), Some(16)));
    assert_eq!(p["num_frames"], 17, "2 s at 8 fps = 16 frames after the first");
    assert_eq!(v["seconds"], "2.13");
    let (st, v) = s.post("/v1/videos", &json!({"prompt": "p", "width": 16, "height": 32, "num_frames": 10})).await;
    assert_eq!(st, 202, "{v}");
    assert_eq!(v["parameters"]["num_frames"], 9, "rounded down to 4k+1");
    assert!(v["warnings"][0].as_str().unwrap().contains("rounding 10 to 9"), "{v}");
    // Multipart form fields (numbers as text).
    let boundary = "XyZ123";
    let form = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"prompt\"\r\n\r\na cat\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"num_inference_steps\"\r\n\r\n2\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"size\"\r\n\r\n16x16\r\n--{boundary}--\r\n"
    );
    let (st, v) =
        s.post_raw("/v1/videos", &format!("multipart/form-data; boundary={boundary}"), form.into_bytes()).await;
    assert_eq!(st, 202, "{v}");
    assert_eq!(v["prompt"], "a cat");
    assert_eq!(v["parameters"]["num_inference_steps"], 2);
    // An uploaded image for a text-to-video model is refused, naming the field.
    let form = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"prompt\"\r\n\r\na cat\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"input_reference\"; filename=\"a.png\"\r\n\
         Content-Type: image/png\r\n\r\n\x7fPNG\r\n--{boundary}--\r\n"
    );
    let (st, v) =
        s.post_raw("/v1/videos", &format!("multipart/form-data; boundary={boundary}"), form.into_bytes()).await;
    assert_eq!(st, 400, "{v}");
    assert_eq!(error_of(&v).1.as_deref(), Some("input_reference"));
    assert_eq!(count_jobs(&s).await, 3);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_and_nothing_is_queued() {
    let tmp = tempfile::tempdir().unwrap();
    let mut a = args(tmp.path());
    a.workers = 0;
    a.max_body = 4096;
    a.max_prompt_chars = 100;
    let s = start(&a).await;
    let long = "x".repeat(101);
    let cases: Vec<(Value, u16, &str, Option<&str>)> = vec![
        (json!({"prompt": "p", "size": "30x32"}), 400, "invalid_request_error", Some("size")),
        (json!({"prompt": "p", "width": 32, "height": 40}), 400, "invalid_request_error", Some("size")),
        (json!({"prompt": "p", "size": "big"}), 400, "invalid_request_error", Some("size")),
        (json!({"prompt": "p", "size": "32x32", "width": 48}), 400, "invalid_request_error", Some("width")),
        (json!({"prompt": "p", "width": 99999}), 400, "invalid_request_error", Some("width")),
        (json!({"prompt": "p", "num_frames": 0}), 400, "invalid_request_error", Some("num_frames")),
        (json!({"prompt": "p", "num_frames": 5000}), 400, "invalid_request_error", Some("num_frames")),
        (json!({"prompt": "p", "num_frames": -3}), 400, "invalid_request_error", Some("num_frames")),
        (json!({"prompt": "p", "num_frames": 1.5}), 400, "invalid_request_error", Some("num_frames")),
        (json!({"prompt": "p", "seconds": 4, "num_frames": 17}), 400, "invalid_request_error", Some("seconds")),
        (json!({"prompt": "p", "seconds": "0"}), 400, "invalid_request_error", Some("seconds")),
        (json!({"prompt": "p", "fps": 0}), 400, "invalid_request_error", Some("fps")),
        (json!({"prompt": "p", "model": "wan-14b"}), 400, "invalid_request_error", Some("model")),
        (json!({"prompt": long}), 400, "invalid_request_error", Some("prompt")),
        (json!({"prompt": "p", "negative_prompt": long}), 400, "invalid_request_error", Some("negative_prompt")),
        (json!({"prompt": ""}), 400, "invalid_request_error", Some("prompt")),
        (json!({"prompt": "a\u{0}b"}), 400, "invalid_request_error", Some("prompt")),
        (json!({"prompt": "p", "negative_prompt": "\u{0}"}), 400, "invalid_request_error", Some("negative_prompt")),
        (json!({"prompt": 5}), 400, "invalid_request_error", Some("prompt")),
        (json!({"size": "32x32"}), 400, "invalid_request_error", Some("prompt")),
        (json!({"prompt": "p", "colour": "red"}), 400, "invalid_request_error", Some("colour")),
        (json!({"prompt": "p", "num_inference_steps": 0}), 400, "invalid_request_error", Some("num_inference_steps")),
        (
            json!({"prompt": "p", "num_inference_steps": 5000}),
            400,
            "invalid_request_error",
            Some("num_inference_steps"),
        ),
        (json!({"prompt": "p", "guidance_scale": -1}), 400, "invalid_request_error", Some("guidance_scale")),
        (json!({"prompt": "p", "guidance_scale": "lots"}), 400, "invalid_request_error", Some("guidance_scale")),
        (json!({"prompt": "p", "seed": -1}), 400, "invalid_request_error", Some("seed")),
        (json!({"prompt": "p", "image": "data:image/png;base64,AAAA"}), 400, "invalid_request_error", Some("image")),
        (json!(["prompt"]), 400, "invalid_request_error", None),
    ];
    for (body, status, kind, param) in cases {
        let (st, v) = s.post("/v1/videos", &body).await;
        assert_eq!(st, status, "{body} → {v}");
        let (k, p) = error_of(&v);
        assert_eq!((k.as_str(), p.as_deref()), (kind, param), "{body} → {v}");
    }
    // Not JSON, not a JSON content type, too large.
    let (st, v) = s.post_raw("/v1/videos", "application/json", b"{\"prompt\": ".to_vec()).await;
    assert_eq!((st, error_of(&v).0.as_str()), (400, "invalid_request_error"));
    let (st, v) = s.post_raw("/v1/videos", "text/plain", b"prompt=a".to_vec()).await;
    assert_eq!(st, 415, "{v}");
    error_of(&v);
    let big = serde_json::to_vec(&json!({"prompt": "y".repeat(5000)})).unwrap();
    let (st, v) = s.post_raw("/v1/videos", "application/json", big).await;
    assert_eq!(st, 413, "{v}");
    error_of(&v);
    // Unknown routes and methods answer in the same shape.
    let (st, v) = s.get("/v1/nothing").await;
    assert_eq!((st, error_of(&v).0.as_str()), (404, "not_found_error"));
    let (st, v) = s.delete("/v1/videos").await;
    assert_eq!(st, 405, "{v}");
    error_of(&v);
    assert_eq!(count_jobs(&s).await, 0, "nothing was queued");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_control_and_queue_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let mut a = args(tmp.path());
    a.workers = 0;
    a.memory_budget = Some("16M".into());
    a.max_queue = Some(2);
    let s = start(&a).await;
    // The demo model's default 32×32×17 fits in 16 MiB; 512×512×81 does not.
    let (st, v) = s.post("/v1/videos", &json!({"prompt": "big", "size": "512x512", "num_frames": 81})).await;
    assert_eq!(st, 400, "{v}");
    assert_eq!(error_of(&v).1.as_deref(), Some("size"));
    assert_eq!(v["error"]["code"], "memory_budget_exceeded");
    assert!(v["error"]["message"].as_str().unwrap().contains("budget of 16.0 MiB"), "{v}");
    s.submit(json!({"prompt": "one"})).await;
    s.submit(json!({"prompt": "two"})).await;
    let r = s.http.post(format!("{}/v1/videos", s.base)).json(&json!({"prompt": "three"})).send().await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "5");
    let v: Value = r.json().await.unwrap();
    assert_eq!(error_of(&v).0, "rate_limit_error");
    assert_eq!(v["error"]["code"], "queue_full");
    assert_eq!(count_jobs(&s).await, 2);
    let (_, _, text) = s.get_bytes("/metrics").await;
    let text = String::from_utf8(text).unwrap();
    assert!(text.contains("wanrt_jobs_refused_total{reason=\"memory\"} 1\n"), "{text}");
    assert!(text.contains("wanrt_jobs_refused_total{reason=\"queue_full\"} 1\n"), "{text}");
    assert!(text.contains("wanrt_memory_budget_bytes 16777216\n"), "{text}");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_conflicts_until_completed_and_pagination() {
    let tmp = tempfile::tempdir().unwrap();
    let mut a = args(tmp.path());
    a.workers = 0;
    let s = start(&a).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(s.submit(json!({"prompt": format!("prompt {i}")})).await);
    }
    let (st, v) = s.get(&format!("/v1/videos/{}/content", ids[0])).await;
    assert_eq!(st, 409, "{v}");
    assert_eq!(error_of(&v).0, "conflict_error");
    assert_eq!(v["error"]["code"], "video_not_ready");
    let (st, v) = s.get(&format!("/v1/videos/{}", ids[0])).await;
    assert_eq!((st, v["status"].as_str()), (200, Some("queued")));

    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let q = match &after {
            Some(a) => format!("/v1/videos?limit=2&after={a}"),
            None => "/v1/videos?limit=2".to_string(),
        };
        let (st, page) = s.get(&q).await;
        assert_eq!(st, 200, "{page}");
        pages += 1;
        let data = page["data"].as_array().unwrap();
        seen.extend(data.iter().map(|j| j["id"].as_str().unwrap().to_string()));
        assert_eq!(page["first_id"], data[0]["id"]);
        assert_eq!(page["last_id"], data[data.len() - 1]["id"]);
        if page["has_more"] == false {
            break;
        }
        after = page["last_id"].as_str().map(String::from);
    }
    assert_eq!(pages, 3);
    let mut newest_first = ids.clone();
    newest_first.reverse();
    assert_eq!(seen, newest_first);
    for (q, param) in [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=x", "limit"),
        ("after=nope", "after"),
        ("after=video_000000000000000000000000", "after"),
        ("order=asc", "order"),
        ("page=2", "page"),
    ] {
        let (st, v) = s.get(&format!("/v1/videos?{q}")).await;
        assert_eq!(st, 400, "{q}: {v}");
        assert_eq!(error_of(&v).1.as_deref(), Some(param), "{q}: {v}");
    }
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_and_delete_queued_jobs() {
    let tmp = tempfile::tempdir().unwrap();
    let mut a = args(tmp.path());
    a.workers = 0;
    let s = start(&a).await;
    let keep = s.submit(json!({"prompt": "keep"})).await;
    let cancel = s.submit(json!({"prompt": "cancel me"})).await;
    let del = s.submit(json!({"prompt": "delete me"})).await;
    let (st, v) = s.post(&format!("/v1/videos/{cancel}/cancel"), &json!({})).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["status"], "cancelled");
    assert_eq!(v["error"]["code"], "cancelled");
    assert_eq!(s.get(&format!("/v1/videos/{cancel}")).await.1["status"], "cancelled");
    assert_eq!(s.get(&format!("/v1/videos/{cancel}/content")).await.0, 409);
    let (st, v) = s.delete(&format!("/v1/videos/{del}")).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        (v["id"].as_str(), v["deleted"].as_bool(), v["status"].as_str()),
        (Some(del.as_str()), Some(true), Some("cancelled"))
    );
    let (st, v) = s.get(&format!("/v1/videos/{del}")).await;
    assert_eq!((st, error_of(&v).0.as_str()), (404, "not_found_error"));
    assert_eq!(s.delete(&format!("/v1/videos/{del}")).await.0, 404, "deleting twice");
    let (_, list) = s.get("/v1/videos").await;
    let ids: Vec<&str> = list["data"].as_array().unwrap().iter().map(|j| j["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [cancel.as_str(), keep.as_str()]);
    s.shutdown().await;

    // A worker started on this queue runs only the job that was not cancelled.
    let s = start(&args(tmp.path())).await;
    assert_eq!(s.wait_done(&keep).await["status"], "completed");
    assert_eq!(s.get(&format!("/v1/videos/{cancel}")).await.1["status"], "cancelled");
    let files: Vec<String> = std::fs::read_dir(tmp.path().join("videos"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files, [format!("{keep}.mp4")]);
    // Deleting a completed video removes its file.
    let (st, v) = s.delete(&format!("/v1/videos/{keep}")).await;
    assert_eq!((st, v["status"].as_str()), (200, Some("completed")));
    assert!(!tmp.path().join("videos").join(format!("{keep}.mp4")).exists());
    assert_eq!(s.get(&format!("/v1/videos/{keep}/content")).await.0, 404);
    s.shutdown().await;
}

/// Reads SSE events `(name, data)` until the stream ends or `max` events.
async fn read_events(s: &TestServer, id: &str, max: usize) -> Vec<(String, Value)> {
    let r = s.http.get(format!("{}/v1/videos/{id}/events", s.base)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let mut stream = r.bytes_stream();
    let mut buf = String::new();
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while out.len() < max {
        let chunk = tokio::time::timeout_at(deadline, stream.next()).await.expect("events in time");
        let Some(chunk) = chunk else { break };
        buf.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let mut name = String::from("message");
            let mut data = String::new();
            for line in block.lines() {
                if let Some(n) = line.strip_prefix("event:") {
                    name = n.trim().to_string();
                } else if let Some(d) = line.strip_prefix("data:") {
                    data.push_str(d.trim());
                }
            }
            if !data.is_empty() {
                out.push((name, serde_json::from_str(&data).unwrap()));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_stream_stages_steps_and_the_end() {
    let tmp = tempfile::tempdir().unwrap();
    let mut a = args(tmp.path());
    a.workers = 0;
    let s = start(&a).await;
    // Subscribe while the job is still queued, then start a worker on the same process's queue.
    let id = s.submit(json!({"prompt": "stream me", "num_inference_steps": 40})).await;
    let reader = {
        let s2 = TestServer { server: None, base: s.base.clone(), http: s.http.clone(), key: None };
        let id = id.clone();
        tokio::spawn(async move { read_events(&s2, &id, 10_000).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.shutdown().await;
    let _ = reader.await; // the stream ends with the server
                          // Again, with a worker this time.
    let s = start(&args(tmp.path())).await;
    let events = read_events(&s, &id, 10_000).await;
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names[0], "video", "{names:?}");
    assert_eq!(names.last(), Some(&"done"), "{names:?}");
    let last = &events.last().unwrap().1;
    assert_eq!(last["status"], "completed");
    assert_eq!(last["progress"], 100);
    let stages: Vec<&str> =
        events.iter().filter(|(n, _)| n == "stage").filter_map(|(_, d)| d["stage"].as_str()).collect();
    assert!(stages.contains(&"denoising") && stages.contains(&"vae_decode"), "{stages:?}");
    let steps: Vec<u64> = events.iter().filter_map(|(_, d)| d["step"].as_u64()).collect();
    assert!(steps.len() >= 10, "step events: {steps:?}");
    assert!(steps.windows(2).all(|w| w[0] < w[1]), "steps increase: {steps:?}");
    assert_eq!(*steps.last().unwrap(), 40);
    assert!(events.iter().all(|(_, d)| d["id"] == id.as_str()));
    let progress: Vec<u64> = events.iter().filter_map(|(_, d)| d["progress"].as_u64()).collect();
    assert!(progress.windows(2).all(|w| w[0] <= w[1]), "progress never goes back: {progress:?}");
    // Events of a finished job: the final object at once.
    let again = read_events(&s, &id, 10).await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].0, "done");
    let (st, v) = s.get("/v1/videos/video_000000000000000000000000/events").await;
    assert_eq!((st, error_of(&v).0.as_str()), (404, "not_found_error"));
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_job_stops_at_the_next_step_when_cancelled() {
    let tmp = tempfile::tempdir().unwrap();
    let s = start(&args(tmp.path())).await;
    let id = s.submit(json!({"prompt": "long", "num_inference_steps": 1000})).await;
    s.wait_for(&id, 60, |v| v["stage"] == "denoising" && v["progress"].as_u64().unwrap() > 6).await;
    let t0 = std::time::Instant::now();
    let (st, v) = s.delete(&format!("/v1/videos/{id}")).await;
    assert_eq!((st, v["deleted"].as_bool()), (200, Some(true)), "{v}");
    // The worker lets go within a step or two (a step of the demo model takes milliseconds).
    loop {
        let (_, _, m) = s.get_bytes("/metrics").await;
        let m = String::from_utf8(m).unwrap();
        if m.contains("wanrt_running_jobs 0\n") {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(5), "still running 5 s after the cancel");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(s.get(&format!("/v1/videos/{id}")).await.0, 404);
    assert!(!tmp.path().join("videos").join(format!("{id}.mp4")).exists());
    // Cancel without delete: the record stays, as cancelled.
    let id = s.submit(json!({"prompt": "long", "num_inference_steps": 1000})).await;
    s.wait_for(&id, 60, |v| v["stage"] == "denoising" && v["progress"].as_u64().unwrap() > 6).await;
    let (st, _) = s.post(&format!("/v1/videos/{id}/cancel"), &json!({})).await;
    assert_eq!(st, 200);
    let v = s.wait_done(&id).await;
    assert_eq!(v["status"], "cancelled", "{v}");
    assert!(v["progress"].as_u64().unwrap() < 90, "stopped during denoising: {v}");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_gives_running_jobs_back_to_the_queue() {
    let tmp = tempfile::tempdir().unwrap();
    let s = start(&args(tmp.path())).await;
    let id = s.submit(json!({"prompt": "interrupted", "num_inference_steps": 400})).await;
    s.wait_for(&id, 60, |v| v["stage"] == "denoising").await;
    s.shutdown().await;
    let s = {
        let mut a = args(tmp.path());
        a.workers = 0;
        start(&a).await
    };
    let v = s.get(&format!("/v1/videos/{id}")).await.1;
    assert_eq!((v["status"].as_str(), v["attempts"].as_i64()), (Some("queued"), Some(0)), "{v}");
    s.shutdown().await;
    let s = start(&args(tmp.path())).await;
    let v = s.wait_done(&id).await;
    assert_eq!((v["status"].as_str(), v["attempts"].as_i64()), (Some("completed"), Some(1)), "{v}");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_and_metrics() {
    let tmp = tempfile::tempdir().unwrap();
    let s = start(&args(tmp.path())).await;
    let (st, h) = s.get("/healthz").await;
    assert_eq!(st, 200);
    assert_eq!(
        (h["status"].as_str(), h["queue"].as_str(), h["workers"].as_u64()),
        (Some("ok"), Some("sqlite"), Some(1))
    );
    assert_eq!(h["models"], json!(["demo"]));
    let (st, m) = s.get("/v1/models").await;
    assert_eq!((st, m["object"].as_str()), (200, Some("list")));
    assert_eq!(m["data"][0]["id"], "demo");
    let d = &m["data"][0]["defaults"];
    assert_eq!(
        (d["width"].as_u64(), d["num_frames"].as_u64(), d["num_inference_steps"].as_u64()),
        (Some(32), Some(17), Some(20))
    );
    assert_eq!((d["fps"].as_f64(), d["guidance_scale"].as_f64()), (Some(8.0), Some(4.0)));
    // Different step counts: never batched together, so 3 + 4 transformer calls.
    let a = s.submit(json!({"prompt": "a", "num_inference_steps": 3})).await;
    let b = s.submit(json!({"prompt": "b", "num_inference_steps": 4})).await;
    s.wait_done(&a).await;
    s.wait_done(&b).await;
    // The worker counts a job just after committing it: wait for the count.
    let t0 = std::time::Instant::now();
    let text = loop {
        let (st, ct, text) = s.get_bytes("/metrics").await;
        assert_eq!(st, 200);
        assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
        let text = String::from_utf8(text).unwrap();
        if text.contains("wanrt_jobs_finished_total{status=\"completed\"} 2\n") || t0.elapsed() > Duration::from_secs(5)
        {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    for line in [
        "wanrt_queue_depth 0\n",
        "wanrt_jobs{status=\"completed\"} 2\n",
        "wanrt_jobs{status=\"queued\"} 0\n",
        "wanrt_jobs_submitted_total 2\n",
        "wanrt_jobs_finished_total{status=\"completed\"} 2\n",
        "wanrt_step_seconds_count 7\n",
        "wanrt_stage_seconds_count{stage=\"vae_decode\"} 2\n",
        "wanrt_job_latency_seconds_count 2\n",
        "# TYPE wanrt_step_seconds histogram\n",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
    let peak: u64 =
        text.lines().find_map(|l| l.strip_prefix("wanrt_peak_memory_bytes ")).and_then(|v| v.parse().ok()).unwrap();
    assert!(peak > 1 << 20, "peak memory {peak}");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("keys.txt");
    std::fs::write(
        &keys,
        "# keys\nsk-alice-0123456789abcdef\nsk-bob-0123456789abcdef00\nsk-viewer-0123456789abcd read\n",
    )
    .unwrap();
    let mut a = args(tmp.path());
    a.api_keys = Some(keys);
    a.workers = 0;
    let s = start(&a).await;
    let (st, v) = s.post("/v1/videos", &json!({"prompt": "p"})).await;
    assert_eq!((st, error_of(&v).0.as_str()), (401, "authentication_error"));
    assert_eq!(s.get("/v1/videos").await.0, 401);
    assert_eq!(s.get_bytes("/metrics").await.0, 401);
    assert_eq!(s.get("/healthz").await.0, 200, "health checks need no key");
    let wrong = s.with_key("sk-mallory-0123456789abc");
    assert_eq!(wrong.get("/v1/videos").await.0, 401);
    let alice = s.with_key("sk-alice-0123456789abcdef");
    let bob = s.with_key("sk-bob-0123456789abcdef00");
    let viewer = s.with_key("sk-viewer-0123456789abcd");
    let (st, v) = viewer.post("/v1/videos", &json!({"prompt": "p"})).await;
    assert_eq!((st, error_of(&v).0.as_str()), (403, "permission_error"));
    assert_eq!(count_jobs(&s.with_key("sk-viewer-0123456789abcd")).await, 0, "nothing was queued");
    let id = alice.submit(json!({"prompt": "alice's"})).await;
    let bob_id = bob.submit(json!({"prompt": "bob's"})).await;
    assert_eq!(alice.get(&format!("/v1/videos/{id}")).await.0, 200);
    // Each key sees only its own videos.
    assert_eq!(bob.get(&format!("/v1/videos/{id}")).await.0, 404);
    assert_eq!(bob.delete(&format!("/v1/videos/{id}")).await.0, 404);
    let (_, list) = alice.get("/v1/videos").await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    assert_eq!(list["data"][0]["id"], id.as_str());
    assert_eq!(viewer.delete(&format!("/v1/videos/{bob_id}")).await.0, 403);
    assert_eq!(bob.delete(&format!("/v1/videos/{bob_id}")).await.0, 200);
    assert_eq!(alice.get_bytes("/metrics").await.0, 200);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_urls_resist_traversal_and_foreign_origins() {
    let tmp = tempfile::tempdir().unwrap();
    let s = start(&args(tmp.path())).await;
    let id = s.submit(json!({"prompt": "p", "num_inference_steps": 2})).await;
    s.wait_done(&id).await;
    // Files a traversal would reach: beside the outputs folder, and elsewhere.
    std::fs::write(tmp.path().join("secret.mp4"), b"TOP-SECRET").unwrap();
    std::fs::write(tmp.path().join("video_secret.mp4"), b"TOP-SECRET").unwrap();
    for path in [
        "/v1/videos/..%2Fsecret/content",
        "/v1/videos/..%2F..%2F..%2F..%2Fetc%2Fpasswd/content",
        "/v1/videos/%2e%2e%2fsecret/content",
        "/v1/videos/video_secret/content",
        "/v1/videos/video_..%2Fsecret/content",
        "/v1/videos/..%5Csecret/content",
        &format!("/v1/videos/{id}%2F..%2F..%2Fsecret/content"),
        &format!("/v1/videos/{id}.mp4/content"),
        "/v1/videos/../../secret.mp4",
        "/v1/videos/%00/content",
        "/static/../secret.mp4",
    ] {
        let (st, _, body) = s.get_bytes(path).await;
        assert!(st == 404 || st == 400, "{path}: {st}");
        assert!(!String::from_utf8_lossy(&body).contains("TOP-SECRET"), "{path} leaked a file");
        assert!(!String::from_utf8_lossy(&body).contains("root:"), "{path} leaked a file");
    }
    // A foreign Host (DNS rebinding) and a cross-site write are refused.
    let r = s.http.get(format!("{}/v1/videos", s.base)).header("host", "evil.example:80").send().await.unwrap();
    assert_eq!(r.status(), 421);
    let r = s
        .http
        .post(format!("{}/v1/videos", s.base))
        .header("origin", "http://evil.example")
        .json(&json!({"prompt": "p"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = s
        .http
        .delete(format!("{}/v1/videos/{id}", s.base))
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(s.get(&format!("/v1/videos/{id}")).await.1["status"], "completed");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_process_per_sqlite_queue_and_clear_startup_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let s = start(&args(tmp.path())).await;
    let err = wanrt_serve::start(&args(tmp.path())).await.err().expect("a second server on the same --db");
    let msg = format!("{err:#}");
    assert!(msg.contains("in use by another process") && !msg.contains('\n'), "{msg}");
    s.shutdown().await;
    for (change, want) in [
        (
            Box::new(|a: &mut wanrt_serve::cli::ServeArgs| a.models = vec![tmp.path().join("nope")])
                as Box<dyn Fn(&mut wanrt_serve::cli::ServeArgs)>,
            "model folder not found",
        ),
        (Box::new(|a| a.memory_budget = Some("lots".into())), "--memory-budget"),
        (Box::new(|a| a.queue = Some("mysql://x/y".into())), "--queue must be a postgres://"),
        (Box::new(|a| a.batch = 0), "--batch must be at least 1"),
        (Box::new(|a| a.api_keys = Some(tmp.path().join("missing-keys.txt"))), "--api-keys"),
    ] {
        let mut a = args(tmp.path());
        change(&mut a);
        let err = wanrt_serve::start(&a).await.err().expect("refused");
        let msg = format!("{err:#}");
        assert!(msg.contains(want), "{msg}");
    }
}
