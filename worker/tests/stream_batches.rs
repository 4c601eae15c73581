//! DynamoDB stream records in batches, against moto: a shard's records delivered to a
//! batch-taking HTTP processor in concurrent lanes (`parallelizationFactor`) in order
//! per partition key, a batch that fails whole bisected down to its bad record, and
//! a record a response names given up alone (`maxRetryAttempts`) while the others go on.

mod common;

use common::batch_sink::BatchSink;
use common::streams::*;
use common::*;
use eventpipe_testkit::Moto;
use serde_json::Value;

fn batched(sink: &BatchSink) -> String {
    format!(
        "{{http: {{url: \"{}\", timeout: 10s, batch: {{maxSize: 100}}}}}}",
        sink.url
    )
}

fn key(e: &Value) -> &str {
    e["subject"]
        .as_str()
        .expect("a stream event's subject is its key")
}

#[tokio::test]
async fn a_shards_records_go_in_batches_across_lanes_in_order_per_key() {
    let sink = BatchSink::start(|_, _| (200, vec![])).await;
    let moto = Moto::start();
    setup(&moto).await;
    for round in 1..=5 {
        for k in ["a", "b", "c", "d", "e", "f"] {
            put(&moto, k, round).await;
        }
    }
    let stream = "    batchSize: 50\n    batchWindow: 1s\n    parallelizationFactor: 3";
    let cfg = config(&batched(&sink), stream, "");
    let _worker = WorkerProcess::start(&moto, &cfg, FAST_LEASES).await;
    eventually(30 * SECONDS, "thirty records delivered", async || {
        sink.delivered.lock().unwrap().len() >= 30
    })
    .await;

    let requests = sink.requests();
    assert!(requests.iter().any(|r| r.events.len() > 1), "batched");
    assert!(requests.len() > 1, "several lanes");
    let events: Vec<Value> = requests.iter().flat_map(|r| r.events.clone()).collect();
    for k in ["a", "b", "c", "d", "e", "f"] {
        let n: Vec<i64> = (events.iter())
            .filter(|e| key(e) == k)
            .map(|e| e["data"]["n"].as_i64().unwrap())
            .collect();
        assert_eq!(n, [1, 2, 3, 4, 5], "key {k} in order");
    }
    let last = sink_checkpoint(&moto, 30).await;
    eventually(
        10 * SECONDS,
        "the checkpoint at the last record",
        async || lease(&moto).await["checkpoint"] == last,
    )
    .await;
}

/// Keys k00.. with `poison` at `at`.
async fn poisoned(moto: &Moto, n: usize, at: usize) {
    for i in 0..n {
        let id = match i == at {
            true => "poison".to_string(),
            false => format!("k{i:02}"),
        };
        put(moto, &id, i as i64).await;
    }
}

#[tokio::test]
async fn a_batch_failing_whole_is_bisected_down_to_the_bad_record() {
    let sink = BatchSink::start(|r, _| match r.events.iter().any(|e| key(e) == "poison") {
        true => (500, vec![]),
        false => (200, vec![]),
    })
    .await;
    let moto = Moto::start();
    let dlq = setup(&moto).await;
    poisoned(&moto, 10, 6).await;
    let stream = "    batchSize: 10\n    batchWindow: 1s\n    bisectOnError: true";
    let cfg = config(&batched(&sink), stream, "");
    let _worker = WorkerProcess::start(&moto, &cfg, FAST_LEASES).await;
    eventually(
        40 * SECONDS,
        "nine delivered, the poison dead-lettered",
        async || sink.delivered.lock().unwrap().len() == 9 && depth(&moto.sqs(), &dlq).await.0 == 1,
    )
    .await;
    let letters = drain(&moto.sqs(), &dlq).await;
    assert_eq!(dead_letter_subjects(&letters), ["poison"]);
    assert_eq!(attribute(&letters[0], "eventpipe-receive-count"), "2");
    let sizes: Vec<usize> = sink.requests().iter().map(|r| r.events.len()).collect();
    assert_eq!(sizes[0], 10, "first the whole batch: {sizes:?}");
    assert!(sizes.contains(&1), "down to one record: {sizes:?}");
}

#[tokio::test]
async fn records_a_response_names_are_given_up_alone_and_those_after_them_still_delivered() {
    let sink = BatchSink::start(|r, _| {
        let poison = r.events.iter().filter(|e| key(e) == "poison");
        (
            200,
            poison
                .map(|e| e["id"].as_str().unwrap().to_string())
                .collect(),
        )
    })
    .await;
    let moto = Moto::start();
    let dlq = setup(&moto).await;
    poisoned(&moto, 8, 2).await;
    let stream = "    batchSize: 8\n    batchWindow: 1s\n    maxRetryAttempts: 0";
    let cfg = config(&batched(&sink), stream, "");
    let _worker = WorkerProcess::start(&moto, &cfg, FAST_LEASES).await;
    eventually(30 * SECONDS, "the poison dead-lettered", async || {
        depth(&moto.sqs(), &dlq).await.0 == 1
    })
    .await;
    let letters = drain(&moto.sqs(), &dlq).await;
    assert_eq!(dead_letter_subjects(&letters), ["poison"]);
    assert_eq!(
        attribute(&letters[0], "eventpipe-receive-count"),
        "1",
        "maxRetryAttempts 0: no retry, whatever the policy's maxReceiveCount"
    );
    assert!(
        sink.sent().values().all(|n| *n == 1),
        "given up at once, and the records after it not sent again: {:?}",
        sink.sent()
    );
    let mut delivered: Vec<String> = (sink.delivered.lock().unwrap().iter())
        .map(|e| key(e).to_string())
        .collect();
    delivered.sort();
    delivered.dedup();
    assert_eq!(delivered, ["k00", "k01", "k03", "k04", "k05", "k06", "k07"]);
}

#[tokio::test]
async fn a_throttled_batch_is_held_and_spends_no_attempt() {
    let sink = BatchSink::start(|_, n| match n < 3 {
        true => (429, vec![]),
        false => (200, vec![]),
    })
    .await;
    let moto = Moto::start();
    let dlq = setup(&moto).await;
    poisoned(&moto, 5, 99).await;
    // Not one retry: a throttle judged as a failure would dead-letter at once.
    let stream = "    batchSize: 5\n    batchWindow: 1s\n    maxRetryAttempts: 0";
    let cfg = config(&batched(&sink), stream, "");
    let worker = WorkerProcess::start(&moto, &cfg, FAST_LEASES).await;
    eventually(
        30 * SECONDS,
        "five delivered after the throttling",
        async || sink.delivered.lock().unwrap().len() == 5,
    )
    .await;
    assert!(
        sink.requests().len() >= 4,
        "three throttled, then delivered"
    );
    assert_eq!(depth(&moto.sqs(), &dlq).await.0, 0, "nothing dead-lettered");
    let metrics = worker.metrics().await;
    assert!(
        metrics.contains(r#"eventpipe_throttled_total{pipeline="t",source="in"} 3"#),
        "{metrics}"
    );
}
