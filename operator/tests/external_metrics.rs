//! The external metrics API: values from moto's queues and from the leases in a
//! checkpoint table (TLS and its callers: front_proxy.rs).
// Set-up steps unwrap: a failure fails the test (clippy's allow-unwrap-in-tests
// covers #[test] functions only, not the helpers of an integration test).
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use eventpipe_core::checkpoints::{self, IteratorAge};
use eventpipe_crds::{EventPipeline, QueueBinding};
use eventpipe_operator::Context;
use eventpipe_operator::external_metrics::{self, Cache};
use eventpipe_testkit::Moto;
use eventpipe_worker::streams::lease::{Checkpoint, LeaseTable};
use serde_json::{Value, json};

async fn serve(cache: Cache) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(listener, external_metrics::router(cache))
            .await
            .unwrap()
    });
    url
}

async fn get(url: &str) -> (u16, Value) {
    let r = reqwest::get(url).await.unwrap();
    let code = r.status().as_u16();
    (
        code,
        serde_json::from_str(&r.text().await.unwrap()).unwrap(),
    )
}

const BASE: &str = "/apis/external.metrics.k8s.io/v1beta1";

#[tokio::test]
async fn n_messages_in_the_queue_read_as_n() {
    let moto = Moto::start();
    let sqs = moto.sqs();
    let url = sqs
        .create_queue()
        .queue_name("orders")
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    for _ in 0..7 {
        sqs.send_message()
            .queue_url(&url)
            .message_body("x")
            .send()
            .await
            .unwrap();
    }
    let pipeline: EventPipeline = serde_json::from_value(json!({
        "metadata": {"name": "hooks", "namespace": "shop"},
        "spec": {"sources": [{"queueBindingRef": {"name": "orders"}}], "processor": {"http": {"url": "http://x"}}}
    }))
    .unwrap();
    let binding: QueueBinding = serde_json::from_value(json!({
        "metadata": {"name": "orders", "namespace": "shop"},
        "spec": {"sqs": {"queueName": "orders"}},
        "status": {"queueUrl": url}
    }))
    .unwrap();
    let cache = Cache::default();
    let ctx = context(&moto);
    external_metrics::refresh(&ctx, &[Arc::new(pipeline)], &[Arc::new(binding)], &cache).await;
    let base = serve(cache).await;

    let (code, list) = get(&format!("{base}{BASE}/namespaces/shop/eventpipe_queue_depth?labelSelector=eventpipe.dev%2Fpipeline%3Dhooks")).await;
    assert_eq!(code, 200);
    assert_eq!(list["kind"], "ExternalMetricValueList");
    assert_eq!(list["items"][0]["value"], "7");
    assert_eq!(list["items"][0]["metricName"], "eventpipe_queue_depth");
    assert_eq!(
        list["items"][0]["metricLabels"]["eventpipe.dev/pipeline"],
        "hooks"
    );

    let (_, other) = get(&format!("{base}{BASE}/namespaces/other/eventpipe_queue_depth?labelSelector=eventpipe.dev%2Fpipeline%3Dhooks")).await;
    assert_eq!(
        other["items"],
        json!([]),
        "another namespace's pipeline of the same name is not this one"
    );
    let (code, _) = get(&format!(
        "{base}{BASE}/namespaces/shop/cpu?labelSelector=eventpipe.dev%2Fpipeline%3Dhooks"
    ))
    .await;
    assert_eq!(code, 404);
    let (code, err) = get(&format!(
        "{base}{BASE}/namespaces/shop/eventpipe_queue_depth"
    ))
    .await;
    assert_eq!(code, 400);
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("labelSelector must select eventpipe.dev/pipeline")
    );
}

const CHECKPOINTS: &str = "checkpoints";
const STREAM: &str =
    "arn:aws:dynamodb:us-east-1:123456789012:table/comments/stream/2026-01-01T00:00:00.000";

/// A lease of `consumer` on `shard`, taken by `owner`, which then records `age` at a
/// renewal, as a worker reading the shard does.
async fn leased(moto: &Moto, consumer: &str, owner: &str, shard: &str, age: IteratorAge) -> String {
    let table = LeaseTable::new(moto.dynamodb(), CHECKPOINTS, consumer, owner);
    table
        .create(shard, None, &Checkpoint::TrimHorizon)
        .await
        .unwrap();
    let free = table.scan().await.unwrap();
    let free = free.iter().find(|l| l.shard == shard).unwrap();
    table.take(free).await.unwrap();
    let key = table.key(shard);
    table.renew(&key, Some(age)).await.unwrap();
    key
}

fn age(secs: u64, measured: SystemTime) -> IteratorAge {
    IteratorAge {
        age: Duration::from_secs(secs),
        at: measured,
    }
}

fn stream_pipeline(name: &str, binding: &str) -> Arc<EventPipeline> {
    Arc::new(serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {"sources": [{"queueBindingRef": {"name": binding}}], "processor": {"http": {"url": "http://x"}}}
    }))
    .unwrap())
}

fn stream_binding(name: &str, checkpoints: Option<&str>) -> Arc<QueueBinding> {
    let mut stream = json!({"streamArn": STREAM});
    if let Some(table) = checkpoints {
        stream["checkpointTable"] = json!(table);
    }
    Arc::new(
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "shop"},
            "spec": {"dynamodbStream": stream},
            "status": {"streamArn": STREAM}
        }))
        .unwrap(),
    )
}

#[tokio::test]
async fn stream_lag_is_the_largest_iterator_age_the_workers_recorded() {
    let moto = Moto::start();
    eventpipe_core::provision::ensure_checkpoint_table(&moto.dynamodb(), CHECKPOINTS)
        .await
        .unwrap();
    let now = SystemTime::now();
    let hooks = checkpoints::consumer("hooks", "comments", STREAM);
    // Two replicas share the shards: one recorded at a renewal, one at a checkpoint.
    leased(&moto, &hooks, "a", "shard-1", age(12, now)).await;
    let key = leased(&moto, &hooks, "b", "shard-2", age(3, now)).await;
    LeaseTable::new(moto.dynamodb(), CHECKPOINTS, &hooks, "b")
        .checkpoint(&key, &Checkpoint::After("7".into()), Some(age(40, now)))
        .await
        .unwrap();
    // A closed shard read to its end, and one whose reader stopped ten minutes ago.
    let key = leased(&moto, &hooks, "a", "shard-3", age(500, now)).await;
    LeaseTable::new(moto.dynamodb(), CHECKPOINTS, &hooks, "a")
        .finish(&key, &Checkpoint::ShardEnd, None)
        .await
        .unwrap();
    let long_ago = now - Duration::from_secs(600);
    leased(&moto, &hooks, "c", "shard-4", age(900, long_ago)).await;
    // Another pipeline reading the same stream, with its own leases in the same table.
    let reports = checkpoints::consumer("reports", "comments", STREAM);
    leased(&moto, &reports, "d", "shard-1", age(1000, now)).await;

    let cache = Cache::default();
    let ctx = context(&moto);
    let pipelines = [
        stream_pipeline("hooks", "comments"),
        stream_pipeline("reports", "comments"),
        // Its checkpoint table (the default one) does not exist yet.
        stream_pipeline("fresh", "fresh"),
    ];
    let bindings = [
        stream_binding("comments", Some(CHECKPOINTS)),
        stream_binding("fresh", None),
    ];
    external_metrics::refresh(&ctx, &pipelines, &bindings, &cache).await;
    let base = serve(cache).await;

    let lag = async |pipeline: &str| {
        let (code, list) = get(&format!("{base}{BASE}/namespaces/shop/eventpipe_stream_lag_seconds?labelSelector=eventpipe.dev%2Fpipeline%3D{pipeline}")).await;
        assert_eq!(code, 200);
        list["items"].clone()
    };
    let hooks = lag("hooks").await;
    assert_eq!(hooks[0]["value"], "40", "{hooks}");
    assert_eq!(hooks[0]["metricName"], "eventpipe_stream_lag_seconds");
    assert_eq!(lag("reports").await[0]["value"], "1000");
    assert_eq!(
        lag("fresh").await,
        json!([]),
        "unknown until a worker records one"
    );
    let (_, depth) = get(&format!("{base}{BASE}/namespaces/shop/eventpipe_queue_depth?labelSelector=eventpipe.dev%2Fpipeline%3Dhooks")).await;
    assert_eq!(depth["items"], json!([]), "a stream has no queue depth");
}

/// An operator context whose AWS calls go to moto (no Kubernetes calls are made).
fn context(moto: &Moto) -> Arc<Context> {
    Context::new(
        common::FakeApi::new().client(),
        Default::default(),
        moto.sdk_config(),
        Default::default(),
    )
}

#[tokio::test]
async fn each_queue_is_read_once_per_refresh_however_many_pipelines_read_it() {
    let moto = Moto::start();
    let sqs = moto.sqs();
    let url = sqs
        .create_queue()
        .queue_name("shared")
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let send = |delay: i32| {
        sqs.send_message()
            .queue_url(&url)
            .message_body("x")
            .delay_seconds(delay)
            .send()
    };
    for delay in [0, 0, 0, 600] {
        send(delay).await.unwrap();
    }
    // One message in flight: received, not yet deleted.
    sqs.receive_message()
        .queue_url(&url)
        .max_number_of_messages(1)
        .send()
        .await
        .unwrap();
    let pipeline = |name: &str| -> Arc<EventPipeline> {
        Arc::new(serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "shop"},
            "spec": {"sources": [{"queueBindingRef": {"name": "shared"}}], "processor": {"http": {"url": "http://x"}},
                     "scaling": {"pollingInterval": if name == "a" { "2s" } else { "30s" }}}
        }))
        .unwrap())
    };
    let pipelines = [pipeline("a"), pipeline("b"), pipeline("c")];
    let binding: QueueBinding = serde_json::from_value(json!({
        "metadata": {"name": "shared", "namespace": "shop"},
        "spec": {"sqs": {"queueName": "shared"}},
        "status": {"queueUrl": url}
    }))
    .unwrap();
    let cache = Cache::default();
    let refreshed = cache.refreshes();
    let read =
        external_metrics::refresh(&context(&moto), &pipelines, &[Arc::new(binding)], &cache).await;
    assert_eq!(
        read.queues_read, 1,
        "one GetQueueAttributes for three pipelines"
    );
    assert!(refreshed.has_changed().unwrap(), "a refresh is signalled");
    for name in ["a", "b", "c"] {
        let v = cache.get("shop", name).unwrap();
        assert_eq!(
            v.queue_depth,
            Some(3),
            "visible plus in flight: what the HPA reads"
        );
        assert_eq!(v.backlog, Some(4), "and the delayed one: not idle");
    }
    assert_eq!(
        external_metrics::polling_interval(&pipelines),
        Duration::from_secs(2),
        "the shortest pollingInterval"
    );
}

/// A stream pipeline that scales to zero, with its workers gone: its shards are read
/// from their checkpoints to tell whether records wait.
#[tokio::test]
async fn a_stream_with_no_reader_is_idle_once_read_to_its_checkpoint_and_busy_after_a_write() {
    let moto = Moto::start();
    let ddb = moto.dynamodb();
    eventpipe_core::provision::ensure_checkpoint_table(&ddb, CHECKPOINTS)
        .await
        .unwrap();
    let arn = eventpipe_core::provision::ensure_stream_table(&ddb, "orders")
        .await
        .unwrap()
        .unwrap();
    let write = async |id: &str| {
        let item = aws_sdk_dynamodb::types::AttributeValue::S(id.into());
        ddb.put_item()
            .table_name("orders")
            .item("id", item)
            .send()
            .await
            .unwrap();
    };
    write("o-1").await;
    let streams = aws_sdk_dynamodbstreams::Client::new(&moto.sdk_config());
    let stream = streams
        .describe_stream()
        .stream_arn(&arn)
        .send()
        .await
        .unwrap();
    let shard = stream.stream_description.unwrap().shards()[0]
        .shard_id
        .clone()
        .unwrap();
    let consumer = checkpoints::consumer("orders", "orders", &arn);
    let leases = LeaseTable::new(ddb.clone(), CHECKPOINTS, &consumer, "worker-a");
    leases
        .create(&shard, None, &Checkpoint::TrimHorizon)
        .await
        .unwrap();

    let pipeline = |name: &str, min: i32| -> Arc<EventPipeline> {
        Arc::new(serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "shop"},
            "spec": {"sources": [{"queueBindingRef": {"name": "orders"}}], "processor": {"http": {"url": "http://x"}},
                     "scaling": {"minReplicas": min}}
        }))
        .unwrap())
    };
    let pipelines = [pipeline("orders", 0), pipeline("keeps-one", 1)];
    let binding: QueueBinding = serde_json::from_value(json!({
        "metadata": {"name": "orders", "namespace": "shop"},
        "spec": {"dynamodbStream": {"tableName": "orders", "checkpointTable": CHECKPOINTS}},
        "status": {"streamArn": arn}
    }))
    .unwrap();
    let (ctx, cache, bindings) = (context(&moto), Cache::default(), [Arc::new(binding)]);
    let backlog = async || {
        external_metrics::refresh(&ctx, &pipelines, &bindings, &cache).await;
        let keeps_one = cache.get("shop", "keeps-one").unwrap().backlog;
        assert_eq!(
            keeps_one, None,
            "only read for pipelines that scale to zero"
        );
        cache.get("shop", "orders").unwrap().backlog
    };
    assert_eq!(backlog().await, Some(1), "a record past the checkpoint");

    // A worker reads the record, checkpoints it and releases the lease as it stops.
    let records = streams
        .get_shard_iterator()
        .stream_arn(&arn)
        .shard_id(&shard)
        .shard_iterator_type(aws_sdk_dynamodbstreams::types::ShardIteratorType::TrimHorizon)
        .send()
        .await
        .unwrap();
    let got = streams
        .get_records()
        .shard_iterator(records.shard_iterator.unwrap())
        .send()
        .await
        .unwrap();
    let last = got.records().last().unwrap().dynamodb.clone().unwrap();
    let free = leases.scan().await.unwrap();
    let taken = leases.take(&free[0]).await.unwrap();
    let at = Checkpoint::After(last.sequence_number.unwrap());
    leases.finish(&taken.key, &at, None).await.unwrap();
    assert_eq!(backlog().await, Some(0), "read to its checkpoint: idle");

    write("o-2").await;
    assert_eq!(backlog().await, Some(1), "a new record wakes it");
}
