//! Which namespaces the operator watches: the whole cluster (granted by a
//! ClusterRole), or only those it is given (granted by a Role in each), so that its
//! permissions can end at those namespaces.

use futures::StreamExt;
use k8s_openapi::NamespaceResourceScope;
use kube::runtime::reflector::Store;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client, Resource};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    Cluster,
    Namespaces(Vec<String>),
}

impl Scope {
    /// The cluster, unless namespaces are named (empty names are ignored).
    pub fn of(namespaces: &[String]) -> Self {
        let named: Vec<String> = (namespaces.iter())
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty())
            .collect();
        match named.is_empty() {
            true => Self::Cluster,
            false => Self::Namespaces(named),
        }
    }

    /// Each watched namespace (`None`: all of them at once).
    pub fn namespaces(&self) -> Vec<Option<String>> {
        match self {
            Self::Cluster => vec![None],
            Self::Namespaces(names) => names.iter().cloned().map(Some).collect(),
        }
    }
}

/// The API of a kind in one namespace, or in all.
pub fn api<K>(client: &Client, ns: Option<&str>) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>,
{
    match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Caches of all objects of a kind in the scope, one per namespace, kept current by
/// watches.
#[derive(Clone)]
pub struct Stores<K: Resource<DynamicType = ()> + 'static>(Vec<Store<K>>);

impl<K> Stores<K>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    pub fn watch(client: &Client, scope: &Scope) -> Self {
        Self::watch_with(client, scope, watcher::Config::default())
    }

    /// Only the objects `config` selects (e.g. by label).
    pub fn watch_with(client: &Client, scope: &Scope, config: watcher::Config) -> Self {
        let stores = (scope.namespaces().iter())
            .map(|ns| Self::watch_store(api(client, ns.as_deref()), config.clone()))
            .collect();
        Self(stores)
    }

    fn watch_store(api: Api<K>, config: watcher::Config) -> Store<K> {
        let (reader, writer) = kube::runtime::reflector::store();
        let stream = reflector(writer, watcher(api, config))
            .default_backoff()
            .touched_objects()
            .for_each(|_| async {});
        tokio::spawn(stream);
        reader
    }

    /// Waits until every watch has listed what it watches once.
    pub async fn ready(&self) {
        for store in &self.0 {
            // Dropped only with the watch task, which runs as long as the process.
            let _ = store.wait_until_ready().await;
        }
    }

    /// Every cached object.
    pub fn state(&self) -> Vec<std::sync::Arc<K>> {
        self.0.iter().flat_map(Store::state).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_namespaces_means_the_whole_cluster() {
        assert_eq!(Scope::of(&[]), Scope::Cluster);
        assert_eq!(Scope::of(&[" ".into()]), Scope::Cluster);
        assert_eq!(Scope::Cluster.namespaces(), [None]);
        let two = Scope::of(&["shop".into(), " billing ".into()]);
        assert_eq!(
            two.namespaces(),
            [Some("shop".to_string()), Some("billing".to_string())]
        );
    }
}
