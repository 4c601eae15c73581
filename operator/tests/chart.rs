//! The Helm chart grants exactly the API access the operator uses.

use std::process::Command;

use eventpipe_operator::rbac::{CLUSTER_RULES, LEASE_RULES};
use serde_json::Value;

fn render() -> Vec<Value> {
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
        expected(CLUSTER_RULES)
    );
    assert_eq!(
        rules_of(&docs, "Role", "t-eventpipe-leader"),
        expected(LEASE_RULES)
    );
}
