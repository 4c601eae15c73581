//! Test support: [`Moto`], moto's server (a real AWS-compatible SQS and DynamoDB) on a
//! free 127.0.0.1 port for the life of a test, with clients for it. It starts with
//! core's launcher (which local mode uses too) and fails the test when it cannot.
//! Nothing beyond `make venv` is needed. [`otlp`] receives exported spans.

pub mod otlp;

use std::path::PathBuf;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use eventpipe_core::local_aws::LocalAws;

/// A running moto server; stopped when dropped.
pub struct Moto(LocalAws);

/// Where `make venv` puts moto's server; `EVENTPIPE_MOTO_SERVER` overrides it.
pub fn moto_server_path() -> PathBuf {
    std::env::var_os(eventpipe_core::local_aws::SERVER_VAR)
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/moto_server")
        })
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    eventpipe_core::local_aws::free_port().expect("a free loopback port")
}

impl Moto {
    /// Starts a fresh server and waits until it accepts connections.
    pub fn start() -> Self {
        Self(LocalAws::start(&moto_server_path()).unwrap_or_else(|e| panic!("{e}")))
    }

    /// `http://127.0.0.1:PORT`, for `AWS_ENDPOINT_URL` or a binding's `endpoint`.
    pub fn endpoint(&self) -> String {
        self.0.endpoint()
    }

    /// Environment for a child process (a binary under test) to reach this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
        ]
    }

    /// SDK configuration pointing at this server, with moto's test credentials.
    pub fn sdk_config(&self) -> SdkConfig {
        SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(self.endpoint())
            .credentials_provider(aws_sdk_sqs::config::SharedCredentialsProvider::new(
                aws_sdk_sqs::config::Credentials::for_tests(),
            ))
            .build()
    }

    pub fn sqs(&self) -> aws_sdk_sqs::Client {
        aws_sdk_sqs::Client::new(&self.sdk_config())
    }

    pub fn dynamodb(&self) -> aws_sdk_dynamodb::Client {
        aws_sdk_dynamodb::Client::new(&self.sdk_config())
    }
}
