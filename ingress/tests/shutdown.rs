//! SIGTERM, as a rollout or a node drain sends it. The ingress reports not ready at
//! once and keeps serving for its drain delay, each answer closing its connection;
//! then it refuses new connections, finishes the requests in flight (their events
//! stored and answered 202) and exits. What a sender sees: an answer to every
//! request sent before the drain delay ends; after it, connections refused (or, for
//! a request racing the end of the delay, closed before anything was read), so a
//! retry goes to another pod. Every event answered 202 is in the queue.
// Set-up helpers unwrap too: a failure fails the test.
#![allow(clippy::unwrap_used)]

mod common;

use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};

use common::*;
use eventpipe_testkit::Moto;

const BODY: &[u8] = br#"{"action":"created","issue":{"number":7}}"#;

fn sigterm(ingress: &Ingress) {
    let pid = ingress.child.id().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
}

/// The ingress's exit status, within `limit`.
async fn exited(ingress: &mut Ingress, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = ingress.child.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "still running: {}",
            ingress.output()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How long after `since` /readyz first answered 503 (polled for up to a second).
async fn not_ready_after(ops_url: &str, since: Instant) -> Duration {
    let client = reqwest::Client::new();
    while since.elapsed() < Duration::from_secs(1) {
        let readyz = client.get(format!("{ops_url}/readyz")).send().await;
        if readyz.is_ok_and(|r| r.status() == 503) {
            return since.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("/readyz did not answer 503 within a second of SIGTERM");
}

#[tokio::test]
async fn sigterm_without_a_drain_delay_refuses_new_connections_and_drains_in_flight_requests() {
    let moto = Moto::start();
    let url = create_queue(&moto.sqs(), "github-events").await;
    let secrets = github_secrets();
    let config = queue_pipeline("hooks", GITHUB_WEBHOOK, "github-events", "github-events");
    // A long flush delay holds the request in the batcher while the signal arrives.
    let mut ingress = Ingress::start(Launch {
        args: vec!["--flush-delay", "1500ms", "--drain-delay", "0"],
        ..Launch::new(&config, secrets.path(), moto.env())
    })
    .await;
    let client = reqwest::Client::new();
    let in_flight = {
        let (client, hook) = (client.clone(), format!("{}/hooks/github", ingress.url));
        let signature = github_signature(SECRET, BODY);
        tokio::spawn(async move {
            let headers = [
                ("X-Hub-Signature-256", &*signature),
                ("X-GitHub-Delivery", "d-1"),
            ];
            post(&client, &hook, &headers, BODY).await
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let signalled = Instant::now();
    sigterm(&ingress);

    // While draining, the ops server still answers, and says not ready.
    not_ready_after(&ingress.ops_url, signalled).await;
    // A new connection is refused at once, not left in the backlog.
    let addr = ingress.url.trim_start_matches("http://").to_string();
    let refused = tokio::net::TcpStream::connect(&addr).await;
    let refused = refused.map(|_| ()).map_err(|e| e.kind());
    assert_eq!(refused, Err(std::io::ErrorKind::ConnectionRefused));
    assert!(
        !in_flight.is_finished(),
        "the in-flight request ended early"
    );

    let answer = in_flight.await.unwrap();
    assert_eq!(
        (answer.status, answer.json["eventId"].as_str()),
        (202, Some("d-1"))
    );
    let status = exited(&mut ingress, Duration::from_secs(10)).await;
    assert!(status.success(), "{status}: {}", ingress.output());
    let logs = ingress.log_text();
    assert!(logs.contains("drain delay over"), "{logs}");
    assert!(logs.contains("every publish finished"), "{logs}");
    let messages = receive(&moto.sqs(), &url, 1, Duration::from_secs(5)).await;
    assert_eq!(body_json(&messages[0])["id"], "d-1");
}

/// One request of the load generator and what became of it.
#[derive(Debug)]
struct Sent {
    id: String,
    started: Instant,
    ended: Instant,
    outcome: Outcome,
}

#[derive(Debug)]
enum Outcome {
    /// The status, and whether the answer closed the connection.
    Answered(u16, bool),
    /// No answer: the connection was refused, or closed before one came.
    Failed(String),
}

/// Posts signed webhooks one after another, each with its own delivery id, until
/// `until`, on one client (so keep-alive connections are reused as a sender would).
async fn sender(n: usize, hook: String, until: Instant) -> Vec<Sent> {
    let client = reqwest::Client::new();
    let signature = github_signature(SECRET, BODY);
    let mut sent = vec![];
    while Instant::now() < until && sent.len() < 5000 {
        let id = format!("c{n}-{}", sent.len());
        let started = Instant::now();
        let request = client
            .post(&hook)
            .header("Content-Type", "application/json")
            .header("X-GitHub-Event", "issue_comment")
            .header("X-GitHub-Delivery", &id)
            .header("X-Hub-Signature-256", &signature)
            .body(BODY);
        let outcome = match request.send().await {
            Ok(r) => {
                let closes = r.headers().get("connection").is_some_and(|v| v == "close");
                let status = r.status().as_u16();
                match r.bytes().await {
                    Ok(_) => Outcome::Answered(status, closes),
                    Err(e) => Outcome::Failed(format!("answer cut off: {e}")),
                }
            }
            Err(e) => Outcome::Failed(format!("{e:?}")),
        };
        let failed = matches!(outcome, Outcome::Failed(_));
        let ended = Instant::now();
        sent.push(Sent {
            id,
            started,
            ended,
            outcome,
        });
        if failed {
            // Refused: a real sender would back off and retry elsewhere.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    sent
}

const SENDERS: usize = 4;
const DRAIN: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sigterm_under_load_loses_no_webhook() {
    let moto = Moto::start();
    let url = create_queue(&moto.sqs(), "github-events").await;
    let secrets = github_secrets();
    let config = queue_pipeline("hooks", GITHUB_WEBHOOK, "github-events", "github-events");
    // Each event waits a little for company, so stores are under way at every moment.
    let mut ingress = Ingress::start(Launch {
        args: vec!["--drain-delay", "2s", "--flush-delay", "30ms"],
        ..Launch::new(&config, secrets.path(), moto.env())
    })
    .await;
    let hook = format!("{}/hooks/github", ingress.url);
    let warm_up = Duration::from_millis(700);
    // Senders go on past the drain delay and the exit, into refused connections.
    let until = Instant::now() + warm_up + DRAIN + Duration::from_millis(1500);
    let senders: Vec<_> = (0..SENDERS)
        .map(|n| tokio::spawn(sender(n, hook.clone(), until)))
        .collect();
    tokio::time::sleep(warm_up).await;
    let signalled = Instant::now();
    sigterm(&ingress);
    let unready = not_ready_after(&ingress.ops_url, signalled).await;
    assert!(unready < Duration::from_millis(500), "{unready:?}");
    let status = exited(&mut ingress, Duration::from_secs(20)).await;
    assert!(status.success(), "{status}: {}", ingress.output());
    let mut sent = vec![];
    for s in senders {
        sent.extend(s.await.unwrap());
    }
    let drain_end = signalled + DRAIN;
    answered_until_the_drain_delay_ended(&sent, signalled, drain_end);
    let accepted: BTreeSet<&str> = (sent.iter())
        .filter(|s| matches!(s.outcome, Outcome::Answered(202, _)))
        .map(|s| s.id.as_str())
        .collect();
    let stored = stored_ids(&moto, &url, accepted.len()).await;
    let lost: Vec<_> = accepted
        .iter()
        .filter(|id| !stored.contains(**id))
        .collect();
    assert!(lost.is_empty(), "answered 202, not in the queue: {lost:?}");
    let sent_ids: BTreeSet<&str> = sent.iter().map(|s| s.id.as_str()).collect();
    assert!(stored.iter().all(|id| sent_ids.contains(id.as_str())));
}

/// Every request sent got an answer, and every answer was a 202, until the drain
/// delay ended; requests went on being served during it, on new connections, each
/// answer closing its own; afterwards connections were refused.
fn answered_until_the_drain_delay_ended(sent: &[Sent], signalled: Instant, drain_end: Instant) {
    let mut during = 0;
    for s in sent {
        match &s.outcome {
            Outcome::Answered(202, closes) => {
                // Once /readyz says 503 (well within 300 ms), answers close.
                let draining = s.started > signalled + Duration::from_millis(300);
                if draining && s.ended < drain_end {
                    assert!(
                        closes,
                        "{} answered during the drain, connection kept",
                        s.id
                    );
                    during += 1;
                }
            }
            Outcome::Answered(status, _) => panic!("{} answered {status}", s.id),
            Outcome::Failed(e) => assert!(
                s.ended >= drain_end,
                "{} failed {:?} after SIGTERM, before the drain delay ended: {e}",
                s.id,
                s.ended - signalled
            ),
        }
    }
    assert!(
        during >= SENDERS * 5,
        "only {during} requests served during the drain delay"
    );
    let refused = sent.iter().filter(|s| s.started > drain_end + DRAIN / 2);
    assert!(
        refused.clone().count() > 0
            && refused
                .clone()
                .all(|s| matches!(s.outcome, Outcome::Failed(_))),
        "connections after the drain are refused"
    );
}

/// The event ids in the queue: at least `n`, and any more that come.
async fn stored_ids(moto: &Moto, url: &str, n: usize) -> BTreeSet<String> {
    let sqs = moto.sqs();
    let mut messages = receive(&sqs, url, n, Duration::from_secs(30)).await;
    messages.extend(receive(&sqs, url, usize::MAX, Duration::from_secs(1)).await);
    let ids = messages
        .iter()
        .map(|m| body_json(m)["id"].as_str().unwrap().to_string());
    let ids: Vec<String> = ids.collect();
    let unique: BTreeSet<String> = ids.iter().cloned().collect();
    assert_eq!(unique.len(), ids.len(), "an event stored twice");
    unique
}
