//! The console served by the operator on a real cluster (E2E_OPERATOR=helm, the chart
//! with `console.enabled=true`): reached with `kubectl port-forward` to the Service
//! `<release>-console`, it lists the pipelines of the cluster and finds a note's events
//! by correlation id, from the feeds of the ingress and worker pods it follows.
// The e2e suite is test code: a failed step fails the test, helpers included.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use eventpipe_e2e::eventually;
use eventpipe_e2e::helm::{self, RELEASE};
use eventpipe_e2e::notes;
use eventpipe_e2e::tools::PortForward;
use serde_json::Value;

#[tokio::test]
async fn the_operators_console_shows_the_clusters_pipelines_and_a_notes_path() {
    let Some((client, mut release)) = helm::start(&["console.enabled=true"]).await else {
        return;
    };
    let app = release.app.clone();
    notes::start(&client, &app, 1).await;
    let console = PortForward::start(&release.ns, &format!("{RELEASE}-console"), 7070).await;
    let page = reqwest::get(console.url("/")).await.unwrap();
    assert_eq!(page.status(), 200);

    // Shown within the console's refresh (5 s) of the pipelines' creation.
    let expected = ["notes", "note-notifier"].map(|p| format!("{app}/{p}"));
    eventually("the pipelines in the console", SHOWN, async || {
        let state = get(&console.url("/api/state")).await;
        let names: Vec<String> = (state["pipelines"].as_array()?.iter())
            .filter_map(|p| Some(p["name"].as_str()?.to_string()))
            .collect();
        expected.iter().all(|e| names.contains(e)).then_some(())
    })
    .await;

    let correlation = format!("note-{}", uuid::Uuid::new_v4().simple());
    assert_eq!(notes::post(&app, &correlation).await, 202);
    let search = console.url(&format!("/api/search?correlation_id={correlation}"));
    let path = eventually("the note's path in the console", SEARCH, async || {
        let found = get(&search).await;
        let steps: Vec<String> = (found.as_array()?.iter())
            .map(|r| format!("{} {}", r["component"], r["outcome"]))
            .collect();
        (steps.len() >= 2).then_some(steps)
    })
    .await;
    assert_eq!(path[0], r#""ingress" "accepted""#, "{path:?}");
    assert!(
        path.iter().any(|s| s.starts_with(r#""worker""#)),
        "{path:?}"
    );
    drop(console);
    release.uninstall(&client).await;
}

const SEARCH: Duration = Duration::from_secs(90);
const SHOWN: Duration = Duration::from_secs(30);

async fn get(url: &str) -> Value {
    let answer = reqwest::get(url).await.unwrap();
    assert_eq!(answer.status(), 200, "{url}");
    serde_json::from_str(&answer.text().await.unwrap()).unwrap()
}
