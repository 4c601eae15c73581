//! The web console of `eventpipe dev`, running the GitHub analytics example against
//! moto: the ops port serves the feed, the console's API refuses what it must
//! (unknown pipeline, cross-site or unauthorised redrive), and in headless Chromium the
//! page follows webhooks live, finds a correlation id's path and redrives a dead
//! letter (`tests/browser/console.mjs`; skipped, saying why, without Chromium).
// Set-up steps unwrap: a failure fails the test (clippy's allow-unwrap-in-tests
// covers #[test] functions only, not the helpers of an integration test).
#![allow(clippy::unwrap_used)]

mod chromium;
mod dev;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use dev::DevProcess;
use eventpipe_testkit::Moto;
use serde_json::{Value, json};

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
/// Where trace ids link to (nothing listens: only the links are checked).
const JAEGER: &str = "http://127.0.0.1:16686";

/// `eventpipe dev` running the example, and where it said things are.
struct Dev {
    process: DevProcess,
    secrets: PathBuf,
    webhook: String,
    console: String,
    token: String,
    ops: String,
}

fn start(moto: &Moto) -> Dev {
    let dir = std::env::temp_dir().join(format!("eventpipe-console-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let secrets = dir.join("secrets");
    let args = [
        "-f",
        "examples/github-analytics.yaml",
        "--log-format",
        "json",
        "--listen",
        "127.0.0.1:0",
        "--ops-listen",
        "127.0.0.1:0",
        "--console-listen",
        "127.0.0.1:0",
        "--jaeger-url",
        JAEGER,
        "--secrets-dir",
        secrets.to_str().unwrap(),
    ];
    let process = DevProcess::start(&args, moto, &dir);
    let text = &process.printed;
    let (console, token) = (process.after("console "))
        .and_then(|u| u.split_once("/#token="))
        .unwrap_or_else(|| panic!("no console URL:\n{text}"));
    let ops = process.after("metrics ").unwrap().split("/metrics").next();
    Dev {
        webhook: (process.after("webhook github-ingest/github: POST "))
            .unwrap()
            .into(),
        console: console.into(),
        token: token.into(),
        ops: ops.unwrap().into(),
        secrets,
        process,
    }
}

impl Dev {
    fn send(&self, issue: u32) {
        let data = json!({"action": "created", "issue": {"number": issue}, "comment": {"id": issue},
            "repository": {"full_name": "acme/console"}});
        let sent = Command::new(env!("CARGO_BIN_EXE_eventpipe"))
            .current_dir(ROOT)
            .args(["send", "--config", "examples/github-analytics.yaml"])
            .args(["--event-type", "issue_comment", "--to", &self.webhook])
            .arg("--secrets-dir")
            .arg(&self.secrets)
            .args(["--data", &data.to_string(), "github-ingest", "github"])
            .output()
            .unwrap();
        assert!(
            sent.status.success(),
            "{}",
            String::from_utf8_lossy(&sent.stderr)
        );
    }

    fn logs(&self) -> String {
        self.process.logs()
    }
}

/// Waits (bounded) until `f` gives something.
async fn eventually<T, F: Future<Output = Option<T>>>(what: &str, mut f: impl FnMut() -> F) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn get(url: &str) -> (u16, Value) {
    let r = reqwest::get(url).await.unwrap();
    let status = r.status().as_u16();
    let body = r.text().await.unwrap();
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// A dead letter as the worker leaves one: the CloudEvent, and why it was given up.
async fn dead_letter(moto: &Moto, id: &str) {
    let sqs = moto.sqs();
    let url = (sqs
        .get_queue_url()
        .queue_name("github-events-dlq")
        .send()
        .await)
        .unwrap()
        .queue_url
        .unwrap();
    let event = json!({"specversion": "1.0", "id": id, "source": "/eventpipe/test",
        "type": "issue_comment", "datacontenttype": "application/json", "correlationid": id,
        "data": {"action": "created", "issue": {"number": 9}, "repository": {"full_name": "acme/console"}}});
    let attr = |v: &str| {
        aws_sdk_sqs::types::MessageAttributeValue::builder()
            .data_type("String")
            .string_value(v)
            .build()
            .unwrap()
    };
    (sqs.send_message()
        .queue_url(url)
        .message_body(event.to_string()))
    .message_attributes("eventpipe-error", attr("processor down"))
    .message_attributes("eventpipe-receive-count", attr("3"))
    .send()
    .await
    .unwrap();
}

fn dlq_depth(state: &Value, pipeline: &str) -> Option<i64> {
    let p = state["pipelines"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == pipeline)?;
    p["depths"]["dead_letters"].as_i64()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_console_follows_the_pipelines_and_redrives_only_when_authorised() {
    let moto = Moto::start();
    let dev = start(&moto);
    dev.send(501);

    // The ops port serves the feed: the webhook and the worker, metadata only.
    let records = eventually("the feed to show the event", || async {
        let (_, page) = get(&format!("{}/events", dev.ops)).await;
        let records = page["records"].as_array()?.clone();
        let ours = |c: &str| {
            records
                .iter()
                .any(|r| r["correlation_id"] == "501" && r["component"] == c)
        };
        (ours("ingress") && ours("worker")).then_some(records)
    })
    .await;
    assert!(
        records.iter().all(|r| r.get("data").is_none()),
        "{records:?}"
    );

    // The console: state, search, 404 for an unknown pipeline.
    let (status, state) = get(&format!("{}/api/state", dev.console)).await;
    assert_eq!(status, 200);
    assert_eq!(state["redrive"], true);
    assert_eq!(state["jaeger_url"], JAEGER);
    // A name re-pointed at loopback (DNS rebinding) is not answered.
    let rebound = (reqwest::Client::new().get(format!("{}/api/state", dev.console)))
        .header("host", "evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(rebound.status().as_u16(), 421);
    // The correlation id's path: webhook, worker, then the stream's aggregator.
    let path = eventually("the aggregator to count the event", || async {
        let (_, path) = get(&format!("{}/api/search?correlation_id=501", dev.console)).await;
        let steps: Vec<String> = (path.as_array()?.iter())
            .map(|r| {
                format!(
                    "{}/{}",
                    r["pipeline"].as_str().unwrap(),
                    r["component"].as_str().unwrap()
                )
            })
            .collect();
        (steps.len() >= 3).then_some(steps)
    })
    .await;
    assert_eq!(
        path,
        [
            "github-ingest/ingress",
            "github-ingest/worker",
            "github-aggregate/worker"
        ]
    );
    // The aggregator's stream lag, from its leases in the checkpoint table; a queue
    // pipeline has none.
    let pipeline_in = |state: &Value, name: &str| {
        let all = state["pipelines"].as_array()?;
        all.iter().find(|p| p["name"] == name).cloned()
    };
    let (lag, state) = eventually("the aggregator's stream lag", || async {
        let (_, state) = get(&format!("{}/api/state", dev.console)).await;
        let lag =
            pipeline_in(&state, "github-aggregate")?["depths"]["stream_lag_seconds"].as_i64()?;
        Some((lag, state))
    })
    .await;
    assert!(lag < 60, "caught up: {lag} s");
    let ingest = pipeline_in(&state, "github-ingest").unwrap();
    assert!(ingest["depths"]["stream_lag_seconds"].is_null(), "{ingest}");
    for unknown in [
        "nope/dead-letters",
        "github-ingest/dead-letters/nope",
        "github-aggregate/dead-letters",
    ] {
        let (status, body) = get(&format!("{}/api/pipelines/{unknown}", dev.console)).await;
        assert_eq!(status, 404, "{unknown}: {body}");
    }

    // A redrive needs the page's header, the same origin and the token.
    let redrive_in =
        |pipeline: &str, headers: &'static [(&'static str, &'static str)], token: Option<&str>| {
            let url = format!("{}/api/pipelines/{pipeline}/redrive", dev.console);
            let mut r = (reqwest::Client::new().post(url))
                .header("content-type", "application/json")
                .body(json!({"ids": ["x"]}).to_string());
            for (k, v) in headers {
                r = r.header(*k, *v);
            }
            if let Some(t) = token {
                r = r.header("authorization", format!("Bearer {t}"));
            }
            async move { r.send().await.unwrap().status().as_u16() }
        };
    let redrive = |headers, token| redrive_in("github-ingest", headers, token);
    let page = &[("x-eventpipe-console", "1")];
    assert_eq!(redrive(&[], Some(&dev.token)).await, 403, "no header");
    let elsewhere = &[
        ("x-eventpipe-console", "1"),
        ("origin", "https://evil.example"),
    ];
    assert_eq!(
        redrive(elsewhere, Some(&dev.token)).await,
        403,
        "another origin"
    );
    assert_eq!(redrive(page, None).await, 401, "no token");
    assert_eq!(redrive(page, Some("wrong")).await, 401, "wrong token");
    assert_eq!(redrive(page, Some(&dev.token)).await, 200, "{}", dev.logs());
    assert_eq!(redrive_in("nope", page, Some(&dev.token)).await, 404);

    // The page, in a real browser.
    dead_letter(&moto, "dead-1").await;
    eventually("the DLQ depth to show the dead letter", || async {
        let (_, state) = get(&format!("{}/api/state", dev.console)).await;
        (dlq_depth(&state, "github-ingest") == Some(1)).then_some(())
    })
    .await;
    if let Some(skip) = chromium::missing() {
        eprintln!("skipping the browser part: {skip}");
        return;
    }
    let out = Command::new("node")
        .arg(Path::new(chromium::BROWSER).join("console.mjs"))
        .env(
            "CONSOLE_URL",
            format!("{}/#token={}", dev.console, dev.token),
        )
        .env("CHROMIUM", chromium::CHROMIUM)
        .env("EVENTPIPE", env!("CARGO_BIN_EXE_eventpipe"))
        .env("EVENTPIPE_ROOT", ROOT)
        .env("WEBHOOK_URL", &dev.webhook)
        .env("JAEGER_URL", JAEGER)
        .env("SECRETS_DIR", &dev.secrets)
        .envs(std::env::var("CONSOLE_SCREENSHOT").map(|s| ("SCREENSHOT", s)))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        dev.logs()
    );
}
