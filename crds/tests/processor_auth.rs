//! The schema of an HTTP processor's credentials: Secret references per header, a
//! bearer token or SigV4 (not both, as each sets `Authorization`).

use eventpipe_crds::schema;
use serde_json::{Value, json};

fn pipeline(http: Value) -> Value {
    json!({
        "apiVersion": "eventpipe.dev/v1alpha1", "kind": "EventPipeline", "metadata": {"name": "calls"},
        "spec": {
            "sources": [{"queueBindingRef": {"name": "orders"}}],
            "processor": {"http": http},
        }
    })
}

fn problems(http: Value) -> Vec<String> {
    match schema::validate("EventPipeline", &pipeline(http)) {
        Ok(_) => vec![],
        Err(errors) => errors.iter().map(|e| e.to_string()).collect(),
    }
}

#[test]
fn secret_headers_a_bearer_token_and_sigv4_are_accepted() {
    let ok = problems(json!({
        "url": "https://api.example.com/",
        "headersFrom": [{"name": "X-Api-Key", "secretRef": {"name": "api", "key": "key"}}],
        "bearerTokenSecretRef": {"name": "tok", "key": "token"},
    }));
    assert_eq!(ok, Vec::<String>::new());
    let ok = problems(json!({
        "url": "https://abc.execute-api.eu-west-1.amazonaws.com/prod/events",
        "sigv4": {"service": "execute-api", "region": "eu-west-1"},
    }));
    assert_eq!(ok, Vec::<String>::new());
}

#[test]
fn conflicting_or_malformed_credentials_are_rejected() {
    let both = problems(json!({
        "url": "https://x/",
        "bearerTokenSecretRef": {"name": "tok", "key": "token"},
        "sigv4": {"service": "lambda"},
    }));
    assert!(
        both.iter()
            .any(|p| p.contains("sigv4 and bearerTokenSecretRef")),
        "{both:?}"
    );
    let bad = [
        json!({"url": "https://x/", "sigv4": {"service": "s3"}}),
        json!({"url": "https://x/", "headersFrom": [{"name": "Bad Name", "secretRef": {"name": "a", "key": "b"}}]}),
        json!({"url": "https://x/", "headersFrom": [{"name": "X-Key"}]}),
    ];
    for http in bad {
        assert_ne!(problems(http.clone()), Vec::<String>::new(), "{http}");
    }
}
