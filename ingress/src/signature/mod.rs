//! Request authentication: each sender's HMAC signature scheme (GitHub, Slack, Stripe,
//! Standard Webhooks, Shopify), a configurable HMAC with an optional replay window,
//! and static tokens (GitLab's, bearer). Pure functions of the secrets, the headers,
//! the raw body and the clock; two secrets may be accepted at once, for rotation.

mod digest;
mod parse;
mod schemes;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod vectors;

use axum::http::{HeaderMap, HeaderName};
use base64::Engine;
use eventpipe_crds::{Signature, SignatureScheme};

use schemes::{HmacRule, Key, Layout, Part, Rule};

/// Why a request is not authenticated. The texts never contain a credential.
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
    #[error("timestamp outside the replay window of {0} s")]
    Stale(u64),
    /// No configured secret can be a key of this scheme (e.g. not `whsec_` base64):
    /// the ingress's problem, not the sender's.
    #[error("the webhook's secret is not a valid key for its scheme")]
    UnusableSecret,
}

/// A signature rule in the manifest that cannot work.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidRule {
    #[error("{0:?} is not a valid HTTP header name")]
    Name(String),
    #[error("schemes hmac and hmac-sha256 need header")]
    NoHeader,
    /// A request could not carry both in one header.
    #[error("the timestamp header {0:?} must differ from the signature header")]
    TimestampIsSignature(String),
    /// A static token signs nothing, so a replay window would be ignored.
    #[error(
        "a bearer token signs no timestamp: the timestamp header {0:?} applies to HMAC signatures only"
    )]
    TimestampWithBearer(String),
    #[error(
        "signedString {0:?} must hold {{body}} once, and otherwise only text, {{timestamp}} and {{id}}"
    )]
    SignedString(String),
    #[error(
        "a replay window needs {{timestamp}} in signedString, and {{timestamp}} needs timestamp"
    )]
    TimestampUnsigned,
    #[error("idHeader needs {{id}} in signedString, and {{id}} needs idHeader")]
    IdUnsigned,
    #[error("{field} does not apply to scheme {scheme}")]
    NotForScheme {
        field: &'static str,
        scheme: &'static str,
    },
}

pub(crate) fn header_name(name: &str) -> Result<HeaderName, InvalidRule> {
    HeaderName::from_bytes(name.as_bytes()).map_err(|_| InvalidRule::Name(name.into()))
}

/// A webhook's signature rule, with every default filled in and header names parsed.
#[derive(Clone, Debug)]
pub struct Verifier {
    rule: Rule,
}

impl Verifier {
    pub fn new(sig: &Signature) -> Result<Self, InvalidRule> {
        fields_apply(sig)?;
        Ok(Self {
            rule: Rule::new(sig)?,
        })
    }

    /// A fresh random secret in the form this scheme's senders use: `whsec_` and
    /// base64 where the key is decoded from the secret (Standard Webhooks), hex
    /// otherwise.
    pub fn new_secret(&self) -> String {
        let bytes = [uuid::Uuid::new_v4(), uuid::Uuid::new_v4()].map(|u| u.into_bytes());
        let (bytes, base64) = (bytes.concat(), base64::engine::general_purpose::STANDARD);
        match &self.rule {
            Rule::Hmac(rule) if rule.key == Key::Whsec => format!("whsec_{}", base64.encode(bytes)),
            _ => hex::encode(bytes),
        }
    }

    /// Checks a request against each of `secrets` (the current one, then the
    /// previous); `now` is Unix time in seconds.
    pub fn verify(
        &self,
        secrets: &[&[u8]],
        headers: &HeaderMap,
        body: &[u8],
        now: u64,
    ) -> Result<(), AuthError> {
        match &self.rule {
            Rule::Token { header, prefix } => {
                let presented = parse::prefixed(headers, header, prefix)?;
                let any = secrets
                    .iter()
                    .any(|s| eventpipe_core::token::same(s, presented));
                any.then_some(()).ok_or(AuthError::BadToken)
            }
            Rule::Hmac(rule) => verify_hmac(rule, secrets, headers, body, now),
        }
    }

    /// The headers a sender sets for `body` signed with `secret` at `timestamp`, with
    /// `id` where the scheme signs a message id. For producers, tools and benchmarks.
    pub fn sign(
        &self,
        secret: &[u8],
        body: &[u8],
        timestamp: u64,
        id: &str,
    ) -> Result<Vec<(HeaderName, String)>, AuthError> {
        let rule = match &self.rule {
            Rule::Token { header, prefix } => {
                let token = String::from_utf8_lossy(secret);
                return Ok(vec![(header.clone(), format!("{prefix}{token}"))]);
            }
            Rule::Hmac(rule) => rule,
        };
        let ts = timestamp.to_string();
        let key = key(rule.key, secret).ok_or(AuthError::UnusableSecret)?;
        let parts = signed_parts(rule, body, Some(&ts), Some(id));
        let signature = digest::encode(rule.encoding, &digest::mac(rule.algorithm, &key, &parts));
        let mut headers = Vec::new();
        if let Some(id_header) = &rule.id {
            headers.push((id_header.clone(), id.to_string()));
        }
        let value = match &rule.layout {
            Layout::Prefixed(prefix) => format!("{prefix}{signature}"),
            Layout::Stripe => format!("t={ts},v1={signature}"),
            Layout::Versioned => format!("v1,{signature}"),
        };
        if let Some(schemes::Window {
            at: schemes::TimestampAt::Header(h),
            ..
        }) = &rule.window
        {
            headers.push((h.clone(), ts));
        }
        headers.push((rule.header.clone(), value));
        Ok(headers)
    }

    /// Whether the secret itself is presented, rather than a signature of the body.
    pub fn is_token(&self) -> bool {
        matches!(self.rule, Rule::Token { .. })
    }

    /// The replay window, for schemes that sign a timestamp.
    pub fn tolerance(&self) -> Option<std::time::Duration> {
        match &self.rule {
            Rule::Hmac(rule) => rule.window.as_ref().map(|w| w.tolerance),
            Rule::Token { .. } => None,
        }
    }

    /// The header the signature or token is read from.
    pub fn header(&self) -> &HeaderName {
        match &self.rule {
            Rule::Token { header, .. } => header,
            Rule::Hmac(rule) => &rule.header,
        }
    }
}

fn verify_hmac(
    rule: &HmacRule,
    secrets: &[&[u8]],
    headers: &HeaderMap,
    body: &[u8],
    now: u64,
) -> Result<(), AuthError> {
    let presented = parse::signatures(rule, headers)?;
    let timestamp = parse::timestamp(rule, headers, presented.timestamp.as_deref(), now)?;
    let id = parse::id(rule, headers)?;
    let parts = signed_parts(rule, body, timestamp.as_deref(), id.as_deref());
    let mut usable = false;
    let mut matched = false;
    for secret in secrets {
        let Some(key) = key(rule.key, secret) else {
            continue;
        };
        usable = true;
        let expected = digest::mac(rule.algorithm, &key, &parts);
        // Every candidate is compared, so timing does not tell which one matched.
        for signature in &presented.signatures {
            matched |= digest::same(&expected, signature);
        }
    }
    match (matched, usable) {
        (true, _) => Ok(()),
        (false, true) => Err(AuthError::BadSignature),
        (false, false) => Err(AuthError::UnusableSecret),
    }
}

/// The signed string, in pieces.
fn signed_parts<'a>(
    rule: &'a HmacRule,
    body: &'a [u8],
    timestamp: Option<&'a str>,
    id: Option<&'a str>,
) -> Vec<&'a [u8]> {
    (rule.signed.iter())
        .map(|part| match part {
            Part::Text(t) => t.as_bytes(),
            Part::Body => body,
            Part::Timestamp => timestamp.unwrap_or_default().as_bytes(),
            Part::Id => id.unwrap_or_default().as_bytes(),
        })
        .collect()
}

/// The HMAC key a secret stands for; none when it cannot be one.
fn key(kind: Key, secret: &[u8]) -> Option<Vec<u8>> {
    match kind {
        Key::Raw => Some(secret.to_vec()),
        Key::Whsec => {
            let b64 = secret.strip_prefix(b"whsec_").unwrap_or(secret);
            let key = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
            (!key.is_empty()).then_some(key)
        }
    }
}

/// Refuses fields the scheme would silently ignore.
fn fields_apply(sig: &Signature) -> Result<(), InvalidRule> {
    use SignatureScheme::*;
    let scheme = scheme_name(sig.scheme);
    let hmac = matches!(sig.scheme, Hmac | HmacSha256);
    let checks: [(&'static str, bool, bool); 6] = [
        ("header", sig.header.is_some(), hmac || sig.scheme == Bearer),
        ("prefix", sig.prefix.is_some(), hmac || sig.scheme == Bearer),
        ("algorithm", sig.algorithm.is_some(), sig.scheme == Hmac),
        (
            "signedString",
            sig.signed_string.is_some(),
            sig.scheme == Hmac,
        ),
        ("idHeader", sig.id_header.is_some(), sig.scheme == Hmac),
        (
            "tolerance",
            sig.tolerance.is_some(),
            matches!(sig.scheme, Slack | Stripe | StandardWebhooks),
        ),
    ];
    match checks
        .into_iter()
        .find(|(_, set, applies)| *set && !applies)
    {
        Some((field, ..)) => Err(InvalidRule::NotForScheme { field, scheme }),
        None if sig.timestamp.is_some() && !hmac && sig.scheme != Bearer => {
            Err(InvalidRule::NotForScheme {
                field: "timestamp",
                scheme,
            })
        }
        None => Ok(()),
    }
}

/// The scheme as a manifest spells it.
pub fn scheme_name(scheme: SignatureScheme) -> &'static str {
    use SignatureScheme::*;
    match scheme {
        Github => "github",
        Slack => "slack",
        Stripe => "stripe",
        StandardWebhooks => "standard-webhooks",
        Shopify => "shopify",
        Gitlab => "gitlab",
        Hmac => "hmac",
        HmacSha256 => "hmac-sha256",
        Bearer => "bearer",
    }
}
