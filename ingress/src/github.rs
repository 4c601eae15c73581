//! GitHub's own requests: the `ping` sent when a hook is created, and the hook and
//! delivery ids every delivery carries, kept on the event.

use axum::http::HeaderMap;
use cloudevents::Event;
use eventpipe_crds::{SignatureScheme, Webhook};

const EVENT: &str = "x-github-event";
const HOOK_ID: &str = "x-github-hook-id";
const DELIVERY: &str = "x-github-delivery";

/// The CloudEvent extensions GitHub's headers become (extension names are lowercase
/// alphanumerics).
pub const EXTENSIONS: [(&str, &str); 2] = [(HOOK_ID, "githubhookid"), (DELIVERY, "githubdelivery")];

/// What a webhook does with GitHub's requests; nothing for other schemes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Github {
    enabled: bool,
    deliver_pings: bool,
}

impl Github {
    pub fn new(spec: &Webhook) -> Self {
        Self {
            enabled: spec.signature.scheme == SignatureScheme::Github,
            deliver_pings: spec.github.as_ref().is_some_and(|g| g.deliver_pings),
        }
    }

    /// A `ping` the pipeline did not ask for: answered, not enqueued.
    pub fn is_unwanted_ping(&self, headers: &HeaderMap) -> bool {
        self.enabled && !self.deliver_pings && text(headers, EVENT).as_deref() == Some("ping")
    }

    /// Keeps the hook id and the delivery id on the event.
    pub fn extend(&self, headers: &HeaderMap, event: &mut Event) {
        if !self.enabled {
            return;
        }
        for (header, extension) in EXTENSIONS {
            if let Some(value) = text(headers, header) {
                event.set_extension(extension, value);
            }
        }
    }
}

pub fn hook_id(headers: &HeaderMap) -> Option<String> {
    text(headers, HOOK_ID)
}

fn text(headers: &HeaderMap, name: &str) -> Option<String> {
    let value = headers.get(name)?.to_str().ok()?.trim();
    (!value.is_empty()).then(|| value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use eventpipe_core::envelope::{self, NewEvent};

    fn hook(scheme: &str, deliver_pings: bool) -> Github {
        let mut spec: Webhook = serde_json::from_value(serde_json::json!({
            "name": "gh", "path": "/gh",
            "signature": {"scheme": scheme, "secretRef": {"name": "s", "key": "k"}},
            "github": {"deliverPings": deliver_pings},
        }))
        .unwrap();
        if scheme != "github" {
            spec.github = None;
        }
        Github::new(&spec)
    }

    fn github_headers(event: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(EVENT, event.parse().unwrap());
        h.insert(HOOK_ID, "123456".parse().unwrap());
        h.insert(
            DELIVERY,
            "72d3162e-cc78-11e3-81ab-4c9367dc0958".parse().unwrap(),
        );
        h
    }

    #[test]
    fn pings_are_answered_unless_asked_for() {
        assert!(hook("github", false).is_unwanted_ping(&github_headers("ping")));
        assert!(!hook("github", false).is_unwanted_ping(&github_headers("push")));
        assert!(!hook("github", true).is_unwanted_ping(&github_headers("ping")));
        assert!(!hook("bearer", false).is_unwanted_ping(&github_headers("ping")));
        assert_eq!(hook_id(&github_headers("ping")).as_deref(), Some("123456"));
    }

    #[test]
    fn hook_and_delivery_ids_become_extensions() {
        let mut event = envelope::build(NewEvent {
            id: "1".into(),
            source: "/s".into(),
            event_type: "t".into(),
            subject: None,
            correlation_id: "c".into(),
            data: serde_json::json!({}),
            trace: vec![],
        });
        hook("github", false).extend(&github_headers("push"), &mut event);
        assert_eq!(
            envelope::extension(&event, "githubhookid").as_deref(),
            Some("123456")
        );
        assert_eq!(
            envelope::extension(&event, "githubdelivery").as_deref(),
            Some("72d3162e-cc78-11e3-81ab-4c9367dc0958")
        );
    }
}
