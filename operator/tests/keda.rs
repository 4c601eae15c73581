//! KEDA in place of the HorizontalPodAutoscaler: the ScaledObject and
//! TriggerAuthentication rendered for the examples a user applies.
// Set-up steps unwrap: a failure fails the test (clippy's allow-unwrap-in-tests
// covers #[test] functions only, not the helpers of an integration test).
#![allow(clippy::unwrap_used)]

mod common;

use eventpipe_crds::{Pipeline, ScalingEngine};
use eventpipe_operator::{Autoscaler, Settings, render};
use serde_json::{Value, json};

/// Pipeline `name` of `examples/<file>`, on KEDA.
fn example(file: &str, name: &str) -> Pipeline {
    let mut p = common::examples::example(file, name);
    p.pipeline.spec.scaling.engine = Some(ScalingEngine::Keda);
    p
}

fn settings(credentials: Option<&str>) -> Settings {
    let env = |name: &str, value: &str| {
        serde_json::from_value(json!({"name": name, "value": value})).unwrap()
    };
    Settings {
        env: vec![
            env("AWS_REGION", "eu-west-1"),
            env("AWS_ENDPOINT_URL", "http://moto.aws.svc:5000"),
        ],
        credentials_secret: credentials.map(Into::into),
        ..Default::default()
    }
}

/// The rendered (ScaledObject, TriggerAuthentication).
fn keda(p: &Pipeline, settings: &Settings) -> (Value, Value) {
    let w = render(p, settings);
    assert!(w.hpa().is_none(), "no HPA beside KEDA's");
    let Autoscaler::Keda(k) = w.autoscaler else {
        panic!("not KEDA")
    };
    let v = |o| serde_json::to_value(o).unwrap();
    (v(&k.scaled_object), v(&k.authentication))
}

#[test]
fn a_queue_pipeline_gets_an_sqs_trigger_with_its_scaling() {
    let mut p = example("github-analytics.yaml", "github-ingest");
    let s = &mut p.pipeline.spec.scaling;
    s.min_replicas = 0;
    s.activation_depth = 3;
    s.cooldown = "2m".parse().unwrap();
    s.polling_interval = "10s".parse().unwrap();
    s.behavior = Some(
        serde_json::from_value(json!({"scaleDown": {"stabilizationWindowSeconds": 60}})).unwrap(),
    );
    let b = p.bindings.get_mut("github-events").unwrap();
    b.status = Some(
        serde_json::from_value(
            json!({"queueUrl": "http://moto.aws.svc:5000/123456789012/github-events"}),
        )
        .unwrap(),
    );
    let (so, auth) = keda(&p, &settings(None));
    assert_eq!(so["apiVersion"], "keda.sh/v1alpha1");
    assert_eq!(so["kind"], "ScaledObject");
    assert_eq!(so["metadata"]["name"], "github-ingest-worker");
    assert_eq!(
        so["metadata"]["ownerReferences"][0]["kind"],
        "EventPipeline"
    );
    let spec = &so["spec"];
    assert_eq!(spec["scaleTargetRef"]["name"], "github-ingest-worker");
    assert_eq!(
        [
            &spec["minReplicaCount"],
            &spec["maxReplicaCount"],
            &spec["pollingInterval"],
            &spec["cooldownPeriod"]
        ],
        [&json!(0), &json!(5), &json!(10), &json!(120)]
    );
    assert_eq!(
        spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"],
        60
    );
    assert_eq!(
        spec["triggers"],
        json!([{
            "type": "aws-sqs-queue",
            "authenticationRef": {"name": "github-ingest-worker"},
            "metadata": {
                "queueURL": "http://moto.aws.svc:5000/123456789012/github-events",
                "queueLength": "100", "activationQueueLength": "3", "scaleOnInFlight": "true",
                "awsRegion": "eu-west-1", "awsEndpoint": "http://moto.aws.svc:5000",
            },
        }])
    );
    assert_eq!(auth["kind"], "TriggerAuthentication");
    assert_eq!(auth["spec"], json!({"podIdentity": {"provider": "aws"}}));
}

#[test]
fn a_queue_whose_url_is_not_known_yet_has_no_trigger() {
    let p = example("github-analytics.yaml", "github-ingest");
    let (so, _) = keda(&p, &settings(None));
    assert_eq!(so["spec"]["triggers"], json!([]));
}

#[test]
fn a_stream_pipeline_gets_a_dynamodb_streams_trigger() {
    let p = example("github-analytics.yaml", "github-aggregate");
    let (so, _) = keda(&p, &settings(None));
    let t = &so["spec"]["triggers"][0];
    assert_eq!(t["type"], "aws-dynamodb-streams");
    assert_eq!(t["metadata"]["tableName"], "github-comments");
    assert_eq!(t["metadata"]["shardCount"], "1");
    assert_eq!(t["metadata"]["awsRegion"], "eu-west-1");
}

#[test]
fn static_credentials_come_from_the_bindings_secret_else_the_workloads() {
    let mut p = example("github-analytics.yaml", "github-aggregate");
    let (_, auth) = keda(&p, &settings(Some("aws")));
    let refs = &auth["spec"]["secretTargetRef"];
    assert_eq!(
        refs,
        &json!([
            {"parameter": "awsAccessKeyID", "name": "aws", "key": "AWS_ACCESS_KEY_ID"},
            {"parameter": "awsSecretAccessKey", "name": "aws", "key": "AWS_SECRET_ACCESS_KEY"},
        ])
    );
    let b = p.bindings.get_mut("github-comments-stream").unwrap();
    b.spec.credentials =
        Some(serde_json::from_value(json!({"secretRef": {"name": "stream-keys"}})).unwrap());
    let (_, auth) = keda(&p, &settings(Some("aws")));
    assert_eq!(auth["spec"]["secretTargetRef"][0]["name"], "stream-keys");
}

#[test]
fn the_operators_engine_applies_where_the_pipeline_names_none() {
    let mut p = example("notes.yaml", "notes");
    p.pipeline.spec.scaling.engine = None;
    let keda_default = Settings {
        scaling_engine: ScalingEngine::Keda,
        ..Default::default()
    };
    assert!(render(&p, &keda_default).hpa().is_none());
    assert!(render(&p, &Settings::default()).hpa().is_some());
    p.pipeline.spec.scaling.engine = Some(ScalingEngine::Hpa);
    assert!(render(&p, &keda_default).hpa().is_some());
}
