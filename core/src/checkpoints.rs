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
}
