//! The signature and GitHub fields of a webhook as the API server checks them: each
//! scheme's valid shape passes, fields a scheme would ignore are refused.

use eventpipe_crds::schema;
use serde_json::{Value, json};

fn pipeline(webhook: Value) -> Value {
    let mut hook = json!({"name": "hook", "path": "/hook"});
    merge(&mut hook, webhook);
    json!({
        "apiVersion": "eventpipe.dev/v1alpha1", "kind": "EventPipeline", "metadata": {"name": "hooks"},
        "spec": {
            "ingress": {"webhooks": [hook], "publishTo": {"queueBindingRef": {"name": "orders"}}},
            "sources": [{"queueBindingRef": {"name": "orders"}}],
            "processor": {"http": {"url": "http://analytics.default.svc/events"}},
        }
    })
}

fn merge(into: &mut Value, from: Value) {
    if let (Some(into), Value::Object(from)) = (into.as_object_mut(), from) {
        into.extend(from);
    }
}

fn signature(mut sig: Value) -> Value {
    sig["secretRef"] = json!({"name": "s", "key": "k"});
    pipeline(json!({"signature": sig}))
}

fn problems(object: &Value) -> Vec<String> {
    match schema::validate("EventPipeline", object) {
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
fn every_scheme_in_its_documented_shape_is_valid() {
    let previous = json!({"name": "s-old", "key": "k"});
    for sig in [
        json!({"scheme": "github", "previousSecretRef": previous}),
        json!({"scheme": "slack", "tolerance": "5m"}),
        json!({"scheme": "stripe", "tolerance": "10m", "previousSecretRef": previous}),
        json!({"scheme": "standard-webhooks"}),
        json!({"scheme": "shopify"}),
        json!({"scheme": "gitlab", "previousSecretRef": previous}),
        json!({"scheme": "hmac", "header": "X-Signature", "algorithm": "sha512", "encoding": "base64",
               "signedString": "{id}.{timestamp}.{body}", "idHeader": "X-Id",
               "timestamp": {"header": "X-Timestamp", "tolerance": "5m"}}),
        json!({"scheme": "hmac-sha256", "header": "X-Signature", "prefix": "v1=",
               "timestamp": {"header": "X-Timestamp"}}),
        json!({"scheme": "bearer"}),
    ] {
        let object = signature(sig.clone());
        assert_eq!(problems(&object), Vec::<String>::new(), "{sig}");
    }
    let pings = pipeline(json!({
        "signature": {"scheme": "github", "secretRef": {"name": "s", "key": "k"}},
        "github": {"deliverPings": true}
    }));
    assert_eq!(problems(&pings), Vec::<String>::new());
}

#[test]
fn fields_a_scheme_would_ignore_are_refused() {
    assert_rejected(
        &signature(json!({"scheme": "slack", "header": "X-Other"})),
        "header and prefix apply to schemes hmac, hmac-sha256 and bearer",
    );
    assert_rejected(
        &signature(json!({"scheme": "github", "tolerance": "5m"})),
        "tolerance applies to schemes slack, stripe and standard-webhooks",
    );
    assert_rejected(
        &signature(json!({"scheme": "hmac-sha256", "header": "X-S", "algorithm": "sha512"})),
        "algorithm, signedString and idHeader apply to scheme hmac only",
    );
    assert_rejected(
        &signature(json!({"scheme": "stripe", "timestamp": {"header": "X-T"}})),
        "timestamp (a replay window) applies to schemes hmac and hmac-sha256 only",
    );
    assert_rejected(
        &signature(json!({"scheme": "hmac"})),
        "schemes hmac and hmac-sha256 need header",
    );
    let github_elsewhere = pipeline(json!({
        "signature": {"scheme": "slack", "secretRef": {"name": "s", "key": "k"}},
        "github": {"deliverPings": true}
    }));
    assert_rejected(&github_elsewhere, "github applies to scheme github only");
}

#[test]
fn a_signed_string_names_what_it_signs() {
    let hmac = |extra: Value| {
        let mut sig = json!({"scheme": "hmac", "header": "X-Signature"});
        merge(&mut sig, extra);
        signature(sig)
    };
    assert_rejected(
        &hmac(json!({"signedString": "{timestamp}"})),
        "signedString must contain {body}",
    );
    assert_rejected(
        &hmac(json!({"signedString": "{timestamp}.{body}"})),
        "a signedString with {timestamp} needs timestamp",
    );
    assert_rejected(
        &hmac(json!({"signedString": "{id}.{body}"})),
        "a signedString with {id} needs idHeader",
    );
    assert_rejected(&hmac(json!({"algorithm": "md5"})), "algorithm");
}
