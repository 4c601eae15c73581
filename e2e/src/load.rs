//! Load for the scaling tests: a slow HTTP processor in the cluster, and messages sent
//! to a queue at a pace the emulator takes.

use std::time::Duration;

use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

use crate::eventually;
use crate::helm::{SETTLE, available};

/// The slow processor's Service, on port 8080.
pub const PROCESSOR: &str = "slow-processor";

/// An HTTP processor that takes half a second per event: a Deployment and Service
/// running Python in the chart's local AWS image (which has it).
pub async fn slow_processor(client: &Client, ns: &str) {
    let values = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../charts/eventpipe/values.yaml"
    ))
    .unwrap();
    let values: Value = serde_yaml::from_str(&values).unwrap();
    let image = values["localAws"]["image"].as_str().unwrap();
    let server = r#"
import http.server, time
class Slow(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        time.sleep(0.5)
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("", 8080), Slow).serve_forever()
"#;
    let labels = json!({"app": PROCESSOR});
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": PROCESSOR},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{
                    "name": "processor", "image": image, "imagePullPolicy": "IfNotPresent",
                    "command": ["python3", "-c", server],
                    "ports": [{"name": "http", "containerPort": 8080}],
                    "readinessProbe": {"tcpSocket": {"port": "http"}},
                }]},
            },
        },
    }))
    .unwrap();
    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": PROCESSOR},
        "spec": {"selector": labels, "ports": [{"name": "http", "port": 8080, "targetPort": "http"}]},
    }))
    .unwrap();
    let params = PatchParams::apply(crate::MANAGER);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    deployments
        .patch(PROCESSOR, &params, &Patch::Apply(&deployment))
        .await
        .unwrap();
    Api::<Service>::namespaced(client.clone(), ns)
        .patch(PROCESSOR, &params, &Patch::Apply(&service))
        .await
        .unwrap();
    eventually("the slow processor available", SETTLE, async || {
        (available(&deployments.get(PROCESSOR).await.ok()?) >= 1).then_some(())
    })
    .await;
}

/// `count` messages at a steady pace (the emulator slows down when rushed).
pub async fn send_messages(sqs: &aws_sdk_sqs::Client, url: &str, count: usize) {
    for batch in 0..count / 10 {
        let entries = (0..10).map(|i| {
            let id = format!("m{batch}-{i}");
            SendMessageBatchRequestEntry::builder()
                .id(&id)
                .message_body(json!({"n": batch * 10 + i}).to_string())
                .build()
                .unwrap()
        });
        let sent = sqs
            .send_message_batch()
            .queue_url(url)
            .set_entries(Some(entries.collect()))
            .send()
            .await
            .unwrap();
        assert!(sent.failed().is_empty(), "{:?}", sent.failed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
