//! Logs and traces. Logs are JSON lines, or readable text for a person at a terminal
//! ([`LogFormat`]; level from `RUST_LOG`, default `info`); spans
//! of eventpipe's own code go to OpenTelemetry, exported over OTLP when the standard
//! `OTEL_EXPORTER_OTLP_*` variables name an endpoint (protocol from
//! `OTEL_EXPORTER_OTLP_PROTOCOL`, service name from `OTEL_SERVICE_NAME`). Trace
//! context travels as W3C `traceparent` / `tracestate`.

use std::fs::File;
use std::io::IsTerminal;
use std::os::fd::AsFd;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::{Resource, propagation::TraceContextPropagator, trace::SdkTracerProvider};
use tracing::Level;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{
    EnvFilter, Layer, filter::filter_fn, layer::SubscriberExt, util::SubscriberInitExt,
};

use crate::json_log::JsonLines;
use crate::log_writer::{self, LogGuard};

/// Keeps the tracer provider and the log writer alive; flushes both on
/// [`Telemetry::shutdown`] (or drop).
pub struct Telemetry {
    provider: SdkTracerProvider,
    _logs: LogGuard<Box<dyn std::io::Write + Send>>,
}

impl Telemetry {
    pub fn shutdown(self) {
        let _ = self.provider.shutdown();
    }
}

fn otlp_configured() -> bool {
    [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|k| std::env::var(k).is_ok_and(|v| !v.is_empty()))
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object a line, for collectors.
    Json,
    /// One readable line an event, for a person.
    Text,
}

impl LogFormat {
    /// Text for a terminal, JSON for a pipe or a file.
    pub fn for_output(is_terminal: bool) -> Self {
        if is_terminal { Self::Text } else { Self::Json }
    }
}

/// Installs logging (JSON lines) and tracing for a binary; `service` names it unless
/// `OTEL_SERVICE_NAME` does.
pub fn init(service: &str) -> Telemetry {
    init_with(service, LogFormat::Json)
}

/// [`init`], with log lines in `format`.
pub fn init_with(service: &str, format: LogFormat) -> Telemetry {
    let name = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| service.to_string());
    let mut builder = SdkTracerProvider::builder()
        .with_resource(Resource::builder().with_service_name(name).build());
    if otlp_configured() {
        match opentelemetry_otlp::SpanExporter::builder().build() {
            Ok(exporter) => builder = builder.with_batch_exporter(exporter),
            Err(e) => eprintln!("warning: OTLP export disabled: {e}"),
        }
    }
    let provider = builder.build();
    opentelemetry::global::set_tracer_provider(provider.clone());
    let tracer = provider.tracer("eventpipe");
    // Only eventpipe's own spans (the AWS SDK and HTTP stacks emit many internal ones),
    // and of its lines only warnings and errors, as span events: an info line about
    // every event cost as much as its span; what became of an event is an attribute.
    // Each span and event without the source location and thread attributes, and
    // spans without busy/idle timing and without activating an OpenTelemetry context
    // at every entry: a worker's futures enter their spans at each poll, and these
    // cost more per message than the spans themselves.
    let traces = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_location(false)
        .with_threads(false)
        .with_tracked_inactivity(false)
        .with_context_activation(false)
        .with_filter(filter_fn(|meta| {
            meta.target().starts_with("eventpipe")
                && (meta.is_span() || *meta.level() <= Level::WARN)
        }));
    let (writer, guard) = log_writer::buffered(stdout(), log_writer::FLUSH_EVERY);
    let logs = match format {
        LogFormat::Json => JsonLines::new(writer).boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(writer)
            .with_target(false)
            .with_ansi(std::io::stdout().is_terminal())
            .compact()
            .boxed(),
    };
    let logs = logs
        .with_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")));
    let _ = tracing_subscriber::registry()
        .with(logs)
        .with(traces)
        .try_init();
    Telemetry {
        provider,
        _logs: guard,
    }
}

/// Stdout as a plain file: `Stdout` would add a lock and a line buffer of its own.
fn stdout() -> Box<dyn std::io::Write + Send> {
    match std::io::stdout().as_fd().try_clone_to_owned() {
        Ok(fd) => Box::new(File::from(fd)),
        Err(_) => Box::new(std::io::stdout()),
    }
}

/// The W3C trace context of `span`, as `(traceparent, ...)` pairs to carry along; an
/// empty `tracestate` is none, not an empty header or extension.
pub fn inject(span: &tracing::Span) -> Vec<(String, String)> {
    let mut carrier = Carrier(Vec::with_capacity(2));
    TraceContextPropagator::new().inject_context(&span.context(), &mut carrier);
    carrier.0
}

/// The pairs a propagator writes, in its order (`traceparent` first).
struct Carrier(Vec<(String, String)>);

impl Injector for Carrier {
    fn set(&mut self, key: &str, value: String) {
        if !value.is_empty() {
            self.0.push((key.to_string(), value));
        }
    }
}

/// The trace context described by `pairs` (`traceparent`, `tracestate`).
pub fn context_of<'a>(
    pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> opentelemetry::Context {
    TraceContextPropagator::new().extract(&Pairs(pairs.into_iter().collect()))
}

/// Trace context pairs as the propagator reads them, names in any case: a map of
/// lowercased copies cost more than the two lookups.
struct Pairs<'a>(Vec<(&'a str, &'a str)>);

impl Extractor for Pairs<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        let named = self.0.iter().find(|(k, _)| k.eq_ignore_ascii_case(key));
        named.map(|(_, v)| *v)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| *k).collect()
    }
}

/// Makes `span` continue the trace described by `pairs` (`traceparent`, `tracestate`);
/// without a valid `traceparent`, the span starts a new trace.
pub fn continue_trace<'a>(
    span: &tracing::Span,
    pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
) {
    let parent = context_of(pairs);
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
}

/// A consumer's `process` span's messaging attributes (OpenTelemetry's conventions),
/// set on its trace alone: as span fields, every log line in the span would repeat them.
pub fn process_attributes(
    span: &tracing::Span,
    system: &'static str,
    destination: &str,
    message_id: &str,
) {
    span.set_attribute("messaging.system", system);
    span.set_attribute("messaging.operation.type", "process");
    span.set_attribute("messaging.destination.name", destination.to_string());
    span.set_attribute("messaging.message.id", message_id.to_string());
}

/// The trace id of `span` (32 hex digits), for log lines and summaries.
pub fn trace_id(span: &tracing::Span) -> String {
    span.context().span().span_context().trace_id().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    /// `check` with spans traced as the binaries trace them.
    fn traced(check: impl FnOnce()) {
        let provider = SdkTracerProvider::builder().build();
        let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("test"));
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), check);
    }

    #[test]
    fn a_continued_trace_is_carried_on_without_an_empty_tracestate() {
        traced(|| {
            let span = tracing::info_span!("process");
            continue_trace(&span, [("traceparent", TRACEPARENT)]);
            let pairs = inject(&span);
            assert_eq!(pairs.len(), 1, "{pairs:?}");
            assert_eq!(pairs[0].0, "traceparent");
            assert!(
                pairs[0]
                    .1
                    .starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-")
            );
        });
    }

    #[test]
    fn trace_context_names_are_read_in_any_case_and_carried_in_order() {
        traced(|| {
            let span = tracing::info_span!("process");
            let given = [("TraceState", "vendor=x"), ("Traceparent", TRACEPARENT)];
            continue_trace(&span, given);
            let pairs = inject(&span);
            let names: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
            assert_eq!(names, ["traceparent", "tracestate"]);
            assert_eq!(pairs[1].1, "vendor=x");
        });
    }

    #[test]
    fn a_terminal_reads_text_and_a_pipe_reads_json() {
        assert_eq!(LogFormat::for_output(true), LogFormat::Text);
        assert_eq!(LogFormat::for_output(false), LogFormat::Json);
    }
}
