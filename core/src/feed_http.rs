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
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// What a client of `path` reads until `until` appears (bounded).
    async fn read_until(addr: std::net::SocketAddr, path: &str, until: &str) -> String {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut text = String::new();
        let mut buf = [0; 4096];
        while !text.contains(until) {
            let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
                .await
                .expect("more within 5 s")
                .unwrap();
            assert!(n > 0, "closed before {until:?}: {text}");
            text.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        text
    }

    #[tokio::test]
    async fn serves_a_snapshot_and_a_stream_over_http() {
        let feed = Feed::new(10);
        feed.record(Record {
            id: "first".into(),
            ..Default::default()
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(axum::serve(listener, router(feed.clone())).into_future());
        let snapshot = read_until(addr, "/events?after=0", "first").await;
        assert!(snapshot.contains("application/json"), "{snapshot}");
        let later =
            tokio::spawn(
                async move { read_until(addr, "/events/stream?after=1", "\"second\"").await },
            );
        tokio::time::sleep(Duration::from_millis(100)).await;
        feed.record(Record {
            id: "second".into(),
            ..Default::default()
        });
        let stream = later.await.unwrap();
        assert!(stream.contains("text/event-stream"), "{stream}");
        assert!(stream.contains("event: record"), "{stream}");
        assert!(
            !stream.contains("first"),
            "after=1 skips the first: {stream}"
        );
    }

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
