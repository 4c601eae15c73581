//! AWS credentials from a binding's Secret, read once per version of the Secret: a
//! watch of Secrets' metadata says which version is current, so the metrics refresh
//! and reconciles do not fetch unchanged Secrets again.

use std::collections::HashMap;
use std::sync::Mutex;

use aws_sdk_sqs::config::Credentials;
use eventpipe_core::aws::secret_keys;
use k8s_openapi::api::core::v1::Secret;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, ResourceExt};

use crate::context::{Error, Problem};

type Key = (String, String);

/// Credentials by Secret, each with the resourceVersion it was read at.
pub struct SecretCredentials {
    versions: Store<PartialObjectMeta<Secret>>,
    read: Mutex<HashMap<Key, (String, Credentials)>>,
}

/// The lock is poisoned only when a panic held it, and no code that holds it panics.
const POISONED: &str = "credentials cache lock poisoned";

impl SecretCredentials {
    /// `versions`: Secrets' metadata, kept current by a watch. Where it does not know a
    /// Secret (an empty store, a Secret just made), the Secret is fetched.
    pub fn new(versions: Store<PartialObjectMeta<Secret>>) -> Self {
        Self {
            versions,
            read: Mutex::default(),
        }
    }

    /// The credentials in Secret `name` of `ns`, or why there are none.
    pub async fn get(&self, client: &Client, ns: &str, name: &str) -> Result<Credentials, Error> {
        let key = (ns.to_string(), name.to_string());
        let current = self
            .versions
            .get(&ObjectRef::new(name).within(ns))
            .and_then(|m| m.resource_version());
        if let Some(version) = current
            && let Some((seen, creds)) = self.read.lock().expect(POISONED).get(&key)
            && *seen == version
        {
            return Ok(creds.clone());
        }
        let Some(secret) = Api::<Secret>::namespaced(client.clone(), ns)
            .get_opt(name)
            .await?
        else {
            return Err(Error::Blocked(Problem {
                reason: "SecretNotFound",
                message: format!("credentials Secret {name:?} not found in namespace {ns}"),
            }));
        };
        let version = secret.resource_version();
        let creds = parse(name, secret).map_err(Error::Blocked)?;
        if let Some(version) = version {
            let mut read = self.read.lock().expect(POISONED);
            read.insert(key, (version, creds.clone()));
        }
        Ok(creds)
    }
}

fn parse(name: &str, secret: Secret) -> Result<Credentials, Problem> {
    let data = secret.data.unwrap_or_default();
    let read = |k: &str| {
        data.get(k)
            .map(|v| String::from_utf8_lossy(&v.0).trim().to_string())
    };
    let (Some(id), Some(key)) = (
        read(secret_keys::ACCESS_KEY_ID),
        read(secret_keys::SECRET_ACCESS_KEY),
    ) else {
        return Err(Problem {
            reason: "SecretKeyNotFound",
            message: format!(
                "credentials Secret {name:?} needs {}",
                secret_keys::REQUIRED.join(" and ")
            ),
        });
    };
    Ok(Credentials::new(
        id,
        key,
        read(secret_keys::SESSION_TOKEN),
        None,
        "secret",
    ))
}
