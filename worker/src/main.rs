//! `eventpipe-worker`: consumes a pipeline's sources until SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use eventpipe_core::{aws, ops, telemetry};
use eventpipe_crds::{Duration, Manifest};
use eventpipe_worker::{Metrics, Options, StreamOptions, Worker, streams};
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "eventpipe-worker",
    version,
    about = "Consumes a pipeline's SQS queues and DynamoDB streams and delivers events to its processor"
)]
struct Args {
    /// The pipeline documents (EventPipeline and the QueueBindings and DeadLetterPolicies it references).
    #[arg(long, env = "EVENTPIPE_CONFIG")]
    config: PathBuf,
    /// Consume only these pipelines of the file (default: all).
    #[arg(long)]
    pipeline: Vec<String>,
    /// Prometheus metrics, /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:9090")]
    metrics_listen: SocketAddr,
    /// Mounted Secrets, as `<dir>/<name>/<key>`.
    #[arg(long, default_value = "/etc/eventpipe/secrets")]
    secrets_dir: PathBuf,
    /// How long in-flight deliveries may finish after SIGTERM before they are handed back.
    #[arg(long, default_value = "25s")]
    grace_period: Duration,
    /// This replica's name in DynamoDB stream lease tables (default: `<hostname>-<pid>`).
    #[arg(long, env = "EVENTPIPE_WORKER_ID")]
    worker_id: Option<String>,
    /// How long a stream shard lease lasts unrenewed before another replica takes it over.
    #[arg(long, default_value = "30s")]
    lease_duration: Duration,
}

// One thread: the worker mostly waits on the network, and a runtime thread per core
// spent more CPU waking its threads for each answer than on the answers (BENCHMARKS.md).
#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let args = Args::parse();
    let telemetry = telemetry::init("eventpipe-worker");
    let code = match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    };
    telemetry.shutdown();
    code
}

async fn run(args: Args) -> anyhow::Result<()> {
    let manifest = Manifest::load(&args.config)?;
    let mut pipelines = manifest.resolved()?;
    if pipelines.is_empty() {
        anyhow::bail!("{}: no EventPipeline to run", args.config.display());
    }
    if !args.pipeline.is_empty() {
        pipelines = args
            .pipeline
            .iter()
            .map(|n| manifest.pipeline(n))
            .collect::<Result<_, _>>()?;
    }
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let ready = ops::Ready::default();
    let stop = CancellationToken::new();
    let listener = tokio::net::TcpListener::bind(args.metrics_listen).await?;
    let ops_stop = stop.clone();
    let ops = tokio::spawn(ops::serve(
        listener,
        Arc::new(registry),
        ready.clone(),
        metrics.feed.clone(),
        async move { ops_stop.cancelled().await },
    ));

    let options = Options {
        secrets_dir: args.secrets_dir,
        grace: args.grace_period.as_std(),
        aws: aws::default_config().await,
        streams: StreamOptions {
            worker_id: args.worker_id.unwrap_or_else(streams::default_worker_id),
            lease_duration: args.lease_duration.as_std(),
        },
        push_to: None,
    };
    let worker = Worker::build(&pipelines, &options, &metrics).await?;
    tracing::info!(queues = ?worker.queues(), streams = ?worker.streams(), "consuming");
    ready.set(true);
    let signal_stop = stop.clone();
    tokio::spawn(async move {
        ops::shutdown_signal().await;
        tracing::info!(
            "shutting down: no more receives, finishing in-flight deliveries and releasing stream leases"
        );
        signal_stop.cancel();
    });
    worker.run(stop.clone()).await;
    stop.cancel();
    let _ = ops.await;
    tracing::info!("stopped");
    Ok(())
}
