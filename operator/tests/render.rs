//! Rendering pipelines into workloads, on the examples a user applies.
// Set-up steps unwrap: a failure fails the test (clippy's allow-unwrap-in-tests
// covers #[test] functions only, not the helpers of an integration test).
#![allow(clippy::unwrap_used)]

mod common;

use common::examples::example;
use eventpipe_crds::{Manifest, Pipeline};
use eventpipe_operator::{Settings, render};
use serde_json::{Value, json};

fn settings() -> Settings {
    Settings {
        ingress_image: "ghcr.io/eventpipe/ingress:0.1.0".into(),
        worker_image: "ghcr.io/eventpipe/worker:0.1.0".into(),
        env: vec![
            serde_json::from_value(json!({"name": "AWS_REGION", "value": "eu-west-1"})).unwrap(),
        ],
        credentials_secret: Some("aws".into()),
        image_pull_policy: Some("IfNotPresent".into()),
        ..Default::default()
    }
}

fn v<T: serde::Serialize>(x: &T) -> Value {
    serde_json::to_value(x).unwrap()
}

#[test]
fn the_config_map_holds_the_documents_the_binaries_read() {
    let p = example("github-analytics.yaml", "github-ingest");
    let w = render(&p, &settings());
    let yaml = &w.config.data.as_ref().unwrap()["pipeline.yaml"];
    let back = Manifest::from_yaml("configmap", yaml)
        .unwrap()
        .pipeline("github-ingest")
        .unwrap();
    assert_eq!(back.pipeline.spec, p.pipeline.spec);
    assert_eq!(back.bindings.keys().collect::<Vec<_>>(), ["github-events"]);
    assert!(
        !yaml.contains("uid"),
        "cluster state stays out of the config"
    );
    assert_eq!(
        w.config.metadata.name.as_deref(),
        Some("github-ingest-pipeline")
    );
}

#[test]
fn the_ingress_is_a_hardened_deployment_with_its_secrets_and_a_service() {
    let p = example("github-analytics.yaml", "github-ingest");
    let w = render(&p, &settings());
    let (deployment, service) = w.ingress.unwrap();
    let d = v(&deployment);
    assert_eq!(d["metadata"]["name"], "github-ingest-ingress");
    assert_eq!(d["metadata"]["namespace"], "shop");
    assert_eq!(d["metadata"]["ownerReferences"][0]["kind"], "EventPipeline");
    assert_eq!(d["metadata"]["ownerReferences"][0]["controller"], true);
    assert_eq!(d["spec"]["replicas"], 2);
    let pod = &d["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let c = &pod["containers"][0];
    assert_eq!(c["image"], "ghcr.io/eventpipe/ingress:0.1.0");
    assert_eq!(c["imagePullPolicy"], "IfNotPresent");
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert!(c["resources"]["requests"]["cpu"].is_string());
    assert!(
        c["args"]
            .as_array()
            .unwrap()
            .contains(&json!("--config=/etc/eventpipe/config/pipeline.yaml"))
    );
    assert_eq!(c["env"][0]["name"], "AWS_REGION");
    assert_eq!(c["envFrom"][0]["secretRef"]["name"], "aws");
    let mounts = c["volumeMounts"].as_array().unwrap();
    assert!(mounts.contains(&json!({"name": "secret-github-webhook", "mountPath": "/etc/eventpipe/secrets/github-webhook", "readOnly": true})));
    let volumes = pod["volumes"].as_array().unwrap();
    assert!(volumes.contains(
        &json!({"name": "secret-github-webhook", "secret": {"secretName": "github-webhook"}})
    ));
    assert!(
        volumes
            .contains(&json!({"name": "config", "configMap": {"name": "github-ingest-pipeline"}}))
    );
    let s = v(&service);
    assert_eq!(
        s["spec"]["ports"][0],
        json!({"name": "http", "port": 80, "targetPort": "http"})
    );
    assert_eq!(s["spec"]["selector"], d["spec"]["selector"]["matchLabels"]);
}

#[test]
fn an_ingress_with_tls_serves_https_from_its_secret() {
    let mut p = example("github-analytics.yaml", "github-ingest");
    let ingress = p.pipeline.spec.ingress.as_mut().unwrap();
    ingress.tls =
        Some(serde_json::from_value(json!({"secretRef": {"name": "hooks-tls"}})).unwrap());
    let w = render(&p, &settings());
    let (deployment, service) = w.ingress.unwrap();
    let d = v(&deployment);
    let c = &d["spec"]["template"]["spec"]["containers"][0];
    let args = c["args"].as_array().unwrap();
    for arg in [
        "--tls-cert=/etc/eventpipe/secrets/hooks-tls/tls.crt",
        "--tls-key=/etc/eventpipe/secrets/hooks-tls/tls.key",
    ] {
        assert!(args.contains(&json!(arg)), "{args:?}");
    }
    let mounts = c["volumeMounts"].as_array().unwrap();
    assert!(mounts.contains(&json!({"name": "secret-hooks-tls", "mountPath": "/etc/eventpipe/secrets/hooks-tls", "readOnly": true})));
    assert_eq!(
        v(&service)["spec"]["ports"][0],
        json!({"name": "https", "port": 443, "targetPort": "http"})
    );
}

#[test]
fn a_rotations_previous_secret_is_mounted_beside_the_current_one() {
    let mut p = example("github-analytics.yaml", "github-ingest");
    let ingress = p.pipeline.spec.ingress.as_mut().unwrap();
    ingress.webhooks[0].signature.previous_secret_ref = Some(
        serde_json::from_value(json!({"name": "github-webhook-old", "key": "secret"})).unwrap(),
    );
    let (deployment, _) = render(&p, &settings()).ingress.unwrap();
    let volumes = v(&deployment)["spec"]["template"]["spec"]["volumes"].to_string();
    for name in ["github-webhook", "github-webhook-old"] {
        assert!(
            volumes.contains(&format!(r#""secretName":"{name}""#)),
            "{volumes}"
        );
    }
}

#[test]
fn workers_scale_on_queue_depth_and_drain_before_they_are_killed() {
    let p = example("github-analytics.yaml", "github-ingest");
    let w = render(&p, &settings());
    let d = v(&w.worker);
    assert!(
        d["spec"]["replicas"].is_null(),
        "the HPA owns the replica count"
    );
    let pod = &d["spec"]["template"]["spec"];
    assert_eq!(pod["containers"].as_array().unwrap().len(), 1);
    let grace = pod["terminationGracePeriodSeconds"].as_i64().unwrap();
    assert!(grace > 30, "longer than the 30s delivery timeout: {grace}");
    assert!(
        pod["containers"][0]["args"]
            .as_array()
            .unwrap()
            .contains(&json!("--grace-period=35s"))
    );
    let h = v(w.hpa().unwrap());
    assert_eq!(
        h["spec"]["scaleTargetRef"],
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": "github-ingest-worker"})
    );
    assert_eq!(h["spec"]["minReplicas"], 1);
    assert_eq!(h["spec"]["maxReplicas"], 5);
    let metric = &h["spec"]["metrics"][0]["external"];
    assert_eq!(metric["metric"]["name"], "eventpipe_queue_depth");
    assert_eq!(
        metric["metric"]["selector"]["matchLabels"]["eventpipe.dev/pipeline"],
        "github-ingest"
    );
    assert_eq!(
        metric["target"],
        json!({"type": "AverageValue", "averageValue": "100"})
    );
}

#[test]
fn stream_pipelines_scale_on_lag_and_have_no_ingress() {
    let p = example("github-analytics.yaml", "github-aggregate");
    let w = render(&p, &settings());
    assert!(w.ingress.is_none());
    let h = v(w.hpa().unwrap());
    let metrics = h["spec"]["metrics"].as_array().unwrap();
    assert_eq!(metrics.len(), 1);
    assert_eq!(
        metrics[0]["external"]["metric"]["name"],
        "eventpipe_stream_lag_seconds"
    );
    assert_eq!(
        metrics[0]["external"]["target"],
        json!({"type": "Value", "value": "30"})
    );
}

#[test]
fn a_container_processor_runs_as_a_sidecar_and_behavior_passes_through() {
    let mut p = example("notes.yaml", "notes");
    p.pipeline.spec.processor = serde_json::from_value(json!({"container": {"image": "acme/saver:2", "port": 7000, "path": "/save", "env": [{"name": "MODE", "value": "fast"}]}})).unwrap();
    p.pipeline.spec.scaling.behavior = Some(
        serde_json::from_value(json!({"scaleDown": {"stabilizationWindowSeconds": 120}})).unwrap(),
    );
    p.pipeline.spec.scaling.min_replicas = 0;
    let w = render(&p, &settings());
    let pod = v(&w.worker)["spec"]["template"]["spec"].clone();
    let sidecar = &pod["containers"][1];
    assert_eq!(sidecar["name"], "processor");
    assert_eq!(sidecar["image"], "acme/saver:2");
    assert_eq!(sidecar["ports"][0]["containerPort"], 7000);
    assert_eq!(sidecar["env"][0]["value"], "fast");
    let h = v(w.hpa().unwrap());
    assert_eq!(
        h["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"],
        120
    );
    assert_eq!(
        h["spec"]["minReplicas"], 1,
        "an HPA cannot go below one replica"
    );
}

#[test]
fn a_changed_spec_rolls_the_pods() {
    let p = example("notes.yaml", "notes");
    let hash = |p: &Pipeline| {
        v(&render(p, &settings()).worker)["spec"]["template"]["metadata"]["annotations"]["eventpipe.dev/config-hash"].clone()
    };
    let before = hash(&p);
    let mut changed = p.clone();
    changed.pipeline.spec.delivery.concurrency = 3;
    assert_ne!(hash(&changed), before);
    assert_eq!(hash(&p.clone()), before);
}

#[test]
fn a_pipelines_tracing_reaches_its_pods_in_place_of_the_operators() {
    let mut s = settings();
    s.env.push(
        serde_json::from_value(
            json!({"name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": "http://operator-default:4318"}),
        )
        .unwrap(),
    );
    let env_of = |p: &Pipeline| {
        let w = render(p, &s);
        let (ingress, _) = w.ingress.unwrap();
        [ingress, w.worker].map(|d| {
            let env = v(&d)["spec"]["template"]["spec"]["containers"][0]["env"].clone();
            env.as_array()
                .unwrap()
                .iter()
                .map(|e| (e["name"].as_str().unwrap().to_string(), e["value"].clone()))
                .collect::<std::collections::BTreeMap<_, _>>()
        })
    };
    let mut p = example("github-analytics.yaml", "github-ingest");
    for env in env_of(&p) {
        assert_eq!(
            env["OTEL_EXPORTER_OTLP_ENDPOINT"],
            "http://operator-default:4318"
        );
        assert!(!env.contains_key("OTEL_TRACES_SAMPLER"), "{env:?}");
    }
    p.pipeline.spec.tracing = Some(
        serde_json::from_value(
            json!({"otlpEndpoint": "http://jaeger.obs:4318", "sampleRatio": 0.25}),
        )
        .unwrap(),
    );
    for env in env_of(&p) {
        assert_eq!(env["OTEL_EXPORTER_OTLP_ENDPOINT"], "http://jaeger.obs:4318");
        assert_eq!(env["OTEL_TRACES_SAMPLER"], "parentbased_traceidratio");
        assert_eq!(env["OTEL_TRACES_SAMPLER_ARG"], "0.25");
        assert_eq!(
            env["AWS_REGION"], "eu-west-1",
            "the operator's other settings stay"
        );
    }
}

/// Every pod template of a pipeline's workloads.
fn pods(p: &Pipeline) -> Vec<Value> {
    let w = render(p, &settings());
    let mut deployments = vec![v(&w.worker)];
    deployments.extend(w.ingress.map(|(d, _)| v(&d)));
    deployments
        .into_iter()
        .map(|d| d["spec"]["template"]["spec"].clone())
        .collect()
}

/// A pipeline with an ingress and the user's container as its processor.
fn with_sidecar(security_context: Option<Value>) -> Pipeline {
    let mut p = example("github-analytics.yaml", "github-ingest");
    let mut container = json!({"image": "acme/saver:2", "port": 7000});
    if let Some(s) = security_context {
        container["securityContext"] = s;
    }
    p.pipeline.spec.processor = serde_json::from_value(json!({"container": container})).unwrap();
    p
}

/// What the `restricted` Pod Security Standard forbids in a pod, as messages.
fn restricted_violations(pod: &Value) -> Vec<String> {
    let mut found = vec![];
    for host in ["hostNetwork", "hostPID", "hostIPC"] {
        if pod[host] == true {
            found.push(format!("pod: {host}"));
        }
    }
    if !pod["securityContext"]["sysctls"].is_null() {
        found.push("pod: sysctls".into());
    }
    let allowed = [
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    ];
    for volume in pod["volumes"].as_array().into_iter().flatten() {
        let kinds = volume.as_object().unwrap().keys().filter(|k| *k != "name");
        for kind in kinds.filter(|k| !allowed.contains(&k.as_str())) {
            found.push(format!("volume {}: {kind}", volume["name"]));
        }
    }
    for list in ["initContainers", "containers", "ephemeralContainers"] {
        for c in pod[list].as_array().into_iter().flatten() {
            found.extend(container_violations(pod, c));
        }
    }
    found
}

fn container_violations(pod: &Value, c: &Value) -> Vec<String> {
    let (own, of_pod) = (&c["securityContext"], &pod["securityContext"]);
    let either = |field: &str| match &own[field] {
        Value::Null => of_pod[field].clone(),
        set => set.clone(),
    };
    let caps = |list: &str| {
        own["capabilities"][list]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    let seccomp = either("seccompProfile")["type"].clone();
    let checks = [
        (own["privileged"] != true, "privileged"),
        (
            own["allowPrivilegeEscalation"] == false,
            "allowPrivilegeEscalation not false",
        ),
        (
            caps("drop").contains(&json!("ALL")),
            "capabilities not dropping ALL",
        ),
        (
            caps("add").iter().all(|a| a == "NET_BIND_SERVICE"),
            "capabilities added",
        ),
        (either("runAsNonRoot") == true, "runAsNonRoot not true"),
        (either("runAsUser") != 0, "runAsUser 0"),
        (
            seccomp == "RuntimeDefault" || seccomp == "Localhost",
            "seccompProfile",
        ),
        (
            own["procMount"].is_null() || own["procMount"] == "Default",
            "procMount",
        ),
        (
            either("appArmorProfile")["type"] != "Unconfined",
            "appArmorProfile Unconfined",
        ),
        (
            either("seLinuxOptions")["user"].is_null(),
            "seLinuxOptions.user",
        ),
        (
            either("windowsOptions")["hostProcess"] != true,
            "hostProcess",
        ),
    ];
    let host_port = c["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|p| p["hostPort"].as_i64().unwrap_or(0) != 0);
    checks
        .into_iter()
        .filter(|(ok, _)| !ok)
        .map(|(_, what)| what)
        .chain(host_port.then_some("hostPort"))
        .map(|what| format!("container {}: {what}", c["name"]))
        .collect()
}

#[test]
fn every_pod_rendered_passes_the_restricted_pod_security_standard() {
    let mut all = vec![with_sidecar(None)];
    for (file, name) in [
        ("github-analytics.yaml", "github-ingest"),
        ("github-analytics.yaml", "github-aggregate"),
        ("notes.yaml", "notes"),
    ] {
        all.push(example(file, name));
    }
    let mut containers = 0;
    for p in &all {
        for pod in pods(p) {
            assert_eq!(restricted_violations(&pod), Vec::<String>::new(), "{pod:#}");
            assert_eq!(pod["automountServiceAccountToken"], false, "{pod:#}");
            containers += pod["containers"].as_array().unwrap().len();
        }
    }
    assert_eq!(
        containers, 8,
        "ingress, worker and sidecar containers checked"
    );
}

#[test]
fn the_checker_sees_what_the_restricted_standard_forbids() {
    let pod = json!({
        "hostNetwork": true,
        "volumes": [{"name": "h", "hostPath": {"path": "/"}}],
        "containers": [{"name": "c", "securityContext": {"privileged": true, "runAsUser": 0}, "ports": [{"hostPort": 80}]}],
    });
    let found = restricted_violations(&pod).join("\n");
    for want in [
        "hostNetwork",
        "hostPath",
        "privileged",
        "allowPrivilegeEscalation",
        "ALL",
        "runAsNonRoot",
        "runAsUser 0",
        "seccompProfile",
        "hostPort",
    ] {
        assert!(found.contains(want), "{want} not found in:\n{found}");
    }
}

#[test]
fn the_sidecars_security_context_takes_the_users_fields_over_the_defaults() {
    let p = with_sidecar(Some(
        json!({"runAsUser": 1000, "readOnlyRootFilesystem": true}),
    ));
    let pod = &pods(&p)[0];
    let sidecar = &pod["containers"][1]["securityContext"];
    assert_eq!(sidecar["runAsUser"], 1000);
    assert_eq!(sidecar["readOnlyRootFilesystem"], true);
    assert_eq!(sidecar["allowPrivilegeEscalation"], false, "defaults stay");
    assert_eq!(sidecar["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(restricted_violations(pod), Vec::<String>::new());

    let p = with_sidecar(Some(json!({"capabilities": {"add": ["NET_ADMIN"]}})));
    let found = restricted_violations(&pods(&p)[0]);
    assert_eq!(
        found.len(),
        2,
        "the user's choice stands, checked: {found:?}"
    );
}

#[test]
fn processor_secrets_are_mounted_in_the_workers_and_their_values_rendered_nowhere() {
    let mut p = example("notes.yaml", "notes");
    p.pipeline.spec.processor = serde_json::from_value(json!({"http": {
        "url": "https://api.example.com/notes",
        "headersFrom": [{"name": "X-Api-Key", "secretRef": {"name": "notes-api", "key": "key"}}],
        "bearerTokenSecretRef": {"name": "notes-token", "key": "token"},
    }}))
    .unwrap();
    // What those Secrets hold, which only the workers' mounted files may contain.
    let values = ["k-4f1d9c0e7a", "t-93be22d6f0"];
    let w = render(&p, &settings());
    let rendered = [v(&w.config), v(&w.worker), v(w.hpa().unwrap())];
    for (object, value) in rendered.iter().flat_map(|o| values.map(|s| (o, s))) {
        assert!(!object.to_string().contains(value), "{object:#}");
    }
    let config = &w.config.data.as_ref().unwrap()["pipeline.yaml"];
    assert!(config.contains("notes-api") && config.contains("notes-token"));
    let pod = &v(&w.worker)["spec"]["template"]["spec"];
    let worker = &pod["containers"][0];
    for name in ["notes-api", "notes-token"] {
        let volume = json!({"name": format!("secret-{name}"), "secret": {"secretName": name}});
        assert!(pod["volumes"].as_array().unwrap().contains(&volume));
        let mount = json!({"name": format!("secret-{name}"), "mountPath": format!("/etc/eventpipe/secrets/{name}"), "readOnly": true});
        assert!(worker["volumeMounts"].as_array().unwrap().contains(&mount));
    }
    let env = worker["env"].to_string() + &worker["envFrom"].to_string();
    assert!(
        !env.contains("notes-api") && !env.contains("notes-token"),
        "{env}"
    );
}

#[test]
fn an_ingress_with_subscriptions_has_a_headless_service_naming_every_replica() {
    let mut p = example("github-analytics.yaml", "github-ingest");
    assert!(render(&p, &settings()).push.is_none());
    let ingress = p.pipeline.spec.ingress.as_mut().unwrap();
    ingress.subscriptions.push(eventpipe_crds::Subscription {
        name: "events".into(),
        path: "/events".into(),
        webhook: ingress.webhooks[0].name.clone(),
    });
    let w = render(&p, &settings());
    let s = v(&w.push.unwrap());
    // The name the worker's push processor resolves, to every pod's address.
    assert_eq!(s["metadata"]["name"], "github-ingest-ingress-push");
    assert_eq!(s["metadata"]["ownerReferences"][0]["kind"], "EventPipeline");
    assert_eq!(s["spec"]["clusterIP"], "None");
    let (deployment, _) = w.ingress.unwrap();
    let d = v(&deployment);
    assert_eq!(s["spec"]["selector"], d["spec"]["selector"]["matchLabels"]);
    assert_eq!(
        s["spec"]["ports"],
        json!([{"name": "push", "port": 9090, "targetPort": "metrics"}])
    );
    let ports = &d["spec"]["template"]["spec"]["containers"][0]["ports"];
    let ops = ports
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "metrics");
    assert_eq!(ops.unwrap()["containerPort"], 9090);
}
