//! The worker: consumes the sources of its pipelines and delivers each event to the
//! pipeline's processor, with filtering, idempotency, backoff and dead-lettering.

pub mod backoff;
pub mod dead_letters;
pub mod filter;
pub mod handler;
pub mod idempotency;
pub mod metrics;
pub mod processor;
pub mod publish;
pub mod sqs;
pub mod streams;
pub mod verdict;

mod runtime;

pub use runtime::{Options, Worker};
