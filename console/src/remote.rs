//! Feeds of other processes, followed over HTTP: how the console in a cluster hears
//! the ingress and worker pods it finds. Each feed is read from its server-sent
//! events (`/events/stream`, see [`eventpipe_core::feed_http`]), resumed after the
//! last record seen when the connection drops, with a growing pause between tries.
//!
//! Bounded: at most [`MAX_FEEDS`] feeds are followed at once, and an event longer than
//! [`MAX_EVENT`] bytes ends the connection.

use std::collections::BTreeMap;
use std::time::Duration;

use eventpipe_core::feed::Record;
use tokio::task::AbortHandle;

use crate::state::Console;

/// Feeds followed at once; more are left out (and logged) until others go.
pub const MAX_FEEDS: usize = 256;
/// Bytes of one server-sent event; a record is a few hundred.
pub const MAX_EVENT: usize = 64 * 1024;
/// Pauses between tries to reach a feed, doubling from the first to the last.
const BACKOFF: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(30));
/// The feed sends a keep-alive every 15 s: silence for longer is a dead connection.
const READ_TIMEOUT: Duration = Duration::from_secs(45);

/// A feed to follow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    /// Where the feed is served, e.g. `http://10.0.0.7:9090`.
    pub base_url: String,
    /// Put before each record's pipeline as `PREFIX/pipeline` (a namespace), so that
    /// records match the pipelines the console shows.
    pub prefix: String,
}

/// The feeds followed, one task each, started and stopped as the wanted set changes.
pub struct Remotes {
    console: Console,
    http: reqwest::Client,
    running: BTreeMap<String, (Source, AbortHandle)>,
}

impl Remotes {
    pub fn new(console: Console) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .read_timeout(READ_TIMEOUT)
            .build()
            .expect("an HTTP client without TLS settings builds");
        Self {
            console,
            http,
            running: BTreeMap::new(),
        }
    }

    /// Follows exactly `wanted` (by key, e.g. a pod's uid): stops the feeds no longer
    /// wanted or moved, starts the new ones, up to [`MAX_FEEDS`].
    pub fn sync(&mut self, wanted: &BTreeMap<String, Source>) {
        self.running.retain(|key, (source, task)| {
            let keep = wanted.get(key) == Some(source);
            if !keep {
                task.abort();
            }
            keep
        });
        for (key, source) in wanted {
            if self.running.contains_key(key) {
                continue;
            }
            if self.running.len() >= MAX_FEEDS {
                tracing::warn!(wanted = wanted.len(), MAX_FEEDS, "console: too many feeds");
                break;
            }
            let follow = follow(self.console.clone(), self.http.clone(), source.clone());
            let task = tokio::spawn(follow).abort_handle();
            self.running.insert(key.clone(), (source.clone(), task));
        }
    }

    /// The keys of the feeds followed now.
    pub fn keys(&self) -> Vec<String> {
        self.running.keys().cloned().collect()
    }
}

impl Drop for Remotes {
    fn drop(&mut self) {
        for (_, task) in self.running.values() {
            task.abort();
        }
    }
}

/// Reads `source` into `console` until aborted, reconnecting after the last record.
async fn follow(console: Console, http: reqwest::Client, source: Source) {
    let mut after = 0;
    let mut pause = BACKOFF.0;
    loop {
        match read(&console, &http, &source, &mut after).await {
            Ok(()) => pause = BACKOFF.0,
            Err(e) => tracing::debug!(feed = source.base_url, error = %e, "feed not read"),
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(BACKOFF.1);
    }
}

/// One connection: records until it ends. `Ok` when it got any (the next try comes
/// soon), an error otherwise.
async fn read(
    console: &Console,
    http: &reqwest::Client,
    source: &Source,
    after: &mut u64,
) -> anyhow::Result<()> {
    let url = format!("{}/events/stream?after={after}", source.base_url);
    let mut response = http.get(&url).send().await?.error_for_status()?;
    let mut events = Events::default();
    let mut got = false;
    while let Some(chunk) = response.chunk().await? {
        let records = events.push(&chunk)?;
        if let Some(last) = records.last() {
            *after = last.seq;
            got = true;
        }
        console.add(records.into_iter().map(|r| named(r, source)).collect());
    }
    match got {
        true => Ok(()),
        false => anyhow::bail!("the feed closed without a record"),
    }
}

fn named(mut record: Record, source: &Source) -> Record {
    record.pipeline = format!("{}/{}", source.prefix, record.pipeline);
    record
}

/// Server-sent events as bytes arrive: the records of the complete ones.
#[derive(Default)]
pub struct Events {
    pending: Vec<u8>,
}

impl Events {
    /// The records completed by `bytes`; an error when an event outgrows [`MAX_EVENT`].
    pub fn push(&mut self, bytes: &[u8]) -> anyhow::Result<Vec<Record>> {
        self.pending.extend_from_slice(bytes);
        let mut records = vec![];
        while let Some(end) = find(&self.pending, b"\n\n") {
            let event: Vec<u8> = self.pending.drain(..end + 2).collect();
            records.extend(record_of(&String::from_utf8_lossy(&event)));
        }
        if self.pending.len() > MAX_EVENT {
            anyhow::bail!("an event longer than {MAX_EVENT} bytes");
        }
        Ok(records)
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The record an event carries: `event: record` with its JSON as data; anything else
/// (keep-alive comments, other events, unreadable data) carries none.
fn record_of(event: &str) -> Option<Record> {
    let mut kind = "message";
    let mut data = String::new();
    for line in event.lines() {
        if let Some(v) = line.strip_prefix("event:") {
            kind = v.trim_start();
        } else if let Some(v) = line.strip_prefix("data:") {
            data.push_str(v.strip_prefix(' ').unwrap_or(v));
        }
    }
    (kind == "record").then(|| serde_json::from_str(&data).ok())?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str, seq: u64) -> String {
        let r = Record {
            id: id.into(),
            seq,
            pipeline: "orders".into(),
            ..Default::default()
        };
        format!(
            "event: record\ndata: {}\n\n",
            serde_json::to_string(&r).unwrap()
        )
    }

    #[test]
    fn records_come_whole_however_the_bytes_are_cut() {
        let text = format!(":\n\n{}{}", event("a", 1), event("b", 2));
        let mut events = Events::default();
        let mut ids = vec![];
        for piece in text.as_bytes().chunks(7) {
            ids.extend(events.push(piece).unwrap().into_iter().map(|r| r.id));
        }
        assert_eq!(ids, ["a", "b"]);
    }

    #[test]
    fn other_events_and_bad_data_carry_nothing() {
        let mut events = Events::default();
        let other = "event: state\ndata: {}\n\nevent: record\ndata: not json\n\n";
        assert!(events.push(other.as_bytes()).unwrap().is_empty());
    }

    #[test]
    fn an_endless_event_ends_the_connection() {
        let mut events = Events::default();
        let long = vec![b'x'; MAX_EVENT + 1];
        assert!(events.push(&long).is_err());
    }

    #[test]
    fn records_are_named_after_their_source() {
        let source = Source {
            base_url: "http://10.0.0.7:9090".into(),
            prefix: "shop".into(),
        };
        let r = named(
            Record {
                pipeline: "orders".into(),
                ..Default::default()
            },
            &source,
        );
        assert_eq!(r.pipeline, "shop/orders");
    }

    #[tokio::test]
    async fn a_served_feed_reaches_the_console() {
        let feed = eventpipe_core::feed::Feed::new(10);
        feed.record(Record {
            pipeline: "orders".into(),
            correlation_id: "c1".into(),
            ..Default::default()
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = eventpipe_core::feed_http::router(feed);
        tokio::spawn(axum::serve(listener, router).into_future());
        let console = Console::new(vec![], BTreeMap::new(), Default::default());
        let mut remotes = Remotes::new(console.clone());
        let source = Source {
            base_url: format!("http://{addr}"),
            prefix: "shop".into(),
        };
        remotes.sync(&BTreeMap::from([("pod".to_string(), source)]));
        let mut found = vec![];
        for _ in 0..100 {
            found = console.search("c1");
            if !found.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(found.len(), 1, "the record within 5 s");
        assert_eq!(found[0].pipeline, "shop/orders");
    }

    #[tokio::test]
    async fn follows_what_is_wanted_and_no_more() {
        let console = Console::new(vec![], BTreeMap::new(), Default::default());
        let mut remotes = Remotes::new(console);
        let source = |ip: &str| Source {
            base_url: format!("http://{ip}:9"),
            prefix: "shop".into(),
        };
        let wanted = BTreeMap::from([
            ("a".to_string(), source("127.0.0.1")),
            ("b".to_string(), source("127.0.0.2")),
        ]);
        remotes.sync(&wanted);
        assert_eq!(remotes.keys(), ["a", "b"]);
        let moved = BTreeMap::from([("b".to_string(), source("127.0.0.3"))]);
        remotes.sync(&moved);
        assert_eq!(remotes.keys(), ["b"]);
        assert_eq!(remotes.running["b"].0, source("127.0.0.3"));
        let many: BTreeMap<_, _> = (0..MAX_FEEDS + 5)
            .map(|i| (format!("{i:04}"), source("127.0.0.1")))
            .collect();
        remotes.sync(&many);
        assert_eq!(remotes.keys().len(), MAX_FEEDS);
    }
}
