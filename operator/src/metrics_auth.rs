//! Who may read the operator's `/metrics` (`--metrics-auth=token`), as
//! controller-runtime's secure metrics: a bearer token the API server vouches for
//! (TokenReview), whose holder may `get` the path (SubjectAccessReview on the
//! non-resource URL). `/healthz` and `/readyz` stay open for the kubelet's probes.
//! Verdicts are kept a short while, so a scrape every 30 s costs no API calls.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, UserInfo};
use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};
use kube::{Client, Resource};
use prometheus_client::metrics::{counter::Counter, family::Family};
use sha2::{Digest, Sha256};

use crate::metrics::{AuthCheck, Metrics};

/// How `/metrics` is guarded.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MetricsAuth {
    /// Anyone who reaches the port.
    #[default]
    None,
    /// A bearer token checked with TokenReview and SubjectAccessReview.
    Token,
}

/// Paths the kubelet probes, open to all.
const OPEN: [&str; 2] = ["/healthz", "/readyz"];
/// How long a verdict is kept: an allowed one as long as controller-runtime keeps an
/// authentication, a refusal briefly so that a binding just made soon counts.
const ALLOWED_FOR: Duration = Duration::from_secs(60);
const REFUSED_FOR: Duration = Duration::from_secs(10);
/// Verdicts kept at most: tokens are the caller's to make up.
const MAX_KEPT: usize = 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Allowed,
    /// No token, or one the API server does not vouch for: 401.
    Unauthenticated,
    /// A user not allowed to `get` the path: 403.
    Forbidden,
    /// The API server could not be asked: 503, and not kept.
    Unavailable,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Self::Allowed => "allowed",
            Self::Unauthenticated => "unauthenticated",
            Self::Forbidden => "forbidden",
            Self::Unavailable => "unavailable",
        }
    }

    fn refusal(self) -> Response {
        let (code, message) = match self {
            Self::Allowed | Self::Unauthenticated => {
                let challenge = [(header::WWW_AUTHENTICATE, "Bearer")];
                return (StatusCode::UNAUTHORIZED, challenge, "unauthorized\n").into_response();
            }
            Self::Forbidden => (StatusCode::FORBIDDEN, "forbidden\n"),
            Self::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "cannot check the token now\n",
            ),
        };
        (code, message).into_response()
    }
}

/// Asks the API server who a token belongs to and what that user may do.
pub struct Reviewer {
    client: Client,
    kept: Mutex<HashMap<[u8; 32], (Outcome, Instant)>>,
    checks: Family<AuthCheck, Counter>,
}

impl Reviewer {
    pub fn new(client: Client, metrics: &Metrics) -> Arc<Self> {
        Arc::new(Self {
            client,
            kept: Mutex::default(),
            checks: metrics.metrics_auth_checks.clone(),
        })
    }

    /// Whether the holder of `token` may `verb` the non-resource URL `path`.
    pub async fn check(&self, token: &str, verb: &str, path: &str) -> Outcome {
        let key: [u8; 32] = Sha256::digest(format!("{verb} {path} {token}")).into();
        let outcome = match self.kept(&key) {
            Some(outcome) => outcome,
            None => {
                let outcome = self.review(token, verb, path).await;
                self.keep(key, outcome);
                outcome
            }
        };
        self.count(outcome);
        outcome
    }

    fn count(&self, outcome: Outcome) {
        let label = AuthCheck {
            outcome: outcome.label().into(),
        };
        self.checks.get_or_create(&label).inc();
    }

    fn kept(&self, key: &[u8; 32]) -> Option<Outcome> {
        let kept = self.kept.lock().expect(POISONED);
        kept.get(key)
            .filter(|(_, until)| *until > Instant::now())
            .map(|(outcome, _)| *outcome)
    }

    fn keep(&self, key: [u8; 32], outcome: Outcome) {
        let until = Instant::now()
            + match outcome {
                Outcome::Allowed => ALLOWED_FOR,
                Outcome::Unauthenticated | Outcome::Forbidden => REFUSED_FOR,
                Outcome::Unavailable => return,
            };
        let mut kept = self.kept.lock().expect(POISONED);
        if kept.len() >= MAX_KEPT {
            let now = Instant::now();
            kept.retain(|_, (_, until)| *until > now);
        }
        if kept.len() < MAX_KEPT {
            kept.insert(key, (outcome, until));
        }
    }

    async fn review(&self, token: &str, verb: &str, path: &str) -> Outcome {
        let reviewed = async {
            let Some(user) = self.authenticate(token).await? else {
                return Ok(Outcome::Unauthenticated);
            };
            let allowed = self.authorize(&user, verb, path).await?;
            tracing::debug!(user = ?user.username, allowed, path, "metrics caller checked");
            Ok::<_, kube::Error>(if allowed {
                Outcome::Allowed
            } else {
                Outcome::Forbidden
            })
        };
        reviewed.await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot check a metrics caller's token");
            Outcome::Unavailable
        })
    }

    /// The user a token belongs to; none when the API server does not vouch for it.
    async fn authenticate(&self, token: &str) -> Result<Option<UserInfo>, kube::Error> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_string(),
                ..Default::default()
            },
            ..Default::default()
        };
        let reviewed = create(&self.client, &review).await?;
        let status = reviewed.status.unwrap_or_default();
        Ok(status
            .user
            .filter(|_| status.authenticated == Some(true) && status.error.is_none()))
    }

    async fn authorize(
        &self,
        user: &UserInfo,
        verb: &str,
        path: &str,
    ) -> Result<bool, kube::Error> {
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: user.username.clone(),
                groups: user.groups.clone(),
                uid: user.uid.clone(),
                extra: user.extra.clone(),
                non_resource_attributes: Some(NonResourceAttributes {
                    path: Some(path.to_string()),
                    verb: Some(verb.to_string()),
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let reviewed = create(&self.client, &review).await?;
        Ok(reviewed
            .status
            .is_some_and(|s| s.allowed && s.denied != Some(true)))
    }
}

/// The lock is poisoned only when a panic held it, and no code that holds it panics.
const POISONED: &str = "metrics auth verdicts lock poisoned";

async fn create<K>(client: &Client, review: &K) -> Result<K, kube::Error>
where
    K: Resource<Scope = k8s_openapi::ClusterResourceScope, DynamicType = ()>,
    K: Clone + std::fmt::Debug + serde::Serialize + serde::de::DeserializeOwned,
{
    Api::<K>::all(client.clone())
        .create(&PostParams::default(), review)
        .await
}

/// `router` with every path but the probes' guarded by `reviewer`.
pub fn protect(router: Router, reviewer: Arc<Reviewer>) -> Router {
    router.layer(axum::middleware::from_fn_with_state(reviewer, guard))
}

async fn guard(State(reviewer): State<Arc<Reviewer>>, request: Request, next: Next) -> Response {
    let path = request.uri().path().to_string();
    if OPEN.contains(&path.as_str()) {
        return next.run(request).await;
    }
    let Some(token) = bearer(request.headers()) else {
        reviewer.count(Outcome::Unauthenticated);
        return Outcome::Unauthenticated.refusal();
    };
    let verb = request.method().as_str().to_lowercase();
    match reviewer.check(&token, &verb, &path).await {
        Outcome::Allowed => next.run(request).await,
        refused => refused.refusal(),
    }
}

/// The token of an `Authorization: Bearer …` header.
fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then(|| token.to_string())
}
