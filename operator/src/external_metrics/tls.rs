//! TLS for the external metrics API: PEM files from a mounted Secret, or a
//! self-signed certificate made at start.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;

/// TLS from PEM files (a mounted Secret), or a self-signed certificate made at start
/// (the APIService then sets `insecureSkipTLSVerify`).
pub fn tls_config(
    cert: Option<&std::path::Path>,
    key: Option<&std::path::Path>,
) -> anyhow::Result<rustls::ServerConfig> {
    let (certs, key) = match (cert, key) {
        (Some(c), Some(k)) => {
            let certs =
                rustls_pemfile::certs(&mut std::io::BufReader::new(std::fs::File::open(c)?))
                    .collect::<Result<Vec<_>, _>>()?;
            let key =
                rustls_pemfile::private_key(&mut std::io::BufReader::new(std::fs::File::open(k)?))?
                    .ok_or_else(|| anyhow::anyhow!("{}: no private key", k.display()))?;
            (certs, key)
        }
        _ => {
            let made = rcgen::generate_simple_self_signed(vec![
                "eventpipe-operator".into(),
                "localhost".into(),
            ])?;
            let key = rustls::pki_types::PrivateKeyDer::try_from(made.signing_key.serialize_der())
                .map_err(|e| anyhow::anyhow!(e))?;
            (vec![made.cert.der().clone()], key)
        }
    };
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Serves `router` over TLS on `addr` until `shutdown`.
pub async fn serve_tls(
    listener: tokio::net::TcpListener,
    tls: rustls::ServerConfig,
    router: Router,
    shutdown: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    loop {
        let (tcp, _) = tokio::select! {
            accepted = listener.accept() => accepted?,
            _ = shutdown.cancelled() => return Ok(()),
        };
        let (acceptor, router) = (acceptor.clone(), router.clone());
        tokio::spawn(async move {
            let Ok(stream) = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp))
                .await
                .map_err(|_| ())
                .and_then(|r| r.map_err(|_| ()))
            else {
                return;
            };
            let service = hyper_util::service::TowerToHyperService::new(router);
            let _ =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
        });
    }
}
