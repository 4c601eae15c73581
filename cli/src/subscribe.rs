//! Subscribing as a client does after a `202`: Server-Sent Events at a subscription
//! path with the answer's correlation id and subscribe token, read until the first
//! event pushed.

use std::time::Duration;

use anyhow::Context;
use serde_json::Value;

/// The `202`'s body: what a client subscribes with.
#[derive(Debug)]
pub struct Accepted {
    pub event_id: String,
    pub correlation_id: String,
    pub subscribe_token: String,
}

impl Accepted {
    pub fn from_body(body: &Value) -> anyhow::Result<Self> {
        let field = |k: &str| {
            body[k]
                .as_str()
                .map(String::from)
                .with_context(|| format!("the 202 has no {k}: {body}"))
        };
        Ok(Self {
            event_id: field("eventId")?,
            correlation_id: field("correlationId")?,
            subscribe_token: field("subscribeToken")?,
        })
    }
}

/// The first event pushed at `path` of the ingress at `base` (`http://host:port`) to
/// the subscriber of `accepted`, within `wait`: its SSE id and the CloudEvent.
pub async fn first_push(
    client: &reqwest::Client,
    base: &str,
    path: &str,
    accepted: &Accepted,
    wait: Duration,
) -> anyhow::Result<(String, Value)> {
    let mut url = reqwest::Url::parse(&format!("{base}{path}"))?;
    url.query_pairs_mut()
        .append_pair("correlationId", &accepted.correlation_id)
        .append_pair("access_token", &accepted.subscribe_token);
    let read = async {
        let mut stream = client.get(url).send().await?;
        let status = stream.status();
        anyhow::ensure!(status == 200, "subscribing at {path}: {status}");
        let mut text = String::new();
        loop {
            if let Some(event) = first_event(&text) {
                return Ok(event);
            }
            let chunk = stream.chunk().await?.context("the stream ended")?;
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
    };
    tokio::time::timeout(wait, read)
        .await
        .map_err(|_| anyhow::anyhow!("nothing pushed at {path} within {wait:?}"))?
}

/// The first complete event with data in an SSE stream's text: its id (empty when
/// none) and its data as JSON. Comments (keep-alives) and data-less blocks are skipped.
fn first_event(text: &str) -> Option<(String, Value)> {
    let text = text.replace("\r\n", "\n");
    let mut blocks = text.split("\n\n").collect::<Vec<_>>();
    // The last block is still arriving.
    blocks.pop();
    blocks.into_iter().find_map(|block| {
        let field = |name: &str| {
            let prefix = format!("{name}:");
            let values: Vec<&str> = (block.lines())
                .filter_map(|l| l.strip_prefix(&prefix))
                .map(|v| v.strip_prefix(' ').unwrap_or(v))
                .collect();
            (!values.is_empty()).then(|| values.join("\n"))
        };
        let data = serde_json::from_str(&field("data")?).ok()?;
        Some((field("id").unwrap_or_default(), data))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_first_complete_event_is_read_past_keep_alives() {
        assert_eq!(first_event(""), None);
        assert_eq!(first_event(":\n\n"), None);
        // Not complete until its blank line.
        assert_eq!(first_event("id: e-1\ndata: {\"a\":1}\n"), None);
        assert_eq!(
            first_event(":\n\nid: e-1\ndata: {\"a\":1}\n\nid: e-2\ndata: {}\n\n"),
            Some(("e-1".into(), json!({"a": 1})))
        );
        assert_eq!(
            first_event("data:{\r\ndata: \"a\": 2}\r\n\r\n"),
            Some((String::new(), json!({"a": 2})))
        );
    }

    #[test]
    fn a_202_without_a_subscribe_token_says_so() {
        let ok = json!({"eventId": "e", "correlationId": "c", "subscribeToken": "t"});
        assert_eq!(Accepted::from_body(&ok).unwrap().subscribe_token, "t");
        let err = Accepted::from_body(&json!({"eventId": "e", "correlationId": "c"}));
        assert!(err.unwrap_err().to_string().contains("no subscribeToken"));
    }
}
