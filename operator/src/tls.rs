//! The operator's HTTPS: its serving certificate (PEM files from a mounted Secret, or
//! self-signed at start) and a server taking each connection with the TLS
//! configuration current when it arrives. The external metrics API asks every client
//! for the front proxy's certificate; `/metrics` under token auth asks for none, so
//! bearer tokens never cross the network in the clear.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::danger::ClientCertVerifier;

/// The certificate and key the operator serves.
pub struct ServerCert {
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl Clone for ServerCert {
    fn clone(&self) -> Self {
        Self {
            certs: self.certs.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl ServerCert {
    /// From PEM files (a mounted Secret), or a self-signed certificate made at start
    /// (the APIService then sets `insecureSkipTLSVerify`).
    pub fn load(
        cert: Option<&std::path::Path>,
        key: Option<&std::path::Path>,
    ) -> anyhow::Result<Self> {
        let (Some(c), Some(k)) = (cert, key) else {
            return Self::self_signed();
        };
        let certs = rustls_pemfile::certs(&mut std::io::BufReader::new(std::fs::File::open(c)?))
            .collect::<Result<Vec<_>, _>>()?;
        let key =
            rustls_pemfile::private_key(&mut std::io::BufReader::new(std::fs::File::open(k)?))?
                .ok_or_else(|| anyhow::anyhow!("{}: no private key", k.display()))?;
        Ok(Self { certs, key })
    }

    fn self_signed() -> anyhow::Result<Self> {
        let made = rcgen::generate_simple_self_signed(vec![
            "eventpipe-operator".into(),
            "localhost".into(),
        ])?;
        let key = PrivateKeyDer::try_from(made.signing_key.serialize_der())
            .map_err(|e| anyhow::anyhow!(e))?;
        Ok(Self {
            certs: vec![made.cert.der().clone()],
            key,
        })
    }
}

/// TLS with `cert`, requiring a client certificate that `clients` accepts; `None`
/// asks for none.
pub fn tls_config(
    cert: &ServerCert,
    clients: Option<Arc<dyn ClientCertVerifier>>,
) -> Result<rustls::ServerConfig, rustls::Error> {
    let cert = cert.clone();
    let builder = rustls::ServerConfig::builder();
    let builder = match clients {
        Some(verifier) => builder.with_client_cert_verifier(verifier),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(cert.certs, cert.key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Serves `router` over TLS on `listener` until `shutdown`, each connection with the
/// TLS configuration `current` gives when it arrives; none yet: the connection is
/// closed.
pub async fn serve_tls(
    listener: tokio::net::TcpListener,
    current: impl Fn() -> Option<Arc<rustls::ServerConfig>>,
    router: Router,
    shutdown: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => accepted?,
            _ = shutdown.cancelled() => return Ok(()),
        };
        let Some(tls) = current() else {
            tracing::debug!(%peer, "refused: no TLS configuration yet");
            continue;
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        let router = router.clone();
        tokio::spawn(async move {
            let accepted =
                tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await;
            let stream = match accepted {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "TLS refused"),
                Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
            };
            let service = hyper_util::service::TowerToHyperService::new(router);
            let _ =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
        });
    }
}

/// Serves `router` on `listener` until `shutdown`: over TLS with `tls`, in the clear
/// without.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    router: Router,
    shutdown: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    match tls {
        Some(tls) => serve_tls(listener, move || Some(tls.clone()), router, shutdown).await,
        None => {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move { shutdown.cancelled().await })
                .await
        }
    }
}
