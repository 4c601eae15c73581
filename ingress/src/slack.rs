//! Slack's own request: the `url_verification` challenge sent, signed, when an Events
//! API request URL is saved. Slack wants the challenge back, and it is no event.

use eventpipe_crds::{SignatureScheme, Webhook};
use serde_json::Value;

/// The challenge to answer, for a Slack webhook's `url_verification`; `None` for any
/// other body or scheme.
pub fn challenge(spec: &Webhook, body: &Value) -> Option<String> {
    if spec.signature.scheme != SignatureScheme::Slack || body["type"] != "url_verification" {
        return None;
    }
    body["challenge"].as_str().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn hook(scheme: &str) -> Webhook {
        serde_json::from_value(json!({
            "name": "s", "path": "/s",
            "signature": {"scheme": scheme, "secretRef": {"name": "s", "key": "k"}},
        }))
        .unwrap()
    }

    #[test]
    fn a_slack_url_verification_is_answered_with_its_challenge() {
        let body = json!({"token": "t", "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P", "type": "url_verification"});
        assert_eq!(
            challenge(&hook("slack"), &body).as_deref(),
            Some("3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P")
        );
    }

    #[test]
    fn other_bodies_and_schemes_are_events() {
        let verification = json!({"challenge": "c", "type": "url_verification"});
        assert_eq!(challenge(&hook("github"), &verification), None);
        assert_eq!(challenge(&hook("hmac"), &verification), None);
        let callback = json!({"type": "event_callback", "challenge": "c"});
        assert_eq!(challenge(&hook("slack"), &callback), None);
        assert_eq!(
            challenge(&hook("slack"), &json!({"type": "url_verification"})),
            None
        );
        assert_eq!(challenge(&hook("slack"), &json!([1, 2])), None);
    }
}
