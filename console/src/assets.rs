//! The page, its script and its style, embedded in the binary: nothing is fetched
//! from elsewhere, and nothing needs building.

use axum::http::header;
use axum::response::IntoResponse;

use crate::server::page_headers;

const INDEX: &str = include_str!("assets/index.html");
const SCRIPT: &str = include_str!("assets/app.js");
const STYLE: &str = include_str!("assets/app.css");

pub async fn index() -> impl IntoResponse {
    asset("text/html; charset=utf-8", INDEX)
}

pub async fn script() -> impl IntoResponse {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

pub async fn style() -> impl IntoResponse {
    asset("text/css; charset=utf-8", STYLE)
}

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (page_headers(), [(header::CONTENT_TYPE, content_type)], body)
}
