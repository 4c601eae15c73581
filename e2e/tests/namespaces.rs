//! The chart with `watchNamespaces` on a real cluster (E2E_OPERATOR=helm): the operator
//! is granted Roles in the namespaces it watches and nothing cluster-wide, reconciles
//! pipelines there and leaves those elsewhere alone.
// The e2e suite is test code: a failed step fails the test, helpers included.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use eventpipe_crds::EventPipeline;
use eventpipe_e2e::helm::{self, APP_NAMESPACE, SETTLE};
use eventpipe_e2e::{eventually, ready_condition};
use kube::Client;
use kube::api::Api;

async fn apply_pipeline(client: &Client, ns: &str) {
    for doc in eventpipe_e2e::queue_pipeline("scoped-orders") {
        eventpipe_e2e::apply(client, ns, &doc).await;
    }
}

#[tokio::test]
async fn an_operator_given_namespaces_works_there_and_nowhere_else() {
    let values = [format!("watchNamespaces={{{APP_NAMESPACE}}}")];
    let values: Vec<&str> = values.iter().map(String::as_str).collect();
    let Some((client, mut release)) = helm::start(&values).await else {
        return;
    };
    let (app, other) = (release.app.clone(), format!("{}-other", release.app));
    eventpipe_e2e::create_namespace(&client, &other).await;
    apply_pipeline(&client, &app).await;
    apply_pipeline(&client, &other).await;

    let watched: Api<EventPipeline> = Api::namespaced(client.clone(), &app);
    eventually("the watched pipeline Ready", SETTLE, async || {
        ready_condition(&watched.get("orders").await.ok()?).filter(|c| c.status == "True")
    })
    .await;
    // By now the operator has had every chance to touch the other namespace.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let ignored = Api::<EventPipeline>::namespaced(client.clone(), &other)
        .get("orders")
        .await
        .unwrap();
    assert!(ignored.status.is_none(), "{:?}", ignored.status);

    assert!(release.operator_can(&["get", "secrets", "-n", &app]).await);
    for denied in [
        ["get", "secrets", "-n", other.as_str()],
        ["list", "secrets", "-n", app.as_str()],
        ["list", "eventpipelines", "-n", other.as_str()],
        ["list", "deployments", "--all-namespaces", ""],
    ] {
        let args: Vec<&str> = denied.into_iter().filter(|a| !a.is_empty()).collect();
        assert!(!release.operator_can(&args).await, "may {args:?}");
    }

    eventpipe_e2e::delete_namespace(&client, &other).await;
    release.uninstall(&client).await;
}
