//! The limits against abusive senders, against the running binary over loopback:
//! what the sender sees, that nothing is stored, and the metric and log line of
//! each refusal.
// Set-up helpers unwrap too: a failure fails the test.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{raw::*, *};
use eventpipe_testkit::Moto;

const BODY: &[u8] = br#"{"action":"created","issue":{"number":7}}"#;

struct Setup {
    moto: Moto,
    queue_url: String,
    _secrets: tempfile::TempDir,
    ingress: Ingress,
    client: reqwest::Client,
}

/// moto, a queue and the ingress serving the GitHub webhook (maxBodyBytes 4096) with `args`.
async fn setup(args: Vec<&str>) -> Setup {
    let moto = Moto::start();
    let queue_url = create_queue(&moto.sqs(), "github-events").await;
    let secrets = github_secrets();
    let config = queue_pipeline("hooks", GITHUB_WEBHOOK, "github-events", "github-events");
    let ingress = Ingress::start(Launch {
        args,
        ..Launch::new(&config, secrets.path(), moto.env())
    })
    .await;
    Setup {
        moto,
        queue_url,
        _secrets: secrets,
        ingress,
        client: reqwest::Client::new(),
    }
}

impl Setup {
    async fn rejected(&self, reason: &str) -> Option<f64> {
        let series = format!("eventpipe_ingress_rejected_total{{reason=\"{reason}\"}}");
        metric(&self.ingress.metrics().await, &series)
    }

    /// The ids of the events in the queue, after a valid delivery `last` was accepted.
    async fn stored_ids(&self, last: &str) -> Vec<String> {
        let ok = post_github(&self.client, &self.ingress, last, BODY, &[]).await;
        assert_eq!(ok.status, 202, "{}", ok.json);
        let messages = receive(
            &self.moto.sqs(),
            &self.queue_url,
            10,
            Duration::from_secs(3),
        )
        .await;
        let mut ids: Vec<String> = messages
            .iter()
            .map(|m| body_json(m)["id"].as_str().unwrap().to_string())
            .collect();
        ids.sort();
        ids
    }

    fn log_count(&self, needle: &str) -> usize {
        self.ingress
            .log_text()
            .lines()
            .filter(|l| l.contains(needle))
            .count()
    }
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused_with_413_even_without_a_declared_length() {
    let s = setup(vec![]).await;
    let body = vec![b' '; 5000];
    let mut raw = Raw::connect(&s.ingress.url).await;
    let chunked = format!(
        "{:x}\r\n{}\r\n0\r\n\r\n",
        body.len(),
        " ".repeat(body.len())
    );
    raw.send((github_head("big", &body, true) + &chunked).as_bytes())
        .await
        .unwrap();
    let answer = raw.response().await;
    assert_eq!(answer.status(), Some(413), "{}", answer.text);
    assert_eq!(answer.json()["error"], "body larger than 4096 bytes");

    assert_eq!(s.stored_ids("after").await, ["after"]);
    assert_eq!(s.rejected("body_too_large").await, Some(1.0));
    let line = s.ingress.log_line("body_too_large").await;
    assert!(line.contains("request rejected"), "{line}");
}

#[tokio::test]
async fn too_many_or_too_large_headers_are_answered_431() {
    let s = setup(vec!["--max-header-bytes", "2048", "--max-headers", "20"]).await;
    let many: String = (0..30).map(|i| format!("X-Filler-{i}: x\r\n")).collect();
    let large = format!("X-Filler: {}\r\n", "x".repeat(4000));
    for extra in [many, large] {
        let mut raw = Raw::connect(&s.ingress.url).await;
        let head = format!(
            "POST /hooks/github HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n{extra}\r\n"
        );
        raw.send(head.as_bytes()).await.unwrap();
        let answer = raw.read_until_closed().await;
        assert!(answer.closed, "the connection stays open: {}", answer.text);
        assert_eq!(answer.status(), Some(431), "{}", answer.text);
    }

    // A sender's ordinary head passes.
    assert_eq!(s.stored_ids("after").await, ["after"]);
    assert_eq!(s.rejected("headers_too_large").await, Some(2.0));
    assert_eq!(s.log_count("headers_too_large"), 2);
}

#[tokio::test]
async fn a_client_sending_headers_byte_by_byte_is_disconnected() {
    let s = setup(vec!["--header-read-timeout", "1s"]).await;
    let mut slow = Raw::connect(&s.ingress.url).await;
    slow.send(b"POST /hooks/github HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .unwrap();
    let (mut reader, mut writer) = slow.0.into_split();
    let closed = tokio::spawn(async move {
        let mut seen = Vec::new();
        let read = tokio::io::AsyncReadExt::read_to_end(&mut reader, &mut seen);
        (tokio::time::timeout(PATIENCE, read).await.is_ok(), seen)
    });
    // One header byte every 100 ms, well within any socket timeout, until the
    // server hangs up (or far longer than the header-read timeout has passed).
    let started = Instant::now();
    while !closed.is_finished() && started.elapsed() < PATIENCE {
        let _ = tokio::io::AsyncWriteExt::write_all(&mut writer, b"a").await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (hung_up, seen) = closed.await.unwrap();
    assert!(hung_up, "the slow client is still connected");
    assert_eq!(
        String::from_utf8_lossy(&seen),
        "",
        "no answer, only the close"
    );

    // A keep-alive connection that goes idle after its answer is closed quietly:
    // no refusal is counted for it.
    let mut idle = Raw::connect(&s.ingress.url).await;
    idle.send(b"POST /nowhere HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n")
        .await
        .unwrap();
    let answer = idle.read_until_closed().await;
    assert!(answer.closed && answer.status() == Some(404), "{answer:?}");

    assert_eq!(s.rejected("header_timeout").await, Some(1.0));
    let line = s.ingress.log_line("header_timeout").await;
    assert!(line.contains("connection rejected"), "{line}");
    assert_eq!(s.stored_ids("after").await, ["after"]);
}

#[tokio::test]
async fn a_body_slower_than_the_request_timeout_gets_408_and_nothing_is_stored() {
    let s = setup(vec!["--request-timeout", "1s"]).await;
    let mut raw = Raw::connect(&s.ingress.url).await;
    raw.send(github_head("slow", BODY, false).as_bytes())
        .await
        .unwrap();
    raw.send(&BODY[..10]).await.unwrap();
    let answer = raw.response().await;
    assert_eq!(answer.status(), Some(408), "{}", answer.text);
    assert_eq!(
        answer.json()["error"],
        "the request was not received within 1s"
    );
    // The rest of the body, late, changes nothing.
    let _ = raw.send(&BODY[10..]).await;

    assert_eq!(s.stored_ids("after").await, ["after"]);
    assert_eq!(s.rejected("request_timeout").await, Some(1.0));
    let line = s.ingress.log_line("request_timeout").await;
    assert!(line.contains("request rejected"), "{line}");
}

#[tokio::test]
async fn beyond_the_concurrency_limit_the_ingress_answers_503_at_once() {
    let s = setup(vec!["--max-concurrent-requests", "2"]).await;
    // Two uploads that stall halfway hold both places.
    let mut held = Vec::new();
    for id in ["held-1", "held-2"] {
        let mut raw = Raw::connect(&s.ingress.url).await;
        raw.send(github_head(id, BODY, false).as_bytes())
            .await
            .unwrap();
        raw.send(&BODY[..10]).await.unwrap();
        held.push(raw);
    }
    let deadline = Instant::now() + PATIENCE;
    while metric(
        &s.ingress.metrics().await,
        "eventpipe_ingress_requests_in_flight",
    ) != Some(2.0)
    {
        assert!(Instant::now() < deadline, "the uploads never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Answered while both are still held: not queued behind them.
    let refused = tokio::time::timeout(
        PATIENCE,
        post_github(&s.client, &s.ingress, "refused", BODY, &[]),
    )
    .await
    .expect("an answer while the others are in progress");
    assert_eq!(refused.status, 503, "{}", refused.json);
    assert_eq!(refused.headers["retry-after"], "5");
    assert_eq!(
        refused.json["error"],
        "too many requests in progress; retry later"
    );

    for raw in &mut held {
        raw.send(&BODY[10..]).await.unwrap();
        let answer = raw.response().await;
        assert_eq!(answer.status(), Some(202), "{}", answer.text);
    }
    assert_eq!(s.stored_ids("after").await, ["after", "held-1", "held-2"]);
    assert_eq!(s.rejected("overloaded").await, Some(1.0));
    let line = s.ingress.log_line("overloaded").await;
    assert!(line.contains("WARN"), "{line}");
}
