//! The HTTP client of the worker's hot paths (deliveries to processors, SQS receives
//! and deletes): HTTP/1.1 on pooled connections, TLS checked by the platform's
//! verifier, one deadline over the whole exchange. Per request it does what hyper
//! does and no more; a general-purpose client's layers (redirects, the URL parsed
//! again for each) cost more than a keep-alive loopback exchange itself.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls_platform_verifier::ConfigVerifierExt;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct HttpClient(Client<HttpsConnector<HttpConnector>, Full<Bytes>>);

/// An exchange that brought no answer.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Broken(String),
}

/// A response, read whole.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl HttpClient {
    /// Keeps up to `idle_per_host` idle connections to each host.
    pub fn new(idle_per_host: usize) -> anyhow::Result<Self> {
        let tls = rustls::ClientConfig::with_platform_verifier()?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let https = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(idle_per_host)
            .build(https);
        Ok(Self(client))
    }

    /// POSTs `body` with `headers` and reads the answer, all within `timeout`.
    pub async fn post(
        &self,
        uri: &Uri,
        headers: HeaderMap,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<Answer, HttpError> {
        let mut request = Request::post(uri.clone())
            .body(Full::new(Bytes::from(body)))
            .expect("a POST to a parsed URI is a valid request");
        *request.headers_mut() = headers;
        let exchange = async {
            let response = self.0.request(request).await.map_err(|e| {
                let line = with_causes(&e);
                match e.is_connect() {
                    true => HttpError::Connect(line),
                    false => HttpError::Broken(line),
                }
            })?;
            let (parts, body) = response.into_parts();
            let body = body.collect().await;
            let body = body.map_err(|e| HttpError::Broken(with_causes(&e)))?;
            Ok(Answer {
                status: parts.status,
                headers: parts.headers,
                body: body.to_bytes(),
            })
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or(Err(HttpError::Timeout(timeout)))
    }
}

/// An error and what caused it, as one line (hyper's own says little).
pub fn with_causes(e: &dyn std::error::Error) -> String {
    let mut line = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        line = format!("{line}: {c}");
        cause = c.source();
    }
    line
}

/// A URL as a request target, or why it cannot be one.
pub fn uri(url: &str) -> anyhow::Result<Uri> {
    let uri: Uri = url.parse()?;
    match uri.scheme_str() {
        Some("http" | "https") if uri.host().is_some() => Ok(uri),
        _ => anyhow::bail!("not http or https"),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// An HTTPS server on loopback with a certificate no one vouches for.
    async fn self_signed() -> std::net::SocketAddr {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let made = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let key = rustls::pki_types::PrivateKeyDer::try_from(made.signing_key.serialize_der());
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![made.cert.der().clone()], key.unwrap())
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let _ = acceptor.accept(tcp).await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn https_checks_the_certificate() {
        let addr = self_signed().await;
        let client = HttpClient::new(1).unwrap();
        let url = uri(&format!("https://localhost:{}/", addr.port())).unwrap();
        let second = Duration::from_secs(1);
        let e = (client.post(&url, HeaderMap::new(), vec![], second).await).err();
        let Some(HttpError::Connect(why)) = e else {
            panic!("{e:?}")
        };
        assert!(why.contains("certificate"), "{why}");
    }

    #[test]
    fn only_http_and_https_urls_are_targets() {
        assert!(uri("https://sqs.eu-west-1.amazonaws.com").is_ok());
        for bad in ["ftp://x/", "/relative", "http://", "not a url"] {
            assert!(uri(bad).is_err(), "{bad}");
        }
    }
}
