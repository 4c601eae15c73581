//! Retry spacing from a DeadLetterPolicy: `initial`, `initial * multiplier`, ... capped
//! at `max`, optionally with full jitter. SQS schedules the retry: the message's
//! visibility timeout is set to this delay.

use std::time::Duration;

use eventpipe_crds::{Backoff, Jitter};

/// SQS's longest visibility timeout.
pub const MAX_VISIBILITY: Duration = Duration::from_secs(12 * 3600);

/// The delay after the `receive_count`-th delivery failed (1-based); `random` is a
/// uniform draw in `[0, 1)` used for jitter.
pub fn delay(backoff: &Backoff, receive_count: u32, random: f64) -> Duration {
    let exponent = receive_count.saturating_sub(1).min(64) as i32;
    let base = backoff.initial.as_std().as_secs_f64() * backoff.multiplier.powi(exponent);
    let capped = base
        .min(backoff.max.as_std().as_secs_f64())
        .min(MAX_VISIBILITY.as_secs_f64());
    let jittered = match backoff.jitter {
        Jitter::Full => capped * random.clamp(0.0, 1.0),
        Jitter::None => capped,
    };
    Duration::from_secs_f64(jittered)
}

/// SQS takes whole seconds; round up so a short delay is never zero unless asked.
pub fn visibility_seconds(delay: Duration) -> i32 {
    let secs = delay.as_secs() + u64::from(delay.subsec_nanos() > 0);
    secs.min(MAX_VISIBILITY.as_secs()) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backoff(jitter: Jitter) -> Backoff {
        Backoff {
            initial: "1s".parse().unwrap(),
            multiplier: 2.0,
            max: "10s".parse().unwrap(),
            jitter,
        }
    }

    #[test]
    fn grows_by_the_multiplier_up_to_max() {
        let b = backoff(Jitter::None);
        let secs: Vec<f64> = (1..=6).map(|n| delay(&b, n, 0.5).as_secs_f64()).collect();
        assert_eq!(secs, [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]);
    }

    #[test]
    fn full_jitter_stays_between_zero_and_the_computed_delay() {
        let b = backoff(Jitter::Full);
        assert_eq!(delay(&b, 3, 0.0), Duration::ZERO);
        assert_eq!(delay(&b, 3, 0.5), Duration::from_secs(2));
        assert!(delay(&b, 3, 0.999) < Duration::from_secs(4));
    }

    #[test]
    fn huge_counts_do_not_overflow_and_stay_within_sqs_limits() {
        let b = Backoff {
            max: "30d".parse().unwrap(),
            ..backoff(Jitter::None)
        };
        assert_eq!(delay(&b, u32::MAX, 0.0), MAX_VISIBILITY);
        assert_eq!(visibility_seconds(MAX_VISIBILITY * 2), 43_200);
    }

    #[test]
    fn visibility_rounds_up_to_whole_seconds() {
        assert_eq!(visibility_seconds(Duration::from_millis(500)), 1);
        assert_eq!(visibility_seconds(Duration::from_secs(2)), 2);
        assert_eq!(visibility_seconds(Duration::ZERO), 0);
    }
}
