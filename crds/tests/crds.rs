//! The generated CRDs: committed YAML in step with the types, structural schemas an API
//! server accepts, and CEL rules that compile within the API server's cost budget.

use std::path::PathBuf;

use eventpipe_crds::schema;
use kube::core::cel;
use serde_json::Value;

fn crd_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn schemas() -> Vec<(String, Value)> {
    schema::crds()
        .iter()
        .map(|crd| {
            let v = &crd.spec.versions[0];
            let s = serde_json::to_value(
                v.schema
                    .as_ref()
                    .and_then(|s| s.open_api_v3_schema.as_ref())
                    .expect("every version has a schema"),
            )
            .expect("a schema is JSON");
            (crd.spec.names.kind.clone(), s)
        })
        .collect()
}

#[test]
fn committed_yaml_matches_the_types() {
    for crd in schema::crds() {
        let file = crd_dir().join(schema::file_name(&crd));
        let committed = std::fs::read_to_string(&file).unwrap_or_default();
        assert!(
            committed == schema::to_yaml(&crd),
            "{} is out of date with the Rust types: run `make crds`",
            file.display()
        );
    }
}

#[test]
fn the_chart_ships_the_same_crds() {
    let chart = crd_dir().join("../charts/eventpipe/crds");
    for crd in schema::crds() {
        let file = chart.join(schema::file_name(&crd));
        let shipped = std::fs::read_to_string(&file).unwrap_or_default();
        assert!(
            shipped == schema::to_yaml(&crd),
            "{} differs from crds/: run `make crds`",
            file.display()
        );
    }
}

#[test]
fn names_scope_status_and_printer_columns() {
    let crds = schema::crds();
    let mut short: Vec<_> = crds
        .iter()
        .map(|c| c.spec.names.short_names.clone().unwrap()[0].clone())
        .collect();
    short.sort();
    assert_eq!(short, ["dlp", "ep", "qb"]);
    for crd in &crds {
        assert_eq!(crd.spec.group, "eventpipe.dev");
        assert_eq!(crd.spec.scope, "Namespaced");
        let v = &crd.spec.versions[0];
        assert_eq!(v.name, "v1alpha1");
        assert!(
            v.subresources.as_ref().unwrap().status.is_some(),
            "{} has a status subresource",
            crd.spec.names.kind
        );
    }
    let ep = crds
        .iter()
        .find(|c| c.spec.names.kind == "EventPipeline")
        .unwrap();
    let columns: Vec<_> = ep.spec.versions[0]
        .additional_printer_columns
        .as_ref()
        .unwrap()
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(
        columns,
        [
            "Ready", "Webhook", "Replicas", "Depth", "DLQ", "Activity", "Age"
        ]
    );
}

/// Walks every schema node with its dotted path.
fn walk<'a>(path: &str, node: &'a Value, visit: &mut dyn FnMut(&str, &'a Value)) {
    visit(path, node);
    if let Some(props) = node.get("properties").and_then(Value::as_object) {
        for (k, v) in props {
            walk(&format!("{path}.{k}"), v, visit);
        }
    }
    if let Some(items) = node.get("items") {
        walk(&format!("{path}[]"), items, visit);
    }
    if let Some(extra) = node.get("additionalProperties").filter(|v| v.is_object()) {
        walk(&format!("{path}{{}}"), extra, visit);
    }
}

#[test]
fn schemas_are_structural() {
    // Free-form only where a field really is: the EventBridge pattern.
    let free_form = ["EventPipeline.spec.filter"];
    for (kind, root) in schemas() {
        walk(&kind, &root, &mut |path, node| {
            let obj = node.as_object().unwrap();
            let int_or_string = obj.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
            assert!(
                obj.contains_key("type") || int_or_string,
                "{path} has no type"
            );
            for banned in [
                "$ref",
                "definitions",
                "$defs",
                "$schema",
                "oneOf",
                "anyOf",
                "allOf",
                "not",
            ] {
                assert!(!obj.contains_key(banned), "{path} uses {banned}");
            }
            assert!(
                !(obj.contains_key("properties") && obj.contains_key("additionalProperties")),
                "{path} has both properties and additionalProperties"
            );
            assert_ne!(
                obj.get("additionalProperties"),
                Some(&Value::Bool(false)),
                "{path}"
            );
            if obj.contains_key("x-kubernetes-preserve-unknown-fields") {
                assert!(free_form.contains(&path), "{path} preserves unknown fields");
            }
            if let Some(default) = obj.get("default") {
                let check = jsonschema::validator_for(node).unwrap();
                assert!(
                    check.is_valid(default),
                    "{path}: default {default} does not match its schema"
                );
            }
        });
    }
}

#[test]
fn durations_are_strings_with_the_duration_pattern() {
    let durations = [
        "DeadLetterPolicy.spec.backoff.initial",
        "DeadLetterPolicy.spec.backoff.max",
        "DeadLetterPolicy.spec.retention",
        "QueueBinding.spec.sqs.visibilityTimeout",
        "QueueBinding.spec.sqs.waitTime",
        "QueueBinding.spec.dynamodbStream.maxRecordAge",
        "QueueBinding.spec.dynamodbStream.batchWindow",
        "EventPipeline.spec.processor.http.timeout",
        "EventPipeline.spec.processor.http.batch.window",
        "EventPipeline.spec.processor.dynamodb.batch.window",
        "EventPipeline.spec.processor.container.timeout",
        "EventPipeline.spec.delivery.timeout",
        "EventPipeline.spec.delivery.idempotency.ttl",
        "EventPipeline.spec.scaling.cooldown",
        "EventPipeline.spec.scaling.pollingInterval",
        "EventPipeline.spec.ingress.webhooks[].signature.timestamp.tolerance",
        "EventPipeline.spec.ingress.webhooks[].signature.tolerance",
    ];
    let mut seen = vec![];
    for (kind, root) in schemas() {
        walk(&kind, &root, &mut |path, node| {
            if node.get("pattern").and_then(Value::as_str)
                == Some(eventpipe_crds::duration_pattern())
            {
                assert_eq!(node["type"], "string", "{path}");
                seen.push(path.to_string());
            }
        });
    }
    seen.sort();
    let mut want: Vec<_> = durations.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(seen, want);
}

#[test]
fn cel_rules_compile_and_fit_the_cost_budget() {
    let mut rules = 0;
    for (kind, root) in schemas() {
        let compiled = cel::compile_schema(&root);
        assert!(
            !compiled.has_errors(),
            "{kind}: {:?}",
            compiled.compilation_errors()
        );
        walk(&kind, &root, &mut |path, node| {
            for rule in node
                .get("x-kubernetes-validations")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                rules += 1;
                let text = rule["rule"].as_str().unwrap();
                assert!(
                    rule["message"].as_str().is_some_and(|m| !m.is_empty()),
                    "{path}: {text} has no message"
                );
                let here = cel::compile_schema(node);
                // Cost only: the scope analysis does not know comprehension variables;
                // scope errors surface when the rules run in tests/validation.rs.
                let warnings = cel::estimate_rule_cost(text, &here);
                assert!(warnings.is_empty(), "{path}: {text}: {warnings:?}");
            }
        });
    }
    assert!(rules >= 14, "only {rules} CEL rules");
}
