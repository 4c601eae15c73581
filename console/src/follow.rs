//! Where the console's figures come from: the feeds it follows, and the depths of the
//! pipelines' queues and the lag of their streams, read every few seconds (the depths
//! also after each redrive).

use std::time::Duration;

use eventpipe_core::feed::Feed;

use crate::state::{Console, Depths};

/// Records taken from a feed at a time.
const BATCH: usize = 1000;

/// Copies what `feed` records into the console, as it records it; runs until dropped.
pub async fn feed(console: Console, feed: Feed) {
    let mut watch = feed.watch();
    let mut after = 0;
    loop {
        let records = feed.since(after, BATCH);
        match records.last() {
            Some(last) => {
                after = last.seq;
                console.add(records);
            }
            None if watch.changed().await.is_err() => return,
            None => {}
        }
    }
}

/// Reads the depths of every pipeline's queues, and its stream lag, each `every`;
/// runs until dropped.
pub async fn depths(console: Console, every: Duration) {
    loop {
        for pipeline in console.with_depths() {
            refresh(&console, &pipeline).await;
        }
        tokio::time::sleep(every).await;
    }
}

/// Reads the depths of `pipeline`'s queues now (those that answer), and the lag of
/// its stream sources.
pub async fn refresh(console: &Console, pipeline: &str) {
    console.set_depths(pipeline, read(console, pipeline).await);
}

/// The depths of `pipeline`'s queues now (those that answer), and the lag of its
/// stream sources; without lag sources here (in a cluster, where the operator's
/// metrics cache measures it), the lag last shown.
pub async fn read(console: &Console, pipeline: &str) -> Depths {
    let mut total = Depths::default();
    for q in console.queues_of(pipeline).iter().flat_map(|q| q.iter()) {
        match q.depths().await {
            Ok((dead, source)) => {
                total.dead_letters += dead;
                total.queue += source;
            }
            Err(e) => tracing::debug!(error = %e, queue = q.url, "depth not read"),
        }
    }
    total.stream_lag_seconds = match console.lag_sources_of(pipeline) {
        Some(sources) => {
            let mut lag = None;
            for s in sources.iter() {
                lag = lag.max(s.read().await);
            }
            lag
        }
        None => console
            .depths_of(pipeline)
            .and_then(|d| d.stream_lag_seconds),
    };
    total
}
