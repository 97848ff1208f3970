//! Study integrity (issue 18 item 7): files confined at every request, resumes bound to
//! their folders and captions, one folder per variant, invites, rater names, Authorization.

mod common;

use std::path::Path;

use common::*;
use serde_json::{json, Value};

async fn start_err(args: wanrt_review::cli::ServeArgs) -> String {
    match wanrt_review::start(&args).await {
        Ok(_) => panic!("expected an error"),
        Err(e) => format!("{e:#}"),
    }
}

/// GET of a rater's video: (status, body).
async fn fetch(r: &Rater, url: &str) -> (u16, Vec<u8>) {
    let res = r.http.get(format!("{}{url}", r.base)).header("cookie", r.cookie_header()).send().await.unwrap();
    (res.status().as_u16(), res.bytes().await.unwrap().to_vec())
}

#[cfg(unix)]
fn replace_with_link(target: &Path, link: &Path) {
    std::fs::remove_file(link).unwrap();
    std::os::unix::fs::symlink(target, link).unwrap();
}

#[cfg(unix)]
#[tokio::test]
async fn video_paths_are_confined_at_every_request() {
    let tmp = tempfile::tempdir().unwrap();
    let s = make_study(tmp.path(), &["base", "opt"], 1);
    std::fs::write(tmp.path().join("secret.gif"), b"GIF89a-secret").unwrap();
    let server = wanrt_review::start(&serve_args(&s, "confined")).await.unwrap();
    let mut r = Rater::new(&format!("http://{}", server.addr));
    r.join("ivy").await;
    let n = r.next().await;
    let urls: Vec<String> = ["left", "right"].iter().map(|k| n[k]["url"].as_str().unwrap().to_string()).collect();
    for u in &urls {
        assert_eq!(fetch(&r, u).await.0, 200);
    }
    // After start-up, each video becomes a symlink to a file outside its folder.
    let saved: Vec<Vec<u8>> = s.variants.iter().map(|(_, d)| std::fs::read(d.join("clip_000.gif")).unwrap()).collect();
    for (_, d) in &s.variants {
        replace_with_link(&tmp.path().join("secret.gif"), &d.join("clip_000.gif"));
    }
    for u in &urls {
        let (status, body) = fetch(&r, u).await;
        assert_eq!(status, 404, "a symlink made after start-up is not followed out");
        assert!(!body.starts_with(b"GIF89a-secret"));
    }
    // Restored files are served again.
    for ((_, d), bytes) in s.variants.iter().zip(&saved) {
        std::fs::remove_file(d.join("clip_000.gif")).unwrap();
        std::fs::write(d.join("clip_000.gif"), bytes).unwrap();
    }
    for u in &urls {
        assert_eq!(fetch(&r, u).await.0, 200);
    }
    // A variant folder renamed and replaced by a link to another folder with the same names.
    let evil = tmp.path().join("evil");
    std::fs::create_dir(&evil).unwrap();
    std::fs::write(evil.join("clip_000.gif"), b"GIF89a-secret").unwrap();
    for (_, d) in &s.variants {
        std::fs::rename(d, d.with_extension("old")).unwrap();
        std::os::unix::fs::symlink(&evil, d).unwrap();
    }
    for u in &urls {
        let (status, body) = fetch(&r, u).await;
        assert_eq!(status, 404, "a renamed-and-replaced folder is not followed");
        assert!(!body.starts_with(b"GIF89a-secret"));
    }
    // A FIFO in place of a video is refused at once (it would block a worker forever).
    for (_, d) in &s.variants {
        std::fs::remove_file(d).unwrap();
        std::fs::rename(d.with_extension("old"), d).unwrap();
        std::fs::remove_file(d.join("clip_000.gif")).unwrap();
        let out = std::process::Command::new("mkfifo").arg(d.join("clip_000.gif")).status().unwrap();
        assert!(out.success());
    }
    let res = tokio::time::timeout(std::time::Duration::from_secs(10), fetch(&r, &urls[0])).await;
    assert_eq!(res.expect("a FIFO must not hang the request").0, 404);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn resumed_study_is_bound_to_its_folders_and_captions() {
    let tmp = tempfile::tempdir().unwrap();
    let s = make_study(tmp.path(), &["base", "opt"], 2);
    wanrt_review::start(&serve_args(&s, "bound")).await.unwrap().shutdown().await.unwrap();

    // Same names, other folder.
    let other = tmp.path().join("opt2");
    std::fs::create_dir(&other).unwrap();
    for f in ["clip_000.gif", "clip_001.gif"] {
        std::fs::copy(s.variants[1].1.join(f), other.join(f)).unwrap();
    }
    let mut a = serve_args(&s, "bound");
    a.variants[1] = format!("opt={}", other.display());
    let e = start_err(a.clone()).await;
    assert!(e.contains("variant 'opt' folder was") && e.contains("--allow-changes"), "{e}");
    assert_eq!(e.lines().count(), 1, "{e}");

    // Same folders, another caption.
    let mut p: Value = serde_json::from_slice(&std::fs::read(&s.prompts).unwrap()).unwrap();
    p["clip_001.gif"] = json!("A blue whale");
    let p2 = tmp.path().join("p2.json");
    std::fs::write(&p2, p.to_string()).unwrap();
    let mut b = serve_args(&s, "bound");
    b.prompts = p2.clone();
    let e = start_err(b.clone()).await;
    assert!(e.contains("caption of 'clip_001.gif' was") && e.contains("A blue whale"), "{e}");

    // Asked explicitly: resumed, and the change is recorded.
    a.allow_changes = true;
    wanrt_review::start(&a).await.unwrap().shutdown().await.unwrap();
    b.allow_changes = true;
    b.variants[1] = format!("opt={}", other.display());
    let server = wanrt_review::start(&b).await.unwrap();
    let mut r = Rater::new(&format!("http://{}", server.addr));
    r.join("jo").await;
    let mut prompts = Vec::new();
    for _ in 0..2 {
        let n = r.next().await;
        prompts.push(n["prompt"].as_str().unwrap().to_string());
        r.vote(n["assignment"].as_str().unwrap(), &unique_sid(), "tie").await;
    }
    assert!(prompts.contains(&"A blue whale".to_string()), "{prompts:?}");
    server.shutdown().await.unwrap();
    // The new state is now the bound one: resuming it unchanged needs no flag.
    b.allow_changes = false;
    wanrt_review::start(&b).await.unwrap().shutdown().await.unwrap();
}

#[tokio::test]
async fn one_folder_per_variant() {
    let tmp = tempfile::tempdir().unwrap();
    let s = make_study(tmp.path(), &["base", "opt"], 2);
    let mut a = serve_args(&s, "same");
    a.variants[1] = format!("opt={}", s.variants[0].1.display());
    let e = start_err(a).await;
    assert!(e.contains("'base' and 'opt' are the same folder"), "{e}");
    // The same folder through a link, or spelled differently.
    #[cfg(unix)]
    {
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&s.variants[0].1, &link).unwrap();
        let mut a = serve_args(&s, "same");
        a.variants[1] = format!("opt={}", link.display());
        assert!(start_err(a).await.contains("same folder"));
    }
    let mut a = serve_args(&s, "same");
    a.variants[1] = format!("opt={}/../base/.", s.variants[0].1.display());
    assert!(start_err(a).await.contains("same folder"));
    assert!(!s.db.exists(), "refused before the database is created");
}

#[tokio::test]
async fn invites_zero_and_invite_only_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let s = make_study(tmp.path(), &["base", "opt"], 1);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wanrt-review-server"))
        .args(["serve", "--study", "z", "--invites", "0", "--prompts"])
        .arg(&s.prompts)
        .arg("--db")
        .arg(&s.db)
        .arg("--variants")
        .args(s.variants.iter().map(|(n, d)| format!("{n}={}", d.display())))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.lines().next().unwrap().contains("--invites"), "{err}");
    assert!(!s.db.exists());

    let mut a = serve_args(&s, "inv");
    a.invites = Some(1);
    wanrt_review::start(&a).await.unwrap().shutdown().await.unwrap();
    // Resumed without --invites: not silently opened to anyone.
    let e = start_err(serve_args(&s, "inv")).await;
    assert!(e.contains("is invite-only (1 invites)") && e.contains("--invites N"), "{e}");
    let mut open = serve_args(&s, "inv");
    open.allow_changes = true;
    wanrt_review::start(&open).await.unwrap().shutdown().await.unwrap();
}

#[tokio::test]
async fn a_name_does_not_hand_over_a_session() {
    let tmp = tempfile::tempdir().unwrap();
    let s = make_study(tmp.path(), &["base", "opt"], 2);
    let server = wanrt_review::start(&serve_args(&s, "names")).await.unwrap();
    let base = format!("http://{}", server.addr);
    let mut alice = Rater::new(&base);
    alice.join("alice").await;
    let n = alice.next().await;
    alice.vote(n["assignment"].as_str().unwrap(), &unique_sid(), "left").await;

    let mut mallory = Rater::new(&base);
    let st: Value = mallory.get("/api/state").await.json().await.unwrap();
    mallory.csrf = st["csrf"].as_str().unwrap().to_string();
    for name in ["alice", " alice "] {
        let res = mallory.post("/api/join", &json!({ "name": name })).await;
        assert_eq!(res.status(), 409, "{name:?}");
        assert!(res.headers().get("set-cookie").is_none(), "no session handed over");
        assert!(res.text().await.unwrap().contains("already taken"));
    }
    assert_eq!(mallory.get("/api/next").await.status(), 401);
    // Alice, in her own browser, may "join" again and keeps her progress.
    // (a join is checked against the pre-session token, as on the join page)
    alice.csrf = alice.cookies.iter().find(|(k, _)| k == "wr_pre").unwrap().1.clone();
    let res = alice.post("/api/join", &json!({ "name": "alice" })).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["progress"]["done"], 1);
    server.shutdown().await.unwrap();

    // An invite never hands over the rater who took the name `invite-1` by typing it.
    let mut squat = Rater::new(&base);
    let server = wanrt_review::start(&serve_args(&s, "names2")).await.unwrap();
    squat.base = format!("http://{}", server.addr);
    squat.join("invite-1").await;
    server.shutdown().await.unwrap();
    let mut a = serve_args(&s, "names2");
    a.invites = Some(1);
    let server = wanrt_review::start(&a).await.unwrap();
    let mut guest = Rater::new(&format!("http://{}", server.addr));
    assert_eq!(guest.get(&format!("/i/{}", server.invites[0])).await.status(), 303);
    let st: Value = guest.get("/api/state").await.json().await.unwrap();
    assert_eq!(st["name"], "invite-1-2");
    assert_ne!(guest.cookies, squat.cookies);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn authorization_scheme_is_case_insensitive() {
    let tmp = tempfile::tempdir().unwrap();
    let s = make_study(tmp.path(), &["base", "opt"], 1);
    let server = wanrt_review::start(&serve_args(&s, "auth")).await.unwrap();
    let base = format!("http://{}", server.addr);
    let http = reqwest::Client::new();
    let status = |auth: String| {
        let req = http.get(format!("{base}/api/admin/results")).header("authorization", auth);
        async move { req.send().await.unwrap().status().as_u16() }
    };
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        assert_eq!(status(format!("{scheme} {ADMIN}")).await, 200, "{scheme}");
    }
    for bad in [format!("Basic {ADMIN}"), format!("Bearer{ADMIN}"), "Bearer wrong-token".into(), "Bearer ".into()] {
        assert_eq!(status(bad.clone()).await, 401, "{bad}");
    }
    server.shutdown().await.unwrap();
}
