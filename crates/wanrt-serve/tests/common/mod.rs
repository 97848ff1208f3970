//! Shared test helpers: an in-process server on the bundled demo model and a small JSON client.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use wanrt_serve::cli::ServeArgs;

pub fn demo_model() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/demo")
}

/// A server on the demo model with its queue and outputs under `dir`.
pub fn args(dir: &Path) -> ServeArgs {
    ServeArgs {
        models: vec![demo_model()],
        bind: "127.0.0.1:0".parse().unwrap(),
        db: dir.join("jobs.sqlite"),
        queue: None,
        outputs: dir.join("videos"),
        api_keys: None,
        max_queue: None,
        worker_only: false,
        workers: 1,
        batch: 4,
        overlap: "on".into(),
        memory_budget: None,
        lease: 30.0,
        max_body: 1 << 20,
        max_image_bytes: 1 << 20,
        max_prompt_chars: 2000,
        lora_dir: None,
        lora_unmatched: Default::default(),
        threads: None,
    }
}

pub struct TestServer {
    pub server: Option<wanrt_serve::Server>,
    pub base: String,
    pub http: reqwest::Client,
    pub key: Option<String>,
}

pub async fn start(args: &ServeArgs) -> TestServer {
    let server = wanrt_serve::start(args).await.expect("server starts");
    let base = format!("http://{}", server.addr.expect("HTTP front"));
    TestServer { server: Some(server), base, http: reqwest::Client::new(), key: None }
}

impl TestServer {
    pub fn with_key(&self, key: &str) -> TestServer {
        TestServer { server: None, base: self.base.clone(), http: self.http.clone(), key: Some(key.to_string()) }
    }

    fn auth(&self, r: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.key {
            Some(k) => r.bearer_auth(k),
            None => r,
        }
    }

    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = self.auth(self.http.post(format!("{}{path}", self.base)).json(body)).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn post_raw(&self, path: &str, content_type: &str, body: Vec<u8>) -> (u16, Value) {
        let r = self
            .auth(self.http.post(format!("{}{path}", self.base)).header("content-type", content_type).body(body))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.auth(self.http.get(format!("{}{path}", self.base))).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn get_bytes(&self, path: &str) -> (u16, String, Vec<u8>) {
        let r = self.auth(self.http.get(format!("{}{path}", self.base))).send().await.unwrap();
        let status = r.status().as_u16();
        let ct = r.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        (status, ct, r.bytes().await.unwrap().to_vec())
    }

    pub async fn delete(&self, path: &str) -> (u16, Value) {
        let r = self.auth(self.http.delete(format!("{}{path}", self.base))).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Submits a job; panics unless it is accepted. Returns the job's id.
    pub async fn submit(&self, body: Value) -> String {
        let (s, v) = self.post("/v1/videos", &body).await;
        assert_eq!(s, 202, "{v}");
        v["id"].as_str().unwrap().to_string()
    }

    /// Polls the job until `pred` holds (panics after `secs`).
    pub async fn wait_for(&self, id: &str, secs: u64, pred: impl Fn(&Value) -> bool) -> Value {
        let t0 = Instant::now();
        loop {
            let (s, v) = self.get(&format!("/v1/videos/{id}")).await;
            assert_eq!(s, 200, "{v}");
            if pred(&v) {
                return v;
            }
            assert!(t0.elapsed() < Duration::from_secs(secs), "timed out waiting on {id}: {v}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn wait_done(&self, id: &str) -> Value {
        self.wait_for(id, 120, |v| ["completed", "failed", "cancelled"].contains(&v["status"].as_str().unwrap())).await
    }

    pub async fn shutdown(mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await.unwrap();
        }
    }
}

/// Asserts OpenAI's error shape and returns (type, param).
pub fn error_of(v: &Value) -> (String, Option<String>) {
    let e = &v["error"];
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty() && !m.contains('\n')), "error message: {v}");
    assert!(e.get("param").is_some(), "error has a param key: {v}");
    (e["type"].as_str().unwrap().to_string(), e["param"].as_str().map(String::from))
}

/// Frames, height and width of an MP4.
pub fn mp4_shape(bytes: &[u8], dir: &Path) -> (usize, usize, usize) {
    let p = dir.join(format!("check-{}.mp4", rand_suffix()));
    std::fs::write(&p, bytes).unwrap();
    let v = wanrt_media::read_mp4(&p).unwrap();
    std::fs::remove_file(&p).unwrap();
    (v.frames(), v.height(), v.width())
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// A `wanrt-serve` process (killable with SIGKILL) and its address.
pub struct Proc {
    pub child: std::process::Child,
    pub base: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the stand-alone server binary with `extra` flags and waits for `listening on`
/// (or, with `--worker-only`, `worker ready`).
pub fn spawn(extra: &[&str]) -> Proc {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wanrt-serve"));
    cmd.arg("--model").arg(demo_model()).args(extra).stdout(Stdio::piped()).stderr(Stdio::inherit());
    let mut child = cmd.spawn().expect("start wanrt-serve");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let base = loop {
        let line = lines.next().expect("server exited before it was ready").unwrap();
        if let Some(a) = line.strip_prefix("listening on ") {
            break a.trim().to_string();
        }
        if line.starts_with("worker ready") {
            break String::new();
        }
    };
    // Keep draining stdout so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Proc { child, base }
}

impl Proc {
    pub fn client(&self) -> TestServer {
        TestServer { server: None, base: self.base.clone(), http: reqwest::Client::new(), key: None }
    }

    pub fn kill9(&mut self) {
        self.child.kill().unwrap(); // SIGKILL
        let status = self.child.wait().unwrap();
        assert!(!status.success());
    }
}

/// `*.mp4` files of a folder, by name, and every other entry.
pub fn outputs(dir: &Path) -> (Vec<String>, Vec<String>) {
    let mut mp4 = Vec::new();
    let mut other = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        if name.ends_with(".mp4") {
            mp4.push(name);
        } else {
            other.push(name);
        }
    }
    mp4.sort();
    other.sort();
    (mp4, other)
}

/// A fixture folder (`fixtures/…`): the small image-to-video models.
pub fn fixture(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures").join(path)
}

/// A multipart/form-data body of text fields and file uploads: (content type, body).
pub fn multipart(fields: &[(&str, &str)], files: &[(&str, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "wanrtTestBoundary7f3a";
    let mut body = Vec::new();
    for (name, value) in fields {
        body.extend(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n").bytes(),
        );
    }
    for (name, bytes) in files {
        body.extend(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{name}.png\"\r\n\
                 Content-Type: image/png\r\n\r\n"
            )
            .bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend(b"\r\n");
    }
    body.extend(format!("--{boundary}--\r\n").bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// An image file as `wanrt generate --image` reads it.
pub fn read_rgb(path: &Path) -> wanrt_wan::image::RgbImage {
    let v = wanrt_media::read_image(path).unwrap();
    wanrt_wan::image::RgbImage::new(v.height(), v.width(), v.into_data()).unwrap()
}

/// The MP4 that `wanrt generate … -o OUT.mp4` writes for `params` on the model in `model_dir`
/// (its frames, at the model's fps, through the same writer).
pub fn generate_mp4(model_dir: &Path, params: &wanrt_wan::pipeline::GenerateParams, dir: &Path) -> Vec<u8> {
    generate_mp4_with(model_dir, Default::default(), params, dir)
}

/// [`generate_mp4`] with the model loaded under `opts` (`generate --lora FILE:SCALE`: `loras`).
pub fn generate_mp4_with(
    model_dir: &Path,
    opts: wanrt_wan::model::LoadOptions,
    params: &wanrt_wan::pipeline::GenerateParams,
    dir: &Path,
) -> Vec<u8> {
    let model = wanrt_wan::model::WanModel::load_with(model_dir, opts, |_| {}).unwrap();
    let fps = model.defaults.fps.unwrap_or(16.0);
    let out = model.generate(params, &mut ()).unwrap();
    let &[f, h, w, _] = out.video.shape() else { panic!("video shape {:?}", out.video.shape()) };
    let video = wanrt_media::Video::from_f32(f, h, w, out.video.data()).unwrap();
    let p = dir.join(format!("reference-{}.mp4", rand_suffix()));
    wanrt_media::write_video(&p, &video, &wanrt_media::Mp4Options { fps }).unwrap();
    let bytes = std::fs::read(&p).unwrap();
    std::fs::remove_file(&p).unwrap();
    bytes
}
