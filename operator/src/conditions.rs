//! Status conditions, free of I/O: what is true now, keeping the transition time of
//! conditions whose status did not change.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// One condition as the reconciler sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    pub type_: &'static str,
    pub ok: bool,
    pub reason: String,
    pub message: String,
}

impl Observed {
    pub fn new(
        type_: &'static str,
        ok: bool,
        reason: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            type_,
            ok,
            reason: reason.into(),
            message: message.into(),
        }
    }
}

/// The new condition list for `generation`.
pub fn merge(
    previous: &[Condition],
    observed: &[Observed],
    generation: Option<i64>,
) -> Vec<Condition> {
    observed
        .iter()
        .map(|o| {
            let status = if o.ok { "True" } else { "False" }.to_string();
            let since = previous
                .iter()
                .find(|c| c.type_ == o.type_ && c.status == status)
                .map(|c| c.last_transition_time.clone())
                .unwrap_or_else(|| Time(k8s_openapi::jiff::Timestamp::now()));
            Condition {
                type_: o.type_.to_string(),
                status,
                reason: o.reason.clone(),
                message: o.message.clone(),
                observed_generation: generation,
                last_transition_time: since,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_times_move_only_when_the_status_changes() {
        let first = merge(
            &[],
            &[Observed::new(
                "Ready",
                false,
                "SecretNotFound",
                "Secret gh not found",
            )],
            Some(1),
        );
        assert_eq!(first[0].status, "False");
        assert_eq!(first[0].observed_generation, Some(1));
        let same = merge(
            &first,
            &[Observed::new("Ready", false, "SecretNotFound", "still")],
            Some(2),
        );
        assert_eq!(same[0].last_transition_time, first[0].last_transition_time);
        assert_eq!(same[0].message, "still");
        std::thread::sleep(std::time::Duration::from_millis(5));
        let flipped = merge(
            &same,
            &[Observed::new("Ready", true, "Reconciled", "")],
            Some(2),
        );
        assert_ne!(
            flipped[0].last_transition_time,
            first[0].last_transition_time
        );
    }
}
