//! The web console: every pipeline with its status, live rates, latency and queue
//! depths, its recent events, a search by correlation id across pipelines, and its
//! dead letters (list, show, redrive). One page, embedded in the binary, kept current
//! by server-sent events.
//!
//! The console is fed by the feeds of recent events the ingress and the workers keep
//! ([`eventpipe_core::feed`]): `eventpipe dev` hands it its own in process; the
//! operator in a cluster follows those of the pods it finds ([`remote`]).

pub mod auth;
pub mod dead_letters;
pub mod follow;
pub mod history;
pub mod remote;
pub mod server;
pub mod state;
pub mod stream_lag;

mod assets;

pub use server::serve;
pub use state::{Condition, Console, Depths, Pipeline, Settings};
