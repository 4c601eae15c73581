//! HTTPS with a certificate from files laid out as the kubelet mounts a
//! `kubernetes.io/tls` Secret, and its rotation without a restart.
// Set-up helpers unwrap too: a failure fails the test.
#![allow(clippy::unwrap_used)]

mod common;

use std::{
    net::SocketAddr,
    path::Path,
    time::{Duration, Instant},
};

use common::*;
use eventpipe_testkit::Moto;

const BODY: &[u8] = br#"{"issue":{"number":1}}"#;

struct Cert {
    pem: String,
    key: String,
    der: Vec<u8>,
}

fn cert() -> Cert {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    Cert {
        pem: made.cert.pem(),
        key: made.signing_key.serialize_pem(),
        der: made.cert.der().to_vec(),
    }
}

/// Writes a Secret version as the kubelet does: files in a new directory, then the
/// `..data` link swapped to it at once; `tls.crt` and `tls.key` link through `..data`.
fn mount(dir: &Path, version: &str, cert: &str, key: &str) {
    let files = dir.join(version);
    std::fs::create_dir(&files).unwrap();
    std::fs::write(files.join("tls.crt"), cert).unwrap();
    std::fs::write(files.join("tls.key"), key).unwrap();
    std::os::unix::fs::symlink(version, dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    for name in ["tls.crt", "tls.key"] {
        if !dir.join(name).exists() {
            std::os::unix::fs::symlink(format!("..data/{name}"), dir.join(name)).unwrap();
        }
    }
}

/// A client that trusts only `certs`, on a new connection, reporting the peer's certificate.
fn client(certs: &[&Cert], addr: SocketAddr) -> reqwest::Client {
    let roots = certs
        .iter()
        .map(|c| reqwest::Certificate::from_pem(c.pem.as_bytes()).unwrap());
    reqwest::Client::builder()
        .tls_certs_only(roots)
        .tls_info(true)
        .resolve("localhost", addr)
        .build()
        .unwrap()
}

/// Posts a signed delivery over HTTPS: the status and the certificate the server showed.
async fn post_https(client: &reqwest::Client, addr: SocketAddr, delivery: &str) -> (u16, Vec<u8>) {
    let response = client
        .post(format!("https://localhost:{}/hooks/github", addr.port()))
        .header("X-GitHub-Delivery", delivery)
        .header("X-Hub-Signature-256", github_signature(SECRET, BODY))
        .body(BODY)
        .send()
        .await
        .unwrap();
    let tls = response
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .unwrap();
    let peer = tls.peer_certificate().unwrap().to_vec();
    (response.status().as_u16(), peer)
}

#[tokio::test]
async fn serves_https_and_a_rotated_certificate_reaches_new_connections() {
    let moto = Moto::start();
    let queue_url = create_queue(&moto.sqs(), "github-events").await;
    let secrets = github_secrets();
    let tls = tempfile::tempdir().unwrap();
    let (first, second) = (cert(), cert());
    mount(tls.path(), "..v1", &first.pem, &first.key);
    let (crt, key) = (tls.path().join("tls.crt"), tls.path().join("tls.key"));
    let config = queue_pipeline("hooks", GITHUB_WEBHOOK, "github-events", "github-events");
    let ingress = Ingress::start(Launch {
        args: vec![
            "--tls-cert",
            crt.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
            "--secrets-poll",
            "100ms",
        ],
        ..Launch::new(&config, secrets.path(), moto.env())
    })
    .await;
    let addr: SocketAddr = ingress.url.trim_start_matches("http://").parse().unwrap();

    assert_eq!(
        post_https(&client(&[&first], addr), addr, "one").await,
        (202, first.der.clone())
    );
    // Plain HTTP on the TLS port gets no answer, and is counted.
    let plain = reqwest::Client::new().post(format!("{}/hooks/github", ingress.url));
    assert!(plain.body(BODY).send().await.is_err());
    let series = "eventpipe_ingress_rejected_total{reason=\"tls_handshake\"}";
    assert_eq!(metric(&ingress.metrics().await, series), Some(1.0));

    mount(tls.path(), "..v2", &second.pem, &second.key);
    let deadline = Instant::now() + Duration::from_secs(20);
    // A new client each time: a new connection.
    while post_https(&client(&[&first, &second], addr), addr, "probe")
        .await
        .1
        != second.der
    {
        assert!(Instant::now() < deadline, "still the first certificate");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ingress.log_line("TLS certificate reloaded").await;
    let stale =
        client(&[&first], addr).post(format!("https://localhost:{}/hooks/github", addr.port()));
    assert!(
        stale.body(BODY).send().await.is_err(),
        "the first certificate is still served"
    );
    assert_eq!(
        post_https(&client(&[&second], addr), addr, "two").await.0,
        202
    );

    // A rotation whose key does not match its certificate is refused; the last good
    // certificate stays.
    mount(tls.path(), "..v3", &cert().pem, &second.key);
    ingress.log_line("TLS certificate not reloaded").await;
    assert_eq!(
        post_https(&client(&[&second], addr), addr, "three").await,
        (202, second.der.clone())
    );

    let mut ids: Vec<_> = receive(&moto.sqs(), &queue_url, 20, Duration::from_secs(3))
        .await
        .iter()
        .map(|m| body_json(m)["id"].as_str().unwrap().to_string())
        .filter(|id| id != "probe")
        .collect();
    ids.sort();
    assert_eq!(ids, ["one", "three", "two"]);
}
