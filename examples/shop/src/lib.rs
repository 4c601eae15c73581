//! The example shop: the services behind `examples/orders-saga.yaml` (payment,
//! inventory and orders, in a saga) and `examples/outbox.yaml` (customer registration
//! with a transactional outbox, and the relay that publishes it). One HTTP server,
//! each pipeline delivering to its own path; all state in DynamoDB, so any number of
//! replicas (one beside each worker, as a container processor) share it.

mod cloudevent;
mod customers;
mod orders;
mod outbox;
pub mod saga;
mod server;
mod tables;

use std::future::Future;

pub use tables::Tables;

/// What every endpoint needs.
#[derive(Clone)]
pub struct Shop {
    pub ddb: aws_sdk_dynamodb::Client,
    pub tables: Tables,
}

impl Shop {
    /// The shop, with its tables created when missing.
    pub async fn new(ddb: aws_sdk_dynamodb::Client, tables: Tables) -> anyhow::Result<Self> {
        tables::ensure(&ddb, &tables).await?;
        Ok(Self { ddb, tables })
    }

    /// Serves the endpoints on `listener` until `stop` completes.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        axum::serve(listener, server::router(self))
            .with_graceful_shutdown(stop)
            .await
    }
}
