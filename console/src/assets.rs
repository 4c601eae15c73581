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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `src` and `href` of the page is the console's own.
    #[test]
    fn the_page_loads_nothing_from_elsewhere() {
        for (name, text) in [("index", INDEX), ("script", SCRIPT), ("style", STYLE)] {
            for attr in ["src=\"", "href=\"", "url(", "@import", "//cdn"] {
                for (at, _) in text.match_indices(attr) {
                    let rest = &text[at + attr.len()..];
                    assert!(
                        rest.starts_with('/') && !rest.starts_with("//"),
                        "{name} refers elsewhere: {}",
                        &text[at..(at + 60).min(text.len())]
                    );
                }
            }
        }
    }
}
