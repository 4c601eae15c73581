//! Shutting down without losing a webhook. Load balancers and Kubernetes endpoints
//! take seconds to notice that a pod is going away, and keep sending it new
//! connections meanwhile. So on shutdown the ingress first reports not ready and
//! keeps serving for a drain delay, answering with `Connection: close` so that
//! clients reconnect (elsewhere); then it stops accepting, finishes the requests in
//! progress and lets the queues' batchers send what they hold.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use axum::{
    extract::State,
    http::{HeaderValue, header},
    response::Response,
};
use tokio_util::task::TaskTracker;

/// Whether the drain delay has begun: answers then close their connection.
#[derive(Clone, Debug, Default)]
pub struct Draining(Arc<AtomicBool>);

impl Draining {
    pub fn begin(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    pub fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// A response middleware: while draining, keep-alive connections end with their
/// answer, so a client's next request opens a connection to a pod that stays.
pub async fn close_while_draining(State(draining): State<Draining>, mut r: Response) -> Response {
    if draining.get() {
        (r.headers_mut()).insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    r
}

/// What shutting down waits for.
#[derive(Clone, Debug)]
pub struct Drain {
    pub draining: Draining,
    /// How long the ingress keeps serving, not ready, after the shutdown signal.
    pub delay: Duration,
    /// The publishers' background work (batchers and their calls).
    pub publishing: TaskTracker,
    /// The longest wait for that work once every request is answered.
    pub flush_limit: Duration,
}

impl Drain {
    pub fn new(delay: Duration, flush_limit: Duration) -> Self {
        Self {
            draining: Draining::default(),
            delay,
            publishing: TaskTracker::new(),
            flush_limit,
        }
    }

    /// Marks the drain as begun and serves on for the delay.
    pub async fn delay(&self) {
        self.draining.begin();
        tracing::info!(
            drain_delay = ?self.delay,
            "shutting down: not ready; serving new requests for the drain delay"
        );
        tokio::time::sleep(self.delay).await;
        tracing::info!("drain delay over: no new connections; finishing in-flight requests");
    }

    /// Waits for the publishers' calls still under way, once every publisher handle
    /// is dropped (so each batcher sends what it holds and ends). Every `202` was
    /// answered after its event was stored; what remains belongs to requests already
    /// refused (a store slower than the timeouts), sent rather than cut off mid-call.
    pub async fn flush(&self) {
        self.publishing.close();
        let limit = self.flush_limit;
        match tokio::time::timeout(limit, self.publishing.wait()).await {
            Ok(()) => tracing::info!("every publish finished"),
            Err(_) => tracing::warn!(?limit, "publishes still under way; exiting anyway"),
        }
    }
}
