//! moto's server (AWS-compatible SQS and DynamoDB) on a free 127.0.0.1 port, for local
//! mode and tests: started, waited for, and stopped when dropped.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Ports tried before giving up: another process may take a free port first.
const TRIES: usize = 5;

/// A running moto server.
pub struct LocalAws {
    addr: SocketAddr,
    child: Child,
}

#[derive(Debug, thiserror::Error)]
pub enum LocalAwsError {
    #[error("{path}: {source} (run `make venv`, or set EVENTPIPE_MOTO_SERVER)")]
    Spawn {
        path: String,
        source: std::io::Error,
    },
    #[error("no free loopback port: {0}")]
    NoPort(std::io::Error),
    #[error("{path} did not start on any of {TRIES} ports")]
    NotStarted { path: String },
}

/// The variable naming moto's server (`make` sets it to the virtualenv's).
pub const SERVER_VAR: &str = "EVENTPIPE_MOTO_SERVER";

/// Where moto's server is: [`SERVER_VAR`], else `moto_server` on `PATH`.
pub fn server_path() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(SERVER_VAR) {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("moto_server"))
        .find(|candidate| candidate.is_file())
}

/// A port nobody listens on right now.
pub fn free_port() -> Result<u16, std::io::Error> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl LocalAws {
    /// Starts `server` on a free port and waits until it accepts connections.
    pub fn start(server: &Path) -> Result<Self, LocalAwsError> {
        let path = server.display().to_string();
        for _ in 0..TRIES {
            let port = free_port().map_err(LocalAwsError::NoPort)?;
            let child = Command::new(server)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|source| LocalAwsError::Spawn {
                    path: path.clone(),
                    source,
                })?;
            let mut aws = Self {
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
                child,
            };
            if aws.wait_ready(Duration::from_secs(30)) {
                return Ok(aws);
            }
            // Lost the port to someone else, or moto died: try another port.
        }
        Err(LocalAwsError::NotStarted { path })
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
}

impl Drop for LocalAws {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_server_is_an_error_naming_it() {
        let err = LocalAws::start(Path::new("/nonexistent/moto_server"))
            .err()
            .expect("no server there");
        let text = err.to_string();
        assert!(
            text.starts_with("/nonexistent/moto_server: ") && text.contains("make venv"),
            "{text}"
        );
    }

    #[test]
    fn a_server_that_exits_is_not_waited_for_forever() {
        // `false` starts and exits at once, on every port tried.
        let err = LocalAws::start(Path::new("/bin/false")).err().unwrap();
        assert!(matches!(err, LocalAwsError::NotStarted { .. }), "{err}");
    }
}
