//! The DynamoDB Streams source, as Lambda's event-source mapping and the Kinesis
//! Client Library consume a stream: a coordinator per source discovers shards,
//! keeps leases in the checkpoint table (renewing its own, taking free and expired
//! ones, balancing with other replicas) and runs one reader per leased shard. On
//! shutdown readers finish their batch, checkpoint and release their leases, so
//! another replica takes over at once.

mod batch;
mod config;
mod lanes;
pub mod lease;
mod reader;
pub(crate) mod records;
mod round;
mod shards;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::gate::Gate;
use eventpipe_core::checkpoints::{DEFAULT_LEASE_DURATION, IteratorAge};
use eventpipe_crds::{DeadLetterPolicySpec, DynamoDbStream};
use futures::future::BoxFuture;
use tokio::task::{AbortHandle, JoinSet};
use tokio_util::sync::CancellationToken;

pub use self::config::StreamConfig;
use self::lease::{Expiry, Lease, LeaseError, LeaseTable};
use self::reader::{Control, Reader};
use self::shards::Shard;
use super::{Kind, Source, lock};
use crate::handler::Handler;
use crate::metrics::{self, Source as Labels};
use crate::publish::Publisher;

/// `DescribeStream` pages read at most per discovery.
const MAX_PAGES: usize = 1000;

/// How this replica takes part in sharing streams with the others.
#[derive(Clone, Debug)]
pub struct StreamOptions {
    /// This replica's name in the lease table.
    pub worker_id: String,
    /// How long a lease lasts without renewal before another replica may take it.
    pub lease_duration: Duration,
}

impl Default for StreamOptions {
    fn default() -> Self {
        Self {
            worker_id: default_worker_id(),
            lease_duration: DEFAULT_LEASE_DURATION,
        }
    }
}

/// `<hostname>-<pid>`: the pod name in Kubernetes.
pub fn default_worker_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".into());
    format!("{host}-{}", std::process::id())
}

/// One `dynamodbStream` source of a pipeline.
pub struct StreamSource {
    labels: Labels,
    streams: aws_sdk_dynamodbstreams::Client,
    stream_arn: String,
    table: String,
    spec: DynamoDbStream,
    policy: Option<DeadLetterPolicySpec>,
    dlq: Option<Publisher>,
    handler: Arc<Handler>,
    leases: LeaseTable,
    lease_duration: Duration,
    /// Iterator age per shard read here.
    ages: Mutex<HashMap<String, IteratorAge>>,
}

/// A reader this replica runs, by lease key.
struct Running {
    shard: String,
    control: Arc<Control>,
    task: AbortHandle,
    renewed: Instant,
}

/// The coordinator's view between rounds.
#[derive(Default)]
struct State {
    shards: Vec<Shard>,
    expiry: Expiry,
    readers: HashMap<String, Running>,
    tasks: JoinSet<()>,
}

impl Source for StreamSource {
    fn run(
        self: Arc<Self>,
        permits: Arc<Gate>,
        stop: CancellationToken,
        grace: Duration,
    ) -> BoxFuture<'static, ()> {
        Box::pin(self.consume(permits, stop, grace))
    }

    fn kind(&self) -> Kind {
        Kind::Stream
    }

    fn describe(&self) -> &str {
        &self.stream_arn
    }
}

impl StreamSource {
    /// Consumes until `stop`; then readers finish their batch within `grace`, and
    /// whatever is still delivering after it is abandoned at the last checkpoint.
    async fn consume(
        self: Arc<Self>,
        permits: Arc<Gate>,
        stop: CancellationToken,
        grace: Duration,
    ) {
        let abort = CancellationToken::new();
        let tick = (self.lease_duration / 3).max(Duration::from_millis(100));
        let mut state = State::default();
        let mut draining: Option<Instant> = None;
        loop {
            state.readers.retain(|_, r| !r.task.is_finished());
            self.renew(&mut state.readers).await;
            let wait = match draining {
                None => {
                    self.sync(&mut state, &permits, &stop, &abort).await;
                    tick
                }
                Some(since) if state.readers.is_empty() => {
                    tracing::debug!(after = ?since.elapsed(), "all shards released");
                    break;
                }
                Some(since) => {
                    let left = grace.saturating_sub(since.elapsed());
                    if left.is_zero() && !abort.is_cancelled() {
                        tracing::info!(stream = %self.stream_arn, "grace period over; abandoning deliveries at the last checkpoint");
                        abort.cancel();
                    }
                    tick.min(left.max(Duration::from_millis(100)))
                }
            };
            self.gauge_leases(state.readers.len());
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.cancelled(), if draining.is_none() => {}
                Some(_) = state.tasks.join_next(), if !state.tasks.is_empty() => {}
            }
            if stop.is_cancelled() && draining.is_none() {
                draining = Some(Instant::now());
            }
        }
        while state.tasks.join_next().await.is_some() {}
        self.gauge_leases(0);
    }

    fn gauge_leases(&self, n: usize) {
        self.handler
            .metrics
            .leases_owned
            .get_or_create(&self.labels)
            .set(n as i64);
    }

    /// Renews the leases being read; a reader whose lease is gone, or could not be
    /// renewed for most of a lease duration, stops so that another replica can go on.
    async fn renew(&self, readers: &mut HashMap<String, Running>) {
        for (key, r) in readers.iter_mut() {
            if r.control.lost.is_cancelled() {
                continue;
            }
            match self.leases.renew(key, self.age(&r.shard)).await {
                Ok(handoff) => {
                    r.renewed = Instant::now();
                    if let Some(to) = handoff.filter(|_| !r.control.finish.is_cancelled()) {
                        tracing::info!(shard = %r.shard, to = %to, "handing the shard over after this batch");
                        r.control.hand_to(to);
                    }
                }
                // A finishing reader may have given its lease up already.
                Err(LeaseError::Lost) if r.control.finish.is_cancelled() => {
                    r.control.lost.cancel();
                }
                Err(LeaseError::Lost) => {
                    tracing::warn!(shard = %r.shard, "lease taken by another replica");
                    r.control.lost.cancel();
                }
                Err(LeaseError::Failed(e)) => {
                    tracing::warn!(shard = %r.shard, error = %e, "lease not renewed");
                    if r.renewed.elapsed() >= self.lease_duration * 2 / 3 {
                        tracing::warn!(shard = %r.shard, "stopping: the lease may expire before it is renewed");
                        r.control.lost.cancel();
                    }
                }
            }
        }
    }

    /// One round of discovery and balancing: lease new shards, drop leases of trimmed
    /// ones, and take this replica's share of the shards that may be read now.
    async fn sync(
        self: &Arc<Self>,
        state: &mut State,
        permits: &Arc<Gate>,
        stop: &CancellationToken,
        abort: &CancellationToken,
    ) {
        match self.discover().await {
            Ok(found) => state.shards = found,
            Err(e) => {
                tracing::warn!(stream = %self.stream_arn, error = %e, "shard discovery failed");
                return;
            }
        }
        let Some(leases) = self.leases_with_new_shards(&state.shards).await else {
            return;
        };
        for l in shards::obsolete(&state.shards, &leases) {
            if self.leases.delete(&l.key).await.is_ok() {
                tracing::info!(shard = %l.shard, "lease of a trimmed shard removed");
            }
        }
        let now = Instant::now();
        state.expiry.observe(&leases, now);
        let workable = shards::workable(&state.shards, &leases);
        let me = self.leases.me();
        let plan = lease::plan(me, &workable, |l| {
            l.owner.as_deref() != Some(me) && state.expiry.expired(l, now, self.lease_duration)
        });
        // Leases still in this replica's name with no reader (after a restart under
        // the same name) are taken again like any other, bumping the counter.
        let orphans: Vec<String> = workable
            .iter()
            .filter(|l| l.owner.as_deref() == Some(me) && !state.readers.contains_key(&l.key))
            .map(|l| l.key.clone())
            .collect();
        for key in orphans.into_iter().chain(plan.take) {
            let Some(l) = leases.iter().find(|l| l.key == key) else {
                continue;
            };
            match self.leases.take(l).await {
                Ok(taken) => self.start(taken, state, permits, stop, abort),
                Err(LeaseError::Lost) => {
                    tracing::debug!(shard = %l.shard, "another replica took the lease first")
                }
                Err(e) => tracing::warn!(shard = %l.shard, error = %e, "lease not taken"),
            }
        }
        if let Some(l) = plan
            .ask
            .and_then(|key| leases.iter().find(|l| l.key == key))
        {
            match self.leases.ask(l).await {
                Ok(()) => {
                    tracing::info!(shard = %l.shard, owner = ?l.owner, "asked for the shard to balance the load")
                }
                Err(e) => tracing::debug!(shard = %l.shard, error = %e, "hand-off not requested"),
            }
        }
    }

    /// The consumer's leases, after creating those of shards that have none.
    async fn leases_with_new_shards(&self, found: &[Shard]) -> Option<Vec<Lease>> {
        let scan = |what| async move {
            self.leases
                .scan()
                .await
                .map_err(|e| tracing::warn!(error = %e, "{what}"))
                .ok()
        };
        let leases = scan("leases not read").await?;
        let new = shards::new_leases(found, &leases, self.spec.starting_position);
        if new.is_empty() {
            return Some(leases);
        }
        for (shard, at) in new {
            tracing::info!(source = %self.labels.source, shard = %shard.id, parent = ?shard.parent, start = at.as_str(), "new shard");
            if let Err(e) = self
                .leases
                .create(&shard.id, shard.parent.as_deref(), &at)
                .await
            {
                tracing::warn!(shard = %shard.id, error = %e, "lease not created");
            }
        }
        scan("leases not read").await
    }

    fn start(
        self: &Arc<Self>,
        lease: Lease,
        state: &mut State,
        permits: &Arc<Gate>,
        stop: &CancellationToken,
        abort: &CancellationToken,
    ) {
        tracing::info!(source = %self.labels.source, shard = %lease.shard, checkpoint = lease.checkpoint.as_str(), "reading shard");
        let control = Arc::new(Control::new(stop.child_token(), abort.clone()));
        let reader = Reader {
            source: self.clone(),
            lease: lease.clone(),
            control: control.clone(),
            permits: permits.clone(),
        };
        let task = state.tasks.spawn(reader.run());
        state.readers.insert(
            lease.key,
            Running {
                shard: lease.shard,
                control,
                task,
                renewed: Instant::now(),
            },
        );
    }

    /// Every shard of the stream (`DescribeStream`, page by page).
    async fn discover(&self) -> Result<Vec<Shard>, String> {
        let mut found: Vec<Shard> = vec![];
        let mut start: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let out = self
                .streams
                .describe_stream()
                .stream_arn(&self.stream_arn)
                .set_exclusive_start_shard_id(start.clone())
                .send()
                .await
                .map_err(|e| aws_sdk_dynamodbstreams::error::DisplayErrorContext(e).to_string())?;
            let Some(description) = out.stream_description else {
                return Err("DescribeStream returned no description".into());
            };
            for s in description.shards().iter().filter_map(Shard::from_sdk) {
                if !found.iter().any(|f| f.id == s.id) {
                    found.push(s);
                }
            }
            match description.last_evaluated_shard_id {
                Some(last) if start.as_ref() != Some(&last) => start = Some(last),
                _ => return Ok(found),
            }
        }
        Err(format!("more than {MAX_PAGES} pages of shards"))
    }

    /// Sets a shard's iterator age from the newest record read (none: caught up) and
    /// the source's lag, the largest age among its shards read here.
    fn report_age(&self, shard: &str, newest: Option<SystemTime>) {
        let age = iterator_age(newest, SystemTime::now());
        self.handler
            .metrics
            .iterator_age
            .get_or_create(&self.shard_labels(shard))
            .set(age.age.as_secs_f64());
        let mut ages = lock(&self.ages);
        ages.insert(shard.to_string(), age);
        self.set_lag(&ages);
    }

    /// The shard's latest iterator age, for the lease writes that record it.
    fn age(&self, shard: &str) -> Option<IteratorAge> {
        lock(&self.ages).get(shard).copied()
    }

    /// Stops reporting a shard no longer read here.
    fn forget_age(&self, shard: &str) {
        self.handler
            .metrics
            .iterator_age
            .remove(&self.shard_labels(shard));
        let mut ages = lock(&self.ages);
        ages.remove(shard);
        self.set_lag(&ages);
    }

    fn set_lag(&self, ages: &HashMap<String, IteratorAge>) {
        let lag = ages
            .values()
            .map(|a| a.age.as_secs_f64())
            .fold(0.0, f64::max);
        self.handler
            .metrics
            .stream_lag
            .get_or_create(&self.labels)
            .set(lag);
    }

    fn shard_labels(&self, shard: &str) -> metrics::Shard {
        metrics::Shard {
            pipeline: self.labels.pipeline.clone(),
            source: self.labels.source.clone(),
            shard: shard.to_string(),
        }
    }
}

/// The iterator age at `now` given the creation time of the newest record read: zero
/// when none was read (caught up) or when the writer's clock is ahead of ours.
pub fn iterator_age(newest: Option<SystemTime>, now: SystemTime) -> IteratorAge {
    let age = newest
        .and_then(|at| now.duration_since(at).ok())
        .unwrap_or_default();
    IteratorAge { age, at: now }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_iterator_age_is_how_old_the_newest_record_read_is() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let age = |newest| iterator_age(newest, now);
        assert_eq!(
            age(Some(now - Duration::from_secs(7))).age,
            Duration::from_secs(7)
        );
        assert_eq!(age(None).age, Duration::ZERO, "caught up");
        assert_eq!(age(Some(now + Duration::from_secs(2))).age, Duration::ZERO);
        assert_eq!(age(None).at, now, "measured now");
    }
}
