//! `eventpipe-operator`: reconciles eventpipe resources into workloads.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "eventpipe-operator",
    version,
    about = "Reconciles EventPipelines, QueueBindings and DeadLetterPolicies"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the CRDs as multi-document YAML, or write one file per CRD.
    Crds {
        /// Write `<plural>.yaml` files into this directory instead of printing.
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Crds { out_dir: None } => print!("{}", eventpipe_crds::schema::all_yaml()),
        Command::Crds { out_dir: Some(dir) } => {
            for crd in eventpipe_crds::schema::crds() {
                let path = dir.join(eventpipe_crds::schema::file_name(&crd));
                std::fs::write(&path, eventpipe_crds::schema::to_yaml(&crd))?;
                eprintln!("wrote {}", path.display());
            }
        }
    }
    Ok(())
}
