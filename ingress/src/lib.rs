//! The webhook ingress: serves the webhooks of the pipelines in a manifest,
//! authenticates each request, turns it into a CloudEvent and answers `202` once
//! the event is stored in its SQS queue or DynamoDB table.
//!
//! [`run`] is the whole ingress (webhooks and ops endpoints) as the binary runs it;
//! [`Ingress`] is the same without the ops server, for embedding (local mode).

mod app;
mod config;
mod connections;
mod drain;
mod dynamodb;
mod extract;
mod github;
mod limits;
mod pages;
// The fuzz targets' entry point: not API, compiled for them (feature `fuzzing`) and
// for the unit test that replays their seed corpus.
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
mod metrics;
mod publish;
mod push;
mod reply;
mod secrets;
mod server;
mod signature;
mod slack;
mod spans;
mod sqs;
mod tls;
mod webhook;

use std::{future::Future, sync::Arc};

use eventpipe_core::{feed_http, ops};
use prometheus_client::registry::Registry;
use tokio::{net::TcpListener, sync::oneshot};

pub use app::{Ingress, PublishMode, Settings, StartError};
pub use config::{ConfigError, IngressConfig, Target, WebhookConfig};
pub use limits::Limits;
pub use push::HubLimits;
pub use signature::Verifier;
pub use sqs::BatchSettings;
pub use tls::{TlsError, TlsFiles};

/// Serves the webhooks on `listener` and `/metrics`, `/healthz`, `/readyz` on
/// `ops_listener` until `shutdown` completes, then drains (see [`Ingress::serve`]).
pub async fn run(
    config: IngressConfig,
    settings: Settings,
    listener: TcpListener,
    ops_listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let mut registry = Registry::default();
    let ingress = Ingress::new(config, settings, &mut registry).await?;
    let (stop_ops, ops_stopped) = oneshot::channel::<()>();
    // The ops port also takes the push processor's events: internal, like /metrics.
    let router = (ops::router(Arc::new(registry), ingress.ready()))
        .merge(feed_http::router(ingress.feed()))
        .merge(ingress.push_router());
    let ops = tokio::spawn(async move {
        axum::serve(ops_listener, router)
            .with_graceful_shutdown(async move {
                let _ = ops_stopped.await;
            })
            .await
    });
    // The ops server outlives the drain, so /readyz answers 503 meanwhile.
    let served = ingress.serve(listener, shutdown).await;
    let _ = stop_ops.send(());
    ops.await??;
    Ok(served?)
}
