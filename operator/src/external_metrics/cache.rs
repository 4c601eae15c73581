//! The latest queue depth and stream lag of every pipeline, and the refresh that reads
//! them from AWS: each queue once per refresh (one GetQueueAttributes however many
//! pipelines read it), each checkpoint table once. Stream lag comes from the iterator
//! ages the workers record on their shard leases in the checkpoint table.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use aws_sdk_dynamodb::types::AttributeValue;
use eventpipe_core::checkpoints::{self, stream_lag};
use eventpipe_crds::{DynamoDbStream, EventPipeline, QueueBinding};
use kube::ResourceExt;

use crate::binding;
use crate::scaler;

mod queues;
mod streams;

use crate::context::Context;
use queues::Queues;

/// The latest values per (namespace, pipeline), and a signal after each refresh.
#[derive(Clone)]
pub struct Cache {
    values: Arc<RwLock<HashMap<(String, String), Values>>>,
    refreshes: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Default for Cache {
    fn default() -> Self {
        Self {
            values: Arc::default(),
            refreshes: Arc::new(tokio::sync::watch::Sender::new(0)),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Values {
    /// Visible plus in flight, over the SQS sources: what the HPA scales on.
    pub queue_depth: Option<i64>,
    /// Whether the sources are idle: messages visible, in flight or delayed, plus the
    /// stream shards with records waiting (read only for pipelines that scale to zero).
    /// None when any source's is unknown.
    pub backlog: Option<i64>,
    pub stream_lag_seconds: Option<i64>,
    /// When they were read.
    pub at: Option<k8s_openapi::jiff::Timestamp>,
}

/// The cache's lock is poisoned only when a panic held it, and no code that holds it panics.
const POISONED: &str = "external metrics cache lock poisoned";

impl Cache {
    pub fn set(&self, ns: &str, pipeline: &str, values: Values) {
        self.values
            .write()
            .expect(POISONED)
            .insert((ns.into(), pipeline.into()), values);
    }

    pub fn get(&self, ns: &str, pipeline: &str) -> Option<Values> {
        self.values
            .read()
            .expect(POISONED)
            .get(&(ns.into(), pipeline.into()))
            .copied()
    }

    pub fn retain(&self, keep: impl Fn(&(String, String)) -> bool) {
        self.values.write().expect(POISONED).retain(|k, _| keep(k));
    }

    /// Changes after every refresh, so that what acts on the values acts on fresh ones.
    pub fn refreshes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.refreshes.subscribe()
    }
}

type Item = HashMap<String, AttributeValue>;

/// What one refresh asked of AWS.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Refreshed {
    pub queues_read: usize,
    pub tables_read: usize,
}

/// Reads every pipeline's queue depth and backlog (summed over its SQS sources) and
/// stream lag (the largest over its stream sources) into the cache.
pub async fn refresh(
    ctx: &Context,
    pipelines: &[Arc<EventPipeline>],
    bindings: &[Arc<QueueBinding>],
    cache: &Cache,
) -> Refreshed {
    let (mut tables, mut queues) = (Tables::default(), Queues::default());
    for p in pipelines {
        let ns = p.namespace().unwrap_or_else(|| "default".into());
        let mut values = Values {
            at: Some(k8s_openapi::jiff::Timestamp::now()),
            backlog: Some(0),
            ..Default::default()
        };
        for s in &p.spec.sources {
            let Some(b) = bindings.iter().find(|b| {
                b.namespace().as_deref() == Some(ns.as_str())
                    && b.name_any() == s.queue_binding_ref.name
            }) else {
                values.backlog = None;
                continue;
            };
            if let Some(stream) = &b.spec.dynamodb_stream {
                let to_zero = scaler::scales_to_zero(p, ctx);
                let (lag, backlog) =
                    stream_values(ctx, p, b, stream, &ns, &mut tables, to_zero).await;
                values.stream_lag_seconds = values.stream_lag_seconds.max(lag);
                values.backlog = values.backlog.zip(backlog).map(|(a, b)| a + b);
            } else if let Some(q) = queues.counts(ctx, b, &ns).await {
                let depth = values.queue_depth.unwrap_or(0) + q.visible + q.in_flight;
                values.queue_depth = Some(depth);
                values.backlog = values.backlog.map(|n| n + q.backlog());
            } else {
                values.backlog = None;
            }
        }
        cache.set(&ns, &p.name_any(), values);
    }
    cache.retain(|(ns, name)| {
        pipelines
            .iter()
            .any(|p| p.namespace().as_deref() == Some(ns.as_str()) && &p.name_any() == name)
    });
    cache.refreshes.send_modify(|n| *n += 1);
    Refreshed {
        queues_read: queues.0.len(),
        tables_read: tables.0.len(),
    }
}

/// How often to refresh: the shortest `scaling.pollingInterval` (at least a second),
/// so no pipeline's values are older than it asks; 5 s without pipelines.
pub fn polling_interval(pipelines: &[Arc<EventPipeline>]) -> Duration {
    (pipelines.iter())
        .map(|p| p.spec.scaling.polling_interval.as_std())
        .min()
        .unwrap_or(Duration::from_secs(5))
        .max(Duration::from_secs(1))
}

/// The lag of a pipeline's stream source in whole seconds, from the leases of that
/// pipeline and binding in the checkpoint table; and, for a pipeline that scales to
/// zero, the shards with records waiting ([`streams`]).
async fn stream_values(
    ctx: &Context,
    p: &EventPipeline,
    b: &QueueBinding,
    stream: &DynamoDbStream,
    ns: &str,
    tables: &mut Tables,
    to_zero: bool,
) -> (Option<i64>, Option<i64>) {
    let Some(leases) = tables.leases(ctx, b, ns, &stream.checkpoint_table).await else {
        return (None, None);
    };
    let (pipeline, binding, now) = (p.name_any(), b.name_any(), SystemTime::now());
    let mine = checkpoints::of_binding(leases, &pipeline, &binding);
    let lag = stream_lag(mine, now).map(|lag| lag.as_secs() as i64);
    let arn = b.status.as_ref().and_then(|s| s.stream_arn.as_deref());
    let Some(arn) = arn.or(stream.stream_arn.as_deref()).filter(|_| to_zero) else {
        return (lag, None);
    };
    let consumer = checkpoints::consumer(&pipeline, &binding, arn);
    let of_consumer = |l: &&Item| {
        l.get(checkpoints::CONSUMER)
            .and_then(|c| c.as_s().ok())
            .is_some_and(|c| *c == consumer)
    };
    let leases: Vec<&Item> = leases.iter().filter(of_consumer).collect();
    let backlog = match binding::streams_client(b, ctx, ns).await {
        Some(client) => streams::waiting(&client, arn, &leases, now).await,
        None => None,
    };
    (lag, backlog)
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
                Some(ddb) => checkpoints::leases(&ddb, table)
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
