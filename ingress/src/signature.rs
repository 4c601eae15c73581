//! Request authentication: HMAC-SHA256 signatures (GitHub's and the generic
//! configurable kind, with an optional replay window) and static bearer tokens.
//! Pure functions of the secret, the headers, the raw body and the clock. Every
//! comparison of secret-derived bytes is constant-time.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderName};
use base64::Engine;
use eventpipe_crds::{Encoding, Signature, SignatureScheme};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

const GITHUB_HEADER: &str = "x-hub-signature-256";
const GITHUB_PREFIX: &str = "sha256=";
const BEARER_HEADER: &str = "authorization";
const BEARER_PREFIX: &str = "Bearer ";

/// Why a request is not authenticated. The texts never contain the credential.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing {0} header")]
    Missing(HeaderName),
    #[error("malformed {0} header")]
    Malformed(HeaderName),
    #[error("signature does not match")]
    BadSignature,
    #[error("invalid token")]
    BadToken,
    #[error("timestamp outside the replay window")]
    Stale,
}

/// A header in the configuration that cannot work.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidHeader {
    #[error("{0:?} is not a valid HTTP header name")]
    Name(String),
    /// A request could not carry both in one header.
    #[error("the timestamp header {0:?} must differ from the signature header")]
    TimestampIsSignature(String),
    /// A static token signs nothing, so a replay window would be ignored.
    #[error(
        "a bearer token signs no timestamp: the timestamp header {0:?} applies to HMAC signatures only"
    )]
    TimestampWithBearer(String),
}

pub(crate) fn header_name(name: &str) -> Result<HeaderName, InvalidHeader> {
    HeaderName::from_bytes(name.as_bytes()).map_err(|_| InvalidHeader::Name(name.into()))
}

#[derive(Clone, Debug)]
enum Scheme {
    Hmac(Encoding),
    Bearer,
}

#[derive(Clone, Debug)]
struct ReplayWindow {
    header: HeaderName,
    tolerance: Duration,
}

/// A webhook's signature rule, with defaults filled in and header names parsed.
#[derive(Clone, Debug)]
pub struct Verifier {
    scheme: Scheme,
    header: HeaderName,
    prefix: String,
    window: Option<ReplayWindow>,
}

impl Verifier {
    pub fn new(sig: &Signature) -> Result<Self, InvalidHeader> {
        let (scheme, header, prefix) = match sig.scheme {
            SignatureScheme::Github => (Scheme::Hmac(Encoding::Hex), GITHUB_HEADER, GITHUB_PREFIX),
            SignatureScheme::HmacSha256 => (Scheme::Hmac(sig.encoding), "", ""),
            SignatureScheme::Bearer => match sig.header {
                // A custom header (e.g. X-Api-Key) carries the bare token.
                Some(_) => (Scheme::Bearer, "", ""),
                None => (Scheme::Bearer, BEARER_HEADER, BEARER_PREFIX),
            },
        };
        let header = header_name(sig.header.as_deref().unwrap_or(header))?;
        let window = match &sig.timestamp {
            Some(w) if matches!(scheme, Scheme::Bearer) => {
                return Err(InvalidHeader::TimestampWithBearer(w.header.clone()));
            }
            Some(w) if header_name(&w.header)? == header => {
                return Err(InvalidHeader::TimestampIsSignature(w.header.clone()));
            }
            Some(w) => Some(ReplayWindow {
                header: header_name(&w.header)?,
                tolerance: w.tolerance.as_std(),
            }),
            None => None,
        };
        // A header value arrives without its leading whitespace, so a prefix's would
        // never match.
        let prefix = sig.prefix.as_deref().unwrap_or(prefix).trim_start();
        Ok(Self {
            scheme,
            header,
            prefix: prefix.to_string(),
            window,
        })
    }

    /// Checks a request; `now` is Unix time in seconds.
    pub fn verify(
        &self,
        secret: &[u8],
        headers: &HeaderMap,
        body: &[u8],
        now: u64,
    ) -> Result<(), AuthError> {
        let presented = self.credential(headers)?;
        match self.scheme {
            Scheme::Bearer => check_token(secret, presented),
            Scheme::Hmac(encoding) => {
                let signature = decode(encoding, presented)
                    .ok_or_else(|| AuthError::Malformed(self.header.clone()))?;
                let timestamp = self.timestamp(headers, now)?;
                check_hmac(secret, timestamp.as_deref(), body, &signature)
            }
        }
    }

    /// The headers a sender sets for `body`: the signature (with `timestamp`, when
    /// this rule has a replay window) or the token. For producers, tools and benchmarks.
    pub fn sign(&self, secret: &[u8], body: &[u8], timestamp: u64) -> Vec<(HeaderName, String)> {
        let mut headers = Vec::new();
        let credential = match self.scheme {
            Scheme::Bearer => String::from_utf8_lossy(secret).into_owned(),
            Scheme::Hmac(encoding) => {
                let ts = self.window.as_ref().map(|w| {
                    headers.push((w.header.clone(), timestamp.to_string()));
                    timestamp.to_string()
                });
                encode(encoding, &mac(secret, ts.as_deref(), body))
            }
        };
        headers.push((self.header.clone(), format!("{}{credential}", self.prefix)));
        headers
    }

    /// The credential after the prefix, which compares ASCII-case-insensitively
    /// (`Bearer` and `bearer` are the same scheme). Bytes rather than text, so a
    /// token or prefix beyond ASCII (which a header value may carry) still matches.
    fn credential<'h>(&self, headers: &'h HeaderMap) -> Result<&'h [u8], AuthError> {
        let value = headers
            .get(&self.header)
            .ok_or_else(|| AuthError::Missing(self.header.clone()))?
            .as_bytes()
            .trim_ascii();
        let prefix = self.prefix.as_bytes();
        match value.split_at_checked(prefix.len()) {
            Some((p, rest)) if p.eq_ignore_ascii_case(prefix) => Ok(rest.trim_ascii_start()),
            _ => Err(AuthError::Malformed(self.header.clone())),
        }
    }

    /// The signed timestamp, checked against the replay window.
    fn timestamp(&self, headers: &HeaderMap, now: u64) -> Result<Option<String>, AuthError> {
        let Some(window) = &self.window else {
            return Ok(None);
        };
        let value = headers
            .get(&window.header)
            .ok_or_else(|| AuthError::Missing(window.header.clone()))?
            .to_str()
            .map_err(|_| AuthError::Malformed(window.header.clone()))?
            .trim();
        let ts: u64 = value
            .parse()
            .map_err(|_| AuthError::Malformed(window.header.clone()))?;
        if now.abs_diff(ts) > window.tolerance.as_secs() {
            return Err(AuthError::Stale);
        }
        Ok(Some(value.to_string()))
    }
}

/// HMAC-SHA256 of `timestamp.body`, or of the body alone.
fn mac(secret: &[u8], timestamp: Option<&str>, body: &[u8]) -> Vec<u8> {
    keyed(secret, timestamp, body)
        .finalize()
        .into_bytes()
        .to_vec()
}

fn keyed(secret: &[u8], timestamp: Option<&str>, body: &[u8]) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length");
    if let Some(ts) = timestamp {
        mac.update(ts.as_bytes());
        mac.update(b".");
    }
    mac.update(body);
    mac
}

fn check_hmac(
    secret: &[u8],
    timestamp: Option<&str>,
    body: &[u8],
    signature: &[u8],
) -> Result<(), AuthError> {
    keyed(secret, timestamp, body)
        .verify_slice(signature)
        .map_err(|_| AuthError::BadSignature)
}

/// Compares digests, so neither the token's content nor its length leaks through timing.
fn check_token(secret: &[u8], presented: &[u8]) -> Result<(), AuthError> {
    let same: bool = Sha256::digest(secret)
        .ct_eq(&Sha256::digest(presented))
        .into();
    if same && !secret.is_empty() {
        Ok(())
    } else {
        Err(AuthError::BadToken)
    }
}

fn decode(encoding: Encoding, text: &[u8]) -> Option<Vec<u8>> {
    match encoding {
        Encoding::Hex => hex::decode(text).ok(),
        Encoding::Base64 => base64::engine::general_purpose::STANDARD.decode(text).ok(),
    }
}

fn encode(encoding: Encoding, bytes: &[u8]) -> String {
    match encoding {
        Encoding::Hex => hex::encode(bytes),
        Encoding::Base64 => base64::engine::general_purpose::STANDARD.encode(bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use eventpipe_crds::{ReplayWindow as Window, SecretKeyRef};

    fn rule(scheme: SignatureScheme) -> Signature {
        Signature {
            scheme,
            secret_ref: SecretKeyRef {
                name: "s".into(),
                key: "k".into(),
            },
            header: None,
            prefix: None,
            encoding: Encoding::Hex,
            timestamp: None,
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
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
            .sign(b"k", b"body", 0)
            .into_iter()
            .map(|(k, val)| (k, val.parse().unwrap()))
            .collect();
        assert!(signed["x-signature"].to_str().unwrap().starts_with("v1="));
        assert_eq!(v.verify(b"k", &signed, b"body", 0), Ok(()));
    }

    #[test]
    fn a_token_beyond_ascii_verifies() {
        let v = Verifier::new(&rule(SignatureScheme::Bearer)).unwrap();
        let secret = "key-Ճ".as_bytes();
        let signed: HeaderMap = v
            .sign(secret, b"", 0)
            .into_iter()
            .map(|(k, val)| (k, HeaderValue::from_str(&val).unwrap()))
            .collect();
        assert_eq!(v.verify(secret, &signed, b"", 0), Ok(()));
        assert_eq!(v.verify(b"key-", &signed, b"", 0), Err(AuthError::BadToken));
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
            InvalidHeader::TimestampIsSignature("x-signature".into())
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
            InvalidHeader::TimestampWithBearer("X-Timestamp".into())
        );
    }

    #[test]
    fn github_accepts_its_documented_example() {
        let h = headers(&[("X-Hub-Signature-256", GH_SIG)]);
        assert_eq!(github().verify(GH_SECRET, &h, GH_BODY, 0), Ok(()));
        let upper = GH_SIG.to_uppercase().replace("SHA256=", "sha256=");
        let h = headers(&[("X-Hub-Signature-256", &upper)]);
        assert_eq!(github().verify(GH_SECRET, &h, GH_BODY, 0), Ok(()));
    }

    #[test]
    fn github_rejects_another_body_secret_or_a_missing_header() {
        let h = headers(&[("X-Hub-Signature-256", GH_SIG)]);
        assert_eq!(
            github().verify(GH_SECRET, &h, b"Hello, World?", 0),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            github().verify(b"another", &h, GH_BODY, 0),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            github().verify(GH_SECRET, &HeaderMap::new(), GH_BODY, 0),
            Err(AuthError::Missing(header_name(GITHUB_HEADER).unwrap()))
        );
    }

    #[test]
    fn github_rejects_malformed_signatures() {
        for bad in ["757107ea", "sha1=757107ea", "sha256=zz", "sha256=abc"] {
            let h = headers(&[("X-Hub-Signature-256", bad)]);
            assert!(
                matches!(
                    github().verify(GH_SECRET, &h, GH_BODY, 0),
                    Err(AuthError::Malformed(_))
                ),
                "{bad}"
            );
        }
        // Well-formed hex of the wrong length is simply not the signature.
        let h = headers(&[("X-Hub-Signature-256", "sha256=abcd")]);
        assert_eq!(
            github().verify(GH_SECRET, &h, GH_BODY, 0),
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
        let expected = mac(b"key", Some("1700000000"), b"{}");
        let manual = {
            let mut m = HmacSha256::new_from_slice(b"key").unwrap();
            m.update(b"1700000000.{}");
            m.finalize().into_bytes().to_vec()
        };
        assert_eq!(expected, manual);
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
                stripe_like(encoding).verify(b"key", &h, b"{}", ts + 10),
                Ok(())
            );
        }
    }

    #[test]
    fn replay_window_rejects_stale_future_and_missing_timestamps() {
        let v = stripe_like(Encoding::Hex);
        let signed = |ts: u64| -> HeaderMap {
            v.sign(b"key", b"{}", ts)
                .into_iter()
                .map(|(k, s)| (k, s.parse().unwrap()))
                .collect()
        };
        let now = 1_700_000_000;
        assert_eq!(v.verify(b"key", &signed(now - 300), b"{}", now), Ok(()));
        assert_eq!(
            v.verify(b"key", &signed(now - 301), b"{}", now),
            Err(AuthError::Stale)
        );
        assert_eq!(
            v.verify(b"key", &signed(now + 301), b"{}", now),
            Err(AuthError::Stale)
        );
        let mut no_ts = signed(now);
        no_ts.remove("x-signature-timestamp");
        assert!(matches!(
            v.verify(b"key", &no_ts, b"{}", now),
            Err(AuthError::Missing(_))
        ));
        let mut bad_ts = signed(now);
        bad_ts.insert("x-signature-timestamp", "yesterday".parse().unwrap());
        assert!(matches!(
            v.verify(b"key", &bad_ts, b"{}", now),
            Err(AuthError::Malformed(_))
        ));
        // The timestamp is signed: changing it breaks the signature.
        let mut moved = signed(now);
        moved.insert(
            "x-signature-timestamp",
            (now - 1).to_string().parse().unwrap(),
        );
        assert_eq!(
            v.verify(b"key", &moved, b"{}", now),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn bearer_accepts_only_the_exact_token() {
        let v = Verifier::new(&rule(SignatureScheme::Bearer)).unwrap();
        let check =
            |value: &str| v.verify(b"s3cret", &headers(&[("Authorization", value)]), b"", 0);
        assert_eq!(check("Bearer s3cret"), Ok(()));
        assert_eq!(check("bearer s3cret"), Ok(()));
        assert_eq!(check("Bearer s3cre"), Err(AuthError::BadToken));
        assert_eq!(check("Bearer s3cret2"), Err(AuthError::BadToken));
        assert!(matches!(
            check("Basic s3cret"),
            Err(AuthError::Malformed(_))
        ));
        assert!(matches!(check("Bearer"), Err(AuthError::Malformed(_))));
        // An empty secret matches nothing, not even an empty token.
        assert_eq!(check_token(b"", b""), Err(AuthError::BadToken));
    }

    #[test]
    fn bearer_in_a_custom_header_has_no_prefix() {
        let mut sig = rule(SignatureScheme::Bearer);
        sig.header = Some("X-Api-Key".into());
        let v = Verifier::new(&sig).unwrap();
        let h = headers(&[("X-Api-Key", "s3cret")]);
        assert_eq!(v.verify(b"s3cret", &h, b"", 0), Ok(()));
    }

    #[test]
    fn sign_produces_what_verify_accepts() {
        let github = github();
        let h: HeaderMap = github
            .sign(GH_SECRET, GH_BODY, 0)
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
            InvalidHeader::Name("X Signature".into())
        );
    }
}
