//! The checkpoint table of DynamoDB stream sources, as the workers write it and the
//! operator reads it: one lease item per shard and consumer, keyed
//! `<pipeline>/<binding>|<stream ARN>|<shard id>`. Owners record there the iterator
//! age their reader last measured, so the operator serves stream lag for the HPA
//! from the table alone, whichever replicas read which shards.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::types::AttributeValue;

// Attributes of a lease item.
pub const KEY: &str = "id";
pub const CONSUMER: &str = "consumer";
pub const SHARD: &str = "shard";
pub const PARENT: &str = "parent";
pub const CHECKPOINT: &str = "checkpoint";
pub const OWNER: &str = "owner";
pub const COUNTER: &str = "counter";
pub const HANDOFF: &str = "handoff";
/// Unix milliseconds of the last renewal.
pub const RENEWED_AT: &str = "renewedAt";
/// The shard's iterator age in milliseconds.
pub const ITERATOR_AGE_MS: &str = "iteratorAgeMs";
/// Unix milliseconds when the iterator age was measured.
pub const ITERATOR_AGE_AT: &str = "iteratorAgeAt";

/// The checkpoint of a shard that is closed and read to its end.
pub const SHARD_END: &str = "SHARD_END";

/// How long a lease lasts unrenewed when the worker is not told otherwise (the
/// operator never tells it).
pub const DEFAULT_LEASE_DURATION: Duration = Duration::from_secs(30);

/// What the keys of every lease of a pipeline's binding start with. Kubernetes names
/// hold no `|`, so no other binding's keys start the same.
pub fn binding_prefix(pipeline: &str, binding: &str) -> String {
    format!("{pipeline}/{binding}|")
}

/// Who reads a stream: pipeline, binding and stream, so several pipelines can share
/// one table and each read the stream in full.
pub fn consumer(pipeline: &str, binding: &str, stream_arn: &str) -> String {
    format!("{}{stream_arn}", binding_prefix(pipeline, binding))
}

/// The key of a consumer's lease on a shard.
pub fn lease_key(consumer: &str, shard: &str) -> String {
    format!("{consumer}|{shard}")
}

/// A shard's iterator age: how old the newest record its reader last got was (zero
/// when caught up), and when that was measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IteratorAge {
    pub age: Duration,
    pub at: SystemTime,
}

impl IteratorAge {
    /// The attributes that record it in a lease item.
    pub fn attributes(&self) -> [(&'static str, AttributeValue); 2] {
        let n = |ms: u128| AttributeValue::N(ms.to_string());
        [
            (ITERATOR_AGE_MS, n(self.age.as_millis())),
            (ITERATOR_AGE_AT, n(unix_millis(self.at))),
        ]
    }

    /// The age a lease item records, if any.
    pub fn of(item: &HashMap<String, AttributeValue>) -> Option<Self> {
        let ms = |k: &str| item.get(k)?.as_n().ok()?.parse::<u64>().ok();
        Some(Self {
            age: Duration::from_millis(ms(ITERATOR_AGE_MS)?),
            at: UNIX_EPOCH + Duration::from_millis(ms(ITERATOR_AGE_AT)?),
        })
    }
}

pub fn unix_millis(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis()
}

/// Whether a lease item's shard is closed and read to its end.
pub fn finished(item: &HashMap<String, AttributeValue>) -> bool {
    item.get(CHECKPOINT)
        .and_then(|v| v.as_s().ok())
        .is_some_and(|c| c == SHARD_END)
}

/// How long a recorded iterator age counts. Owners record it at every renewal (each
/// third of a lease duration) and checkpoint, so an older one is from a reader that
/// stopped (its replica gone, its lease released, its stream replaced) and is unknown
/// rather than a lag that no longer moves. The margin also absorbs clock skew between
/// the workers' nodes, whose clocks time the measurements, and the reader's.
pub const AGE_VALID_FOR: Duration = Duration::from_secs(2 * DEFAULT_LEASE_DURATION.as_secs());

/// A stream's lag from its lease items: the largest iterator age still valid among
/// the shards not yet finished; none when no such shard has one.
pub fn stream_lag<'a>(
    leases: impl IntoIterator<Item = &'a HashMap<String, AttributeValue>>,
    now: SystemTime,
) -> Option<Duration> {
    leases
        .into_iter()
        .filter(|l| !finished(l))
        .filter_map(IteratorAge::of)
        .filter(|a| now.duration_since(a.at).unwrap_or_default() <= AGE_VALID_FOR)
        .map(|a| a.age)
        .max()
}

/// The lease items of one pipeline's binding, among a table's.
pub fn of_binding<'a>(
    leases: &'a [HashMap<String, AttributeValue>],
    pipeline: &str,
    binding: &str,
) -> impl Iterator<Item = &'a HashMap<String, AttributeValue>> {
    let prefix = binding_prefix(pipeline, binding);
    leases.iter().filter(move |l| {
        l.get(KEY)
            .and_then(|k| k.as_s().ok())
            .is_some_and(|k| k.starts_with(&prefix))
    })
}

/// Every lease item of a checkpoint table; none while the table is missing (the
/// workers create it when they first start).
pub async fn leases(
    ddb: &aws_sdk_dynamodb::Client,
    table: &str,
) -> Result<Vec<HashMap<String, AttributeValue>>, String> {
    use aws_sdk_dynamodb::error::ProvideErrorMetadata;
    let scan = ddb.scan().table_name(table).into_paginator().items().send();
    match scan.try_collect().await {
        Ok(items) => Ok(items),
        Err(e) if e.code() == Some("ResourceNotFoundException") => Ok(vec![]),
        Err(e) => Err(format!(
            "checkpoint table {table}: {}",
            aws_sdk_dynamodb::error::DisplayErrorContext(e)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_keys_start_with_their_binding_prefix() {
        let consumer = consumer("hooks", "comments", "arn:s");
        assert_eq!(consumer, "hooks/comments|arn:s");
        let key = lease_key(&consumer, "shardId-1");
        assert_eq!(key, "hooks/comments|arn:s|shardId-1");
        assert!(key.starts_with(&binding_prefix("hooks", "comments")));
        assert!(!key.starts_with(&binding_prefix("hooks", "comment")));
    }

    #[test]
    fn iterator_ages_round_trip_through_an_item() {
        let age = IteratorAge {
            age: Duration::from_millis(1500),
            at: UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
        };
        let item: HashMap<String, AttributeValue> = age
            .attributes()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        assert_eq!(item[ITERATOR_AGE_MS], AttributeValue::N("1500".into()));
        assert_eq!(IteratorAge::of(&item), Some(age));
        assert_eq!(IteratorAge::of(&HashMap::new()), None);
    }

    #[test]
    fn only_shard_end_is_finished() {
        let item = |c: &str| HashMap::from([(CHECKPOINT.to_string(), AttributeValue::S(c.into()))]);
        assert!(finished(&item(SHARD_END)));
        assert!(!finished(&item("TRIM_HORIZON")));
        assert!(!finished(&item("1100000000017454423009")));
        assert!(!finished(&HashMap::new()));
    }

    fn lease(
        checkpoint: &str,
        age_secs: u64,
        measured: SystemTime,
    ) -> HashMap<String, AttributeValue> {
        let age = IteratorAge {
            age: Duration::from_secs(age_secs),
            at: measured,
        };
        let mut item: HashMap<String, AttributeValue> = age
            .attributes()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        item.insert(CHECKPOINT.into(), AttributeValue::S(checkpoint.into()));
        item
    }

    #[test]
    fn stream_lag_is_the_largest_valid_age_of_unfinished_shards() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let ago = |secs| now - Duration::from_secs(secs);
        let leases = [
            lease("TRIM_HORIZON", 3, ago(1)),
            lease("49600000000000000000001", 40, ago(10)),
            lease(SHARD_END, 900, ago(1)),
            lease("49600000000000000000002", 600, ago(61)),
            // Measured by a clock a little ahead of the reader's.
            lease("49600000000000000000003", 5, now + Duration::from_secs(2)),
        ];
        assert_eq!(stream_lag(&leases, now), Some(Duration::from_secs(40)));
        assert_eq!(
            stream_lag(&leases[2..4], now),
            None,
            "finished and stale shards are unknown, not zero"
        );
        assert_eq!(stream_lag(&[HashMap::new()], now), None, "not measured yet");
        assert_eq!(stream_lag(&[], now), None);
    }
}
