//! Pushing to subscribed clients, against the running binary over loopback: a
//! bearer webhook whose `202` carries a subscribe token, SSE and WebSocket
//! subscribers with their filters, replay after `Last-Event-ID`, the refusals (401,
//! 404, 503 with Retry-After) and the internal push endpoint on the ops port.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use eventpipe_testkit::Moto;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const TOKEN: &str = "notes-token";

const WEBHOOK: &str = "      - name: create-note
        path: /notes
        signature: {scheme: bearer, secretRef: {name: notes-api, key: token}}
";

struct Setup {
    _moto: Moto,
    _secrets: tempfile::TempDir,
    ingress: Ingress,
    client: reqwest::Client,
}

async fn setup(args: Vec<&str>) -> Setup {
    let moto = Moto::start();
    create_queue(&moto.sqs(), "notes-incoming").await;
    let secrets = tempfile::tempdir().unwrap();
    write_secret(secrets.path(), "notes-api", "token", TOKEN);
    let config = queue_pipeline("notes", WEBHOOK, "notes-incoming", "notes-incoming").replace(
        "    publishTo:",
        "    subscriptions: [{name: events, path: /notes/events, webhook: create-note}]\n    publishTo:",
    );
    let ingress = Ingress::start(Launch {
        args,
        ..Launch::new(&config, secrets.path(), moto.env())
    })
    .await;
    Setup {
        _moto: moto,
        _secrets: secrets,
        ingress,
        client: reqwest::Client::new(),
    }
}

fn event(id: &str, correlation_id: &str, status: &str) -> Value {
    json!({"specversion": "1.0", "id": id, "source": "/test", "type": "note-saved",
           "correlationid": correlation_id, "data": {"status": status}})
}

impl Setup {
    /// Posts a note: its correlation id and subscribe token.
    async fn post_note(&self) -> (String, String) {
        let auth = format!("Bearer {TOKEN}");
        let url = format!("{}/notes", self.ingress.url);
        let a = post(
            &self.client,
            &url,
            &[("Authorization", &auth)],
            b"{\"text\":\"hi\"}",
        )
        .await;
        assert_eq!(a.status, 202, "{}", a.json);
        let field = |k: &str| a.json[k].as_str().unwrap().to_string();
        (field("correlationId"), field("subscribeToken"))
    }

    /// What the ops port answers to a push of `event`.
    async fn push(&self, pipeline: &str, event: &Value) -> Answer {
        let url = format!("{}/push/{pipeline}", self.ingress.ops_url);
        let body = serde_json::to_vec(event).unwrap();
        post(
            &self.client,
            &url,
            &[("Content-Type", "application/json")],
            &body,
        )
        .await
    }

    fn events_url(&self, query: &str) -> String {
        format!("{}/notes/events?{query}", self.ingress.url)
    }

    async fn subscribe(&self, query: &str, headers: &[(&str, &str)]) -> reqwest::Response {
        let mut request = self.client.get(self.events_url(query));
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        request.send().await.unwrap()
    }

    async fn metric(&self, name: &str) -> f64 {
        metric(&self.ingress.metrics().await, name).unwrap_or(0.0)
    }

    /// Waits up to 10 s for `name` to read `value`.
    async fn wait_metric(&self, name: &str, value: f64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while self.metric(name).await != value {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name} never read {value}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Reads Server-Sent Events from a response.
struct Sse {
    response: reqwest::Response,
    buffer: String,
}

impl Sse {
    fn new(response: reqwest::Response) -> Self {
        assert_eq!(response.status(), 200);
        let kind = response.headers()["content-type"].to_str().unwrap();
        assert!(kind.starts_with("text/event-stream"), "{kind}");
        Self {
            response,
            buffer: String::new(),
        }
    }

    /// The next event's id and data, within 10 s.
    async fn next(&mut self) -> (String, Value) {
        tokio::time::timeout(Duration::from_secs(10), self.read())
            .await
            .expect("an event within 10 s")
    }

    async fn read(&mut self) -> (String, Value) {
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let field = |name: &str| {
                    block
                        .lines()
                        .find_map(|l| l.strip_prefix(name))
                        .map(str::to_string)
                };
                if let (Some(id), Some(data)) = (field("id: "), field("data: ")) {
                    return (id, serde_json::from_str(&data).unwrap());
                }
            }
            let chunk = self
                .response
                .chunk()
                .await
                .unwrap()
                .expect("the stream goes on");
            self.buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }
}

#[tokio::test]
async fn an_sse_subscriber_gets_its_requests_pushes_with_their_ids_and_resumes_after_the_last() {
    let s = setup(vec![]).await;
    let (correlation_id, token) = s.post_note().await;
    let query = format!("correlationId={correlation_id}&access_token={token}");
    let mut sse = Sse::new(s.subscribe(&query, &[]).await);

    assert_eq!(
        s.push("notes", &event("other", "someone-else", "saved"))
            .await
            .json,
        json!({"delivered": 0})
    );
    let first = event("e1", &correlation_id, "saved");
    assert_eq!(s.push("notes", &first).await.json, json!({"delivered": 1}));
    // The worker retried: the client sees it once.
    assert_eq!(
        s.push("notes", &first).await.json,
        json!({"duplicate": true})
    );
    s.push("notes", &event("e2", &correlation_id, "saved"))
        .await;
    assert_eq!(sse.next().await, ("e1".into(), first));
    assert_eq!(sse.next().await.0, "e2");
    drop(sse);

    // Missed while away, then live.
    s.push("notes", &event("e3", &correlation_id, "saved"))
        .await;
    let mut sse = Sse::new(s.subscribe(&query, &[("Last-Event-ID", "e2")]).await);
    assert_eq!(sse.next().await.0, "e3");
    s.push("notes", &event("e4", &correlation_id, "saved"))
        .await;
    assert_eq!(sse.next().await.0, "e4");
}

#[tokio::test]
async fn a_websocket_subscriber_with_the_webhooks_token_filters_on_a_json_pointer() {
    let s = setup(vec![]).await;
    let url = s.events_url(&format!(
        "pointer=/data/status&value=failed&access_token={TOKEN}"
    ));
    let (mut socket, _) = tokio_tungstenite::connect_async(url.replace("http://", "ws://"))
        .await
        .unwrap();
    // Subscribed once the upgrade is answered: these pushes reach it.
    s.push("notes", &event("saved-1", "c1", "saved")).await;
    s.push("notes", &event("failed-1", "c2", "failed")).await;
    let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let Message::Text(text) = message else {
        panic!("{message:?}")
    };
    let pushed: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        (pushed["id"].as_str(), pushed["data"]["status"].as_str()),
        (Some("failed-1"), Some("failed"))
    );
    assert_eq!(
        s.metric("eventpipe_ingress_push_unmatched_total").await,
        1.0
    );
    assert_eq!(s.metric("eventpipe_ingress_push_pushed_total").await, 1.0);
    assert_eq!(s.metric("eventpipe_ingress_push_subscribers").await, 1.0);
}

#[tokio::test]
async fn subscribers_without_a_valid_credential_are_refused_and_unknown_paths_are_not_found() {
    let s = setup(vec![]).await;
    let (correlation_id, token) = s.post_note().await;
    let refused = [
        (String::new(), vec![]),
        (
            format!("correlationId={correlation_id}&access_token=wrong"),
            vec![],
        ),
        // A subscribe token admits its own correlation id only.
        (
            format!("correlationId=another&access_token={token}"),
            vec![],
        ),
        (format!("access_token={token}"), vec![]),
        (
            format!("correlationId={correlation_id}"),
            vec![("Authorization", "Bearer wrong")],
        ),
    ];
    for (query, headers) in refused {
        let r = s.subscribe(&query, &headers).await;
        assert_eq!(r.status(), 401, "{query} {headers:?}");
        assert_eq!(r.headers()["www-authenticate"], "Bearer");
    }
    let auth = format!("Bearer {TOKEN}");
    Sse::new(s.subscribe("", &[("Authorization", &auth)]).await);
    let r = s
        .client
        .get(format!("{}/notes/nowhere", s.ingress.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = s
        .subscribe(&format!("pointer=/data&access_token={TOKEN}"), &[])
        .await;
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn a_subscriber_over_the_limit_is_told_when_to_retry() {
    let s = setup(vec!["--max-subscribers", "1"]).await;
    let query = format!("access_token={TOKEN}");
    let first = Sse::new(s.subscribe(&query, &[]).await);
    let r = s.subscribe(&query, &[]).await;
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "5");
    assert_eq!(
        s.metric("eventpipe_ingress_push_refused_subscribers_total")
            .await,
        1.0
    );
    drop(first);
    // Its place is given back once the ingress sees the connection closed.
    s.wait_metric("eventpipe_ingress_push_subscribers", 0.0)
        .await;
    Sse::new(s.subscribe(&query, &[]).await);
}

#[tokio::test]
async fn the_push_endpoint_refuses_pipelines_without_subscriptions_and_bodies_without_ids() {
    let s = setup(vec![]).await;
    assert_eq!(
        s.push("unknown", &event("e1", "c", "saved")).await.status,
        404
    );
    assert_eq!(s.push("notes", &json!({"data": 1})).await.status, 400);
}

#[tokio::test]
async fn on_sigterm_subscribers_streams_end_and_the_ingress_exits() {
    let mut s = setup(vec!["--drain-delay", "0"]).await;
    let mut sse = Sse::new(s.subscribe(&format!("access_token={TOKEN}"), &[]).await);
    let url = s.events_url(&format!("access_token={TOKEN}"));
    let (mut socket, _) = tokio_tungstenite::connect_async(url.replace("http://", "ws://"))
        .await
        .unwrap();
    let pid = s.ingress.child.id().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    // Both streams end, so the clients reconnect to another replica.
    let ended = async { while sse.response.chunk().await.is_ok_and(|c| c.is_some()) {} };
    tokio::time::timeout(Duration::from_secs(10), ended)
        .await
        .expect("the SSE stream ends");
    let closed = async {
        loop {
            match socket.next().await {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), closed)
        .await
        .expect("the WebSocket closes");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while s.ingress.child.try_wait().unwrap().is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "still running: {}",
            s.ingress.output()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
