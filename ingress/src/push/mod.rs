//! Pushing events to clients: they subscribe at the ingress (WebSocket or
//! Server-Sent Events) on a path their pipeline declares; a `push` processor sends
//! each event to every replica's internal endpoint, and the pod's hub queues it for
//! the subscribers that want it.

pub mod filter;
pub mod hub;
pub mod metrics;
mod receive;
pub mod subscribe;
pub mod token;

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex, MutexGuard},
};

pub use hub::HubLimits;
pub use receive::router;

use hub::Hub;
use metrics::PushMetrics;
use tokio_util::sync::CancellationToken;

/// The pod's hub, shared by the subscribe and push endpoints.
#[derive(Clone)]
pub struct Pushes {
    hub: Arc<Mutex<Hub>>,
    /// Pipelines with subscriptions: the only ones pushed to.
    pipelines: Arc<BTreeSet<String>>,
    /// Cancelled when the pod stops serving: every subscriber's stream ends.
    pub closing: CancellationToken,
}

impl Pushes {
    pub fn new(limits: HubLimits, metrics: PushMetrics, pipelines: BTreeSet<String>) -> Self {
        Self {
            hub: Arc::new(Mutex::new(Hub::new(limits, metrics))),
            pipelines: Arc::new(pipelines),
            closing: CancellationToken::new(),
        }
    }

    /// Held only for a hub operation, none of which waits.
    fn hub(&self) -> MutexGuard<'_, Hub> {
        self.hub.lock().expect("hub lock")
    }
}
