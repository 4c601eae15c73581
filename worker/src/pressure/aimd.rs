//! Additive increase, multiplicative decrease: the number of deliveries a pipeline
//! may have in flight, halved when the processor throttles and grown back by one per
//! window of successes (a window being as many deliveries as the limit), as TCP
//! does with its congestion window.

use std::time::{Duration, Instant};

/// Throttles within this long of a decrease answer the same overload: one halving,
/// not one per delivery that was already in flight.
const DECREASE_SPACING: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub struct Aimd {
    limit: f64,
    max: usize,
    decreased: Option<Instant>,
}

impl Aimd {
    /// Starts at `max` (the pipeline's `delivery.concurrency`, at least 1).
    pub fn new(max: usize) -> Self {
        let max = max.max(1);
        Self {
            limit: max as f64,
            max,
            decreased: None,
        }
    }

    /// Deliveries that may be in flight: between 1 and the maximum.
    pub fn limit(&self) -> usize {
        (self.limit.floor() as usize).clamp(1, self.max)
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// A delivery was throttled at `now`: halve, at most once per spacing.
    pub fn throttled(&mut self, now: Instant) {
        if self
            .decreased
            .is_some_and(|at| now.saturating_duration_since(at) < DECREASE_SPACING)
        {
            return;
        }
        self.decreased = Some(now);
        self.limit = (self.limit / 2.0).max(1.0);
    }

    /// A delivery went through: one more per window of successes.
    pub fn succeeded(&mut self) {
        self.limit = (self.limit + 1.0 / self.limit).min(self.max as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_halves_the_limit_down_to_one() {
        let mut a = Aimd::new(16);
        let mut now = Instant::now();
        let mut seen = vec![a.limit()];
        for _ in 0..6 {
            now += DECREASE_SPACING;
            a.throttled(now);
            seen.push(a.limit());
        }
        assert_eq!(seen, [16, 8, 4, 2, 1, 1, 1]);
    }

    #[test]
    fn throttles_of_one_overload_halve_once() {
        let mut a = Aimd::new(16);
        let now = Instant::now();
        for _ in 0..16 {
            a.throttled(now);
        }
        assert_eq!(a.limit(), 8);
        a.throttled(now + DECREASE_SPACING);
        assert_eq!(a.limit(), 4);
    }

    #[test]
    fn successes_grow_the_limit_by_one_per_window_up_to_the_maximum() {
        let mut a = Aimd::new(4);
        let now = Instant::now();
        a.throttled(now);
        a.throttled(now + DECREASE_SPACING);
        assert_eq!(a.limit(), 1);
        let mut seen = vec![];
        for _ in 0..4 {
            a.succeeded();
            seen.push(a.limit());
        }
        assert_eq!(seen, [2, 2, 2, 3], "one success from 1, about two from 2");
        for _ in 0..100 {
            a.succeeded();
        }
        assert_eq!(a.limit(), 4, "never above the maximum");
    }

    #[test]
    fn the_limit_is_at_least_one() {
        assert_eq!(Aimd::new(0).limit(), 1);
        assert_eq!(Aimd::new(0).max(), 1);
    }
}
