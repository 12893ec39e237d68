//! Ports and directories of a test's own, given back when it ends.
use std::path::{Path, PathBuf};

/// A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it; for servers that
/// must be told their port before they start).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free port on 127.0.0.1")
}

/// A fresh directory under the system's temporary directory, removed with everything in it
/// on drop.
#[derive(Debug)]
pub struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    /// `codigo-<what>-<random>`.
    pub fn new(what: &str) -> Self {
        let path =
            std::env::temp_dir().join(format!("codigo-{what}-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&path).expect("create a scratch directory");
        Self { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `name` inside the directory.
    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Writes `content` to `name` inside the directory; returns its path.
    pub fn write(&self, name: &str, content: impl AsRef<[u8]>) -> PathBuf {
        let path = self.join(name);
        std::fs::write(&path, content).expect("write into the scratch directory");
        path
    }

    /// The text of `name`, empty when it does not exist (yet).
    pub fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.join(name)).unwrap_or_default()
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
