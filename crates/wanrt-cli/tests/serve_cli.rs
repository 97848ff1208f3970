//! `wanrt serve` through the binary: the bundled demo model by default, `listening on`
//! when ready, a video made over plain HTTP, and a graceful exit on SIGTERM.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// One HTTP/1.1 request; returns (status, body).
fn http(addr: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).to_string();
    let status = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

fn field<'a>(json: &'a str, key: &str) -> &'a str {
    let start = json.find(&format!("\"{key}\":\"")).unwrap_or_else(|| panic!("{key} in {json}")) + key.len() + 4;
    &json[start..start + json[start..].find('"').unwrap()]
}

#[test]
fn serve_makes_a_video_and_stops_on_sigterm() {
    let tmp = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_wanrt"))
        .args(["serve", "--bind", "127.0.0.1:0"])
        .arg("--db")
        .arg(tmp.path().join("jobs.sqlite"))
        .arg("--outputs")
        .arg(tmp.path().join("videos"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().expect("wanrt serve exited early").unwrap();
        if let Some(a) = line.strip_prefix("listening on http://") {
            break a.trim().to_string();
        }
    };
    let (st, body) = http(&addr, "POST", "/v1/videos", r#"{"prompt": "a red ball", "num_inference_steps": 2}"#);
    assert_eq!(st, 202, "{body}");
    assert!(body.contains("\"model\":\"demo\""), "the bundled demo model by default: {body}");
    let id = field(&body, "id").to_string();
    let t0 = Instant::now();
    loop {
        let (_, v) = http(&addr, "GET", &format!("/v1/videos/{id}"), "");
        if field(&v, "status") == "completed" {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "{v}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(tmp.path().join("videos").join(format!("{id}.mp4")).is_file());
    let kill = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "graceful exit on SIGTERM: {status}");
}
