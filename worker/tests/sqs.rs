//! The SQS worker against moto: acknowledgement, backoff, dead-lettering, heartbeats,
//! FIFO order, graceful shutdown, filtering and bad configuration.

mod common;

use std::time::Duration;

use common::*;
use eventpipe_testkit::Moto;
use serde_json::json;

/// A pipeline consuming queue `in` into the sink, with policy `p`; `queue` and
/// `pipeline` are extra YAML lines for the binding's `sqs` and the pipeline's spec.
fn config(sink: &str, queue: &str, pipeline: &str) -> String {
    format!(
        r#"apiVersion: eventpipe.dev/v1alpha1
kind: DeadLetterPolicy
metadata: {{name: p}}
spec:
  maxReceiveCount: 3
  backoff: {{initial: 1s, multiplier: 2, max: 1m, jitter: none}}
  nonRetryable: {{httpStatuses: [422], undecodable: true}}
---
apiVersion: eventpipe.dev/v1alpha1
kind: QueueBinding
metadata: {{name: in}}
spec:
  sqs:
    create: true
    waitTime: 1s
{queue}
  deadLetterPolicyRef: {{name: p}}
---
apiVersion: eventpipe.dev/v1alpha1
kind: EventPipeline
metadata: {{name: t}}
spec:
  sources: [{{queueBindingRef: {{name: in}}}}]
  processor: {{http: {{url: "{sink}", timeout: 10s}}}}
{pipeline}
"#
    )
}

const STANDARD: &str = "    queueName: in\n    visibilityTimeout: 10s";

async fn setup(
    sink: &Sink,
    queue: &str,
    pipeline: &str,
) -> (Moto, std::collections::HashMap<String, String>, String) {
    let moto = Moto::start();
    let cfg = config(&sink.url, queue, pipeline);
    let urls = provision(&moto, &cfg).await;
    (moto, urls, cfg)
}

#[tokio::test]
async fn json_data_reaches_the_processor_byte_for_byte() {
    let sink = Sink::ok().await;
    let (moto, urls, cfg) = setup(&sink, STANDARD, "  delivery: {concurrency: 1}").await;
    let sqs = moto.sqs();
    // Numbers no float holds, an order and spacing a re-encoding would not keep.
    let data = r#"{"z": 12345678901234567890123, "a": 2.50, "e": 1E3}"#;
    let event =
        format!(r#"{{"specversion":"1.0","id":"e1","source":"/s","type":"t","data": {data} }}"#);
    send(&sqs, &urls["in"], &event).await;
    send(&sqs, &urls["in"], &format!("  {data}\n")).await;
    let _worker = WorkerProcess::start(&moto, &cfg, &[]).await;
    eventually(30 * SECONDS, "2 deliveries", async || sink.count() >= 2).await;
    let received = sink.received.lock().unwrap().clone();
    for r in &received {
        assert_eq!(r.body, data, "{:?}", r.headers);
    }
}

#[tokio::test]
async fn delivers_every_message_once_and_deletes_it() {
    let sink = Sink::ok().await;
    let (moto, urls, cfg) = setup(&sink, STANDARD, "  delivery: {concurrency: 4}").await;
    let sqs = moto.sqs();
    for i in 0..25 {
        send(
            &sqs,
            &urls["in"],
            &cloudevent(&format!("e{i}"), "t", json!({"n": i})),
        )
        .await;
    }
    let worker = WorkerProcess::start(&moto, &cfg, &[]).await;
    eventually(30 * SECONDS, "25 deliveries", async || sink.count() >= 25).await;
    eventually(10 * SECONDS, "queue empty", async || {
        depth(&sqs, &urls["in"]).await == (0, 0)
    })
    .await;
    let mut ids = sink.ids();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 25, "each event delivered once: {:?}", sink.ids());
    assert_eq!(sink.count(), 25);
    assert!(
        sink.max_concurrency() <= 4,
        "concurrency limit exceeded: {}",
        sink.max_concurrency()
    );
    let first = sink.received.lock().unwrap()[0].clone();
    assert_eq!(first.headers["ce-specversion"], "1.0");
    assert_eq!(first.headers["ce-type"], "t");
    assert!(first.headers["ce-correlationid"].starts_with("corr-e"));
    assert!(first.headers["traceparent"].starts_with("00-"));
    assert!(first.body.starts_with("{\"n\":"), "{}", first.body);
    // Each event's log line names it, its correlation id and the trace it continues.
    let log = worker.log();
    let line = log
        .lines()
        .find(|l| l.contains("\"acknowledged\"") && l.contains("\"e3\""))
        .unwrap_or_else(|| panic!("{log}"));
    let line: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(line["correlation_id"], "corr-e3");
    assert_eq!(line["event_id"], "e3");
    assert_eq!(line["trace_id"].as_str().unwrap().len(), 32);
    let metrics = worker.metrics().await;
    assert!(
        metrics.contains(
            r#"eventpipe_events_processed_total{pipeline="t",source="in",outcome="delivered"} 25"#
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn failures_back_off_then_dead_letter_after_exactly_max_receive_count() {
    let sink = Sink::start(|_, _| (500, Duration::ZERO)).await;
    let (moto, urls, cfg) = setup(&sink, STANDARD, "").await;
    let sqs = moto.sqs();
    sqs.send_message()
        .queue_url(&urls["in"])
        .message_body(cloudevent("poison", "t", json!({})))
        .message_attributes("custom", attr("kept"))
        .send()
        .await
        .unwrap();
    let _worker = WorkerProcess::start(&moto, &cfg, &[]).await;
    eventually(30 * SECONDS, "a dead letter", async || {
        depth(&sqs, &urls["in-dlq"]).await.0 == 1
    })
    .await;
    tokio::time::sleep(3 * SECONDS).await; // no delivery after dead-lettering
    let times: Vec<_> = sink.received.lock().unwrap().iter().map(|r| r.at).collect();
    assert_eq!(times.len(), 3, "delivered exactly maxReceiveCount times");
    let (gap1, gap2) = (times[1] - times[0], times[2] - times[1]);
    assert!(
        gap1 >= Duration::from_millis(900) && gap1 < 4 * SECONDS,
        "first retry after ~1s, got {gap1:?}"
    );
    assert!(
        gap2 >= Duration::from_millis(1900) && gap2 < 6 * SECONDS,
        "second retry after ~2s, got {gap2:?}"
    );
    let dead = drain(&sqs, &urls["in-dlq"]).await;
    let attrs = dead[0].message_attributes.clone().unwrap();
    let get = |k: &str| attrs[k].string_value.clone().unwrap();
    assert_eq!(get("eventpipe-receive-count"), "3");
    assert!(
        get("eventpipe-error").contains("HTTP 500"),
        "{}",
        get("eventpipe-error")
    );
    assert_eq!(get("eventpipe-source-queue"), urls["in"]);
    assert_eq!(get("custom"), "kept");
    assert!(dead[0].body().unwrap().contains("\"id\":\"poison\""));
    assert_eq!(depth(&sqs, &urls["in"]).await, (0, 0));
}

#[tokio::test]
async fn non_retryable_outcomes_and_undecodable_bodies_go_to_the_dlq_at_once() {
    let sink = Sink::failing(422, |id| id == "bad").await;
    let (moto, urls, cfg) = setup(&sink, STANDARD, "").await;
    let sqs = moto.sqs();
    send(&sqs, &urls["in"], &cloudevent("bad", "t", json!({}))).await;
    send(&sqs, &urls["in"], r#"{"specversion": "1.0", "id": 7}"#).await;
    send(&sqs, &urls["in"], &cloudevent("good", "t", json!({}))).await;
    send(&sqs, &urls["in"], "not json at all").await;
    let _worker = WorkerProcess::start(&moto, &cfg, &[]).await;
    eventually(20 * SECONDS, "two dead letters", async || {
        depth(&sqs, &urls["in-dlq"]).await.0 == 2
    })
    .await;
    eventually(10 * SECONDS, "source drained", async || {
        depth(&sqs, &urls["in"]).await == (0, 0)
    })
    .await;
    let mut ids = sink.ids();
    ids.sort();
    // "bad" once (422 is final); the foreign text message is wrapped and delivered.
    assert_eq!(ids.iter().filter(|i| *i == "bad").count(), 1);
    assert!(ids.contains(&"good".to_string()));
    assert_eq!(ids.len(), 3, "{ids:?}");
    let errors: Vec<String> = drain(&sqs, &urls["in-dlq"])
        .await
        .iter()
        .map(|m| {
            m.message_attributes.as_ref().unwrap()["eventpipe-error"]
                .string_value
                .clone()
                .unwrap()
        })
        .collect();
    assert!(errors.iter().any(|e| e.contains("422")), "{errors:?}");
    assert!(
        errors.iter().any(|e| e.contains("invalid CloudEvent")),
        "{errors:?}"
    );
}

#[tokio::test]
async fn a_poison_message_does_not_delay_the_others() {
    let sink = Sink::failing(500, |id| id == "poison").await;
    let (moto, urls, cfg) = setup(&sink, STANDARD, "").await;
    let sqs = moto.sqs();
    send(&sqs, &urls["in"], &cloudevent("poison", "t", json!({}))).await;
    for i in 0..10 {
        send(
            &sqs,
            &urls["in"],
            &cloudevent(&format!("ok{i}"), "t", json!({})),
        )
        .await;
    }
    let _worker = WorkerProcess::start(&moto, &cfg, &[]).await;
    // The good ones finish within the first backoff of the poison one.
    eventually(5 * SECONDS, "ten good deliveries", async || {
        sink.completed_count() == 10
    })
    .await;
}

#[tokio::test]
async fn heartbeats_keep_a_slow_delivery_from_being_redelivered() {
    let sink = Sink::start(|_, _| (200, Duration::from_secs(5))).await;
    let queue = "    queueName: in\n    visibilityTimeout: 2s";
    let (moto, urls, cfg) = setup(&sink, queue, "").await;
    let sqs = moto.sqs();
    send(&sqs, &urls["in"], &cloudevent("slow", "t", json!({}))).await;
    let _worker = WorkerProcess::start(&moto, &cfg, &[]).await;
    eventually(20 * SECONDS, "the slow delivery completes", async || {
        sink.completed_count() == 1
    })
    .await;
    eventually(5 * SECONDS, "deleted", async || {
        depth(&sqs, &urls["in"]).await == (0, 0)
    })
    .await;
    assert_eq!(
        sink.count(),
        1,
        "redelivered while still running: {:?}",
        sink.ids()
    );
}

#[tokio::test]
async fn fifo_groups_are_delivered_in_order_and_in_parallel() {
    let sink = Sink::start(|_, _| (200, Duration::from_millis(150))).await;
    let queue = "    queueName: in.fifo\n    fifo: true\n    visibilityTimeout: 30s";
    let (moto, urls, cfg) = setup(
        &sink,
        queue,
        "  delivery: {concurrency: 10, ordering: perGroup}",
    )
    .await;
    let sqs = moto.sqs();
    for i in 0..5 {
        for g in ["a", "b", "c"] {
            let id = format!("{g}{i}");
            send_fifo(&sqs, &urls["in"], &cloudevent(&id, "t", json!({})), g, &id).await;
        }
    }
    let _worker = WorkerProcess::start(&moto, &cfg, &[]).await;
    eventually(30 * SECONDS, "15 deliveries", async || {
        sink.completed_count() == 15
    })
    .await;
    let ids = sink.ids();
    for g in ["a", "b", "c"] {
        let order: Vec<&String> = ids.iter().filter(|i| i.starts_with(g)).collect();
        let want: Vec<String> = (0..5).map(|i| format!("{g}{i}")).collect();
        assert_eq!(
            order,
            want.iter().collect::<Vec<_>>(),
            "group {g} out of order: {ids:?}"
        );
    }
    assert!(
        sink.max_concurrency() >= 2,
        "groups were not processed in parallel"
    );
}

#[tokio::test]
async fn a_failure_in_a_fifo_group_holds_back_only_that_group() {
    // a1 fails twice, then succeeds; a2 must not overtake it; group b flows meanwhile.
    let sink = Sink::start(|r, seen| {
        if r.id() == "a1" && seen < 2 {
            (500, Duration::ZERO)
        } else {
            (200, Duration::ZERO)
        }
    })
    .await;
    let queue = "    queueName: in.fifo\n    fifo: true\n    visibilityTimeout: 30s";
    let (moto, urls, cfg) = setup(
        &sink,
        queue,
        "  delivery: {concurrency: 10, ordering: perGroup}",
    )
    .await;
    let sqs = moto.sqs();
    for id in ["a1", "a2", "b1", "b2"] {
        send_fifo(
            &sqs,
            &urls["in"],
            &cloudevent(id, "t", json!({})),
            &id[..1],
            id,
        )
        .await;
    }
    let _worker = WorkerProcess::start(&moto, &cfg, &[]).await;
    eventually(30 * SECONDS, "all four delivered", async || {
        sink.completed_count() == 4
    })
    .await;
    let completed: Vec<String> = sink
        .completed
        .lock()
        .unwrap()
        .iter()
        .map(|r| r.id().to_string())
        .collect();
    let pos = |id: &str| completed.iter().position(|x| x == id).unwrap();
    assert!(pos("a1") < pos("a2"), "a2 overtook a1: {completed:?}");
    assert!(
        pos("b2") < pos("a1"),
        "group b waited for group a: {completed:?}"
    );
}

#[tokio::test]
async fn shutdown_finishes_in_flight_work_and_hands_back_the_rest() {
    let sink = Sink::start(|_, _| (200, Duration::from_secs(2))).await;
    let (moto, urls, cfg) = setup(&sink, STANDARD, "  delivery: {concurrency: 2}").await;
    let sqs = moto.sqs();
    send_numbered(&sqs, &urls["in"], 6).await;
    let mut worker = WorkerProcess::start(&moto, &cfg, &["--grace-period", "10s"]).await;
    eventually(10 * SECONDS, "deliveries under way", async || {
        sink.count() >= 2
    })
    .await;
    let status = worker.terminate(20 * SECONDS).await;
    assert!(status.success(), "exit status {status}:\n{}", worker.log());
    // What started finished; nothing is stuck invisible; nothing is lost.
    assert_eq!(sink.completed_count(), sink.count());
    let (visible, invisible) = depth(&sqs, &urls["in"]).await;
    assert_eq!(
        invisible,
        0,
        "messages left invisible after shutdown:\n{}",
        worker.log()
    );
    assert_eq!(visible + sink.completed_count(), 6);
}

#[tokio::test]
async fn shutdown_with_nothing_in_flight_takes_under_a_second_despite_a_long_poll() {
    let sink = Sink::ok().await;
    let queue = "    queueName: in\n    visibilityTimeout: 10s\n    waitTime: 20s";
    let (moto, _urls, cfg) = setup(&sink, queue, "").await;
    let mut worker = WorkerProcess::start(&moto, &cfg, &[]).await;
    // Long polls of up to 20 s are now waiting on the empty queue.
    tokio::time::sleep(2 * SECONDS).await;
    let asked = std::time::Instant::now();
    let status = worker.terminate(30 * SECONDS).await;
    let took = asked.elapsed();
    assert!(status.success(), "exit status {status}:\n{}", worker.log());
    assert!(took < SECONDS, "shutdown took {took:?}:\n{}", worker.log());
}

#[tokio::test]
async fn after_the_grace_period_unfinished_messages_are_visible_again_at_once() {
    let sink = Sink::start(|_, _| (200, Duration::from_secs(30))).await;
    let (moto, urls, cfg) = setup(&sink, STANDARD, "  delivery: {concurrency: 3}").await;
    let sqs = moto.sqs();
    send_numbered(&sqs, &urls["in"], 3).await;
    let mut worker = WorkerProcess::start(&moto, &cfg, &["--grace-period", "1s"]).await;
    eventually(10 * SECONDS, "three deliveries under way", async || {
        sink.count() == 3
    })
    .await;
    assert!(worker.terminate(15 * SECONDS).await.success());
    assert_eq!(depth(&sqs, &urls["in"]).await, (3, 0));
}

#[tokio::test]
async fn filtered_events_are_acknowledged_and_counted_never_delivered() {
    let sink = Sink::ok().await;
    let pipeline = "  filter: {type: [issue_comment], data: {action: [{anything-but: deleted}]}}";
    let (moto, urls, cfg) = setup(&sink, STANDARD, pipeline).await;
    let sqs = moto.sqs();
    let events = [
        ("keep", "issue_comment", json!({"action": "created"})),
        ("drop1", "push", json!({"action": "created"})),
        ("drop2", "issue_comment", json!({"action": "deleted"})),
    ];
    send_events(&sqs, &urls["in"], &events).await;
    let worker = WorkerProcess::start(&moto, &cfg, &[]).await;
    eventually(20 * SECONDS, "queue drained", async || {
        depth(&sqs, &urls["in"]).await == (0, 0)
    })
    .await;
    eventually(5 * SECONDS, "one delivery", async || sink.count() == 1).await;
    assert_eq!(sink.ids(), ["keep"]);
    let metrics = worker.metrics().await;
    assert!(metrics.contains(r#"outcome="filtered"} 2"#), "{metrics}");
}

#[tokio::test]
async fn bad_configuration_is_a_clear_error() {
    let moto = Moto::start();
    let dir = temp_dir("badcfg");
    let run = |cfg: &str| start_failing(&moto, &dir, cfg);
    let sink = "http://127.0.0.1:9/x";
    let err = run(&config(sink, "    queueName: in\n    batchSize: 50", ""));
    assert!(
        err.contains("spec.sqs.batchSize: must be between 1 and 10, got 50"),
        "{err}"
    );
    let err = run(&config(sink, STANDARD, "  filter: {type: issue_comment}"));
    assert!(err.contains("filter.type: must be a list"), "{err}");
    // The queue was never created.
    let err = run(&config(sink, STANDARD, ""));
    assert!(
        err.contains(r#"source QueueBinding "in""#) && err.contains("queue \"in\""),
        "{err}"
    );
    let err = run("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n");
    assert!(err.contains("p.yaml: no EventPipeline to run"), "{err}");
}
