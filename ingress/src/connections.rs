//! Accepting connections and serving HTTP/1.1 on each with the head limits and
//! header-read timeout (the defence against slowloris), optionally behind TLS, and
//! draining them on shutdown. HTTP/1.1 only: it is what webhook senders speak, and
//! every limit here applies to it.

use std::{
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    limits::{Limit, Limits},
    metrics::Metrics,
    tls::Tls,
};

/// What every connection is served with.
#[derive(Clone)]
pub struct Server {
    pub router: Router,
    pub limits: Limits,
    pub tls: Option<Arc<Tls>>,
    pub metrics: Metrics,
}

impl Server {
    /// Serves until `shutdown` completes, then stops accepting, lets each connection
    /// finish its request in progress (idle ones close at once) and returns once all
    /// are closed.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> io::Result<()> {
        let http = self.http1();
        let (stop, connections) = (CancellationToken::new(), TaskTracker::new());
        tokio::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = &mut shutdown => break,
            };
            match accepted {
                Ok((tcp, peer)) => {
                    let (server, http, stop) = (self.clone(), http.clone(), stop.clone());
                    connections.spawn(server.connection(tcp, peer, http, stop));
                }
                Err(e) => accept_failed(e).await,
            }
        }
        // Closed now, so new connections are refused at once rather than left waiting
        // in the backlog until the process exits.
        drop(listener);
        stop.cancel();
        connections.close();
        connections.wait().await;
        Ok(())
    }

    fn http1(&self) -> http1::Builder {
        let mut http = http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(self.limits.header_read_timeout)
            .max_header_size(self.limits.max_header_bytes)
            .max_headers(self.limits.max_headers)
            // Past the head limit the head is refused anyway: buffer no more than that
            // (hyper's minimum is 8 KiB).
            .max_buf_size(self.limits.max_header_bytes.max(8192) + 8192);
        http
    }

    async fn connection(
        self,
        tcp: TcpStream,
        peer: SocketAddr,
        http: http1::Builder,
        stop: CancellationToken,
    ) {
        let _ = tcp.set_nodelay(true);
        let Some(tls) = self.tls.clone() else {
            return self.http(tcp, peer, http, stop).await;
        };
        match tls.accept(tcp, self.limits.header_read_timeout).await {
            Ok(stream) => self.http(stream, peer, http, stop).await,
            Err(why) => self.refused(Limit::TlsHandshake, peer, &why),
        }
    }

    async fn http<I>(self, io: I, peer: SocketAddr, http: http1::Builder, stop: CancellationToken)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (io, unanswered) = Watched::new(io);
        let service = TowerToHyperService::new(self.router.clone());
        // Upgrades for WebSocket subscribers.
        let conn = http
            .serve_connection(TokioIo::new(io), service)
            .with_upgrades();
        tokio::pin!(conn);
        let served = tokio::select! {
            served = conn.as_mut() => served,
            () = stop.cancelled() => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        };
        let Err(e) = served else { return };
        if e.is_parse_too_large() {
            // hyper has answered 431 and closes the connection.
            self.refused(Limit::HeadersTooLarge, peer, &e.to_string());
        } else if e.is_timeout() && unanswered.load(Ordering::Relaxed) {
            self.refused(
                Limit::HeaderTimeout,
                peer,
                "no complete request head in time",
            );
        } else {
            // Idle keep-alive connections timing out, clients going away.
            tracing::debug!(%peer, error = %e, "connection closed");
        }
    }

    fn refused(&self, limit: Limit, peer: SocketAddr, why: &str) {
        self.metrics.rejected(limit);
        tracing::info!(%peer, limit = limit.as_str(), reason = why, "connection rejected");
    }
}

/// Errors such as running out of file descriptors persist for a moment: pause
/// rather than spin. A client that gave up before being accepted is no error.
async fn accept_failed(e: io::Error) {
    use io::ErrorKind::*;
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | ConnectionRefused
    ) {
        return;
    }
    tracing::warn!(error = %e, "cannot accept connections");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// A connection that records whether request bytes are waiting for an answer, so
/// a header-read timeout can be told apart from a keep-alive connection gone idle.
/// A new connection counts as waiting: one that sends nothing holds a socket too.
struct Watched<I> {
    io: I,
    unanswered: Arc<AtomicBool>,
}

impl<I> Watched<I> {
    fn new(io: I) -> (Self, Arc<AtomicBool>) {
        let unanswered = Arc::new(AtomicBool::new(true));
        let watched = Self {
            io,
            unanswered: unanswered.clone(),
        };
        (watched, unanswered)
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let read = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.unanswered.store(true, Ordering::Relaxed);
        }
        read
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.io).poll_write(cx, buf);
        self.answered(&written);
        written
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.answered(&written);
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl<I> Watched<I> {
    fn answered(&self, written: &Poll<io::Result<usize>>) {
        if matches!(written, Poll::Ready(Ok(n)) if *n > 0) {
            self.unanswered.store(false, Ordering::Relaxed);
        }
    }
}
