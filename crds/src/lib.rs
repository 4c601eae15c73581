//! The eventpipe API (`eventpipe.dev/v1alpha1`): the types, their CRDs, and the loader
//! that reads the same manifests from files for the ingress, the worker and local mode.

mod common;
mod dead_letter_policy;
mod duration;
mod event_pipeline;
pub mod manifest;
mod queue_binding;
pub mod schema;

pub use common::*;
pub use dead_letter_policy::*;
pub use duration::{Duration, InvalidDuration};

/// The pattern every duration field carries in the CRD schemas.
pub fn duration_pattern() -> &'static str {
    duration::PATTERN
}
pub use event_pipeline::*;
pub use manifest::{Manifest, ManifestError, Pipeline};
pub use queue_binding::*;

pub const GROUP: &str = "eventpipe.dev";
pub const VERSION: &str = "v1alpha1";
pub const API_VERSION: &str = "eventpipe.dev/v1alpha1";
