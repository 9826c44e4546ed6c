//! Byte streams `expect` can drive: anything with a file descriptor (a pty,
//! a Unix socket to an instance's console), serial ports and SSH channels
//! implement [`Transport`].

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::time::Duration;

/// What one read produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadResult {
    Data(usize),
    Eof,
    Timeout,
}

/// A bidirectional byte stream with read timeouts.
pub trait Transport: Send {
    /// Reads what is available, waiting at most `timeout`.
    fn read_timeout(&mut self, buf: &mut [u8], timeout: Duration) -> io::Result<ReadResult>;
    /// Sends all of `data`.
    fn send(&mut self, data: &[u8]) -> io::Result<()>;
    /// Where this stream goes, for messages ("console of i-… in region-a").
    fn describe(&self) -> String;
}

/// Waits until `fd` is readable or `timeout` passes.
pub fn wait_readable(fd: i32, timeout: Duration) -> io::Result<bool> {
    Ok(poll_in(fd, timeout)? != 0)
}

/// Polls `fd` for input; returns the revents (0 on timeout).
fn poll_in(fd: i32, timeout: Duration) -> io::Result<i16> {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    loop {
        // SAFETY: poll on one valid pollfd we own, for at most `ms` milliseconds.
        let r = unsafe { libc::poll(&mut pfd, 1, ms) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        return Ok(if r == 0 { 0 } else { pfd.revents });
    }
}

/// A transport over any readable and writable file descriptor.
pub struct FdTransport<F> {
    inner: F,
    label: String,
    /// A terminal in raw mode may return 0 bytes without being closed.
    tty: bool,
}

impl<F: Read + Write + AsRawFd + Send> FdTransport<F> {
    pub fn new(inner: F, label: impl Into<String>) -> Self {
        // SAFETY: isatty only inspects the descriptor.
        let tty = unsafe { libc::isatty(inner.as_raw_fd()) } == 1;
        let fd = inner.as_raw_fd();
        // SAFETY: fcntl on the descriptor this transport now owns; reads
        // become non-blocking, waits go through poll.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFL);
            libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
        Self {
            inner,
            label: label.into(),
            tty,
        }
    }

    pub fn get_mut(&mut self) -> &mut F {
        &mut self.inner
    }
}

impl<F: Read + Write + AsRawFd + Send> Transport for FdTransport<F> {
    fn read_timeout(&mut self, buf: &mut [u8], timeout: Duration) -> io::Result<ReadResult> {
        // Non-blocking reads first: while output flows, one syscall per chunk.
        let deadline = std::time::Instant::now() + timeout;
        loop {
            match self.inner.read(buf) {
                Ok(0) if self.tty => {}
                Ok(0) => return Ok(ReadResult::Eof),
                Ok(n) => return Ok(ReadResult::Data(n)),
                // A pty reports EIO once the other side is closed.
                Err(e) if e.raw_os_error() == Some(libc::EIO) => return Ok(ReadResult::Eof),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Ok(ReadResult::Timeout);
            }
            let revents = poll_in(self.inner.as_raw_fd(), left)?;
            if revents == 0 {
                return Ok(ReadResult::Timeout);
            }
            if revents & libc::POLLIN == 0 && revents & (libc::POLLHUP | libc::POLLERR) != 0 {
                return Ok(ReadResult::Eof);
            }
            if self.tty && revents & libc::POLLHUP != 0 {
                // Hung up with data pending: read it, then report the end.
                return match self.inner.read(buf) {
                    Ok(n) if n > 0 => Ok(ReadResult::Data(n)),
                    _ => Ok(ReadResult::Eof),
                };
            }
        }
    }

    fn send(&mut self, data: &[u8]) -> io::Result<()> {
        self.inner.write_all(data)?;
        self.inner.flush()
    }

    fn describe(&self) -> String {
        self.label.clone()
    }
}
