//! Shapes shared by the three kinds: references and values taken from a request.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A reference to another object of the same namespace: `{name: orders}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ObjectRef {
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// A key of a Secret in the same namespace: `{name: gh, key: secret}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SecretKeyRef {
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// A value taken from a request or an event: `{header: X-GitHub-Event}` or
/// `{jsonPointer: /issue/number}` (RFC 6901, into the JSON body).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.header) != has(self.jsonPointer)").message("exactly one of header or jsonPointer must be set"))]
pub struct ValueSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub header: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^(/.*)?$"), length(max = 512))]
    pub json_pointer: Option<String>,
}

impl ValueSource {
    pub fn header(name: &str) -> Self {
        Self {
            header: Some(name.into()),
            json_pointer: None,
        }
    }

    pub fn json_pointer(pointer: &str) -> Self {
        Self {
            header: None,
            json_pointer: Some(pointer.into()),
        }
    }
}
