//! The operator on a real cluster: run out of cluster against moto (E2E_OPERATOR=local,
//! the default here) or installed by Helm (E2E_OPERATOR=helm, images loaded into the
//! cluster), apply the GitHub analytics example and watch it become workloads.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use eventpipe_crds::{EventPipeline, QueueBinding};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

const MANAGER: &str = "eventpipe-e2e";

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

async fn eventually<T>(
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

async fn apply(client: &Client, ns: &str, doc: &Value) {
    let kind = doc["kind"].as_str().unwrap();
    let gvk = kube::core::GroupVersionKind::gvk("eventpipe.dev", "v1alpha1", kind);
    let api: Api<kube::api::DynamicObject> =
        Api::namespaced_with(client.clone(), ns, &kube::core::ApiResource::from_gvk(&gvk));
    let obj: kube::api::DynamicObject = serde_json::from_value(doc.clone()).unwrap();
    api.patch(
        &obj.name_any(),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&obj),
    )
    .await
    .unwrap();
}

fn ready_reason(p: &EventPipeline) -> Option<String> {
    p.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.reason.clone())
}

#[tokio::test]
async fn an_applied_pipeline_becomes_workloads_and_follows_its_spec() {
    let Some(client) = eventpipe_e2e::cluster().await else {
        return;
    };
    if std::env::var("E2E_OPERATOR").as_deref() == Ok("helm") {
        eprintln!("SKIP: this test runs the operator out of cluster; the Helm path is in helm.rs");
        return;
    }
    eventpipe_e2e::install_crds(&client).await;
    let moto = eventpipe_testkit::Moto::start();
    let _operator = start_operator(&moto.endpoint());
    let ns = eventpipe_e2e::test_namespace("eventpipe-op");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap(),
        )
        .await
        .unwrap();
    for doc in eventpipe_e2e::example_documents(&["github-analytics.yaml"]) {
        apply(&client, &ns, &doc).await;
    }
    let pipelines: Api<EventPipeline> = Api::namespaced(client.clone(), &ns);

    // No webhook Secret yet: the pipeline says so and nothing is deployed.
    let reason = eventually("SecretNotFound", Duration::from_secs(60), async || {
        ready_reason(&pipelines.get("github-ingest").await.ok()?).filter(|r| r == "SecretNotFound")
    })
    .await;
    assert_eq!(reason, "SecretNotFound");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "github-webhook"}, "stringData": {"secret": "e2e"}}),
            )
            .unwrap(),
        )
        .await
        .unwrap();

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
    namespaces
        .delete(&ns, &DeleteParams::default())
        .await
        .unwrap();
}
