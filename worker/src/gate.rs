//! The delivery capacity of a pipeline, shared by its sources: how many deliveries
//! may be in flight (the AIMD limit, at most `delivery.concurrency`) and whether
//! any may go out (the circuit breaker). Sources reserve a [`Permit`] per event
//! before they receive it, so that a throttled pipeline receives less and an open
//! circuit nothing; every try at the processor goes through [`Gate::admit`].

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::metrics::{Metrics, Pipeline};
use crate::pressure::{Admit, Aimd, Circuit, State};
use crate::sources::lock;

pub struct Gate {
    labels: Pipeline,
    inner: Mutex<Inner>,
    /// Woken on every change of room or state.
    changed: Notify,
    metrics: Metrics,
}

struct Inner {
    aimd: Aimd,
    circuit: Circuit,
    in_use: usize,
    /// The state and limit the gauges and the log last showed.
    shown: Option<(State, usize)>,
}

impl Inner {
    /// Events that may be taken on now: none while open, one to probe while
    /// half-open, the AIMD limit while closed.
    fn room(&mut self, now: Instant) -> usize {
        self.limit(now).saturating_sub(self.in_use)
    }

    /// Takes room for up to `most` events now; how many it took.
    fn take(&mut self, now: Instant, most: usize) -> usize {
        let take = self.room(now).min(most);
        self.in_use += take;
        take
    }

    /// Events that may be in flight at once now.
    fn limit(&mut self, now: Instant) -> usize {
        match self.circuit.state(now) {
            State::Closed => self.aimd.limit(),
            State::HalfOpen => 1,
            State::Open => 0,
        }
    }
}

/// One event's share of the capacity, given back when dropped.
pub struct Permit {
    gate: Arc<Gate>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        lock(&self.gate.inner).in_use -= 1;
        self.gate.changed.notify_waiters();
    }
}

/// A try at the processor that the circuit let through. Its end is reported with
/// [`Admission::answered`] or [`Admission::throttled`]; dropped unreported, a
/// probe is given back for another to make.
pub struct Admission<'a> {
    gate: &'a Gate,
    probe: bool,
}

impl Admission<'_> {
    /// The processor answered (anything but throttling).
    pub fn answered(mut self) {
        self.probe = false;
        self.gate.update(|i, _| {
            i.circuit.answered();
            i.aimd.succeeded();
        });
    }

    /// The processor throttled, asking for `hint` when it said.
    pub fn throttled(mut self, hint: Option<Duration>) {
        self.probe = false;
        self.gate.update(|i, now| {
            i.circuit.throttled(now, hint, fastrand::f64());
            i.aimd.throttled(now);
        });
    }
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        if self.probe {
            self.gate.update(|i, _| i.circuit.abandoned());
        }
    }
}

impl Gate {
    pub fn new(pipeline: &str, concurrency: usize, metrics: &Metrics) -> Arc<Self> {
        let gate = Self {
            labels: Pipeline {
                pipeline: pipeline.to_string(),
            },
            inner: Mutex::new(Inner {
                aimd: Aimd::new(concurrency),
                circuit: Circuit::default(),
                in_use: 0,
                shown: None,
            }),
            changed: Notify::new(),
            metrics: metrics.clone(),
        };
        gate.update(|_, _| {});
        Arc::new(gate)
    }

    /// Waits for room for at least one event, then takes what more there is, up to
    /// `most`; `None` once `stop` is cancelled.
    pub async fn reserve(
        self: &Arc<Self>,
        most: usize,
        stop: &CancellationToken,
    ) -> Option<Vec<Permit>> {
        loop {
            if stop.is_cancelled() {
                return None;
            }
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let reopens = {
                let mut inner = lock(&self.inner);
                let take = inner.take(now(), most);
                if take > 0 {
                    drop(inner);
                    return Some(self.permits(take).collect());
                }
                inner.circuit.opens_until()
            };
            tokio::select! {
                _ = changed => {}
                _ = sleep_until(reopens) => self.update(|_, _| {}),
                _ = stop.cancelled() => return None,
            }
        }
    }

    /// Adds to `held`, for at most `linger`, the room that deliveries in flight give
    /// back, until it holds `most` or all the pipeline may have in flight: one full
    /// receive costs less per event than several small ones.
    pub async fn top_up(self: &Arc<Self>, held: &mut Vec<Permit>, most: usize, linger: Duration) {
        let deadline = tokio::time::Instant::now() + linger;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let (take, want) = {
                let mut inner = lock(&self.inner);
                let now = now();
                let want = most.min(inner.limit(now)).saturating_sub(held.len());
                (inner.take(now, want), want)
            };
            held.extend(self.permits(take));
            if take == want {
                return;
            }
            tokio::select! {
                _ = changed => {}
                _ = tokio::time::sleep_until(deadline) => return,
            }
        }
    }

    /// `n` permits of room already taken.
    fn permits(self: &Arc<Self>, n: usize) -> impl Iterator<Item = Permit> + '_ {
        (0..n).map(|_| Permit { gate: self.clone() })
    }

    /// Waits until the circuit lets a try at the processor go out.
    pub async fn admit(&self) -> Admission<'_> {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let admit = lock(&self.inner).circuit.admit(now());
            let reopens = match admit {
                Admit::Go => return self.admission(false),
                Admit::Probe => return self.admission(true),
                Admit::Wait(at) => at,
            };
            tokio::select! {
                _ = changed => {}
                _ = sleep_until(reopens) => self.update(|_, _| {}),
            }
        }
    }

    fn admission(&self, probe: bool) -> Admission<'_> {
        if probe {
            tracing::debug!(pipeline = %self.labels.pipeline, "circuit half-open: probing the processor with one delivery");
        }
        Admission { gate: self, probe }
    }

    /// Applies `change`, then shows what it changed and wakes whoever waits.
    fn update(&self, change: impl FnOnce(&mut Inner, Instant)) {
        let now = now();
        let mut inner = lock(&self.inner);
        change(&mut inner, now);
        let now_shown = (inner.circuit.state(now), inner.aimd.limit());
        let before = inner.shown.replace(now_shown);
        let max = inner.aimd.max();
        drop(inner);
        if before != Some(now_shown) {
            self.show(before, now_shown, max);
        }
        self.changed.notify_waiters();
    }

    /// Gauges and a log line on each change of state, and on the limit leaving or
    /// regaining the pipeline's concurrency (not on every step between).
    fn show(&self, before: Option<(State, usize)>, (state, limit): (State, usize), max: usize) {
        let m = &self.metrics;
        m.circuit_state
            .get_or_create(&self.labels)
            .set(state as i64);
        m.concurrency_limit
            .get_or_create(&self.labels)
            .set(limit as i64);
        let Some((was, was_limit)) = before else {
            return;
        };
        let pipeline = &self.labels.pipeline;
        // Warned once per outage: the probes and re-openings between show in the gauge.
        match (was, state) {
            (State::Closed, State::Open) => {
                tracing::warn!(%pipeline, "circuit open: the processor keeps throttling; receiving nothing until a probe gets through")
            }
            (State::HalfOpen, State::Open) => {
                tracing::debug!(%pipeline, "probe throttled; circuit open again")
            }
            (_, State::Closed) if was != State::Closed => {
                tracing::info!(%pipeline, limit, "circuit closed: the processor answers again")
            }
            _ => {}
        }
        if was_limit == max && limit < max {
            tracing::warn!(%pipeline, limit, max, "processor throttling: concurrency reduced");
        } else if was_limit < max && limit == max {
            tracing::info!(%pipeline, limit, "concurrency back to its maximum");
        }
    }
}

/// The clock tokio's timers run on (paused in tests).
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pressure::OPEN_AFTER;

    fn gate(concurrency: usize) -> Arc<Gate> {
        let metrics = Metrics::register(&mut Default::default());
        Gate::new("p", concurrency, &metrics)
    }

    fn throttle(g: &Gate, n: u32) {
        for _ in 0..n {
            let a = g.admission(false);
            a.throttled(None);
        }
    }

    fn gauges(g: &Gate) -> (i64, i64) {
        let m = &g.metrics;
        (
            m.circuit_state.get_or_create(&g.labels).get(),
            m.concurrency_limit.get_or_create(&g.labels).get(),
        )
    }

    #[tokio::test]
    async fn reservations_take_what_room_there_is_and_give_it_back_when_dropped() {
        let g = gate(4);
        let stop = CancellationToken::new();
        let first = g.reserve(3, &stop).await.unwrap();
        assert_eq!(first.len(), 3);
        assert_eq!(g.reserve(10, &stop).await.unwrap().len(), 1);
        drop(first);
        assert_eq!(g.reserve(10, &stop).await.unwrap().len(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn a_top_up_waits_for_room_given_back_until_full_or_its_linger_ends() {
        let g = gate(10);
        let stop = CancellationToken::new();
        let mut busy = g.reserve(6, &stop).await.unwrap();
        let mut held = g.reserve(10, &stop).await.unwrap();
        assert_eq!(held.len(), 4);
        let topping = tokio::spawn({
            let g = g.clone();
            async move {
                g.top_up(&mut held, 10, Duration::from_millis(50)).await;
                held.len()
            }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        busy.truncate(3);
        assert_eq!(
            topping.await.unwrap(),
            7,
            "three given back, then the linger ended"
        );

        let mut held = vec![];
        g.top_up(&mut held, 10, Duration::from_secs(60)).await;
        assert_eq!(held.len(), 7, "room there is, taken at once");
        drop(busy);
        g.top_up(&mut held, 10, Duration::from_secs(60)).await;
        assert_eq!(held.len(), 10);
    }

    #[tokio::test(start_paused = true)]
    async fn a_top_up_aims_no_higher_than_the_limit() {
        let g = gate(8);
        throttle(&g, 1);
        let stop = CancellationToken::new();
        let mut held = g.reserve(10, &stop).await.unwrap();
        let started = tokio::time::Instant::now();
        g.top_up(&mut held, 10, Duration::from_secs(60)).await;
        assert_eq!(held.len(), 4);
        assert_eq!(started.elapsed(), Duration::ZERO, "nothing more could come");
    }

    #[tokio::test]
    async fn a_reservation_waits_for_room_and_ends_at_stop() {
        let g = gate(1);
        let stop = CancellationToken::new();
        let held = g.reserve(1, &stop).await.unwrap();
        let waiting = tokio::spawn({
            let (g, stop) = (g.clone(), stop.clone());
            async move { g.reserve(1, &stop).await.map(|p| p.len()) }
        });
        tokio::task::yield_now().await;
        drop(held);
        assert_eq!(waiting.await.unwrap(), Some(1));
        stop.cancel();
        assert!(g.reserve(1, &stop).await.is_none(), "even with room");
    }

    #[tokio::test]
    async fn throttling_shrinks_the_room_and_answers_grow_it_back() {
        let g = gate(8);
        throttle(&g, 1);
        assert_eq!(gauges(&g), (0, 4));
        let stop = CancellationToken::new();
        assert_eq!(g.reserve(10, &stop).await.unwrap().len(), 4);
        for _ in 0..100 {
            g.admit().await.answered();
        }
        assert_eq!(gauges(&g), (0, 8));
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_circuit_receives_nothing_then_lets_one_probe_decide() {
        let g = gate(8);
        throttle(&g, OPEN_AFTER);
        assert_eq!(gauges(&g).0, State::Open as i64);
        let stop = CancellationToken::new();
        let started = tokio::time::Instant::now();
        let probe = g.reserve(10, &stop).await.unwrap();
        assert!(
            started.elapsed() >= Duration::from_secs(2),
            "waited for the cool-down"
        );
        assert_eq!(probe.len(), 1, "half-open: one event");
        assert_eq!(gauges(&g).0, State::HalfOpen as i64);
        let admission = g.admit().await;
        let second = tokio::spawn({
            let g = g.clone();
            async move { g.admit().await.answered() }
        });
        tokio::task::yield_now().await;
        assert!(!second.is_finished(), "one probe at a time");
        admission.answered();
        second.await.unwrap();
        assert_eq!(gauges(&g).0, State::Closed as i64);
    }

    #[tokio::test(start_paused = true)]
    async fn an_abandoned_probe_lets_another_probe() {
        let g = gate(2);
        throttle(&g, OPEN_AFTER);
        tokio::time::sleep(Duration::from_secs(60)).await;
        drop(g.admit().await);
        let again = g.admit().await;
        assert!(again.probe);
    }
}
