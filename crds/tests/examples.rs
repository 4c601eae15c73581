//! Every example parses into the Rust types and resolves its references.

use std::path::PathBuf;

use eventpipe_crds::Manifest;

fn examples() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("examples/ is readable")
        .map(|e| e.expect("examples/ is readable").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn the_use_cases_have_examples() {
    let names: Vec<String> = examples()
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for want in [
        "github-analytics.yaml",
        "notes.yaml",
        "orders-saga.yaml",
        "outbox.yaml",
    ] {
        assert!(names.iter().any(|n| n == want), "missing examples/{want}");
    }
}

#[test]
fn every_example_loads_and_resolves() {
    for file in examples() {
        let manifest = Manifest::load(&file).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            !manifest.pipelines.is_empty(),
            "{} has no EventPipeline",
            file.display()
        );
        for pipeline in manifest.resolved().unwrap_or_else(|e| panic!("{e}")) {
            let s = &pipeline.pipeline.spec;
            for source in &s.sources {
                assert!(
                    pipeline
                        .bindings
                        .contains_key(&source.queue_binding_ref.name)
                );
            }
            // What the operator renders into a ConfigMap reads back to the same pipeline.
            let again = Manifest::from_yaml("rendered", &pipeline.to_yaml()).unwrap();
            assert_eq!(again.pipeline(&pipeline.name()).unwrap(), pipeline);
        }
    }
}

#[test]
fn github_analytics_is_the_documented_flow() {
    let m = Manifest::load(
        examples()
            .iter()
            .find(|p| p.ends_with("github-analytics.yaml"))
            .unwrap(),
    )
    .unwrap();
    let ingest = m.pipeline("github-ingest").unwrap();
    let hook = &ingest.pipeline.spec.ingress.as_ref().unwrap().webhooks[0];
    assert_eq!(hook.path, "/hooks/github");
    assert_eq!(
        hook.correlation_id
            .as_ref()
            .unwrap()
            .json_pointer
            .as_deref(),
        Some("/issue/number")
    );
    assert_eq!(
        hook.deduplication_id.as_ref().unwrap().header.as_deref(),
        Some("X-GitHub-Delivery")
    );
    let table = &ingest
        .pipeline
        .spec
        .processor
        .dynamodb
        .as_ref()
        .unwrap()
        .table_name;
    let aggregate = m.pipeline("github-aggregate").unwrap();
    let stream = aggregate.bindings.values().next().unwrap();
    assert_eq!(
        stream
            .spec
            .dynamodb_stream
            .as_ref()
            .unwrap()
            .table_name
            .as_ref(),
        Some(table)
    );
    assert_eq!(
        ingest
            .policy_of(ingest.bindings.values().next().unwrap())
            .unwrap()
            .spec
            .max_receive_count,
        3
    );
}
