//! `dynamodb`: put the event into a table, keyed by event id so a redelivery
//! overwrites nothing; or, with `aggregate`, add one to a counter item keyed by parts
//! of the event, in one transaction with the completion of the event's
//! `delivery.idempotency` claim, so a count lands exactly once even when its delivery
//! gave up before the write landed. Batched puts are in `dynamodb_batch`.

use std::collections::HashMap;

use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, TransactWriteItem, Update};
use eventpipe_core::{envelope, item, provision};
use eventpipe_crds::{Aggregate, DynamoDbProcessor as Spec};
use serde_json::Value;

use crate::idempotency::Idempotency;

use super::{BoxFuture, Delivery, Failure, Outcome, Processor, with_trace};

pub struct DynamoDbProcessor {
    pub(super) ddb: aws_sdk_dynamodb::Client,
    pub(super) spec: Spec,
}

impl DynamoDbProcessor {
    /// The processor of `spec`, creating its table first when `create` says so (with
    /// a stream, unless it holds counters).
    pub async fn build(spec: &Spec, ddb: aws_sdk_dynamodb::Client) -> anyhow::Result<Self> {
        if !spec.required.is_empty() && spec.batch.is_some() {
            anyhow::bail!(
                "processor.dynamodb: required checks each event before its own put: remove batch or required"
            );
        }
        if spec.create {
            let stream = spec.aggregate.is_none();
            provision::ensure_processor_table(&ddb, &spec.table_name, stream).await?;
        }
        Ok(Self {
            ddb,
            spec: spec.clone(),
        })
    }

    async fn put(&self, d: &Delivery<'_>) -> Outcome {
        let event = with_trace(d.event, &d.trace);
        let result = self
            .ddb
            .put_item()
            .table_name(&self.spec.table_name)
            .set_item(Some(stamped(item::from_event(&event))))
            .condition_expression("attribute_not_exists(id)")
            .send()
            .await;
        match result {
            Ok(_) => Outcome::Delivered { reply: None },
            // Stored by an earlier delivery of the same event.
            Err(SdkError::ServiceError(e))
                if matches!(e.err(), PutItemError::ConditionalCheckFailedException(_)) =>
            {
                Outcome::Delivered { reply: None }
            }
            Err(e) => Outcome::Failed(failure(e)),
        }
    }

    async fn count(&self, d: &Delivery<'_>, aggregate: &Aggregate) -> Outcome {
        let parts = match key_parts(aggregate, &envelope::as_json(d.event)) {
            Ok(parts) => parts,
            Err(e) => return Outcome::Failed(Failure::invalid(e)),
        };
        let id = parts
            .iter()
            .map(|(_, v)| v.as_str())
            .collect::<Vec<_>>()
            .join("#");
        let mut names = HashMap::from([("#c".to_string(), aggregate.counter.clone())]);
        let mut values = HashMap::from([(":one".to_string(), AttributeValue::N("1".into()))]);
        let mut sets = vec![];
        for (i, (name, value)) in parts.into_iter().enumerate() {
            names.insert(format!("#p{i}"), name);
            values.insert(format!(":p{i}"), AttributeValue::S(value));
            sets.push(format!("#p{i} = :p{i}"));
        }
        let update = Update::builder()
            .table_name(&self.spec.table_name)
            .key("id", AttributeValue::S(id))
            .update_expression(format!("ADD #c :one SET {}", sets.join(", ")))
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .build();
        match update {
            Ok(update) => self.apply(update, d.completion.clone()).await,
            Err(e) => Outcome::Failed(Failure::invalid(e.to_string())),
        }
    }

    /// The counter's update, in one transaction with the claim's completion when
    /// there is one: a count that lands after its delivery gave up is then never
    /// repeated by the retry.
    async fn apply(&self, update: Update, completion: Option<TransactWriteItem>) -> Outcome {
        let Some(completion) = completion else {
            let result = (self.ddb.update_item())
                .table_name(update.table_name)
                .set_key(Some(update.key))
                .update_expression(update.update_expression)
                .set_expression_attribute_names(update.expression_attribute_names)
                .set_expression_attribute_values(update.expression_attribute_values)
                .send()
                .await;
            return match result {
                Ok(_) => Outcome::Delivered { reply: None },
                Err(e) => Outcome::Failed(failure(e)),
            };
        };
        let write = TransactWriteItem::builder().update(update).build();
        let result = (self.ddb.transact_write_items())
            .transact_items(write)
            .transact_items(completion)
            .send()
            .await;
        match result {
            Ok(_) => Outcome::Delivered { reply: None },
            // The claim is no longer in progress: completed by an earlier delivery
            // whose write landed late, so this event is counted already.
            Err(SdkError::ServiceError(e)) if claim_was_completed(e.err()) => {
                Outcome::Delivered { reply: None }
            }
            Err(e) => Outcome::Failed(failure(e)),
        }
    }
}

/// A cancelled transaction whose second write (the claim's completion) was refused
/// because the claim is completed already. A claim lost otherwise is a failure.
fn claim_was_completed(e: &TransactWriteItemsError) -> bool {
    let TransactWriteItemsError::TransactionCanceledException(cancelled) = e else {
        return false;
    };
    let completion = cancelled.cancellation_reasons().get(1);
    completion
        .and_then(|r| r.item())
        .is_some_and(Idempotency::is_completed)
}

/// Marks when the item was stored (`_eventpipe.stored_at`, RFC 3339 with
/// milliseconds), so end-to-end latency can be read off the table.
pub(super) fn stamped(
    mut item: HashMap<String, AttributeValue>,
) -> HashMap<String, AttributeValue> {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    if let Some(AttributeValue::M(meta)) = item.get_mut(item::META) {
        meta.insert("stored_at".into(), AttributeValue::S(now));
    }
    item
}

/// The counter item's key parts, `(attribute, value)`, taken from the event.
pub fn key_parts(aggregate: &Aggregate, event: &Value) -> Result<Vec<(String, String)>, String> {
    aggregate
        .key
        .iter()
        .map(|k| {
            let value = match event.pointer(&k.json_pointer) {
                Some(Value::String(s)) => s.clone(),
                Some(v @ (Value::Number(_) | Value::Bool(_))) => v.to_string(),
                _ => {
                    return Err(format!(
                        "aggregate key {:?}: no value at {}",
                        k.name, k.json_pointer
                    ));
                }
            };
            let value = if k.date {
                value.chars().take(10).collect()
            } else {
                value
            };
            Ok((k.name.clone(), value))
        })
        .collect()
}

/// The first of `required`'s pointers with no value in the event, as the failure.
fn missing(required: &[String], event: &Value) -> Option<Failure> {
    let empty = |v: &Value| match v {
        Value::Null => true,
        Value::String(s) => s.trim().is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    };
    let absent = required
        .iter()
        .find(|p| event.pointer(p).is_none_or(empty))?;
    Some(Failure::invalid(format!("no value at {absent}")))
}

impl Processor for DynamoDbProcessor {
    fn deliver<'a>(&'a self, d: Delivery<'a>) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let required = &self.spec.required;
            if !required.is_empty()
                && let Some(f) = missing(required, &envelope::as_json(d.event))
            {
                return Outcome::Failed(f);
            }
            match &self.spec.aggregate {
                Some(aggregate) => self.count(&d, aggregate).await,
                None => self.put(&d).await,
            }
        })
    }

    /// Puts in `BatchWriteItem`s (`batch`); a count stays one transaction per event.
    fn deliver_batch<'a>(&'a self, deliveries: Vec<Delivery<'a>>) -> BoxFuture<'a, Vec<Outcome>> {
        Box::pin(async move {
            if self.spec.aggregate.is_none() {
                return self.put_batch(deliveries).await;
            }
            let mut outcomes = Vec::with_capacity(deliveries.len());
            for d in deliveries {
                outcomes.push(self.deliver(d).await);
            }
            outcomes
        })
    }

    /// A count writes the claim's completion in its transaction.
    fn completes_claims(&self) -> bool {
        self.spec.aggregate.is_some()
    }
}

/// DynamoDB asking to slow down (or not answering in time) is throttling; other
/// errors are transient.
pub(super) fn failure<E, R>(e: SdkError<E, R>) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let throttled = matches!(e, SdkError::TimeoutError(_)) || is_throttling(e.code());
    let message = aws_sdk_dynamodb::error::DisplayErrorContext(&e).to_string();
    match throttled {
        true => Failure::throttled(None, message),
        false => Failure::transient(message),
    }
}

fn is_throttling(code: Option<&str>) -> bool {
    matches!(
        code,
        Some(
            "ProvisionedThroughputExceededException"
                | "ThrottlingException"
                | "RequestLimitExceeded"
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_event_without_a_required_value_is_invalid() {
        let required = ["/data/text".to_string(), "/subject".to_string()];
        let ok = json!({"subject": "n1", "data": {"text": "buy milk"}});
        assert_eq!(missing(&required, &ok), None);
        for (event, at) in [
            (
                json!({"subject": "n1", "data": {"text": "  "}}),
                "/data/text",
            ),
            (json!({"subject": "n1", "data": {}}), "/data/text"),
            (json!({"data": {"text": "x"}}), "/subject"),
        ] {
            let f = missing(&required, &event).unwrap();
            assert_eq!(f.kind, crate::processor::FailureKind::Invalid);
            assert_eq!(f.message, format!("no value at {at}"));
        }
    }

    #[test]
    fn throttling_codes_are_told_from_other_errors() {
        assert!(is_throttling(Some(
            "ProvisionedThroughputExceededException"
        )));
        assert!(is_throttling(Some("ThrottlingException")));
        assert!(is_throttling(Some("RequestLimitExceeded")));
        assert!(!is_throttling(Some("ValidationException")));
        assert!(!is_throttling(None));
    }

    #[test]
    fn key_parts_come_from_pointers_with_dates_truncated() {
        let aggregate: Aggregate = serde_json::from_value(json!({
            "key": [
                {"name": "repository", "jsonPointer": "/data/repository/full_name"},
                {"name": "day", "jsonPointer": "/time", "date": true},
                {"name": "issue", "jsonPointer": "/data/issue/number"}
            ]
        }))
        .unwrap();
        let event = json!({"time": "2026-11-23T02:28:00Z", "data": {"repository": {"full_name": "acme/w"}, "issue": {"number": 7}}});
        let parts = key_parts(&aggregate, &event).unwrap();
        assert_eq!(
            parts,
            [
                ("repository".into(), "acme/w".into()),
                ("day".into(), "2026-11-23".into()),
                ("issue".into(), "7".into())
            ]
        );
        assert_eq!(aggregate.counter, "count");
        let err = key_parts(&aggregate, &json!({"time": "2026-11-23T00:00:00Z"})).unwrap_err();
        assert_eq!(
            err,
            "aggregate key \"repository\": no value at /data/repository/full_name"
        );
    }

    /// Counting against moto, with the claim's completion in the same transaction.
    mod counted_once {
        use super::*;
        use crate::idempotency::Claim;
        use eventpipe_core::envelope::{NewEvent, build};
        use std::time::Duration;

        async fn counter(ddb: &aws_sdk_dynamodb::Client) -> i64 {
            let got = ddb
                .get_item()
                .table_name("counts")
                .key("id", AttributeValue::S("a".into()));
            let item = got.send().await.unwrap().item.unwrap_or_default();
            item.get("n")
                .map_or(0, |n| n.as_n().unwrap().parse().unwrap())
        }

        #[tokio::test]
        async fn a_count_and_its_claims_completion_land_together_once() {
            let moto = eventpipe_testkit::Moto::start();
            let ddb = moto.dynamodb();
            let spec: Spec = serde_json::from_value(json!({"tableName": "counts", "create": true,
                "aggregate": {"key": [{"name": "repo", "jsonPointer": "/data/repo"}], "counter": "n"}}))
            .unwrap();
            let processor = DynamoDbProcessor::build(&spec, ddb.clone()).await.unwrap();
            let idempotency = json!({"tableName": "claims", "ttl": "1h"});
            let idempotency = serde_json::from_value(idempotency).unwrap();
            let store = Idempotency::build(ddb.clone(), &idempotency, Duration::from_secs(10))
                .await
                .unwrap();
            let event = |id: &str| {
                let data = json!({"repo": "a"});
                build(NewEvent {
                    id: id.into(),
                    source: "/s".into(),
                    event_type: "t".into(),
                    data,
                    ..Default::default()
                })
            };
            let deliver = async |id: &str| {
                let e = event(id);
                let d = Delivery {
                    event: &e,
                    trace: vec![],
                    group: None,
                    completion: store.completion(id),
                };
                processor.deliver(d).await
            };
            assert_eq!(store.claim("e1").await.unwrap(), Claim::Claimed);
            assert!(matches!(deliver("e1").await, Outcome::Delivered { .. }));
            assert_eq!(store.claim("e1").await.unwrap(), Claim::Completed);
            // The same write again (one that landed after its delivery gave up, say)
            // counts nothing more.
            assert!(matches!(deliver("e1").await, Outcome::Delivered { .. }));
            assert_eq!(counter(&ddb).await, 1);
            // A claim given back meanwhile: the write fails and counts nothing, so
            // the retry that claims it again counts it once.
            assert_eq!(store.claim("e2").await.unwrap(), Claim::Claimed);
            store.release("e2").await.unwrap();
            assert!(matches!(deliver("e2").await, Outcome::Failed(_)));
            assert_eq!(counter(&ddb).await, 1);
            assert_eq!(store.claim("e2").await.unwrap(), Claim::Claimed);
            assert!(matches!(deliver("e2").await, Outcome::Delivered { .. }));
            assert_eq!(counter(&ddb).await, 2);
        }
    }
}
