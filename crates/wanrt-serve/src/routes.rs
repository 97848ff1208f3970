//! The HTTP API (axum). OpenAI's video API shape:
//! - `POST   /v1/videos` — JSON or multipart form → 202 and the queued video object;
//! - `GET    /v1/videos` — newest first, `?limit=1..100&after=ID`, OpenAI's list object;
//! - `GET    /v1/videos/{id}` — status, progress 0–100, error, timings, parameters;
//! - `GET    /v1/videos/{id}/content` — the MP4 (409 until completed; Range requests work);
//! - `GET    /v1/videos/{id}/events` — Server-Sent Events: `video` (the object, first),
//!   `stage`, `progress` (with denoising step/steps), and `done` (the final object);
//! - `POST   /v1/videos/{id}/cancel` — cancel, keep the record (wanrt extension);
//! - `DELETE /v1/videos/{id}` — cancel (a running job stops at its next step) and delete;
//! - `GET    /v1/models` — the models served and their defaults (OpenAI's list shape);
//! - `GET    /healthz`, `GET /metrics` (Prometheus), `GET /` (the web page).
//!
//! Errors are `{"error": {"message", "type", "param", "code"}}`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::stream::Stream;
use serde_json::{json, Value};
use tower_http::services::ServeFile;

use crate::admission::{self, format_bytes};
use crate::api_error::{ApiError, ApiResult};
use crate::auth::{ApiKeys, Caller};
use crate::events::JobEvent;
use crate::inputs::{self, ImageLimits};
use crate::job::{is_valid_id, new_id, now, JobRecord, Status};
use crate::page;
use crate::queue::{NewJob, Submitted};
use crate::request::{self, Form, Limits, Submission};
use crate::worker::Shared;

/// What the handlers share.
pub struct AppState {
    pub shared: Arc<Shared>,
    pub keys: Option<ApiKeys>,
    pub limits: Limits,
    pub max_queue: Option<u64>,
    pub max_body: usize,
    /// Accepted `Host` headers (None: any). Refusing other names defeats DNS rebinding.
    pub allowed_hosts: Option<Vec<String>>,
    pub workers: usize,
}

type App = Arc<AppState>;

pub fn router(state: AppState) -> Router {
    let max_body = state.max_body;
    let app: App = Arc::new(state);
    Router::new()
        .route("/", get(|| async { page::index() }))
        .route("/static/app.js", get(|| async { page::app_js() }))
        .route("/static/style.css", get(|| async { page::style_css() }))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/v1/models", get(models))
        .route("/v1/videos", post(create).get(list))
        .route("/v1/videos/{id}", get(retrieve).delete(delete))
        .route("/v1/videos/{id}/content", get(content))
        .route("/v1/videos/{id}/events", get(events))
        .route("/v1/videos/{id}/cancel", post(cancel))
        .fallback(|| async { ApiError::not_found("no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError { status: StatusCode::METHOD_NOT_ALLOWED, ..ApiError::invalid(None, "method not allowed here") }
        })
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn_with_state(app.clone(), guard))
        .layer(middleware::from_fn(security_headers))
        .with_state(app)
}

/// Host check (DNS rebinding) and, for writes, a same-origin check: a web page on another
/// site must not be able to submit or delete jobs on a local server through the browser.
async fn guard(State(app): State<App>, req: Request, next: Next) -> Response {
    let headers = req.headers();
    if let Some(allowed) = &app.allowed_hosts {
        let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
        if !allowed.iter().any(|a| a.eq_ignore_ascii_case(host)) {
            return ApiError {
                status: StatusCode::MISDIRECTED_REQUEST,
                ..ApiError::invalid(None, format!("unknown Host header '{host}'"))
            }
            .into_response();
        }
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()).unwrap_or("");
        let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
        let cross_origin = match headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
            None => false,
            Some(o) => o.strip_prefix("http://").or_else(|| o.strip_prefix("https://")) != Some(host),
        };
        if site == "cross-site" || site == "same-site" || cross_origin {
            return ApiError::forbidden("cross-origin request refused").into_response();
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
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; media-src 'self' blob:; \
             object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
        ),
    );
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    res
}

/// Runs a queue call off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> crate::Result<T> + Send + 'static) -> ApiResult<T> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(crate::Error::Input(m))) => Err(ApiError::invalid(None, m)),
        Ok(Err(e)) => Err(ApiError::internal(e)),
        Err(e) => Err(ApiError::internal(format!("task: {e}"))),
    }
}

impl AppState {
    fn caller(&self, headers: &HeaderMap) -> ApiResult<Caller> {
        match &self.keys {
            None => Ok(Caller::anonymous()),
            Some(k) => {
                let c = k.caller(headers);
                if c.is_err() {
                    self.shared.metrics.refused("auth");
                }
                c
            }
        }
    }

    fn writer(&self, headers: &HeaderMap) -> ApiResult<Caller> {
        let c = self.caller(headers)?;
        if c.read_only {
            self.shared.metrics.refused("auth");
            return Err(ApiError::forbidden("this API key may only read (it is marked `read` in the keys file)"));
        }
        Ok(c)
    }

    /// The job, if it exists and the caller may see it (404 otherwise, whatever the id).
    async fn job(&self, caller: &Caller, id: &str) -> ApiResult<JobRecord> {
        let missing = || ApiError::not_found(format!("no video '{}'", id.chars().take(64).collect::<String>()));
        if !is_valid_id(id) {
            return Err(missing());
        }
        let q = self.shared.queue.clone();
        let idc = id.to_string();
        let rec = blocking(move || q.get(&idc)).await?.ok_or_else(missing)?;
        if !caller.may_see(rec.owner.as_deref()) {
            return Err(missing());
        }
        Ok(rec)
    }
}

// ------------------------------------------------------------------ create

/// The request's fields, from a JSON object or a multipart form (whose file uploads, images,
/// are read up to `max_image` bytes each).
async fn form(req: Request, max_body: usize, max_image: &ImageLimits) -> ApiResult<Form> {
    let ct = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let too_large = || ApiError::payload_too_large(format!("request body larger than {max_body} bytes (--max-body)"));
    if ct.starts_with("application/json") {
        let bytes = axum::body::to_bytes(req.into_body(), max_body).await.map_err(|_| too_large())?;
        return match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(fields)) => Ok(Form { fields, ..Form::default() }),
            Ok(_) => Err(ApiError::invalid(None, "the request body must be a JSON object")),
            Err(e) => Err(ApiError::invalid(None, format!("invalid JSON: {e}"))),
        };
    }
    if ct.starts_with("multipart/form-data") {
        let mut mp = Multipart::from_request(req, &()).await.map_err(|e| ApiError::invalid(None, e.body_text()))?;
        let mut form = Form::default();
        let part_error = |name: &str, e: axum::extract::multipart::MultipartError| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                too_large()
            } else {
                ApiError::invalid((!name.is_empty()).then_some(name), format!("multipart: {}", e.body_text()))
            }
        };
        loop {
            let mut field = match mp.next_field().await {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => return Err(part_error("", e)),
            };
            let name = field.name().unwrap_or("").to_string();
            if field.file_name().is_some() {
                // An upload: refused as soon as it passes the image limit, not once it is all read.
                let mut bytes = Vec::new();
                while let Some(chunk) = field.chunk().await.map_err(|e| part_error(&name, e))? {
                    bytes.extend_from_slice(&chunk);
                    inputs::check_bytes(&name, bytes.len(), max_image)?;
                }
                form.files.insert(name, bytes);
            } else {
                let text = field.text().await.map_err(|e| part_error(&name, e))?;
                form.fields.insert(name, Value::String(text));
            }
        }
        return Ok(form);
    }
    Err(ApiError::unsupported_media("Content-Type must be application/json or multipart/form-data"))
}

async fn create(State(app): State<App>, req: Request) -> ApiResult<Response> {
    let caller = app.writer(req.headers())?;
    let form =
        form(req, app.max_body, &app.limits.image).await.inspect_err(|_| app.shared.metrics.refused("invalid"))?;
    // Off the async threads: images are decoded here.
    let (shared, limits) = (app.shared.clone(), app.limits);
    let parsed = tokio::task::spawn_blocking(move || request::parse(&form, &shared.models, &limits))
        .await
        .map_err(|e| ApiError::internal(format!("task: {e}")))?;
    let Submission { params, uploads } = parsed.inspect_err(|_| app.shared.metrics.refused("invalid"))?;
    let model = app.shared.models.find(Some(&params.model)).expect("parse checked the model");
    let need = admission::estimate_bytes(&model.model, &params);
    if need > app.shared.budget {
        app.shared.metrics.refused("memory");
        return Err(ApiError::invalid(
            Some("size"),
            format!(
                "this job needs an estimated {} of working memory ({}x{}, {} frames), more than this server's budget of {} (--memory-budget)",
                format_bytes(need),
                params.width,
                params.height,
                params.num_frames,
                format_bytes(app.shared.budget)
            ),
        )
        .with_code("memory_budget_exceeded"));
    }
    if !params.loras.is_empty() {
        // Read and matched against the model now (and kept for the workers): a bad adapter file
        // is this request's 400, not a failed job later.
        let (shared, served, loras) = (app.shared.clone(), model.clone(), params.loras.clone());
        blocking(move || shared.check_adapters(&served, &loras)).await.map_err(|mut e| {
            app.shared.metrics.refused("invalid");
            e.param = Some("loras".into());
            e
        })?;
    }
    let job = NewJob { id: new_id(), owner: caller.owner, params, created_at: now() };
    let id = job.id.clone();
    // The images are on disk before the job is in the queue: a worker (or a re-run after a crash)
    // that claims it finds them.
    let (shared, idc) = (app.shared.clone(), id.clone());
    blocking(move || inputs::save(&shared.outputs, &idc, &uploads)).await?;
    let q = app.shared.queue.clone();
    let max = app.max_queue;
    let submitted = blocking(move || q.submit(&job, max)).await;
    if !matches!(submitted, Ok(Submitted::Queued(_))) {
        inputs::remove(&app.shared.outputs, &id);
    }
    match submitted? {
        Submitted::Queued(rec) => {
            app.shared.metrics.submitted();
            app.shared.doorbell.ring();
            Ok((StatusCode::ACCEPTED, Json(rec.to_json())).into_response())
        }
        Submitted::QueueFull(n) => {
            app.shared.metrics.refused("queue_full");
            let mut r = ApiError::too_many(format!("the queue is full ({n} jobs waiting, --max-queue); retry later"))
                .with_code("queue_full")
                .into_response();
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            Ok(r)
        }
    }
}

// ------------------------------------------------------------------ read

async fn list(
    State(app): State<App>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<Value>> {
    let caller = app.caller(&headers)?;
    if let Some(k) = q.keys().find(|k| !["limit", "after", "order"].contains(&k.as_str())) {
        return Err(ApiError::invalid(
            Some(k),
            format!("unknown query parameter '{k}' (accepted: limit, after, order)"),
        ));
    }
    let limit = match q.get("limit") {
        None => 20,
        Some(s) => match s.parse::<usize>() {
            Ok(n) if (1..=100).contains(&n) => n,
            _ => {
                return Err(ApiError::invalid(Some("limit"), format!("limit must be an integer in 1..=100, got '{s}'")))
            }
        },
    };
    if let Some(o) = q.get("order").filter(|o| o.as_str() != "desc") {
        return Err(ApiError::invalid(
            Some("order"),
            format!("only order=desc (newest first) is supported, got '{o}'"),
        ));
    }
    let after = q.get("after").cloned();
    if let Some(a) = &after {
        if !is_valid_id(a) {
            return Err(ApiError::invalid(Some("after"), format!("after must be a video id, got '{a}'")));
        }
    }
    let queue = app.shared.queue.clone();
    let owner = caller.owner.clone();
    let page = match tokio::task::spawn_blocking(move || queue.list(owner.as_deref(), after.as_deref(), limit)).await {
        Ok(Ok(p)) => p,
        Ok(Err(crate::Error::Input(m))) => return Err(ApiError::invalid(Some("after"), m)),
        Ok(Err(e)) => return Err(ApiError::internal(e)),
        Err(e) => return Err(ApiError::internal(e)),
    };
    let data: Vec<Value> = page.jobs.iter().map(JobRecord::to_json).collect();
    Ok(Json(json!({
        "object": "list",
        "data": data,
        "first_id": page.jobs.first().map(|j| j.id.clone()),
        "last_id": page.jobs.last().map(|j| j.id.clone()),
        "has_more": page.has_more,
    })))
}

async fn retrieve(State(app): State<App>, headers: HeaderMap, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let caller = app.caller(&headers)?;
    Ok(Json(app.job(&caller, &id).await?.to_json()))
}

async fn content(
    State(app): State<App>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    req: Request,
) -> ApiResult<Response> {
    let caller = app.caller(&headers)?;
    if let Some(v) = q.get("variant").filter(|v| v.as_str() != "video") {
        return Err(ApiError::invalid(Some("variant"), format!("variant '{v}' is not available (only 'video')")));
    }
    let rec = app.job(&caller, &id).await?;
    if rec.status != Status::Completed {
        return Err(ApiError::conflict(format!(
            "video {} is {}: its content is available once it is completed",
            rec.id,
            rec.status.as_str()
        ))
        .with_code("video_not_ready"));
    }
    // The path comes from the validated id only, never from the request's text.
    let path = app.shared.output_path(&rec.id);
    if !path.is_file() {
        return Err(ApiError::internal(format!("{}: completed video missing from --outputs", path.display())));
    }
    let mut res = ServeFile::new_with_mime(&path, &"video/mp4".parse().expect("valid mime"))
        .try_call(req)
        .await
        .map_err(ApiError::internal)?
        .map(Body::new);
    let disp = format!("inline; filename=\"{}.mp4\"", rec.id);
    res.headers_mut().insert(header::CONTENT_DISPOSITION, HeaderValue::from_str(&disp).expect("ascii id"));
    res.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("private, max-age=3600"));
    Ok(res)
}

// ------------------------------------------------------------------ cancel / delete

async fn cancel_job(app: &App, headers: &HeaderMap, id: &str, delete: bool) -> ApiResult<JobRecord> {
    let caller = app.writer(headers)?;
    let rec = match app.job(&caller, id).await {
        Ok(r) => r,
        Err(e) => return Err(e),
    };
    if caller.owner.is_some() && rec.owner != caller.owner {
        return Err(ApiError::forbidden("this video belongs to another API key"));
    }
    let q = app.shared.queue.clone();
    let idc = rec.id.clone();
    let after = blocking(move || q.cancel(&idc, delete))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no video '{id}'")))?;
    app.shared.cancel_local(&after.id);
    if after.status == Status::Cancelled {
        app.shared.metrics.finished(Status::Cancelled);
        app.shared.hub.publish(JobEvent {
            id: after.id.clone(),
            status: Status::Cancelled.as_str(),
            progress: after.progress,
            stage: None,
            step: None,
            steps: None,
        });
    }
    if delete && after.status == Status::Completed {
        let path = app.shared.output_path(&after.id);
        if let Err(e) = std::fs::remove_file(&path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                eprintln!("error: deleting {}: {e}", path.display());
            }
        }
    }
    // A running job's worker removes them when it stops (it may be reading them now).
    if after.status.is_terminal() {
        inputs::remove(&app.shared.outputs, &after.id);
    }
    Ok(after)
}

async fn delete(State(app): State<App>, headers: HeaderMap, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let rec = cancel_job(&app, &headers, &id, true).await?;
    Ok(Json(json!({ "id": rec.id, "object": "video", "deleted": true, "status": rec.status.as_str() })))
}

async fn cancel(State(app): State<App>, headers: HeaderMap, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    Ok(Json(cancel_job(&app, &headers, &id, false).await?.to_json()))
}

// ------------------------------------------------------------------ events

struct Follow {
    app: App,
    id: String,
    rx: tokio::sync::broadcast::Receiver<JobEvent>,
    last: Option<(String, u8, Option<String>)>,
    next_poll: tokio::time::Instant,
    started: bool,
    done: bool,
}

impl Follow {
    /// The next event, or None once the job has ended (after its `done` event).
    async fn next(&mut self) -> Option<Event> {
        if self.done {
            return None;
        }
        if !self.started {
            self.started = true;
            let rec = self.app.shared.queue.clone();
            let id = self.id.clone();
            return match blocking(move || rec.get(&id)).await {
                Ok(Some(r)) => Some(self.snapshot(r, "video")),
                _ => self.end(),
            };
        }
        loop {
            if self.app.shared.shutdown.load(std::sync::atomic::Ordering::SeqCst) {
                // The server is stopping: end the stream so that graceful shutdown can finish.
                self.done = true;
                return None;
            }
            // Events of this process's workers arrive at once; the queue is read at least every
            // 500 ms for jobs run elsewhere (PostgreSQL) and for the final state.
            let event = tokio::select! {
                ev = self.rx.recv() => match ev {
                    Ok(e) if e.id == self.id => Some(e),
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                        tokio::time::sleep_until(self.next_poll).await;
                        None
                    }
                },
                _ = tokio::time::sleep_until(self.next_poll) => None,
            };
            if let Some(e) = event {
                let settled = Status::parse(e.status).is_some_and(|s| s.is_terminal() || s == Status::Queued);
                if !settled {
                    if let Some(ev) = self.change(e.status, e.progress, e.stage.clone(), e.step, e.steps) {
                        return Some(ev);
                    }
                    continue;
                }
            }
            self.next_poll = tokio::time::Instant::now() + Duration::from_millis(500);
            let q = self.app.shared.queue.clone();
            let id = self.id.clone();
            match blocking(move || q.get(&id)).await {
                Ok(Some(r)) if r.status.is_terminal() => return Some(self.snapshot(r, "done")),
                Ok(Some(r)) => {
                    if let Some(ev) = self.change(r.status.as_str(), r.progress, r.stage.clone(), None, None) {
                        return Some(ev);
                    }
                }
                _ => return self.end(),
            }
        }
    }

    fn end(&mut self) -> Option<Event> {
        self.done = true;
        Some(Event::default().event("done").data(json!({ "id": self.id, "deleted": true }).to_string()))
    }

    fn snapshot(&mut self, r: JobRecord, name: &str) -> Event {
        self.last = Some((r.status.as_str().to_string(), r.progress, r.stage.clone()));
        if r.status.is_terminal() {
            self.done = true;
            return Event::default().event("done").data(r.to_json().to_string());
        }
        Event::default().event(name).data(r.to_json().to_string())
    }

    fn change(
        &mut self,
        status: &str,
        progress: u8,
        stage: Option<String>,
        step: Option<usize>,
        steps: Option<usize>,
    ) -> Option<Event> {
        let now = (status.to_string(), progress, stage.clone());
        if self.last.as_ref() == Some(&now) {
            return None;
        }
        let stage_changed = self.last.as_ref().is_none_or(|l| l.2 != stage || l.0 != status);
        self.last = Some(now);
        let mut data = json!({ "id": self.id, "status": status, "progress": progress, "stage": stage });
        if let (Some(s), Some(n)) = (step, steps) {
            data["step"] = json!(s);
            data["steps"] = json!(n);
        }
        Some(Event::default().event(if stage_changed { "stage" } else { "progress" }).data(data.to_string()))
    }
}

async fn events(
    State(app): State<App>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let caller = app.caller(&headers)?;
    let rec = app.job(&caller, &id).await?;
    let rx = app.shared.hub.subscribe();
    let next_poll = tokio::time::Instant::now() + Duration::from_millis(500);
    let follow = Follow { app: app.clone(), id: rec.id, rx, last: None, next_poll, started: false, done: false };
    let stream = futures_util::stream::unfold(follow, |mut f| async move { f.next().await.map(|e| (Ok(e), f)) });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

// ------------------------------------------------------------------ models, health, metrics

async fn models(State(app): State<App>, headers: HeaderMap) -> ApiResult<Json<Value>> {
    app.caller(&headers)?;
    let data: Vec<Value> = app
        .shared
        .models
        .iter()
        .map(|m| {
            // The defaults a request with only a prompt gets.
            let d = m.model.resolve(&wanrt_wan::pipeline::GenerateParams::new("")).ok();
            json!({
                "id": m.name,
                "object": "model",
                "owned_by": "wanrt",
                "defaults": d.map(|d| json!({
                    "width": d.width,
                    "height": d.height,
                    "num_frames": d.num_frames,
                    "fps": m.fps,
                    "num_inference_steps": d.steps,
                    "guidance_scale": d.guidance,
                    "negative_prompt": d.negative_prompt,
                })),
            })
        })
        .collect();
    Ok(Json(json!({ "object": "list", "data": data })))
}

async fn healthz(State(app): State<App>) -> Response {
    let q = app.shared.queue.clone();
    match tokio::task::spawn_blocking(move || q.counts()).await {
        Ok(Ok(counts)) => {
            let queued = counts.iter().find(|c| c.0 == Status::Queued).map_or(0, |c| c.1);
            Json(json!({
                "status": "ok",
                "queue": app.shared.queue.kind(),
                "queued": queued,
                "models": app.shared.models.names(),
                "workers": app.workers,
            }))
            .into_response()
        }
        Ok(Err(e)) => {
            eprintln!("error: healthz: {e}");
            ApiError::unavailable("the job queue is not reachable").into_response()
        }
        Err(e) => ApiError::internal(e).into_response(),
    }
}

async fn metrics(State(app): State<App>, headers: HeaderMap) -> ApiResult<Response> {
    app.caller(&headers)?;
    let q = app.shared.queue.clone();
    let counts = blocking(move || q.counts()).await?;
    let text =
        app.shared.metrics.render(&counts, app.shared.running_count(), admission::peak_rss_bytes(), app.shared.budget);
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response())
}
