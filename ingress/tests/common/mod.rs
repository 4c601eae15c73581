//! Helpers for driving the ingress against moto: manifests, secrets, signing (done
//! here independently of the crate's own code), the binary as a child process, and
//! reading what landed in the queue.
#![allow(dead_code)]
// each test file uses its own subset
// Set-up steps unwrap: a failure fails the test (clippy's allow-unwrap-in-tests
// covers #[test] functions only, not the helpers of an integration test).
#![allow(clippy::unwrap_used)]

pub mod raw;

use std::{
    fs::File,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use aws_sdk_sqs::types::{Message, MessageSystemAttributeName, QueueAttributeName};
use hmac::{Hmac, Mac};
use sha2::Sha256;

pub const SECRET: &str = "It's a Secret to Everybody";
pub const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
pub const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

/// `sha256=<hex>` as GitHub computes it.
pub fn github_signature(secret: &str, body: &[u8]) -> String {
    format!("sha256={}", hmac_hex(secret, body))
}

pub fn hmac_hex(secret: &str, message: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(message);
    hex::encode(mac.finalize().into_bytes())
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A QueueBinding document for an SQS queue.
pub fn queue_binding(name: &str, queue_name: &str) -> String {
    let fifo = queue_name.ends_with(".fifo");
    format!(
        "---\napiVersion: eventpipe.dev/v1alpha1\nkind: QueueBinding\nmetadata: {{name: {name}}}\nspec:\n  sqs: {{queueName: {queue_name}, fifo: {fifo}}}\n"
    )
}

/// An EventPipeline document; `webhooks` is the YAML list, indented by six spaces.
pub fn pipeline(name: &str, webhooks: &str, publish_to: &str, source: &str) -> String {
    format!(
        "---\napiVersion: eventpipe.dev/v1alpha1\nkind: EventPipeline\nmetadata: {{name: {name}}}\nspec:\n  ingress:\n    webhooks:\n{webhooks}    publishTo: {publish_to}\n  sources: [{{queueBindingRef: {{name: {source}}}}}]\n  processor: {{http: {{url: \"http://127.0.0.1:9/\"}}}}\n"
    )
}

/// A pipeline `name` whose ingress publishes to QueueBinding `binding` (SQS queue
/// `queue_name`) and whose workers consume it, after that binding's document.
pub fn queue_pipeline(name: &str, webhooks: &str, binding: &str, queue_name: &str) -> String {
    let publish_to = format!("{{queueBindingRef: {{name: {binding}}}}}");
    queue_binding(binding, queue_name) + &pipeline(name, webhooks, &publish_to, binding)
}

/// The GitHub webhook of the analytics example.
pub const GITHUB_WEBHOOK: &str = "      - name: github
        path: /hooks/github
        signature: {scheme: github, secretRef: {name: gh, key: secret}}
        eventType: {header: X-GitHub-Event}
        correlationId: {jsonPointer: /issue/number}
        deduplicationId: {header: X-GitHub-Delivery}
        maxBodyBytes: 4096
";

/// A secrets directory holding the GitHub webhook's secret ([`SECRET`]).
pub fn github_secrets() -> tempfile::TempDir {
    let secrets = tempfile::tempdir().unwrap();
    write_secret(secrets.path(), "gh", "secret", SECRET);
    secrets
}

pub fn write_secret(dir: &Path, name: &str, key: &str, value: &str) {
    std::fs::create_dir_all(dir.join(name)).unwrap();
    // Write then rename, as the kubelet swaps a Secret volume's files.
    let tmp = dir.join(name).join(format!(".{key}.tmp"));
    std::fs::write(&tmp, value).unwrap();
    std::fs::rename(tmp, dir.join(name).join(key)).unwrap();
}

/// The ingress binary, running; killed when dropped.
pub struct Ingress {
    pub child: Child,
    pub url: String,
    pub ops_url: String,
    pub logs: PathBuf,
    errors: PathBuf,
    _dir: tempfile::TempDir,
}

pub struct Launch<'a> {
    pub config: &'a str,
    pub secrets_dir: &'a Path,
    pub env: Vec<(&'static str, String)>,
    pub args: Vec<&'a str>,
}

impl<'a> Launch<'a> {
    /// The ingress serving `config` with no extra arguments.
    pub fn new(config: &'a str, secrets_dir: &'a Path, env: Vec<(&'static str, String)>) -> Self {
        Self {
            config,
            secrets_dir,
            env,
            args: vec![],
        }
    }
}

impl Ingress {
    /// Starts the binary without waiting for it.
    pub fn spawn(launch: Launch<'_>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("pipeline.yaml");
        std::fs::write(&config, launch.config).unwrap();
        let (logs, errors) = (dir.path().join("stdout"), dir.path().join("stderr"));
        let port = eventpipe_testkit::free_port();
        let ops_port = eventpipe_testkit::free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_eventpipe-ingress"))
            .arg("--config")
            .arg(&config)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--metrics-listen", &format!("127.0.0.1:{ops_port}")])
            .arg("--secrets-dir")
            .arg(launch.secrets_dir)
            .args(&launch.args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "info")
            .envs(launch.env)
            .stdout(Stdio::from(File::create(&logs).unwrap()))
            .stderr(Stdio::from(File::create(&errors).unwrap()))
            .spawn()
            .expect("ingress starts");
        Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            ops_url: format!("http://127.0.0.1:{ops_port}"),
            logs,
            errors,
            _dir: dir,
        }
    }

    /// Starts the binary and waits until /readyz says ready.
    pub async fn start(launch: Launch<'_>) -> Self {
        let mut ingress = Self::spawn(launch);
        ingress.wait_ready().await;
        ingress
    }

    pub async fn wait_ready(&mut self) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("ingress exited ({status}): {}", self.output());
            }
            let ready = client.get(format!("{}/readyz", self.ops_url)).send().await;
            if ready.is_ok_and(|r| r.status() == 200) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("ingress not ready within 30s: {}", self.output());
    }

    pub fn output(&self) -> String {
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        format!(
            "\n--- stderr\n{}\n--- stdout\n{}",
            read(&self.errors),
            read(&self.logs)
        )
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.logs).unwrap_or_default()
    }

    /// The first log line containing `needle`. Info lines reach stdout within the log
    /// writer's flush period, so this waits for one a few times that long.
    pub async fn log_line(&self, needle: &str) -> String {
        let deadline = std::time::Instant::now() + eventpipe_core::log_writer::FLUSH_EVERY * 30;
        loop {
            let logs = self.log_text();
            if let Some(line) = logs.lines().find(|l| l.contains(needle)) {
                return line.to_string();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no {needle:?} line in:\n{logs}"
            );
            tokio::time::sleep(eventpipe_core::log_writer::FLUSH_EVERY / 4).await;
        }
    }

    pub async fn metrics(&self) -> String {
        reqwest::get(format!("{}/metrics", self.ops_url))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

impl Drop for Ingress {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A response: status, headers and the JSON body.
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub json: serde_json::Value,
}

pub async fn post(
    client: &reqwest::Client,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Answer {
    let mut request = client.post(url).body(body.to_vec());
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    answer(request.send().await.expect("request sent")).await
}

pub async fn answer(response: reqwest::Response) -> Answer {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
    Answer {
        status,
        headers,
        json,
    }
}

/// Posts a GitHub-signed `issue_comment` delivery.
pub async fn post_github(
    client: &reqwest::Client,
    ingress: &Ingress,
    delivery: &str,
    body: &[u8],
    extra: &[(&str, &str)],
) -> Answer {
    let signature = github_signature(SECRET, body);
    let mut headers = vec![
        ("Content-Type", "application/json"),
        ("X-GitHub-Event", "issue_comment"),
        ("X-GitHub-Delivery", delivery),
        ("X-Hub-Signature-256", signature.as_str()),
    ];
    headers.extend_from_slice(extra);
    post(
        client,
        &format!("{}/hooks/github", ingress.url),
        &headers,
        body,
    )
    .await
}

pub async fn create_queue(sqs: &aws_sdk_sqs::Client, name: &str) -> String {
    let mut request = sqs.create_queue().queue_name(name);
    if name.ends_with(".fifo") {
        request = request.attributes(QueueAttributeName::FifoQueue, "true");
    }
    request.send().await.unwrap().queue_url.unwrap()
}

/// Receives until `n` messages arrived (deleting them) or `limit` passed.
pub async fn receive(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    n: usize,
    limit: Duration,
) -> Vec<Message> {
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    while got.len() < n && Instant::now() < deadline {
        let out = sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .message_attribute_names("All")
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await
            .unwrap();
        for m in out.messages.unwrap_or_default() {
            sqs.delete_message()
                .queue_url(url)
                .receipt_handle(m.receipt_handle.clone().unwrap())
                .send()
                .await
                .unwrap();
            got.push(m);
        }
    }
    got
}

/// Visible plus in-flight messages.
pub async fn depth(sqs: &aws_sdk_sqs::Client, url: &str) -> usize {
    let out = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .unwrap();
    out.attributes
        .unwrap_or_default()
        .values()
        .map(|v| v.parse::<usize>().unwrap())
        .sum()
}

pub fn body_json(m: &Message) -> serde_json::Value {
    serde_json::from_str(m.body.as_deref().unwrap()).unwrap()
}

pub fn attribute(m: &Message, name: &str) -> Option<String> {
    m.message_attributes
        .as_ref()?
        .get(name)?
        .string_value
        .clone()
}

/// A metric's value from the Prometheus text, by its full series text.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}
