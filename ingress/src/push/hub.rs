//! One ingress pod's fan-out: its subscribers, each with a bounded queue, and a
//! bounded buffer of recent pushes for reconnects. No I/O: the clock is an argument,
//! and a subscriber is the sending half of its queue.

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
    time::{Duration, Instant},
};

use serde_json::Value;
use tokio::sync::mpsc::{self, error::TrySendError};

use super::{filter::Filter, metrics::PushMetrics};

/// An event to push, as the processor sent it (a structured CloudEvent).
#[derive(Debug)]
pub struct Push {
    pub pipeline: String,
    pub id: String,
    pub event: Value,
}

#[derive(Clone, Debug)]
pub struct HubLimits {
    /// Subscribers per pod; more are refused.
    pub max_subscribers: usize,
    /// Pushes waiting for one subscriber; a subscriber this far behind is dropped.
    pub queue: usize,
    /// Pushes kept for reconnects, and for how long.
    pub replay: usize,
    pub retention: Duration,
}

impl Default for HubLimits {
    fn default() -> Self {
        Self {
            max_subscribers: 10_000,
            queue: 64,
            replay: 1024,
            retention: Duration::from_secs(300),
        }
    }
}

/// What became of a push.
#[derive(Debug, PartialEq, Eq)]
pub enum Published {
    /// Queued for this many subscribers.
    Delivered(usize),
    /// No subscriber wanted it (it is kept for reconnects all the same).
    Unmatched,
    /// Pushed before (the worker retried): nothing is sent twice.
    Duplicate,
}

/// A new subscriber: what it missed, then its queue.
pub struct Subscribed {
    pub id: u64,
    pub replay: Vec<Arc<Push>>,
    pub live: mpsc::Receiver<Arc<Push>>,
}

/// Every place for a subscriber is taken.
#[derive(Debug, PartialEq, Eq)]
pub struct Full;

struct Subscriber {
    pipeline: String,
    filter: Filter,
    queue: mpsc::Sender<Arc<Push>>,
}

pub struct Hub {
    limits: HubLimits,
    subscribers: HashMap<u64, Subscriber>,
    next_id: u64,
    recent: VecDeque<(Instant, Arc<Push>)>,
    metrics: PushMetrics,
}

impl Hub {
    pub fn new(limits: HubLimits, metrics: PushMetrics) -> Self {
        Self {
            limits,
            subscribers: HashMap::new(),
            next_id: 0,
            recent: VecDeque::new(),
            metrics,
        }
    }

    /// Queues `push` for every subscriber that wants it, without waiting for any:
    /// one whose queue is full is dropped (its connection ends; it may reconnect
    /// with `Last-Event-ID`).
    pub fn publish(&mut self, push: Push, now: Instant) -> Published {
        self.expire(now);
        let seen = |p: &Arc<Push>| p.pipeline == push.pipeline && p.id == push.id;
        if self.recent.iter().any(|(_, p)| seen(p)) {
            return Published::Duplicate;
        }
        let push = Arc::new(push);
        let mut delivered = 0;
        let mut gone = vec![];
        for (id, s) in &self.subscribers {
            if s.pipeline != push.pipeline || !s.filter.matches(&push.event) {
                continue;
            }
            match s.queue.try_send(push.clone()) {
                Ok(()) => delivered += 1,
                Err(TrySendError::Full(_)) => {
                    self.metrics.dropped_slow.inc();
                    gone.push(*id);
                }
                Err(TrySendError::Closed(_)) => gone.push(*id),
            }
        }
        gone.iter().for_each(|id| self.unsubscribe(*id));
        self.recent.push_back((now, push));
        if self.recent.len() > self.limits.replay {
            self.recent.pop_front();
        }
        self.metrics.pushed.inc_by(delivered as u64);
        if delivered == 0 {
            self.metrics.unmatched.inc();
            return Published::Unmatched;
        }
        Published::Delivered(delivered)
    }

    /// Adds a subscriber to `pipeline`'s pushes. It first gets the retained pushes
    /// it wants after `last_event_id`; without one, those of its correlation id when
    /// it filters on one (its request's outcome may be pushed before it connects).
    pub fn subscribe(
        &mut self,
        pipeline: &str,
        filter: Filter,
        last_event_id: Option<&str>,
        now: Instant,
    ) -> Result<Subscribed, Full> {
        self.expire(now);
        if self.subscribers.len() >= self.limits.max_subscribers {
            self.metrics.refused.inc();
            return Err(Full);
        }
        let replay = self.missed(pipeline, &filter, last_event_id);
        let (queue, live) = mpsc::channel(self.limits.queue.max(1));
        let id = self.next_id;
        self.next_id += 1;
        let pipeline = pipeline.to_string();
        (self.subscribers).insert(
            id,
            Subscriber {
                pipeline,
                filter,
                queue,
            },
        );
        self.metrics.subscribers.set(self.subscribers.len() as i64);
        Ok(Subscribed { id, replay, live })
    }

    pub fn unsubscribe(&mut self, id: u64) {
        self.subscribers.remove(&id);
        self.metrics.subscribers.set(self.subscribers.len() as i64);
    }

    fn missed(&self, pipeline: &str, filter: &Filter, last: Option<&str>) -> Vec<Arc<Push>> {
        let ours = || {
            self.recent
                .iter()
                .map(|(_, p)| p)
                .filter(|p| p.pipeline == pipeline)
        };
        let after = match last {
            // Not retained any more (or never pushed here): all that is, may be missed.
            Some(last) => ours().position(|p| p.id == last).map_or(0, |i| i + 1),
            None if filter.correlation_id.is_some() => 0,
            None => return vec![],
        };
        ours()
            .skip(after)
            .filter(|p| filter.matches(&p.event))
            .cloned()
            .collect()
    }

    fn expire(&mut self, now: Instant) {
        let retention = self.limits.retention;
        while (self.recent.front()).is_some_and(|(at, _)| now.duration_since(*at) > retention) {
            self.recent.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn hub(limits: HubLimits) -> Hub {
        Hub::new(limits, PushMetrics::default())
    }

    fn push(id: &str, correlation: &str) -> Push {
        Push {
            pipeline: "notes".into(),
            id: id.into(),
            event: json!({"id": id, "correlationid": correlation}),
        }
    }

    fn by_correlation(c: &str) -> Filter {
        Filter {
            correlation_id: Some(c.into()),
            ..Default::default()
        }
    }

    fn ids(pushes: &[Arc<Push>]) -> Vec<&str> {
        pushes.iter().map(|p| p.id.as_str()).collect()
    }

    #[test]
    fn a_push_reaches_the_subscribers_that_want_it_once() {
        let now = Instant::now();
        let mut h = hub(HubLimits::default());
        let mut a = h
            .subscribe("notes", by_correlation("c1"), None, now)
            .unwrap();
        let mut other = h.subscribe("other", Filter::default(), None, now).unwrap();
        assert_eq!(h.publish(push("e1", "c1"), now), Published::Delivered(1));
        assert_eq!(h.publish(push("e1", "c1"), now), Published::Duplicate);
        assert_eq!(h.publish(push("e2", "c2"), now), Published::Unmatched);
        assert_eq!(a.live.try_recv().unwrap().id, "e1");
        assert!(a.live.try_recv().is_err() && other.live.try_recv().is_err());
        assert_eq!(h.metrics.unmatched.get(), 1);
        assert_eq!(h.metrics.pushed.get(), 1);
    }

    #[test]
    fn a_slow_subscriber_is_dropped_and_the_others_still_get_every_push() {
        let now = Instant::now();
        let limits = HubLimits {
            queue: 2,
            ..Default::default()
        };
        let mut h = hub(limits);
        let mut slow = h.subscribe("notes", Filter::default(), None, now).unwrap();
        let mut fast = h.subscribe("notes", Filter::default(), None, now).unwrap();
        for i in 0..5 {
            h.publish(push(&format!("e{i}"), "c"), now);
            fast.live.try_recv().unwrap();
        }
        assert_eq!(h.metrics.dropped_slow.get(), 1);
        assert_eq!(h.metrics.subscribers.get(), 1);
        // What was queued arrives, then the queue ends: the connection closes.
        assert_eq!(slow.live.try_recv().unwrap().id, "e0");
        assert_eq!(slow.live.try_recv().unwrap().id, "e1");
        assert!(matches!(
            slow.live.try_recv(),
            Err(mpsc::error::TryRecvError::Disconnected)
        ));
    }

    #[test]
    fn subscribers_over_the_limit_are_refused_until_one_leaves() {
        let now = Instant::now();
        let mut h = hub(HubLimits {
            max_subscribers: 1,
            ..Default::default()
        });
        let first = h.subscribe("notes", Filter::default(), None, now).unwrap();
        assert!(h.subscribe("notes", Filter::default(), None, now).is_err());
        assert_eq!(h.metrics.refused.get(), 1);
        h.unsubscribe(first.id);
        assert!(h.subscribe("notes", Filter::default(), None, now).is_ok());
    }

    #[test]
    fn a_reconnect_gets_what_it_missed_after_its_last_event_id() {
        let now = Instant::now();
        let mut h = hub(HubLimits::default());
        for id in ["e1", "e2", "e3"] {
            h.publish(push(id, "c1"), now);
        }
        h.publish(push("x", "c2"), now);
        let all = Filter::default();
        let s = h.subscribe("notes", all.clone(), Some("e1"), now).unwrap();
        assert_eq!(ids(&s.replay), ["e2", "e3", "x"]);
        let s = h
            .subscribe("notes", by_correlation("c1"), Some("e2"), now)
            .unwrap();
        assert_eq!(ids(&s.replay), ["e3"]);
        // An id no longer retained: everything retained may have been missed.
        let s = h
            .subscribe("notes", by_correlation("c1"), Some("gone"), now)
            .unwrap();
        assert_eq!(ids(&s.replay), ["e1", "e2", "e3"]);
        // A new subscriber to everything starts from now; one to a correlation id
        // gets that request's pushes so far.
        assert!(
            h.subscribe("notes", all, None, now)
                .unwrap()
                .replay
                .is_empty()
        );
        let s = h
            .subscribe("notes", by_correlation("c2"), None, now)
            .unwrap();
        assert_eq!(ids(&s.replay), ["x"]);
    }

    #[test]
    fn the_buffer_is_bounded_in_size_and_age() {
        let start = Instant::now();
        let limits = HubLimits {
            replay: 2,
            retention: Duration::from_secs(60),
            ..Default::default()
        };
        let mut h = hub(limits);
        for id in ["e1", "e2", "e3"] {
            h.publish(push(id, "c1"), start);
        }
        let s = h
            .subscribe("notes", by_correlation("c1"), None, start)
            .unwrap();
        assert_eq!(ids(&s.replay), ["e2", "e3"]);
        let later = start + Duration::from_secs(61);
        let s = h
            .subscribe("notes", by_correlation("c1"), None, later)
            .unwrap();
        assert!(s.replay.is_empty());
        // Forgotten, a retried push is sent again rather than lost.
        assert_eq!(h.publish(push("e3", "c1"), later), Published::Delivered(2));
    }
}
