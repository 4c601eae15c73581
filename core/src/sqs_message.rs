//! SQS messages as eventpipe writes and reads them. The body is the structured
//! CloudEvent; its correlation id and trace context are mirrored into message
//! attributes for consumers that never parse the body; FIFO group and deduplication
//! ids follow one rule; a dead-lettered message carries why, in attributes of its own.
//! Whoever sends or reads a message (the ingress, the worker's publisher and
//! dead-lettering, redrive) goes through here.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_sqs::operation::send_message::builders::SendMessageFluentBuilder;
use aws_sdk_sqs::types::{
    Message, MessageAttributeValue, MessageSystemAttributeName, SendMessageBatchRequestEntry,
};
use cloudevents::{AttributesReader, Event};
use sha2::{Digest, Sha256};

use crate::envelope::{self, Decoded};

/// Message attribute names.
pub mod attribute {
    /// Mirrors of the CloudEvent's extensions.
    pub const TRACEPARENT: &str = "traceparent";
    pub const TRACESTATE: &str = "tracestate";
    pub const CORRELATION_ID: &str = "correlation-id";
    /// Why a message was dead-lettered, after how many receives (or attempts)...
    pub const ERROR: &str = "eventpipe-error";
    pub const RECEIVE_COUNT: &str = "eventpipe-receive-count";
    /// ...and where it was read: a queue, or a stream's shard and sequence number.
    pub const SOURCE_QUEUE: &str = "eventpipe-source-queue";
    pub const SOURCE_STREAM: &str = "eventpipe-source-stream";
    pub const SHARD: &str = "eventpipe-shard-id";
    pub const SEQUENCE_NUMBER: &str = "eventpipe-sequence-number";
}

/// SQS accepts at most ten attributes on a message.
pub const MAX_ATTRIBUTES: usize = 10;
/// SQS's limit on one message, body and attributes together.
pub const MAX_BYTES: usize = 1 << 20;
/// How much of an error a dead-lettered message keeps.
const MAX_ERROR_CHARS: usize = 1024;

/// The attributes that say why a message was dead-lettered.
const REASONS: [&str; 6] = [
    attribute::ERROR,
    attribute::RECEIVE_COUNT,
    attribute::SOURCE_QUEUE,
    attribute::SOURCE_STREAM,
    attribute::SHARD,
    attribute::SEQUENCE_NUMBER,
];

/// A message on its way to a queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing {
    pub body: String,
    pub attributes: BTreeMap<String, String>,
    pub group_id: Option<String>,
    pub deduplication_id: Option<String>,
}

/// Why a message was dead-lettered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetterReasons {
    pub error: String,
    /// Receives of a queue's message; attempts at a stream record (0 for the records
    /// of a failed range after the first).
    pub receive_count: u32,
    pub origin: Origin,
}

/// Where a dead-lettered message was read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A queue, by URL.
    Queue(String),
    StreamRecord {
        stream_arn: String,
        shard: String,
        sequence_number: String,
    },
}

impl Outgoing {
    /// An event. On a FIFO queue its group is `group`, else its correlation id, and
    /// its deduplication id is its id, so a re-sent event is stored once.
    pub fn event(event: &Event, fifo: bool, group: Option<&str>) -> Self {
        let correlation_id =
            envelope::correlation_id(event).unwrap_or_else(|| event.id().to_string());
        let mut attributes: BTreeMap<String, String> = envelope::trace_context(event)
            .into_iter()
            .filter(|(_, v)| !v.is_empty()) // SQS refuses empty values
            .collect();
        attributes.insert(attribute::CORRELATION_ID.into(), correlation_id.clone());
        let message = Self {
            body: envelope::to_json(event),
            attributes,
            group_id: None,
            deduplication_id: None,
        };
        match fifo {
            true => message.grouped(group.unwrap_or(&correlation_id), event.id()),
            false => message,
        }
    }

    /// A received message, body and attributes as they arrived (for dead-lettering
    /// and redrive). On a FIFO queue it keeps its group, else joins `fallback_group`.
    pub fn forward(
        message: &Message,
        fifo: bool,
        fallback_group: &str,
        deduplication_id: &str,
    ) -> Self {
        let attributes = string_attributes(message);
        let forwarded = Self {
            body: message.body.clone().unwrap_or_default(),
            attributes: attributes.into_iter().collect(),
            group_id: None,
            deduplication_id: None,
        };
        match fifo {
            true => {
                let group = group_of(message);
                forwarded.grouped(group.as_deref().unwrap_or(fallback_group), deduplication_id)
            }
            false => forwarded,
        }
    }

    /// FIFO group and deduplication ids, made valid by [`fifo_id`].
    pub fn grouped(mut self, group: &str, deduplication_id: &str) -> Self {
        self.group_id = Some(fifo_id(group));
        self.deduplication_id = Some(fifo_id(deduplication_id));
        self
    }

    /// The message with why it was dead-lettered, replacing earlier reasons and, past
    /// SQS's attribute limit, the producer's attributes (trace and correlation stay
    /// in the body).
    pub fn with_reasons(mut self, reasons: &DeadLetterReasons) -> Self {
        self = self.without_reasons();
        let added = reasons.attributes();
        let mut room = MAX_ATTRIBUTES - added.len();
        self.attributes.retain(|_, _| {
            let keep = room > 0;
            room = room.saturating_sub(1);
            keep
        });
        self.attributes.extend(
            added
                .into_iter()
                .filter(|(_, v)| !v.is_empty())
                .map(|(k, v)| (k.to_string(), v)),
        );
        self
    }

    /// The message without the reasons it was dead-lettered (when it is redriven).
    pub fn without_reasons(mut self) -> Self {
        self.attributes
            .retain(|k, _| !REASONS.contains(&k.as_str()));
        self
    }

    /// Size as SQS counts it: the body and each attribute's name, type and value.
    pub fn size(&self) -> usize {
        let attributes: usize = self
            .attributes
            .iter()
            .map(|(k, v)| k.len() + "String".len() + v.len())
            .sum();
        self.body.len() + attributes
    }

    /// The message as entry `id` of a `SendMessageBatch`.
    pub fn batch_entry(self, id: usize) -> SendMessageBatchRequestEntry {
        let (body, attributes, group, dedup) = self.into_parts();
        SendMessageBatchRequestEntry::builder()
            .id(id.to_string())
            .message_body(body)
            .set_message_attributes(Some(attributes))
            .set_message_group_id(group)
            .set_message_deduplication_id(dedup)
            .build()
            .expect("id and body are set")
    }

    /// The message on a `SendMessage` request.
    pub fn send(self, request: SendMessageFluentBuilder) -> SendMessageFluentBuilder {
        let (body, attributes, group, dedup) = self.into_parts();
        request
            .message_body(body)
            .set_message_attributes(Some(attributes))
            .set_message_group_id(group)
            .set_message_deduplication_id(dedup)
    }

    #[allow(clippy::type_complexity)]
    fn into_parts(
        self,
    ) -> (
        String,
        HashMap<String, MessageAttributeValue>,
        Option<String>,
        Option<String>,
    ) {
        let attributes = self
            .attributes
            .into_iter()
            .map(|(k, v)| (k, string_value(v)))
            .collect();
        (self.body, attributes, self.group_id, self.deduplication_id)
    }
}

fn string_value(value: String) -> MessageAttributeValue {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(value)
        .build()
        .expect("data type is set")
}

/// Whether a queue (by name or URL) is a FIFO queue: SQS requires the suffix.
pub fn is_fifo(queue: &str) -> bool {
    queue.ends_with(".fifo")
}

/// FIFO group and deduplication ids allow 128 characters of ASCII letters, digits
/// and punctuation; anything else is replaced by its SHA-256, which keeps equal ids
/// equal and different ones different.
pub fn fifo_id(id: &str) -> String {
    let valid = |c: char| c.is_ascii_alphanumeric() || c.is_ascii_punctuation();
    if !id.is_empty() && id.len() <= 128 && id.chars().all(valid) {
        id.to_string()
    } else {
        hex::encode(Sha256::digest(id.as_bytes()))
    }
}

/// A received message's string attributes.
pub fn string_attributes(message: &Message) -> HashMap<String, String> {
    message
        .message_attributes
        .iter()
        .flatten()
        .filter_map(|(k, v)| v.string_value.clone().map(|s| (k.clone(), s)))
        .collect()
}

/// A received message's FIFO group.
pub fn group_of(message: &Message) -> Option<String> {
    system_attribute(message, MessageSystemAttributeName::MessageGroupId)
}

/// How many times the message has been received, this time included.
pub fn receive_count(message: &Message) -> u32 {
    system_attribute(message, MessageSystemAttributeName::ApproximateReceiveCount)
        .and_then(|c| c.parse().ok())
        .unwrap_or(1)
}

fn system_attribute(message: &Message, name: MessageSystemAttributeName) -> Option<String> {
    message.attributes.as_ref()?.get(&name).cloned()
}

impl DeadLetterReasons {
    fn attributes(&self) -> Vec<(&'static str, String)> {
        let mut out = vec![
            (
                attribute::ERROR,
                self.error.chars().take(MAX_ERROR_CHARS).collect(),
            ),
            (attribute::RECEIVE_COUNT, self.receive_count.to_string()),
        ];
        match &self.origin {
            Origin::Queue(url) => out.push((attribute::SOURCE_QUEUE, url.clone())),
            Origin::StreamRecord {
                stream_arn,
                shard,
                sequence_number,
            } => out.extend([
                (attribute::SOURCE_STREAM, stream_arn.clone()),
                (attribute::SHARD, shard.clone()),
                (attribute::SEQUENCE_NUMBER, sequence_number.clone()),
            ]),
        }
        out
    }

    /// The reasons a dead-lettered message carries, from its attributes.
    pub fn read(attributes: &HashMap<String, String>) -> Option<Self> {
        let get = |k: &str| attributes.get(k).cloned().unwrap_or_default();
        let origin = match attributes.get(attribute::SOURCE_STREAM) {
            Some(stream) => Origin::StreamRecord {
                stream_arn: stream.clone(),
                shard: get(attribute::SHARD),
                sequence_number: get(attribute::SEQUENCE_NUMBER),
            },
            None => Origin::Queue(get(attribute::SOURCE_QUEUE)),
        };
        Some(Self {
            error: attributes.get(attribute::ERROR)?.clone(),
            receive_count: get(attribute::RECEIVE_COUNT).parse().unwrap_or(0),
            origin,
        })
    }
}

/// Reads a received message as an event. A CloudEvent is taken as is; another
/// producer's message is wrapped (see [`envelope::decode`]) and takes its trace
/// context and correlation id from the message's attributes, when it has them, so
/// that from here on both are read from the event alone.
pub fn decode(message: &Message, source: &str) -> Decoded {
    let id = message.message_id.as_deref().unwrap_or_default();
    let body = message.body.as_deref().unwrap_or_default();
    match envelope::decode(body, id, source) {
        Decoded::Wrapped(mut event) => {
            let attributes = string_attributes(message);
            for (attribute, extension) in [
                (attribute::TRACEPARENT, envelope::TRACEPARENT),
                (attribute::TRACESTATE, envelope::TRACESTATE),
                (attribute::CORRELATION_ID, envelope::CORRELATION_ID),
            ] {
                if let Some(value) = attributes.get(attribute).filter(|v| !v.is_empty()) {
                    event.set_extension(extension, value.as_str());
                }
            }
            Decoded::Wrapped(event)
        }
        decoded => decoded,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::{NewEvent, build};
    use serde_json::json;

    const TP: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    fn event(id: &str, trace: &[(&str, &str)]) -> Event {
        build(NewEvent {
            id: id.into(),
            source: "/eventpipe/p/w".into(),
            event_type: "t".into(),
            correlation_id: "group 42".into(),
            data: json!({"a": 1}),
            trace: trace
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        })
    }

    fn received(body: &str, attributes: &[(&str, &str)], group: Option<&str>) -> Message {
        let mut m = Message::builder()
            .message_id("m-1")
            .body(body)
            .set_message_attributes(Some(
                attributes
                    .iter()
                    .map(|(k, v)| (k.to_string(), string_value(v.to_string())))
                    .collect(),
            ));
        if let Some(g) = group {
            m = m.attributes(MessageSystemAttributeName::MessageGroupId, g);
        }
        m.build()
    }

    #[test]
    fn an_event_carries_its_correlation_id_and_trace_as_attributes() {
        let m = Outgoing::event(
            &event("d-1", &[("traceparent", TP), ("tracestate", "")]),
            false,
            None,
        );
        assert_eq!(
            m.attributes,
            BTreeMap::from([
                ("correlation-id".to_string(), "group 42".to_string()),
                ("traceparent".to_string(), TP.to_string()),
            ])
        );
        let body: serde_json::Value = serde_json::from_str(&m.body).unwrap();
        assert_eq!(
            (body["id"].as_str(), body["traceparent"].as_str()),
            (Some("d-1"), Some(TP))
        );
        assert_eq!((m.group_id, m.deduplication_id), (None, None));
    }

    #[test]
    fn on_a_fifo_queue_an_event_is_grouped_by_correlation_unless_told_otherwise() {
        let e = event("d-1", &[]);
        let m = Outgoing::event(&e, true, None);
        // A space is not allowed in a group id: it is hashed, the same way each time.
        assert_eq!(m.group_id, Some(fifo_id("group 42")));
        assert_eq!(m.group_id.as_ref().map(String::len), Some(64));
        assert_eq!(m.deduplication_id.as_deref(), Some("d-1"));
        let m = Outgoing::event(&e, true, Some("order-7"));
        assert_eq!(m.group_id.as_deref(), Some("order-7"));
    }

    #[test]
    fn fifo_ids_keep_valid_ids_and_hash_the_rest() {
        let uuid = "72d3162e-cc78-11e3-81ab-4c9367dc0958";
        assert_eq!(fifo_id(uuid), uuid);
        assert_eq!(fifo_id("42"), "42");
        assert_ne!(fifo_id(&"x".repeat(129)), "x".repeat(129));
        assert_ne!(fifo_id(&"x".repeat(129)), fifo_id(&"x".repeat(130)));
        assert_eq!(fifo_id("é"), fifo_id("é"));
        assert_ne!(fifo_id("é"), fifo_id("e"));
        assert_eq!(fifo_id("").len(), 64);
    }

    #[test]
    fn size_counts_body_and_attributes() {
        let m = Outgoing::event(&event("d-1", &[("traceparent", TP)]), false, None);
        let expected = m.body.len()
            + ("traceparent".len() + 6 + TP.len())
            + ("correlation-id".len() + 6 + "group 42".len());
        assert_eq!(m.size(), expected);
    }

    #[test]
    fn a_forwarded_message_keeps_body_attributes_and_group() {
        let m = received("raw", &[("traceparent", TP), ("x", "1")], Some("g-1"));
        let out = Outgoing::forward(&m, true, "dead-letters", "m-1");
        assert_eq!(out.body, "raw");
        assert_eq!(out.attributes.len(), 2);
        assert_eq!(out.group_id.as_deref(), Some("g-1"));
        assert_eq!(out.deduplication_id.as_deref(), Some("m-1"));
        let ungrouped = received("raw", &[], None);
        let out = Outgoing::forward(&ungrouped, true, "dead-letters", "m-1");
        assert_eq!(out.group_id.as_deref(), Some("dead-letters"));
        let out = Outgoing::forward(&ungrouped, false, "dead-letters", "m-1");
        assert_eq!((out.group_id, out.deduplication_id), (None, None));
    }

    #[test]
    fn reasons_replace_earlier_ones_and_fit_in_ten_attributes() {
        let many: Vec<(String, String)> = (0..10).map(|i| (format!("a{i}"), "v".into())).collect();
        let attrs: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let reasons = DeadLetterReasons {
            error: "e".repeat(5000),
            receive_count: 3,
            origin: Origin::Queue("http://q/orders".into()),
        };
        let out = Outgoing::forward(&received("raw", &attrs, None), false, "", "")
            .with_reasons(&reasons)
            .with_reasons(&reasons);
        assert_eq!(out.attributes.len(), MAX_ATTRIBUTES);
        let strings: HashMap<String, String> = out.attributes.clone().into_iter().collect();
        let read = DeadLetterReasons::read(&strings).unwrap();
        assert_eq!(read.error.len(), MAX_ERROR_CHARS);
        assert_eq!(read.receive_count, 3);
        assert_eq!(read.origin, reasons.origin);
        let back = out.without_reasons();
        assert_eq!(back.attributes.len(), 7);
        assert!(DeadLetterReasons::read(&back.attributes.into_iter().collect()).is_none());
    }

    #[test]
    fn a_stream_record_says_which_shard_and_sequence_number_it_was() {
        let reasons = DeadLetterReasons {
            error: "boom".into(),
            receive_count: 0,
            origin: Origin::StreamRecord {
                stream_arn: "arn:s".into(),
                shard: "shard-1".into(),
                sequence_number: "42".into(),
            },
        };
        let out = Outgoing::event(&event("d-1", &[("traceparent", TP)]), false, None)
            .with_reasons(&reasons);
        assert_eq!(out.attributes.len(), 7);
        let read = DeadLetterReasons::read(&out.attributes.into_iter().collect()).unwrap();
        assert_eq!(read, reasons);
    }

    #[test]
    fn a_foreign_message_takes_trace_and_correlation_from_its_attributes() {
        let m = received(
            r#"{"order": 7}"#,
            &[("traceparent", TP), ("correlation-id", "c-9")],
            None,
        );
        let Decoded::Wrapped(e) = decode(&m, "/eventpipe/p/orders") else {
            panic!("not wrapped")
        };
        assert_eq!(envelope::correlation_id(&e).as_deref(), Some("c-9"));
        assert_eq!(
            envelope::trace_context(&e),
            [("traceparent".to_string(), TP.to_string())]
        );
        let plain = received("text", &[], None);
        let Decoded::Wrapped(e) = decode(&plain, "/eventpipe/p/orders") else {
            panic!("not wrapped")
        };
        assert_eq!(envelope::correlation_id(&e).as_deref(), Some("m-1"));
        assert!(envelope::trace_context(&e).is_empty());
    }

    #[test]
    fn a_cloudevent_is_read_from_its_body_alone() {
        let body = envelope::to_json(&event("d-1", &[("traceparent", TP)]));
        let other = "00-11111111111111111111111111111111-2222222222222222-01";
        let m = received(&body, &[("traceparent", other)], None);
        let Decoded::Event(e) = decode(&m, "q") else {
            panic!("not an event")
        };
        assert_eq!(envelope::trace_context(&e)[0].1, TP);
    }
}
