//! Stream records given up, against moto: bisect-on-error isolating a poison record,
//! the poison record alone without it, maxRecordAge with and without a policy, and an
//! unreachable dead-letter queue holding the shard.

mod common;

use std::time::Duration;

use common::streams::*;
use common::*;
use eventpipe_testkit::Moto;

/// Keys 0..n with `poison` failing with HTTP 500 every time.
async fn poisoned(moto: &Moto, n: usize, poison: usize) {
    for i in 0..n {
        let id = if i == poison {
            "poison".to_string()
        } else {
            format!("k{i:02}")
        };
        put(moto, &id, i as i64).await;
    }
}

fn poison_sink_behaviour(r: &Received, _: usize) -> (u16, Duration) {
    if r.headers["ce-subject"] == "poison" {
        (500, Duration::ZERO)
    } else {
        (200, Duration::ZERO)
    }
}

#[tokio::test]
async fn a_poison_record_is_bisected_out_and_dead_lettered_without_stalling_the_shard() {
    let sink = Sink::start(poison_sink_behaviour).await;
    let moto = Moto::start();
    let dlq = setup(&moto).await;
    poisoned(&moto, 12, 3).await;
    let cfg = config(
        &http(&sink),
        "    batchSize: 5\n    bisectOnError: true",
        "",
    );
    let worker = WorkerProcess::start(&moto, &cfg, FAST_LEASES).await;
    eventually(
        30 * SECONDS,
        "the eleven good records delivered",
        async || sink.completed_count() == 11,
    )
    .await;
    put(&moto, "later", 99).await;
    eventually(20 * SECONDS, "the shard goes on", async || {
        completed(&sink).contains(&"later".to_string())
    })
    .await;

    let letters = drain(&moto.sqs(), &dlq).await;
    assert_eq!(dead_letter_subjects(&letters), ["poison"]);
    let letter = &letters[0];
    assert_eq!(attribute(letter, "eventpipe-receive-count"), "2");
    assert!(attribute(letter, "eventpipe-error").contains("500"));
    assert!(attribute(letter, "eventpipe-shard-id").starts_with("shardId-"));
    assert!(!attribute(letter, "eventpipe-sequence-number").is_empty());
    assert!(attribute(letter, "eventpipe-source-stream").contains(":table/comments/stream/"));

    // Delivered twice (the policy's maxReceiveCount), and in shard order: the next
    // record only after the poison's last attempt.
    let received = sink.received.lock().unwrap().clone();
    let order: Vec<String> = received.iter().map(subject).collect();
    assert_eq!(order.iter().filter(|s| *s == "poison").count(), 2);
    let last_poison = order.iter().rposition(|s| s == "poison").unwrap();
    let next = order.iter().position(|s| s == "k04").unwrap();
    assert!(last_poison < next, "{order:?}");
    assert_eq!(
        distinct(&completed(&sink)),
        completed(&sink).len(),
        "no repeats"
    );
    let metrics = worker.metrics().await;
    assert!(
        metrics.contains(r#"outcome="dead_lettered"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"outcome="retried"} 1"#), "{metrics}");
    // The feed the console follows shows the record given up, with its trace.
    let feed = reqwest::get(format!("{}/events", worker.metrics))
        .await
        .unwrap();
    let feed: serde_json::Value = serde_json::from_str(&feed.text().await.unwrap()).unwrap();
    let given_up: Vec<_> = (feed["records"].as_array().unwrap().iter())
        .filter(|r| r["outcome"] == "dead_lettered")
        .collect();
    assert_eq!(given_up.len(), 1, "{feed}");
    assert_eq!(given_up[0]["trace_id"].as_str().unwrap().len(), 32);
}

#[tokio::test]
async fn without_bisecting_only_the_failing_record_is_dead_lettered_and_the_rest_delivered() {
    let sink = Sink::start(poison_sink_behaviour).await;
    let moto = Moto::start();
    let dlq = setup(&moto).await;
    poisoned(&moto, 10, 1).await;
    let cfg = config(&http(&sink), "    batchSize: 5", "");
    let _worker = WorkerProcess::start(&moto, &cfg, FAST_LEASES).await;
    // Batches are k00 poison k02 k03 k04 | k05 .. k09.
    eventually(
        30 * SECONDS,
        "the nine good records delivered",
        async || distinct(&completed(&sink)) == 9,
    )
    .await;
    let letters = drain(&moto.sqs(), &dlq).await;
    assert_eq!(dead_letter_subjects(&letters), ["poison"]);
    let mut delivered = completed(&sink);
    delivered.sort();
    assert_eq!(
        delivered,
        [
            "k00", "k02", "k03", "k04", "k05", "k06", "k07", "k08", "k09"
        ]
    );
}

#[tokio::test]
async fn records_older_than_max_record_age_go_to_the_dead_letter_queue() {
    let sink = Sink::ok().await;
    let moto = Moto::start();
    let dlq = setup(&moto).await;
    put(&moto, "stale-1", 1).await;
    put(&moto, "stale-2", 2).await;
    tokio::time::sleep(3 * SECONDS).await;
    let cfg = config(&http(&sink), "    maxRecordAge: 1s", "");
    let worker = WorkerProcess::start(&moto, &cfg, FAST_LEASES).await;
    eventually(20 * SECONDS, "both dead-lettered", async || {
        worker
            .metrics()
            .await
            .contains(r#"outcome="dead_lettered"} 2"#)
    })
    .await;
    let letters = drain(&moto.sqs(), &dlq).await;
    assert_eq!(dead_letter_subjects(&letters), ["stale-1", "stale-2"]);
    assert!(attribute(&letters[0], "eventpipe-error").contains("maxRecordAge"));
    assert_eq!(attribute(&letters[0], "eventpipe-receive-count"), "0");
    assert_eq!(sink.count(), 0, "never delivered");
}

#[tokio::test]
async fn without_a_policy_records_past_max_record_age_are_discarded_and_the_shard_goes_on() {
    let sink = Sink::ok().await;
    let moto = Moto::start();
    setup(&moto).await;
    put(&moto, "stale-1", 1).await;
    put(&moto, "stale-2", 2).await;
    tokio::time::sleep(3 * SECONDS).await;
    let cfg = config(&http(&sink), "    maxRecordAge: 1s", "")
        .replace("  deadLetterPolicyRef: {name: p}\n", "");
    let worker = WorkerProcess::start(&moto, &cfg, FAST_LEASES).await;
    eventually(20 * SECONDS, "both discarded", async || {
        worker.metrics().await.contains(r#"outcome="discarded"} 2"#)
    })
    .await;
    put(&moto, "fresh", 3).await;
    eventually(20 * SECONDS, "the fresh one delivered", async || {
        sink.completed_count() == 1
    })
    .await;
    assert_eq!(completed(&sink), ["fresh"]);
    assert!(worker.log().contains("record given up and discarded"));
}

#[tokio::test]
async fn an_unreachable_dead_letter_queue_holds_the_shard_instead_of_skipping_the_record() {
    // The poison record fails slowly, so the DLQ is gone before it is dead-lettered.
    let sink = Sink::start(|r, _| match r.headers["ce-subject"].as_str() {
        "poison" => (500, Duration::from_secs(1)),
        _ => (200, Duration::ZERO),
    })
    .await;
    let moto = Moto::start();
    let dlq = setup(&moto).await;
    poisoned(&moto, 3, 1).await;
    let cfg = config(&http(&sink), "    bisectOnError: true", "");
    let worker = WorkerProcess::start(&moto, &cfg, FAST_LEASES).await;
    let sqs = moto.sqs();
    sqs.delete_queue().queue_url(&dlq).send().await.unwrap();
    eventually(20 * SECONDS, "dead-lettering fails", async || {
        worker.log().contains("could not dead-letter")
    })
    .await;
    assert_eq!(
        completed(&sink),
        ["k00"],
        "k02 waits behind the poison record"
    );
    let recreated = create_dead_letter_queue(&moto).await;
    eventually(30 * SECONDS, "dead-lettered, then the rest", async || {
        completed(&sink).contains(&"k02".to_string())
    })
    .await;
    let letters = drain(&sqs, &recreated).await;
    assert_eq!(dead_letter_subjects(&letters), ["poison"]);
}
