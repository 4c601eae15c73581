//! Shared set-up of the end-to-end suite: a client for the cluster in `KUBECONFIG`,
//! or a clear reason to skip when there is none.

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};

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
        let params = PatchParams::apply("eventpipe-e2e").force();
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

/// The YAML documents of the named example files (all of `examples/` when empty), in order.
pub fn example_documents(files: &[&str]) -> Vec<serde_json::Value> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut paths: Vec<_> = match files {
        [] => std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
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
