use std::time::{Duration, Instant};

use super::{Decision, Idleness, Policy};

const POLICY: Policy = Policy {
    cooldown: Duration::from_secs(300),
    activation_depth: 0,
};
const TICK: Duration = Duration::from_secs(5);

/// Readings every 5 s: the backlog, the replicas the Deployment shows, the decision.
struct Run {
    idle: Idleness,
    start: Instant,
    now: Instant,
    replicas: i32,
    transitions: Vec<(u64, Decision)>,
}

impl Run {
    fn new(replicas: i32) -> Self {
        let start = Instant::now();
        Self {
            idle: Idleness::new(start),
            start,
            now: start,
            replicas,
            transitions: vec![],
        }
    }

    /// One reading, the decision carried out at once, as the scaler does.
    fn read(&mut self, policy: Policy, backlog: Option<i64>) -> Decision {
        self.now += TICK;
        let d = self.idle.observe(policy, backlog, self.replicas, self.now);
        match d {
            Decision::ToZero => self.replicas = 0,
            Decision::Wake => self.replicas = 1,
            Decision::Hold => return d,
        }
        let at = self.now.duration_since(self.start).as_secs();
        self.transitions.push((at, d));
        d
    }

    fn read_for(&mut self, policy: Policy, span: Duration, backlog: Option<i64>) {
        for _ in 0..span.as_secs() / TICK.as_secs() {
            self.read(policy, backlog);
        }
    }
}

#[test]
fn idle_for_the_cooldown_goes_to_zero_and_a_message_wakes_it() {
    let mut run = Run::new(1);
    run.read_for(POLICY, Duration::from_secs(295), Some(0));
    assert_eq!(run.replicas, 1, "not before the cooldown");
    assert_eq!(run.read(POLICY, Some(0)), Decision::ToZero);
    run.read_for(POLICY, Duration::from_secs(600), Some(0));
    assert_eq!(run.replicas, 0, "stays at zero while idle");
    assert_eq!(run.read(POLICY, Some(1)), Decision::Wake);
    assert_eq!(run.transitions.len(), 2);
}

#[test]
fn the_cooldown_starts_with_the_operator_not_at_the_queues_last_message() {
    let mut run = Run::new(3);
    run.read_for(POLICY, Duration::from_secs(120), Some(0));
    assert_eq!(run.replicas, 3);
}

#[test]
fn in_flight_or_delayed_messages_keep_the_workers() {
    // The backlog counts visible, in-flight and delayed messages: a slow delivery
    // (in flight, invisible) is activity.
    let mut run = Run::new(1);
    for _ in 0..200 {
        run.read(POLICY, Some(1));
    }
    assert_eq!(run.replicas, 1);
    assert!(run.transitions.is_empty());
}

#[test]
fn the_activation_depth_wakes_only_above_it() {
    let policy = Policy {
        activation_depth: 10,
        ..POLICY
    };
    let mut run = Run::new(0);
    run.read_for(policy, Duration::from_secs(60), Some(10));
    assert_eq!(run.replicas, 0, "10 waiting is not above 10");
    assert_eq!(run.read(policy, Some(11)), Decision::Wake);
    // Once running, a few messages (under the activation depth) keep it running.
    run.read_for(policy, Duration::from_secs(600), Some(3));
    assert_eq!(run.replicas, 1);
}

#[test]
fn an_unknown_backlog_changes_nothing() {
    let mut run = Run::new(1);
    run.read_for(POLICY, Duration::from_secs(900), None);
    assert_eq!(run.replicas, 1, "AWS not answering is not idleness");
    let mut run = Run::new(0);
    run.read_for(POLICY, Duration::from_secs(60), None);
    assert_eq!(run.replicas, 0);
}

#[test]
fn a_flapping_queue_does_not_thrash_the_workers() {
    // A message every 20 s for an hour, taken within a reading: the workers wake once
    // and stay, however the readings fall.
    let mut run = Run::new(0);
    for i in 0..720 {
        let backlog = if i % 4 == 0 { 1 } else { 0 };
        run.read(POLICY, Some(backlog));
    }
    assert_eq!(run.transitions.len(), 1, "{:?}", run.transitions);
    // A message every 6 minutes, just past the cooldown: at most one wake-up and one
    // stop per message, each stop a full cooldown after the wake-up.
    let mut run = Run::new(0);
    for i in 0..720 {
        let backlog = if i % 72 == 0 { 1 } else { 0 };
        run.read(POLICY, Some(backlog));
    }
    let stops: Vec<u64> = (run.transitions.iter())
        .filter(|(_, d)| *d == Decision::ToZero)
        .map(|(at, _)| *at)
        .collect();
    let wakes: Vec<u64> = (run.transitions.iter())
        .filter(|(_, d)| *d == Decision::Wake)
        .map(|(at, _)| *at)
        .collect();
    assert_eq!(wakes.len(), 10);
    assert!(stops.len() <= wakes.len());
    for (wake, stop) in wakes.iter().zip(&stops) {
        assert!(stop - wake >= 300, "stopped {}s after waking", stop - wake);
    }
}

#[test]
fn a_decision_is_awaited_not_repeated() {
    let mut idle = Idleness::new(Instant::now());
    let t = Instant::now();
    assert_eq!(idle.observe(POLICY, Some(5), 0, t + TICK), Decision::Wake);
    // The Deployment still shows 0 (its watch lags): no second wake-up.
    assert_eq!(
        idle.observe(POLICY, Some(5), 0, t + 2 * TICK),
        Decision::Hold
    );
    // A failed scale is decided afresh.
    idle.failed();
    assert_eq!(
        idle.observe(POLICY, Some(5), 0, t + 3 * TICK),
        Decision::Wake
    );
    // Never shown within a minute: the Deployment is believed as it is.
    let later = t + 3 * TICK + Duration::from_secs(61);
    assert_eq!(idle.observe(POLICY, Some(5), 0, later), Decision::Wake);
}
