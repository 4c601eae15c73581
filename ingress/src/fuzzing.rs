//! The request parsing and signature paths as functions of arbitrary bytes: the
//! bodies of the `webhook_request` and `signature_headers` cargo-fuzz targets in
//! `../fuzz`, and of unit tests over their seed corpora, so the same code runs with
//! or without a fuzzer.

use std::sync::OnceLock;

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use eventpipe_crds::{
    Encoding, ReplayWindow, SecretKeyRef, Signature, SignatureScheme, ValueSource,
};
use serde_json::Value;

use crate::{
    extract::{Field, Fields},
    reply::Reply,
    signature::{AuthError, Verifier},
    webhook::unsupported_content_type,
};

const SECRET: &[u8] = b"fuzzing secret";
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
    let _ = verifier.verify(SECRET, &headers, body, NOW);
    let signed: HeaderMap = verifier
        .sign(SECRET, body, NOW)
        .into_iter()
        .filter_map(|(k, v)| Some((k, HeaderValue::from_str(&v).ok()?)))
        .collect();
    assert_eq!(verifier.verify(SECRET, &signed, body, NOW), Ok(()));
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
/// invariant breaks: what [`Verifier::sign`] produces verifies, and no longer does
/// for another body, or (with a replay window) once the window has passed.
///
/// Input: a rule line `scheme|encoding|header|prefix|timestamp header|tolerance`
/// (scheme `github`, `hmac-sha256` or `bearer`; encoding `hex` or `base64`; an empty
/// field is unset), a secret line, `Name: value` header lines, an empty line, the body.
pub fn signature_headers(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.splitn(3, '\n');
    let (Some(rule), Some(secret)) = (lines.next(), lines.next()) else {
        return;
    };
    let Some(sig) = signature(rule) else {
        return;
    };
    let Ok(verifier) = Verifier::new(&sig) else {
        return;
    };
    let (head, body) = split(lines.next().unwrap_or_default().as_bytes());
    let secret = secret.as_bytes();
    let _ = verifier.verify(secret, &headers(head), body, NOW);

    let signed = verifier.sign(secret, body, NOW);
    let Some(signed) = signed
        .into_iter()
        .map(|(k, v)| Some((k, HeaderValue::from_str(&v).ok()?)))
        .collect::<Option<HeaderMap>>()
    else {
        return; // a prefix or token HTTP cannot carry
    };
    let bearer = sig.scheme == SignatureScheme::Bearer;
    if bearer && (secret.is_empty() || secret.trim_ascii() != secret) {
        return; // an empty token never verifies; header values lose outer whitespace
    }
    assert_eq!(
        verifier.verify(secret, &signed, body, NOW),
        Ok(()),
        "a signed request verifies"
    );
    if !bearer {
        let other = [body, b"."].concat();
        assert_eq!(
            verifier.verify(secret, &signed, &other, NOW),
            Err(AuthError::BadSignature),
            "a signature covers the body"
        );
    }
    if let Some(window) = &sig.timestamp
        && let Some(later) = NOW.checked_add(window.tolerance.as_std().as_secs() + 1)
    {
        assert_eq!(
            verifier.verify(secret, &signed, body, later),
            Err(AuthError::Stale),
            "a signature expires with its window"
        );
    }
}

fn signature(rule: &str) -> Option<Signature> {
    let fields: Vec<&str> = rule.split('|').collect();
    let [scheme, encoding, header, prefix, timestamp, tolerance] = fields[..] else {
        return None;
    };
    let set = |s: &str| (!s.is_empty()).then(|| s.to_string());
    Some(Signature {
        scheme: match scheme {
            "github" => SignatureScheme::Github,
            "hmac-sha256" => SignatureScheme::HmacSha256,
            "bearer" => SignatureScheme::Bearer,
            _ => return None,
        },
        secret_ref: SecretKeyRef {
            name: "s".into(),
            key: "k".into(),
        },
        header: set(header),
        prefix: set(prefix),
        encoding: match encoding {
            "base64" => Encoding::Base64,
            _ => Encoding::Hex,
        },
        timestamp: match set(timestamp) {
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
        let rule = |scheme, header: Option<&str>, prefix: Option<&str>, encoding, window: bool| {
            let sig = Signature {
                scheme,
                secret_ref: SecretKeyRef {
                    name: "s".into(),
                    key: "k".into(),
                },
                header: header.map(Into::into),
                prefix: prefix.map(Into::into),
                encoding,
                timestamp: window.then(|| ReplayWindow {
                    header: "X-Timestamp".into(),
                    tolerance: "5m".parse().expect("valid duration"),
                }),
            };
            Verifier::new(&sig).expect("valid rule")
        };
        use SignatureScheme::*;
        vec![
            rule(Github, None, None, Encoding::Hex, false),
            rule(
                HmacSha256,
                Some("X-Signature"),
                Some("v1="),
                Encoding::Hex,
                true,
            ),
            rule(
                HmacSha256,
                Some("X-Signature"),
                None,
                Encoding::Base64,
                false,
            ),
            rule(Bearer, None, None, Encoding::Hex, false),
            rule(Bearer, Some("X-Api-Key"), None, Encoding::Hex, false),
        ]
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
