//! Admin side of the web app: the results page, results JSON, exports and the plot, all
//! behind the admin token (cookie `wr_admin` set by `GET /admin?token=…`, or
//! `Authorization: Bearer …`, scheme in any case); and the invite tokens.

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Json;
use rusqlite::{params, Connection};
use serde::Deserialize;
use serde_json::json;

use crate::server::{asset, ct_eq, random_token, set_cookie, ApiError, ApiResult, App};
use crate::{db, results, Error};

const ADMIN_HTML: &str = include_str!("../static/admin.html");

#[derive(Deserialize)]
pub(crate) struct AdminQuery {
    token: Option<String>,
}

pub(crate) async fn admin_page(State(app): State<App>, headers: HeaderMap, Query(q): Query<AdminQuery>) -> Response {
    if let Some(t) = q.token {
        if ct_eq(&t, &app.cfg().admin_token) {
            let mut res = Redirect::to("/admin").into_response();
            res.headers_mut().insert(header::SET_COOKIE, set_cookie("wr_admin", &t, 7 * 86400));
            return res;
        }
        return ApiError::Unauthorized("wrong admin token".into()).into_response();
    }
    if !app.is_admin(&headers) {
        return ApiError::Unauthorized("admin only: open the results link printed when the server started".into())
            .into_response();
    }
    asset(ADMIN_HTML, "text/html; charset=utf-8")
}

fn require_admin(app: &App, headers: &HeaderMap) -> ApiResult<()> {
    if app.is_admin(headers) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized("admin token required".into()))
    }
}

async fn load_results(app: &App) -> ApiResult<(results::Results, results::Loaded)> {
    let (loaded, raters, per_pair) = app
        .db(|conn, cfg| {
            // One read snapshot for all three queries.
            let tx = conn.transaction()?;
            let (id, loaded) = results::load(&tx, &cfg.study.name)?;
            let raters = db::rater_counts(&tx, id)?;
            let per_pair = db::votes_per_pair(&tx, id)?;
            tx.commit()?;
            Ok((loaded, raters, per_pair))
        })
        .await?;
    let cfg_name = app.cfg().study.name.clone();
    let (resamples, seed) = (app.cfg().resamples, app.cfg().seed);
    tokio::task::spawn_blocking(move || {
        let r = results::assemble(&cfg_name, &loaded, raters, per_pair, resamples, seed);
        (r, loaded)
    })
    .await
    .map_err(|e| ApiError::Internal(format!("task: {e}")))
    .map(Ok)?
}

pub(crate) async fn admin_results(State(app): State<App>, headers: HeaderMap) -> ApiResult<Response> {
    require_admin(&app, &headers)?;
    let (r, _) = load_results(&app).await?;
    let invites = app
        .db(|conn, cfg| {
            let mut st =
                conn.prepare("SELECT token, rater_id IS NOT NULL FROM invites WHERE study_id = ?1 ORDER BY rowid")?;
            let rows: Vec<serde_json::Value> = st
                .query_map(params![cfg.study.id], |r| {
                    Ok(json!({ "url": format!("/i/{}", r.get::<_, String>(0)?), "used": r.get::<_, bool>(1)? }))
                })?
                .collect::<Result<_, _>>()?;
            Ok(rows)
        })
        .await?;
    let mut v = serde_json::to_value(&r).map_err(|e| ApiError::Internal(e.to_string()))?;
    v["invites"] = json!(invites);
    Ok(Json(v).into_response())
}

#[derive(Deserialize)]
pub(crate) struct ExportQuery {
    format: Option<String>,
    raw: Option<String>,
}

pub(crate) async fn admin_export(
    State(app): State<App>,
    headers: HeaderMap,
    Query(q): Query<ExportQuery>,
) -> ApiResult<Response> {
    require_admin(&app, &headers)?;
    let format = q.format.as_deref().unwrap_or("csv");
    if format != "csv" && format != "json" {
        return Err(ApiError::BadRequest("format must be csv or json".into()));
    }
    let raw = matches!(q.raw.as_deref(), Some("1" | "true"));
    let (r, loaded) = load_results(&app).await?;
    let (body, ty) = match (raw, format) {
        (false, "json") => {
            (serde_json::to_string_pretty(&r).map_err(|e| ApiError::Internal(e.to_string()))?, "application/json")
        }
        (false, _) => (results::summary_csv(&r), "text/csv; charset=utf-8"),
        (true, "json") => (
            serde_json::to_string_pretty(&results::raw_votes(&loaded))
                .map_err(|e| ApiError::Internal(e.to_string()))?,
            "application/json",
        ),
        (true, _) => (results::raw_csv(&results::raw_votes(&loaded)), "text/csv; charset=utf-8"),
    };
    let fname = format!("{}-{}.{}", app.cfg().study.name, if raw { "votes" } else { "results" }, format);
    Ok((
        [
            (header::CONTENT_TYPE, ty.to_string()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{fname}\"")),
        ],
        body,
    )
        .into_response())
}

pub(crate) async fn admin_plot(State(app): State<App>, headers: HeaderMap) -> ApiResult<Response> {
    require_admin(&app, &headers)?;
    let (r, _) = load_results(&app).await?;
    let png = tokio::task::spawn_blocking(move || crate::plot::render_png(&r.study, &r.stats))
        .await
        .map_err(|e| ApiError::Internal(format!("task: {e}")))?
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(([(header::CONTENT_TYPE, "image/png")], png).into_response())
}

/// Makes sure at least `n` invite tokens exist for the study; returns all of them.
pub fn ensure_invites(conn: &mut Connection, study: i64, n: u32) -> Result<Vec<String>, Error> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let have: i64 = tx.query_row("SELECT COUNT(*) FROM invites WHERE study_id = ?1", params![study], |r| r.get(0))?;
    for _ in have..n as i64 {
        tx.execute(
            "INSERT INTO invites(token, study_id, created_at) VALUES (?1, ?2, ?3)",
            params![random_token(16), study, db::now()],
        )?;
    }
    let tokens = {
        let mut st = tx.prepare("SELECT token FROM invites WHERE study_id = ?1 ORDER BY rowid")?;
        let rows: Vec<String> = st.query_map(params![study], |r| r.get(0))?.collect::<Result<_, _>>()?;
        rows
    };
    tx.commit()?;
    Ok(tokens)
}

/// Number of invite tokens of the study.
pub fn count_invites(conn: &Connection, study: i64) -> Result<i64, Error> {
    Ok(conn.query_row("SELECT COUNT(*) FROM invites WHERE study_id = ?1", params![study], |r| r.get(0))?)
}
