//! HTTP-level tests against an in-process server on 127.0.0.1:0.

mod common;

use std::collections::HashSet;

use common::*;
use serde_json::{json, Value};

async fn start(s: &StudyDirs) -> (wanrt_review::Server, String) {
    let server = wanrt_review::start(&serve_args(s, "demo")).await.unwrap();
    let base = format!("http://{}", server.addr);
    (server, base)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_flow_blind_balanced_and_resumable() {
    let tmp = tempfile::tempdir().unwrap();
    let s = make_study(tmp.path(), &["base", "opt"], 6);
    let (server, base) = start(&s).await;

    // The page and assets load.
    let page = reqwest::get(format!("{base}/")).await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.headers()["content-security-policy"].to_str().unwrap().contains("default-src 'self'"));
    assert!(page.text().await.unwrap().contains("Which video is better?"));

    let mut r = Rater::new(&base);
    r.join("alice").await;
    let first = r.next().await;
    assert_eq!(first["done"], false);
    assert_eq!(first["progress"]["total"], 6);
    // Variant names never reach the rater.
    let text = first.to_string();
    assert!(!text.contains("base") && !text.contains("opt"), "{text}");
    assert!(!text.contains("clip_"), "file names are not sent: {text}");
    // Resume: asking again gives the same open pair.
    let again = r.next().await;
    assert_eq!(first["assignment"], again["assignment"]);
    assert_eq!(first["left"]["url"], again["left"]["url"]);

    // Videos are served by token with the right type, only to their rater.
    let url = first["left"]["url"].as_str().unwrap().to_string();
    let res = r.get(&url).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "image/gif");
    assert!(res.bytes().await.unwrap().starts_with(b"GIF89a"));
    let anon = reqwest::get(format!("{base}{url}")).await.unwrap();
    assert_eq!(anon.status(), 401);
    let mut bob = Rater::new(&base);
    bob.join("bob").await;
    assert_eq!(bob.get(&url).await.status(), 404, "another rater's video token");

    // Rate all six; every pair once, then done.
    let mut seen = HashSet::new();
    let mut lefts = HashSet::new();
    let mut cur = first;
    for i in 0..6 {
        assert_eq!(cur["done"], false);
        assert!(seen.insert(cur["assignment"].as_str().unwrap().to_string()));
        lefts.insert(cur["prompt"].as_str().unwrap().to_string());
        let res = r.vote(cur["assignment"].as_str().unwrap(), &unique_sid(), ["left", "right", "tie"][i % 3]).await;
        assert_eq!(res.status(), 200);
        let v: Value = res.json().await.unwrap();
        assert_eq!(v["progress"]["done"], i + 1);
        cur = r.next().await;
    }
    assert_eq!(cur["done"], true);
    assert_eq!(lefts.len(), 6, "six different prompts");

    // Balanced assignment: bob's first pair is not one alice rated? All have 1 vote; bob
    // gets one of them (all equal), and never the same pair twice.
    let mut bob_prompts = HashSet::new();
    loop {
        let n = bob.next().await;
        if n["done"] == true {
            break;
        }
        assert!(bob_prompts.insert(n["prompt"].as_str().unwrap().to_string()));
        let res = bob.vote(n["assignment"].as_str().unwrap(), &unique_sid(), "left").await;
        assert_eq!(res.status(), 200);
    }
    assert_eq!(bob_prompts.len(), 6);

    // Results: 12 votes, every pair rated by two raters.
    let res = admin_get(&base, "/api/admin/results").await;
    assert_eq!(res.status(), 200);
    let results: Value = res.json().await.unwrap();
    assert_eq!(results["n_votes"], 12);
    assert_eq!(results["coverage"]["min_votes_per_pair"], 2);
    assert_eq!(results["coverage"]["max_votes_per_pair"], 2);
    let overall = &results["criteria"][0];
    assert_eq!(overall["criterion"], "overall");
    let p = &overall["pairs"][0];
    assert_eq!(p["n"], 12);
    assert_eq!(p["a_wins"].as_u64().unwrap() + p["ties"].as_u64().unwrap() + p["b_wins"].as_u64().unwrap(), 12);
    assert_eq!(overall["agreement"]["pairs_used"], 6);
    assert_eq!(results["likert"][0]["n"], 12);
    assert!(results["likert"][0]["ci"].is_array());

    // Plot and exports.
    let png = admin_get(&base, "/api/admin/plot.png").await;
    assert_eq!(png.headers()["content-type"], "image/png");
    assert!(png.bytes().await.unwrap().starts_with(b"\x89PNG\r\n\x1a\n"));
    let csv = admin_get(&base, "/api/admin/export?format=csv").await.text().await.unwrap();
    assert!(csv.starts_with("section,criterion,variant,opponent"));
    assert!(csv.contains("pair,overall,base,opt,"));
    let raw: Value = admin_get(&base, "/api/admin/export?format=json&raw=1").await.json().await.unwrap();
    assert_eq!(raw.as_array().unwrap().len(), 12);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn csrf_is_checked_on_every_post() {
    let tmp = tempfile::tempdir().unwrap();
    let s = make_study(tmp.path(), &["base", "opt"], 2);
    let (server, base) = start(&s).await;

    // Join without the pre-session token.
    let mut r = Rater::new(&base);
    let _ = r.get("/api/state").await;
    r.csrf = "0".repeat(32);
    assert_eq!(r.post("/api/join", &json!({"name": "x"})).await.status(), 403);
    // Cross-origin join, even with the token.
    let st: Value = r.get("/api/state").await.json().await.unwrap();
    let pre = st["csrf"].as_str().unwrap().to_string();
    let res = r
        .http
        .post(format!("{base}/api/join"))
        .header("cookie", r.cookie_header())
        .header("x-csrf-token", &pre)
        .header("origin", "http://evil.example")
        .json(&json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);

    let mut r = Rater::new(&base);
    r.join("carol").await;
    let n = r.next().await;
    let a = n["assignment"].as_str().unwrap().to_string();
    let good = r.csrf.clone();
    // Wrong and missing CSRF token.
    r.csrf = "f".repeat(32);
    assert_eq!(r.vote(&a, &unique_sid(), "left").await.status(), 403);
    r.csrf = String::new();
    assert_eq!(r.vote(&a, &unique_sid(), "left").await.status(), 403);
    // Form-encoded body (what a cross-site form could send) is refused.
    let res = r
        .http
        .post(format!("{base}/api/vote"))
        .header("cookie", r.cookie_header())
        .header("x-csrf-token", &good)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("overall=left")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    // Cross-site fetch metadata.
    let res = r
        .http
        .post(format!("{base}/api/vote"))
        .header("cookie", r.cookie_header())
        .header("x-csrf-token", &good)
        .header("sec-fetch-site", "cross-site")
        .json(&json!({"submission_id": unique_sid(), "assignment": a, "overall": "left"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    // DNS rebinding: a page served under another host name is refused outright.
    let res = r.http.get(format!("{base}/api/state")).header("host", "evil.example:80").send().await.unwrap();
    assert_eq!(res.status(), 421);
    // Nothing was stored; the right token works.
    let results: Value = admin_get(&base, "/api/admin/results").await.json().await.unwrap();
    assert_eq!(results["n_votes"], 0);
    r.csrf = good;
    assert_eq!(r.vote(&a, &unique_sid(), "left").await.status(), 200);
    // No session at all.
    let res = reqwest::Client::new().post(format!("{base}/api/vote")).json(&json!({})).send().await.unwrap();
    assert_eq!(res.status(), 401);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn submissions_are_idempotent() {
    let tmp = tempfile::tempdir().unwrap();
    let s = make_study(tmp.path(), &["base", "opt"], 3);
    let (server, base) = start(&s).await;
    let mut r = Rater::new(&base);
    r.join("dave").await;
    let n = r.next().await;
    let a = n["assignment"].as_str().unwrap().to_string();
    let sid = unique_sid();
    // A double click / retry: same submission id, counted once.
    let (x, y) = tokio::join!(
        {
            let mut r2 =
                Rater { http: r.http.clone(), base: base.clone(), cookies: r.cookies.clone(), csrf: r.csrf.clone() };
            let a = a.clone();
            let sid = sid.clone();
            async move { r2.vote(&a, &sid, "left").await.status() }
        },
        {
            let mut r3 =
                Rater { http: r.http.clone(), base: base.clone(), cookies: r.cookies.clone(), csrf: r.csrf.clone() };
            let a = a.clone();
            let sid = sid.clone();
            async move { r3.vote(&a, &sid, "left").await.status() }
        }
    );
    assert_eq!((x, y), (reqwest::StatusCode::OK, reqwest::StatusCode::OK));
    let res: Value = r.vote(&a, &sid, "left").await.json().await.unwrap();
    assert_eq!(res["duplicate"], true);
    assert_eq!(res["progress"]["done"], 1);
    // A second, different submission for the same pair is a conflict, not a vote.
    assert_eq!(r.vote(&a, &unique_sid(), "right").await.status(), 409);
    // The same submission id for another pair is refused too.
    let n2 = r.next().await;
    let a2 = n2["assignment"].as_str().unwrap().to_string();
    assert_ne!(a, a2);
    assert_eq!(r.vote(&a2, &sid, "right").await.status(), 409);
    let results: Value = admin_get(&base, "/api/admin/results").await.json().await.unwrap();
    assert_eq!(results["n_votes"], 1);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn input_is_validated() {
    let tmp = tempfile::tempdir().unwrap();
    let s = make_study(tmp.path(), &["base", "opt"], 2);
    let mut args = serve_args(&s, "demo");
    args.require_likert = true;
    let server = wanrt_review::start(&args).await.unwrap();
    let base = format!("http://{}", server.addr);
    let mut r = Rater::new(&base);
    r.join("erin").await;
    let n = r.next().await;
    let a = n["assignment"].as_str().unwrap().to_string();
    let bad = [
        json!({"submission_id": unique_sid(), "assignment": a, "overall": "up", "likert_left": 3, "likert_right": 3}),
        json!({"submission_id": unique_sid(), "assignment": a, "overall": "left", "likert_left": 6, "likert_right": 3}),
        json!({"submission_id": unique_sid(), "assignment": a, "overall": "left", "likert_left": 3}),
        json!({"submission_id": "short", "assignment": a, "overall": "left", "likert_left": 3, "likert_right": 3}),
        json!({"submission_id": unique_sid(), "assignment": "../../etc", "overall": "left", "likert_left": 3, "likert_right": 3}),
        json!({"submission_id": unique_sid(), "assignment": a, "overall": "left", "likert_left": 3, "likert_right": 3, "variant": "base"}),
        json!({"submission_id": unique_sid(), "assignment": a, "overall": "left", "visual": "better", "likert_left": 3, "likert_right": 3}),
    ];
    for b in &bad {
        let res = r.post("/api/vote", b).await;
        assert_eq!(res.status(), 400, "{b}");
    }
    // Unknown (well-formed) assignment.
    let res = r
        .post("/api/vote", &json!({"submission_id": unique_sid(), "assignment": "0".repeat(32), "overall": "left", "likert_left": 3, "likert_right": 3}))
        .await;
    assert_eq!(res.status(), 404);
    // Oversized body.
    let res = r.post("/api/join", &json!({"name": "x".repeat(100_000)})).await;
    assert_eq!(res.status(), 413);
    // Bad names.
    let mut z = Rater::new(&base);
    let st: Value = z.get("/api/state").await.json().await.unwrap();
    z.csrf = st["csrf"].as_str().unwrap().to_string();
    assert_eq!(z.post("/api/join", &json!({"name": "  "})).await.status(), 400);
    assert_eq!(z.post("/api/join", &json!({"name": "a\u{0007}b"})).await.status(), 400);
    // A complete vote with criteria is accepted.
    let res = r
        .post("/api/vote", &json!({"submission_id": unique_sid(), "assignment": a, "overall": "tie", "visual": "left", "motion": "right", "alignment": "tie", "likert_left": 5, "likert_right": 1, "elapsed_ms": 1234}))
        .await;
    assert_eq!(res.status(), 200);
    let raw: Value = admin_get(&base, "/api/admin/export?format=json&raw=1").await.json().await.unwrap();
    let v = &raw[0];
    assert_eq!(v["overall"], "tie");
    assert_eq!(v["alignment"], "tie");
    // Position undone: "left" means the variant shown left.
    let left = v["left"].as_str().unwrap();
    let right = if left == "base" { "opt" } else { "base" };
    assert_eq!(v["visual"], left);
    assert_eq!(v["motion"], right);
    let (la, lb) = (v["likert_a"].as_i64().unwrap(), v["likert_b"].as_i64().unwrap());
    if left == "base" {
        assert_eq!((la, lb), (5, 1));
    } else {
        assert_eq!((la, lb), (1, 5));
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn no_path_traversal_and_only_study_files() {
    let tmp = tempfile::tempdir().unwrap();
    let s = make_study(tmp.path(), &["base", "opt"], 2);
    std::fs::write(tmp.path().join("secret.gif"), b"GIF89a-secret").unwrap();
    // A symlink in a variant folder pointing outside it is not part of the study.
    #[cfg(unix)]
    for (_, d) in &s.variants {
        std::os::unix::fs::symlink(tmp.path().join("secret.gif"), d.join("leak.gif")).unwrap();
    }
    let mut prompts: Value = serde_json::from_slice(&std::fs::read(&s.prompts).unwrap()).unwrap();
    prompts["leak.gif"] = json!("leak");
    std::fs::write(&s.prompts, prompts.to_string()).unwrap();
    let (server, base) = start(&s).await;
    let mut r = Rater::new(&base);
    r.join("frank").await;
    let n = r.next().await;
    assert_eq!(n["progress"]["total"], 2, "the symlink is not a pair");
    for path in [
        "/v/../../secret.gif",
        "/v/..%2f..%2fsecret.gif",
        "/v/%2e%2e%2f%2e%2e%2fsecret.gif",
        "/v/base/clip_000.gif",
        "/v/clip_000.gif",
        "/base/clip_000.gif",
        "/static/../prompts.json",
        "/v/..%5c..%5csecret.gif",
        "/v/0123456789abcdef0123456789abcdef",
        "/v/0123456789ABCDEF0123456789ABCDEF",
    ] {
        let res = r.http.get(format!("{base}{path}")).header("cookie", r.cookie_header()).send().await.unwrap();
        assert!(res.status() == 404 || res.status() == 400, "{path}: {}", res.status());
        let body = res.bytes().await.unwrap();
        assert!(!body.starts_with(b"GIF89a-secret"), "{path}");
    }
    // Every pair ever shown uses only the study's own files.
    for _ in 0..2 {
        let n = r.next().await;
        for side in ["left", "right"] {
            let body = r.get(n[side]["url"].as_str().unwrap()).await.bytes().await.unwrap();
            assert!(body.starts_with(b"GIF89a") && !body.starts_with(b"GIF89a-secret"));
        }
        r.vote(n["assignment"].as_str().unwrap(), &unique_sid(), "left").await;
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn results_are_admin_only() {
    let tmp = tempfile::tempdir().unwrap();
    let s = make_study(tmp.path(), &["base", "opt"], 2);
    let (server, base) = start(&s).await;
    let mut r = Rater::new(&base);
    r.join("gina").await;
    for path in [
        "/admin",
        "/api/admin/results",
        "/api/admin/export?format=csv",
        "/api/admin/export?format=json&raw=1",
        "/api/admin/plot.png",
    ] {
        assert_eq!(r.get(path).await.status(), 401, "rater on {path}");
        let res =
            reqwest::Client::new().get(format!("{base}{path}")).bearer_auth("wrong-token-xyz").send().await.unwrap();
        assert_eq!(res.status(), 401, "wrong token on {path}");
        assert_eq!(admin_get(&base, path).await.status(), 200, "admin on {path}");
    }
    // Login link sets an admin cookie and drops the token from the URL.
    let mut adm = Rater::new(&base);
    let res = adm.get(&format!("/admin?token={ADMIN}")).await;
    assert_eq!(res.status(), 303);
    assert_eq!(res.headers()["location"], "/admin");
    let page = adm.get("/admin").await;
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("Study results"));
    assert_eq!(adm.get("/admin?token=nope").await.status(), 401);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn content_types_ranges_and_invites() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = make_study(tmp.path(), &["base", "opt"], 0);
    let mut prompts = serde_json::Map::new();
    for (_, d) in &s.variants {
        std::fs::write(d.join("a.mp4"), b"\x00\x00\x00\x18ftypmp42-fake-mp4-bytes").unwrap();
        std::fs::write(d.join("b.webm"), b"\x1a\x45\xdf\xa3fake-webm").unwrap();
        std::fs::write(d.join("notes.txt"), b"not a video").unwrap();
    }
    prompts.insert("a".into(), json!("stem key works"));
    prompts.insert("b.webm".into(), json!("a webm"));
    std::fs::write(&s.prompts, Value::Object(prompts).to_string()).unwrap();
    s.db = tmp.path().join("inv.sqlite");
    let mut args = serve_args(&s, "types");
    args.invites = Some(2);
    args.passes = 2;
    let server = wanrt_review::start(&args).await.unwrap();
    assert_eq!(server.invites.len(), 2);
    let base = format!("http://{}", server.addr);
    // Invite-only: joining by name is refused; the invite link works and resumes.
    let mut z = Rater::new(&base);
    let st: Value = z.get("/api/state").await.json().await.unwrap();
    assert_eq!(st["invite_only"], true);
    z.csrf = st["csrf"].as_str().unwrap().to_string();
    assert_eq!(z.post("/api/join", &json!({"name": "x"})).await.status(), 403);
    let mut r = Rater::new(&base);
    let res = r.get(&format!("/i/{}", server.invites[0])).await;
    assert_eq!(res.status(), 303);
    let st: Value = r.get("/api/state").await.json().await.unwrap();
    assert_eq!(st["joined"], true);
    r.csrf = st["csrf"].as_str().unwrap().to_string();
    assert_eq!(r.get("/i/00000000000000000000000000000000").await.status(), 404);

    let mut types = HashSet::new();
    let mut prompts_seen = Vec::new();
    for _ in 0..4 {
        let n = r.next().await;
        assert_eq!(n["done"], false);
        prompts_seen.push(n["prompt"].as_str().unwrap().to_string());
        let res = r.get(n["left"]["url"].as_str().unwrap()).await;
        let ty = res.headers()["content-type"].to_str().unwrap().to_string();
        assert_eq!(n["left"]["kind"], "video");
        types.insert(ty.clone());
        if ty == "video/mp4" {
            let res = r
                .http
                .get(format!("{base}{}", n["left"]["url"].as_str().unwrap()))
                .header("cookie", r.cookie_header())
                .header("range", "bytes=4-7")
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 206);
            assert_eq!(&res.bytes().await.unwrap()[..], b"ftyp");
        }
        assert_eq!(r.vote(n["assignment"].as_str().unwrap(), &unique_sid(), "tie").await.status(), 200);
    }
    assert_eq!(types, HashSet::from(["video/mp4".to_string(), "video/webm".to_string()]));
    // Two passes: every pair once before any repeat.
    assert_ne!(prompts_seen[0], prompts_seen[1]);
    assert_ne!(prompts_seen[2], prompts_seen[3]);
    assert_eq!(r.next().await["done"], true);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn setup_errors_are_clear() {
    let tmp = tempfile::tempdir().unwrap();
    let s = make_study(tmp.path(), &["base", "opt"], 3);
    let err = |args: wanrt_review::cli::ServeArgs| async move {
        match wanrt_review::start(&args).await {
            Ok(_) => panic!("expected an error"),
            Err(e) => format!("{e:#}"),
        }
    };
    let mut a = serve_args(&s, "demo");
    a.variants[1] = format!("opt={}", tmp.path().join("nope").display());
    let e = err(a).await;
    assert!(e.contains("variant 'opt'") && e.contains("does not exist"), "{e}");
    assert!(!s.db.exists(), "a failed start leaves no database file behind");

    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let mut a = serve_args(&s, "demo");
    a.variants[1] = format!("opt={}", empty.display());
    let e = err(a).await;
    assert!(e.contains("no video file") && e.contains("opt: 0 files"), "{e}");

    let mut p: Value = serde_json::from_slice(&std::fs::read(&s.prompts).unwrap()).unwrap();
    p.as_object_mut().unwrap().remove("clip_001.gif");
    let p2 = tmp.path().join("p2.json");
    std::fs::write(&p2, p.to_string()).unwrap();
    let mut a = serve_args(&s, "demo");
    a.prompts = p2;
    let e = err(a).await;
    assert!(e.contains("no caption for 'clip_001.gif'"), "{e}");

    let bad = tmp.path().join("bad.json");
    std::fs::write(&bad, "[1,2]").unwrap();
    let mut a = serve_args(&s, "demo");
    a.prompts = bad;
    let e = err(a).await;
    assert!(e.contains("not a JSON object"), "{e}");

    let mut a = serve_args(&s, "demo");
    a.variants = vec![a.variants[0].clone(), "noequals".into()];
    let e = err(a).await;
    assert!(e.contains("not NAME=DIR"), "{e}");

    // Resuming with other variants is refused with the names.
    let ok = wanrt_review::start(&serve_args(&s, "demo")).await.unwrap();
    ok.shutdown().await.unwrap();
    let mut a = serve_args(&s, "demo");
    a.variants[1] = a.variants[1].replacen("opt=", "opt2=", 1);
    let e = err(a).await;
    assert!(e.contains("exists in the database with variants base,opt"), "{e}");
}

#[tokio::test]
async fn resume_after_restart_keeps_votes_and_sessions() {
    let tmp = tempfile::tempdir().unwrap();
    let s = make_study(tmp.path(), &["base", "opt", "fast"], 2);
    let server = wanrt_review::start(&serve_args(&s, "three")).await.unwrap();
    let base = format!("http://{}", server.addr);
    let mut r = Rater::new(&base);
    r.join("hana").await;
    let n = r.next().await;
    assert_eq!(n["progress"]["total"], 6, "3 variants → 3 pairs per prompt");
    r.vote(n["assignment"].as_str().unwrap(), &unique_sid(), "left").await;
    let open = r.next().await;
    server.shutdown().await.unwrap();

    // A new prompt added to every folder joins the resumed study.
    for (_, d) in &s.variants {
        std::fs::copy(d.join("clip_000.gif"), d.join("clip_new.gif")).unwrap();
    }
    let mut p: Value = serde_json::from_slice(&std::fs::read(&s.prompts).unwrap()).unwrap();
    p["clip_new.gif"] = json!("a new prompt");
    std::fs::write(&s.prompts, p.to_string()).unwrap();
    let server = wanrt_review::start(&serve_args(&s, "three")).await.unwrap();
    let base = format!("http://{}", server.addr);
    r.base = base.clone();
    let st: Value = r.get("/api/state").await.json().await.unwrap();
    assert_eq!(st["joined"], true, "session survives a restart");
    assert_eq!(st["progress"]["done"], 1);
    assert_eq!(st["progress"]["total"], 9);
    let again = r.next().await;
    assert_eq!(open["assignment"], again["assignment"], "open pair resumes");
    // Same name on another device is not that rater (a name is not a password).
    let mut other = Rater::new(&base);
    let st: Value = other.get("/api/state").await.json().await.unwrap();
    other.csrf = st["csrf"].as_str().unwrap().to_string();
    assert_eq!(other.post("/api/join", &json!({ "name": "hana" })).await.status(), 409);
    let results: Value = admin_get(&base, "/api/admin/results").await.json().await.unwrap();
    assert_eq!(results["variants"], json!(["base", "opt", "fast"]));
    assert_eq!(results["criteria"][0]["pairs"].as_array().unwrap().len(), 3);
    server.shutdown().await.unwrap();
}
