//! An interactive shell over SSH, as a transport the expect engine drives.

use super::session::*;
use crate::expect::{ReadResult, Transport};
use std::io::{Read, Write};
use std::time::{Duration, Instant};

impl SshSession {
    /// An interactive shell on a pty, as an expect transport.
    pub fn shell(&self) -> Result<ShellTransport, SshError> {
        let session = lock(&self.session);
        let w = self.waiter(Some(CONNECT_TIMEOUT), "connect_timeout");
        let mut ch = w.retry(&session, "opening a channel", |s| s.channel_session())?;
        w.retry(&session, "asking for a pty", |_| {
            ch.request_pty("vt100", None, Some((200, 50, 0, 0)))
        })?;
        w.retry(&session, "starting a shell", |_| ch.shell())?;
        drop(session);
        Ok(ShellTransport {
            ssh: self.clone(),
            channel: ch,
        })
    }
}

/// An SSH shell channel that `expect` drives.
pub struct ShellTransport {
    ssh: SshSession,
    channel: ssh2::Channel,
}

impl Transport for ShellTransport {
    fn read_timeout(&mut self, buf: &mut [u8], timeout: Duration) -> std::io::Result<ReadResult> {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let _session = lock(&self.ssh.session);
                match self.channel.read(buf) {
                    Ok(0) if self.channel.eof() => return Ok(ReadResult::Eof),
                    Ok(0) => {}
                    Ok(n) => return Ok(ReadResult::Data(n)),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(ReadResult::Timeout);
            }
            poll_fd(self.ssh.fd, libc::POLLIN, left.min(SLICE))?;
        }
    }

    fn send(&mut self, data: &[u8]) -> std::io::Result<()> {
        // No flush: ssh2's flush discards unread *incoming* data.
        let stalled_at = Instant::now() + Duration::from_secs(60);
        let mut off = 0;
        while off < data.len() {
            let r = {
                let _session = lock(&self.ssh.session);
                self.channel.write(&data[off..])
            };
            match r {
                Ok(n) => off += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if self.ssh.interrupt.check().is_err() {
                        return Err(std::io::Error::other("interrupted while sending"));
                    }
                    if Instant::now() >= stalled_at {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "the server has accepted nothing for 60s",
                        ));
                    }
                    poll_fd(self.ssh.fd, libc::POLLIN | libc::POLLOUT, SLICE)?;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn describe(&self) -> String {
        format!("{} (shell)", self.ssh.label)
    }
}
