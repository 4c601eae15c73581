//! Subscribe tokens: what a webhook's `202` answer carries so that the sender, and
//! only it, can subscribe to the events of its own request. An HMAC, keyed from the
//! webhook's secret (so every replica verifies it), over the pipeline, the
//! correlation id and an expiry: `<expiry>.<base64url MAC>`.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How long a token admits its subscriber: long enough to connect after the `202`.
pub const TTL_SECS: u64 = 600;

/// Separates the subscribe key from the webhook secret it derives from, so the one
/// never signs what the other would.
const CONTEXT: &[u8] = b"eventpipe subscribe token v1";

fn mac(secret: &[u8], pipeline: &str, correlation_id: &str, expiry: u64) -> Hmac<Sha256> {
    let mut kdf = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    kdf.update(CONTEXT);
    let key = kdf.finalize().into_bytes();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes any key length");
    for part in [
        pipeline.as_bytes(),
        correlation_id.as_bytes(),
        &expiry.to_be_bytes(),
    ] {
        mac.update(&(part.len() as u64).to_be_bytes());
        mac.update(part);
    }
    mac
}

/// A token admitting subscribers to `correlation_id` of `pipeline` until `now + TTL`.
pub fn issue(secret: &[u8], pipeline: &str, correlation_id: &str, now: u64) -> String {
    let expiry = now + TTL_SECS;
    let tag = mac(secret, pipeline, correlation_id, expiry)
        .finalize()
        .into_bytes();
    format!("{expiry}.{}", URL_SAFE_NO_PAD.encode(tag))
}

/// Whether `token` admits a subscriber to `correlation_id` of `pipeline` at `now`,
/// signed with any of `secrets` (the current one, or the previous during a rotation).
pub fn verify(
    secrets: &[&[u8]],
    token: &str,
    pipeline: &str,
    correlation_id: &str,
    now: u64,
) -> bool {
    let Some((expiry, tag)) = token.split_once('.') else {
        return false;
    };
    let (Ok(expiry), Ok(tag)) = (expiry.parse::<u64>(), URL_SAFE_NO_PAD.decode(tag)) else {
        return false;
    };
    expiry >= now
        && secrets.iter().any(|s| {
            mac(s, pipeline, correlation_id, expiry)
                .verify_slice(&tag)
                .is_ok()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000;

    #[test]
    fn a_token_admits_its_own_correlation_id_until_it_expires() {
        let t = issue(b"s3cret", "notes", "c1", NOW);
        assert!(verify(&[b"s3cret"], &t, "notes", "c1", NOW));
        assert!(verify(&[b"s3cret"], &t, "notes", "c1", NOW + TTL_SECS));
        assert!(!verify(&[b"s3cret"], &t, "notes", "c1", NOW + TTL_SECS + 1));
        assert!(!verify(&[b"s3cret"], &t, "notes", "c2", NOW));
        assert!(!verify(&[b"s3cret"], &t, "other", "c1", NOW));
        assert!(!verify(&[b"other"], &t, "notes", "c1", NOW));
    }

    #[test]
    fn the_previous_secret_verifies_during_a_rotation() {
        let t = issue(b"old", "notes", "c1", NOW);
        assert!(verify(&[b"new", b"old"], &t, "notes", "c1", NOW));
    }

    #[test]
    fn a_forged_or_altered_token_is_refused() {
        let t = issue(b"s3cret", "notes", "c1", NOW);
        let later = t.replacen(
            &(NOW + TTL_SECS).to_string(),
            &(NOW + 99 * TTL_SECS).to_string(),
            1,
        );
        for bad in ["", "x", "1.2", "99999999999.AAAA", later.as_str(), "s3cret"] {
            assert!(!verify(&[b"s3cret"], bad, "notes", "c1", NOW), "{bad}");
        }
    }
}
