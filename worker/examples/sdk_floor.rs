//! The floor under any SQS consumer built on the AWS SDK for Rust: receive up to ten,
//! delete them, nothing delivered, no span, no log line; two long polls, as the worker
//! keeps at `concurrency: 16`. `make bench` measures it beside the worker (its CPU
//! per message is what the SDK and the kernel cost before a consumer does any work).
//! Reads `QUEUE_URL` and the usual AWS environment; prints `ready`, then the count of
//! each deleted batch, as the benchmark's ceiling loop does.

use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, Message};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let url = std::env::var("QUEUE_URL")?;
    let sqs = aws_sdk_sqs::Client::new(&eventpipe_core::aws::default_config().await);
    println!("ready");
    let (a, b) = tokio::join!(consume(&sqs, &url), consume(&sqs, &url));
    a.and(b)
}

async fn consume(sqs: &aws_sdk_sqs::Client, url: &str) -> anyhow::Result<()> {
    loop {
        let received = sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .wait_time_seconds(20)
            .send()
            .await?;
        let messages = received.messages.unwrap_or_default();
        if messages.is_empty() {
            continue;
        }
        let entries = messages.iter().enumerate().map(entry);
        let entries = entries.collect::<Result<Vec<_>, _>>()?;
        sqs.delete_message_batch()
            .queue_url(url)
            .set_entries(Some(entries))
            .send()
            .await?;
        println!("{}", messages.len());
    }
}

fn entry((i, m): (usize, &Message)) -> anyhow::Result<DeleteMessageBatchRequestEntry> {
    Ok(DeleteMessageBatchRequestEntry::builder()
        .id(i.to_string())
        .set_receipt_handle(m.receipt_handle.clone())
        .build()?)
}
