//! The push processor under `eventpipe dev`, against moto: a note POSTed to the
//! webhook goes through SQS to the worker, whose `push` processor delivers it to the
//! ingress in process, which streams it to the client subscribed with the
//! correlation id and subscribe token of its `202`. Then examples/notes.yaml as
//! written: saved once however often it is sent, or failed, and the outcome pushed.

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

struct Local {
    _dev: Dev,
    _dir: tempfile::TempDir,
    port: u16,
    client: reqwest::Client,
}

/// `eventpipe dev -f manifest` with the notes-api token `t0ken`, once ready.
async fn start(moto: &Moto, manifest: &std::path::Path) -> Local {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("secrets/notes-api")).unwrap();
    std::fs::write(dir.path().join("secrets/notes-api/token"), "t0ken").unwrap();
    let (port, ops) = (free_port(), free_port());
    let dev = Dev(Command::new(env!("CARGO_BIN_EXE_eventpipe"))
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .arg("dev")
        .arg("-f")
        .arg(manifest)
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
    Local {
        _dev: dev,
        _dir: dir,
        port,
        client,
    }
}

impl Local {
    /// POSTs a note with `headers`: the 202's body.
    async fn post(&self, body: &str, headers: &[(&str, &str)]) -> Value {
        let mut request = (self
            .client
            .post(format!("http://127.0.0.1:{}/notes", self.port)))
        .header("Authorization", "Bearer t0ken")
        .header("Content-Type", "application/json")
        .body(body.to_string());
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let answer = request.send().await.unwrap();
        assert_eq!(answer.status(), 202);
        serde_json::from_str(&answer.text().await.unwrap()).unwrap()
    }

    /// The first event pushed to the subscriber of `accepted`'s correlation id at
    /// `path`, with its token: its SSE id and the CloudEvent.
    async fn first_push(&self, path: &str, accepted: &Value) -> (String, Value) {
        let url = format!(
            "http://127.0.0.1:{}{path}?correlationId={}&access_token={}",
            self.port,
            accepted["correlationId"].as_str().unwrap(),
            accepted["subscribeToken"].as_str().unwrap()
        );
        let mut stream = self.client.get(url).send().await.unwrap();
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
        (id.to_string(), serde_json::from_str(data).unwrap())
    }
}

#[tokio::test]
async fn a_pushed_event_reaches_the_client_subscribed_with_its_requests_token() {
    let moto = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("notes.yaml");
    std::fs::write(&manifest, MANIFEST).unwrap();
    let local = start(&moto, &manifest).await;
    let accepted = local.post(r#"{"text":"buy milk"}"#, &[]).await;
    // Subscribed after the 202: what was pushed before is replayed.
    let (id, event) = local.first_push("/notes/events", &accepted).await;
    assert_eq!(id, accepted["eventId"].as_str().unwrap());
    assert_eq!(event["correlationid"], accepted["correlationId"]);
    assert_eq!(event["data"]["text"], "buy milk");
}

#[tokio::test]
async fn notes_are_saved_once_or_fail_and_each_outcome_is_pushed_to_its_sender() {
    let moto = Moto::start();
    let local = start(&moto, std::path::Path::new("examples/notes.yaml")).await;
    let note = [("X-Request-Id", "req-1"), ("Idempotency-Key", "note-1")];
    let saved = local.post(r#"{"text":"buy milk"}"#, &note).await;
    // The client retried: the same event, saved once.
    let again = local.post(r#"{"text":"buy milk"}"#, &note).await;
    assert_eq!(again["eventId"], saved["eventId"]);
    let failed = local
        .post(r#"{"text":""}"#, &[("X-Request-Id", "req-2")])
        .await;

    let (_, outcome) = local.first_push("/notes/outcomes", &saved).await;
    assert_eq!(outcome["type"], "note-saved");
    assert_eq!(outcome["correlationid"], "req-1");
    assert_eq!(outcome["data"]["eventId"], saved["eventId"]);
    let (_, outcome) = local.first_push("/notes/outcomes", &failed).await;
    assert_eq!(outcome["type"], "note-failed");
    assert_eq!(outcome["correlationid"], "req-2");
    assert_eq!(outcome["data"]["eventId"], failed["eventId"]);
    let error = outcome["data"]["error"].as_str().unwrap();
    assert!(error.contains("no value at /data/text"), "{outcome}");

    let items = moto
        .dynamodb()
        .scan()
        .table_name("notes")
        .send()
        .await
        .unwrap();
    let ids: Vec<_> = (items.items())
        .iter()
        .map(|i| i["id"].as_s().unwrap().as_str())
        .collect();
    assert_eq!(ids, [saved["eventId"].as_str().unwrap()]);
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
