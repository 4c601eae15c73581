//! Only the API server's front proxy (its aggregator) may call the external metrics
//! API, as with every aggregated API: its client certificate must chain to the CA in
//! `kube-system/extension-apiserver-authentication` and, when that ConfigMap lists
//! allowed names, bear one of them as its common name; and the request must name, in
//! one of the ConfigMap's username headers, the user the API server authenticated.
//!
//! The API server has already authorized that user for `external.metrics.k8s.io`
//! before proxying, and whoever holds the front proxy's certificate could name any
//! user, so no SubjectAccessReview repeats the decision.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{Api, Client};
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::subject::common_names;
use crate::tls::{ServerCert, tls_config};

pub const NAMESPACE: &str = "kube-system";
pub const CONFIG_MAP: &str = "extension-apiserver-authentication";
const CLIENT_CA: &str = "requestheader-client-ca-file";
const ALLOWED_NAMES: &str = "requestheader-allowed-names";
const USERNAME_HEADERS: &str = "requestheader-username-headers";

/// How often the ConfigMap is read again, for a rotated CA or changed names: a GET a
/// minute costs less than a watch kept open, and rotations overlap by far more.
pub const RELOAD_EVERY: Duration = Duration::from_secs(60);

/// The API server's front proxy, as `extension-apiserver-authentication` describes it.
#[derive(Clone, Debug, PartialEq)]
pub struct FrontProxy {
    /// PEM: the CA that signs the front proxy's client certificate.
    pub client_ca: String,
    /// Common names the certificate may have; empty: any the CA signed.
    pub allowed_names: Vec<String>,
    /// Headers the front proxy names the user in.
    pub username_headers: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading {NAMESPACE}/{CONFIG_MAP}: {0}")]
    Read(#[from] kube::Error),
    #[error(
        "{NAMESPACE}/{CONFIG_MAP} has no {0}: the API server runs without a front proxy (--requestheader-client-ca-file)"
    )]
    Missing(&'static str),
    #[error("{NAMESPACE}/{CONFIG_MAP}: {key} is not a JSON list of strings: {source}")]
    NotAList {
        key: &'static str,
        source: serde_json::Error,
    },
    #[error("{NAMESPACE}/{CONFIG_MAP}: {CLIENT_CA}: {0}")]
    Ca(String),
    #[error("{NAMESPACE}/{CONFIG_MAP}: {CLIENT_CA}: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
}

impl FrontProxy {
    pub fn of(config_map: &ConfigMap) -> Result<Self, Error> {
        let data = config_map.data.clone().unwrap_or_default();
        let client_ca = data
            .get(CLIENT_CA)
            .filter(|pem| !pem.trim().is_empty())
            .ok_or(Error::Missing(CLIENT_CA))?
            .clone();
        let list = |key: &'static str| match data.get(key) {
            None => Ok(vec![]),
            Some(text) => serde_json::from_str::<Vec<String>>(text)
                .map_err(|source| Error::NotAList { key, source }),
        };
        let username_headers = list(USERNAME_HEADERS)?;
        if username_headers.is_empty() {
            return Err(Error::Missing(USERNAME_HEADERS));
        }
        Ok(Self {
            client_ca,
            allowed_names: list(ALLOWED_NAMES)?,
            username_headers,
        })
    }

    pub async fn read(client: &Client) -> Result<Self, Error> {
        let api = Api::<ConfigMap>::namespaced(client.clone(), NAMESPACE);
        Self::of(&api.get(CONFIG_MAP).await?)
    }

    /// Client certificates accepted: the front proxy's only, and one is required.
    pub fn verifier(&self) -> Result<Arc<dyn ClientCertVerifier>, Error> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pemfile::certs(&mut self.client_ca.as_bytes()) {
            roots.add(cert.map_err(|e| Error::Ca(e.to_string()))?)?;
        }
        let chain = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots)).build()?;
        Ok(Arc::new(AllowedNames {
            chain,
            names: self.allowed_names.clone(),
        }))
    }
}

/// What the external metrics API serves with, from one reading of the ConfigMap.
pub struct Serving {
    pub tls: Arc<rustls::ServerConfig>,
    pub username_headers: Vec<String>,
}

/// The latest [`Serving`]; none until the ConfigMap was first read, and until then
/// every connection is refused.
pub type Current = watch::Receiver<Option<Arc<Serving>>>;

impl Serving {
    pub fn new(proxy: &FrontProxy, cert: &ServerCert) -> Result<Self, Error> {
        Ok(Self {
            tls: Arc::new(tls_config(cert, Some(proxy.verifier()?))?),
            username_headers: proxy.username_headers.clone(),
        })
    }
}

/// Reads the ConfigMap now and every `every` until `stop`, publishing a new
/// [`Serving`] when it changed. A failed read keeps the last good one.
pub async fn keep_current(
    client: Client,
    cert: ServerCert,
    every: Duration,
    current: watch::Sender<Option<Arc<Serving>>>,
    stop: CancellationToken,
) {
    let mut loaded: Option<FrontProxy> = None;
    loop {
        match FrontProxy::read(&client).await {
            Ok(proxy) if loaded.as_ref() == Some(&proxy) => {}
            Ok(proxy) => match Serving::new(&proxy, &cert) {
                Ok(serving) => {
                    let names = &proxy.allowed_names;
                    tracing::info!(allowed_names = ?names, "external metrics API: front proxy CA loaded");
                    current.send_replace(Some(Arc::new(serving)));
                    loaded = Some(proxy);
                }
                Err(e) => tracing::error!(error = %e, "external metrics API: front proxy unusable"),
            },
            Err(e) => tracing::warn!(error = %e, "external metrics API: front proxy not read"),
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// Refuses (401) a request that names no user in a username header: the front proxy
/// names the user it authenticated in every request it passes on.
pub fn require_user(router: Router, current: Current) -> Router {
    router.layer(axum::middleware::from_fn_with_state(current, named_user))
}

async fn named_user(State(current): State<Current>, request: Request, next: Next) -> Response {
    let headers = current
        .borrow()
        .as_ref()
        .map(|s| s.username_headers.clone())
        .unwrap_or_default();
    let user = headers.iter().find_map(|h| {
        let value = request.headers().get(h)?.to_str().ok()?;
        (!value.is_empty()).then(|| value.to_string())
    });
    let Some(user) = user else {
        let message = "no user named by the front proxy".to_string();
        return super::status(StatusCode::UNAUTHORIZED, message).into_response();
    };
    tracing::debug!(%user, path = %request.uri().path(), "external metrics request");
    next.run(request).await
}

/// The CA's verdict on a certificate, then its common name among the allowed ones.
#[derive(Debug)]
struct AllowedNames {
    chain: Arc<dyn ClientCertVerifier>,
    names: Vec<String>,
}

impl ClientCertVerifier for AllowedNames {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.chain.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .chain
            .verify_client_cert(end_entity, intermediates, now)?;
        let allowed = |name: &String| self.names.contains(name);
        if self.names.is_empty() || common_names(end_entity).iter().any(allowed) {
            return Ok(verified);
        }
        Err(rustls::Error::InvalidCertificate(
            rustls::CertificateError::ApplicationVerificationFailure,
        ))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.chain.supported_verify_schemes()
    }
}
