//! A shard's batch split for `parallelizationFactor`: records go to lanes by a hash
//! of their partition key, so a key's records stay in one lane, in shard order, and
//! lanes are delivered at the same time. And the checkpoint's rule: it only moves
//! past records that are all finished, whatever order the lanes finish them in.

use std::hash::{DefaultHasher, Hash, Hasher};

/// The records' positions per lane, each lane in shard order; empty lanes left out.
pub fn split(keys: &[String], factor: usize) -> Vec<Vec<usize>> {
    let factor = factor.max(1);
    let mut lanes = vec![vec![]; factor];
    for (position, key) in keys.iter().enumerate() {
        let mut h = DefaultHasher::new();
        key.hash(&mut h);
        lanes[(h.finish() % factor as u64) as usize].push(position);
    }
    lanes.retain(|l| !l.is_empty());
    lanes
}

/// How many records from the start are finished, with none unfinished among them.
pub fn finished_prefix(finished: &[bool]) -> usize {
    finished.iter().take_while(|f| **f).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(k: &[&str]) -> Vec<String> {
        k.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_keys_records_share_a_lane_in_shard_order() {
        let k = keys(&["a", "b", "c", "a", "d", "b", "a", "e", "f", "g"]);
        let lanes = split(&k, 4);
        assert!(lanes.len() > 1 && lanes.len() <= 4, "{lanes:?}");
        let mut all: Vec<usize> = lanes.concat();
        all.sort();
        assert_eq!(all, (0..k.len()).collect::<Vec<_>>(), "each record once");
        for key in ["a", "b"] {
            let lane = lanes
                .iter()
                .find(|l| l.iter().any(|&p| k[p] == key))
                .unwrap();
            let of_key: Vec<usize> = (0..k.len()).filter(|&p| k[p] == key).collect();
            assert!(of_key.iter().all(|p| lane.contains(p)), "{key} in one lane");
        }
        assert!(lanes.iter().all(|l| l.windows(2).all(|w| w[0] < w[1])));
    }

    #[test]
    fn a_factor_of_one_is_the_whole_batch_in_order() {
        let k = keys(&["x", "y", "x"]);
        assert_eq!(split(&k, 1), [vec![0, 1, 2]]);
        assert_eq!(split(&k, 0), [vec![0, 1, 2]]);
        assert!(split(&[], 3).is_empty());
    }

    #[test]
    fn the_checkpoint_stops_at_the_first_unfinished_record() {
        assert_eq!(finished_prefix(&[true, true, false, true]), 2);
        assert_eq!(finished_prefix(&[false, true]), 0);
        assert_eq!(finished_prefix(&[true, true]), 2);
        assert_eq!(finished_prefix(&[]), 0);
    }
}
