//! The circuit breaker in front of a processor. Closed: deliveries go out. After
//! [`OPEN_AFTER`] throttled deliveries in a row it opens: nothing goes out (and
//! nothing new is received) for a cool-down. Then it is half-open: a single
//! delivery probes; an answer closes the circuit, another throttle opens it again
//! for twice as long.

use std::time::{Duration, Instant};

use super::hold::{MAX_RETRY_AFTER, jittered};

/// Throttled deliveries in a row that open the circuit.
pub const OPEN_AFTER: u32 = 5;
/// The first cool-down, doubled after each failed probe.
const COOL_DOWN: Duration = Duration::from_secs(2);
const MAX_COOL_DOWN: Duration = Duration::from_secs(30);

/// What the circuit lets through, as a gauge reports it (0, 1, 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Closed = 0,
    HalfOpen = 1,
    Open = 2,
}

#[derive(Debug)]
enum Inner {
    Closed,
    Open { until: Instant },
    HalfOpen { probing: bool },
}

/// Whether a delivery may go out now.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit {
    Go,
    /// Go, as the probe: its answer decides for everyone.
    Probe,
    /// Not now: look again at this instant, or when the state changes.
    Wait(Option<Instant>),
}

#[derive(Debug)]
pub struct Circuit {
    inner: Inner,
    /// Throttles in a row while closed.
    throttles: u32,
    /// Failed probes in a row, which lengthen the cool-down.
    reopened: u32,
}

impl Default for Circuit {
    fn default() -> Self {
        Self {
            inner: Inner::Closed,
            throttles: 0,
            reopened: 0,
        }
    }
}

impl Circuit {
    /// The state at `now`: an open circuit whose cool-down is over is half-open.
    pub fn state(&mut self, now: Instant) -> State {
        if let Inner::Open { until } = self.inner
            && now >= until
        {
            self.inner = Inner::HalfOpen { probing: false };
        }
        match self.inner {
            Inner::Closed => State::Closed,
            Inner::Open { .. } => State::Open,
            Inner::HalfOpen { .. } => State::HalfOpen,
        }
    }

    /// When an open circuit becomes half-open.
    pub fn opens_until(&self) -> Option<Instant> {
        match self.inner {
            Inner::Open { until } => Some(until),
            _ => None,
        }
    }

    /// Asks to deliver at `now`; a probe must end in [`Circuit::answered`],
    /// [`Circuit::throttled`] or [`Circuit::abandoned`].
    pub fn admit(&mut self, now: Instant) -> Admit {
        match self.state(now) {
            State::Closed => Admit::Go,
            State::Open => Admit::Wait(self.opens_until()),
            State::HalfOpen => match self.inner {
                Inner::HalfOpen { probing: false } => {
                    self.inner = Inner::HalfOpen { probing: true };
                    Admit::Probe
                }
                _ => Admit::Wait(None),
            },
        }
    }

    /// A delivery was throttled at `now`, the processor asking for `hint` (its
    /// `Retry-After`); `random` in `[0, 1)` spreads the cool-down.
    pub fn throttled(&mut self, now: Instant, hint: Option<Duration>, random: f64) {
        match self.state(now) {
            State::Closed => {
                self.throttles += 1;
                if self.throttles >= OPEN_AFTER {
                    self.open(now, hint, random);
                }
            }
            State::HalfOpen => {
                self.reopened += 1;
                self.open(now, hint, random);
            }
            // Deliveries under way when it opened: the cool-down already runs.
            State::Open => {}
        }
    }

    /// The processor answered (success or a failure other than throttling): it is
    /// there, so the circuit closes.
    pub fn answered(&mut self) {
        self.inner = Inner::Closed;
        self.throttles = 0;
        self.reopened = 0;
    }

    /// The probe ended without an answer (shutdown): another may probe.
    pub fn abandoned(&mut self) {
        if let Inner::HalfOpen { probing: true } = self.inner {
            self.inner = Inner::HalfOpen { probing: false };
        }
    }

    fn open(&mut self, now: Instant, hint: Option<Duration>, random: f64) {
        self.throttles = 0;
        let backoff = COOL_DOWN
            .saturating_mul(1 << self.reopened.min(8))
            .min(MAX_COOL_DOWN);
        let wait = hint.map_or(backoff, |h| h.min(MAX_RETRY_AFTER).max(COOL_DOWN));
        self.inner = Inner::Open {
            until: now + jittered(wait, random),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle(c: &mut Circuit, now: Instant, n: u32) {
        for _ in 0..n {
            c.throttled(now, None, 0.0);
        }
    }

    #[test]
    fn throttles_in_a_row_open_it_and_an_answer_in_between_resets_the_count() {
        let mut c = Circuit::default();
        let now = Instant::now();
        throttle(&mut c, now, OPEN_AFTER - 1);
        c.answered();
        throttle(&mut c, now, OPEN_AFTER - 1);
        assert_eq!(c.state(now), State::Closed);
        assert_eq!(c.admit(now), Admit::Go);
        throttle(&mut c, now, 1);
        assert_eq!(c.state(now), State::Open);
        assert_eq!(c.admit(now), Admit::Wait(Some(now + COOL_DOWN)));
    }

    #[test]
    fn after_the_cool_down_a_single_probe_goes_and_its_answer_closes_it() {
        let mut c = Circuit::default();
        let now = Instant::now();
        throttle(&mut c, now, OPEN_AFTER);
        let later = now + COOL_DOWN;
        assert_eq!(c.state(later), State::HalfOpen);
        assert_eq!(c.admit(later), Admit::Probe);
        assert_eq!(c.admit(later), Admit::Wait(None), "one probe at a time");
        c.answered();
        assert_eq!(c.state(later), State::Closed);
        assert_eq!(c.admit(later), Admit::Go);
    }

    #[test]
    fn a_throttled_probe_opens_it_again_for_twice_as_long_up_to_a_cap() {
        let mut c = Circuit::default();
        let mut now = Instant::now();
        throttle(&mut c, now, OPEN_AFTER);
        let mut cool_downs = vec![];
        for _ in 0..6 {
            now = c.opens_until().unwrap();
            assert_eq!(c.admit(now), Admit::Probe);
            c.throttled(now, None, 0.0);
            cool_downs.push((c.opens_until().unwrap() - now).as_secs());
        }
        assert_eq!(cool_downs, [4, 8, 16, 30, 30, 30]);
    }

    #[test]
    fn retry_after_sets_the_cool_down_within_bounds() {
        let now = Instant::now();
        let opened_for = |hint: u64| {
            let mut c = Circuit::default();
            for _ in 0..OPEN_AFTER {
                c.throttled(now, Some(Duration::from_secs(hint)), 0.0);
            }
            (c.opens_until().unwrap() - now).as_secs()
        };
        assert_eq!(opened_for(10), 10);
        assert_eq!(opened_for(0), COOL_DOWN.as_secs());
        assert_eq!(opened_for(3600), MAX_RETRY_AFTER.as_secs());
    }

    #[test]
    fn an_abandoned_probe_lets_another_probe() {
        let mut c = Circuit::default();
        let now = Instant::now();
        throttle(&mut c, now, OPEN_AFTER);
        let later = now + COOL_DOWN;
        assert_eq!(c.admit(later), Admit::Probe);
        c.abandoned();
        assert_eq!(c.admit(later), Admit::Probe);
    }

    #[test]
    fn throttles_while_open_do_not_extend_the_cool_down() {
        let mut c = Circuit::default();
        let now = Instant::now();
        throttle(&mut c, now, OPEN_AFTER);
        let until = c.opens_until();
        throttle(&mut c, now + Duration::from_secs(1), 10);
        assert_eq!(c.opens_until(), until);
    }
}
