//! Replicas sharing a DynamoDB stream through the lease table, against moto: one
//! owner per shard, hand-over on shutdown and on request, takeover after a crash or
//! a lost lease, resuming after the checkpoint, and the lease table's conditional
//! writes.

mod common;

use std::time::Duration;

use common::streams::*;
use common::*;
use eventpipe_testkit::Moto;
use eventpipe_worker::streams::lease::{Checkpoint, LeaseError, LeaseTable};

#[tokio::test]
async fn two_replicas_deliver_each_record_once_and_a_stopped_one_hands_over_at_once() {
    let sink = Sink::ok().await;
    let moto = Moto::start();
    setup(&moto).await;
    // Leases long enough that only a released lease can change hands within the test.
    let args = |id| {
        [
            "--lease-duration",
            "30s",
            "--grace-period",
            "5s",
            "--worker-id",
            id,
        ]
    };
    let cfg = config(&http(&sink), "    batchSize: 7", "");
    let mut a = WorkerProcess::start(&moto, &cfg, &args("replica-a")).await;
    let mut b = WorkerProcess::start(&moto, &cfg, &args("replica-b")).await;
    put_numbered(&moto, "k", 0..40).await;
    eventually(30 * SECONDS, "forty records delivered", async || {
        sink.completed_count() >= 40
    })
    .await;
    let owner = lease(&moto).await["owner"].clone();
    let (stopped, other, other_id) = match owner.as_str() {
        Some("replica-a") => (&mut a, &mut b, "replica-b"),
        Some("replica-b") => (&mut b, &mut a, "replica-a"),
        unowned => panic!("lease owned by {unowned:?}"),
    };
    assert!(!owns_a_lease(other).await, "one owner");
    let status = stopped.terminate(20 * SECONDS).await;
    assert!(status.success(), "{}", stopped.log());
    let released = lease(&moto).await;
    assert_ne!(released["owner"], owner, "released on shutdown: {released}");

    put_numbered(&moto, "k", 40..60).await;
    eventually(
        20 * SECONDS,
        "the other replica delivers the rest",
        async || sink.completed_count() >= 60,
    )
    .await;
    let keys = completed(&sink);
    assert_eq!(keys.len(), 60, "no record twice: {keys:?}");
    assert_eq!(distinct(&keys), 60);
    assert!(owns_a_lease(other).await);
    assert_eq!(lease(&moto).await["owner"], other_id);
}

#[tokio::test]
async fn a_killed_replica_loses_nothing_and_the_other_takes_over_its_shard() {
    let sink = Sink::start(|_, _| (200, Duration::from_millis(30))).await;
    let moto = Moto::start();
    setup(&moto).await;
    for i in 0..120 {
        put(&moto, &format!("k{i:03}"), i).await;
    }
    let cfg = config(&http(&sink), "    batchSize: 10", "");
    let args = |id| [FAST_LEASES, &["--worker-id", id]].concat();
    let mut a = WorkerProcess::start(&moto, &cfg, &args("replica-a")).await;
    let mut b = WorkerProcess::start(&moto, &cfg, &args("replica-b")).await;
    eventually(30 * SECONDS, "delivery under way", async || {
        sink.completed_count() >= 25
    })
    .await;
    let owner = lease(&moto).await["owner"].clone();
    let (dead, survivor, survivor_id) = match owner.as_str() {
        Some("replica-a") => (&mut a, &mut b, "replica-b"),
        Some("replica-b") => (&mut b, &mut a, "replica-a"),
        other => panic!("lease owned by {other:?}"),
    };
    dead.kill();
    assert!(sink.completed_count() < 120, "killed mid-stream");
    eventually(60 * SECONDS, "every record delivered", async || {
        distinct(&completed(&sink)) == 120
    })
    .await;
    assert_eq!(lease(&moto).await["owner"], survivor_id);
    assert!(owns_a_lease(survivor).await, "{}", survivor.log());
    // Only records after the last checkpoint (at most one batch) may come twice.
    let deliveries = completed(&sink).len();
    assert!(
        deliveries - 120 <= 10,
        "{deliveries} deliveries for 120 records"
    );
}

#[tokio::test]
async fn shutdown_finishes_the_batch_and_a_restart_resumes_after_the_checkpoint() {
    let (sink, moto, cfg) = slow_batches("first-", 20).await;
    let mut first = WorkerProcess::start(&moto, &cfg, FAST_LEASES).await;
    eventually(20 * SECONDS, "the second batch under way", async || {
        sink.completed_count() >= 7
    })
    .await;
    assert!(
        first.terminate(20 * SECONDS).await.success(),
        "{}",
        first.log()
    );
    let done = sink.completed_count();
    assert!(
        done % 5 == 0 && done < 20,
        "stopped after a whole batch: {done}"
    );
    let l = lease(&moto).await;
    assert!(l.get("owner").is_none(), "released: {l}");

    for i in 0..5 {
        put(&moto, &format!("second-{i}"), i).await;
    }
    let _second = WorkerProcess::start(&moto, &cfg, FAST_LEASES).await;
    eventually(30 * SECONDS, "the rest delivered", async || {
        sink.completed_count() >= 25
    })
    .await;
    tokio::time::sleep(2 * SECONDS).await;
    let keys = completed(&sink);
    assert_eq!(
        keys.len(),
        25,
        "nothing before the checkpoint again: {keys:?}"
    );
    assert_eq!(distinct(&keys), 25);
    assert!(
        keys[20..].iter().all(|k| k.starts_with("second-")),
        "in order: {keys:?}"
    );
}

#[tokio::test]
async fn a_replica_asked_for_its_shard_hands_it_over_after_its_batch() {
    let (sink, moto, cfg) = slow_batches("k", 60).await;
    let slow_leases = ["--lease-duration", "10s", "--worker-id", "replica-a"];
    let a = WorkerProcess::start(&moto, &cfg, &slow_leases).await;
    eventually(20 * SECONDS, "delivery under way", async || {
        sink.completed_count() >= 7
    })
    .await;
    // Another replica, as the balancing of a real one would, asks for the lease.
    let consumer = lease(&moto).await["consumer"].as_str().unwrap().to_string();
    let b = LeaseTable::new(moto.dynamodb(), CHECKPOINTS, &consumer, "replica-b");
    b.ask(&b.scan().await.unwrap()[0]).await.unwrap();
    eventually(20 * SECONDS, "handed over", async || {
        lease(&moto).await["owner"] == "replica-b"
    })
    .await;
    let done = sink.completed_count();
    assert!(
        done % 5 == 0 && done < 60,
        "handed over mid-stream after a whole batch: {done}"
    );
    assert_eq!(
        lease(&moto).await["checkpoint"],
        sink_checkpoint(&moto, done).await
    );

    let b = WorkerProcess::start(
        &moto,
        &cfg,
        &["--lease-duration", "10s", "--worker-id", "replica-b"],
    )
    .await;
    eventually(
        30 * SECONDS,
        "the new owner delivers the rest",
        async || sink.completed_count() >= 60,
    )
    .await;
    tokio::time::sleep(2 * SECONDS).await;
    let keys = completed(&sink);
    assert_eq!(keys.len(), 60, "no record twice: {keys:?}");
    assert_eq!(distinct(&keys), 60);
    assert!(owns_a_lease(&b).await);
    assert!(!owns_a_lease(&a).await);
}

#[tokio::test]
async fn lease_writes_are_conditional_so_one_replica_owns_a_shard() {
    let moto = Moto::start();
    let ddb = moto.dynamodb();
    eventpipe_core::provision::ensure_checkpoint_table(&ddb, CHECKPOINTS)
        .await
        .unwrap();
    let a = LeaseTable::new(ddb.clone(), CHECKPOINTS, "t/in|arn", "a");
    let b = LeaseTable::new(ddb.clone(), CHECKPOINTS, "t/in|arn", "b");
    let other = LeaseTable::new(ddb.clone(), CHECKPOINTS, "u/in|arn", "a");
    a.create("s1", None, &Checkpoint::TrimHorizon)
        .await
        .unwrap();
    b.create("s1", None, &Checkpoint::Latest).await.unwrap();
    other.create("s1", None, &Checkpoint::Latest).await.unwrap();
    let leases = a.scan().await.unwrap();
    assert_eq!(leases.len(), 1, "one lease per shard and consumer");
    let fresh = &leases[0];
    assert_eq!(
        fresh.checkpoint,
        Checkpoint::TrimHorizon,
        "the first create wins"
    );
    assert_eq!((fresh.owner.as_deref(), fresh.counter), (None, 0));

    // Both replicas saw it free; the second take finds the counter moved on. (Run
    // one after the other: moto's conditional writes are not atomic under
    // concurrent requests, DynamoDB's are.)
    let taken = a.take(fresh).await.unwrap();
    assert_eq!((taken.owner.as_deref(), taken.counter), (Some("a"), 1));
    assert_eq!(b.take(fresh).await, Err(LeaseError::Lost));
    let (winner, loser) = (&a, &b);
    let key = &fresh.key;
    assert_eq!(loser.renew(key, None).await, Err(LeaseError::Lost));
    assert_eq!(
        loser
            .checkpoint(key, &Checkpoint::After("9".into()), None)
            .await,
        Err(LeaseError::Lost)
    );
    assert_eq!(
        loser.finish(key, &Checkpoint::ShardEnd, None).await,
        Err(LeaseError::Lost)
    );
    assert_eq!(
        loser.take(fresh).await,
        Err(LeaseError::Lost),
        "seen counter is stale"
    );
    assert_eq!(winner.renew(key, None).await, Ok(None));
    winner
        .checkpoint(key, &Checkpoint::After("5".into()), None)
        .await
        .unwrap();

    // A hand-off: asked, seen at the next renewal, given with the checkpoint.
    let held = loser.scan().await.unwrap().remove(0);
    loser.ask(&held).await.unwrap();
    assert_eq!(
        loser.ask(&held).await,
        Err(LeaseError::Lost),
        "one request at a time"
    );
    assert_eq!(
        winner.renew(key, None).await,
        Ok(Some(loser.me().to_string()))
    );
    winner
        .finish(key, &Checkpoint::After("7".into()), Some(loser.me()))
        .await
        .unwrap();
    let moved = a.scan().await.unwrap().remove(0);
    assert_eq!(moved.owner.as_deref(), Some(loser.me()));
    assert_eq!(moved.checkpoint, Checkpoint::After("7".into()));
    assert_eq!(moved.handoff, None);
    assert_eq!(winner.renew(key, None).await, Err(LeaseError::Lost));

    // Released leases are free; only unowned leases can be deleted.
    assert_eq!(winner.delete(key).await, Err(LeaseError::Lost));
    loser
        .finish(key, &Checkpoint::ShardEnd, None)
        .await
        .unwrap();
    let done = a.scan().await.unwrap().remove(0);
    assert!(done.finished() && done.owner.is_none());
    winner.delete(key).await.unwrap();
    assert!(a.scan().await.unwrap().is_empty());
    assert_eq!(
        other.scan().await.unwrap().len(),
        1,
        "other consumers keep theirs"
    );
}

#[tokio::test]
async fn a_replica_that_loses_its_lease_stops_and_takes_it_back_when_the_owner_goes_quiet() {
    let sink = Sink::start(|_, _| (200, Duration::from_millis(50))).await;
    let moto = Moto::start();
    setup(&moto).await;
    put_numbered(&moto, "k", 0..40).await;
    let cfg = config(&http(&sink), "    batchSize: 5", "");
    let worker = WorkerProcess::start(&moto, &cfg, FAST_LEASES).await;
    eventually(20 * SECONDS, "delivery under way", async || {
        sink.completed_count() >= 5
    })
    .await;
    // Another replica takes the lease (as after a pause long enough for it to expire)
    // and then never renews it.
    let consumer = lease(&moto).await["consumer"].as_str().unwrap().to_string();
    let thief = LeaseTable::new(moto.dynamodb(), CHECKPOINTS, &consumer, "thief");
    let mut stolen = false;
    for _ in 0..100 {
        let seen = thief.scan().await.unwrap().remove(0);
        if thief.take(&seen).await.is_ok() {
            stolen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(stolen, "the lease could not be taken");
    eventually(20 * SECONDS, "the worker notices", async || {
        worker.log().contains("lease taken by another replica")
            || worker.log().contains("the lease is another replica's now")
    })
    .await;
    eventually(30 * SECONDS, "taken back and finished", async || {
        distinct(&completed(&sink)) == 40
    })
    .await;
    assert_ne!(lease(&moto).await["owner"], "thief");
    let deliveries = completed(&sink).len();
    assert!(
        deliveries - 40 <= 5,
        "only the batch in flight again: {deliveries}"
    );
}

#[tokio::test]
async fn after_the_grace_period_an_unfinished_delivery_is_abandoned_and_delivered_again_later() {
    let sink = Sink::start(|r, seen| match (r.headers["ce-subject"].as_str(), seen) {
        ("slow", 0) => (200, Duration::from_secs(20)),
        _ => (200, Duration::ZERO),
    })
    .await;
    let moto = Moto::start();
    setup(&moto).await;
    for key in ["k0", "slow", "k2"] {
        put(&moto, key, 1).await;
    }
    let cfg = config(
        &format!("{{http: {{url: \"{}\", timeout: 60s}}}}", sink.url),
        "",
        "  delivery: {timeout: 60s}",
    );
    let args = ["--lease-duration", "2s", "--grace-period", "1s"];
    let mut first = WorkerProcess::start(&moto, &cfg, &args).await;
    eventually(20 * SECONDS, "the slow delivery under way", async || {
        sink.count() == 2
    })
    .await;
    assert!(
        first.terminate(15 * SECONDS).await.success(),
        "{}",
        first.log()
    );
    let l = lease(&moto).await;
    assert!(l.get("owner").is_none(), "released: {l}");
    assert_eq!(completed(&sink), ["k0"]);

    let _second = WorkerProcess::start(&moto, &cfg, &args).await;
    eventually(
        20 * SECONDS,
        "the abandoned record delivered again",
        async || sink.completed_count() == 3,
    )
    .await;
    assert_eq!(completed(&sink), ["k0", "slow", "k2"]);
}
