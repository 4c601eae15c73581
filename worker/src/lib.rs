//! The worker: consumes the sources of its pipelines and delivers each event to the
//! pipeline's processor, with filtering, idempotency, backoff and dead-lettering.
//!
//! The binary (`main.rs`) and `eventpipe dev` build a [`Worker`] from resolved
//! pipelines and run it; the rest of what is public here is shared with other
//! components, each item saying with whom.

mod backoff;
mod batch;
mod clients;
mod filter;
// The fuzz targets' entry points: not API, compiled for them (feature `fuzzing`) and
// for tests.
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
mod gate;
mod handler;
mod holding;
mod http_client;
mod idempotency;
pub mod metrics;
mod pressure;
mod processor;
mod publish;
mod runtime;
mod sigv4;
mod sources;
mod verdict;

pub use self::metrics::Metrics;
pub use self::runtime::{Options, Worker};
pub use self::sources::streams::StreamOptions;

// The pipeline filter's event patterns, which `eventpipe dlq redrive --filter` uses too.
pub use self::filter::{Pattern, PatternError};

/// The worker's own SQS receives and deletes and its HTTP client, for the benchmark's
/// floor (`examples/floor.rs`): not API.
#[doc(hidden)]
pub mod wire {
    pub use crate::http_client::HttpClient;
    pub use crate::sources::sqs::wire::{Receive, Wire};
}

/// Sharing DynamoDB streams between replicas: this replica's default name and the
/// lease table replicas coordinate through, which the operator reads for stream lag
/// and tests write to as another replica would.
pub mod streams {
    pub use crate::sources::streams::{default_worker_id, lease};
}
