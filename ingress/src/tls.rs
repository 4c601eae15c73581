//! TLS from a certificate and key in PEM files (a mounted `kubernetes.io/tls`
//! Secret), re-read periodically: when a rotated Secret changes the files, new
//! connections get the new certificate; connections already open keep theirs.

use std::{
    fmt,
    path::{Path, PathBuf},
    sync::{Arc, RwLock, Weak},
    time::Duration,
};

use rustls::{
    ServerConfig,
    crypto::{CryptoProvider, aws_lc_rs},
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, server::TlsStream};

/// Where the certificate chain and its private key are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct TlsError {
    path: String,
    message: String,
}

impl TlsError {
    fn new(path: &Path, message: impl fmt::Display) -> Self {
        Self {
            path: path.display().to_string(),
            message: message.to_string(),
        }
    }
}

/// Accepts TLS connections with the certificate last loaded.
pub struct Tls {
    acceptor: TlsAcceptor,
    certificate: Arc<Certificate>,
}

impl Tls {
    /// Loads the files; they must hold a certificate chain and its matching key.
    pub fn load(files: TlsFiles) -> Result<Self, TlsError> {
        let provider = Arc::new(aws_lc_rs::default_provider());
        let loaded = Loaded::read(&files, &provider)?;
        let certificate = Arc::new(Certificate {
            files,
            provider: provider.clone(),
            current: RwLock::new(loaded),
        });
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::new(&certificate.files.cert, e))?
            .with_no_client_auth()
            .with_cert_resolver(certificate.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            certificate,
        })
    }

    /// The handshake, within `timeout`; why it failed otherwise.
    pub async fn accept(
        &self,
        tcp: TcpStream,
        timeout: Duration,
    ) -> Result<TlsStream<TcpStream>, String> {
        match tokio::time::timeout(timeout, self.acceptor.accept(tcp)).await {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(e)) => Err(format!("TLS handshake failed: {e}")),
            Err(_) => Err(format!("no TLS handshake within {timeout:?}")),
        }
    }

    /// Re-reads the files every `every` until the returned task is aborted or
    /// this is dropped. A changed pair that does not load is reported and the
    /// previous certificate kept.
    pub fn watch(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let certificate = Arc::downgrade(&self.certificate);
        tokio::spawn(watch(certificate, every))
    }
}

async fn watch(certificate: Weak<Certificate>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(certificate) = certificate.upgrade() else {
            return;
        };
        // File reads block; keep them off the request threads.
        let _ = tokio::task::spawn_blocking(move || certificate.reload()).await;
    }
}

/// The certificate served, and where it comes from.
struct Certificate {
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    current: RwLock<Loaded>,
}

struct Loaded {
    /// The files' bytes, to notice a change.
    pem: (Vec<u8>, Vec<u8>),
    key: Arc<CertifiedKey>,
}

impl Loaded {
    fn read(files: &TlsFiles, provider: &CryptoProvider) -> Result<Self, TlsError> {
        let read = |p: &Path| std::fs::read(p).map_err(|e| TlsError::new(p, e));
        let pem = (read(&files.cert)?, read(&files.key)?);
        let key = certified_key(files, &pem, provider)?;
        Ok(Self { pem, key })
    }
}

fn certified_key(
    files: &TlsFiles,
    (cert, key): &(Vec<u8>, Vec<u8>),
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::new(&files.cert, e))?;
    if chain.is_empty() {
        return Err(TlsError::new(&files.cert, "no PEM certificate"));
    }
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| TlsError::new(&files.key, e))?;
    CertifiedKey::from_der(chain, key, provider)
        .map(Arc::new)
        .map_err(|e| TlsError::new(&files.key, e))
}

impl Certificate {
    fn reload(&self) {
        let read = |p: &Path| std::fs::read(p);
        let pem = match (read(&self.files.cert), read(&self.files.key)) {
            (Ok(cert), Ok(key)) => (cert, key),
            // Mid-rotation or briefly missing: keep serving the previous one.
            (Err(e), _) | (_, Err(e)) => return tracing::debug!(error = %e, "TLS files unreadable"),
        };
        if self.current.read().expect("certificate lock").pem == pem {
            return;
        }
        match certified_key(&self.files, &pem, &self.provider) {
            Ok(key) => {
                *self.current.write().expect("certificate lock") = Loaded { pem, key };
                tracing::info!(cert = %self.files.cert.display(), "TLS certificate reloaded");
            }
            Err(e) => {
                tracing::warn!(error = %e, "TLS certificate not reloaded; serving the previous one")
            }
        }
    }
}

impl ResolvesServerCert for Certificate {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().expect("certificate lock").key.clone())
    }
}

impl fmt::Debug for Certificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certificate")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}
