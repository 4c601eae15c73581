//! Autoscaling on a real cluster (E2E_OPERATOR=helm): with a slow processor, a backlog
//! raises the worker Deployment to maxReplicas through the HPA, which reads
//! `eventpipe_queue_depth` or `eventpipe_stream_lag_seconds` from the operator through
//! the aggregated external metrics API; once the backlog is worked off the workers come
//! back to minReplicas, as the pipeline's `scaling.behavior` allows.
// The e2e suite is test code: a failed step fails the test, helpers included.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use eventpipe_crds::EventPipeline;
use eventpipe_e2e::helm::{self, SETTLE, available};
use eventpipe_e2e::load::{PROCESSOR, send_messages, slow_processor};
use eventpipe_e2e::{eventually, ready_condition};
use k8s_openapi::api::apps::v1::Deployment;
use kube::Client;
use kube::api::Api;
use serde_json::{Value, json};

const MAX_REPLICAS: i32 = 3;
/// The promise: a backlog reaches maxReplicas within a minute.
const SCALE_UP: Duration = Duration::from_secs(60);

#[tokio::test]
async fn a_backlog_scales_workers_to_max_and_back_to_min() {
    let Some((client, mut release)) = helm::start(&[]).await else {
        return;
    };
    let app = release.app.clone();
    slow_processor(&client, &app).await;
    let moto = release.moto().await;

    // SQS: 500 waiting messages; the HPA aims at 20 per replica.
    start_pipeline(
        &client,
        &app,
        "queue",
        json!({"sqs": {"queueName": "scale-queue", "create": true, "batchSize": 10}}),
    )
    .await;
    let sqs = helm::sqs(&moto);
    let url = sqs
        .get_queue_url()
        .queue_name("scale-queue")
        .send()
        .await
        .unwrap();
    send_messages(&sqs, url.queue_url().unwrap(), 500).await;
    scales_up_then_down(&client, &app, "queue").await;

    // DynamoDB Streams: records written faster than they are processed; the HPA aims
    // at 10 s of lag.
    let table = "scale-table";
    let stream = json!({"dynamodbStream": {"tableName": table, "create": true,
        "startingPosition": "TRIM_HORIZON", "batchSize": 10, "checkpointTable": "scale-checkpoints"}});
    start_pipeline(&client, &app, "stream", stream).await;
    put_items(&helm::dynamodb(&moto), table, 150).await;
    scales_up_then_down(&client, &app, "stream").await;

    drop(moto);
    release.uninstall(&client).await;
}

/// A pipeline `name` reading the binding `source` into the slow processor, two
/// deliveries at a time per worker, scaling between 1 and 3 workers without waiting.
async fn start_pipeline(client: &Client, ns: &str, name: &str, source: Value) {
    let binding = json!({
        "apiVersion": "eventpipe.dev/v1alpha1", "kind": "QueueBinding",
        "metadata": {"name": name}, "spec": source,
    });
    let immediately =
        |policy: Value| json!({"stabilizationWindowSeconds": 0, "policies": [policy]});
    let pipeline = json!({
        "apiVersion": "eventpipe.dev/v1alpha1", "kind": "EventPipeline",
        "metadata": {"name": name},
        "spec": {
            "sources": [{"queueBindingRef": {"name": name}}],
            "processor": {"http": {"url": format!("http://{PROCESSOR}.{ns}.svc:8080/"), "timeout": "10s"}},
            "delivery": {"concurrency": 2, "timeout": "10s"},
            "scaling": {
                "minReplicas": 1, "maxReplicas": MAX_REPLICAS,
                "targetDepthPerReplica": 20, "targetLagSeconds": 10,
                "behavior": {
                    "scaleUp": immediately(json!({"type": "Pods", "value": 4, "periodSeconds": 15})),
                    "scaleDown": immediately(json!({"type": "Percent", "value": 100, "periodSeconds": 15})),
                },
            },
        },
    });
    eventpipe_e2e::apply(client, ns, &binding).await;
    eventpipe_e2e::apply(client, ns, &pipeline).await;
    let pipelines: Api<EventPipeline> = Api::namespaced(client.clone(), ns);
    eventually(&format!("{name} Ready"), SETTLE, async || {
        ready_condition(&pipelines.get(name).await.ok()?).filter(|c| c.status == "True")
    })
    .await;
}

async fn put_items(ddb: &aws_sdk_dynamodb::Client, table: &str, count: usize) {
    for n in 0..count {
        ddb.put_item()
            .table_name(table)
            .item("id", AttributeValue::S(format!("item-{n}")))
            .send()
            .await
            .unwrap();
    }
}

/// The replicas the HPA asks of the pipeline's workers.
async fn wanted(deployments: &Api<Deployment>, name: &str) -> Option<i32> {
    deployments
        .get(&format!("{name}-worker"))
        .await
        .ok()?
        .spec
        .replicas
}

async fn scales_up_then_down(client: &Client, ns: &str, name: &str) {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let started = Instant::now();
    eventually(
        &format!("{name}: workers at maxReplicas"),
        SCALE_UP,
        async || (wanted(&deployments, name).await? == MAX_REPLICAS).then_some(()),
    )
    .await;
    eprintln!(
        "{name}: {MAX_REPLICAS} workers after {:?}",
        started.elapsed()
    );
    eventually(
        &format!("{name}: {MAX_REPLICAS} workers ready"),
        SETTLE,
        async || {
            let d = deployments.get(&format!("{name}-worker")).await.ok()?;
            (available(&d) == MAX_REPLICAS).then_some(())
        },
    )
    .await;
    let started = Instant::now();
    eventually(
        &format!("{name}: back to minReplicas"),
        Duration::from_secs(300),
        async || (wanted(&deployments, name).await? == 1).then_some(()),
    )
    .await;
    eprintln!("{name}: back to 1 worker after {:?}", started.elapsed());
    let pipelines: Api<EventPipeline> = Api::namespaced(client.clone(), ns);
    let status = pipelines.get(name).await.unwrap().status.unwrap();
    assert_eq!(status.dlq_depth.unwrap_or(0), 0, "nothing dead-lettered");
}
