//! Assembling an ingress from its configuration: secrets and their watcher, one
//! publisher per destination, the routes, limits, TLS, readiness, and graceful
//! serving.

use std::{collections::HashMap, future::Future, path::PathBuf, sync::Arc, time::Duration};

use aws_config::SdkConfig;
use axum::Router;
use eventpipe_core::{
    aws::{self, AwsError},
    ops::Ready,
};
use prometheus_client::registry::Registry;
use tokio::{net::TcpListener, task::JoinHandle};

use crate::{
    config::{IngressConfig, Target},
    connections::Server,
    dynamodb::DynamoDbPublisher,
    limits::Limits,
    metrics::Metrics,
    publish::{Noop, Publisher},
    secrets::{self, Secrets},
    server::{self, Routes},
    sqs::{BatchSettings, SqsPublisher},
    tls::{Tls, TlsError, TlsFiles},
    webhook::Route,
};

/// Where events go.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PublishMode {
    /// To the configured SQS queues and DynamoDB tables.
    #[default]
    Aws,
    /// Nowhere: every event is accepted and dropped (benchmarks of the ingress alone).
    Noop,
}

#[derive(Clone, Debug)]
pub struct Settings {
    /// Where Secrets are mounted: `<dir>/<name>/<key>`.
    pub secrets_dir: PathBuf,
    /// How often secret files (and TLS files) are re-read.
    pub secrets_poll: Duration,
    pub limits: Limits,
    /// Serve HTTPS with this certificate; plain HTTP when absent.
    pub tls: Option<TlsFiles>,
    pub publish: PublishMode,
    /// Longest wait for a destination before answering `503`.
    pub publish_timeout: Duration,
    pub batch: BatchSettings,
    /// SDK configuration for every destination, instead of the environment's and
    /// the bindings' own (local mode points it at an emulator).
    pub aws: Option<SdkConfig>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            secrets_dir: PathBuf::from("/etc/eventpipe/secrets"),
            secrets_poll: Duration::from_secs(1),
            limits: Limits::default(),
            tls: None,
            publish: PublishMode::Aws,
            publish_timeout: Duration::from_secs(5),
            batch: BatchSettings::default(),
            aws: None,
        }
    }
}

/// Why an ingress cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Aws(#[from] AwsError),
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
}

/// A configured ingress, ready to serve.
pub struct Ingress {
    routes: Arc<Routes>,
    ready: Ready,
    watchers: Vec<JoinHandle<()>>,
    server: Server,
}

impl Ingress {
    /// Loads the secrets and the TLS certificate, connects the destinations and
    /// registers the metrics. Must run inside a Tokio runtime. Missing secrets do not
    /// fail start-up: the ingress stays not ready, and their webhooks answer `503`,
    /// until they appear; a TLS certificate that does not load does.
    pub async fn new(
        config: IngressConfig,
        settings: Settings,
        registry: &mut Registry,
    ) -> Result<Self, StartError> {
        let metrics = Metrics::register(registry);
        let tls = settings
            .tls
            .clone()
            .map(Tls::load)
            .transpose()?
            .map(Arc::new);
        let refs: Vec<_> = config
            .webhooks
            .iter()
            .map(|w| w.spec.signature.secret_ref.clone())
            .collect();
        let secrets = Arc::new(Secrets::load(&settings.secrets_dir, &refs));
        let ready = Ready::default();
        ready.set(secrets.reload());
        let mut publishers: HashMap<String, Arc<dyn Publisher>> = HashMap::new();
        let mut routes = Vec::new();
        for webhook in config.webhooks {
            let key = webhook.target.key();
            let publisher = match publishers.get(&key) {
                Some(p) => p.clone(),
                None => {
                    let p = publisher(&webhook.target, &settings, &metrics).await?;
                    publishers.insert(key, p.clone());
                    p
                }
            };
            let slot = secrets
                .slot(&webhook.spec.signature.secret_ref)
                .expect("every secret was registered");
            routes.push(Route::new(
                webhook,
                slot,
                publisher,
                settings.publish_timeout,
                &metrics,
            ));
        }
        let mut watchers = vec![tokio::spawn(secrets::watch(
            Arc::downgrade(&secrets),
            settings.secrets_poll,
            {
                let ready = ready.clone();
                move |all| ready.set(all)
            },
        ))];
        watchers.extend(tls.as_ref().map(|t| t.watch(settings.secrets_poll)));
        let routes = Arc::new(Routes::new(
            routes,
            metrics.clone(),
            secrets,
            &settings.limits,
        ));
        let server = Server {
            router: server::router(routes.clone()),
            limits: settings.limits,
            tls,
            metrics,
        };
        Ok(Self {
            routes,
            ready,
            watchers,
            server,
        })
    }

    /// The webhook routes, e.g. to merge into another server (local mode).
    pub fn router(&self) -> Router {
        server::router(self.routes.clone())
    }

    /// True once every secret is loaded.
    pub fn ready(&self) -> Ready {
        self.ready.clone()
    }

    /// Serves until `shutdown` completes, then stops taking connections and lets
    /// in-flight requests finish (their events are stored or refused) before returning.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let (ready, watchers) = (self.ready.clone(), self.watchers);
        let draining = async move {
            shutdown.await;
            watchers.iter().for_each(JoinHandle::abort);
            ready.set(false);
            tracing::info!("shutting down; draining in-flight requests");
        };
        self.server.serve(listener, draining).await
    }
}

async fn publisher(
    target: &Target,
    settings: &Settings,
    metrics: &Metrics,
) -> Result<Arc<dyn Publisher>, AwsError> {
    if settings.publish == PublishMode::Noop {
        return Ok(Arc::new(Noop::new(&target.key())));
    }
    Ok(match target {
        Target::Queue { spec, queue, .. } => {
            let config = match &settings.aws {
                Some(c) => c.clone(),
                None => aws::config_for(spec, &settings.secrets_dir).await?,
            };
            let sizes = metrics.batch_size(&eventpipe_core::resolve::queue_name(queue));
            let client = aws_sdk_sqs::Client::new(&config);
            Arc::new(SqsPublisher::new(
                client,
                queue,
                settings.batch.clone(),
                sizes,
            ))
        }
        Target::Table { table_name } => {
            let config = match &settings.aws {
                Some(c) => c.clone(),
                None => aws::default_config().await,
            };
            let client = aws_sdk_dynamodb::Client::new(&config);
            Arc::new(DynamoDbPublisher::new(client, table_name))
        }
    })
}
