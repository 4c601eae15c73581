//! Shared set-up of the end-to-end suite: a client for the cluster in `KUBECONFIG`,
//! or a clear reason to skip when there is none.

use std::time::Duration;

use kube::Client;

/// A client for the cluster in `KUBECONFIG`; `None`, after saying why, when there is none.
pub async fn cluster() -> Option<Client> {
    if std::env::var_os("KUBECONFIG").is_none() {
        eprintln!(
            "SKIP: KUBECONFIG is not set; point it at a cluster (e.g. kind) to run the e2e suite"
        );
        return None;
    }
    let client = match Client::try_default().await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("SKIP: cannot build a client from KUBECONFIG: {e}");
            return None;
        }
    };
    match tokio::time::timeout(Duration::from_secs(10), client.apiserver_version()).await {
        Ok(Ok(v)) => {
            eprintln!("e2e against Kubernetes {}.{}", v.major, v.minor);
            Some(client)
        }
        Ok(Err(e)) => {
            eprintln!("SKIP: the cluster in KUBECONFIG does not answer: {e}");
            None
        }
        Err(_) => {
            eprintln!("SKIP: the cluster in KUBECONFIG did not answer within 10s");
            None
        }
    }
}

/// A namespace name unique to this run.
pub fn test_namespace(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}-{}-{nanos:x}", std::process::id())
}
