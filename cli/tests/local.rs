//! Local mode: `eventpipe demo` end to end against moto, and `eventpipe send`'s errors.

mod common;

use common::eventpipe;
use eventpipe_testkit::Moto;

/// `eventpipe send --config examples/github-analytics.yaml ARGS`: whether it
/// succeeded, and its stderr.
fn send(args: &[&str]) -> (bool, String) {
    let args = [
        &["send", "--config", "examples/github-analytics.yaml"],
        args,
    ]
    .concat();
    let (ok, _, err) = eventpipe(&args, &[]);
    (ok, err)
}

#[test]
fn the_demo_runs_the_github_example_and_the_numbers_add_up() {
    let moto = Moto::start();
    let env: Vec<(&str, String)> = moto.env();
    let (ok, out, err) = eventpipe(&["demo", "--events", "40", "--poison", "2"], &env);
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("accepted 40/40"), "{out}");
    assert!(
        out.contains("processed 40 into table github-comments"),
        "{out}"
    );
    assert!(
        out.contains("counted 38 in table github-daily-counts"),
        "{out}"
    );
    assert!(
        out.contains("dead-lettered 2 into github-comments-dlq"),
        "{out}"
    );
    assert!(out.contains("acme/widgets"), "{out}");
    assert!(out.contains("one trace: "), "{out}");
    assert!(
        out.contains("OK: every accepted event was processed"),
        "{out}"
    );
}

#[test]
fn send_names_what_is_missing() {
    let (ok, err) = send(&["github-ingest", "gitlab"]);
    assert!(!ok);
    assert!(
        err.contains("EventPipeline \"github-ingest\" has no webhook \"gitlab\" (has: github)"),
        "{err}"
    );
    let (ok, err) = send(&["--secrets-dir", "/nonexistent", "github-ingest", "github"]);
    assert!(!ok);
    assert!(
        err.contains("secret github-webhook/secret (/nonexistent/github-webhook/secret)"),
        "{err}"
    );
    let dir = std::env::temp_dir().join(format!("eventpipe-send-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("github-webhook")).unwrap();
    std::fs::write(dir.join("github-webhook/secret"), "s3cr3t").unwrap();
    let d = dir.to_str().unwrap();
    let (ok, err) = send(&["--secrets-dir", d, "github-ingest", "github"]);
    assert!(!ok);
    assert!(
        err.contains("takes its event type from header X-GitHub-Event: pass --event-type"),
        "{err}"
    );
    let (ok, err) = send(&[
        "--secrets-dir",
        d,
        "--data",
        "{nope",
        "github-ingest",
        "github",
    ]);
    assert!(!ok);
    assert!(err.contains("the body is not JSON"), "{err}");
}
