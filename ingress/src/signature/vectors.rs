//! Each scheme against its sender's published example or test vector, and the
//! rotation rule: a request signed with either configured secret passes, one signed
//! with a third does not.

use super::tests::{headers, rule};
use super::*;
use eventpipe_crds::{Algorithm, Encoding, ReplayWindow};

fn verifier(scheme: SignatureScheme) -> Verifier {
    Verifier::new(&rule(scheme)).unwrap()
}

fn signed(v: &Verifier, secret: &[u8], body: &[u8], ts: u64) -> HeaderMap {
    (v.sign(secret, body, ts, "msg_1").unwrap().into_iter())
        .map(|(k, val)| (k, val.parse().unwrap()))
        .collect()
}

/// Signed with the current or the previous secret passes; with a third fails.
fn rotates(v: &Verifier, fails: AuthError) {
    let (current, previous, other): (&[u8], &[u8], &[u8]) = match v.rule {
        Rule::Hmac(HmacRule {
            key: Key::Whsec, ..
        }) => (
            b"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            b"whsec_dGhlIHByZXZpb3VzIG9uZQ==",
            b"whsec_YW5vdGhlciBvbmU=",
        ),
        _ => (b"current", b"previous", b"another"),
    };
    let now = 1_700_000_000;
    for secret in [current, previous] {
        let h = signed(v, secret, b"{}", now);
        assert_eq!(v.verify(&[current, previous], &h, b"{}", now), Ok(()));
    }
    let h = signed(v, other, b"{}", now);
    assert_eq!(v.verify(&[current, previous], &h, b"{}", now), Err(fails));
}

// Slack's "Verifying requests from Slack" example (api.slack.com/authentication/
// verifying-requests-from-slack): a slash command's form body.
const SLACK_SECRET: &[u8] = b"8f742231b10e8888abcd99yyyzzz85a5";
const SLACK_TS: u64 = 1531420618;
const SLACK_BODY: &[u8] = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
const SLACK_SIG: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";

#[test]
fn slack_accepts_its_documented_example_within_five_minutes() {
    let v = verifier(SignatureScheme::Slack);
    let h = headers(&[
        ("X-Slack-Signature", SLACK_SIG),
        ("X-Slack-Request-Timestamp", "1531420618"),
    ]);
    assert_eq!(
        v.verify(&[SLACK_SECRET], &h, SLACK_BODY, SLACK_TS + 300),
        Ok(())
    );
    assert_eq!(
        v.verify(&[SLACK_SECRET], &h, SLACK_BODY, SLACK_TS + 301),
        Err(AuthError::Stale(300))
    );
    assert_eq!(signed(&v, SLACK_SECRET, SLACK_BODY, SLACK_TS), h);
    rotates(&v, AuthError::BadSignature);
}

// Stripe's documented scheme (docs.stripe.com/webhooks#verify-manually): HMAC-SHA256
// of `<t>.<body>`, hex, in `v1=`; the header's example timestamp, the event body
// stripe-python's webhook tests use, the signature computed independently (Python's
// hmac).
const STRIPE_SECRET: &[u8] = b"whsec_test_secret";
const STRIPE_TS: u64 = 1492774577;
const STRIPE_BODY: &[u8] = br#"{"id": "evt_test_webhook", "object": "event"}"#;
const STRIPE_V1: &str = "c137b1b62277d523cf8fed4dfbd0170a9a5b8a380e00cc3711d4bf0652f2ce7a";

#[test]
fn stripe_accepts_any_of_several_v1_signatures_and_ignores_v0() {
    let v = verifier(SignatureScheme::Stripe);
    let check = |value: &str, now| {
        let h = headers(&[("Stripe-Signature", value)]);
        v.verify(&[STRIPE_SECRET], &h, STRIPE_BODY, now)
    };
    let one = format!("t={STRIPE_TS},v1={STRIPE_V1}");
    assert_eq!(check(&one, STRIPE_TS), Ok(()));
    // While a secret rolls, Stripe signs with each: one v1 per secret.
    let several = format!(
        "t={STRIPE_TS},v1={},v1={STRIPE_V1},v0=6ffbb59b",
        "ab".repeat(32)
    );
    assert_eq!(check(&several, STRIPE_TS + 300), Ok(()));
    assert_eq!(check(&one, STRIPE_TS + 301), Err(AuthError::Stale(300)));
    let stale_ts = format!("t={},v1={STRIPE_V1}", STRIPE_TS + 1);
    assert_eq!(check(&stale_ts, STRIPE_TS), Err(AuthError::BadSignature));
    for bad in [
        format!("v1={STRIPE_V1}"),
        format!("t={STRIPE_TS},v0=00"),
        "t=x,v1=00".into(),
    ] {
        assert!(
            matches!(check(&bad, STRIPE_TS), Err(AuthError::Malformed(_))),
            "{bad}"
        );
    }
    rotates(&v, AuthError::BadSignature);
}

#[test]
fn stripe_tolerance_is_configurable() {
    let mut sig = rule(SignatureScheme::Stripe);
    sig.tolerance = Some("10m".parse().unwrap());
    let v = Verifier::new(&sig).unwrap();
    let h = headers(&[("Stripe-Signature", &format!("t={STRIPE_TS},v1={STRIPE_V1}"))]);
    assert_eq!(
        v.verify(&[STRIPE_SECRET], &h, STRIPE_BODY, STRIPE_TS + 600),
        Ok(())
    );
    assert_eq!(
        v.verify(&[STRIPE_SECRET], &h, STRIPE_BODY, STRIPE_TS + 601),
        Err(AuthError::Stale(600))
    );
}

// The Standard Webhooks reference libraries' test vector
// (github.com/standard-webhooks/standard-webhooks, libraries' tests).
const SW_SECRET: &[u8] = b"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SW_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
const SW_TS: u64 = 1614265330;
const SW_BODY: &[u8] = br#"{"test": 2432232314}"#;
const SW_SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

#[test]
fn standard_webhooks_accepts_the_reference_vector_among_several_signatures() {
    let v = verifier(SignatureScheme::StandardWebhooks);
    let check = |sig: &str, secret: &[u8], now| {
        let h = headers(&[
            ("webhook-id", SW_ID),
            ("webhook-timestamp", "1614265330"),
            ("webhook-signature", sig),
        ]);
        v.verify(&[secret], &h, SW_BODY, now)
    };
    assert_eq!(check(SW_SIG, SW_SECRET, SW_TS), Ok(()));
    // The prefix is optional, as in the reference libraries.
    assert_eq!(check(SW_SIG, &SW_SECRET[6..], SW_TS), Ok(()));
    let several = format!("v1,bm90IHRoaXM= v2,whatever {SW_SIG}");
    assert_eq!(check(&several, SW_SECRET, SW_TS - 300), Ok(()));
    assert_eq!(
        check(SW_SIG, SW_SECRET, SW_TS - 301),
        Err(AuthError::Stale(300))
    );
    assert!(matches!(
        check("v2,abc", SW_SECRET, SW_TS),
        Err(AuthError::Malformed(_))
    ));
    assert_eq!(
        check(SW_SIG, b"whsec_!!", SW_TS),
        Err(AuthError::UnusableSecret)
    );
    let mut h = signed(&v, SW_SECRET, SW_BODY, SW_TS);
    assert_eq!(h["webhook-id"], "msg_1");
    h.insert("webhook-id", SW_ID.parse().unwrap());
    assert_eq!(
        v.verify(&[SW_SECRET], &h, SW_BODY, SW_TS),
        Err(AuthError::BadSignature)
    );
    h.remove("webhook-id");
    assert!(matches!(
        v.verify(&[SW_SECRET], &h, SW_BODY, SW_TS),
        Err(AuthError::Missing(_))
    ));
    rotates(&v, AuthError::BadSignature);
}

// Shopify's documented scheme (shopify.dev, "Verify a webhook"): base64 HMAC-SHA256
// of the raw body in X-Shopify-Hmac-Sha256; the signature computed independently
// (Python's hmac) for a body shaped like Shopify's customer example.
#[test]
fn shopify_accepts_a_base64_body_signature() {
    let v = verifier(SignatureScheme::Shopify);
    let body = br#"{"id": 820982911946154508, "email": "jon@doe.ca"}"#;
    let sig = "wAgQPqHwYrGnk/FQUlop7bzKBW5Tx4DP2g6KJ2/Kk3Y=";
    let h = headers(&[("X-Shopify-Hmac-Sha256", sig)]);
    assert_eq!(v.verify(&[b"hush"], &h, body, 0), Ok(()));
    assert_eq!(
        v.verify(&[b"hush"], &h, b"{}", 0),
        Err(AuthError::BadSignature)
    );
    rotates(&v, AuthError::BadSignature);
}

// GitLab sends the webhook's secret token as is in X-Gitlab-Token (docs.gitlab.com,
// "Webhooks", secret token).
#[test]
fn gitlab_compares_its_token() {
    let v = verifier(SignatureScheme::Gitlab);
    let h = headers(&[("X-Gitlab-Token", "s3cret-token")]);
    assert_eq!(v.verify(&[b"s3cret-token"], &h, b"{}", 0), Ok(()));
    assert_eq!(
        v.verify(&[b"s3cret"], &h, b"{}", 0),
        Err(AuthError::BadToken)
    );
    let none = v.verify(&[b"s3cret-token"], &HeaderMap::new(), b"{}", 0);
    assert!(matches!(none, Err(AuthError::Missing(_))));
    rotates(&v, AuthError::BadToken);
    rotates(&verifier(SignatureScheme::Bearer), AuthError::BadToken);
    rotates(&verifier(SignatureScheme::Github), AuthError::BadSignature);
}

fn generic(algorithm: Algorithm, encoding: Encoding, signed: &str) -> Verifier {
    let mut sig = rule(SignatureScheme::Hmac);
    sig.header = Some("X-Signature".into());
    sig.algorithm = Some(algorithm);
    sig.encoding = encoding;
    sig.signed_string = Some(signed.into());
    sig.id_header = signed.contains("{id}").then(|| "X-Id".into());
    sig.timestamp = signed.contains("{timestamp}").then(|| ReplayWindow {
        header: "X-Timestamp".into(),
        tolerance: "5m".parse().unwrap(),
    });
    Verifier::new(&sig).unwrap()
}

// Signatures computed independently (Python's hmac and hashlib.sha512).
#[test]
fn generic_hmac_follows_its_template_algorithm_and_encoding() {
    let v = generic(
        Algorithm::Sha512,
        Encoding::Base64,
        "{id}.{timestamp}.{body}",
    );
    let sig =
        "brSuNI3bhLtBaXZFsLoiYgaXIWQ7aqJqh5FPWWRKmzEj+QxHn8d83LWrHEhF961I4kf2HY99bPqZXUbj1YFebA==";
    let h = headers(&[
        ("X-Signature", sig),
        ("X-Timestamp", "1700000000"),
        ("X-Id", "id-1"),
    ]);
    assert_eq!(v.verify(&[b"key"], &h, b"{}", 1_700_000_000), Ok(()));
    rotates(&v, AuthError::BadSignature);
    let v = generic(Algorithm::Sha512, Encoding::Hex, "{body}");
    let sig = "55fabdaa182c70ee206b1214d44e350c994779dfc34241b286dc6d3f12a2cd70f6b9e57f19d661a86d8486048744ba18c0fe8f821783075f9089b585e5edd729";
    let h = headers(&[("X-Signature", sig)]);
    assert_eq!(v.verify(&[b"key"], &h, b"{}", 0), Ok(()));
    rotates(
        &generic(Algorithm::Sha256, Encoding::Hex, "{timestamp}:{body}"),
        AuthError::BadSignature,
    );
}

#[test]
fn fields_a_scheme_ignores_are_refused() {
    let mut sig = rule(SignatureScheme::Slack);
    sig.header = Some("X-Other".into());
    assert_eq!(
        Verifier::new(&sig).unwrap_err(),
        InvalidRule::NotForScheme {
            field: "header",
            scheme: "slack"
        }
    );
    let mut sig = rule(SignatureScheme::Github);
    sig.tolerance = Some("1m".parse().unwrap());
    assert!(matches!(
        Verifier::new(&sig),
        Err(InvalidRule::NotForScheme {
            field: "tolerance",
            ..
        })
    ));
    let mut sig = rule(SignatureScheme::Hmac);
    sig.header = Some("X-Signature".into());
    sig.signed_string = Some("{timestamp}.{body}".into());
    assert_eq!(
        Verifier::new(&sig).unwrap_err(),
        InvalidRule::TimestampUnsigned
    );
    sig.signed_string = Some("{id}.{body}".into());
    assert_eq!(Verifier::new(&sig).unwrap_err(), InvalidRule::IdUnsigned);
}
