//! `eventpipe`: the command line for pipelines, with or without a cluster.

mod dlq;

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
}

#[tokio::main]
async fn main() -> ExitCode {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let result = match Cli::parse().command {
        Command::Validate { files } => validate(&files).map(|summary| println!("{summary}")),
        Command::Dlq(dlq) => dlq.run().await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
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
