//! The rating web app (axum).
//!
//! Rater API (cookie `wr_session`, set by joining):
//! - `GET  /api/state` — joined or not, own progress, CSRF token (a pre-session token in
//!   cookie `wr_pre` before joining: double-submit).
//! - `POST /api/join` `{name}` — join under a new name (a taken name is refused unless the
//!   request holds that rater's session; disabled in invite-only studies;
//!   `GET /i/{invite}` joins through an invite link).
//! - `GET  /api/next` — the rater's current pair (resumed if open), or `{done: true}`.
//! - `POST /api/vote` — one vote; idempotent on the client-generated `submission_id`.
//! - `GET  /v/{token}` — a video of the rater's own assignment, by opaque token.
//!
//! Every POST needs `Content-Type: application/json` and the header `X-CSRF-Token`
//! (the session's token); a cross-site `Origin`/`Sec-Fetch-Site` is refused.
//!
//! Admin (cookie `wr_admin` set by `GET /admin?token=…`, or `Authorization: Bearer …`):
//! `GET /admin`, `/api/admin/results`, `/api/admin/export?format=csv|json[&raw=1]`,
//! `/api/admin/plot.png` (handlers in `admin.rs`).

use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rand::seq::IndexedRandom;
use rand::Rng;
use rusqlite::{params, Connection, OptionalExtension};
use serde::Deserialize;
use serde_json::json;
use tower_http::services::ServeFile;

use crate::admin;
use crate::confine::{self, Refused};
use crate::stats::CRITERIA;
use crate::study::{content_type, StudyRuntime};
use crate::{db, Error};

const INDEX_HTML: &str = include_str!("../static/index.html");
const APP_JS: &str = include_str!("../static/app.js");
const ADMIN_JS: &str = include_str!("../static/admin.js");
const STYLE_CSS: &str = include_str!("../static/style.css");

/// An open assignment older than this no longer counts as "being rated" when balancing.
const PENDING_SECS: i64 = 30 * 60;

/// Server configuration after the study has been prepared.
pub struct Config {
    pub study: StudyRuntime,
    pub admin_token: String,
    pub invite_only: bool,
    pub passes: u32,
    pub require_likert: bool,
    pub resamples: u32,
    pub seed: u64,
    /// Accepted `Host` headers (None: any, when bound to an unspecified address). Refusing
    /// other names defeats DNS-rebinding pages that would otherwise reach a localhost
    /// server as their own origin.
    pub allowed_hosts: Option<Vec<String>>,
}

pub(crate) struct Inner {
    db: Mutex<Connection>,
    cfg: Config,
}

#[derive(Clone)]
pub(crate) struct App(Arc<Inner>);

/// Random hex token of `bytes` random bytes (OS-seeded CSPRNG).
pub fn random_token(bytes: usize) -> String {
    let mut rng = rand::rng();
    (0..bytes).map(|_| format!("{:02x}", rng.random::<u8>())).collect()
}

/// Constant-time string equality (for tokens).
pub(crate) fn ct_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn is_hex_token(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

// ---------------------------------------------------------------- errors

#[derive(Debug)]
pub(crate) enum ApiError {
    BadRequest(String),
    Unauthorized(String),
    Forbidden(String),
    NotFound,
    Conflict(String),
    Internal(String),
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError::Internal(e.to_string())
    }
}

impl From<rusqlite::Error> for ApiError {
    fn from(e: rusqlite::Error) -> Self {
        ApiError::Internal(format!("database: {e}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (code, msg) = match self {
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, m),
            ApiError::Unauthorized(m) => (StatusCode::UNAUTHORIZED, m),
            ApiError::Forbidden(m) => (StatusCode::FORBIDDEN, m),
            ApiError::NotFound => (StatusCode::NOT_FOUND, "not found".to_string()),
            ApiError::Conflict(m) => (StatusCode::CONFLICT, m),
            ApiError::Internal(m) => {
                eprintln!("error: {m}");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal error".to_string())
            }
        };
        (code, Json(json!({ "error": msg }))).into_response()
    }
}

pub(crate) type ApiResult<T> = Result<T, ApiError>;

impl App {
    /// Runs `f` with the database on the blocking pool.
    pub(crate) async fn db<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection, &Config) -> ApiResult<R> + Send + 'static,
    ) -> ApiResult<R> {
        let app = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = app.0.db.lock().map_err(|_| ApiError::Internal("database lock poisoned".into()))?;
            f(&mut conn, &app.0.cfg)
        })
        .await
        .map_err(|e| ApiError::Internal(format!("task: {e}")))?
    }

    pub(crate) fn cfg(&self) -> &Config {
        &self.0.cfg
    }

    pub(crate) fn is_admin(&self, headers: &HeaderMap) -> bool {
        let token = &self.cfg().admin_token;
        if let Some(c) = cookie(headers, "wr_admin") {
            if ct_eq(&c, token) {
                return true;
            }
        }
        let auth = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        bearer(auth).is_some_and(|b| ct_eq(b, token))
    }

    async fn rater(&self, headers: &HeaderMap) -> ApiResult<Option<Rater>> {
        let Some(session) = cookie(headers, "wr_session") else {
            return Ok(None);
        };
        if !is_hex_token(&session, 64) {
            return Ok(None);
        }
        self.db(move |conn, cfg| {
            Ok(conn
                .query_row(
                    "SELECT id, name, csrf FROM raters WHERE session = ?1 AND study_id = ?2",
                    params![session, cfg.study.id],
                    |r| Ok(Rater { id: r.get(0)?, name: r.get(1)?, csrf: r.get(2)? }),
                )
                .optional()?)
        })
        .await
    }

    async fn require_rater(&self, headers: &HeaderMap) -> ApiResult<Rater> {
        self.rater(headers).await?.ok_or_else(|| ApiError::Unauthorized("join the study first".into()))
    }
}

#[derive(Debug, Clone)]
struct Rater {
    id: i64,
    name: String,
    csrf: String,
}

/// The credentials of an `Authorization: Bearer …` header; the scheme name is
/// case-insensitive (RFC 9110 §11.1), so `bearer x` and `BEARER x` count too.
pub(crate) fn bearer(auth: Option<&str>) -> Option<&str> {
    let (scheme, cred) = auth?.trim_start().split_once(' ')?;
    let cred = cred.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !cred.is_empty()).then_some(cred)
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().to_string())
}

pub(crate) fn set_cookie(name: &str, value: &str, max_age: i64) -> HeaderValue {
    HeaderValue::from_str(&format!("{name}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}"))
        .expect("cookie value is ASCII")
}

/// CSRF checks for every POST: same-origin request, JSON body, the expected token.
fn check_post(headers: &HeaderMap, expected: &str) -> ApiResult<()> {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        if site == "cross-site" || site == "same-site" {
            return Err(ApiError::Forbidden("cross-site request refused".into()));
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
        if origin != format!("http://{host}") {
            return Err(ApiError::Forbidden("cross-origin request refused".into()));
        }
    }
    let token = headers.get("x-csrf-token").and_then(|v| v.to_str().ok()).unwrap_or("");
    if expected.is_empty() || !ct_eq(token, expected) {
        return Err(ApiError::Forbidden("missing or invalid CSRF token (reload the page)".into()));
    }
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !ct.starts_with("application/json") {
        return Err(ApiError::BadRequest("Content-Type must be application/json".into()));
    }
    Ok(())
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &Bytes) -> ApiResult<T> {
    serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("invalid request: {e}")))
}

// ---------------------------------------------------------------- router

/// Builds the router for a prepared study (used by [`crate::start`] and tests).
pub fn router(conn: Connection, cfg: Config) -> Router {
    let app = App(Arc::new(Inner { db: Mutex::new(conn), cfg }));
    Router::new()
        .route("/", get(index))
        .route("/static/app.js", get(|| async { asset(APP_JS, "text/javascript") }))
        .route("/static/admin.js", get(|| async { asset(ADMIN_JS, "text/javascript") }))
        .route("/static/style.css", get(|| async { asset(STYLE_CSS, "text/css") }))
        .route("/i/{invite}", get(invite))
        .route("/api/state", get(api_state))
        .route("/api/join", post(api_join))
        .route("/api/next", get(api_next))
        .route("/api/vote", post(api_vote))
        .route("/v/{token}", get(video))
        .route("/admin", get(admin::admin_page))
        .route("/api/admin/results", get(admin::admin_results))
        .route("/api/admin/export", get(admin::admin_export))
        .route("/api/admin/plot.png", get(admin::admin_plot))
        .fallback(|| async { ApiError::NotFound })
        .layer(DefaultBodyLimit::max(16 * 1024))
        .layer(middleware::from_fn_with_state(app.clone(), check_host))
        .layer(middleware::from_fn(security_headers))
        .with_state(app)
}

async fn check_host(State(app): State<App>, req: Request, next: Next) -> Response {
    if let Some(allowed) = &app.cfg().allowed_hosts {
        let host = req.headers().get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
        if !allowed.iter().any(|a| a.eq_ignore_ascii_case(host)) {
            return (StatusCode::MISDIRECTED_REQUEST, Json(json!({ "error": "unknown Host header" }))).into_response();
        }
    }
    next.run(req).await
}

async fn security_headers(req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; media-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
        ),
    );
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    res
}

pub(crate) fn asset(body: &'static str, ty: &'static str) -> Response {
    ([(header::CONTENT_TYPE, ty)], body).into_response()
}

async fn index() -> Response {
    asset(INDEX_HTML, "text/html; charset=utf-8")
}

// ---------------------------------------------------------------- rater API

fn progress(conn: &Connection, cfg: &Config, rater: i64) -> ApiResult<serde_json::Value> {
    let done: i64 =
        conn.query_row("SELECT COUNT(*) FROM assignments WHERE rater_id = ?1 AND done = 1", params![rater], |r| {
            r.get(0)
        })?;
    Ok(json!({ "done": done, "total": cfg.study.n_pairs as i64 * cfg.passes as i64 }))
}

fn state_json(cfg: &Config, rater: Option<(&Rater, serde_json::Value)>, pre: &str) -> serde_json::Value {
    let criteria: Vec<_> = CRITERIA[1..].iter().map(|(k, l)| json!({ "key": k, "label": l })).collect();
    match rater {
        Some((r, progress)) => json!({
            "joined": true,
            "name": r.name,
            "csrf": r.csrf,
            "progress": progress,
            "criteria": criteria,
            "require_likert": cfg.require_likert,
            "invite_only": cfg.invite_only,
        }),
        None => json!({
            "joined": false,
            "csrf": pre,
            "invite_only": cfg.invite_only,
        }),
    }
}

async fn api_state(State(app): State<App>, headers: HeaderMap) -> ApiResult<Response> {
    if let Some(r) = app.rater(&headers).await? {
        let id = r.id;
        let p = app.db(move |conn, cfg| progress(conn, cfg, id)).await?;
        return Ok(Json(state_json(app.cfg(), Some((&r, p)), "")).into_response());
    }
    let pre = cookie(&headers, "wr_pre").filter(|p| is_hex_token(p, 32)).unwrap_or_else(|| random_token(16));
    let mut res = Json(state_json(app.cfg(), None, &pre)).into_response();
    res.headers_mut().insert(header::SET_COOKIE, set_cookie("wr_pre", &pre, 86400));
    Ok(res)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JoinReq {
    name: String,
}

/// Creates the rater called `name`; None when the name is taken in this study.
fn create_rater(tx: &Connection, cfg: &Config, name: &str) -> ApiResult<Option<(String, Rater)>> {
    let taken: bool = tx.query_row(
        "SELECT EXISTS(SELECT 1 FROM raters WHERE study_id = ?1 AND name = ?2)",
        params![cfg.study.id, name],
        |r| r.get(0),
    )?;
    if taken {
        return Ok(None);
    }
    let session = random_token(32);
    let csrf = random_token(16);
    tx.execute(
        "INSERT INTO raters(study_id, name, session, csrf, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![cfg.study.id, name, session, csrf, db::now()],
    )?;
    Ok(Some((session, Rater { id: tx.last_insert_rowid(), name: name.to_string(), csrf })))
}

/// Joins by name: a new name creates a rater; a taken name is refused unless the request
/// already holds that rater's session (a name is not a password: typing someone's name
/// must not hand over their session). Returns (session, rater).
fn join_by_name(conn: &mut Connection, cfg: &Config, name: &str, current: Option<&str>) -> ApiResult<(String, Rater)> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let existing = tx
        .query_row(
            "SELECT id, session, csrf FROM raters WHERE study_id = ?1 AND name = ?2",
            params![cfg.study.id, name],
            |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?)),
        )
        .optional()?;
    let out = match existing {
        Some((id, session, csrf)) if current.is_some_and(|c| ct_eq(c, &session)) => {
            (session, Rater { id, name: name.to_string(), csrf })
        }
        Some(_) => {
            return Err(ApiError::Conflict(format!(
                "the name '{name}' is already taken in this study: choose another (to resume, use the browser you joined with)"
            )))
        }
        None => create_rater(&tx, cfg, name)?.ok_or_else(|| ApiError::Conflict("name taken".into()))?,
    };
    tx.commit()?;
    Ok(out)
}

async fn api_join(State(app): State<App>, headers: HeaderMap, body: Bytes) -> ApiResult<Response> {
    let pre = cookie(&headers, "wr_pre").unwrap_or_default();
    check_post(&headers, &pre)?;
    if app.cfg().invite_only {
        return Err(ApiError::Forbidden("this study is invite-only: open your invite link".into()));
    }
    let req: JoinReq = parse_json(&body)?;
    let name = req.name.trim().to_string();
    if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
        return Err(ApiError::BadRequest("name must be 1-64 characters without control characters".into()));
    }
    let current = cookie(&headers, "wr_session");
    let (session, rater, p) = app
        .db(move |conn, cfg| {
            let (session, rater) = join_by_name(conn, cfg, &name, current.as_deref())?;
            let p = progress(conn, cfg, rater.id)?;
            Ok((session, rater, p))
        })
        .await?;
    let mut res = Json(state_json(app.cfg(), Some((&rater, p)), "")).into_response();
    res.headers_mut().insert(header::SET_COOKIE, set_cookie("wr_session", &session, 365 * 86400));
    Ok(res)
}

/// The rater behind an unused invite: `invite-N`, or `invite-N-2`… when someone already
/// took that name (never the existing rater of that name).
fn invite_rater(conn: &mut Connection, cfg: &Config, number: i64, token: &str) -> ApiResult<String> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut created = None;
    for k in 1..=100 {
        let name = if k == 1 { format!("invite-{number}") } else { format!("invite-{number}-{k}") };
        if let Some(x) = create_rater(&tx, cfg, &name)? {
            created = Some(x);
            break;
        }
    }
    let Some((session, r)) = created else {
        return Err(ApiError::Conflict("no free rater name for this invite".into()));
    };
    tx.execute("UPDATE invites SET rater_id = ?1 WHERE token = ?2 AND rater_id IS NULL", params![r.id, token])?;
    tx.commit()?;
    Ok(session)
}

async fn invite(State(app): State<App>, Path(token): Path<String>) -> ApiResult<Response> {
    if !is_hex_token(&token, 32) {
        return Err(ApiError::NotFound);
    }
    let session = app
        .db(move |conn, cfg| {
            let row = conn
                .query_row(
                    "SELECT rater_id, (SELECT COUNT(*) FROM invites i2 WHERE i2.study_id = i.study_id AND i2.rowid <= i.rowid)
                     FROM invites i WHERE token = ?1 AND study_id = ?2",
                    params![token, cfg.study.id],
                    |r| Ok((r.get::<_, Option<i64>>(0)?, r.get::<_, i64>(1)?)),
                )
                .optional()?;
            let Some((rater, number)) = row else {
                return Err(ApiError::NotFound);
            };
            match rater {
                Some(id) => Ok(conn.query_row(
                    "SELECT session FROM raters WHERE id = ?1",
                    params![id],
                    |r| r.get::<_, String>(0),
                )?),
                None => invite_rater(conn, cfg, number, &token),
            }
        })
        .await?;
    let mut res = Redirect::to("/").into_response();
    res.headers_mut().insert(header::SET_COOKIE, set_cookie("wr_session", &session, 365 * 86400));
    Ok(res)
}

/// The rater's open assignment, or a new one chosen by balanced assignment.
fn next_assignment(conn: &mut Connection, cfg: &Config, rater: i64) -> ApiResult<Option<i64>> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let open: Option<i64> = tx
        .query_row(
            "SELECT id FROM assignments WHERE rater_id = ?1 AND done = 0 ORDER BY id LIMIT 1",
            params![rater],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(id) = open {
        tx.commit()?;
        return Ok(Some(id));
    }
    let now = db::now();
    // The first pass in which some pair is still new to this rater; within it, the pairs
    // with the least load (votes plus assignments being rated right now by others).
    let mut chosen = None;
    for pass in 0..cfg.passes as i64 {
        let candidates: Vec<(i64, i64, i64, i64)> = {
            let mut st = tx.prepare(
                "SELECT p.id, p.variant_a, p.variant_b,
                        (SELECT COUNT(*) FROM votes v WHERE v.pair_id = p.id)
                      + (SELECT COUNT(*) FROM assignments a
                         WHERE a.pair_id = p.id AND a.done = 0 AND a.created_at > ?4)
                 FROM pairs p
                 WHERE p.study_id = ?1
                   AND NOT EXISTS (SELECT 1 FROM assignments a
                                   WHERE a.rater_id = ?2 AND a.pair_id = p.id AND a.pass = ?3)",
            )?;
            let rows = st
                .query_map(params![cfg.study.id, rater, pass, now - PENDING_SECS], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })?
                .collect::<Result<_, _>>()?;
            rows
        };
        if !candidates.is_empty() {
            chosen = Some((pass, candidates));
            break;
        }
    }
    let Some((pass, candidates)) = chosen else {
        tx.commit()?;
        return Ok(None);
    };
    let min = candidates.iter().map(|c| c.3).min().unwrap_or(0);
    let least: Vec<_> = candidates.iter().filter(|c| c.3 == min).collect();
    let mut rng = rand::rng();
    let &&(pair, va, vb, _) = least.choose(&mut rng).expect("non-empty");
    let left = if rng.random::<bool>() { va } else { vb };
    tx.execute(
        "INSERT INTO assignments(token, rater_id, pair_id, pass, left_variant, left_video, right_video, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![random_token(16), rater, pair, pass, left, random_token(16), random_token(16), now],
    )?;
    let id = tx.last_insert_rowid();
    tx.commit()?;
    Ok(Some(id))
}

fn kind(file: &str) -> &'static str {
    match content_type(file) {
        Some(t) if t.starts_with("image/") => "image",
        _ => "video",
    }
}

async fn api_next(State(app): State<App>, headers: HeaderMap) -> ApiResult<Response> {
    let rater = app.require_rater(&headers).await?;
    let body = app
        .db(move |conn, cfg| {
            let p = progress(conn, cfg, rater.id)?;
            let Some(id) = next_assignment(conn, cfg, rater.id)? else {
                return Ok(json!({ "done": true, "progress": p }));
            };
            let (token, left_video, right_video, caption, file): (String, String, String, String, String) = conn
                .query_row(
                    "SELECT a.token, a.left_video, a.right_video, i.caption, i.file
                     FROM assignments a JOIN pairs p ON p.id = a.pair_id JOIN items i ON i.id = p.item_id
                     WHERE a.id = ?1",
                    params![id],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
                )?;
            let k = kind(&file);
            Ok(json!({
                "done": false,
                "assignment": token,
                "prompt": caption,
                "left": { "url": format!("/v/{left_video}"), "kind": k },
                "right": { "url": format!("/v/{right_video}"), "kind": k },
                "progress": p,
            }))
        })
        .await?;
    Ok(Json(body).into_response())
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Side {
    Left,
    Right,
    Tie,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VoteReq {
    submission_id: String,
    assignment: String,
    overall: Side,
    #[serde(default)]
    visual: Option<Side>,
    #[serde(default)]
    motion: Option<Side>,
    #[serde(default)]
    alignment: Option<Side>,
    #[serde(default)]
    likert_left: Option<u8>,
    #[serde(default)]
    likert_right: Option<u8>,
    #[serde(default)]
    elapsed_ms: Option<u64>,
}

impl VoteReq {
    fn validate(&self, require_likert: bool) -> ApiResult<()> {
        let sid = &self.submission_id;
        if sid.len() < 8 || sid.len() > 64 || !sid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(ApiError::BadRequest(
                "submission_id must be 8-64 characters of letters, digits and '-'".into(),
            ));
        }
        if !is_hex_token(&self.assignment, 32) {
            return Err(ApiError::BadRequest("invalid assignment".into()));
        }
        for l in [self.likert_left, self.likert_right].into_iter().flatten() {
            if !(1..=5).contains(&l) {
                return Err(ApiError::BadRequest("Likert scores are 1 to 5".into()));
            }
        }
        if require_likert && (self.likert_left.is_none() || self.likert_right.is_none()) {
            return Err(ApiError::BadRequest("this study requires a 1-5 score for both videos".into()));
        }
        if self.elapsed_ms.is_some_and(|e| e > 86_400_000) {
            return Err(ApiError::BadRequest("elapsed_ms out of range".into()));
        }
        Ok(())
    }
}

fn record_vote(conn: &mut Connection, cfg: &Config, rater: i64, req: &VoteReq) -> ApiResult<serde_json::Value> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    // Idempotency: the same submission again is acknowledged, not counted again.
    let prior = tx
        .query_row(
            "SELECT v.rater_id, a.token FROM votes v JOIN assignments a ON a.id = v.assignment_id
             WHERE v.submission_id = ?1",
            params![req.submission_id],
            |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)),
        )
        .optional()?;
    if let Some((who, token)) = prior {
        tx.commit()?;
        if who == rater && token == req.assignment {
            let p = progress(conn, cfg, rater)?;
            return Ok(json!({ "ok": true, "duplicate": true, "progress": p }));
        }
        return Err(ApiError::Conflict("submission id already used".into()));
    }
    let row = tx
        .query_row(
            "SELECT a.id, a.rater_id, a.pair_id, a.left_variant, a.done, p.variant_a, p.variant_b
             FROM assignments a JOIN pairs p ON p.id = a.pair_id
             WHERE a.token = ?1 AND p.study_id = ?2",
            params![req.assignment, cfg.study.id],
            |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, i64>(5)?,
                ))
            },
        )
        .optional()?;
    let Some((aid, owner, pair, left, done, va)) = row else {
        return Err(ApiError::NotFound);
    };
    if owner != rater {
        return Err(ApiError::NotFound);
    }
    if done != 0 {
        return Err(ApiError::Conflict("this pair is already rated".into()));
    }
    let left_is_a = left == va;
    let canon = |s: Side| match (s, left_is_a) {
        (Side::Tie, _) => "tie",
        (Side::Left, true) | (Side::Right, false) => "a",
        _ => "b",
    };
    let (la, lb) = if left_is_a { (req.likert_left, req.likert_right) } else { (req.likert_right, req.likert_left) };
    tx.execute(
        "INSERT INTO votes(study_id, submission_id, assignment_id, rater_id, pair_id, left_variant,
                           overall, visual, motion, alignment, likert_a, likert_b, elapsed_ms, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
        params![
            cfg.study.id,
            req.submission_id,
            aid,
            rater,
            pair,
            left,
            canon(req.overall),
            req.visual.map(canon),
            req.motion.map(canon),
            req.alignment.map(canon),
            la,
            lb,
            req.elapsed_ms.map(|e| e as i64),
            db::now()
        ],
    )?;
    tx.execute("UPDATE assignments SET done = 1 WHERE id = ?1", params![aid])?;
    tx.commit()?;
    let p = progress(conn, cfg, rater)?;
    Ok(json!({ "ok": true, "duplicate": false, "progress": p }))
}

async fn api_vote(State(app): State<App>, headers: HeaderMap, body: Bytes) -> ApiResult<Response> {
    let rater = app.require_rater(&headers).await?;
    check_post(&headers, &rater.csrf)?;
    let req: VoteReq = parse_json(&body)?;
    req.validate(app.cfg().require_likert)?;
    let out = app.db(move |conn, cfg| record_vote(conn, cfg, rater.id, &req)).await?;
    Ok(Json(out).into_response())
}

async fn video(State(app): State<App>, Path(token): Path<String>, req: Request) -> ApiResult<Response> {
    if !is_hex_token(&token, 32) {
        return Err(ApiError::NotFound);
    }
    let admin = app.is_admin(req.headers());
    let rater = app.rater(req.headers()).await?;
    if !admin && rater.is_none() {
        return Err(ApiError::Unauthorized("join the study first".into()));
    }
    let row = app
        .db(move |conn, cfg| {
            Ok(conn
                .query_row(
                    "SELECT a.rater_id, p.item_id,
                            CASE WHEN a.left_video = ?1 THEN a.left_variant
                                 WHEN a.left_variant = p.variant_a THEN p.variant_b
                                 ELSE p.variant_a END
                     FROM assignments a JOIN pairs p ON p.id = a.pair_id
                     WHERE (a.left_video = ?1 OR a.right_video = ?1) AND p.study_id = ?2",
                    params![token, cfg.study.id],
                    |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?)),
                )
                .optional()?)
        })
        .await?;
    let Some((owner, item, variant)) = row else {
        return Err(ApiError::NotFound);
    };
    if !admin && rater.map(|r| r.id) != Some(owner) {
        return Err(ApiError::NotFound);
    }
    let Some(v) = app.cfg().study.videos.get(&(item, variant)).cloned() else {
        return Err(ApiError::NotFound);
    };
    let Some(mime) = content_type(&v.file) else {
        return Err(ApiError::NotFound);
    };
    // Resolved and confined again now: the folder may have changed since start-up.
    let opened = tokio::task::spawn_blocking(move || {
        confine::open_confined(&v.dir, &v.file).map_err(|why| {
            let why = match why {
                Refused::Missing => "is gone".to_string(),
                Refused::NotAFile => "is not a regular file".to_string(),
                Refused::Outside(p) => format!("now points outside its variant folder (to {})", p.display()),
            };
            eprintln!("warning: {} {why}; not served", v.dir.join(&v.file).display());
        })
    })
    .await
    .map_err(|e| ApiError::Internal(format!("task: {e}")))?;
    let Ok(opened) = opened else {
        return Err(ApiError::NotFound);
    };
    // `opened` stays alive until ServeFile has opened its path (the fd link on Linux).
    serve_file(&opened.path, mime, req).await
}

async fn serve_file(path: &std::path::Path, mime: &'static str, req: Request) -> ApiResult<Response> {
    let (parts, _) = req.into_parts();
    // Only the headers that matter for a file (range, conditionals) are passed on.
    let mut fwd = Request::builder().method(Method::GET).uri("/");
    for h in [header::RANGE, header::IF_RANGE, header::IF_MODIFIED_SINCE, header::IF_NONE_MATCH] {
        if let Some(v) = parts.headers.get(&h) {
            fwd = fwd.header(h, v);
        }
    }
    let fwd = fwd.body(Body::empty()).map_err(|e| ApiError::Internal(e.to_string()))?;
    let res = tower::ServiceExt::oneshot(ServeFile::new(path), fwd)
        .await
        .map_err(|e| ApiError::Internal(format!("serving video: {e}")))?;
    let mut res = res.map(Body::new);
    if res.status() == StatusCode::NOT_FOUND {
        return Err(ApiError::NotFound);
    }
    res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(mime));
    res.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("private, max-age=3600"));
    Ok(res)
}
