//! The push processor under `eventpipe dev`, against moto: a note POSTed to the
//! webhook goes through SQS to the worker, whose `push` processor delivers it to the
//! ingress in process, which streams it to the client subscribed with the
//! correlation id and subscribe token of its `202`.

// Set-up steps unwrap: a failure fails the test.
#![allow(clippy::unwrap_used)]

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

use eventpipe_testkit::{Moto, free_port};
use serde_json::Value;

const MANIFEST: &str = r#"
apiVersion: eventpipe.dev/v1alpha1
kind: QueueBinding
metadata: {name: notes-incoming}
spec:
  sqs: {queueName: notes-incoming, create: true}
---
apiVersion: eventpipe.dev/v1alpha1
kind: EventPipeline
metadata: {name: notes}
spec:
  ingress:
    webhooks:
      - name: create-note
        path: /notes
        signature: {scheme: bearer, secretRef: {name: notes-api, key: token}}
    subscriptions:
      - {name: events, path: /notes/events, webhook: create-note}
    publishTo: {queueBindingRef: {name: notes-incoming}}
  sources: [{queueBindingRef: {name: notes-incoming}}]
  processor:
    push: {pipelineRef: {name: notes}}
"#;

/// `eventpipe dev`, killed when dropped.
struct Dev(Child);

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn a_pushed_event_reaches_the_client_subscribed_with_its_requests_token() {
    let moto = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("notes.yaml");
    std::fs::write(&manifest, MANIFEST).unwrap();
    std::fs::create_dir_all(dir.path().join("secrets/notes-api")).unwrap();
    std::fs::write(dir.path().join("secrets/notes-api/token"), "t0ken").unwrap();
    let (port, ops) = (free_port(), free_port());
    let _dev = Dev(Command::new(env!("CARGO_BIN_EXE_eventpipe"))
        .arg("dev")
        .arg("-f")
        .arg(&manifest)
        .arg("--secrets-dir")
        .arg(dir.path().join("secrets"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--ops-listen", &format!("127.0.0.1:{ops}")])
        .args(["--console-listen", &format!("127.0.0.1:{}", free_port())])
        .envs(moto.env())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap());
    let client = reqwest::Client::new();
    wait_ready(&client, &format!("http://127.0.0.1:{ops}/readyz")).await;

    let accepted = client
        .post(format!("http://127.0.0.1:{port}/notes"))
        .header("Authorization", "Bearer t0ken")
        .header("Content-Type", "application/json")
        .body(r#"{"text":"buy milk"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), 202);
    let accepted: Value = serde_json::from_str(&accepted.text().await.unwrap()).unwrap();
    let field = |k: &str| accepted[k].as_str().unwrap().to_string();
    // Subscribed after the 202: what was pushed before is replayed.
    let url = format!(
        "http://127.0.0.1:{port}/notes/events?correlationId={}&access_token={}",
        field("correlationId"),
        field("subscribeToken")
    );
    let mut stream = client.get(url).send().await.unwrap();
    assert_eq!(stream.status(), 200);
    let read = async {
        let mut text = String::new();
        while !text.contains("\n\n") || !text.contains("data: ") {
            let chunk = stream.chunk().await.unwrap().expect("the stream goes on");
            text.push_str(std::str::from_utf8(&chunk).unwrap());
        }
        text
    };
    let text = tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .expect("a push within 30 s");
    let id = text.lines().find_map(|l| l.strip_prefix("id: ")).unwrap();
    let data = text.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
    let event: Value = serde_json::from_str(data).unwrap();
    assert_eq!(id, field("eventId"));
    assert_eq!(
        event["correlationid"].as_str().unwrap(),
        field("correlationId")
    );
    assert_eq!(event["data"]["text"], "buy milk");
}

async fn wait_ready(client: &reqwest::Client, url: &str) {
    for _ in 0..600 {
        if client
            .get(url)
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("eventpipe dev not ready within 60 s");
}
