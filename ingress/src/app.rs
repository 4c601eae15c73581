//! Assembling an ingress from its configuration: secrets and their watcher, one
//! publisher per destination, the routes, limits, TLS, readiness, and serving until
//! a drained shutdown.

use std::{collections::HashMap, future::Future, path::PathBuf, sync::Arc, time::Duration};

use aws_config::SdkConfig;
use axum::{Router, middleware};
use eventpipe_core::{
    aws::{self, AwsError},
    ops::Ready,
};
use prometheus_client::registry::Registry;
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::task::TaskTracker;

use crate::{
    config::{IngressConfig, Target},
    connections::Server,
    drain::{self, Drain},
    dynamodb::DynamoDbPublisher,
    limits::Limits,
    metrics::Metrics,
    pages::Pages,
    publish::{Noop, Publisher},
    push::{self, HubLimits, Pushes, metrics::PushMetrics, subscribe::Subscriptions},
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
    /// How long the ingress keeps serving, reporting not ready, once told to shut
    /// down: the time load balancers take to stop sending it connections.
    pub drain_delay: Duration,
    pub batch: BatchSettings,
    /// SDK configuration for every destination, instead of the environment's and
    /// the bindings' own (local mode points it at an emulator).
    pub aws: Option<SdkConfig>,
    /// Subscribers and the pushes kept for them.
    pub push: HubLimits,
    /// A folder of static pages served on the webhooks' listener (local mode).
    pub pages: Option<PathBuf>,
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
            // Embedded (local mode), nothing routes around the ingress: stop at once.
            drain_delay: Duration::ZERO,
            batch: BatchSettings::default(),
            aws: None,
            push: HubLimits::default(),
            pages: None,
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
    pushes: Pushes,
    ready: Ready,
    watchers: Vec<JoinHandle<()>>,
    server: Server,
    drain: Drain,
}

impl Ingress {
    /// Loads the secrets and the TLS certificate, connects the destinations and
    /// registers the metrics. Must run inside a Tokio runtime. Missing secrets do not
    /// fail start-up: the ingress stays not ready, and their webhooks answer `503`,
    /// until they appear (a previous secret, kept for a rotation, is not waited
    /// for); a TLS certificate that does not load does.
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
        let signatures: Vec<_> = config.webhooks.iter().map(|w| &w.spec.signature).collect();
        let current = signatures.iter().map(|s| &s.secret_ref);
        let previous = signatures
            .iter()
            .filter_map(|s| s.previous_secret_ref.as_ref());
        let secrets = Arc::new(Secrets::load(&settings.secrets_dir, current, previous));
        let ready = Ready::default();
        ready.set(secrets.reload());
        // A store still under way when its request gave up is waited for this long.
        let drain = Drain::new(settings.drain_delay, settings.publish_timeout);
        let pushes = Pushes::new(
            settings.push.clone(),
            PushMetrics::register(registry),
            (config.subscriptions.iter())
                .map(|s| s.pipeline.clone())
                .collect(),
        );
        let subscriptions =
            Subscriptions::new(config.subscriptions.clone(), &secrets, pushes.clone());
        let routes = routes(config, &settings, &metrics, &secrets, &drain.publishing).await?;
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
            subscriptions,
            metrics.clone(),
            secrets,
            &settings.limits,
            settings.pages.clone().map(Pages::new),
        ));
        let close = middleware::map_response_with_state(
            drain.draining.clone(),
            drain::close_while_draining,
        );
        let server = Server {
            router: server::router(routes.clone()).layer(close),
            limits: settings.limits,
            tls,
            metrics,
        };
        Ok(Self {
            routes,
            pushes,
            ready,
            watchers,
            server,
            drain,
        })
    }

    /// The webhook routes, e.g. to merge into another server (local mode).
    pub fn router(&self) -> Router {
        server::router(self.routes.clone())
    }

    /// The internal endpoint a `push` processor sends events to (`POST
    /// /push/{pipeline}`), for the ops server.
    pub fn push_router(&self) -> Router {
        push::router(self.pushes.clone())
    }

    /// Serves the push endpoint alone on `listener` until `shutdown`: where no ops
    /// server of the ingress's own runs (local mode).
    pub fn serve_pushes<F>(
        &self,
        listener: TcpListener,
        shutdown: F,
    ) -> impl Future<Output = std::io::Result<()>> + Send + use<F>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let router = self.push_router();
        async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(shutdown)
                .await
        }
    }

    /// The feed of accepted events, to serve or read in process (local mode).
    pub fn feed(&self) -> eventpipe_core::feed::Feed {
        self.server.metrics.feed()
    }

    /// True once every secret is loaded.
    pub fn ready(&self) -> Ready {
        self.ready.clone()
    }

    /// Serves until `shutdown` completes; then reports not ready at once and serves on
    /// for the drain delay (each answer closing its connection), stops taking
    /// connections, lets in-flight requests finish (their events stored or refused)
    /// and waits for the publishers' last calls before returning.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let Self {
            routes,
            pushes,
            ready,
            watchers,
            server,
            drain,
        } = self;
        let delayed = drain.clone();
        let stop_accepting = async move {
            shutdown.await;
            // The secrets watcher would set readiness again.
            watchers.iter().for_each(JoinHandle::abort);
            ready.set(false);
            delayed.delay().await;
            // Subscribers would hold their connections open: end them, to reconnect
            // to another replica.
            pushes.closing.cancel();
        };
        server.serve(listener, stop_accepting).await?;
        // The last handles on the publishers: their batchers send what they hold.
        drop(routes);
        drain.flush().await;
        Ok(())
    }
}

/// A route per webhook, with one publisher per destination, its background work on `tasks`.
async fn routes(
    config: IngressConfig,
    settings: &Settings,
    metrics: &Metrics,
    secrets: &Secrets,
    tasks: &TaskTracker,
) -> Result<Vec<Route>, AwsError> {
    let mut publishers: HashMap<String, Arc<dyn Publisher>> = HashMap::new();
    let mut routes = Vec::new();
    for webhook in config.webhooks {
        let key = webhook.target.key();
        let publisher = match publishers.get(&key) {
            Some(p) => p.clone(),
            None => {
                let p = publisher(&webhook.target, settings, metrics, tasks).await?;
                publishers.insert(key, p.clone());
                p
            }
        };
        let slots = (webhook.spec.signature.secret_refs())
            .map(|r| secrets.slot(r).expect("every secret was registered"))
            .collect();
        let timeout = settings.publish_timeout;
        routes.push(Route::new(webhook, slots, publisher, timeout, metrics));
    }
    Ok(routes)
}

async fn publisher(
    target: &Target,
    settings: &Settings,
    metrics: &Metrics,
    tasks: &TaskTracker,
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
                tasks,
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
