//! Exactly-once effects: an event id is claimed in a DynamoDB table with a conditional
//! put (`IN_PROGRESS` until an expiry) before delivery and marked `COMPLETED` after.
//! A duplicate of a completed event is skipped; a claim left by a crash expires, so
//! the event is retried rather than lost. Items expire by TTL on `expires_at`.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::types::{
    AttributeValue, Put, ReturnValuesOnConditionCheckFailure, TransactWriteItem,
};
use aws_sdk_dynamodb::{error::SdkError, operation::put_item::PutItemError};
use eventpipe_core::provision;

const TTL_ATTRIBUTE: &str = "expires_at";
/// How much longer than the delivery timeout a claim holds.
const CLAIM_MARGIN: Duration = Duration::from_secs(5);
const IN_PROGRESS: &str = "IN_PROGRESS";
const COMPLETED: &str = "COMPLETED";

#[derive(Clone)]
pub struct Idempotency {
    ddb: aws_sdk_dynamodb::Client,
    table: String,
    /// How long a completed id is remembered.
    ttl: Duration,
    /// How long a claim holds before another delivery may take over.
    claim_for: Duration,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Claim {
    /// This delivery owns the event.
    Claimed,
    /// Already processed: acknowledge without delivering.
    Completed,
    /// Another delivery holds a claim for this much longer: try after it.
    InProgress(Duration),
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

fn n(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn err(e: impl std::error::Error) -> String {
    format!(
        "idempotency: {}",
        aws_sdk_dynamodb::error::DisplayErrorContext(e)
    )
}

impl Idempotency {
    /// The store `spec` describes, its table (expiring items by TTL) created when
    /// missing; a claim outlasts a delivery of at most `timeout`.
    pub async fn build(
        ddb: aws_sdk_dynamodb::Client,
        spec: &eventpipe_crds::Idempotency,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        provision::ensure_idempotency_table(&ddb, &spec.table_name, TTL_ATTRIBUTE).await?;
        Ok(Self {
            ddb,
            table: spec.table_name.clone(),
            ttl: spec.ttl.as_std(),
            claim_for: timeout + CLAIM_MARGIN,
        })
    }

    pub async fn claim(&self, id: &str) -> Result<Claim, String> {
        let now = now();
        let put = self
            .ddb
            .put_item()
            .table_name(&self.table)
            .item("id", AttributeValue::S(id.into()))
            .item("status", AttributeValue::S(IN_PROGRESS.into()))
            .item(TTL_ATTRIBUTE, n(now + self.claim_for.as_secs().max(1)))
            .condition_expression("attribute_not_exists(id) OR #e < :now")
            .expression_attribute_names("#e", TTL_ATTRIBUTE)
            .expression_attribute_values(":now", n(now))
            .send()
            .await;
        match put {
            Ok(_) => Ok(Claim::Claimed),
            Err(SdkError::ServiceError(e))
                if matches!(e.err(), PutItemError::ConditionalCheckFailedException(_)) =>
            {
                let got = self
                    .ddb
                    .get_item()
                    .table_name(&self.table)
                    .key("id", AttributeValue::S(id.into()))
                    .consistent_read(true)
                    .send()
                    .await
                    .map_err(err)?;
                let item = got.item.unwrap_or_default();
                let status = item.get("status").and_then(|s| s.as_s().ok());
                let expires = item
                    .get(TTL_ATTRIBUTE)
                    .and_then(|e| e.as_n().ok())
                    .and_then(|e| e.parse::<u64>().ok());
                Ok(match (status.map(String::as_str), expires) {
                    (Some(COMPLETED), _) => Claim::Completed,
                    (_, Some(at)) => {
                        Claim::InProgress(Duration::from_secs(at.saturating_sub(now) + 1))
                    }
                    // Gone between the put and the get: whoever held it finished or gave up.
                    _ => Claim::InProgress(Duration::from_secs(1)),
                })
            }
            Err(e) => Err(err(e)),
        }
    }

    /// The item of a completed `id`, remembered for the store's time to live.
    fn completed(&self, id: &str) -> HashMap<String, AttributeValue> {
        HashMap::from([
            ("id".into(), AttributeValue::S(id.into())),
            ("status".into(), AttributeValue::S(COMPLETED.into())),
            (TTL_ATTRIBUTE.into(), n(now() + self.ttl.as_secs())),
        ])
    }

    pub async fn complete(&self, id: &str) -> Result<(), String> {
        self.ddb
            .put_item()
            .table_name(&self.table)
            .set_item(Some(self.completed(id)))
            .send()
            .await
            .map(|_| ())
            .map_err(err)
    }

    /// Marking the claimed `id` completed as one write of a transaction, so that a
    /// processor writing to DynamoDB makes its effect and "done" one atomic step: a
    /// write that lands after its delivery gave up (timed out, claim released) is
    /// either both or neither, never an effect a retry repeats. It applies only
    /// while the claim is still in progress.
    pub fn completion(&self, id: &str) -> Option<TransactWriteItem> {
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(self.completed(id)))
            .condition_expression("#s = :p")
            .expression_attribute_names("#s", "status")
            .expression_attribute_values(":p", AttributeValue::S(IN_PROGRESS.into()))
            // So a refusal tells a claim completed from one lost.
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .ok()?;
        Some(TransactWriteItem::builder().put(put).build())
    }

    /// Whether a claim's item, as a refused completion returned it, is completed.
    pub fn is_completed(item: &HashMap<String, AttributeValue>) -> bool {
        item.get("status")
            .and_then(|s| s.as_s().ok())
            .map(String::as_str)
            == Some(COMPLETED)
    }

    /// Gives a claim back after a failed delivery, so the retry may claim it at once.
    pub async fn release(&self, id: &str) -> Result<(), String> {
        self.ddb
            .delete_item()
            .table_name(&self.table)
            .key("id", AttributeValue::S(id.into()))
            .condition_expression("#s = :p")
            .expression_attribute_names("#s", "status")
            .expression_attribute_values(":p", AttributeValue::S(IN_PROGRESS.into()))
            .send()
            .await
            .map(|_| ())
            .or_else(|e| match e {
                SdkError::ServiceError(ref s)
                    if s.err().is_conditional_check_failed_exception() =>
                {
                    Ok(())
                }
                other => Err(err(other)),
            })
    }
}
