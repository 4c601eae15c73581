//! Every Kubernetes API call the operator makes, as (API group, resource, verbs): the
//! least privilege the Helm chart grants, in every namespace (a ClusterRole) or only in
//! the watched ones (a Role in each). Keep in step with the reconcilers; a test
//! compares it with the chart's roles.

pub const RULES: &[(&str, &[&str], &[&str])] = &[
    // Watched by the controllers; finalizers on QueueBindings are patched.
    (
        "eventpipe.dev",
        &["eventpipelines", "queuebindings", "deadletterpolicies"],
        &["get", "list", "watch", "patch"],
    ),
    (
        "eventpipe.dev",
        &[
            "eventpipelines/status",
            "queuebindings/status",
            "deadletterpolicies/status",
        ],
        &["patch"],
    ),
    // Applied server-side (which creates what is missing) and owned by pipelines; a
    // removed ingress's Service is deleted.
    (
        "",
        &["configmaps", "services"],
        &["get", "list", "watch", "create", "patch", "delete"],
    ),
    // Listed when a Deployment is short of replicas, to say why (an image that cannot
    // be pulled, a crashing container), and watched by the console (`--console-listen`)
    // to find the ingress and worker pods whose feeds it follows.
    ("", &["pods"], &["list", "watch"]),
    // Read by name only, and only those a pipeline or binding names: for the keys
    // webhooks and processors need, the workloads' credentials (metadata only), and a
    // binding's AWS credentials. Never listed or watched.
    ("", &["secrets"], &["get"]),
    (
        "apps",
        &["deployments"],
        &["get", "list", "watch", "create", "patch", "delete"],
    ),
    // The workers to 0 once idle and back to 1, where the HPA takes over.
    ("apps", &["deployments/scale"], &["patch"]),
    // Deleted when the pipeline moves to KEDA.
    (
        "autoscaling",
        &["horizontalpodautoscalers"],
        &["get", "list", "watch", "create", "patch", "delete"],
    ),
    // `scaling.engine: keda`: applied server-side and owned; deleted when the pipeline
    // moves back to the HPA.
    (
        "keda.sh",
        &["scaledobjects", "triggerauthentications"],
        &["create", "patch", "delete"],
    ),
    // The ingress's and the workers' budgets, applied and owned like the Deployments;
    // a removed ingress's is deleted.
    (
        "policy",
        &["poddisruptionbudgets"],
        &["get", "list", "watch", "create", "patch", "delete"],
    ),
    ("events.k8s.io", &["events"], &["create", "patch"]),
];

/// Leader election, in the operator's own namespace: the chart makes the Lease (so
/// `helm uninstall` removes it); an operator run elsewhere creates its own.
pub const LEASE_RULES: &[(&str, &[&str], &[&str])] = &[(
    "coordination.k8s.io",
    &["leases"],
    &["get", "create", "patch"],
)];

/// Checking who calls `/metrics` (`--metrics-auth=token`), what the built-in
/// `system:auth-delegator` grants; cluster-wide, as reviews are cluster-scoped.
pub const AUTH_RULES: &[(&str, &[&str], &[&str])] = &[
    ("authentication.k8s.io", &["tokenreviews"], &["create"]),
    (
        "authorization.k8s.io",
        &["subjectaccessreviews"],
        &["create"],
    ),
];

/// (namespace, Role): the built-in Role that reads the front proxy's CA and allowed
/// names (`extension-apiserver-authentication`), bound for the external metrics API.
pub const FRONT_PROXY_READER: (&str, &str) = (
    crate::external_metrics::front_proxy::NAMESPACE,
    "extension-apiserver-authentication-reader",
);
