//! Push to clients on a real cluster (E2E_OPERATOR=helm): `examples/notes.yaml` with
//! two ingress replicas. A client subscribed on each replica, by the correlation id of
//! its request, receives the note's outcome: the worker reaches every replica through
//! the headless Service the operator renders.
// The e2e suite is test code: a failed step fails the test, helpers included.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use eventpipe_crds::EventPipeline;
use eventpipe_e2e::helm::{self, SETTLE, available};
use eventpipe_e2e::tools::PortForward;
use eventpipe_e2e::{eventually, example_documents, ready_condition};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::{Api, ListParams};
use serde_json::json;

const TOKEN: &str = "e2e-notes-token";

#[tokio::test]
async fn a_note_outcome_reaches_its_subscriber_on_every_ingress_replica() {
    let Some((client, mut release)) = helm::start(&[]).await else {
        return;
    };
    let app = release.app.clone();
    start_notes(&client, &app).await;
    let pods = ingress_pods(&client, &app).await;
    assert_eq!(pods.len(), 2, "{pods:?}");

    let correlation = format!("note-{}", uuid::Uuid::new_v4().simple());
    let mut subscribers = vec![];
    for pod in &pods {
        let forward = PortForward::pod(&app, pod, 8080).await;
        let url = forward.url(&format!("/notes/outcomes?correlationId={correlation}"));
        let stream = reqwest::Client::new()
            .get(url)
            .bearer_auth(TOKEN)
            .header("accept", "text/event-stream")
            .send()
            .await
            .unwrap();
        assert_eq!(stream.status(), 200, "subscribed on {pod}");
        subscribers.push((pod.clone(), forward, stream));
    }

    let ingress = PortForward::start(&app, "notes-ingress", 80).await;
    let posted = reqwest::Client::new()
        .post(ingress.url("/notes"))
        .bearer_auth(TOKEN)
        .header("x-request-id", &correlation)
        .header("x-event-type", "note.create")
        .header("content-type", "application/json")
        .body(json!({"text": "pushed to every replica"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 202, "{:?}", posted.text().await);

    for (pod, _forward, mut stream) in subscribers {
        let pushed = until_outcome(&mut stream).await;
        assert!(
            pushed.contains("note-saved") && pushed.contains(&correlation),
            "{pod} got: {pushed}"
        );
    }
    drop(ingress);
    release.uninstall(&client).await;
}

/// The Notes example with its bearer token and two ingress replicas, Ready.
async fn start_notes(client: &Client, ns: &str) {
    eventpipe_e2e::create_secret(client, ns, "notes-api", &[("token", TOKEN)]).await;
    for mut doc in example_documents(&["notes.yaml"]) {
        if doc["metadata"]["name"] == "notes" && doc["kind"] == "EventPipeline" {
            doc["spec"]["ingress"]["replicas"] = json!(2);
        }
        eventpipe_e2e::apply(client, ns, &doc).await;
    }
    let pipelines: Api<EventPipeline> = Api::namespaced(client.clone(), ns);
    for name in ["notes", "note-notifier"] {
        eventually(&format!("{name} Ready"), SETTLE, async || {
            ready_condition(&pipelines.get(name).await.ok()?).filter(|c| c.status == "True")
        })
        .await;
    }
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    eventually("two ingress replicas available", SETTLE, async || {
        let d = deployments.get("notes-ingress").await.ok()?;
        (available(&d) == 2).then_some(())
    })
    .await;
}

async fn ingress_pods(client: &Client, ns: &str) -> Vec<String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let selector = "eventpipe.dev/pipeline=notes,app.kubernetes.io/component=ingress";
    let list = pods.list(&ListParams::default().labels(selector)).await;
    let running = list.unwrap().items.into_iter().filter(|p| {
        let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
        p.metadata.deletion_timestamp.is_none() && phase == Some("Running")
    });
    running.filter_map(|p| p.metadata.name).collect()
}

/// What a subscriber's stream carried up to its first pushed event (bounded wait).
async fn until_outcome(stream: &mut reqwest::Response) -> String {
    let mut got = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while !got.contains("\ndata:") && !got.starts_with("data:") {
        let chunk = tokio::time::timeout_at(deadline, stream.chunk()).await;
        match chunk {
            Ok(Ok(Some(bytes))) => got.push_str(&String::from_utf8_lossy(&bytes)),
            _ => break,
        }
    }
    got
}
