//! AWS clients for a QueueBinding: the SDK's standard chain (`AWS_REGION`,
//! `AWS_ENDPOINT_URL`, the default credential providers), overridden by what the
//! binding says (`region`, `endpoint`, `credentials.secretRef`).

use std::path::Path;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_sqs::config::{Credentials, SharedCredentialsProvider};
use eventpipe_crds::{QueueBindingSpec, SqsQueue};

#[derive(Debug, thiserror::Error)]
pub enum AwsError {
    #[error("credentials Secret {name:?}: cannot read {file}: {source} (is the Secret mounted?)")]
    Credentials {
        name: String,
        file: String,
        source: std::io::Error,
    },
    #[error("queue {name:?}: {message}")]
    Queue { name: String, message: String },
}

/// SDK configuration for one binding. Static credentials come from the files of the
/// mounted Secret (`<secrets_dir>/<name>/AWS_ACCESS_KEY_ID`, ...).
pub async fn config_for(
    spec: &QueueBindingSpec,
    secrets_dir: &Path,
) -> Result<SdkConfig, AwsError> {
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(region) = &spec.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(endpoint) = &spec.endpoint {
        loader = loader.endpoint_url(endpoint);
    }
    if let Some(creds) = &spec.credentials {
        loader =
            loader.credentials_provider(static_credentials(&creds.secret_ref.name, secrets_dir)?);
    }
    Ok(loader.load().await)
}

/// The environment's SDK configuration, for what no binding describes.
pub async fn default_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest()).load().await
}

fn static_credentials(
    name: &str,
    secrets_dir: &Path,
) -> Result<SharedCredentialsProvider, AwsError> {
    let read = |key: &str| {
        let file = secrets_dir.join(name).join(key);
        std::fs::read_to_string(&file)
            .map(|s| s.trim().to_string())
            .map_err(|source| AwsError::Credentials {
                name: name.into(),
                file: file.display().to_string(),
                source,
            })
    };
    let token = read("AWS_SESSION_TOKEN").ok();
    let creds = Credentials::new(
        read("AWS_ACCESS_KEY_ID")?,
        read("AWS_SECRET_ACCESS_KEY")?,
        token,
        None,
        "secret",
    );
    Ok(SharedCredentialsProvider::new(creds))
}

/// The URL of a binding's queue: as given, or looked up by name.
pub async fn queue_url(sqs: &aws_sdk_sqs::Client, queue: &SqsQueue) -> Result<String, AwsError> {
    if let Some(url) = &queue.queue_url {
        return Ok(url.clone());
    }
    let name = queue.queue_name.clone().unwrap_or_default();
    let out = sqs
        .get_queue_url()
        .queue_name(&name)
        .send()
        .await
        .map_err(|e| AwsError::Queue {
            name: name.clone(),
            message: aws_sdk_sqs::error::DisplayErrorContext(&e).to_string(),
        })?;
    out.queue_url.ok_or_else(|| AwsError::Queue {
        name,
        message: "no URL returned".into(),
    })
}
