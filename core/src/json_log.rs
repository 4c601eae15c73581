//! Log lines as JSON, one object a line: `timestamp`, `level`, `target`, the event's
//! fields at the top level (`message` among them) and the innermost span's fields under
//! `span`, with its `name`. Fields meant for the trace alone (`otel.*`) are left out.
//!
//! Each line is written as text straight into one string: a general JSON layer builds
//! a value for every field of every line and then serializes it, which cost the
//! worker and the ingress more per event than the rest of their logging. A span's
//! fields are written once, when it starts, and copied into each of its lines.

use std::fmt::{self, Write as _};
use std::io::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

/// The layer writing JSON lines to `W`.
pub struct JsonLines<W> {
    writer: W,
}

impl<W> JsonLines<W> {
    pub fn new(writer: W) -> Self {
        Self { writer }
    }
}

/// A span's fields as JSON members (`"key":value,...`), written when it starts.
struct SpanFields(String);

impl SpanFields {
    /// A later value of a field replaces the earlier one, so a key appears once.
    /// Rare (a count known after the span started), so the members are read back.
    fn set(&mut self, record: &Record<'_>) {
        let mut members = format!("{{{}", self.0);
        record.record(&mut Inline(&mut members));
        members.push('}');
        // A map read from JSON keeps the last value of a repeated key.
        let Ok(map) = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&members)
        else {
            return;
        };
        let text = serde_json::Value::Object(map).to_string();
        self.0 = text[1..text.len() - 1].to_string();
    }
}

impl<S, W> Layer<S> for JsonLines<W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + 'static,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut fields = String::from("\"name\":");
        string(&mut fields, attrs.metadata().name());
        attrs.record(&mut Inline(&mut fields));
        span.extensions_mut().insert(SpanFields(fields));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        if let Some(fields) = span.extensions_mut().get_mut::<SpanFields>() {
            fields.set(values);
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        // A dependency's `log` record names its own target and level.
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        let mut line = String::with_capacity(512);
        line.push_str("{\"timestamp\":\"");
        timestamp(&mut line, SystemTime::now());
        line.push_str("\",\"level\":\"");
        line.push_str(meta.level().as_str());
        line.push_str("\",\"target\":");
        string(&mut line, meta.target());
        event.record(&mut Inline(&mut line));
        if let Some(span) = ctx.event_span(event)
            && let Some(fields) = span.extensions().get::<SpanFields>()
        {
            line.push_str(",\"span\":{");
            line.push_str(&fields.0);
            line.push('}');
        }
        line.push_str("}\n");
        let _ = (self.writer.make_writer_for(meta)).write_all(line.as_bytes());
    }
}

/// Fields written as members after others: `,"key":value` each.
struct Inline<'a>(&'a mut String);

impl Visit for Inline<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if let Some(out) = key(self.0, field) {
            out.push('"');
            let _ = write!(Escaped(out), "{value:?}");
            out.push('"');
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if let Some(out) = key(self.0, field) {
            string(out, value);
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        if let Some(out) = key(self.0, field) {
            out.push('"');
            let _ = write!(Escaped(out), "{value}");
            out.push('"');
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if let Some(out) = key(self.0, field) {
            let _ = write!(out, "{value}");
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if let Some(out) = key(self.0, field) {
            let _ = write!(out, "{value}");
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if let Some(out) = key(self.0, field) {
            out.push_str(if value { "true" } else { "false" });
        }
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        match value.is_finite() {
            // JSON has no NaN or infinity: those go as text.
            true => {
                if let Some(out) = key(self.0, field) {
                    let _ = write!(out, "{value}");
                }
            }
            false => self.record_debug(field, &value),
        }
    }
}

/// Starts the member of `field`, unless it is meant for the trace alone or is a `log`
/// record's metadata.
fn key<'a>(out: &'a mut String, field: &Field) -> Option<&'a mut String> {
    if field.name().starts_with("otel.") || field.name().starts_with("log.") {
        return None;
    }
    out.push(',');
    string(out, field.name());
    out.push(':');
    Some(out)
}

/// `s` as a JSON string.
fn string(out: &mut String, s: &str) {
    out.push('"');
    escape(out, s);
    out.push('"');
}

/// `s` as the inside of a JSON string.
fn escape(out: &mut String, s: &str) {
    let mut plain = 0;
    for (i, b) in s.bytes().enumerate() {
        if b >= 0x20 && b != b'"' && b != b'\\' {
            continue;
        }
        out.push_str(&s[plain..i]);
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            _ => {
                let _ = write!(out, "\\u{b:04x}");
            }
        }
        plain = i + 1;
    }
    out.push_str(&s[plain..]);
}

/// Formatting into a JSON string's inside.
struct Escaped<'a>(&'a mut String);

impl fmt::Write for Escaped<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        escape(self.0, s);
        Ok(())
    }
}

/// `at` in RFC 3339, UTC, to the microsecond: `2026-12-01T23:47:58.825779Z`.
fn timestamp(out: &mut String, at: SystemTime) {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (year, month, day) = civil(secs / 86_400);
    let of_day = secs % 86_400;
    digits(out, year, 4);
    out.push('-');
    digits(out, month, 2);
    out.push('-');
    digits(out, day, 2);
    out.push('T');
    digits(out, of_day / 3600, 2);
    out.push(':');
    digits(out, of_day / 60 % 60, 2);
    out.push(':');
    digits(out, of_day % 60, 2);
    out.push('.');
    digits(out, u64::from(since.subsec_micros()), 6);
    out.push('Z');
}

/// The `width` last decimal digits of `n`, zero-padded.
fn digits(out: &mut String, n: u64, width: u32) {
    for p in (0..width).rev() {
        out.push(char::from(b'0' + (n / 10u64.pow(p) % 10) as u8));
    }
}

/// The year, month and day `days` after 1970-01-01 (the proleptic Gregorian calendar's
/// civil-from-days conversion, over 400-year eras).
fn civil(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;
    use tracing_subscriber::layer::SubscriberExt;

    #[derive(Clone, Default)]
    struct Out(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Out {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The lines `log` writes, each read back as JSON.
    fn lines(log: impl FnOnce()) -> Vec<serde_json::Value> {
        let out = Out::default();
        let sink = out.clone();
        let layer = JsonLines::new(move || sink.clone());
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), log);
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert!(text.ends_with('\n'), "{text}");
        let read = |l: &str| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
        text.lines().map(read).collect()
    }

    #[test]
    fn a_line_carries_the_event_and_its_innermost_span() {
        let got = lines(|| {
            let outer = tracing::info_span!("request", pipeline = "p");
            let _outer = outer.enter();
            let span = tracing::info_span!(
                "process",
                otel.name = "process q",
                event.id = "e1",
                n = 3u64
            );
            let _in = span.enter();
            tracing::info!(
                outcome = "delivered",
                receive_count = 2,
                ok = true,
                "acknowledged"
            );
        });
        let l = &got[0];
        assert_eq!(l["level"], "INFO");
        assert_eq!(l["target"], module_path!());
        assert_eq!(l["message"], "acknowledged");
        assert_eq!(l["outcome"], "delivered");
        assert_eq!(l["receive_count"], 2);
        assert_eq!(l["ok"], true);
        assert_eq!(
            l["span"],
            serde_json::json!({"name": "process", "event.id": "e1", "n": 3}),
            "the innermost span, without the trace's own fields"
        );
    }

    #[test]
    fn text_is_escaped_and_values_keep_their_json_types() {
        let got = lines(|| {
            let error = std::io::Error::other("disk \"full\"");
            tracing::warn!(
                text = "a \"quote\", a \\ and\na newline\t\u{1}",
                negative = -4,
                ratio = 0.5,
                nan = f64::NAN,
                debug = ?vec!["x"],
                error = &error as &dyn std::error::Error,
                "über {}", 1
            );
        });
        let l = &got[0];
        assert_eq!(l["text"], "a \"quote\", a \\ and\na newline\t\u{1}");
        assert_eq!(l["negative"], -4);
        assert_eq!(l["ratio"], 0.5);
        assert_eq!(l["nan"], "NaN");
        assert_eq!(l["debug"], "[\"x\"]");
        assert_eq!(l["error"], "disk \"full\"");
        assert_eq!(l["message"], "über 1");
        assert!(l.get("span").is_none(), "no span, no member");
    }

    #[test]
    fn a_field_recorded_later_replaces_its_value() {
        let got = lines(|| {
            let span = tracing::info_span!("receive", count = tracing::field::Empty, q = "a");
            span.record("count", 3);
            span.record("count", 4);
            span.in_scope(|| tracing::info!("received"));
        });
        assert_eq!(
            got[0]["span"],
            serde_json::json!({"name": "receive", "q": "a", "count": 4})
        );
    }

    #[test]
    fn a_log_record_of_a_dependency_reads_as_its_own() {
        let got = lines(|| {
            let _ = tracing_log::LogTracer::init();
            log::warn!(target: "hyper::client", "connection reset");
        });
        let l = got
            .iter()
            .find(|l| l["message"] == "connection reset")
            .unwrap();
        assert_eq!(l["target"], "hyper::client");
        assert_eq!(l["level"], "WARN");
        assert!(
            l.as_object()
                .unwrap()
                .keys()
                .all(|k| !k.starts_with("log.")),
            "{l}"
        );
    }

    #[test]
    fn timestamps_are_rfc3339_utc_to_the_microsecond() {
        let cases = [
            (0, 0, "1970-01-01T00:00:00.000000Z"),
            (951_782_400, 1, "2000-02-29T00:00:00.000001Z"),
            (1_764_633_478, 825_779, "2025-12-01T23:57:58.825779Z"),
            (4_107_542_399, 999_999, "2100-02-28T23:59:59.999999Z"),
        ];
        for (secs, micros, want) in cases {
            let at = UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_micros(micros);
            let mut got = String::new();
            timestamp(&mut got, at);
            assert_eq!(got, want);
            let parsed = chrono::DateTime::parse_from_rfc3339(&got).unwrap();
            assert_eq!(parsed.timestamp() as u64, secs);
        }
    }

    #[test]
    fn every_day_of_eight_centuries_matches_the_calendar() {
        let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap();
        for days in 0..146_097 * 2 {
            let want = epoch + chrono::Days::new(days);
            let (y, m, d) = civil(days);
            let got = chrono::NaiveDate::from_ymd_opt(y as i32, m as u32, d as u32);
            assert_eq!(got, Some(want), "day {days}");
        }
    }
}
