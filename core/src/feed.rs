//! The feed of recent events a component serves next to its metrics: what happened to
//! each event (accepted, delivered, dead-lettered...), with its ids and latency, never
//! its payload. A fixed number of records is kept; older ones make room.
//!
//! Recording takes one short lock and never waits on a reader: readers copy what they
//! need ([`Feed::since`]) and are woken through a sequence number ([`Feed::watch`]).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// Records a feed keeps by default: a few minutes of a busy worker.
pub const CAPACITY: usize = 2048;

/// One event at one component: metadata only.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Position in its feed, from 1; set when recorded.
    pub seq: u64,
    /// When it was recorded, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// `ingress` or `worker`.
    pub component: String,
    pub pipeline: String,
    /// The webhook (ingress) or source QueueBinding (worker).
    pub source: String,
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub correlation_id: String,
    /// `accepted` (ingress) or the worker's outcome (`delivered`, `dead_lettered`...).
    pub outcome: String,
    /// From the event's time (set at the ingress) to this record.
    pub latency_ms: f64,
    pub trace_id: String,
}

/// A bounded feed, shared by cloning.
#[derive(Clone)]
pub struct Feed {
    ring: Arc<Mutex<Ring>>,
    last: Arc<watch::Sender<u64>>,
}

impl Default for Feed {
    fn default() -> Self {
        Self::new(CAPACITY)
    }
}

impl Feed {
    pub fn new(capacity: usize) -> Self {
        Self {
            ring: Arc::new(Mutex::new(Ring::new(capacity))),
            last: Arc::new(watch::Sender::new(0)),
        }
    }

    /// Adds `record`, stamping its sequence number and time.
    pub fn record(&self, mut record: Record) {
        record.at_ms = now_ms();
        let seq = lock(&self.ring).push(record);
        self.last.send_replace(seq);
    }

    /// Up to `max` records after `seq`, oldest first.
    pub fn since(&self, seq: u64, max: usize) -> Vec<Record> {
        lock(&self.ring).since(seq, max)
    }

    /// The sequence number of the latest record, changing as records arrive.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.last.subscribe()
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
}

/// Milliseconds from an RFC 3339 time to `now_ms`; 0 when the time does not parse.
pub fn latency_ms(time: Option<chrono::DateTime<chrono::Utc>>, now_ms: u64) -> f64 {
    let Some(time) = time else { return 0.0 };
    let from = time.timestamp_millis().max(0) as u64;
    now_ms.saturating_sub(from) as f64
}

/// Recording goes on after a panic elsewhere poisoned the lock: records are plain data.
fn lock(ring: &Mutex<Ring>) -> MutexGuard<'_, Ring> {
    ring.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The records, at most `capacity`, numbered in order.
struct Ring {
    records: VecDeque<Record>,
    capacity: usize,
    last: u64,
}

impl Ring {
    fn new(capacity: usize) -> Self {
        Self {
            records: VecDeque::with_capacity(capacity),
            capacity: capacity.max(1),
            last: 0,
        }
    }

    fn push(&mut self, mut record: Record) -> u64 {
        self.last += 1;
        record.seq = self.last;
        if self.records.len() == self.capacity {
            self.records.pop_front();
        }
        self.records.push_back(record);
        self.last
    }

    fn since(&self, seq: u64, max: usize) -> Vec<Record> {
        // Records are numbered without gaps, so the first one after `seq` is found by
        // arithmetic.
        let first = self.records.front().map_or(0, |r| r.seq);
        let skip = usize::try_from((seq + 1).saturating_sub(first)).unwrap_or(usize::MAX);
        self.records.iter().skip(skip).take(max).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str) -> Record {
        Record {
            id: id.into(),
            ..Default::default()
        }
    }

    fn ids(records: &[Record]) -> Vec<&str> {
        records.iter().map(|r| r.id.as_str()).collect()
    }

    #[test]
    fn keeps_the_latest_records_up_to_its_capacity() {
        let feed = Feed::new(3);
        for id in ["a", "b", "c", "d"] {
            feed.record(record(id));
        }
        let all = feed.since(0, 10);
        assert_eq!(ids(&all), ["b", "c", "d"]);
        assert_eq!(all.iter().map(|r| r.seq).collect::<Vec<_>>(), [2, 3, 4]);
        assert!(all.iter().all(|r| r.at_ms > 0));
    }

    #[test]
    fn reads_what_came_after_a_sequence_number_at_most_max() {
        let feed = Feed::new(10);
        for id in ["a", "b", "c", "d"] {
            feed.record(record(id));
        }
        assert_eq!(ids(&feed.since(2, 10)), ["c", "d"]);
        assert_eq!(ids(&feed.since(0, 2)), ["a", "b"]);
        assert!(feed.since(4, 10).is_empty());
        assert!(feed.since(99, 10).is_empty());
    }

    #[tokio::test]
    async fn a_watcher_wakes_when_a_record_arrives() {
        let feed = Feed::new(2);
        let mut watch = feed.watch();
        feed.record(record("a"));
        tokio::time::timeout(std::time::Duration::from_secs(5), watch.changed())
            .await
            .expect("woken")
            .unwrap();
        assert_eq!(*watch.borrow(), 1);
    }

    #[test]
    fn latency_runs_from_the_event_time() {
        let time = chrono::DateTime::from_timestamp_millis(1_000).unwrap();
        assert_eq!(latency_ms(Some(time), 1_250), 250.0);
        assert_eq!(latency_ms(None, 1_250), 0.0);
        assert_eq!(
            latency_ms(Some(time), 500),
            0.0,
            "clock skew is not negative"
        );
    }

    #[test]
    fn serializes_without_payload_fields() {
        let json = serde_json::to_value(record("a")).unwrap();
        let keys: Vec<_> = json.as_object().unwrap().keys().cloned().collect();
        for key in &keys {
            assert!(
                [
                    "seq",
                    "at_ms",
                    "component",
                    "pipeline",
                    "source",
                    "id",
                    "type",
                    "correlation_id",
                    "outcome",
                    "latency_ms",
                    "trace_id"
                ]
                .contains(&key.as_str()),
                "{key}"
            );
        }
    }
}
