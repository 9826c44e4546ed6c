//! Asking the network agent: [`NetworkOps`] over its socket, one
//! connection per operation.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use super::protocol::{self, Reply, Request};
use crate::network::ops::{FirewallRequest, NetworkOps, TapRequest, VpcRef};

/// Whether an agent's socket is there to ask.
pub fn available() -> bool {
    super::socket_path().exists()
}

pub struct AgentClient {
    pub socket: PathBuf,
}

impl Default for AgentClient {
    fn default() -> Self {
        Self {
            socket: super::socket_path(),
        }
    }
}

impl AgentClient {
    /// Sends `req`; an error reply becomes an error (its OS error kept).
    pub fn ask(&self, req: &Request) -> std::io::Result<(Reply, Option<OwnedFd>)> {
        let mut stream = UnixStream::connect(&self.socket).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!(
                    "cannot reach the network agent at {}: {e} (have root run `drydock host setup-network --user NAME` again)",
                    self.socket.display()
                ),
            )
        })?;
        stream.set_read_timeout(Some(Duration::from_secs(120)))?;
        protocol::write_request(&mut stream, req)?;
        let (reply, fd) = protocol::read_reply(&mut stream)?;
        if let Some(e) = &reply.error {
            let detail = format!("the network agent: {e}");
            return Err(match reply.errno {
                Some(n) => {
                    let kind = std::io::Error::from_raw_os_error(n).kind();
                    std::io::Error::new(kind, detail)
                }
                None => std::io::Error::other(detail),
            });
        }
        Ok((reply, fd))
    }

    fn ask_fd(&self, req: &Request) -> std::io::Result<OwnedFd> {
        let (_, fd) = self.ask(req)?;
        fd.ok_or_else(|| std::io::Error::other("the network agent sent no descriptor"))
    }
}

impl NetworkOps for AgentClient {
    fn make_tap(&self, req: &TapRequest) -> Result<OwnedFd, String> {
        self.ask_fd(&Request::MakeTap(req.clone()))
            .map_err(|e| e.to_string())
    }

    fn write_firewall(&self, req: &FirewallRequest) -> Result<(), String> {
        self.ask(&Request::WriteFirewall(req.clone()))
            .map(drop)
            .map_err(|e| e.to_string())
    }

    fn release(&self, vpc: &VpcRef) -> Result<bool, String> {
        self.ask(&Request::Release { vpc: vpc.clone() })
            .map(|(r, _)| r.released)
            .map_err(|e| e.to_string())
    }

    fn namespaces(&self, data_dir: &std::path::Path) -> Result<Vec<String>, String> {
        let data_dir = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
        self.ask(&Request::Namespaces { data_dir })
            .map(|(r, _)| r.namespaces)
            .map_err(|e| e.to_string())
    }

    fn connect(
        &self,
        vpc: &VpcRef,
        addr: SocketAddr,
        timeout: Duration,
    ) -> std::io::Result<TcpStream> {
        self.ask_fd(&Request::Connect {
            vpc: vpc.clone(),
            addr,
            timeout_ms: timeout.as_millis() as u64,
        })
        .map(TcpStream::from)
    }

    fn listen(&self, vpc: &VpcRef, addr: SocketAddr) -> std::io::Result<TcpListener> {
        self.ask_fd(&Request::Listen {
            vpc: vpc.clone(),
            addr,
        })
        .map(TcpListener::from)
    }
}
