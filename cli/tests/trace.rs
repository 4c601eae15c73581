//! One trace from the webhook to the last sink: `eventpipe dev` runs the GitHub
//! analytics example exporting OTLP to a receiver here; one signed webhook must give
//! one trace: ingress → SQS → worker → DynamoDB → stream → worker, each span with the
//! correlation id, and log lines naming the same trace.
// Set-up steps unwrap: a failure fails the test (clippy's allow-unwrap-in-tests
// covers #[test] functions only, not the helpers of an integration test).
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use eventpipe_testkit::{Moto, free_port, otlp};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;

#[derive(Clone, Debug)]
struct Span {
    name: String,
    trace_id: String,
    span_id: String,
    parent: String,
    attributes: HashMap<String, String>,
}

/// How the test sees an exported span.
fn span(s: &otlp::Span) -> Span {
    let attributes = (s.attributes.iter())
        .filter_map(|kv| {
            let value = match kv.value.as_ref()?.value.as_ref()? {
                AnyValue::StringValue(v) => v.clone(),
                AnyValue::IntValue(v) => v.to_string(),
                AnyValue::BoolValue(v) => v.to_string(),
                other => format!("{other:?}"),
            };
            Some((kv.key.clone(), value))
        })
        .collect();
    Span {
        name: s.name.clone(),
        trace_id: otlp::hex(&s.trace_id),
        span_id: otlp::hex(&s.span_id),
        parent: otlp::hex(&s.parent_span_id),
        attributes,
    }
}

struct Dev(Child);

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn one_webhook_is_one_trace_from_the_ingress_to_the_aggregate() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let moto = Moto::start();
    let (endpoint, spans) = otlp::receiver(span).await;
    let dir = std::env::temp_dir().join(format!("eventpipe-trace-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("github-webhook")).unwrap();
    std::fs::write(dir.join("github-webhook/secret"), "trace-secret").unwrap();
    let port = free_port();
    let log = dir.join("dev.log");
    let file = std::fs::File::create(&log).unwrap();
    let _dev = Dev(Command::new(env!("CARGO_BIN_EXE_eventpipe"))
        .current_dir(root)
        .args(["dev", "-f", "examples/github-analytics.yaml"])
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--ops-listen",
            &format!("127.0.0.1:{}", free_port()),
        ])
        .arg("--secrets-dir")
        .arg(&dir)
        .envs(moto.env())
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .env("RUST_LOG", "info")
        .stdout(Stdio::from(file.try_clone().unwrap()))
        .stderr(Stdio::from(file))
        .spawn()
        .unwrap());
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "dev did not listen:\n{}",
            std::fs::read_to_string(&log).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let sent = Command::new(env!("CARGO_BIN_EXE_eventpipe"))
        .current_dir(root)
        .args(["send", "--config", "examples/github-analytics.yaml", "--event-type", "issue_comment"])
        .args(["--to", &format!("http://127.0.0.1:{port}/hooks/github")])
        .arg("--secrets-dir")
        .arg(&dir)
        .args(["--data", r#"{"action":"created","issue":{"number":4242},"comment":{"id":1},"repository":{"full_name":"acme/trace"}}"#])
        .args(["github-ingest", "github"])
        .output()
        .unwrap();
    assert!(
        sent.status.success(),
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );

    // The stream consumer's span is the last to appear.
    let wanted = [
        "POST /hooks/github",
        "send github-events",
        "process github-events",
        "process github-comments",
    ];
    let deadline = Instant::now() + Duration::from_secs(60);
    let trace: Vec<Span> = loop {
        let ours: Vec<Span> = spans
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.attributes.get("correlation.id").map(String::as_str) == Some("4242"))
            .cloned()
            .collect();
        if wanted.iter().all(|w| ours.iter().any(|s| &s.name == w)) {
            break ours;
        }
        let names: Vec<String> = spans
            .lock()
            .unwrap()
            .iter()
            .map(|s| s.name.clone())
            .collect();
        assert!(
            Instant::now() < deadline,
            "spans so far: {names:?}\n{}",
            std::fs::read_to_string(&log).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let by_name = |n: &str| trace.iter().find(|s| s.name == n).unwrap().clone();
    let (server, send, ingest, aggregate) = (
        by_name(wanted[0]),
        by_name(wanted[1]),
        by_name(wanted[2]),
        by_name(wanted[3]),
    );
    for s in [&send, &ingest, &aggregate] {
        assert_eq!(
            s.trace_id, server.trace_id,
            "{} is in another trace",
            s.name
        );
    }
    assert_eq!(
        send.parent, server.span_id,
        "the enqueue is part of the request"
    );
    assert_eq!(
        ingest.parent, send.span_id,
        "the worker continues from the message it received"
    );
    assert_eq!(
        aggregate.parent, ingest.span_id,
        "the stream consumer continues from the write that caused the record"
    );
    assert_eq!(server.attributes["http.response.status_code"], "202");
    assert_eq!(send.attributes["messaging.system"], "aws_sqs");
    assert_eq!(ingest.attributes["messaging.operation.type"], "process");
    assert_eq!(
        aggregate.attributes["messaging.destination.name"],
        "github-comments"
    );
    assert!(!ingest.attributes["messaging.message.id"].is_empty());
    for s in [&ingest, &aggregate] {
        let outcome = s.attributes.get("eventpipe.outcome").map(String::as_str);
        assert_eq!(outcome, Some("delivered"), "{}", s.name);
    }
    assert!(
        aggregate
            .attributes
            .contains_key("messaging.destination.partition.id")
    );

    // Log lines about this event name the same trace (info lines are flushed within
    // a fraction of a second).
    let deadline = Instant::now() + Duration::from_secs(5);
    let lines = loop {
        let logs = std::fs::read_to_string(&log).unwrap();
        let lines: Vec<serde_json::Value> = logs
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|l| l["correlation_id"] == "4242")
            .collect();
        let consumer = |l: &serde_json::Value| l["span"]["name"] == "process";
        if lines.len() >= 2 && lines.iter().any(consumer) {
            break lines;
        }
        assert!(
            Instant::now() < deadline,
            "want ingress and worker lines for the event:\n{logs}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        lines
            .iter()
            .all(|l| l["trace_id"] == server.trace_id.as_str()),
        "{lines:#?}"
    );
    // The consumers' messaging attributes are the trace's; their lines do not repeat them.
    for l in lines.iter().filter(|l| l["span"]["name"] == "process") {
        assert!(l["span"].get("messaging.system").is_none(), "{l:#}");
        assert_eq!(l["span"]["event.id"], l["event_id"], "{l:#}");
    }
}
