//! `eventpipe dev` as a test's child process: started from the repository root
//! against moto, its output kept in a log file, ready once it prints how to stop it,
//! killed when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use eventpipe_testkit::Moto;

pub struct DevProcess {
    child: Child,
    log: PathBuf,
    /// What it printed up to being ready: where each thing listens.
    pub printed: String,
}

impl DevProcess {
    /// `eventpipe dev ARGS` with `moto`'s environment, its output in `dir/dev.log`;
    /// waits (at most 90 s) until it is ready.
    pub fn start(args: &[&str], moto: &Moto, dir: &Path) -> Self {
        let log = dir.join("dev.log");
        let file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_eventpipe"))
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
            .arg("dev")
            .args(args)
            .envs(moto.env())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::from(file.try_clone().expect("log file")))
            .stderr(Stdio::from(file))
            .spawn()
            .expect("eventpipe dev starts");
        let mut dev = Self {
            child,
            log,
            printed: String::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(90);
        while !dev.printed.contains("Ctrl-C stops") {
            assert!(
                Instant::now() < deadline,
                "dev did not start:\n{}",
                dev.printed
            );
            std::thread::sleep(Duration::from_millis(200));
            dev.printed = dev.logs();
        }
        dev
    }

    /// The value after `prefix` on the first printed line that starts with it.
    pub fn after(&self, prefix: &str) -> Option<&str> {
        self.printed.lines().find_map(|l| l.strip_prefix(prefix))
    }

    /// Everything it printed so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for DevProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
