//! `eventpipe dev`: the manifests a user applies, run in one process against a local
//! AWS emulator: provisioning, the ingress and the workers of every pipeline.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use eventpipe_console::{self as console, dead_letters};
use eventpipe_core::feed::Feed;
use eventpipe_core::local_aws::{self, LocalAws};
use eventpipe_core::{aws, ops, provision, telemetry};
use eventpipe_crds::Manifest;
use eventpipe_ingress::{Ingress, IngressConfig, Verifier};
use eventpipe_worker::{Options, Worker, metrics::Metrics};
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

/// Where `make dev` runs moto's server.
pub const DEV_ENDPOINT: &str = "http://127.0.0.1:5000";

#[derive(Args, Clone)]
pub struct Dev {
    /// Manifest files, the same a user applies with `kubectl apply -f`.
    #[arg(short = 'f', long = "file", required = true)]
    pub files: Vec<PathBuf>,
    /// Where the webhooks listen.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Prometheus metrics, /healthz and /readyz of ingress and workers.
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub ops_listen: SocketAddr,
    /// Secrets as `<dir>/<name>/<key>`; missing ones are generated there.
    #[arg(long)]
    pub secrets_dir: Option<PathBuf>,
    /// A folder of static pages (e.g. examples/notes) served on the webhooks' listener,
    /// so a page there posts and subscribes on its own origin. Loopback only.
    #[arg(long = "static", value_name = "DIR")]
    pub static_dir: Option<PathBuf>,
    #[command(flatten)]
    pub logs: Logs,
    #[command(flatten)]
    pub console: ConsoleArgs,
}

/// Where the web console listens, and what it links to.
#[derive(Args, Clone, Default)]
pub struct ConsoleArgs {
    /// Where the web console listens (its URL, with the token a redrive needs, is printed).
    #[arg(long, default_value = "127.0.0.1:7070")]
    pub console_listen: Option<SocketAddr>,
    /// Jaeger's UI, for trace ids to link to (e.g. http://localhost:16686).
    #[arg(long)]
    pub jaeger_url: Option<String>,
}

/// How log lines are written.
#[derive(Args, Clone, Copy)]
pub struct Logs {
    /// `auto`: readable text on a terminal, JSON lines when piped.
    #[arg(long, value_enum, default_value_t = LogFormat::Auto)]
    pub log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Auto,
    Text,
    Json,
}

impl LogFormat {
    pub fn resolve(self) -> telemetry::LogFormat {
        match self {
            Self::Auto => telemetry::LogFormat::for_output(std::io::stdout().is_terminal()),
            Self::Text => telemetry::LogFormat::Text,
            Self::Json => telemetry::LogFormat::Json,
        }
    }
}

/// The AWS endpoint local mode talks to; a moto it started lives as long as this.
pub struct Emulator {
    pub endpoint: String,
    _moto: Option<LocalAws>,
}

/// Picks the AWS endpoint before any thread starts (it sets the SDK's environment):
/// `AWS_ENDPOINT_URL` when set, else the emulator `make dev` runs, else a moto server
/// started here. Never real AWS by surprise.
pub fn emulator() -> anyhow::Result<Emulator> {
    let (endpoint, moto) = if let Ok(url) = std::env::var("AWS_ENDPOINT_URL") {
        (url, None)
    } else if std::net::TcpStream::connect_timeout(
        &"127.0.0.1:5000".parse()?,
        Duration::from_millis(300),
    )
    .is_ok()
    {
        (DEV_ENDPOINT.to_string(), None)
    } else if let Some(server) = local_aws::server_path() {
        let moto = LocalAws::start(&server)?;
        (moto.endpoint(), Some(moto))
    } else {
        anyhow::bail!(
            "no AWS endpoint: run `make dev` (moto's server on {DEV_ENDPOINT}), or set AWS_ENDPOINT_URL to an emulator"
        );
    };
    // SAFETY: called from `main` before the runtime or any other thread exists.
    #[allow(unsafe_code)]
    unsafe {
        std::env::set_var("AWS_ENDPOINT_URL", &endpoint);
        for (key, default) in [
            ("AWS_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
        ] {
            if std::env::var_os(key).is_none() {
                std::env::set_var(key, default);
            }
        }
    }
    Ok(Emulator {
        endpoint,
        _moto: moto,
    })
}

/// A running local pipeline.
pub struct Running {
    /// (pipeline, webhook, URL) of every webhook.
    pub webhooks: Vec<(String, String, String)>,
    /// Where the webhooks (and `--static` pages) are served.
    pub ingress: Option<SocketAddr>,
    pub secrets_dir: PathBuf,
    pub manifest: Manifest,
    /// Where `/metrics` and `/events` are served.
    pub ops: SocketAddr,
    /// The console's address and the token a redrive needs, when it runs.
    pub console: Option<(SocketAddr, String)>,
    stop: CancellationToken,
    tasks: tokio::task::JoinSet<()>,
}

impl Running {
    /// Stops receiving, drains, and waits for everything to finish.
    pub async fn stop(mut self) {
        self.stop.cancel();
        while self.tasks.join_next().await.is_some() {}
    }
}

pub async fn start(dev: &Dev) -> anyhow::Result<Running> {
    let manifest = Manifest::load_all(&dev.files)?;
    let pipelines = manifest.resolved()?;
    provision_all(&manifest).await?;
    let secrets_dir = match &dev.secrets_dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("eventpipe-dev-{}", std::process::id())),
    };
    generate_missing_secrets(&manifest, &secrets_dir)?;

    let mut registry = Registry::default();
    let stop = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    let mut metrics = Metrics::register(&mut registry);
    let (webhooks, push_to) = match manifest.pipelines.iter().any(|p| p.spec.ingress.is_some()) {
        true => {
            let (webhooks, feed, serve, push_to) =
                serve_ingress(dev, &manifest, &secrets_dir, &mut registry, stop.clone()).await?;
            // One process, one feed: the ingress's and the workers' records together.
            metrics.feed = feed;
            tasks.spawn(serve);
            (webhooks, Some(push_to))
        }
        false => (vec![], None),
    };
    // The listener's address, as its webhooks' URLs give it.
    let ingress = (webhooks.first())
        .and_then(|(_, _, url)| url.strip_prefix("http://")?.split('/').next()?.parse().ok());
    let options = Options {
        secrets_dir: secrets_dir.clone(),
        grace: Duration::from_secs(10),
        aws: aws::default_config().await,
        streams: Default::default(),
        push_to,
    };
    let worker = Worker::build(&pipelines, &options, &metrics).await?;
    tasks.spawn(worker.run(stop.clone()));
    let (ops, serve) = serve_ops(dev, registry, metrics.feed.clone(), stop.clone()).await?;
    tasks.spawn(serve);
    let console = match dev.console.console_listen {
        Some(addr) => {
            let serve = serve_console(
                dev,
                addr,
                &manifest,
                &secrets_dir,
                metrics.feed,
                stop.clone(),
            )
            .await;
            match serve {
                Ok((at, serve)) => {
                    tasks.spawn(serve);
                    Some(at)
                }
                // The pipelines run without it: a second `eventpipe dev`, or a test, may
                // find the port taken.
                Err(e) => {
                    tracing::warn!(error = format!("{e:#}"), "console not started");
                    None
                }
            }
        }
        None => None,
    };
    Ok(Running {
        webhooks,
        ingress,
        secrets_dir,
        manifest,
        ops,
        console,
        stop,
        tasks,
    })
}

/// The manifest's webhooks on one listener, until `stop`: where each one is, the
/// server, and where the workers' push processors deliver (a loopback port).
async fn serve_ingress(
    dev: &Dev,
    manifest: &Manifest,
    secrets_dir: &Path,
    registry: &mut Registry,
    stop: CancellationToken,
) -> anyhow::Result<(
    Vec<(String, String, String)>,
    Feed,
    impl Future<Output = ()> + use<>,
    SocketAddr,
)> {
    let file = dev.files[0].display().to_string();
    let config = IngressConfig::from_manifest(manifest, &file)?;
    let settings = eventpipe_ingress::Settings {
        secrets_dir: secrets_dir.to_path_buf(),
        pages: static_pages(dev)?,
        ..Default::default()
    };
    let listener = tokio::net::TcpListener::bind(dev.listen)
        .await
        .with_context(|| format!("listen on {}", dev.listen))?;
    let addr = listener.local_addr()?;
    let webhooks = (config.webhooks.iter())
        .map(|w| {
            let url = format!("http://{addr}{}", w.spec.path);
            (w.pipeline.clone(), w.spec.name.clone(), url)
        })
        .collect();
    let ingress = Ingress::new(config, settings, registry).await?;
    let feed = ingress.feed();
    let pushes = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let push_to = pushes.local_addr()?;
    let push = ingress.serve_pushes(pushes, stop.clone().cancelled_owned());
    let serve = async move {
        let serving = ingress.serve(listener, stop.cancelled_owned());
        let (served, pushed) = tokio::join!(serving, push);
        if let Some(e) = served.err().or(pushed.err()) {
            tracing::error!(error = %e, "ingress stopped");
        }
    };
    Ok((webhooks, feed, serve, push_to))
}

/// The `--static` folder, checked: pages are for a browser on this machine only.
fn static_pages(dev: &Dev) -> anyhow::Result<Option<PathBuf>> {
    let Some(dir) = &dev.static_dir else {
        return Ok(None);
    };
    anyhow::ensure!(
        dev.listen.ip().is_loopback(),
        "--static serves pages on a loopback --listen only, not {}",
        dev.listen
    );
    anyhow::ensure!(dir.is_dir(), "--static {}: not a folder", dir.display());
    Ok(Some(dir.clone()))
}

/// The `--static` pages' URL, with the secret of the first bearer webhook in its
/// fragment (never sent to the server) for a page that posts with it.
fn page_url(dev: &Dev, running: &Running) -> Option<String> {
    dev.static_dir.as_ref()?;
    let hook = (running.manifest.pipelines.iter())
        .filter_map(|p| p.spec.ingress.as_ref())
        .flat_map(|i| &i.webhooks)
        .find(|w| w.signature.scheme == eventpipe_crds::SignatureScheme::Bearer);
    let token = hook.and_then(|h| crate::send::read_secret(h, &running.secrets_dir).ok());
    let fragment = token.map(|t| format!("#token={}", String::from_utf8_lossy(&t).trim()));
    Some(format!(
        "http://{}/{}",
        running.ingress?,
        fragment.unwrap_or_default()
    ))
}

/// `/metrics`, `/healthz`, `/readyz` and `/events` for everything running, until `stop`.
async fn serve_ops(
    dev: &Dev,
    registry: Registry,
    feed: Feed,
    stop: CancellationToken,
) -> anyhow::Result<(SocketAddr, impl Future<Output = ()> + use<>)> {
    let ready = ops::Ready::default();
    ready.set(true);
    let listener = tokio::net::TcpListener::bind(dev.ops_listen)
        .await
        .with_context(|| format!("listen on {}", dev.ops_listen))?;
    let at = listener.local_addr()?;
    let serve = async move {
        let _ = ops::serve(
            listener,
            Arc::new(registry),
            ready,
            feed,
            stop.cancelled_owned(),
        )
        .await;
    };
    Ok((at, serve))
}

/// The web console on `addr`, fed by `feed`, until `stop`: where it listens and the
/// token a redrive needs, and the server.
async fn serve_console(
    dev: &Dev,
    addr: SocketAddr,
    manifest: &Manifest,
    secrets_dir: &Path,
    feed: Feed,
    stop: CancellationToken,
) -> anyhow::Result<((SocketAddr, String), impl Future<Output = ()> + use<>)> {
    let mut pipelines = vec![];
    let (mut queues, mut lags) = (BTreeMap::new(), BTreeMap::new());
    for p in manifest.resolved()? {
        // Pipelines without an SQS source and a DeadLetterPolicy have no queues to show.
        if let Ok(q) = dead_letters::queues(&p, None, secrets_dir).await {
            queues.insert(p.name().to_string(), q);
        }
        let streams = console::stream_lag::sources(&p, secrets_dir).await?;
        if !streams.is_empty() {
            lags.insert(p.name().to_string(), streams);
        }
        pipelines.push(console::Pipeline {
            name: p.name().to_string(),
            status: "Running".into(),
            conditions: vec![],
            replicas: 1,
        });
    }
    let token = console::auth::new_token();
    let settings = console::Settings {
        token: Some(token.clone()),
        jaeger_url: dev.console.jaeger_url.clone(),
        port_forwarded: false,
    };
    let console = console::Console::new(pipelines, queues, settings);
    console.set_lag_sources(lags);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listen on {addr}"))?;
    let at = listener.local_addr()?;
    let serve = async move {
        let follow = futures::future::join(
            console::follow::feed(console.clone(), feed),
            console::follow::depths(console.clone(), CONSOLE_DEPTHS_EVERY),
        );
        tokio::select! {
            served = console::serve(listener, console, stop.clone().cancelled_owned()) => {
                if let Err(e) = served {
                    tracing::error!(error = %e, "console stopped");
                }
            }
            _ = follow => {}
            _ = stop.cancelled() => {}
        }
    };
    Ok(((at, token), serve))
}

/// How often the console reads the depths of the queues.
const CONSOLE_DEPTHS_EVERY: Duration = Duration::from_secs(2);

/// Creates what the QueueBindings ask for: queues, DLQs and redrive policies,
/// stream-enabled tables and their DLQs. Local bindings have no uid, so nothing here
/// is tagged as a binding's: no `deletionPolicy: Delete` ever removes it.
async fn provision_all(manifest: &Manifest) -> anyhow::Result<()> {
    let config = aws::default_config().await;
    let (sqs, ddb) = (
        aws_sdk_sqs::Client::new(&config),
        aws_sdk_dynamodb::Client::new(&config),
    );
    for b in &manifest.bindings {
        let name = b.metadata.name.clone().unwrap_or_default();
        let policy = b.spec.dead_letter_policy_ref.as_ref().and_then(|r| {
            manifest
                .policies
                .iter()
                .find(|p| p.metadata.name.as_deref() == Some(&r.name))
        });
        if let Some(q) = b.spec.sqs.as_ref().filter(|q| q.create) {
            let made = provision::ensure_sqs(&sqs, q, policy)
                .await
                .with_context(|| format!("QueueBinding {name:?}"))?;
            println!(
                "queue   {name}: {}{}",
                made.url,
                made.dlq_url
                    .map(|d| format!(" (DLQ {d})"))
                    .unwrap_or_default()
            );
        }
        if let Some(s) = b.spec.dynamodb_stream.as_ref().filter(|s| s.create) {
            let table = s.table_name.clone().unwrap_or_default();
            provision::ensure_stream_table(&ddb, &table)
                .await
                .with_context(|| format!("QueueBinding {name:?}"))?;
            let dlq = match policy {
                Some(p) => format!(
                    " (DLQ {})",
                    provision::ensure_dead_letter_queue(&sqs, &table, p, None).await?
                ),
                None => String::new(),
            };
            println!("stream  {name}: table {table}{dlq}");
        }
    }
    Ok(())
}

/// Writes a random secret for every webhook key that has none yet.
fn generate_missing_secrets(manifest: &Manifest, dir: &Path) -> anyhow::Result<()> {
    for p in &manifest.pipelines {
        for hook in p.spec.ingress.iter().flat_map(|i| &i.webhooks) {
            let r = &hook.signature.secret_ref;
            let secret_dir = dir.join(&r.name);
            let file = secret_dir.join(&r.key);
            if !file.exists() {
                std::fs::create_dir_all(&secret_dir)?;
                let secret = Verifier::new(&hook.signature)
                    .map_err(|e| anyhow::anyhow!("webhook {}: {e}", hook.name))?
                    .new_secret();
                std::fs::write(&file, &secret)?;
                println!(
                    "secret  {}/{}: generated in {}",
                    r.name,
                    r.key,
                    file.display()
                );
            }
            // Never generated: a previous secret is the one senders had before.
            if let Some(r) = &hook.signature.previous_secret_ref {
                let file = dir.join(&r.name).join(&r.key);
                let state = match file.exists() {
                    true => "accepted too, from",
                    false => "none yet (only the current one verifies) at",
                };
                println!(
                    "secret  {}/{} (previous): {state} {}",
                    r.name,
                    r.key,
                    file.display()
                );
            }
        }
    }
    Ok(())
}

pub async fn run(dev: Dev, emulator: &Emulator) -> anyhow::Result<()> {
    println!("AWS endpoint {}", emulator.endpoint);
    let running = start(&dev).await?;
    let config = dev
        .files
        .iter()
        .map(|f| f.display().to_string())
        .collect::<Vec<_>>()
        .join(" ");
    for (pipeline, webhook, url) in &running.webhooks {
        println!("webhook {pipeline}/{webhook}: POST {url}");
        println!(
            "        try: eventpipe send --config {config} --to {url} --secrets-dir {} {pipeline} {webhook}",
            running.secrets_dir.display()
        );
    }
    if let Some(url) = page_url(&dev, &running) {
        println!("page    {url}");
    }
    if let Some((at, token)) = &running.console {
        println!("console http://{at}/#token={token}");
    }
    println!("metrics http://{}/metrics; Ctrl-C stops", running.ops);
    ops::shutdown_signal().await;
    println!("stopping: finishing in-flight deliveries");
    running.stop().await;
    Ok(())
}
