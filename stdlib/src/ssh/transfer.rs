//! Files over SFTP: upload (written beside the target, then renamed) and
//! download (the same on this side), bounded by the step's deadline.

use super::session::*;
use ssh2::{OpenFlags, OpenType, Session};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::MutexGuard;
use std::time::Duration;

impl SshSession {
    /// An SFTP channel, with the session held while it is used.
    pub(super) fn sftp(
        &self,
        w: &Waiter,
    ) -> Result<(MutexGuard<'_, Session>, ssh2::Sftp), SshError> {
        let session = lock(&self.session);
        let sftp = w
            .retry(&session, "starting SFTP", |s| s.sftp())
            .map_err(|e| match e {
                SshError::Failed(m) => SshError::Failed(format!(
                "{m}; the server must offer the sftp subsystem (`Subsystem sftp` in sshd_config)"
            )),
                other => other,
            })?;
        Ok((session, sftp))
    }

    /// Uploads a local file over SFTP, streaming it; returns its size.
    pub fn upload(
        &self,
        local: &Path,
        remote: &str,
        timeout: Option<Duration>,
    ) -> Result<u64, SshError> {
        let mut src = std::fs::File::open(local)
            .map_err(|e| SshError::Failed(format!("cannot read {}: {e}", local.display())))?;
        let w = self.waiter(timeout, "timeout");
        let (session, sftp) = self.sftp(&w)?;
        let what = format!("uploading to {remote}");
        let mut f = w.retry(&session, &what, |_| {
            sftp.open_mode(
                Path::new(remote),
                OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::TRUNCATE,
                0o644,
                OpenType::File,
            )
        })?;
        let mut buf = vec![0u8; 32 * 1024];
        let mut total = 0u64;
        loop {
            let n = src
                .read(&mut buf)
                .map_err(|e| SshError::Failed(format!("cannot read {}: {e}", local.display())))?;
            if n == 0 {
                break;
            }
            let mut off = 0;
            while off < n {
                match f.write(&buf[off..n]) {
                    Ok(0) => {
                        return Err(SshError::Failed(format!(
                            "{}: writing {remote}: the server accepted no data",
                            self.label
                        )))
                    }
                    Ok(k) => off += k,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        w.wait(&session, &what)?
                    }
                    Err(e) => {
                        return Err(SshError::Failed(format!(
                            "{}: writing {remote}: {e}; check free space and permissions there",
                            self.label
                        )))
                    }
                }
            }
            total += n as u64;
        }
        w.retry(&session, &what, |_| f.close())?;
        Ok(total)
    }

    /// Downloads a remote file over SFTP, byte for byte, into a temporary
    /// file next to `local` that is renamed over it when complete.
    pub fn download(
        &self,
        remote: &str,
        local: &Path,
        timeout: Option<Duration>,
    ) -> Result<u64, SshError> {
        let w = self.waiter(timeout, "timeout");
        let (session, sftp) = self.sftp(&w)?;
        let what = format!("downloading {remote}");
        let mut f = w
            .retry(&session, &what, |_| sftp.open(Path::new(remote)))
            .map_err(|e| match e {
                SshError::Failed(m) => {
                    SshError::Failed(format!("{m}; check that {remote} exists and is readable"))
                }
                other => other,
            })?;
        let (tmp, mut dst) = temp_next_to(local).map_err(|e| {
            SshError::Failed(format!("cannot write next to {}: {e}", local.display()))
        })?;
        let result = (|| {
            let mut buf = vec![0u8; 32 * 1024];
            let mut total = 0u64;
            loop {
                match f.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        dst.write_all(&buf[..n]).map_err(|e| {
                            SshError::Failed(format!("cannot write {}: {e}", tmp.display()))
                        })?;
                        total += n as u64;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        w.wait(&session, &what)?
                    }
                    Err(e) => {
                        return Err(SshError::Failed(format!(
                            "{}: reading {remote}: {e}",
                            self.label
                        )))
                    }
                }
            }
            let _ = w.retry(&session, &what, |_| f.close());
            dst.sync_all()
                .and_then(|()| std::fs::rename(&tmp, local))
                .map_err(|e| SshError::Failed(format!("cannot write {}: {e}", local.display())))?;
            Ok(total)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }
}

pub(super) fn temp_next_to(target: &Path) -> std::io::Result<(PathBuf, std::fs::File)> {
    let dir = target
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mode = std::fs::metadata(target)
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o7777)
        .unwrap_or(0o600);
    for n in 0..100u32 {
        let candidate = dir.join(format!(".{name}.download.{}.{n}", std::process::id()));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&candidate)
        {
            Ok(f) => return Ok((candidate, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other("no free temporary file name"))
}
