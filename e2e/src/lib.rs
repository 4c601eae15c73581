//! Shared set-up of the end-to-end suite: a client for the cluster in `KUBECONFIG`,
//! or a clear reason to skip when there is none, and the helpers every test uses.
// Test support only: a failed step is a failed e2e test, so helpers unwrap.
#![allow(clippy::unwrap_used)]

pub mod helm;
pub mod load;
pub mod notes;
pub mod tools;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use eventpipe_crds::EventPipeline;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

/// The field manager of everything the suite applies.
pub const MANAGER: &str = "eventpipe-e2e";

/// Whether the run tests the Helm chart (`E2E_OPERATOR=helm`) rather than an operator
/// run out of cluster with the CRDs applied by the suite.
pub fn helm_mode() -> bool {
    std::env::var("E2E_OPERATOR").as_deref() == Ok("helm")
}

/// A client for the cluster in `KUBECONFIG`; `None`, after saying why, when there is none.
pub async fn cluster() -> Option<Client> {
    if std::env::var_os("KUBECONFIG").is_none() {
        eprintln!(
            "SKIP: KUBECONFIG is not set; point it at a cluster (e.g. kind) to run the e2e suite"
        );
        return None;
    }
    let client = match Client::try_default().await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("SKIP: cannot build a client from KUBECONFIG: {e}");
            return None;
        }
    };
    match tokio::time::timeout(Duration::from_secs(10), client.apiserver_version()).await {
        Ok(Ok(v)) => {
            eprintln!("e2e against Kubernetes {}.{}", v.major, v.minor);
            Some(client)
        }
        Ok(Err(e)) => {
            eprintln!("SKIP: the cluster in KUBECONFIG does not answer: {e}");
            None
        }
        Err(_) => {
            eprintln!("SKIP: the cluster in KUBECONFIG did not answer within 10s");
            None
        }
    }
}

/// A namespace name unique to this run.
pub fn test_namespace(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}-{}-{nanos:x}", std::process::id())
}

/// Applies the three CRDs server-side and waits until the API serves them.
pub async fn install_crds(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in eventpipe_crds::schema::crds() {
        let params = PatchParams::apply(MANAGER).force();
        crds.patch(&crd.name_any(), &params, &Patch::Apply(&crd))
            .await
            .unwrap();
    }
    for crd in eventpipe_crds::schema::crds() {
        let name = crd.name_any();
        let established = kube::runtime::wait::conditions::is_crd_established();
        let wait = kube::runtime::wait::await_condition(crds.clone(), &name, established);
        tokio::time::timeout(Duration::from_secs(30), wait)
            .await
            .unwrap()
            .unwrap();
    }
}

/// The YAML documents of the named example files (every manifest in `examples/` when
/// empty; not the demos' scenarios nor the example services' crate), in order.
pub fn example_documents(files: &[&str]) -> Vec<serde_json::Value> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut paths: Vec<_> = match files {
        [] => std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
            .collect(),
        some => some.iter().map(|f| dir.join(f)).collect(),
    };
    paths.sort();
    paths
        .iter()
        .flat_map(|path| {
            let text = std::fs::read_to_string(path).unwrap();
            serde_yaml::Deserializer::from_str(&text)
                .map(|d| serde::Deserialize::deserialize(d).unwrap())
                .filter(|v: &serde_json::Value| !v.is_null())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Polls `probe` every half second until it gives a value; fails, naming `what`,
/// after `limit`, so no wait on the cluster is unbounded.
pub async fn eventually<T>(
    what: &str,
    limit: Duration,
    mut probe: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The API of an `eventpipe.dev` kind in `ns`.
pub fn api_of(client: &Client, ns: &str, kind: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk(eventpipe_crds::GROUP, eventpipe_crds::VERSION, kind);
    Api::namespaced_with(client.clone(), ns, &ApiResource::from_gvk(&gvk))
}

/// Applies one `eventpipe.dev` document server-side in `ns`.
pub async fn apply(client: &Client, ns: &str, doc: &Value) {
    let kind = doc["kind"].as_str().unwrap();
    let obj: DynamicObject = serde_json::from_value(doc.clone()).unwrap();
    api_of(client, ns, kind)
        .patch(
            &obj.name_any(),
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&obj),
        )
        .await
        .unwrap_or_else(|e| panic!("applying {kind} {}: {e}", obj.name_any()));
}

/// The least pipeline that deploys: a queue its binding creates (in the chart's moto)
/// and a worker posting nowhere.
pub fn queue_pipeline(queue: &str) -> Vec<Value> {
    vec![
        json!({
            "apiVersion": "eventpipe.dev/v1alpha1", "kind": "QueueBinding",
            "metadata": {"name": "orders"},
            "spec": {"sqs": {"queueName": queue, "create": true}},
        }),
        json!({
            "apiVersion": "eventpipe.dev/v1alpha1", "kind": "EventPipeline",
            "metadata": {"name": "orders"},
            "spec": {
                "sources": [{"queueBindingRef": {"name": "orders"}}],
                "processor": {"http": {"url": "http://127.0.0.1:9/events"}},
            },
        }),
    ]
}

/// The pipeline's `Ready` condition, once the operator has written one.
pub fn ready_condition(p: &EventPipeline) -> Option<Condition> {
    p.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .cloned()
}

pub async fn create_namespace(client: &Client, name: &str) {
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
}

pub async fn delete_namespace(client: &Client, name: &str) {
    Api::<Namespace>::all(client.clone())
        .delete(name, &DeleteParams::default())
        .await
        .unwrap();
}

pub async fn create_secret(client: &Client, ns: &str, name: &str, data: &[(&str, &str)]) {
    let data: BTreeMap<&str, &str> = data.iter().copied().collect();
    let secret: Secret =
        serde_json::from_value(json!({"metadata": {"name": name}, "stringData": data})).unwrap();
    Api::<Secret>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
}
