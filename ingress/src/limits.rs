//! Limits that keep one sender (or many) from exhausting a pod: the size of a
//! request's head, how long its parts may take, and how many requests are handled at
//! once. Bodies are limited per webhook (`maxBodyBytes`).

use std::{sync::Arc, time::Duration};

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Request line and headers, in bytes: a larger head is answered `431`.
    pub max_header_bytes: usize,
    /// Header fields per request: more are answered `431`.
    pub max_headers: usize,
    /// Time for a connection to deliver a request's head (and its TLS handshake);
    /// slower connections, and keep-alive connections idle this long, are closed.
    pub header_read_timeout: Duration,
    /// Time from a request's head to its answer: a body still arriving then is
    /// answered `408`, a store still pending `503`.
    pub request_timeout: Duration,
    /// Requests handled at once by this process; more are answered `503` with
    /// `Retry-After` at once rather than queued.
    pub max_concurrent_requests: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_header_bytes: 16 * 1024,
            max_headers: 64,
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_concurrent_requests: 128,
        }
    }
}

/// Which limit refused a request or closed a connection: the `reason` of
/// `eventpipe_ingress_rejected_total` and of the log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    BodyTooLarge,
    HeadersTooLarge,
    HeaderTimeout,
    RequestTimeout,
    Overloaded,
    TlsHandshake,
}

impl Limit {
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::BodyTooLarge => "body_too_large",
            Limit::HeadersTooLarge => "headers_too_large",
            Limit::HeaderTimeout => "header_timeout",
            Limit::RequestTimeout => "request_timeout",
            Limit::Overloaded => "overloaded",
            Limit::TlsHandshake => "tls_handshake",
        }
    }
}

/// Admits at most `max_concurrent_requests` requests at a time, without waiting.
#[derive(Clone, Debug)]
pub struct Gate {
    permits: Arc<Semaphore>,
    in_flight: Gauge,
}

/// One admitted request; its place is freed when this is dropped.
#[derive(Debug)]
pub struct Pass {
    _permit: OwnedSemaphorePermit,
    in_flight: Gauge,
}

impl Gate {
    pub fn new(max: usize, in_flight: Gauge) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(max)),
            in_flight,
        }
    }

    /// A pass when a place is free; `None` when all are taken.
    pub fn try_enter(&self) -> Option<Pass> {
        let permit = self.permits.clone().try_acquire_owned().ok()?;
        self.in_flight.inc();
        Some(Pass {
            _permit: permit,
            in_flight: self.in_flight.clone(),
        })
    }
}

impl Drop for Pass {
    fn drop(&mut self) {
        self.in_flight.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gate_refuses_beyond_its_size_and_frees_places_on_drop() {
        let gate = Gate::new(2, Gauge::default());
        let (a, b) = (gate.try_enter(), gate.try_enter());
        assert!(a.is_some() && b.is_some());
        assert!(gate.try_enter().is_none());
        assert_eq!(gate.in_flight.get(), 2);
        drop(a);
        assert!(gate.try_enter().is_some());
        assert_eq!(gate.in_flight.get(), 1);
    }
}
