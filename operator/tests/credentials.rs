//! A binding's credentials Secret is fetched by name, once per time to live.
// Set-up steps unwrap: a failure fails the test (clippy's allow-unwrap-in-tests
// covers #[test] functions only, not the helpers of an integration test).
#![allow(clippy::unwrap_used)]

mod common;

use common::FakeApi;
use eventpipe_operator::{Error, SecretCredentials};
use std::time::Duration;

use serde_json::json;

const PATH: &str = "/api/v1/namespaces/shop/secrets/aws";

fn secret(version: &str, key_id: &str) -> serde_json::Value {
    let b64 = |s: &str| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(s)
    };
    json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "aws", "namespace": "shop", "resourceVersion": version},
        "data": {"AWS_ACCESS_KEY_ID": b64(key_id), "AWS_SECRET_ACCESS_KEY": b64("s3cr3t")},
    })
}

fn gets(api: &FakeApi) -> usize {
    api.calls().iter().filter(|c| c.path == PATH).count()
}

async fn key_id(creds: &SecretCredentials, api: &FakeApi) -> String {
    let c = creds.get(&api.client(), "shop", "aws").await.unwrap();
    c.access_key_id().to_string()
}

/// The reason and message of what stops the credentials from being read.
async fn problem(creds: &SecretCredentials, api: &FakeApi) -> (&'static str, String) {
    match creds.get(&api.client(), "shop", "aws").await {
        Err(Error::Blocked(p)) => (p.reason, p.message),
        other => panic!("not blocked: {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_secret_is_read_again_only_once_its_credentials_are_old() {
    let api = FakeApi::new();
    api.put(PATH, secret("1", "AKIA-ONE"));
    let creds = SecretCredentials::new(Duration::from_secs(60));

    for _ in 0..5 {
        assert_eq!(key_id(&creds, &api).await, "AKIA-ONE");
    }
    assert_eq!(gets(&api), 1, "five refreshes, one read");

    // The Secret is rotated: it is read again once the credentials are a minute old.
    api.put(PATH, secret("2", "AKIA-TWO"));
    tokio::time::advance(Duration::from_secs(30)).await;
    assert_eq!(key_id(&creds, &api).await, "AKIA-ONE");
    tokio::time::advance(Duration::from_secs(31)).await;
    assert_eq!(key_id(&creds, &api).await, "AKIA-TWO");
    assert_eq!(key_id(&creds, &api).await, "AKIA-TWO");
    assert_eq!(gets(&api), 2);
}

#[tokio::test]
async fn a_missing_secret_or_key_is_a_problem_a_person_can_act_on() {
    let api = FakeApi::new();
    let creds = SecretCredentials::new(Duration::from_secs(60));
    let (reason, message) = problem(&creds, &api).await;
    assert_eq!(reason, "SecretNotFound");
    assert!(
        message.contains("\"aws\" not found in namespace shop"),
        "{message}"
    );

    let mut partial = secret("1", "AKIA-ONE");
    partial["data"]
        .as_object_mut()
        .unwrap()
        .remove("AWS_SECRET_ACCESS_KEY");
    api.put(PATH, partial);
    assert_eq!(problem(&creds, &api).await.0, "SecretKeyNotFound");
}
