//! End-to-end test in a real headless browser: Debian's chromium driven through
//! chromedriver over the W3C WebDriver protocol (plain JSON over HTTP, no extra crates).
//! A rater joins, rates every pair with mouse and keyboard, and the admin results page
//! shows the votes. Needs /usr/bin/chromium and /usr/bin/chromedriver (or CHROME_BIN and
//! CHROMEDRIVER): `sudo tools/ci/setup-review-tests.sh` installs them.

mod common;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

fn tool(env: &str, default: &str) -> PathBuf {
    let p = PathBuf::from(std::env::var(env).unwrap_or_else(|_| default.to_string()));
    assert!(
        p.is_file(),
        "{} not found: the browser test needs Debian's chromium and chromium-driver; \
         run `sudo tools/ci/setup-review-tests.sh` (or set {env})",
        p.display()
    );
    p
}

struct Driver {
    http: reqwest::Client,
    base: String,
    session: String,
    child: Child,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    async fn start(chromium: &PathBuf, chromedriver: &PathBuf, profile: &std::path::Path) -> Driver {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let http = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        let t0 = Instant::now();
        loop {
            if let Ok(r) = http.get(format!("{base}/status")).send().await {
                if let Ok(v) = r.json::<Value>().await {
                    if v["value"]["ready"] == true {
                        break;
                    }
                }
            }
            assert!(t0.elapsed() < Duration::from_secs(30), "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let caps = json!({
            "capabilities": { "alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": chromium,
                    "args": [
                        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                        "--no-first-run", "--disable-background-networking",
                        "--disable-component-update", "--disable-sync",
                        "--disable-dev-shm-usage", "--window-size=1280,1000",
                        "--autoplay-policy=no-user-gesture-required",
                        format!("--user-data-dir={}", profile.display()),
                    ]
                }
            }}
        });
        let mut d = Driver { http, base, session: String::new(), child };
        let v = d.cmd("POST", "/session", caps).await;
        d.session = v["sessionId"].as_str().unwrap_or_else(|| panic!("no WebDriver session: {v}")).to_string();
        d
    }

    async fn cmd(&self, method: &str, path: &str, body: Value) -> Value {
        let url = if path == "/session" {
            format!("{}{path}", self.base)
        } else {
            format!("{}/session/{}{path}", self.base, self.session)
        };
        let req = match method {
            "POST" => self.http.post(url).json(&body),
            "DELETE" => self.http.delete(url),
            _ => self.http.get(url),
        };
        let res = req.send().await.expect("WebDriver request");
        let v: Value = res.json().await.expect("WebDriver JSON");
        if v["value"].get("error").is_some() {
            panic!("WebDriver {method} {path}: {}", v["value"]);
        }
        v["value"].clone()
    }

    async fn goto(&self, url: &str) {
        self.cmd("POST", "/url", json!({ "url": url })).await;
    }

    async fn find(&self, css: &str) -> String {
        let v = self.cmd("POST", "/element", json!({ "using": "css selector", "value": css })).await;
        v[ELEMENT].as_str().unwrap().to_string()
    }

    async fn click(&self, css: &str) {
        let e = self.find(css).await;
        self.cmd("POST", &format!("/element/{e}/click"), json!({})).await;
    }

    async fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css).await;
        self.cmd("POST", &format!("/element/{e}/value"), json!({ "text": text })).await;
    }

    async fn js(&self, script: &str) -> Value {
        self.cmd("POST", "/execute/sync", json!({ "script": script, "args": [] })).await
    }

    /// Presses keys (WebDriver key codes) on the focused document.
    async fn keys(&self, keys: &[&str]) {
        let mut actions = Vec::new();
        for k in keys {
            actions.push(json!({ "type": "keyDown", "value": k }));
            actions.push(json!({ "type": "keyUp", "value": k }));
        }
        self.cmd("POST", "/actions", json!({ "actions": [{ "type": "key", "id": "keyboard", "actions": actions }] }))
            .await;
        self.cmd("DELETE", "/actions", json!({})).await;
    }

    /// Saves a screenshot when WANRT_REVIEW_SCREENSHOTS names a folder (for looking at
    /// the pages by eye).
    async fn shot(&self, name: &str) {
        let Ok(dir) = std::env::var("WANRT_REVIEW_SCREENSHOTS") else {
            return;
        };
        let v = self.cmd("GET", "/screenshot", json!({})).await;
        let png = base64_decode(v.as_str().unwrap());
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(PathBuf::from(dir).join(format!("{name}.png")), png).unwrap();
    }

    /// Polls a JS expression until it is truthy.
    async fn wait_for(&self, expr: &str) -> Value {
        let t0 = Instant::now();
        loop {
            let v = self.js(&format!("return ({expr});")).await;
            if !(v.is_null() || v == false || v == "" || v == 0) {
                return v;
            }
            assert!(t0.elapsed() < Duration::from_secs(20), "timed out waiting for {expr}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let bytes: Vec<u8> = s.bytes().filter(|c| *c != b'=' && !c.is_ascii_whitespace()).collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= (val(*c) as u32) << (18 - 6 * i);
        }
        out.push((n >> 16) as u8);
        if chunk.len() > 2 {
            out.push((n >> 8) as u8);
        }
        if chunk.len() > 3 {
            out.push(n as u8);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_rates_pairs_and_reads_results() {
    let chromium = tool("CHROME_BIN", "/usr/bin/chromium");
    let chromedriver = tool("CHROMEDRIVER", "/usr/bin/chromedriver");
    let tmp = tempfile::tempdir().unwrap();
    // Distinctive variant names, to check none of them reaches the rater's page.
    let s = make_study(tmp.path(), &["baselineqx", "optimizedqz"], 4);
    let server = wanrt_review::start(&serve_args(&s, "browser")).await.unwrap();
    let base = format!("http://{}", server.addr);
    let profile = tmp.path().join("chrome-profile");
    std::fs::create_dir_all(&profile).unwrap();
    let d = Driver::start(&chromium, &chromedriver, &profile).await;

    d.goto(&format!("{base}/")).await;
    d.wait_for("!document.getElementById('join').hidden").await;
    d.shot("join").await;
    d.type_into("#join-name", "browser-rater").await;
    d.click("#join-btn").await;
    d.wait_for("!document.getElementById('rate').hidden").await;
    d.wait_for("document.getElementById('who').textContent.includes('browser-rater')").await;

    // (how, overall as seen by the rater)
    let plan = ["click-left", "keys-right", "click-tie", "double-click-left"];
    let mut prompts = Vec::new();
    for (i, how) in plan.iter().enumerate() {
        d.wait_for(&format!("document.getElementById('progress-text').textContent === 'Rated {i} of 4'")).await;
        let prompt = d.wait_for("document.getElementById('prompt').textContent").await;
        prompts.push(prompt.as_str().unwrap().to_string());
        // Both videos actually loaded and rendered.
        d.wait_for(
            "Array.from(document.querySelectorAll('.media img')).filter(m => m.complete && m.naturalWidth === 32).length === 2",
        )
        .await;
        assert_eq!(d.js("return document.getElementById('submit').disabled").await, true);
        match *how {
            "click-left" => {
                d.click("#choice-left").await;
                d.click("#likert-left-5").await;
                d.click("#likert-right-2").await;
                d.click("#criteria-box summary").await;
                d.click("#crit-visual-left").await;
                d.click("#crit-motion-tie").await;
                d.shot("rate").await;
                d.click("#submit").await;
            }
            "keys-right" => {
                // → = B better, 2 = score A, Enter = submit.
                d.keys(&["\u{E014}", "2"]).await;
                d.wait_for("document.getElementById('choice-right').classList.contains('selected')").await;
                d.wait_for("document.getElementById('likert-left-2').classList.contains('selected')").await;
                d.click("#likert-right-4").await;
                d.keys(&["\u{E007}"]).await;
            }
            "click-tie" => {
                d.click("#choice-tie").await;
                d.click("#submit").await;
            }
            _ => {
                d.click("#choice-left").await;
                d.click("#likert-left-3").await;
                d.click("#likert-right-3").await;
                // Double click: the second click must not count twice.
                d.js("const b = document.getElementById('submit'); b.click(); b.click(); return true;").await;
            }
        }
    }
    d.wait_for("!document.getElementById('done').hidden").await;
    let page = d.js("return document.documentElement.outerHTML").await;
    let page = page.as_str().unwrap();
    assert!(!page.contains("baselineqx") && !page.contains("optimizedqz"), "variant names leaked into the rater page");
    prompts.sort();
    prompts.dedup();
    assert_eq!(prompts.len(), 4, "four different pairs");

    // What the server stored matches what was clicked (positions undone).
    let raw: Value = admin_get(&base, "/api/admin/export?format=json&raw=1").await.json().await.unwrap();
    let raw = raw.as_array().unwrap();
    assert_eq!(raw.len(), 4, "exactly four votes (double click counted once)");
    let other = |l: &str| {
        if l == "baselineqx" {
            "optimizedqz".to_string()
        } else {
            "baselineqx".to_string()
        }
    };
    let left0 = raw[0]["left"].as_str().unwrap().to_string();
    assert_eq!(raw[0]["overall"], left0.as_str());
    assert_eq!(raw[0]["visual"], left0.as_str());
    assert_eq!(raw[0]["motion"], "tie");
    assert_eq!(raw[0]["alignment"], Value::Null);
    let l1 = raw[1]["left"].as_str().unwrap().to_string();
    assert_eq!(raw[1]["overall"], other(&l1).as_str());
    assert_eq!(raw[2]["overall"], "tie");
    assert_eq!(raw[2]["likert_a"], Value::Null);
    let l3 = raw[3]["left"].as_str().unwrap().to_string();
    assert_eq!(raw[3]["overall"], l3.as_str());
    // Likert given on screen as (A = left, B = right).
    let likert_of = |v: &Value, variant: &str| {
        if v["variant_a"] == variant {
            v["likert_a"].clone()
        } else {
            v["likert_b"].clone()
        }
    };
    assert_eq!(likert_of(&raw[0], &left0), 5);
    assert_eq!(likert_of(&raw[0], &other(&left0)), 2);
    assert_eq!(likert_of(&raw[1], &l1), 2);
    assert_eq!(likert_of(&raw[1], &other(&l1)), 4);

    // Results page, logged in through the admin link.
    d.goto(&format!("{base}/admin?token={ADMIN}")).await;
    d.wait_for("document.body.dataset.loaded === '1'").await;
    d.wait_for("document.getElementById('plot').complete").await;
    d.shot("admin").await;
    if let Ok(dir) = std::env::var("WANRT_REVIEW_SCREENSHOTS") {
        let png = admin_get(&base, "/api/admin/plot.png").await.bytes().await.unwrap();
        std::fs::write(PathBuf::from(dir).join("plot.png"), png).unwrap();
    }
    let url = d.cmd("GET", "/url", json!({})).await;
    assert!(!url.as_str().unwrap().contains("token="), "token stays out of the URL");
    let summary = d.js("return document.getElementById('summary').textContent").await;
    assert!(summary.as_str().unwrap().starts_with("4 votes from 1 raters"), "{summary}");
    let overall =
        d.js("return Array.from(document.querySelectorAll('#pairs-overall td')).map(td => td.textContent)").await;
    let cells: Vec<String> = overall.as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_string()).collect();
    assert_eq!(cells[0], "baselineqx vs optimizedqz");
    let wins: u32 = cells[1].parse().unwrap();
    let ties: u32 = cells[2].parse().unwrap();
    let losses: u32 = cells[3].parse().unwrap();
    assert_eq!((wins + losses, ties, cells[4].as_str()), (3, 1, "4"));
    let bt = d.js("return document.querySelectorAll('#bt-overall tr').length").await;
    assert_eq!(bt, 3, "header + two variants");
    // The plot image loaded.
    d.wait_for("document.getElementById('plot').complete && document.getElementById('plot').naturalWidth === 960")
        .await;
    // A rater page without the admin cookie cannot see results.
    d.cmd("DELETE", "/cookie", json!({})).await;
    d.goto(&format!("{base}/api/admin/results")).await;
    let body = d.js("return document.body.textContent").await;
    assert!(body.as_str().unwrap().contains("admin token required"), "{body}");

    d.cmd("DELETE", "", json!({})).await;
    drop(d);
    server.shutdown().await.unwrap();
}

/// Real videos (tests/data: VP8 WebM and H.264 MP4): both play, loop, stay in sync, and
/// pause/resume together from the keyboard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_plays_real_videos_in_sync() {
    let chromium = tool("CHROME_BIN", "/usr/bin/chromium");
    let chromedriver = tool("CHROMEDRIVER", "/usr/bin/chromedriver");
    let tmp = tempfile::tempdir().unwrap();
    let data = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let prompts = tmp.path().join("prompts.json");
    std::fs::write(&prompts, json!({"clip.webm": "test pattern (webm)", "clip.mp4": "test pattern (mp4)"}).to_string())
        .unwrap();
    let s = StudyDirs {
        root: tmp.path().to_path_buf(),
        variants: vec![("base".into(), data.join("base")), ("opt".into(), data.join("opt"))],
        prompts,
        db: tmp.path().join("videos.sqlite"),
    };
    let server = wanrt_review::start(&serve_args(&s, "videos")).await.unwrap();
    let base = format!("http://{}", server.addr);
    let profile = tmp.path().join("chrome-profile");
    std::fs::create_dir_all(&profile).unwrap();
    let d = Driver::start(&chromium, &chromedriver, &profile).await;
    d.goto(&format!("{base}/")).await;
    d.wait_for("!document.getElementById('join').hidden").await;
    d.type_into("#join-name", "viewer").await;
    d.click("#join-btn").await;
    let mut kinds = Vec::new();
    for i in 0..2 {
        d.wait_for(&format!("document.getElementById('progress-text').textContent === 'Rated {i} of 2'")).await;
        kinds.push(d.wait_for("document.getElementById('prompt').textContent").await.as_str().unwrap().to_string());
        let vs = "Array.from(document.querySelectorAll('.media video'))";
        // Both decode and play.
        d.wait_for(&format!(
            "{vs}.length === 2 && {vs}.every(v => v.readyState >= 2 && !v.paused && v.currentTime > 0.2 && v.videoWidth === 64)"
        ))
        .await;
        // They loop: the position wraps back to the start and playback goes on.
        d.wait_for(&format!("(window.__max = Math.max(window.__max || 0, {vs}[0].currentTime)) > 1.5")).await;
        d.wait_for(&format!("{vs}[0].currentTime < 1.0 && !{vs}[0].paused")).await;
        d.js("window.__max = 0; return true").await;
        // In sync (within a few frames).
        let diff = d.js(&format!("const v = {vs}; return Math.abs(v[0].currentTime - v[1].currentTime);")).await;
        assert!(diff.as_f64().unwrap() < 0.35, "videos out of sync by {diff}s");
        // Space pauses both, Space again resumes both.
        d.keys(&[" "]).await;
        d.wait_for(&format!("{vs}.every(v => v.paused)")).await;
        d.keys(&[" "]).await;
        d.wait_for(&format!("{vs}.every(v => !v.paused)")).await;
        d.click("#choice-tie").await;
        d.click("#submit").await;
    }
    d.wait_for("!document.getElementById('done').hidden").await;
    kinds.sort();
    assert_eq!(kinds, ["test pattern (mp4)", "test pattern (webm)"]);
    d.cmd("DELETE", "", json!({})).await;
    drop(d);
    server.shutdown().await.unwrap();
}
