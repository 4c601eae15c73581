//! `eventpipe demo` for an example with a scenario: the example run locally, the
//! scenario's events signed and sent to its webhooks (a client subscribing after each
//! `202` where the scenario says so, its push awaited and timed), then its table (and
//! published events) read until every expectation holds or the timeout passes, and a
//! report.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use eventpipe_core::provision;
use eventpipe_crds::Manifest;
use serde_json::Value;

use crate::demo::scan;
use crate::dev::{self, Dev};
use crate::scenario::{self, Scenario};
use crate::send;
use crate::subscribe::{self, Accepted};

/// What the demo found.
#[derive(Default)]
struct Seen {
    /// The table's items by key.
    items: BTreeMap<String, Value>,
    /// The outbox items' ids.
    outbox: BTreeSet<String>,
    /// The published events, as received, and how many times each id came.
    events: Vec<Value>,
    received: BTreeMap<String, usize>,
    /// What is wrong with the events pushed to subscribers, and each push's time
    /// after its POST.
    push_problems: Vec<String>,
    push_latencies: Vec<Duration>,
}

pub async fn run(dev: Dev, path: &Path, timeout: Duration) -> anyhow::Result<()> {
    let scenario = Scenario::load(path)?;
    let manifest = Manifest::load_all(&dev.files)?;
    scenario.check(&manifest)?;
    check_services(&manifest, &scenario.services).await?;
    println!("{}\n", scenario.about);
    let running = dev::start(&dev).await?;
    let result = drive(&scenario, &running, timeout).await;
    // Stopped before the report, so no log line of the pipeline comes after it.
    running.stop().await;
    let (accepted, seen) = result?;
    report(&scenario, &seen);
    verdict(&scenario, accepted, &seen, path)
}

/// Every container processor's port answers: the example's services run.
async fn check_services(manifest: &Manifest, services: &str) -> anyhow::Result<()> {
    for (port, pipelines) in scenario::service_ports(manifest) {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let connect = tokio::net::TcpStream::connect(addr);
        if !matches!(
            tokio::time::timeout(Duration::from_secs(1), connect).await,
            Ok(Ok(_))
        ) {
            anyhow::bail!(
                "nothing listens on {addr}, where {} deliver (container processor): start the example's services first: {services}",
                pipelines.join(", ")
            );
        }
    }
    Ok(())
}

async fn drive(
    scenario: &Scenario,
    running: &dev::Running,
    timeout: Duration,
) -> anyhow::Result<(usize, Seen)> {
    let (accepted, pushed) = send_all(scenario, running, timeout).await?;
    println!(
        "sent {} events, accepted {accepted} (202 once stored)",
        scenario.send.len()
    );
    let mut seen = settle(scenario, timeout).await?;
    (seen.push_problems, seen.push_latencies) = pushed;
    Ok((accepted, seen))
}

/// Signs and sends the events one after the other, following each to its push where
/// the scenario subscribes: how many were answered 202, and what the pushes showed.
async fn send_all(
    scenario: &Scenario,
    running: &dev::Running,
    timeout: Duration,
) -> anyhow::Result<(usize, (Vec<String>, Vec<Duration>))> {
    let client = reqwest::Client::new();
    let (mut accepted, mut problems, mut latencies) = (0, vec![], vec![]);
    for e in &scenario.send {
        let hook = (running
            .manifest
            .pipeline(&e.pipeline)?
            .pipeline
            .spec
            .ingress)
            .and_then(|i| i.webhooks.into_iter().find(|w| w.name == e.webhook))
            .context("checked with the scenario")?;
        let url = (running.webhooks.iter())
            .find(|(p, w, _)| *p == e.pipeline && *w == e.webhook)
            .map(|(_, _, url)| url.clone())
            .context("every webhook of the manifest is served")?;
        let secret = send::read_secret(&hook, &running.secrets_dir)?;
        let body = serde_json::to_vec(&e.data)?;
        let mut request = client.post(&url).body(body.clone());
        for (k, v) in send::headers(&hook, &secret, &body, e.event_type.as_deref())? {
            request = request.header(k, v);
        }
        let posted = Instant::now();
        let response = request
            .send()
            .await
            .with_context(|| format!("POST {url}"))?;
        let status = response.status().as_u16();
        accepted += usize::from(status == 202);
        let Some(want) = &e.subscribe else { continue };
        let body = response.text().await.unwrap_or_default();
        let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        print!("POST {} {} → {status}", hook.path, e.data);
        if status != 202 {
            println!(" {body}");
            continue;
        }
        let base = format!("http://{}", running.ingress.context("no webhook listener")?);
        let accepted = Accepted::from_body(&body)?;
        println!(", event {}", accepted.event_id);
        let push = subscribe::first_push(&client, &base, &want.path, &accepted, timeout).await;
        match push {
            Ok((_, event)) => {
                latencies.push(posted.elapsed());
                println!(
                    "  ← pushed {}, {} ms after the POST",
                    pushed(&event),
                    posted.elapsed().as_millis()
                );
                problems.extend(scenario::push_problem(want, &accepted.event_id, &event));
            }
            Err(err) => problems.push(format!("event {}: {err:#}", accepted.event_id)),
        }
    }
    Ok((accepted, (problems, latencies)))
}

/// A pushed event as the transcript shows it: its type, why it failed if it did,
/// and the event it is about.
fn pushed(event: &Value) -> String {
    let why = (event["data"]["error"].as_str()).map_or(String::new(), |e| format!(" ({e})"));
    let about = event["data"]["eventId"].as_str().unwrap_or("-");
    format!(
        "{}{why} for event {about}",
        scenario::shown(event.get("type"))
    )
}

/// Reads what the pipelines made of the events until the scenario's expectations
/// hold, or the timeout passes.
async fn settle(scenario: &Scenario, timeout: Duration) -> anyhow::Result<Seen> {
    let config = eventpipe_core::aws::default_config().await;
    let (ddb, sqs) = (
        aws_sdk_dynamodb::Client::new(&config),
        aws_sdk_sqs::Client::new(&config),
    );
    let queue = match &scenario.published {
        Some(p) => Some(provision::url_of(&sqs, &p.queue).await?),
        None => None,
    };
    let deadline = Instant::now() + timeout;
    let mut seen = Seen::default();
    while Instant::now() < deadline {
        seen.items = keyed(scan(&ddb, &scenario.table.name).await?, &scenario.table.key);
        if let (Some(p), Some(url)) = (&scenario.published, &queue) {
            seen.outbox = keyed(scan(&ddb, &p.outbox).await?, "id")
                .into_keys()
                .collect();
            for event in drain(&sqs, url).await? {
                let id = event["id"].as_str().unwrap_or_default().to_string();
                *seen.received.entry(id).or_default() += 1;
                seen.events.push(event);
            }
        }
        if problems(scenario, &seen).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Ok(seen)
}

fn problems(scenario: &Scenario, seen: &Seen) -> Vec<String> {
    let mut out = seen.push_problems.clone();
    out.extend(scenario::mismatches(
        &scenario.expect,
        &seen.items,
        &scenario.table.name,
    ));
    if let Some(p) = &scenario.published {
        out.extend(scenario::publication_errors(
            p.items,
            &seen.outbox,
            &seen.received,
        ));
    }
    out
}

fn report(scenario: &Scenario, seen: &Seen) {
    if let Some(latency) = scenario::latency(&seen.push_latencies) {
        println!("\nlatency POST → push (subscribed after the 202): {latency}");
    }
    let t = &scenario.table;
    let header: Vec<String> = std::iter::once(&t.key).chain(&t.columns).cloned().collect();
    let rows = seen.items.iter().map(|(key, item)| {
        let cells = t.columns.iter().map(|c| scenario::shown(item.get(c)));
        std::iter::once(key.clone()).chain(cells).collect()
    });
    println!("\n{}:", t.name);
    print_table(std::iter::once(header).chain(rows).collect());
    if let Some(p) = &scenario.published {
        println!(
            "\npublished on {}: {} events for {} items of {}",
            p.queue,
            seen.events.len(),
            seen.outbox.len(),
            p.outbox
        );
        let header = ["id", "type", "subject", "trace"]
            .map(String::from)
            .to_vec();
        let rows = seen.events.iter().map(|e| {
            let trace = e["traceparent"].as_str().and_then(|t| t.split('-').nth(1));
            vec![
                scenario::shown(e.get("id")),
                scenario::shown(e.get("type")),
                scenario::shown(e.get("subject")),
                trace.unwrap_or("-").to_string(),
            ]
        });
        print_table(std::iter::once(header).chain(rows).collect());
    }
}

/// Rows in columns as wide as their widest cell.
fn print_table(rows: Vec<Vec<String>>) {
    let columns = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..columns)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        println!("  {}", cells.join("  ").trim_end());
    }
}

fn verdict(scenario: &Scenario, accepted: usize, seen: &Seen, path: &Path) -> anyhow::Result<()> {
    let mut problems = problems(scenario, seen);
    let sent = scenario.send.len();
    problems.splice(0..0, scenario::not_accepted(sent, accepted));
    if problems.is_empty() {
        println!("\nOK: everything {} expects holds", path.display());
        return Ok(());
    }
    anyhow::bail!(
        "not as {} expects:\n  {}",
        path.display(),
        problems.join("\n  ")
    )
}

/// Items by the string value of `key`, an attribute or a JSON pointer (items without
/// one are left out).
fn keyed(items: Vec<Value>, key: &str) -> BTreeMap<String, Value> {
    (items.into_iter())
        .filter_map(|i| Some((scenario::key_of(&i, key)?.to_string(), i)))
        .collect()
}

/// Receives and deletes what the queue holds now, as its subscriber would: the
/// structured CloudEvents of its messages.
async fn drain(sqs: &aws_sdk_sqs::Client, url: &str) -> anyhow::Result<Vec<Value>> {
    let mut events = vec![];
    for _ in 0..100 {
        let out = (sqs.receive_message())
            .queue_url(url)
            .max_number_of_messages(10)
            .send()
            .await
            .with_context(|| format!("receive from {url}"))?;
        let messages = out.messages.unwrap_or_default();
        if messages.is_empty() {
            break;
        }
        for m in messages {
            events.push(serde_json::from_str(m.body().unwrap_or_default()).unwrap_or(Value::Null));
            if let Some(handle) = m.receipt_handle() {
                sqs.delete_message()
                    .queue_url(url)
                    .receipt_handle(handle)
                    .send()
                    .await?;
            }
        }
    }
    Ok(events)
}
