//! `eventpipe-ingress`: serves the webhooks of the pipelines in a manifest file.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use anyhow::Context;
use clap::{Parser, ValueEnum};
use eventpipe_core::{ops, telemetry};
use eventpipe_crds::Duration;
use eventpipe_ingress::{
    BatchSettings, HubLimits, IngressConfig, Limits, PublishMode, Settings, TlsFiles,
};

/// Each request allocates many small, short-lived buffers (body, JSON, headers, log
/// line): mimalloc serves them for less CPU than the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Serves the webhooks of every EventPipeline with an `ingress` in a manifest file:
/// verifies each request's signature or token, turns it into a CloudEvent and
/// answers 202 once the event is stored in its SQS queue or DynamoDB table.
#[derive(Debug, Parser)]
#[command(name = "eventpipe-ingress", version)]
struct Cli {
    /// The pipeline manifest (multi-document YAML), as the operator renders it.
    #[arg(long, env = "EVENTPIPE_CONFIG")]
    config: PathBuf,
    /// Address of the webhook server.
    #[arg(long, default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:9090")]
    metrics_listen: SocketAddr,
    /// Where Secrets are mounted: a secretRef {name, key} is the file DIR/name/key.
    #[arg(long, value_name = "DIR", default_value = "/etc/eventpipe/secrets")]
    secrets_dir: PathBuf,
    /// Longest wait for the queue or table before answering 503.
    #[arg(long, default_value = "5s")]
    publish_timeout: Duration,
    /// After SIGTERM, how long to keep serving new requests, reporting not ready,
    /// before refusing connections: the time load balancers and Kubernetes endpoints
    /// take to stop sending any. 0 refuses them at once.
    #[arg(long, default_value = "5s", value_parser = drain_delay)]
    drain_delay: Duration,
    #[command(flatten)]
    limits: LimitArgs,
    /// Serve HTTPS with this PEM certificate chain (e.g. tls.crt of a
    /// kubernetes.io/tls Secret); re-read when it changes. Needs --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert (e.g. tls.key).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// How often secret files are re-read, so rotated Secrets take effect.
    #[arg(long, default_value = "1s", hide = true)]
    secrets_poll: Duration,
    /// How long an event waits for others to share its SendMessageBatch call.
    #[arg(long, default_value = "5ms", hide = true)]
    flush_delay: Duration,
    /// Clients subscribed to pushes at once; more are answered 503 with Retry-After.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    max_subscribers: u32,
    /// `noop` accepts and drops every event: for benchmarking the ingress alone.
    #[arg(long, value_enum, default_value = "aws", hide = true)]
    publish: Publish,
}

/// Limits against abusive or broken senders; bodies are limited per webhook
/// (maxBodyBytes).
#[derive(Debug, clap::Args)]
struct LimitArgs {
    /// Largest request line plus headers, in bytes; larger is answered 431.
    #[arg(long, default_value_t = 16384, value_parser = clap::value_parser!(u32).range(1024..=1_048_576))]
    max_header_bytes: u32,
    /// Most header fields in a request; more are answered 431.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=1000))]
    max_headers: u16,
    /// Time for a client to send a request's headers (and its TLS handshake), and
    /// the longest a keep-alive connection stays idle; slower clients are disconnected.
    #[arg(long, default_value = "10s", value_parser = positive)]
    header_read_timeout: Duration,
    /// Time from a request's headers to its answer: a body still arriving then is
    /// answered 408 and nothing is stored.
    #[arg(long, default_value = "30s", value_parser = positive)]
    request_timeout: Duration,
    /// Requests handled at once; beyond that the ingress answers 503 with
    /// Retry-After at once instead of queueing.
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..))]
    max_concurrent_requests: u32,
}

impl LimitArgs {
    fn limits(&self) -> Limits {
        Limits {
            max_header_bytes: self.max_header_bytes as usize,
            max_headers: self.max_headers.into(),
            header_read_timeout: self.header_read_timeout.as_std(),
            request_timeout: self.request_timeout.as_std(),
            max_concurrent_requests: self.max_concurrent_requests as usize,
        }
    }
}

fn positive(s: &str) -> Result<Duration, String> {
    let d: Duration = s.parse().map_err(|e| format!("{e}"))?;
    if d.as_std().is_zero() {
        return Err("must be more than zero".into());
    }
    Ok(d)
}

/// A duration, or a bare `0`.
fn drain_delay(s: &str) -> Result<Duration, String> {
    let s = if s == "0" { "0s" } else { s };
    s.parse().map_err(|e| format!("{e}"))
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Publish {
    Aws,
    Noop,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Configuration errors go to stderr as one plain line, before logging starts.
    let config = match IngressConfig::load(&cli.config) {
        Ok(config) => config,
        Err(e) => {
            // The message already includes its causes.
            eprintln!("eventpipe-ingress: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = tokio::runtime::Runtime::new().expect("Tokio runtime starts");
    match runtime.block_on(serve(cli, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

fn fail(e: anyhow::Error) -> ExitCode {
    eprintln!("eventpipe-ingress: {e:#}");
    ExitCode::FAILURE
}

async fn serve(cli: Cli, config: IngressConfig) -> anyhow::Result<()> {
    let listener = bind(cli.listen).await?;
    let ops_listener = bind(cli.metrics_listen).await?;
    let telemetry = telemetry::init("eventpipe-ingress");
    let paths: Vec<&str> = config
        .webhooks
        .iter()
        .map(|w| w.spec.path.as_str())
        .collect();
    tracing::info!(listen = %listener.local_addr()?, metrics = %ops_listener.local_addr()?, webhooks = ?paths, "ingress starting");
    let settings = Settings {
        secrets_dir: cli.secrets_dir,
        secrets_poll: cli.secrets_poll.as_std(),
        limits: cli.limits.limits(),
        tls: cli
            .tls_cert
            .zip(cli.tls_key)
            .map(|(cert, key)| TlsFiles { cert, key }),
        publish: match cli.publish {
            Publish::Aws => PublishMode::Aws,
            Publish::Noop => PublishMode::Noop,
        },
        publish_timeout: cli.publish_timeout.as_std(),
        drain_delay: cli.drain_delay.as_std(),
        batch: BatchSettings {
            flush_delay: cli.flush_delay.as_std(),
            ..BatchSettings::default()
        },
        aws: None,
        push: HubLimits {
            max_subscribers: cli.max_subscribers as usize,
            ..HubLimits::default()
        },
        pages: None,
    };
    let result = eventpipe_ingress::run(
        config,
        settings,
        listener,
        ops_listener,
        ops::shutdown_signal(),
    )
    .await;
    tracing::info!("ingress stopped");
    telemetry.shutdown();
    result
}

async fn bind(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))
}
