//! Holding an event the processor cannot take now, instead of handing it back: the
//! source keeps it (an SQS message invisible, a shard at its position) and the
//! handler tries again after a wait, through the pipeline's [`Gate`]. Waiting this
//! way spends no receive and no retry of the DeadLetterPolicy; only real failures
//! reach its verdict.

use std::time::{Duration, Instant};

use cloudevents::Event;
use tokio_util::sync::CancellationToken;

use crate::gate::Gate;
use crate::handler::{Attempt, Decision, Handler};
use crate::metrics::Source;
use crate::pressure::hold_delay;

/// Why an event is held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hold {
    /// The processor throttled, asking for this wait when it said.
    Throttled(Option<Duration>),
    /// Another delivery holds the event's idempotency claim for at most this long.
    Claimed(Duration),
}

impl Hold {
    /// The wait before the next try, after `n` holds (1-based).
    pub fn wait(self, n: u32, random: f64) -> Duration {
        match self {
            Hold::Throttled(asked) => hold_delay(n, asked, random),
            Hold::Claimed(left) => left.min(hold_delay(n, None, random)),
        }
    }
}

/// The end of one try in the handler.
#[derive(Debug, PartialEq)]
pub enum Step {
    Done(Decision),
    Hold(Hold, String),
}

/// How a held event ended.
#[derive(Debug, PartialEq)]
pub enum Held {
    Decided(Decision),
    /// Held as long as allowed: give it back to try in this long (not a failure).
    HandBack(Duration, String),
    /// Stopped while held: give it back now.
    Stopped,
}

/// How a source holds its events.
pub struct Holding<'a> {
    pub gate: &'a Gate,
    pub labels: &'a Source,
    /// Ends a hold (shutdown, a lost lease).
    pub stop: &'a CancellationToken,
    /// The longest an event is held; `None`: as long as it takes.
    pub limit: Option<Duration>,
    /// Told once, when the event starts being held.
    pub on_hold: &'a (dyn Fn() + Send + Sync),
}

impl Handler {
    /// Handles the event, holding it while the processor throttles or another
    /// delivery holds its claim.
    pub async fn handle_holding(
        &self,
        event: &Event,
        attempt: &Attempt<'_>,
        h: &Holding<'_>,
    ) -> Held {
        if self.filtered_out(event) {
            return Held::Decided(Decision::Ack("filtered"));
        }
        let started = Instant::now();
        let mut mark = None;
        for n in 1..=u32::MAX {
            let (hold, why) = match self.try_once(event, attempt, h).await {
                Step::Done(decision) => return Held::Decided(decision),
                Step::Hold(hold, why) => (hold, why),
            };
            let wait = hold.wait(n, fastrand::f64());
            if h.limit.is_some_and(|l| started.elapsed() + wait > l) {
                tracing::warn!(error = %why, held_for = ?started.elapsed(), retry_in = ?wait, "held as long as allowed; handing it back (not a failure)");
                return Held::HandBack(wait, why);
            }
            if mark.is_none() {
                (h.on_hold)();
                mark = Some(HeldMark::new(self, h.labels));
            }
            tracing::debug!(error = %why, retry_in = ?wait, "holding the event");
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = h.stop.cancelled() => return Held::Stopped,
            }
        }
        Held::Stopped
    }

    /// One try, admitted by the circuit, its answer reported to the gate.
    async fn try_once(&self, event: &Event, attempt: &Attempt<'_>, h: &Holding<'_>) -> Step {
        let admission = h.gate.admit().await;
        let step = self.handle(event, attempt, h.labels).await;
        match &step {
            Step::Hold(Hold::Throttled(asked), _) => {
                self.metrics.throttled.get_or_create(h.labels).inc();
                admission.throttled(*asked);
            }
            Step::Done(Decision::Ack("filtered" | "duplicate"))
            | Step::Hold(Hold::Claimed(_), _) => {
                drop(admission); // the processor was not asked
            }
            Step::Done(_) => admission.answered(),
        }
        step
    }
}

/// Counts the event in `eventpipe_deliveries_held` while it is held.
struct HeldMark(prometheus_client::metrics::gauge::Gauge);

impl HeldMark {
    fn new(handler: &Handler, labels: &Source) -> Self {
        let gauge = handler.metrics.held.get_or_create(labels).clone();
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for HeldMark {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_throttled_hold_waits_as_asked_or_backs_off() {
        let s = Duration::from_secs;
        assert_eq!(Hold::Throttled(Some(s(5))).wait(3, 0.0), s(5));
        assert_eq!(Hold::Throttled(None).wait(3, 0.0), s(4));
    }

    #[test]
    fn a_claim_held_elsewhere_is_looked_at_again_soon_and_at_the_latest_when_it_expires() {
        let s = Duration::from_secs;
        assert_eq!(Hold::Claimed(s(20)).wait(1, 0.0), s(1));
        assert_eq!(Hold::Claimed(s(20)).wait(4, 0.0), s(8));
        assert_eq!(Hold::Claimed(s(3)).wait(4, 0.0), s(3));
    }
}
