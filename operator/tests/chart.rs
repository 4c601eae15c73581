//! The Helm chart grants exactly the API access the operator uses and starts it with a
//! command line it accepts.
// Set-up steps unwrap: a failure fails the test (clippy's allow-unwrap-in-tests
// covers #[test] functions only, not the helpers of an integration test).
#![allow(clippy::unwrap_used)]

use std::process::Command;

use eventpipe_operator::{AUTH_RULES, FRONT_PROXY_READER, LEASE_RULES, RULES};
use serde_json::Value;

fn render() -> Vec<Value> {
    render_with(&[])
}

fn render_with(values: &[&str]) -> Vec<Value> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let helm = format!("{root}/.tools/helm");
    assert!(
        std::path::Path::new(&helm).exists(),
        "{helm} not found: run `make tools`"
    );
    let out = Command::new(helm)
        .args([
            "template",
            "t",
            &format!("{root}/charts/eventpipe"),
            "-n",
            "ep",
        ])
        .args(values.iter().flat_map(|v| ["--set", v]))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .filter(|v: &Value| !v.is_null())
        .collect()
}

fn rules_of(docs: &[Value], kind: &str, name: &str) -> Vec<(String, Vec<String>, Vec<String>)> {
    let role = docs
        .iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"));
    let strings = |v: &Value| {
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    role["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                strings(&r["apiGroups"])[0].clone(),
                strings(&r["resources"]),
                strings(&r["verbs"]),
            )
        })
        .collect()
}

fn expected(rules: &[(&str, &[&str], &[&str])]) -> Vec<(String, Vec<String>, Vec<String>)> {
    rules
        .iter()
        .map(|(g, r, v)| {
            (
                g.to_string(),
                r.iter().map(|s| s.to_string()).collect(),
                v.iter().map(|s| s.to_string()).collect(),
            )
        })
        .collect()
}

#[test]
fn the_cluster_role_is_what_the_operator_calls() {
    let docs = render();
    assert_eq!(
        rules_of(&docs, "ClusterRole", "t-eventpipe"),
        expected(RULES)
    );
    assert_eq!(
        rules_of(&docs, "Role", "t-eventpipe-leader"),
        expected(LEASE_RULES)
    );
    let secrets = expected(RULES)
        .into_iter()
        .find(|(_, r, _)| r == &["secrets"]);
    assert_eq!(
        secrets.unwrap().2,
        ["get"],
        "Secrets are never listed or watched"
    );
    assert_eq!(
        rules_of(&docs, "ClusterRole", "t-eventpipe-auth"),
        expected(AUTH_RULES)
    );
    assert!(bound(
        &docs,
        "ClusterRoleBinding",
        "ClusterRole",
        "t-eventpipe-auth"
    ));
}

/// Whether a `kind` binds `role_kind` `role` to the operator's ServiceAccount.
fn bound(docs: &[Value], kind: &str, role_kind: &str, role: &str) -> bool {
    docs.iter().any(|d| {
        d["kind"] == kind
            && d["roleRef"]["kind"] == role_kind
            && d["roleRef"]["name"] == role
            && d["subjects"][0]["name"] == "t-eventpipe"
            && d["subjects"][0]["namespace"] == "ep"
    })
}

#[test]
fn the_front_proxy_config_is_read_through_the_built_in_role() {
    let (namespace, role) = FRONT_PROXY_READER;
    for docs in [render(), render_with(&["watchNamespaces={shop}"])] {
        let binding = docs
            .iter()
            .find(|d| d["kind"] == "RoleBinding" && d["roleRef"]["name"] == role)
            .expect("a RoleBinding of the front proxy's config reader");
        assert_eq!(binding["metadata"]["namespace"], namespace);
        assert!(bound(&docs, "RoleBinding", "Role", role));
    }
}

#[test]
fn metrics_take_a_permitted_token_and_the_probes_stay_open() {
    let docs = render_with(&[
        "serviceMonitor.enabled=true",
        "operator.metrics.readers[0].namespace=monitoring",
        "operator.metrics.readers[0].name=prometheus",
    ]);
    let (args, _) = operator_command(&docs);
    assert!(
        args.contains(&"--metrics-auth=token".to_string()),
        "{args:?}"
    );
    let reader = docs
        .iter()
        .find(|d| {
            d["kind"] == "ClusterRole" && d["metadata"]["name"] == "t-eventpipe-metrics-reader"
        })
        .expect("a ClusterRole for Prometheus to bind");
    assert_eq!(
        reader["rules"],
        serde_json::json!([{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}])
    );
    let readers = docs
        .iter()
        .find(|d| {
            d["kind"] == "ClusterRoleBinding"
                && d["roleRef"]["name"] == "t-eventpipe-metrics-reader"
        })
        .expect("the readers bound");
    assert_eq!(
        readers["subjects"],
        serde_json::json!([{"kind": "ServiceAccount", "name": "prometheus", "namespace": "monitoring"}])
    );
    let monitor = docs.iter().find(|d| d["kind"] == "ServiceMonitor").unwrap();
    let endpoint = &monitor["spec"]["endpoints"][0];
    assert_eq!(endpoint["port"], "metrics");
    assert_eq!(
        endpoint["bearerTokenFile"],
        "/var/run/secrets/kubernetes.io/serviceaccount/token"
    );
    assert_eq!(endpoint["scheme"], "https", "a token only travels over TLS");
    probes_use_the_open_paths(&docs, "https");
}

/// The kubelet's probes and `helm test` read /healthz and /readyz on the metrics port,
/// which stay open: nothing depends on unauthenticated access elsewhere.
fn probes_use_the_open_paths(docs: &[Value], scheme: &str) {
    let deployment = docs
        .iter()
        .find(|d| d["kind"] == "Deployment" && d["metadata"]["name"] == "t-eventpipe")
        .unwrap();
    let c = &deployment["spec"]["template"]["spec"]["containers"][0];
    let metrics_port = c["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "metrics")
        .unwrap();
    assert_eq!(metrics_port["containerPort"], 9090);
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        assert_eq!(c[probe]["httpGet"]["port"], "metrics", "{probe}");
        assert_eq!(c[probe]["httpGet"]["path"], path, "{probe}");
        let want = scheme.to_uppercase();
        assert_eq!(c[probe]["httpGet"]["scheme"], want.as_str(), "{probe}");
    }
    let test = docs
        .iter()
        .find(|d| d["kind"] == "Pod" && d["metadata"]["name"] == "t-eventpipe-test")
        .expect("the helm test Pod");
    let args = test["spec"]["containers"][0]["args"].to_string();
    assert!(args.contains(&format!("{scheme}://")), "{args}");
    assert!(args.contains(".svc:9090/readyz"), "{args}");
}

#[test]
fn metrics_open_to_all_need_no_reviews() {
    let docs = render_with(&["serviceMonitor.enabled=true", "operator.metrics.auth=none"]);
    let (args, _) = operator_command(&docs);
    assert!(
        args.contains(&"--metrics-auth=none".to_string()),
        "{args:?}"
    );
    for name in ["t-eventpipe-auth", "t-eventpipe-metrics-reader"] {
        let found = docs.iter().any(|d| d["metadata"]["name"] == name);
        assert!(!found, "{name} rendered");
    }
    let monitor = docs.iter().find(|d| d["kind"] == "ServiceMonitor").unwrap();
    assert!(
        monitor["spec"]["endpoints"][0]
            .get("bearerTokenFile")
            .is_none()
    );
    probes_use_the_open_paths(&docs, "http");
}

#[test]
fn watched_namespaces_get_roles_and_no_cluster_role() {
    let docs = render_with(&["watchNamespaces={shop,billing}"]);
    for ns in ["shop", "billing"] {
        let role = docs
            .iter()
            .find(|d| d["kind"] == "Role" && d["metadata"]["namespace"] == ns)
            .unwrap_or_else(|| panic!("no Role in {ns}"));
        assert_eq!(role["metadata"]["name"], "t-eventpipe");
        assert_eq!(
            rules_of(std::slice::from_ref(role), "Role", "t-eventpipe"),
            expected(RULES)
        );
        let bound = docs.iter().any(|d| {
            d["kind"] == "RoleBinding"
                && d["metadata"]["namespace"] == ns
                && d["roleRef"]["name"] == "t-eventpipe"
                && d["subjects"][0]["namespace"] == "ep"
        });
        assert!(bound, "no RoleBinding in {ns}");
    }
    let granted_cluster_wide = docs
        .iter()
        .any(|d| d["kind"] == "ClusterRole" && d["metadata"]["name"] == "t-eventpipe");
    assert!(!granted_cluster_wide);
    let (args, _) = operator_command(&docs);
    assert!(
        args.contains(&"--watch-namespaces=shop,billing".to_string()),
        "{args:?}"
    );
}

/// The operator's arguments and its literal environment (`valueFrom` ones left out).
fn operator_command(docs: &[Value]) -> (Vec<String>, Vec<(String, String)>) {
    let deployment = docs
        .iter()
        .find(|d| d["kind"] == "Deployment" && d["metadata"]["name"] == "t-eventpipe")
        .expect("the operator Deployment");
    let c = &deployment["spec"]["template"]["spec"]["containers"][0];
    let args = c["args"].as_array().unwrap().iter();
    let args = args.map(|a| a.as_str().unwrap().to_string()).collect();
    let env = c["env"].as_array().unwrap().iter().filter_map(|e| {
        Some((
            e["name"].as_str()?.to_string(),
            e["value"].as_str()?.to_string(),
        ))
    });
    (args, env.collect())
}

#[test]
fn the_operator_accepts_the_command_line_the_chart_gives_it() {
    for values in [
        &[][..],
        &[
            "localAws.enabled=true",
            "jaeger.enabled=true",
            "operator.image.pullPolicy=Never",
            "operator.metrics.auth=none",
        ],
        &[
            "aws.credentialsSecret=aws",
            "externalMetrics.tlsSecret=tls",
            "logLevel=debug",
            "watchNamespaces={shop,billing}",
        ],
        &["externalMetrics.apiService.enabled=false"],
        &["console.enabled=true"],
        &["console.enabled=true", "console.redriveToken.secretName=ct"],
    ] {
        let (args, env) = operator_command(&render_with(values));
        // With arguments it accepts, it gets as far as looking for a cluster.
        let out = Command::new(env!("CARGO_BIN_EXE_eventpipe-operator"))
            .args(&args)
            .envs(env)
            .env("KUBECONFIG", "/nonexistent/kubeconfig")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("/nonexistent/kubeconfig") && !err.contains("Usage:"),
            "{values:?}: {args:?} refused: {err}"
        );
    }
}

/// The names `eventpipe_…` an alert's expression reads.
fn alert_metrics(docs: &[Value]) -> Vec<String> {
    let rule = docs
        .iter()
        .find(|d| d["kind"] == "PrometheusRule")
        .expect("the PrometheusRule");
    let mut names = vec![];
    for r in rule["spec"]["groups"][0]["rules"].as_array().unwrap() {
        let expr = r["expr"].as_str().unwrap();
        for (i, _) in expr.match_indices("eventpipe_") {
            let name: String = expr[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            names.push(name);
        }
    }
    names.sort();
    names.dedup();
    names
}

#[test]
fn every_alert_reads_a_metric_the_scraped_pods_export() {
    let docs = render_with(&["prometheusRule.enabled=true", "serviceMonitor.enabled=true"]);
    let wanted = alert_metrics(&docs);
    assert!(wanted.len() >= 3, "alerts read {wanted:?}");

    // What a worker pod serves on its metrics port, with one event of each kind seen.
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = eventpipe_worker::metrics::Metrics::register(&mut registry);
    let source = eventpipe_worker::metrics::Source {
        pipeline: "p".into(),
        source: "s".into(),
    };
    metrics.outcome(&source, "delivered");
    metrics.dlq_depth.get_or_create(&source).set(0);
    let shard = eventpipe_worker::metrics::Shard {
        pipeline: "p".into(),
        source: "s".into(),
        shard: "shardId-1".into(),
    };
    metrics.iterator_age.get_or_create(&shard).set(0.0);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    for name in &wanted {
        assert!(
            text.lines().any(|l| l.starts_with(&format!("{name}{{"))),
            "the alerts read {name}, which workers do not export:\n{text}"
        );
    }

    // The PodMonitor scrapes the pods the operator deploys, on their metrics port.
    let monitor = docs
        .iter()
        .find(|d| d["kind"] == "PodMonitor")
        .expect("a PodMonitor");
    assert_eq!(monitor["spec"]["namespaceSelector"]["any"], true);
    assert_eq!(monitor["spec"]["podMetricsEndpoints"][0]["port"], "metrics");
    let selected = monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .unwrap();
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/github-analytics.yaml"
    );
    let mut pipeline = eventpipe_crds::Manifest::load(path)
        .unwrap()
        .pipeline("github-ingest")
        .unwrap();
    pipeline.pipeline.metadata.namespace = Some("shop".into());
    pipeline.pipeline.metadata.uid = Some("6f1c0c4e-1111-2222-3333-444455556666".into());
    let w = eventpipe_operator::render(&pipeline, &Default::default());
    let (ingress, _) = w.ingress.unwrap();
    for d in [ingress, w.worker] {
        let pod = serde_json::to_value(d.spec.template).unwrap();
        for (k, v) in selected {
            assert_eq!(&pod["metadata"]["labels"][k], v, "pod label {k}");
        }
        let ports = pod["spec"]["containers"][0]["ports"].as_array().unwrap();
        assert!(ports.iter().any(|p| p["name"] == "metrics"), "{ports:?}");
    }
}

#[test]
fn the_operators_budget_lets_a_drain_through_at_any_replica_count() {
    for (replicas, field) in [("1", "maxUnavailable"), ("2", "minAvailable")] {
        let docs = render_with(&[&format!("operator.replicas={replicas}")]);
        let budget = docs
            .iter()
            .find(|d| d["kind"] == "PodDisruptionBudget")
            .expect("the operator's PodDisruptionBudget");
        let spec = &budget["spec"];
        // One pod may always go: a lone replica, or one of several beside a leader.
        assert_eq!(spec[field], 1, "{replicas} replicas: {spec}");
        assert_eq!(spec["unhealthyPodEvictionPolicy"], "AlwaysAllow");
        let deployment = docs
            .iter()
            .find(|d| d["kind"] == "Deployment" && d["metadata"]["name"] == "t-eventpipe")
            .unwrap();
        assert_eq!(spec["selector"], deployment["spec"]["selector"]);
    }
}

/// Where another adapter owns the external metrics APIService, the chart registers
/// none, the operator defaults to KEDA and `helm test` does not look for the metrics.
#[test]
fn beside_another_metrics_adapter_the_chart_leaves_the_apiservice_alone() {
    let engine = |docs: &[Value]| {
        let (args, _) = operator_command(docs);
        args.into_iter()
            .find(|a| a.starts_with("--scaling-engine="))
    };
    let apiservices = |docs: &[Value]| docs.iter().filter(|d| d["kind"] == "APIService").count();
    let test_args = |docs: &[Value]| {
        let pod = docs.iter().find(|d| d["kind"] == "Pod").unwrap();
        pod["spec"]["containers"][0]["args"].clone()
    };
    let ours = render();
    assert_eq!(apiservices(&ours), 1);
    assert_eq!(engine(&ours).as_deref(), Some("--scaling-engine=hpa"));
    let beside = render_with(&["externalMetrics.apiService.enabled=false"]);
    assert_eq!(apiservices(&beside), 0);
    assert_eq!(engine(&beside).as_deref(), Some("--scaling-engine=keda"));
    assert!(
        (test_args(&beside).as_array().unwrap()).contains(&Value::from("--external-metrics=false"))
    );
    let chosen = render_with(&[
        "externalMetrics.apiService.enabled=false",
        "operator.scalingEngine=hpa",
    ]);
    assert_eq!(engine(&chosen).as_deref(), Some("--scaling-engine=hpa"));
}

/// The console's Service reaches the operator's console port, and only when asked.
#[test]
fn the_console_is_served_when_enabled_and_only_then() {
    let console_service = |docs: &[Value]| {
        docs.iter()
            .find(|d| d["kind"] == "Service" && d["metadata"]["name"] == "t-eventpipe-console")
            .cloned()
    };
    let off = render();
    assert!(console_service(&off).is_none());
    let (args, _) = operator_command(&off);
    assert!(!args.iter().any(|a| a.starts_with("--console-listen")));

    let on = render_with(&["console.enabled=true", "console.port=8080"]);
    let service = console_service(&on).expect("the console's Service");
    let spec = &service["spec"];
    assert_eq!(spec["type"], "ClusterIP");
    assert_eq!(
        spec["ports"],
        serde_json::json!([{"name": "console", "port": 8080, "targetPort": "console"}])
    );
    let deployment = on
        .iter()
        .find(|d| d["kind"] == "Deployment" && d["metadata"]["name"] == "t-eventpipe")
        .unwrap();
    let pod = &deployment["spec"]["template"];
    assert_eq!(spec["selector"], pod["metadata"]["labels"]);
    let ports = pod["spec"]["containers"][0]["ports"].as_array().unwrap();
    assert!(
        ports.contains(&serde_json::json!({"name": "console", "containerPort": 8080})),
        "{ports:?}"
    );
    let (args, _) = operator_command(&on);
    assert!(args.contains(&"--console-listen=0.0.0.0:8080".to_string()));
    assert!(
        !args.iter().any(|a| a.starts_with("--console-token-file")),
        "read-only without a token Secret"
    );
}

/// A redrive token comes from the Secret key the values name, mounted as a file.
#[test]
fn the_console_reads_its_redrive_token_from_the_named_secret_key() {
    let docs = render_with(&[
        "console.enabled=true",
        "console.redriveToken.secretName=ct",
        "console.redriveToken.key=redrive",
    ]);
    let (args, _) = operator_command(&docs);
    assert!(args.contains(&"--console-token-file=/etc/eventpipe/console/token".to_string()));
    let deployment = docs
        .iter()
        .find(|d| d["kind"] == "Deployment" && d["metadata"]["name"] == "t-eventpipe")
        .unwrap();
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(
        pod["volumes"],
        serde_json::json!([{"name": "console-token", "secret": {"secretName": "ct",
            "items": [{"key": "redrive", "path": "token"}]}}])
    );
    assert_eq!(
        pod["containers"][0]["volumeMounts"],
        serde_json::json!([{"name": "console-token", "mountPath": "/etc/eventpipe/console", "readOnly": true}])
    );
}
