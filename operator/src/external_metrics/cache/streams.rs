//! Whether a stream source has records waiting, for scaling to and from zero. While a
//! worker reads a shard, its lease records the iterator age it measured: zero when
//! caught up. A shard nobody reads (the workers at zero, their leases released) is
//! probed instead, from where its next reader would start: one GetShardIterator and
//! one GetRecords of a single record, so an idle pipeline costs two calls per shard
//! per refresh.

use std::collections::{HashMap, HashSet};
use std::time::SystemTime;

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodbstreams::Client;
use aws_sdk_dynamodbstreams::types::ShardIteratorType;
use eventpipe_core::checkpoints::{
    AGE_VALID_FOR, CHECKPOINT, IteratorAge, OWNER, SHARD, SHARD_END,
};

type Item = HashMap<String, AttributeValue>;

/// Where a probe reads a shard from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Start {
    TrimHorizon,
    After(String),
}

/// What one consumer's leases say about records waiting, before any stream call.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Shards whose reader last measured records waiting.
    pub waiting: i64,
    /// Shards nobody reads now, and where their next reader starts.
    pub probes: Vec<(String, Start)>,
    /// Some unfinished shard has no reader, so shards split off since are not leased
    /// either and the stream must be listed.
    pub unread: bool,
    /// Every shard with a lease, finished ones included.
    pub leased: HashSet<String>,
}

/// The plan for a consumer's lease items; none when it has none (its workers never
/// started, so where they will start is theirs to decide).
pub fn plan<'a>(leases: impl IntoIterator<Item = &'a Item>, now: SystemTime) -> Option<Plan> {
    let mut plan = Plan::default();
    for lease in leases {
        let text = |k: &str| lease.get(k).and_then(|v| v.as_s().ok()).cloned();
        let Some(shard) = text(SHARD) else { continue };
        plan.leased.insert(shard.clone());
        let checkpoint = text(CHECKPOINT).unwrap_or_default();
        if checkpoint == SHARD_END {
            continue;
        }
        let read = (IteratorAge::of(lease)).filter(|a| {
            lease.contains_key(OWNER)
                && now.duration_since(a.at).unwrap_or_default() <= AGE_VALID_FOR
        });
        match read {
            Some(age) => plan.waiting += i64::from(!age.age.is_zero()),
            None => {
                plan.unread = true;
                match checkpoint.as_str() {
                    // A reader starting at the head finds nothing that waits.
                    "LATEST" => {}
                    "TRIM_HORIZON" | "" => plan.probes.push((shard, Start::TrimHorizon)),
                    seq => plan.probes.push((shard, Start::After(seq.into()))),
                }
            }
        }
    }
    (!plan.leased.is_empty()).then_some(plan)
}

impl Plan {
    /// Adds the listed shards that have no lease yet: split off after the consumer's
    /// first run, a reader starts them at their beginning. Probes of shards no longer
    /// listed (trimmed out of the stream) are dropped.
    pub fn with_listed(mut self, listed: &[String]) -> Self {
        self.probes.retain(|(shard, _)| listed.contains(shard));
        let new = listed.iter().filter(|s| !self.leased.contains(*s));
        let new: Vec<_> = new.map(|s| (s.clone(), Start::TrimHorizon)).collect();
        self.probes.extend(new);
        self
    }
}

/// Shards with records waiting for the consumer of `stream_arn` whose leases these
/// are; none when unknown (no leases yet, or AWS not answering).
pub async fn waiting(
    streams: &Client,
    stream_arn: &str,
    leases: &[&Item],
    now: SystemTime,
) -> Option<i64> {
    let plan = plan(leases.iter().copied(), now)?;
    if !plan.unread {
        return Some(plan.waiting);
    }
    let plan = plan.with_listed(&listed(streams, stream_arn).await?);
    let mut waiting = plan.waiting;
    for (shard, start) in &plan.probes {
        waiting += i64::from(has_records(streams, stream_arn, shard, start).await?);
    }
    Some(waiting)
}

/// The ids of the stream's shards.
async fn listed(streams: &Client, arn: &str) -> Option<Vec<String>> {
    let mut shards = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let out = (streams.describe_stream().stream_arn(arn))
            .set_exclusive_start_shard_id(after.take())
            .send()
            .await
            .map_err(|e| warn(arn, e))
            .ok()?;
        let description = out.stream_description?;
        shards.extend(
            description
                .shards()
                .iter()
                .filter_map(|s| s.shard_id.clone()),
        );
        match description.last_evaluated_shard_id {
            Some(last) => after = Some(last),
            None => return Some(shards),
        }
    }
}

/// Whether a reader starting at `start` would get a record now.
async fn has_records(streams: &Client, arn: &str, shard: &str, start: &Start) -> Option<bool> {
    let request = streams.get_shard_iterator().stream_arn(arn).shard_id(shard);
    let request = match start {
        Start::TrimHorizon => request.shard_iterator_type(ShardIteratorType::TrimHorizon),
        Start::After(seq) => request
            .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
            .sequence_number(seq),
    };
    let iterator = request.send().await.map_err(|e| warn(arn, e)).ok()?;
    let records = streams.get_records().limit(1);
    let records = records.set_shard_iterator(iterator.shard_iterator);
    let out = records.send().await.map_err(|e| warn(arn, e)).ok()?;
    Some(!out.records().is_empty())
}

fn warn(arn: &str, e: impl std::error::Error) {
    let e = aws_sdk_dynamodbstreams::error::DisplayErrorContext(e);
    tracing::warn!(stream = %arn, error = %e, "stream backlog not read");
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn lease(shard: &str, checkpoint: &str, owner: bool, age: Option<(u64, SystemTime)>) -> Item {
        let s = |v: &str| AttributeValue::S(v.into());
        let mut item = Item::from([(SHARD.into(), s(shard)), (CHECKPOINT.into(), s(checkpoint))]);
        if owner {
            item.insert(OWNER.into(), s("worker-a"));
        }
        if let Some((secs, at)) = age {
            let age = Duration::from_secs(secs);
            let attrs = IteratorAge { age, at }.attributes();
            item.extend(attrs.into_iter().map(|(k, v)| (k.to_string(), v)));
        }
        item
    }

    #[test]
    fn read_shards_count_by_their_age_and_unread_ones_are_probed_where_a_reader_starts() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let leases = [
            lease("caught-up", "4960001", true, Some((0, now))),
            lease("behind", "4960002", true, Some((40, now))),
            lease("released", "4960003", false, Some((0, now))),
            lease("stale", "4960004", true, Some((0, now - AGE_VALID_FOR * 2))),
            lease("never-read", "TRIM_HORIZON", false, None),
            lease("at-head", "LATEST", false, None),
            lease("done", SHARD_END, false, None),
        ];
        let plan = plan(&leases, now).expect("leases");
        assert_eq!(plan.waiting, 1, "only the shard behind");
        assert!(plan.unread);
        assert_eq!(
            plan.probes,
            [
                ("released".into(), Start::After("4960003".into())),
                ("stale".into(), Start::After("4960004".into())),
                ("never-read".into(), Start::TrimHorizon),
            ]
        );
        assert_eq!(plan.leased.len(), 7);
    }

    #[test]
    fn shards_all_read_need_no_listing_and_no_leases_is_unknown() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let leases = [
            lease("a", "4960001", true, Some((0, now))),
            lease("b", SHARD_END, false, None),
        ];
        let plan = plan(&leases, now).expect("leases");
        assert_eq!((plan.waiting, plan.unread), (0, false));
        assert_eq!(super::plan(&[], now), None);
    }

    #[test]
    fn listed_shards_without_a_lease_are_read_from_their_beginning() {
        let now = SystemTime::UNIX_EPOCH;
        let leases = [
            lease("parent", SHARD_END, false, None),
            lease("trimmed", "4960001", false, None),
            lease("child", "4960002", false, None),
        ];
        let listed = ["parent".to_string(), "child".into(), "grandchild".into()];
        let plan = plan(&leases, now).expect("leases").with_listed(&listed);
        assert_eq!(
            plan.probes,
            [
                ("child".into(), Start::After("4960002".into())),
                ("grandchild".into(), Start::TrimHorizon),
            ]
        );
    }
}
