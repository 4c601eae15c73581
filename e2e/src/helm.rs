//! The chart installed as a user installs it (moto in the cluster as the AWS
//! endpoint), checked, and removed again, leaving nothing but the CRDs.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService;
use kube::api::Api;
use kube::{Client, ResourceExt};
use serde_json::Value;

use crate::eventually;
use crate::tools::{PortForward, run, run_blocking};

/// AWS configuration for the chart's moto, through a port-forward.
fn moto_config(moto: &PortForward) -> aws_config::SdkConfig {
    use aws_config::{BehaviorVersion, Region};
    let credentials =
        aws_sdk_sqs::config::Credentials::new("testing", "testing", None, None, "e2e");
    aws_config::SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(moto.url(""))
        .credentials_provider(aws_sdk_sqs::config::SharedCredentialsProvider::new(
            credentials,
        ))
        .build()
}

pub fn dynamodb(moto: &PortForward) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(&moto_config(moto))
}

pub fn sqs(moto: &PortForward) -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::new(&moto_config(moto))
}

/// The chart names its objects after the release (its fullname, as the release name
/// contains the chart's).
pub const RELEASE: &str = "eventpipe";
pub const MOTO: &str = "eventpipe-moto";
pub const APISERVICE: &str = "v1beta1.external.metrics.k8s.io";
/// Stands for the pipelines' namespace (made up per run) in install values.
pub const APP_NAMESPACE: &str = "APP_NAMESPACE";
/// How long the cluster may take to settle after a change.
pub const SETTLE: Duration = Duration::from_secs(180);

/// A client for the cluster and the chart installed there with `values` (see
/// [`Release::install`]); `None`, after saying why, when the run does not test the
/// chart or has no cluster.
pub async fn start(values: &[&str]) -> Option<(Client, Release)> {
    if !crate::helm_mode() {
        eprintln!(
            "SKIP: E2E_OPERATOR is not helm; set E2E_OPERATOR=helm (images loaded into the cluster) to test the chart"
        );
        return None;
    }
    let client = crate::cluster().await?;
    let release = Release::install(&client, values).await;
    Some((client, release))
}

/// An installed release and a namespace for the pipelines under test. Dropped, it
/// removes what is left, so that a failed run leaves no cluster-scoped objects
/// (ClusterRoles, the APIService) for the next install to collide with; after a
/// failure it first shows what the cluster holds.
pub struct Release {
    pub ns: String,
    pub app: String,
    uninstalled: bool,
}

impl Release {
    /// `helm install` with `localAws.enabled=true` and `values`, then checks it as a
    /// user would (see [`check_install`]) and makes the pipelines' namespace.
    pub async fn install(client: &Client, values: &[&str]) -> Self {
        let release = Self {
            ns: crate::test_namespace("eventpipe-helm"),
            app: crate::test_namespace("eventpipe-app"),
            uninstalled: false,
        };
        let mut set = vec!["localAws.enabled=true".to_string()];
        set.extend(
            values
                .iter()
                .map(|v| v.replace(APP_NAMESPACE, &release.app)),
        );
        // Unset means the chart's appVersion, the tag `make images` builds by default.
        if let Ok(tag) = std::env::var("E2E_IMAGE_TAG")
            && !tag.is_empty()
        {
            for image in ["operator", "ingress", "worker"] {
                set.push(format!("{image}.image.tag={tag}"));
            }
        }
        let chart = concat!(env!("CARGO_MANIFEST_DIR"), "/../charts/eventpipe");
        let mut args = vec![
            "install",
            RELEASE,
            chart,
            "-n",
            &release.ns,
            "--create-namespace",
            "--wait",
            "--timeout",
            "5m",
        ];
        for v in &set {
            args.extend(["--set", v.as_str()]);
        }
        // First: the chart may grant Roles in it (watchNamespaces).
        crate::create_namespace(client, &release.app).await;
        run("helm", &args).await;
        check_install(client, &release.ns).await;
        release
    }

    /// Whether the operator's ServiceAccount may do what `kubectl auth can-i` is
    /// asked (e.g. `["list", "secrets", "--all-namespaces"]`).
    pub async fn operator_can(&self, args: &[&str]) -> bool {
        let who = format!("--as=system:serviceaccount:{}:{RELEASE}", self.ns);
        let mut all = vec!["auth", "can-i"];
        all.extend(args);
        all.push(&who);
        let out = tokio::process::Command::new(crate::tools::tool("kubectl"))
            .args(&all)
            .output()
            .await
            .unwrap();
        let answer = String::from_utf8_lossy(&out.stdout).trim().to_string();
        eprintln!("$ kubectl {}: {answer}", all.join(" "));
        assert!(
            answer == "yes" || answer == "no",
            "kubectl auth can-i: {answer} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        answer == "yes"
    }

    /// A port-forward to the chart's moto.
    pub async fn moto(&self) -> PortForward {
        PortForward::start(&self.ns, MOTO, 5000).await
    }

    /// `helm uninstall`, then checks that every object of the release is gone (the
    /// leader Lease too) and the CRDs stay.
    pub async fn uninstall(&mut self, client: &Client) {
        let rendered = release_objects(&self.ns).await;
        let ns = &self.ns;
        run(
            "helm",
            &["uninstall", RELEASE, "-n", ns, "--wait", "--timeout", "5m"],
        )
        .await;
        self.uninstalled = true;
        check_uninstalled(client, ns, &rendered).await;
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let kinds = "eventpipelines,queuebindings,deployments,pods,hpa";
            let operator = format!("deployment/{RELEASE}");
            run_blocking("kubectl", &["get", kinds, "-n", &self.app, "-o", "wide"]);
            run_blocking("kubectl", &["describe", "eventpipelines", "-n", &self.app]);
            let workloads = "app.kubernetes.io/managed-by=eventpipe-operator";
            let logs = [
                "logs",
                "-n",
                &self.app,
                "-l",
                workloads,
                "--prefix",
                "--tail=20",
            ];
            run_blocking("kubectl", &logs);
            run_blocking("kubectl", &["get", "all", "-n", &self.ns]);
            run_blocking("kubectl", &["logs", "-n", &self.ns, &operator, "--tail=50"]);
        }
        if !self.uninstalled {
            run_blocking("helm", &["uninstall", RELEASE, "-n", &self.ns, "--wait"]);
        }
        let namespaces = [&self.app, &self.ns].map(|n| format!("namespace/{n}"));
        let delete = [
            "delete",
            &namespaces[0],
            &namespaces[1],
            "--ignore-not-found",
            "--wait=false",
        ];
        run_blocking("kubectl", &delete);
    }
}

pub fn available(d: &Deployment) -> i32 {
    d.status
        .as_ref()
        .and_then(|s| s.available_replicas)
        .unwrap_or(0)
}

/// The operator runs, the API serves the three kinds and the external metrics, and
/// the chart's own `helm test` passes.
async fn check_install(client: &Client, ns: &str) {
    let operator = Api::<Deployment>::namespaced(client.clone(), ns)
        .get(RELEASE)
        .await
        .unwrap();
    assert!(available(&operator) >= 1, "the operator is not available");
    let served = client
        .list_api_group_resources(eventpipe_crds::API_VERSION)
        .await
        .unwrap();
    let names: Vec<&str> = served.resources.iter().map(|r| r.name.as_str()).collect();
    for plural in ["eventpipelines", "queuebindings", "deadletterpolicies"] {
        assert!(names.contains(&plural), "{plural} not served: {names:?}");
    }
    let apiservices: Api<APIService> = Api::all(client.clone());
    eventually("the APIService Available", SETTLE, async || {
        let conditions = apiservices.get(APISERVICE).await.ok()?.status?.conditions?;
        conditions
            .iter()
            .any(|c| c.type_ == "Available" && c.status == "True")
            .then_some(())
    })
    .await;
    run(
        "helm",
        &["test", RELEASE, "-n", ns, "--logs", "--timeout", "5m"],
    )
    .await;
}

/// `helm uninstall` removed every object the release rendered and kept the CRDs.
async fn check_uninstalled(client: &Client, ns: &str, rendered: &[String]) {
    let mut args = vec!["get", "--ignore-not-found", "-o", "name", "-n", ns];
    args.extend(rendered.iter().map(String::as_str));
    let left = run("kubectl", &args).await;
    assert!(left.trim().is_empty(), "left by helm uninstall:\n{left}");
    // The leader-election Lease is the chart's, so none is left behind.
    let leases = run("kubectl", &["get", "leases", "-o", "name", "-n", ns]).await;
    assert!(leases.trim().is_empty(), "Leases left: {leases}");
    let releases = run("helm", &["list", "-n", ns, "-q"]).await;
    assert!(releases.trim().is_empty(), "releases left: {releases}");
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in eventpipe_crds::schema::crds() {
        let name = crd.name_any();
        assert!(
            crds.get_opt(&name).await.unwrap().is_some(),
            "CRD {name} removed"
        );
    }
}

/// Every object of the release's manifest (hooks and CRDs aside), as `kind/name` for
/// kubectl.
async fn release_objects(ns: &str) -> Vec<String> {
    let manifest = run("helm", &["get", "manifest", RELEASE, "-n", ns]).await;
    let objects: Vec<String> = serde_yaml::Deserializer::from_str(&manifest)
        .filter_map(|d| {
            let doc: Value = serde::Deserialize::deserialize(d).ok()?;
            let (kind, name) = (doc["kind"].as_str()?, doc["metadata"]["name"].as_str()?);
            Some(format!("{kind}/{name}"))
        })
        .collect();
    assert!(
        objects
            .iter()
            .any(|o| o == &format!("Deployment/{RELEASE}")),
        "no operator in the release's manifest: {objects:?}"
    );
    objects
}
