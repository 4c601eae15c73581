//! `eventpipe-operator`: reconciles eventpipe resources into workloads.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use eventpipe_operator::{RunArgs, run};

#[derive(Parser)]
#[command(
    name = "eventpipe-operator",
    version,
    about = "Reconciles EventPipelines, QueueBindings and DeadLetterPolicies"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run the operator (the default).
    Run(Box<RunArgs>),
    /// Check an installed operator from inside the cluster (what `helm test` runs).
    Check(eventpipe_operator::CheckArgs),
    /// Print the CRDs as multi-document YAML, or write one file per CRD.
    Crds {
        /// Write `<plural>.yaml` files into this directory instead of printing.
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Crds { out_dir }) => crds(out_dir),
        Some(Command::Run(args)) => serve(*args).await,
        Some(Command::Check(args)) => eventpipe_operator::check(args).await,
        None => serve(cli.run).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: RunArgs) -> anyhow::Result<()> {
    let telemetry = eventpipe_core::telemetry::init("eventpipe-operator");
    let result = run(args).await;
    telemetry.shutdown();
    result
}

fn crds(out_dir: Option<PathBuf>) -> anyhow::Result<()> {
    match out_dir {
        None => print!("{}", eventpipe_crds::schema::all_yaml()),
        Some(dir) => {
            for crd in eventpipe_crds::schema::crds() {
                let path = dir.join(eventpipe_crds::schema::file_name(&crd));
                std::fs::write(&path, eventpipe_crds::schema::to_yaml(&crd))?;
                eprintln!("wrote {}", path.display());
            }
        }
    }
    Ok(())
}
