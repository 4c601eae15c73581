//! Leader election on a real cluster (E2E_OPERATOR=helm): with two operator replicas
//! one holds the chart's Lease; when its pod is deleted at once (grace period 0),
//! another replica takes the Lease within the lease duration and reconciles from then
//! on. (A leader stopped by a signal releases the Lease first; one that dies without
//! a word loses it when it expires, as the lease manager's own tests show.)
// The e2e suite is test code: a failed step fails the test, helpers included.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use eventpipe_e2e::eventually;
use eventpipe_e2e::helm::{self, RELEASE, SETTLE};
use eventpipe_e2e::tools::run;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams};
use serde_json::json;

/// The operator's lease duration (operator/src/run.rs), plus a renewal period of slack.
const HANDOVER: Duration = Duration::from_secs(15 + 5);

#[tokio::test]
async fn a_deleted_leader_hands_over_within_the_lease_duration() {
    let Some((client, mut release)) = helm::start(&["operator.replicas=2"]).await else {
        return;
    };
    let ns = release.ns.clone();
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let lease = format!("{RELEASE}-leader");
    let holder =
        async || -> Option<String> { leases.get(&lease).await.ok()?.spec?.holder_identity };
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let operators = ListParams::default().labels("app.kubernetes.io/component=operator");
    let names: Vec<String> = pods
        .list(&operators)
        .await
        .unwrap()
        .iter()
        .map(|p| p.name_any())
        .collect();
    assert_eq!(names.len(), 2, "two operator pods: {names:?}");
    let first = eventually("a leader", SETTLE, async || {
        holder().await.filter(|h| names.contains(h))
    })
    .await;

    let kill = DeleteParams::default().grace_period(0);
    pods.delete(&first, &kill).await.unwrap();
    let deleted = Instant::now();
    // The standby, or the replacement the ReplicaSet starts, whichever locks first.
    let second = eventually("another leader", HANDOVER, async || {
        holder().await.filter(|h| h != &first)
    })
    .await;
    eprintln!(
        "{first} deleted; {second} leads after {:?}",
        deleted.elapsed()
    );

    // The new leader reconciles: a pipeline applied now gets its workers.
    let app = &release.app;
    let binding = json!({"apiVersion": "eventpipe.dev/v1alpha1", "kind": "QueueBinding",
        "metadata": {"name": "after-handover"}, "spec": {"sqs": {"queueName": "after-handover", "create": true}}});
    let pipeline = json!({"apiVersion": "eventpipe.dev/v1alpha1", "kind": "EventPipeline",
        "metadata": {"name": "after-handover"}, "spec": {
            "sources": [{"queueBindingRef": {"name": "after-handover"}}],
            "processor": {"http": {"url": "http://processor.invalid/"}}}});
    eventpipe_e2e::apply(&client, app, &binding).await;
    eventpipe_e2e::apply(&client, app, &pipeline).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), app);
    eventually(
        "workers of a pipeline applied after the handover",
        SETTLE,
        async || deployments.get_opt("after-handover-worker").await.ok()?,
    )
    .await;
    let logs = run("kubectl", &["logs", "-n", &ns, &format!("pod/{second}")]).await;
    assert!(
        logs.contains("leading"),
        "{second} does not say it leads:\n{logs}"
    );

    release.uninstall(&client).await;
}
