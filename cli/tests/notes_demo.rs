//! `eventpipe demo -f examples/notes.yaml` against moto: a transcript of each note
//! POSTed, its 202 and the outcome pushed to its sender, the POST → push latency, and
//! a non-zero exit naming the note when a push is not the one expected or never comes.

// Set-up steps unwrap: a failure fails the test.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};

use common::eventpipe;
use eventpipe_testkit::Moto;

const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples");

/// examples/notes.yaml and its scenario in `dir`, each changed by its function.
fn example(
    dir: &Path,
    manifest: impl Fn(String) -> String,
    scenario: impl Fn(String) -> String,
) -> PathBuf {
    let read = |f: &str| std::fs::read_to_string(Path::new(EXAMPLES).join(f)).unwrap();
    let path = dir.join("notes.yaml");
    std::fs::write(&path, manifest(read("notes.yaml"))).unwrap();
    std::fs::write(
        dir.join("notes.demo.json"),
        scenario(read("notes.demo.json")),
    )
    .unwrap();
    path
}

#[test]
fn the_demo_shows_each_note_posted_accepted_and_its_outcome_pushed() {
    let moto = Moto::start();
    let (ok, out, err) = eventpipe(&["demo", "-f", "examples/notes.yaml"], &moto.env());
    assert!(ok, "{out}\n{err}");
    // The transcript, without the pipeline's log lines (JSON when piped).
    let lines: Vec<&str> = out.lines().filter(|l| !l.starts_with('{')).collect();
    for (note, outcome) in [
        (r#"{"text":"buy milk"}"#, "note-saved"),
        (r#"{"text":""}"#, "note-failed (no value at /data/text)"),
        (r#"{"text":"call the plumber"}"#, "note-saved"),
    ] {
        let at = (lines.iter())
            .position(|l| l.starts_with(&format!("POST /notes {note} → 202, event ")))
            .unwrap_or_else(|| panic!("no POST of {note}:\n{out}"));
        let id = lines[at].rsplit(' ').next().unwrap();
        let push = lines[at + 1];
        assert!(
            push.starts_with(&format!("  ← pushed {outcome} for event {id}, ")),
            "{push}\n{out}"
        );
        assert!(push.ends_with(" ms after the POST"), "{push}");
    }
    assert!(out.contains("sent 3 events, accepted 3"), "{out}");
    assert!(
        out.contains("latency POST → push (subscribed after the 202): p50 "),
        "{out}"
    );
    assert!(out.contains("OK: everything"), "{out}");
}

#[test]
fn the_demo_fails_naming_the_note_whose_push_is_wrong_or_missing() {
    let moto = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    // The note without text expected saved: it is pushed failed.
    let wrong = example(
        dir.path(),
        |m| m,
        |s| s.replacen(r#""expect": "note-failed""#, r#""expect": "note-saved""#, 1),
    );
    let (ok, out, err) = eventpipe(&["demo", "-f", wrong.to_str().unwrap()], &moto.env());
    assert!(!ok, "{out}");
    assert!(
        err.contains("pushed note-failed at /notes/outcomes, expected note-saved"),
        "{err}"
    );

    // No pipeline pushes the outcomes: the subscriber waits in vain, for a while.
    let dir = tempfile::tempdir().unwrap();
    let silent = example(
        dir.path(),
        |m| {
            m.split("\n---\n")
                .filter(|d| !d.contains("note-notifier"))
                .collect::<Vec<_>>()
                .join("\n---\n")
        },
        |s| s,
    );
    let (ok, out, err) = eventpipe(
        &["demo", "-f", silent.to_str().unwrap(), "--timeout", "3s"],
        &moto.env(),
    );
    assert!(!ok, "{out}");
    assert!(
        err.contains("nothing pushed at /notes/outcomes within 3s"),
        "{err}"
    );
}
