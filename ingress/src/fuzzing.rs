//! The request parsing and signature paths as functions of arbitrary bytes: the
//! bodies of the `webhook_request` and `signature_headers` cargo-fuzz targets in
//! `../fuzz`, and of unit tests over their seed corpora, so the same code runs with
//! or without a fuzzer.

use std::sync::OnceLock;

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use eventpipe_crds::{
    Algorithm, Encoding, ReplayWindow, SecretKeyRef, Signature, SignatureScheme, ValueSource,
};
use serde_json::Value;

use crate::{
    extract::{Field, Fields},
    reply::Reply,
    signature::{AuthError, Verifier},
    webhook::unsupported_content_type,
};

/// `whsec_` and base64, so that it is a key of every scheme.
const SECRET: &[u8] = b"whsec_ZnV6emluZyBzZWNyZXQ=";
const NOW: u64 = 1_700_000_000;

/// Runs one input through verification, content-type and JSON checks and value
/// extraction. Panics when an invariant breaks: a request signed by
/// [`Verifier::sign`] must verify, and a JSON error must carry its position.
///
/// Input: the first byte picks a signature rule; then `Name: value` header lines, an
/// empty line, and the body.
pub fn webhook_request(data: &[u8]) {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let rules = rules();
    let verifier = &rules[usize::from(pick) % rules.len()];
    let (head, body) = split(rest);
    let headers = headers(head);
    let _ = verifier.verify(&[SECRET], &headers, body, NOW);
    let signed: HeaderMap = (verifier
        .sign(SECRET, body, NOW, "msg_1")
        .into_iter()
        .flatten())
    .filter_map(|(k, v)| Some((k, HeaderValue::from_str(&v).ok()?)))
    .collect();
    assert_eq!(verifier.verify(&[SECRET], &signed, body, NOW), Ok(()));
    let _ = unsupported_content_type(&headers);
    match serde_json::from_slice::<Value>(body) {
        Ok(json) => {
            let _ = fields().values(&headers, &json);
        }
        Err(e) => {
            assert!(e.line() >= 1, "JSON errors carry a position");
            let _ = Reply::BadJson(e).rejection();
        }
    }
}

/// A signature rule as a manifest writes it, then a request against it. Panics when an
/// invariant breaks: what [`Verifier::sign`] produces verifies (with the secret
/// first or second of two), and no longer does for another body, or (with a replay
/// window) once the window has passed.
///
/// Input: a rule line
/// `scheme|encoding|header|prefix|timestamp header|tolerance[|algorithm|signedString|idHeader]`
/// (any scheme a manifest names; an empty field is unset; a tolerance without a
/// timestamp header is the scheme's own), a secret line, `Name: value` header lines,
/// an empty line, the body.
pub fn signature_headers(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.splitn(3, '\n');
    let (Some(rule), Some(secret)) = (lines.next(), lines.next()) else {
        return;
    };
    let Some(verifier) = signature(rule).and_then(|sig| Verifier::new(&sig).ok()) else {
        return;
    };
    let (head, body) = split(lines.next().unwrap_or_default().as_bytes());
    let secret = secret.as_bytes();
    let _ = verifier.verify(&[secret], &headers(head), body, NOW);
    let Ok(signed) = verifier.sign(secret, body, NOW, "msg_1") else {
        return; // a secret the scheme cannot use as a key
    };
    let Some(signed) = signed
        .into_iter()
        .map(|(k, v)| Some((k, HeaderValue::from_str(&v).ok()?)))
        .collect::<Option<HeaderMap>>()
    else {
        return; // a prefix or token HTTP cannot carry
    };
    let token = verifier.is_token();
    if token && (secret.is_empty() || secret.trim_ascii() != secret) {
        return; // an empty token never verifies; header values lose outer whitespace
    }
    signed_verifies(&verifier, secret, &signed, body);
    if !token {
        let other = [body, b"."].concat();
        assert_eq!(
            verifier.verify(&[secret], &signed, &other, NOW),
            Err(AuthError::BadSignature),
            "a signature covers the body"
        );
    }
    if let Some(tolerance) = verifier.tolerance()
        && let Some(later) = NOW.checked_add(tolerance.as_secs() + 1)
    {
        assert_eq!(
            verifier.verify(&[secret], &signed, body, later),
            Err(AuthError::Stale(tolerance.as_secs())),
            "a signature expires with its window"
        );
    }
}

fn signed_verifies(verifier: &Verifier, secret: &[u8], signed: &HeaderMap, body: &[u8]) {
    let ok = |secrets: &[&[u8]]| verifier.verify(secrets, signed, body, NOW);
    assert_eq!(ok(&[secret]), Ok(()), "a signed request verifies");
    let other: &[u8] = b"whsec_b3RoZXIgc2VjcmV0";
    if other != secret {
        assert_eq!(ok(&[other, secret]), Ok(()), "as the previous secret too");
    }
}

fn signature(rule: &str) -> Option<Signature> {
    let fields: Vec<&str> = rule.split('|').collect();
    let (head, extra) = fields.split_at_checked(6)?;
    let [scheme, encoding, header, prefix, timestamp, tolerance] = head else {
        return None;
    };
    let [algorithm, signed_string, id_header] = match extra {
        [] => ["", "", ""],
        [a, s, i] => [*a, *s, *i],
        _ => return None,
    };
    let set = |s: &str| (!s.is_empty()).then(|| s.to_string());
    let scheme: SignatureScheme = serde_json::from_value(Value::String(scheme.to_string())).ok()?;
    let window = set(timestamp);
    Some(Signature {
        scheme,
        secret_ref: SecretKeyRef {
            name: "s".into(),
            key: "k".into(),
        },
        previous_secret_ref: None,
        header: set(header),
        prefix: set(prefix),
        encoding: match *encoding {
            "base64" => Encoding::Base64,
            _ => Encoding::Hex,
        },
        algorithm: match algorithm {
            "" => None,
            "sha512" => Some(Algorithm::Sha512),
            _ => Some(Algorithm::Sha256),
        },
        signed_string: set(signed_string),
        id_header: set(id_header),
        tolerance: match (&window, *tolerance) {
            (None, t) if !t.is_empty() => Some(t.parse().ok()?),
            _ => None,
        },
        timestamp: match window {
            Some(header) => Some(ReplayWindow {
                header,
                tolerance: tolerance.parse().ok()?,
            }),
            None => None,
        },
    })
}

fn split(data: &[u8]) -> (&[u8], &[u8]) {
    match data.windows(2).position(|w| w == b"\n\n") {
        Some(i) => (&data[..i], &data[i + 2..]),
        None => (data, &[]),
    }
}

fn headers(head: &[u8]) -> HeaderMap {
    head.split(|&b| b == b'\n')
        .filter_map(|line| {
            let colon = line.iter().position(|&b| b == b':')?;
            let name = HeaderName::from_bytes(&line[..colon]).ok()?;
            let value = HeaderValue::from_bytes(line[colon + 1..].trim_ascii()).ok()?;
            Some((name, value))
        })
        .collect()
}

fn rules() -> &'static [Verifier] {
    static RULES: OnceLock<Vec<Verifier>> = OnceLock::new();
    RULES.get_or_init(|| {
        [
            "github|hex||||",
            "hmac-sha256|hex|X-Signature|v1=|X-Timestamp|5m",
            "hmac-sha256|base64|X-Signature|||",
            "bearer|hex||||",
            "bearer|hex|X-Api-Key|||",
            "slack|hex||||",
            "stripe|hex||||",
            "standard-webhooks|hex||||",
            "shopify|hex||||",
            "gitlab|hex||||",
            "hmac|base64|X-Signature||X-Timestamp|5m|sha512|{id}.{timestamp}.{body}|X-Id",
        ]
        .into_iter()
        .map(|line| {
            let sig = signature(line).unwrap_or_else(|| panic!("a rule line: {line}"));
            Verifier::new(&sig).expect("valid rule")
        })
        .collect()
    })
}

fn fields() -> &'static Fields {
    static FIELDS: OnceLock<Fields> = OnceLock::new();
    FIELDS.get_or_init(|| {
        let f = |s: ValueSource| Some(Field::new(&s).expect("valid field"));
        Fields {
            event_type: f(ValueSource::header("X-GitHub-Event")),
            correlation_id: f(ValueSource::json_pointer("/issue/number")),
            deduplication_id: f(ValueSource::header("X-GitHub-Delivery")),
            message_group_id: f(ValueSource::json_pointer("/a~1b/0")),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fuzz target's seed corpus, run as a plain test.
    #[test]
    fn seed_corpus_runs_clean() {
        replay("webhook_request", webhook_request);
    }

    #[test]
    fn signature_seed_corpus_runs_clean() {
        replay("signature_headers", signature_headers);
    }

    fn replay(target: &str, run: fn(&[u8])) {
        let dir = format!("{}/../fuzz/corpus/{target}", env!("CARGO_MANIFEST_DIR"));
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).expect("seed corpus exists") {
            run(&std::fs::read(entry.unwrap().path()).unwrap());
            seen += 1;
        }
        assert!(seen >= 5, "only {seen} seeds of {target}");
    }

    #[test]
    fn edge_inputs_run_clean() {
        let long_header = [b"\x01X-Signature: v1=".as_slice(), &[b'a'; 10_000]].concat();
        for input in [
            b"".as_slice(),
            b"\x00",
            b"\x00\n\n",
            b"\x01X-Timestamp: 99999999999999999999999\n\n{}",
            b"\x03Authorization: Bearer \xff\n\n",
            b"\x00X-Hub-Signature-256: sha256=\n\n{\"issue\":{\"number\":1e999}}",
            b"\x02Content-Type: \n\n[[[[[[[[[[[[[[[[[[[[",
            &long_header,
        ] {
            webhook_request(input);
        }
    }
}
