//! The operator on a real cluster, run out of cluster against moto (E2E_OPERATOR unset
//! or `local`; the Helm path is in helm.rs): apply the GitHub analytics example and
//! watch it become workloads.
// The e2e suite is test code: a failed step fails the test, helpers included.
#![allow(clippy::unwrap_used)]

use std::process::{Child, Command};
use std::time::Duration;

use eventpipe_crds::{EventPipeline, QueueBinding};
use eventpipe_e2e::{apply, eventually, ready_condition};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::json;

struct Operator(Child);

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_operator(moto_endpoint: &str) -> Operator {
    let bin = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../target/debug/eventpipe-operator"
    );
    assert!(
        std::path::Path::new(bin).exists(),
        "{bin} missing: cargo build -p eventpipe-operator"
    );
    let child = Command::new(bin)
        .args([
            "run",
            "--no-leader-election",
            "--metrics-listen",
            "127.0.0.1:0",
            "--external-metrics-listen",
            "127.0.0.1:0",
        ])
        .env("AWS_ENDPOINT_URL", moto_endpoint)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .spawn()
        .unwrap();
    Operator(child)
}

#[tokio::test]
async fn an_applied_pipeline_becomes_workloads_and_follows_its_spec() {
    let Some(client) = eventpipe_e2e::cluster().await else {
        return;
    };
    if eventpipe_e2e::helm_mode() {
        eprintln!("SKIP: this test runs the operator out of cluster; the Helm path is in helm.rs");
        return;
    }
    eventpipe_e2e::install_crds(&client).await;
    let moto = eventpipe_testkit::Moto::start();
    let _operator = start_operator(&moto.endpoint());
    let ns = eventpipe_e2e::test_namespace("eventpipe-op");
    eventpipe_e2e::create_namespace(&client, &ns).await;
    for doc in eventpipe_e2e::example_documents(&["github-analytics.yaml"]) {
        apply(&client, &ns, &doc).await;
    }
    let pipelines: Api<EventPipeline> = Api::namespaced(client.clone(), &ns);

    // No webhook Secret yet: the pipeline says so and nothing is deployed.
    let reason = eventually("SecretNotFound", Duration::from_secs(60), async || {
        ready_condition(&pipelines.get("github-ingest").await.ok()?)
            .map(|c| c.reason)
            .filter(|r| r == "SecretNotFound")
    })
    .await;
    assert_eq!(reason, "SecretNotFound");
    eventpipe_e2e::create_secret(&client, &ns, "github-webhook", &[("secret", "e2e")]).await;

    // The Secret's arrival re-reconciles: every object appears, owned by the pipeline.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let worker = eventually("worker Deployment", Duration::from_secs(60), async || {
        deployments
            .get_opt("github-ingest-worker")
            .await
            .ok()
            .flatten()
    })
    .await;
    assert_eq!(worker.owner_references()[0].name, "github-ingest");
    assert!(
        deployments
            .get_opt("github-ingest-ingress")
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        Api::<Service>::namespaced(client.clone(), &ns)
            .get_opt("github-ingest-ingress")
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        Api::<ConfigMap>::namespaced(client.clone(), &ns)
            .get_opt("github-ingest-pipeline")
            .await
            .unwrap()
            .is_some()
    );
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), &ns);
    let hpa = hpas.get("github-ingest-worker").await.unwrap();
    let metric = &hpa.spec.metrics.as_ref().unwrap()[0];
    assert_eq!(
        metric.external.as_ref().unwrap().metric.name,
        "eventpipe_queue_depth"
    );
    assert_eq!(hpa.spec.max_replicas, 5);

    // The binding's queue exists on the AWS endpoint and its status says where.
    let bindings: Api<QueueBinding> = Api::namespaced(client.clone(), &ns);
    let url = eventually("queue URL in status", Duration::from_secs(60), async || {
        bindings.get("github-events").await.ok()?.status?.queue_url
    })
    .await;
    assert!(url.ends_with("/github-events"));
    let status = pipelines
        .get("github-ingest")
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(
        status.webhook_url.as_deref(),
        Some(format!("http://github-ingest-ingress.{ns}.svc/hooks/github").as_str())
    );

    // An update: maxReplicas follows.
    let patch = json!({"spec": {"scaling": {"maxReplicas": 7}}});
    pipelines
        .patch(
            "github-ingest",
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .unwrap();
    eventually("HPA maxReplicas 7", Duration::from_secs(60), async || {
        (hpas
            .get("github-ingest-worker")
            .await
            .ok()?
            .spec
            .max_replicas
            == 7)
            .then_some(())
    })
    .await;

    // Deletion: the owned objects go with the pipeline.
    pipelines
        .delete("github-ingest", &DeleteParams::default())
        .await
        .unwrap();
    eventually("owned objects gone", Duration::from_secs(120), async || {
        deployments
            .get_opt("github-ingest-worker")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    eventpipe_e2e::delete_namespace(&client, &ns).await;
}
