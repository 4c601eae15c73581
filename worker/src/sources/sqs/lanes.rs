//! One lane per FIFO message group, so that a group's messages never overlap. A
//! lane lives only while someone holds or waits for it: a queue with a million
//! groups costs the worker what its groups in flight cost, not one lane each for
//! ever.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{Mutex as Lane, OwnedMutexGuard};

use crate::sources::lock;

#[derive(Default)]
pub struct Lanes {
    lanes: Mutex<HashMap<String, Arc<Lane<()>>>>,
}

/// The group's turn: its lane is locked until this is dropped, and the lane is
/// dropped with it when no one else holds or waits for it.
pub struct Turn<'a> {
    lanes: &'a Lanes,
    group: String,
    lane: Arc<Lane<()>>,
    guard: Option<OwnedMutexGuard<()>>,
}

impl Lanes {
    /// Waits for the group's turn.
    pub async fn turn(&self, group: String) -> Turn<'_> {
        // Cloned under the map's lock, so that a lane's count of holders is exact
        // whenever the map's lock is held.
        let lane = lock(&self.lanes).entry(group.clone()).or_default().clone();
        let guard = lane.clone().lock_owned().await;
        Turn {
            lanes: self,
            group,
            lane,
            guard: Some(guard),
        }
    }

    /// Lanes kept now.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        lock(&self.lanes).len()
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.guard = None;
        let mut lanes = lock(&self.lanes.lanes);
        // The map's and this turn's: no one else holds or waits for the lane.
        if Arc::strong_count(&self.lane) == 2 {
            lanes.remove(&self.group);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_hundred_thousand_groups_leave_no_lane_behind() {
        let lanes = Lanes::default();
        for g in 0..100_000 {
            let turn = lanes.turn(format!("group-{g}")).await;
            assert_eq!(lanes.len(), 1);
            drop(turn);
        }
        assert_eq!(lanes.len(), 0);
    }

    #[tokio::test]
    async fn a_lane_stays_while_someone_waits_for_it_and_turns_do_not_overlap() {
        let lanes = Arc::new(Lanes::default());
        let first = lanes.turn("g".into()).await;
        let waiter = tokio::spawn({
            let lanes = lanes.clone();
            async move {
                let _turn = lanes.turn("g".into()).await;
                lanes.len()
            }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "the group's second turn waits");
        drop(first);
        assert_eq!(lanes.len(), 1, "kept for the waiter");
        assert_eq!(waiter.await.unwrap(), 1);
        assert_eq!(lanes.len(), 0);
    }

    #[tokio::test]
    async fn groups_do_not_wait_for_each_other() {
        let lanes = Lanes::default();
        let _a = lanes.turn("a".into()).await;
        let b = tokio::time::timeout(Duration::from_secs(1), lanes.turn("b".into())).await;
        assert!(b.is_ok());
        assert_eq!(lanes.len(), 2);
    }

    /// Resident memory across 100,000 distinct groups (RELIABILITY.md): run with
    /// `cargo test -p eventpipe-worker --lib lanes -- --ignored --nocapture`.
    #[tokio::test]
    #[ignore = "a measurement, printed rather than asserted"]
    async fn resident_memory_across_a_hundred_thousand_groups() {
        let lanes = Lanes::default();
        let mut kept = vec![]; // what keeping every lane (the former behaviour) costs
        for g in 0..1_000 {
            drop(lanes.turn(format!("warm-up-{g:08}")).await);
        }
        let before = rss_kib();
        for g in 0..100_000 {
            drop(lanes.turn(format!("group-{g:08}")).await);
        }
        let dropped = rss_kib();
        let lanes_left = lanes.len();
        for g in 0..100_000 {
            let turn = lanes.turn(format!("kept-{g:08}")).await;
            kept.push(turn.lane.clone());
        }
        let kept_rss = rss_kib();
        println!(
            "RSS before {before} KiB; after 100,000 groups with idle lanes dropped {dropped} KiB ({:+} KiB, {} lanes); \
             with every lane kept {kept_rss} KiB ({:+} KiB, {} lanes)",
            dropped as i64 - before as i64,
            lanes_left,
            kept_rss as i64 - dropped as i64,
            kept.len(),
        );
    }

    fn rss_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }
}
