//! Shard leases in the checkpoint table: one item per shard and consumer (pipeline +
//! binding + stream) with its owner, a counter bumped on every renewal and change of
//! owner, the checkpoint, a pending hand-off request, and the shard's iterator age
//! (read by the operator as stream lag). Every write is conditional (on the owner,
//! or on the counter last seen), so two replicas never own one shard.
//!
//! An owner is judged dead when its lease's counter has not moved for a whole lease
//! duration by the observer's own clock, so clock skew between replicas does not
//! matter. Balancing moves a lease from a busy replica by asking for it: the owner
//! finishes its batch, checkpoints and hands the lease over, so no record is delivered
//! twice while replicas come and go.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant, SystemTime};

use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use eventpipe_core::checkpoints::{
    CHECKPOINT, CONSUMER, COUNTER, HANDOFF, IteratorAge, KEY, OWNER, PARENT, RENEWED_AT, SHARD,
    SHARD_END, lease_key, unix_millis,
};

/// Scan pages read at most per sync (each up to 1 MB of leases).
const MAX_PAGES: usize = 1000;

/// Where a shard's reading stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Checkpoint {
    TrimHorizon,
    Latest,
    /// Every record up to and including this sequence number is done.
    After(String),
    /// The shard is closed and all its records are done.
    ShardEnd,
}

impl Checkpoint {
    pub fn as_str(&self) -> &str {
        match self {
            Self::TrimHorizon => "TRIM_HORIZON",
            Self::Latest => "LATEST",
            Self::After(seq) => seq,
            Self::ShardEnd => SHARD_END,
        }
    }

    pub fn parse(s: &str) -> Self {
        match s {
            "TRIM_HORIZON" => Self::TrimHorizon,
            "LATEST" => Self::Latest,
            SHARD_END => Self::ShardEnd,
            seq => Self::After(seq.to_string()),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub key: String,
    pub shard: String,
    pub parent: Option<String>,
    pub checkpoint: Checkpoint,
    pub owner: Option<String>,
    pub counter: u64,
    /// A replica that asked for this lease.
    pub handoff: Option<String>,
}

impl Lease {
    pub fn finished(&self) -> bool {
        self.checkpoint == Checkpoint::ShardEnd
    }
}

/// When this replica last saw each lease's counter change.
#[derive(Default)]
pub(super) struct Expiry {
    seen: HashMap<String, (u64, Instant)>,
}

impl Expiry {
    pub(super) fn observe(&mut self, leases: &[Lease], now: Instant) {
        self.seen
            .retain(|key, _| leases.iter().any(|l| &l.key == key));
        for l in leases {
            let entry = self.seen.entry(l.key.clone()).or_insert((l.counter, now));
            if entry.0 != l.counter {
                *entry = (l.counter, now);
            }
        }
    }

    /// Owned, but not renewed for `duration`.
    pub(super) fn expired(&self, lease: &Lease, now: Instant, duration: Duration) -> bool {
        lease.owner.is_some()
            && self.seen.get(&lease.key).is_some_and(|(counter, since)| {
                *counter == lease.counter && now.duration_since(*since) >= duration
            })
    }
}

/// What this replica should do to hold its fair share of the leases.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Plan {
    /// Free or expired leases to take now.
    pub take: Vec<String>,
    /// A lease to ask its busy owner for.
    pub ask: Option<String>,
}

/// Balances `workable` (leases of shards that may be read now) across the live
/// replicas: those owning an unexpired lease, and `me`. A replica below its share
/// takes free and expired leases, then asks the busiest replica, when that one holds
/// more than its share, for one more (one request at a time).
pub(super) fn plan(me: &str, workable: &[&Lease], expired: impl Fn(&Lease) -> bool) -> Plan {
    let live = |l: &Lease| l.owner.clone().filter(|_| !expired(l));
    let mut load: BTreeMap<String, usize> = BTreeMap::from([(me.to_string(), 0)]);
    for l in workable {
        if let Some(owner) = live(l) {
            *load.entry(owner).or_default() += 1;
        }
    }
    let share = workable.len().div_ceil(load.len());
    let mine = load[me];
    if mine >= share {
        return Plan::default();
    }
    let take: Vec<String> = workable
        .iter()
        .filter(|l| live(l).is_none())
        .take(share - mine)
        .map(|l| l.key.clone())
        .collect();
    let asking = workable.iter().any(|l| l.handoff.as_deref() == Some(me));
    if mine + take.len() >= share || asking {
        return Plan { take, ask: None };
    }
    let busiest = load
        .iter()
        .filter(|(w, n)| w.as_str() != me && **n > share)
        .max_by_key(|(w, n)| (**n, Reverse(w.as_str())))
        .map(|(w, _)| w.clone());
    let ask = busiest.and_then(|w| {
        workable
            .iter()
            .find(|l| live(l).as_deref() == Some(&w) && l.handoff.is_none())
            .map(|l| l.key.clone())
    });
    Plan { take, ask }
}

/// Why a conditional lease write did not happen.
#[derive(Debug, PartialEq, Eq)]
pub enum LeaseError {
    /// Someone else owns the lease now (or changed it first).
    Lost,
    Failed(String),
}

impl std::fmt::Display for LeaseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Lost => f.write_str("lease lost to another replica"),
            Self::Failed(e) => f.write_str(e),
        }
    }
}

fn lease_error<E, R>(e: SdkError<E, R>) -> LeaseError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    if e.code() == Some("ConditionalCheckFailedException") {
        return LeaseError::Lost;
    }
    LeaseError::Failed(format!(
        "checkpoint table: {}",
        aws_sdk_dynamodb::error::DisplayErrorContext(e)
    ))
}

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_string())
}

fn now_millis() -> AttributeValue {
    AttributeValue::N(unix_millis(SystemTime::now()).to_string())
}

/// Sets `set` (a `SET` clause) and, when there is one, the shard's iterator age: it
/// rides on writes the owner makes anyway, so the lag costs no request of its own.
fn set_with_age(
    update: UpdateItemFluentBuilder,
    set: &str,
    age: Option<IteratorAge>,
) -> UpdateItemFluentBuilder {
    let Some(age) = age else {
        return update.update_expression(set);
    };
    let [(age_name, age_ms), (at_name, at_ms)] = age.attributes();
    update
        .update_expression(format!("{set}, #age = :age, #ageAt = :ageAt"))
        .expression_attribute_names("#age", age_name)
        .expression_attribute_names("#ageAt", at_name)
        .expression_attribute_values(":age", age_ms)
        .expression_attribute_values(":ageAt", at_ms)
}

fn from_item(item: &HashMap<String, AttributeValue>) -> Option<Lease> {
    let text = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned();
    Some(Lease {
        key: text(KEY)?,
        shard: text(SHARD)?,
        parent: text(PARENT),
        checkpoint: Checkpoint::parse(&text(CHECKPOINT)?),
        owner: text(OWNER),
        counter: item
            .get(COUNTER)
            .and_then(|v| v.as_n().ok())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0),
        handoff: text(HANDOFF),
    })
}

/// The leases of one consumer in the checkpoint table, written as `me`.
#[derive(Clone)]
pub struct LeaseTable {
    ddb: aws_sdk_dynamodb::Client,
    table: String,
    consumer: String,
    me: String,
}

impl LeaseTable {
    /// `consumer` names who reads the stream (`checkpoints::consumer`), so several
    /// pipelines can share one table and each read the stream in full.
    pub fn new(ddb: aws_sdk_dynamodb::Client, table: &str, consumer: &str, me: &str) -> Self {
        Self {
            ddb,
            table: table.into(),
            consumer: consumer.into(),
            me: me.into(),
        }
    }

    pub fn me(&self) -> &str {
        &self.me
    }

    pub fn key(&self, shard: &str) -> String {
        lease_key(&self.consumer, shard)
    }

    /// Every lease of this consumer, read consistently.
    pub async fn scan(&self) -> Result<Vec<Lease>, String> {
        let mut leases = vec![];
        let mut start = None;
        for _ in 0..MAX_PAGES {
            let out = self
                .ddb
                .scan()
                .table_name(&self.table)
                .consistent_read(true)
                .filter_expression("#c = :c")
                .expression_attribute_names("#c", CONSUMER)
                .expression_attribute_values(":c", s(&self.consumer))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| {
                    format!(
                        "checkpoint table {}: {}",
                        self.table,
                        aws_sdk_dynamodb::error::DisplayErrorContext(e)
                    )
                })?;
            leases.extend(out.items().iter().filter_map(from_item));
            match out.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(leases),
            }
        }
        Err(format!(
            "checkpoint table {}: more than {MAX_PAGES} pages of leases",
            self.table
        ))
    }

    /// Creates a free lease unless one exists.
    pub async fn create(
        &self,
        shard: &str,
        parent: Option<&str>,
        checkpoint: &Checkpoint,
    ) -> Result<(), LeaseError> {
        let mut item = HashMap::from([
            (KEY.to_string(), s(&self.key(shard))),
            (CONSUMER.to_string(), s(&self.consumer)),
            (SHARD.to_string(), s(shard)),
            (CHECKPOINT.to_string(), s(checkpoint.as_str())),
            (COUNTER.to_string(), AttributeValue::N("0".into())),
        ]);
        if let Some(p) = parent {
            item.insert(PARENT.to_string(), s(p));
        }
        let put = self
            .ddb
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#k)")
            .expression_attribute_names("#k", KEY);
        // Already there: another replica created it first.
        match put.send().await.map_err(lease_error) {
            Ok(_) | Err(LeaseError::Lost) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Bumps the counter of a lease this replica owns and records the shard's latest
    /// iterator age; returns who asked for the lease, if anyone did.
    pub async fn renew(
        &self,
        key: &str,
        age: Option<IteratorAge>,
    ) -> Result<Option<String>, LeaseError> {
        let update = self
            .ddb
            .update_item()
            .table_name(&self.table)
            .key(KEY, s(key));
        let out = set_with_age(update, "SET #n = #n + :one, #r = :now", age)
            .condition_expression("#o = :me")
            .expression_attribute_names("#n", COUNTER)
            .expression_attribute_names("#r", RENEWED_AT)
            .expression_attribute_names("#o", OWNER)
            .expression_attribute_values(":one", AttributeValue::N("1".into()))
            .expression_attribute_values(":now", now_millis())
            .expression_attribute_values(":me", s(&self.me))
            .return_values(ReturnValue::AllNew)
            .send()
            .await
            .map_err(lease_error)?;
        Ok(out
            .attributes
            .as_ref()
            .and_then(from_item)
            .and_then(|l| l.handoff)
            .filter(|h| h != &self.me))
    }

    /// Takes a free or expired lease, provided nobody changed it since it was read.
    pub async fn take(&self, lease: &Lease) -> Result<Lease, LeaseError> {
        let out = self
            .ddb
            .update_item()
            .table_name(&self.table)
            .key(KEY, s(&lease.key))
            .update_expression("SET #o = :me, #n = #n + :one, #r = :now REMOVE #h")
            .condition_expression("#n = :seen")
            .expression_attribute_names("#o", OWNER)
            .expression_attribute_names("#n", COUNTER)
            .expression_attribute_names("#r", RENEWED_AT)
            .expression_attribute_names("#h", HANDOFF)
            .expression_attribute_values(":me", s(&self.me))
            .expression_attribute_values(":one", AttributeValue::N("1".into()))
            .expression_attribute_values(":now", now_millis())
            .expression_attribute_values(":seen", AttributeValue::N(lease.counter.to_string()))
            .return_values(ReturnValue::AllNew)
            .send()
            .await
            .map_err(lease_error)?;
        out.attributes
            .as_ref()
            .and_then(from_item)
            .ok_or_else(|| LeaseError::Failed("taken lease came back empty".into()))
    }

    /// Asks the owner of `lease` to hand it over.
    pub async fn ask(&self, lease: &Lease) -> Result<(), LeaseError> {
        self.ddb
            .update_item()
            .table_name(&self.table)
            .key(KEY, s(&lease.key))
            .update_expression("SET #h = :me")
            .condition_expression("#o = :owner AND attribute_not_exists(#h)")
            .expression_attribute_names("#h", HANDOFF)
            .expression_attribute_names("#o", OWNER)
            .expression_attribute_values(":me", s(&self.me))
            .expression_attribute_values(":owner", s(lease.owner.as_deref().unwrap_or_default()))
            .send()
            .await
            .map(|_| ())
            .map_err(lease_error)
    }

    /// Records progress, and the shard's latest iterator age, on a lease this replica
    /// owns.
    pub async fn checkpoint(
        &self,
        key: &str,
        checkpoint: &Checkpoint,
        age: Option<IteratorAge>,
    ) -> Result<(), LeaseError> {
        let update = self
            .ddb
            .update_item()
            .table_name(&self.table)
            .key(KEY, s(key));
        set_with_age(update, "SET #c = :c", age)
            .condition_expression("#o = :me")
            .expression_attribute_names("#c", CHECKPOINT)
            .expression_attribute_names("#o", OWNER)
            .expression_attribute_values(":c", s(checkpoint.as_str()))
            .expression_attribute_values(":me", s(&self.me))
            .send()
            .await
            .map(|_| ())
            .map_err(lease_error)
    }

    /// Writes the final checkpoint and gives the lease up: to `to`, who asked for it,
    /// or to whoever takes it next.
    pub async fn finish(
        &self,
        key: &str,
        checkpoint: &Checkpoint,
        to: Option<&str>,
    ) -> Result<(), LeaseError> {
        let update = self
            .ddb
            .update_item()
            .table_name(&self.table)
            .key(KEY, s(key))
            .condition_expression("#o = :me")
            .expression_attribute_names("#c", CHECKPOINT)
            .expression_attribute_names("#o", OWNER)
            .expression_attribute_names("#n", COUNTER)
            .expression_attribute_names("#h", HANDOFF)
            .expression_attribute_values(":c", s(checkpoint.as_str()))
            .expression_attribute_values(":me", s(&self.me))
            .expression_attribute_values(":one", AttributeValue::N("1".into()));
        let update = match to {
            Some(to) => update
                .update_expression("SET #c = :c, #o = :to, #n = #n + :one REMOVE #h")
                .expression_attribute_values(":to", s(to)),
            None => update.update_expression("SET #c = :c, #n = #n + :one REMOVE #o, #h"),
        };
        update.send().await.map(|_| ()).map_err(lease_error)
    }

    /// Deletes a lease nobody owns (one whose shard has left the stream).
    pub async fn delete(&self, key: &str) -> Result<(), LeaseError> {
        self.ddb
            .delete_item()
            .table_name(&self.table)
            .key(KEY, s(key))
            .condition_expression("attribute_not_exists(#o)")
            .expression_attribute_names("#o", OWNER)
            .send()
            .await
            .map(|_| ())
            .map_err(lease_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(shard: &str, owner: Option<&str>) -> Lease {
        Lease {
            key: format!("c|{shard}"),
            shard: shard.into(),
            parent: None,
            checkpoint: Checkpoint::TrimHorizon,
            owner: owner.map(str::to_string),
            counter: 1,
            handoff: None,
        }
    }

    fn never(_: &Lease) -> bool {
        false
    }

    fn keys(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| format!("c|{s}")).collect()
    }

    #[test]
    fn checkpoints_round_trip_as_text() {
        for c in [
            Checkpoint::TrimHorizon,
            Checkpoint::Latest,
            Checkpoint::ShardEnd,
            Checkpoint::After("1100000000017454423009".into()),
        ] {
            assert_eq!(Checkpoint::parse(c.as_str()), c);
        }
    }

    #[test]
    fn a_lone_replica_takes_every_free_lease() {
        let leases = [lease("a", None), lease("b", None), lease("c", None)];
        let workable: Vec<&Lease> = leases.iter().collect();
        let p = plan("me", &workable, never);
        assert_eq!(p.take, keys(&["a", "b", "c"]));
        assert_eq!(p.ask, None);
    }

    #[test]
    fn replicas_share_free_leases_and_leave_live_ones_alone() {
        let leases = [
            lease("a", Some("other")),
            lease("b", Some("other")),
            lease("c", None),
            lease("d", None),
        ];
        let workable: Vec<&Lease> = leases.iter().collect();
        let p = plan("me", &workable, never);
        assert_eq!(p.take, keys(&["c", "d"]));
        assert_eq!(p.ask, None);
        // Holding its share already, a replica takes nothing more.
        let mine = [lease("a", Some("me")), lease("b", Some("other"))];
        let workable: Vec<&Lease> = mine.iter().collect();
        assert_eq!(plan("me", &workable, never), Plan::default());
    }

    #[test]
    fn leases_of_dead_replicas_are_taken() {
        let leases = [lease("a", Some("dead")), lease("b", Some("dead"))];
        let workable: Vec<&Lease> = leases.iter().collect();
        let p = plan("me", &workable, |l| l.owner.as_deref() == Some("dead"));
        assert_eq!(p.take, keys(&["a", "b"]));
    }

    #[test]
    fn a_newcomer_asks_the_busiest_replica_for_one_lease_at_a_time() {
        let leases = [
            lease("a", Some("busy")),
            lease("b", Some("busy")),
            lease("c", Some("busy")),
            lease("d", Some("other")),
        ];
        let workable: Vec<&Lease> = leases.iter().collect();
        let p = plan("me", &workable, never);
        assert_eq!(p.take, Vec::<String>::new());
        assert_eq!(p.ask, Some("c|a".into()));
        // While a request is pending, no second one.
        let mut pending = leases.clone();
        pending[1].handoff = Some("me".into());
        let workable: Vec<&Lease> = pending.iter().collect();
        assert_eq!(plan("me", &workable, never).ask, None);
    }

    #[test]
    fn nobody_is_asked_when_no_replica_holds_more_than_its_share() {
        // Three shards, two replicas: a share is two, and 2 + 1 is balanced.
        let leases = [
            lease("a", Some("other")),
            lease("b", Some("other")),
            lease("c", Some("me")),
        ];
        let workable: Vec<&Lease> = leases.iter().collect();
        assert_eq!(plan("me", &workable, never), Plan::default());
        let one = [lease("a", Some("other"))];
        let workable: Vec<&Lease> = one.iter().collect();
        assert_eq!(plan("me", &workable, never), Plan::default());
    }

    #[test]
    fn expiry_is_judged_by_the_counter_standing_still_on_the_local_clock() {
        let start = Instant::now();
        let ttl = Duration::from_secs(10);
        let mut expiry = Expiry::default();
        let mut l = lease("a", Some("other"));
        expiry.observe(std::slice::from_ref(&l), start);
        assert!(!expiry.expired(&l, start + Duration::from_secs(9), ttl));
        // Renewed: the clock starts again.
        l.counter += 1;
        expiry.observe(std::slice::from_ref(&l), start + Duration::from_secs(9));
        assert!(!expiry.expired(&l, start + Duration::from_secs(15), ttl));
        assert!(expiry.expired(&l, start + Duration::from_secs(19), ttl));
        // A free lease is never expired; it is simply free.
        let free = lease("b", None);
        expiry.observe(std::slice::from_ref(&free), start);
        assert!(!expiry.expired(&free, start + Duration::from_secs(60), ttl));
        // A lease not seen before is given a full duration from now.
        let fresh = lease("c", Some("other"));
        assert!(!expiry.expired(&fresh, start + Duration::from_secs(60), ttl));
    }
}
