//! Reading the manifests a user applies (multi-document YAML of the three kinds) into
//! typed values, with errors that name the file, the document and the field.

use std::{collections::BTreeMap, fmt, path::Path};

use kube::{Resource, ResourceExt};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::Value;

use crate::schema::{self, FieldError};
use crate::{API_VERSION, DeadLetterPolicy, EventPipeline, GROUP, ObjectRef, QueueBinding};

/// Every eventpipe object of one or more manifest files.
#[derive(Clone, Debug, Default)]
pub struct Manifest {
    pub pipelines: Vec<EventPipeline>,
    pub bindings: Vec<QueueBinding>,
    pub policies: Vec<DeadLetterPolicy>,
    /// Where each object came from, for error messages: (kind, name) → origin.
    origins: BTreeMap<(String, String), Origin>,
}

/// A document's place: `examples/x.yaml: document 2 (QueueBinding "orders")`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    pub file: String,
    /// 1-based, as a person counts documents.
    pub document: usize,
    pub kind: Option<String>,
    pub name: Option<String>,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: document {}", self.file, self.document)?;
        match (&self.kind, &self.name) {
            (Some(kind), Some(name)) => write!(f, " ({kind} {name:?})"),
            (Some(kind), None) => write!(f, " ({kind})"),
            _ => Ok(()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{file}: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    #[error("{origin}: not valid YAML: {message}")]
    Yaml {
        origin: Box<Origin>,
        message: String,
    },
    #[error("{origin}{}", list(.errors))]
    Invalid {
        origin: Box<Origin>,
        errors: Vec<FieldError>,
    },
    #[error("{origin}: {kind} {name:?} is defined twice (first in {first})")]
    Duplicate {
        origin: Box<Origin>,
        kind: String,
        name: String,
        first: Box<Origin>,
    },
    #[error("{origin}: {path}: {kind} {name:?} not found{}", known(.defined))]
    MissingRef {
        origin: Box<Origin>,
        path: String,
        kind: String,
        name: String,
        defined: Vec<String>,
    },
    #[error("no EventPipeline named {name:?}{}", known(.defined))]
    NoSuchPipeline { name: String, defined: Vec<String> },
}

fn list(errors: &[FieldError]) -> String {
    match errors {
        [one] => format!(": {one}"),
        many => std::iter::once(":".to_string())
            .chain(many.iter().map(|e| format!("\n  - {e}")))
            .collect(),
    }
}

fn known(defined: &[String]) -> String {
    if defined.is_empty() {
        " (none defined)".into()
    } else {
        format!(" (defined: {})", defined.join(", "))
    }
}

/// One pipeline with everything it references, resolved: what an ingress or a
/// worker needs to run it, and what the operator renders into its ConfigMap.
#[derive(Clone, Debug, PartialEq)]
pub struct Pipeline {
    pub pipeline: EventPipeline,
    pub bindings: BTreeMap<String, QueueBinding>,
    pub policies: BTreeMap<String, DeadLetterPolicy>,
}

impl Pipeline {
    pub fn name(&self) -> String {
        self.pipeline.name_any()
    }

    /// A referenced binding; present by construction.
    pub fn binding(&self, r: &ObjectRef) -> &QueueBinding {
        &self.bindings[&r.name]
    }

    /// The dead-letter policy of a binding, when it names one.
    pub fn policy_of(&self, binding: &QueueBinding) -> Option<&DeadLetterPolicy> {
        binding
            .spec
            .dead_letter_policy_ref
            .as_ref()
            .map(|r| &self.policies[&r.name])
    }

    /// The documents again, as one YAML stream the loader reads back unchanged.
    pub fn to_yaml(&self) -> String {
        let mut out = String::new();
        let mut push = |v: &dyn erased::Doc| out.push_str(&format!("---\n{}", v.yaml()));
        self.policies.values().for_each(|p| push(p));
        self.bindings.values().for_each(|b| push(b));
        push(&self.pipeline);
        out
    }
}

mod erased {
    pub trait Doc {
        fn yaml(&self) -> String;
    }
    impl<T: serde::Serialize> Doc for T {
        fn yaml(&self) -> String {
            serde_yaml::to_string(self).expect("resource serializes to YAML")
        }
    }
}

impl Manifest {
    /// Reads and merges several files; an object defined twice is an error.
    pub fn load_all<P: AsRef<Path>>(paths: &[P]) -> Result<Self, ManifestError> {
        let mut all = Self::default();
        for path in paths {
            let path = path.as_ref();
            let file = path.display().to_string();
            let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Read {
                file: file.clone(),
                source,
            })?;
            all.add_yaml(&file, &text)?;
        }
        Ok(all)
    }

    pub fn load(path: impl AsRef<Path>) -> Result<Self, ManifestError> {
        Self::load_all(&[path])
    }

    /// Parses YAML text; `file` names it in errors.
    pub fn from_yaml(file: &str, text: &str) -> Result<Self, ManifestError> {
        let mut manifest = Self::default();
        manifest.add_yaml(file, text)?;
        Ok(manifest)
    }

    fn add_yaml(&mut self, file: &str, text: &str) -> Result<(), ManifestError> {
        for (index, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
            let mut origin = Origin {
                file: file.to_string(),
                document: index + 1,
                kind: None,
                name: None,
            };
            let value = Value::deserialize(document).map_err(|e| ManifestError::Yaml {
                origin: origin.clone().into(),
                message: e.to_string(),
            })?;
            if value.is_null() {
                continue; // an empty document, e.g. after a trailing `---`
            }
            origin.kind = value
                .get("kind")
                .and_then(Value::as_str)
                .map(str::to_string);
            origin.name = value
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .map(str::to_string);
            self.add_document(origin, value)?;
        }
        Ok(())
    }

    fn add_document(&mut self, origin: Origin, value: Value) -> Result<(), ManifestError> {
        let invalid = |path: &str, message: String| ManifestError::Invalid {
            origin: origin.clone().into(),
            errors: vec![FieldError {
                path: path.into(),
                message,
            }],
        };
        let api_version = value
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if api_version.split('/').next() != Some(GROUP) {
            return Ok(()); // other kinds (Secrets, Deployments) are kubectl's business
        }
        if api_version != API_VERSION {
            return Err(invalid(
                "apiVersion",
                format!("must be {API_VERSION}, got {api_version:?}"),
            ));
        }
        match origin.kind.as_deref() {
            Some("EventPipeline") => self.pipelines.push(typed(&origin, &value)?),
            Some("QueueBinding") => self.bindings.push(typed(&origin, &value)?),
            Some("DeadLetterPolicy") => self.policies.push(typed(&origin, &value)?),
            other => {
                return Err(invalid(
                    "kind",
                    format!(
                        "must be EventPipeline, QueueBinding or DeadLetterPolicy, got {other:?}"
                    ),
                ));
            }
        }
        let key = (
            origin.kind.clone().unwrap_or_default(),
            origin.name.clone().unwrap_or_default(),
        );
        if let Some(first) = self.origins.get(&key) {
            return Err(ManifestError::Duplicate {
                origin: origin.clone().into(),
                kind: key.0,
                name: key.1,
                first: first.clone().into(),
            });
        }
        self.origins.insert(key, origin);
        Ok(())
    }

    /// Names of the pipelines, in file order.
    pub fn pipeline_names(&self) -> Vec<String> {
        self.pipelines.iter().map(|p| p.name_any()).collect()
    }

    /// One pipeline with its references resolved.
    pub fn pipeline(&self, name: &str) -> Result<Pipeline, ManifestError> {
        let pipeline = self
            .pipelines
            .iter()
            .find(|p| p.name_any() == name)
            .ok_or_else(|| ManifestError::NoSuchPipeline {
                name: name.into(),
                defined: self.pipeline_names(),
            })?;
        self.resolve(pipeline)
    }

    /// Every pipeline with its references resolved.
    pub fn resolved(&self) -> Result<Vec<Pipeline>, ManifestError> {
        self.pipelines.iter().map(|p| self.resolve(p)).collect()
    }

    fn resolve(&self, pipeline: &EventPipeline) -> Result<Pipeline, ManifestError> {
        let mut bindings = BTreeMap::new();
        for (path, r) in pipeline.binding_refs() {
            let binding = self.find(&self.bindings, pipeline, &path, r)?;
            bindings.insert(r.name.clone(), binding.clone());
        }
        let mut policies = BTreeMap::new();
        for binding in bindings.values() {
            if let Some(r) = &binding.spec.dead_letter_policy_ref {
                let policy = self.find(&self.policies, binding, "spec.deadLetterPolicyRef", r)?;
                policies.insert(r.name.clone(), policy.clone());
            }
        }
        Ok(Pipeline {
            pipeline: pipeline.clone(),
            bindings,
            policies,
        })
    }

    /// Finds the object `r` names in the namespace of `from`.
    fn find<'a, T, F>(
        &self,
        pool: &'a [T],
        from: &F,
        path: &str,
        r: &ObjectRef,
    ) -> Result<&'a T, ManifestError>
    where
        T: Resource<DynamicType = ()>,
        F: Resource<DynamicType = ()>,
    {
        let same_ns = |o: &&T| o.meta().namespace == from.meta().namespace;
        pool.iter()
            .filter(same_ns)
            .find(|o| o.name_any() == r.name)
            .ok_or_else(|| {
                let from_key = (F::kind(&()).to_string(), from.name_any());
                ManifestError::MissingRef {
                    origin: self.origins[&from_key].clone().into(),
                    path: path.into(),
                    kind: T::kind(&()).to_string(),
                    name: r.name.clone(),
                    defined: pool.iter().filter(same_ns).map(|o| o.name_any()).collect(),
                }
            })
    }
}

/// Validates a document as the API server would, then reads it into its type.
fn typed<T: DeserializeOwned + Serialize>(
    origin: &Origin,
    value: &Value,
) -> Result<T, ManifestError> {
    let invalid = |errors| ManifestError::Invalid {
        origin: origin.clone().into(),
        errors,
    };
    let kind = origin.kind.as_deref().unwrap_or_default();
    let defaulted = schema::validate(kind, value).map_err(invalid)?;
    serde_path_to_error::deserialize(defaulted).map_err(|e| {
        invalid(vec![FieldError {
            path: e.path().to_string(),
            message: e.inner().to_string(),
        }])
    })
}
