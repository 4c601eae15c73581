//! The CRDs generated from the types, and the checks the API server would make,
//! run locally on a document: structure, ranges, patterns, unknown fields and CEL rules.

use std::sync::LazyLock;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use kube::core::cel;
use serde_json::Value;

use crate::{DeadLetterPolicy, EventPipeline, QueueBinding};

/// The three CRDs, in the order they are applied.
pub fn crds() -> Vec<CustomResourceDefinition> {
    let mut crds = vec![
        DeadLetterPolicy::crd(),
        QueueBinding::crd(),
        EventPipeline::crd(),
    ];
    for crd in &mut crds {
        for version in &mut crd.spec.versions {
            if let Some(schema) = version
                .schema
                .as_mut()
                .and_then(|s| s.open_api_v3_schema.as_mut())
            {
                let mut value = serde_json::to_value(&*schema).expect("schema serializes");
                drop_unknown_formats(&mut value);
                *schema = serde_json::from_value(value).expect("schema deserializes");
            }
        }
    }
    crds
}

/// Removes integer formats Kubernetes does not know (`uint16` for a Rust `u16`): the
/// API server warns of each on every apply; the ranges say what the format would.
fn drop_unknown_formats(node: &mut Value) {
    match node {
        Value::Object(map) => {
            if map
                .get("format")
                .and_then(Value::as_str)
                .is_some_and(|f| f.starts_with("uint"))
            {
                map.remove("format");
            }
            map.values_mut().for_each(drop_unknown_formats);
        }
        Value::Array(items) => items.iter_mut().for_each(drop_unknown_formats),
        _ => {}
    }
}

/// One CRD as a YAML document.
pub fn to_yaml(crd: &CustomResourceDefinition) -> String {
    serde_yaml::to_string(crd).expect("a CRD serializes to YAML")
}

/// All CRDs as one multi-document YAML stream.
pub fn all_yaml() -> String {
    crds()
        .iter()
        .map(|c| format!("---\n{}", to_yaml(c)))
        .collect()
}

/// The file a CRD lives in under `crds/`: `<plural>.yaml`.
pub fn file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}.yaml", crd.spec.names.plural)
}

/// What is wrong with one field of a document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted path, e.g. `spec.sqs.batchSize` or `spec.sources[0]`; empty for the whole object.
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// A kind's schema, prepared once for local validation.
struct KindSchema {
    /// The schema as the API server sees it (CEL rules, defaults).
    served: Value,
    /// The same, closed to unknown fields (the API server's strict field validation).
    strict: jsonschema::Validator,
}

static SCHEMAS: LazyLock<Vec<(String, KindSchema)>> = LazyLock::new(|| {
    crds()
        .into_iter()
        .map(|crd| {
            let version = &crd.spec.versions[0];
            let served = serde_json::to_value(
                version
                    .schema
                    .as_ref()
                    .and_then(|s| s.open_api_v3_schema.as_ref()),
            )
            .expect("schema serializes");
            let mut closed = served.clone();
            close_objects(&mut closed);
            add_object_meta(&mut closed);
            let strict = jsonschema::validator_for(&closed).expect("generated schema compiles");
            (crd.spec.names.kind.clone(), KindSchema { served, strict })
        })
        .collect()
});

/// Checks a document of `kind` as the API server would and returns it with the
/// schema's defaults applied, or every problem found.
pub fn validate(kind: &str, object: &Value) -> Result<Value, Vec<FieldError>> {
    let (_, schema) = SCHEMAS
        .iter()
        .find(|(k, _)| k == kind)
        .unwrap_or_else(|| panic!("no schema for kind {kind}"));
    let object = without_nulls(object);
    let mut errors: Vec<FieldError> = schema
        .strict
        .iter_errors(&object)
        .flat_map(|e| describe(&schema.served, &e))
        .collect();
    if errors.is_empty() {
        let defaulted = cel::apply_defaults(&schema.served, &object);
        if let Err(failures) = cel::Validator::new().validate(&schema.served, &defaulted, None) {
            errors.extend(failures.iter().map(|f| FieldError {
                path: f.field_path.clone(),
                message: f.message.clone(),
            }));
        }
        if errors.is_empty() {
            return Ok(defaulted);
        }
    }
    errors.sort_by(|a, b| a.path.cmp(&b.path));
    errors.dedup();
    Err(errors)
}

/// Marks every object node with declared properties as closed, so unknown
/// (e.g. misspelt) fields are reported rather than silently dropped.
fn close_objects(node: &mut Value) {
    let Value::Object(map) = node else { return };
    let open = map.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    if map.contains_key("properties") && !open && !map.contains_key("additionalProperties") {
        map.insert("additionalProperties".into(), Value::Bool(false));
    }
    for (key, child) in map.iter_mut() {
        match key.as_str() {
            "properties" => child
                .as_object_mut()
                .into_iter()
                .flatten()
                .for_each(|(_, v)| close_objects(v)),
            "items" | "additionalProperties" => close_objects(child),
            "allOf" | "anyOf" | "oneOf" => child
                .as_array_mut()
                .into_iter()
                .flatten()
                .for_each(close_objects),
            _ => {}
        }
    }
}

/// The fields every object has, which the API server checks before the CRD schema.
fn add_object_meta(root: &mut Value) {
    let properties = root["properties"]
        .as_object_mut()
        .expect("root has properties");
    properties.insert("apiVersion".into(), serde_json::json!({"type": "string"}));
    properties.insert("kind".into(), serde_json::json!({"type": "string"}));
    properties.insert(
        "metadata".into(),
        serde_json::json!({
            "type": "object",
            "required": ["name"],
            "additionalProperties": true,
            "properties": {
                "name": {"type": "string", "maxLength": 253, "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"},
                "namespace": {"type": "string", "maxLength": 63, "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"}
            }
        }),
    );
    root["required"] = serde_json::json!(["apiVersion", "kind", "metadata", "spec"]);
}

/// The API server drops null values of fields that are not nullable; optional fields
/// here mean the same when absent or null.
fn without_nulls(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), without_nulls(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_nulls).collect()),
        other => other.clone(),
    }
}

/// Turns a JSON-schema error into a sentence a person can act on.
fn describe(schema: &Value, error: &jsonschema::ValidationError<'_>) -> Vec<FieldError> {
    use jsonschema::error::ValidationErrorKind as K;
    let path = dotted(error.instance_path().as_str());
    let got = short(error.instance());
    let keyword_parent = error
        .schema_path()
        .as_str()
        .rsplit_once('/')
        .map(|(parent, _)| parent.to_string())
        .unwrap_or_default();
    let node = schema
        .pointer(&keyword_parent)
        .cloned()
        .unwrap_or(Value::Null);
    let bound = |k: &str| node.get(k).map(number);
    let (path, message) = match error.kind() {
        K::Minimum { .. } | K::Maximum { .. } => match (bound("minimum"), bound("maximum")) {
            (Some(lo), Some(hi)) => (path, format!("must be between {lo} and {hi}, got {got}")),
            (Some(lo), None) => (path, format!("must be at least {lo}, got {got}")),
            (_, Some(hi)) => (path, format!("must be at most {hi}, got {got}")),
            _ => (path, error.to_string()),
        },
        K::Pattern { pattern } if pattern == crate::duration::PATTERN => (
            path,
            format!("must be a duration such as 500ms, 30s, 5m, 2h or 14d, got {got}"),
        ),
        K::Pattern { pattern } => (path, format!("must match {pattern}, got {got}")),
        K::Type { kind } => (
            path,
            format!("must be of type {}, got {got}", type_name(kind)),
        ),
        K::Required { property } => (
            join(&path, property.as_str().unwrap_or_default()),
            "is required".to_string(),
        ),
        K::AdditionalProperties { unexpected } => {
            return unexpected
                .iter()
                .map(|field| FieldError {
                    path: join(&path, field),
                    message: "unknown field".into(),
                })
                .collect();
        }
        K::Enum { options } => (path, format!("must be one of {}, got {got}", list(options))),
        K::MinItems { limit } => (path, format!("must have at least {limit} item(s)")),
        K::MaxItems { limit } => (path, format!("must have at most {limit} items")),
        K::MinLength { limit } => (path, format!("must be at least {limit} character(s) long")),
        K::MaxLength { limit } => (path, format!("must be at most {limit} characters long")),
        _ => (path, error.to_string()),
    };
    vec![FieldError { path, message }]
}

fn type_name(kind: &jsonschema::error::TypeKind) -> String {
    match kind {
        jsonschema::error::TypeKind::Single(t) => t.to_string(),
        jsonschema::error::TypeKind::Multiple(ts) => ts
            .iter()
            .map(|t| t.to_string())
            .collect::<Vec<_>>()
            .join(" or "),
    }
}

fn list(options: &Value) -> String {
    options
        .as_array()
        .map(|a| {
            a.iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

/// `10.0` → `10`: schema bounds are floats, the fields mostly integers.
fn number(value: &Value) -> String {
    match value.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
        _ => value.to_string(),
    }
}

fn short(value: &Value) -> String {
    let text = value.to_string();
    if text.len() > 60 {
        format!("{}…", &text[..text.floor_char_boundary(57)])
    } else {
        text
    }
}

/// `/spec/sources/0/queueBindingRef` → `spec.sources[0].queueBindingRef`.
pub(crate) fn dotted(pointer: &str) -> String {
    let mut out = String::new();
    for segment in pointer.split('/').skip(1) {
        let segment = segment.replace("~1", "/").replace("~0", "~");
        if segment.parse::<usize>().is_ok() {
            out.push_str(&format!("[{segment}]"));
        } else {
            out = join(&out, &segment);
        }
    }
    out
}

fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_string()
    } else {
        format!("{path}.{field}")
    }
}
