//! The external metrics API over loopback mTLS: it answers the API server's front
//! proxy (a client certificate from the CA in `extension-apiserver-authentication`,
//! with an allowed common name, naming a user) and refuses every other caller; a CA
//! changed in the ConfigMap is served after the next reading.
// Set-up steps unwrap: a failure fails the test (clippy's allow-unwrap-in-tests
// covers #[test] functions only, not the helpers of an integration test).
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use eventpipe_operator::external_metrics::front_proxy::{self, Current, Error};
use eventpipe_operator::external_metrics::{self, Cache, FrontProxy, Serving};
use eventpipe_operator::tls::ServerCert;
use k8s_openapi::api::core::v1::ConfigMap;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

const DISCOVERY: &str = "/apis/external.metrics.k8s.io/v1beta1";
const CONFIG_MAP: &str =
    "/api/v1/namespaces/kube-system/configmaps/extension-apiserver-authentication";
const FRONT_PROXY: &str = "front-proxy-client";

/// A certificate authority, as the API server's front-proxy CA.
struct Ca(CertifiedIssuer<'static, KeyPair>);

impl Ca {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(vec![]).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        Self(CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap())
    }

    /// A client certificate named `cn`, signed by this CA.
    fn client(&self, cn: &str) -> reqwest::Identity {
        let mut params = CertificateParams::new(vec![]).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.0).unwrap();
        let pem = format!("{}{}", cert.pem(), key.serialize_pem());
        reqwest::Identity::from_pem(pem.as_bytes()).unwrap()
    }

    /// `extension-apiserver-authentication` as a kubeadm API server writes it.
    fn config_map(&self, allowed: &[&str]) -> Value {
        json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "extension-apiserver-authentication", "namespace": "kube-system"},
            "data": {
                "requestheader-client-ca-file": self.0.pem(),
                "requestheader-allowed-names": serde_json::to_string(allowed).unwrap(),
                "requestheader-username-headers": "[\"X-Remote-User\"]",
                "requestheader-group-headers": "[\"X-Remote-Group\"]",
                "requestheader-extra-headers-prefix": "[\"X-Remote-Extra-\"]",
            }
        })
    }

    fn front_proxy(&self, allowed: &[&str]) -> FrontProxy {
        let config_map: ConfigMap = serde_json::from_value(self.config_map(allowed)).unwrap();
        FrontProxy::of(&config_map).unwrap()
    }
}

fn serving(proxy: &FrontProxy) -> Option<Arc<Serving>> {
    let cert = ServerCert::load(None, None).unwrap();
    Some(Arc::new(Serving::new(proxy, &cert).unwrap()))
}

/// The external metrics API on loopback, as the operator serves it.
async fn serve(current: Current, stop: &CancellationToken) -> SocketAddr {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router =
        front_proxy::require_user(external_metrics::router(Cache::default()), current.clone());
    let tls = move || current.borrow().as_ref().map(|s| s.tls.clone());
    tokio::spawn(eventpipe_operator::tls::serve_tls(
        listener,
        tls,
        router,
        stop.clone(),
    ));
    addr
}

/// Discovery, asked as `identity` (none: no client certificate) naming `user`.
async fn discover(
    addr: SocketAddr,
    identity: Option<reqwest::Identity>,
    user: Option<&str>,
) -> Result<(u16, Value), reqwest::Error> {
    let mut client = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(5));
    if let Some(identity) = identity {
        client = client.identity(identity);
    }
    let mut request = client
        .build()
        .unwrap()
        .get(format!("https://{addr}{DISCOVERY}"));
    if let Some(user) = user {
        request = request.header("X-Remote-User", user);
    }
    let response = request.send().await?;
    let code = response.status().as_u16();
    let body = response.text().await?;
    Ok((code, serde_json::from_str(&body).unwrap_or(Value::Null)))
}

const AGGREGATOR: Option<&str> = Some("system:kube-aggregator");

#[tokio::test]
async fn the_front_proxy_is_answered_and_every_other_caller_refused() {
    let ca = Ca::new("front-proxy-ca");
    let (_publish, current) = watch::channel(serving(&ca.front_proxy(&[FRONT_PROXY])));
    let stop = CancellationToken::new();
    let addr = serve(current, &stop).await;

    let (code, body) = discover(addr, Some(ca.client(FRONT_PROXY)), AGGREGATOR)
        .await
        .unwrap();
    assert_eq!(code, 200, "{body}");
    let names: Vec<&str> = body["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["eventpipe_queue_depth", "eventpipe_stream_lag_seconds"]
    );

    let (code, body) = discover(addr, Some(ca.client(FRONT_PROXY)), None)
        .await
        .unwrap();
    assert_eq!(
        (code, &body["kind"]),
        (401, &json!("Status")),
        "no user named"
    );
    let refused = [
        ("no client certificate", None),
        (
            "another CA's",
            Some(Ca::new("other-ca").client(FRONT_PROXY)),
        ),
        ("a name not allowed", Some(ca.client("someone-else"))),
    ];
    for (what, identity) in refused {
        let answer = discover(addr, identity, AGGREGATOR).await;
        assert!(answer.is_err(), "{what}: answered {answer:?}");
    }
    stop.cancel();
}

#[tokio::test]
async fn with_no_names_listed_any_certificate_of_the_ca_is_the_front_proxy() {
    let ca = Ca::new("front-proxy-ca");
    let (_publish, current) = watch::channel(serving(&ca.front_proxy(&[])));
    let stop = CancellationToken::new();
    let addr = serve(current, &stop).await;
    let (code, _) = discover(addr, Some(ca.client("anything")), AGGREGATOR)
        .await
        .unwrap();
    assert_eq!(code, 200);
    let other = Ca::new("other-ca").client("anything");
    assert!(discover(addr, Some(other), AGGREGATOR).await.is_err());
    stop.cancel();
}

/// Tries discovery as `identity` every 50 ms until `answered` says it is as wanted.
async fn until(addr: SocketAddr, identity: impl Fn() -> reqwest::Identity, answered: bool) {
    for _ in 0..100 {
        let answer = discover(addr, Some(identity()), AGGREGATOR).await;
        if answer.as_ref().is_ok_and(|(code, _)| *code == 200) == answered {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "still {} after 5 s",
        if answered { "refused" } else { "answered" }
    );
}

#[tokio::test]
async fn nothing_is_served_before_the_config_map_is_read_and_a_new_ca_after_the_next_reading() {
    let api = common::FakeApi::new();
    let (publish, current) = watch::channel(None);
    let stop = CancellationToken::new();
    let cert = ServerCert::load(None, None).unwrap();
    let every = Duration::from_millis(50);
    tokio::spawn(front_proxy::keep_current(
        api.client(),
        cert,
        every,
        publish,
        stop.clone(),
    ));
    let addr = serve(current, &stop).await;
    let (old, new) = (Ca::new("front-proxy-ca"), Ca::new("rotated-front-proxy-ca"));

    // The ConfigMap cannot be read yet (no such object).
    assert!(
        discover(addr, Some(old.client(FRONT_PROXY)), AGGREGATOR)
            .await
            .is_err()
    );
    api.put(CONFIG_MAP, old.config_map(&[FRONT_PROXY]));
    until(addr, || old.client(FRONT_PROXY), true).await;
    api.put(CONFIG_MAP, new.config_map(&[FRONT_PROXY]));
    until(addr, || new.client(FRONT_PROXY), true).await;
    until(addr, || old.client(FRONT_PROXY), false).await;
    // Unreadable again: the last good reading stays.
    api.objects.lock().unwrap().remove(CONFIG_MAP);
    tokio::time::sleep(every * 4).await;
    until(addr, || new.client(FRONT_PROXY), true).await;
    stop.cancel();
}

#[test]
fn a_config_map_without_a_front_proxy_says_so() {
    let ca = Ca::new("front-proxy-ca");
    let of = |edit: &dyn Fn(&mut Value)| {
        let mut config_map = ca.config_map(&[FRONT_PROXY]);
        edit(&mut config_map["data"]);
        FrontProxy::of(&serde_json::from_value(config_map).unwrap())
    };
    let proxy = of(&|_| {}).unwrap();
    assert_eq!(proxy.allowed_names, [FRONT_PROXY]);
    assert_eq!(proxy.username_headers, ["X-Remote-User"]);
    let no_ca = of(&|d| {
        drop(
            d.as_object_mut()
                .unwrap()
                .remove("requestheader-client-ca-file"),
        )
    });
    assert!(
        matches!(&no_ca, Err(Error::Missing("requestheader-client-ca-file"))),
        "{no_ca:?}"
    );
    let no_user = of(&|d| d["requestheader-username-headers"] = json!("[]"));
    assert!(matches!(no_user, Err(Error::Missing(_))), "{no_user:?}");
    let names = of(&|d| d["requestheader-allowed-names"] = json!("front-proxy-client"));
    let message = names.unwrap_err().to_string();
    assert!(message.contains("requestheader-allowed-names"), "{message}");
    let garbage = of(&|d| d["requestheader-client-ca-file"] = json!("not a certificate"));
    assert!(
        garbage.unwrap().verifier().is_err(),
        "a CA with no certificate"
    );
}
