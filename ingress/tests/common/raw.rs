//! HTTP/1.1 over a bare TCP connection, for what a well-behaved client never does:
//! headers byte by byte, bodies that stall, heads too large. Every wait is bounded.

use std::time::Duration;

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use super::{SECRET, github_signature};

/// The longest any raw read waits: far beyond every timeout the tests configure.
pub const PATIENCE: Duration = Duration::from_secs(20);

pub struct Raw(pub TcpStream);

impl Raw {
    /// Connects to `url`'s `host:port` (`http://127.0.0.1:PORT`).
    pub async fn connect(url: &str) -> Self {
        let addr = url.trim_start_matches("http://");
        Self(TcpStream::connect(addr).await.unwrap())
    }

    pub async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.0.write_all(bytes).await
    }

    /// Everything the server sends until it closes the connection (or
    /// [`PATIENCE`] passes: then `closed` is false).
    pub async fn read_until_closed(&mut self) -> Received {
        let mut text = Vec::new();
        let read = tokio::time::timeout(PATIENCE, self.0.read_to_end(&mut text)).await;
        Received {
            text: String::from_utf8_lossy(&text).into_owned(),
            closed: read.is_ok(),
        }
    }

    /// Reads one response whose end the server marks by closing (`Connection: close`).
    pub async fn response(&mut self) -> Received {
        let received = self.read_until_closed().await;
        assert!(received.closed, "no complete response: {:?}", received.text);
        received
    }
}

#[derive(Debug)]
pub struct Received {
    pub text: String,
    pub closed: bool,
}

impl Received {
    pub fn status(&self) -> Option<u16> {
        self.text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
    }

    /// The JSON body after the head.
    pub fn json(&self) -> serde_json::Value {
        let body = self.text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null)
    }
}

/// The head of a GitHub-signed POST of `body` to `/hooks/github`, asking the server
/// to close the connection after answering; the body is sent chunked when `chunked`.
pub fn github_head(delivery: &str, body: &[u8], chunked: bool) -> String {
    let framing = if chunked {
        "Transfer-Encoding: chunked".to_string()
    } else {
        format!("Content-Length: {}", body.len())
    };
    format!(
        "POST /hooks/github HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         Content-Type: application/json\r\n{framing}\r\n\
         X-GitHub-Event: issue_comment\r\nX-GitHub-Delivery: {delivery}\r\n\
         X-Hub-Signature-256: {}\r\n\r\n",
        github_signature(SECRET, body)
    )
}
