//! Who may call the operator, on a real cluster (E2E_OPERATOR=helm): the HPA still
//! reads external metrics through the APIService (the API server's front proxy), a
//! direct request to the operator's external metrics port is refused, and `/metrics`
//! answers only a token whose ServiceAccount may `get` it (the chart's default
//! `operator.metrics.auth=token`), while the probes' paths stay open.
// The e2e suite is test code: a failed step fails the test, helpers included.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use eventpipe_e2e::eventually;
use eventpipe_e2e::helm::{self, APP_NAMESPACE, RELEASE, SETTLE};
use eventpipe_e2e::tools::{PortForward, run, tool};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::Client;
use kube::api::Api;
use serde_json::Value;

/// A ServiceAccount the release binds to its metrics reader, and one it does not.
const SCRAPER: &str = "scraper";
const STRANGER: &str = "stranger";
const DISCOVERY: &str = "/apis/external.metrics.k8s.io/v1beta1";

#[tokio::test]
async fn only_the_front_proxy_and_permitted_scrapers_are_answered() {
    let values = [
        format!("operator.metrics.readers[0].namespace={APP_NAMESPACE}"),
        format!("operator.metrics.readers[0].name={SCRAPER}"),
    ];
    let values: Vec<&str> = values.iter().map(String::as_str).collect();
    let Some((client, mut release)) = helm::start(&values).await else {
        return;
    };
    let app = release.app.clone();
    for doc in eventpipe_e2e::queue_pipeline("auth-orders") {
        eventpipe_e2e::apply(&client, &app, &doc).await;
    }
    external_metrics_answer_through_the_api_server(&client, &app).await;
    direct_callers_are_refused(&release.ns).await;
    metrics_want_a_permitted_token(&release).await;
    may_review_and_read_only_the_front_proxy_config(&release).await;
    release.uninstall(&client).await;
}

/// `kubectl get --raw` through the aggregator, and the HPA controller, both read the
/// queue depth: the front proxy's certificate is accepted.
async fn external_metrics_answer_through_the_api_server(client: &Client, app: &str) {
    let path = format!(
        "{DISCOVERY}/namespaces/{app}/eventpipe_queue_depth?labelSelector=eventpipe.dev%2Fpipeline%3Dorders"
    );
    let list = eventually(
        "the queue depth through the APIService",
        SETTLE,
        async || {
            let out = tokio::process::Command::new(tool("kubectl"))
                .args(["get", "--raw", &path])
                .output()
                .await
                .ok()?;
            let list: Value = serde_json::from_slice(&out.stdout).ok()?;
            (list["items"].as_array()?.len() == 1).then_some(list)
        },
    )
    .await;
    assert_eq!(list["items"][0]["metricName"], "eventpipe_queue_depth");
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), app);
    let current = eventually("the HPA's current queue depth", SETTLE, async || {
        let status = hpas.get("orders-worker").await.ok()?.status?;
        let metric = status
            .current_metrics?
            .into_iter()
            .filter_map(|m| m.external)
            .find(|e| e.metric.name == "eventpipe_queue_depth")?;
        metric.current.average_value.or(metric.current.value)
    })
    .await;
    eprintln!("HPA orders-worker: eventpipe_queue_depth {}", current.0);
}

/// The operator's port 6443, reached past the API server, answers nobody: without the
/// front proxy's client certificate the TLS handshake fails, whatever user a header
/// names.
async fn direct_callers_are_refused(ns: &str) {
    let forward = PortForward::start(ns, RELEASE, 443).await;
    let url = forward.url(DISCOVERY).replacen("http://", "https://", 1);
    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let answer = client
        .get(&url)
        .header("X-Remote-User", "system:admin")
        .header("X-Remote-Group", "system:masters")
        .send()
        .await;
    match answer {
        Err(e) => eprintln!("{url} without a client certificate: refused ({e})"),
        Ok(r) => assert!(
            [401, 403].contains(&r.status().as_u16()),
            "{url} answered a caller without a client certificate: {}",
            r.status()
        ),
    }
}

/// The answer to a GET of `url`; the operator's certificate is self-signed.
async fn status(url: &str, token: Option<&str>) -> u16 {
    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let mut request = client.get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap().status().as_u16()
}

/// /metrics: served over HTTPS only, 401 without a token or with a made-up one, 403
/// for a ServiceAccount not bound to the metrics reader, 200 for one that is;
/// /healthz and /readyz open.
async fn metrics_want_a_permitted_token(release: &helm::Release) {
    let app = &release.app;
    let ops = PortForward::start(&release.ns, RELEASE, 9090).await;
    let plain = reqwest::Client::new().get(ops.url("/metrics")).send().await;
    assert!(plain.is_err(), "plain HTTP answered: {plain:?}");
    let https = |path: &str| ops.url(path).replacen("http://", "https://", 1);
    let metrics = https("/metrics");
    assert_eq!(status(&metrics, None).await, 401);
    assert_eq!(status(&metrics, Some("made-up")).await, 401);
    for probe in ["/healthz", "/readyz"] {
        assert_eq!(status(&https(probe), None).await, 200, "{probe}");
    }
    let mut tokens = vec![];
    for account in [SCRAPER, STRANGER] {
        run("kubectl", &["create", "serviceaccount", account, "-n", app]).await;
        let token = run("kubectl", &["create", "token", account, "-n", app]).await;
        tokens.push(token.trim().to_string());
    }
    // A refusal is kept 10 s: a binding just seen by the authorizer counts soon after.
    eventually(
        "the scraper's token admitted",
        Duration::from_secs(60),
        async || (status(&metrics, Some(&tokens[0])).await == 200).then_some(()),
    )
    .await;
    assert_eq!(status(&metrics, Some(&tokens[1])).await, 403);
}

/// The operator may review tokens and access, and read the front proxy's ConfigMap in
/// kube-system by name, and no other ConfigMap there.
async fn may_review_and_read_only_the_front_proxy_config(release: &helm::Release) {
    for allowed in [
        ["create", "tokenreviews.authentication.k8s.io", "", ""],
        [
            "create",
            "subjectaccessreviews.authorization.k8s.io",
            "",
            "",
        ],
        [
            "get",
            "configmaps/extension-apiserver-authentication",
            "-n",
            "kube-system",
        ],
    ] {
        let args: Vec<&str> = allowed.into_iter().filter(|a| !a.is_empty()).collect();
        assert!(release.operator_can(&args).await, "may not {args:?}");
    }
    // Reading the front proxy's settings grants nothing more there: Secrets in
    // kube-system are still never listed.
    let other = ["list", "secrets", "-n", "kube-system"];
    assert!(!release.operator_can(&other).await, "may {other:?}");
}
