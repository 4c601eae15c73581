//! What a dead-letter queue is to the worker and to the `eventpipe dlq` tooling:
//! where a source's dead-letter queue is, and the message attributes that say why a
//! message was moved there.

use eventpipe_core::resolve;
use eventpipe_crds::{DeadLetterPolicy, SqsQueue};

/// Why a message was dead-lettered, after how many receives, and from which queue.
pub const ERROR_ATTRIBUTE: &str = "eventpipe-error";
pub const RECEIVE_COUNT_ATTRIBUTE: &str = "eventpipe-receive-count";
pub const SOURCE_QUEUE_ATTRIBUTE: &str = "eventpipe-source-queue";
/// Where a dead-lettered stream record was read: stream, shard and sequence number.
pub const SOURCE_STREAM_ATTRIBUTE: &str = "eventpipe-source-stream";
pub const SHARD_ATTRIBUTE: &str = "eventpipe-shard-id";
pub const SEQUENCE_ATTRIBUTE: &str = "eventpipe-sequence-number";

/// The DLQ of a queue source, which must exist: the policy's queue, else the
/// queue's redrive target, else `<queue>-dlq`.
pub async fn dead_letter_queue(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    queue: &SqsQueue,
    policy: &DeadLetterPolicy,
) -> anyhow::Result<String> {
    Ok(resolve::queue_dead_letters(sqs, url, queue, policy).await?)
}

/// The DLQ of a stream source, which must exist: the policy's queue, else
/// `<table>-dlq`.
pub async fn stream_dead_letter_queue(
    sqs: &aws_sdk_sqs::Client,
    table: &str,
    policy: &DeadLetterPolicy,
) -> anyhow::Result<String> {
    Ok(resolve::stream_dead_letters(sqs, table, policy).await?)
}
