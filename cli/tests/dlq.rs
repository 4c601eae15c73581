//! `eventpipe dlq` against moto.
// Helpers fail the test by unwrapping, as the test itself does.
#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::Instant;

use aws_sdk_sqs::types::MessageAttributeValue;
use eventpipe_testkit::Moto;

const CONFIG: &str = r#"apiVersion: eventpipe.dev/v1alpha1
kind: DeadLetterPolicy
metadata: {name: p}
spec: {maxReceiveCount: 2}
---
apiVersion: eventpipe.dev/v1alpha1
kind: QueueBinding
metadata: {name: in}
spec:
  sqs: {queueName: in, create: true}
  deadLetterPolicyRef: {name: p}
---
apiVersion: eventpipe.dev/v1alpha1
kind: QueueBinding
metadata: {name: plain}
spec:
  sqs: {queueName: plain, create: true}
---
apiVersion: eventpipe.dev/v1alpha1
kind: EventPipeline
metadata: {name: t}
spec:
  sources: [{queueBindingRef: {name: in}}]
  processor: {http: {url: "http://127.0.0.1:9/"}}
---
apiVersion: eventpipe.dev/v1alpha1
kind: EventPipeline
metadata: {name: no-policy}
spec:
  sources: [{queueBindingRef: {name: plain}}]
  processor: {http: {url: "http://127.0.0.1:9/"}}
"#;

fn attr(v: &str) -> MessageAttributeValue {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(v)
        .build()
        .unwrap()
}

fn eventpipe(moto: &Moto, file: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_eventpipe"))
        .args(["dlq"])
        .args(args)
        .arg("--config")
        .arg(file)
        .envs(moto.env())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

async fn depth(sqs: &aws_sdk_sqs::Client, url: &str) -> usize {
    let a = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
        .send()
        .await
        .unwrap();
    a.attributes
        .unwrap()
        .values()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn list_show_and_redrive_dead_letters() {
    let moto = Moto::start();
    let sqs = moto.sqs();
    let manifest = eventpipe_crds::Manifest::from_yaml("t.yaml", CONFIG).unwrap();
    let policy = &manifest.policies[0];
    let made = eventpipe_core::provision::ensure_sqs(
        &sqs,
        manifest.bindings[0].spec.sqs.as_ref().unwrap(),
        Some(policy),
    )
    .await
    .unwrap();
    let dlq = made.dlq_url.unwrap();
    for (id, ty) in [("e1", "push"), ("e2", "issue_comment"), ("e3", "push")] {
        let body = format!(
            r#"{{"specversion":"1.0","id":"{id}","source":"/s","type":"{ty}","data":{{"n":1}}}}"#
        );
        sqs.send_message()
            .queue_url(&dlq)
            .message_body(body)
            .message_attributes("eventpipe-error", attr("HTTP 500: boom"))
            .message_attributes("eventpipe-receive-count", attr("2"))
            .message_attributes("correlation-id", attr(&format!("c-{id}")))
            .send()
            .await
            .unwrap();
    }
    let dir = std::env::temp_dir().join(format!("eventpipe-dlq-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("p.yaml");
    std::fs::write(&file, CONFIG).unwrap();

    let (ok, out, err) = eventpipe(&moto, &file, &["list", "t"]);
    assert!(ok, "{err}");
    assert!(out.contains("in ("), "{out}");
    assert!(out.contains("3 dead letter(s)"), "{out}");
    assert!(
        out.contains("event=e2  type=issue_comment  receives=2  error=HTTP 500: boom"),
        "{out}"
    );
    assert_eq!(depth(&sqs, &dlq).await, 3, "listing leaves them in place");

    let (ok, out, _) = eventpipe(&moto, &file, &["show", "t", "e2"]);
    assert!(ok);
    assert!(out.contains("eventpipe-error: HTTP 500: boom"), "{out}");
    assert!(out.contains("\"type\": \"issue_comment\""), "{out}");
    let (ok, _, err) = eventpipe(&moto, &file, &["show", "t", "nope"]);
    assert!(!ok);
    assert!(
        err.contains("no dead letter with message id or event id \"nope\""),
        "{err}"
    );

    let started = Instant::now();
    let (ok, out, err) = eventpipe(
        &moto,
        &file,
        &[
            "redrive",
            "t",
            "--filter",
            r#"{"type": ["push"]}"#,
            "--rate",
            "4",
        ],
    );
    assert!(ok, "{err}");
    assert!(out.contains("redrove 2 to"), "{out}");
    assert!(out.contains("1 left in the DLQ"), "{out}");
    assert!(
        started.elapsed().as_secs_f64() >= 0.25,
        "two messages at 4/s take at least a quarter second"
    );
    assert_eq!(depth(&sqs, &dlq).await, 1);
    let back = sqs
        .receive_message()
        .queue_url(&made.url)
        .max_number_of_messages(10)
        .message_attribute_names("All")
        .send()
        .await
        .unwrap();
    let back = back.messages.unwrap();
    assert_eq!(back.len(), 2);
    for m in &back {
        let attrs = m.message_attributes.as_ref().unwrap();
        assert!(attrs.contains_key("correlation-id"), "own attributes kept");
        assert!(
            !attrs.contains_key("eventpipe-error"),
            "dead-letter reasons dropped"
        );
        assert!(m.body().unwrap().contains("\"type\":\"push\""));
    }

    let (ok, _, err) = eventpipe(&moto, &file, &["redrive", "t", "--filter", "{not json"]);
    assert!(!ok);
    assert!(err.contains("--filter is not JSON"), "{err}");
    let (ok, _, err) = eventpipe(&moto, &file, &["list", "no-policy"]);
    assert!(!ok);
    assert!(
        err.contains("EventPipeline \"no-policy\" has no SQS source with a DeadLetterPolicy"),
        "{err}"
    );
}
