//! Each scheme's headers, signature layout and signed string, in one table: what
//! verification, signing and the docs of `SignatureScheme` all follow.

use std::{borrow::Cow, time::Duration};

use axum::http::HeaderName;
use eventpipe_crds::{Algorithm, Encoding, Signature, SignatureScheme};

use super::{InvalidRule, header_name};

/// How the signature header carries its signatures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Layout {
    /// `<prefix><signature>`; the prefix compares ASCII-case-insensitively.
    Prefixed(Cow<'static, str>),
    /// Stripe: `t=<timestamp>,v1=<signature>[,v1=<signature>…]`; other keys ignored.
    Stripe,
    /// Standard Webhooks: space-separated `v1,<signature>`; other versions ignored.
    Versioned,
}

/// A piece of the signed string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Part {
    Text(String),
    Body,
    Timestamp,
    Id,
}

/// Where the signed timestamp is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum TimestampAt {
    Header(HeaderName),
    /// In the signature header (Stripe's `t=`).
    Signature,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Window {
    pub at: TimestampAt,
    pub tolerance: Duration,
}

/// How the secret becomes the HMAC key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Key {
    /// The secret's bytes.
    Raw,
    /// `whsec_<base64>` (the prefix optional): the decoded bytes.
    Whsec,
}

/// An HMAC scheme, fully spelled out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct HmacRule {
    pub algorithm: Algorithm,
    pub encoding: Encoding,
    pub header: HeaderName,
    pub layout: Layout,
    pub signed: Vec<Part>,
    pub window: Option<Window>,
    pub id: Option<HeaderName>,
    pub key: Key,
}

/// A scheme's rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Rule {
    Hmac(HmacRule),
    /// The secret itself after `prefix` in `header`.
    Token {
        header: HeaderName,
        prefix: String,
    },
}

pub(super) const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);

/// Where a sender puts the timestamp it signs.
enum Stamp {
    Unsigned,
    Header(&'static str),
    /// In the signature header (Stripe's `t=`).
    InSignature,
}

/// A sender's scheme as the sender documents it.
struct Sender {
    header: &'static str,
    layout: Layout,
    signed: &'static str,
    encoding: Encoding,
    timestamp: Stamp,
    id: Option<&'static str>,
    key: Key,
}

const GITHUB: Sender = Sender {
    header: "x-hub-signature-256",
    layout: Layout::Prefixed(Cow::Borrowed("sha256=")),
    signed: "{body}",
    encoding: Encoding::Hex,
    timestamp: Stamp::Unsigned,
    id: None,
    key: Key::Raw,
};

const SLACK: Sender = Sender {
    header: "x-slack-signature",
    layout: Layout::Prefixed(Cow::Borrowed("v0=")),
    signed: "v0:{timestamp}:{body}",
    timestamp: Stamp::Header("x-slack-request-timestamp"),
    ..GITHUB
};

const STRIPE: Sender = Sender {
    header: "stripe-signature",
    layout: Layout::Stripe,
    signed: "{timestamp}.{body}",
    timestamp: Stamp::InSignature,
    ..GITHUB
};

const STANDARD_WEBHOOKS: Sender = Sender {
    header: "webhook-signature",
    layout: Layout::Versioned,
    signed: "{id}.{timestamp}.{body}",
    encoding: Encoding::Base64,
    timestamp: Stamp::Header("webhook-timestamp"),
    id: Some("webhook-id"),
    key: Key::Whsec,
};

const SHOPIFY: Sender = Sender {
    header: "x-shopify-hmac-sha256",
    layout: Layout::Prefixed(Cow::Borrowed("")),
    encoding: Encoding::Base64,
    ..GITHUB
};

const GITLAB_TOKEN: &str = "x-gitlab-token";

impl Sender {
    fn rule(&self, tolerance: Duration) -> Result<Rule, InvalidRule> {
        let at = match self.timestamp {
            Stamp::Unsigned => None,
            Stamp::Header(h) => Some(TimestampAt::Header(header_name(h)?)),
            Stamp::InSignature => Some(TimestampAt::Signature),
        };
        Ok(Rule::Hmac(HmacRule {
            algorithm: Algorithm::Sha256,
            encoding: self.encoding,
            header: header_name(self.header)?,
            layout: self.layout.clone(),
            signed: parse_signed(self.signed)?,
            window: at.map(|at| Window { at, tolerance }),
            id: self.id.map(header_name).transpose()?,
            key: self.key,
        }))
    }
}

impl Rule {
    pub fn new(sig: &Signature) -> Result<Self, InvalidRule> {
        let tolerance = (sig.tolerance.as_ref()).map_or(DEFAULT_TOLERANCE, |t| t.as_std());
        match sig.scheme {
            SignatureScheme::Github => GITHUB.rule(tolerance),
            SignatureScheme::Slack => SLACK.rule(tolerance),
            SignatureScheme::Stripe => STRIPE.rule(tolerance),
            SignatureScheme::StandardWebhooks => STANDARD_WEBHOOKS.rule(tolerance),
            SignatureScheme::Shopify => SHOPIFY.rule(tolerance),
            SignatureScheme::Gitlab => Ok(Rule::Token {
                header: header_name(GITLAB_TOKEN)?,
                prefix: String::new(),
            }),
            SignatureScheme::Hmac | SignatureScheme::HmacSha256 => configured(sig),
            SignatureScheme::Bearer => bearer(sig),
        }
    }
}

/// Scheme hmac: everything from the manifest.
fn configured(sig: &Signature) -> Result<Rule, InvalidRule> {
    let header = header_name(sig.header.as_deref().ok_or(InvalidRule::NoHeader)?)?;
    let window = match &sig.timestamp {
        Some(w) if header_name(&w.header)? == header => {
            return Err(InvalidRule::TimestampIsSignature(w.header.clone()));
        }
        Some(w) => Some(Window {
            at: TimestampAt::Header(header_name(&w.header)?),
            tolerance: w.tolerance.as_std(),
        }),
        None => None,
    };
    let default = if window.is_some() {
        "{timestamp}.{body}"
    } else {
        "{body}"
    };
    let signed = parse_signed(sig.signed_string.as_deref().unwrap_or(default))?;
    if signed.contains(&Part::Timestamp) != window.is_some() {
        return Err(InvalidRule::TimestampUnsigned);
    }
    let id = sig.id_header.as_deref().map(header_name).transpose()?;
    if signed.contains(&Part::Id) != id.is_some() {
        return Err(InvalidRule::IdUnsigned);
    }
    Ok(Rule::Hmac(HmacRule {
        algorithm: sig.algorithm.unwrap_or_default(),
        encoding: sig.encoding,
        header,
        // A header value arrives without its leading whitespace, so a prefix's
        // would never match.
        layout: Layout::Prefixed(Cow::Owned(
            sig.prefix.as_deref().unwrap_or("").trim_start().into(),
        )),
        signed,
        window,
        id,
        key: Key::Raw,
    }))
}

fn bearer(sig: &Signature) -> Result<Rule, InvalidRule> {
    if let Some(w) = &sig.timestamp {
        return Err(InvalidRule::TimestampWithBearer(w.header.clone()));
    }
    let (header, prefix) = match &sig.header {
        // A custom header (e.g. X-Api-Key) carries the bare token.
        Some(h) => (h.as_str(), ""),
        None => ("authorization", "Bearer "),
    };
    let prefix = sig.prefix.as_deref().unwrap_or(prefix).trim_start();
    Ok(Rule::Token {
        header: header_name(header)?,
        prefix: prefix.into(),
    })
}

/// `{body}`, `{timestamp}` and `{id}` between literal text; `{body}` exactly once.
fn parse_signed(template: &str) -> Result<Vec<Part>, InvalidRule> {
    let bad = || InvalidRule::SignedString(template.into());
    let mut parts = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        if open > 0 {
            parts.push(Part::Text(rest[..open].into()));
        }
        let close = rest[open..].find('}').ok_or_else(bad)? + open;
        parts.push(match &rest[open + 1..close] {
            "body" => Part::Body,
            "timestamp" => Part::Timestamp,
            "id" => Part::Id,
            _ => return Err(bad()),
        });
        rest = &rest[close + 1..];
    }
    if !rest.is_empty() {
        parts.push(Part::Text(rest.into()));
    }
    if parts.iter().filter(|p| **p == Part::Body).count() != 1 {
        return Err(bad());
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_strings_parse_into_parts() {
        assert_eq!(
            parse_signed("v0:{timestamp}:{body}").unwrap(),
            vec![
                Part::Text("v0:".into()),
                Part::Timestamp,
                Part::Text(":".into()),
                Part::Body
            ]
        );
        assert_eq!(parse_signed("{body}").unwrap(), vec![Part::Body]);
        for bad in ["{timestamp}", "{body}{body}", "{body", "{nonce}.{body}", ""] {
            assert_eq!(
                parse_signed(bad),
                Err(InvalidRule::SignedString(bad.into())),
                "{bad}"
            );
        }
    }
}
