//! A received SQS message: `Name: value` string attribute lines (`@Name: value` for
//! system attributes such as ApproximateReceiveCount and MessageGroupId), an empty
//! line, the body. Decoding takes trace and correlation from the attributes of a
//! wrapped message; forwarding and dead-lettering keep within SQS's limits and
//! carry reasons that read back.
#![no_main]

use aws_sdk_sqs::types::{Message, MessageAttributeValue, MessageSystemAttributeName};
use cloudevents::AttributesReader;
use eventpipe_core::envelope::{self, Decoded};
use eventpipe_core::sqs_message::{self as sqs, DeadLetterReasons, Origin, Outgoing};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (head, body) = text.split_once("\n\n").unwrap_or((text, ""));
    let message = message(head, body);
    let attributes = sqs::string_attributes(&message);
    match sqs::decode(&message, "/queue") {
        Decoded::Wrapped(event) => {
            let want = |name: &str| attributes.get(name).filter(|v| !v.is_empty()).cloned();
            assert_eq!(
                envelope::correlation_id(&event),
                Some(want(sqs::attribute::CORRELATION_ID).unwrap_or_else(|| "m-1".into()))
            );
            let trace = envelope::trace_context(&event);
            let traceparent = trace.iter().find(|(k, _)| k == envelope::TRACEPARENT);
            assert_eq!(
                traceparent.map(|t| t.1.clone()),
                want(sqs::attribute::TRACEPARENT)
            );
            resend(&event);
        }
        Decoded::Event(event) => resend(&event),
        Decoded::Undecodable(_) => {}
    }

    let reasons = DeadLetterReasons {
        error: body.into(),
        receive_count: sqs::receive_count(&message),
        origin: match sqs::DeadLetterReasons::read(&attributes) {
            Some(earlier) => earlier.origin,
            None => Origin::Queue("https://sqs/q".into()),
        },
    };
    let dead = Outgoing::forward(&message, true, "fallback", "m-1").with_reasons(&reasons);
    assert!(dead.attributes.len() <= sqs::MAX_ATTRIBUTES);
    assert!(
        dead.attributes.values().all(|v| !v.is_empty()),
        "SQS refuses empty values"
    );
    for id in [&dead.group_id, &dead.deduplication_id] {
        let id = id.as_deref().expect("FIFO ids are set");
        assert!(
            id.len() <= 128 && id.chars().all(|c| c.is_ascii_graphic()),
            "{id:?}"
        );
    }
    let read = DeadLetterReasons::read(&dead.attributes.clone().into_iter().collect());
    if complete(&reasons) {
        let mut want = reasons.clone();
        want.error = want.error.chars().take(1024).collect();
        assert_eq!(read, Some(want), "the reasons read back");
    }
    let redriven = dead.without_reasons();
    assert_eq!(
        DeadLetterReasons::read(&redriven.attributes.into_iter().collect()),
        None
    );
});

/// An event on its way to a FIFO queue travels unchanged (seen as JSON) and within
/// SQS's rules.
fn resend(event: &cloudevents::Event) {
    let out = Outgoing::event(event, true, None);
    assert!(out.attributes.values().all(|v| !v.is_empty()));
    assert_eq!(out.deduplication_id, Some(sqs::fifo_id(event.id())));
    let received = Message::builder().message_id("m-2").body(&out.body).build();
    match sqs::decode(&received, "/other") {
        Decoded::Event(again) => assert_eq!(envelope::as_json(&again), envelope::as_json(event)),
        other => panic!("{} decodes as {other:?}", out.body),
    }
}

/// Whether every reason survives as an attribute (SQS refuses empty values, so the
/// empty ones are left out and cannot read back).
fn complete(r: &DeadLetterReasons) -> bool {
    !r.error.is_empty()
        && match &r.origin {
            Origin::Queue(url) => !url.is_empty(),
            Origin::StreamRecord {
                stream_arn,
                shard,
                sequence_number,
            } => !stream_arn.is_empty() && !shard.is_empty() && !sequence_number.is_empty(),
        }
}

fn message(head: &str, body: &str) -> Message {
    let mut message = Message::builder().message_id("m-1").body(body);
    for line in head.lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if value.is_empty() {
            continue; // SQS stores no empty values
        }
        match name.strip_prefix('@') {
            Some(system) => {
                message = message.attributes(MessageSystemAttributeName::from(system), value)
            }
            None => {
                let attribute = MessageAttributeValue::builder()
                    .data_type("String")
                    .string_value(value)
                    .build()
                    .expect("data type is set");
                message = message.message_attributes(name, attribute);
            }
        }
    }
    message.build()
}
