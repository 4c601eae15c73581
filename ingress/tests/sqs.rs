//! The ingress binary against moto's SQS: what a sender sees and what lands in the queue.

mod common;

use std::time::Duration;

use common::*;
use eventpipe_testkit::Moto;

const BODY: &[u8] = br#"{"action":"created","issue":{"number":42},"comment":{"body":"hi"}}"#;

struct Setup {
    moto: Moto,
    queue_url: String,
    secrets: tempfile::TempDir,
    ingress: Ingress,
    client: reqwest::Client,
}

/// moto, a queue `github-events`, the GitHub webhook secret and the ingress serving
/// `webhooks` (the GitHub one when empty) of pipeline `hooks`.
async fn setup(webhooks: &str, args: Vec<&str>) -> Setup {
    let moto = Moto::start();
    let queue_url = create_queue(&moto.sqs(), "github-events").await;
    let secrets = github_secrets();
    write_secret(secrets.path(), "notes-api", "token", "t0ken\n");
    let webhooks = if webhooks.is_empty() {
        GITHUB_WEBHOOK
    } else {
        webhooks
    };
    let config = queue_pipeline("hooks", webhooks, "github-events", "github-events");
    let ingress = Ingress::start(Launch {
        args,
        ..Launch::new(&config, secrets.path(), moto.env())
    })
    .await;
    Setup {
        moto,
        queue_url,
        secrets,
        ingress,
        client: reqwest::Client::new(),
    }
}

#[tokio::test]
async fn a_github_delivery_is_queued_as_a_cloudevent_with_its_trace() {
    let s = setup("", vec![]).await;
    let delivery = "72d3162e-cc78-11e3-81ab-4c9367dc0958";
    let answer = post_github(
        &s.client,
        &s.ingress,
        delivery,
        BODY,
        &[("traceparent", TRACEPARENT), ("tracestate", "vendor=x")],
    )
    .await;
    assert_eq!(answer.status, 202, "{}", answer.json);
    assert_eq!(answer.json["eventId"], delivery);
    assert_eq!(answer.json["correlationId"], "42");

    let messages = receive(&s.moto.sqs(), &s.queue_url, 1, Duration::from_secs(10)).await;
    assert_eq!(messages.len(), 1);
    let m = &messages[0];
    let event = body_json(m);
    assert_eq!(event["specversion"], "1.0");
    assert_eq!(event["id"], delivery);
    assert_eq!(event["type"], "issue_comment");
    assert_eq!(event["source"], "/eventpipe/hooks/github");
    assert_eq!(event["correlationid"], "42");
    assert_eq!(event["datacontenttype"], "application/json");
    assert_eq!(
        event["data"],
        serde_json::from_slice::<serde_json::Value>(BODY).unwrap()
    );
    // The caller's trace continues: same trace id, a new (producer) span id.
    let traceparent = event["traceparent"].as_str().unwrap();
    assert!(
        traceparent.starts_with(&format!("00-{TRACE_ID}-")),
        "{traceparent}"
    );
    assert_ne!(traceparent, TRACEPARENT);
    assert_eq!(event["tracestate"], "vendor=x");
    assert_eq!(attribute(m, "traceparent").as_deref(), Some(traceparent));
    assert_eq!(attribute(m, "tracestate").as_deref(), Some("vendor=x"));
    assert_eq!(attribute(m, "correlation-id").as_deref(), Some("42"));

    // Logs name the event and never the secret or the signature.
    let accepted = s.ingress.log_line("event accepted").await;
    let line: serde_json::Value = serde_json::from_str(&accepted).unwrap();
    let logs = s.ingress.log_text();
    assert_eq!(line["event_id"], delivery);
    assert_eq!(line["correlation_id"], "42");
    assert_eq!(line["trace_id"], TRACE_ID);
    // The request's span, with the fields recorded on it after it started.
    assert_eq!(line["span"]["name"], "request");
    assert_eq!(line["span"]["http.request.method"], "POST");
    assert_eq!(line["span"]["event.id"], delivery);
    assert!(!logs.contains(SECRET));
    assert!(!logs.contains(&hmac_hex(SECRET, BODY)));
}

#[tokio::test]
async fn without_a_traceparent_or_ids_the_ingress_starts_a_trace_and_generates_ids() {
    let webhook = "      - name: plain
        path: /plain
        signature: {scheme: github, secretRef: {name: gh, key: secret}}
";
    let s = setup(webhook, vec![]).await;
    let signature = github_signature(SECRET, b"[1,2]");
    let url = format!("{}/plain", s.ingress.url);
    let answer = post(
        &s.client,
        &url,
        &[("X-Hub-Signature-256", &signature)],
        b"[1,2]",
    )
    .await;
    assert_eq!(answer.status, 202, "{}", answer.json);
    let event_id = answer.json["eventId"].as_str().unwrap();
    let correlation_id = answer.json["correlationId"].as_str().unwrap();
    let version = |id: &str| uuid::Uuid::parse_str(id).unwrap().get_version_num();
    assert_eq!((version(event_id), version(correlation_id)), (7, 7));
    assert_ne!(event_id, correlation_id);

    let m = &receive(&s.moto.sqs(), &s.queue_url, 1, Duration::from_secs(10)).await[0];
    let event = body_json(m);
    assert_eq!(event["id"], event_id);
    assert_eq!(event["correlationid"], correlation_id);
    assert_eq!(event["type"], "eventpipe.webhook.plain");
    let traceparent = event["traceparent"].as_str().unwrap();
    assert_eq!(traceparent.len(), 55, "{traceparent}");
    assert!(!traceparent.contains(TRACE_ID));
    assert!(event.get("tracestate").is_none());
    assert_eq!(attribute(m, "tracestate"), None);
}

#[tokio::test]
async fn a_retried_delivery_keeps_its_event_id() {
    let s = setup("", vec![]).await;
    let first = post_github(&s.client, &s.ingress, "d-1", BODY, &[]).await;
    let again = post_github(&s.client, &s.ingress, "d-1", BODY, &[]).await;
    assert_eq!((first.status, again.status), (202, 202));
    assert_eq!(first.json["eventId"], "d-1");
    assert_eq!(again.json["eventId"], "d-1");
    let messages = receive(&s.moto.sqs(), &s.queue_url, 2, Duration::from_secs(10)).await;
    let ids: Vec<_> = messages
        .iter()
        .map(|m| body_json(m)["id"].clone())
        .collect();
    assert_eq!(ids, ["d-1", "d-1"]);
}

/// What is sent, and the status and error expected.
struct Case(
    &'static str,
    Vec<(&'static str, String)>,
    Vec<u8>,
    u16,
    &'static str,
);

#[tokio::test]
async fn rejected_requests_enqueue_nothing() {
    let s = setup("", vec![]).await;
    let hook = format!("{}/hooks/github", s.ingress.url);
    let sign = |body: &[u8]| github_signature(SECRET, body);
    let json = ("Content-Type", "application/json");
    let cases = vec![
        Case(
            "no signature",
            vec![],
            BODY.to_vec(),
            401,
            "missing x-hub-signature-256 header",
        ),
        Case(
            "wrong signature",
            vec![("X-Hub-Signature-256", sign(b"another body"))],
            BODY.to_vec(),
            401,
            "signature does not match",
        ),
        Case(
            "another secret",
            vec![("X-Hub-Signature-256", github_signature("guess", BODY))],
            BODY.to_vec(),
            401,
            "signature does not match",
        ),
        Case(
            "not hex",
            vec![("X-Hub-Signature-256", "sha256=xyz".into())],
            BODY.to_vec(),
            401,
            "malformed x-hub-signature-256 header",
        ),
        Case(
            "too large",
            vec![("X-Hub-Signature-256", sign(&[b' '; 5000]))],
            vec![b' '; 5000],
            413,
            "body larger than 4096 bytes",
        ),
        Case(
            "not JSON",
            vec![("X-Hub-Signature-256", sign(b"{\"a\":\n tru}"))],
            b"{\"a\":\n tru}".to_vec(),
            400,
            "body is not valid JSON: expected ident at line 2 column 5",
        ),
        Case(
            "form encoded",
            vec![
                ("X-Hub-Signature-256", sign(b"payload=%7B%7D")),
                ("Content-Type", "application/x-www-form-urlencoded".into()),
            ],
            b"payload=%7B%7D".to_vec(),
            415,
            "content type \"application/x-www-form-urlencoded\" is not supported; send application/json",
        ),
    ];
    for Case(what, headers, body, status, error) in cases {
        let mut headers: Vec<(&str, &str)> =
            headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        if !headers.iter().any(|(k, _)| *k == "Content-Type") {
            headers.push(json);
        }
        let answer = post(&s.client, &hook, &headers, &body).await;
        assert_eq!(answer.status, status, "{what}: {}", answer.json);
        assert_eq!(answer.json["error"], error, "{what}");
    }
    let bad_json = post(
        &s.client,
        &hook,
        &[("X-Hub-Signature-256", &sign(b"{\"a\":\n tru}"))],
        b"{\"a\":\n tru}",
    )
    .await;
    assert_eq!(
        (
            bad_json.json["line"].as_u64(),
            bad_json.json["column"].as_u64()
        ),
        (Some(2), Some(5))
    );

    let unknown = post(
        &s.client,
        &format!("{}/hooks/nope", s.ingress.url),
        &[],
        BODY,
    )
    .await;
    assert_eq!(unknown.status, 404);
    let get = answer(s.client.get(&hook).send().await.unwrap()).await;
    assert_eq!(get.status, 405);
    assert_eq!(get.headers["allow"], "POST");

    // Nothing was queued; the valid request that follows is the only message.
    assert_eq!(depth(&s.moto.sqs(), &s.queue_url).await, 0);
    let ok = post_github(&s.client, &s.ingress, "valid", BODY, &[]).await;
    assert_eq!(ok.status, 202);
    let messages = receive(&s.moto.sqs(), &s.queue_url, 2, Duration::from_secs(3)).await;
    let ids: Vec<_> = messages
        .iter()
        .map(|m| body_json(m)["id"].clone())
        .collect();
    assert_eq!(ids, ["valid"]);

    let metrics = s.ingress.metrics().await;
    let count = |status: u16| {
        metric(
            &metrics,
            &format!(
                "eventpipe_ingress_requests_total{{route=\"/hooks/github\",status=\"{status}\"}}"
            ),
        )
    };
    assert_eq!(
        [
            count(202),
            count(400),
            count(401),
            count(405),
            count(413),
            count(415)
        ],
        [
            Some(1.0),
            Some(2.0),
            Some(4.0),
            Some(1.0),
            Some(1.0),
            Some(1.0)
        ]
    );
    assert_eq!(
        metric(
            &metrics,
            "eventpipe_ingress_requests_total{route=\"unmatched\",status=\"404\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &metrics,
            "eventpipe_events_received_total{pipeline=\"hooks\",webhook=\"github\"}"
        ),
        Some(1.0)
    );
}

const ORDERS_WEBHOOK: &str = "      - name: orders
        path: /orders
        signature:
          scheme: hmac-sha256
          secretRef: {name: gh, key: secret}
          header: X-Signature
          prefix: \"v1=\"
          encoding: hex
          timestamp: {header: X-Signature-Timestamp, tolerance: 5m}
        eventType: {jsonPointer: /type}
        correlationId: {jsonPointer: /orderId}
";

#[tokio::test]
async fn the_replay_window_rejects_stale_future_and_tampered_timestamps() {
    let s = setup(ORDERS_WEBHOOK, vec![]).await;
    let url = format!("{}/orders", s.ingress.url);
    let body = br#"{"type":"OrderPlaced","orderId":"o-1"}"#;
    let send = |signed_ts: u64, sent_ts: u64| {
        let signed = [signed_ts.to_string().as_bytes(), b".", body].concat();
        let signature = format!("v1={}", hmac_hex(SECRET, &signed));
        let client = s.client.clone();
        let url = url.clone();
        async move {
            let ts = sent_ts.to_string();
            post(
                &client,
                &url,
                &[("X-Signature", &signature), ("X-Signature-Timestamp", &ts)],
                body,
            )
            .await
        }
    };
    let now = unix_now();
    let stale = send(now - 400, now - 400).await;
    assert_eq!(
        (stale.status, stale.json["error"].as_str()),
        (401, Some("timestamp outside the replay window of 300 s"))
    );
    let future = send(now + 400, now + 400).await;
    assert_eq!(future.status, 401);
    let tampered = send(now - 400, now).await;
    assert_eq!(
        (tampered.status, tampered.json["error"].as_str()),
        (401, Some("signature does not match"))
    );
    let fresh = send(now, now).await;
    assert_eq!(fresh.status, 202, "{}", fresh.json);
    assert_eq!(fresh.json["correlationId"], "o-1");

    let messages = receive(&s.moto.sqs(), &s.queue_url, 2, Duration::from_secs(3)).await;
    assert_eq!(messages.len(), 1);
    let event = body_json(&messages[0]);
    assert_eq!(
        (event["type"].as_str(), event["correlationid"].as_str()),
        (Some("OrderPlaced"), Some("o-1"))
    );
}

#[tokio::test]
async fn a_bearer_token_authenticates_first_party_producers() {
    let webhook = "      - name: create-note
        path: /notes
        signature: {scheme: bearer, secretRef: {name: notes-api, key: token}}
        eventType: {header: X-Event-Type}
        correlationId: {header: X-Request-Id}
";
    let s = setup(webhook, vec![]).await;
    let url = format!("{}/notes", s.ingress.url);
    let body = br#"{"text":"buy milk"}"#;
    let headers = [
        ("Authorization", "Bearer t0ken"),
        ("X-Event-Type", "note.create"),
        ("X-Request-Id", "req-7"),
    ];
    let accepted = post(&s.client, &url, &headers, body).await;
    assert_eq!(accepted.status, 202, "{}", accepted.json);
    assert_eq!(accepted.json["correlationId"], "req-7");
    let wrong = post(&s.client, &url, &[("Authorization", "Bearer t0ke")], body).await;
    assert_eq!(
        (wrong.status, wrong.json["error"].as_str()),
        (401, Some("invalid token"))
    );
    let missing = post(&s.client, &url, &[], body).await;
    assert_eq!(
        (missing.status, missing.json["error"].as_str()),
        (401, Some("missing authorization header"))
    );

    let messages = receive(&s.moto.sqs(), &s.queue_url, 2, Duration::from_secs(3)).await;
    assert_eq!(messages.len(), 1);
    let event = body_json(&messages[0]);
    assert_eq!(event["type"], "note.create");
    assert_eq!(event["correlationid"], "req-7");
    assert_eq!(event["data"]["text"], "buy milk");
}

/// Repeats `attempt` every 100 ms until `done`, for at most 10 s.
async fn eventually<F, Fut>(mut attempt: F, done: impl Fn(&Answer) -> bool) -> Answer
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Answer>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let answer = attempt().await;
        if done(&answer) || std::time::Instant::now() > deadline {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_rotated_secret_takes_effect_without_restart() {
    let s = setup("", vec!["--secrets-poll", "100ms"]).await;
    let pid = s.ingress.child.id();
    let old = post_github(&s.client, &s.ingress, "d-old", BODY, &[]).await;
    assert_eq!(old.status, 202);
    write_secret(s.secrets.path(), "gh", "secret", "rotated");
    let signed_new = github_signature("rotated", BODY);
    let hook = format!("{}/hooks/github", s.ingress.url);
    let headers = [
        ("X-Hub-Signature-256", signed_new.as_str()),
        ("X-GitHub-Delivery", "d-new"),
    ];
    let new = eventually(
        || post(&s.client, &hook, &headers, BODY),
        |a| a.status == 202,
    )
    .await;
    assert_eq!(new.status, 202, "{}", new.json);
    let stale = post_github(&s.client, &s.ingress, "d-stale", BODY, &[]).await;
    assert_eq!(stale.status, 401);
    assert_eq!(s.ingress.child.id(), pid);
    let messages = receive(&s.moto.sqs(), &s.queue_url, 3, Duration::from_secs(3)).await;
    let mut ids: Vec<_> = messages
        .iter()
        .map(|m| body_json(m)["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    assert_eq!(ids, ["d-new", "d-old"]);
    s.ingress.log_line("secret rotated").await;
}

#[tokio::test]
async fn not_ready_until_the_secrets_are_loaded() {
    let moto = Moto::start();
    create_queue(&moto.sqs(), "github-events").await;
    let secrets = tempfile::tempdir().unwrap();
    let config = queue_pipeline("hooks", GITHUB_WEBHOOK, "github-events", "github-events");
    let mut ingress = Ingress::spawn(Launch {
        args: vec!["--secrets-poll", "100ms"],
        ..Launch::new(&config, secrets.path(), moto.env())
    });
    let client = reqwest::Client::new();
    let health = |path: &'static str| {
        let (client, url) = (client.clone(), format!("{}{path}", ingress.ops_url));
        async move {
            for _ in 0..100 {
                if let Ok(r) = client.get(&url).send().await {
                    return r.status().as_u16();
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("{url} never answered")
        }
    };
    assert_eq!(health("/healthz").await, 200);
    assert_eq!(health("/readyz").await, 503);
    let missing = secrets.path().join("gh").join("secret");
    let warned = ingress
        .log_text()
        .lines()
        .any(|l| l.contains("secret unreadable") && l.contains(missing.to_str().unwrap()));
    assert!(warned, "{}", ingress.output());
    let early = post_github(&client, &ingress, "d-1", BODY, &[]).await;
    assert_eq!(early.status, 503);
    assert_eq!(early.headers["retry-after"], "5");
    write_secret(secrets.path(), "gh", "secret", SECRET);
    ingress.wait_ready().await;
    let later = post_github(&client, &ingress, "d-1", BODY, &[]).await;
    assert_eq!(later.status, 202);
}

#[tokio::test]
async fn a_missing_queue_answers_503_until_it_exists() {
    let moto = Moto::start();
    let secrets = github_secrets();
    let config = queue_pipeline("hooks", GITHUB_WEBHOOK, "later", "created-later");
    let ingress = Ingress::start(Launch::new(&config, secrets.path(), moto.env())).await;
    let client = reqwest::Client::new();
    let refused = post_github(&client, &ingress, "d-1", BODY, &[]).await;
    assert_eq!(refused.status, 503, "{}", refused.json);
    assert_eq!(refused.headers["retry-after"], "5");
    assert_eq!(
        refused.json["error"],
        "the event could not be stored; retry later"
    );
    assert!(ingress.log_text().contains("event not stored"));

    let url = create_queue(&moto.sqs(), "created-later").await;
    let accepted = post_github(&client, &ingress, "d-1", BODY, &[]).await;
    assert_eq!(accepted.status, 202);
    let messages = receive(&moto.sqs(), &url, 1, Duration::from_secs(10)).await;
    assert_eq!(body_json(&messages[0])["id"], "d-1");
}

#[tokio::test]
async fn an_unreachable_endpoint_answers_503() {
    let secrets = github_secrets();
    let config = queue_pipeline("hooks", GITHUB_WEBHOOK, "github-events", "github-events");
    // Nothing listens there.
    let endpoint = format!("http://127.0.0.1:{}", eventpipe_testkit::free_port());
    let env = vec![
        ("AWS_ENDPOINT_URL", endpoint),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_ACCESS_KEY_ID", "testing".into()),
        ("AWS_SECRET_ACCESS_KEY", "testing".into()),
    ];
    let ingress = Ingress::start(Launch {
        args: vec!["--publish-timeout", "3s"],
        ..Launch::new(&config, secrets.path(), env)
    })
    .await;
    let client = reqwest::Client::new();
    let started = std::time::Instant::now();
    let refused = post_github(&client, &ingress, "d-1", BODY, &[]).await;
    assert_eq!(refused.status, 503, "{}", refused.json);
    assert_eq!(refused.headers["retry-after"], "5");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn an_event_larger_than_the_queue_accepts_is_refused_with_413() {
    let webhook = "      - name: big
        path: /big
        signature: {scheme: github, secretRef: {name: gh, key: secret}}
        maxBodyBytes: 2097152
";
    let s = setup(webhook, vec![]).await;
    // Valid JSON within maxBodyBytes, but more than SQS takes in one message.
    let body = format!(r#"{{"blob":"{}"}}"#, "x".repeat(1_100_000));
    let signature = github_signature(SECRET, body.as_bytes());
    let url = format!("{}/big", s.ingress.url);
    let answer = post(
        &s.client,
        &url,
        &[("X-Hub-Signature-256", &signature)],
        body.as_bytes(),
    )
    .await;
    assert_eq!(answer.status, 413, "{}", answer.json);
    let error = answer.json["error"].as_str().unwrap();
    assert!(
        error.ends_with("SQS queue github-events accepts at most 1048576"),
        "{error}"
    );
    assert_eq!(depth(&s.moto.sqs(), &s.queue_url).await, 0);
}
