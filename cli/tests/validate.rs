mod common;

fn eventpipe(args: &[&str]) -> (bool, String, String) {
    common::eventpipe(args, &[])
}

#[test]
fn validate_accepts_the_examples() {
    let (ok, out, err) = eventpipe(&[
        "validate",
        "-f",
        "examples/github-analytics.yaml",
        "-f",
        "examples/notes.yaml",
    ]);
    assert!(ok, "{err}");
    assert!(
        out.contains("4 EventPipeline(s) (github-ingest, github-aggregate, notes, note-notifier)"),
        "{out}"
    );
}

#[test]
fn validate_names_the_problem_and_fails() {
    let dir = std::env::temp_dir().join(format!("eventpipe-validate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.yaml");
    std::fs::write(&file, "apiVersion: eventpipe.dev/v1alpha1\nkind: QueueBinding\nmetadata: {name: q}\nspec: {sqs: {queueName: q, waitTime: soon}}\n").unwrap();
    let (ok, _, err) = eventpipe(&["validate", "-f", file.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        err.contains(
            "bad.yaml: document 1 (QueueBinding \"q\"): spec.sqs.waitTime: must be a duration"
        ),
        "{err}"
    );
    let (ok, _, err) = eventpipe(&["validate", "-f", "no/such/file.yaml"]);
    assert!(!ok);
    assert!(err.contains("no/such/file.yaml: No such file"), "{err}");
}

#[test]
fn help_lists_the_commands() {
    let (ok, out, _) = eventpipe(&["--help"]);
    assert!(ok);
    assert!(out.contains("validate"));
}
