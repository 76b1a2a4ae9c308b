//! Temporary directories of this test process, and names no other test used.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

static NEXT_ID: AtomicU32 = AtomicU32::new(0);

/// A number no other caller in this process got.
pub fn next_id() -> u32 {
    NEXT_ID.fetch_add(1, Ordering::SeqCst)
}

/// A name no other test (or earlier run) used.
pub fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}-{}-{}-{nanos}", std::process::id(), next_id())
}

/// A fresh directory of its own under the system's temp dir (named after the test process, so
/// parallel test binaries never share one), removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        Self::named("files")
    }

    /// A directory whose name says what it holds (`redis`, `envoy`, ...).
    pub fn named(kind: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "tollgate-test-{}-{kind}-{}",
            std::process::id(),
            next_id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.0.join(name)
    }

    /// Writes `name` in the directory; returns its path as text.
    pub fn write(&self, name: &str, text: &str) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }
}

impl Default for TempDir {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
