//! The span of a batch request, against moto and an OTLP receiver on loopback: it
//! links the trace of every event in the batch, the request carries its context, and
//! each event in the body carries its own trace.

mod common;

use std::collections::HashSet;

use common::batch_sink::BatchSink;
use common::*;
use eventpipe_testkit::{Moto, otlp};
use serde_json::json;

/// A span as exported: its name, trace id and the trace ids it links to.
#[derive(Clone, Debug)]
struct Span {
    name: String,
    trace_id: String,
    links: Vec<String>,
}

/// How the test sees an exported span.
fn span(s: &otlp::Span) -> Span {
    Span {
        name: s.name.clone(),
        trace_id: otlp::hex(&s.trace_id),
        links: s.links.iter().map(|l| otlp::hex(&l.trace_id)).collect(),
    }
}

fn config(sink: &BatchSink) -> String {
    format!(
        r#"apiVersion: eventpipe.dev/v1alpha1
kind: QueueBinding
metadata: {{name: in}}
spec:
  sqs: {{queueName: in, create: true, waitTime: 1s}}
---
apiVersion: eventpipe.dev/v1alpha1
kind: EventPipeline
metadata: {{name: t}}
spec:
  sources: [{{queueBindingRef: {{name: in}}}}]
  processor: {{http: {{url: "{}", batch: {{maxSize: 10, window: 500ms}}}}}}
"#,
        sink.url
    )
}

#[tokio::test]
async fn a_batch_span_links_the_trace_of_every_event_in_it() {
    let sink = BatchSink::start(|_, _| (200, vec![])).await;
    let (endpoint, spans) = otlp::receiver(span).await;
    let moto = Moto::start();
    let cfg = config(&sink);
    let urls = provision(&moto, &cfg).await;
    let sqs = moto.sqs();
    let traces: Vec<String> = (0..5).map(|i| format!("{:032x}", 0xbad0 + i)).collect();
    for (i, trace) in traces.iter().enumerate() {
        let mut event: serde_json::Value =
            serde_json::from_str(&cloudevent(&format!("e{i}"), "t", json!({}))).unwrap();
        event["traceparent"] = json!(format!("00-{trace}-00f067aa0ba902b7-01"));
        send(&sqs, &urls["in"], &event.to_string()).await;
    }
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    let dir = temp_dir("batch-trace");
    let _worker = WorkerProcess::start_with_env(dir, &moto, &cfg, &[], &env).await;
    eventually(
        30 * SECONDS,
        "every trace linked from a batch span",
        async || {
            let linked: HashSet<String> = (spans.lock().unwrap().iter())
                .filter(|s| s.name == "send batch")
                .flat_map(|s| s.links.clone())
                .collect();
            traces.iter().all(|t| linked.contains(t))
        },
    )
    .await;

    let batch_traces: HashSet<String> = (spans.lock().unwrap().iter())
        .filter(|s| s.name == "send batch")
        .map(|s| s.trace_id.clone())
        .collect();
    let requests = sink.requests();
    for r in &requests {
        let own = trace_id(&r.headers["traceparent"]);
        assert!(
            batch_traces.contains(own),
            "the request carries the batch span"
        );
        for e in &r.events {
            let i: usize = e["id"].as_str().unwrap()[1..].parse().unwrap();
            let carried = trace_id(e["traceparent"].as_str().unwrap());
            assert_eq!(carried, traces[i], "each event continues its own trace");
        }
    }
}
