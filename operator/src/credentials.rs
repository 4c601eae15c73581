//! AWS credentials from a binding's Secret, fetched by name and kept for a while: the
//! operator neither lists nor watches Secrets, so a rotated Secret is read again once
//! its credentials are older than the cache's time to live.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use aws_sdk_sqs::config::Credentials;
use eventpipe_core::aws::secret_keys;
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};
use tokio::time::Instant;

use crate::context::{Error, Problem};

type Key = (String, String);

/// How long credentials read from a Secret are used before it is read again.
pub const CREDENTIALS_TTL: Duration = Duration::from_secs(60);

/// Credentials by Secret, each with when it was read.
pub struct SecretCredentials {
    ttl: Duration,
    read: Mutex<HashMap<Key, (Instant, Credentials)>>,
}

const POISONED: &str = "credentials cache lock poisoned";

impl SecretCredentials {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            read: Mutex::default(),
        }
    }

    /// The credentials in Secret `name` of `ns`, or why there are none.
    pub async fn get(&self, client: &Client, ns: &str, name: &str) -> Result<Credentials, Error> {
        let key = (ns.to_string(), name.to_string());
        if let Some((at, creds)) = self.read.lock().expect(POISONED).get(&key)
            && at.elapsed() < self.ttl
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
        let creds = parse(name, secret).map_err(Error::Blocked)?;
        let mut read = self.read.lock().expect(POISONED);
        read.insert(key, (Instant::now(), creds.clone()));
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
