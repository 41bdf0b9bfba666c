//! A tmpfs of a few megabytes mounted for one test and unmounted when dropped, to fill a disk
//! on purpose. Needs root; without it the test is skipped (or fails when
//! `FLEXPHOTO_REQUIRE_SERVICES` says tmpfs is available). Shared by the control plane's and
//! the edge's tests (`#[path]`), beside `skip.rs`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Whether this process runs as root.
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A mounted tmpfs.
pub struct TinyDisk(PathBuf);

impl TinyDisk {
    /// Mounts `mb` megabytes for `what` (named in the skip message); `None` when it cannot.
    pub fn mount(mb: u32, what: &str) -> Option<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir =
            std::env::temp_dir().join(format!("flexphoto-full-{}-{nanos:x}", std::process::id()));
        std::fs::create_dir_all(&dir).ok()?;
        let ok = is_root()
            && Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={mb}m"), "tmpfs"])
                .arg(&dir)
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
        if !ok {
            let _ = std::fs::remove_dir(&dir);
            crate::skip::skip(
                "tmpfs",
                &format!("cannot mount a tmpfs (needs root); {what} did not run"),
            );
            return None;
        }
        Some(TinyDisk(dir))
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TinyDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}
