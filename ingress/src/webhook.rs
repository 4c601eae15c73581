//! One webhook's request handling, once the body is read: authenticate, parse, build
//! the CloudEvent, store it, and answer `202` only when it is stored.

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum::{
    body::Bytes,
    http::{HeaderMap, header},
};
use cloudevents::AttributesReader;
use eventpipe_core::{
    envelope::{self, NewEvent},
    feed::{self, Feed, Record},
    telemetry,
};
use prometheus_client::metrics::{counter::Counter, histogram::Histogram};
use serde_json::Value;
use tokio::time::Instant;
use tracing::{Instrument, Span};

use crate::{
    config::WebhookConfig,
    github,
    metrics::Metrics,
    publish::{Message, PublishError, Publisher},
    push::token,
    reply::Reply,
    secrets::Slot,
    signature::AuthError,
    slack, spans,
};

/// A webhook with everything it needs at request time.
pub struct Route {
    pub config: WebhookConfig,
    source: String,
    default_type: String,
    /// The current secret, then the previous one when rotating.
    secrets: Vec<Arc<Slot>>,
    publisher: Arc<dyn Publisher>,
    publish_timeout: Duration,
    received: Counter,
    publish_duration: Histogram,
    feed: Feed,
}

impl Route {
    pub fn new(
        config: WebhookConfig,
        secrets: Vec<Arc<Slot>>,
        publisher: Arc<dyn Publisher>,
        publish_timeout: Duration,
        metrics: &Metrics,
    ) -> Self {
        Self {
            source: config.source(),
            default_type: config.default_type(),
            received: metrics.received(&config.pipeline, &config.spec.name),
            publish_duration: metrics.publish_duration(&publisher.destination().name),
            feed: metrics.feed(),
            config,
            secrets,
            publisher,
            publish_timeout,
        }
    }

    /// Handles a request whose body is read, inside its server `span`, answering
    /// by `deadline` (the request timeout).
    pub async fn handle(
        &self,
        headers: &HeaderMap,
        body: Bytes,
        span: &Span,
        deadline: Instant,
    ) -> Reply {
        // The previous secret is optional: only the current one is needed to serve.
        let loaded: Vec<_> = self.secrets.iter().map(|s| s.get()).collect();
        if loaded.first().is_none_or(Option::is_none) {
            return Reply::Unavailable("the webhook's secret is not loaded");
        }
        let secrets: Vec<&[u8]> = loaded.iter().flatten().map(|s| s.expose()).collect();
        match (self.config.verifier).verify(&secrets, headers, &body, unix_now()) {
            Ok(()) => {}
            Err(AuthError::UnusableSecret) => {
                return Reply::Unavailable("the webhook's secret is not a key of its scheme");
            }
            Err(e) => return Reply::Unauthorized(e),
        }
        if let Some(other) = unsupported_content_type(headers) {
            return Reply::UnsupportedMediaType(other);
        }
        match serde_json::from_slice(&body) {
            Ok(_) if self.config.github.is_unwanted_ping(headers) => Reply::Pong {
                hook_id: github::hook_id(headers),
            },
            Ok(data) => match slack::challenge(&self.config.spec, &data) {
                Some(challenge) => Reply::Challenge(challenge),
                None => self.accept(headers, data, span, deadline).await,
            },
            Err(e) => Reply::BadJson(e),
        }
    }

    async fn accept(
        &self,
        headers: &HeaderMap,
        data: Value,
        span: &Span,
        deadline: Instant,
    ) -> Reply {
        let values = self.config.fields.values(headers, &data);
        // The sender's delivery id, when there is one, so a retried delivery keeps its id.
        let event_id = values.deduplication_id.unwrap_or_else(new_id);
        let correlation_id = values.correlation_id.unwrap_or_else(new_id);
        let producer = spans::producer(span, self.publisher.destination());
        for s in [span, &producer] {
            s.record("event.id", event_id.as_str());
            s.record("correlation.id", correlation_id.as_str());
        }
        let trace = telemetry::inject(&producer);
        let mut event = envelope::build(NewEvent {
            id: event_id.clone(),
            source: self.source.clone(),
            event_type: values
                .event_type
                .unwrap_or_else(|| self.default_type.clone()),
            subject: None,
            correlation_id: correlation_id.clone(),
            data,
            trace,
        });
        self.config.github.extend(headers, &mut event);
        let accepted = Record {
            component: "ingress".into(),
            pipeline: self.config.pipeline.clone(),
            source: self.config.spec.name.clone(),
            id: event_id.clone(),
            event_type: event.ty().into(),
            correlation_id: correlation_id.clone(),
            outcome: "accepted".into(),
            ..Default::default()
        };
        let time = event.time().copied();
        let message = Message {
            event,
            group_id: values
                .message_group_id
                .unwrap_or_else(|| correlation_id.clone()),
        };
        let outcome = (self.publish(message, deadline))
            .instrument(producer.clone())
            .await;
        let trace_id = telemetry::trace_id(span);
        match outcome {
            Ok(message_id) => {
                if let Some(id) = &message_id {
                    producer.record("messaging.message.id", id.as_str());
                }
                self.received.inc();
                tracing::info!(%correlation_id, %event_id, %trace_id, "event accepted");
                self.feed.record(Record {
                    latency_ms: feed::latency_ms(time, feed::now_ms()),
                    trace_id: trace_id.clone(),
                    ..accepted
                });
                Reply::Accepted {
                    subscribe_token: self.subscribe_token(&correlation_id),
                    event_id,
                    correlation_id,
                }
            }
            Err(e) => {
                producer.record("otel.status_code", "error");
                let destination = &self.publisher.destination().name;
                tracing::warn!(%correlation_id, %event_id, %trace_id, %destination, error = %e, "event not stored");
                match e {
                    PublishError::TooLarge { .. } => Reply::EventTooLarge(e.to_string()),
                    PublishError::Unavailable(_) => {
                        Reply::Unavailable("the event could not be stored")
                    }
                }
            }
        }
    }

    /// A token admitting the sender to the pushes of `correlation_id`, when a
    /// subscription names this webhook.
    fn subscribe_token(&self, correlation_id: &str) -> Option<String> {
        if !self.config.subscribable {
            return None;
        }
        let secret = self.secrets.first()?.get()?;
        let pipeline = &self.config.pipeline;
        Some(token::issue(
            secret.expose(),
            pipeline,
            correlation_id,
            unix_now(),
        ))
    }

    /// Stores the message within the publish timeout and by the request's
    /// `deadline`; the backend's message id on success.
    async fn publish(
        &self,
        message: Message,
        deadline: Instant,
    ) -> Result<Option<String>, PublishError> {
        let started = Instant::now();
        let until = deadline.min(started + self.publish_timeout);
        let outcome = tokio::time::timeout_at(until, self.publisher.publish(message)).await;
        self.publish_duration
            .observe(started.elapsed().as_secs_f64());
        match outcome {
            Ok(result) => result.map(|receipt| receipt.message_id),
            Err(_) => Err(PublishError::Unavailable(format!(
                "no answer within {:?}",
                until - started
            ))),
        }
    }
}

fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The declared content type when it is not JSON; a request without one is read as JSON.
pub fn unsupported_content_type(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::CONTENT_TYPE)?;
    let essence = value
        .to_str()
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let json = essence == "application/json" || essence.ends_with("+json");
    (!json).then_some(essence)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_type(t: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, t.parse().unwrap());
        h
    }

    #[test]
    fn json_content_types_are_accepted_others_named() {
        assert_eq!(unsupported_content_type(&HeaderMap::new()), None);
        assert_eq!(
            unsupported_content_type(&with_type("application/json")),
            None
        );
        assert_eq!(
            unsupported_content_type(&with_type("Application/JSON; charset=utf-8")),
            None
        );
        assert_eq!(
            unsupported_content_type(&with_type("application/cloudevents+json")),
            None
        );
        assert_eq!(
            unsupported_content_type(&with_type("application/x-www-form-urlencoded")).as_deref(),
            Some("application/x-www-form-urlencoded")
        );
    }
}
