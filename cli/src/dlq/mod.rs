//! `eventpipe dlq list|show|redrive`: what a pipeline's dead-letter queues hold, and
//! sending it back once the cause is fixed.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use eventpipe_crds::Manifest;
use eventpipe_worker::Pattern;

use eventpipe_console::dead_letters::{self as queues, DeadLetter, DeadLetterQueue};

#[derive(Args)]
pub struct Dlq {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct Target {
    /// The manifest holding the pipeline and its QueueBindings and DeadLetterPolicies.
    #[arg(long)]
    config: PathBuf,
    /// The EventPipeline whose dead letters to look at.
    pipeline: String,
    /// Only this source QueueBinding's dead-letter queue.
    #[arg(long)]
    source: Option<String>,
    /// Mounted Secrets with binding credentials, as `<dir>/<name>/<key>`.
    #[arg(long, default_value = "/etc/eventpipe/secrets")]
    secrets_dir: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// List dead letters with the error that sent them there.
    List {
        #[command(flatten)]
        target: Target,
        /// At most this many per queue.
        #[arg(long, default_value_t = 100)]
        max: usize,
    },
    /// Show one dead letter (by message id or event id) in full.
    Show {
        #[command(flatten)]
        target: Target,
        id: String,
    },
    /// Send dead letters back to their source queue.
    Redrive {
        #[command(flatten)]
        target: Target,
        /// Only those matching this EventBridge pattern (JSON), e.g. '{"type": ["push"]}'.
        #[arg(long)]
        filter: Option<String>,
        /// Messages per second.
        #[arg(long, default_value_t = 10.0)]
        rate: f64,
        /// At most this many per queue.
        #[arg(long, default_value_t = 1000)]
        max: usize,
    },
}

async fn queues(t: &Target) -> anyhow::Result<Vec<DeadLetterQueue>> {
    let pipeline = Manifest::load(&t.config)?.pipeline(&t.pipeline)?;
    queues::queues(&pipeline, t.source.as_deref(), &t.secrets_dir).await
}

impl Dlq {
    pub async fn run(self) -> anyhow::Result<()> {
        match self.command {
            Command::List { target, max } => list(&target, max).await,
            Command::Show { target, id } => show(&target, &id).await,
            Command::Redrive {
                target,
                filter,
                rate,
                max,
            } => {
                let pattern = filter.as_deref().map(pattern).transpose()?;
                redrive(&target, pattern.as_ref(), rate, max).await
            }
        }
    }
}

async fn list(target: &Target, max: usize) -> anyhow::Result<()> {
    for q in queues(target).await? {
        let letters = q.list(max).await?;
        println!(
            "{} ({}): {} dead letter(s)",
            q.binding,
            q.url,
            letters.len()
        );
        for l in &letters {
            println!("  {}", line(l));
        }
    }
    Ok(())
}

async fn show(target: &Target, id: &str) -> anyhow::Result<()> {
    for q in queues(target).await? {
        let letters = q.list(10_000).await?;
        if let Some(l) = letters
            .iter()
            .find(|l| l.message_id == id || l.event_id.as_deref() == Some(id))
        {
            println!("queue: {}\nmessage id: {}", q.url, l.message_id);
            let mut attrs: Vec<_> = l.attributes.iter().collect();
            attrs.sort();
            for (k, v) in attrs {
                println!("{k}: {v}");
            }
            let body = serde_json::from_str::<serde_json::Value>(&l.body)
                .map(|v| serde_json::to_string_pretty(&v).unwrap_or_default())
                .unwrap_or_else(|_| l.body.clone());
            println!("\n{body}");
            return Ok(());
        }
    }
    anyhow::bail!("no dead letter with message id or event id {id:?}");
}

async fn redrive(
    target: &Target,
    pattern: Option<&Pattern>,
    rate: f64,
    max: usize,
) -> anyhow::Result<()> {
    for q in queues(target).await? {
        let (moved, left) = q.redrive(pattern, rate, max).await?;
        println!(
            "{}: redrove {moved} to {}, {left} left in the DLQ",
            q.binding, q.source_url
        );
    }
    Ok(())
}

/// The `--filter` pattern: an EventBridge pattern as a JSON object.
fn pattern(text: &str) -> anyhow::Result<Pattern> {
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| anyhow::anyhow!("--filter is not JSON: {e}"))?;
    let obj = v
        .as_object()
        .ok_or_else(|| anyhow::anyhow!("--filter must be a JSON object"))?;
    Ok(Pattern::compile(obj)?)
}

fn line(l: &DeadLetter) -> String {
    format!(
        "{}  event={}  type={}  receives={}  error={}",
        l.message_id,
        l.event_id.as_deref().unwrap_or("-"),
        l.event_type.as_deref().unwrap_or("-"),
        l.receive_count.as_deref().unwrap_or("-"),
        l.error.as_deref().unwrap_or("-"),
    )
}
