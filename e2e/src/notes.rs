//! `examples/notes.yaml` on the cluster: its bearer token, its pipelines Ready, and a
//! note posted as a client does.

use kube::Client;
use kube::api::Api;
use serde_json::json;

use crate::helm::{SETTLE, available};
use crate::tools::PortForward;
use crate::{eventually, example_documents, ready_condition};
use eventpipe_crds::EventPipeline;
use k8s_openapi::api::apps::v1::Deployment;

/// The `notes-api` bearer token clients use, for posting and subscribing.
pub const TOKEN: &str = "e2e-notes-token";

/// The Notes example with `ingress_replicas` ingress replicas, Ready and available.
pub async fn start(client: &Client, ns: &str, ingress_replicas: i32) {
    crate::create_secret(client, ns, "notes-api", &[("token", TOKEN)]).await;
    for mut doc in example_documents(&["notes.yaml"]) {
        if doc["metadata"]["name"] == "notes" && doc["kind"] == "EventPipeline" {
            doc["spec"]["ingress"]["replicas"] = json!(ingress_replicas);
        }
        crate::apply(client, ns, &doc).await;
    }
    let pipelines: Api<EventPipeline> = Api::namespaced(client.clone(), ns);
    for name in ["notes", "note-notifier"] {
        eventually(&format!("{name} Ready"), SETTLE, async || {
            ready_condition(&pipelines.get(name).await.ok()?).filter(|c| c.status == "True")
        })
        .await;
    }
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    eventually("the ingress replicas available", SETTLE, async || {
        let d = deployments.get("notes-ingress").await.ok()?;
        (available(&d) == ingress_replicas).then_some(())
    })
    .await;
}

/// POSTs a note through the ingress Service with `correlation` as its request id;
/// the answer's status.
pub async fn post(ns: &str, correlation: &str) -> u16 {
    let ingress = PortForward::start(ns, "notes-ingress", 80).await;
    let posted = reqwest::Client::new()
        .post(ingress.url("/notes"))
        .bearer_auth(TOKEN)
        .header("x-request-id", correlation)
        .header("x-event-type", "note.create")
        .header("content-type", "application/json")
        .body(json!({"text": "a note"}).to_string())
        .send()
        .await
        .unwrap();
    posted.status().as_u16()
}
