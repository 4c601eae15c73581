//! `eventpipe send` signs as each scheme's sender does: every request it sends to an
//! ingress (publishing nowhere) is accepted.

mod common;

use std::path::Path;

use common::eventpipe;
use eventpipe_crds::Manifest;
use eventpipe_ingress::{Ingress, IngressConfig, PublishMode, Settings};

const MANIFEST: &str = r#"apiVersion: eventpipe.dev/v1alpha1
kind: QueueBinding
metadata: {name: events}
spec: {sqs: {queueName: events}}
---
apiVersion: eventpipe.dev/v1alpha1
kind: EventPipeline
metadata: {name: hooks}
spec:
  ingress:
    webhooks:
      - {name: github, path: /github, signature: {scheme: github, secretRef: {name: s, key: github}}}
      - {name: slack, path: /slack, signature: {scheme: slack, secretRef: {name: s, key: slack}}}
      - {name: stripe, path: /stripe, signature: {scheme: stripe, secretRef: {name: s, key: stripe}}}
      - name: standard
        path: /standard
        signature: {scheme: standard-webhooks, secretRef: {name: s, key: standard}}
        deduplicationId: {header: webhook-id}
      - {name: shopify, path: /shopify, signature: {scheme: shopify, secretRef: {name: s, key: shopify}}}
      - {name: gitlab, path: /gitlab, signature: {scheme: gitlab, secretRef: {name: s, key: gitlab}}}
      - name: custom
        path: /custom
        signature:
          scheme: hmac
          secretRef: {name: s, key: custom}
          header: X-Signature
          prefix: "v1="
          algorithm: sha512
          signedString: "{id}:{timestamp}:{body}"
          idHeader: X-Id
          timestamp: {header: X-Timestamp}
      - name: legacy
        path: /legacy
        signature: {scheme: hmac-sha256, secretRef: {name: s, key: legacy}, header: X-Signature, timestamp: {header: X-Timestamp}}
      - {name: bearer, path: /bearer, signature: {scheme: bearer, secretRef: {name: s, key: bearer}}}
    publishTo: {queueBindingRef: {name: events}}
  sources: [{queueBindingRef: {name: events}}]
  processor: {http: {url: "http://127.0.0.1:9/"}}
"#;

const HOOKS: [&str; 9] = [
    "github", "slack", "stripe", "standard", "shopify", "gitlab", "custom", "legacy", "bearer",
];

fn write(dir: &Path) {
    std::fs::create_dir_all(dir.join("s")).expect("secrets dir");
    for hook in HOOKS {
        let secret = match hook {
            "standard" => "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_string(),
            _ => format!("{hook}-secret"),
        };
        std::fs::write(dir.join("s").join(hook), secret).expect("secret written");
    }
    std::fs::write(dir.join("manifest.yaml"), MANIFEST).expect("manifest written");
}

#[tokio::test(flavor = "multi_thread")]
async fn send_signs_every_scheme_as_the_ingress_verifies_it() {
    let dir = std::env::temp_dir().join(format!("eventpipe-send-schemes-{}", std::process::id()));
    write(&dir);
    let manifest = Manifest::load(dir.join("manifest.yaml")).expect("manifest loads");
    let config = IngressConfig::from_manifest(&manifest, "manifest.yaml").expect("config");
    let settings = Settings {
        secrets_dir: dir.clone(),
        publish: PublishMode::Noop,
        ..Settings::default()
    };
    let mut registry = prometheus_client::registry::Registry::default();
    let ingress = Ingress::new(config, settings, &mut registry)
        .await
        .expect("ingress starts");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bound");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(ingress.serve(listener, std::future::pending()));
    let config = dir.join("manifest.yaml");
    let secrets = dir.to_string_lossy().into_owned();
    for hook in HOOKS {
        let to = format!("{url}/{hook}");
        let args = [
            "send",
            "--config",
            &config.to_string_lossy(),
            "--secrets-dir",
            &secrets,
            "--to",
            &to,
            "--count",
            "2",
            "hooks",
            hook,
        ]
        .map(String::from);
        let (ok, out, err) = tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            eventpipe(&args, &[])
        })
        .await
        .expect("send ran");
        assert!(ok, "{hook}: {out}\n{err}");
        assert_eq!(
            out.lines().filter(|l| l.starts_with("202 ")).count(),
            2,
            "{hook}: {out}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
