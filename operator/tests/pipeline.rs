//! The EventPipeline reconciler against kube's mock API service.
// Set-up steps unwrap: a failure fails the test (clippy's allow-unwrap-in-tests
// covers #[test] functions only, not the helpers of an integration test).
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::{CRD, FakeApi};
use eventpipe_crds::EventPipeline;
use eventpipe_operator::{Context, Settings, reconcile_pipeline as reconcile};
use serde_json::{Value, json};

fn pipeline(spec_patch: impl FnOnce(&mut Value)) -> Value {
    let mut p = json!({
        "apiVersion": "eventpipe.dev/v1alpha1", "kind": "EventPipeline",
        "metadata": {"name": "hooks", "namespace": "default", "uid": "1111-2222", "generation": 2},
        "spec": {
            "ingress": {
                "webhooks": [{"name": "github", "path": "/hooks/github", "signature": {"scheme": "github", "secretRef": {"name": "gh", "key": "secret"}}}],
                "publishTo": {"queueBindingRef": {"name": "orders"}}
            },
            "sources": [{"queueBindingRef": {"name": "orders"}}],
            "processor": {"http": {"url": "http://analytics.default.svc/events"}},
            "scaling": {"minReplicas": 1, "maxReplicas": 5}
        }
    });
    spec_patch(&mut p["spec"]);
    p
}

fn binding(status: Value) -> Value {
    json!({
        "apiVersion": "eventpipe.dev/v1alpha1", "kind": "QueueBinding",
        "metadata": {"name": "orders", "namespace": "default"},
        "spec": {"sqs": {"queueName": "orders"}, "deadLetterPolicyRef": {"name": "three"}},
        "status": status
    })
}

/// A cluster with the pipeline, its binding and policy, and the webhook Secret.
fn cluster(p: &Value) -> FakeApi {
    let api = FakeApi::new();
    api.put(&format!("{CRD}/eventpipelines/hooks"), p.clone());
    api.put(
        &format!("{CRD}/queuebindings/orders"),
        binding(json!({"depth": 7, "dlqDepth": 1})),
    );
    api.put(
        &format!("{CRD}/deadletterpolicies/three"),
        json!({"apiVersion": "eventpipe.dev/v1alpha1", "kind": "DeadLetterPolicy", "metadata": {"name": "three", "namespace": "default"}, "spec": {}}),
    );
    api.put("/api/v1/namespaces/default/secrets/gh", json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "gh"}, "data": {"secret": "czNjcjN0"}}));
    api
}

async fn run(api: &FakeApi, p: &Value) -> EventPipeline {
    run_with(api, p, Settings::default()).await
}

async fn run_with(api: &FakeApi, p: &Value, settings: Settings) -> EventPipeline {
    let settings = Settings {
        ingress_image: "ingress:test".into(),
        worker_image: "worker:test".into(),
        ..settings
    };
    let aws = aws_config::SdkConfig::builder().build();
    let ctx = Context::new(api.client(), settings, aws, Default::default());
    let obj: EventPipeline = serde_json::from_value(p.clone()).unwrap();
    reconcile(Arc::new(obj), ctx).await.unwrap();
    serde_json::from_value(api.get(&format!("{CRD}/eventpipelines/hooks")).unwrap()).unwrap()
}

fn condition(p: &EventPipeline, type_: &str) -> (String, String, String) {
    let c = p
        .status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("no {type_} condition"));
    (c.status.clone(), c.reason.clone(), c.message.clone())
}

fn events(api: &FakeApi) -> Vec<Value> {
    api.calls()
        .into_iter()
        .filter(|c| c.path.ends_with("/events"))
        .map(|c| c.body)
        .collect()
}

#[tokio::test]
async fn applies_every_workload_server_side_and_reports_ready() {
    let p = pipeline(|_| {});
    let api = cluster(&p);
    let got = run(&api, &p).await;
    let applies: Vec<String> = api
        .log()
        .into_iter()
        .filter(|c| c.starts_with("PATCH") && !c.ends_with("/status"))
        .collect();
    assert_eq!(
        applies,
        [
            "PATCH /api/v1/namespaces/default/configmaps/hooks-pipeline",
            "PATCH /apis/apps/v1/namespaces/default/deployments/hooks-ingress",
            "PATCH /api/v1/namespaces/default/services/hooks-ingress",
            "PATCH /apis/apps/v1/namespaces/default/deployments/hooks-worker",
            "PATCH /apis/autoscaling/v2/namespaces/default/horizontalpodautoscalers/hooks-worker",
            "PATCH /apis/policy/v1/namespaces/default/poddisruptionbudgets/hooks-ingress",
            "PATCH /apis/policy/v1/namespaces/default/poddisruptionbudgets/hooks-worker",
        ]
    );
    let budget = api
        .get("/apis/policy/v1/namespaces/default/poddisruptionbudgets/hooks-ingress")
        .unwrap();
    assert_eq!(budget["metadata"]["ownerReferences"][0]["name"], "hooks");
    let cm = api
        .get("/api/v1/namespaces/default/configmaps/hooks-pipeline")
        .unwrap();
    assert_eq!(cm["metadata"]["ownerReferences"][0]["name"], "hooks");
    assert!(
        cm["data"]["pipeline.yaml"]
            .as_str()
            .unwrap()
            .contains("kind: QueueBinding")
    );
    let s = got.status.as_ref().unwrap();
    assert_eq!(s.observed_generation, Some(2));
    assert_eq!(
        s.webhook_url.as_deref(),
        Some("http://hooks-ingress.default.svc/hooks/github")
    );
    assert_eq!((s.queue_depth, s.dlq_depth), (Some(7), Some(1)));
    assert_eq!(s.replicas, Some(1));
    assert_eq!(condition(&got, "Ready").0, "True");
    assert_eq!(condition(&got, "IngressReady").0, "True");
    assert_eq!(condition(&got, "WorkersReady").0, "True");
    assert_eq!(condition(&got, "Degraded").0, "False");
    let ev = events(&api);
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0]["reason"], "Applied");
    assert_eq!(ev[0]["type"], "Normal");
}

#[tokio::test]
async fn a_missing_binding_is_reported_and_nothing_is_applied() {
    let p = pipeline(|s| s["sources"][0]["queueBindingRef"]["name"] = json!("orderz"));
    let api = cluster(&p);
    let got = run(&api, &p).await;
    let (status, reason, message) = condition(&got, "Ready");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "QueueBindingNotFound")
    );
    assert_eq!(
        message,
        "QueueBinding \"orderz\" not found in namespace default"
    );
    assert_eq!(condition(&got, "Degraded").0, "True");
    assert!(
        !api.log().iter().any(|c| c.contains("deployments")),
        "{:?}",
        api.log()
    );
    let ev = events(&api);
    assert_eq!(ev[0]["type"], "Warning");
    assert_eq!(ev[0]["reason"], "QueueBindingNotFound");

    // The same problem again is not a new event.
    let again = serde_json::to_value(&got).unwrap();
    let before = events(&api).len();
    run(&api, &again).await;
    assert_eq!(events(&api).len(), before);
}

#[tokio::test]
async fn a_missing_policy_secret_or_key_is_named() {
    let p = pipeline(|_| {});
    let api = cluster(&p);
    api.objects
        .lock()
        .unwrap()
        .remove(&format!("{CRD}/deadletterpolicies/three"));
    assert_eq!(
        condition(&run(&api, &p).await, "Ready").1,
        "DeadLetterPolicyNotFound"
    );

    let api = cluster(&p);
    api.objects
        .lock()
        .unwrap()
        .remove("/api/v1/namespaces/default/secrets/gh");
    let got = run(&api, &p).await;
    assert_eq!(condition(&got, "Ready").1, "SecretNotFound");
    assert_eq!(
        condition(&got, "Ready").2,
        "Secret \"gh\" not found in namespace default"
    );

    let api = cluster(&p);
    api.put("/api/v1/namespaces/default/secrets/gh", json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "gh"}, "data": {"token": "eA=="}}));
    let got = run(&api, &p).await;
    assert_eq!(condition(&got, "Ready").1, "SecretKeyNotFound");
    assert_eq!(
        condition(&got, "Ready").2,
        "Secret \"gh\" has no key \"secret\""
    );
}

#[tokio::test]
async fn the_workloads_credentials_secret_must_be_in_the_pipelines_namespace() {
    let p = pipeline(|_| {});
    let settings = || Settings {
        credentials_secret: Some("aws".into()),
        ..Default::default()
    };
    let api = cluster(&p);
    let got = run_with(&api, &p, settings()).await;
    assert_eq!(condition(&got, "Ready").1, "SecretNotFound");
    assert_eq!(
        condition(&got, "Ready").2,
        "Secret \"aws\" not found in namespace default"
    );
    assert!(!api.log().iter().any(|c| c.contains("deployments")));

    // Its keys are the pods' AWS environment (a role to assume is as good as keys):
    // the operator only looks it up, as metadata.
    api.put("/api/v1/namespaces/default/secrets/aws", json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "aws"}, "data": {"AWS_ROLE_ARN": "eA=="}}));
    let got = run_with(&api, &p, settings()).await;
    assert_eq!(condition(&got, "Ready").0, "True");
    let lookups: Vec<_> = (api.calls().into_iter())
        .filter(|c| c.path.ends_with("/secrets/aws"))
        .collect();
    assert!(!lookups.is_empty());
    assert!(lookups.iter().all(|c| c.metadata_only), "{lookups:?}");
    let worker = api
        .get("/apis/apps/v1/namespaces/default/deployments/hooks-worker")
        .unwrap();
    assert_eq!(
        worker["spec"]["template"]["spec"]["containers"][0]["envFrom"][0]["secretRef"]["name"],
        "aws"
    );
}

#[tokio::test]
async fn unavailable_deployments_and_unready_bindings_degrade_the_pipeline() {
    let p = pipeline(|_| {});
    let api = cluster(&p);
    *api.available.lock().unwrap() = 0;
    let got = run(&api, &p).await;
    assert_eq!(condition(&got, "Ready").0, "False");
    assert_eq!(condition(&got, "Ready").1, "DeploymentUnavailable");
    assert_eq!(condition(&got, "WorkersReady").0, "False");
    assert_eq!(condition(&got, "IngressReady").0, "False");

    // A pod says why: the image cannot be pulled.
    let api = cluster(&p);
    *api.available.lock().unwrap() = 0;
    api.put(
        "/api/v1/namespaces/default/pods/hooks-worker-1",
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "hooks-worker-1", "namespace": "default"},
            "status": {"containerStatuses": [{"name": "worker", "image": "eventpipe/worker:typo", "imageID": "",
                "ready": false, "restartCount": 0,
                "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image \"eventpipe/worker:typo\""}}}]}}),
    );
    let got = run(&api, &p).await;
    let (status, reason, message) = condition(&got, "Ready");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "ImagePullBackOff")
    );
    assert!(message.contains("eventpipe/worker:typo"), "{message}");

    let api = cluster(&p);
    let unready = json!({"conditions": [{"type": "Ready", "status": "False", "reason": "QueueUnreachable", "message": "timed out", "lastTransitionTime": "2026-11-23T00:00:00Z"}]});
    api.put(&format!("{CRD}/queuebindings/orders"), binding(unready));
    let got = run(&api, &p).await;
    assert_eq!(condition(&got, "Degraded").1, "QueueUnreachable");
    assert_eq!(
        condition(&got, "Degraded").2,
        "QueueBinding \"orders\": timed out"
    );
}

#[tokio::test]
async fn drift_is_corrected_and_a_removed_ingress_is_deleted() {
    let p = pipeline(|_| {});
    let api = cluster(&p);
    run(&api, &p).await;
    // Someone scales the ingress by hand: the next reconcile applies the spec again.
    let path = "/apis/apps/v1/namespaces/default/deployments/hooks-ingress";
    let mut drifted = api.get(path).unwrap();
    drifted["spec"]["replicas"] = json!(9);
    api.put(path, drifted);
    run(&api, &p).await;
    assert_eq!(api.get(path).unwrap()["spec"]["replicas"], 1);

    let without = pipeline(|s| {
        s.as_object_mut().unwrap().remove("ingress");
    });
    run(&api, &without).await;
    assert!(api.log().contains(&format!("DELETE {path}")));
    assert!(
        api.log()
            .contains(&"DELETE /api/v1/namespaces/default/services/hooks-ingress".to_string())
    );
    let budget = "/apis/policy/v1/namespaces/default/poddisruptionbudgets/hooks-ingress";
    assert!(api.log().contains(&format!("DELETE {budget}")));
    assert!(api.get(budget).is_none());
    assert!(api.get(path).is_none());

    // Once that spec is reconciled, later reconciles delete nothing again.
    let mut reconciled = without.clone();
    reconciled["status"] = json!({"observedGeneration": 2, "scalingEngine": "hpa"});
    let deletes = api.log().iter().filter(|l| l.starts_with("DELETE")).count();
    run(&api, &reconciled).await;
    let after = api.log().iter().filter(|l| l.starts_with("DELETE")).count();
    assert_eq!(after, deletes, "{:?}", api.log());
}

#[tokio::test]
async fn a_pipeline_at_zero_shows_idle_and_one_running_shows_consuming() {
    let p = pipeline(|s| {
        s.as_object_mut().unwrap().remove("ingress");
        s["scaling"] = json!({"minReplicas": 0, "maxReplicas": 5});
    });
    let api = cluster(&p);
    *api.replicas.lock().unwrap() = Some(0);
    *api.available.lock().unwrap() = 0;
    let got = run(&api, &p).await;
    let (status, reason, message) = condition(&got, "Active");
    assert_eq!((status.as_str(), reason.as_str()), ("False", "IdleAtZero"));
    assert_eq!(
        message,
        "sources idle for 5m: workers at 0 until the next message"
    );
    assert_eq!(condition(&got, "Ready").0, "True", "idle is not broken");
    let hpa = api
        .get("/apis/autoscaling/v2/namespaces/default/horizontalpodautoscalers/hooks-worker")
        .unwrap();
    assert_eq!(hpa["spec"]["minReplicas"], 1, "the HPA acts from one up");
    let applied = (api.calls().into_iter())
        .find(|c| c.path.ends_with("/deployments/hooks-worker"))
        .unwrap();
    assert!(
        applied.body["spec"].get("replicas").is_none(),
        "the operator's apply leaves the replicas to the HPA and the scaler"
    );

    let api = cluster(&p);
    *api.replicas.lock().unwrap() = Some(2);
    let got = run(&api, &p).await;
    assert_eq!(condition(&got, "Active").1, "Consuming");
    let always_one = pipeline(|_| {});
    let got = run(&cluster(&always_one), &always_one).await;
    let types: Vec<_> = (got.status.unwrap().conditions.into_iter())
        .map(|c| c.type_)
        .collect();
    assert!(!types.contains(&"Active".to_string()), "{types:?}");
}

#[tokio::test]
async fn keda_gets_a_scaled_object_in_place_of_the_hpa_and_back() {
    let keda = pipeline(|s| s["scaling"]["engine"] = json!("keda"));
    let api = cluster(&keda);
    let got = run(&api, &keda).await;
    assert_eq!(condition(&got, "Ready").0, "True");
    let log = api.log();
    let keda_path = "/apis/keda.sh/v1alpha1/namespaces/default";
    for want in [
        format!("PATCH {keda_path}/triggerauthentications/hooks-worker"),
        format!("PATCH {keda_path}/scaledobjects/hooks-worker"),
        "DELETE /apis/autoscaling/v2/namespaces/default/horizontalpodautoscalers/hooks-worker"
            .into(),
    ] {
        assert!(log.contains(&want), "{want} not in {log:#?}");
    }
    assert!(!log.iter().any(|c| c.starts_with("PATCH /apis/autoscaling")));
    let so = api
        .get(&format!("{keda_path}/scaledobjects/hooks-worker"))
        .unwrap();
    assert_eq!(so["kind"], "ScaledObject");
    assert_eq!(so["metadata"]["ownerReferences"][0]["name"], "hooks");

    // The operator's default engine, when the pipeline names none.
    let default = pipeline(|_| {});
    let settings = Settings {
        scaling_engine: eventpipe_crds::ScalingEngine::Keda,
        ..Default::default()
    };
    let api = cluster(&default);
    run_with(&api, &default, settings).await;
    assert!(api.log().iter().any(|c| c.contains("/scaledobjects/")));

    // Back to the HPA: KEDA's objects go.
    let hpa = pipeline(|s| s["scaling"]["engine"] = json!("hpa"));
    let api = cluster(&hpa);
    run(&api, &hpa).await;
    let log = api.log();
    assert!(log.contains(&format!("DELETE {keda_path}/scaledobjects/hooks-worker")));
    assert!(log.contains(&format!(
        "DELETE {keda_path}/triggerauthentications/hooks-worker"
    )));
}

#[tokio::test]
async fn subscriptions_bring_a_headless_service_which_goes_with_them() {
    let p = pipeline(|s| {
        s["ingress"]["subscriptions"] =
            json!([{"name": "events", "path": "/events", "webhook": "github"}]);
    });
    let api = cluster(&p);
    run(&api, &p).await;
    let path = "/api/v1/namespaces/default/services/hooks-ingress-push";
    let service = api.get(path).unwrap();
    assert_eq!(service["spec"]["clusterIP"], "None");

    let mut without = pipeline(|_| {});
    without["metadata"]["generation"] = json!(3);
    run(&api, &without).await;
    assert!(
        api.log().contains(&format!("DELETE {path}")),
        "{:?}",
        api.log()
    );
    assert!(api.get(path).is_none());
}
