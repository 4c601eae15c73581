//! A namespace enforcing the `restricted` Pod Security Standard admits every pod
//! eventpipe renders: the ingress, the workers and the user's container sidecar. Runs
//! with the chart (E2E_OPERATOR=helm) or with the operator run out of cluster.
// The e2e suite is test code: a failed step fails the test, helpers included.
#![allow(clippy::unwrap_used)]

use std::process::{Child, Command};
use std::time::Duration;

use eventpipe_e2e::helm::Release;
use k8s_openapi::api::core::v1::{Event, Namespace, Pod};
use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::{Value, json};

const ADMITTED_WITHIN: Duration = Duration::from_secs(120);

/// Whatever runs the operator for this test; dropped, it stops or uninstalls it.
enum Operator {
    Helm {
        _release: Box<Release>,
    },
    Local {
        child: Child,
        _moto: eventpipe_testkit::Moto,
    },
}

impl Drop for Operator {
    fn drop(&mut self) {
        if let Operator::Local { child, .. } = self {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The operator and the namespace its pipelines go in.
async fn start(client: &Client) -> (Operator, String) {
    if eventpipe_e2e::helm_mode() {
        let release = Release::install(client, &[]).await;
        let ns = release.app.clone();
        let operator = Operator::Helm {
            _release: Box::new(release),
        };
        return (operator, ns);
    }
    eventpipe_e2e::install_crds(client).await;
    let moto = eventpipe_testkit::Moto::start();
    let bin = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../target/debug/eventpipe-operator"
    );
    assert!(
        std::path::Path::new(bin).exists(),
        "{bin} missing: cargo build -p eventpipe-operator"
    );
    let child = Command::new(bin)
        .args(["run", "--no-leader-election"])
        .args(["--metrics-listen", "127.0.0.1:0"])
        .args(["--external-metrics-listen", "127.0.0.1:0"])
        .env("AWS_ENDPOINT_URL", moto.endpoint())
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .spawn()
        .unwrap();
    let ns = eventpipe_e2e::test_namespace("eventpipe-restricted");
    eventpipe_e2e::create_namespace(client, &ns).await;
    (Operator::Local { child, _moto: moto }, ns)
}

async fn enforce_restricted(client: &Client, ns: &str) {
    let labels = json!({"metadata": {"labels": {
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/enforce-version": "latest",
    }}});
    Api::<Namespace>::all(client.clone())
        .patch(ns, &PatchParams::default(), &Patch::Merge(&labels))
        .await
        .unwrap();
}

/// A pipeline with an ingress, workers and the user's container as processor.
fn pipeline() -> Vec<Value> {
    vec![
        json!({
            "apiVersion": "eventpipe.dev/v1alpha1", "kind": "QueueBinding",
            "metadata": {"name": "orders"},
            "spec": {"sqs": {"queueName": "restricted-orders", "create": true}},
        }),
        json!({
            "apiVersion": "eventpipe.dev/v1alpha1", "kind": "EventPipeline",
            "metadata": {"name": "orders"},
            "spec": {
                "ingress": {
                    "webhooks": [{
                        "name": "orders", "path": "/hooks/orders",
                        "signature": {"scheme": "bearer", "secretRef": {"name": "orders-hook", "key": "token"}},
                    }],
                    "publishTo": {"queueBindingRef": {"name": "orders"}},
                },
                "sources": [{"queueBindingRef": {"name": "orders"}}],
                "processor": {"container": {"image": "registry.k8s.io/pause:3.10", "port": 7000}},
            },
        }),
    ]
}

/// Why Pod Security refused a pod of the namespace, if it did.
async fn refused(client: &Client, ns: &str) -> Option<String> {
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    let failed = ListParams::default().fields("reason=FailedCreate");
    events
        .list(&failed)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|e| e.message)
        .find(|m| m.contains("PodSecurity"))
}

/// Waits until the component's Deployment has a pod, failing at once on a refusal.
async fn admitted(client: &Client, ns: &str, component: &str) -> Vec<String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let selector = format!("eventpipe.dev/pipeline=orders,app.kubernetes.io/component={component}");
    let what = format!("a {component} pod admitted");
    eventpipe_e2e::eventually(&what, ADMITTED_WITHIN, async || {
        if let Some(why) = refused(client, ns).await {
            panic!("Pod Security refused a pod: {why}");
        }
        let list = pods
            .list(&ListParams::default().labels(&selector))
            .await
            .ok()?;
        let names: Vec<String> = list.into_iter().filter_map(|p| p.metadata.name).collect();
        (!names.is_empty()).then_some(names)
    })
    .await
}

#[tokio::test]
async fn a_restricted_namespace_admits_the_ingress_workers_and_sidecar() {
    let Some(client) = eventpipe_e2e::cluster().await else {
        return;
    };
    let (operator, ns) = start(&client).await;
    enforce_restricted(&client, &ns).await;
    eventpipe_e2e::create_secret(&client, &ns, "orders-hook", &[("token", "e2e")]).await;
    for doc in pipeline() {
        eventpipe_e2e::apply(&client, &ns, &doc).await;
    }
    for component in ["ingress", "worker"] {
        let pods = admitted(&client, &ns, component).await;
        eprintln!("{component}: admitted {pods:?}");
    }
    let worker_pods = Api::<Pod>::namespaced(client.clone(), &ns)
        .list(&ListParams::default().labels("app.kubernetes.io/component=worker"))
        .await
        .unwrap();
    let containers: Vec<String> = worker_pods.items[0]
        .spec
        .as_ref()
        .unwrap()
        .containers
        .iter()
        .map(|c| c.name.clone())
        .collect();
    assert_eq!(
        containers,
        ["worker", "processor"],
        "the sidecar was admitted too"
    );
    assert_eq!(refused(&client, &ns).await, None);
    if matches!(operator, Operator::Local { .. }) {
        eventpipe_e2e::delete_namespace(&client, &ns).await;
    }
}
