//! Where log lines go: one shared buffer, written out when it fills, periodically
//! ([`FLUSH_EVERY`] for the binaries), at once after a warning or an error, and at exit.
//!
//! A line is copied into the buffer on the thread that logs it. Handing each line to a
//! writer thread instead (tracing-appender) costs a cross-thread wake-up per line, and
//! one write per line costs a syscall: either was a large share of the ingress's CPU at
//! one `event accepted` line per request.

use std::io::{self, BufWriter, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;

/// How long a quiet line may wait in the buffer.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);
const CAPACITY: usize = 64 * 1024;

type Shared<W> = Arc<Mutex<BufWriter<W>>>;

/// Hands the log layer a lock on the shared buffer for each line.
pub struct LogWriter<W: Write> {
    out: Shared<W>,
}

/// Stops the flushing thread and writes out what is left, when dropped.
pub struct LogGuard<W: Write + Send + 'static> {
    out: Shared<W>,
    stop: Arc<AtomicBool>,
    flusher: Option<JoinHandle<()>>,
}

/// A buffered writer over `out`, flushed at least `every`, and the guard that keeps it so.
pub fn buffered<W: Write + Send + 'static>(out: W, every: Duration) -> (LogWriter<W>, LogGuard<W>) {
    let out = Arc::new(Mutex::new(BufWriter::with_capacity(CAPACITY, out)));
    let stop = Arc::new(AtomicBool::new(false));
    let flusher = std::thread::Builder::new()
        .name("log-flush".into())
        .spawn({
            let (out, stop) = (out.clone(), stop.clone());
            move || {
                while !stop.load(Ordering::Acquire) {
                    std::thread::park_timeout(every);
                    let mut out = lock(&out);
                    if !out.buffer().is_empty() {
                        let _ = out.flush();
                    }
                }
            }
        })
        .ok();
    let guard = LogGuard {
        out: out.clone(),
        stop,
        flusher,
    };
    (LogWriter { out }, guard)
}

/// A line being written; warnings and errors are flushed as soon as they are complete.
pub struct Line<'a, W: Write> {
    out: MutexGuard<'a, BufWriter<W>>,
    urgent: bool,
}

impl<W: Write> Write for Line<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

impl<W: Write> Drop for Line<'_, W> {
    fn drop(&mut self) {
        if self.urgent {
            let _ = self.out.flush();
        }
    }
}

impl<'a, W: Write + 'a> MakeWriter<'a> for LogWriter<W> {
    type Writer = Line<'a, W>;

    fn make_writer(&'a self) -> Self::Writer {
        Line {
            out: lock(&self.out),
            urgent: false,
        }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Self::Writer {
        Line {
            out: lock(&self.out),
            urgent: *meta.level() <= Level::WARN,
        }
    }
}

impl<W: Write + Send + 'static> Drop for LogGuard<W> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(flusher) = self.flusher.take() {
            flusher.thread().unpark();
            let _ = flusher.join();
        }
        let _ = lock(&self.out).flush();
    }
}

/// Logging goes on after a panic elsewhere poisoned the lock: the buffer holds bytes only.
fn lock<W: Write>(out: &Mutex<BufWriter<W>>) -> MutexGuard<'_, BufWriter<W>> {
    out.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    /// What reached the output, shared with the test.
    #[derive(Clone, Default)]
    struct Out(Arc<Mutex<Vec<u8>>>);

    impl Write for Out {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Out {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    fn logging(out: &Out, every: Duration) -> (impl tracing::Subscriber + use<>, LogGuard<Out>) {
        let (writer, guard) = buffered(out.clone(), every);
        let layer = tracing_subscriber::fmt::layer()
            .with_writer(writer)
            .without_time()
            .with_ansi(false);
        (tracing_subscriber::registry().with(layer), guard)
    }

    const NEVER: Duration = Duration::from_secs(3600);

    #[test]
    fn info_lines_wait_in_the_buffer_until_a_flush() {
        let out = Out::default();
        let (subscriber, guard) = logging(&out, NEVER);
        tracing::subscriber::with_default(subscriber, || tracing::info!("quiet line"));
        assert_eq!(out.text(), "", "written out at once");
        drop(guard);
        assert!(out.text().contains("quiet line"), "lost at exit");
    }

    #[test]
    fn a_quiet_line_is_written_out_within_the_flush_period() {
        let out = Out::default();
        let (subscriber, _guard) = logging(&out, FLUSH_EVERY);
        tracing::subscriber::with_default(subscriber, || tracing::info!("quiet line"));
        let deadline = std::time::Instant::now() + FLUSH_EVERY * 50;
        while !out.text().contains("quiet line") {
            assert!(std::time::Instant::now() < deadline, "never flushed");
            std::thread::sleep(FLUSH_EVERY / 4);
        }
    }

    #[test]
    fn warnings_and_errors_are_written_out_at_once() {
        let out = Out::default();
        let (subscriber, _guard) = logging(&out, NEVER);
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("before");
            tracing::warn!("careful");
        });
        let text = out.text();
        assert!(
            text.contains("before") && text.contains("careful"),
            "{text}"
        );
    }

    #[test]
    fn dropping_the_guard_writes_out_every_line_in_order() {
        let out = Out::default();
        let (subscriber, guard) = logging(&out, NEVER);
        tracing::subscriber::with_default(subscriber, || {
            for i in 0..5000 {
                tracing::info!(i, "line");
            }
        });
        drop(guard);
        let text = out.text();
        let numbers: Vec<usize> = text
            .lines()
            .map(|l| l.rsplit("i=").next().unwrap().parse().unwrap())
            .collect();
        assert_eq!(numbers, (0..5000).collect::<Vec<_>>());
    }
}
