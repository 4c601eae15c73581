//! `eventpipe-operator check`: what `helm test` runs inside the cluster, with the
//! operator's own image (no other image to pull): the operator answers, the API serves
//! the eventpipe kinds, and the aggregated external metrics API reaches the operator.

use std::time::Duration;

use anyhow::{Context as _, bail};
use kube::Client;
use tokio::time::Instant;

use crate::render::{QUEUE_DEPTH_METRIC, STREAM_LAG_METRIC};

#[derive(clap::Args, Clone, Debug)]
pub struct CheckArgs {
    /// The operator's readiness endpoint, e.g. http://eventpipe.eventpipe.svc:9090/readyz.
    #[arg(long)]
    pub ready_url: String,
    /// How long the operator's Service and the aggregator may take to answer.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub wait: Duration,
    /// Whether this release serves the external metrics API (false where another
    /// adapter owns its APIService).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub external_metrics: bool,
}

pub async fn check(args: CheckArgs) -> anyhow::Result<()> {
    let deadline = Instant::now() + args.wait;
    // A Service just made may take a moment to resolve and to have ready endpoints.
    until(deadline, async || ready(&args.ready_url).await).await?;
    println!("operator ready: {}", args.ready_url);
    let client = Client::try_default().await?;
    let served = client
        .list_api_group_resources(eventpipe_crds::API_VERSION)
        .await
        .with_context(|| format!("{} not served", eventpipe_crds::API_VERSION))?;
    let names: Vec<&str> = served.resources.iter().map(|r| r.name.as_str()).collect();
    for plural in ["eventpipelines", "queuebindings", "deadletterpolicies"] {
        if !names.contains(&plural) {
            bail!("{plural} not served by the API (it serves {names:?})");
        }
    }
    println!("API serves {}", names.join(", "));
    if !args.external_metrics {
        println!("external metrics: served by another adapter, not checked");
        return Ok(());
    }
    // The aggregator finds the operator behind the APIService a little later still.
    let metrics = until(deadline, async || external_metrics(&client).await).await?;
    println!("external metrics served: {}", metrics.join(", "));
    Ok(())
}

/// The operator's readiness endpoint answers with success. Its certificate may be
/// self-signed; only the answer is read, and nothing secret is sent.
async fn ready(url: &str) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()?;
    let status = (client.get(url).send().await)
        .with_context(|| format!("GET {url}"))?
        .status();
    if !status.is_success() {
        bail!("GET {url}: {status}");
    }
    Ok(())
}

/// Tries `attempt` every 2 s until it succeeds or `deadline` passes; then its error.
async fn until<T>(
    deadline: Instant,
    mut attempt: impl AsyncFnMut() -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    loop {
        match attempt().await {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_secs(2)).await,
        }
    }
}

/// The external metrics the aggregated API lists, when both of the operator's are there.
async fn external_metrics(client: &Client) -> anyhow::Result<Vec<String>> {
    let group = "external.metrics.k8s.io/v1beta1";
    let list = client
        .list_api_group_resources(group)
        .await
        .with_context(|| format!("{group} does not serve the operator's metrics"))?;
    let names: Vec<String> = list.resources.into_iter().map(|r| r.name).collect();
    for metric in [QUEUE_DEPTH_METRIC, STREAM_LAG_METRIC] {
        if !names.iter().any(|n| n == metric) {
            bail!("{group} does not serve the operator's metrics: it lists {names:?}");
        }
    }
    Ok(names)
}
