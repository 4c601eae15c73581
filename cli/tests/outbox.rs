//! examples/outbox.yaml end to end against moto, with the example shop's services:
//! `eventpipe demo` signs up three customers (one twice); each registration writes
//! the customer and its outbox item in one transaction, and each outbox item is
//! published exactly once, also when the outbox's stream is read again.

// Set-up steps unwrap: a failure fails the test (clippy's allow-unwrap-in-tests
// covers #[test] functions only, not the helpers of an integration test).
#![allow(clippy::unwrap_used)]

mod common;
mod shop;

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::eventpipe;
use eventpipe_testkit::{Moto, free_port};

#[test]
fn each_outbox_item_is_published_once_even_when_its_stream_is_read_again() {
    let moto = Moto::start();
    let shop = shop::start(&moto);
    let dir = tempfile::tempdir().unwrap();
    let manifest = shop::example(&dir, "outbox", shop.port, |y| y);
    let (ok, out, err) = eventpipe(&["demo", "-f", manifest.to_str().unwrap()], &moto.env());
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("sent 4 events, accepted 4"), "{out}");
    assert!(
        out.contains("published on customer-events: 3 events for 3 items of shop-outbox"),
        "{out}"
    );
    assert!(out.contains("OK: everything"), "{out}");

    // What a user checks: three customers, three outbox items, and each item's id on
    // the row of the one event published for it.
    let customers = shop::scan(&shop, &moto, "shop-customers");
    assert_eq!(customers.len(), 3, "{customers:?}");
    let outbox = shop::scan(&shop, &moto, "shop-outbox");
    let ids: BTreeSet<&str> = outbox.iter().map(|i| i["id"].as_str().unwrap()).collect();
    let subjects: BTreeSet<&str> = outbox
        .iter()
        .map(|i| i["subject"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 3);
    assert_eq!(subjects, BTreeSet::from(["cust-1", "cust-2", "cust-3"]));
    for item in &outbox {
        let id = item["id"].as_str().unwrap();
        let rows = out.lines().filter(|l| l.contains(id)).count();
        assert_eq!(rows, 1, "{id}: {out}");
        assert_eq!(item["type"], "CustomerRegistered");
    }

    // A second reader of the stream (a fresh checkpoint table: every record from the
    // start) relays every item again; the publisher's claims on the outbox items' ids
    // stop each copy: nothing is published again.
    let replay = shop::example(&dir, "outbox", shop.port, |y| {
        let with = y.replace(
            "startingPosition: TRIM_HORIZON}",
            "startingPosition: TRIM_HORIZON, checkpointTable: outbox-replay}",
        );
        assert_ne!(with, y);
        with
    });
    let ops = free_port();
    let mut dev = DevProcess(
        Command::new(env!("CARGO_BIN_EXE_eventpipe"))
            .args([
                "dev",
                "-f",
                replay.to_str().unwrap(),
                "--listen",
                "127.0.0.1:0",
            ])
            .args(["--ops-listen", &format!("127.0.0.1:{ops}")])
            .envs(moto.env())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let duplicates = shop.runtime.block_on(duplicates_seen(ops, 3));
    dev.0.kill().unwrap();
    let sqs = moto.sqs();
    let depth = shop.runtime.block_on(async {
        let url = sqs
            .get_queue_url()
            .queue_name("customer-events")
            .send()
            .await
            .unwrap();
        let attrs = sqs
            .get_queue_attributes()
            .queue_url(url.queue_url().unwrap())
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::All)
            .send()
            .await
            .unwrap();
        let attrs = attrs.attributes.unwrap();
        [
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
        ]
        .map(|a| {
            let name = aws_sdk_sqs::types::QueueAttributeName::from(a);
            attrs[&name].parse::<u64>().unwrap()
        })
    });
    assert_eq!(depth, [0, 0], "an outbox item was published again");
    assert_eq!(
        duplicates, 3,
        "the replay did not read the outbox's records again"
    );
}

/// Kills the `eventpipe dev` it holds when a test fails before it does.
struct DevProcess(Child);

impl Drop for DevProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The outbox publisher's duplicates, from `eventpipe dev`'s metrics on `ops`, once
/// they reach `want` (or after a minute).
async fn duplicates_seen(ops: u16, want: u64) -> u64 {
    let url = format!("http://127.0.0.1:{ops}/metrics");
    let mut seen = 0;
    for _ in 0..60 {
        if let Ok(r) = reqwest::get(&url).await
            && let Ok(text) = r.text().await
        {
            seen = text
                .lines()
                .filter(|l| l.starts_with("eventpipe_events_processed_total{"))
                .filter(|l| {
                    l.contains(r#"pipeline="outbox-publisher""#)
                        && l.contains(r#"outcome="duplicate""#)
                })
                .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
                .sum();
            if seen >= want {
                break;
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    seen
}
