//! AWS clients for a QueueBinding: the SDK's standard chain (`AWS_REGION`,
//! `AWS_ENDPOINT_URL`, the default credential providers), overridden by what the
//! binding says (`region`, `endpoint`, `credentials.secretRef`).

use std::path::Path;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_sqs::config::{Credentials, SharedCredentialsProvider};
use eventpipe_crds::QueueBindingSpec;

#[derive(Debug, thiserror::Error)]
pub enum AwsError {
    #[error("credentials Secret {name:?}: cannot read {file}: {source} (is the Secret mounted?)")]
    Credentials {
        name: String,
        file: String,
        source: std::io::Error,
    },
}

/// The keys of a binding's credentials Secret, as files of the mounted Secret or as
/// the Secret's data; the session token is optional.
pub mod secret_keys {
    pub const ACCESS_KEY_ID: &str = "AWS_ACCESS_KEY_ID";
    pub const SECRET_ACCESS_KEY: &str = "AWS_SECRET_ACCESS_KEY";
    pub const SESSION_TOKEN: &str = "AWS_SESSION_TOKEN";
    pub const REQUIRED: [&str; 2] = [ACCESS_KEY_ID, SECRET_ACCESS_KEY];
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
    let token = read(secret_keys::SESSION_TOKEN).ok();
    let creds = Credentials::new(
        read(secret_keys::ACCESS_KEY_ID)?,
        read(secret_keys::SECRET_ACCESS_KEY)?,
        token,
        None,
        "secret",
    );
    Ok(SharedCredentialsProvider::new(creds))
}
