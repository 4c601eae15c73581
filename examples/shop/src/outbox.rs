//! The transactional outbox's two ends, free of I/O: the outbox item a service writes
//! in the same transaction as its state, and the CloudEvent a new item is published
//! as. The item's id is the event's id, so every copy of one item is one event.

use serde_json::{Value, json};

use crate::cloudevent::{Incoming, Reply};

/// Where eventpipe keeps an item's trace context and correlation id, so the stream
/// event continues the writer's trace.
const META: &str = "_eventpipe";

/// What an outbox item announces.
pub struct NewItem<'a> {
    pub id: String,
    pub event_type: &'a str,
    pub source: &'a str,
    pub subject: &'a str,
    pub data: Value,
    pub now: String,
}

/// The outbox item, carrying the trace and correlation id of `cause`.
pub fn item(new: NewItem<'_>, cause: &Incoming) -> Value {
    let mut meta = json!({});
    if let Some(c) = &cause.correlation_id {
        meta["correlationid"] = json!(c);
    }
    if let Some(t) = &cause.traceparent {
        meta["traceparent"] = json!(t);
    }
    json!({
        "id": new.id, "type": new.event_type, "source": new.source, "subject": new.subject,
        "data": new.data, "createdAt": new.now, META: meta,
    })
}

/// The CloudEvent an outbox item is published as (the item is the data of the
/// stream's INSERT event).
pub fn published(item: &Value) -> Result<Reply, String> {
    let text = |k: &str| {
        item[k]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    match (text("id"), text("type"), text("source"), item.get("data")) {
        (Some(id), Some(event_type), Some(source), Some(data)) => Ok(Reply {
            id,
            event_type,
            source,
            subject: text("subject"),
            data: data.clone(),
        }),
        _ => Err("an outbox item needs id, type, source and data".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cause() -> Incoming {
        Incoming {
            id: "e-1".into(),
            event_type: "CustomerSignedUp".into(),
            correlation_id: Some("c-1".into()),
            traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
            data: json!({}),
        }
    }

    fn new_item() -> NewItem<'static> {
        NewItem {
            id: "0193".into(),
            event_type: "CustomerRegistered",
            source: "/shop/customers",
            subject: "c-1",
            data: json!({"customerId": "c-1"}),
            now: "2026-12-01T10:00:00Z".into(),
        }
    }

    #[test]
    fn an_item_carries_its_cause_trace_and_is_published_as_its_own_event() {
        let item = item(new_item(), &cause());
        assert_eq!(
            item["_eventpipe"]["traceparent"],
            cause().traceparent.unwrap()
        );
        assert_eq!(item["_eventpipe"]["correlationid"], "c-1");
        // The stream event's data is the item without eventpipe's meta.
        let mut data = item.clone();
        data.as_object_mut().unwrap().remove("_eventpipe");
        let event = published(&data).unwrap();
        assert_eq!(
            event,
            Reply {
                id: "0193".into(),
                event_type: "CustomerRegistered".into(),
                source: "/shop/customers".into(),
                subject: Some("c-1".into()),
                data: json!({"customerId": "c-1"}),
            }
        );
    }

    #[test]
    fn an_item_without_its_event_parts_is_refused() {
        for missing in ["id", "type", "source", "data"] {
            let mut item = item(new_item(), &cause());
            item.as_object_mut().unwrap().remove(missing);
            let err = published(&item).unwrap_err();
            assert!(
                err.contains("needs id, type, source and data"),
                "{missing}: {err}"
            );
        }
    }
}
