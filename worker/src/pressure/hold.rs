//! How long a held delivery waits before its next try. A throttled delivery is
//! held by the worker (its message kept invisible, its shard kept in place) rather
//! than handed back, so waiting spends no receive and no retry.

use std::time::Duration;

/// The longest a message is held. Past it, an SQS message is handed back (which
/// spends a receive but is never a dead letter); far below SQS's 12 hours in flight.
pub const MAX_HOLD: Duration = Duration::from_secs(15 * 60);
/// The longest `Retry-After` honoured: beyond it, waiting longer in one go keeps a
/// recovered processor idle for nothing.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);
const FIRST_WAIT: Duration = Duration::from_secs(1);
const MAX_WAIT: Duration = Duration::from_secs(30);

/// The wait before the next try of a delivery held `held` times so far (1-based):
/// the processor's `Retry-After` when it gave one (at most a minute), else 1 s
/// doubling up to 30 s; lengthened by up to a fifth at random so that held
/// deliveries do not all come back at once.
pub fn hold_delay(held: u32, retry_after: Option<Duration>, random: f64) -> Duration {
    let wait = match retry_after {
        Some(asked) => asked.min(MAX_RETRY_AFTER),
        None => FIRST_WAIT
            .saturating_mul(1 << held.saturating_sub(1).min(8))
            .min(MAX_WAIT),
    };
    jittered(wait, random)
}

/// `d` lengthened by up to a fifth, `random` being in `[0, 1)`.
pub fn jittered(d: Duration, random: f64) -> Duration {
    d.mul_f64(1.0 + 0.2 * random.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_retry_after_the_wait_doubles_up_to_thirty_seconds() {
        let secs: Vec<u64> = (1..=8)
            .map(|n| hold_delay(n, None, 0.0).as_secs())
            .collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(hold_delay(u32::MAX, None, 0.0), MAX_WAIT);
    }

    #[test]
    fn retry_after_is_honoured_up_to_a_minute() {
        let s = Duration::from_secs;
        assert_eq!(hold_delay(7, Some(s(5)), 0.0), s(5));
        assert_eq!(hold_delay(1, Some(s(0)), 0.0), Duration::ZERO);
        assert_eq!(hold_delay(1, Some(s(3600)), 0.0), MAX_RETRY_AFTER);
    }

    #[test]
    fn jitter_only_lengthens_and_by_at_most_a_fifth() {
        let d = Duration::from_secs(10);
        assert_eq!(jittered(d, 0.0), d);
        assert_eq!(jittered(d, 0.5), Duration::from_secs(11));
        assert!(jittered(d, 0.999) < Duration::from_secs(12));
        assert_eq!(jittered(d, 7.0), Duration::from_secs(12), "clamped");
    }
}
