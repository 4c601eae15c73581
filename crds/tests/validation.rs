//! The rules the API server enforces, run on sample objects through the same schema
//! and CEL rules the CRDs carry, and the errors a person reads when one is broken.

use eventpipe_crds::{Manifest, schema};
use serde_json::{Value, json};

fn binding(spec: Value) -> Value {
    json!({"apiVersion": "eventpipe.dev/v1alpha1", "kind": "QueueBinding", "metadata": {"name": "orders"}, "spec": spec})
}

fn policy(spec: Value) -> Value {
    json!({"apiVersion": "eventpipe.dev/v1alpha1", "kind": "DeadLetterPolicy", "metadata": {"name": "p"}, "spec": spec})
}

fn pipeline(patch: impl FnOnce(&mut Value)) -> Value {
    let mut p = json!({
        "apiVersion": "eventpipe.dev/v1alpha1", "kind": "EventPipeline", "metadata": {"name": "hooks"},
        "spec": {
            "ingress": {
                "webhooks": [{
                    "name": "github", "path": "/hooks/github",
                    "signature": {"scheme": "github", "secretRef": {"name": "gh", "key": "secret"}},
                    "eventType": {"header": "X-GitHub-Event"},
                    "correlationId": {"jsonPointer": "/issue/number"},
                    "deduplicationId": {"header": "X-GitHub-Delivery"}
                }],
                "publishTo": {"queueBindingRef": {"name": "orders"}}
            },
            "sources": [{"queueBindingRef": {"name": "orders"}}],
            "processor": {"http": {"url": "http://analytics.default.svc/events", "timeout": "10s"}},
            "delivery": {"concurrency": 16},
            "scaling": {"minReplicas": 1, "maxReplicas": 5, "targetDepthPerReplica": 100}
        }
    });
    patch(&mut p["spec"]);
    p
}

/// The messages of every problem found, as `path: message`.
fn problems(object: &Value) -> Vec<String> {
    let kind = object["kind"].as_str().expect("the object has a kind");
    match schema::validate(kind, object) {
        Ok(_) => vec![],
        Err(errors) => errors.iter().map(|e| e.to_string()).collect(),
    }
}

fn assert_rejected(object: &Value, want: &str) {
    let got = problems(object);
    assert!(
        got.iter().any(|p| p.contains(want)),
        "want a problem containing {want:?}, got {got:?}"
    );
}

#[test]
fn valid_objects_pass_with_defaults_applied() {
    let p = pipeline(|_| {});
    assert_eq!(problems(&p), Vec::<String>::new());
    let defaulted = schema::validate("EventPipeline", &p).unwrap();
    assert_eq!(
        defaulted["spec"]["ingress"]["webhooks"][0]["maxBodyBytes"],
        1048576
    );
    assert_eq!(defaulted["spec"]["delivery"]["ordering"], "none");
    let b = schema::validate(
        "QueueBinding",
        &binding(json!({"sqs": {"queueName": "orders"}})),
    )
    .unwrap();
    assert_eq!(b["spec"]["sqs"]["visibilityTimeout"], "30s");
    assert_eq!(b["spec"]["sqs"]["batchSize"], 10);
    let d = schema::validate("DeadLetterPolicy", &policy(json!({}))).unwrap();
    assert_eq!(d["spec"]["maxReceiveCount"], 3);
    assert_eq!(d["spec"]["backoff"]["initial"], "1s");
    assert_eq!(d["spec"]["retention"], "14d");
}

#[test]
fn a_binding_needs_exactly_one_of_sqs_or_dynamodb_stream() {
    let both = binding(json!({"sqs": {"queueName": "a"}, "dynamodbStream": {"tableName": "tbl"}}));
    assert_rejected(&both, "exactly one of sqs or dynamodbStream must be set");
    assert_rejected(
        &binding(json!({"region": "eu-west-1"})),
        "exactly one of sqs or dynamodbStream must be set",
    );
    assert!(problems(&binding(json!({"dynamodbStream": {"tableName": "tbl"}}))).is_empty());
}

#[test]
fn sqs_takes_a_queue_name_or_a_url_not_both() {
    let both =
        binding(json!({"sqs": {"queueName": "a", "queueUrl": "http://localhost:4566/000/a"}}));
    assert_rejected(
        &both,
        "spec.sqs: exactly one of queueName or queueUrl must be set",
    );
    assert_rejected(
        &binding(json!({"sqs": {}})),
        "exactly one of queueName or queueUrl must be set",
    );
    assert!(
        problems(&binding(
            json!({"sqs": {"queueUrl": "https://sqs.eu-west-1.amazonaws.com/1/a"}})
        ))
        .is_empty()
    );
}

#[test]
fn fifo_queues_and_names_agree_and_create_needs_a_name() {
    assert_rejected(
        &binding(json!({"sqs": {"queueName": "a.fifo"}})),
        "a FIFO queue's name ends in .fifo",
    );
    assert_rejected(
        &binding(json!({"sqs": {"queueName": "a", "fifo": true}})),
        "a FIFO queue's name ends in .fifo",
    );
    assert!(
        problems(&binding(
            json!({"sqs": {"queueName": "a.fifo", "fifo": true}})
        ))
        .is_empty()
    );
    let by_url = binding(json!({"sqs": {"queueUrl": "http://x/1/a", "create": true}}));
    assert_rejected(&by_url, "create needs queueName");
}

#[test]
fn max_receive_count_is_between_1_and_1000() {
    assert_rejected(
        &policy(json!({"maxReceiveCount": 0})),
        "spec.maxReceiveCount: must be between 1 and 1000, got 0",
    );
    assert_rejected(
        &policy(json!({"maxReceiveCount": 1001})),
        "must be between 1 and 1000, got 1001",
    );
    assert!(problems(&policy(json!({"maxReceiveCount": 1}))).is_empty());
    assert!(problems(&policy(json!({"maxReceiveCount": 1000}))).is_empty());
}

#[test]
fn a_processor_names_exactly_one_kind() {
    let two = pipeline(|s| s["processor"]["sqs"] = json!({"queueBindingRef": {"name": "orders"}}));
    assert_rejected(
        &two,
        "processor must name exactly one of http, container, dynamodb, sqs or push",
    );
    let none = pipeline(|s| s["processor"] = json!({}));
    assert_rejected(
        &none,
        "processor must name exactly one of http, container, dynamodb, sqs or push",
    );
    let container =
        pipeline(|s| s["processor"] = json!({"container": {"image": "ghcr.io/acme/p:1"}}));
    assert!(problems(&container).is_empty());
}

#[test]
fn min_replicas_may_not_exceed_max_replicas() {
    let p = pipeline(|s| s["scaling"] = json!({"minReplicas": 6, "maxReplicas": 5}));
    assert_rejected(&p, "spec.scaling: minReplicas must not exceed maxReplicas");
    let equal = pipeline(|s| s["scaling"] = json!({"minReplicas": 5, "maxReplicas": 5}));
    assert!(problems(&equal).is_empty());
}

#[test]
fn a_webhook_path_starts_with_a_slash() {
    let p = pipeline(|s| s["ingress"]["webhooks"][0]["path"] = json!("hooks/github"));
    assert_rejected(&p, "path must start with /");
}

#[test]
fn durations_must_be_durations() {
    let p = pipeline(|s| s["processor"]["http"]["timeout"] = json!("soon"));
    assert_rejected(
        &p,
        "spec.processor.http.timeout: must be a duration such as 500ms, 30s, 5m, 2h or 14d, got \"soon\"",
    );
    for ok in ["500ms", "30s", "5m", "2h", "14d", "1h30m"] {
        let p = policy(json!({"retention": ok, "backoff": {"initial": ok}}));
        assert!(problems(&p).is_empty(), "{ok} should be a duration");
    }
    assert_rejected(
        &policy(json!({"backoff": {"max": "5 minutes"}})),
        "spec.backoff.max: must be a duration",
    );
}

#[test]
fn cross_field_rules_of_signatures_publish_targets_and_value_sources() {
    let hmac_without_header = pipeline(|s| {
        s["ingress"]["webhooks"][0]["signature"] =
            json!({"scheme": "hmac-sha256", "secretRef": {"name": "s", "key": "k"}})
    });
    assert_rejected(
        &hmac_without_header,
        "schemes hmac and hmac-sha256 need header",
    );
    let replay_on_github = pipeline(|s| {
        s["ingress"]["webhooks"][0]["signature"]["timestamp"] = json!({"header": "X-Timestamp"})
    });
    assert_rejected(
        &replay_on_github,
        "timestamp (a replay window) applies to schemes hmac and hmac-sha256 only",
    );
    let timestamp_is_signature = pipeline(|s| {
        s["ingress"]["webhooks"][0]["signature"] = json!({
            "scheme": "hmac-sha256", "header": "X-Signature", "secretRef": {"name": "s", "key": "k"},
            "timestamp": {"header": "x-signature"},
        })
    });
    assert_rejected(
        &timestamp_is_signature,
        "the timestamp header must not be the signature header",
    );
    let two_targets =
        pipeline(|s| s["ingress"]["publishTo"]["dynamodb"] = json!({"tableName": "events"}));
    assert_rejected(
        &two_targets,
        "exactly one of queueBindingRef or dynamodb must be set",
    );
    let both_sources =
        pipeline(|s| s["ingress"]["webhooks"][0]["eventType"]["jsonPointer"] = json!("/type"));
    assert_rejected(
        &both_sources,
        "exactly one of header or jsonPointer must be set",
    );
    let twice = pipeline(|s| {
        let hook = s["ingress"]["webhooks"][0].clone();
        s["ingress"]["webhooks"].as_array_mut().unwrap().push(hook);
    });
    assert_rejected(&twice, "webhook names must be unique");
    assert_rejected(&twice, "webhook paths must be unique");
}

#[test]
fn types_enums_unknown_fields_and_required_fields_are_named() {
    let p = pipeline(|s| {
        s["delivery"]["concurency"] = json!(4);
        s["delivery"]["ordering"] = json!("random");
        s["scaling"]["maxReplicas"] = json!("lots");
        s.as_object_mut().unwrap().remove("sources");
    });
    let got = problems(&p);
    for want in [
        "spec.delivery.concurency: unknown field",
        "spec.delivery.ordering: must be one of \"none\", \"perGroup\", got \"random\"",
        "spec.scaling.maxReplicas: must be of type integer, got \"lots\"",
        "spec.sources: is required",
    ] {
        assert!(got.iter().any(|g| g == want), "want {want:?} in {got:?}");
    }
}

#[test]
fn the_loader_names_file_document_and_field() {
    let text = r#"
apiVersion: eventpipe.dev/v1alpha1
kind: DeadLetterPolicy
metadata: {name: p}
spec: {}
---
apiVersion: eventpipe.dev/v1alpha1
kind: QueueBinding
metadata: {name: orders}
spec:
  sqs: {queueName: orders, batchSize: 50}
"#;
    let err = Manifest::from_yaml("examples/x.yaml", text).unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"examples/x.yaml: document 2 (QueueBinding "orders"): spec.sqs.batchSize: must be between 1 and 10, got 50"#
    );
}

#[test]
fn several_problems_in_one_document_are_all_listed() {
    let text = "apiVersion: eventpipe.dev/v1alpha1\nkind: DeadLetterPolicy\nmetadata: {name: p}\nspec: {maxReceiveCount: 0, retention: soon}\n";
    let err = Manifest::from_yaml("f.yaml", text).unwrap_err().to_string();
    assert!(
        err.starts_with("f.yaml: document 1 (DeadLetterPolicy \"p\"):\n  - "),
        "{err}"
    );
    assert!(
        err.contains("spec.maxReceiveCount: must be between 1 and 1000, got 0"),
        "{err}"
    );
    assert!(err.contains("spec.retention: must be a duration"), "{err}");
}

#[test]
fn a_missing_reference_is_named_with_what_exists() {
    let text = format!(
        "{}---\n{}",
        serde_yaml::to_string(&binding(
            json!({"sqs": {"queueName": "orders", "create": true}})
        ))
        .unwrap(),
        serde_yaml::to_string(&pipeline(
            |s| s["sources"][0]["queueBindingRef"]["name"] = json!("orderz")
        ))
        .unwrap()
    );
    let m = Manifest::from_yaml("p.yaml", &text).unwrap();
    let err = m.pipeline("hooks").unwrap_err().to_string();
    assert_eq!(
        err,
        r#"p.yaml: document 2 (EventPipeline "hooks"): spec.sources[0].queueBindingRef: QueueBinding "orderz" not found (defined: orders)"#
    );
    let err = m.pipeline("nope").unwrap_err().to_string();
    assert_eq!(err, r#"no EventPipeline named "nope" (defined: hooks)"#);

    let dangling =
        binding(json!({"sqs": {"queueName": "orders"}, "deadLetterPolicyRef": {"name": "gone"}}));
    let text = format!(
        "{}---\n{}",
        serde_yaml::to_string(&dangling).unwrap(),
        serde_yaml::to_string(&pipeline(|_| {})).unwrap()
    );
    let err = Manifest::from_yaml("p.yaml", &text)
        .unwrap()
        .pipeline("hooks")
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        r#"p.yaml: document 1 (QueueBinding "orders"): spec.deadLetterPolicyRef: DeadLetterPolicy "gone" not found (none defined)"#
    );
}

#[test]
fn bad_documents_get_clear_errors() {
    let cases = [
        ("kind: [unclosed", "f.yaml: document 1: not valid YAML"),
        (
            "apiVersion: eventpipe.dev/v1\nkind: QueueBinding\nmetadata: {name: a}\nspec: {}\n",
            "apiVersion: must be eventpipe.dev/v1alpha1, got \"eventpipe.dev/v1\"",
        ),
        (
            "apiVersion: eventpipe.dev/v1alpha1\nkind: Pipeline\nmetadata: {name: a}\n",
            "kind: must be EventPipeline, QueueBinding or DeadLetterPolicy, got Some(\"Pipeline\")",
        ),
        (
            "apiVersion: eventpipe.dev/v1alpha1\nkind: DeadLetterPolicy\nspec: {}\n",
            "metadata: is required",
        ),
        (
            "apiVersion: eventpipe.dev/v1alpha1\nkind: DeadLetterPolicy\nmetadata: {name: Bad_Name}\nspec: {}\n",
            "metadata.name: must match",
        ),
    ];
    for (text, want) in cases {
        let err = Manifest::from_yaml("f.yaml", text).unwrap_err().to_string();
        assert!(err.contains(want), "want {want:?} in {err:?}");
    }
}

#[test]
fn an_object_defined_twice_is_an_error_and_other_kinds_are_left_to_kubectl() {
    let doc = "apiVersion: eventpipe.dev/v1alpha1\nkind: DeadLetterPolicy\nmetadata: {name: p}\nspec: {}\n";
    let secret = "apiVersion: v1\nkind: Secret\nmetadata: {name: gh}\nstringData: {secret: x}\n";
    let err = Manifest::from_yaml("f.yaml", &format!("{doc}---\n{secret}---\n{doc}")).unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"f.yaml: document 3 (DeadLetterPolicy "p"): DeadLetterPolicy "p" is defined twice (first in f.yaml: document 1 (DeadLetterPolicy "p"))"#
    );
    assert_eq!(
        Manifest::from_yaml("f.yaml", &format!("{doc}---\n{secret}---\n"))
            .unwrap()
            .policies
            .len(),
        1
    );
}
