//! Push to clients on a real cluster (E2E_OPERATOR=helm): `examples/notes.yaml` with
//! two ingress replicas. A client subscribed on each replica, by the correlation id of
//! its request, receives the note's outcome: the worker reaches every replica through
//! the headless Service the operator renders.
// The e2e suite is test code: a failed step fails the test, helpers included.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use eventpipe_e2e::helm;
use eventpipe_e2e::notes::{self, TOKEN};
use eventpipe_e2e::tools::PortForward;
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::{Api, ListParams};

#[tokio::test]
async fn a_note_outcome_reaches_its_subscriber_on_every_ingress_replica() {
    let Some((client, mut release)) = helm::start(&[]).await else {
        return;
    };
    let app = release.app.clone();
    notes::start(&client, &app, 2).await;
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

    assert_eq!(notes::post(&app, &correlation).await, 202);

    for (pod, _forward, mut stream) in subscribers {
        let pushed = until_outcome(&mut stream).await;
        assert!(
            pushed.contains("note-saved") && pushed.contains(&correlation),
            "{pod} got: {pushed}"
        );
    }
    release.uninstall(&client).await;
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
