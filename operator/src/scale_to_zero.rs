//! Scaling to and from zero (`scaling.minReplicas: 0` with the hpa engine), free of
//! I/O. A HorizontalPodAutoscaler never goes below one replica and does nothing while
//! its target is at zero, so, as KEDA does, the operator takes both ends itself: it
//! sets the worker Deployment to 0 once the sources have been idle for `cooldown`,
//! and to 1 when the backlog exceeds `activationDepth`; from 1 the HPA takes over.
//!
//! Hysteresis keeps a flapping queue from thrashing the workers: any message resets
//! the idle clock (so running workers stay while messages keep coming, however few),
//! waking restarts it (so the workers run at least `cooldown` after each wake-up), and
//! an unknown backlog (AWS not answering) changes nothing.

use std::time::{Duration, Instant};

use eventpipe_crds::EventPipeline;

/// What a pipeline asks of its idle workers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    pub cooldown: Duration,
    pub activation_depth: i64,
}

impl Policy {
    pub fn of(p: &EventPipeline) -> Self {
        Self {
            cooldown: p.spec.scaling.cooldown.as_std(),
            activation_depth: p.spec.scaling.activation_depth,
        }
    }
}

/// What to do with the worker Deployment's replicas.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Hold,
    /// Idle for the whole cooldown: to 0.
    ToZero,
    /// At 0 with a backlog above the activation depth: to 1.
    Wake,
}

/// One pipeline's memory across readings.
#[derive(Clone, Copy, Debug)]
pub struct Idleness {
    /// The last reading with anything in the sources (or the start, or the last wake-up).
    last_active: Instant,
    /// Zero or not, as last decided and when, until the Deployment shows it.
    awaiting: Option<(bool, Instant)>,
}

/// How long a decision is waited for before the Deployment is believed as it is
/// (someone else scaled it, or the change was lost).
const AWAIT_LIMIT: Duration = Duration::from_secs(60);

impl Idleness {
    /// Starts the idle clock: nothing goes to zero sooner than a cooldown from `now`.
    pub fn new(now: Instant) -> Self {
        Self {
            last_active: now,
            awaiting: None,
        }
    }

    /// The decision for a reading: `backlog` is the messages visible, in flight or
    /// delayed over all sources (`None`: unknown), `replicas` the Deployment's.
    pub fn observe(
        &mut self,
        policy: Policy,
        backlog: Option<i64>,
        replicas: i32,
        now: Instant,
    ) -> Decision {
        let Some(backlog) = backlog else {
            return Decision::Hold;
        };
        if backlog > 0 {
            self.last_active = now;
        }
        let at_zero = replicas == 0;
        match self.awaiting {
            Some((zero, since)) if zero != at_zero && now.duration_since(since) < AWAIT_LIMIT => {
                return Decision::Hold;
            }
            _ => self.awaiting = None,
        }
        let decision = if at_zero {
            match backlog > policy.activation_depth {
                true => Decision::Wake,
                false => Decision::Hold,
            }
        } else if now.duration_since(self.last_active) >= policy.cooldown {
            Decision::ToZero
        } else {
            Decision::Hold
        };
        match decision {
            Decision::Wake => {
                self.last_active = now;
                self.awaiting = Some((false, now));
            }
            Decision::ToZero => self.awaiting = Some((true, now)),
            Decision::Hold => {}
        }
        decision
    }

    /// The decision was not carried out (the API refused): decide afresh next time.
    pub fn failed(&mut self) {
        self.awaiting = None;
    }
}

#[cfg(test)]
mod tests;
