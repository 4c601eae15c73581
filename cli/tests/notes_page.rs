//! The notes page, `examples/notes/index.html`, served by `eventpipe dev --static`
//! beside the webhooks of examples/notes.yaml, against moto: only files of the folder
//! are served, only on loopback, and in headless Chromium the page shows a note saved,
//! a note without text failed and why, a wrong token refused with 401, and a
//! subscription the ingress refuses failed (`tests/browser/notes.mjs`; skipped, saying
//! why, without Chromium).
// Set-up steps unwrap: a failure fails the test.
#![allow(clippy::unwrap_used)]

mod chromium;
mod common;
mod dev;

use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;

use dev::DevProcess;
use eventpipe_testkit::Moto;

/// `eventpipe dev` serving the page, and the page's URL it printed.
struct Dev {
    process: DevProcess,
    page: String,
    _dir: tempfile::TempDir,
}

impl Dev {
    fn logs(&self) -> String {
        self.process.logs()
    }

    /// Where the page is served, without the fragment.
    fn origin(&self) -> &str {
        self.page.split("/#").next().unwrap()
    }
}

fn start(moto: &Moto) -> Dev {
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("secrets");
    let args = [
        "-f",
        "examples/notes.yaml",
        "--static",
        "examples/notes",
        "--listen",
        "127.0.0.1:0",
        "--ops-listen",
        "127.0.0.1:0",
        "--console-listen",
        "127.0.0.1:0",
        "--log-format",
        "json",
        "--secrets-dir",
        secrets.to_str().unwrap(),
    ];
    let process = DevProcess::start(&args, moto, dir.path());
    let page = (process.after("page    "))
        .unwrap_or_else(|| panic!("no page URL:\n{}", process.printed))
        .into();
    Dev {
        process,
        page,
        _dir: dir,
    }
}

/// The status line of a raw GET of `path` (sent as written: a client library would
/// resolve `..` itself).
fn raw_get(origin: &str, path: &str) -> String {
    let addr = origin.strip_prefix("http://").unwrap();
    let mut tcp = std::net::TcpStream::connect(addr).unwrap();
    write!(
        tcp,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).unwrap();
    answer.lines().next().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_notes_page_shows_each_note_saved_or_failed_and_a_wrong_token_refused() {
    let moto = Moto::start();
    let dev = start(&moto);
    let token = dev.page.split_once("/#token=").map(|(_, t)| t);
    assert!(token.is_some_and(|t| !t.is_empty()), "{}", dev.page);

    let page = reqwest::get(dev.origin()).await.unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    assert!(page.text().await.unwrap().contains("<title>Notes</title>"));
    let origin = dev.origin().to_string();
    let statuses = tokio::task::spawn_blocking(move || {
        [
            "/index.html",
            "/../notes.yaml",
            "/../../Cargo.toml",
            "/nope.html",
        ]
        .map(|p| raw_get(&origin, p))
    })
    .await
    .unwrap();
    assert_eq!(
        statuses
            .clone()
            .map(|s| s.split(' ').nth(1).unwrap_or_default().to_string()),
        ["200", "404", "404", "404"],
        "{statuses:?}"
    );

    if let Some(skip) = chromium::missing() {
        eprintln!("skipping the browser part: {skip}");
        return;
    }
    let out = Command::new("node")
        .arg(Path::new(chromium::BROWSER).join("notes.mjs"))
        .env("PAGE_URL", &dev.page)
        .env("CHROMIUM", chromium::CHROMIUM)
        .envs(std::env::var("NOTES_SCREENSHOT").map(|s| ("SCREENSHOT", s)))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        dev.logs()
    );
}

#[test]
fn pages_are_served_on_loopback_only() {
    let moto = Moto::start();
    let (ok, _, err) = common::eventpipe(
        &[
            "dev",
            "-f",
            "examples/notes.yaml",
            "--static",
            "examples/notes",
            "--listen",
            "0.0.0.0:0",
            "--console-listen",
            "127.0.0.1:0",
            "--ops-listen",
            "127.0.0.1:0",
        ],
        &moto.env(),
    );
    assert!(!ok);
    assert!(
        err.contains("--static serves pages on a loopback --listen only, not 0.0.0.0:0"),
        "{err}"
    );
}
