//! Credentials toward an HTTP processor: header values from mounted Secrets, a bearer
//! token, and AWS SigV4 signatures checked by an independent verifier, against moto.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;

use common::*;
use eventpipe_testkit::Moto;
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::{Digest, Sha256};

fn config(processor: &str) -> String {
    format!(
        r#"apiVersion: eventpipe.dev/v1alpha1
kind: QueueBinding
metadata: {{name: in}}
spec:
  sqs: {{queueName: auth-in, create: true, waitTime: 1s, visibilityTimeout: 5s}}
---
apiVersion: eventpipe.dev/v1alpha1
kind: EventPipeline
metadata: {{name: t}}
spec:
  sources: [{{queueBindingRef: {{name: in}}}}]
  processor: {{http: {processor}}}
"#
    )
}

/// A secrets directory laid out as mounted Secrets: `(secret, key, value)`.
fn secrets(files: &[(&str, &str, &str)]) -> std::path::PathBuf {
    let dir = temp_dir("auth");
    for (name, key, value) in files {
        std::fs::create_dir_all(dir.join(name)).unwrap();
        std::fs::write(dir.join(name).join(key), value).unwrap();
    }
    dir
}

/// Runs a worker on `processor`, sends one event and returns the request the sink got.
async fn deliver_one(processor: &str, dir: std::path::PathBuf) -> (Received, String) {
    let sink = Sink::ok().await;
    let moto = Moto::start();
    let cfg = config(&processor.replace("SINK", &sink.url));
    let urls = provision(&moto, &cfg).await;
    send(
        &moto.sqs(),
        &urls["in"],
        &cloudevent("e1", "t", json!({"a": 1})),
    )
    .await;
    let worker = WorkerProcess::start_in(dir, &moto, &cfg, &[]).await;
    eventually(20 * SECONDS, "the event delivered", async || {
        sink.count() > 0
    })
    .await;
    let got = sink.received.lock().unwrap()[0].clone();
    (got, worker.log())
}

#[tokio::test]
async fn header_values_and_the_bearer_token_come_from_mounted_secrets() {
    let dir = secrets(&[("api", "key", "k-123\n"), ("tok", "token", "t-456")]);
    let (got, log) = deliver_one(
        r#"{url: "SINK", headers: {X-Team: data}, headersFrom: [{name: X-Api-Key, secretRef: {name: api, key: key}}], bearerTokenSecretRef: {name: tok, key: token}}"#,
        dir,
    )
    .await;
    assert_eq!(got.headers["x-api-key"], "k-123");
    assert_eq!(got.headers["authorization"], "Bearer t-456");
    assert_eq!(got.headers["x-team"], "data");
    assert_eq!(got.id(), "e1");
    assert!(!log.contains("k-123") && !log.contains("t-456"), "{log}");
}

#[tokio::test]
async fn a_missing_secret_key_stops_the_worker_with_a_clear_error() {
    let moto = Moto::start();
    let dir = secrets(&[("api", "other", "x")]);
    let cfg = config(
        r#"{url: "http://127.0.0.1:9/", headersFrom: [{name: X-Api-Key, secretRef: {name: api, key: key}}]}"#,
    );
    provision(&moto, &cfg).await;
    let file = dir.join("p.yaml");
    std::fs::write(&file, &cfg).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_eventpipe-worker"))
        .arg("--config")
        .arg(&file)
        .arg("--secrets-dir")
        .arg(&dir)
        .args([
            "--metrics-listen",
            &format!("127.0.0.1:{}", eventpipe_testkit::free_port()),
        ])
        .envs(moto.env())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(r#"x-api-key: Secret "api" key "key""#) && stderr.contains("api/key"),
        "{stderr}"
    );
}

#[tokio::test]
async fn sigv4_signs_each_delivery_with_the_workers_credentials() {
    let dir = secrets(&[("api", "key", "k-123")]);
    let (got, _) = deliver_one(
        r#"{url: "SINK", sigv4: {service: execute-api, region: eu-west-1}, headersFrom: [{name: X-Api-Key, secretRef: {name: api, key: key}}]}"#,
        dir,
    )
    .await;
    let auth = &got.headers["authorization"];
    let signed = verify_sigv4(&got, "/events", "testing", auth);
    for h in [
        "ce-id",
        "content-type",
        "host",
        "x-amz-date",
        "x-api-key",
        "traceparent",
    ] {
        assert!(signed.contains(&h.to_string()), "{h} not signed: {auth}");
    }
    assert!(
        auth.contains("/eu-west-1/execute-api/aws4_request"),
        "{auth}"
    );
}

type HmacSha256 = Hmac<Sha256>;

fn hmac(key: &[u8], data: &str) -> Vec<u8> {
    let mut m = HmacSha256::new_from_slice(key).unwrap();
    m.update(data.as_bytes());
    m.finalize().into_bytes().to_vec()
}

/// Recomputes the signature of a received POST from the SigV4 specification (not the
/// worker's library) and asserts it is the one sent; returns the signed header names.
fn verify_sigv4(r: &Received, path: &str, secret: &str, auth: &str) -> Vec<String> {
    let fields: HashMap<&str, &str> = auth
        .trim_start_matches("AWS4-HMAC-SHA256 ")
        .split(", ")
        .filter_map(|f| f.split_once('='))
        .collect();
    let scope = fields["Credential"].split_once('/').unwrap().1;
    let names: Vec<String> = fields["SignedHeaders"]
        .split(';')
        .map(String::from)
        .collect();
    let canonical_headers: String = names
        .iter()
        .map(|n| format!("{n}:{}\n", r.headers[n].trim()))
        .collect();
    let canonical = format!(
        "POST\n{path}\n\n{canonical_headers}\n{}\n{}",
        names.join(";"),
        hex::encode(Sha256::digest(r.body.as_bytes()))
    );
    let date = &r.headers["x-amz-date"];
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{date}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
    let mut key = format!("AWS4{secret}").into_bytes();
    for part in scope.split('/') {
        key = hmac(&key, part);
    }
    assert_eq!(
        fields["Signature"],
        hex::encode(hmac(&key, &to_sign)),
        "{canonical}"
    );
    names
}
