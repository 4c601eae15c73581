//! `eventpipe send`: signs and sends events the way the real sender does, for every
//! signature scheme the ingress verifies (the same rules sign and verify).

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::Args;
use eventpipe_crds::{Manifest, SecretKeyRef, Webhook};
use eventpipe_ingress::Verifier;

#[derive(Args)]
pub struct Send {
    /// The manifest holding the pipeline.
    #[arg(long, required = true)]
    config: Vec<PathBuf>,
    pipeline: String,
    /// The webhook's name.
    webhook: String,
    /// Where the ingress listens (default: local mode's 127.0.0.1:8080, the webhook's path).
    #[arg(long)]
    to: Option<String>,
    /// Secrets as `<dir>/<name>/<key>`.
    #[arg(long, default_value = "/etc/eventpipe/secrets")]
    secrets_dir: PathBuf,
    /// The JSON body.
    #[arg(long, conflicts_with = "file")]
    data: Option<String>,
    /// A file with the JSON body.
    #[arg(long)]
    file: Option<PathBuf>,
    /// How many times to send it (each with its own delivery id).
    #[arg(long, default_value_t = 1)]
    count: usize,
    /// The event type, for webhooks that read it from a header (e.g. issue_comment).
    #[arg(long)]
    event_type: Option<String>,
    /// Sign with the webhook's previousSecretRef, as a sender not yet given the new
    /// secret does during a rotation.
    #[arg(long)]
    previous: bool,
}

/// Every header a sender sets: JSON content type, the signature or token, the event
/// type and a fresh delivery (and correlation) id where the webhook reads them.
pub fn headers(
    hook: &Webhook,
    secret: &[u8],
    body: &[u8],
    event_type: Option<&str>,
) -> anyhow::Result<Vec<(String, String)>> {
    let verifier = Verifier::new(&hook.signature)
        .map_err(|e| anyhow::anyhow!("webhook {:?}: {e:?}", hook.name))?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let message_id = format!("msg_{}", uuid::Uuid::new_v4().simple());
    let signed = (verifier.sign(secret, body, now, &message_id))
        .map_err(|e| anyhow::anyhow!("webhook {:?}: {e}", hook.name))?;
    let mut out = vec![("content-type".to_string(), "application/json".to_string())];
    out.extend(signed.into_iter().map(|(k, v)| (k.to_string(), v)));
    if let Some(header) = hook.event_type.as_ref().and_then(|t| t.header.clone()) {
        let value = event_type.ok_or_else(|| {
            anyhow::anyhow!(
                "webhook {:?} takes its event type from header {header}: pass --event-type",
                hook.name
            )
        })?;
        out.push((header, value.to_string()));
    }
    for source in [&hook.deduplication_id, &hook.correlation_id] {
        if let Some(header) = source.as_ref().and_then(|s| s.header.clone()) {
            // A header the signature covers (e.g. webhook-id) keeps its signed value.
            if !out.iter().any(|(k, _)| k.eq_ignore_ascii_case(&header)) {
                out.push((header, uuid::Uuid::new_v4().to_string()));
            }
        }
    }
    Ok(out)
}

/// The webhook's current secret: what a sender signs with.
pub fn read_secret(hook: &Webhook, dir: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    read_secret_ref(&hook.signature.secret_ref, dir)
}

/// The webhook's previous secret, during a rotation.
fn read_previous_secret(hook: &Webhook, dir: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    let r = hook
        .signature
        .previous_secret_ref
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("webhook {:?} has no previousSecretRef", hook.name))?;
    read_secret_ref(r, dir)
}

fn read_secret_ref(r: &SecretKeyRef, dir: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    let file = dir.join(&r.name).join(&r.key);
    let text = std::fs::read_to_string(&file)
        .with_context(|| format!("secret {}/{} ({})", r.name, r.key, file.display()))?;
    Ok(text.trim_end_matches(['\n', '\r']).as_bytes().to_vec())
}

impl Send {
    pub async fn run(self) -> anyhow::Result<()> {
        let manifest = Manifest::load_all(&self.config)?;
        let pipeline = manifest.pipeline(&self.pipeline)?;
        let hooks = pipeline
            .pipeline
            .spec
            .ingress
            .as_ref()
            .map(|i| i.webhooks.clone())
            .unwrap_or_default();
        let hook = hooks
            .iter()
            .find(|h| h.name == self.webhook)
            .ok_or_else(|| {
                let names: Vec<_> = hooks.iter().map(|h| h.name.as_str()).collect();
                anyhow::anyhow!(
                    "EventPipeline {:?} has no webhook {:?} (has: {})",
                    self.pipeline,
                    self.webhook,
                    names.join(", ")
                )
            })?;
        let body = match (&self.data, &self.file) {
            (Some(d), _) => d.clone().into_bytes(),
            (None, Some(f)) => std::fs::read(f).with_context(|| f.display().to_string())?,
            (None, None) => b"{}".to_vec(),
        };
        serde_json::from_slice::<serde_json::Value>(&body).context("the body is not JSON")?;
        let secret = match self.previous {
            true => read_previous_secret(hook, &self.secrets_dir)?,
            false => read_secret(hook, &self.secrets_dir)?,
        };
        let url = self
            .to
            .clone()
            .unwrap_or_else(|| format!("http://127.0.0.1:8080{}", hook.path));
        let client = reqwest::Client::new();
        let mut failed = 0;
        for _ in 0..self.count.max(1) {
            let mut request = client.post(&url).body(body.clone());
            for (k, v) in headers(hook, &secret, &body, self.event_type.as_deref())? {
                request = request.header(k, v);
            }
            let response = request
                .send()
                .await
                .with_context(|| format!("POST {url}"))?;
            let status = response.status();
            println!(
                "{} {}",
                status.as_u16(),
                response.text().await.unwrap_or_default()
            );
            failed += usize::from(!status.is_success());
        }
        if failed > 0 {
            anyhow::bail!(
                "{failed} of {} request(s) were not accepted",
                self.count.max(1)
            );
        }
        Ok(())
    }
}
