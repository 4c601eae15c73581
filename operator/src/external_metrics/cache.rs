//! The latest queue depth and stream lag of every pipeline, and the refresh that reads
//! them from AWS. Stream lag comes from the iterator ages the workers record on their
//! shard leases in the checkpoint table.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::AttributeValue;
use eventpipe_core::checkpoints::{self, DEFAULT_LEASE_DURATION, IteratorAge};
use eventpipe_crds::{DynamoDbStream, EventPipeline, QueueBinding};
use kube::ResourceExt;

use crate::binding;
use crate::context::Context;

/// The latest values per (namespace, pipeline).
#[derive(Clone, Default)]
pub struct Cache(Arc<RwLock<HashMap<(String, String), Values>>>);

#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Values {
    pub queue_depth: Option<i64>,
    pub stream_lag_seconds: Option<i64>,
    /// When they were read.
    pub at: Option<k8s_openapi::jiff::Timestamp>,
}

/// The cache's lock is poisoned only when a panic held it, and no code that holds it panics.
const POISONED: &str = "external metrics cache lock poisoned";

impl Cache {
    pub fn set(&self, ns: &str, pipeline: &str, values: Values) {
        self.0
            .write()
            .expect(POISONED)
            .insert((ns.into(), pipeline.into()), values);
    }

    pub fn get(&self, ns: &str, pipeline: &str) -> Option<Values> {
        self.0
            .read()
            .expect(POISONED)
            .get(&(ns.into(), pipeline.into()))
            .copied()
    }

    pub fn retain(&self, keep: impl Fn(&(String, String)) -> bool) {
        self.0.write().expect(POISONED).retain(|k, _| keep(k));
    }
}

/// How long a recorded iterator age counts. Owners record it at every renewal (each
/// third of a lease duration) and checkpoint, so an older one is from a reader that
/// stopped (its replica gone, its lease released, its stream replaced) and is unknown
/// rather than a lag that no longer moves. The margin also absorbs clock skew between
/// the workers' nodes, whose clocks time the measurements, and ours.
const AGE_VALID_FOR: Duration = Duration::from_secs(2 * DEFAULT_LEASE_DURATION.as_secs());

type Item = HashMap<String, AttributeValue>;

/// Reads every pipeline's queue depth (visible plus in flight, summed over its SQS
/// sources) and stream lag (the largest over its stream sources) into the cache.
pub async fn refresh(
    ctx: &Context,
    pipelines: &[Arc<EventPipeline>],
    bindings: &[Arc<QueueBinding>],
    cache: &Cache,
) {
    let mut tables = Tables::default();
    for p in pipelines {
        let ns = p.namespace().unwrap_or_else(|| "default".into());
        let mut values = Values {
            at: Some(k8s_openapi::jiff::Timestamp::now()),
            ..Default::default()
        };
        for s in &p.spec.sources {
            let Some(b) = bindings.iter().find(|b| {
                b.namespace().as_deref() == Some(ns.as_str())
                    && b.name_any() == s.queue_binding_ref.name
            }) else {
                continue;
            };
            if let Some(stream) = &b.spec.dynamodb_stream {
                let lag = stream_lag_seconds(ctx, p, b, stream, &ns, &mut tables).await;
                values.stream_lag_seconds = values.stream_lag_seconds.max(lag);
            } else if let Some(n) = queue_depth(ctx, p, b, &ns).await {
                values.queue_depth = Some(values.queue_depth.unwrap_or(0) + n);
            }
        }
        cache.set(&ns, &p.name_any(), values);
    }
    cache.retain(|(ns, name)| {
        pipelines
            .iter()
            .any(|p| p.namespace().as_deref() == Some(ns.as_str()) && &p.name_any() == name)
    });
}

/// A binding's queue depth; none before its queue is known or when it cannot be read.
async fn queue_depth(ctx: &Context, p: &EventPipeline, b: &QueueBinding, ns: &str) -> Option<i64> {
    let url = b.status.as_ref()?.queue_url.clone()?;
    let sqs = binding::sqs_client(b, ctx, ns).await?;
    eventpipe_core::provision::queue_depth(&sqs, &url)
        .await
        .map_err(|e| tracing::warn!(pipeline = %p.name_any(), error = %e, "queue depth not read"))
        .ok()
}

/// The lag of a pipeline's stream source in whole seconds, from the leases of that
/// pipeline and binding in the checkpoint table.
async fn stream_lag_seconds(
    ctx: &Context,
    p: &EventPipeline,
    b: &QueueBinding,
    stream: &DynamoDbStream,
    ns: &str,
    tables: &mut Tables,
) -> Option<i64> {
    let leases = tables.leases(ctx, b, ns, &stream.checkpoint_table).await?;
    let prefix = checkpoints::binding_prefix(&p.name_any(), &b.name_any());
    let mine = leases.iter().filter(|l| {
        l.get(checkpoints::KEY)
            .and_then(|k| k.as_s().ok())
            .is_some_and(|k| k.starts_with(&prefix))
    });
    stream_lag(mine, SystemTime::now()).map(|lag| lag.as_secs() as i64)
}

/// The checkpoint tables read during one refresh. Many pipelines keep their leases in
/// one table (the default one, say): each is scanned once, not once per pipeline.
#[derive(Default)]
struct Tables(HashMap<TableKey, Option<Vec<Item>>>);

/// A table by name, as a binding reaches it ([`binding::reach`]).
type TableKey = (binding::Reach, String);

impl Tables {
    async fn leases(
        &mut self,
        ctx: &Context,
        b: &QueueBinding,
        ns: &str,
        table: &str,
    ) -> Option<&[Item]> {
        let key = (binding::reach(b, ns), table.to_string());
        if !self.0.contains_key(&key) {
            // Without a client the binding's own status says why.
            let ddb = binding::dynamodb_client(b, ctx, ns).await;
            let leases = match ddb {
                Some(ddb) => leases_of(&ddb, table)
                    .await
                    .map_err(|e| tracing::warn!(error = %e, "stream lag not read"))
                    .ok(),
                None => None,
            };
            self.0.insert(key.clone(), leases);
        }
        self.0[&key].as_deref()
    }
}

/// Every lease item of the table; none while the table is missing (the workers create
/// it when they first start).
async fn leases_of(ddb: &aws_sdk_dynamodb::Client, table: &str) -> Result<Vec<Item>, String> {
    let scan = ddb
        .scan()
        .table_name(table)
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await;
    match scan {
        Ok(items) => Ok(items),
        Err(e) if e.code() == Some("ResourceNotFoundException") => Ok(vec![]),
        Err(e) => Err(format!(
            "checkpoint table {table}: {}",
            aws_sdk_dynamodb::error::DisplayErrorContext(e)
        )),
    }
}

/// A stream's lag from its lease items: the largest iterator age still valid among
/// the shards not yet finished; none when no such shard has one.
pub fn stream_lag<'a>(
    leases: impl IntoIterator<Item = &'a Item>,
    now: SystemTime,
) -> Option<Duration> {
    leases
        .into_iter()
        .filter(|l| !checkpoints::finished(l))
        .filter_map(IteratorAge::of)
        .filter(|a| now.duration_since(a.at).unwrap_or_default() <= AGE_VALID_FOR)
        .map(|a| a.age)
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(checkpoint: &str, age_secs: u64, measured: SystemTime) -> Item {
        let age = IteratorAge {
            age: Duration::from_secs(age_secs),
            at: measured,
        };
        let mut item: Item = age
            .attributes()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        item.insert(
            checkpoints::CHECKPOINT.into(),
            AttributeValue::S(checkpoint.into()),
        );
        item
    }

    #[test]
    fn stream_lag_is_the_largest_valid_age_of_unfinished_shards() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let ago = |secs| now - Duration::from_secs(secs);
        let leases = [
            lease("TRIM_HORIZON", 3, ago(1)),
            lease("49600000000000000000001", 40, ago(10)),
            lease(checkpoints::SHARD_END, 900, ago(1)),
            lease("49600000000000000000002", 600, ago(61)),
            // Measured by a clock a little ahead of ours.
            lease("49600000000000000000003", 5, now + Duration::from_secs(2)),
        ];
        assert_eq!(stream_lag(&leases, now), Some(Duration::from_secs(40)));
        assert_eq!(
            stream_lag(&leases[2..4], now),
            None,
            "finished and stale shards are unknown, not zero"
        );
        assert_eq!(stream_lag(&[Item::new()], now), None, "not measured yet");
        assert_eq!(stream_lag(&[], now), None);
    }
}
