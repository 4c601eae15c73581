//! `eventpipe-operator run`: the controllers (on the elected leader only), the
//! external metrics API and the ops endpoints (on every replica).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use eventpipe_crds::{EventPipeline, QueueBinding, ScalingEngine};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::EnvVar;
use kube::Client;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use crate::context::{Context, MANAGER};
use crate::controllers;
use crate::external_metrics::front_proxy::{self, RELOAD_EVERY};
use crate::external_metrics::{self, Cache};
use crate::metrics::ApiRequest;
use crate::metrics_auth::{self, MetricsAuth, Reviewer};
use crate::render::Settings;
use crate::scope::{Scope, Stores};
use crate::tls::{ServerCert, tls_config};

/// How long a leader's Lease lasts unrenewed: a killed leader's successor takes over
/// within this.
const LEASE_SECONDS: u64 = 15;

/// Variables of the operator's own environment passed on to ingress and worker pods.
const PASSED_ON: [&str; 7] = [
    "AWS_REGION",
    "AWS_ENDPOINT_URL",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
    "RUST_LOG",
];

#[derive(clap::Args, Clone, Debug)]
pub struct RunArgs {
    /// Prometheus metrics, /healthz and /readyz (127.0.0.1:9090: from this host only);
    /// HTTPS with `--metrics-auth=token`.
    #[arg(long, default_value = "0.0.0.0:9090")]
    pub metrics_listen: SocketAddr,
    /// Who may read /metrics: anyone who reaches it (none), or a bearer token the API
    /// server vouches for whose holder may `get` /metrics (token: TokenReview and
    /// SubjectAccessReview). /healthz and /readyz stay open for the kubelet.
    #[arg(long, value_enum, default_value_t = MetricsAuth::None)]
    pub metrics_auth: MetricsAuth,
    /// The web console, e.g. `0.0.0.0:7070`; none when absent. Read-only unless
    /// `--console-token-file` is given.
    #[arg(long)]
    pub console_listen: Option<SocketAddr>,
    /// A file holding the token a console redrive needs (e.g. a mounted Secret key).
    #[arg(long, requires = "console_listen")]
    pub console_token_file: Option<PathBuf>,
    /// The external.metrics.k8s.io API (HTTPS) the HorizontalPodAutoscaler reads,
    /// through the API server's front proxy, the only client it accepts.
    #[arg(long, default_value = "0.0.0.0:6443")]
    pub external_metrics_listen: SocketAddr,
    /// PEM certificate for the external metrics API and, with `--metrics-auth=token`,
    /// /metrics (self-signed when absent).
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    #[arg(
        long,
        env = "EVENTPIPE_INGRESS_IMAGE",
        default_value = "ghcr.io/eventpipe/eventpipe-ingress:latest"
    )]
    pub ingress_image: String,
    #[arg(
        long,
        env = "EVENTPIPE_WORKER_IMAGE",
        default_value = "ghcr.io/eventpipe/eventpipe-worker:latest"
    )]
    pub worker_image: String,
    /// A Secret (in each pipeline's namespace) with AWS credentials for the workloads.
    #[arg(long, env = "EVENTPIPE_AWS_CREDENTIALS_SECRET")]
    pub aws_credentials_secret: Option<String>,
    /// `imagePullPolicy` of the ingress and worker containers.
    #[arg(long, env = "EVENTPIPE_IMAGE_PULL_POLICY", value_parser = ["Always", "IfNotPresent", "Never"])]
    pub image_pull_policy: Option<String>,
    /// NAME=VALUE set in every ingress and worker container (repeatable), e.g. the
    /// placeholder credentials an AWS emulator takes.
    #[arg(long = "workload-env", value_name = "NAME=VALUE", value_parser = env_var)]
    pub workload_env: Vec<EnvVar>,
    /// Name of the leader-election Lease.
    #[arg(long, default_value = MANAGER)]
    pub lease_name: String,
    /// Namespace of the leader-election Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,
    /// Watch only these namespaces (comma-separated), with permissions granted in each;
    /// empty: the whole cluster.
    #[arg(long, env = "EVENTPIPE_WATCH_NAMESPACES", value_delimiter = ',')]
    pub watch_namespaces: Vec<String>,
    /// What scales the workers of pipelines whose `scaling.engine` does not say: `hpa`
    /// (the metrics this operator serves) or `keda` (KEDA installed, serving them).
    #[arg(long, env = "EVENTPIPE_SCALING_ENGINE", value_enum, default_value_t = Engine::Hpa)]
    pub scaling_engine: Engine,
    /// Run the controllers without electing a leader (a single replica only).
    #[arg(long)]
    pub no_leader_election: bool,
}

/// `--scaling-engine`, as clap reads it.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    Hpa,
    Keda,
}

impl From<Engine> for ScalingEngine {
    fn from(e: Engine) -> Self {
        match e {
            Engine::Hpa => ScalingEngine::Hpa,
            Engine::Keda => ScalingEngine::Keda,
        }
    }
}

fn var(name: &str, value: String) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value: Some(value),
        ..Default::default()
    }
}

fn env_var(arg: &str) -> Result<EnvVar, String> {
    match arg.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok(var(name, value.to_string())),
        _ => Err(format!("{arg:?} is not NAME=VALUE")),
    }
}

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let mut registry = Registry::default();
    let metrics = crate::metrics::Metrics::register(&mut registry);
    let client = counted_client(&metrics).await?;
    let aws = eventpipe_core::aws::default_config().await;
    let ctx = Context::new(client.clone(), settings(&args), aws, metrics.clone());
    let scope = Scope::of(&args.watch_namespaces);
    let stop = CancellationToken::new();
    let ready = eventpipe_core::ops::Ready::default();
    let ops = eventpipe_core::ops::router(Arc::new(registry), ready.clone());
    let cert = ServerCert::load(args.tls_cert.as_deref(), args.tls_key.as_deref())?;
    // A bearer token is a credential: it only travels over TLS.
    let (ops, tls) = match args.metrics_auth {
        MetricsAuth::None => (ops, None),
        MetricsAuth::Token => (
            metrics_auth::protect(ops, Reviewer::new(client.clone(), &metrics)),
            Some(Arc::new(tls_config(&cert, None)?)),
        ),
    };
    let listener = tokio::net::TcpListener::bind(args.metrics_listen).await?;
    tokio::spawn(crate::tls::serve(listener, tls, ops, stop.clone()));
    let pipelines = Stores::<EventPipeline>::watch(&client, &scope);
    let bindings = Stores::<QueueBinding>::watch(&client, &scope);
    let stores = (&pipelines, &bindings);
    let cache = serve_external_metrics(&args, cert, &client, &ctx, stores, &stop).await?;
    if let Some(listen) = args.console_listen {
        let token = (args.console_token_file.as_deref())
            .map(crate::console::read_token)
            .transpose()?;
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let watched =
            crate::console::Watched::sharing(&client, &scope, pipelines.clone(), bindings);
        let console = crate::console::serve(
            listener,
            ctx.clone(),
            watched,
            cache.clone(),
            token,
            stop.clone(),
        );
        tokio::spawn(console);
    }
    ready.set(true);

    let signal_stop = stop.clone();
    tokio::spawn(async move {
        eventpipe_core::ops::shutdown_signal().await;
        signal_stop.cancel();
    });
    let leadership = if args.no_leader_election {
        None
    } else {
        let Some(handle) = become_leader(&client, &args, &stop).await? else {
            return Ok(());
        };
        Some(handle)
    };
    tracing::info!("leading: reconciling EventPipelines, QueueBindings and DeadLetterPolicies");
    let owned = kube::runtime::watcher::Config::default().labels(crate::render::OWNED_SELECTOR);
    let deployments = Stores::<Deployment>::watch_with(&client, &scope, owned);
    let scaler = crate::scaler::run(ctx.clone(), pipelines.clone(), deployments, cache);
    tokio::select! {
        _ = controllers::run(client, ctx, &scope, pipelines) => {}
        _ = scaler => {}
        _ = stop.cancelled() => {}
    }
    stop.cancel();
    if let Some(handle) = leadership {
        let _ = tokio::time::timeout(Duration::from_secs(5), handle).await;
    }
    Ok(())
}

/// What the rendered workloads get from the operator's own arguments and environment.
fn settings(args: &RunArgs) -> Settings {
    let passed_on = PASSED_ON
        .iter()
        .filter_map(|k| Some(var(k, std::env::var(k).ok()?)));
    Settings {
        ingress_image: args.ingress_image.clone(),
        worker_image: args.worker_image.clone(),
        env: passed_on.chain(args.workload_env.clone()).collect(),
        credentials_secret: args.aws_credentials_secret.clone(),
        image_pull_policy: args.image_pull_policy.clone(),
        scaling_engine: args.scaling_engine.into(),
    }
}

/// Serves the external metrics API until `stop`, from a cache refreshed in the
/// background (returned). Every replica serves from its own cache, so the APIService
/// may pick any.
/// Clients are checked against the front proxy's CA, read again every minute.
async fn serve_external_metrics(
    args: &RunArgs,
    cert: ServerCert,
    client: &Client,
    ctx: &Arc<Context>,
    (pipelines, bindings): (&Stores<EventPipeline>, &Stores<QueueBinding>),
    stop: &CancellationToken,
) -> anyhow::Result<Cache> {
    let cache = Cache::default();
    let listener = tokio::net::TcpListener::bind(args.external_metrics_listen).await?;
    let (publish, current) = tokio::sync::watch::channel(None);
    tokio::spawn(front_proxy::keep_current(
        client.clone(),
        cert,
        RELOAD_EVERY,
        publish,
        stop.clone(),
    ));
    let router =
        front_proxy::require_user(external_metrics::router(cache.clone()), current.clone());
    let tls = move || current.borrow().as_ref().map(|s| s.tls.clone());
    tokio::spawn(crate::tls::serve_tls(listener, tls, router, stop.clone()));
    tokio::spawn(refresh_metrics(
        ctx.clone(),
        pipelines.clone(),
        bindings.clone(),
        cache.clone(),
        stop.clone(),
    ));
    Ok(cache)
}

/// A client for the cluster (in-cluster or `KUBECONFIG`) that counts its requests.
async fn counted_client(metrics: &crate::metrics::Metrics) -> anyhow::Result<Client> {
    let config = kube::Config::infer().await?;
    let requests = metrics.api_requests.clone();
    let count = tower::util::MapRequestLayer::new(move |r: http::Request<kube::client::Body>| {
        requests.get_or_create(&ApiRequest::of(&r)).inc();
        r
    });
    Ok(kube::client::ClientBuilder::try_from(config)?
        .with_layer(&count)
        .build())
}

/// Waits until this replica holds the Lease; `None` when stopped first. Losing the
/// Lease later ends the process, so two replicas never reconcile at once. The handle
/// ends once a stopped leader has released the Lease, so a standby takes over at once.
async fn become_leader(
    client: &Client,
    args: &RunArgs,
    stop: &CancellationToken,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    let identity =
        std::env::var("POD_NAME").unwrap_or_else(|_| format!("{MANAGER}-{}", std::process::id()));
    let manager = kube_lease_manager::LeaseManagerBuilder::new(client.clone(), &args.lease_name)
        .with_namespace(&args.lease_namespace)
        .with_identity(identity)
        .with_duration(LEASE_SECONDS)
        .with_grace(5)
        .build()
        .await?;
    let (mut leader, manager) = manager.watch().await;
    loop {
        if *leader.borrow_and_update() {
            break;
        }
        tokio::select! {
            changed = leader.changed() => changed?,
            _ = stop.cancelled() => return Ok(None),
        }
    }
    let stop = stop.clone();
    Ok(Some(tokio::spawn(async move {
        let stopped = tokio::select! {
            _ = stop.cancelled() => true,
            _ = lost(&mut leader) => false,
        };
        if !stopped {
            tracing::error!("lost the leader Lease; stopping");
            std::process::exit(1);
        }
        // Dropping the receiver makes the manager release the Lease and end.
        drop(leader);
        let _ = manager.await;
    })))
}

/// Resolves when this replica no longer holds the Lease.
async fn lost(leader: &mut tokio::sync::watch::Receiver<bool>) {
    while leader.changed().await.is_ok() {
        if !*leader.borrow() {
            return;
        }
    }
}

async fn refresh_metrics(
    ctx: Arc<Context>,
    pipelines: Stores<EventPipeline>,
    bindings: Stores<QueueBinding>,
    cache: Cache,
    stop: CancellationToken,
) {
    loop {
        let all = pipelines.state();
        let read = external_metrics::refresh(&ctx, &all, &bindings.state(), &cache).await;
        tracing::debug!(
            queues = read.queues_read,
            tables = read.tables_read,
            "metrics refreshed"
        );
        let every = external_metrics::polling_interval(&all);
        tokio::select! { _ = tokio::time::sleep(every) => {}, _ = stop.cancelled() => return }
    }
}
