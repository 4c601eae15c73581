//! What the console remembers of the feeds it follows, and what it makes of it: per
//! pipeline the counts, rates over the last seconds, latency percentiles and recent
//! events; across pipelines, every event of a correlation id in order. Bounded
//! throughout; pure (time is passed in).

use std::collections::{BTreeMap, VecDeque};

use eventpipe_core::feed::Record;
use serde::Serialize;

/// Records kept for the correlation search, all pipelines together.
const KEPT: usize = 20_000;
/// Recent events shown per pipeline.
const RECENT: usize = 25;
/// Latencies of a pipeline's last finished events, for its percentiles.
const LATENCIES: usize = 500;
/// Seconds of rates kept for the charts.
pub const SECONDS: usize = 60;
/// Seconds the rate shown is averaged over.
const RATE_OVER: u64 = 5;

/// What the feeds said, remembered.
#[derive(Default)]
pub struct History {
    all: VecDeque<Record>,
    pipelines: BTreeMap<String, Pipeline>,
}

#[derive(Default)]
struct Pipeline {
    accepted: u64,
    finished: u64,
    recent: VecDeque<Record>,
    latencies: VecDeque<f64>,
    /// (second, in, out), oldest first, at most [`SECONDS`].
    seconds: VecDeque<(u64, u32, u32)>,
}

/// A pipeline's figures at one moment.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Stats {
    /// Events accepted by its webhooks.
    pub accepted: u64,
    /// Events its workers finished with (delivered, filtered, duplicate, dead-lettered...).
    pub finished: u64,
    /// Per second, over the last few seconds.
    pub in_rate: f64,
    pub out_rate: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// Events in and out in each of the last [`SECONDS`] seconds, oldest first.
    pub in_series: Vec<u32>,
    pub out_series: Vec<u32>,
    /// The latest events, newest first.
    pub recent: Vec<Record>,
}

/// Whether a record is an event arriving (accepted at a webhook).
fn is_in(r: &Record) -> bool {
    r.component == "ingress"
}

/// Whether a record is the end of an event at a worker: not a try to be repeated.
fn is_out(r: &Record) -> bool {
    r.component == "worker" && !matches!(r.outcome.as_str(), "retried" | "handed_back")
}

impl History {
    pub fn add(&mut self, record: Record) {
        let p = self.pipelines.entry(record.pipeline.clone()).or_default();
        let (into, out) = (is_in(&record), is_out(&record));
        p.accepted += u64::from(into);
        p.finished += u64::from(out);
        if out {
            push_bounded(&mut p.latencies, record.latency_ms, LATENCIES);
        }
        p.count(record.at_ms / 1000, u32::from(into), u32::from(out));
        push_bounded(&mut p.recent, record.clone(), RECENT);
        push_bounded(&mut self.all, record, KEPT);
    }

    /// The figures of `pipeline` at `now_ms`.
    pub fn stats(&self, pipeline: &str, now_ms: u64) -> Stats {
        let Some(p) = self.pipelines.get(pipeline) else {
            return Stats {
                in_series: vec![0; SECONDS],
                out_series: vec![0; SECONDS],
                ..Default::default()
            };
        };
        let (in_series, out_series) = p.series(now_ms / 1000);
        // The current second is still filling: the rate is over the seconds before it.
        let rate = |s: &[u32]| {
            let done = &s[..s.len() - 1];
            let last = &done[done.len() - RATE_OVER as usize..];
            f64::from(last.iter().sum::<u32>()) / RATE_OVER as f64
        };
        let mut latencies: Vec<f64> = p.latencies.iter().copied().collect();
        latencies.sort_by(f64::total_cmp);
        Stats {
            accepted: p.accepted,
            finished: p.finished,
            in_rate: rate(&in_series),
            out_rate: rate(&out_series),
            p50_ms: percentile(&latencies, 0.5),
            p99_ms: percentile(&latencies, 0.99),
            in_series,
            out_series,
            recent: p.recent.iter().rev().cloned().collect(),
        }
    }

    /// Every remembered event of `correlation_id`, across pipelines, in the order it
    /// happened (at the same millisecond, the webhook before the worker).
    pub fn search(&self, correlation_id: &str) -> Vec<Record> {
        let mut found: Vec<Record> = (self.all.iter())
            .filter(|r| r.correlation_id == correlation_id)
            .cloned()
            .collect();
        found.sort_by_key(|r| (r.at_ms, !is_in(r)));
        found
    }
}

impl Pipeline {
    /// Adds to the count of `second`, kept in order (feeds of several components
    /// interleave); older than the chart, a record counts in the totals only.
    fn count(&mut self, second: u64, into: u32, out: u32) {
        match self.seconds.binary_search_by_key(&second, |(s, ..)| *s) {
            Ok(at) => {
                self.seconds[at].1 += into;
                self.seconds[at].2 += out;
            }
            Err(0) if self.seconds.len() == SECONDS => {}
            Err(at) => {
                self.seconds.insert(at, (second, into, out));
                if self.seconds.len() > SECONDS {
                    self.seconds.pop_front();
                }
            }
        }
    }

    /// In and out per second for the [`SECONDS`] seconds up to `now`, zero-filled.
    fn series(&self, now: u64) -> (Vec<u32>, Vec<u32>) {
        let start = now + 1 - SECONDS as u64;
        let (mut ins, mut outs) = (vec![0; SECONDS], vec![0; SECONDS]);
        for (s, i, o) in &self.seconds {
            if let Some(at) = s.checked_sub(start).map(|d| d as usize)
                && at < SECONDS
            {
                ins[at] = *i;
                outs[at] = *o;
            }
        }
        (ins, outs)
    }
}

fn push_bounded<T>(queue: &mut VecDeque<T>, item: T, cap: usize) {
    if queue.len() == cap {
        queue.pop_front();
    }
    queue.push_back(item);
}

/// The `p` quantile of sorted `values` (nearest rank).
fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    let last = sorted.len().checked_sub(1)?;
    Some(sorted[(last as f64 * p).round() as usize])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(component: &str, pipeline: &str, outcome: &str, at_ms: u64) -> Record {
        Record {
            component: component.into(),
            pipeline: pipeline.into(),
            outcome: outcome.into(),
            at_ms,
            correlation_id: "c".into(),
            ..Default::default()
        }
    }

    const NOW: u64 = 1_000_000_000;

    #[test]
    fn counts_accepted_and_finished_but_not_retries() {
        let mut h = History::default();
        h.add(record("ingress", "p", "accepted", NOW));
        h.add(record("worker", "p", "retried", NOW));
        h.add(record("worker", "p", "delivered", NOW));
        h.add(record("worker", "p", "dead_lettered", NOW));
        let s = h.stats("p", NOW);
        assert_eq!((s.accepted, s.finished), (1, 2));
        assert_eq!(s.recent.len(), 4);
        assert_eq!(s.recent[0].outcome, "dead_lettered", "newest first");
    }

    #[test]
    fn rates_are_over_the_last_complete_seconds() {
        let mut h = History::default();
        for i in 0..10 {
            h.add(record("ingress", "p", "accepted", NOW - 2_000 + i));
        }
        h.add(record("ingress", "p", "accepted", NOW));
        let s = h.stats("p", NOW);
        assert_eq!(s.in_rate, 10.0 / 5.0);
        assert_eq!(s.in_series.len(), SECONDS);
        assert_eq!(s.in_series[SECONDS - 1], 1, "this second");
        assert_eq!(s.in_series[SECONDS - 3], 10);
        let later = h.stats("p", NOW + 120_000);
        assert_eq!(later.in_rate, 0.0);
        assert_eq!(later.accepted, 11, "totals stay");
    }

    #[test]
    fn latency_percentiles_come_from_finished_events() {
        let mut h = History::default();
        for ms in 1..=100 {
            h.add(Record {
                latency_ms: f64::from(ms),
                ..record("worker", "p", "delivered", NOW)
            });
        }
        let s = h.stats("p", NOW);
        assert_eq!(s.p50_ms, Some(51.0));
        assert_eq!(s.p99_ms, Some(99.0));
        assert_eq!(h.stats("q", NOW).p50_ms, None, "unknown pipeline");
    }

    #[test]
    fn a_correlation_id_is_found_across_pipelines_in_order() {
        let mut h = History::default();
        h.add(record("worker", "counts", "delivered", NOW + 5));
        h.add(record("worker", "ingest", "delivered", NOW));
        h.add(record("ingress", "ingest", "accepted", NOW));
        h.add(Record {
            correlation_id: "other".into(),
            ..record("ingress", "ingest", "accepted", NOW)
        });
        let path: Vec<_> = h
            .search("c")
            .iter()
            .map(|r| format!("{}:{}", r.pipeline, r.component))
            .collect();
        assert_eq!(path, ["ingest:ingress", "ingest:worker", "counts:worker"]);
        assert!(h.search("nothing").is_empty());
    }

    #[test]
    fn memory_is_bounded() {
        let mut h = History::default();
        for i in 0..(KEPT as u64 + 10) {
            h.add(record("ingress", "p", "accepted", NOW + i * 1000));
        }
        let p = &h.pipelines["p"];
        assert_eq!(h.all.len(), KEPT);
        assert_eq!(p.recent.len(), RECENT);
        assert_eq!(p.seconds.len(), SECONDS);
    }
}
