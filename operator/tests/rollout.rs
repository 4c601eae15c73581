//! Rollouts and node drains lose no webhook: the ingress rolls one new pod before each
//! old one, has the grace period its drain needs, and every Deployment has a
//! PodDisruptionBudget that a drain can always meet. Every rendered object is valid
//! for the Kubernetes API (offline schema check).
// Set-up steps unwrap: a failure fails the test (clippy's allow-unwrap-in-tests
// covers #[test] functions only, not the helpers of an integration test).
#![allow(clippy::unwrap_used)]

mod common;

use common::examples::{DIR, applied};
use eventpipe_crds::{Manifest, Pipeline};
use eventpipe_operator::{Settings, Workloads, render};
use serde_json::{Value, json};

const EXAMPLES: [&str; 4] = [
    "github-analytics.yaml",
    "notes.yaml",
    "orders-saga.yaml",
    "outbox.yaml",
];

fn examples() -> Vec<Pipeline> {
    let mut all = vec![];
    for file in EXAMPLES {
        let manifest = Manifest::load(format!("{DIR}/{file}")).unwrap();
        for name in manifest.pipeline_names() {
            all.push(applied(manifest.pipeline(&name).unwrap()));
        }
    }
    all
}

fn example(name: &str) -> Pipeline {
    let mut found = examples().into_iter().filter(|p| p.name() == name);
    found.next().unwrap()
}

fn settings() -> Settings {
    Settings {
        ingress_image: "ghcr.io/eventpipe/ingress:0.1.0".into(),
        worker_image: "ghcr.io/eventpipe/worker:0.1.0".into(),
        credentials_secret: Some("aws".into()),
        ..Default::default()
    }
}

fn v<T: serde::Serialize>(x: &T) -> Value {
    serde_json::to_value(x).unwrap()
}

/// The seconds of a `--flag=Ns` argument.
fn seconds(args: &Value, flag: &str) -> u64 {
    let prefix = format!("{flag}=");
    let arg = args.as_array().unwrap().iter().find_map(|a| {
        let value = a.as_str()?.strip_prefix(&prefix)?;
        value.strip_suffix('s')?.parse().ok()
    });
    arg.unwrap_or_else(|| panic!("no {flag}=<seconds>s in {args}"))
}

#[test]
fn the_ingress_rolls_a_new_pod_in_before_an_old_one_drains() {
    let w = render(&example("github-ingest"), &settings());
    let d = v(&w.ingress.unwrap().0);
    assert_eq!(
        d["spec"]["strategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}})
    );
    let pod = &d["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    // The ingress delays its own shutdown; its image has no shell for a hook.
    assert!(c["lifecycle"].is_null(), "{c:#}");
    let args = &c["args"];
    assert_eq!(seconds(args, "--drain-delay"), 5);
    let worst = [
        "--drain-delay",
        "--header-read-timeout",
        "--request-timeout",
    ]
    .map(|f| seconds(args, f))
    .iter()
    .sum::<u64>()
        + seconds(args, "--publish-timeout");
    let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    assert!(
        grace > worst,
        "grace {grace}s, shutdown may take {worst}s: {args}"
    );
}

/// The budgets of a pipeline's workloads, by name.
fn budgets(w: &Workloads) -> Vec<(String, Value)> {
    (w.budgets.iter())
        .map(|b| (b.metadata.name.clone().unwrap(), v(b)))
        .collect()
}

/// A budget that Kubernetes always lets a drain meet, for the pods of `deployment`.
fn never_blocks_a_drain(budget: &Value, deployment: &Value) {
    let spec = &budget["spec"];
    assert_eq!(spec["maxUnavailable"], 1, "{budget:#}");
    assert!(spec["minAvailable"].is_null(), "{budget:#}");
    assert_eq!(spec["unhealthyPodEvictionPolicy"], "AlwaysAllow");
    assert_eq!(spec["selector"], deployment["spec"]["selector"]);
    let template_labels = &deployment["spec"]["template"]["metadata"]["labels"];
    for (k, value) in spec["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(&template_labels[k], value, "selects the pods by {k}");
    }
    let owner = &budget["metadata"]["ownerReferences"][0];
    assert_eq!(
        (owner["kind"].as_str(), owner["controller"].as_bool()),
        (Some("EventPipeline"), Some(true))
    );
    assert_eq!(budget["metadata"]["namespace"], "shop");
}

#[test]
fn the_ingress_and_the_workers_each_have_a_budget_a_drain_can_always_meet() {
    let mut one_replica = example("github-ingest");
    one_replica.pipeline.spec.ingress.as_mut().unwrap().replicas = 1;
    for p in [example("github-ingest"), one_replica] {
        let w = render(&p, &settings());
        let found = budgets(&w);
        let names: Vec<&str> = found.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["github-ingest-ingress", "github-ingest-worker"]);
        never_blocks_a_drain(&found[0].1, &v(&w.ingress.as_ref().unwrap().0));
        never_blocks_a_drain(&found[1].1, &v(&w.worker));
    }
    // No ingress, no ingress budget.
    let w = render(&example("github-aggregate"), &settings());
    let found = budgets(&w);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].0, "github-aggregate-worker");
    never_blocks_a_drain(&found[0].1, &v(&w.worker));
}

/// Every object rendered for every example, as one multi-document YAML stream.
fn rendered_examples() -> String {
    let mut docs = vec![];
    for p in examples() {
        let w = render(&p, &settings());
        docs.extend([v(&w.config), v(&w.worker), v(w.hpa().unwrap())]);
        if let Some((d, s)) = &w.ingress {
            docs.extend([v(d), v(s)]);
        }
        docs.extend(w.budgets.iter().map(v));
    }
    assert!(
        docs.iter()
            .all(|d| d["apiVersion"].is_string() && d["kind"].is_string())
    );
    docs.iter()
        .map(|d| format!("---\n{}", serde_yaml::to_string(d).unwrap()))
        .collect()
}

#[test]
fn every_rendered_object_is_valid_for_kubernetes() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let validate = format!("{root}/.venv/bin/kubernetes-validate");
    assert!(
        std::path::Path::new(&validate).exists(),
        "{validate} not found: run `make venv`"
    );
    let file = std::env::temp_dir().join(format!("eventpipe-rendered-{}.yaml", std::process::id()));
    std::fs::write(&file, rendered_examples()).unwrap();
    let out = std::process::Command::new(validate)
        .args(["--strict", "--quiet", "-k", "1.30.0"])
        .arg(&file)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&file);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
