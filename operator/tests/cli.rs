//! The operator binary's command line.
// Set-up steps unwrap: a failure fails the test (clippy's allow-unwrap-in-tests
// covers #[test] functions only, not the helpers of an integration test).
#![allow(clippy::unwrap_used)]

use std::process::Command;

#[test]
fn crds_prints_the_committed_manifests() {
    let out = Command::new(env!("CARGO_BIN_EXE_eventpipe-operator"))
        .arg("crds")
        .output()
        .unwrap();
    assert!(out.status.success());
    let printed = String::from_utf8(out.stdout).unwrap();
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../crds");
    for file in [
        "deadletterpolicies.yaml",
        "queuebindings.yaml",
        "eventpipelines.yaml",
    ] {
        let committed = std::fs::read_to_string(format!("{dir}/{file}")).unwrap();
        assert!(
            printed.contains(&committed),
            "{file} is not in the printed CRDs"
        );
    }
    assert_eq!(printed.matches("kind: CustomResourceDefinition").count(), 3);
}

#[test]
fn run_without_a_cluster_fails_with_a_clear_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_eventpipe-operator"))
        .args([
            "run",
            "--metrics-listen",
            "127.0.0.1:0",
            "--external-metrics-listen",
            "127.0.0.1:0",
        ])
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("error:") && err.contains("/nonexistent/kubeconfig"),
        "{err}"
    );
}

/// What the operator says on stderr when it refuses `args`.
fn refused(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_eventpipe-operator"))
        .args(args)
        .output()
        .unwrap();
    assert!(!out.status.success(), "{args:?} accepted");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_workload_variable_that_is_not_name_value_is_refused() {
    let err = refused(&["run", "--workload-env", "AWS_ACCESS_KEY_ID"]);
    assert!(
        err.contains("--workload-env") && err.contains("is not NAME=VALUE"),
        "{err}"
    );
}

#[test]
fn an_unknown_image_pull_policy_is_refused() {
    let err = refused(&["run", "--image-pull-policy", "Sometimes"]);
    assert!(
        err.contains("'Sometimes'") && err.contains("IfNotPresent"),
        "{err}"
    );
}

#[test]
fn check_names_what_does_not_answer() {
    // Nothing listens on this port: the operator's readiness endpoint is down.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/readyz");
    let err = refused(&["check", "--ready-url", &url, "--wait", "1s"]);
    assert!(err.contains("error:") && err.contains(&url), "{err}");
    let err = refused(&["check", "--ready-url", &url, "--wait", "soon"]);
    assert!(err.contains("--wait"), "{err}");
}
