//! `eventpipe dev` takes a webhook's previous secret as a cluster does: during a
//! rotation, requests signed with the current or the previous secret are accepted,
//! others refused; `eventpipe send --previous` signs as a sender not yet rotated. Secrets
//! it generates are in the form each scheme takes.

mod common;
mod dev;

use std::path::Path;

use common::eventpipe;
use dev::DevProcess;
use eventpipe_testkit::{Moto, free_port};

const MANIFEST: &str = r#"apiVersion: eventpipe.dev/v1alpha1
kind: QueueBinding
metadata: {name: events}
spec: {sqs: {queueName: rotation-events, create: true}}
---
apiVersion: eventpipe.dev/v1alpha1
kind: EventPipeline
metadata: {name: hooks}
spec:
  ingress:
    webhooks:
      - name: rotating
        path: /rotating
        signature:
          scheme: hmac
          secretRef: {name: hooks, key: current}
          previousSecretRef: {name: hooks, key: previous}
          header: X-Signature
          timestamp: {header: X-Timestamp, tolerance: 5m}
      - {name: plain, path: /plain, signature: {scheme: github, secretRef: {name: hooks, key: current}}}
    publishTo: {queueBindingRef: {name: events}}
  sources: [{queueBindingRef: {name: events}}]
  processor: {dynamodb: {tableName: rotation-events, create: true}}
"#;

fn secrets(dir: &Path, current: &str, previous: Option<&str>) {
    std::fs::create_dir_all(dir.join("hooks")).expect("secrets dir");
    std::fs::write(dir.join("hooks/current"), current).expect("secret written");
    if let Some(p) = previous {
        std::fs::write(dir.join("hooks/previous"), p).expect("secret written");
    }
}

/// `eventpipe send` to the dev's webhook `hook`, with the secrets in `dir`.
fn send(
    manifest: &Path,
    url: &str,
    dir: &Path,
    hook: &str,
    more: &[&str],
) -> (bool, String, String) {
    let to = format!("{url}/{hook}");
    let (m, d) = (
        manifest.to_str().expect("utf-8"),
        dir.to_str().expect("utf-8"),
    );
    let args = [
        &["send", "--config", m, "--to", &to, "--secrets-dir", d],
        more,
        &["hooks", hook],
    ]
    .concat();
    eventpipe(&args, &[])
}

/// Starts `eventpipe dev` on `manifest` with the secrets in `secrets`; its URL once
/// it is ready.
fn start_dev(moto: &Moto, dir: &Path, manifest: &Path, secrets: &Path) -> (DevProcess, String) {
    let listen = format!("127.0.0.1:{}", free_port());
    let ops = format!("127.0.0.1:{}", free_port());
    let (manifest, secrets) = (
        manifest.to_str().expect("utf-8"),
        secrets.to_str().expect("utf-8"),
    );
    let args = [
        "-f",
        manifest,
        "--secrets-dir",
        secrets,
        "--listen",
        &listen,
        "--ops-listen",
        &ops,
    ];
    (
        DevProcess::start(&args, moto, dir),
        format!("http://{listen}"),
    )
}

#[test]
fn dev_accepts_the_previous_secret_during_a_rotation() {
    let moto = Moto::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let manifest = dir.path().join("hooks.yaml");
    std::fs::write(&manifest, MANIFEST).expect("manifest written");
    let rotated = dir.path().join("secrets");
    secrets(&rotated, "new-secret", Some("old-secret"));
    let (dev, url) = start_dev(&moto, dir.path(), &manifest, &rotated);
    let previous = dev.after("secret  hooks/previous (previous): ");
    assert!(
        previous.is_some_and(|p| p.starts_with("accepted too, from")),
        "{}",
        dev.printed
    );

    let (ok, out, err) = send(&manifest, &url, &rotated, "rotating", &[]);
    assert!(
        ok && out.starts_with("202 "),
        "current secret: {out}\n{err}"
    );
    let (ok, out, err) = send(&manifest, &url, &rotated, "rotating", &["--previous"]);
    assert!(
        ok && out.starts_with("202 "),
        "previous secret: {out}\n{err}"
    );

    // A sender with neither secret is refused.
    let other = dir.path().join("other");
    secrets(&other, "third-secret", Some("fourth-secret"));
    for more in [&[][..], &["--previous"][..]] {
        let (ok, out, _) = send(&manifest, &url, &other, "rotating", more);
        assert!(!ok && out.starts_with("401 "), "{more:?}: {out}");
    }

    // What cannot be signed says why.
    let (ok, _, err) = send(&manifest, &url, &rotated, "plain", &["--previous"]);
    assert!(!ok);
    assert!(
        err.contains("webhook \"plain\" has no previousSecretRef"),
        "{err}"
    );
    let unrotated = dir.path().join("unrotated");
    secrets(&unrotated, "new-secret", None);
    let (ok, _, err) = send(&manifest, &url, &unrotated, "rotating", &["--previous"]);
    assert!(!ok);
    assert!(err.contains("secret hooks/previous"), "{err}");
}

#[test]
fn dev_generates_secrets_each_scheme_can_use() {
    let moto = Moto::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let manifest = dir.path().join("hooks.yaml");
    let svix = MANIFEST.replace(
        "{name: plain, path: /plain, signature: {scheme: github, secretRef: {name: hooks, key: current}}}",
        "{name: svix, path: /svix, signature: {scheme: standard-webhooks, secretRef: {name: svix, key: key}}}",
    );
    std::fs::write(&manifest, svix).expect("manifest written");
    let generated = dir.path().join("secrets");
    let (_dev, url) = start_dev(&moto, dir.path(), &manifest, &generated);
    let read = |name: &str| std::fs::read_to_string(generated.join(name)).expect("generated");
    let key = read("svix/key");
    assert!(key.starts_with("whsec_"), "a Standard Webhooks key: {key}");
    assert!(read("hooks/current").bytes().all(|b| b.is_ascii_hexdigit()));
    for hook in ["svix", "rotating"] {
        let (ok, out, err) = send(&manifest, &url, &generated, hook, &[]);
        assert!(ok && out.starts_with("202 "), "{hook}: {out}\n{err}");
    }
}
