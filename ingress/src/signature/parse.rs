//! Reading what a request presents: the signatures (in each scheme's layout), the
//! signed timestamp, checked against the replay window, and the message id.

use axum::http::{HeaderMap, HeaderName};

use super::{
    AuthError, digest,
    schemes::{HmacRule, Layout, TimestampAt},
};

/// The signatures a request carries, decoded, and Stripe's `t=`.
pub(super) struct Presented {
    pub signatures: Vec<Vec<u8>>,
    pub timestamp: Option<String>,
}

fn value<'h>(headers: &'h HeaderMap, name: &HeaderName) -> Result<&'h [u8], AuthError> {
    Ok(headers
        .get(name)
        .ok_or_else(|| AuthError::Missing(name.clone()))?
        .as_bytes()
        .trim_ascii())
}

/// The credential after `prefix`, which compares ASCII-case-insensitively (`Bearer`
/// and `bearer` are the same scheme). Bytes rather than text, so a token or prefix
/// beyond ASCII (which a header value may carry) still matches.
pub(super) fn prefixed<'h>(
    headers: &'h HeaderMap,
    name: &HeaderName,
    prefix: &str,
) -> Result<&'h [u8], AuthError> {
    let value = value(headers, name)?;
    let prefix = prefix.as_bytes();
    match value.split_at_checked(prefix.len()) {
        Some((p, rest)) if p.eq_ignore_ascii_case(prefix) && !rest.trim_ascii().is_empty() => {
            Ok(rest.trim_ascii_start())
        }
        _ => Err(AuthError::Malformed(name.clone())),
    }
}

pub(super) fn signatures(rule: &HmacRule, headers: &HeaderMap) -> Result<Presented, AuthError> {
    let malformed = || AuthError::Malformed(rule.header.clone());
    let decode = |text: &[u8]| digest::decode(rule.encoding, text).ok_or_else(malformed);
    let mut timestamp = None;
    let signatures = match &rule.layout {
        Layout::Prefixed(prefix) => vec![decode(prefixed(headers, &rule.header, prefix)?)?],
        Layout::Stripe => {
            let mut signatures = Vec::new();
            for item in value(headers, &rule.header)?.split(|&b| b == b',') {
                match item.trim_ascii().split_at_checked(2) {
                    Some((b"t=", t)) => timestamp = Some(text(t).ok_or_else(malformed)?),
                    // A v1 that is not hex cannot match; other entries may.
                    Some((b"v1", rest)) if rest.first() == Some(&b'=') => {
                        signatures.extend(digest::decode(rule.encoding, &rest[1..]))
                    }
                    _ => {}
                }
            }
            timestamp.as_ref().ok_or_else(malformed)?;
            signatures
        }
        Layout::Versioned => value(headers, &rule.header)?
            .split(|&b| b == b' ')
            .filter_map(|item| item.strip_prefix(b"v1,"))
            .filter_map(|sig| digest::decode(rule.encoding, sig))
            .collect(),
    };
    if signatures.is_empty() {
        return Err(malformed());
    }
    Ok(Presented {
        signatures,
        timestamp,
    })
}

fn text(bytes: &[u8]) -> Option<String> {
    std::str::from_utf8(bytes).ok().map(str::to_string)
}

/// The signed timestamp (Unix seconds), checked against the replay window.
pub(super) fn timestamp(
    rule: &HmacRule,
    headers: &HeaderMap,
    in_signature: Option<&str>,
    now: u64,
) -> Result<Option<String>, AuthError> {
    let Some(window) = &rule.window else {
        return Ok(None);
    };
    let (raw, header) = match &window.at {
        TimestampAt::Header(h) => (text(value(headers, h)?), h),
        TimestampAt::Signature => (in_signature.map(str::to_string), &rule.header),
    };
    let raw = raw.ok_or_else(|| AuthError::Malformed(header.clone()))?;
    let ts: u64 = (raw.parse()).map_err(|_| AuthError::Malformed(header.clone()))?;
    let tolerance = window.tolerance.as_secs();
    if now.abs_diff(ts) > tolerance {
        return Err(AuthError::Stale(tolerance));
    }
    Ok(Some(raw))
}

/// The message id the scheme signs.
pub(super) fn id(rule: &HmacRule, headers: &HeaderMap) -> Result<Option<String>, AuthError> {
    let Some(header) = &rule.id else {
        return Ok(None);
    };
    let raw = text(value(headers, header)?).ok_or_else(|| AuthError::Malformed(header.clone()))?;
    if raw.is_empty() {
        return Err(AuthError::Malformed(header.clone()));
    }
    Ok(Some(raw))
}
