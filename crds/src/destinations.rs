//! An EventPipeline's destinations: the events sent on after each delivery.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{ObjectRef, Source};

/// Where events go after a delivery, as Lambda destinations and Knative replies do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Destinations {
    /// An outcome event (same correlation id, the input's id as subject) after a success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_success: Option<OutcomeTarget>,
    /// An outcome event, with the error, when an event is dead-lettered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_failure: Option<OutcomeTarget>,
    /// A CloudEvent the processor returns in its response is published here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<Source>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutcomeTarget {
    pub queue_binding_ref: ObjectRef,
    /// CloudEvent `type` of the outcome event, e.g. `note-saved`.
    #[schemars(length(min = 1, max = 256))]
    #[serde(rename = "type")]
    pub event_type: String,
}
