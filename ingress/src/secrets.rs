//! Webhook secrets from files laid out as a mounted Kubernetes Secret
//! (`<dir>/<name>/<key>`), re-read periodically so a rotated Secret takes effect
//! without a restart. Values never reach logs: [`Secret`]'s `Debug` is redacted and
//! only file paths are logged.

use std::{
    collections::BTreeMap,
    fmt,
    path::{Path, PathBuf},
    sync::{
        Arc, RwLock, Weak,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use eventpipe_crds::SecretKeyRef;

/// A secret's bytes, trailing whitespace removed (files written by `echo` end in a newline).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    fn from_file(mut bytes: Vec<u8>) -> Option<Self> {
        while bytes.last().is_some_and(u8::is_ascii_whitespace) {
            bytes.pop();
        }
        (!bytes.is_empty()).then_some(Self(bytes))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// One secret file and its last value read.
#[derive(Debug)]
pub struct Slot {
    path: PathBuf,
    /// A previous secret, kept during a rotation: its webhooks serve without it.
    optional: AtomicBool,
    value: RwLock<Option<Arc<Secret>>>,
    /// Whether the file was read before: a secret missing at start-up is reported too.
    read: AtomicBool,
}

impl Slot {
    pub fn get(&self) -> Option<Arc<Secret>> {
        self.value.read().expect("secret lock").clone()
    }

    #[cfg(test)]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the file again; logs when the value appears, changes or disappears.
    fn reload(&self) -> bool {
        let (next, error) = match std::fs::read(&self.path) {
            Ok(bytes) => (Secret::from_file(bytes), None),
            Err(e) => (None, Some(e)),
        };
        let mut value = self.value.write().expect("secret lock");
        let first = !self.read.swap(true, Ordering::Relaxed);
        if first || value.as_deref() != next.as_ref() {
            let file = self.path.display();
            match (&next, error) {
                (Some(_), _) if value.is_none() => tracing::info!(%file, "secret loaded"),
                (Some(_), _) => tracing::info!(%file, "secret rotated"),
                (None, _) if self.optional.load(Ordering::Relaxed) => {
                    tracing::warn!(%file, "previous secret not loaded; only the current one verifies")
                }
                (None, Some(error)) => {
                    tracing::warn!(%file, %error, "secret unreadable; its webhooks answer 503")
                }
                (None, None) => {
                    tracing::warn!(%file, "secret file is empty; its webhooks answer 503")
                }
            }
            *value = next.map(Arc::new);
        }
        value.is_some() || self.optional.load(Ordering::Relaxed)
    }
}

/// Every secret the webhooks use.
#[derive(Debug)]
pub struct Secrets {
    slots: BTreeMap<(String, String), Arc<Slot>>,
}

impl Secrets {
    /// Registers the secrets, and previous secrets that readiness does not wait
    /// for (a secret that is both is required), and reads them once.
    pub fn load<'a>(
        dir: &Path,
        required: impl IntoIterator<Item = &'a SecretKeyRef>,
        previous: impl IntoIterator<Item = &'a SecretKeyRef>,
    ) -> Self {
        let mut slots: BTreeMap<(String, String), Arc<Slot>> = BTreeMap::new();
        let tagged = (required.into_iter().map(|r| (r, false)))
            .chain(previous.into_iter().map(|r| (r, true)));
        for (r, optional) in tagged {
            let slot = slots
                .entry((r.name.clone(), r.key.clone()))
                .or_insert_with(|| {
                    Arc::new(Slot {
                        path: dir.join(&r.name).join(&r.key),
                        optional: AtomicBool::new(optional),
                        value: RwLock::new(None),
                        read: AtomicBool::new(false),
                    })
                });
            slot.optional.fetch_and(optional, Ordering::Relaxed);
        }
        let secrets = Self { slots };
        secrets.reload();
        secrets
    }

    /// The slot of a secret given to [`Secrets::load`].
    pub fn slot(&self, r: &SecretKeyRef) -> Option<Arc<Slot>> {
        self.slots.get(&(r.name.clone(), r.key.clone())).cloned()
    }

    /// Reads every file again; true when all of them but previous secrets hold a value.
    pub fn reload(&self) -> bool {
        // Every file is re-read, even after a missing one.
        let loaded: Vec<bool> = self.slots.values().map(|s| s.reload()).collect();
        loaded.into_iter().all(|l| l)
    }
}

/// Re-reads the secrets every `every` and reports whether all are loaded, until
/// the secrets are dropped.
pub async fn watch(secrets: Weak<Secrets>, every: Duration, loaded: impl Fn(bool)) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(secrets) = secrets.upgrade() else {
            return;
        };
        // File reads block; they are tiny, but keep them off the request threads.
        let all = tokio::task::spawn_blocking(move || secrets.reload())
            .await
            .unwrap_or(false);
        loaded(all);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str, key: &str) -> SecretKeyRef {
        SecretKeyRef {
            name: name.into(),
            key: key.into(),
        }
    }

    fn write(dir: &Path, name: &str, key: &str, value: &str) {
        std::fs::create_dir_all(dir.join(name)).unwrap();
        std::fs::write(dir.join(name).join(key), value).unwrap();
    }

    #[test]
    fn reads_the_mounted_secret_layout_and_trims_the_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "gh", "secret", "hunter2\n");
        let r = key("gh", "secret");
        let secrets = Secrets::load(dir.path(), [&r], []);
        assert_eq!(
            secrets.slot(&r).unwrap().get().unwrap().expose(),
            b"hunter2"
        );
        assert!(secrets.reload());
    }

    #[test]
    fn missing_or_empty_files_are_not_loaded_until_they_appear() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (key("gh", "secret"), key("api", "token"));
        write(dir.path(), "api", "token", " \n");
        let secrets = Secrets::load(dir.path(), [&a, &b], []);
        assert!(!secrets.reload());
        assert!(secrets.slot(&a).unwrap().get().is_none());
        assert!(secrets.slot(&b).unwrap().get().is_none());
        write(dir.path(), "gh", "secret", "one");
        write(dir.path(), "api", "token", "two");
        assert!(secrets.reload());
        assert_eq!(secrets.slot(&b).unwrap().get().unwrap().expose(), b"two");
    }

    #[test]
    fn rotation_replaces_the_value_and_removal_clears_it() {
        let dir = tempfile::tempdir().unwrap();
        let r = key("gh", "secret");
        write(dir.path(), "gh", "secret", "old");
        let secrets = Secrets::load(dir.path(), [&r], []);
        let slot = secrets.slot(&r).unwrap();
        write(dir.path(), "gh", "secret", "new");
        assert!(secrets.reload());
        assert_eq!(slot.get().unwrap().expose(), b"new");
        std::fs::remove_file(slot.path()).unwrap();
        assert!(!secrets.reload());
        assert!(slot.get().is_none());
    }

    #[test]
    fn a_missing_previous_secret_does_not_hold_readiness_unless_also_required() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "gh", "new", "one");
        let (new, old) = (key("gh", "new"), key("gh", "old"));
        let secrets = Secrets::load(dir.path(), [&new], [&old]);
        assert!(secrets.reload());
        assert!(secrets.slot(&old).unwrap().get().is_none());
        write(dir.path(), "gh", "old", "two");
        assert!(secrets.reload());
        assert_eq!(secrets.slot(&old).unwrap().get().unwrap().expose(), b"two");
        // Another webhook's current secret is some webhook's previous one.
        let both = Secrets::load(dir.path(), [&new, &key("x", "y")], [&key("x", "y")]);
        assert!(!both.reload());
    }

    #[test]
    fn debug_output_never_shows_the_value() {
        let s = Secret::from_file(b"hunter2".to_vec()).unwrap();
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[tokio::test]
    async fn watch_reports_and_stops_when_the_secrets_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let r = key("gh", "secret");
        let secrets = Arc::new(Secrets::load(dir.path(), [&r], []));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn(watch(
            Arc::downgrade(&secrets),
            Duration::from_millis(10),
            move |all| {
                let _ = tx.send(all);
            },
        ));
        assert_eq!(rx.recv().await, Some(false));
        write(dir.path(), "gh", "secret", "now");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while rx.recv().await != Some(true) {
            assert!(tokio::time::Instant::now() < deadline, "never loaded");
        }
        drop(secrets);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("watch ends")
            .unwrap();
    }
}
