//! The agent's wire format: one request per connection, a JSON line
//! (at most [`MAX_REQUEST`] bytes); one reply, a JSON line, carrying a
//! file descriptor (SCM_RIGHTS) when the operation made one.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;

use serde::{Deserialize, Serialize};
use vmm_sys_util::sock_ctrl_msg::ScmSocket;

use crate::network::ops::{FirewallRequest, TapRequest, VpcRef};

/// The largest request the agent reads (a VPC's whole ruleset as records).
pub const MAX_REQUEST: usize = 1 << 20;
/// The largest reply a client reads.
const MAX_REPLY: usize = 64 * 1024;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    MakeTap(TapRequest),
    WriteFirewall(FirewallRequest),
    Release {
        vpc: VpcRef,
    },
    /// The namespaces the agent made for the caller of this data directory.
    Namespaces {
        data_dir: std::path::PathBuf,
    },
    Connect {
        vpc: VpcRef,
        addr: SocketAddr,
        timeout_ms: u64,
    },
    Listen {
        vpc: VpcRef,
        addr: SocketAddr,
    },
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Reply {
    /// Why the operation failed or was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The OS error behind `error`, when there was one (a refused
    /// connection is an answer, not a failure, to a health check).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errno: Option<i32>,
    /// `release`: whether the namespace was removed.
    #[serde(default)]
    pub released: bool,
    /// `namespaces`: their names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
}

impl Reply {
    pub fn refused(why: impl Into<String>) -> Self {
        Self {
            error: Some(why.into()),
            ..Self::default()
        }
    }
}

/// Reads one line of at most `max` bytes (without its newline), all of it
/// before `deadline` when one is given (a client that sends a byte now
/// and then holds nothing for long).
fn read_line_by(
    stream: &mut UnixStream,
    first: Vec<u8>,
    max: usize,
    deadline: Option<std::time::Instant>,
) -> std::io::Result<Vec<u8>> {
    let mut buf = first;
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(d) = deadline {
            let left = d.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the request took too long to send",
                ));
            }
            stream.set_read_timeout(Some(left))?;
        }
        if let Some(end) = buf.iter().position(|&b| b == b'\n') {
            buf.truncate(end);
            return Ok(buf);
        }
        if buf.len() > max {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("a message longer than {max} bytes"),
            ));
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Ok(buf);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

pub fn write_request(stream: &mut UnixStream, req: &Request) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(req).map_err(std::io::Error::other)?;
    line.push(b'\n');
    stream.write_all(&line)
}

/// Reads a request that must have come whole before `deadline`.
pub fn read_request_by(
    stream: &mut UnixStream,
    deadline: std::time::Instant,
) -> Result<Request, String> {
    let line = read_line_by(stream, Vec::new(), MAX_REQUEST, Some(deadline))
        .map_err(|e| format!("cannot read the request: {e}"))?;
    serde_json::from_slice(&line).map_err(|e| format!("not a request: {e}"))
}

/// Sends `reply`, with `fd` attached to its first byte.
pub fn write_reply(
    stream: &mut UnixStream,
    reply: &Reply,
    fd: Option<BorrowedFd<'_>>,
) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(reply).map_err(std::io::Error::other)?;
    line.push(b'\n');
    let sent = match fd {
        Some(fd) => stream
            .send_with_fd(&line[..], fd.as_raw_fd())
            .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))?,
        None => 0,
    };
    stream.write_all(&line[sent..])
}

/// Reads the reply and the descriptor that came with it.
pub fn read_reply(stream: &mut UnixStream) -> std::io::Result<(Reply, Option<OwnedFd>)> {
    let mut first = vec![0u8; 4096];
    let (n, file) = stream
        .recv_with_fd(&mut first)
        .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))?;
    first.truncate(n);
    let line = read_line_by(stream, first, MAX_REPLY, None)?;
    let reply = serde_json::from_slice(&line).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("the network agent's reply is not understood: {e}"),
        )
    })?;
    Ok((reply, file.map(OwnedFd::from)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_carry_a_descriptor_and_requests_are_bounded() {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        let file = std::fs::File::open("/dev/null").unwrap();
        let fd: OwnedFd = file.into();
        use std::os::fd::AsFd;
        write_reply(&mut a, &Reply::default(), Some(fd.as_fd())).unwrap();
        let (reply, got) = read_reply(&mut b).unwrap();
        assert_eq!(reply, Reply::default());
        assert!(got.is_some());

        let (mut a, mut b) = UnixStream::pair().unwrap();
        let t = std::thread::spawn(move || {
            let big = vec![b'x'; MAX_REQUEST + 10_000];
            let _ = a.write_all(&big);
        });
        let err = read_request_by(
            &mut b,
            std::time::Instant::now() + std::time::Duration::from_secs(10),
        )
        .unwrap_err();
        assert!(err.contains("longer than"), "{err}");
        drop(b);
        t.join().unwrap();
    }
}
