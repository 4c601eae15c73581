//! Running the `eventpipe` binary from the repository root, as a user would.

use std::process::Command;

/// `eventpipe ARGS` with `env` added: whether it succeeded, its stdout and its stderr.
pub fn eventpipe(args: &[&str], env: &[(&str, String)]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_eventpipe"))
        .args(args)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("the eventpipe binary runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}
