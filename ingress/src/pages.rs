//! Static pages served beside the webhooks (local mode's `--static DIR`): a client
//! page on the ingress's own origin, so it can POST to a webhook and subscribe
//! without cross-origin rules. Webhook and subscription paths come first; only GET
//! and HEAD of a regular file under the folder are answered, never a path that
//! climbs out of it.

use std::path::{Component, Path, PathBuf};

use axum::{
    body::Body,
    http::{HeaderValue, Method, StatusCode, header},
    response::{IntoResponse, Response},
};

/// A folder of files served as they are.
#[derive(Clone, Debug)]
pub struct Pages {
    dir: PathBuf,
}

impl Pages {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    /// The file for a GET or HEAD of `path`, or `None` to answer as before (404, 405).
    pub async fn serve(&self, method: &Method, path: &str) -> Option<Response> {
        if method != Method::GET && method != Method::HEAD {
            return None;
        }
        let file = self.dir.join(relative(path)?);
        // A symbolic link could lead out of the folder: what it resolves to must be in it.
        let (dir, file) = (
            tokio::fs::canonicalize(&self.dir).await.ok()?,
            tokio::fs::canonicalize(&file).await.ok()?,
        );
        if !file.starts_with(&dir) || !tokio::fs::metadata(&file).await.ok()?.is_file() {
            return None;
        }
        let body = tokio::fs::read(&file).await.ok()?;
        let body = match *method == Method::HEAD {
            true => Body::empty(),
            false => Body::from(body),
        };
        let headers = [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(content_type(&file)),
            ),
            // A page being edited is seen as it is on reload.
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ];
        Some((StatusCode::OK, headers, body).into_response())
    }
}

/// The file a URL path names under the folder: `/` is `index.html`; anything but
/// plain names (`..`, `.`, a root, a backslash, a hidden file) names none.
fn relative(path: &str) -> Option<PathBuf> {
    let path = path.strip_prefix('/')?;
    let path = match path {
        "" => "index.html",
        p if p.ends_with('/') => return None,
        p => p,
    };
    if path.contains('\\') || path.contains('\0') {
        return None;
    }
    let mut out = PathBuf::new();
    for c in Path::new(path).components() {
        match c {
            Component::Normal(name) if !name.to_string_lossy().starts_with('.') => out.push(name),
            _ => return None,
        }
    }
    Some(out)
}

fn content_type(file: &Path) -> &'static str {
    match file.extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_names_under_the_folder_are_files() {
        assert_eq!(relative("/"), Some(PathBuf::from("index.html")));
        assert_eq!(relative("/app.js"), Some(PathBuf::from("app.js")));
        assert_eq!(relative("/css/a.css"), Some(PathBuf::from("css/a.css")));
        for refused in [
            "",
            "/..",
            "/../Cargo.toml",
            "/a/../../b",
            "/./index.html",
            "//etc/passwd",
            "/a\\..\\b",
            "/.secrets",
            "/dir/",
        ] {
            assert_eq!(relative(refused), None, "{refused:?}");
        }
    }

    #[test]
    fn files_are_typed_by_their_extension() {
        assert_eq!(
            content_type(Path::new("index.html")),
            "text/html; charset=utf-8"
        );
        assert_eq!(content_type(Path::new("x.bin")), "application/octet-stream");
    }

    #[tokio::test]
    async fn a_file_is_served_and_nothing_outside_or_unsafe() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("pages")).unwrap();
        std::fs::write(dir.path().join("pages/index.html"), "<p>hi</p>").unwrap();
        std::fs::write(dir.path().join("secret"), "no").unwrap();
        let pages = Pages::new(dir.path().join("pages"));
        let page = pages.serve(&Method::GET, "/").await.unwrap();
        assert_eq!(page.status(), 200);
        assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
        assert!(pages.serve(&Method::POST, "/").await.is_none());
        assert!(pages.serve(&Method::GET, "/../secret").await.is_none());
        assert!(pages.serve(&Method::GET, "/missing.html").await.is_none());
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(dir.path().join("secret"), dir.path().join("pages/s"))
                .unwrap();
            assert!(pages.serve(&Method::GET, "/s").await.is_none());
        }
    }
}
