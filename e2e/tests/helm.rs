//! The chart on a real cluster (E2E_OPERATOR=helm, the images loaded into it, e.g. with
//! `kind load docker-image`): `helm install` with moto in the cluster as the AWS
//! endpoint and `helm test`; the GitHub analytics example applied; signed webhooks sent
//! through the ingress Service; processing, a dead letter, status and the HPA's metric
//! observed; then `helm uninstall`, after which only the CRDs stay.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use eventpipe_crds::EventPipeline;
use eventpipe_e2e::{eventually, ready_condition};
use hmac::{Hmac, Mac};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService;
use kube::api::Api;
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::io::{AsyncBufReadExt, BufReader};

/// The chart names its objects after the release (its fullname, as the release name
/// contains the chart's).
const RELEASE: &str = "eventpipe";
const MOTO: &str = "eventpipe-moto";
const APISERVICE: &str = "v1beta1.external.metrics.k8s.io";
const WEBHOOK_SECRET: &str = "e2e-webhook-secret";
/// Tables the example writes: every comment, and counts per repository and day.
const COMMENTS_TABLE: &str = "github-comments";
const COUNTS_TABLE: &str = "github-daily-counts";
const SETTLE: Duration = Duration::from_secs(180);

#[tokio::test]
async fn helm_install_runs_the_example_and_helm_uninstall_leaves_only_the_crds() {
    if !eventpipe_e2e::helm_mode() {
        eprintln!(
            "SKIP: E2E_OPERATOR is not helm; set E2E_OPERATOR=helm (images loaded into the cluster) to test the chart"
        );
        return;
    }
    let Some(client) = eventpipe_e2e::cluster().await else {
        return;
    };
    let mut installed = Installed {
        ns: eventpipe_e2e::test_namespace("eventpipe-helm"),
        app: eventpipe_e2e::test_namespace("eventpipe-app"),
        uninstalled: false,
    };
    install(&installed.ns).await;
    check_install(&client, &installed.ns).await;
    let app = installed.app.clone();
    start_example(&client, &app).await;

    let ingress = PortForward::start(&app, "github-ingest-ingress", 80).await;
    let moto = PortForward::start(&installed.ns, MOTO, 5000).await;
    let repository = format!("e2e/{app}");
    let event_id = send_comment(&ingress, &repository).await;
    processed(&client, &app, &dynamodb(&moto), &event_id, &repository).await;
    dead_lettered(&client, &app, &ingress).await;
    hpa_reads_queue_depth(&client, &app).await;
    drop((ingress, moto));

    let rendered = release_objects(&installed.ns).await;
    installed.uninstall().await;
    check_uninstalled(&client, &installed.ns, &rendered).await;
    // Both namespaces go when `installed` is dropped, as after a failure.
}

/// `make e2e` puts `.tools` on PATH; a bare `cargo test` finds them here as well.
fn tool(name: &str) -> String {
    let local = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../.tools")
        .join(name);
    if local.exists() {
        local.display().to_string()
    } else {
        name.to_string()
    }
}

/// Runs helm or kubectl to the end; fails the test, with its output, when it fails.
async fn run(name: &str, args: &[&str]) -> String {
    eprintln!("$ {name} {}", args.join(" "));
    let out = tokio::process::Command::new(tool(name))
        .args(args)
        .output()
        .await
        .unwrap_or_else(|e| panic!("{name}: {e} (`make tools` fetches helm and kubectl)"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{name} {} failed ({}):\n{stdout}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// For `Drop`, where nothing can be awaited or fail: runs and shows the output.
fn run_blocking(name: &str, args: &[&str]) {
    match std::process::Command::new(tool(name)).args(args).output() {
        Ok(out) => eprintln!(
            "$ {name} {}\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => eprintln!("{name}: {e}"),
    }
}

/// The release and the test namespaces. Dropped, it removes what is left, so that a
/// failed run leaves no cluster-scoped objects (ClusterRoles, the APIService) for the
/// next install to collide with; after a failure it first shows what the cluster holds.
struct Installed {
    ns: String,
    app: String,
    uninstalled: bool,
}

impl Installed {
    async fn uninstall(&mut self) {
        let ns = &self.ns;
        run(
            "helm",
            &["uninstall", RELEASE, "-n", ns, "--wait", "--timeout", "5m"],
        )
        .await;
        self.uninstalled = true;
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let kinds = "eventpipelines,queuebindings,deployments,pods,hpa";
            let operator = format!("deployment/{RELEASE}");
            run_blocking("kubectl", &["get", kinds, "-n", &self.app, "-o", "wide"]);
            run_blocking("kubectl", &["describe", "eventpipelines", "-n", &self.app]);
            let workloads = "app.kubernetes.io/managed-by=eventpipe-operator";
            run_blocking(
                "kubectl",
                &[
                    "logs",
                    "-n",
                    &self.app,
                    "-l",
                    workloads,
                    "--prefix",
                    "--tail=20",
                ],
            );
            run_blocking("kubectl", &["get", "all", "-n", &self.ns]);
            run_blocking("kubectl", &["logs", "-n", &self.ns, &operator, "--tail=50"]);
        }
        if !self.uninstalled {
            run_blocking("helm", &["uninstall", RELEASE, "-n", &self.ns, "--wait"]);
        }
        let namespaces = [&self.app, &self.ns].map(|n| format!("namespace/{n}"));
        run_blocking(
            "kubectl",
            &[
                "delete",
                &namespaces[0],
                &namespaces[1],
                "--ignore-not-found",
                "--wait=false",
            ],
        );
    }
}

async fn install(ns: &str) {
    let mut values = vec!["localAws.enabled=true".to_string()];
    // Unset means the chart's appVersion, the tag `make images` builds by default.
    if let Ok(tag) = std::env::var("E2E_IMAGE_TAG")
        && !tag.is_empty()
    {
        for image in ["operator", "ingress", "worker"] {
            values.push(format!("{image}.image.tag={tag}"));
        }
    }
    let chart = concat!(env!("CARGO_MANIFEST_DIR"), "/../charts/eventpipe");
    let mut args = vec![
        "install",
        RELEASE,
        chart,
        "-n",
        ns,
        "--create-namespace",
        "--wait",
        "--timeout",
        "5m",
    ];
    for v in &values {
        args.extend(["--set", v.as_str()]);
    }
    run("helm", &args).await;
}

fn available(d: &Deployment) -> i32 {
    d.status
        .as_ref()
        .and_then(|s| s.available_replicas)
        .unwrap_or(0)
}

/// The operator runs, the API serves the three kinds and the external metrics, and
/// the chart's own `helm test` passes.
async fn check_install(client: &Client, ns: &str) {
    let operator = Api::<Deployment>::namespaced(client.clone(), ns)
        .get(RELEASE)
        .await
        .unwrap();
    assert!(available(&operator) >= 1, "the operator is not available");
    let served = client
        .list_api_group_resources(eventpipe_crds::API_VERSION)
        .await
        .unwrap();
    let names: Vec<&str> = served.resources.iter().map(|r| r.name.as_str()).collect();
    for plural in ["eventpipelines", "queuebindings", "deadletterpolicies"] {
        assert!(names.contains(&plural), "{plural} not served: {names:?}");
    }
    // `helm test` asks the aggregated API once, without retrying: wait until the API
    // server has found the operator behind the APIService.
    let apiservices: Api<APIService> = Api::all(client.clone());
    eventually("the APIService Available", SETTLE, async || {
        let conditions = apiservices.get(APISERVICE).await.ok()?.status?.conditions?;
        conditions
            .iter()
            .any(|c| c.type_ == "Available" && c.status == "True")
            .then_some(())
    })
    .await;
    run(
        "helm",
        &["test", RELEASE, "-n", ns, "--logs", "--timeout", "5m"],
    )
    .await;
}

/// The example in its own namespace, with its webhook Secret, until both pipelines
/// are Ready.
async fn start_example(client: &Client, app: &str) {
    eventpipe_e2e::create_namespace(client, app).await;
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

/// `kubectl port-forward` to a Service, on a local port kubectl picks; stopped on drop.
struct PortForward {
    port: u16,
    _kubectl: tokio::process::Child,
}

impl PortForward {
    async fn start(ns: &str, service: &str, port: u16) -> Self {
        let target = format!("svc/{service}");
        let ports = format!(":{port}");
        let mut kubectl = tokio::process::Command::new(tool("kubectl"))
            .args([
                "port-forward",
                "-n",
                ns,
                "--address=127.0.0.1",
                &target,
                &ports,
            ])
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(kubectl.stdout.take().unwrap()).lines();
        // "Forwarding from 127.0.0.1:43127 -> 8080"
        let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await;
        let local = first
            .ok()
            .and_then(|line| line.ok().flatten())
            .and_then(|line| {
                let rest = line.strip_prefix("Forwarding from 127.0.0.1:")?;
                rest.split(' ').next()?.parse().ok()
            })
            .unwrap_or_else(|| panic!("kubectl port-forward {target} named no local port"));
        // kubectl writes a line per connection: keep reading, so a full pipe never stalls it.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self {
            port: local,
            _kubectl: kubectl,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

/// A DynamoDB client for the chart's moto, through its port-forward.
fn dynamodb(moto: &PortForward) -> aws_sdk_dynamodb::Client {
    use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(moto.url(""))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "e2e"))
        .build();
    aws_sdk_dynamodb::Client::from_conf(config)
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

/// `helm uninstall` removed every object the release rendered and kept the CRDs.
async fn check_uninstalled(client: &Client, ns: &str, rendered: &[String]) {
    let mut args = vec!["get", "--ignore-not-found", "-o", "name", "-n", ns];
    args.extend(rendered.iter().map(String::as_str));
    let left = run("kubectl", &args).await;
    assert!(left.trim().is_empty(), "left by helm uninstall:\n{left}");
    let releases = run("helm", &["list", "-n", ns, "-q"]).await;
    assert!(releases.trim().is_empty(), "releases left: {releases}");
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in eventpipe_crds::schema::crds() {
        let name = crd.name_any();
        assert!(
            crds.get_opt(&name).await.unwrap().is_some(),
            "CRD {name} removed"
        );
    }
}

/// Every object of the release's manifest (hooks and CRDs aside), as `kind/name` for
/// kubectl.
async fn release_objects(ns: &str) -> Vec<String> {
    let manifest = run("helm", &["get", "manifest", RELEASE, "-n", ns]).await;
    let objects: Vec<String> = serde_yaml::Deserializer::from_str(&manifest)
        .filter_map(|d| {
            let doc: Value = serde::Deserialize::deserialize(d).ok()?;
            let (kind, name) = (doc["kind"].as_str()?, doc["metadata"]["name"].as_str()?);
            Some(format!("{kind}/{name}"))
        })
        .collect();
    assert!(
        objects
            .iter()
            .any(|o| o == &format!("Deployment/{RELEASE}")),
        "no operator in the release's manifest: {objects:?}"
    );
    objects
}
