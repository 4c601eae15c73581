//! The command line: help, and configuration errors that stop start-up with one
//! line naming the problem.

mod common;

use std::process::{Command, Output};

use common::*;

fn ingress(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_eventpipe-ingress"))
        .args(args)
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
        .output()
        .expect("the ingress binary runs")
}

fn with_config(yaml: &str) -> Output {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = dir.path().join("pipeline.yaml");
    std::fs::write(&file, yaml).expect("the config is written");
    ingress(&["--config", file.to_str().expect("a UTF-8 temporary path")])
}

/// Exits non-zero with exactly one line on stderr, which contains `needle`.
fn fails_with(output: Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "exited 0: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("eventpipe-ingress: "), "{stderr}");
    assert!(stderr.contains(needle), "{needle:?} not in {stderr}");
}

#[test]
fn help_lists_the_options() {
    let out = Command::new(env!("CARGO_BIN_EXE_eventpipe-ingress"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for option in [
        "--config",
        "--listen",
        "--metrics-listen",
        "--secrets-dir",
        "[default: 0.0.0.0:8080]",
        "[default: /etc/eventpipe/secrets]",
        "--max-header-bytes <MAX_HEADER_BYTES>",
        "[default: 16384]",
        "--max-headers <MAX_HEADERS>",
        "--header-read-timeout <HEADER_READ_TIMEOUT>",
        "[default: 10s]",
        "--request-timeout <REQUEST_TIMEOUT>",
        "[default: 30s]",
        "--max-concurrent-requests <MAX_CONCURRENT_REQUESTS>",
        "[default: 128]",
        "--tls-cert <FILE>",
        "--tls-key <FILE>",
        "--drain-delay <DRAIN_DELAY>",
        "[default: 5s]",
    ] {
        assert!(help.contains(option), "{option} not in {help}");
    }
    assert!(
        !help.contains("--publish "),
        "the benchmark switch stays hidden"
    );
}

#[test]
fn a_drain_delay_that_is_not_a_duration_is_refused_before_start_up() {
    for bad in ["soon", "5", "-1s", "1.5s", ""] {
        let out = ingress(&[
            "--config",
            "/nonexistent/pipeline.yaml",
            &format!("--drain-delay={bad}"),
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {stderr}");
        let named = format!("invalid value '{bad}' for '--drain-delay <DRAIN_DELAY>'");
        assert!(stderr.contains(&named), "{bad:?}: {stderr}");
    }
    // 0 is accepted (no delay): start-up gets as far as reading the config.
    fails_with(
        ingress(&[
            "--config",
            "/nonexistent/pipeline.yaml",
            "--drain-delay",
            "0",
        ]),
        "/nonexistent/pipeline.yaml: No such file",
    );
}

#[test]
fn a_missing_config_file_is_named() {
    fails_with(
        ingress(&["--config", "/nonexistent/pipeline.yaml"]),
        "/nonexistent/pipeline.yaml: No such file",
    );
}

#[test]
fn a_file_without_an_ingress_is_refused() {
    let worker_only = queue_binding("q", "q")
        + "---\napiVersion: eventpipe.dev/v1alpha1\nkind: EventPipeline\nmetadata: {name: workers}\nspec:\n  sources: [{queueBindingRef: {name: q}}]\n  processor: {http: {url: \"http://127.0.0.1:9/\"}}\n";
    fails_with(
        with_config(&worker_only),
        "no EventPipeline has an ingress (pipelines: workers)",
    );
}

#[test]
fn duplicate_paths_are_refused() {
    let yaml = [
        queue_binding("q", "q"),
        pipeline("one", GITHUB_WEBHOOK, "{queueBindingRef: {name: q}}", "q"),
        pipeline("two", GITHUB_WEBHOOK, "{queueBindingRef: {name: q}}", "q"),
    ]
    .concat();
    fails_with(
        with_config(&yaml),
        r#"path "/hooks/github" is used twice: by pipeline "one" webhook "github" and by pipeline "two" webhook "github""#,
    );
}

#[test]
fn a_missing_queue_binding_is_named() {
    let yaml = [
        queue_binding("q", "q"),
        pipeline(
            "one",
            GITHUB_WEBHOOK,
            "{queueBindingRef: {name: nowhere}}",
            "q",
        ),
    ]
    .concat();
    fails_with(
        with_config(&yaml),
        r#"spec.ingress.publishTo.queueBindingRef: QueueBinding "nowhere" not found"#,
    );
}

#[test]
fn a_tls_certificate_that_does_not_load_stops_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert, "not a certificate").unwrap();
    std::fs::write(&key, "not a key").unwrap();
    let file = dir.path().join("pipeline.yaml");
    let yaml = [
        queue_binding("q", "q"),
        pipeline("one", GITHUB_WEBHOOK, "{queueBindingRef: {name: q}}", "q"),
    ]
    .concat();
    std::fs::write(&file, yaml).unwrap();
    let out = ingress(&[
        "--config",
        file.to_str().unwrap(),
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    fails_with(out, &format!("TLS: {}: no PEM certificate", cert.display()));
}

#[test]
fn an_address_in_use_is_named() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pipeline.yaml");
    let yaml = [
        queue_binding("q", "q"),
        pipeline("one", GITHUB_WEBHOOK, "{queueBindingRef: {name: q}}", "q"),
    ]
    .concat();
    std::fs::write(&file, yaml).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_eventpipe-ingress"))
        .args([
            "--config",
            file.to_str().unwrap(),
            "--listen",
            &addr,
            "--metrics-listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    fails_with(out, &format!("cannot listen on {addr}"));
}
