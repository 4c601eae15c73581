//! `dynamodb` with `batch`: puts in `BatchWriteItem`s of up to 25, the items
//! DynamoDB leaves unprocessed (its throughput limits) tried again after a short
//! backoff, a bounded number of times, then held as throttled. `BatchWriteItem` takes
//! no condition, so these puts overwrite instead of skipping an item that exists;
//! counts (updates, in a transaction with their idempotency claim) and the
//! conditional single put stay one event at a time.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::types::{AttributeValue, PutRequest, WriteRequest};
use cloudevents::AttributesReader;
use eventpipe_core::item;

use super::dynamodb::{DynamoDbProcessor, failure, stamped};
use super::{Delivery, Failure, Outcome, with_trace};

/// Items per `BatchWriteItem`, DynamoDB's limit.
pub const MAX_ITEMS: usize = 25;
/// Tries of a `BatchWriteItem` whose items come back unprocessed.
const TRIES: u32 = 5;

/// The pause before the `n`-th retry of unprocessed items: 50 ms, doubling.
pub fn unprocessed_pause(n: u32) -> Duration {
    Duration::from_millis(50 << n.saturating_sub(1).min(6))
}

/// The distinct ids of a batch, in first-seen order, with the positions of each:
/// a `BatchWriteItem` refuses the same key twice.
pub fn distinct<'a>(ids: &[&'a str]) -> Vec<(&'a str, Vec<usize>)> {
    let mut out: Vec<(&str, Vec<usize>)> = vec![];
    for (k, id) in ids.iter().enumerate() {
        match out.iter_mut().find(|(x, _)| x == id) {
            Some((_, at)) => at.push(k),
            None => out.push((id, vec![k])),
        }
    }
    out
}

impl DynamoDbProcessor {
    /// Puts of `deliveries`, an outcome for each in order.
    pub(super) async fn put_batch(&self, deliveries: Vec<Delivery<'_>>) -> Vec<Outcome> {
        let ids: Vec<&str> = deliveries.iter().map(|d| d.event.id()).collect();
        let mut outcomes: Vec<Option<Outcome>> = (0..ids.len()).map(|_| None).collect();
        let groups = distinct(&ids);
        for chunk in groups.chunks(MAX_ITEMS) {
            let writes = chunk
                .iter()
                .map(|(_, at)| self.put_request(&deliveries[at[0]]))
                .collect();
            let result = self.write_all(writes).await;
            for (id, at) in chunk {
                let outcome = match &result {
                    Ok(left) if left.contains(&id.to_string()) => {
                        Outcome::Failed(Failure::throttled(
                            None,
                            format!("BatchWriteItem left the item unprocessed {TRIES} times"),
                        ))
                    }
                    Ok(_) => Outcome::Delivered { reply: None },
                    Err(failure) => Outcome::Failed(failure.clone()),
                };
                for k in at {
                    outcomes[*k] = Some(clone(&outcome));
                }
            }
        }
        outcomes.into_iter().flatten().collect()
    }

    fn put_request(&self, d: &Delivery<'_>) -> WriteRequest {
        let event = with_trace(d.event, &d.trace);
        let put = PutRequest::builder()
            .set_item(Some(stamped(item::from_event(&event))))
            .build()
            .expect("item set");
        WriteRequest::builder().put_request(put).build()
    }

    /// Writes `writes`, retrying what comes back unprocessed; the ids still
    /// unprocessed after the last try.
    async fn write_all(&self, mut writes: Vec<WriteRequest>) -> Result<Vec<String>, Failure> {
        for n in 1..=TRIES {
            let out = (self.ddb.batch_write_item())
                .request_items(&self.spec.table_name, writes)
                .send()
                .await
                .map_err(failure)?;
            let mut left = out.unprocessed_items.unwrap_or_default();
            writes = left.remove(&self.spec.table_name).unwrap_or_default();
            if writes.is_empty() {
                return Ok(vec![]);
            }
            if n < TRIES {
                tracing::debug!(
                    unprocessed = writes.len(),
                    "BatchWriteItem left items unprocessed; retrying them"
                );
                tokio::time::sleep(unprocessed_pause(n)).await;
            }
        }
        Ok(writes.iter().filter_map(id_of).collect())
    }
}

fn id_of(w: &WriteRequest) -> Option<String> {
    let item: &HashMap<String, AttributeValue> = &w.put_request.as_ref()?.item;
    item.get("id")?.as_s().ok().cloned()
}

fn clone(o: &Outcome) -> Outcome {
    match o {
        Outcome::Delivered { .. } => Outcome::Delivered { reply: None },
        Outcome::Failed(f) => Outcome::Failed(f.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_writes_each_id_once_and_answers_every_delivery_of_it() {
        let got = distinct(&["a", "b", "a", "c", "b"]);
        assert_eq!(got, [("a", vec![0, 2]), ("b", vec![1, 4]), ("c", vec![3])]);
    }

    #[tokio::test]
    async fn a_refused_batch_fails_every_event_and_an_accepted_one_writes_each_id_once() {
        use crate::processor::FailureKind;
        use crate::processor::fixtures::{deliveries, events};
        let moto = eventpipe_testkit::Moto::start();
        let ddb = moto.dynamodb();
        let spec = |table: &str| -> eventpipe_crds::DynamoDbProcessor {
            serde_json::from_value(serde_json::json!({"tableName": table})).unwrap()
        };
        let events = events(&["a", "b", "a"]);
        let missing = DynamoDbProcessor::build(&spec("missing"), ddb.clone()).await;
        let outcomes = missing.unwrap().put_batch(deliveries(&events)).await;
        assert_eq!(outcomes.len(), 3);
        for o in &outcomes {
            let Outcome::Failed(f) = o else {
                panic!("written to a missing table")
            };
            assert_eq!(f.kind, FailureKind::Transient, "{}", f.message);
        }
        eventpipe_core::provision::ensure_processor_table(&ddb, "stored", false)
            .await
            .unwrap();
        let stored = DynamoDbProcessor::build(&spec("stored"), ddb.clone()).await;
        let outcomes = stored.unwrap().put_batch(deliveries(&events)).await;
        assert!(
            outcomes
                .iter()
                .all(|o| matches!(o, Outcome::Delivered { .. }))
        );
        let items = ddb.scan().table_name("stored").send().await.unwrap();
        assert_eq!(items.count(), 2);
    }

    #[test]
    fn unprocessed_items_are_retried_after_a_doubling_pause() {
        let ms: Vec<u128> = (1..=8).map(|n| unprocessed_pause(n).as_millis()).collect();
        assert_eq!(ms, [50, 100, 200, 400, 800, 1600, 3200, 3200]);
    }
}
