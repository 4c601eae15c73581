//! The console's shared state: the pipelines it shows, what their feeds said, the
//! depths of their queues, and a counter that moves whenever any of it changes, for
//! the pages that follow it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use eventpipe_core::feed::{self, Record};
use serde::Serialize;
use tokio::sync::watch;

use crate::dead_letters::DeadLetterQueue;
use crate::history::{History, Stats};
use crate::stream_lag::LagSource;

/// A pipeline as its home describes it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Pipeline {
    pub name: String,
    /// e.g. `Ready`, or `Running` in local mode.
    pub status: String,
    pub conditions: Vec<Condition>,
    pub replicas: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Condition {
    #[serde(rename = "type")]
    pub kind: String,
    pub status: String,
    pub message: String,
}

/// Messages waiting in a pipeline's source queues and dead-letter queues, and how far
/// behind its stream sources are read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Depths {
    pub queue: i64,
    pub dead_letters: i64,
    /// The largest iterator age over its stream sources; none without one measured.
    pub stream_lag_seconds: Option<i64>,
}

/// How the console may be used.
#[derive(Clone, Debug, Default)]
pub struct Settings {
    /// The token a redrive needs; none makes the console read-only.
    pub token: Option<String>,
    /// Where trace ids link to (Jaeger's UI).
    pub jaeger_url: Option<String>,
    /// Reached through a port-forward on the reader's loopback, whatever it listens
    /// on: then only requests naming a loopback host are answered.
    pub port_forwarded: bool,
}

/// What a page is sent, whole, whenever something changed.
#[derive(Serialize)]
pub struct Snapshot {
    pub pipelines: Vec<PipelineView>,
    /// Whether a redrive can be authorised here at all.
    pub redrive: bool,
    pub jaeger_url: Option<String>,
}

#[derive(Serialize)]
pub struct PipelineView {
    #[serde(flatten)]
    pub pipeline: Pipeline,
    pub stats: Stats,
    pub depths: Option<Depths>,
    /// Whether it has dead-letter queues the console can list and redrive.
    pub dead_letters: bool,
}

/// Shared by cloning.
#[derive(Clone)]
pub struct Console {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    /// Fixed locally; in a cluster, replaced as the pipelines change.
    pipelines: Mutex<Vec<Pipeline>>,
    pub settings: Settings,
    /// Per pipeline, its SQS sources' dead-letter queues (replaced in a cluster).
    queues: Mutex<BTreeMap<String, Arc<Vec<DeadLetterQueue>>>>,
    /// Per pipeline, where its stream lag is read (locally; in a cluster the depths
    /// come with it).
    lags: Mutex<BTreeMap<String, Arc<Vec<LagSource>>>>,
    history: Mutex<History>,
    depths: Mutex<BTreeMap<String, Depths>>,
    changed: watch::Sender<u64>,
}

impl Console {
    pub fn new(
        pipelines: Vec<Pipeline>,
        queues: BTreeMap<String, Vec<DeadLetterQueue>>,
        settings: Settings,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                pipelines: Mutex::new(pipelines),
                settings,
                queues: Mutex::new(shared(queues)),
                lags: Mutex::default(),
                history: Mutex::default(),
                depths: Mutex::default(),
                changed: watch::Sender::new(0),
            }),
        }
    }

    /// Remembers records from a feed.
    pub fn add(&self, records: Vec<Record>) {
        if records.is_empty() {
            return;
        }
        let mut history = lock(&self.inner.history);
        for r in records {
            history.add(r);
        }
        drop(history);
        self.touch();
    }

    pub fn set_depths(&self, pipeline: &str, depths: Depths) {
        let before = lock(&self.inner.depths).insert(pipeline.to_string(), depths);
        if before != Some(depths) {
            self.touch();
        }
    }

    /// The depths last set for `pipeline`.
    pub fn depths_of(&self, pipeline: &str) -> Option<Depths> {
        lock(&self.inner.depths).get(pipeline).copied()
    }

    /// Replaces the pipelines shown (and forgets the depths of those gone).
    pub fn set_pipelines(&self, pipelines: Vec<Pipeline>) {
        let mut shown = lock(&self.inner.pipelines);
        if *shown == pipelines {
            return;
        }
        lock(&self.inner.depths).retain(|name, _| pipelines.iter().any(|p| &p.name == name));
        *shown = pipelines;
        drop(shown);
        self.touch();
    }

    /// Replaces the dead-letter queues of every pipeline.
    pub fn set_queues(&self, queues: BTreeMap<String, Vec<DeadLetterQueue>>) {
        let mut held = lock(&self.inner.queues);
        let same = held.keys().eq(queues.keys());
        *held = shared(queues);
        drop(held);
        if !same {
            self.touch();
        }
    }

    /// The dead-letter queues of `pipeline`, if it has any.
    pub fn queues_of(&self, pipeline: &str) -> Option<Arc<Vec<DeadLetterQueue>>> {
        lock(&self.inner.queues).get(pipeline).cloned()
    }

    /// The pipelines with dead-letter queues.
    pub fn with_queues(&self) -> Vec<String> {
        lock(&self.inner.queues).keys().cloned().collect()
    }

    /// Where each pipeline's stream lag is read.
    pub fn set_lag_sources(&self, lags: BTreeMap<String, Vec<LagSource>>) {
        *lock(&self.inner.lags) = shared(lags);
    }

    pub fn lag_sources_of(&self, pipeline: &str) -> Option<Arc<Vec<LagSource>>> {
        lock(&self.inner.lags).get(pipeline).cloned()
    }

    /// The pipelines whose depths or stream lag are read here.
    pub fn with_depths(&self) -> Vec<String> {
        let mut names = self.with_queues();
        names.extend(lock(&self.inner.lags).keys().cloned());
        names.sort();
        names.dedup();
        names
    }

    /// Whether the console shows `pipeline`.
    pub fn shows(&self, pipeline: &str) -> bool {
        lock(&self.inner.pipelines)
            .iter()
            .any(|p| p.name == pipeline)
    }

    pub fn snapshot(&self) -> Snapshot {
        let now = feed::now_ms();
        // Copied first: the pipelines and queues are never locked with another, so no
        // order to keep.
        let shown = lock(&self.inner.pipelines).clone();
        let with_queues = self.with_queues();
        let history = lock(&self.inner.history);
        let depths = lock(&self.inner.depths);
        let pipelines = (shown.into_iter())
            .map(|p| PipelineView {
                stats: history.stats(&p.name, now),
                depths: depths.get(&p.name).copied(),
                dead_letters: with_queues.contains(&p.name),
                pipeline: p,
            })
            .collect();
        Snapshot {
            pipelines,
            redrive: self.inner.settings.token.is_some(),
            jaeger_url: self.inner.settings.jaeger_url.clone(),
        }
    }

    pub fn search(&self, correlation_id: &str) -> Vec<Record> {
        lock(&self.inner.history).search(correlation_id)
    }

    /// Moves whenever something shown changed.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.inner.changed.subscribe()
    }

    fn touch(&self) {
        self.inner.changed.send_modify(|n| *n += 1);
    }
}

fn shared<T>(per_pipeline: BTreeMap<String, Vec<T>>) -> BTreeMap<String, Arc<Vec<T>>> {
    (per_pipeline.into_iter())
        .map(|(p, q)| (p, Arc::new(q)))
        .collect()
}

/// The state is plain data: it stays usable after a panic elsewhere.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipeline(name: &str, replicas: u32) -> Pipeline {
        Pipeline {
            name: name.into(),
            status: "Ready".into(),
            conditions: vec![],
            replicas,
        }
    }

    #[test]
    fn pipelines_are_replaced_and_pages_told_only_of_changes() {
        let console = Console::new(vec![pipeline("a", 1)], BTreeMap::new(), Settings::default());
        let mut changes = console.changes();
        console.set_depths("a", Depths::default());
        assert!(changes.has_changed().unwrap());
        changes.borrow_and_update();
        console.set_depths("a", Depths::default());
        console.set_pipelines(vec![pipeline("a", 1)]);
        assert!(!changes.has_changed().unwrap(), "nothing new");
        console.set_pipelines(vec![pipeline("b", 2)]);
        assert!(changes.has_changed().unwrap());
        let shown = console.snapshot().pipelines;
        assert_eq!(shown.len(), 1);
        assert_eq!(
            (shown[0].pipeline.name.as_str(), shown[0].pipeline.replicas),
            ("b", 2)
        );
        assert!(console.shows("b") && !console.shows("a"));
        assert!(
            !lock(&console.inner.depths).contains_key("a"),
            "a's depths forgotten"
        );
    }
}
