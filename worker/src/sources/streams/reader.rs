//! Reading one leased shard: a shard iterator from the checkpoint, `GetRecords` in
//! batches paced as AWS recommends (gathered for `batchWindow` when set), each batch
//! delivered and checkpointed up to its last record finished in order,
//! expired iterators and transient errors recovered from the checkpoint, and at the
//! end the lease given up: finished at the shard's end, else released or handed to
//! the replica that asked for it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::gate::Gate;
use aws_sdk_dynamodbstreams::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodbstreams::types::{Record, ShardIteratorType};
use tokio_util::sync::CancellationToken;

use super::StreamSource;
use super::lease::{Checkpoint, Lease, LeaseError};
use super::records;
use crate::sources::lock;

/// Wait after an empty `GetRecords`: about one call per shard per second when idle.
const IDLE: Duration = Duration::from_secs(1);
/// Least time between `GetRecords` calls on a busy shard (at most four a second).
const BUSY: Duration = Duration::from_millis(250);
/// Longest wait after repeated errors.
const MAX_ERROR_PAUSE: Duration = Duration::from_secs(30);

/// How the coordinator steers a reader.
pub struct Control {
    /// Finish the current batch, checkpoint and give the lease up (shutdown, hand-off).
    pub finish: CancellationToken,
    /// Abandon in-flight deliveries now: the grace period is over.
    pub abort: CancellationToken,
    /// The lease is someone else's: stop without writing anything.
    pub lost: CancellationToken,
    /// The replica to hand the lease to when finishing.
    handoff: Mutex<Option<String>>,
}

impl Control {
    pub fn new(finish: CancellationToken, abort: CancellationToken) -> Self {
        Self {
            finish,
            abort,
            lost: CancellationToken::new(),
            handoff: Mutex::default(),
        }
    }

    pub fn hand_to(&self, to: String) {
        *lock(&self.handoff) = Some(to);
        self.finish.cancel();
    }

    pub fn stopping(&self) -> bool {
        self.finish.is_cancelled() || self.lost.is_cancelled()
    }

    /// Sleeps for `d` unless told to stop first; false when stopping.
    pub async fn pause(&self, d: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(d) => !self.stopping(),
            _ = self.finish.cancelled() => false,
            _ = self.lost.cancelled() => false,
        }
    }
}

/// Why reading from a shard failed.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadError {
    /// The iterator is older than 15 minutes: get a new one from the checkpoint.
    Expired,
    /// The position is past the 24-hour retention: those records are gone.
    Trimmed,
    /// The shard (or the stream) no longer exists.
    Gone,
    Other(String),
}

impl ReadError {
    pub fn classify(code: Option<&str>, message: String) -> Self {
        match code {
            Some("ExpiredIteratorException") => Self::Expired,
            Some("TrimmedDataAccessException") => Self::Trimmed,
            Some("ResourceNotFoundException") => Self::Gone,
            _ => Self::Other(message),
        }
    }
}

fn read_error<E, R>(e: SdkError<E, R>) -> ReadError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let code = e.code().map(str::to_string);
    let message = aws_sdk_dynamodbstreams::error::DisplayErrorContext(e).to_string();
    ReadError::classify(code.as_deref(), message)
}

/// The wait before the next `GetRecords`, given how many records the last one
/// returned and how long ago it was made.
pub fn pace(records: usize, since_call: Duration) -> Duration {
    if records == 0 {
        IDLE
    } else {
        BUSY.saturating_sub(since_call)
    }
}

/// The wait after the `n`-th error in a row: 1 s, doubling, at most 30 s.
pub fn error_pause(n: u32) -> Duration {
    let secs = 1u64 << n.saturating_sub(1).min(5);
    Duration::from_secs(secs).min(MAX_ERROR_PAUSE)
}

/// What to do after a read error.
enum Recovery {
    Retry,
    ShardGone,
}

pub struct Reader {
    pub source: Arc<StreamSource>,
    pub lease: Lease,
    pub control: Arc<Control>,
    pub permits: Arc<Gate>,
}

impl Reader {
    pub fn shard(&self) -> &str {
        &self.lease.shard
    }

    pub async fn run(self) {
        let mut at = self.lease.checkpoint.clone();
        let ended = self.read(&mut at).await;
        self.source.forget_age(self.shard());
        if self.control.lost.is_cancelled() {
            tracing::warn!(
                shard = self.shard(),
                "stopped reading: the lease is another replica's now"
            );
            return;
        }
        self.give_up(ended, at).await;
    }

    /// Reads and delivers until the shard ends (true) or the reader is told to stop.
    async fn read(&self, at: &mut Checkpoint) -> bool {
        let mut errors = 0;
        while !self.control.stopping() {
            let mut iterator = match self.iterator(at).await {
                Ok(it) => it,
                Err(e) => match self.recover(e, at, &mut errors).await {
                    Recovery::Retry => continue,
                    Recovery::ShardGone => return true,
                },
            };
            while !self.control.stopping() {
                let called = Instant::now();
                let (records, next) = match self.gather(iterator).await {
                    Ok(page) => page,
                    Err(e) => match self.recover(e, at, &mut errors).await {
                        Recovery::Retry => break,
                        Recovery::ShardGone => return true,
                    },
                };
                errors = 0;
                let newest = records.last().and_then(records::created);
                self.source.report_age(self.shard(), newest);
                if !self.deliver_and_save(&records, at).await {
                    return false;
                }
                // A closed shard has no next iterator once all its records are read.
                let Some(next) = next else { return true };
                iterator = next;
                if !self
                    .control
                    .pause(pace(records.len(), called.elapsed()))
                    .await
                {
                    return false;
                }
            }
        }
        false
    }

    /// Delivers a batch and checkpoints what was finished; false when reading must stop.
    async fn deliver_and_save(&self, records: &[Record], at: &mut Checkpoint) -> bool {
        if records.is_empty() {
            return true;
        }
        let progress = self.deliver(records).await;
        if progress.done > 0 {
            let last = records::sequence_number(&records[progress.done - 1]);
            *at = Checkpoint::After(last.to_string());
            let age = self.source.age(self.shard());
            match self
                .source
                .leases
                .checkpoint(&self.lease.key, at, age)
                .await
            {
                Ok(()) => {}
                Err(LeaseError::Lost) => {
                    self.control.lost.cancel();
                    return false;
                }
                // The next checkpoint (or the final one) covers these records too.
                Err(e) => {
                    tracing::warn!(shard = self.shard(), error = %e, "checkpoint not written")
                }
            }
        }
        !progress.interrupted
    }

    async fn recover(&self, e: ReadError, at: &mut Checkpoint, errors: &mut u32) -> Recovery {
        match e {
            ReadError::Expired => {
                tracing::info!(
                    shard = self.shard(),
                    "shard iterator expired; continuing from the checkpoint"
                );
            }
            ReadError::Trimmed => {
                tracing::error!(
                    shard = self.shard(),
                    checkpoint = at.as_str(),
                    "records after the checkpoint were trimmed from the stream (older than 24 hours) and are lost; continuing from the oldest record"
                );
                *at = Checkpoint::TrimHorizon;
            }
            ReadError::Gone => {
                tracing::warn!(shard = self.shard(), "shard no longer in the stream");
                return Recovery::ShardGone;
            }
            ReadError::Other(message) => {
                *errors += 1;
                tracing::warn!(shard = self.shard(), error = %message, "reading the stream failed; retrying from the checkpoint");
                self.control.pause(error_pause(*errors)).await;
            }
        }
        Recovery::Retry
    }

    async fn iterator(&self, at: &Checkpoint) -> Result<String, ReadError> {
        let request = self
            .source
            .streams
            .get_shard_iterator()
            .stream_arn(&self.source.stream_arn)
            .shard_id(self.shard());
        let request = match at {
            Checkpoint::TrimHorizon => request.shard_iterator_type(ShardIteratorType::TrimHorizon),
            Checkpoint::Latest => request.shard_iterator_type(ShardIteratorType::Latest),
            Checkpoint::After(seq) => request
                .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                .sequence_number(seq),
            Checkpoint::ShardEnd => return Err(ReadError::Gone),
        };
        let out = request.send().await.map_err(read_error)?;
        out.shard_iterator.ok_or(ReadError::Gone)
    }

    /// One batch: `GetRecords` until `batchSize` records, the shard's end, or
    /// `batchWindow` after the first call (paced as when idle or busy).
    async fn gather(
        &self,
        mut iterator: String,
    ) -> Result<(Vec<Record>, Option<String>), ReadError> {
        let want = self.source.spec.batch_size.clamp(1, 1000) as usize;
        let window = self.source.spec.batch_window.as_ref().map(|w| w.as_std());
        let started = Instant::now();
        let mut records = vec![];
        loop {
            let called = Instant::now();
            let (got, next) = self.page(iterator, want - records.len()).await?;
            let pace = pace(got.len(), called.elapsed());
            records.extend(got);
            let Some(next) = next else {
                return Ok((records, None));
            };
            let Some(window) = window else {
                return Ok((records, Some(next)));
            };
            let left = window.saturating_sub(started.elapsed());
            if records.len() >= want || left <= pace || !self.control.pause(pace).await {
                return Ok((records, Some(next)));
            }
            iterator = next;
        }
    }

    async fn page(
        &self,
        iterator: String,
        limit: usize,
    ) -> Result<(Vec<Record>, Option<String>), ReadError> {
        let out = self
            .source
            .streams
            .get_records()
            .shard_iterator(iterator)
            .limit(limit.clamp(1, 1000) as i32)
            .send()
            .await
            .map_err(read_error)?;
        Ok((out.records.unwrap_or_default(), out.next_shard_iterator))
    }

    /// Writes the final checkpoint and lets the lease go: finished at the shard's
    /// end, else to the replica that asked for it, or free for anyone.
    async fn give_up(&self, ended: bool, at: Checkpoint) {
        let (at, to) = match ended {
            true => (Checkpoint::ShardEnd, None),
            false => (at, lock(&self.control.handoff).clone()),
        };
        for attempt in 1..=3 {
            match self
                .source
                .leases
                .finish(&self.lease.key, &at, to.as_deref())
                .await
            {
                Ok(()) => {
                    tracing::info!(
                        shard = self.shard(),
                        checkpoint = at.as_str(),
                        to = to.as_deref().unwrap_or("any replica"),
                        "lease given up"
                    );
                    return;
                }
                Err(LeaseError::Lost) => return,
                Err(e) if attempt == 3 => {
                    tracing::warn!(shard = self.shard(), error = %e, "lease not given up; it expires instead");
                }
                Err(_) => tokio::time::sleep(error_pause(attempt)).await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_shards_are_polled_about_once_a_second_and_busy_ones_at_most_four_times() {
        assert_eq!(pace(0, Duration::ZERO), Duration::from_secs(1));
        assert_eq!(pace(0, Duration::from_secs(5)), Duration::from_secs(1));
        assert_eq!(
            pace(100, Duration::from_millis(100)),
            Duration::from_millis(150)
        );
        assert_eq!(pace(100, Duration::from_secs(2)), Duration::ZERO);
    }

    #[test]
    fn error_pauses_double_up_to_thirty_seconds() {
        let secs: Vec<u64> = (1..=8).map(|n| error_pause(n).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 30, 30, 30]);
    }

    #[test]
    fn stream_errors_are_told_apart_by_their_code() {
        let c = |code| ReadError::classify(Some(code), "m".into());
        assert_eq!(c("ExpiredIteratorException"), ReadError::Expired);
        assert_eq!(c("TrimmedDataAccessException"), ReadError::Trimmed);
        assert_eq!(c("ResourceNotFoundException"), ReadError::Gone);
        assert_eq!(c("LimitExceededException"), ReadError::Other("m".into()));
        assert_eq!(
            ReadError::classify(None, "timeout".into()),
            ReadError::Other("timeout".into())
        );
    }

    #[tokio::test]
    async fn a_hand_off_request_finishes_the_reader_and_names_the_new_owner() {
        let control = Control::new(CancellationToken::new(), CancellationToken::new());
        assert!(!control.stopping());
        control.hand_to("replica-2".into());
        assert!(control.stopping());
        assert_eq!(
            control.handoff.lock().unwrap().as_deref(),
            Some("replica-2")
        );
        assert!(
            !control.pause(Duration::from_secs(60)).await,
            "pauses end at once"
        );
    }
}
