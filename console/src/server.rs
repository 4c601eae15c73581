//! The console over HTTP: the page and its assets, the state pushed as server-sent
//! events, the correlation search, and the dead letters of each pipeline.
//!
//! | route | what |
//! |---|---|
//! | `GET /` | the page (assets embedded in the binary) |
//! | `GET /api/state` | the state, once |
//! | `GET /api/stream` | the state as server-sent events, again whenever it changes |
//! | `GET /api/search?correlation_id=ID` | every event of `ID`, in order |
//! | `GET /api/pipelines/{p}/dead-letters` | what its dead-letter queues hold |
//! | `GET /api/pipelines/{p}/dead-letters/{id}` | one dead letter in full |
//! | `POST /api/pipelines/{p}/redrive` | send dead letters back (authorised, see [`crate::auth`]) |

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::{
    Json, Router,
    extract::{Path, Query, Request, State},
    http::{HeaderMap, StatusCode, header},
    middleware::{self, Next},
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
    routing::{get, post},
};
use eventpipe_core::feed::Record;
use eventpipe_worker::Pattern;
use futures::Stream;
use serde::{Deserialize, Serialize};

use crate::dead_letters::{DeadLetter, DeadLetterQueue};
use crate::{assets, auth, follow, state::Console};

/// Pushes at most this often, however busy the pipelines.
const COALESCE: Duration = Duration::from_millis(250);
/// Pushes at least this often, so rates fall back to zero on a quiet pipeline.
const TICK: Duration = Duration::from_secs(1);
/// Dead letters listed per queue.
const LIST_MAX: usize = 100;

/// The routes, answering only requests that name a host `listen` may be reached by
/// ([`auth::host_allowed`]): on loopback, or through a port-forward when the settings
/// say so, loopback names only.
pub fn router(console: Console, listen: SocketAddr) -> Router {
    let loopback = listen.ip().is_loopback() || console.inner.settings.port_forwarded;
    let hosts = middleware::from_fn(move |request: Request, next: Next| async move {
        let host = request
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok());
        if auth::host_allowed(host, loopback) {
            next.run(request).await
        } else {
            let why = "this console answers to its loopback address only";
            Problem(StatusCode::MISDIRECTED_REQUEST, why.into()).into_response()
        }
    });
    Router::new()
        .route("/", get(assets::index))
        .route("/app.js", get(assets::script))
        .route("/app.css", get(assets::style))
        .route("/api/state", get(state))
        .route("/api/stream", get(stream))
        .route("/api/search", get(search))
        .route("/api/pipelines/{pipeline}/dead-letters", get(list))
        .route("/api/pipelines/{pipeline}/dead-letters/{id}", get(show))
        .route("/api/pipelines/{pipeline}/redrive", post(redrive))
        .with_state(console)
        .layer(hosts)
}

/// Serves the console on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    console: Console,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listen = listener.local_addr()?;
    axum::serve(listener, router(console, listen))
        .with_graceful_shutdown(shutdown)
        .await
}

/// An answer that is not the happy path: a status and a sentence.
pub struct Problem(StatusCode, String);

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = Json(serde_json::json!({"error": self.1}));
        (self.0, body).into_response()
    }
}

async fn state(State(console): State<Console>) -> impl IntoResponse {
    Json(console.snapshot())
}

async fn stream(
    State(console): State<Console>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let changes = console.changes();
    let snapshots = futures::stream::unfold(
        (console, changes, true),
        |(console, mut changes, first)| async move {
            if !first {
                tokio::time::sleep(COALESCE).await;
                tokio::select! {
                    changed = changes.changed() => changed.ok()?,
                    _ = tokio::time::sleep(TICK) => {}
                }
            }
            changes.borrow_and_update();
            let event = Event::default()
                .event("state")
                .json_data(console.snapshot());
            let event = event.unwrap_or_else(|_| Event::default().comment("unencodable"));
            Some((Ok(event), (console, changes, false)))
        },
    );
    Sse::new(snapshots).keep_alive(KeepAlive::default())
}

#[derive(Deserialize)]
struct Search {
    correlation_id: String,
}

async fn search(State(console): State<Console>, Query(q): Query<Search>) -> Json<Vec<Record>> {
    Json(console.search(&q.correlation_id))
}

/// The dead-letter queues of a pipeline the console shows; 404 otherwise.
fn queues(console: &Console, pipeline: &str) -> Result<Arc<Vec<DeadLetterQueue>>, Problem> {
    if !console.shows(pipeline) {
        return Err(Problem(
            StatusCode::NOT_FOUND,
            format!("no pipeline {pipeline:?}"),
        ));
    }
    console.queues_of(pipeline).ok_or_else(|| {
        Problem(
            StatusCode::NOT_FOUND,
            format!("pipeline {pipeline:?} has no SQS source with a dead-letter queue"),
        )
    })
}

fn failed(e: anyhow::Error) -> Problem {
    Problem(StatusCode::BAD_GATEWAY, format!("{e:#}"))
}

/// A dead letter in a list: what it is and why it is there, not its data.
#[derive(Serialize)]
struct Listed {
    message_id: String,
    event_id: Option<String>,
    #[serde(rename = "type")]
    event_type: Option<String>,
    error: Option<String>,
    receive_count: Option<String>,
}

impl From<DeadLetter> for Listed {
    fn from(l: DeadLetter) -> Self {
        Self {
            message_id: l.message_id,
            event_id: l.event_id,
            event_type: l.event_type,
            error: l.error,
            receive_count: l.receive_count,
        }
    }
}

#[derive(Serialize)]
struct QueueListing {
    binding: String,
    url: String,
    letters: Vec<Listed>,
}

async fn list(
    State(console): State<Console>,
    Path(pipeline): Path<String>,
) -> Result<Json<Vec<QueueListing>>, Problem> {
    let mut out = vec![];
    for q in queues(&console, &pipeline)?.iter() {
        let letters = q.list(LIST_MAX).await.map_err(failed)?;
        out.push(QueueListing {
            binding: q.binding.clone(),
            url: q.url.clone(),
            letters: letters.into_iter().map(Listed::from).collect(),
        });
    }
    Ok(Json(out))
}

async fn show(
    State(console): State<Console>,
    Path((pipeline, id)): Path<(String, String)>,
) -> Result<Json<DeadLetter>, Problem> {
    for q in queues(&console, &pipeline)?.iter() {
        let letters = q.list(10 * LIST_MAX).await.map_err(failed)?;
        if let Some(l) =
            (letters.into_iter()).find(|l| l.message_id == id || l.event_id.as_deref() == Some(&id))
        {
            return Ok(Json(l));
        }
    }
    Err(Problem(
        StatusCode::NOT_FOUND,
        format!("no dead letter {id:?} in pipeline {pipeline:?}"),
    ))
}

/// What to redrive: the events with these ids, or all; at a rate, at most `max`.
#[derive(Deserialize)]
struct Redrive {
    ids: Option<Vec<String>>,
    #[serde(default = "default_rate")]
    rate: f64,
    #[serde(default = "default_max")]
    max: usize,
}

fn default_rate() -> f64 {
    10.0
}

fn default_max() -> usize {
    1000
}

#[derive(Serialize)]
struct Redriven {
    redriven: usize,
    left: usize,
}

async fn redrive(
    State(console): State<Console>,
    Path(pipeline): Path<String>,
    headers: HeaderMap,
    Json(ask): Json<Redrive>,
) -> Result<Json<Redriven>, Problem> {
    let token = console.inner.settings.token.as_deref();
    auth::check(token, &headers).map_err(|d| Problem(d.status(), d.message().into()))?;
    let filter = ask.ids.as_deref().map(by_ids).transpose()?;
    let mut total = Redriven {
        redriven: 0,
        left: 0,
    };
    for q in queues(&console, &pipeline)?.iter() {
        let (moved, left) =
            (q.redrive(filter.as_ref(), ask.rate, ask.max).await).map_err(failed)?;
        total.redriven += moved;
        total.left += left;
    }
    tracing::info!(
        pipeline,
        redriven = total.redriven,
        "dead letters redriven from the console"
    );
    follow::refresh(&console, &pipeline).await;
    Ok(Json(total))
}

/// The pattern matching the events with these ids.
fn by_ids(ids: &[String]) -> Result<Pattern, Problem> {
    let pattern = serde_json::json!({ "id": ids });
    let pattern = pattern.as_object().expect("a JSON object");
    Pattern::compile(pattern).map_err(|e| Problem(StatusCode::BAD_REQUEST, e.to_string()))
}

/// The page never caches a stale state, nor runs framed by another site.
pub fn page_headers() -> [(header::HeaderName, &'static str); 3] {
    [
        (header::CACHE_CONTROL, "no-store"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    ]
}
