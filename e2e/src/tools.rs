//! helm and kubectl as a user runs them, and port-forwards to Services.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

/// `make e2e` puts `.tools` on PATH; a bare `cargo test` finds them here as well.
pub fn tool(name: &str) -> String {
    let local = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../.tools")
        .join(name);
    if local.exists() {
        local.display().to_string()
    } else {
        name.to_string()
    }
}

/// Runs helm or kubectl to the end; fails the test, with its output, when it fails.
pub async fn run(name: &str, args: &[&str]) -> String {
    eprintln!("$ {name} {}", args.join(" "));
    let out = tokio::process::Command::new(tool(name))
        .args(args)
        .output()
        .await
        .unwrap_or_else(|e| panic!("{name}: {e} (`make tools` fetches helm and kubectl)"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{name} {} failed ({}):\n{stdout}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// For `Drop`, where nothing can be awaited or fail: runs and shows the output.
pub fn run_blocking(name: &str, args: &[&str]) {
    match std::process::Command::new(tool(name)).args(args).output() {
        Ok(out) => eprintln!(
            "$ {name} {}\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => eprintln!("{name}: {e}"),
    }
}

/// `kubectl port-forward` to a Service, on a local port kubectl picks; stopped on drop.
pub struct PortForward {
    port: u16,
    _kubectl: tokio::process::Child,
}

impl PortForward {
    pub async fn start(ns: &str, service: &str, port: u16) -> Self {
        Self::to(ns, &format!("svc/{service}"), port).await
    }

    /// To one pod rather than whichever a Service picks.
    pub async fn pod(ns: &str, pod: &str, port: u16) -> Self {
        Self::to(ns, &format!("pod/{pod}"), port).await
    }

    async fn to(ns: &str, target: &str, port: u16) -> Self {
        let ports = format!(":{port}");
        let mut kubectl = tokio::process::Command::new(tool("kubectl"))
            .args([
                "port-forward",
                "-n",
                ns,
                "--address=127.0.0.1",
                target,
                &ports,
            ])
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(kubectl.stdout.take().unwrap()).lines();
        // "Forwarding from 127.0.0.1:43127 -> 8080"
        let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await;
        let local = first
            .ok()
            .and_then(|line| line.ok().flatten())
            .and_then(|line| {
                let rest = line.strip_prefix("Forwarding from 127.0.0.1:")?;
                rest.split(' ').next()?.parse().ok()
            })
            .unwrap_or_else(|| panic!("kubectl port-forward {target} named no local port"));
        // kubectl writes a line per connection: keep reading, so a full pipe never stalls it.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self {
            port: local,
            _kubectl: kubectl,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}
