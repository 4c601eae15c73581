//! SQS clients per QueueBinding, built once, and publishers to a binding's queue.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use anyhow::{Context, bail};
use eventpipe_core::{aws, resolve};
use eventpipe_crds::{ObjectRef, Pipeline, QueueBinding};

use crate::publish::Publisher;

pub struct Clients<'a> {
    secrets_dir: &'a Path,
    /// Where `push` processors deliver, instead of their ingress's replicas.
    push_to: Option<SocketAddr>,
    /// Per binding name, loaded once: a load may ask the instance metadata service.
    configs: BTreeMap<String, aws_config::SdkConfig>,
    sqs: BTreeMap<String, aws_sdk_sqs::Client>,
}

impl<'a> Clients<'a> {
    pub fn new(secrets_dir: &'a Path) -> Self {
        Self {
            secrets_dir,
            push_to: None,
            configs: BTreeMap::new(),
            sqs: BTreeMap::new(),
        }
    }

    /// Sends every push to the ingress at `addr` (local mode: the one in process).
    pub fn with_push_to(mut self, addr: Option<SocketAddr>) -> Self {
        self.push_to = addr;
        self
    }

    pub fn push_to(&self) -> Option<SocketAddr> {
        self.push_to
    }

    /// Where mounted Secrets live (`<dir>/<name>/<key>`).
    pub fn secrets_dir(&self) -> &'a Path {
        self.secrets_dir
    }

    /// The AWS configuration a binding describes (region, endpoint, credentials).
    pub async fn config(
        &mut self,
        binding: &QueueBinding,
    ) -> anyhow::Result<aws_config::SdkConfig> {
        let name = binding.metadata.name.clone().unwrap_or_default();
        if let Some(c) = self.configs.get(&name) {
            return Ok(c.clone());
        }
        let config = aws::config_for(&binding.spec, self.secrets_dir).await?;
        self.configs.insert(name, config.clone());
        Ok(config)
    }

    pub async fn sqs(&mut self, binding: &QueueBinding) -> anyhow::Result<aws_sdk_sqs::Client> {
        let name = binding.metadata.name.clone().unwrap_or_default();
        if let Some(c) = self.sqs.get(&name) {
            return Ok(c.clone());
        }
        let client = aws_sdk_sqs::Client::new(&self.config(binding).await?);
        self.sqs.insert(name, client.clone());
        Ok(client)
    }

    /// A publisher to the queue of the binding `r` names.
    pub async fn publisher(&mut self, p: &Pipeline, r: &ObjectRef) -> anyhow::Result<Publisher> {
        let binding = p.binding(r);
        let Some(queue) = &binding.spec.sqs else {
            bail!(
                "QueueBinding {:?} is not an SQS queue, so events cannot be sent to it",
                r.name
            );
        };
        let sqs = self.sqs(binding).await?;
        let url = resolve::queue_url(&sqs, queue)
            .await
            .with_context(|| format!("QueueBinding {:?}", r.name))?;
        Ok(Publisher::new(sqs, url))
    }
}
