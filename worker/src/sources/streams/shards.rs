//! Shard discovery and lineage, as plans over what `DescribeStream` lists and what
//! the lease table holds: which shards need a lease (and where each starts), which
//! may be read now (a child only once its parent is finished), and which leases are
//! left over from shards trimmed out of the stream.

use std::collections::{HashMap, HashSet};

use eventpipe_crds::StartingPosition;

use super::lease::{Checkpoint, Lease};

/// A shard as `DescribeStream` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shard {
    pub id: String,
    pub parent: Option<String>,
    /// Has an ending sequence number: no records will be added.
    pub closed: bool,
}

impl Shard {
    pub fn from_sdk(s: &aws_sdk_dynamodbstreams::types::Shard) -> Option<Self> {
        Some(Self {
            id: s.shard_id()?.to_string(),
            parent: s.parent_shard_id().map(str::to_string),
            closed: s
                .sequence_number_range()
                .and_then(|r| r.ending_sequence_number())
                .is_some(),
        })
    }
}

/// Leases to create for listed shards that have none, with where each starts. The
/// starting position applies when the consumer has no lease at all (its first run):
/// `LATEST` then skips closed shards and starts open ones at the head. Shards found
/// later (children of a split) start at their beginning, so nothing is skipped.
pub fn new_leases<'a>(
    shards: &'a [Shard],
    leases: &[Lease],
    start: StartingPosition,
) -> Vec<(&'a Shard, Checkpoint)> {
    let leased: HashSet<&str> = leases.iter().map(|l| l.shard.as_str()).collect();
    let first_run = leases.is_empty();
    shards
        .iter()
        .filter(|s| !leased.contains(s.id.as_str()))
        .map(|s| {
            let at = match (first_run, start) {
                (true, StartingPosition::Latest) if s.closed => Checkpoint::ShardEnd,
                (true, StartingPosition::Latest) => Checkpoint::Latest,
                _ => Checkpoint::TrimHorizon,
            };
            (s, at)
        })
        .collect()
}

/// Leases whose shard may be read now: listed, unfinished, and with no parent, a
/// finished parent, or a parent already trimmed out of the stream.
pub fn workable<'a>(shards: &[Shard], leases: &'a [Lease]) -> Vec<&'a Lease> {
    let listed: HashSet<&str> = shards.iter().map(|s| s.id.as_str()).collect();
    let by_shard: HashMap<&str, &Lease> = leases.iter().map(|l| (l.shard.as_str(), l)).collect();
    let parent_done = |parent: Option<&str>| match parent {
        None => true,
        Some(p) if !listed.contains(p) => true,
        Some(p) => by_shard.get(p).is_some_and(|l| l.finished()),
    };
    leases
        .iter()
        .filter(|l| !l.finished() && listed.contains(l.shard.as_str()))
        .filter(|l| parent_done(l.parent.as_deref()))
        .collect()
}

/// Leases nobody needs any more: their shard has left the stream, nobody owns them,
/// and no listed shard waits on them as its parent.
pub fn obsolete<'a>(shards: &[Shard], leases: &'a [Lease]) -> Vec<&'a Lease> {
    let listed: HashSet<&str> = shards.iter().map(|s| s.id.as_str()).collect();
    let parents: HashSet<&str> = shards.iter().filter_map(|s| s.parent.as_deref()).collect();
    leases
        .iter()
        .filter(|l| l.owner.is_none())
        .filter(|l| !listed.contains(l.shard.as_str()) && !parents.contains(l.shard.as_str()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(id: &str, parent: Option<&str>, closed: bool) -> Shard {
        Shard {
            id: id.into(),
            parent: parent.map(str::to_string),
            closed,
        }
    }

    fn lease(shard: &str, parent: Option<&str>, checkpoint: Checkpoint) -> Lease {
        Lease {
            key: format!("c|{shard}"),
            shard: shard.into(),
            parent: parent.map(str::to_string),
            checkpoint,
            owner: None,
            counter: 0,
            handoff: None,
        }
    }

    /// A stream that split: `root` closed into `left` and `right`; `left` split again.
    fn split_stream() -> Vec<Shard> {
        vec![
            shard("root", None, true),
            shard("left", Some("root"), true),
            shard("right", Some("root"), false),
            shard("left-a", Some("left"), false),
            shard("left-b", Some("left"), false),
        ]
    }

    fn ids<T>(v: &[(&Shard, T)]) -> Vec<String> {
        v.iter().map(|(s, _)| s.id.clone()).collect()
    }

    #[test]
    fn trim_horizon_leases_every_shard_from_its_beginning() {
        let shards = split_stream();
        let new = new_leases(&shards, &[], StartingPosition::TrimHorizon);
        assert_eq!(ids(&new), ["root", "left", "right", "left-a", "left-b"]);
        assert!(new.iter().all(|(_, c)| *c == Checkpoint::TrimHorizon));
    }

    #[test]
    fn latest_skips_closed_shards_and_starts_open_ones_at_the_head() {
        let shards = split_stream();
        let new: Vec<(String, Checkpoint)> = new_leases(&shards, &[], StartingPosition::Latest)
            .into_iter()
            .map(|(s, c)| (s.id.clone(), c))
            .collect();
        assert_eq!(
            new,
            [
                ("root".into(), Checkpoint::ShardEnd),
                ("left".into(), Checkpoint::ShardEnd),
                ("right".into(), Checkpoint::Latest),
                ("left-a".into(), Checkpoint::Latest),
                ("left-b".into(), Checkpoint::Latest),
            ]
        );
    }

    #[test]
    fn children_found_after_the_first_run_start_at_their_beginning_even_with_latest() {
        let shards = vec![
            shard("root", None, true),
            shard("a", Some("root"), false),
            shard("b", Some("root"), false),
        ];
        let leases = [lease("root", None, Checkpoint::Latest)];
        let new = new_leases(&shards, &leases, StartingPosition::Latest);
        assert_eq!(ids(&new), ["a", "b"]);
        assert!(new.iter().all(|(_, c)| *c == Checkpoint::TrimHorizon));
    }

    #[test]
    fn children_wait_until_their_parent_is_finished() {
        let shards = split_stream();
        let mut leases = vec![
            lease("root", None, Checkpoint::After("7".into())),
            lease("left", Some("root"), Checkpoint::TrimHorizon),
            lease("right", Some("root"), Checkpoint::TrimHorizon),
            lease("left-a", Some("left"), Checkpoint::TrimHorizon),
            lease("left-b", Some("left"), Checkpoint::TrimHorizon),
        ];
        let shard_ids = |w: Vec<&Lease>| w.iter().map(|l| l.shard.clone()).collect::<Vec<_>>();
        assert_eq!(shard_ids(workable(&shards, &leases)), ["root"]);
        leases[0].checkpoint = Checkpoint::ShardEnd;
        assert_eq!(shard_ids(workable(&shards, &leases)), ["left", "right"]);
        leases[1].checkpoint = Checkpoint::ShardEnd;
        assert_eq!(
            shard_ids(workable(&shards, &leases)),
            ["right", "left-a", "left-b"]
        );
    }

    #[test]
    fn a_parent_without_a_lease_yet_holds_its_children_back() {
        let shards = vec![shard("p", None, true), shard("c", Some("p"), false)];
        let leases = [lease("c", Some("p"), Checkpoint::TrimHorizon)];
        assert!(workable(&shards, &leases).is_empty());
    }

    #[test]
    fn a_parent_trimmed_out_of_the_stream_counts_as_finished() {
        let shards = vec![shard("c", Some("gone"), false)];
        let leases = [lease("c", Some("gone"), Checkpoint::TrimHorizon)];
        assert_eq!(workable(&shards, &leases).len(), 1);
    }

    #[test]
    fn leases_of_trimmed_shards_go_once_nothing_needs_them() {
        let shards = vec![
            shard("left", Some("root"), true),
            shard("right", None, false),
        ];
        let mut leases = vec![
            lease("root", None, Checkpoint::ShardEnd),
            lease("old", None, Checkpoint::ShardEnd),
            lease("stale", None, Checkpoint::After("9".into())),
            lease("left", Some("root"), Checkpoint::ShardEnd),
        ];
        leases[2].owner = Some("someone".into());
        let gone: Vec<&str> = obsolete(&shards, &leases)
            .iter()
            .map(|l| l.shard.as_str())
            .collect();
        // `root` is still named as a parent; `stale` is still owned; `left` is listed.
        assert_eq!(gone, ["old"]);
        assert!(
            workable(&shards, &leases).is_empty(),
            "trimmed shards are not read"
        );
    }
}
