//! The floor under the worker: what its requests cost by themselves, made the worker's
//! way (its own SQS wire and HTTP client) and nothing else. Receive up to ten, POST
//! each body to `SINK_URL` (with `BATCH=1`, the ten as one JSON array), delete them;
//! two long polls, as the worker keeps at `concurrency: 16`. No decoding, span, log
//! line, filter or handler: `make bench` measures it beside the worker, and the
//! difference is what the worker's own work costs per message.
//! Reads `QUEUE_URL`, `SINK_URL` and the usual AWS environment; prints `ready`.

use std::time::Duration;

use anyhow::{Context, bail};
use eventpipe_worker::wire::{HttpClient, Receive, Wire};
use http::Uri;
use http::header::{CONTENT_TYPE, HeaderMap, HeaderValue};

const TIMEOUT: Duration = Duration::from_secs(10);

struct Floor {
    wire: Wire,
    http: HttpClient,
    queue: String,
    sink: Uri,
    batch: bool,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let aws = eventpipe_core::aws::default_config().await;
    let floor = Floor {
        wire: Wire::new(&aws).await?,
        http: HttpClient::new(16)?,
        queue: std::env::var("QUEUE_URL").context("QUEUE_URL")?,
        sink: std::env::var("SINK_URL").context("SINK_URL")?.parse()?,
        batch: std::env::var("BATCH").is_ok_and(|v| v == "1"),
    };
    println!("ready");
    let (a, b) = tokio::join!(floor.consume(), floor.consume());
    a.and(b)
}

impl Floor {
    async fn consume(&self) -> anyhow::Result<()> {
        loop {
            let messages = self.wire.receive(&self.ask()).await?;
            if messages.is_empty() {
                continue;
            }
            let bodies: Vec<&str> = messages.iter().filter_map(|m| m.body.as_deref()).collect();
            match self.batch {
                true => {
                    self.post(format!("[{}]", bodies.join(",")).into_bytes())
                        .await?
                }
                false => {
                    let posts = bodies.iter().map(|b| self.post(b.as_bytes().to_vec()));
                    futures::future::try_join_all(posts).await?;
                }
            }
            let receipts: Vec<String> = (messages.into_iter())
                .filter_map(|m| m.receipt_handle)
                .collect();
            let failed = self.wire.delete(&self.queue, &receipts).await?;
            if !failed.is_empty() {
                bail!("deletes refused: {failed:?}");
            }
        }
    }

    fn ask(&self) -> Receive<'_> {
        Receive {
            queue_url: &self.queue,
            max_number_of_messages: 10,
            wait_time_seconds: 20,
            visibility_timeout: 30,
            message_system_attribute_names: &[],
            message_attribute_names: &[],
        }
    }

    async fn post(&self, body: Vec<u8>) -> anyhow::Result<()> {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let answer = self.http.post(&self.sink, headers, body, TIMEOUT).await?;
        if !answer.status.is_success() {
            bail!("the sink answered {}", answer.status);
        }
        Ok(())
    }
}
