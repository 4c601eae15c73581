//! Scaling to and from zero on a real cluster (E2E_OPERATOR=helm): a pipeline with
//! `minReplicas: 0` idles at no worker, a message wakes one, a backlog raises them to
//! maxReplicas through the HPA, and drained they come back to one and then to none:
//! 0 → 1 → N → 1 → 0, with real pods. Prints how long the first message waited for a
//! ready worker and a depth spike for the replicas it calls for. Then, where the
//! cluster serves KEDA's CRDs, the ScaledObject and TriggerAuthentication the operator
//! renders for `scaling.engine: keda` are accepted by the API server; and an install
//! beside another external metrics adapter is refused.
// The e2e suite is test code: a failed step fails the test, helpers included.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use eventpipe_crds::EventPipeline;
use eventpipe_e2e::helm::{self, SETTLE, available};
use eventpipe_e2e::load::{PROCESSOR, send_messages, slow_processor};
use eventpipe_e2e::{eventually, ready_condition};
use k8s_openapi::api::apps::v1::Deployment;
use kube::Client;
use kube::api::Api;
use serde_json::{Value, json};

const MAX_REPLICAS: i32 = 3;
const NAME: &str = "idle";

#[tokio::test]
async fn idle_workers_go_to_zero_and_come_back_with_messages() {
    let Some((client, mut release)) = helm::start(&[]).await else {
        return;
    };
    let app = release.app.clone();
    slow_processor(&client, &app).await;
    let moto = release.moto().await;
    start_pipeline(&client, &app).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &app);
    let pipelines: Api<EventPipeline> = Api::namespaced(client.clone(), &app);
    let worker = format!("{NAME}-worker");

    let at = |n: i32| {
        let (deployments, worker) = (deployments.clone(), worker.clone());
        async move || {
            let d = deployments.get(&worker).await.ok()?;
            (d.spec.replicas == Some(n) && (n == 0 || available(&d) >= 1)).then_some(d)
        }
    };
    eventually("idle workers at 0", SETTLE, at(0)).await;
    // The status follows on the reconcile that the Deployment's change sets off.
    eventually("the pipeline shown idle at zero", SETTLE, async || {
        let p = pipelines.get(NAME).await.ok()?;
        (condition(&p, "Active").as_deref() == Some("IdleAtZero")).then_some(())
    })
    .await;

    let sqs = helm::sqs(&moto);
    let url = sqs.get_queue_url().queue_name(NAME).send().await.unwrap();
    let url = url.queue_url().unwrap();
    let first = Instant::now();
    send_messages(&sqs, url, 10).await;
    eventually("a worker ready after a message", SETTLE, at(1)).await;
    let to_ready = first.elapsed();

    let spike = Instant::now();
    send_messages(&sqs, url, 300).await;
    eventually("workers at maxReplicas", SETTLE, async || {
        let d = deployments.get(&worker).await.ok()?;
        (d.spec.replicas == Some(MAX_REPLICAS)).then_some(())
    })
    .await;
    let to_max = spike.elapsed();
    eventually("back to one worker", Duration::from_secs(300), at(1)).await;
    eventually("back to zero", Duration::from_secs(180), at(0)).await;
    eprintln!("FIGURE first message → first worker Ready: {to_ready:.1?}");
    eprintln!("FIGURE 300-message spike → {MAX_REPLICAS} replicas desired: {to_max:.1?}");
    let status = pipelines.get(NAME).await.unwrap().status.unwrap();
    assert_eq!(status.dlq_depth.unwrap_or(0), 0, "nothing dead-lettered");

    keda_objects_are_accepted(&client, &app).await;
    drop(moto);
    release.uninstall(&client).await;
}

/// A pipeline reading a queue of its own into the slow processor, from zero workers up
/// to three, idle after 30 s.
async fn start_pipeline(client: &Client, ns: &str) {
    let binding = json!({
        "apiVersion": "eventpipe.dev/v1alpha1", "kind": "QueueBinding",
        "metadata": {"name": NAME}, "spec": {"sqs": {"queueName": NAME, "create": true}},
    });
    let immediately =
        |policy: Value| json!({"stabilizationWindowSeconds": 0, "policies": [policy]});
    let pipeline = json!({
        "apiVersion": "eventpipe.dev/v1alpha1", "kind": "EventPipeline",
        "metadata": {"name": NAME},
        "spec": {
            "sources": [{"queueBindingRef": {"name": NAME}}],
            "processor": {"http": {"url": format!("http://{PROCESSOR}.{ns}.svc:8080/"), "timeout": "10s"}},
            "delivery": {"concurrency": 2, "timeout": "10s"},
            "scaling": {
                "minReplicas": 0, "maxReplicas": MAX_REPLICAS, "targetDepthPerReplica": 20,
                "cooldown": "30s", "pollingInterval": "2s",
                "behavior": {
                    "scaleUp": immediately(json!({"type": "Pods", "value": 4, "periodSeconds": 15})),
                    "scaleDown": immediately(json!({"type": "Percent", "value": 100, "periodSeconds": 15})),
                },
            },
        },
    });
    eventpipe_e2e::apply(client, ns, &binding).await;
    eventpipe_e2e::apply(client, ns, &pipeline).await;
    let pipelines: Api<EventPipeline> = Api::namespaced(client.clone(), ns);
    eventually(&format!("{NAME} Ready"), SETTLE, async || {
        ready_condition(&pipelines.get(NAME).await.ok()?).filter(|c| c.status == "True")
    })
    .await;
}

fn condition(p: &EventPipeline, type_: &str) -> Option<String> {
    let s = p.status.as_ref()?;
    let c = s.conditions.iter().find(|c| c.type_ == type_)?;
    Some(c.reason.clone())
}

/// Where the cluster serves KEDA's kinds, the pipeline moved to `engine: keda` gets a
/// ScaledObject and TriggerAuthentication the API server accepts, and loses its HPA.
async fn keda_objects_are_accepted(client: &Client, ns: &str) {
    let served = client.list_api_group_resources("keda.sh/v1alpha1").await;
    if served.is_err() {
        eprintln!(
            "SKIP (KEDA): the cluster serves no keda.sh/v1alpha1; apply KEDA's CRDs to check its objects"
        );
        return;
    }
    let patch = json!({"apiVersion": "eventpipe.dev/v1alpha1", "kind": "EventPipeline",
        "metadata": {"name": NAME}, "spec": {"scaling": {"engine": "keda", "minReplicas": 0, "maxReplicas": MAX_REPLICAS}}});
    let api = eventpipe_e2e::api_of(client, ns, "EventPipeline");
    let params = kube::api::PatchParams::default();
    api.patch(NAME, &params, &kube::api::Patch::Merge(&patch))
        .await
        .unwrap();
    let keda = |kind: &str| {
        let gvk = kube::api::GroupVersionKind::gvk("keda.sh", "v1alpha1", kind);
        let ar = kube::api::ApiResource::from_gvk(&gvk);
        Api::<kube::api::DynamicObject>::namespaced_with(client.clone(), ns, &ar)
    };
    let worker = format!("{NAME}-worker");
    let so = eventually("a ScaledObject", SETTLE, async || {
        keda("ScaledObject").get(&worker).await.ok()
    })
    .await;
    eprintln!(
        "ScaledObject accepted: {}",
        serde_json::to_string(&so.data["spec"]).unwrap()
    );
    assert_eq!(so.data["spec"]["triggers"][0]["type"], "aws-sqs-queue");
    keda("TriggerAuthentication").get(&worker).await.unwrap();
    let hpas: Api<k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler> =
        Api::namespaced(client.clone(), ns);
    eventually("the HPA gone", SETTLE, async || {
        hpas.get_opt(&worker).await.ok()?.is_none().then_some(())
    })
    .await;
}

/// Another adapter's APIService in place: `helm install` stops, naming its Service and
/// the value that keeps it, and leaves it as it was.
#[tokio::test]
async fn an_install_beside_another_metrics_adapter_is_refused() {
    if !eventpipe_e2e::helm_mode() {
        eprintln!("SKIP: E2E_OPERATOR is not helm");
        return;
    }
    let Some(client) = eventpipe_e2e::cluster().await else {
        return;
    };
    use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService;
    let apiservices: Api<APIService> = Api::all(client.clone());
    if apiservices
        .get_opt(helm::APISERVICE)
        .await
        .unwrap()
        .is_some()
    {
        eprintln!(
            "SKIP: {} exists already; not replaced by a test",
            helm::APISERVICE
        );
        return;
    }
    let other: APIService = serde_json::from_value(json!({
        "metadata": {"name": helm::APISERVICE},
        "spec": {"group": "external.metrics.k8s.io", "version": "v1beta1",
                 "groupPriorityMinimum": 100, "versionPriority": 100, "insecureSkipTLSVerify": true,
                 "service": {"namespace": "keda", "name": "keda-operator-metrics-apiserver", "port": 443}},
    }))
    .unwrap();
    let pp = kube::api::PostParams::default();
    apiservices.create(&pp, &other).await.unwrap();
    let ns = eventpipe_e2e::test_namespace("eventpipe-refused");
    let chart = concat!(env!("CARGO_MANIFEST_DIR"), "/../charts/eventpipe");
    let out = tokio::process::Command::new(eventpipe_e2e::tools::tool("helm"))
        .args([
            "install",
            helm::RELEASE,
            chart,
            "-n",
            &ns,
            "--create-namespace",
        ])
        .output()
        .await
        .unwrap();
    let after = apiservices.get(helm::APISERVICE).await.unwrap();
    apiservices
        .delete(helm::APISERVICE, &Default::default())
        .await
        .unwrap();
    let _ = tokio::process::Command::new(eventpipe_e2e::tools::tool("kubectl"))
        .args([
            "delete",
            "namespace",
            &ns,
            "--ignore-not-found",
            "--wait=false",
        ])
        .output()
        .await;
    let err = String::from_utf8_lossy(&out.stderr);
    eprintln!("helm install: {err}");
    assert!(!out.status.success(), "installed beside another adapter");
    assert!(
        err.contains("keda/keda-operator-metrics-apiserver"),
        "{err}"
    );
    assert!(
        err.contains("externalMetrics.apiService.enabled=false"),
        "{err}"
    );
    let service = after.spec.unwrap().service.unwrap();
    assert_eq!(
        service.name.as_deref(),
        Some("keda-operator-metrics-apiserver")
    );
}
