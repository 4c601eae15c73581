//! The rules shared by every scheme: prefixes, tokens, replay windows, configuration errors.

use super::*;
use axum::http::HeaderValue;
use base64::Engine;
use eventpipe_crds::{Encoding, ReplayWindow as Window, SecretKeyRef};
use hmac::{Hmac, Mac};
use sha2::Sha256;

pub(super) fn rule(scheme: SignatureScheme) -> Signature {
    Signature {
        scheme,
        secret_ref: SecretKeyRef {
            name: "s".into(),
            key: "k".into(),
        },
        previous_secret_ref: None,
        header: None,
        prefix: None,
        encoding: Encoding::Hex,
        algorithm: None,
        signed_string: None,
        id_header: None,
        timestamp: None,
        tolerance: None,
    }
}

pub(super) fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    pairs
        .iter()
        .map(|(k, v)| (header_name(k).unwrap(), v.parse().unwrap()))
        .collect()
}

fn github() -> Verifier {
    Verifier::new(&rule(SignatureScheme::Github)).unwrap()
}

// GitHub's documented example ("Validating webhook deliveries").
const GH_SECRET: &[u8] = b"It's a Secret to Everybody";
const GH_BODY: &[u8] = b"Hello, World!";
const GH_SIG: &str = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

#[test]
fn a_prefix_with_leading_whitespace_still_verifies_what_it_signs() {
    let mut sig = rule(SignatureScheme::HmacSha256);
    sig.header = Some("X-Signature".into());
    sig.prefix = Some(" v1=".into());
    let v = Verifier::new(&sig).unwrap();
    let signed: HeaderMap = v
        .sign(b"k", b"body", 0, "id")
        .unwrap()
        .into_iter()
        .map(|(k, val)| (k, val.parse().unwrap()))
        .collect();
    assert!(signed["x-signature"].to_str().unwrap().starts_with("v1="));
    assert_eq!(v.verify(&[b"k"], &signed, b"body", 0), Ok(()));
}

#[test]
fn a_token_beyond_ascii_verifies() {
    let v = Verifier::new(&rule(SignatureScheme::Bearer)).unwrap();
    let secret = "key-Ճ".as_bytes();
    let signed: HeaderMap = v
        .sign(secret, b"", 0, "id")
        .unwrap()
        .into_iter()
        .map(|(k, val)| (k, HeaderValue::from_str(&val).unwrap()))
        .collect();
    assert_eq!(v.verify(&[secret], &signed, b"", 0), Ok(()));
    assert_eq!(
        v.verify(&[b"key-"], &signed, b"", 0),
        Err(AuthError::BadToken)
    );
}

#[test]
fn a_timestamp_in_the_signature_header_is_refused() {
    let mut sig = rule(SignatureScheme::HmacSha256);
    sig.header = Some("X-Signature".into());
    sig.timestamp = Some(Window {
        header: "x-signature".into(),
        tolerance: "5m".parse().unwrap(),
    });
    assert_eq!(
        Verifier::new(&sig).unwrap_err(),
        InvalidRule::TimestampIsSignature("x-signature".into())
    );
}

#[test]
fn a_replay_window_on_a_bearer_token_is_refused() {
    let mut sig = rule(SignatureScheme::Bearer);
    sig.timestamp = Some(Window {
        header: "X-Timestamp".into(),
        tolerance: "5m".parse().unwrap(),
    });
    assert_eq!(
        Verifier::new(&sig).unwrap_err(),
        InvalidRule::TimestampWithBearer("X-Timestamp".into())
    );
}

#[test]
fn github_accepts_its_documented_example() {
    let h = headers(&[("X-Hub-Signature-256", GH_SIG)]);
    assert_eq!(github().verify(&[GH_SECRET], &h, GH_BODY, 0), Ok(()));
    let upper = GH_SIG.to_uppercase().replace("SHA256=", "sha256=");
    let h = headers(&[("X-Hub-Signature-256", &upper)]);
    assert_eq!(github().verify(&[GH_SECRET], &h, GH_BODY, 0), Ok(()));
}

#[test]
fn github_rejects_another_body_secret_or_a_missing_header() {
    let h = headers(&[("X-Hub-Signature-256", GH_SIG)]);
    assert_eq!(
        github().verify(&[GH_SECRET], &h, b"Hello, World?", 0),
        Err(AuthError::BadSignature)
    );
    assert_eq!(
        github().verify(&[b"another"], &h, GH_BODY, 0),
        Err(AuthError::BadSignature)
    );
    assert_eq!(
        github().verify(&[GH_SECRET], &HeaderMap::new(), GH_BODY, 0),
        Err(AuthError::Missing(
            header_name("x-hub-signature-256").unwrap()
        ))
    );
}

#[test]
fn github_rejects_malformed_signatures() {
    for bad in ["757107ea", "sha1=757107ea", "sha256=zz", "sha256=abc"] {
        let h = headers(&[("X-Hub-Signature-256", bad)]);
        assert!(
            matches!(
                github().verify(&[GH_SECRET], &h, GH_BODY, 0),
                Err(AuthError::Malformed(_))
            ),
            "{bad}"
        );
    }
    // Well-formed hex of the wrong length is simply not the signature.
    let h = headers(&[("X-Hub-Signature-256", "sha256=abcd")]);
    assert_eq!(
        github().verify(&[GH_SECRET], &h, GH_BODY, 0),
        Err(AuthError::BadSignature)
    );
}

fn stripe_like(encoding: Encoding) -> Verifier {
    let mut sig = rule(SignatureScheme::HmacSha256);
    sig.header = Some("X-Signature".into());
    sig.prefix = Some("v1=".into());
    sig.encoding = encoding;
    sig.timestamp = Some(Window {
        header: "X-Signature-Timestamp".into(),
        tolerance: "5m".parse().unwrap(),
    });
    Verifier::new(&sig).unwrap()
}

#[test]
fn hmac_signs_timestamp_dot_body_in_either_encoding() {
    let ts = 1_700_000_000u64;
    let manual = {
        let mut m = Hmac::<Sha256>::new_from_slice(b"key").unwrap();
        m.update(b"1700000000.{}");
        m.finalize().into_bytes().to_vec()
    };
    for (encoding, text) in [
        (Encoding::Hex, hex::encode(&manual)),
        (
            Encoding::Base64,
            base64::engine::general_purpose::STANDARD.encode(&manual),
        ),
    ] {
        let h = headers(&[
            ("X-Signature", &format!("v1={text}")),
            ("X-Signature-Timestamp", "1700000000"),
        ]);
        assert_eq!(
            stripe_like(encoding).verify(&[b"key"], &h, b"{}", ts + 10),
            Ok(())
        );
    }
}

#[test]
fn replay_window_rejects_stale_future_and_missing_timestamps() {
    let v = stripe_like(Encoding::Hex);
    let signed = |ts: u64| -> HeaderMap {
        v.sign(b"key", b"{}", ts, "id")
            .unwrap()
            .into_iter()
            .map(|(k, s)| (k, s.parse().unwrap()))
            .collect()
    };
    let now = 1_700_000_000;
    assert_eq!(v.verify(&[b"key"], &signed(now - 300), b"{}", now), Ok(()));
    assert_eq!(
        v.verify(&[b"key"], &signed(now - 301), b"{}", now),
        Err(AuthError::Stale(300))
    );
    assert_eq!(
        v.verify(&[b"key"], &signed(now + 301), b"{}", now),
        Err(AuthError::Stale(300))
    );
    let mut no_ts = signed(now);
    no_ts.remove("x-signature-timestamp");
    assert!(matches!(
        v.verify(&[b"key"], &no_ts, b"{}", now),
        Err(AuthError::Missing(_))
    ));
    let mut bad_ts = signed(now);
    bad_ts.insert("x-signature-timestamp", "yesterday".parse().unwrap());
    assert!(matches!(
        v.verify(&[b"key"], &bad_ts, b"{}", now),
        Err(AuthError::Malformed(_))
    ));
    // The timestamp is signed: changing it breaks the signature.
    let mut moved = signed(now);
    moved.insert(
        "x-signature-timestamp",
        (now - 1).to_string().parse().unwrap(),
    );
    assert_eq!(
        v.verify(&[b"key"], &moved, b"{}", now),
        Err(AuthError::BadSignature)
    );
}

#[test]
fn bearer_accepts_only_the_exact_token() {
    let v = Verifier::new(&rule(SignatureScheme::Bearer)).unwrap();
    let check = |value: &str| v.verify(&[b"s3cret"], &headers(&[("Authorization", value)]), b"", 0);
    assert_eq!(check("Bearer s3cret"), Ok(()));
    assert_eq!(check("bearer s3cret"), Ok(()));
    assert_eq!(check("Bearer s3cre"), Err(AuthError::BadToken));
    assert_eq!(check("Bearer s3cret2"), Err(AuthError::BadToken));
    assert!(matches!(
        check("Basic s3cret"),
        Err(AuthError::Malformed(_))
    ));
    assert!(matches!(check("Bearer"), Err(AuthError::Malformed(_))));
}

#[test]
fn bearer_in_a_custom_header_has_no_prefix() {
    let mut sig = rule(SignatureScheme::Bearer);
    sig.header = Some("X-Api-Key".into());
    let v = Verifier::new(&sig).unwrap();
    let h = headers(&[("X-Api-Key", "s3cret")]);
    assert_eq!(v.verify(&[b"s3cret"], &h, b"", 0), Ok(()));
}

#[test]
fn sign_produces_what_verify_accepts() {
    let github = github();
    let h: HeaderMap = github
        .sign(GH_SECRET, GH_BODY, 0, "id")
        .unwrap()
        .into_iter()
        .map(|(k, v)| (k, v.parse().unwrap()))
        .collect();
    assert_eq!(h["x-hub-signature-256"], GH_SIG);
}

#[test]
fn invalid_header_names_are_configuration_errors() {
    let mut sig = rule(SignatureScheme::HmacSha256);
    sig.header = Some("X Signature".into());
    assert_eq!(
        Verifier::new(&sig).unwrap_err(),
        InvalidRule::Name("X Signature".into())
    );
}
