//! The web page at `/`: a prompt form, live progress (SSE), and a gallery of finished
//! videos that play. Static files compiled into the binary.

use axum::http::header;
use axum::response::{IntoResponse, Response};

const INDEX_HTML: &str = include_str!("../static/index.html");
const APP_JS: &str = include_str!("../static/app.js");
const STYLE_CSS: &str = include_str!("../static/style.css");

fn asset(body: &'static str, ty: &'static str) -> Response {
    ([(header::CONTENT_TYPE, ty)], body).into_response()
}

pub fn index() -> Response {
    asset(INDEX_HTML, "text/html; charset=utf-8")
}

pub fn app_js() -> Response {
    asset(APP_JS, "text/javascript; charset=utf-8")
}

pub fn style_css() -> Response {
    asset(STYLE_CSS, "text/css; charset=utf-8")
}
