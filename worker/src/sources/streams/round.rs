//! What a lane does after delivering some of its records (a round), free of I/O. A
//! round's records that finished are done; from the first that did not, the rest go
//! again (after its backoff, or its hold), so a partition key's records reach the
//! processor in order, as Lambda retries a stream batch. A record out of attempts is
//! given up alone and the records after it go on: none is given up untried. With
//! `bisectOnError`, a round whose every record failed is split in halves, each
//! delivered on its own, down to the record that fails; such a round spends no
//! attempt of its records, so the records around a bad one are not given up with it.

use std::time::Duration;

/// How one record came out of a round.
#[derive(Clone, Debug, PartialEq)]
pub enum Result {
    /// Delivered, filtered out or a duplicate.
    Done,
    /// Failed; try again after this long (`None`: the default backoff).
    Retry(Option<Duration>, String),
    /// Out of attempts, or not worth retrying: give it up.
    GiveUp(String),
    /// Not judged (the processor throttles, or its claim is held elsewhere): wait
    /// this long and try again, spending no attempt.
    Held(Duration, String),
}

impl Result {
    pub fn failed(&self) -> bool {
        matches!(self, Result::Retry(..) | Result::GiveUp(_))
    }
}

/// The lane's next move after a round over `len` records that brought `results`
/// (fewer when the processor stopped at the first record not done).
#[derive(Debug, PartialEq)]
pub enum Next {
    /// Every record finished.
    Done,
    /// Every record failed: deliver `..at` and `at..` on their own, in that order.
    Split { at: usize },
    /// The first `finished` are done; the rest go again after `wait` (`None`: the
    /// default backoff of the record at `finished`).
    Again {
        finished: usize,
        wait: Option<Duration>,
    },
    /// The first `finished` are done; the next is given up with `error`, and the rest
    /// go on.
    GiveUp { finished: usize, error: String },
}

pub fn next(results: &[Result], len: usize, bisect: bool) -> Next {
    let Some(first) = results.iter().position(|r| *r != Result::Done) else {
        return match results.len() >= len {
            true => Next::Done,
            // Not all tried, none failed: go on with the rest at once.
            false => Next::Again {
                finished: results.len(),
                wait: Some(Duration::ZERO),
            },
        };
    };
    if bisect && len > 1 && all_failed(results, len) {
        return Next::Split { at: len / 2 };
    }
    match &results[first] {
        Result::GiveUp(error) => Next::GiveUp {
            finished: first,
            error: error.clone(),
        },
        Result::Held(wait, _) => Next::Again {
            finished: first,
            wait: Some(*wait),
        },
        Result::Retry(delay, _) => Next::Again {
            finished: first,
            wait: *delay,
        },
        Result::Done => unreachable!("found as not done"),
    }
}

fn all_failed(results: &[Result], len: usize) -> bool {
    results.len() == len && results.iter().all(Result::failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retry() -> Result {
        Result::Retry(Some(Duration::from_secs(1)), "HTTP 500".into())
    }

    #[test]
    fn a_round_that_finished_everything_is_done() {
        assert_eq!(next(&[Result::Done, Result::Done], 2, true), Next::Done);
    }

    #[test]
    fn from_the_first_failure_the_rest_go_again_in_order() {
        let results = [Result::Done, retry(), Result::Done, retry()];
        let want = Next::Again {
            finished: 1,
            wait: Some(Duration::from_secs(1)),
        };
        assert_eq!(next(&results, 4, false), want);
        assert_eq!(next(&results, 4, true), want, "not all failed: no split");
    }

    #[test]
    fn a_batch_that_failed_whole_is_split_in_halves_when_bisecting() {
        let all = vec![retry(); 5];
        assert_eq!(next(&all, 5, true), Next::Split { at: 2 });
        assert_eq!(
            next(&all, 5, false),
            Next::Again {
                finished: 0,
                wait: Some(Duration::from_secs(1))
            }
        );
        assert_eq!(
            next(&all[..1], 1, true),
            Next::Again {
                finished: 0,
                wait: Some(Duration::from_secs(1))
            },
            "one record: its own retries"
        );
    }

    #[test]
    fn a_batch_refused_whole_is_split_before_anything_is_given_up() {
        let refused = vec![Result::GiveUp("HTTP 400".into()); 4];
        assert_eq!(next(&refused, 4, true), Next::Split { at: 2 });
        assert_eq!(
            next(&refused, 4, false),
            Next::GiveUp {
                finished: 0,
                error: "HTTP 400".into()
            }
        );
    }

    #[test]
    fn a_record_out_of_attempts_is_given_up_alone() {
        let results = [Result::Done, Result::GiveUp("gone".into()), Result::Done];
        assert_eq!(
            next(&results, 3, true),
            Next::GiveUp {
                finished: 1,
                error: "gone".into()
            }
        );
    }

    #[test]
    fn a_held_record_waits_without_splitting() {
        let held = Result::Held(Duration::from_secs(3), "HTTP 429".into());
        let results = [held.clone(), held];
        assert_eq!(
            next(&results, 2, true),
            Next::Again {
                finished: 0,
                wait: Some(Duration::from_secs(3))
            }
        );
    }

    #[test]
    fn a_processor_that_stopped_at_a_failure_left_the_rest_untried() {
        // One event at a time: stopped at the first record, which failed.
        assert_eq!(
            next(&[retry()], 4, true),
            Next::Again {
                finished: 0,
                wait: Some(Duration::from_secs(1))
            },
            "untried records are not failed ones: no split"
        );
        assert_eq!(
            next(&[Result::Done], 3, false),
            Next::Again {
                finished: 1,
                wait: Some(Duration::ZERO)
            }
        );
    }
}
