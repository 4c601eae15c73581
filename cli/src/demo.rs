//! `eventpipe demo`: the GitHub analytics pipeline run locally, a few hundred signed
//! `issue_comment` webhooks (some of them poison) sent through it, and a summary of
//! what happened. Exits non-zero when the numbers do not add up. An example with a
//! scenario beside it (`x.demo.json`) runs that scenario instead (`scenario_run.rs`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use eventpipe_core::{item, provision};
use eventpipe_crds::{Manifest, Webhook};
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use crate::dev::{self, Dev};
use crate::{scenario, scenario_run, send};

#[derive(Args)]
pub struct Demo {
    /// The pipeline manifest (GitHub analytics: webhook → queue → table → stream → counts,
    /// or an example with a scenario beside it, `<name>.demo.json`).
    #[arg(
        short = 'f',
        long = "file",
        default_value = "examples/github-analytics.yaml"
    )]
    file: PathBuf,
    /// Webhooks to send.
    #[arg(long, default_value_t = 300)]
    events: usize,
    /// How many of them are poison (no repository, so they cannot be counted).
    #[arg(long, default_value_t = 5)]
    poison: usize,
    /// Webhooks per second: a steady rate the local emulator sustains, as senders
    /// spread over time would, so the latency reported is the pipeline's, not a
    /// burst's backlog.
    #[arg(long, default_value_t = 50.0)]
    rate: f64,
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    #[arg(long, default_value = "127.0.0.1:0")]
    ops_listen: SocketAddr,
    /// Longest wait for the pipeline to settle.
    #[arg(long, default_value = "180s")]
    timeout: eventpipe_crds::Duration,
    #[command(flatten)]
    pub logs: dev::Logs,
}

const REPOSITORIES: [&str; 3] = ["acme/widgets", "acme/gadgets", "acme/docs"];

/// Where the example keeps what the demo reads back.
struct Tables {
    events: String,
    counts: String,
    counter: String,
    dead_letters: String,
}

fn tables(manifest: &Manifest) -> anyhow::Result<Tables> {
    let processors: Vec<_> = manifest
        .pipelines
        .iter()
        .filter_map(|p| p.spec.processor.dynamodb.clone())
        .collect();
    let events = processors
        .iter()
        .find(|d| d.aggregate.is_none())
        .context("no pipeline writes events into a table")?;
    let counts = processors
        .iter()
        .find(|d| d.aggregate.is_some())
        .context("no pipeline counts into a table")?;
    let stream = manifest
        .bindings
        .iter()
        .find_map(|b| b.spec.dynamodb_stream.as_ref()?.table_name.clone())
        .context("no stream binding")?;
    Ok(Tables {
        events: events.table_name.clone(),
        counts: counts.table_name.clone(),
        counter: counts
            .aggregate
            .as_ref()
            .map(|a| a.counter.clone())
            .unwrap_or_default(),
        dead_letters: format!("{stream}-dlq"),
    })
}

fn comment(i: usize, poison: bool) -> Value {
    let mut body = json!({
        "action": "created",
        "issue": {"number": 1 + i % 25, "title": format!("Issue {}", 1 + i % 25)},
        "comment": {"id": 1000 + i, "body": format!("comment {i}"), "user": {"login": "octocat"}},
        "repository": {"full_name": REPOSITORIES[i % REPOSITORIES.len()]},
        "sender": {"login": "octocat"},
    });
    if poison {
        body.as_object_mut()
            .expect("a JSON object")
            .remove("repository");
    }
    body
}

impl Demo {
    pub async fn run(self) -> anyhow::Result<()> {
        let dev = Dev {
            files: vec![self.file.clone()],
            listen: self.listen,
            ops_listen: self.ops_listen,
            secrets_dir: None,
            static_dir: None,
            logs: self.logs,
            console: Default::default(),
        };
        let scenario = scenario::path_for(&self.file);
        if scenario.exists() {
            return scenario_run::run(dev, &scenario, self.timeout.as_std()).await;
        }
        let running = dev::start(&dev).await?;
        let result = self.drive(&running).await;
        // Stopped before the report, so no log line of the pipeline comes after it.
        running.stop().await;
        let (accepted, outcome, t) = result?;
        outcome.print(&t);
        self.verdict(accepted, &outcome)
    }

    /// Sends the webhooks and waits for the pipeline to settle: how many were
    /// accepted, and what became of them.
    async fn drive(&self, running: &dev::Running) -> anyhow::Result<(usize, Outcome, Tables)> {
        let t = tables(&running.manifest)?;
        let (pipeline, webhook, url) = running
            .webhooks
            .first()
            .cloned()
            .context("the manifest has no webhook")?;
        let hook = running
            .manifest
            .pipelines
            .iter()
            .filter_map(|p| p.spec.ingress.as_ref())
            .flat_map(|i| &i.webhooks)
            .find(|h| h.name == webhook)
            .cloned()
            .context("the webhook the ingress serves is in the manifest")?;
        println!(
            "\nsending {} signed issue_comment webhooks ({} poison), {}/s, to {pipeline}/{webhook} at {url}",
            self.events, self.poison, self.rate
        );
        let accepted = self.send_all(&hook, &running.secrets_dir, &url).await?;
        println!(
            "accepted {accepted}/{} (202 after each event was stored in the queue)",
            self.events
        );
        let outcome = self.settle(&t, accepted).await?;
        Ok((accepted, outcome, t))
    }

    /// Sends the comments, 16 at a time; how many were answered 202.
    async fn send_all(
        &self,
        hook: &Webhook,
        secrets_dir: &Path,
        url: &str,
    ) -> anyhow::Result<usize> {
        let secret = Arc::new(send::read_secret(hook, secrets_dir)?);
        let client = reqwest::Client::new();
        let gate = Arc::new(Semaphore::new(16));
        let mut sends = tokio::task::JoinSet::new();
        let poison_every = self.events / self.poison.max(1);
        let mut pace = tokio::time::interval(Duration::from_secs_f64(1.0 / self.rate.max(0.1)));
        for i in 0..self.events {
            pace.tick().await;
            let poison = self.poison > 0
                && i % poison_every == poison_every - 1
                && i / poison_every < self.poison;
            let body = serde_json::to_vec(&comment(i, poison))?;
            let headers = send::headers(hook, &secret, &body, Some("issue_comment"))?;
            let (client, url, gate) = (client.clone(), url.to_string(), gate.clone());
            sends.spawn(async move {
                let _permit = gate.acquire_owned().await;
                let mut request = client.post(&url).body(body);
                for (k, v) in headers {
                    request = request.header(k, v);
                }
                request
                    .send()
                    .await
                    .map(|r| r.status().as_u16() == 202)
                    .unwrap_or(false)
            });
        }
        let mut accepted = 0;
        while let Some(ok) = sends.join_next().await {
            accepted += usize::from(ok.unwrap_or(false));
        }
        Ok(accepted)
    }

    /// Reads the tables and the dead-letter queue until every accepted event is
    /// accounted for, or the timeout passes.
    async fn settle(&self, t: &Tables, accepted: usize) -> anyhow::Result<Outcome> {
        let config = eventpipe_core::aws::default_config().await;
        let (ddb, sqs) = (
            aws_sdk_dynamodb::Client::new(&config),
            aws_sdk_sqs::Client::new(&config),
        );
        let dlq = provision::url_of(&sqs, &t.dead_letters).await?;
        let deadline = Instant::now() + self.timeout.as_std();
        let mut outcome = Outcome::default();
        while Instant::now() < deadline {
            outcome = Outcome::read(&ddb, &sqs, t, &dlq).await?;
            if outcome.stored.len() >= accepted
                && outcome.counted as usize + outcome.dead >= accepted
            {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        Ok(outcome)
    }

    fn verdict(&self, accepted: usize, o: &Outcome) -> anyhow::Result<()> {
        let expected_poison = self.poison.min(accepted);
        let adds_up = accepted == self.events
            && o.stored.len() == accepted
            && o.dead == expected_poison
            && o.counted as usize == accepted - expected_poison;
        if adds_up {
            println!("\nOK: every accepted event was processed, counted once or dead-lettered");
            Ok(())
        } else {
            anyhow::bail!(
                "the numbers do not add up: sent {}, accepted {accepted}, stored {}, counted {}, dead-lettered {} (want {expected_poison})",
                self.events,
                o.stored.len(),
                o.counted,
                o.dead
            )
        }
    }
}

/// What the pipeline made of the events: the stored ones, the counter items by id,
/// their total, and the depth of the dead-letter queue.
#[derive(Default)]
struct Outcome {
    stored: Vec<Value>,
    counts: BTreeMap<String, Value>,
    counted: i64,
    dead: usize,
}

impl Outcome {
    async fn read(
        ddb: &aws_sdk_dynamodb::Client,
        sqs: &aws_sdk_sqs::Client,
        t: &Tables,
        dlq: &str,
    ) -> anyhow::Result<Self> {
        let stored = scan(ddb, &t.events).await?;
        let counts = scan(ddb, &t.counts)
            .await?
            .into_iter()
            .map(|c| (c["id"].as_str().unwrap_or_default().to_string(), c))
            .collect();
        Ok(Self {
            stored,
            counted: counted(&counts, &t.counter),
            counts,
            dead: provision::queue_depth(sqs, dlq).await? as usize,
        })
    }

    fn print(&self, t: &Tables) {
        println!(
            "processed {} into table {} (webhook → SQS → worker → DynamoDB)",
            self.stored.len(),
            t.events
        );
        println!(
            "counted {} in table {} (table stream → worker → aggregate)",
            self.counted, t.counts
        );
        println!(
            "dead-lettered {} into {} (comments without a repository)",
            self.dead, t.dead_letters
        );
        println!("\n{:<16} {:<12} {:>8}", "repository", "day", t.counter);
        for c in self.counts.values() {
            println!(
                "{:<16} {:<12} {:>8}",
                c["repository"].as_str().unwrap_or("-"),
                c["day"].as_str().unwrap_or("-"),
                c[&t.counter]
            );
        }
        self.print_latency();
        self.print_trace();
    }

    fn print_latency(&self) {
        let mut latencies: Vec<f64> = self.stored.iter().filter_map(latency_ms).collect();
        latencies.sort_by(f64::total_cmp);
        if !latencies.is_empty() {
            let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize];
            println!(
                "\nlatency webhook → stored: p50 {:.0} ms, p99 {:.0} ms ({} events)",
                pct(0.5),
                pct(0.99),
                latencies.len()
            );
        }
    }

    fn print_trace(&self) {
        if let Some(trace) = self
            .stored
            .iter()
            .find_map(|s| s["_eventpipe"]["traceparent"].as_str())
            .and_then(|tp| tp.split('-').nth(1))
        {
            println!("one trace: {trace}");
            println!(
                "  view it: run Jaeger (docker run -p 16686:16686 -p 4318:4318 jaegertracing/all-in-one),"
            );
            println!(
                "  then OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4318 make demo, and open http://localhost:16686/trace/<trace id>"
            );
        }
    }
}

/// The total of the counter attribute over the counter items.
fn counted(counts: &BTreeMap<String, Value>, counter: &str) -> i64 {
    counts
        .values()
        .map(|c| c[counter].as_i64().unwrap_or(0))
        .sum()
}

/// Milliseconds from the event's time (set at the ingress) to its write into the table.
fn latency_ms(item: &Value) -> Option<f64> {
    let parse = |v: &Value| chrono::DateTime::parse_from_rfc3339(v.as_str()?).ok();
    let (from, to) = (
        parse(&item["time"])?,
        parse(&item["_eventpipe"]["stored_at"])?,
    );
    Some((to - from).num_microseconds()? as f64 / 1000.0)
}

pub(crate) async fn scan(
    ddb: &aws_sdk_dynamodb::Client,
    table: &str,
) -> anyhow::Result<Vec<Value>> {
    let mut all = vec![];
    let mut start = None;
    for _ in 0..1000 {
        let out = ddb
            .scan()
            .table_name(table)
            .set_exclusive_start_key(start)
            .send()
            .await
            .with_context(|| format!("scan {table}"))?;
        all.extend(out.items.unwrap_or_default().into_iter().map(item::to_json));
        start = out.last_evaluated_key;
        if start.is_none() {
            break;
        }
    }
    Ok(all)
}
