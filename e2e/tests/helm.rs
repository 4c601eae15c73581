//! The chart on a real cluster (E2E_OPERATOR=helm, the images loaded into it, e.g. with
//! `kind load docker-image`): `helm install` with moto in the cluster as the AWS
//! endpoint and `helm test`; the GitHub analytics example applied; signed webhooks sent
//! through the ingress Service; processing, a dead letter, status, `kubectl get` and
//! `kubectl describe` and the HPA's metric observed; then `helm uninstall`, after which
//! only the CRDs stay.
// The e2e suite is test code: a failed step fails the test, helpers included.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use eventpipe_crds::EventPipeline;
use eventpipe_e2e::helm::{self, SETTLE, available};
use eventpipe_e2e::tools::{PortForward, run};
use eventpipe_e2e::{eventually, ready_condition};
use hmac::{Hmac, Mac};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::Api;
use serde_json::{Value, json};
use sha2::Sha256;

const WEBHOOK_SECRET: &str = "e2e-webhook-secret";
/// Tables the example writes: every comment, and counts per repository and day.
const COMMENTS_TABLE: &str = "github-comments";
const COUNTS_TABLE: &str = "github-daily-counts";

#[tokio::test]
async fn helm_install_runs_the_example_and_helm_uninstall_leaves_only_the_crds() {
    let Some((client, mut release)) = helm::start(&[]).await else {
        return;
    };
    let app = release.app.clone();
    start_example(&client, &app).await;

    let ingress = PortForward::start(&app, "github-ingest-ingress", 80).await;
    let moto = release.moto().await;
    let repository = format!("e2e/{app}");
    let event_id = send_comment(&ingress, &repository).await;
    processed(
        &client,
        &app,
        &helm::dynamodb(&moto),
        &event_id,
        &repository,
    )
    .await;
    dead_lettered(&client, &app, &ingress).await;
    hpa_reads_queue_depth(&client, &app).await;
    kubectl_shows_the_pipelines(&app).await;
    runs_as_non_root_read_only(&client, &[&release.ns, &app]).await;
    reads_secrets_only_by_name(&release).await;
    an_image_that_cannot_be_pulled_is_named(&client, &app).await;
    drop((ingress, moto));

    release.uninstall(&client).await;
    // Both namespaces go when `release` is dropped, as after a failure.
}

/// The operator may read a Secret by name where pipelines run, and never list or
/// watch Secrets, there or anywhere.
async fn reads_secrets_only_by_name(release: &helm::Release) {
    assert!(
        release
            .operator_can(&["get", "secrets", "-n", &release.app])
            .await
    );
    for verb in ["list", "watch"] {
        for scope in [["-n", release.app.as_str()], ["--all-namespaces", ""]] {
            let args: Vec<&str> = [verb, "secrets", scope[0], scope[1]]
                .into_iter()
                .filter(|a| !a.is_empty())
                .collect();
            assert!(!release.operator_can(&args).await, "may {args:?}");
        }
    }
}

/// The example in its own namespace, with its webhook Secret, until both pipelines
/// are Ready.
async fn start_example(client: &Client, app: &str) {
    let secret = [("secret", WEBHOOK_SECRET)];
    eventpipe_e2e::create_secret(client, app, "github-webhook", &secret).await;
    for doc in eventpipe_e2e::example_documents(&["github-analytics.yaml"]) {
        eventpipe_e2e::apply(client, app, &doc).await;
    }
    let pipelines: Api<EventPipeline> = Api::namespaced(client.clone(), app);
    for name in ["github-ingest", "github-aggregate"] {
        eventually(&format!("{name} Ready"), SETTLE, async || {
            ready_condition(&pipelines.get(name).await.ok()?).filter(|c| c.status == "True")
        })
        .await;
    }
    // Ready stands for available Deployments: check that it says the truth.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), app);
    for (name, want) in [
        ("github-ingest-ingress", 2),
        ("github-ingest-worker", 1),
        ("github-aggregate-worker", 1),
    ] {
        let got = available(&deployments.get(name).await.unwrap());
        assert!(got >= want, "{name}: {got} of {want} replicas available");
    }
}

/// GitHub's `X-Hub-Signature-256`: the body's HMAC-SHA256 under the shared secret.
fn github_signature(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(WEBHOOK_SECRET.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// An `issue_comment` delivery as GitHub sends it when a comment is created.
fn comment(issue: u64, repository: Option<&str>) -> Vec<u8> {
    let mut body = json!({
        "action": "created",
        "issue": {"number": issue, "title": "e2e"},
        "comment": {"id": issue * 1000, "body": "e2e", "user": {"login": "octocat"}},
        "sender": {"login": "octocat"},
    });
    if let Some(name) = repository {
        body["repository"] = json!({"full_name": name});
    }
    serde_json::to_vec(&body).unwrap()
}

/// Posts a delivery to the ingress: the status and the JSON reply.
async fn deliver(ingress: &PortForward, body: Vec<u8>, signature: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(ingress.url("/hooks/github"))
        .header("content-type", "application/json")
        .header("x-github-event", "issue_comment")
        .header("x-github-delivery", uuid::Uuid::new_v4().to_string())
        .header("x-hub-signature-256", signature)
        .timeout(Duration::from_secs(30))
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let reply = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap_or(Value::Null);
    (status, reply)
}

/// A forged delivery is refused; a signed one is accepted once queued. Its event id.
async fn send_comment(ingress: &PortForward, repository: &str) -> String {
    let body = comment(42, Some(repository));
    let (status, _) = deliver(ingress, body.clone(), &github_signature(b"another body")).await;
    assert_eq!(status, 401, "a forged signature");
    let (status, reply) = deliver(ingress, body.clone(), &github_signature(&body)).await;
    assert_eq!(status, 202, "{reply}");
    assert_eq!(reply["correlationId"], "42", "{reply}");
    reply["eventId"].as_str().unwrap().to_string()
}

/// The comment counter of `repository` in the counts table.
async fn count_of(ddb: &aws_sdk_dynamodb::Client, repository: &str) -> Option<i64> {
    let items = ddb
        .scan()
        .table_name(COUNTS_TABLE)
        .send()
        .await
        .ok()?
        .items?;
    let item = items.into_iter().find(|i| {
        i.get("repository")
            .is_some_and(|r| r.as_s().is_ok_and(|s| s == repository))
    })?;
    item.get("comments")?.as_n().ok()?.parse().ok()
}

/// The comment went webhook → SQS → worker → table, then table stream → aggregator →
/// counts, and the pipeline's status shows its queue drained.
async fn processed(
    client: &Client,
    app: &str,
    ddb: &aws_sdk_dynamodb::Client,
    event_id: &str,
    repository: &str,
) {
    eventually("the comment stored in its table", SETTLE, async || {
        let key = AttributeValue::S(event_id.to_string());
        let got = ddb.get_item().table_name(COMMENTS_TABLE).key("id", key);
        got.send().await.ok()?.item
    })
    .await;
    let count = eventually("the comment counted", SETTLE, async || {
        count_of(ddb, repository).await
    })
    .await;
    assert_eq!(count, 1, "one comment counted once");
    let pipelines: Api<EventPipeline> = Api::namespaced(client.clone(), app);
    eventually("github-ingest queueDepth 0", SETTLE, async || {
        let status = pipelines.get("github-ingest").await.ok()?.status?;
        (status.queue_depth? == 0).then_some(())
    })
    .await;
}

/// A comment without a repository is stored, but the aggregator cannot key it, for good
/// (`nonRetryable.undecodable`): it goes to the stream's DLQ and status says so.
async fn dead_lettered(client: &Client, app: &str, ingress: &PortForward) {
    let body = comment(7, None);
    let (status, reply) = deliver(ingress, body.clone(), &github_signature(&body)).await;
    assert_eq!(status, 202, "{reply}");
    let pipelines: Api<EventPipeline> = Api::namespaced(client.clone(), app);
    eventually("github-aggregate dlqDepth >= 1", SETTLE, async || {
        let status = pipelines.get("github-aggregate").await.ok()?.status?;
        status.dlq_depth.filter(|&d| d >= 1)
    })
    .await;
    let ingest = pipelines
        .get("github-ingest")
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(ingest.dlq_depth, Some(0), "github-ingest stored it");
}

/// The HPA reads `eventpipe_queue_depth` from the operator through the APIService.
async fn hpa_reads_queue_depth(client: &Client, app: &str) {
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), app);
    let hpa = hpas.get("github-ingest-worker").await.unwrap();
    let metrics = hpa.spec.metrics.unwrap_or_default();
    let external = metrics.iter().filter_map(|m| m.external.as_ref());
    assert!(
        external
            .map(|e| &e.metric.name)
            .any(|n| n == "eventpipe_queue_depth"),
        "the HPA has no eventpipe_queue_depth metric"
    );
    let current = eventually("the HPA's current queue depth", SETTLE, async || {
        let current = hpas.get("github-ingest-worker").await.ok()?.status?;
        let metric = current
            .current_metrics?
            .into_iter()
            .filter_map(|m| m.external)
            .find(|e| e.metric.name == "eventpipe_queue_depth")?;
        metric.current.average_value.or(metric.current.value)
    })
    .await;
    eprintln!(
        "HPA github-ingest-worker: eventpipe_queue_depth {}",
        current.0
    );
}

/// What a user sees with `kubectl get` and `kubectl describe`: readiness, the webhook
/// URL and the depths as columns; the conditions and the operator's events.
async fn kubectl_shows_the_pipelines(app: &str) {
    let table = run("kubectl", &["get", "eventpipelines", "-n", app]).await;
    eprintln!("{table}");
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    for column in ["READY", "WEBHOOK", "DEPTH", "DLQ"] {
        assert!(header.contains(&column), "no {column} column: {header:?}");
    }
    let ingest = lines
        .find(|l| l.starts_with("github-ingest "))
        .expect("github-ingest listed");
    assert!(ingest.contains("True"), "github-ingest not READY: {ingest}");
    assert!(ingest.contains("/hooks/github"), "no webhook URL: {ingest}");
    let args = ["describe", "eventpipeline", "github-ingest", "-n", app];
    let described = run("kubectl", &args).await;
    for want in ["Conditions:", "Ready", "Applied"] {
        assert!(
            described.contains(want),
            "describe shows no {want}:\n{described}"
        );
    }
}

/// A processor image that cannot be pulled shows up as the pipeline's reason, naming
/// the image, while the pipelines that already run go on.
async fn an_image_that_cannot_be_pulled_is_named(client: &Client, app: &str) {
    let image = "registry.invalid/eventpipe-e2e/no-such-processor:1";
    let pipeline = json!({"apiVersion": "eventpipe.dev/v1alpha1", "kind": "EventPipeline",
        "metadata": {"name": "unpullable"}, "spec": {
            "sources": [{"queueBindingRef": {"name": "github-events"}}],
            "processor": {"container": {"image": image}}}});
    eventpipe_e2e::apply(client, app, &pipeline).await;
    let pipelines: Api<EventPipeline> = Api::namespaced(client.clone(), app);
    let condition = eventually("unpullable: an image pull reason", SETTLE, async || {
        let c = ready_condition(&pipelines.get("unpullable").await.ok()?)?;
        (c.status == "False" && c.reason.contains("Image")).then_some(c)
    })
    .await;
    assert!(condition.message.contains(image), "{condition:?}");
    eprintln!("unpullable: {}: {}", condition.reason, condition.message);
    let ingest = ready_condition(&pipelines.get("github-ingest").await.unwrap()).unwrap();
    assert_eq!(ingest.status, "True", "github-ingest disturbed: {ingest:?}");
}

/// The operator, ingress and worker containers run, as a non-root user on a read-only
/// root filesystem.
async fn runs_as_non_root_read_only(client: &Client, namespaces: &[&str]) {
    let mut seen = vec![];
    for ns in namespaces {
        let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
        for pod in pods.list(&Default::default()).await.unwrap() {
            let spec = pod.spec.unwrap();
            let running = pod.status.and_then(|s| s.phase).as_deref() == Some("Running");
            let pod_user = spec.security_context.as_ref();
            for c in spec.containers {
                if !["operator", "ingress", "worker"].contains(&c.name.as_str()) || !running {
                    continue;
                }
                let own = c.security_context.unwrap_or_default();
                let non_root = own
                    .run_as_non_root
                    .or(pod_user.and_then(|p| p.run_as_non_root));
                let user = own.run_as_user.or(pod_user.and_then(|p| p.run_as_user));
                assert_eq!(non_root, Some(true), "{}: runAsNonRoot", c.name);
                assert!(user.is_some_and(|u| u != 0), "{}: runs as {user:?}", c.name);
                assert_eq!(
                    own.read_only_root_filesystem,
                    Some(true),
                    "{}: root fs",
                    c.name
                );
                seen.push(c.name);
            }
        }
    }
    seen.sort();
    seen.dedup();
    assert_eq!(
        seen,
        ["ingress", "operator", "worker"],
        "running containers checked"
    );
}
