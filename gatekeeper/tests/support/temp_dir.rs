//! A unique directory under the system temp dir for one test, removed on drop.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::FIXTURES;

/// The directory; `.0` is its path.
pub(crate) struct TempDir(pub(crate) PathBuf);

impl TempDir {
    /// A new empty directory whose name starts with `gatekeeper-{label}-`.
    pub(crate) fn new(label: &str) -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!(
            "gatekeeper-{label}-{}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    /// Copies `files` of the fixture keys into `keys/` here (configurations name them
    /// relative to this directory).
    pub(crate) fn with_fixture_keys(self, files: &[&str]) -> Self {
        let fixtures = Path::new(FIXTURES).join("keys");
        std::fs::create_dir_all(self.0.join("keys")).unwrap();
        for file in files {
            std::fs::copy(fixtures.join(file), self.0.join("keys").join(file)).unwrap();
        }
        self
    }

    /// Writes `gateway.toml` and returns its path.
    pub(crate) fn write_config(&self, toml: &str) -> PathBuf {
        let path = self.0.join("gateway.toml");
        std::fs::write(&path, toml).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A temp dir with the fixture JWKS and HMAC secret under `keys/`.
pub(crate) fn gateway_dir() -> TempDir {
    TempDir::new("gateway").with_fixture_keys(&["jwks.json", "hmac.secret"])
}
