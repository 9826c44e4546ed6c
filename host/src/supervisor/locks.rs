//! Locks: the one an instance's supervisor holds for its whole life (at
//! most one supervisor runs an instance, and a command can tell whether
//! one runs) and the one on each volume file a VM uses.

use std::path::{Path, PathBuf};

use crate::HostError;

/// The lock an instance's supervisor holds for its whole life: at most one
/// supervisor runs an instance, and a command can tell whether one runs.
fn instance_lock_path(instance_dir: &Path) -> PathBuf {
    instance_dir.join("supervisor.lock")
}

/// Takes the instance lock; `None` if another process holds it.
pub(super) fn lock_instance(instance_dir: &Path) -> Result<Option<std::fs::File>, HostError> {
    use std::os::fd::AsRawFd;
    std::fs::create_dir_all(instance_dir).map_err(|e| HostError::io("create", instance_dir, e))?;
    let path = instance_lock_path(instance_dir);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| HostError::io("open", &path, e))?;
    // SAFETY: flock on a file descriptor we own; no memory is shared.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    Ok((rc == 0).then_some(file))
}

/// Whether an instance process (supervisor) runs the instance now.
pub fn instance_process_running(instance_dir: &Path) -> bool {
    match lock_instance(instance_dir) {
        Ok(Some(_released_on_drop)) => false,
        Ok(None) => true,
        Err(_) => false,
    }
}

/// Holds an exclusive lock on a volume file while a VM uses it, so no
/// other VM (or drydock) can attach it at the same time.
pub struct VolumeLock {
    _file: std::fs::File,
}

impl VolumeLock {
    /// Locks `path`, or says which volume is in use.
    pub fn acquire(path: &Path, volume: &str) -> Result<Self, HostError> {
        use std::os::fd::AsRawFd;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .open(path)
            .map_err(|e| HostError::io("open", path, e))?;
        // SAFETY: flock on a file descriptor we own; no memory is shared.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            return Err(HostError::Conflict(format!(
                "volume {volume} is in use by another virtual machine (its file {} is locked)",
                path.display()
            )));
        }
        Ok(Self { _file: file })
    }
}
