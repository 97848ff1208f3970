//! End-to-end test of the web page in a real headless browser: Debian's chromium driven
//! through chromedriver over the W3C WebDriver protocol (plain JSON over HTTP). A person
//! types a prompt, watches the progress bar move, and the finished video plays in the
//! gallery; a bad size is refused with the server's message; a reload keeps the gallery.
//! Needs /usr/bin/chromium and /usr/bin/chromedriver (or CHROME_BIN and CHROMEDRIVER):
//! `sudo tools/ci/setup-review-tests.sh` installs them.

mod common;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use serde_json::{json, Value};
use std::panic::AssertUnwindSafe;

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

    /// Saves a screenshot when WANRT_SERVE_SCREENSHOTS names a folder (for looking at
    /// the pages by eye).
    async fn shot(&self, name: &str) {
        let Ok(dir) = std::env::var("WANRT_SERVE_SCREENSHOTS") else {
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
async fn browser_submits_watches_progress_and_plays_the_video() {
    let chromium = tool("CHROME_BIN", "/usr/bin/chromium");
    let chromedriver = tool("CHROMEDRIVER", "/usr/bin/chromedriver");
    let tmp = tempfile::tempdir().unwrap();
    let s = common::start(&common::args(tmp.path())).await;
    let profile = tmp.path().join("chrome-profile");
    std::fs::create_dir_all(&profile).unwrap();
    let d = Driver::start(&chromium, &chromedriver, &profile).await;
    // Close the browser session even when an assertion fails (else chromium outlives the test).
    let outcome = AssertUnwindSafe(page_flow(&d, &s)).catch_unwind().await;
    d.cmd("DELETE", "", json!({})).await;
    drop(d);
    s.shutdown().await;
    if let Err(p) = outcome {
        std::panic::resume_unwind(p);
    }
}

async fn page_flow(d: &Driver, s: &common::TestServer) {
    let base = s.base.clone();
    d.goto(&format!("{base}/")).await;
    d.wait_for("document.body.dataset.loaded === '1'").await;
    d.wait_for("document.getElementById('health').textContent.includes('sqlite queue')").await;
    assert_eq!(d.js("return document.getElementById('model').value").await, "demo");
    assert_eq!(d.js("return document.getElementById('steps').placeholder").await, "20", "model defaults shown");
    assert_eq!(d.js("return document.getElementById('no-videos').hidden").await, false);

    // A refused request shows the server's message, naming the field.
    d.type_into("#prompt", "a red ball <b>bold</b> bounces").await;
    d.click("#more summary").await;
    d.type_into("#width", "30").await;
    d.click("#submit").await;
    d.wait_for("document.getElementById('error').textContent.includes('multiples of 16')").await;
    assert_eq!(d.js("return document.getElementById('error').dataset.param").await, "size");
    assert_eq!(s.get("/v1/videos").await.1["data"].as_array().unwrap().len(), 0);

    // A long enough job to watch: the progress bar moves through several values.
    d.js("document.getElementById('width').value = ''; return true").await;
    d.type_into("#steps", "400").await;
    d.click("#submit").await;
    d.wait_for("document.querySelector('#jobs .job')").await;
    d.shot("progress").await;
    let mut seen = std::collections::BTreeSet::new();
    let t0 = Instant::now();
    loop {
        let v =
            d.js("const j = document.querySelector('#jobs .job'); return j ? Number(j.dataset.progress) : -1").await;
        let p = v.as_i64().unwrap();
        if p < 0 {
            break; // completed: the card moved to the gallery
        }
        seen.insert(p);
        assert!(t0.elapsed() < Duration::from_secs(60), "job did not finish");
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    assert!(seen.iter().filter(|p| (6..=89).contains(*p)).count() >= 3, "live progress seen: {seen:?}");

    // The finished video plays (decoded frames, time advancing) and loops.
    let vs = "document.querySelector('#gallery video')";
    d.wait_for(&format!(
        "{vs} && {vs}.readyState >= 2 && {vs}.videoWidth === 32 && !{vs}.paused && {vs}.currentTime > 0.3"
    ))
    .await;
    d.wait_for(&format!("(window.__max = Math.max(window.__max || 0, {vs}.currentTime)) > 1.5")).await;
    d.wait_for(&format!("{vs}.currentTime < 1.0 && !{vs}.paused")).await;
    d.shot("gallery").await;
    let caption = d.js("return document.querySelector('#gallery figcaption').textContent").await;
    assert_eq!(caption, "a red ball <b>bold</b> bounces", "the prompt is shown as text");
    assert_eq!(d.js("return document.querySelectorAll('#gallery b').length").await, 0, "no HTML injected");

    // After a reload the gallery still shows it (it comes from the queue, not the page).
    d.goto(&format!("{base}/")).await;
    d.wait_for("document.body.dataset.loaded === '1'").await;
    d.wait_for(&format!("{vs} && {vs}.readyState >= 2 && !{vs}.paused")).await;
    assert_eq!(d.js("return document.querySelectorAll('#gallery figure').length").await, 1);
    assert_eq!(d.js("return document.getElementById('no-jobs').hidden").await, false);
}

/// With API keys: the page asks for a key, follows progress by polling (EventSource cannot
/// send headers) and plays the video fetched with the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_with_an_api_key() {
    let chromium = tool("CHROME_BIN", "/usr/bin/chromium");
    let chromedriver = tool("CHROMEDRIVER", "/usr/bin/chromedriver");
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("keys.txt");
    std::fs::write(&keys, "sk-browser-0123456789abcdef\n").unwrap();
    let mut a = common::args(tmp.path());
    a.api_keys = Some(keys);
    let s = common::start(&a).await;
    let profile = tmp.path().join("chrome-profile");
    std::fs::create_dir_all(&profile).unwrap();
    let d = Driver::start(&chromium, &chromedriver, &profile).await;
    let outcome = AssertUnwindSafe(async {
        d.goto(&format!("{}/", s.base)).await;
        d.wait_for("document.body.dataset.loaded === '1'").await;
        d.wait_for("!document.getElementById('key-row').hidden").await;
        assert!(d
            .js("return document.getElementById('error').textContent")
            .await
            .as_str()
            .unwrap()
            .contains("API key"));
        d.type_into("#api-key", "sk-browser-0123456789abcdef").await;
        d.type_into("#prompt", "a keyed ball").await;
        d.click("#more summary").await;
        d.type_into("#steps", "300").await;
        d.click("#submit").await;
        d.wait_for("document.querySelector('#jobs .job')").await;
        let vs = "document.querySelector('#gallery video')";
        d.wait_for(&format!(
            "{vs} && {vs}.src.startsWith('blob:') && {vs}.readyState >= 2 && !{vs}.paused && {vs}.currentTime > 0.2"
        ))
        .await;
        assert_eq!(d.js("return localStorage.getItem('wanrt-api-key')").await, "sk-browser-0123456789abcdef");
        let (_, list) = s.with_key("sk-browser-0123456789abcdef").get("/v1/videos").await;
        assert_eq!(list["data"][0]["status"], "completed");
    })
    .catch_unwind()
    .await;
    d.cmd("DELETE", "", json!({})).await;
    drop(d);
    s.shutdown().await;
    if let Err(p) = outcome {
        std::panic::resume_unwind(p);
    }
}

/// Image-to-video from the page: without a first frame the server's refusal names
/// input_reference; with the file chosen the video is the one `wanrt generate --image` makes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_uploads_a_first_frame() {
    let chromium = tool("CHROME_BIN", "/usr/bin/chromium");
    let chromedriver = tool("CHROMEDRIVER", "/usr/bin/chromedriver");
    let tmp = tempfile::tempdir().unwrap();
    let i2v = common::fixture("wan_i2v/i2v_a");
    let mut a = common::args(tmp.path());
    a.models.push(i2v.clone());
    let s = common::start(&a).await;
    let profile = tmp.path().join("chrome-profile");
    std::fs::create_dir_all(&profile).unwrap();
    let d = Driver::start(&chromium, &chromedriver, &profile).await;
    let image = i2v.join("image.png").canonicalize().unwrap();
    let outcome = AssertUnwindSafe(async {
        d.goto(&format!("{}/", s.base)).await;
        d.wait_for("document.body.dataset.loaded === '1'").await;
        d.js("document.getElementById('model').value = 'i2v_a'; return true").await;
        d.type_into("#prompt", "a small red fox runs through the snowy forest").await;
        d.click("#more summary").await;
        for (field, value) in [("#frames", "9"), ("#steps", "3"), ("#guidance", "5"), ("#seed", "7")] {
            d.type_into(field, value).await;
        }
        d.click("#submit").await;
        d.wait_for("document.getElementById('error').textContent.includes('needs input_reference')").await;
        assert_eq!(d.js("return document.getElementById('error').dataset.param").await, "input_reference");

        d.type_into("#first-frame", image.to_str().unwrap()).await;
        d.click("#submit").await;
        let vs = "document.querySelector('#gallery video')";
        d.wait_for(&format!("{vs} && {vs}.readyState >= 2 && {vs}.videoWidth === 48")).await;
        let (_, list) = s.get("/v1/videos").await;
        let job = &list["data"][0];
        assert_eq!((job["status"].as_str(), job["size"].as_str()), (Some("completed"), Some("48x32")), "{job}");
        let (_, _, served) = s.get_bytes(&format!("/v1/videos/{}/content", job["id"].as_str().unwrap())).await;
        let gp = wanrt_wan::pipeline::GenerateParams {
            num_frames: Some(9),
            steps: Some(3),
            guidance: Some(5.0),
            seed: 7,
            image: Some(common::read_rgb(&image)),
            ..wanrt_wan::pipeline::GenerateParams::new("a small red fox runs through the snowy forest")
        };
        assert!(served == common::generate_mp4(&i2v, &gp, tmp.path()), "the page's video is generate --image's");
    })
    .catch_unwind()
    .await;
    d.cmd("DELETE", "", json!({})).await;
    drop(d);
    s.shutdown().await;
    if let Err(p) = outcome {
        std::panic::resume_unwind(p);
    }
}
