//! Request headers whose values are keys of mounted Secrets (`<dir>/<name>/<key>`):
//! `headersFrom` and the bearer token. Read at start-up, where a missing Secret or key
//! is an error, then re-read periodically so a rotated Secret takes effect without a
//! restart. Values are marked sensitive and never logged; only file paths are.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use anyhow::{Context, bail};
use eventpipe_crds::{HttpProcessor as Spec, SecretKeyRef};
use http::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};

/// How often the files are read again; kubelet refreshes mounted Secrets about every minute.
const RELOAD_EVERY: Duration = Duration::from_secs(15);

/// One header and the file its value comes from.
#[derive(Debug)]
struct Source {
    name: HeaderName,
    /// What precedes the file's content in the value (`Bearer `).
    prefix: &'static str,
    path: PathBuf,
}

impl Source {
    fn read(&self) -> anyhow::Result<HeaderValue> {
        let text = std::fs::read_to_string(&self.path)
            .with_context(|| format!("cannot read {}", self.path.display()))?;
        let text = text.trim_end();
        if text.is_empty() {
            bail!("{} is empty", self.path.display());
        }
        let mut value = HeaderValue::try_from(format!("{}{text}", self.prefix))
            .map_err(|_| anyhow::anyhow!("{} is not a valid header value", self.path.display()))?;
        value.set_sensitive(true);
        Ok(value)
    }
}

#[derive(Debug)]
pub struct SecretHeaders {
    sources: Vec<Source>,
    current: RwLock<HeaderMap>,
}

impl SecretHeaders {
    /// The spec's secret headers, read from `dir`; `None` when it names none.
    pub fn load(spec: &Spec, dir: &Path) -> anyhow::Result<Option<Arc<Self>>> {
        let mut sources = vec![];
        for h in &spec.headers_from {
            let name = HeaderName::try_from(h.name.as_str())
                .with_context(|| format!("processor.http.headersFrom: {:?}", h.name))?;
            sources.push(source(name, "", &h.secret_ref, dir));
        }
        if let Some(r) = &spec.bearer_token_secret_ref {
            sources.push(source(AUTHORIZATION, "Bearer ", r, dir));
        }
        if sources.is_empty() {
            return Ok(None);
        }
        let mut current = HeaderMap::new();
        for (s, r) in sources.iter().zip(spec.secret_refs()) {
            let value = s.read().with_context(|| {
                format!(
                    "processor.http header {}: Secret {:?} key {:?} (is the Secret mounted, with that key?)",
                    s.name, r.name, r.key
                )
            })?;
            current.insert(s.name.clone(), value);
        }
        let headers = Arc::new(Self {
            sources,
            current: RwLock::new(current),
        });
        tokio::spawn(watch(Arc::downgrade(&headers), RELOAD_EVERY));
        Ok(Some(headers))
    }

    /// The names of the headers set, for conflicts with other headers.
    pub fn names(&self) -> impl Iterator<Item = &HeaderName> {
        self.sources.iter().map(|s| &s.name)
    }

    /// The headers with their latest values.
    pub fn current(&self) -> HeaderMap {
        self.current.read().expect("secret headers lock").clone()
    }

    /// Reads every file again. A file that cannot be read keeps its last value: kubelet
    /// swaps a rotated Secret in atomically, so this is a deleted key or Secret, which
    /// the operator reports on the pipeline.
    fn reload(&self) {
        for s in &self.sources {
            match s.read() {
                Ok(value) => {
                    let mut current = self.current.write().expect("secret headers lock");
                    if current.get(&s.name) != Some(&value) {
                        tracing::info!(file = %s.path.display(), header = %s.name, "secret header rotated");
                        current.insert(s.name.clone(), value);
                    }
                }
                Err(error) => {
                    tracing::warn!(header = %s.name, error = format!("{error:#}"), "secret header not reloaded; the last value stays")
                }
            }
        }
    }
}

fn source(name: HeaderName, prefix: &'static str, r: &SecretKeyRef, dir: &Path) -> Source {
    Source {
        name,
        prefix,
        path: dir.join(&r.name).join(&r.key),
    }
}

/// Re-reads the files every `every` until the headers are dropped.
async fn watch(headers: Weak<SecretHeaders>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(headers) = headers.upgrade() else {
            return;
        };
        // File reads block; they are tiny, but keep them off the delivery threads.
        let _ = tokio::task::spawn_blocking(move || headers.reload()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(v: serde_json::Value) -> Spec {
        serde_json::from_value(v).unwrap()
    }

    fn write(dir: &Path, name: &str, key: &str, value: &str) {
        std::fs::create_dir_all(dir.join(name)).unwrap();
        std::fs::write(dir.join(name).join(key), value).unwrap();
    }

    fn both() -> Spec {
        spec(json!({
            "url": "http://x/",
            "headersFrom": [{"name": "X-Api-Key", "secretRef": {"name": "api", "key": "key"}}],
            "bearerTokenSecretRef": {"name": "tok", "key": "token"},
        }))
    }

    #[tokio::test]
    async fn reads_mounted_values_and_sees_rotation() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "api", "key", "k-1\n");
        write(dir.path(), "tok", "token", "t-1");
        let h = SecretHeaders::load(&both(), dir.path()).unwrap().unwrap();
        assert_eq!(h.current()["x-api-key"], "k-1");
        assert_eq!(h.current()["authorization"], "Bearer t-1");
        assert!(h.current()["authorization"].is_sensitive());
        write(dir.path(), "tok", "token", "t-2");
        std::fs::remove_file(dir.path().join("api/key")).unwrap();
        h.reload();
        assert_eq!(h.current()["authorization"], "Bearer t-2");
        assert_eq!(h.current()["x-api-key"], "k-1", "the last value stays");
    }

    #[tokio::test]
    async fn a_missing_secret_or_key_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "api", "other", "k");
        write(dir.path(), "tok", "token", "t");
        let error = format!(
            "{:#}",
            SecretHeaders::load(&both(), dir.path()).unwrap_err()
        );
        assert!(
            error.contains(r#"x-api-key: Secret "api" key "key""#),
            "{error}"
        );
        assert!(error.contains("api/key"), "{error}");
        write(dir.path(), "api", "key", "k");
        std::fs::remove_dir_all(dir.path().join("tok")).unwrap();
        let error = format!(
            "{:#}",
            SecretHeaders::load(&both(), dir.path()).unwrap_err()
        );
        assert!(error.contains(r#"Secret "tok" key "token""#), "{error}");
    }

    #[tokio::test]
    async fn values_never_show_in_errors_or_debug_output() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "api", "key", "bad\u{7f}hunter2");
        write(dir.path(), "tok", "token", "hunter3");
        let error = format!(
            "{:#}",
            SecretHeaders::load(&both(), dir.path()).unwrap_err()
        );
        assert!(!error.contains("hunter2"), "{error}");
        write(dir.path(), "api", "key", "hunter2");
        let h = SecretHeaders::load(&both(), dir.path()).unwrap().unwrap();
        let debug = format!("{h:?}");
        assert!(!debug.contains("hunter"), "{debug}");
    }
}
