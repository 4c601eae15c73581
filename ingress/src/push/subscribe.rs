//! Subscribing at the ingress: `GET <path>` upgraded to a WebSocket, or answered as
//! Server-Sent Events. A subscriber authenticates with the webhook's bearer token or
//! with a subscribe token for its correlation id (`Authorization: Bearer <token>`, or
//! `?access_token=` for browsers, which cannot set headers), filters with
//! `?correlationId=`, `?subject=`, `?pointer=/data/x&value=v`, and resumes with
//! `Last-Event-ID` (or `?lastEventId=`). Each push is the structured CloudEvent,
//! its id the SSE `id:`.

use std::{collections::HashMap, convert::Infallible, sync::Arc, time::Instant};

use axum::{
    Json,
    extract::{
        FromRequestParts, Query, Request,
        ws::{Message, WebSocket, WebSocketUpgrade},
    },
    http::{HeaderMap, HeaderValue, Method, StatusCode, header, request::Parts},
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
};
use futures::{Stream, StreamExt, stream};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Pushes, filter::Filter, hub::Push, token};
use crate::{
    config::SubscriptionConfig,
    reply::RETRY_AFTER_SECS,
    secrets::{Secrets, Slot},
    webhook::unix_now,
};

/// One subscription path, with its webhook's secrets.
pub struct Endpoint {
    config: SubscriptionConfig,
    secrets: Vec<Arc<Slot>>,
}

/// Every subscription path of the pod, and its hub.
pub struct Subscriptions {
    by_path: HashMap<String, Arc<Endpoint>>,
    pushes: Pushes,
}

/// Why a subscriber is refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    Method,
    Missing,
    BadToken,
    BadFilter(&'static str),
    NotLoaded,
    Full,
}

impl Subscriptions {
    pub fn new(configs: Vec<SubscriptionConfig>, secrets: &Secrets, pushes: Pushes) -> Self {
        let by_path = configs
            .into_iter()
            .map(|config| {
                let slots = (config.secrets.iter())
                    .map(|r| secrets.slot(r).expect("every secret was registered"))
                    .collect();
                let path = config.spec.path.clone();
                (
                    path,
                    Arc::new(Endpoint {
                        config,
                        secrets: slots,
                    }),
                )
            })
            .collect();
        Self { by_path, pushes }
    }

    pub fn endpoint(&self, path: &str) -> Option<Arc<Endpoint>> {
        self.by_path.get(path).cloned()
    }

    /// Admits the subscriber and streams its pushes, or answers why not.
    pub async fn serve(&self, endpoint: &Endpoint, request: Request) -> Response {
        let (mut parts, _) = request.into_parts();
        let subscriber = match self.admit(endpoint, &parts) {
            Ok(s) => s,
            Err(refusal) => return refusal.into_response(),
        };
        if !is_websocket(&parts.headers) {
            return sse(subscriber).into_response();
        }
        match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
            Ok(upgrade) => upgrade.on_upgrade(|socket| websocket(socket, subscriber)),
            Err(rejection) => rejection.into_response(),
        }
    }

    fn admit(&self, endpoint: &Endpoint, parts: &Parts) -> Result<Subscriber, Refusal> {
        if parts.method != Method::GET {
            return Err(Refusal::Method);
        }
        let query = Query::<HashMap<String, String>>::try_from_uri(&parts.uri)
            .map_err(|_| Refusal::BadFilter("the query string is malformed"))?
            .0;
        let filter = filter(&query)?;
        endpoint.authenticate(credential(&parts.headers, &query), &filter)?;
        let last = (parts.headers.get("last-event-id"))
            .and_then(|v| v.to_str().ok())
            .or(query.get("lastEventId").map(String::as_str));
        let pipeline = &endpoint.config.pipeline;
        let subscribed = self
            .pushes
            .hub()
            .subscribe(pipeline, filter, last, Instant::now())
            .map_err(|_| Refusal::Full)?;
        Ok(Subscriber {
            replay: subscribed.replay,
            live: subscribed.live,
            closing: self.pushes.closing.clone(),
            _leave: Leave {
                pushes: self.pushes.clone(),
                id: subscribed.id,
            },
        })
    }
}

impl Endpoint {
    pub fn path(&self) -> &str {
        &self.config.spec.path
    }

    /// The webhook's bearer token admits any filter; a subscribe token, only its
    /// own correlation id.
    fn authenticate(&self, credential: Option<&str>, filter: &Filter) -> Result<(), Refusal> {
        let credential = credential.ok_or(Refusal::Missing)?;
        let loaded: Vec<_> = self.secrets.iter().map(|s| s.get()).collect();
        if loaded.first().is_none_or(Option::is_none) {
            return Err(Refusal::NotLoaded);
        }
        let secrets: Vec<&[u8]> = loaded.iter().flatten().map(|s| s.expose()).collect();
        let bearer = self.config.bearer
            && (secrets.iter()).any(|s| eventpipe_core::token::same(s, credential.as_bytes()));
        let pipeline = &self.config.pipeline;
        let own = (filter.correlation_id.as_deref())
            .is_some_and(|c| token::verify(&secrets, credential, pipeline, c, unix_now()));
        (bearer || own).then_some(()).ok_or(Refusal::BadToken)
    }
}

fn credential<'a>(headers: &'a HeaderMap, query: &'a HashMap<String, String>) -> Option<&'a str> {
    let header =
        (headers.get(header::AUTHORIZATION)).and_then(|v| v.to_str().ok()?.strip_prefix("Bearer "));
    header.or(query.get("access_token").map(String::as_str))
}

fn filter(query: &HashMap<String, String>) -> Result<Filter, Refusal> {
    let pointer = match (query.get("pointer"), query.get("value")) {
        (Some(p), Some(v)) if p.starts_with('/') => Some((p.clone(), v.clone())),
        (Some(_), Some(_)) => return Err(Refusal::BadFilter("pointer must start with /")),
        (None, None) => None,
        _ => return Err(Refusal::BadFilter("pointer and value go together")),
    };
    Ok(Filter {
        correlation_id: query.get("correlationId").cloned(),
        subject: query.get("subject").cloned(),
        pointer,
    })
}

fn is_websocket(headers: &HeaderMap) -> bool {
    (headers.get(header::UPGRADE))
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// An admitted subscriber: what it missed, its queue, and its place in the hub,
/// given back when this is dropped (the connection ended).
struct Subscriber {
    replay: Vec<Arc<Push>>,
    live: mpsc::Receiver<Arc<Push>>,
    /// The pod is shutting down: end the stream so the client reconnects elsewhere.
    closing: CancellationToken,
    _leave: Leave,
}

struct Leave {
    pushes: Pushes,
    id: u64,
}

impl Drop for Leave {
    fn drop(&mut self) {
        self.pushes.hub().unsubscribe(self.id);
    }
}

impl Subscriber {
    /// The replay, then each push until the hub drops the subscriber or the pod
    /// shuts down.
    fn pushes(self) -> impl Stream<Item = Arc<Push>> + Send {
        let Self {
            replay,
            live,
            closing,
            _leave,
        } = self;
        let live = stream::unfold(
            (live, closing, _leave),
            |(mut live, closing, leave)| async move {
                let next = tokio::select! {
                    next = live.recv() => next,
                    () = closing.cancelled() => None,
                };
                next.map(|push| (push, (live, closing, leave)))
            },
        );
        stream::iter(replay).chain(live)
    }
}

fn sse(subscriber: Subscriber) -> impl IntoResponse {
    let events = subscriber.pushes().map(|push| {
        let event = Event::default()
            .id(push.id.as_str())
            .data(push.event.to_string());
        Ok::<_, Infallible>(event)
    });
    Sse::new(events).keep_alive(KeepAlive::default())
}

async fn websocket(mut socket: WebSocket, subscriber: Subscriber) {
    let pushes = subscriber.pushes();
    tokio::pin!(pushes);
    loop {
        tokio::select! {
            push = pushes.next() => {
                let Some(push) = push else { break };
                let text = push.event.to_string();
                if socket.send(Message::Text(text.into())).await.is_err() {
                    return;
                }
            }
            // Anything from the client but its close is ignored.
            received = socket.recv() => match received {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => {}
            },
        }
    }
    let _ = socket.send(Message::Close(None)).await;
}

impl Refusal {
    fn status(&self) -> StatusCode {
        match self {
            Refusal::Method => StatusCode::METHOD_NOT_ALLOWED,
            Refusal::Missing | Refusal::BadToken => StatusCode::UNAUTHORIZED,
            Refusal::BadFilter(_) => StatusCode::BAD_REQUEST,
            Refusal::NotLoaded | Refusal::Full => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn message(&self) -> &'static str {
        match self {
            Refusal::Method => "subscriptions accept GET only",
            Refusal::Missing => {
                "missing credential: Authorization: Bearer <token>, or ?access_token="
            }
            Refusal::BadToken => {
                "invalid token: the webhook's token, or a subscribe token with its correlationId"
            }
            Refusal::BadFilter(why) => why,
            Refusal::NotLoaded => "the webhook's secret is not loaded; retry later",
            Refusal::Full => "too many subscribers on this replica; retry later",
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut response =
            (self.status(), Json(json!({ "error": self.message() }))).into_response();
        let headers = response.headers_mut();
        match self {
            Refusal::Method => {
                headers.insert(header::ALLOW, HeaderValue::from_static("GET"));
            }
            Refusal::Missing | Refusal::BadToken => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            Refusal::NotLoaded | Refusal::Full => {
                headers.insert(header::RETRY_AFTER, RETRY_AFTER_SECS.into());
            }
            Refusal::BadFilter(_) => {}
        }
        response
    }
}
