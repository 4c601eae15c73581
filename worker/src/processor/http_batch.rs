//! `http` with `batch`: several events in one POST, in the CloudEvents batched
//! content mode (a JSON array of structured events, each with its own delivery's
//! trace context), under a span that links every event's trace. The response says
//! which failed ([`failed_items`]); a non-2xx status fails them all.

use cloudevents::{AttributesReader, Event};
use eventpipe_core::envelope::Structured;
use http::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
use opentelemetry::trace::TraceContextExt;
use std::borrow::Cow;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::batch_response::failed_items;
use super::http::HttpProcessor;
use super::{Delivery, Failure, Outcome, with_trace};

pub const BATCH_CONTENT_TYPE: &str = "application/cloudevents-batch+json";

impl HttpProcessor {
    /// One POST of `deliveries`, an outcome for each in order.
    pub(super) async fn post_batch(&self, deliveries: Vec<Delivery<'_>>) -> Vec<Outcome> {
        let span = self.batch_span(&deliveries);
        let ids: Vec<&str> = deliveries.iter().map(|d| d.event.id()).collect();
        let events: Vec<Cow<'_, Event>> = (deliveries.iter())
            .map(|d| with_trace(d.event, &d.trace))
            .collect();
        let structured: Vec<Structured<'_>> = events.iter().map(|e| Structured(e)).collect();
        let body = match serde_json::to_vec(&structured) {
            Ok(b) => b,
            Err(e) => return every(ids.len(), Failure::invalid(format!("batch body: {e}"))),
        };
        match self.post(body, &span).instrument(span.clone()).await {
            Ok((headers, bytes)) => per_item(&headers, &bytes, &ids),
            Err(failure) => every(ids.len(), failure),
        }
    }

    /// The request and its 2xx response (headers, body); a failure for anything else.
    async fn post(
        &self,
        body: Vec<u8>,
        span: &tracing::Span,
    ) -> Result<(HeaderMap, Vec<u8>), Failure> {
        let mut headers = self.common_headers();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(BATCH_CONTENT_TYPE));
        headers.extend(super::http::trace_headers(
            &eventpipe_core::telemetry::inject(span),
        ));
        let headers = (self.signed(headers, &body).await)
            .map_err(|e| Failure::transient(format!("{e:#}")))?;
        let answer = self.exchange(headers, body).await?;
        Ok((answer.headers, answer.body.to_vec()))
    }

    /// The span of one batch request, linked to the trace of every event in it.
    fn batch_span(&self, deliveries: &[Delivery<'_>]) -> tracing::Span {
        let span = tracing::info_span!(
            parent: None,
            "send batch",
            otel.name = "send batch",
            otel.kind = "client",
            url.full = %self.url,
            messaging.batch.message_count = deliveries.len(),
        );
        for d in deliveries {
            let pairs = d.trace.iter().map(|(k, v)| (k.as_str(), v.as_str()));
            let cx = eventpipe_core::telemetry::context_of(pairs);
            span.add_link(cx.span().span_context().clone());
        }
        span
    }
}

/// The outcome of each event of a batch that got a 2xx response.
fn per_item(headers: &HeaderMap, body: &[u8], ids: &[&str]) -> Vec<Outcome> {
    let json = (headers.get(CONTENT_TYPE))
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.contains("json"));
    match failed_items(body, json, ids) {
        Ok(failed) => (failed.into_iter())
            .map(|failed| match failed {
                true => Outcome::Failed(Failure::transient(
                    "named in the batch response's batchItemFailures",
                )),
                false => Outcome::Delivered { reply: None },
            })
            .collect(),
        Err(why) => every(
            ids.len(),
            Failure::transient(format!("batch response: {why}")),
        ),
    }
}

fn every(n: usize, failure: Failure) -> Vec<Outcome> {
    (0..n).map(|_| Outcome::Failed(failure.clone())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::processor::FailureKind;
    use crate::processor::fixtures::{deliveries, events};
    use std::collections::BTreeMap;
    use std::time::Duration;

    /// A processor on loopback answering every request with `status`, `content_type`
    /// and `body`.
    async fn answering(status: u16, content_type: &'static str, body: &'static str) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let app = axum::Router::new().fallback(move || async move {
            let status = axum::http::StatusCode::from_u16(status).unwrap();
            (status, [("content-type", content_type)], body)
        });
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        url
    }

    async fn post(url: &str, ids: &[&str]) -> Vec<Outcome> {
        let p = HttpProcessor::new(url, Duration::from_secs(2), &BTreeMap::new()).unwrap();
        let events = events(ids);
        p.post_batch(deliveries(&events)).await
    }

    fn kinds(outcomes: &[Outcome]) -> Vec<Option<FailureKind>> {
        (outcomes.iter())
            .map(|o| match o {
                Outcome::Delivered { .. } => None,
                Outcome::Failed(f) => Some(f.kind),
            })
            .collect()
    }

    #[tokio::test]
    async fn a_named_event_fails_alone_and_the_others_are_delivered() {
        let body = r#"{"batchItemFailures":[{"itemIdentifier":"b"}]}"#;
        let url = answering(200, "application/json", body).await;
        let got = kinds(&post(&url, &["a", "b", "c"]).await);
        assert_eq!(got, [None, Some(FailureKind::Transient), None]);
    }

    #[tokio::test]
    async fn a_malformed_answer_or_a_failing_status_fails_every_event() {
        let url = answering(200, "application/json", "{oops").await;
        let got = kinds(&post(&url, &["a", "b"]).await);
        assert_eq!(got, [Some(FailureKind::Transient); 2]);
        let url = answering(500, "text/plain", "down").await;
        let got = kinds(&post(&url, &["a", "b"]).await);
        assert_eq!(got, [Some(FailureKind::Status(500)); 2]);
        let url = answering(429, "text/plain", "slow down").await;
        let got = kinds(&post(&url, &["a", "b"]).await);
        assert_eq!(got, [Some(FailureKind::Throttled(None)); 2]);
        let url = answering(200, "text/plain", "ok").await;
        assert_eq!(
            kinds(&post(&url, &["a"]).await),
            [None],
            "plain text names nothing"
        );
    }

    #[tokio::test]
    async fn a_refused_connection_throttles_every_event() {
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", closed.local_addr().unwrap());
        drop(closed);
        let got = kinds(&post(&url, &["a", "b"]).await);
        assert_eq!(got, [Some(FailureKind::Throttled(None)); 2]);
    }
}
