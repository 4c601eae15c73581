//! The dead-letter policy's verdict on a failed delivery: retry after a backoff, or
//! dead-letter now (non-retryable outcome, or out of receives).

use std::time::Duration;

use eventpipe_crds::DeadLetterPolicySpec;

use crate::backoff;
use crate::processor::{Failure, FailureKind};

#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// Try again; `None` leaves the retry to the queue's own visibility timeout.
    Retry(Option<Duration>),
    DeadLetter,
    /// Not judged: the processor is throttling, so the event is held and tried
    /// again, spending none of its receives.
    Hold,
}

/// `receive_count` is the 1-based number of deliveries so far; `random` feeds jitter.
pub fn judge(
    policy: Option<&DeadLetterPolicySpec>,
    failure: &Failure,
    receive_count: u32,
    random: f64,
) -> Verdict {
    if let FailureKind::Throttled(_) = failure.kind {
        return Verdict::Hold;
    }
    let Some(policy) = policy else {
        return Verdict::Retry(None);
    };
    let non_retryable = match failure.kind {
        FailureKind::Status(s) => policy.non_retryable.http_statuses.contains(&s),
        FailureKind::Invalid => policy.non_retryable.undecodable,
        FailureKind::Transient | FailureKind::Throttled(_) => false,
    };
    if non_retryable || receive_count >= policy.max_receive_count.max(1) as u32 {
        Verdict::DeadLetter
    } else {
        Verdict::Retry(Some(backoff::delay(&policy.backoff, receive_count, random)))
    }
}

/// An event held as long as allowed on this receive (the processor throttling all
/// along, or hanging on it): handed back while receives are left, dead-lettered once
/// they are spent, so an event that always times out cannot cycle for ever.
pub fn exhausted_after_hold(policy: Option<&DeadLetterPolicySpec>, receive_count: u32) -> bool {
    policy.is_some_and(|p| receive_count >= p.max_receive_count.max(1) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> DeadLetterPolicySpec {
        serde_json::from_value(serde_json::json!({
            "maxReceiveCount": 3,
            "backoff": {"initial": "1s", "multiplier": 2, "max": "1m", "jitter": "none"},
            "nonRetryable": {"httpStatuses": [400, 422], "undecodable": true}
        }))
        .unwrap()
    }

    #[test]
    fn retries_with_backoff_until_max_receive_count() {
        let p = policy();
        let f = Failure::transient("boom");
        assert_eq!(
            judge(Some(&p), &f, 1, 0.5),
            Verdict::Retry(Some(Duration::from_secs(1)))
        );
        assert_eq!(
            judge(Some(&p), &f, 2, 0.5),
            Verdict::Retry(Some(Duration::from_secs(2)))
        );
        assert_eq!(judge(Some(&p), &f, 3, 0.5), Verdict::DeadLetter);
        assert_eq!(judge(Some(&p), &f, 9, 0.5), Verdict::DeadLetter);
    }

    #[test]
    fn non_retryable_outcomes_go_at_once() {
        let p = policy();
        let status = |s| Failure {
            kind: FailureKind::Status(s),
            message: String::new(),
        };
        assert_eq!(judge(Some(&p), &status(422), 1, 0.5), Verdict::DeadLetter);
        assert_eq!(
            judge(Some(&p), &status(500), 1, 0.5),
            Verdict::Retry(Some(Duration::from_secs(1)))
        );
        assert_eq!(
            judge(Some(&p), &Failure::invalid("bad"), 1, 0.5),
            Verdict::DeadLetter
        );
        let mut lenient = policy();
        lenient.non_retryable.undecodable = false;
        assert!(matches!(
            judge(Some(&lenient), &Failure::invalid("bad"), 1, 0.5),
            Verdict::Retry(_)
        ));
    }

    #[test]
    fn throttling_is_never_judged_whatever_the_receive_count() {
        let p = policy();
        let throttled = Failure::throttled(Some(Duration::from_secs(5)), "HTTP 503");
        assert_eq!(judge(Some(&p), &throttled, 1, 0.5), Verdict::Hold);
        assert_eq!(judge(Some(&p), &throttled, 99, 0.5), Verdict::Hold);
        assert_eq!(judge(None, &throttled, 99, 0.5), Verdict::Hold);
        let mut strict = policy();
        strict.non_retryable.http_statuses.push(503);
        assert_eq!(judge(Some(&strict), &throttled, 1, 0.5), Verdict::Hold);
    }

    #[test]
    fn a_hold_that_lasted_its_limit_spends_the_receive() {
        let p = policy();
        assert!(!exhausted_after_hold(Some(&p), 2));
        assert!(exhausted_after_hold(Some(&p), 3));
        assert!(
            !exhausted_after_hold(None, 99),
            "without a policy the queue decides"
        );
    }

    #[test]
    fn without_a_policy_the_queue_retries_and_nothing_is_dead_lettered() {
        assert_eq!(
            judge(None, &Failure::invalid("bad"), 100, 0.5),
            Verdict::Retry(None)
        );
    }
}
