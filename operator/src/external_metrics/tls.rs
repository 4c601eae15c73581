//! TLS for the external metrics API: the serving certificate (PEM files from a mounted
//! Secret, or self-signed at start), and the server that asks every client for the
//! front proxy's certificate ([`super::front_proxy`]).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::danger::ClientCertVerifier;

use super::front_proxy::Current;

/// The certificate and key the external metrics API serves.
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

/// TLS with `cert`, requiring a client certificate that `clients` accepts.
pub fn tls_config(
    cert: &ServerCert,
    clients: Arc<dyn ClientCertVerifier>,
) -> Result<rustls::ServerConfig, rustls::Error> {
    let cert = cert.clone();
    let mut config = rustls::ServerConfig::builder()
        .with_client_cert_verifier(clients)
        .with_single_cert(cert.certs, cert.key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Serves `router` over TLS on `listener` until `shutdown`, each connection with the
/// TLS configuration current when it arrives; none yet: the connection is closed.
pub async fn serve_tls(
    listener: tokio::net::TcpListener,
    current: Current,
    router: Router,
    shutdown: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => accepted?,
            _ = shutdown.cancelled() => return Ok(()),
        };
        let Some(serving) = current.borrow().clone() else {
            tracing::debug!(%peer, "refused: the front proxy's CA is not loaded yet");
            continue;
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(serving.tls.clone());
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
