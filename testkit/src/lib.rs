//! [`Moto`] runs moto's server (a real AWS-compatible SQS and DynamoDB) on a free
//! 127.0.0.1 port for as long as it is kept: for the life of a test, or of a local
//! `eventpipe dev` run. Nothing beyond `make venv` is needed.

use std::{
    net::{SocketAddr, TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use aws_config::{BehaviorVersion, Region, SdkConfig};

/// A running moto server; stopped when dropped.
pub struct Moto {
    addr: SocketAddr,
    child: Child,
}

/// Where `make venv` puts moto's server; `EVENTPIPE_MOTO_SERVER` overrides it.
pub fn moto_server_path() -> PathBuf {
    std::env::var_os("EVENTPIPE_MOTO_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/moto_server")
        })
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Moto {
    /// Starts a fresh server and waits until it accepts connections.
    pub fn start() -> Self {
        let server = moto_server_path();
        assert!(
            server.exists(),
            "{} not found: run `make venv` (or set EVENTPIPE_MOTO_SERVER)",
            server.display()
        );
        for _ in 0..5 {
            let port = free_port();
            let child = Command::new(&server)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("moto_server starts");
            let mut moto = Self {
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
                child,
            };
            if moto.wait_ready(Duration::from_secs(30)) {
                return moto;
            }
            // Lost the port to someone else, or moto died: try another port.
        }
        panic!("moto_server did not start on any of 5 ports");
    }

    fn wait_ready(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return false;
            }
            if TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// `http://127.0.0.1:PORT`, for `AWS_ENDPOINT_URL` or a binding's `endpoint`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
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

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
