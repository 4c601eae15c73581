//! Why a Deployment's pods do not run, in the kubelet's and scheduler's words (an image
//! that cannot be pulled, a crashing container, no node that fits), so a pipeline's
//! conditions say what to fix rather than only that replicas are missing.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};

use crate::context::Context;

/// A reason (`ImagePullBackOff`, `CrashLoopBackOff`, `Unschedulable`, ...) and what it says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trouble {
    pub reason: String,
    pub message: String,
}

/// The trouble of the first of `d`'s pods that has one; looked up only for a
/// Deployment short of replicas, and best effort: an API error means none known.
pub async fn of(ctx: &Context, ns: &str, d: &Deployment) -> Option<Trouble> {
    let labels = d.spec.selector.match_labels.as_ref()?;
    let selector: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let pods = Api::<Pod>::namespaced(ctx.client.clone(), ns)
        .list(&ListParams::default().labels(&selector.join(",")))
        .await
        .inspect_err(|e| tracing::debug!(error = %e, "pods not listed"))
        .ok()?;
    pods.items.iter().find_map(trouble)
}

/// States every pod passes through on its way up are not trouble.
const STARTING: [&str; 2] = ["ContainerCreating", "PodInitializing"];

/// What keeps one pod from running: a container waiting for a reason other than
/// starting up, or the scheduler finding no node.
pub fn trouble(pod: &Pod) -> Option<Trouble> {
    let status = pod.status.as_ref()?;
    let containers = [&status.init_container_statuses, &status.container_statuses];
    let waiting = containers
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|c| c.state.as_ref()?.waiting.as_ref().map(|w| (&c.name, w)))
        .find(|(_, w)| w.reason.as_deref().is_some_and(|r| !STARTING.contains(&r)));
    if let Some((name, w)) = waiting {
        let message = w.message.clone().unwrap_or_default();
        return Some(Trouble {
            reason: w.reason.clone().unwrap_or_default(),
            message: format!("container {name}: {message}")
                .trim_end_matches(": ")
                .into(),
        });
    }
    let unscheduled = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False")?;
    Some(Trouble {
        reason: unscheduled
            .reason
            .clone()
            .unwrap_or_else(|| "Unschedulable".into()),
        message: unscheduled.message.clone().unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "status": status})).unwrap()
    }

    #[test]
    fn an_image_that_cannot_be_pulled_is_named() {
        let p = pod(json!({"containerStatuses": [{
            "name": "worker", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image \"x\""}},
        }]}));
        assert_eq!(
            trouble(&p),
            Some(Trouble {
                reason: "ImagePullBackOff".into(),
                message: "container worker: Back-off pulling image \"x\"".into(),
            })
        );
    }

    #[test]
    fn starting_up_is_no_trouble_but_no_node_is() {
        let starting = pod(json!({"containerStatuses": [{
            "name": "worker", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": "ContainerCreating"}},
        }]}));
        assert_eq!(trouble(&starting), None);
        let pending = pod(
            json!({"conditions": [{"type": "PodScheduled", "status": "False",
            "reason": "Unschedulable", "message": "0/1 nodes are available: 1 Insufficient cpu."}]}),
        );
        assert_eq!(trouble(&pending).unwrap().reason, "Unschedulable");
        assert_eq!(trouble(&pod(json!({"phase": "Running"}))), None);
    }
}
