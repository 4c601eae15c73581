//! `eventpipe`: the command line for pipelines, with or without a cluster.

mod demo;
mod dev;
mod dlq;
mod scenario;
mod scenario_run;
mod send;
mod subscribe;

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use eventpipe_crds::Manifest;

#[derive(Parser)]
#[command(
    name = "eventpipe",
    version,
    about = "Event-driven pipelines on SQS and DynamoDB Streams"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check manifests as the API server would (schema, CEL rules, references).
    Validate {
        /// Manifest files (multi-document YAML, as given to `kubectl apply -f`).
        #[arg(short = 'f', long = "file", required = true)]
        files: Vec<PathBuf>,
    },
    /// Inspect and redrive a pipeline's dead letters.
    Dlq(dlq::Dlq),
    /// Run manifests locally: provisioning, ingress and workers, against a local AWS emulator.
    Dev(dev::Dev),
    /// Sign and send events to a webhook, as its real sender does.
    Send(send::Send),
    /// Run an example locally (GitHub analytics, or one with a scenario), send events through it, and report.
    Demo(demo::Demo),
}

fn main() -> ExitCode {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cli = Cli::parse();
    // Local mode picks its AWS endpoint before any thread exists (it sets the SDK's environment).
    if matches!(cli.command, Command::Demo(_)) && std::env::var_os("RUST_LOG").is_none() {
        // SAFETY: no other thread exists yet. The demo's summary is the output; logs only for trouble.
        #[allow(unsafe_code)]
        unsafe {
            std::env::set_var("RUST_LOG", "warn")
        };
    }
    let emulator = match &cli.command {
        Command::Dev(_) | Command::Demo(_) => match dev::emulator() {
            Ok(e) => Some(e),
            Err(e) => return fail(e),
        },
        _ => None,
    };
    let logs = match &cli.command {
        Command::Dev(dev) => Some(dev.logs),
        Command::Demo(demo) => Some(demo.logs),
        _ => None,
    };
    let telemetry =
        logs.map(|l| eventpipe_core::telemetry::init_with("eventpipe", l.log_format.resolve()));
    let runtime = tokio::runtime::Runtime::new().expect("a Tokio runtime starts");
    let result = runtime.block_on(async {
        match cli.command {
            Command::Validate { files } => validate(&files).map(|summary| println!("{summary}")),
            Command::Dlq(dlq) => dlq.run().await,
            Command::Send(send) => send.run().await,
            Command::Dev(dev) => {
                let emulator = emulator.as_ref().expect("picked above for dev");
                dev::run(dev, emulator).await
            }
            Command::Demo(demo) => demo.run().await,
        }
    });
    // Spans still buffered go out before the process ends.
    if let Some(t) = telemetry {
        t.shutdown();
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

fn fail(e: anyhow::Error) -> ExitCode {
    eprintln!("error: {e:#}");
    ExitCode::FAILURE
}

fn validate(files: &[PathBuf]) -> anyhow::Result<String> {
    let manifest = Manifest::load_all(files)?;
    let pipelines = manifest.resolved()?;
    Ok(format!(
        "ok: {} EventPipeline(s) ({}), {} QueueBinding(s), {} DeadLetterPolicy(ies)",
        pipelines.len(),
        manifest.pipeline_names().join(", "),
        manifest.bindings.len(),
        manifest.policies.len()
    ))
}
