//! The feed over HTTP, on the ops port: `GET /events?after=SEQ` answers the records
//! after `SEQ` as JSON, `GET /events/stream?after=SEQ` streams them as server-sent
//! events (one `record` event each) as they arrive.

use std::convert::Infallible;
use std::time::Duration;

use axum::{
    Json, Router,
    extract::{Query, State},
    response::sse::{Event, KeepAlive, Sse},
    routing::get,
};
use futures::Stream;
use serde::{Deserialize, Serialize};

use crate::feed::{Feed, Record};

/// Records in one answer or one burst of the stream.
const PAGE: usize = 500;

#[derive(Deserialize)]
struct After {
    #[serde(default)]
    after: u64,
}

/// One page of the feed.
#[derive(Debug, Serialize, Deserialize)]
pub struct Page {
    pub records: Vec<Record>,
}

pub fn router(feed: Feed) -> Router {
    Router::new()
        .route("/events", get(snapshot))
        .route("/events/stream", get(stream))
        .with_state(feed)
}

async fn snapshot(State(feed): State<Feed>, Query(q): Query<After>) -> Json<Page> {
    Json(Page {
        records: feed.since(q.after, PAGE),
    })
}

async fn stream(
    State(feed): State<Feed>,
    Query(q): Query<After>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    Sse::new(records(feed, q.after)).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// The records after `after`, then each one as it arrives, until the feed is dropped.
fn records(feed: Feed, after: u64) -> impl Stream<Item = Result<Event, Infallible>> {
    let watch = feed.watch();
    futures::stream::unfold(
        (feed, watch, after, Vec::<Record>::new().into_iter()),
        |(feed, mut watch, mut after, mut pending)| async move {
            loop {
                if let Some(record) = pending.next() {
                    after = record.seq;
                    let event = Event::default().event("record").json_data(&record);
                    let event = event.unwrap_or_else(|_| Event::default().comment("unencodable"));
                    return Some((Ok(event), (feed, watch, after, pending)));
                }
                let next = feed.since(after, PAGE);
                if next.is_empty() {
                    watch.changed().await.ok()?;
                } else {
                    pending = next.into_iter();
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[tokio::test]
    async fn the_stream_sends_what_is_there_then_what_arrives() {
        let feed = Feed::new(10);
        feed.record(Record {
            id: "a".into(),
            ..Default::default()
        });
        let mut stream = Box::pin(records(feed.clone(), 0));
        let first = tokio::time::timeout(Duration::from_secs(5), stream.next()).await;
        assert!(first.unwrap().is_some());
        feed.record(Record {
            id: "b".into(),
            ..Default::default()
        });
        let second = tokio::time::timeout(Duration::from_secs(5), stream.next()).await;
        assert!(second.unwrap().is_some());
    }
}
