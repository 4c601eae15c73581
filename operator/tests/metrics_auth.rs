//! `--metrics-auth=token`: `/metrics` answers a bearer token the API server vouches
//! for (TokenReview) whose holder may `get` it (SubjectAccessReview), refuses every
//! other caller, and keeps verdicts a while; the probes stay open.
// Set-up steps unwrap: a failure fails the test (clippy's allow-unwrap-in-tests
// covers #[test] functions only, not the helpers of an integration test).
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use eventpipe_operator::Metrics;
use eventpipe_operator::metrics_auth::{self, Reviewer};
use eventpipe_operator::tls::{self, ServerCert, tls_config};
use http::StatusCode;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const TOKEN_REVIEWS: &str = "/apis/authentication.k8s.io/v1/tokenreviews";
const ACCESS_REVIEWS: &str = "/apis/authorization.k8s.io/v1/subjectaccessreviews";
const PROMETHEUS: &str = "system:serviceaccount:monitoring:prometheus";

/// An API server that knows two tokens, and lets Prometheus `get` /metrics only.
fn api() -> common::FakeApi {
    let api = common::FakeApi::new();
    api.answer_posts(TOKEN_REVIEWS, |review| {
        let user = match review["spec"]["token"].as_str().unwrap() {
            "prometheus-token" => PROMETHEUS,
            "stranger-token" => "system:serviceaccount:shop:stranger",
            "unlucky-token" => return (StatusCode::INTERNAL_SERVER_ERROR, json!({})),
            _ => {
                return (
                    StatusCode::CREATED,
                    reviewed(review, json!({"authenticated": false})),
                );
            }
        };
        let user = json!({"username": user, "groups": ["system:serviceaccounts"]});
        let status = json!({"authenticated": true, "user": user});
        (StatusCode::CREATED, reviewed(review, status))
    });
    api.answer_posts(ACCESS_REVIEWS, |review| {
        let spec = &review["spec"];
        let asked = &spec["nonResourceAttributes"];
        let allowed = spec["user"] == PROMETHEUS
            && spec["groups"] == json!(["system:serviceaccounts"])
            && asked == &json!({"path": "/metrics", "verb": "get"});
        (
            StatusCode::CREATED,
            reviewed(review, json!({"allowed": allowed})),
        )
    });
    api
}

fn reviewed(review: &Value, status: Value) -> Value {
    let mut review = review.clone();
    review["status"] = status;
    review
}

/// The operator's ops endpoints, guarded, on loopback.
async fn serve(api: &common::FakeApi) -> String {
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = Metrics::register(&mut registry);
    let ready = eventpipe_core::ops::Ready::default();
    ready.set(true);
    let ops = eventpipe_core::ops::router(Arc::new(registry), ready);
    let ops = metrics_auth::protect(ops, Reviewer::new(api.client(), &metrics));
    // As the operator serves it with token auth: HTTPS, its certificate self-signed.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cert = ServerCert::load(None, None).unwrap();
    let tls = Arc::new(tls_config(&cert, None).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    tokio::spawn(tls::serve(
        listener,
        Some(tls),
        ops,
        CancellationToken::new(),
    ));
    url
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap()
}

async fn get(url: &str, authorization: Option<&str>) -> (u16, String) {
    let mut request = client().get(url);
    if let Some(value) = authorization {
        request = request.header("Authorization", value);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

fn reviews(api: &common::FakeApi) -> usize {
    api.log().iter().filter(|c| c.starts_with("POST ")).count()
}

#[tokio::test]
async fn a_permitted_token_reads_metrics_and_every_other_caller_is_refused() {
    let api = api();
    let base = serve(&api).await;
    let metrics = format!("{base}/metrics");
    for refused in [
        None,
        Some("Basic cHJvbTpwYXNz"),
        Some("Bearer made-up-token"),
    ] {
        assert_eq!(get(&metrics, refused).await.0, 401, "{refused:?}");
    }
    let response = client().get(&metrics).send().await.unwrap();
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    assert_eq!(get(&metrics, Some("Bearer stranger-token")).await.0, 403);
    let (code, text) = get(&metrics, Some("Bearer prometheus-token")).await;
    assert_eq!(code, 200);
    for line in [
        r#"eventpipe_operator_metrics_auth_checks_total{outcome="allowed"} 1"#,
        r#"eventpipe_operator_metrics_auth_checks_total{outcome="unauthenticated"} 4"#,
        r#"eventpipe_operator_metrics_auth_checks_total{outcome="forbidden"} 1"#,
    ] {
        assert!(text.contains(line), "{line} not in\n{text}");
    }
    let (code, _) = get(&format!("{base}/other"), Some("Bearer prometheus-token")).await;
    assert_eq!(code, 403, "only /metrics is granted");
}

#[tokio::test]
async fn the_probes_stay_open() {
    let api = api();
    let base = serve(&api).await;
    for probe in ["/healthz", "/readyz"] {
        assert_eq!(get(&format!("{base}{probe}"), None).await.0, 200, "{probe}");
    }
    assert!(api.log().is_empty(), "{:?}", api.log());
}

#[tokio::test]
async fn verdicts_are_kept_a_while() {
    let api = api();
    let base = serve(&api).await;
    let metrics = format!("{base}/metrics");
    for _ in 0..3 {
        assert_eq!(get(&metrics, Some("Bearer prometheus-token")).await.0, 200);
        assert_eq!(get(&metrics, Some("Bearer stranger-token")).await.0, 403);
        assert_eq!(get(&metrics, Some("Bearer made-up-token")).await.0, 401);
    }
    // A TokenReview and a SubjectAccessReview for each of the two users, one
    // TokenReview for the made-up token: no more however often they scrape.
    assert_eq!(reviews(&api), 5, "{:?}", api.log());
}

#[tokio::test]
async fn an_api_server_that_cannot_answer_refuses_and_is_asked_again() {
    let api = api();
    let base = serve(&api).await;
    let metrics = format!("{base}/metrics");
    for _ in 0..2 {
        assert_eq!(get(&metrics, Some("Bearer unlucky-token")).await.0, 503);
    }
    assert_eq!(reviews(&api), 2, "an error is not kept");
    let (_, text) = get(&metrics, Some("Bearer prometheus-token")).await;
    let line = r#"eventpipe_operator_metrics_auth_checks_total{outcome="unavailable"} 2"#;
    assert!(text.contains(line), "{line} not in\n{text}");
}

#[tokio::test]
async fn tokens_only_travel_over_tls() {
    let api = api();
    let base = serve(&api).await;
    let plain = base.replacen("https://", "http://", 1);
    let sent = reqwest::Client::new()
        .get(format!("{plain}/metrics"))
        .header("Authorization", "Bearer prometheus-token")
        .send()
        .await;
    assert!(sent.is_err(), "plain HTTP answered: {sent:?}");
    assert_eq!(reviews(&api), 0, "the token was never looked at");
}
