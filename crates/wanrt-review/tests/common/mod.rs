//! Shared test helpers: tiny generated studies (GIF "videos"), an in-process server and a
//! small rater client that keeps its own cookies.
#![allow(dead_code)]

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use wanrt_review::cli::ServeArgs;

/// A tiny looping GIF: a square of `color` moving over `frames` frames.
pub fn gif_bytes(color: [u8; 3], frames: usize) -> Vec<u8> {
    let (w, h) = (32u16, 24u16);
    let palette = [0u8, 0, 0, color[0], color[1], color[2]];
    let mut out = Vec::new();
    {
        let mut enc = gif::Encoder::new(&mut out, w, h, &palette).unwrap();
        enc.set_repeat(gif::Repeat::Infinite).unwrap();
        for f in 0..frames {
            let mut px = vec![0u8; w as usize * h as usize];
            for y in 8..16 {
                for x in 0..8 {
                    px[y * w as usize + (x + f * 6) % w as usize] = 1;
                }
            }
            let frame = gif::Frame { width: w, height: h, delay: 10, buffer: Cow::Owned(px), ..Default::default() };
            enc.write_frame(&frame).unwrap();
        }
    }
    out
}

pub struct StudyDirs {
    pub root: PathBuf,
    pub variants: Vec<(String, PathBuf)>,
    pub prompts: PathBuf,
    pub db: PathBuf,
}

/// Writes `items` clips per variant (GIFs) and a prompts file under `root`.
pub fn make_study(root: &Path, variants: &[&str], items: usize) -> StudyDirs {
    let colors = [[220, 40, 40], [40, 120, 220], [40, 180, 60], [200, 160, 20]];
    let mut vs = Vec::new();
    let mut prompts = serde_json::Map::new();
    for (vi, v) in variants.iter().enumerate() {
        let dir = root.join(v);
        std::fs::create_dir_all(&dir).unwrap();
        let bytes = gif_bytes(colors[vi % colors.len()], 4);
        for i in 0..items {
            std::fs::write(dir.join(format!("clip_{i:03}.gif")), &bytes).unwrap();
        }
        vs.push((v.to_string(), dir));
    }
    for i in 0..items {
        prompts.insert(format!("clip_{i:03}.gif"), Value::String(format!("A red fox number {i} runs through snow")));
    }
    let p = root.join("prompts.json");
    std::fs::write(&p, serde_json::to_vec_pretty(&Value::Object(prompts)).unwrap()).unwrap();
    StudyDirs { root: root.to_path_buf(), variants: vs, prompts: p, db: root.join("reviews.sqlite") }
}

pub fn serve_args(s: &StudyDirs, study: &str) -> ServeArgs {
    ServeArgs {
        study: study.to_string(),
        variants: s.variants.iter().map(|(n, d)| format!("{n}={}", d.display())).collect(),
        prompts: s.prompts.clone(),
        db: s.db.clone(),
        bind: "127.0.0.1:0".parse().unwrap(),
        admin_token: Some("test-admin-token-123".to_string()),
        invites: None,
        allow_changes: false,
        passes: 1,
        require_likert: false,
        bootstrap: 200,
        seed: 1,
    }
}

pub const ADMIN: &str = "test-admin-token-123";

/// A rater with its own cookie jar (name → value).
pub struct Rater {
    pub http: reqwest::Client,
    pub base: String,
    pub cookies: Vec<(String, String)>,
    pub csrf: String,
}

impl Rater {
    pub fn new(base: &str) -> Rater {
        Rater {
            http: reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap(),
            base: base.to_string(),
            cookies: Vec::new(),
            csrf: String::new(),
        }
    }

    pub fn cookie_header(&self) -> String {
        self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ")
    }

    pub fn absorb(&mut self, res: &reqwest::Response) {
        for sc in res.headers().get_all("set-cookie") {
            let s = sc.to_str().unwrap();
            let kv = s.split(';').next().unwrap();
            let (k, v) = kv.split_once('=').unwrap();
            self.cookies.retain(|(n, _)| n != k);
            self.cookies.push((k.to_string(), v.to_string()));
        }
    }

    pub async fn get(&mut self, path: &str) -> reqwest::Response {
        let res =
            self.http.get(format!("{}{path}", self.base)).header("cookie", self.cookie_header()).send().await.unwrap();
        self.absorb(&res);
        res
    }

    pub async fn post(&mut self, path: &str, body: &Value) -> reqwest::Response {
        let res = self
            .http
            .post(format!("{}{path}", self.base))
            .header("cookie", self.cookie_header())
            .header("x-csrf-token", &self.csrf)
            .json(body)
            .send()
            .await
            .unwrap();
        self.absorb(&res);
        res
    }

    /// GET /api/state then POST /api/join.
    pub async fn join(&mut self, name: &str) -> Value {
        let st: Value = self.get("/api/state").await.json().await.unwrap();
        assert_eq!(st["joined"], false);
        self.csrf = st["csrf"].as_str().unwrap().to_string();
        let res = self.post("/api/join", &json!({ "name": name })).await;
        assert_eq!(res.status(), 200, "join failed");
        let st: Value = res.json().await.unwrap();
        assert_eq!(st["joined"], true);
        self.csrf = st["csrf"].as_str().unwrap().to_string();
        st
    }

    pub async fn next(&mut self) -> Value {
        let res = self.get("/api/next").await;
        assert_eq!(res.status(), 200);
        res.json().await.unwrap()
    }

    pub async fn vote(&mut self, assignment: &str, sid: &str, overall: &str) -> reqwest::Response {
        self.post(
            "/api/vote",
            &json!({
                "submission_id": sid,
                "assignment": assignment,
                "overall": overall,
                "likert_left": 4,
                "likert_right": 3,
            }),
        )
        .await
    }
}

/// An admin client (Bearer token).
pub async fn admin_get(base: &str, path: &str) -> reqwest::Response {
    reqwest::Client::new().get(format!("{base}{path}")).bearer_auth(ADMIN).send().await.unwrap()
}

pub fn unique_sid() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!("sid-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}
