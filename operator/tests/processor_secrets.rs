//! The Secrets an HTTP processor reads (`headersFrom`, the bearer token) and the
//! ingress's TLS certificate are checked like the webhooks': a missing Secret or key is
//! named on the pipeline, and nothing is deployed until they exist.
// Set-up steps unwrap: a failure fails the test.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::{CRD, FakeApi};
use eventpipe_crds::EventPipeline;
use eventpipe_operator::{Context, Settings, reconcile_pipeline as reconcile};
use serde_json::{Value, json};

const SECRETS: &str = "/api/v1/namespaces/default/secrets";

fn pipeline() -> Value {
    json!({
        "apiVersion": "eventpipe.dev/v1alpha1", "kind": "EventPipeline",
        "metadata": {"name": "calls", "namespace": "default", "uid": "1111-2222", "generation": 1},
        "spec": {
            "sources": [{"queueBindingRef": {"name": "orders"}}],
            "processor": {"http": {
                "url": "https://api.example.com/events",
                "headersFrom": [{"name": "X-Api-Key", "secretRef": {"name": "api", "key": "key"}}],
                "bearerTokenSecretRef": {"name": "tok", "key": "token"},
            }},
        }
    })
}

fn secret(name: &str, key: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "data": {key: "eA=="}})
}

fn cluster(p: &Value) -> FakeApi {
    let api = FakeApi::new();
    api.put(&format!("{CRD}/eventpipelines/calls"), p.clone());
    api.put(
        &format!("{CRD}/queuebindings/orders"),
        json!({
            "apiVersion": "eventpipe.dev/v1alpha1", "kind": "QueueBinding",
            "metadata": {"name": "orders", "namespace": "default"},
            "spec": {"sqs": {"queueName": "orders"}},
            "status": {"depth": 0},
        }),
    );
    api
}

/// The pipeline's Ready condition after a reconcile: (status, reason, message).
async fn ready(api: &FakeApi, p: &Value) -> (String, String, String) {
    let settings = Settings {
        ingress_image: "ingress:test".into(),
        worker_image: "worker:test".into(),
        ..Default::default()
    };
    let ctx = Context::new(
        api.client(),
        settings,
        aws_config::SdkConfig::builder().build(),
        Default::default(),
    );
    let obj: EventPipeline = serde_json::from_value(p.clone()).unwrap();
    reconcile(Arc::new(obj), ctx).await.unwrap();
    let got: EventPipeline =
        serde_json::from_value(api.get(&format!("{CRD}/eventpipelines/calls")).unwrap()).unwrap();
    let status = got.status.unwrap();
    let c = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    (c.status.clone(), c.reason.clone(), c.message.clone())
}

#[tokio::test]
async fn a_missing_header_secret_or_key_is_named_and_nothing_is_deployed() {
    let p = pipeline();
    let api = cluster(&p);
    api.put(&format!("{SECRETS}/tok"), secret("tok", "token"));
    let (status, reason, message) = ready(&api, &p).await;
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "SecretNotFound")
    );
    assert_eq!(message, "Secret \"api\" not found in namespace default");
    assert!(!api.log().iter().any(|c| c.contains("deployments")));

    api.put(&format!("{SECRETS}/api"), secret("api", "other"));
    let (_, reason, message) = ready(&api, &p).await;
    assert_eq!(reason, "SecretKeyNotFound");
    assert_eq!(message, "Secret \"api\" has no key \"key\"");
}

#[tokio::test]
async fn a_missing_bearer_token_secret_is_named() {
    let p = pipeline();
    let api = cluster(&p);
    api.put(&format!("{SECRETS}/api"), secret("api", "key"));
    let (_, reason, message) = ready(&api, &p).await;
    assert_eq!(reason, "SecretNotFound");
    assert_eq!(message, "Secret \"tok\" not found in namespace default");
}

#[tokio::test]
async fn with_its_secrets_the_processor_is_deployed_with_them_mounted() {
    let p = pipeline();
    let api = cluster(&p);
    api.put(&format!("{SECRETS}/api"), secret("api", "key"));
    api.put(&format!("{SECRETS}/tok"), secret("tok", "token"));
    let (status, reason, _) = ready(&api, &p).await;
    assert_eq!(status, "True", "{reason}");
    let worker = api
        .get("/apis/apps/v1/namespaces/default/deployments/calls-worker")
        .unwrap();
    let volumes = worker["spec"]["template"]["spec"]["volumes"].to_string();
    assert!(volumes.contains(r#""secretName":"api""#), "{volumes}");
    assert!(volumes.contains(r#""secretName":"tok""#), "{volumes}");
}

#[tokio::test]
async fn an_ingress_tls_secret_needs_both_keys() {
    let mut p = pipeline();
    p["spec"]["processor"] = json!({"http": {"url": "https://api.example.com/events"}});
    p["spec"]["ingress"] = json!({
        "webhooks": [{"name": "gh", "path": "/hooks/gh",
                      "signature": {"scheme": "github", "secretRef": {"name": "gh", "key": "secret"}}}],
        "publishTo": {"queueBindingRef": {"name": "orders"}},
        "tls": {"secretRef": {"name": "hooks-tls"}},
    });
    let api = cluster(&p);
    api.put(&format!("{SECRETS}/gh"), secret("gh", "secret"));
    api.put(
        &format!("{SECRETS}/hooks-tls"),
        secret("hooks-tls", "tls.crt"),
    );
    let (_, reason, message) = ready(&api, &p).await;
    assert_eq!(reason, "SecretKeyNotFound");
    assert_eq!(message, "Secret \"hooks-tls\" has no key \"tls.key\"");
    assert!(!api.log().iter().any(|c| c.contains("deployments")));
}
