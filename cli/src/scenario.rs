//! A demo scenario: what `eventpipe demo` sends through an example and what it
//! expects to find, kept beside the example as `<name>.demo.json`. The demo runs any
//! scenario the same way (see `scenario_run.rs`); what an example means lives in its
//! manifest, its services and this file.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::Context;
use eventpipe_crds::Manifest;
use serde::Deserialize;
use serde_json::{Map, Value};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Scenario {
    /// One line on what the run shows.
    pub about: String,
    /// How to start the services the example's container processors reach, for when
    /// they do not answer.
    pub services: String,
    /// The events, signed and sent to their webhooks in this order.
    pub send: Vec<Event>,
    /// The table whose items the expectations are about.
    pub table: Table,
    /// Items expected in `table` by key, with the attributes they must have.
    pub expect: BTreeMap<String, Map<String, Value>>,
    /// Events a pipeline publishes on a queue: exactly one per item of an outbox table.
    #[serde(default)]
    pub published: Option<Published>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    pub pipeline: String,
    pub webhook: String,
    pub data: Value,
    /// The event type, for a webhook that reads it from a header.
    #[serde(default, rename = "eventType")]
    pub event_type: Option<String>,
    /// Where to subscribe with the `202`'s correlation id and token, and the type of
    /// the first event expected there.
    #[serde(default)]
    pub subscribe: Option<Subscribe>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subscribe {
    pub path: String,
    /// The pushed event's `type`.
    pub expect: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Table {
    pub name: String,
    /// An attribute, or a JSON pointer into the item (`/data/text`).
    pub key: String,
    /// The attributes shown for each item.
    pub columns: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Published {
    pub queue: String,
    /// The outbox table (its items keyed by `id`, each the id of the event it becomes).
    pub outbox: String,
    /// How many items the outbox holds once every event is handled.
    pub items: usize,
}

/// Where the scenario of an example manifest lives: `x.yaml` → `x.demo.json`.
pub fn path_for(manifest: &Path) -> PathBuf {
    manifest.with_extension("demo.json")
}

impl Scenario {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
        Self::parse(&text).with_context(|| path.display().to_string())
    }

    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let s: Self = serde_json::from_str(text)?;
        anyhow::ensure!(!s.send.is_empty(), "send: no event to send");
        anyhow::ensure!(!s.expect.is_empty(), "expect: nothing expected");
        Ok(s)
    }

    /// Checks that every event goes to a webhook of the manifest.
    pub fn check(&self, manifest: &Manifest) -> anyhow::Result<()> {
        for e in &self.send {
            let pipeline = manifest.pipeline(&e.pipeline)?;
            let ingress = pipeline.pipeline.spec.ingress.as_ref();
            let found = ingress.is_some_and(|i| i.webhooks.iter().any(|w| w.name == e.webhook));
            anyhow::ensure!(
                found,
                "send: EventPipeline {:?} has no webhook {:?}",
                e.pipeline,
                e.webhook
            );
            if let Some(s) = &e.subscribe {
                let found = ingress.is_some_and(|i| {
                    (i.subscriptions.iter())
                        .any(|sub| sub.path == s.path && sub.webhook == e.webhook)
                });
                anyhow::ensure!(
                    found,
                    "send: EventPipeline {:?} has no subscription at {:?} for webhook {:?}",
                    e.pipeline,
                    s.path,
                    e.webhook
                );
            }
        }
        Ok(())
    }
}

/// The loopback ports the manifest's container processors are reached on, each with
/// the pipelines delivering there.
pub fn service_ports(manifest: &Manifest) -> BTreeMap<u16, Vec<String>> {
    let mut ports: BTreeMap<u16, Vec<String>> = BTreeMap::new();
    for p in &manifest.pipelines {
        if let Some(c) = &p.spec.processor.container {
            let name = p.metadata.name.clone().unwrap_or_default();
            ports.entry(c.port as u16).or_default().push(name);
        }
    }
    ports
}

/// What differs between the expected items and `items` (by key): one line each.
pub fn mismatches(
    expect: &BTreeMap<String, Map<String, Value>>,
    items: &BTreeMap<String, Value>,
    table: &str,
) -> Vec<String> {
    let mut out = vec![];
    for (key, want) in expect {
        let Some(item) = items.get(key) else {
            out.push(format!("{key}: not in {table}"));
            continue;
        };
        for (attribute, value) in want {
            let got = item.get(attribute).unwrap_or(&Value::Null);
            if got != value {
                out.push(format!("{key}: {attribute} is {got}, expected {value}"));
            }
        }
    }
    out
}

/// What is wrong with the outbox (`items` expected) and the events received (their
/// ids, each with how many times) against its items' ids: missing ones, repeated
/// ones, unknown ones.
pub fn publication_errors(
    items: usize,
    outbox: &BTreeSet<String>,
    received: &BTreeMap<String, usize>,
) -> Vec<String> {
    let mut out = vec![];
    if outbox.len() != items {
        out.push(format!(
            "the outbox holds {} items, expected {items}",
            outbox.len()
        ));
    }
    for id in outbox.iter().filter(|id| !received.contains_key(*id)) {
        out.push(format!("outbox item {id}: not published"));
    }
    for (id, n) in received {
        if !outbox.contains(id) {
            out.push(format!(
                "event {id}: published, but no outbox item has its id"
            ));
        } else if *n > 1 {
            out.push(format!("outbox item {id}: published {n} times"));
        }
    }
    out
}

/// The value an item is keyed by: an attribute, or a JSON pointer into it.
pub fn key_of<'a>(item: &'a Value, key: &str) -> Option<&'a str> {
    match key.starts_with('/') {
        true => item.pointer(key)?.as_str(),
        false => item.get(key)?.as_str(),
    }
}

/// What is wrong with the event pushed after a `202` (its `eventId`), if anything.
/// The outcome is about the accepted event: its `data.eventId` names it.
pub fn push_problem(want: &Subscribe, event_id: &str, pushed: &Value) -> Option<String> {
    let ty = pushed["type"].as_str().unwrap_or("-");
    if ty != want.expect {
        return Some(format!(
            "event {event_id}: pushed {ty} at {}, expected {}",
            want.path, want.expect
        ));
    }
    let about = pushed["data"]["eventId"].as_str();
    (about.is_some_and(|a| a != event_id)).then(|| {
        format!(
            "event {event_id}: pushed {ty} about another event, {}",
            about.unwrap_or("-")
        )
    })
}

/// Latencies summed up: the median (the lower of the two middle ones) and the
/// slowest, in milliseconds.
pub fn latency(latencies: &[std::time::Duration]) -> Option<String> {
    let mut ms: Vec<u128> = latencies.iter().map(|d| d.as_millis()).collect();
    ms.sort_unstable();
    let (median, max) = (ms.get((ms.len().checked_sub(1)?) / 2)?, ms.last()?);
    Some(format!(
        "p50 {median} ms, max {max} ms ({} events)",
        ms.len()
    ))
}

/// The events the ingress did not accept, when any.
pub fn not_accepted(sent: usize, accepted: usize) -> Option<String> {
    (accepted < sent).then(|| format!("{} of {sent} events were not accepted", sent - accepted))
}

/// An attribute as shown: lists joined by arrows, strings bare, absent as `-`.
pub fn shown(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => "-".into(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| shown(Some(v)))
            .collect::<Vec<_>>()
            .join(" → "),
        Some(other) => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SCENARIO: &str = r#"{
        "about": "two orders",
        "services": "cargo run -p shop",
        "send": [{"pipeline": "p", "webhook": "w", "data": {"orderId": "o-1"}}],
        "table": {"name": "orders", "key": "orderId", "columns": ["status"]},
        "expect": {"o-1": {"status": "Completed"}}
    }"#;

    fn expect(v: Value) -> BTreeMap<String, Map<String, Value>> {
        serde_json::from_value(v).unwrap()
    }

    fn items(v: Value) -> BTreeMap<String, Value> {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn a_scenario_parses_and_refuses_what_it_does_not_know() {
        let s = Scenario::parse(SCENARIO).unwrap();
        assert_eq!(s.send[0].pipeline, "p");
        assert!(s.published.is_none());
        let typo = SCENARIO.replace("\"expect\"", "\"expected\"");
        assert!(
            Scenario::parse(&typo)
                .unwrap_err()
                .to_string()
                .contains("unknown field `expected`")
        );
        let empty = SCENARIO.replace(
            r#"[{"pipeline": "p", "webhook": "w", "data": {"orderId": "o-1"}}]"#,
            "[]",
        );
        assert!(
            Scenario::parse(&empty)
                .unwrap_err()
                .to_string()
                .contains("send: no event to send")
        );
        let none = SCENARIO.replace(r#"{"o-1": {"status": "Completed"}}"#, "{}");
        assert!(
            Scenario::parse(&none)
                .unwrap_err()
                .to_string()
                .contains("expect: nothing expected")
        );
        assert_eq!(
            path_for(Path::new("examples/x.yaml")),
            Path::new("examples/x.demo.json")
        );
    }

    #[test]
    fn events_must_go_to_a_webhook_of_the_manifest() {
        let manifest = Manifest::from_yaml(
            "m.yaml",
            "apiVersion: eventpipe.dev/v1alpha1
kind: QueueBinding
metadata: {name: q}
spec: {sqs: {queueName: q, create: true}}
---
apiVersion: eventpipe.dev/v1alpha1
kind: EventPipeline
metadata: {name: p}
spec:
  ingress:
    webhooks: [{name: w, path: /w, signature: {scheme: github, secretRef: {name: s, key: k}}}]
    publishTo: {queueBindingRef: {name: q}}
  sources: [{queueBindingRef: {name: q}}]
  processor: {container: {image: shop, port: 8090, path: /x}}
",
        )
        .unwrap();
        let mut s = Scenario::parse(SCENARIO).unwrap();
        s.check(&manifest).unwrap();
        assert_eq!(
            service_ports(&manifest),
            BTreeMap::from([(8090, vec!["p".to_string()])])
        );
        s.send[0].webhook = "other".into();
        let err = s.check(&manifest).unwrap_err().to_string();
        assert!(
            err.contains("EventPipeline \"p\" has no webhook \"other\""),
            "{err}"
        );
        s.send[0].pipeline = "nope".into();
        assert!(s.check(&manifest).is_err());
    }

    #[test]
    fn mismatches_name_the_item_and_the_attribute() {
        let want = expect(
            json!({"o-1": {"status": "Completed", "history": ["A", "B"]}, "o-2": {"status": "Cancelled"}}),
        );
        let got = items(
            json!({"o-1": {"status": "Completed", "history": ["A", "B"], "extra": 1}, "o-2": {"status": "Cancelled"}}),
        );
        assert!(mismatches(&want, &got, "orders").is_empty());
        let got = items(json!({"o-1": {"status": "Paid", "history": ["A"]}}));
        assert_eq!(
            mismatches(&want, &got, "orders"),
            [
                r#"o-1: history is ["A"], expected ["A","B"]"#,
                r#"o-1: status is "Paid", expected "Completed""#,
                "o-2: not in orders",
            ]
        );
    }

    #[test]
    fn each_outbox_item_is_published_exactly_once() {
        let outbox: BTreeSet<String> = ["a", "b", "c"].map(String::from).into();
        let once = BTreeMap::from([("a".to_string(), 1), ("b".into(), 1), ("c".into(), 1)]);
        assert!(publication_errors(3, &outbox, &once).is_empty());
        assert_eq!(
            publication_errors(4, &outbox, &once),
            ["the outbox holds 3 items, expected 4"]
        );
        let wrong = BTreeMap::from([("a".to_string(), 2), ("b".into(), 1), ("x".into(), 1)]);
        assert_eq!(
            publication_errors(3, &outbox, &wrong),
            [
                "outbox item c: not published",
                "outbox item a: published 2 times",
                "event x: published, but no outbox item has its id",
            ]
        );
    }

    #[test]
    fn a_subscription_must_be_the_webhooks_and_its_push_the_one_expected() {
        let manifest = Manifest::from_yaml(
            "m.yaml",
            "apiVersion: eventpipe.dev/v1alpha1
kind: QueueBinding
metadata: {name: q}
spec: {sqs: {queueName: q, create: true}}
---
apiVersion: eventpipe.dev/v1alpha1
kind: EventPipeline
metadata: {name: p}
spec:
  ingress:
    webhooks: [{name: w, path: /w, signature: {scheme: bearer, secretRef: {name: s, key: k}}}]
    subscriptions: [{name: out, path: /w/out, webhook: w}]
    publishTo: {queueBindingRef: {name: q}}
  sources: [{queueBindingRef: {name: q}}]
  processor: {push: {pipelineRef: {name: p}}}
",
        )
        .unwrap();
        let text = SCENARIO.replace(
            r#""data": {"orderId": "o-1"}"#,
            r#""data": {}, "eventType": "note", "subscribe": {"path": "/w/out", "expect": "saved"}"#,
        );
        let mut s = Scenario::parse(&text).unwrap();
        s.check(&manifest).unwrap();
        assert_eq!(s.send[0].event_type.as_deref(), Some("note"));
        let want = s.send[0].subscribe.take().unwrap();
        let pushed = |ty: &str, about: &str| json!({"type": ty, "data": {"eventId": about}});
        assert_eq!(push_problem(&want, "e-1", &pushed("saved", "e-1")), None);
        assert_eq!(
            push_problem(&want, "e-1", &pushed("failed", "e-1")).as_deref(),
            Some("event e-1: pushed failed at /w/out, expected saved")
        );
        assert_eq!(
            push_problem(&want, "e-1", &pushed("saved", "e-2")).as_deref(),
            Some("event e-1: pushed saved about another event, e-2")
        );
        s.send[0].subscribe = Some(Subscribe {
            path: "/nope".into(),
            ..want
        });
        let err = s.check(&manifest).unwrap_err().to_string();
        assert!(
            err.contains(r#"EventPipeline "p" has no subscription at "/nope" for webhook "w""#),
            "{err}"
        );
    }

    #[test]
    fn items_are_keyed_by_an_attribute_or_a_pointer_into_them() {
        let item = json!({"id": "e-1", "data": {"text": "buy milk"}});
        assert_eq!(key_of(&item, "id"), Some("e-1"));
        assert_eq!(key_of(&item, "/data/text"), Some("buy milk"));
        assert_eq!(key_of(&item, "/data/nope"), None);
    }

    #[test]
    fn latencies_are_summed_up_as_median_and_slowest() {
        use std::time::Duration;
        assert_eq!(latency(&[]), None);
        let ms = |v: &[u64]| {
            v.iter()
                .map(|m| Duration::from_millis(*m))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            latency(&ms(&[71, 36, 54])).as_deref(),
            Some("p50 54 ms, max 71 ms (3 events)")
        );
        assert_eq!(
            latency(&ms(&[40, 10])).as_deref(),
            Some("p50 10 ms, max 40 ms (2 events)")
        );
    }

    #[test]
    fn events_not_accepted_are_counted() {
        assert_eq!(not_accepted(4, 4), None);
        assert_eq!(
            not_accepted(4, 1).as_deref(),
            Some("3 of 4 events were not accepted")
        );
    }

    #[test]
    fn attributes_are_shown_plainly() {
        assert_eq!(
            shown(Some(&json!(["OrderPlaced", "PaymentCompleted"]))),
            "OrderPlaced → PaymentCompleted"
        );
        assert_eq!(shown(Some(&json!("Completed"))), "Completed");
        assert_eq!(shown(Some(&json!(40))), "40");
        assert_eq!(shown(None), "-");
    }
}
