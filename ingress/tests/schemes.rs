//! Every signature scheme end to end against moto: a request signed as its sender
//! signs it (computed here, independently of the ingress's code) is queued, with
//! either of two secrets; a bad, stale, unsigned or wrongly keyed one is refused
//! with its reason and queues nothing. And GitHub's ping and ids.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use base64::{Engine, engine::general_purpose::STANDARD as B64};
use common::*;
use eventpipe_testkit::Moto;
use hmac::{Hmac, Mac};
use sha2::{Sha256, Sha512};

const BODY: &[u8] = br#"{"type":"order.created","id":7}"#;

const WEBHOOKS: &str = "      - name: slack
        path: /slack
        signature: {scheme: slack, secretRef: {name: slack, key: current}, previousSecretRef: {name: slack, key: previous}}
      - name: stripe
        path: /stripe
        signature: {scheme: stripe, secretRef: {name: stripe, key: current}, previousSecretRef: {name: stripe, key: previous}}
      - name: standard
        path: /standard
        signature: {scheme: standard-webhooks, secretRef: {name: standard, key: current}, previousSecretRef: {name: standard, key: previous}}
        deduplicationId: {header: webhook-id}
      - name: shopify
        path: /shopify
        signature: {scheme: shopify, secretRef: {name: shopify, key: current}, previousSecretRef: {name: shopify, key: previous}}
      - name: gitlab
        path: /gitlab
        signature: {scheme: gitlab, secretRef: {name: gitlab, key: current}, previousSecretRef: {name: gitlab, key: previous}}
      - name: custom
        path: /custom
        signature:
          scheme: hmac
          secretRef: {name: custom, key: current}
          previousSecretRef: {name: custom, key: previous}
          header: X-Signature
          algorithm: sha512
          encoding: base64
          signedString: \"{id}.{timestamp}.{body}\"
          idHeader: X-Id
          timestamp: {header: X-Timestamp, tolerance: 5m}
      - name: github
        path: /github
        signature: {scheme: github, secretRef: {name: gh, key: secret}}
        eventType: {header: X-GitHub-Event}
      - name: github-pings
        path: /github-pings
        signature: {scheme: github, secretRef: {name: gh, key: secret}}
        github: {deliverPings: true}
";

const SCHEMES: [&str; 6] = ["slack", "stripe", "standard", "shopify", "gitlab", "custom"];

/// Each scheme's current and previous secret (standard-webhooks': `whsec_` keys).
fn secret(scheme: &str, which: &str) -> String {
    match scheme {
        "standard" => format!("whsec_{}", B64.encode(format!("{which} key"))),
        _ => format!("{scheme}-{which}"),
    }
}

fn sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

fn sha512(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha512>::new_from_slice(key).unwrap();
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

/// The headers `scheme`'s sender sets for BODY, signed with `secret` at `ts`.
fn signed(scheme: &str, secret: &str, ts: u64) -> Vec<(String, String)> {
    let key = secret.as_bytes();
    let with_ts = |sep: &str| [ts.to_string().as_bytes(), sep.as_bytes(), BODY].concat();
    let pairs: Vec<(&str, String)> = match scheme {
        "slack" => vec![
            ("X-Slack-Request-Timestamp", ts.to_string()),
            (
                "X-Slack-Signature",
                format!(
                    "v0={}",
                    hex::encode(sha256(key, &[b"v0:", &with_ts(":")[..]].concat()))
                ),
            ),
        ],
        "stripe" => vec![(
            "Stripe-Signature",
            format!("t={ts},v1={}", hex::encode(sha256(key, &with_ts(".")))),
        )],
        "standard" => {
            let key = B64.decode(secret.trim_start_matches("whsec_")).unwrap();
            let message = [format!("msg_{ts}.").as_bytes(), &with_ts(".")[..]].concat();
            vec![
                ("webhook-id", format!("msg_{ts}")),
                ("webhook-timestamp", ts.to_string()),
                (
                    "webhook-signature",
                    format!("v1,{}", B64.encode(sha256(&key, &message))),
                ),
            ]
        }
        "shopify" => vec![("X-Shopify-Hmac-Sha256", B64.encode(sha256(key, BODY)))],
        "gitlab" => vec![("X-Gitlab-Token", secret.to_string())],
        "custom" => vec![
            ("X-Id", "delivery-1".into()),
            ("X-Timestamp", ts.to_string()),
            (
                "X-Signature",
                B64.encode(sha512(key, &[b"delivery-1.", &with_ts(".")[..]].concat())),
            ),
        ],
        _ => unreachable!("{scheme}"),
    };
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

struct Setup {
    moto: Moto,
    queue_url: String,
    _secrets: tempfile::TempDir,
    ingress: Ingress,
    client: reqwest::Client,
}

async fn setup() -> Setup {
    let moto = Moto::start();
    let queue_url = create_queue(&moto.sqs(), "events").await;
    let secrets = github_secrets();
    for scheme in SCHEMES {
        for which in ["current", "previous"] {
            write_secret(secrets.path(), scheme, which, &secret(scheme, which));
        }
    }
    let config = queue_pipeline("hooks", WEBHOOKS, "events", "events");
    let ingress = Ingress::start(Launch::new(&config, secrets.path(), moto.env())).await;
    Setup {
        moto,
        queue_url,
        _secrets: secrets,
        ingress,
        client: reqwest::Client::new(),
    }
}

impl Setup {
    async fn send(&self, path: &str, headers: &[(String, String)], body: &[u8]) -> Answer {
        let url = format!("{}/{path}", self.ingress.url);
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        post(&self.client, &url, &headers, body).await
    }
}

#[tokio::test]
async fn each_scheme_queues_what_either_secret_signed() {
    let s = setup().await;
    let now = unix_now();
    for scheme in SCHEMES {
        for which in ["current", "previous"] {
            let answer = s
                .send(scheme, &signed(scheme, &secret(scheme, which), now), BODY)
                .await;
            assert_eq!(answer.status, 202, "{scheme} ({which}): {}", answer.json);
        }
    }
    let messages = receive(&s.moto.sqs(), &s.queue_url, 12, Duration::from_secs(15)).await;
    let mut sources: Vec<String> = messages
        .iter()
        .map(|m| body_json(m)["source"].as_str().unwrap().to_string())
        .collect();
    sources.sort();
    let mut want: Vec<String> = SCHEMES
        .iter()
        .flat_map(|s| {
            [
                format!("/eventpipe/hooks/{s}"),
                format!("/eventpipe/hooks/{s}"),
            ]
        })
        .collect();
    want.sort();
    assert_eq!(sources, want);
    // Standard Webhooks' message id is the event id, so a retried message keeps it.
    let standard = messages
        .iter()
        .map(body_json)
        .find(|e| e["source"] == "/eventpipe/hooks/standard");
    assert_eq!(standard.unwrap()["id"], format!("msg_{now}"));
}

#[tokio::test]
async fn bad_stale_unsigned_and_wrongly_keyed_requests_are_refused_with_their_reason() {
    let s = setup().await;
    let now = unix_now();
    for scheme in SCHEMES {
        let good = signed(scheme, &secret(scheme, "current"), now);
        let wrong_key = match scheme {
            "standard" => format!("whsec_{}", B64.encode("a third key")),
            _ => "a third secret".to_string(),
        };
        let mismatch = if scheme == "gitlab" {
            "invalid token"
        } else {
            "signature does not match"
        };
        let mut cases = vec![(
            "a third secret",
            signed(scheme, &wrong_key, now),
            BODY.to_vec(),
            mismatch.to_string(),
        )];
        // A token signs no body.
        if scheme != "gitlab" {
            let other = br#"{"id":8}"#.to_vec();
            cases.push(("another body", good.clone(), other, mismatch.to_string()));
        }
        let (name, _) = good.last().unwrap().clone();
        let without: Vec<_> = good.iter().filter(|(k, _)| *k != name).cloned().collect();
        let missing = format!("missing {} header", name.to_ascii_lowercase());
        cases.push(("no signature", without, BODY.to_vec(), missing));
        if !matches!(scheme, "shopify" | "gitlab") {
            let stale = signed(scheme, &secret(scheme, "current"), now - 301);
            let reason = "timestamp outside the replay window of 300 s".to_string();
            cases.push(("a stale timestamp", stale, BODY.to_vec(), reason));
        }
        for (case, headers, body, reason) in cases {
            let answer = s.send(scheme, &headers, &body).await;
            assert_eq!(
                (answer.status, answer.json["error"].as_str()),
                (401, Some(reason.as_str())),
                "{scheme}: {case}"
            );
        }
    }
    assert_eq!(depth(&s.moto.sqs(), &s.queue_url).await, 0);
    let logs = s.ingress.log_text();
    for scheme in SCHEMES {
        assert!(
            !logs.contains(&secret(scheme, "current")),
            "{scheme}'s secret logged"
        );
    }
}

fn github(event: &str, body: &[u8]) -> Vec<(String, String)> {
    [
        ("X-GitHub-Event", event.to_string()),
        ("X-GitHub-Hook-ID", "292430182".to_string()),
        (
            "X-GitHub-Delivery",
            "72d3162e-cc78-11e3-81ab-4c9367dc0958".to_string(),
        ),
        ("X-Hub-Signature-256", github_signature(SECRET, body)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

#[tokio::test]
async fn a_github_ping_is_answered_not_queued_unless_asked_for_and_ids_are_kept() {
    let s = setup().await;
    let ping = br#"{"zen":"Design for failure.","hook_id":292430182}"#;
    let answer = s.send("github", &github("ping", ping), ping).await;
    assert_eq!(answer.status, 200, "{}", answer.json);
    assert_eq!(answer.json["hookId"], "292430182");
    // A ping is verified like any delivery.
    let forged = s.send("github", &github("ping", b"{}"), ping).await;
    assert_eq!(forged.status, 401);
    assert_eq!(depth(&s.moto.sqs(), &s.queue_url).await, 0);

    let answer = s.send("github-pings", &github("ping", ping), ping).await;
    assert_eq!(answer.status, 202, "{}", answer.json);
    let answer = s.send("github", &github("push", BODY), BODY).await;
    assert_eq!(answer.status, 202, "{}", answer.json);
    let messages = receive(&s.moto.sqs(), &s.queue_url, 2, Duration::from_secs(10)).await;
    assert_eq!(messages.len(), 2);
    for event in messages.iter().map(body_json) {
        assert_eq!(event["githubhookid"], "292430182", "{event}");
        assert_eq!(
            event["githubdelivery"],
            "72d3162e-cc78-11e3-81ab-4c9367dc0958"
        );
    }
}

/// Slack's headers for `body`, signed with `secret` now.
fn slack(secret: &str, body: &[u8]) -> Vec<(String, String)> {
    let ts = unix_now().to_string();
    let base = [b"v0:", ts.as_bytes(), b":", body].concat();
    let signature = format!("v0={}", hex::encode(sha256(secret.as_bytes(), &base)));
    vec![
        ("X-Slack-Request-Timestamp".into(), ts),
        ("X-Slack-Signature".into(), signature),
    ]
}

#[tokio::test]
async fn a_slack_url_verification_is_answered_with_its_challenge_not_queued() {
    let s = setup().await;
    let body = br#"{"token":"Jhj5dZrVaK7ZwHHjRyZWjbDl","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P","type":"url_verification"}"#;
    for which in ["current", "previous"] {
        let answer = s
            .send("slack", &slack(&secret("slack", which), body), body)
            .await;
        assert_eq!(answer.status, 200, "{}", answer.json);
        assert_eq!(
            answer.json["challenge"],
            "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"
        );
    }
    // Verified like any delivery: a forged one is refused.
    let forged = s.send("slack", &slack("not-the-secret", body), body).await;
    assert_eq!(forged.status, 401, "{}", forged.json);
    // Only Slack's webhooks answer it: elsewhere it is an event like any other.
    let stripe = br#"{"challenge":"c","type":"url_verification"}"#;
    let ts = unix_now().to_string();
    let signed = [ts.as_bytes(), b".", stripe].concat();
    let header = format!(
        "t={ts},v1={}",
        hex::encode(sha256(secret("stripe", "current").as_bytes(), &signed))
    );
    let answer = s
        .send("stripe", &[("Stripe-Signature".into(), header)], stripe)
        .await;
    assert_eq!(answer.status, 202, "{}", answer.json);
    assert_eq!(depth(&s.moto.sqs(), &s.queue_url).await, 1);
}
