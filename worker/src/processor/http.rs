//! `http` (and `container`): POST the event as a binary-mode CloudEvent (`ce-*`
//! headers, `data` as the body, W3C `traceparent`); 2xx is success, and a CloudEvent
//! in the response is the processor's reply. Batches are in `http_batch`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::bail;
use aws_config::SdkConfig;
use cloudevents::{AttributesReader, Event, binding::http::to_event};
use eventpipe_core::envelope;
use eventpipe_crds::{ContainerProcessor, HttpProcessor as Spec};
use http::Uri;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};

use super::secret_headers::SecretHeaders;
use super::{BoxFuture, Delivery, Failure, FailureKind, Outcome, Processor};
use crate::http_client::{self, Answer, HttpClient, HttpError};
use crate::pressure::retry_after;
use crate::sigv4::Signer;

pub struct HttpProcessor {
    pub(super) client: HttpClient,
    /// The URL (what SigV4 signs and errors name), and parsed once.
    pub(super) url: String,
    pub(super) uri: Uri,
    pub(super) timeout: Duration,
    headers: HeaderMap,
    /// `headersFrom` and the bearer token, from mounted Secrets.
    secret_headers: Option<Arc<SecretHeaders>>,
    signer: Option<Signer>,
}

impl HttpProcessor {
    /// The `http` processor; its Secrets are read from `secrets_dir`, and SigV4 signs
    /// with the credentials of `aws`.
    pub fn from_spec(spec: &Spec, secrets_dir: &Path, aws: &SdkConfig) -> anyhow::Result<Self> {
        let mut p = Self::new(&spec.url, spec.timeout.as_std(), &spec.headers)?;
        p.secret_headers = SecretHeaders::load(spec, secrets_dir)?;
        p.signer = spec
            .sigv4
            .as_ref()
            .map(|s| Signer::new(s, aws))
            .transpose()?;
        p.check_distinct_headers()?;
        Ok(p)
    }

    /// The user's sidecar, on localhost at the container's port and path.
    pub fn from_container(spec: &ContainerProcessor) -> anyhow::Result<Self> {
        let url = format!("http://127.0.0.1:{}{}", spec.port, spec.path);
        Self::new(&url, spec.timeout.as_std(), &BTreeMap::new())
    }

    pub(super) fn new(
        url: &str,
        timeout: Duration,
        extra: &BTreeMap<String, String>,
    ) -> anyhow::Result<Self> {
        let mut headers = HeaderMap::new();
        for (k, v) in extra {
            headers.insert(
                HeaderName::try_from(k.as_str())?,
                HeaderValue::try_from(v.as_str())?,
            );
        }
        let uri =
            http_client::uri(url).map_err(|e| anyhow::anyhow!("processor url {url:?}: {e}"))?;
        Ok(Self {
            client: HttpClient::new(64)?,
            url: uri.to_string(),
            uri,
            timeout,
            headers,
            secret_headers: None,
            signer: None,
        })
    }

    /// A header set twice (plain, from a Secret, by SigV4) would be sent with one
    /// value or the other depending on the order of assembly: refuse it.
    fn check_distinct_headers(&self) -> anyhow::Result<()> {
        let mut seen: Vec<&HeaderName> = self.headers.keys().collect();
        let signed = self.signer.as_ref().map(|_| &AUTHORIZATION);
        let secret = self.secret_headers.iter().flat_map(|s| s.names());
        for name in secret.chain(signed) {
            if seen.contains(&name) {
                bail!(
                    "processor.http: header {name} is set twice (headers, headersFrom, bearerTokenSecretRef, sigv4)"
                );
            }
            seen.push(name);
        }
        Ok(())
    }

    /// Every header of a delivery: the spec's, the Secrets', the event's and, last,
    /// the signature over all of them.
    async fn request_headers(&self, d: &Delivery<'_>, body: &[u8]) -> anyhow::Result<HeaderMap> {
        let mut headers = self.common_headers();
        headers.extend(binary_headers(d.event, &d.trace));
        self.signed(headers, body).await
    }

    /// The headers of every request: the spec's and the Secrets'.
    pub(super) fn common_headers(&self) -> HeaderMap {
        let mut headers = self.headers.clone();
        if let Some(s) = &self.secret_headers {
            headers.extend(s.current());
        }
        headers
    }

    /// `headers` with the signature over them and `body`, when SigV4 is on.
    pub(super) async fn signed(
        &self,
        mut headers: HeaderMap,
        body: &[u8],
    ) -> anyhow::Result<HeaderMap> {
        if let Some(signer) = &self.signer {
            headers.extend(signer.sign(&self.url, &headers, body).await?);
        }
        Ok(headers)
    }
}

/// A trace context (`traceparent`, `tracestate`) as request headers.
pub(super) fn trace_headers(trace: &[(String, String)]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (key, value) in trace {
        if let (Ok(n), Ok(v)) = (
            HeaderName::try_from(key.as_str()),
            HeaderValue::try_from(value.as_str()),
        ) {
            headers.insert(n, v);
        }
    }
    headers
}

/// The binary-mode headers of an event, with the delivery's trace context.
pub fn binary_headers(event: &Event, trace: &[(String, String)]) -> HeaderMap {
    let mut headers = HeaderMap::with_capacity(8 + trace.len());
    for (name, value) in event.iter() {
        let name = match name {
            "datacontenttype" => Some(CONTENT_TYPE),
            envelope::TRACEPARENT | envelope::TRACESTATE => None,
            _ => ce_header(name),
        };
        if let (Some(n), Ok(v)) = (name, HeaderValue::try_from(value.to_string())) {
            headers.insert(n, v);
        }
    }
    headers.extend(trace_headers(trace));
    headers
}

/// The `ce-` header of a CloudEvents attribute; the common ones without building
/// their names, as every delivery sends them.
fn ce_header(attribute: &str) -> Option<HeaderName> {
    Some(HeaderName::from_static(match attribute {
        "id" => "ce-id",
        "source" => "ce-source",
        "type" => "ce-type",
        "specversion" => "ce-specversion",
        "subject" => "ce-subject",
        "time" => "ce-time",
        "dataschema" => "ce-dataschema",
        envelope::CORRELATION_ID => "ce-correlationid",
        other => return HeaderName::try_from(format!("ce-{other}")).ok(),
    }))
}

fn body(event: &Event) -> Vec<u8> {
    match event.data() {
        Some(cloudevents::Data::Binary(b)) => b.clone(),
        Some(cloudevents::Data::String(s)) => s.clone().into_bytes(),
        Some(cloudevents::Data::Json(v)) => serde_json::to_vec(v).unwrap_or_default(),
        None => vec![],
    }
}

impl Processor for HttpProcessor {
    fn deliver<'a>(&'a self, d: Delivery<'a>) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let body = body(d.event);
            let headers = match self.request_headers(&d, &body).await {
                Ok(h) => h,
                Err(e) => return Outcome::Failed(Failure::transient(format!("{e:#}"))),
            };
            match self.exchange(headers, body).await {
                Ok(answer) => Outcome::Delivered {
                    reply: reply(&answer.headers, answer.body.to_vec()).map(Box::new),
                },
                Err(failure) => Outcome::Failed(failure),
            }
        })
    }

    fn deliver_batch<'a>(&'a self, deliveries: Vec<Delivery<'a>>) -> BoxFuture<'a, Vec<Outcome>> {
        Box::pin(self.post_batch(deliveries))
    }
}

impl HttpProcessor {
    /// The POST and its 2xx answer; a failure for anything else.
    pub(super) async fn exchange(
        &self,
        headers: HeaderMap,
        body: Vec<u8>,
    ) -> Result<Answer, Failure> {
        let answer = (self
            .client
            .post(&self.uri, headers, body, self.timeout)
            .await)
            .map_err(|e| no_answer(&e, &self.url))?;
        refused(answer)
    }
}

/// A non-2xx answer as the failure it is.
pub(super) fn refused(answer: Answer) -> Result<Answer, Failure> {
    let status = answer.status;
    if status.is_success() {
        return Ok(answer);
    }
    let body = &answer.body[..answer.body.len().min(200)];
    Err(Failure {
        kind: status_kind(status.as_u16(), &answer.headers, SystemTime::now()),
        message: format!("HTTP {status}: {}", String::from_utf8_lossy(body)),
    })
}

/// A request to `target` that got no answer: a timeout or a refused connection is
/// the receiver being unable to take it now; anything else is transient.
pub(super) fn no_answer(e: &HttpError, target: &str) -> Failure {
    match e {
        HttpError::Timeout(_) | HttpError::Connect(_) => {
            Failure::throttled(None, format!("{target}: {e}"))
        }
        HttpError::Broken(_) => Failure::transient(format!("{target}: {e}")),
    }
}

/// 429 and 503 are throttling, with the wait their `Retry-After` asks for; any
/// other status is for the dead-letter policy to judge.
pub(super) fn status_kind(status: u16, headers: &HeaderMap, now: SystemTime) -> FailureKind {
    match status {
        429 | 503 => FailureKind::Throttled(
            headers
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| retry_after(v, now)),
        ),
        s => FailureKind::Status(s),
    }
}

/// A CloudEvent in a response, binary (`ce-*` headers) or structured.
fn reply(headers: &HeaderMap, body: Vec<u8>) -> Option<Event> {
    let structured = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/cloudevents+json"));
    if !structured && !headers.contains_key("ce-id") {
        return None;
    }
    let event = envelope::with_json_data(to_event(headers, body).ok()?);
    (!event.id().is_empty()).then_some(event)
}

#[cfg(test)]
mod tests {
    use super::*;
    use eventpipe_core::envelope::{NewEvent, build};
    use serde_json::json;

    #[test]
    fn binary_mode_headers_carry_attributes_and_the_delivery_trace() {
        let event = build(NewEvent {
            id: "e1".into(),
            source: "/s".into(),
            event_type: "t".into(),
            correlation_id: "c-9".into(),
            data: json!({"a": 1}),
            trace: vec![(
                "traceparent".into(),
                "00-11111111111111111111111111111111-2222222222222222-01".into(),
            )],
            ..Default::default()
        });
        let mut event = event;
        event.set_extension("tenant", "acme");
        let mine = "00-11111111111111111111111111111111-3333333333333333-01".to_string();
        let h = binary_headers(&event, &[("traceparent".into(), mine.clone())]);
        assert_eq!(h["ce-id"], "e1");
        assert_eq!(h["ce-specversion"], "1.0");
        assert_eq!(h["ce-type"], "t");
        assert_eq!(h["ce-correlationid"], "c-9");
        assert_eq!(h["ce-tenant"], "acme");
        assert_eq!(h["content-type"], "application/json");
        assert_eq!(h["traceparent"], mine.as_str());
        assert!(!h.contains_key("ce-traceparent"));
        assert_eq!(body(&event), br#"{"a":1}"#);
    }

    #[test]
    fn a_url_that_is_not_http_is_refused_at_start_naming_it() {
        for url in ["localhost:8080/events", "http://exa mple.com/"] {
            let e = HttpProcessor::new(url, Duration::from_secs(1), &BTreeMap::new())
                .err()
                .expect("refused");
            assert!(e.to_string().contains(&format!("{url:?}")), "{e}");
        }
    }

    #[test]
    fn throttling_statuses_carry_their_retry_after_and_others_are_statuses() {
        let now = SystemTime::now();
        let mut h = HeaderMap::new();
        assert_eq!(status_kind(503, &h, now), FailureKind::Throttled(None));
        assert_eq!(status_kind(500, &h, now), FailureKind::Status(500));
        h.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        let seven = Some(Duration::from_secs(7));
        assert_eq!(status_kind(429, &h, now), FailureKind::Throttled(seven));
        assert_eq!(status_kind(503, &h, now), FailureKind::Throttled(seven));
        assert_eq!(status_kind(502, &h, now), FailureKind::Status(502));
        h.insert(RETRY_AFTER, HeaderValue::from_static("later"));
        assert_eq!(status_kind(429, &h, now), FailureKind::Throttled(None));
    }

    #[tokio::test]
    async fn refused_connections_and_timeouts_are_throttling() {
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", closed.local_addr().unwrap());
        drop(closed);
        let p = HttpProcessor::new(&url, Duration::from_millis(200), &BTreeMap::new()).unwrap();
        let Err(failure) = p.exchange(HeaderMap::new(), vec![]).await else {
            panic!("answered")
        };
        assert!(
            matches!(failure.kind, FailureKind::Throttled(None)),
            "{failure:?}"
        );
        assert!(failure.message.contains("cannot connect"), "{failure:?}");

        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", silent.local_addr().unwrap());
        let p = HttpProcessor::new(&url, Duration::from_millis(200), &BTreeMap::new()).unwrap();
        let Err(failure) = p.exchange(HeaderMap::new(), vec![]).await else {
            panic!("answered")
        };
        assert!(
            matches!(failure.kind, FailureKind::Throttled(None)),
            "{failure:?}"
        );
        assert!(
            failure.message.contains("timed out after 200ms"),
            "{failure:?}"
        );
        drop(silent);
    }

    #[test]
    fn replies_are_read_from_binary_headers_and_ignored_otherwise() {
        let mut h = HeaderMap::new();
        assert!(reply(&h, b"ok".to_vec()).is_none());
        for (k, v) in [
            ("ce-id", "r1"),
            ("ce-source", "/pay"),
            ("ce-type", "PaymentCompleted"),
            ("ce-specversion", "1.0"),
            ("content-type", "application/json"),
        ] {
            h.insert(k, HeaderValue::from_static(v));
        }
        let r = reply(&h, br#"{"orderId": "o1"}"#.to_vec()).unwrap();
        assert_eq!(r.ty(), "PaymentCompleted");
    }
}
